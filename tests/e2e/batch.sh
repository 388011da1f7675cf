# Provider batch APIs (llm = { batch = true }) against tests/llm_server.py:
# 3,000 rows through OpenAI's Batch API and Anthropic's Message Batches,
# every row ok, cost at half the synchronous price, no synchronous call;
# the journal answers a rerun; entries that expire are sent again.
. tests/lib.sh
cd "$WORK"
start_llm_server --batch-delay-s 0.5
cat >batch.lua <<LUA
local orch = require "orch"
local n, i = orch.param("rows", 3000), 0
return orch.workflow {
  name = "batched",
  input = function() i = i + 1; if i <= n then return { id = i, text = "item number " .. i .. orch.param("tag", "") } end end,
  output = orch.write.jsonl(orch.param("out", "out/batch.jsonl")),
  key = "id",
  llm = { provider = orch.param("provider", "openai"), model = orch.param("model", "gpt-4o-mini"),
          base_url = "$LLM_URL/v1", api_key = "test-key", max_tokens = 16,
          batch = orch.param("batch", true), batch_window = 0.3, poll_interval = 0.2, retry_base = 0.05,
          prices = { ["gpt-4o-mini"] = { 1000, 1000 }, ["claude-3-5-haiku-latest"] = { 1000, 1000 } } },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA

# rows: "N ok" when the output holds rows 1..N with the echo reply
rows_ok() { python3 - "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
n = int(sys.argv[2])
bad = [r["id"] for r in rows if r["reply"] != "echo: Repeat: item number %d" % r["id"]]
print("%d ok" % len(rows) if [r["id"] for r in rows] == list(range(1, n + 1)) and not bad else "wrong: %d rows, bad %s" % (len(rows), bad[:5]))
PY
}
# cost RUN_LOG: the dollars the run's summary says it spent
cost_of() { run_orch "$1.status" status --db "$2" --json; python3 -c 'import json,sys; print("%.6f" % json.load(open(sys.argv[1]))["cost_usd"])' "$1.status"; }

for provider in openai anthropic; do
  model=gpt-4o-mini; [ $provider = anthropic ] && model=claude-3-5-haiku-latest
  llm_admin reset
  run_orch $provider.log run batch.lua --db $provider.db --set provider=$provider --set model=$model --set out=out/$provider.jsonl
  expect_eq "$provider: 3,000 rows in batch mode: exit 0" "$RC" 0
  expect_eq "$provider: every row ok, in order, with its reply" "$(rows_ok out/$provider.jsonl 3000)" "3000 ok"
  expect_eq "$provider: no synchronous call" "$(llm_stat requests)" 0
  expect_eq "$provider: 3,000 requests submitted" "$(llm_stat batch.requests_submitted)" 3000
  expect_eq "$provider: none submitted twice" "$(llm_stat batch.submitted_twice)" 0
  expect_eq "$provider: none billed twice" "$(llm_stat batch.billed_twice)" 0
  expect_grep "$provider: the batch is logged with its id" "batch 1: 3000 requests submitted as (batch|msgbatch)_[0-9]+, expected by" $provider.log
  batch_cost=$(cost_of $provider $provider.db)

  # the same rows synchronously: twice the price
  llm_admin reset
  run_orch $provider-sync.log run batch.lua --db $provider-sync.db --set provider=$provider --set model=$model --set batch=false --set out=out/$provider-sync.jsonl
  expect_eq "$provider: synchronous run: exit 0" "$RC" 0
  sync_cost=$(cost_of $provider-sync $provider-sync.db)
  expect_eq "$provider: batch cost is half the synchronous ($batch_cost vs $sync_cost)" \
    "$(python3 -c "import sys; b, s = float(sys.argv[1]), float(sys.argv[2]); print(s > 0 and abs(b * 2 - s) < 1e-6)" "$batch_cost" "$sync_cost")" True

  # a fresh rerun is answered from the journal: nothing submitted
  llm_admin reset
  run_orch $provider-rerun.log run batch.lua --db $provider.db --fresh --set provider=$provider --set model=$model --set out=out/$provider-rerun.jsonl
  expect_eq "$provider: rerun exit 0" "$RC" 0
  expect_eq "$provider: rerun rows ok" "$(rows_ok out/$provider-rerun.jsonl 3000)" "3000 ok"
  expect_eq "$provider: rerun submits nothing" "$(llm_stat batch.requests_submitted)" 0
  expect_eq "$provider: rerun makes no synchronous call" "$(llm_stat requests)" 0
done

finish
