# orch worker's shared budget on PostgreSQL: three workers on one run whose
# budget runs out midway all stop (exit 3), the run paused; what they paid
# stays within max_usd (each request reserves its estimate in the store
# before it starts); `orch resume RUN --budget X` raises the budget for
# the run and completes it, the output equal to a single-process run.
# The workflow's rpm is divided among the live workers; a server restart
# mid-lease is ridden out.
. tests/lib.sh
. tests/pg_lib.sh
start_pg
start_llm_server --latency-ms 30 --seed 7
trap 'stop_pg; kill ${LLM_PID:-} 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
cd "$WORK"
pg_url() { echo "postgres:///$1?host=$PG_DIR&user=orch"; }
pg_db() { "$PGBIN/psql" -qAt -h "$PG_DIR" -U orch -d "$1" -c "$2"; }

python3 -c 'import json
with open("items.jsonl", "w") as f:
    for i in range(1, 3001):
        f.write(json.dumps({"id": i, "text": "item number %d" % i}) + "\n")'
cat >llm.lua <<LUA
local orch = require("orch")
return orch.workflow {
  name = "spend",
  input = orch.read.jsonl("items.jsonl"),
  output = orch.write.jsonl(orch.param("out", "out/spend.jsonl")),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$LLM_URL/v1", api_key = "test-key",
          concurrency = 10, timeout = 5, max_tokens = 16, prices = { ["gpt-4o-mini"] = { 1000, 1000 } } },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA
pg_sql "CREATE DATABASE ref" && pg_sql "CREATE DATABASE w"
run_orch ref.log run llm.lua --db "$(pg_url ref)" --set out=out/ref.jsonl
expect_eq "the single-process run exits 0" "$RC" 0
full=$(pg_db ref "select cost_usd from runs")
MAX=$(python3 -c "print(round($full / 2, 2))") # half of what the whole run costs

W=$(pg_url w)
for i in 1 2 3; do
  "$ORCH" worker llm.lua --db "$W" --lease-rows 200 --budget "$MAX" >w$i.log 2>&1 &
  eval "pid$i=$!"
done
rcs=""
for p in $pid1 $pid2 $pid3; do
  wait "$p"
  rcs="$rcs$?"
done
expect_eq "all three workers stop paused (exit 3)" "$rcs" "333"
expect_eq "the run is paused by its budget" "$(pg_db w "select status, split_part(error, ':', 1) from runs")" "paused|budget"
done_rows=$(pg_db w "select rows_done from runs")
if [ "$done_rows" -gt 0 ] && [ "$done_rows" -lt 3000 ]; then ok "it stopped midway ($done_rows of 3,000 rows)"; else
  bad "rows done at the pause: $done_rows"; fi
spent=$(pg_db w "select sum(cost_usd) from llm_journal")
# the window: every worker's requests in flight, each reserving its estimate ((chars/4+8) + 16 tokens at $1000/M)
window=$(python3 -c "print(3 * 10 * (40 // 4 + 8 + 16) * 1000 / 1e6)")
if python3 -c "import sys; sys.exit(0 if $spent <= $MAX + $window else 1)"; then
  ok "paid \$$spent <= max_usd \$$MAX + one in-flight window \$$window"; else bad "paid \$$spent, past \$$MAX + \$$window"; fi
expect_eq "the store's budget agrees: spent <= max, nothing left reserved" \
  "$(pg_db w "select spent_usd <= max_usd + 1e-9, round(reserved_usd::numeric, 9) from run_budget")" "t|0.000000000"
expect_grep "a worker says how to go on" "paused: budget of .* reached across the run's workers.*orch resume spend-w[0-9a-f]+ .*--budget USD" <(cat w1.log w2.log w3.log)
run_id=$(pg_db w "select id from runs")
run_orch again.log worker llm.lua --db "$W"
expect_eq "a worker without a higher budget does not start: exit 3" "$RC" 3
expect_grep "and says how to raise it" "paused by its budget .*orch resume $run_id --budget USD" again.log
run_orch resume.log resume "$run_id" --db "$W" --budget 1000
expect_eq "orch resume --budget raises it and completes the run" "$RC" 0
expect_eq "completed, 3,000 rows" "$(pg_db w "select status, rows_done from runs")" "completed|3000"
expect_eq "the raised budget is the run's" "$(pg_db w "select max_usd from run_budget")" 1000
run_orch export.log export "$run_id" --db "$W" -o out/export.jsonl
if cmp -s out/ref.jsonl out/export.jsonl; then ok "the export equals the single-process output"; else
  bad "the export differs: $(wc -l <out/export.jsonl) lines"; fi

# ---- rate limits split (llm.shared_rate = "split"): each live worker takes an equal share
pg_sql "CREATE DATABASE rl"
sed -e 's/name = "spend"/name = "limited"/' -e 's/concurrency = 10,/concurrency = 10, rpm = 3000, shared_rate = "split",/' llm.lua >rl.lua
RL=$(pg_url rl)
"$ORCH" worker rl.lua --db "$RL" --lease-rows 100 --set out=out/rl.jsonl -v >rl1.log 2>&1 &
rlpid=$!
wait_until '[ "$(pg_db rl "select count(*) from leases where status = '"'taken'"'" 2>/dev/null || echo 0)" -ge 1 ]'
run_orch rl2.log worker rl.lua --db "$RL" --lease-rows 100 --set out=out/rl.jsonl -v
wait "$rlpid"
expect_eq "both rate-limited workers exit 0" "$?:$RC" "0:0"
expect_grep "the second worker takes half of rpm 3000" "lease [0-9]+: rate limits rpm 1500.0, the run's shared by 2 live worker" rl2.log
expect_grep "the first worked alone at first" "lease 1: rate limits rpm 3000.0, the run's shared by 1 live worker" rl1.log
expect_eq "and the run completed" "$(pg_db rl "select status, rows_done from runs")" "completed|3000"

# ---- the server restarts mid-lease: the workers connect again and go on
pg_sql "CREATE DATABASE bounce"
B=$(pg_url bounce)
for i in 1 2; do
  "$ORCH" worker llm.lua --db "$B" --lease-rows 300 --set out=out/bounce.jsonl >b$i.log 2>&1 &
  eval "bp$i=$!"
done
wait_until '[ "$(pg_db bounce "select count(*) from leases where status = '"'done'"'" 2>/dev/null || echo 0)" -ge 2 ]'
(cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_DIR/data" -m fast -w restart -l "$PG_DIR/server.log" \
  -o "-k $PG_DIR -c listen_addresses='' -c max_connections=50" >/dev/null)
ok "the server restarted mid-run"
wait "$bp1"
b1=$?
wait "$bp2"
expect_eq "both workers ride the restart out: exit 0" "$b1:$?" "0:0"
expect_eq "the run completed with every row" "$(pg_db bounce "select status, rows_done from runs")" "completed|3000"
if cmp -s out/ref.jsonl out/bounce.jsonl; then ok "its output equals the single-process run's"; else
  bad "the output differs: $(wc -l <out/bounce.jsonl) lines"; fi
finish
