# Provider batches with the state on PostgreSQL: the batch records, the
# re-attach after kill -9 and after a stop, and `orch status`, as on SQLite.
. tests/lib.sh
. tests/pg_lib.sh
start_pg
start_llm_server --batch-delay-s 600
trap 'stop_pg; kill ${LLM_PID:-} 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
cd "$WORK"
cat >batch.lua <<LUA
local orch = require("orch")
local i = 0
return orch.workflow {
  name = "batched-pg",
  input = function() i = i + 1; if i <= 300 then return { id = i, text = "item number " .. i } end end,
  output = orch.write.jsonl("out/pg.jsonl"),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$LLM_URL/v1", api_key = "test-key",
          max_tokens = 16, timeout = 3, batch = true, batch_size = 100, batch_window = 0.2, poll_interval = 0.2 },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA

# the create call's answer is held back: kill -9 before orch learns the id
llm_admin config '{"batch_create_delay_s": 60}'
$ORCH run batch.lua --db "$PG_URL" >run1.log 2>&1 &
pid=$!
wait_until '[ "$(llm_stat batch.batches)" -ge 1 ]'
kill -9 $pid; wait $pid 2>/dev/null
llm_admin config '{"batch_create_delay_s": 0}'

# the next run finds that batch, sends the other two, and is stopped
$ORCH run batch.lua --db "$PG_URL" >run2.log 2>&1 &
pid=$!
wait_until "[ \"\$(grep -c 'requests submitted as' run2.log)\" -ge 3 ]"
kill -INT $pid
wait $pid
expect_eq "SIGINT while waiting on batches: exit 3" "$?" 3
expect_grep "the batch whose create answer was lost is found" "batch 1: found as batch_" run2.log
expect_grep "the rows stop at once" "300 row\(s\) waiting on 3 batch\(es\) stop here" run2.log
run_orch status.log status --db "$PG_URL"
expect_grep "status: three batches, none ended" "^batches +3, 3 not ended" status.log
expect_grep "status: batch 3 with its id and times" "^batch 3 +batch_[0-9]+ in_progress, 100 requests; submitted .*Z, expected by .*Z" status.log

llm_admin config '{"batch_delay_s": 0}'
run_orch run3.log run batch.lua --db "$PG_URL"
expect_eq "the resumed run completes" "$RC" 0
expect_grep "it re-attaches to the three" "re-attaching to 3 batch\(es\)" run3.log
expect_eq "all 300 rows" "$(wc -l <out/pg.jsonl)" 300
expect_eq "each request submitted once, nothing billed twice, no synchronous call" \
  "$(llm_stat batch.requests_submitted) $(llm_stat batch.submitted_twice) $(llm_stat batch.billed_twice) $(llm_stat requests)" "300 0 0 0"
finish
