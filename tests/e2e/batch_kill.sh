# Provider batches survive kill -9 at any moment of their lifecycle: one
# kill while the create call's answer is held back (the batch exists, orch
# never learned its id: OpenAI finds it by its metadata, Anthropic by
# claiming the results of the batches created since), then kills at random
# moments (collecting, uploading, polling, downloading), then a final run.
# The server's counters prove no request was submitted or billed twice and
# no synchronous call was made.
. tests/lib.sh
cd "$WORK"
start_llm_server --batch-delay-s 1.5
cat >batch.lua <<LUA
local orch = require("orch")
local n, i = orch.param("rows", 3000), 0
return orch.workflow {
  name = "batched-kill",
  input = function() i = i + 1; if i <= n then return { id = i, text = "item number " .. i } end end,
  output = orch.write.jsonl(orch.param("out", "out/batch.jsonl")),
  key = "id",
  llm = { provider = orch.param("provider", "openai"), model = orch.param("model", "gpt-4o-mini"),
          base_url = "$LLM_URL/v1", api_key = "test-key", max_tokens = 16, timeout = 3,
          batch = true, batch_size = 1000, concurrency = 1000, batch_window = 0.2, poll_interval = 0.2,
          retry_base = 0.05 }, -- one batch at a time: kills land in every phase of the three batches
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA

rows_ok() { python3 - "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
n = int(sys.argv[2])
bad = [r["id"] for r in rows if r["reply"] != "echo: Repeat: item number %d" % r["id"]]
print("%d ok" % len(rows) if [r["id"] for r in rows] == list(range(1, n + 1)) and not bad else "wrong: %d rows, bad %s" % (len(rows), bad[:5]))
PY
}

for provider in openai anthropic; do
  model=gpt-4o-mini; [ $provider = anthropic ] && model=claude-3-5-haiku-latest
  db=$provider.db
  args="run batch.lua --db $db --set provider=$provider --set model=$model --set out=out/$provider.jsonl -v"
  llm_admin reset

  # the create call reaches the server, its answer never reaches orch
  llm_admin config '{"batch_create_delay_s": 60}'
  $ORCH $args >$provider-kill.log 2>&1 &
  pid=$!
  wait_until '[ "$(llm_stat batch.batches)" -ge 1 ]'
  kill -9 $pid; wait $pid 2>/dev/null
  expect_grep "$provider: killed after recording that batch 1 was being created" '"state":"creating"' <(sqlite3 $db "select data from events where type = 'batch'")
  llm_admin config '{"batch_create_delay_s": 0}'

  # four more kills at random moments of the lifecycle
  done_fn() { [ "$(sqlite3 $db "select count(*) from runs where status = 'completed'" 2>/dev/null)" = 1 ]; }
  kill_repeatedly 4 20 $provider-kill.log done_fn 7 $args

  run_orch $provider-final.log $args
  expect_eq "$provider: the final run exits 0" "$RC" 0
  expect_eq "$provider: every row ok once, in order" "$(rows_ok out/$provider.jsonl 3000)" "3000 ok"
  expect_eq "$provider: no request submitted twice" "$(llm_stat batch.submitted_twice)" 0
  expect_eq "$provider: no request billed twice" "$(llm_stat batch.billed_twice)" 0
  expect_eq "$provider: each request submitted exactly once" "$(llm_stat batch.requests_submitted) $(llm_stat batch.custom_ids)" "3000 3000"
  expect_eq "$provider: no synchronous call" "$(llm_stat requests)" 0
  # the runs killed, then the final one: the lost batch is found by whichever got that far
  cat $provider-kill.log $provider-final.log >$provider-all.log
  if [ $provider = openai ]; then
    expect_grep "openai: the batch whose create answer was lost is found by its metadata" "batch 1: found as batch_" $provider-all.log
  else
    expect_grep "anthropic: its requests are claimed from the batches created since" "batch 1: claiming its requests from the [0-9]+ batch" $provider-all.log
  fi
  expect_grep "$provider: a resumed run re-attaches to its batches" "re-attaching to [0-9]+ batch" $provider-all.log
done

finish
