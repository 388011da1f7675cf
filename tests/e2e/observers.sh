# Observers: a user's table of handlers sees start, every row in input
# order, checkpoints, ctx:emit events and the finish; one that raises is
# reported with its traceback and switched off while the run goes on; the
# built-ins write JSON lines, cost per model and stage, progress lines; a
# malformed observer is refused at load with its line.
. tests/lib.sh
cd "$WORK"
seq 1 600 | awk 'BEGIN{print "id,n"} {print $1 "," $1}' >rows.csv
cat >obs.lua <<'LUA'
local orch = require("orch")
local seen, order = {}, {}
local counter = {
  on_start = function(ev) seen.start = (seen.start or 0) + 1 end,
  on_row = function(ev)
    seen[ev.status] = (seen[ev.status] or 0) + 1
    order[#order + 1] = ev.seq
  end,
  on_checkpoint = function(ev) seen.checkpoint = (seen.checkpoint or 0) + 1 end,
  on_event = function(ev) seen["event " .. ev.name] = (seen["event " .. ev.name] or 0) + 1 end,
  on_finish = function(ev)
    local f = io.open("seen.txt", "w")
    local keys = {}
    for k in pairs(seen) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do f:write(k, "=", seen[k], "\n") end
    local inorder = true
    for i, s in ipairs(order) do inorder = inorder and s == i end
    f:write("rows in order: ", tostring(inorder and #order == 600), "\n")
    f:write("finish ", ev.status, " ", ev.rows, "\n")
    f:close()
  end,
}
return orch.workflow {
  name = "obs",
  input = orch.read.csv("rows.csv"),
  output = orch.write.jsonl("out.jsonl"),
  key = "id",
  llm = { provider = "mock", model = "mock-1", latency_ms = 1 },
  observers = {
    counter,
    function(ev) if ev.type == "row" and ev.seq == 5 then error("boom") end end,
    orch.observe.jsonl("events.jsonl"),
    orch.observe.cost(),
    orch.observe.progress { every = 0.01 },
  },
  stages = { function(row, ctx)
    if tonumber(row.id) % 100 == 0 then ctx:emit("hundred", { id = row.id }) end
    if tonumber(row.id) == 7 then error("row seven") end
    ctx:sleep(0.002)
    row.label = ctx:llm { prompt = "Classify: one of positive, negative: " .. row.id }
    return row
  end },
}
LUA
run_orch run.log run obs.lua
expect_eq "a run with observers: exit 0" "$RC" 0
expect_eq "the handlers saw start, rows by status, checkpoints, events, finish" "$(cat seen.txt)" "checkpoint=2
event hundred=6
failed=1
ok=599
start=1
rows in order: true
finish completed 600"
expect_grep "a raising observer is named, with its traceback, and switched off" "observer 2 failed on a row event and is switched off: obs.lua:[0-9]+: boom" run.log
expect_grep "the run went on" "obs: 600 rows in" run.log
types=$(python3 -c 'import json,sys
evs=[json.loads(l) for l in open("events.jsonl")]
print(evs[0]["type"], sum(e["type"] == "event" for e in evs), sum(e["type"] == "checkpoint" for e in evs), evs[-1]["type"], evs[-1]["rows"], evs[-1]["status"])')
expect_eq "orch.observe.jsonl: start, 6 events, 2 checkpoints, finish" "$types" "start 6 2 finish 600 completed"
expect_grep "orch.observe.cost: per model" "cost by model: mock-1: 599 calls, [0-9]+ tokens" run.log
expect_grep "and per stage" "cost by stage: stage 1: 599 calls" run.log
expect_grep "orch.observe.progress: lines for logs" "^orch: progress: [0-9]+ rows, [01] failed, [0-9]+ rows/s" run.log

# --log-json: every line the run writes is one JSON object
run_orch json.log run obs.lua --log-json --fresh
expect_eq "--log-json run: exit 0" "$RC" 0
got=$(python3 -c 'import json,sys
lines=[json.loads(l) for l in open("json.log")]
ok=all(set(d) >= {"ts_ms", "level", "msg"} and d["level"] in ("error", "warn", "info", "debug") for d in lines)
summary=[d for d in lines if d["msg"].startswith("obs: 600 rows in")]
print(ok, len(summary), summary[0].get("run_id", "")[:4] if summary else "-")')
expect_eq "each line has ts_ms, level, msg; the summary carries the run id" "$got" "True 1 obs-"
run_orch jsonerr.log run missing.lua --log-json
expect_eq "a missing workflow with --log-json: exit 2" "$RC" 2
expect_grep "is a JSON error line too" '^\{"ts_ms":[0-9]+,"level":"error","msg":"cannot open workflow: missing.lua' jsonerr.log

cat >bad1.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "bad",
  input = orch.read.csv("rows.csv"),
  output = orch.write.jsonl("bad.jsonl"),
  observers = { 42 },
}
LUA
run_orch bad1.log run bad1.lua
expect_eq "an observer that is not one: exit 2" "$RC" 2
expect_grep "names the line and the shape" "bad1.lua:6: orch.workflow: observers\[1\] must be a function\(ev\) or a table of on_start, on_row, on_checkpoint, on_event, on_finish handlers, got number" bad1.log
sed 's/observers = { 42 }/observers = { { on_rows = function() end } }/' bad1.lua >bad2.lua
run_orch bad2.log run bad2.lua
expect_eq "a misspelled handler: exit 2" "$RC" 2
expect_grep "names it" "observers\[1\] has an unknown handler 'on_rows'" bad2.log
finish
