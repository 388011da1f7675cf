# What on_error, the early stop, the counters, the safety checkpoint and
# the log levels promise, each held to its word.
. tests/lib.sh
cd "$WORK"

# --- on_error ----------------------------------------------------------
cat >pol.lua <<'LUA'
local orch = require("orch")
local rows = {}
for i = 1, 8 do rows[i] = { id = i } end
local policies = {
  retry_fail = orch.retry(1, "fail"),
  default_fn = orch.default(function(row, err) return { note = "defaulted" } end),
  error_table = "skip",
}
return orch.workflow {
  name = "pol",
  input = rows,
  key = "id",
  concurrency = 1,
  output = orch.write.jsonl("out/pol.jsonl"),
  on_error = policies[orch.param("policy", "retry_fail")],
  stages = { function(row)
    if row.id == 3 then
      if orch.param("policy", "") == "error_table" then error({ code = 5 }) end
      error("three is unlucky")
    end
    if row.id == 5 and orch.param("policy", "") == "error_table" then error(nil) end
    return row
  end },
}
LUA
run_orch log run pol.lua --set policy=retry_fail
expect_eq "orch.retry(n, \"fail\") stops the run once the tries are used up" "$RC" 1
expect_grep "and names the row" "failed at row 3 \(key 3\): .*three is unlucky" log

run_orch log run pol.lua --set policy=default_fn
expect_eq "orch.default(fn): exit 0" "$RC" 0
expect_grep "what the function returns is merged over the input row" '^\{"id":3,"note":"defaulted"\}$' out/pol.jsonl

run_orch log run pol.lua --set policy=error_table -v
expect_grep "error{code = 5} is shown as its fields" 'row 3 \(key 3\) failed: error \{"code":5\}' log
expect_grep "error(nil) says there was no message" 'row 5 \(key 5\) failed: error with no message' log

# a malformed input row under orch.default is written with the defaults
printf 'id,text\n1,a\n2,b,extra"x\n3,c\n' >bad.csv
cat >def.lua <<'LUA'
local orch = require("orch")
local policies = { default = orch.default { text = "n/a", bad = true },
  retry_default = orch.retry(2, orch.default { text = "n/a", bad = true }) }
return orch.workflow {
  name = "def",
  input = orch.read.csv("bad.csv"),
  output = orch.write.jsonl("out/def.jsonl"),
  on_error = policies[orch.param("policy", "default")],
  stages = { function(row) return row end },
}
LUA
for p in default retry_default; do
  run_orch log run def.lua --set policy=$p
  expect_eq "$p: a malformed row is written with the defaults" "$(sed -n 2p out/def.jsonl)" '{"text":"n/a","bad":true}'
  expect_grep "$p: and counted as defaulted" "2 ok, 0 failed, 0 dropped, 1 defaulted" log
done

# --- the early stop ----------------------------------------------------
seq 1 50 | awk 'BEGIN { print "n,body" } { print $1 ",text " $1 }' >nokey.csv
cat >nokey.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "nokey",
  input = orch.read.csv("nokey.csv"),
  key = "id",
  output = orch.write.jsonl("out/nokey.jsonl"),
  stages = { function(row) return row end },
}
LUA
run_orch log run nokey.lua
expect_eq "every row failing the same way stops the run" "$RC" 1
expect_grep "with that message" "the first 5 rows all failed the same way: the row has no 'id' field" log
N=$(grep -Eo 'nokey: [0-9]+ rows' log | grep -Eo '[0-9]+')
if [ "${N:-50}" -lt 50 ]; then ok "it stops before the 50th row ($N settled)"; else bad "it ran all 50 rows"; fi

# an LLM provider failing the same way at concurrency 1: stops after 5 calls, not 1
cat >llmfail.lua <<'LUA'
local orch = require("orch")
orch.llm.register("down", { call = function() return nil, "connection refused" end })
local rows = {}
for i = 1, 20 do rows[i] = { id = i } end
return orch.workflow {
  name = "llmfail",
  input = rows,
  concurrency = 1,
  llm = { provider = "down", model = "m" },
  errors = orch.write.jsonl("out/llmfail-errors.jsonl"),
  stages = { orch.stage.prompt { template = "hi {{id}}", into = "x" } },
}
LUA
run_orch log run llmfail.lua
expect_eq "the failing provider stops the run" "$RC" 1
expect_grep "with its message" "every LLM request fails the same way: connection refused" log
expect_eq "after 5 failed calls at concurrency 1" "$(wc -l <out/llmfail-errors.jsonl)" 5

# --- the safety checkpoint under every_rows(n > 100,000) -----------------
cat >big.lua <<'LUA'
local orch = require("orch")
local n = 0
return orch.workflow {
  name = "big",
  input = function() n = n + 1; if n <= 120000 then return { id = n } end end,
  checkpoint = orch.policy.every_rows(150000),
  stages = { function(row) return row end },
}
LUA
run_orch log run big.lua
RUN=$("$ORCH" ls --db "$WORK/.orch/state.db" --json 2>/dev/null | python3 -c 'import json,sys; print([r["id"] for r in json.load(sys.stdin) if r["name"]=="big"][0])')
run_orch cps checkpoints "$RUN"
expect_grep "100,000 settled rows force a checkpoint whatever the policy" "rows +100,000 " cps
expect_eq "then the final one: two in all" "$(grep -cE '^ *[0-9]+ ' cps)" 2

# --- counters add up after kill -9 and resume -----------------------------
seq 1 600 | awk 'BEGIN { print "id,review" } { print $1 ",review number " $1 " is fine" }' >r.csv
cat >count.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "count",
  input = orch.read.csv("r.csv"),
  output = orch.write.jsonl("out/count.jsonl"),
  key = "id",
  llm = { provider = "mock", model = "mock", latency_ms = 15, concurrency = 64 },
  checkpoint = orch.policy.every_rows(50),
  stages = { orch.stage.prompt { template = "Tone, one of: positive, negative. {{review}}", into = "tone" } },
}
LUA
"$ORCH" run count.lua >k1.log 2>&1 &
K=$!
wait_lines out/count.jsonl 150 || bad "the run made no progress"
kill -9 $K
wait $K 2>/dev/null
run_orch k2.log run count.lua
expect_eq "the resumed run completes" "$RC" 0
expect_grep "calls = rows: each row's call counted once" "600 rows in .*600 LLM calls" k2.log
expect_eq "each row once" "$(ids out/count.jsonl)" "1..600"

# --- log levels ----------------------------------------------------------
cat >logs.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "logs",
  input = { { id = 1 } },
  observers = { { on_row = function() error("observer broke") end } },
  stages = { function(row, ctx)
    ctx:log("error", "an error line"); ctx:log("warn", "a warn line")
    ctx:log("info", "an info line"); ctx:log("debug", "a debug line")
    return row
  end },
}
LUA
run_orch log run logs.lua --log-json --fresh
expect_grep "error stays error" '"level":"error".*an error line' log
expect_grep "warn stays warn" '"level":"warn".*a warn line' log
expect_grep "info stays info and is shown by default" '"level":"info".*an info line' log
if grep -q "a debug line" log; then bad "debug is hidden without -v"; else ok "debug is hidden without -v"; fi
expect_grep "an observer failure is a warning" '"level":"warn".*observer broke' log
run_orch log run logs.lua --log-json --fresh -v
expect_grep "-v shows debug as debug" '"level":"debug".*a debug line' log
expect_grep "the started line carries the run id" '"run_id":"logs-[0-9a-f]+","msg":"started run logs-' log
run_orch log run logs.lua --fresh -q
expect_grep "-q keeps errors" "an error line" log
expect_grep "-q keeps warnings" "a warn line" log
if grep -q "an info line" log; then bad "-q hides info"; else ok "-q hides info"; fi

# --- steps are spoken of as steps -----------------------------------------
cat >one.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "one",
  steps = { { name = "only", run = function() return 1 end } },
}
LUA
run_orch log run one.lua
expect_grep "one step, singular" "one: 1 step in " log
finish
