# Provider batch APIs (llm = { batch = true }) against tests/llm_server.py:
# 3,000 rows through OpenAI's Batch API and Anthropic's Message Batches,
# every row ok, cost at half the synchronous price, no synchronous call;
# the journal answers a rerun; entries that expire are sent again.
. tests/lib.sh
cd "$WORK"
start_llm_server --batch-delay-s 0.5
cat >batch.lua <<LUA
local orch = require("orch")
require("orch.batch").SETTLE_S = 3 -- the test server's lag in acting on a create call: none
local n, i = orch.param("rows", 3000), 0
return orch.workflow {
  name = "batched",
  input = function() i = i + 1; if i <= n then return { id = i, text = "item number " .. i .. orch.param("tag", "") } end end,
  output = orch.write.jsonl(orch.param("out", "out/batch.jsonl")),
  key = "id",
  llm = { provider = orch.param("provider", "openai"), model = orch.param("model", "gpt-4o-mini"),
          base_url = "$LLM_URL/v1", api_key = "test-key", max_tokens = 16,
          batch = orch.param("batch", true), batch_window = 0.3, poll_interval = 0.2, retry_base = 0.05,
          max_attempts = 2, timeout = 2,
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

# create calls that fail with 500 every time: orch cannot tell whether the
# batch exists, looks for it (OpenAI: by its metadata; Anthropic: the
# batches created since) and sends the requests again only once it is sure
for provider in openai anthropic; do
  llm_admin reset
  llm_admin config '{"batch_create_fail": 2, "batch_delay_s": 0.2}'
  run_orch lost-$provider.log run batch.lua --db lost-$provider.db --set rows=50 --set provider=$provider --set out=out/lost-$provider.jsonl
  expect_eq "$provider lost create: exit 0" "$RC" 0
  expect_eq "$provider lost create: all 50 rows" "$(rows_ok out/lost-$provider.jsonl 50)" "50 ok"
  expect_grep "$provider lost create: it says it cannot tell" "batch 1: cannot tell whether it was created \\(creating the batch: POST /(batches|messages/batches): HTTP 500" lost-$provider.log
  expect_eq "$provider lost create: two creates failed, one batch made, nothing twice" "$(llm_stat batch.create_failed) $(llm_stat batch.batches) $(llm_stat batch.submitted_twice) $(llm_stat requests)" "2 1 0 0"
  expect_grep "$provider lost create: the requests go again in batch 2" "batch 2: 50 requests submitted" lost-$provider.log
done

# orch estimate puts the batch price beside the synchronous one
run_orch estimate.log estimate batch.lua --set rows=100
expect_eq "estimate: exit 0" "$RC" 0
expect_grep "estimate: the synchronous cost" "cost           at most \\\$2\.9000 " estimate.log
expect_grep "estimate: the batch cost beside it, half" "batch cost     at most \\\$1\.4500 with llm.batch = true \(the provider's batch API: 50% of the price, answers within 24 h\)" estimate.log

# entries that expire or error are sent again in a later batch; one that
# errors every time fails its row with the provider's error once
# max_attempts batches have been tried, or goes synchronously with
# batch_fallback = "sync"
cat >expiry.lua <<LUA
local orch = require("orch")
local i = 0
return orch.workflow {
  name = "expiry",
  input = function()
    i = i + 1
    if i > 300 then return nil end
    local tag = i == 1 and " [[batch:error]]" or i % 7 == 0 and " [[batch:expirex1]]" or i % 11 == 0 and " [[batch:errorx1]]" or ""
    return { id = i, text = "row " .. i .. tag }
  end,
  output = orch.write.jsonl(orch.param("out", "out/expiry.jsonl")),
  errors = orch.write.jsonl(orch.param("errors", "out/expiry-errors.jsonl")),
  key = "id",
  llm = { provider = orch.param("provider", "openai"), model = "m", base_url = "$LLM_URL/v1", api_key = "k",
          max_tokens = 16, batch = true, batch_window = 0.2, poll_interval = 0.2, max_attempts = 3,
          batch_fallback = orch.param("fallback", "fail") },
  stages = { orch.stage.prompt { template = "{{text}}", into = "reply" } },
}
LUA
llm_admin config '{"batch_delay_s": 0.2}'
for provider in openai anthropic; do
  llm_admin reset
  run_orch expiry-$provider.log run expiry.lua --db expiry-$provider.db --set provider=$provider --set out=out/e-$provider.jsonl --set errors=out/e-$provider-errors.jsonl
  expect_eq "$provider expiry: exit 0" "$RC" 0
  expect_eq "$provider expiry: 299 rows ok, expired and errored ones among them" "$(python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(len(rows), all(r["reply"].startswith("echo: row %d" % r["id"]) for r in rows), sorted(r["id"] for r in rows) == list(range(2, 301)))' out/e-$provider.jsonl)" "299 True True"
  expect_eq "$provider expiry: 42 entries expired in the first batch" "$(llm_stat batch.expired)" 42
  expect_eq "$provider expiry: errored: 24 once, row 1 in each of 3 batches" "$(llm_stat batch.errored)" 27
  expect_eq "$provider expiry: nothing billed twice" "$(llm_stat batch.billed_twice)" 0
  expect_eq "$provider expiry: no synchronous call" "$(llm_stat requests)" 0
  expect_grep "$provider expiry: the first batch sends 67 again" "batch 1 \((batch|msgbatch)_[0-9]+\) (expired|ended): 233 ok, 67 without a reply, 67 sent again" expiry-$provider.log
  want='"key":1,.*"error":"HTTP 500: The server had an error processing this request \(mock\)\. \(after 3 batch attempts\)"'
  [ $provider = anthropic ] && want='"key":1,.*"error":"errored: Internal server error \(mock\) \(after 3 batch attempts\)"'
  expect_grep "$provider expiry: row 1 fails with the provider's error after 3 batches" "$want" out/e-$provider-errors.jsonl

  llm_admin reset
  run_orch fallback-$provider.log run expiry.lua --db expiry-$provider.db --fresh --set provider=$provider --set fallback=sync --set out=out/f-$provider.jsonl --set errors=out/f-$provider-errors.jsonl
  expect_eq "$provider fallback: exit 0" "$RC" 0
  expect_eq "$provider fallback: all 300 rows ok" "$(wc -l <out/f-$provider.jsonl)" 300
  expect_eq "$provider fallback: row 1 alone went synchronously, after 3 batches" "$(llm_stat requests) $(llm_stat batch.errored)" "1 3"
done

finish
