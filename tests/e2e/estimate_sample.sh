# orch estimate --sample N: N rows run for real through the journal, the
# rest is extrapolated with a 90 % interval, and the estimate is stored as
# an event of the run it precedes. On the mock provider (the example
# workflow) and on the mock server (a 5,000-row JSON-schema extraction with
# replies of varying length): the expected cost is within 15 % of what the
# run then spends, that cost lies inside the interval, and the sampled
# rows cost nothing again (journal hits, the server's request count).
. tests/lib.sh
cd "$WORK"
cp -r "$ROOT/examples" .

# within "$what" expected actual low high: |actual - expected| <= 15 % and low <= actual <= high
within() {
  expect_eq "$1: expected within 15 % of the actual cost" \
    "$(python3 -c "print(abs($3 - $2) <= 0.15 * $3)")" True
  expect_eq "$1: the actual cost inside the 90 % interval" "$(python3 -c "print($4 <= $3 <= $5)")" True
}
# field FILE KEY: a field of `orch status --json` (dotted path)
field() { python3 -c 'import json,sys
v=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"; }

# --- the example workflow on the mock provider
run_orch e1.log estimate examples/classify_reviews.lua --sample 50 --db ex.db
expect_eq "estimate --sample: exit 0" "$RC" 0
expect_grep "the offline upper bound is still there" "cost           at most \\\$0\.0761" e1.log
expect_grep "the sample is stated" "sample for classify-reviews: 50 of 240 rows run for real \(the first 50\), 50 LLM calls" e1.log
expect_grep "an expected cost with its interval, for the rows the run will pay for" \
  "expected cost  \\\$0\.[0-9]+ for the 190 rows left \(90 % interval \\\$0\.[0-9]+ to \\\$0\.[0-9]+\); the 50 sampled rows come from the journal at \\\$0" e1.log
expect_grep "per model and stage" "by model       mock \\\$0\.[0-9]+" e1.log
expect_grep "the first rows are said to be the first" "the sample is the first rows: if the input is sorted or grouped, --spread" e1.log
expect_eq "one run in the store, pending (the sample's own record is gone)" \
  "$(sqlite3 ex.db "select name || ' ' || status from runs")" "classify-reviews pending"
expect_eq "the sample's replies are journaled" "$(sqlite3 ex.db "select count(*) from llm_journal")" 50
rid=$(sqlite3 ex.db "select id from runs")
run_orch h1.log history "$rid" --db ex.db
expect_grep "the estimate is an event of that run" "estimate +\{.*\"expected_usd\"" h1.log
run_orch r1.log run examples/classify_reviews.lua --db ex.db
expect_eq "the run: exit 0" "$RC" 0
expect_grep "the run is the pending one, started (not resumed)" "^orch: classify-reviews: 240 rows" r1.log
expect_grep "the sampled rows come from the journal" "240 LLM calls \(50 from the journal, \\\$0\.[0-9]+ saved\)" r1.log
expect_grep "the summary shows the estimate beside the actual" \
  "^orch:   estimate \\\$0\.[0-9]+ \(90 % interval .*\) for 190 rows, from a sample of 50; actual \\\$0\.[0-9]+ \([-+][0-9.]+ %\)" r1.log
expect_eq "still one run" "$(sqlite3 ex.db "select id || ' ' || status || ' ' || recoveries from runs")" "$rid completed 0"
expect_eq "each reply journaled once; the 50 sampled ones hit once each" \
  "$(sqlite3 ex.db "select count(*), sum(hits), sum(hits > 0) from llm_journal")" "240|50|50"
run_orch h2.log history "$rid" --db ex.db
expect_eq "events: estimate, started, completed" "$(awk 'NR > 1 {print $3}' h2.log | tr '\n' ' ')" "estimate started completed "
run_orch s1.log status "$rid" --db ex.db
expect_grep "orch status shows the estimate beside the actual" "^estimate +estimate \\\$0\.[0-9]+ .* actual \\\$0\.[0-9]+" s1.log
"$ORCH" status "$rid" --db ex.db --json >s1.json
within "example, mock provider" "$(field s1.json estimate.expected_usd)" "$(field s1.json cost_usd)" \
  "$(field s1.json estimate.low_usd)" "$(field s1.json estimate.high_usd)"

# --- a 5,000-row JSON-schema extraction on the mock server, replies of varying length
start_llm_server --pad-words 40
python3 -c '
import random
r = random.Random(5)
words = "order invoice shipped late refund customer parcel address warehouse damaged".split()
with open("tickets.csv", "w") as f:
    f.write("id,ticket\n")
    for i in range(1, 5001):
        f.write("%d,%s\n" % (i, " ".join(r.choice(words) for _ in range(r.randint(5, 60)))))
'
cat >extract.lua <<LUA
local orch = require "orch"
return orch.workflow {
  name = "extract-tickets",
  input = orch.read.csv("tickets.csv"),
  output = orch.write.jsonl("out/tickets.jsonl"),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$LLM_URL/v1", api_key = "k", concurrency = 32,
          max_tokens = 256 },
  stages = {
    orch.stage.prompt { template = "Extract, as JSON, the issue of this ticket: {{ticket}}", into = "issue",
      schema = { type = "object", properties = { answer = { type = "string" }, length = { type = "integer" } },
                 required = { "answer", "length" } } },
  },
}
LUA
run_orch e2.log estimate extract.lua --sample 50 --spread --seed 7 --db x.db
expect_eq "estimate --sample --spread on the server: exit 0" "$RC" 0
expect_grep "the draw is stated" "50 of 5,000 rows run for real \(50 drawn through the input, seed 7\)" e2.log
expect_eq "the server answered the 50 sampled rows only (the upper bound is offline)" "$(llm_stat requests)" 50
run_orch r2.log run extract.lua --db x.db
expect_eq "the extraction: exit 0" "$RC" 0
expect_grep "the 50 sampled rows from the journal" "5,000 LLM calls \(50 from the journal, \\\$0\.[0-9]+ saved\)" r2.log
expect_eq "the server saw each request once: 5,000 in all" "$(llm_stat requests) $(llm_stat duplicates)" "5000 0"
"$ORCH" status --db x.db --json >s2.json
expect_eq "the run carries the estimate" "$(field s2.json estimate.sample_rows) $(field s2.json estimate.rows_left)" "50 4950"
within "5,000-row extraction, mock server" "$(field s2.json estimate.expected_usd)" "$(field s2.json cost_usd)" \
  "$(field s2.json estimate.low_usd)" "$(field s2.json estimate.high_usd)"
finish
