# orch gc: removes finished runs older than --older-than with everything
# stored for them, keeps --keep-last per workflow, never a paused run
# (it still resumes), prunes the journal with --journal, shrinks with
# --vacuum, --dry-run only lists, and a bad --status or age is refused.
. tests/lib.sh
cd "$WORK"
seq 1 50 | awk 'BEGIN{print "id,text"} {print $1 ",item " $1}' >rows.csv
cat >wf.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = orch.param("name", "a"),
  input = orch.read.csv("rows.csv"),
  output = orch.write.jsonl("out/" .. orch.param("name", "a") .. ".jsonl"),
  key = "id",
  on_error = orch.param("fail", "no") == "yes" and "fail" or "skip",
  llm = { provider = "mock", model = "mock", latency_ms = 0 },
  budget = { max_usd = tonumber(orch.param("budget", "100")) },
  stages = { orch.stage.prompt { template = "Label {{text}} for " .. orch.param("name", "a") .. " as one of: x, y",
    into = "label" },
    function(row) if orch.param("fail", "no") == "yes" and row.id == "10" then error("no") end return row end },
}
LUA
n() { sqlite3 .orch/state.db "$1"; }
run_orch a1.log run wf.lua --set name=a
run_orch a2.log run wf.lua --set name=a --fresh
run_orch b.log run wf.lua --set name=b --set fail=yes
expect_eq "a failed run to collect" "$RC" 1
run_orch c.log run wf.lua --set name=c --set budget=0.00001
expect_eq "a paused run to keep" "$RC" 3
expect_eq "four runs" "$(n 'select count(*) from runs')" 4
run_orch keep.log gc
expect_grep "nothing is 30 days old yet" "gc: removed 0 run\(s\)" keep.log
run_orch dry.log gc --older-than 0m --dry-run
expect_grep "--dry-run lists" "would remove a-[0-9a-f]+ +a +completed" dry.log
expect_eq "and removes nothing" "$(n 'select count(*) from runs')" 4
a_old=$(n "select id from runs where name = 'a' order by created_ms limit 1")
a_new=$(n "select id from runs where name = 'a' order by created_ms desc limit 1")
run_orch gc.log gc --older-than 0m --keep-last 1
expect_eq "gc: exit 0" "$RC" 0
expect_grep "says what went" "gc: removed 1 run\(s\) \(1 completed\); store" gc.log
expect_eq "the newest run of each workflow is kept, and the paused one" \
  "$(n 'select name || ":" || status from runs order by name' | tr '\n' ' ')" "a:completed b:failed c:paused "
expect_eq "the older run's checkpoints, results and events went with it" \
  "$(n "select (select count(*) from checkpoints where run_id = '$a_old') + (select count(*) from results where run_id = '$a_old') + (select count(*) from result_chunks where run_id = '$a_old') + (select count(*) from events where run_id = '$a_old')")" 0
if [ "$(n "select (select count(*) from results where run_id = '$a_new') + (select count(*) from result_chunks where run_id = '$a_new')")" -gt 0 ]; then ok "the kept run still has its results"; else bad "kept run lost its results"; fi
entries=$(n 'select count(*) from llm_journal')
run_orch gc2.log gc --older-than 0m --journal --vacuum
expect_grep "the failed run goes; the journal is pruned" "gc: removed 2 run\(s\) \(1 completed, 1 failed\), $entries journal entries; store" gc2.log
expect_eq "the paused run stays" "$(n 'select name || ":" || status from runs' | tr '\n' ' ')" "c:paused "
expect_eq "the journal is empty" "$(n 'select count(*) from llm_journal')" 0
cid=$(n "select id from runs where name = 'c'")
run_orch resume.log resume "$cid" --budget 100
expect_eq "the paused run still resumes after gc" "$RC" 0
run_orch bad.log gc --status finished
expect_eq "a status that does not exist: exit 2" "$RC" 2
expect_grep "names it" "--status must list pending, running, paused, completed or failed, got 'finished'" bad.log
run_orch bad2.log gc --older-than soon
expect_eq "an age that is not one: exit 2" "$RC" 2
finish
