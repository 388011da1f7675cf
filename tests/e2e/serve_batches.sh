# orch serve shows a run's provider batches (llm.batch): /api/runs/ID
# carries each batch's id, provider, status, request count, counts,
# submitted at and expected by; /metrics has per-run batch gauges that
# parse strictly; the run page renders them (headless Chromium, as text).
# While the run waits on two open batches they show as in_progress; after
# SIGINT and a resume that collects them, the same serve shows them ended
# (it reads on from the events it has seen).
. tests/lib.sh
cd "$WORK"
PARSE="python3 $ROOT/tests/prom_parse.py"
start_llm_server --batch-delay-s 600
cat >batch.lua <<LUA
local orch = require("orch")
local n, i = 200, 0
return orch.workflow {
  name = "batched <i>view</i>",
  input = function() i = i + 1; if i <= n then return { id = i, text = "item number " .. i } end end,
  output = orch.write.jsonl("out/batch.jsonl"),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$LLM_URL/v1",
          api_key = "test-key", max_tokens = 16, batch = true, batch_size = 100, batch_window = 0.2,
          poll_interval = 0.2, prices = { ["gpt-4o-mini"] = { 1000, 1000 } } },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA
llm_admin config '{"batch_delay_s": 600}'
"$ORCH" run batch.lua --db b.db >run.log 2>&1 &
RUN_PID=$!
SERVE_PID=""
trap 'kill $RUN_PID $SERVE_PID $LLM_PID 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
wait_until "[ \"\$(grep -c 'requests submitted as' run.log)\" -ge 2 ]"
wait_until "[ \"\$(llm_stat batch.polls)\" -ge 2 ]"
ID=$(sqlite3 b.db "select id from runs")
"$ORCH" serve --db b.db --listen 127.0.0.1:0 >serve.log 2>&1 &
SERVE_PID=$!
wait_until "grep -q 'orch serve: http' serve.log" || { bad "serve did not start"; cat serve.log; }
PORT=$(sed -n 's/^orch serve: http:\/\/[0-9.]*:\([0-9]*\)\/.*/\1/p' serve.log)
URL="http://127.0.0.1:$PORT"

# batches JSON: one line per batch, the fields the page shows
batches() {
  curl -s "$URL/api/runs/$ID" | jq -r '.batches[] | [.batch, (.id | test("^batch_[0-9]+$")), .provider, .state, .status,
    .requests, (.submitted_ms | type), (.expected_ms > .submitted_ms)] | map(tostring) | join(" ")'
}
# the second poll of the running run's batches: both open, in progress
wait_until '[ "$(batches | grep -c " in_progress ")" = 2 ]'
expect_eq "/api/runs/ID: two open batches with id, provider, status, requests and times" "$(batches)" \
  "1 true openai polled in_progress 100 number true
2 true openai polled in_progress 100 number true"
expect_eq "each with the provider's counts" "$(curl -s "$URL/api/runs/$ID" | jq -c '[.batches[].counts.total]')" "[100,100]"
expect_eq "a run that is not a worker run has no workers field" "$(curl -s "$URL/api/runs/$ID" | jq -c '.workers')" "null"
curl -s "$URL/metrics" >m1.prom
if $PARSE m1.prom >parse1.out; then ok "/metrics with batch gauges parses"; else bad "/metrics: $(cat parse1.out)"; fi
expect_grep "per-run open batches" "^orch_run_batches\{run_id=\"$ID\",workflow=\"batched <i>view</i>\",state=\"open\"\} 2$" m1.prom
expect_grep "per-run requests in open batches" "^orch_run_batch_requests\{run_id=\"$ID\",workflow=\"batched <i>view</i>\",state=\"open\"\} 200$" m1.prom
expect_grep "with HELP and TYPE" "^# TYPE orch_run_batches gauge$" m1.prom

CHROME=${CHROME:-$(command -v chromium || command -v chromium-browser || true)}
dump() {
  timeout 90 "$CHROME" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$WORK/chrome" \
    --virtual-time-budget=2500 --dump-dom "$1" >"$2" 2>>chrome.log
}
if [ -z "$CHROME" ]; then bad "chromium is not installed (tests/deps.sh installs it)"; else
  dump "$URL/#/run/$ID" open.html
  expect_grep "the run page: the batches heading" "<h2>provider batches \(2, 2 not ended\)</h2>" open.html
  expect_grep "the run page: a batch row with id, provider, status, requests" \
    "<tr class=\"batch\"><td class=\"num\">2</td><td class=\"mono\">batch_[0-9]+</td><td>openai</td><td>in_progress</td><td class=\"num\">100</td><td>[^<]*</td><td>[^<-]+</td><td>[^<-]+</td></tr>" open.html
fi

kill -INT "$RUN_PID"
wait "$RUN_PID"
expect_eq "SIGINT while waiting on batches: exit 3" "$?" 3
llm_admin config '{"batch_delay_s": 0}'
run_orch resume.log resume --db b.db "$ID"
expect_eq "resume collects the batches: exit 0" "$RC" 0
expect_eq "the same serve shows them ended, 100 ok each" \
  "$(curl -s "$URL/api/runs/$ID" | jq -r '.batches[] | [.batch, .state, .status, .succeeded, .failed, .resent] | map(tostring) | join(" ")')" \
  "1 ended completed 100 0 0
2 ended completed 100 0 0"
curl -s "$URL/metrics" >m2.prom
if $PARSE m2.prom >parse2.out; then ok "/metrics parses after the run"; else bad "/metrics: $(cat parse2.out)"; fi
expect_grep "per-run ended batches" "^orch_run_batches\{run_id=\"$ID\",workflow=\"batched <i>view</i>\",state=\"ended\"\} 2$" m2.prom
expect_grep "no open batch left" "^orch_run_batches\{run_id=\"$ID\",workflow=\"batched <i>view</i>\",state=\"open\"\} 0$" m2.prom
if [ -n "$CHROME" ]; then
  dump "$URL/#/run/$ID" ended.html
  expect_grep "the run page: the ended batches" "<h2>provider batches \(2, 0 not ended\)</h2>" ended.html
  expect_grep "the run page: a batch's figures" "<td>completed</td><td class=\"num\">100</td><td>100 ok, 0 without a reply, 0 sent again</td>" ended.html
  expect_grep "the run's name is text" "<span id=\"run-name\">batched &lt;i&gt;view&lt;/i&gt;</span>" ended.html
fi
finish
