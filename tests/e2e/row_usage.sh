# A row's LLM usage as every reader sees it: a stage reading ctx.usage (and
# writing it into the output), a row observer, the finish event's figures,
# and the checkpointed totals a resumed run starts from. Rows make one
# call, two of one model, two models, two stages, none; some read
# ctx.usage between calls. With and without a row observer (a row's usage
# is kept flat until something reads it), the figures are the same.
. tests/lib.sh
cd "$WORK"
cat >u.lua <<'LUA'
local orch = require("orch")
local json = require("orch.json")
orch.llm.register("fixed", { call = function(req)
  return "r:" .. req.prompt, { input = #req.prompt, output = 3 }
end })
local log = assert(io.open(orch.param("log", "events.jsonl"), "a"))
local function say(what, v)
  log:write(what, " ", json.encode(v), "\n")
  log:flush()
end
local observer = { on_finish = function(ev)
  say("finish", { status = ev.status, llm_calls = ev.llm_calls, tokens = ev.tokens, cost_usd = ev.cost_usd,
    by_model = ev.cost_by_model, by_stage = ev.cost_by_stage })
end }
if orch.param("rows", 1) == 1 then
  observer.on_row = function(ev) say("row " .. ev.seq, ev.usage or false) end
end
local kinds = { "one", "twice", "two_models", "read", "none", "two_stages", "one", "read" }
local rows = {}
for i, k in ipairs(kinds) do
  rows[i] = { id = i, kind = k }
end
return orch.workflow {
  name = "row-usage",
  input = rows,
  output = orch.write.jsonl(orch.param("out", "out/u.jsonl")),
  key = "id",
  llm = { provider = "fixed", model = "a", concurrency = 1, max_tokens = 3,
          prices = { a = { 1e6, 2e6 }, b = { 4e6, 8e6 } } },
  budget = { max_usd = orch.param("budget", 1000) },
  checkpoint = orch.policy.every_rows(1),
  observers = { observer },
  stages = {
    { name = "ask", run = function(row, ctx)
      local k = row.kind
      if k == "none" then return row end
      ctx:llm { prompt = "q" .. row.id }
      if k == "twice" then ctx:llm { prompt = "again" .. row.id } end
      if k == "two_models" then ctx:llm { prompt = "b" .. row.id, model = "b" } end
      if k == "read" then
        row.calls_seen = ctx.usage.by_model.a.calls
        ctx:llm { prompt = "after" .. row.id }
      end
      return row
    end },
    { name = "more", run = function(row, ctx)
      if row.kind == "two_stages" then ctx:llm { prompt = "more" .. row.id } end
      return row
    end },
    { name = "keep", run = function(row, ctx)
      if row.id % 2 == 0 then row.usage = ctx.usage or false end
      return row
    end },
  },
}
LUA
run_orch a.log run u.lua --db a.db
expect_eq "a run with a row observer: exit 0" "$RC" 0
cat >want_out <<'EOF'
{"id":1,"kind":"one"}
{"id":2,"kind":"twice","usage":{"by_model":{"a":{"calls":2,"cost":20.0,"tokens":14}},"by_stage":{"ask":{"calls":2,"cost":20.0,"tokens":14}},"cost":20.0,"llm_calls":2,"tokens_in":8,"tokens_out":6}}
{"id":3,"kind":"two_models"}
{"calls_seen":1,"id":4,"kind":"read","usage":{"by_model":{"a":{"calls":2,"cost":20.0,"tokens":14}},"by_stage":{"ask":{"calls":2,"cost":20.0,"tokens":14}},"cost":20.0,"llm_calls":2,"tokens_in":8,"tokens_out":6}}
{"id":5,"kind":"none"}
{"id":6,"kind":"two_stages","usage":{"by_model":{"a":{"calls":2,"cost":19.0,"tokens":13}},"by_stage":{"ask":{"calls":1,"cost":8.0,"tokens":5},"more":{"calls":1,"cost":11.0,"tokens":8}},"cost":19.0,"llm_calls":2,"tokens_in":7,"tokens_out":6}}
{"id":7,"kind":"one"}
{"calls_seen":1,"id":8,"kind":"read","usage":{"by_model":{"a":{"calls":2,"cost":20.0,"tokens":14}},"by_stage":{"ask":{"calls":2,"cost":20.0,"tokens":14}},"cost":20.0,"llm_calls":2,"tokens_in":8,"tokens_out":6}}
EOF
expect_eq "ctx.usage written into the output is the nested form" "$(cat out/u.jsonl)" "$(cat want_out)"
cat >want_rows <<'EOF'
row 1 {"by_model":{"a":{"calls":1,"cost":8.0,"tokens":5}},"by_stage":{"ask":{"calls":1,"cost":8.0,"tokens":5}},"cost":8.0,"llm_calls":1,"tokens_in":2,"tokens_out":3}
row 2 {"by_model":{"a":{"calls":2,"cost":20.0,"tokens":14}},"by_stage":{"ask":{"calls":2,"cost":20.0,"tokens":14}},"cost":20.0,"llm_calls":2,"tokens_in":8,"tokens_out":6}
row 3 {"by_model":{"a":{"calls":1,"cost":8.0,"tokens":5},"b":{"calls":1,"cost":32.0,"tokens":5}},"by_stage":{"ask":{"calls":2,"cost":40.0,"tokens":10}},"cost":40.0,"llm_calls":2,"tokens_in":4,"tokens_out":6}
row 4 {"by_model":{"a":{"calls":2,"cost":20.0,"tokens":14}},"by_stage":{"ask":{"calls":2,"cost":20.0,"tokens":14}},"cost":20.0,"llm_calls":2,"tokens_in":8,"tokens_out":6}
row 5 false
row 6 {"by_model":{"a":{"calls":2,"cost":19.0,"tokens":13}},"by_stage":{"ask":{"calls":1,"cost":8.0,"tokens":5},"more":{"calls":1,"cost":11.0,"tokens":8}},"cost":19.0,"llm_calls":2,"tokens_in":7,"tokens_out":6}
row 7 {"by_model":{"a":{"calls":1,"cost":8.0,"tokens":5}},"by_stage":{"ask":{"calls":1,"cost":8.0,"tokens":5}},"cost":8.0,"llm_calls":1,"tokens_in":2,"tokens_out":3}
row 8 {"by_model":{"a":{"calls":2,"cost":20.0,"tokens":14}},"by_stage":{"ask":{"calls":2,"cost":20.0,"tokens":14}},"cost":20.0,"llm_calls":2,"tokens_in":8,"tokens_out":6}
EOF
expect_eq "a row observer sees each row's usage nested" "$(grep '^row' events.jsonl)" "$(cat want_rows)"
want_finish='finish {"by_model":{"a":{"calls":11,"cost":103.0,"tokens":70},"b":{"calls":1,"cost":32.0,"tokens":5}},"by_stage":{"ask":{"calls":11,"cost":124.0,"tokens":67},"more":{"calls":1,"cost":11.0,"tokens":8}},"cost_usd":135.0,"llm_calls":12,"status":"completed","tokens":75}'
expect_eq "the finish event's figures" "$(grep '^finish' events.jsonl)" "$want_finish"

run_orch b.log run u.lua --db b.db --set rows=0 --set log=b.jsonl --set out=out/b.jsonl
expect_eq "without a row observer: exit 0" "$RC" 0
expect_eq "the same output" "$(cat out/b.jsonl)" "$(cat want_out)"
expect_eq "and the same figures" "$(cat b.jsonl)" "$want_finish"

# paused by the budget between rows, then resumed from its checkpoint: the
# figures it resumes from are those the rows settled with
run_orch c.log run u.lua --db c.db --set rows=0 --set log=c.jsonl --set out=out/c.jsonl --set budget=60
expect_eq "a budget of \$60 pauses the run: exit 3" "$RC" 3
rid=$(sqlite3 c.db "select id from runs")
expect_eq "after rows 1 and 2 (row 3's first call paid, the row not settled)" "$(head -1 c.jsonl)" \
  'finish {"by_model":{"a":{"calls":3,"cost":28.0,"tokens":19}},"by_stage":{"ask":{"calls":3,"cost":28.0,"tokens":19}},"cost_usd":28.0,"llm_calls":3,"status":"paused","tokens":19}'
run_orch c2.log resume "$rid" --db c.db --budget 1000
expect_eq "resumed with a budget of \$1000: exit 0" "$RC" 0
expect_eq "the output is whole" "$(cat out/c.jsonl)" "$(cat want_out)"
# the whole run's figures, less row 3's first call ($8), which the journal
# answers on resume (counted, at no cost)
expect_eq "and the resumed run's figures follow from the checkpointed ones" "$(grep completed c.jsonl)" \
  'finish {"by_model":{"a":{"calls":11,"cost":95.0,"tokens":70},"b":{"calls":1,"cost":32.0,"tokens":5}},"by_stage":{"ask":{"calls":11,"cost":116.0,"tokens":67},"more":{"calls":1,"cost":11.0,"tokens":8}},"cost_usd":127.0,"llm_calls":12,"status":"completed","tokens":75}'
finish
