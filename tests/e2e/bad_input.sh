# Bad input gets a clear message naming the place and the right exit code,
# and costs no work: syntax errors, misspelled keys, missing input, an
# unwritable output, malformed CSV/JSONL rows, usage errors.
. tests/lib.sh
cd "$WORK"

cat >syntax.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "x"
  input = {},
}
LUA
run_orch log run syntax.lua
expect_eq "syntax error exits 2" "$RC" 2
expect_grep "syntax error names file:line" "^orch: syntax.lua:4: '}' expected \(to close '\{' at line 2\) near 'input'" log

cat >typo.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "x",
  input = { { a = 1 } },
  stagez = { function(r) return r end },
}
LUA
run_orch log run typo.lua
expect_eq "misspelled key exits 2" "$RC" 2
expect_grep "misspelled key names its line and a suggestion" "^orch: typo.lua:5: orch.workflow: unknown key 'stagez' \(did you mean 'stages'\?\)" log

# A misspelled key inside a nested table is refused the same way, at its
# own line: a stage table, a step, budget, a policy, an observer, an llm.
cat >stagetypo.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "x",
  input = { { a = 1 } },
  stages = {
    { name = "upper", run = function(r) return r end, critcal = true },
  },
}
LUA
expect_refused "a stage table" stagetypo.lua "^orch: stagetypo.lua:6: orch.workflow: stages\[1\]: unknown key 'critcal' \(did you mean 'critical'\?\); expected one of: critical, name, run$"
cat >steptypo.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "x",
  steps = {
    { name = "a", run = function() end },
    { name = "b", after = { "a" },
      critcal = true, run = function() end },
  },
}
LUA
expect_refused "a step" steptypo.lua "^orch: steptypo.lua:7: orch.workflow: steps\[2\]: unknown key 'critcal' \(did you mean 'critical'\?\)"
cat >budgettypo.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "x",
  input = { { a = 1 } },
  budget = { max_usd = 1,
    warn = { 0.5 } },
  stages = { function(r) return r end },
}
LUA
expect_refused "budget" budgettypo.lua "^orch: budgettypo.lua:6: orch.workflow: budget: unknown key 'warn' \(did you mean 'warn_at'\?\)"
cat >policytypo.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "x",
  input = { { a = 1 } },
  checkpoint = orch.policy.any {
    orch.policy.adaptive { max_intervl = 60 },
  },
  stages = { function(r) return r end },
}
LUA
expect_refused "a policy" policytypo.lua "^orch: policytypo.lua:6: orch.policy.adaptive: unknown key 'max_intervl' \(did you mean 'max_interval'\?\)"
cat >observertypo.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "x",
  input = { { a = 1 } },
  stages = { function(r) return r end },
  observers = { orch.observe.progress(),
    orch.observe.jsonl("events.jsonl", { row = true }) },
}
LUA
expect_refused "an observer" observertypo.lua "^orch: observertypo.lua:7: orch.observe.jsonl: unknown key 'row' \(did you mean 'rows'\?\)"
cat >llmtypo.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "x",
  input = { { a = 1 } },
  llm = { provider = "mock",
    modle = "mock" },
  stages = { function(r) return r end },
}
LUA
expect_refused "an llm table" llmtypo.lua "^orch: llmtypo.lua:6: orch.workflow: llm: unknown key 'modle' \(did you mean 'model'\?\)"
cat >prompttypo.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "x",
  input = { { a = 1 } },
  llm = { provider = "mock" },
  stages = { orch.stage.prompt { template = "{{a}}",
    critcal = true } },
}
LUA
expect_refused "orch.stage.prompt" prompttypo.lua "^orch: prompttypo.lua:6: orch.stage.prompt: unknown key 'critcal' \(did you mean 'critical'\?\)"
if [ -e events.jsonl ]; then bad "a refused workflow wrote its observer's file"; else ok "nothing was written"; fi

cat >notfn.lua <<'LUA'
local orch = require("orch")
local wf = orch.workflow {
  name = "x",
  input = { { a = 1 } },
  stages = { function(r) return r end, "upper" },
}
return wf
LUA
run_orch log run notfn.lua
expect_eq "non-function stage exits 2" "$RC" 2
expect_grep "non-function stage is named" "^orch: notfn.lua:2: orch.workflow: stages\[2\] must be a function\(row, ctx\), an orch.stage.\* value or a table \{ name =, run = function\(row, ctx\) \}, got string" log

echo 'return { name = "x" }' >noreturn.lua
run_orch log run noreturn.lua
expect_eq "a file returning no workflow exits 2" "$RC" 2
expect_grep "says what the file must return" "noreturn.lua: the file must return orch.workflow\{...\}, but it returned table" log

cat >loaderr.lua <<'LUA'
local orch = require("orch")
local cfg = nil
return orch.workflow { name = cfg.name, input = {}, stages = {} }
LUA
run_orch log run loaderr.lua
expect_eq "a runtime error at load exits 2" "$RC" 2
expect_grep "names the line" "loaderr.lua:3: attempt to index a nil value \(local 'cfg'\)" log
expect_grep "with a traceback" "stack traceback:" log

# A missing input and an unwritable output fail before any row runs.
cat >missing.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "missing",
  input = orch.read.csv("data/nope.csv"),
  output = orch.write.jsonl("out/x.jsonl"),
  stages = { function(r) io.open("ran", "w"):close(); return r end },
}
LUA
run_orch log run missing.lua
expect_eq "missing input exits 2" "$RC" 2
expect_grep "missing input is named" "^orch: cannot read the input: data/nope.csv: No such file or directory" log
mkdir -p data && printf 'id\n1\n' >data/nope.csv
run_orch log run missing.lua
expect_eq "once the input exists the same command runs (no stale run in the way)" "$RC" 0
rm -f ran data/nope.csv
mkdir -p data && printf 'id,text\n1,a\n2,b\n' >data/ok.csv
cat >unwritable.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "unwritable",
  input = orch.read.csv("data/ok.csv"),
  output = orch.write.jsonl("data/ok.csv/out.jsonl"),
  stages = { function(r) io.open("ran", "w"):close(); return r end },
}
LUA
run_orch log run unwritable.lua
expect_eq "unwritable output exits 2" "$RC" 2
expect_grep "unwritable output is named" "^orch: cannot write the output: data/ok.csv/out.jsonl: " log
if [ -e ran ]; then bad "a stage ran although the run could not start"; else ok "no stage ran"; fi

# A malformed CSV row is named by file and line; on_error decides.
printf 'id,text\n1,fine\n2,"broken"x\n3,also fine\n4,too,many\n5,last\n' >data/bad.csv
cat >badcsv.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "badcsv",
  input = orch.read.csv("data/bad.csv"),
  output = orch.write.jsonl("out/bad.jsonl"),
  errors = orch.write.jsonl("out/bad-errors.jsonl"),
  key = "id",
  on_error = orch.param("on_error", "skip"),
  stages = { function(r) return r end },
}
LUA
run_orch log run badcsv.lua
expect_eq "bad CSV rows skipped: exit 0" "$RC" 0
expect_grep "quote error names file:line" "data/bad.csv:3: malformed CSV" log
expect_grep "field count error names file:line" "data/bad.csv:5: expected 2 fields, found 3" log
expect_eq "good rows written in order" "$(cut -c1-12 out/bad.jsonl | tr '\n' ' ')" '{"id":"1","t {"id":"3","t {"id":"5","t '
expect_grep "errors file records the row" '"row":4,.*"error":"data/bad.csv:5: expected 2 fields, found 3"' out/bad-errors.jsonl
run_orch log run badcsv.lua --set on_error=fail
expect_eq "bad CSV row with on_error=fail exits 1" "$RC" 1
expect_grep "the failure names file:line" "failed at row 2: data/bad.csv:3: malformed CSV" log

printf '{"id":1}\n{"id":2,}\n[1,2]\n\n{"id":4}\n' >data/bad.jsonl
cat >badjsonl.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "badjsonl",
  input = orch.read.jsonl("data/bad.jsonl"),
  output = orch.write.csv("out/bad.csv"),
  stages = { function(r) r.seen = true; return r end },
}
LUA
run_orch log run badjsonl.lua
expect_eq "bad JSONL rows skipped: exit 0" "$RC" 0
expect_grep "invalid JSON names file:line" "data/bad.jsonl:2: invalid JSON" log
expect_grep "an array names file:line" "data/bad.jsonl:3: expected a JSON object, got an array" log
expect_eq "good rows to CSV" "$(cat out/bad.csv | tr '\n' ' ')" "id,seen 1,true 4,true "

# Usage errors
run_orch log run
expect_eq "run without a file exits 2" "$RC" 2
expect_grep "says what run needs" "missing argument: orch run WORKFLOW.lua" log
run_orch log run x.lua --bogus
expect_eq "unknown option exits 2" "$RC" 2
expect_grep "names the option" "unknown option '--bogus'" log
run_orch log run x.lua --concurrency 0
expect_eq "bad concurrency exits 2" "$RC" 2
run_orch log frobnicate
expect_eq "unknown command exits 2" "$RC" 2
run_orch log version
expect_eq "version exits 0" "$RC" 0
expect_grep "version names Lua, libcurl and SQLite" "^Lua 5\.4" log
expect_grep "version names libcurl" "^libcurl [0-9]" log
run_orch log help
expect_eq "help exits 0" "$RC" 0
expect_grep "help lists run" "run WORKFLOW.lua" log
finish
