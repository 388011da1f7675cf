# Exactly-once output across kill -9: a 20,000-row run is killed at random
# moments at least ten times and resumed each time; the final output must
# equal an uninterrupted run's byte for byte, every key exactly once.
. tests/lib.sh
cd "$WORK"
python3 - <<'PY'
import csv, random
random.seed(42)
with open("rows.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "text"])
    for i in range(1, 20001):
        w.writerow([i, "row %d says %s" % (i, random.choice(["hi", "a, b", 'q"uote', "multi\nline"]))])
PY
cat >crashy.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "crashy",
  input = orch.read.csv("rows.csv"),
  output = orch.write.jsonl(orch.param("out", "out/crashy.jsonl")),
  errors = orch.write.jsonl(orch.param("errs", "out/crashy-errors.jsonl")),
  key = "id",
  -- 8 at a time the run takes about 10 s, longer than ten kills can
  -- take (each at most 0.9 s in): it never completes before the tenth
  concurrency = orch.param("conc", 8),
  stages = {
    function(row, ctx)
      local id = tonumber(row.id)
      ctx:sleep(0.002 + (id * 7919 % 5) / 1000)  -- rows finish out of order
      if id % 997 == 0 then error("row " .. id .. " refuses") end
      if id % 1009 == 0 then return nil end
      ctx.state.max_id = math.max(ctx.state.max_id or 0, id)  -- idempotent: exact across re-runs
      row.len = #row.text
      return row
    end,
  },
}
LUA
run_orch ref.log run crashy.lua --db ref.db --set out=out/ref.jsonl --set errs=out/ref-errors.jsonl --set conc=64
expect_eq "uninterrupted run exits 0" "$RC" 0

crash_done() { [ -f crash.db ] && [ "$(sqlite3 crash.db "select count(*) from runs where status = 'completed'")" != 0 ]; }
kill_repeatedly 12 60 crash.log crash_done 15 run crashy.lua --db crash.db -v
kills=$KILLED
if [ $kills -ge 10 ]; then ok "killed the run $kills times"; else bad "only $kills kills happened before the run finished"; fi
# finish what the kills left (the last attempt may have completed by itself)
run_orch final.log resume --all --db crash.db
expect_eq "the last resume completes" "$RC" 0
expect_grep "each restart said it resumed" "resuming run crashy-" crash.log
expect_eq "a single run did all the work" "$(sqlite3 crash.db 'select count(*) from runs')" 1
if cmp -s out/ref.jsonl out/crashy.jsonl; then ok "output is byte-identical to the uninterrupted run"; else
  bad "output differs: $(wc -l <out/ref.jsonl) vs $(wc -l <out/crashy.jsonl) lines"; fi
if cmp -s out/ref-errors.jsonl out/crashy-errors.jsonl; then ok "errors file is identical too"; else bad "errors file differs"; fi
python3 - out/crashy.jsonl >keys.txt <<'PY'
import json, sys, collections
ids = [int(json.loads(l)["id"]) for l in open(sys.argv[1])]
c = collections.Counter(ids)
expected = [i for i in range(1, 20001) if i % 997 and i % 1009]
print("dups", sum(1 for v in c.values() if v > 1), "missing", len(set(expected) - set(ids)), "order", ids == expected)
PY
expect_eq "every key exactly once, in input order" "$(cat keys.txt)" "dups 0 missing 0 order True"
"$ORCH" status --db crash.db --json >status.json
python3 -c '
import json,sys; r=json.load(open("status.json"))
print(r["status"], r["rows_done"], r["rows_ok"], r["rows_failed"], r["rows_dropped"], r["recoveries"] >= 10)' >status.txt
expect_eq "status: completed, counters exact, recoveries counted" "$(cat status.txt)" "completed 20000 19961 20 19 True"
seen=$(sqlite3 crash.db "select value from state where key = 'max_id'")
expect_eq "ctx.state is persisted with the checkpoints" "$seen" 20000
finish
