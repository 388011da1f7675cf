# orch serve shows a worker run's workers and leases (orch worker on a real
# PostgreSQL): while two workers share a 3,000-row run, /api/runs/ID lists
# them live with their lease, rows and rows/s, and the leases done / taken
# / free; /metrics has per-run worker and lease gauges that parse
# strictly; the run page renders them (headless Chromium). Once the run
# has completed, every lease is done, the workers are gone and their rows
# add up to the input.
. tests/lib.sh
. tests/pg_lib.sh
start_pg
start_llm_server --latency-ms 100 --seed 5
SERVE_PID=""
trap 'kill $SERVE_PID 2>/dev/null; stop_pg; kill ${LLM_PID:-} 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
cd "$WORK"
PARSE="python3 $ROOT/tests/prom_parse.py"
python3 -c 'import json
with open("items.jsonl", "w") as f:
    for i in range(1, 3001):
        f.write(json.dumps({"id": i, "text": "item number %d" % i}) + "\n")'
cat >llm.lua <<LUA
local orch = require("orch")
return orch.workflow {
  name = "fleet",
  input = orch.read.jsonl("items.jsonl"),
  output = orch.write.jsonl("out/fleet.jsonl"),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$LLM_URL/v1", api_key = "test-key",
          concurrency = 5, timeout = 5, max_tokens = 16, prices = { ["gpt-4o-mini"] = { 1000, 1000 } } },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA
pg_sql "CREATE DATABASE w"
W="postgres:///w?host=$PG_DIR&user=orch"
pg_db() { "$PGBIN/psql" -qAt -h "$PG_DIR" -U orch -d w -c "$1"; }
for i in 1 2; do
  "$ORCH" worker llm.lua --db "$W" --lease-rows 250 --lease-timeout 5 >w$i.log 2>&1 &
  eval "pid$i=$!"
done
wait_until '[ "$(pg_db "select count(*) from leases" 2>/dev/null || echo 0)" = 12 ]'
ID=$(pg_db "select id from runs")
"$ORCH" serve --db "$W" --listen 127.0.0.1:0 >serve.log 2>&1 &
SERVE_PID=$!
wait_until "grep -q 'orch serve: http' serve.log" || { bad "serve did not start"; cat serve.log; }
PORT=$(sed -n 's/^orch serve: http:\/\/[0-9.]*:\([0-9]*\)\/.*/\1/p' serve.log)
URL="http://127.0.0.1:$PORT"

# while both work: each live, holding a lease
live2() { curl -s "$URL/api/runs/$ID" >run.json && [ "$(jq '[.workers.workers[] | select(.live)] | length' run.json)" = 2 ]; }
if wait_until live2; then ok "/api/runs/ID: both workers live"; else bad "workers: $(jq -c .workers run.json)"; fi
expect_eq "each worker: its name, live, a lease number, rows and rows/s" \
  "$(jq -r '.workers.workers[] | [(.name | test("^[^ :]+:[0-9]+:[0-9a-f]+$")), .live, (.lease | type), (.rows | type), (.rows_per_s | type)] | map(tostring) | join(" ")' run.json)" \
  "true true number number number
true true number number number"
expect_eq "the leases: 12 in all, done + taken + free, 2 taken, and the timeout" \
  "$(jq -r '.workers.leases | [.total, .done + .taken + .free, .taken] | map(tostring) | join(" ")' run.json) $(jq .workers.timeout_s run.json)" "12 12 2 5"
expect_eq "the worker pids are the running ones" \
  "$(jq -r '[.workers.workers[].name | split(":")[1] | tonumber] | sort | map(tostring) | join(" ")' run.json)" \
  "$(printf '%s\n' "$pid1" "$pid2" | sort -n | tr '\n' ' ' | sed 's/ $//')"
expect_eq "a run without batches has no batches field" "$(jq -c .batches run.json)" "null"
curl -s "$URL/metrics" >m1.prom
if $PARSE m1.prom >parse1.out; then ok "/metrics with worker gauges parses"; else bad "/metrics: $(cat parse1.out)"; fi
expect_grep "per-run live workers" "^orch_run_workers\{run_id=\"$ID\",workflow=\"fleet\",state=\"live\"\} [12]$" m1.prom
expect_grep "per-run leases by state" "^orch_run_leases\{run_id=\"$ID\",workflow=\"fleet\",state=\"free\"\} [0-9]+$" m1.prom
expect_grep "with HELP and TYPE" "^# HELP orch_run_leases Leases of a worker run by state\.$" m1.prom

CHROME=${CHROME:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROME" ]; then bad "chromium is not installed (tests/deps.sh installs it)"; else
  timeout 90 "$CHROME" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$WORK/chrome" \
    --virtual-time-budget=2500 --dump-dom "$URL/#/run/$ID" >page.html 2>>chrome.log
  expect_grep "the run page: the workers heading" "<h2>workers \([0-9] live, 2 in all\)</h2>" page.html
  expect_grep "the run page: the leases" "<p id=\"leases\" class=\"muted\">leases 12: [0-9]+ done, [0-9]+ taken, [0-9]+ free \(taken back after 5 s without a heartbeat\)</p>" page.html
  expect_grep "the run page: a worker row" "<tr class=\"worker\"><td class=\"mono\">[^<]+:($pid1|$pid2):[0-9a-f]+</td><td>(live|gone)</td><td class=\"num\">[-0-9]+</td><td class=\"num\">[0-9,]+</td><td class=\"num\">[0-9.]+</td></tr>" page.html
fi

wait "$pid1"; r1=$?
wait "$pid2"; r2=$?
expect_eq "both workers exit 0" "$r1$r2" "00"
curl -s "$URL/api/runs/$ID" >done.json
expect_eq "after the run: completed, every lease done, none live, their rows add up to 3,000" \
  "$(jq -r '[.status, .workers.leases.done, .workers.leases.taken, .workers.leases.free, ([.workers.workers[] | select(.live)] | length), ([.workers.workers[].rows] | add)] | map(tostring) | join(" ")' done.json)" \
  "completed 12 0 0 0 3000"
curl -s "$URL/metrics" >m2.prom
if $PARSE m2.prom >parse2.out; then ok "/metrics parses after the run"; else bad "/metrics: $(cat parse2.out)"; fi
expect_grep "all 12 leases done" "^orch_run_leases\{run_id=\"$ID\",workflow=\"fleet\",state=\"done\"\} 12$" m2.prom
expect_grep "no worker live" "^orch_run_workers\{run_id=\"$ID\",workflow=\"fleet\",state=\"live\"\} 0$" m2.prom
expect_grep "two gone" "^orch_run_workers\{run_id=\"$ID\",workflow=\"fleet\",state=\"gone\"\} 2$" m2.prom
finish
