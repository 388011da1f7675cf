# What a provider reports, and what it does not: a server that sends no
# usage is still counted (estimated, and said so) and still capped by the
# budget; a Retry-After longer than retry_cap fails the attempt with the
# server's value instead of sleeping; orch.http works without a require;
# a provider registered with orch.llm.register has its usage counted and
# its mistakes named.
. tests/lib.sh
cd "$WORK"
start_llm_server --omit-usage
cat >nu.lua <<LUA
local orch = require("orch")
local n, i = orch.param("rows", 50), 0
return orch.workflow {
  name = "nousage",
  input = function() i = i + 1; if i <= n then return { id = i, text = "item number " .. i } end end,
  output = orch.write.jsonl(orch.param("out", "out/nu.jsonl")),
  key = "id",
  llm = { provider = "openai", model = "m", base_url = "$LLM_URL/v1", api_key = "k", concurrency = 4,
          max_tokens = 16, prices = { m = { 100, 100 } } },
  budget = orch.param("budget", 0) > 0 and { max_usd = orch.param("budget", 0) } or nil,
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA
run_orch a.log run nu.lua --db a.db
expect_eq "a server without usage: exit 0" "$RC" 0
# "Repeat: item number 1" is 21 characters: 6 tokens in; "echo: Repeat: item number 1" 27: 7 out
expect_grep "tokens are counted from the text, and the summary says they are estimated" \
  "50 LLM calls, [0-9,]+ tokens, \\\$0\.[0-9]{4} \(tokens and cost estimated for 50 calls: no usage from the provider\)" a.log
rid=$(sqlite3 a.db "select id from runs limit 1")
expect_eq "the cost is not zero" "$(python3 -c "print($(sqlite3 a.db "select cost_usd from runs") > 0)")" True
expect_eq "nor the tokens" "$(python3 -c "print($(sqlite3 a.db "select tokens_in from runs") >= 300)")" True
run_orch h.log history "$rid" --db a.db
expect_grep "an event says the usage is estimated" "usage_estimated" h.log
run_orch st.log status "$rid" --db a.db
expect_grep "orch status marks the figures as estimated" "^llm +50 calls, .* \(estimated in part: the provider sent no usage\)" st.log
run_orch stj.log status "$rid" --db a.db --json
expect_grep "and so does its JSON" '"usage_estimated":true' stj.log

llm_admin reset
run_orch b.log run nu.lua --db b.db --set budget=0.01 --set rows=2000
expect_eq "the budget holds without usage: paused, exit 3" "$RC" 3
sent=$(llm_stat requests)
if [ "$sent" -lt 20 ]; then ok "only $sent of 2,000 requests went out"; else bad "$sent requests went out"; fi
expect_eq "spend stayed within \$0.01" "$(python3 -c "print(0 < $(sqlite3 b.db "select cost_usd from runs") <= 0.01)")" True

# Retry-After: 100000 is not slept through
llm_admin config '{"omit_usage": false, "retry_after": 100000}'
cat >ra.lua <<LUA
local orch = require("orch")
return orch.workflow {
  name = "retry-after",
  input = { { id = 1, text = "one" }, { id = 2, text = "two [[fault:429x1]]" }, { id = 3, text = "three" } },
  output = orch.write.jsonl("out/ra.jsonl"),
  errors = orch.write.jsonl("out/ra-errors.jsonl"),
  key = "id",
  llm = { provider = "openai", model = "m", base_url = "$LLM_URL/v1", api_key = "k", timeout = 5,
          retry_cap = orch.param("cap", 30) },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA
run_orch ra.log run ra.lua --db ra.db
expect_eq "a 3-row run with Retry-After: 100000 ends: exit 0" "$RC" 0
expect_eq "two rows are done" "$(wc -l <out/ra.jsonl)" 2
expect_grep "the other fails with the server's value" \
  'HTTP 429: Rate limit reached.*\(the server asks to retry after 100000 s, more than the 5 s orch waits; raise llm.retry_cap to wait longer\)' out/ra-errors.jsonl
expect_eq "and is not retried" "$(llm_stat max_attempts_per_body)" 1
llm_admin config '{"retry_after": 0.1}'
llm_admin reset
run_orch ra2.log run ra.lua --db ra2.db --set cap=1
expect_eq "a Retry-After within the cap is obeyed, then the retry succeeds" "$(wc -l <out/ra.jsonl)" 3
expect_eq "with a second attempt" "$(llm_stat max_attempts_per_body)" 2

# orch.http without require("orch.http")
cat >h.lua <<LUA
local orch = require("orch")
return orch.workflow {
  name = "http-plain",
  input = { { id = 1 } },
  output = orch.write.jsonl("out/h.jsonl"),
  stages = { function(row)
    local r = assert(orch.http.request { url = "$LLM_URL/health" })
    row.status, row.body, row.same = r.status, r.body, orch.http == require("orch.http")
    return row
  end },
}
LUA
run_orch h.log run h.lua --db h.db
expect_eq "orch.http.request without a require: exit 0" "$RC" 0
expect_eq "and it answered" "$(cat out/h.jsonl)" '{"body":"ok","id":1,"same":true,"status":200}'

# a provider of one's own
cat >p.lua <<'LUA'
local orch = require("orch")
local mode = orch.param("mode", "openai")
orch.llm.register("mine", { call = function(req)
  if mode == "table" then return { text = "hi" } end
  if mode == "fraction" then return "hi", { input = 1.5, output = 2 } end
  if mode == "none" then return nil end
  return "hi " .. req.prompt, { prompt_tokens = 1000, completion_tokens = 500 }
end })
return orch.workflow {
  name = "own-provider",
  input = { { id = 1, text = "a" }, { id = 2, text = "b" } },
  output = orch.write.jsonl("out/p.jsonl"),
  errors = orch.write.jsonl("out/p-errors.jsonl"),
  llm = { provider = "mine", model = "m", prices = { m = { 1, 2 } } },
  stages = { orch.stage.prompt { template = "x {{text}}", into = "r" } },
}
LUA
run_orch p1.log run p.lua --db p1.db
expect_eq "a registered provider: exit 0" "$RC" 0
expect_grep "its usage (OpenAI's names) is counted" "2 LLM calls, 3,000 tokens, \\\$0\.0040" p1.log
run_orch p2.log run p.lua --db p2.db --set mode=table
expect_grep "a reply that is not text is named, without internals" \
  "row 1 \(key 1\): orch.llm provider 'mine': call returned table as the reply; return the reply text \(a string\) and its usage, or nil and an error message$" p2.log
if grep -q "journal_put\|bad argument" p2.log; then bad "internals leak: $(grep -m1 journal_put p2.log)"; else ok "no internals in the message"; fi
run_orch p3.log run p.lua --db p3.db --set mode=fraction
expect_grep "a usage that is not whole tokens is named" "orch.llm provider 'mine': usage.input must be a whole number of tokens, got 1.5" p3.log
run_orch p4.log run p.lua --db p4.db --set mode=none
expect_grep "nil without a message says so" "provider 'mine' failed without saying why" p4.log
finish
