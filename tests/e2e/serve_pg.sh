# orch serve over a PostgreSQL store: a run writes its live figures to
# PostgreSQL; serve reads the runs list, a run, a page of its events and
# failed rows, and /metrics (strictly parsed) from the same database.
. tests/lib.sh
. tests/pg_lib.sh
start_pg
cd "$WORK"
PARSE="python3 $ROOT/tests/prom_parse.py"
cat >slow.lua <<'LUA'
local orch = require("orch")
local rows = {}
for i = 1, 2000 do rows[i] = { id = i } end
return orch.workflow {
  name = "pg-watch", input = rows, output = orch.write.jsonl("out/slow.jsonl"), key = "id", concurrency = 20,
  on_error = "skip", checkpoint = orch.policy.every_rows(500),
  stages = { function(row, ctx)
    ctx:sleep(0.1)
    if row.id % 50 == 0 then error("bad <i>row</i> " .. row.id) end
    return row
  end },
}
LUA
"$ORCH" run slow.lua --db "$PG_URL" >run.log 2>&1 &
RUN_PID=$!
# serve opens the store read-only: once the run has made the schema
wait_until '"$ORCH" status --db "$PG_URL" 2>/dev/null | grep -q "^status *running"'
"$ORCH" serve --db "$PG_URL" --listen 127.0.0.1:0 >serve.log 2>&1 &
SERVE_PID=$!
trap 'kill $RUN_PID $SERVE_PID 2>/dev/null; stop_pg; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
wait_until "grep -q 'orch serve: http' serve.log" || { bad "serve did not start"; cat serve.log; }
PORT=$(sed -n 's/^orch serve: http:\/\/[0-9.]*:\([0-9]*\)\/.*/\1/p' serve.log)
URL="http://127.0.0.1:$PORT"
expect_grep "serve names the store with its URL" "over postgres:///orch\?host=.*, Ctrl-C|over postgres:///orch\?host=.* \(Ctrl-C stops\)" serve.log
# past the first checkpoint, with live figures ahead of it
wait_until "curl -s '$URL/api/runs/'\$(curl -s '$URL/api/runs' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"runs\"][0][\"id\"])' 2>/dev/null)'/errors' | grep -q 'bad <i>row'"
curl -s "$URL/api/runs" >runs.json
python3 - runs.json <<'PY' >runs.txt
import json, sys
r = json.load(open(sys.argv[1]))["runs"][0]
print("run", r["name"], r["status"], r["rows_total"], r["live"]["concurrency"], r["rows_done"] >= 500)
PY
expect_grep "the running run with its live figures, from PostgreSQL" "^run pg-watch running 2000 20 True" runs.txt
ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["runs"][0]["id"])' runs.json)
curl -s "$URL/api/runs/$ID/errors?limit=2&after=50" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("errors", [e["seq"] for e in d["errors"]], d["errors"][0]["error"])' >errors.txt
expect_grep "a page of failed rows" "^errors \[100, 150\] slow.lua:[0-9]+: bad <i>row</i> 100" errors.txt
curl -s "$URL/api/runs/$ID/events?order=desc&limit=1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("events", len(d["events"]), d["next"] == d["events"][0]["id"])' >events.txt
expect_grep "the newest event" "^events 1 True" events.txt
curl -s "$URL/metrics" >m.prom
$PARSE m.prom >parse.txt
expect_grep "/metrics parses" "^ok [0-9]+ families" parse.txt
expect_eq "with the run running" "$($PARSE m.prom --get 'orch_run_status{status="running"}')" 1
kill "$RUN_PID"
wait "$RUN_PID"
finish
