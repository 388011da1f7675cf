# Multi-step (DAG) workflows: independent steps run at once, each gets the
# outputs of its `after` steps, the output file has a line per step; a
# failing step stops the run (exit 1) and its dependents never run; kill -9
# mid-DAG then resume runs only the steps that had not completed; cycles,
# unknown steps, two steps of one name and steps with an input are refused
# at load with their line; a step returning a function is named.
. tests/lib.sh
cd "$WORK"
cat >dag.lua <<'LUA'
local orch = require("orch")
local function mark(name)
  local f = io.open("ran.log", "a")
  f:write(name, "\n")
  f:close()
end
local slow = tonumber(orch.param("slow", "0"))
local sched = require("orch.sched")
local function span(name, t0) -- when a step ran, for the concurrency check
  local f = io.open("spans.log", "a")
  f:write(string.format("%s %.3f %.3f\n", name, t0, sched.now()))
  f:close()
end
return orch.workflow {
  name = "research",
  output = orch.write.jsonl("out/report.jsonl"),
  llm = { provider = "mock", model = "mock", latency_ms = 0 },
  steps = {
    { name = "report", after = { "analyse", "stats" }, critical = true, run = function(ctx, inputs)
      mark("report")
      if orch.param("fail", "") == "report" then error("the report template is missing") end
      return { summary = inputs.analyse.summary, n = inputs.stats.n }
    end },
    { name = "search", run = function(ctx) mark("search"); ctx:sleep(0.3) return { "doc a", "doc b", "doc c" } end },
    { name = "stats", after = { "search" }, run = function(ctx, inputs)
      mark("stats"); local t0 = sched.now(); ctx:sleep(0.3 + slow); span("stats", t0)
      if orch.param("fail", "") == "stats" then error("stats broke") end
      return { n = #inputs.search }
    end },
    { name = "analyse", after = { "search" }, run = function(ctx, inputs)
      mark("analyse"); local t0 = sched.now(); ctx:sleep(0.3); span("analyse", t0)
      return { summary = ctx:llm { prompt = "Summarise: " .. table.concat(inputs.search, "; ") } }
    end },
  },
}
LUA
run_orch run.log run dag.lua
expect_eq "a DAG run: exit 0" "$RC" 0
expect_grep "counts steps" "research: 4 steps in [0-9.]+ s .*: 4 ok, 0 failed" run.log
overlap=$(python3 -c 'import sys
s={l.split()[0]: tuple(map(float, l.split()[1:])) for l in open("spans.log")}
print(s["stats"][0] < s["analyse"][1] and s["analyse"][0] < s["stats"][1])')
expect_eq "stats and analyse, both after search, ran at the same time" "$overlap" "True"
expect_eq "a line per step, dependencies first, outputs passed along" "$(cat out/report.jsonl)" \
'{"output":["doc a","doc b","doc c"],"step":"search"}
{"output":{"n":3},"step":"stats"}
{"output":{"summary":"doc a; doc b; doc c"},"step":"analyse"}
{"output":{"n":3,"summary":"doc a; doc b; doc c"},"step":"report"}'
expect_eq "each step ran once" "$(sort ran.log | tr '\n' ' ')" "analyse report search stats "
last=$(sqlite3 .orch/state.db "select group_concat(reason, ',') from (select c.reason from checkpoints c join runs r
  on r.id = c.run_id where r.name = 'research' order by c.seq)")
if echo "$last" | grep -Eq '(step stats|step analyse),.*before report,.*step report'; then
  ok "a critical step starts after a checkpoint of all that is done ($last)"; else bad "checkpoints: $last"; fi

rm -f ran.log
run_orch fail.log run dag.lua --set fail=stats --fresh
expect_eq "a failing step fails the run: exit 1" "$RC" 1
expect_grep "naming the step and its error" "failed at step .stats.: .*dag.lua:[0-9]+: stats broke" fail.log
if grep -q report ran.log; then bad "report ran after stats failed"; else ok "its dependents never ran"; fi
run_orch fail2.log run dag.lua --set fail=stats --fresh -v
expect_grep "a dependent says which step it waited for" "report.*step 'stats' did not complete: .*stats broke" fail2.log

# orch.retry: a step that fails once is tried again, and its dependents wait for it
sed 's/name = "research",/name = "research", on_error = orch.retry(1),/' dag.lua >retry.lua
python3 - <<'PY'
src = open("retry.lua").read()
src = src.replace('if orch.param("fail", "") == "stats" then error("stats broke") end',
  'if orch.param("fail", "") == "stats" and not io.open("tried") then io.open("tried", "w"):close() error("stats broke once") end')
open("retry.lua", "w").write(src)
PY
rm -f ran.log tried
run_orch retry.log run retry.lua --set fail=stats --fresh
expect_eq "a step retried by orch.retry(1): exit 0" "$RC" 0
expect_eq "stats ran twice, report once after it" "$(sort ran.log | tr '\n' ' ')" "analyse report search stats stats "

# kill -9 while stats (slow) runs: search and analyse are done and saved
rm -f ran.log
"$ORCH" run dag.lua --set slow=5 --fresh >kill.log 2>&1 &
pid=$!
# analyse (0.3 s) has finished and a checkpoint holds its output; stats (5.3 s) has not
wait_until '[ "$(checkpoints .orch/state.db "c.reason = '"'step analyse'"'")" -ge 1 ]'
kill -9 "$pid"; wait "$pid" 2>/dev/null
run_orch resume.log run dag.lua --set slow=5
expect_eq "resume after kill -9: exit 0" "$RC" 0
expect_grep "it resumed" "resuming run research-" resume.log
expect_eq "search and analyse did not run again; stats and report did" "$(sort ran.log | tr '\n' ' ')" \
  "analyse report search stats stats "
expect_eq "every step once in the output" "$(python3 -c 'import json; print(" ".join(json.loads(l)["step"] for l in open("out/report.jsonl")))')" \
  "search stats analyse report"

# the ready-made multi-step workflow, offline
run_orch report.log run "$ROOT/workflows/report.lua" --set input="$ROOT/examples/data/reviews.csv" \
  --set report=report.md --set out=report-steps.jsonl
expect_eq "workflows/report.lua: exit 0" "$RC" 0
expect_grep "four steps, one LLM call per product" "review-report: 4 steps in .*; 15 LLM calls" report.log
expect_eq "a report section per product" "$(head -1 report.md) $(grep -c '^## .* reviews, mean rating [0-9.]*)$' report.md)" \
  "# Review report 15"

cat >cycle.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "cycle",
  steps = {
    { name = "a", after = { "c" }, run = function() end },
    { name = "b", after = { "a" }, run = function() end },
    { name = "c", after = { "b" }, run = function() end },
  },
}
LUA
expect_refused "a cycle" cycle.lua "cycle.lua:[0-9]+: orch.workflow: steps form a cycle: a, b, c wait for each other"
sed 's/after = { "a" }/after = { "aa" }/; s/after = { "c" }, //' cycle.lua >unknown.lua
expect_refused "an unknown step" unknown.lua "step 'b' runs after 'aa' \(after\[1\]\), which is not a step \(did you mean 'a'\?\)"
sed 's/name = "c"/name = "a"/' cycle.lua >dup.lua
expect_refused "two steps of one name" dup.lua "two steps are named 'a' \(steps\[1\] and steps\[3\]\)"
sed 's/name = "cycle",/name = "cycle", input = { { id = 1 } },/' cycle.lua >both.lua
expect_refused "steps with an input" both.lua "'input' cannot be given with 'steps'"
# A step's output must be JSON: a function (or a table holding one) is named
# with the step and where it is, not as a ctx.state problem.
cat >fnstep.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "fnstep",
  steps = {
    { name = "search", run = function(ctx) return { "doc a" } end },
    { name = "analyse", after = { "search" }, run = function(ctx, inputs)
      if orch.param("shape", "") == "nested" then return { report = { render = print } } end
      return print
    end },
  },
}
LUA
run_orch fnstep.log run fnstep.lua
expect_eq "a step returning a function fails the run: exit 1" "$RC" 1
expect_grep "names the step and what it returned" "failed at step .analyse.: fnstep.lua:6: step 'analyse' returned a function; a step returns JSON values \(string, number, boolean, table\) or nil" fnstep.log
if grep -q "ctx.state" fnstep.log; then bad "the message blames ctx.state"; else ok "the message does not blame ctx.state"; fi
run_orch fnstep2.log run fnstep.lua --set shape=nested --fresh
expect_eq "a step returning a table with a function: exit 1" "$RC" 1
expect_grep "names the path of the function" "failed at step .analyse.: fnstep.lua:6: step 'analyse' returned a table holding a function at \.report\.render; a step returns JSON values \(string, number, boolean, table\) or nil" fnstep2.log
finish
