# Many workers, one run (orch worker) on a real Redis server: three
# workers share a 3,000-row LLM run in leases, one is killed -9 while it
# holds a lease and a fourth joins late; the run completes, orch export
# writes output byte-identical to a single-process run, orch status shows
# the live workers, the LLM server saw at most the killed worker's
# in-flight requests twice, and the journal's spend equals the
# single-process spend. Everything is in the server: the leases, results
# and journal are its keys, and no local store stands in for it.
# Identical requests on two workers are paid once: the second waits for
# the first's reply (journal markers), and the markers go with the commits.
. tests/lib.sh
. tests/redis_lib.sh
start_redis
start_llm_server --latency-ms 40 --seed 5
trap 'stop_redis; kill ${LLM_PID:-} 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
cd "$WORK"
rd_url() { echo "redis://127.0.0.1:$REDIS_PORT/$1"; }
# leases DB STATUS [OWNER-PART]: how many of the database's leases have
# that status (and an owner containing OWNER-PART)
leases() {
  rcli -n "$1" eval "local n = 0
for _, id in ipairs(redis.call('ZRANGE', 'orch:runs', 0, -1)) do
  for i = 1, tonumber(redis.call('GET', 'orch:leases:' .. id)) or 0 do
    local v = redis.call('HMGET', 'orch:lease:' .. id .. ':' .. i, 'status', 'owner', 'claims')
    if (ARGV[1] == 'reclaimed' and tonumber(v[3]) > 1) or (v[1] == ARGV[1]
      and (ARGV[2] == '' or (v[2] and string.find(v[2], ARGV[2], 1, true)))) then n = n + 1 end
  end
end
return n" 0 "$2" "${3:-}" 2>/dev/null || echo 0
}
# journal_usd DB: the journal's total spend, to 9 decimals
journal_usd() {
  rcli -n "$1" eval "local s = 0
for _, k in ipairs(redis.call('ZRANGE', 'orch:jrz', 0, -1)) do
  s = s + tonumber(redis.call('HGET', 'orch:jr:' .. k, 'cost_usd'))
end
return string.format('%.9f', s)" 0
}

python3 -c 'import json
with open("items.jsonl", "w") as f:
    for i in range(1, 3001):
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
run_orch ref.log run llm.lua --db "$(rd_url 1)" --set out=out/ref.jsonl --set conc=100
expect_eq "the single-process run exits 0" "$RC" 0
ref_id=$(rcli -n 1 zrange orch:runs 0 -1)
ref_cost=$(printf '%.9f' "$(rcli -n 1 hget "orch:run:$ref_id" cost_usd)")
llm_admin reset

W=$(rd_url 2)
for i in 1 2 3; do
  "$ORCH" worker llm.lua --db "$W" --lease-rows 250 --lease-timeout 2 -v >w$i.log 2>&1 &
  eval "pid$i=$!"
done
# kill worker 2 while it holds a lease, once some leases are done
wait_until '[ "$(leases 2 done)" -ge 3 ] && [ "$(leases 2 taken ":$pid2:")" -ge 1 ]'
if kill -9 "$pid2" 2>/dev/null; then ok "worker 2 killed -9 holding a lease"; else bad "worker 2 ended before the kill"; fi
wait "$pid2" 2>/dev/null
left=$((12 - $(leases 2 done)))
if [ "$left" -gt 0 ]; then ok "the run was mid-way at the kill ($left leases not done)"; else bad "the run was over at the kill"; fi
"$ORCH" worker llm.lua --db "$W" -v >w4.log 2>&1 &
pid4=$!
# orch status while they work: the live workers, their leases and rates (lease_list on Redis)
status_live() { "$ORCH" status --db "$W" >status.txt 2>&1 && grep -Eq "^workers +[2-9] live" status.txt; }
if wait_until status_live; then ok "orch status shows the live workers"; else bad "orch status: $(cat status.txt)"; fi
expect_grep "each with its lease and rows/s" "^  [^ ]+:[0-9]+:[0-9a-f]+ +live, lease [0-9]+, [0-9,]+ rows, [0-9.]+ rows/s" status.txt
expect_grep "and the run's leases" "^leases +12: [0-9]+ done, [0-9]+ taken, [0-9]+ free" status.txt
expect_eq "orch ls shows the run once" "$("$ORCH" ls --db "$W" | grep -c "many-w")" 1
rcs=""
for p in $pid1 $pid3 $pid4; do
  wait "$p"
  rcs="$rcs$?"
done
expect_eq "the three live workers exit 0" "$rcs" "000"
run_id=$(rcli -n 2 zrange orch:runs 0 -1)
expect_eq "one run, completed, 3,000 rows" "$(rcli -n 2 zcard orch:runs) $(rcli -n 2 hget "orch:run:$run_id" status) \
$(rcli -n 2 hget "orch:run:$run_id" rows_done)" "1 completed 3000"
expect_eq "every lease done, none free or taken" \
  "$(leases 2 done) $(rcli -n 2 zcard "orch:lfree:$run_id") $(rcli -n 2 zcard "orch:ltaken:$run_id")" "12 0 0"
if [ "$(leases 2 reclaimed)" -ge 1 ]; then ok "the killed worker's lease was taken back"; else
  bad "no lease was claimed twice"; fi
expect_grep "the 4th worker joined the run" "joined run many-w" w4.log
expect_eq "the 3,000 results are in the server" "$(rcli -n 2 hlen "orch:res:$run_id")" 3000
expect_eq "no local store stands in for the server" "$(ls -d .orch 2>/dev/null | wc -l)" 0
run_orch export.log export "$run_id" --db "$W" -o out/export.jsonl
expect_eq "orch export exits 0" "$RC" 0
if cmp -s out/ref.jsonl out/export.jsonl; then ok "orch export is byte-identical to the single-process output"; else
  bad "export differs: $(wc -l <out/ref.jsonl) vs $(wc -l <out/export.jsonl) lines"; fi
if cmp -s out/ref.jsonl out/many.jsonl; then ok "the worker that completed the run wrote the same output file"; else
  bad "the output file differs"; fi
dups=$(llm_stat duplicates)
reqs=$(llm_stat requests)
if [ "$dups" -le "$CONC" ]; then ok "$dups request(s) paid twice <= the killed worker's $CONC in flight"; else
  bad "$dups requests paid twice, more than the killed worker's $CONC in flight"; fi
expect_eq "requests: one per row plus those paid twice" "$reqs" $((3000 + dups))
expect_eq "the journal's spend equals the single-process spend" "$(journal_usd 2)" "$ref_cost"
expect_eq "the run counts the committed rows' calls: 3,000" "$(rcli -n 2 hget "orch:run:$run_id" llm_calls)" 3000
# gc takes the run's leases along with it
run_orch gc.log gc --db "$W" --older-than 0m --status completed
expect_eq "orch gc exits 0" "$RC" 0
expect_eq "and leaves no lease key of the run" "$(rcli -n 2 --scan --pattern "orch:*$run_id*" | wc -l)" 0

# ---- the shared journal: a request in flight on one worker is not paid again on another
# 60 rows asking 3 distinct questions, two workers with 10 rows in flight each, replies
# slow enough that every copy of a question is asked while its first is in flight
python3 -c 'import json
with open("same.jsonl", "w") as f:
    for i in range(1, 61):
        f.write(json.dumps({"id": i, "text": "question %d" % (i % 3)}) + "\n")'
llm_admin config '{"latency_ms": 400}'
llm_admin reset
S=$(rd_url 3)
"$ORCH" worker llm.lua --db "$S" --lease-rows 10 --set input=same.jsonl --set out=out/same.jsonl >s1.log 2>&1 &
spid=$!
run_orch s2.log worker llm.lua --db "$S" --lease-rows 10 --set input=same.jsonl --set out=out/same.jsonl
wait "$spid"
expect_eq "both workers exit 0" "$?:$RC" "0:0"
expect_eq "each distinct request was paid once: 3 requests for 60 rows" "$(llm_stat requests)" 3
expect_eq "60 rows written" "$(wc -l <out/same.jsonl)" 60
expect_eq "the markers went with the commits" "$(rcli -n 3 --scan --pattern 'orch:pend:*' | wc -l)" 0
finish
