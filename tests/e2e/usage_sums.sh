# The run's LLM figures when many rows settle at once: the totals a
# checkpoint stores and the finish event reports are, to the last bit,
# what adding each settled row's usage in input order gives. Rows of one
# kind (one call: flat usage, one model and stage) are added up in the
# driver's locals; rows of other kinds come between them: two models
# (nested usage), no call, a call and then a failure, a call without
# usage (estimated). Costs are fractions that do not add up exactly, so a
# sum in another order would differ. A checkpoint every 7 rows falls
# inside the runs of like rows. Then a rerun answered by the journal
# (cached calls, saved costs) is checked the same way.
. tests/lib.sh
cd "$WORK"
cp "$ROOT/tests/e2e/mixed_usage.lua" .
cat >s.lua <<'LUA'
local orch = require("orch")
local json = require("orch.json")
local mixed = dofile("mixed_usage.lua")
local rows = mixed.rows(700, { [0] = "two_models", [3] = "none", [5] = "fail", [7] = "est" })
-- the usage of each row as the row event gives it, added up in input
-- order by a plain walk: numbers added, groups added name by name
local sums, seen = { llm_calls = 0, tokens_in = 0, tokens_out = 0, cost = 0 }, 0
local snapshots = {} -- rows seen -> the sums then
local function add(dst, src)
  for k, v in pairs(src) do
    if type(v) == "table" then
      dst[k] = dst[k] or {}
      add(dst[k], v)
    else
      dst[k] = (dst[k] or 0) + v
    end
  end
end
local log = assert(io.open(orch.param("log", "sums.jsonl"), "w"))
local observer = {
  on_row = function(ev)
    if ev.usage then
      add(sums, ev.usage)
    end
    seen = seen + 1
    snapshots[seen] = json.encode(sums)
  end,
  on_checkpoint = function(ev)
    log:write(json.encode({ rows = ev.rows }), "\n")
  end,
  on_finish = function(ev)
    local same = ev.llm_calls == sums.llm_calls and ev.cost_usd == sums.cost
      and ev.tokens == sums.tokens_in + sums.tokens_out
      and json.encode(ev.cost_by_model) == json.encode(sums.by_model)
      and json.encode(ev.cost_by_stage) == json.encode(sums.by_stage)
    log:write(json.encode({ finish = same, rows = seen, cost = ev.cost_usd, sums_cost = sums.cost }), "\n")
    for n = 1, seen do
      log:write(json.encode({ at = n, sums = json.decode(snapshots[n]) }), "\n")
    end
    log:close()
  end,
}
return orch.workflow {
  name = "usage-sums",
  input = rows,
  output = orch.write.jsonl(orch.param("out", "out.jsonl")),
  key = "id",
  concurrency = 50,
  llm = mixed.llm,
  checkpoint = orch.policy.every_rows(7),
  observers = { observer },
  on_error = "skip",
  stages = { mixed.stage },
}
LUA
# check.lua DB RUN LOG: each checkpoint's stored totals against the walk's
# sums after as many rows, and the finish event's; prints what differs
cat >check.lua <<'LUA'
local store = require("orch.store")
local json = require("orch.json")
local st = assert(store.open(arg[1]))
local run_id = arg[2]
local at, finish, ckpts = {}, nil, {}
for line in io.lines(arg[3]) do
  local v = json.decode(line)
  if v.at then at[v.at] = v.sums elseif v.finish ~= nil then finish = v else ckpts[#ckpts + 1] = v end
end
local checked, bad = 0, {}
for _, c in ipairs(st:checkpoint_list(run_id)) do
  local full = st:checkpoint_get(run_id, c.seq)
  local m = json.decode(full.memento)
  local want = at[full.input_index]
  if full.input_index > 0 then
    checked = checked + 1
    for _, k in ipairs({ "llm_calls", "tokens_in", "tokens_out", "cost", "estimated_calls", "cached_calls", "saved" }) do
      if m.totals[k] ~= want[k] then
        bad[#bad + 1] = string.format("checkpoint at row %d: %s %s, the walk %s", full.input_index, k,
          tostring(m.totals[k]), tostring(want[k]))
      end
    end
    for _, g in ipairs({ "by_model", "by_stage" }) do
      if json.encode(m.totals[g]) ~= json.encode(want[g]) then
        bad[#bad + 1] = string.format("checkpoint at row %d: %s %s, the walk %s", full.input_index, g,
          json.encode(m.totals[g]), json.encode(want[g]))
      end
    end
  end
end
print(string.format("finish %s, %d rows, %d checkpoints checked", tostring(finish.finish), finish.rows, checked))
for i = 1, math.min(#bad, 5) do
  print(bad[i])
end
LUA
last_run() { sqlite3 a.db "select id from runs order by created_ms desc, rowid desc limit 1"; }
run_orch a.log run s.lua --db a.db
expect_eq "700 rows, 70 of them failed: exit 0" "$RC" 0
expect_eq "every checkpoint's totals and the finish figures are the walk's" "$(cd "$WORK" && "$ORCH" lua check.lua a.db "$(last_run)" sums.jsonl)" \
  "finish true, 700 rows, 101 checkpoints checked"
expect_eq "the sums are fractions: cost is not a round number" \
  "$(python3 -c 'import json,sys
f=[json.loads(l) for l in open(sys.argv[1]) if "\"finish\"" in l][0]
print(f["cost"] != round(f["cost"], 6))' sums.jsonl)" "True"

run_orch b.log run s.lua --db a.db --fresh --set log=sums2.jsonl --set out=out2.jsonl
expect_eq "a rerun answered by the journal: exit 0" "$RC" 0
expect_eq "its calls came from the journal" \
  "$(python3 -c 'import json,sys
a=[json.loads(l) for l in open(sys.argv[1]) if "\"at\":700" in l][0]["sums"]
print(a["cached_calls"], a["cost"], a["saved"] > 0)' sums2.jsonl)" "700 0 True"
expect_eq "its checkpoints' totals and finish figures are the walk's too" \
  "$(cd "$WORK" && "$ORCH" lua check.lua a.db "$(last_run)" sums2.jsonl)" \
  "finish true, 700 rows, 101 checkpoints checked"
finish
