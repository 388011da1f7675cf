# A run waiting on provider batches stops on SIGINT (exit 3, paused),
# `orch status` shows its batches, and `orch resume` re-attaches to them
# later without sending anything again. Budget admission reserves a
# batch's estimated cost before it is submitted.
. tests/lib.sh
cd "$WORK"
start_llm_server --batch-delay-s 600
cat >batch.lua <<LUA
local orch = require("orch")
local n, i = orch.param("rows", 200), 0
return orch.workflow {
  name = "batched-stop",
  input = function() i = i + 1; if i <= n then return { id = i, text = "item number " .. i } end end,
  output = orch.write.jsonl(orch.param("out", "out/batch.jsonl")),
  key = "id",
  llm = { provider = orch.param("provider", "openai"), model = "gpt-4o-mini", base_url = "$LLM_URL/v1",
          api_key = "test-key", max_tokens = 16, batch = true, batch_size = 100, batch_window = 0.2,
          poll_interval = 0.2, prices = { ["gpt-4o-mini"] = { 1000, 1000 } } },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA

for provider in openai anthropic; do
  llm_admin reset
  llm_admin config '{"batch_delay_s": 600}'
  $ORCH run batch.lua --db $provider.db --set provider=$provider --set out=out/$provider.jsonl >$provider-stop.log 2>&1 &
  pid=$!
  wait_until "[ \"\$(grep -c 'requests submitted as' $provider-stop.log)\" -ge 2 ]"
  wait_until "[ \"\$(llm_stat batch.polls)\" -ge 2 ]"
  kill -INT $pid
  wait $pid
  expect_eq "$provider: SIGINT while waiting on batches: exit 3 (paused)" "$?" 3
  expect_grep "$provider: says the batches stay and how to resume" "200 row\(s\) waiting on 2 batch\(es\) stop here; the batches stay with the provider and .orch resume batched-stop-[0-9a-f]+. re-attaches to them" $provider-stop.log
  if grep -q "runs again on resume" $provider-stop.log; then bad "$provider: a line per row"; else ok "$provider: no line per row"; fi
  run_orch $provider-status.log status --db $provider.db
  expect_grep "$provider: status: paused" "^status +paused" $provider-status.log
  expect_grep "$provider: status: the batches" "^batches +2, 2 not ended" $provider-status.log
  expect_grep "$provider: status: batch 1 with its id, provider status, counts, times" "^batch 1 +(batch|msgbatch)_[0-9]+ in_progress, 100 requests.*; submitted [0-9-]+ [0-9:]+Z, expected by [0-9-]+ [0-9:]+Z" $provider-status.log
  run_orch $provider-history.log history --db $provider.db $(sqlite3 $provider.db "select id from runs")
  expect_grep "$provider: history: the batch events" 'batch .*"state":"submitted"' $provider-history.log

  # later: the batches have ended; the resumed run collects them
  llm_admin config '{"batch_delay_s": 0}'
  run_orch $provider-resume.log resume --db $provider.db $(sqlite3 $provider.db "select id from runs")
  expect_eq "$provider: resume exits 0" "$RC" 0
  expect_grep "$provider: it re-attaches" "re-attaching to 2 batch\(es\)" $provider-resume.log
  expect_eq "$provider: all 200 rows" "$(wc -l <out/$provider.jsonl)" 200
  expect_eq "$provider: nothing submitted again, no synchronous call" "$(llm_stat batch.requests_submitted) $(llm_stat batch.submitted_twice) $(llm_stat requests)" "200 0 0"
  run_orch $provider-status2.log status --db $provider.db
  expect_grep "$provider: status: the ended batches" "^batch 2 +(batch|msgbatch)_[0-9]+ (completed|ended), 100 requests, 100 ok, 0 without a reply, 0 sent again" $provider-status2.log
done

# budget: a batch is admitted on its estimated cost (100 requests of at
# most 13 + 16 tokens at $1,000/M, half price: $1.45) before it is sent
llm_admin reset
run_orch budget.log run batch.lua --db budget.db --budget 1.0 --set out=out/budget.jsonl
expect_eq "budget below one batch's estimate: paused" "$RC" 3
expect_eq "nothing submitted" "$(llm_stat batch.batches) $(llm_stat batch.requests_submitted)" "0 0"
expect_grep "the run says why" "budget of \\\$1.0000 reached" budget.log
run_orch budget2.log resume --db budget.db --budget 2.5 $(sqlite3 budget.db "select id from runs")
expect_eq "room for one batch at a time: exit 0" "$RC" 0
expect_eq "both batches were sent" "$(llm_stat batch.batches) $(llm_stat batch.requests_submitted)" "2 200"
expect_eq "one after the other: the second waits for the first's reservation" \
  "$(grep -oE 'batch [12]( \(batch_[0-9]+\) completed|: 100 requests submitted)' budget2.log | sed 's/batch_[0-9]*/ID/' | tr '\n' ';')" \
  "batch 1: 100 requests submitted;batch 1 (ID) completed;batch 2: 100 requests submitted;batch 2 (ID) completed;"
expect_eq "all 200 rows" "$(wc -l <out/budget.jsonl)" 200

finish
