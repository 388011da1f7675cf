# A run's results are packed as its rows settle (orch.store.results()):
# the rows settled since the last checkpoint hold no Lua table each, so a
# policy that checkpoints rarely keeps the Lua heap flat, and the store
# holds what it always held (every row once, its key as text, its status
# and error), read back by `orch export`.
. tests/lib.sh
cd "$WORK"
cat >wf.lua <<'LUA'
local orch = require("orch")
local n, heap = 0, {}
local rows = tonumber(orch.param("rows", 30000))
local function measure(ev)
  if ev.seq == 5000 or ev.seq == rows then
    collectgarbage("collect")
    heap[#heap + 1] = collectgarbage("count")
  end
  if ev.seq == rows then
    local f = assert(io.open("heap.txt", "w"))
    f:write(string.format("%d\n", math.floor(heap[2] - heap[1])))
    f:close()
  end
end
return orch.workflow {
  name = "packed",
  input = function()
    n = n + 1
    if n <= rows then
      return { id = n % 3 == 0 and ("k" .. n) or n }
    end
  end,
  key = "id",
  checkpoint = orch.policy.every_rows(tonumber(orch.param("every", 50000))),
  stages = { function(row)
    local i = tonumber(tostring(row.id):match("%d+"))
    if i % 1000 == 0 then error("boom " .. i, 0) end
    if i % 777 == 0 then return nil end
    return row
  end },
  observers = { { on_row = measure } },
}
LUA
run_orch run.log run wf.lua --db s.db
expect_eq "30,000 rows, no checkpoint before the last: exit 0" "$RC" 0
expect_grep "the summary counts them" "30,000 rows in .*: 29932 ok, 30 failed, 38 dropped" run.log
heap=$(cat heap.txt)
if [ "${heap:-99999}" -lt 1024 ]; then ok "25,000 rows settled since the last checkpoint hold no Lua heap (${heap} KB)"
else bad "25,000 rows settled since the last checkpoint hold ${heap} KB of Lua heap (under 1,024 expected)"; fi

# the stored results, every row once, in order, as the store always held them
id=$(cd "$WORK" && "$ORCH" ls --db s.db | awk '/packed-/ {print $1; exit}')
run_orch export.log export "$id" --db s.db -o results.jsonl
expect_eq "orch export: exit 0" "$RC" 0
python3 - results.jsonl >check.txt <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bad = []
for i, r in enumerate(rows, 1):
    key = ("k%d" % i) if i % 3 == 0 else str(i)
    status, error = "ok", None
    if i % 1000 == 0:
        status, error = "failed", "boom %d" % i
    elif i % 777 == 0:
        status = "dropped"
    want = {"row": i, "key": key, "status": status}
    if error:
        want["error"] = error
    if r != want:
        bad.append((r, want))
print("%d rows, %d unlike" % (len(rows), len(bad)), bad[:2])
PY
expect_eq "each row once, with its key, status and error" "$(cat check.txt)" "30000 rows, 0 unlike []"

# checkpoints every 7 rows: the same results, each from its own checkpoint
run_orch run2.log run wf.lua --db s2.db --set rows=3000 --set every=7
expect_eq "checkpoints every 7 rows: exit 0" "$RC" 0
id2=$(cd "$WORK" && "$ORCH" ls --db s2.db | awk '/packed-/ {print $1; exit}')
run_orch export2.log export "$id2" --db s2.db -o results2.jsonl
expect_eq "the first 3,000 results as in the run of one checkpoint" "$(head -3000 results.jsonl | md5sum)" \
  "$(md5sum <results2.jsonl)"
expect_grep "429 checkpoints" '"checkpoints": ?429' <(cd "$WORK" && "$ORCH" status "$id2" --json --db s2.db)
[ "$FAIL" -eq 0 ] || cat run.log
finish
