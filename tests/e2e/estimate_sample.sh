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
expect_grep "the offline pass says it alone stored nothing" "this offline pass sent, wrote and stored nothing; the sample below runs for real" e1.log
expect_grep "the sample is stated" "sample for classify-reviews: 50 of 240 rows run for real \(the first 50\), 50 LLM calls" e1.log
expect_grep "an expected cost with its interval, for the rows the run will pay for" \
  "expected cost  \\\$0\.[0-9]+ for the 190 rows left \(90 % interval \\\$0\.[0-9]+ to \\\$0\.[0-9]+\); the 50 sampled rows come from the journal at \\\$0" e1.log
expect_grep "per row: calls, retries, tokens, dollars, failures" \
  "per row        1\.00 LLM calls \(0\.00 retries a call\), 6[0-9]\.[0-9] tokens in, 2\.0 out, \\\$0\.0000[0-9]+; 0 of 50 rows failed" e1.log
expect_grep "per model and stage" "by model       mock \\\$0\.[0-9]+" e1.log
expect_grep "the first rows are said to be the first" "the sample is the first rows: if the input is sorted or grouped, --spread" e1.log
expect_eq "one run in the store, pending (the sample's own record is gone)" \
  "$(sqlite3 ex.db "select name || ' ' || status from runs")" "classify-reviews pending"
expect_eq "the sample's replies are journaled" "$(sqlite3 ex.db "select count(*) from llm_journal")" 50
rid=$(sqlite3 ex.db "select id from runs")
run_orch s0.log status "$rid" --db ex.db
expect_grep "orch status of the pending run: the estimate, not started yet" \
  "^estimate +estimate \\\$0\.[0-9]+ \(90 % interval .*\) for 190 rows, from a sample of 50; not started yet" s0.log
expect_grep "and no owner yet" "^owner +none yet \(estimated: orch run starts it\)" s0.log
run_orch h1.log history "$rid" --db ex.db
expect_grep "the estimate is an event of that run" "estimate +\{.*\"expected_usd\"" h1.log
run_orch r1.log run examples/classify_reviews.lua --db ex.db
expect_eq "the run: exit 0" "$RC" 0
expect_grep "the run is the pending one, started (not resumed)" "^orch: classify-reviews: 240 rows" r1.log
expect_grep "the sampled rows come from the journal" "240 LLM calls \(50 from the journal, \\\$0\.[0-9]+ saved\)" r1.log
expect_grep "the summary shows the estimate beside the actual" \
  "^orch:   estimate \\\$0\.[0-9]+ \(90 % interval .*\) for 190 rows, from a sample of 50; actual \\\$0\.[0-9]+ \([-+][0-9.]+ %\)" r1.log
expect_eq "still one run" "$(sqlite3 ex.db "select id || ' ' || status || ' ' || recoveries from runs")" "$rid completed 0"
expect_eq "each reply journaled once; the 50 sampled ones hit once each, logged at the end" \
  "$(sqlite3 ex.db "select count(*), sum(hits), (select sum(hits) || '|' || sum(entries) from llm_journal_hits) from llm_journal")" \
  "240|0|50|50"
run_orch gc.log gc --vacuum --older-than 1000d --db ex.db
expect_eq "orch gc --vacuum: exit 0" "$RC" 0
expect_eq "which folds the log into the entries" \
  "$(sqlite3 ex.db "select count(*), sum(hits), sum(hits > 0), (select count(*) from llm_journal_hits) from llm_journal")" \
  "240|50|50|0"
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
local orch = require("orch")
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

# --- retries are measured: a server that answers 429 to 30 % of attempts
llm_admin config '{"fail_429": 0.3, "retry_after": 0}'
llm_admin reset
run_orch f1.log estimate extract.lua --sample 40 --spread --seed 3 --db f.db
expect_eq "estimate on a flaky server: exit 0" "$RC" 0
expect_grep "the retries a call are said" "per row        1\.00 LLM calls \(0\.[1-9][0-9] retries a call\)" f1.log
expect_eq "as many as the server refused" "$(llm_stat requests)" "$((40 + $(llm_stat faults.429)))"
llm_admin config '{"fail_429": 0}'

# --- run --dry-run --sample is the same estimate; --sample alone is refused
run_orch d1.log run --dry-run --sample 20 --spread examples/classify_reviews.lua --db d.db
expect_eq "run --dry-run --sample: exit 0" "$RC" 0
expect_grep "the same sampled estimate" "sample for classify-reviews: 20 of 240 rows run for real \(20 drawn through the input, seed 1\)" d1.log
run_orch d2.log run --sample 20 examples/classify_reviews.lua --db d.db
expect_eq "run --sample without --dry-run: exit 2" "$RC" 2
expect_grep "says why" "--sample, --spread and --seed go with --dry-run \(or orch estimate\): the sample runs before the run" d2.log
expect_eq "and runs nothing" "$(sqlite3 d.db "select status from runs")" "pending"
run_orch d3.log estimate "$ROOT/workflows/report.lua" --sample 2 --db d3.db
expect_eq "--sample of a multi-step workflow: exit 2" "$RC" 2
expect_grep "says why" "--sample runs N rows of a workflow's input; .*report.lua has steps \\(a DAG\\), which run whole" d3.log
expect_eq "and stores nothing" "$(ls d3.db 2>/dev/null | wc -l)" 0
did=$(sqlite3 d.db "select id from runs")
run_orch d4.log run --fresh examples/classify_reviews.lua --db d.db
expect_eq "run --fresh of an estimated run: exit 0" "$RC" 0
expect_eq "--fresh starts the pending run (nothing to resume, nothing to replace)" \
  "$(sqlite3 d.db "select id || ' ' || status from runs")" "$did completed"
expect_grep "with its estimate" "^orch:   estimate .* for 220 rows, from a sample of 20; actual" d4.log
mkdir -p ch && cp examples/data/reviews.csv ch/in.csv
sed -e 's|examples/data/reviews.csv|ch/in.csv|' -e 's|out/reviews-sentiment.jsonl|ch/out.jsonl|' \
  examples/classify_reviews.lua >ch/wf.lua
run_orch c1.log estimate ch/wf.lua --sample 10 --db c.db
cid=$(sqlite3 c.db "select id from runs")
tail -n 1 ch/in.csv >>ch/in.csv
run_orch c2.log run ch/wf.lua --db c.db
expect_eq "the input changed after the estimate: the run still starts, exit 0" "$RC" 0
expect_eq "as a new run; the estimated one is replaced, saying why" \
  "$(sqlite3 c.db "select status || ': ' || coalesce(error, '') from runs where id = '$cid'")" \
  "failed: superseded by run $(sqlite3 c.db "select id from runs where id <> '$cid'") (its estimate was of the input before it changed)"
if grep -q "orch:   estimate" c2.log; then bad "the new run shows a stale estimate"; else ok "the new run shows no stale estimate"; fi
run_orch d5.log estimate examples/classify_reviews.lua --spread --db d5.db
expect_eq "--spread without --sample: exit 2" "$RC" 2
expect_grep "says what goes with what" "--spread goes with --sample N \\(N rows drawn through the input\\), and --seed S with --spread" d5.log
run_orch d6.log estimate examples/classify_reviews.lua --sample 5 --seed 3 --db d5.db
expect_eq "--seed without --spread: exit 2" "$RC" 2
expect_eq "neither stores anything" "$(ls d5.db 2>/dev/null | wc -l)" 0
printf 'id,product,review,rating\n' >empty.csv
sed 's|examples/data/reviews.csv|empty.csv|' examples/classify_reviews.lua >empty.lua
run_orch d7.log estimate empty.lua --sample 5 --db d7.db
expect_eq "an empty input: exit 0" "$RC" 0
expect_grep "nothing to sample" "sample for classify-reviews: the input has no rows; nothing to sample, nothing stored" d7.log

# --- the budget: the expected cost past it is said before the run spends anything
run_orch b1.log estimate examples/classify_reviews.lua --sample 30 --budget 0.0005 --db b.db
expect_eq "estimate past the budget: still exit 0" "$RC" 0
expect_grep "the estimate warns, naming a budget for the whole run" \
  "warning: the expected cost \\\$0\.[0-9]+ passes the budget \\\$0\.0005: the run would pause after about [0-9]+ rows; a budget for the whole run: --budget 0\.01" b1.log
run_orch b2.log run examples/classify_reviews.lua --budget 0.0005 --db b.db
expect_eq "the run then pauses on its budget: exit 3" "$RC" 3
expect_grep "the run says it before spending" "warning: by the estimate of this run: the expected cost" b2.log
expect_eq "the warning is its first line" "$(head -1 b2.log | grep -c 'by the estimate of this run')" 1
expect_grep "a paused run's summary: spent so far" "^orch:   estimate .*; spent so far \\\$0\.[0-9]+$" b2.log
run_orch b3.log estimate examples/classify_reviews.lua --budget 0.01 --db b3.db
expect_grep "without --sample, the upper bound past the budget is said" \
  "warning: the upper bound \\\$0\.076 passes the budget \\\$0\.01; --sample N gives the expected cost" b3.log
expect_eq "and nothing is stored" "$(ls b3.db 2>/dev/null | wc -l)" 0

# --- a run estimated half-way (paused by its budget): the rows left are those after its rows done.
# One call at a time, so the budget pauses it at the same row every time: the
# sample (the 30 rows after those done) and so the interval's check do not hang
# on which calls were in flight at the pause.
sed -e 's|latency_ms = 40, jitter_ms = 40, concurrency = 32|latency_ms = 0, concurrency = 1|' \
  examples/classify_reviews.lua >hw.lua
expect_eq "the half-way workflow makes one call at a time" "$(grep -c 'concurrency = 1 }' hw.lua)" 1
run_orch hw1.log run hw.lua --budget 0.001 --db hw.db
expect_eq "a run paused by its budget: exit 3" "$RC" 3
hid=$(sqlite3 hw.db "select id from runs")
hdone=$(sqlite3 hw.db "select rows_done from runs")
run_orch hw2.log estimate hw.lua --sample 30 --db hw.db
expect_eq "estimate of the paused run: exit 0" "$RC" 0
hleft=$((240 - hdone - (hdone < 30 ? 30 - hdone : 0)))
expect_grep "the rows left are after the rows done" \
  "expected cost  \\\$0\.[0-9]+ for the $hleft rows left after the $hdone the run has done \(90 % interval" hw2.log
expect_grep "stored on that run" "stored as the estimate of run $hid \(paused\)" hw2.log
run_orch hw3.log resume "$hid" --budget 1 --db hw.db
expect_eq "resumed with a budget for the rest: exit 0" "$RC" 0
expect_grep "the summary compares what it spent since the estimate" \
  "^orch:   estimate .* for $hleft rows, from a sample of 30; actual since the estimate \\\$0\.[0-9]+ \([-+][0-9.]+ %\)" hw3.log
"$ORCH" status "$hid" --db hw.db --json >hw.json
within "a run estimated half-way" "$(field hw.json estimate.expected_usd)" \
  "$(python3 -c "print($(field hw.json cost_usd) - $(field hw.json estimate.spent_before))")" \
  "$(field hw.json estimate.low_usd)" "$(field hw.json estimate.high_usd)"

# --- an input of more than 100,000 rows: counted by a scan, the offline pass runs the sampled rows only
python3 -c '
with open("big.csv", "w") as f:
    f.write("id,product,review,rating\n")
    for i in range(1, 100002):
        f.write("%d,lamp,\"%s, line\nbreak\",%d\n" % (i, "great" if i % 3 else "broke", i % 5 + 1))
'
sed -e 's|examples/data/reviews.csv|big.csv|' -e 's|out/reviews-sentiment.jsonl|out/big.jsonl|' \
  -e 's|latency_ms = 40, jitter_ms = 40|latency_ms = 0|' examples/classify_reviews.lua >big.lua
run_orch g1.log estimate big.lua --sample 30 --spread --db g.db
expect_eq "a 100,001-row input: exit 0" "$RC" 0
expect_grep "counted by a scan, quoted newlines minded" \
  "classify-reviews: 100,001 rows \(counted by a scan of the input\), more than 100,000: the offline pass runs the sampled rows only" g1.log
expect_grep "the offline pass ran the 30 sampled rows" "estimate for classify-reviews: 30 rows, 30 LLM calls" g1.log
expect_grep "the upper bound is said to be scaled" \
  "upper bound    about \\\$[0-9.]+ for all 100,001 rows \(the sampled rows' at max_tokens, scaled; orch estimate without --sample bounds every row\)" g1.log
expect_grep "the expected cost is for the rows left" "expected cost  \\\$0\.[0-9]+ for the 99,971 rows left" g1.log

# --- a sample killed mid-way: never resumed, removed by the next sample
llm_admin config '{"latency_ms": 200}'
sed 's/concurrency = 32,/concurrency = 2,/' extract.lua >slow.lua
(cd "$WORK" && exec "$ORCH" estimate slow.lua --sample 200 --db k.db >k.log 2>&1) &
kpid=$!
wait_until "[ \"\$(sqlite3 k.db \"select count(*) from runs where id like 'sample-%'\" 2>/dev/null)\" = 1 ]"
wait_until "[ \"\$(sqlite3 k.db 'select count(*) from llm_journal' 2>/dev/null)\" -ge 2 ]"
kill -9 $kpid
wait $kpid 2>/dev/null
llm_admin config '{"latency_ms": 0}'
sid=$(sqlite3 k.db "select id from runs where id like 'sample-%'")
run_orch k1.log resume --all --db k.db
expect_eq "resume --all leaves the sample alone" "$RC" 0
expect_grep "nothing to resume" "no interrupted runs" k1.log
run_orch k2.log resume "$sid" --db k.db
expect_eq "resume of the sample: exit 2" "$RC" 2
expect_grep "says what it is" "run $sid is the sample of an estimate that was cut short; there is nothing to resume" k2.log
run_orch k3.log estimate slow.lua --sample 10 --db k.db
expect_eq "the next sample: exit 0" "$RC" 0
expect_eq "it removed the dead sample's record" "$(sqlite3 k.db "select count(*) from runs where id like 'sample-%'")" 0
expect_eq "and the pending run is the only run" "$(sqlite3 k.db "select status from runs")" "pending"
finish
