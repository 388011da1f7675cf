# Many workers, one run (orch worker) on a real PostgreSQL server: three
# workers share an 8,000-row LLM run in leases, one is killed -9 mid-lease
# and a fourth joins late; the run completes, orch export writes output
# byte-identical to a single-process run, orch status shows the live
# workers with their leases and rates, the server saw at most the
# killed worker's in-flight requests twice, and the journal's spend equals
# the single-process spend. A worker with another workflow, input or
# parameters is refused with the difference named. Identical requests on
# two workers are paid once: the second waits for the first's reply.
. tests/lib.sh
. tests/pg_lib.sh
start_pg
start_llm_server --latency-ms 40 --seed 5
trap 'stop_pg; kill ${LLM_PID:-} 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
cd "$WORK"
pg_url() { echo "postgres:///$1?host=$PG_DIR&user=orch"; }
pg_db() { "$PGBIN/psql" -qAt -h "$PG_DIR" -U orch -d "$1" -c "$2"; }

python3 -c 'import json
with open("items.jsonl", "w") as f:
    for i in range(1, 8001):
        f.write(json.dumps({"id": i, "text": "item number %d" % i}) + "\n")'
CONC=10 # each worker's LLM requests in flight: the most a kill can leave paid and uncommitted
cat >llm.lua <<LUA
local orch = require("orch")
return orch.workflow {
  name = "many",
  input = orch.read.jsonl(orch.param("input", "items.jsonl")),
  output = orch.write.jsonl(orch.param("out", "out/many.jsonl")),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$LLM_URL/v1", api_key = "test-key",
          concurrency = tonumber(orch.param("conc", "$CONC")), timeout = 5, max_tokens = 16,
          prices = { ["gpt-4o-mini"] = { 1000, 1000 } } },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA
pg_sql "CREATE DATABASE ref" && pg_sql "CREATE DATABASE w"
run_orch ref.log run llm.lua --db "$(pg_url ref)" --set out=out/ref.jsonl --set conc=100
expect_eq "the single-process run exits 0" "$RC" 0
ref_cost=$(pg_db ref "select round(cost_usd::numeric, 9) from runs")
curl -s -X POST "$LLM_URL/admin/reset" >/dev/null

W=$(pg_url w)
for i in 1 2 3; do
  "$ORCH" worker llm.lua --db "$W" --lease-rows 500 --lease-timeout 2 -v >w$i.log 2>&1 &
  eval "pid$i=$!"
done
# kill worker 2 while it holds a lease, once some leases are done
holds2() { [ "$(pg_db w "select count(*) from leases where status = 'taken' and owner like '%:$pid2:%'")" -ge 1 ]; }
wait_until '[ "$(pg_db w "select count(*) from leases where status = '"'done'"'" 2>/dev/null || echo 0)" -ge 3 ] && holds2'
if kill -9 "$pid2" 2>/dev/null; then ok "worker 2 killed -9 holding a lease"; else bad "worker 2 ended before the kill"; fi
wait "$pid2" 2>/dev/null
left=$(pg_db w "select count(*) from leases where status <> 'done'")
if [ "$left" -gt 0 ]; then ok "the run was mid-way at the kill ($left leases not done)"; else bad "the run was over at the kill"; fi
"$ORCH" worker llm.lua --db "$W" -v >w4.log 2>&1 &
pid4=$!
# orch status while they work: the live workers, their leases and rates
status_live() { "$ORCH" status --db "$W" >status.txt 2>&1 && grep -Eq "^workers +[2-9] live" status.txt; }
if wait_until status_live; then ok "orch status shows the live workers"; else bad "orch status: $(cat status.txt)"; fi
expect_grep "each with its lease and rows/s" "^  [^ ]+:[0-9]+:[0-9a-f]+ +live, lease [0-9]+, [0-9,]+ rows, [0-9.]+ rows/s" status.txt
expect_grep "and the run's leases" "^leases +16: [0-9]+ done, [0-9]+ taken, [0-9]+ free" status.txt
expect_eq "orch ls shows the run once" "$("$ORCH" ls --db "$W" | grep -c "many-w")" 1
rcs=""
for p in $pid1 $pid3 $pid4; do
  wait "$p"
  rcs="$rcs$?"
done
expect_eq "the three live workers exit 0" "$rcs" "000"
expect_eq "one run, completed, 8,000 rows" "$(pg_db w "select count(*), min(status), min(rows_done) from runs")" "1|completed|8000"
expect_eq "every lease done" "$(pg_db w "select count(*) from leases where status = 'done'")" 16
expect_eq "the killed worker's lease was taken back" \
  "$(pg_db w "select count(*) > 0 from leases where claims > 1")" t
expect_grep "the 4th worker joined the run" "joined run many-w" w4.log
run_id=$(pg_db w "select id from runs")
run_orch export.log export "$run_id" --db "$W" -o out/export.jsonl
expect_eq "orch export exits 0" "$RC" 0
if cmp -s out/ref.jsonl out/export.jsonl; then ok "orch export is byte-identical to the single-process output"; else
  bad "export differs: $(wc -l <out/ref.jsonl) vs $(wc -l <out/export.jsonl) lines"; fi
if cmp -s out/ref.jsonl out/many.jsonl; then ok "the worker that completed the run wrote the same output file"; else
  bad "the output file differs"; fi
expect_grep "and said so" "wrote .*out/many.jsonl" <(cat w1.log w3.log w4.log)
dups=$(llm_stat duplicates)
reqs=$(llm_stat requests)
if [ "$dups" -le "$CONC" ]; then ok "$dups request(s) paid twice <= the killed worker's $CONC in flight"; else
  bad "$dups requests paid twice, more than the killed worker's $CONC in flight"; fi
expect_eq "requests: one per row plus those paid twice" "$reqs" $((8000 + dups))
expect_eq "the journal's spend equals the single-process spend" \
  "$(pg_db w "select round(sum(cost_usd)::numeric, 9) from llm_journal")" "$ref_cost"
expect_eq "the run counts the committed rows' calls: 8,000" "$(pg_db w "select llm_calls from runs")" 8000

# ---- a worker with another workflow, input or parameters is refused -----
pg_sql "CREATE DATABASE refuse"
R=$(pg_url refuse)
"$ORCH" worker llm.lua --db "$R" --lease-rows 4000 --set conc=1 >r1.log 2>&1 &
rpid=$!
wait_until '[ "$(pg_db refuse "select count(*) from leases where status = '"'taken'"'" 2>/dev/null || echo 0)" -ge 1 ]'
run_orch r2.log worker llm.lua --db "$R" --set conc=2
expect_eq "other parameters: exit 2" "$RC" 2
expect_grep "other parameters: named" "the parameters differ \(--set \{\"conc\":\"2\"\} here, \{\"conc\":\"1\"\} in the run\)" r2.log
head -100 items.jsonl >few.jsonl
run_orch r3.log worker llm.lua --db "$R" --set conc=1 --set input=few.jsonl
expect_eq "another input: exit 2" "$RC" 2
expect_grep "another input: named" "the (input|parameters) differ" r3.log
sed 's/Repeat: /Say: /' llm.lua >other.lua
run_orch r4.log worker other.lua --db "$R" --set conc=1
expect_eq "another workflow file: exit 2" "$RC" 2
expect_grep "another workflow file: named" "the workflow file differs \(.*other.lua here, the run's was .*llm.lua" r4.log
kill "$rpid" 2>/dev/null
wait "$rpid" 2>/dev/null

# ---- the shared journal: a request in flight on one worker is not paid again on another
# 60 rows asking 3 distinct questions, two workers with 10 rows in flight each, replies
# slow enough that every copy of a question is asked while its first is in flight
pg_sql "CREATE DATABASE same"
python3 -c 'import json
with open("same.jsonl", "w") as f:
    for i in range(1, 61):
        f.write(json.dumps({"id": i, "text": "question %d" % (i % 3)}) + "\n")'
llm_admin config '{"latency_ms": 400}'
llm_admin reset
S=$(pg_url same)
"$ORCH" worker llm.lua --db "$S" --lease-rows 10 --set input=same.jsonl --set out=out/same.jsonl >s1.log 2>&1 &
spid=$!
run_orch s2.log worker llm.lua --db "$S" --lease-rows 10 --set input=same.jsonl --set out=out/same.jsonl
wait "$spid"
expect_eq "both workers exit 0" "$?:$RC" "0:0"
expect_eq "each distinct request was paid once: 3 requests for 60 rows" "$(llm_stat requests)" 3
expect_eq "60 rows written" "$(wc -l <out/same.jsonl)" 60
expect_eq "the markers went with the commits" "$(pg_db same "select count(*) from journal_pending")" 0
finish
