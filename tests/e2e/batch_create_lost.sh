# A create call whose answer never comes is not made again, and a batch is
# taken as never created only once a create call of an earlier process can
# no longer land: the promise is that no request is paid for twice.
# 1. The server holds the create call's answer past the client's timeout
#    (the batch exists): the same process finds the batch (OpenAI: by its
#    metadata) or claims its results (Anthropic) instead of creating it
#    again.
# 2. The server is slow to act on a create call (the batch exists only
#    seconds later) and orch is killed meanwhile: the resumed run waits for
#    that create call to land rather than sending the requests again.
. tests/lib.sh
cd "$WORK"
start_llm_server --batch-delay-s 0.5
cat >batch.lua <<LUA
local orch = require("orch")
require("orch.batch").SETTLE_S = 12 -- the provider's lag: more than the server's record delay below
local n, i = 20, 0
return orch.workflow {
  name = "batched-create-lost",
  input = function() i = i + 1; if i <= n then return { id = i, text = "item number " .. i } end end,
  output = orch.write.jsonl(orch.param("out", "out/batch.jsonl")),
  key = "id",
  llm = { provider = orch.param("provider", "openai"), model = orch.param("model", "gpt-4o-mini"),
          base_url = "$LLM_URL/v1", api_key = "test-key", max_tokens = 16, timeout = 2,
          batch = true, batch_size = 20, concurrency = 20, batch_window = 0.2, poll_interval = 0.2,
          retry_base = 0.05 },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA

rows_ok() { python3 - "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bad = [r["id"] for r in rows if r["reply"] != "echo: Repeat: item number %d" % r["id"]]
print("%d ok" % len(rows) if [r["id"] for r in rows] == list(range(1, 21)) and not bad else "wrong: %d rows, bad %s" % (len(rows), bad[:5]))
PY
}

for provider in openai anthropic; do
  model=gpt-4o-mini; [ $provider = anthropic ] && model=claude-3-5-haiku-latest
  found="batch 1: found as batch_"; [ $provider = anthropic ] && found="batch 1: claiming its requests from the 1 batch"

  # 1. the answer is held past the timeout (2 s): no second create call
  llm_admin reset
  llm_admin config '{"batch_create_delay_s": 30}'
  args="run batch.lua --db $provider-held.db --set provider=$provider --set model=$model --set out=out/$provider-held.jsonl -v"
  $ORCH $args >$provider-held.log 2>&1 &
  pid=$!
  wait_until '[ "$(llm_stat batch.creates_received)" -ge 1 ]'
  llm_admin config '{"batch_create_delay_s": 0}' # a create call sent again would be answered at once
  wait $pid; RC=$?
  wait_until '[ "$(llm_stat batch.batches)" -ge "$(llm_stat batch.creates_received)" ]' # every create call acted on
  expect_eq "$provider, held answer: the run exits 0" "$RC" 0
  expect_eq "$provider, held answer: every row ok once, in order" "$(rows_ok out/$provider-held.jsonl)" "20 ok"
  expect_eq "$provider, held answer: one create call, one batch" \
    "$(llm_stat batch.creates_received) $(llm_stat batch.batches)" "1 1"
  expect_eq "$provider, held answer: no request submitted twice" "$(llm_stat batch.submitted_twice)" 0
  expect_grep "$provider, held answer: the lost create is not retried" "cannot tell whether it was created" $provider-held.log
  expect_grep "$provider, held answer: the batch is found, not created again" "$found" $provider-held.log

  # 2. killed while the server is still working on the create call (it
  # creates the batch 6 s after receiving it): the resume waits for it
  llm_admin reset
  llm_admin config '{"batch_create_record_delay_s": 6}'
  args="run batch.lua --db $provider-slow.db --set provider=$provider --set model=$model --set out=out/$provider-slow.jsonl -v"
  $ORCH $args >$provider-slow.log 2>&1 &
  pid=$!
  wait_until '[ "$(llm_stat batch.creates_received)" -ge 1 ]'
  kill -9 $pid; wait $pid 2>/dev/null
  llm_admin config '{"batch_create_record_delay_s": 0}'
  expect_eq "$provider, slow create: killed before the batch exists" "$(llm_stat batch.batches)" 0
  run_orch $provider-slow-resume.log $args
  expect_eq "$provider, slow create: the resumed run exits 0" "$RC" 0
  wait_until '[ "$(llm_stat batch.batches)" -ge "$(llm_stat batch.creates_received)" ]' # every create call acted on
  expect_eq "$provider, slow create: every row ok once, in order" "$(rows_ok out/$provider-slow.jsonl)" "20 ok"
  expect_eq "$provider, slow create: one batch" "$(llm_stat batch.batches)" 1
  expect_eq "$provider, slow create: no request submitted twice" "$(llm_stat batch.submitted_twice)" 0
  expect_grep "$provider, slow create: the late batch is found" "$found" $provider-slow-resume.log
done

finish
