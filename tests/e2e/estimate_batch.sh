# orch estimate --sample N of a workflow with llm.batch = true: the sample
# runs synchronously (no provider batch is submitted for it) and the
# estimate gives the expected cost at the provider's batch price with its
# 90 % interval, beside the synchronous one. The real run sends the rest
# through the batch API, answers the sampled rows from the journal, and its
# cost is within 15 % of the batch estimate and inside its interval; the
# summary and orch status show the batch estimate beside the actual.
. tests/lib.sh
cd "$WORK"
start_llm_server --pad-words 40 --batch-delay-s 0.2
python3 -c '
import json
with open("items.jsonl", "w") as f:
    for i in range(1, 1001):
        f.write(json.dumps({"id": i, "text": "item number %d with some words" % i}) + "\n")'
cat >wf.lua <<LUA
local orch = require("orch")
return orch.workflow {
  name = "batched-estimate",
  input = orch.read.jsonl("items.jsonl"),
  output = orch.write.jsonl("out/batched.jsonl"),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$LLM_URL/v1", api_key = "k", concurrency = 16,
          max_tokens = 128, batch = true, batch_window = 0.3, poll_interval = 0.2, retry_base = 0.05,
          prices = { ["gpt-4o-mini"] = { 1000, 1000 } } },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA
field() { python3 -c 'import json,sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v = v[k]
print(repr(v))' "$1" "$2"; }

run_orch e.log estimate wf.lua --sample 50 --spread --seed 7 --db b.db
expect_eq "estimate --sample of a batched workflow: exit 0" "$RC" 0
expect_eq "the sample went synchronously: 50 requests, no batch submitted" \
  "$(llm_stat requests) $(llm_stat batch.batches) $(llm_stat batch.requests_submitted)" "50 0 0"
expect_grep "the offline upper bound at the batch price is still there" "batch cost     at most \\\$[0-9.]+ with llm.batch = true" e.log
expect_grep "the synchronous expected cost" "expected cost  \\\$[0-9.]+ for the 950 rows left \(90 % interval \\\$[0-9.]+ to \\\$[0-9.]+\)" e.log
expect_grep "beside it the batch one, with its interval, saying the sample ran synchronously" \
  "batch cost     \\\$[0-9.]+ for the 950 rows left with llm.batch = true \(90 % interval \\\$[0-9.]+ to \\\$[0-9.]+\): the run's price; the sample ran synchronously \(no provider batch\), priced above at the synchronous price" e.log
run_orch s0.log status --db b.db --json
expect_eq "the stored estimate: the batch figures are half the synchronous ones (default batch price)" \
  "$(python3 -c "import json; e = json.load(open('s0.log'))['estimate']; b = e['batch']
print(all(abs(b[k] - 0.5 * e[k]) <= 1e-9 * e[k] for k in ('expected_usd', 'low_usd', 'high_usd', 'row_usd')) and b['low_usd'] < b['expected_usd'] < b['high_usd'])")" True

llm_admin reset
run_orch r.log run wf.lua --db b.db
expect_eq "the real run: exit 0" "$RC" 0
expect_eq "the rest went in batches, the sampled rows from the journal: 0 synchronous, 950 batched, none twice" \
  "$(llm_stat requests) $(llm_stat batch.requests_submitted) $(llm_stat batch.submitted_twice)" "0 950 0"
expect_grep "the summary counts the journal's replies" "1,000 LLM calls \(50 from the journal, \\\$[0-9.]+ saved\)" r.log
expect_grep "the summary shows the batch estimate beside the actual" \
  "estimate \\\$[0-9.]+ at batch prices \(90 % interval \\\$[0-9.]+ to \\\$[0-9.]+\) for 950 rows, from a sample of 50; actual \\\$[0-9.]+ \([-+][0-9.]+ %\)" r.log
run_orch s1.log status --db b.db --json
exp=$(field s1.log estimate.batch.expected_usd); lo=$(field s1.log estimate.batch.low_usd); hi=$(field s1.log estimate.batch.high_usd)
act=$(field s1.log cost_usd)
echo "     batch estimate $exp ($lo to $hi), actual $act"
expect_eq "the batch estimate is within 15 % of the actual cost" "$(python3 -c "print(abs($act - $exp) <= 0.15 * $act)")" True
expect_eq "the actual cost is inside the batch estimate's 90 % interval" "$(python3 -c "print($lo <= $act <= $hi)")" True
run_orch s2.log status --db b.db
expect_grep "orch status shows it too" "^estimate +estimate \\\$[0-9.]+ at batch prices .* actual \\\$[0-9.]+" s2.log
finish
