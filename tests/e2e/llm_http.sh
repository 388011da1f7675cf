# LLM calls over real HTTP against tests/llm_server.py on 127.0.0.1:
# faults (429 with Retry-After, 500, garbage, hangs) are retried or
# recorded per row; the journal means a rerun or resume pays nothing;
# kill -9 re-sends at most `concurrency` requests; a budget pauses the run
# before it is overspent; errors that hit every request stop the run early.
. tests/lib.sh
cd "$WORK"
start_llm_server --fail-429 0.10 --fail-500 0.05 --garbage 0.02 --hang 0.003 --retry-after 0.2 --hang-s 30 --seed 7
cat >faulty.lua <<LUA
local orch = require("orch")
local n, i = orch.param("rows", 2000), 0
return orch.workflow {
  name = "faulty",
  input = function() i = i + 1; if i <= n then return { id = i, text = "item number " .. i } end end,
  output = orch.write.jsonl(orch.param("out", "out/faulty.jsonl")),
  errors = orch.write.jsonl("out/faulty-errors.jsonl"),
  key = "id",
  llm = { provider = orch.param("provider", "openai"), model = orch.param("model", "gpt-4o-mini"),
          base_url = "$LLM_URL/v1", api_key = orch.env("TEST_LLM_KEY", "test-key"),
          concurrency = 50, timeout = 2, retry_base = 0.05, retry_cap = 0.5, max_attempts = 6,
          max_tokens = 16, prices = { ["gpt-4o-mini"] = { 1000, 1000 } },
          adaptive = orch.param("adaptive", false), rpm = orch.param("rpm", 0) > 0 and orch.param("rpm", 0) or nil },
  budget = orch.param("budget", 0) > 0 and { max_usd = orch.param("budget", 0), warn_at = { 0.5 } } or nil,
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA

run_orch run1.log run faulty.lua --db s.db
expect_eq "2,000 rows through 10% 429, 5% 500, 2% garbage and hangs: exit 0" "$RC" 0
python3 - out/faulty.jsonl out/faulty-errors.jsonl >rows.txt <<'PY'
import json, sys
ok = [json.loads(l) for l in open(sys.argv[1])]
bad = [json.loads(l) for l in open(sys.argv[2])]
ids = sorted([r["id"] for r in ok] + [r["key"] for r in bad])
assert ids == list(range(1, 2001)), "rows missing or doubled"
assert all(r["reply"] == "echo: Repeat: item number %d" % r["id"] for r in ok), "wrong reply"
assert all(r["error"] for r in bad), "a failure without a reason"
print("accounted", len(ok), "ok", len(bad) < 40)
PY
expect_grep "every row is ok or failed with a reason; few fail" "^accounted 2000 ok True" rows.txt
expect_grep "429s were answered, and retried" "^[1-9][0-9]*$" <(llm_stat faults.429)
calls1=$(llm_stat requests)
if [ "$calls1" -gt 2000 ]; then ok "the server saw $calls1 requests (retries included)"; else bad "only $calls1 requests"; fi

# a second, fresh run is answered from the journal: no call at all
llm_admin reset
run_orch run2.log run faulty.lua --db s.db --fresh
expect_eq "rerun exits 0" "$RC" 0
failed=$(wc -l <out/faulty-errors.jsonl)
calls2=$(llm_stat requests)
# only the rows that failed for good are asked again
if [ "$calls2" -le $((failed * 6)) ]; then ok "rerun made $calls2 calls for $failed failed rows (journal answered the rest)"; else bad "rerun made $calls2 calls"; fi
expect_grep "the summary says so" "from the journal" run2.log

# kill -9 mid-run, resume: at most `concurrency` requests are sent twice
llm_admin config '{"fail_429": 0, "fail_500": 0, "garbage": 0, "hang": 0, "latency_ms": 100}'
llm_admin reset
"$ORCH" run faulty.lua --db k.db --set out=out/killed.jsonl >kill.log 2>&1 &
pid=$!
wait_until '[ "$(llm_stat requests)" -ge 300 ]' # mid-run: 2,000 rows, 50 at a time
kill -9 "$pid"; wait "$pid" 2>/dev/null
before=$(llm_stat requests)
run_orch resume.log run faulty.lua --db k.db --set out=out/killed.jsonl
expect_eq "resume after kill -9 completes" "$RC" 0
dups=$(llm_stat duplicates)
if [ "$before" -gt 0 ] && [ "$dups" -le 50 ]; then ok "$dups request(s) sent twice after kill -9 (<= concurrency 50)"; else bad "$dups duplicates ($before before the kill)"; fi
expect_eq "every row once after the kill" "$(wc -l <out/killed.jsonl)" 2000
llm_admin reset
run_orch full.log run faulty.lua --db k.db --set out=out/killed.jsonl --fresh
expect_eq "a second full run makes 0 calls" "$(llm_stat requests)" 0

# budget: pause before overspending, resume with more
llm_admin config '{"latency_ms": 20}'
run_orch b1.log run faulty.lua --db b.db --set rows=300 --set budget=1 --set out=out/budget.jsonl --no-cache
expect_eq "the budget pauses the run: exit 3" "$RC" 3
expect_grep "says why and how to go on" "budget of \\\$1.0000 reached.*resume with a higher budget, .*orch resume faulty-[0-9a-f]+ --budget" b1.log
expect_grep "warns at half the budget" "budget warning: \\\$0\.[5-9][0-9]* spent, 50% of \\\$1.00" b1.log
bid=$(grep -o 'orch resume faulty-[0-9a-f]*' b1.log | head -1 | cut -d' ' -f3)
"$ORCH" status "$bid" --db b.db --json >b.json
spent=$(python3 -c 'import json; print(json.load(open("b.json"))["cost_usd"] <= 1.0)')
expect_eq "spend stayed within the budget" "$spent" True
run_orch b2.log resume "$bid" --db b.db --budget 100 --no-cache
expect_eq "resume with a higher budget finishes" "$RC" 0
expect_eq "and every row is there once" "$(wc -l <out/budget.jsonl)" 300

# adaptive concurrency: 429s halve the requests in flight, successes grow them back
llm_admin config '{"fail_429": 0.3, "latency_ms": 20, "retry_after": 0}'
run_orch ad.log run faulty.lua --db ad.db --set rows=400 --set adaptive=true --set out=out/ad.jsonl --no-cache -v
expect_eq "adaptive run completes" "$RC" 0
expect_grep "429s lower the concurrency" "LLM concurrency [0-9]+ -> [0-9]+ \(overload\)" ad.log
expect_grep "successes raise it again" "LLM concurrency [0-9]+ -> [0-9]+ \(recovered\)" ad.log
adid=$(sqlite3 ad.db "select id from runs limit 1")
run_orch adh.log history "$adid" --db ad.db
expect_grep "the changes are events of the run" "concurrency +\{\"data\":\{\"from\":" adh.log
llm_admin config '{"fail_429": 0, "latency_ms": 0}'

# rpm: 30 requests at 600 per minute (10 a second, bursts of 10) take about 2 s
start=$(date +%s%N)
run_orch rpm.log run faulty.lua --db rpm.db --set rows=30 --set rpm=600 --set out=out/rpm.jsonl --no-cache
ms=$((($(date +%s%N) - start) / 1000000))
expect_eq "rate-limited run completes" "$RC" 0
if [ "$ms" -ge 1500 ]; then ok "rpm 600 spread 30 requests over ${ms} ms"; else bad "30 requests at rpm 600 took only ${ms} ms"; fi

# Anthropic shape
llm_admin config '{"latency_ms": 0}'
run_orch an.log run faulty.lua --db a.db --set rows=20 --set provider=anthropic --set model=claude-3-5-haiku-latest --set out=out/an.jsonl
expect_eq "anthropic provider: exit 0" "$RC" 0
expect_grep "anthropic replies land in the rows" '"reply":"echo: Repeat: item number 1"' out/an.jsonl

# every request failing the same way stops the run early, with the reason
run_orch m.log run faulty.lua --db m.db --set model=no-such-model --set out=out/m.jsonl
expect_eq "a wrong model stops the run: exit 1" "$RC" 1
expect_grep "with the provider's message" "every LLM request fails the same way: HTTP 404: The model .no-such-model. does not exist" m.log
if [ "$(wc -l <out/faulty-errors.jsonl)" -lt 200 ]; then ok "it stopped early"; else bad "it went through every row"; fi
TEST_LLM_KEY=bad-key run_orch k.log run faulty.lua --db m.db --set out=out/m.jsonl --fresh
expect_eq "a bad key stops the run: exit 1" "$RC" 1
expect_grep "the key itself is never printed" "HTTP 401: Incorrect API key provided" k.log
if grep -q "bad-key" k.log m.db 2>/dev/null; then bad "the API key leaked into the log or the DB"; else ok "the API key is not in the log or the DB"; fi
cat >unreach.lua <<'LUA'
local orch = require("orch")
local rows = {}
for i = 1, 100 do rows[i] = { id = i } end
return orch.workflow {
  name = "unreach", input = rows, key = "id",
  llm = { provider = "openai", model = "m", base_url = "http://127.0.0.1:1/v1", max_attempts = 2, retry_base = 0.01 },
  stages = { orch.stage.prompt { template = "x {{id}}", into = "r" } },
}
LUA
run_orch u.log run unreach.lua --db u.db
expect_eq "an unreachable host stops the run: exit 1" "$RC" 1
expect_grep "naming the connection error" "every LLM request fails the same way: .*(Couldn't connect|Connection refused|Failed to connect)" u.log
finish
