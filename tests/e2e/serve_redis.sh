# orch serve over a Redis store: a run writes its live figures to Redis;
# serve reads the runs list, a run, a page of its events and failed rows,
# and /metrics (strictly parsed) from the same server, and writes nothing
# there. The figures and the indexes behind the pages are the server's
# keys (tests/redis_lib.sh: a server of the test's own).
. tests/lib.sh
. tests/redis_lib.sh
start_redis
cd "$WORK"
PARSE="python3 $ROOT/tests/prom_parse.py"
cat >slow.lua <<'LUA'
local orch = require("orch")
local rows = {}
for i = 1, 2000 do rows[i] = { id = i } end
return orch.workflow {
  name = "redis-watch", input = rows, output = orch.write.jsonl("out/slow.jsonl"), key = "id", concurrency = 20,
  on_error = "skip", checkpoint = orch.policy.every_rows(500),
  stages = { function(row, ctx)
    ctx:sleep(0.1)
    -- the last rows wait for the test to let them go, so the run is still
    -- going however slowly the checks below run on a loaded machine
    while row.id > 1500 and not io.open("release") do ctx:sleep(0.05) end
    if row.id % 50 == 0 then error("bad <i>row</i> " .. row.id) end
    return row
  end },
}
LUA
"$ORCH" run slow.lua --db "$REDIS_URL" >run.log 2>&1 &
RUN_PID=$!
# serve opens the store read-only: once the run has made it
wait_until '"$ORCH" status --db "$REDIS_URL" 2>/dev/null | grep -q "^status *running"'
"$ORCH" serve --db "$REDIS_URL" --listen 127.0.0.1:0 >serve.log 2>&1 &
SERVE_PID=$!
trap 'kill $RUN_PID $SERVE_PID 2>/dev/null; stop_redis; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
wait_until "grep -q 'orch serve: http' serve.log" || { bad "serve did not start"; cat serve.log; }
PORT=$(sed -n 's/^orch serve: http:\/\/[0-9.]*:\([0-9]*\)\/.*/\1/p' serve.log)
URL="http://127.0.0.1:$PORT"
expect_grep "serve names the store with its URL" "over redis://127\.0\.0\.1:$REDIS_PORT/0" serve.log
# past the first checkpoint, with live figures ahead of it
wait_until "curl -s '$URL/api/runs/'\$(curl -s '$URL/api/runs' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"runs\"][0][\"id\"])' 2>/dev/null)'/errors' | grep -q 'bad <i>row'"
curl -s "$URL/api/runs" >runs.json
python3 - runs.json <<'PY' >runs.txt
import json, sys
r = json.load(open(sys.argv[1]))["runs"][0]
print("run", r["name"], r["status"], r["rows_total"], r["live"]["concurrency"], r["rows_done"] >= 500)
PY
expect_grep "the running run with its live figures, from Redis" "^run redis-watch running 2000 20 True" runs.txt
ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["runs"][0]["id"])' runs.json)
# what serve showed is in the server: the figures, the event set, the failed-rows index
expect_eq "the live figures are a key of the server" "$(rcli hexists "orch:live:$ID" figures)" 1
expect_eq "the events are a sorted set" "$(rcli type "orch:ev:$ID")" zset
expect_eq "the failed rows of the first 500 (50, 100, ..., 500) are indexed" "$(rcli zcount "orch:err:$ID" 0 500)" 10
curl -s "$URL/api/runs/$ID/errors?limit=2&after=50" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("errors", [e["seq"] for e in d["errors"]], d["errors"][0]["error"])' >errors.txt
expect_grep "a page of failed rows" "^errors \[100, 150\] slow.lua:[0-9]+: bad <i>row</i> 100" errors.txt
curl -s "$URL/api/runs/$ID/events?order=desc&limit=1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("events", len(d["events"]), d["next"] == d["events"][0]["id"], d["events"][0]["id"])' >events.txt
expect_grep "the newest event" "^events 1 True [0-9]+$" events.txt
EV=$(awk '{print $4}' events.txt)
expect_eq "it is in the server's set, scored by its id" "$(rcli zcount "orch:ev:$ID" "$EV" "$EV")" 1
curl -s "$URL/metrics" >m.prom
$PARSE m.prom >parse.txt
expect_grep "/metrics parses" "^ok [0-9]+ families" parse.txt
expect_eq "with the run running" "$($PARSE m.prom --get 'orch_run_status{status="running"}')" 1
# orch status from another shell reads the same figures back from the server
"$ORCH" status --db "$REDIS_URL" >status.txt 2>&1
expect_grep "status shows the live figures of the running run" "^live +[0-9,]+ of 2,000 rows \([0-9]+%\), [0-9,]+ rows/s, [0-9]+ in flight, [0-9,]+ failed" status.txt
"$ORCH" status --db "$REDIS_URL" --json >status.json
python3 - status.json "$(rcli hget "orch:live:$ID" updated_ms)" <<'PY' >live.txt
import json, sys
r = json.load(open(sys.argv[1]))
print("live", r["live"]["rows_total"], r["live"]["concurrency"], int(sys.argv[2]) > 0)
PY
expect_grep "status --json carries them" "^live 2000 20 True" live.txt
touch release
wait "$RUN_PID"
expect_eq "the run then completes" "$?" 0
expect_eq "the run's live figures stay with it" "$(rcli hexists "orch:live:$ID" figures)" 1
expect_eq "no local file stands in for the server" "$(ls -A | grep -c '^\.orch$')" 0
finish
