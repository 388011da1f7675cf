# orch serve, /metrics, run --metrics and live figures, against a live
# 4,000-row run in another process: `orch status` shows figures between
# checkpoints; the JSON API answers and pages; /metrics parses strictly
# and its rows counter grows between two scrapes; only GET and HEAD; no
# secret in any answer; a non-loopback listen needs a token (401 without,
# 200 with) or --insecure, and serve refuses to start without either;
# --metrics FILE parses and is updated during the run.
. tests/lib.sh
cd "$WORK"
PARSE="python3 $ROOT/tests/prom_parse.py"

# the parser itself refuses what the format forbids
printf '# TYPE a counter\na 1\n# TYPE b gauge\nb 2\na 3\n' >bad1.prom
printf '# TYPE a counter\na{x="1} 1\n' >bad2.prom
printf '# TYPE h histogram\nh_bucket{le="1"} 3\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 2\n' >bad3.prom
printf 'a 1\n' >bad4.prom
printf '# TYPE a counter\na -1\n' >bad5.prom
for f in bad1 bad2 bad3 bad4 bad5; do
  if $PARSE $f.prom >$f.out; then bad "the parser accepts $f.prom"; else ok "the parser refuses $f.prom: $(cat $f.out)"; fi
done

cat >slow.lua <<'LUA'
local orch = require("orch")
local rows = {}
for i = 1, orch.param("rows", 4000) do rows[i] = { id = i, text = "item " .. i } end
return orch.workflow {
  name = "watch <me>",
  input = rows,
  output = orch.write.jsonl("out/slow.jsonl"),
  key = "id",
  concurrency = 20,
  on_error = "skip",
  checkpoint = orch.policy.every_rows(1000), -- live figures show between checkpoints
  stages = { function(row, ctx)
    ctx:sleep(orch.param("sleep", 0.1))
    -- the last rows wait for the test to let them go, so the run is still
    -- going however slowly the checks below run on a loaded machine
    while row.id > 3000 and not io.open("release") do ctx:sleep(0.05) end
    if row.id % 97 == 0 then
      error("bad row <script>alert(1)</script> key=" .. os.getenv("OPENAI_API_KEY") .. " " .. row.id)
    end
    return row
  end },
}
LUA
export OPENAI_API_KEY=sk-test-SECRETSECRET123
"$ORCH" run slow.lua --db s.db --metrics m.prom >run.log 2>&1 &
RUN_PID=$!
SERVE_PIDS=""
trap 'kill $RUN_PID $SERVE_PIDS 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

# start_serve LOG ARGS...: orch serve on a free port; sets PORT (empty when it did not start)
start_serve() {
  local log=$1; shift
  "$ORCH" serve --db s.db "$@" >"$log" 2>&1 &
  SERVE_PIDS="$SERVE_PIDS $!"
  wait_until "grep -q 'orch serve: http' '$log' || ! kill -0 $! 2>/dev/null"
  PORT=$(sed -n 's/^orch serve: http:\/\/[0-9.]*:\([0-9]*\)\/.*/\1/p' "$log")
}

wait_until '[ -s m.prom ] && [ "$(sqlite3 s.db "select count(*) from run_live" 2>/dev/null)" = 1 ]'
# live figures: between two checkpoints orch status shows newer ones
wait_until '[ "$(sqlite3 s.db "select count(*) from runs r join run_live l on l.run_id = r.id
  where json_extract(l.figures, '"'"'$.rows_done'"'"') > r.rows_done")" = 1 ] 2>/dev/null'
"$ORCH" status --db s.db >status1.txt 2>&1
expect_grep "status shows the live figures of the running run" "^live +[0-9,]+ of 4,000 rows \([0-9]+%\), [0-9,]+ rows/s, [0-9]+ in flight, [0-9,]+ failed, 0 calls, \\\$0.00, ETA [0-9]+m[0-9]{2}s, as of [0-9]+ s ago" status1.txt
"$ORCH" status --db s.db --json >status1.json
python3 - status1.json <<'PY' >live.txt
import json, sys
r = json.load(open(sys.argv[1]))
f = r["live"]
print("live", f["rows_total"], f["concurrency"], f["rows_done"] >= r["rows_done"], f["rows_in_flight"] <= 20)
PY
expect_grep "status --json carries them, at or ahead of the last checkpoint" "^live 4000 20 True True" live.txt

# --metrics FILE: parses, and changes during the run
$PARSE m.prom --get orch_run_rows_done_total >m1.txt
expect_grep "the --metrics file parses" "^[0-9]+$" m1.txt
# rewritten every 2 s while the run goes on: wait for the next one
wait_until '$PARSE m.prom --get orch_run_rows_done_total >m2.txt && [ "$(cat m2.txt)" -gt "$(cat m1.txt)" ]'
if [ "$(cat m2.txt)" -gt "$(cat m1.txt)" ]; then ok "the --metrics file was rewritten during the run ($(cat m1.txt) -> $(cat m2.txt) rows)"
else bad "the --metrics file did not change: $(cat m1.txt) -> $(cat m2.txt)"; fi
$PARSE m.prom --get 'orch_run_status{status="running"}' >m3.txt
expect_eq "the file says the run is running" "$(cat m3.txt)" 1

# serve on loopback
start_serve serve1.log --listen 127.0.0.1:0
[ -n "$PORT" ] && ok "serve listens on 127.0.0.1:$PORT" || { bad "serve did not start:"; cat serve1.log; }
URL="http://127.0.0.1:$PORT"
curl -s "$URL/metrics" >s1.prom
$PARSE s1.prom >p1.txt
expect_grep "/metrics parses" "^ok [0-9]+ families" p1.txt
r1=$($PARSE s1.prom --get orch_rows_done_total)
# live figures are written once a second: a later scrape sees more rows
wait_until 'curl -s "$URL/metrics" >s2.prom && [ "$($PARSE s2.prom --get orch_rows_done_total)" -gt "$r1" ]'
r2=$($PARSE s2.prom --get orch_rows_done_total)
if [ "$r2" -gt "$r1" ]; then ok "orch_rows_done_total grows between two scrapes ($r1 -> $r2)"; else bad "orch_rows_done_total $r1 -> $r2"; fi
expect_eq "a rows counter per run too" "$($PARSE s2.prom --get 'orch_run_rows_done_total{workflow="watch <me>"}')" "$r2"
expect_eq "the run's status is a gauge" "$($PARSE s2.prom --get 'orch_run_status{status="running"}')" 1
# the histogram counts the run's checkpoints: once the first one is in
wait_until '[ "$(sqlite3 s.db "select count(*) from checkpoints" 2>/dev/null)" -ge 1 ] 2>/dev/null'
curl -s "$URL/metrics" >s3.prom
expect_grep "the checkpoint histogram is there" "^orch_run_checkpoint_duration_seconds_bucket\{run_id=\"[^\"]+\",workflow=\"watch <me>\",le=\"\+Inf\"\} [1-9]" s3.prom
expect_eq "metrics content type" "$(curl -s -o /dev/null -w '%{content_type}' "$URL/metrics")" "text/plain; version=0.0.4; charset=utf-8"

curl -s "$URL/api/runs" >runs.json
python3 - runs.json <<'PY' >runs.txt
import json, sys
d = json.load(open(sys.argv[1]))
r = d["runs"][0]
print("runs", d["total"], r["name"], r["status"], r["rows_total"], 0 < r["share"] < 1, r["rows_per_s"] > 0, "live" in r)
PY
expect_grep "/api/runs lists the running run with live figures" "^runs 1 watch <me> running 4000 True True True" runs.txt
ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["runs"][0]["id"])' runs.json)
curl -s "$URL/api/runs?status=completed" | python3 -c 'import json,sys; print("filtered", json.load(sys.stdin)["total"])' >f.txt
expect_grep "the status filter" "^filtered 0" f.txt
curl -s "$URL/api/runs?name=WATCH" | python3 -c 'import json,sys; print("named", json.load(sys.stdin)["total"])' >f.txt
expect_grep "the name filter (any case, part of the name)" "^named 1" f.txt

# the errors of committed checkpoints, paged, with the secret gone
wait_until "curl -s '$URL/api/runs/$ID/errors' | grep -q 'key=' "
curl -s "$URL/api/runs/$ID/errors?limit=1" >e1.json
curl -s "$URL/api/runs/$ID/errors?limit=1&after=97" >e2.json
python3 - e1.json e2.json <<'PY' >errors.txt
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
print("errors", len(a["errors"]), a["errors"][0]["seq"], a["next"], b["errors"][0]["seq"])
print("text", a["errors"][0]["error"])
PY
expect_grep "errors are paged by row: 1 a page, then after=97" "^errors 1 97 97 194" errors.txt
expect_grep "an error keeps its markup as text, the API key masked" "^text slow.lua:[0-9]+: bad row <script>alert\(1\)</script> key=\*\*\* 97" errors.txt
curl -s "$URL/api/runs/$ID" >run.json
curl -s "$URL/api/runs/$ID/events" >events.json
curl -s "$URL/api/runs" >>run.json
curl -s "$URL/metrics" >>run.json
if grep -q "SECRETSECRET" run.json events.json e1.json; then bad "an answer carries the API key"; else ok "no answer carries the API key"; fi
python3 - run.json <<'PY' >run.txt
import json, sys
d = json.JSONDecoder().raw_decode(open(sys.argv[1]).read())[0]
print("run", d["name"] == "watch <me>", len(d["checkpoint_list"]) >= 1, d["checkpoint_list"][0]["seq"])
PY
expect_grep "/api/runs/ID: the run with its checkpoints" "^run True True 1" run.txt
curl -s "$URL/api/runs/$ID/events?limit=1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("events", len(d["events"]), d["next"] == d["events"][0]["id"])' >ev.txt
expect_grep "events are paged" "^events 1 True" ev.txt
expect_eq "an unknown run is 404" "$(curl -s -o /dev/null -w '%{http_code}' "$URL/api/runs/nope")" 404

# read-only: only GET and HEAD
expect_eq "POST is 405" "$(curl -s -o /dev/null -w '%{http_code}' -X POST -d x=1 "$URL/api/runs")" 405
expect_eq "DELETE is 405" "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$URL/api/runs/$ID")" 405
expect_eq "HEAD is 200" "$(curl -s -o /dev/null -w '%{http_code}' -I "$URL/api/runs")" 200
curl -s -D hdr.txt -o page.html "$URL/"
expect_grep "the page is served" "<script src=\"/app.js\"></script>" page.html
expect_grep "with a content security policy" "^Content-Security-Policy: default-src 'self'" hdr.txt

# a non-loopback address: refused without a token, 401/200 with one
"$ORCH" serve --db s.db --listen 0.0.0.0:0 >refused.log 2>&1
expect_eq "serve without a token on 0.0.0.0: exit 2" "$?" 2
expect_grep "and says why" "refusing to listen on 0.0.0.0 without a token: .* pass --token T .* or --insecure" refused.log
start_serve serve2.log --listen 0.0.0.0:0 --token s3cr3t-t0ken
T="http://127.0.0.1:$PORT"
expect_eq "no token: 401" "$(curl -s -o /dev/null -w '%{http_code}' "$T/api/runs")" 401
expect_eq "no token on /metrics: 401" "$(curl -s -o /dev/null -w '%{http_code}' "$T/metrics")" 401
expect_eq "a wrong token: 401" "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer nope' "$T/api/runs")" 401
expect_eq "the token: 200" "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer s3cr3t-t0ken' "$T/api/runs")" 200
curl -s -c jar.txt -o /dev/null -w '%{http_code}\n' "$T/?token=s3cr3t-t0ken" >redirect.txt
expect_grep "/?token=T sets the cookie and sends the browser on" "^303" redirect.txt
expect_eq "the cookie then lets the browser in" "$(curl -s -b jar.txt -o /dev/null -w '%{http_code}' "$T/api/runs")" 200
if curl -s -H 'Authorization: Bearer s3cr3t-t0ken' "$T/api/runs" | grep -q "s3cr3t-t0ken"; then bad "an answer carries the token"
else ok "no answer carries the token"; fi
start_serve serve3.log --listen 0.0.0.0:0 --insecure
expect_eq "--insecure: served without a token" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/api/runs")" 200
"$ORCH" serve --db s.db --listen nowhere:1 >bad-listen.log 2>&1
expect_eq "a host that is no IPv4 address: exit 2" "$?" 2

touch release
wait "$RUN_PID"
expect_eq "the watched run completes" "$?" 0
$PARSE m.prom --get 'orch_run_status{status="completed"}' --get orch_run_rows_done_total >mend.txt
expect_eq "the --metrics file ends with the run's end" "$(tr '\n' ' ' <mend.txt)" "1 4000 "
"$ORCH" status --db s.db >status2.txt
if grep -q "^live" status2.txt; then bad "a finished run shows live figures"; else ok "a finished run shows its record, no live line"; fi
finish
