# orch worker's shared rate limit on PostgreSQL: three workers started at
# once and a fourth started late, one run with rpm 1800, take every request
# from the run's token bucket in the store (llm.shared_rate = "bucket", the
# default). Asserted on counts the design guarantees, never on elapsed
# time: the bucket's own record says it granted each request the server
# saw, once, and never more than its capacity plus the refill over the
# store-clock span of its grants; the server's per-second counts (its
# clock is the database's: one machine) stay within that bound in every
# window. An unknown llm.shared_rate is refused at start.
. tests/lib.sh
. tests/pg_lib.sh
start_pg
start_llm_server --latency-ms 30 --seed 11
trap 'stop_pg; kill ${LLM_PID:-} 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
cd "$WORK"
pg_url() { echo "postgres:///$1?host=$PG_DIR&user=orch"; }
pg_db() { "$PGBIN/psql" -qAt -h "$PG_DIR" -U orch -d "$1" -c "$2"; }

ROWS=450
RPM=1800 # 30 a second; the bucket holds one second's worth: 30
python3 -c 'import json, sys
with open("items.jsonl", "w") as f:
    for i in range(1, int(sys.argv[1]) + 1):
        f.write(json.dumps({"id": i, "text": "item number %d" % i}) + "\n")' "$ROWS"
cat >rate.lua <<LUA
local orch = require("orch")
return orch.workflow {
  name = "rated",
  input = orch.read.jsonl("items.jsonl"),
  output = orch.write.jsonl("out/rated.jsonl"),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$LLM_URL/v1", api_key = "test-key",
          concurrency = 10, timeout = 5, max_tokens = 16, rpm = $RPM },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA

# ---- an unknown scheme is refused before anything starts
sed -e 's/rpm = '"$RPM"' }/rpm = '"$RPM"', shared_rate = "both" }/' rate.lua >bad.lua
pg_sql "CREATE DATABASE bad"
run_orch bad.log worker bad.lua --db "$(pg_url bad)"
expect_eq "llm.shared_rate \"both\": exit 2" "$RC" 2
expect_grep "names the two schemes" 'bad.lua: llm.shared_rate must be "bucket" \(the run.s token buckets in the store\) or "split" \(the limit divided among the live workers\), got "both"' bad.log
expect_eq "and writes nothing to the store" "$(pg_db bad "select count(*) from pg_tables where schemaname = 'public'")" 0

# ---- three workers at once, a fourth late
pg_sql "CREATE DATABASE r"
R=$(pg_url r)
llm_admin reset
for i in 1 2 3; do
  "$ORCH" worker rate.lua --db "$R" --lease-rows 50 -v >w$i.log 2>&1 &
  eval "pid$i=$!"
done
wait_until '[ "$(pg_db r "select count(*) from leases where status = '"'done'"'" 2>/dev/null || echo 0)" -ge 1 ]'
"$ORCH" worker rate.lua --db "$R" --lease-rows 50 -v >w4.log 2>&1 &
pid4=$!
rcs=""
for p in $pid1 $pid2 $pid3 $pid4; do
  wait "$p"
  rcs="$rcs$?"
done
expect_eq "all four workers exit 0" "$rcs" "0000"
expect_eq "the run completed with every row" "$(pg_db r "select status, rows_done from runs")" "completed|$ROWS"
expect_grep "the late worker took the run's bucket too" "rate limits rpm $RPM for the run, from its buckets in the store" w4.log
expect_grep "so did the first ones" "lease [0-9]+: rate limits rpm $RPM for the run, from its buckets in the store" w1.log

sent=$(llm_stat requests)
expect_eq "the server saw one request a row (distinct rows, no faults)" "$sent" "$ROWS"
expect_eq "the bucket granted each of them once: its takes are the server's requests" \
  "$(pg_db r "select kind, takes, granted from rate_buckets")" "rpm|$ROWS|$ROWS"
# the bucket's guarantee, by the store's clock: capacity + rate x the span of its grants
bound=$(pg_db r "select round((greatest($RPM / 60.0, 1) + $RPM / 60000.0 * (updated_ms - first_ms))::numeric, 3) from rate_buckets")
if python3 -c "import sys; sys.exit(0 if $ROWS <= $bound + 1e-6 else 1)"; then
  ok "granted $ROWS <= capacity + refill over its store-clock span ($bound)"
else bad "granted $ROWS, past capacity + refill over its span ($bound)"; fi

# the server's count, second by second (its clock is the database's here): in every window of W
# whole seconds, at most capacity + rate x (W + 1) (a grant's request arrives up to a second later)
curl -s "$LLM_URL/admin/stats" >stats.json
python3 - "$RPM" stats.json >windows.txt <<'PY'
import json, sys
rpm, stats = float(sys.argv[1]), json.load(open(sys.argv[2]))
per = {int(k): v for k, v in stats["per_second"].items()}
lo, hi = min(per), max(per)
counts = [per.get(s, 0) for s in range(lo, hi + 1)]
rate, cap = rpm / 60, max(rpm / 60, 1)
worst = []
for w in (1, 5, 10, len(counts)):
    w = min(w, len(counts))
    most = max(sum(counts[i:i + w]) for i in range(len(counts) - w + 1))
    worst.append((w, most, cap + rate * (w + 1)))
print(" ".join("%d:%d:%g" % t for t in worst))
print("over" if any(m > b for _, m, b in worst) else "within")
PY
windows=$(head -1 windows.txt)
if [ "$(tail -1 windows.txt)" = within ]; then
  ok "every server-counted window within capacity + rate x (seconds + 1) (window:most:bound $windows)"
else bad "a server-counted window passed the bucket's bound (window:most:bound $windows)"; fi
finish
