# orch estimate --sample on PostgreSQL: the sample journals its replies in
# the database, its own run record is gone afterwards, the estimate is an
# event of a pending run that orch run then starts, answering the sampled
# rows from the journal, and orch status shows estimate beside actual.
. tests/lib.sh
. tests/pg_lib.sh
start_pg
cd "$WORK"
cp -r "$ROOT/examples" .
DB=$PG_URL

run_orch e.log estimate examples/classify_reviews.lua --sample 40 --spread --seed 2 --db "$DB"
expect_eq "estimate --sample on PostgreSQL: exit 0" "$RC" 0
expect_grep "the sample is stated" "sample for classify-reviews: 40 of 240 rows run for real \(40 drawn through the input, seed 2\)" e.log
expect_eq "one run, pending; the sample's record is gone" "$(pg_sql "select name || ' ' || status from runs")" \
  "classify-reviews pending"
expect_eq "the sample's replies are journaled" "$(pg_sql "select count(*) from llm_journal")" 40
run_orch r.log run examples/classify_reviews.lua --db "$DB"
expect_eq "the run: exit 0" "$RC" 0
expect_grep "the sampled rows from the journal" "240 LLM calls \(40 from the journal, \\\$0\.[0-9]+ saved\)" r.log
expect_grep "estimate beside actual in the summary" "^orch:   estimate \\\$0\.[0-9]+ \(90 % interval .*\) for 200 rows, from a sample of 40; actual" r.log
expect_eq "the pending run is the one that ran" "$(pg_sql "select status || ' ' || recoveries from runs")" "completed 0"
expect_eq "each reply once, the sampled ones hit" "$(pg_sql "select count(*) || ' ' || sum(hits) from llm_journal")" "240 40"
run_orch s.log status --db "$DB"
expect_grep "orch status shows it" "^estimate +estimate \\\$0\.[0-9]+ .*; actual \\\$0\.[0-9]+ \([-+][0-9.]+ %\)" s.log
finish
