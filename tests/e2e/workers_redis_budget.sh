# orch worker's shared budget on Redis: three workers on one run whose
# budget runs out midway all stop (exit 3), the run paused; what they paid
# stays within max_usd (each request reserves its estimate in the server,
# one script that checks and reserves, before it starts); `orch resume RUN
# --budget X` raises the budget for the run and completes it, the output
# equal to a single-process run. The Redis server killed -9 and restarted
# mid-lease (its AOF fsynced on every write), answering LOADING while it
# reads its AOF back, is ridden out.
. tests/lib.sh
. tests/redis_lib.sh
start_redis
start_llm_server --latency-ms 30 --seed 7
trap 'stop_redis; kill ${LLM_PID:-} 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
cd "$WORK"
rd_url() { echo "redis://127.0.0.1:$REDIS_PORT/$1"; }
# done_leases DB: how many of the database's leases are done
done_leases() {
  rcli -n "$1" eval "local n = 0
for _, id in ipairs(redis.call('ZRANGE', 'orch:runs', 0, -1)) do
  for i = 1, tonumber(redis.call('GET', 'orch:leases:' .. id)) or 0 do
    if redis.call('HGET', 'orch:lease:' .. id .. ':' .. i, 'status') == 'done' then n = n + 1 end
  end
end
return n" 0 2>/dev/null | grep -E '^[0-9]+$' || echo 0
}

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
run_orch ref.log run llm.lua --db "$(rd_url 1)" --set out=out/ref.jsonl
expect_eq "the single-process run exits 0" "$RC" 0
full=$(rcli -n 1 hget "orch:run:$(rcli -n 1 zrange orch:runs 0 -1)" cost_usd)
MAX=$(python3 -c "print(round($full / 2, 2))") # half of what the whole run costs

W=$(rd_url 2)
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
run_id=$(rcli -n 2 zrange orch:runs 0 -1)
expect_eq "the run is paused by its budget" \
  "$(rcli -n 2 hget "orch:run:$run_id" status) $(rcli -n 2 hget "orch:run:$run_id" error | cut -d: -f1)" "paused budget"
done_rows=$(rcli -n 2 hget "orch:run:$run_id" rows_done)
if [ "$done_rows" -gt 0 ] && [ "$done_rows" -lt 3000 ]; then ok "it stopped midway ($done_rows of 3,000 rows)"; else
  bad "rows done at the pause: $done_rows"; fi
spent=$(rcli -n 2 eval "local s = 0
for _, k in ipairs(redis.call('ZRANGE', 'orch:jrz', 0, -1)) do
  s = s + tonumber(redis.call('HGET', 'orch:jr:' .. k, 'cost_usd'))
end
return string.format('%.9f', s)" 0)
# the window: every worker's requests in flight, each reserving its estimate ((chars/4+8) + 16 tokens at $1000/M)
window=$(python3 -c "print(3 * 10 * (40 // 4 + 8 + 16) * 1000 / 1e6)")
if python3 -c "import sys; sys.exit(0 if $spent <= $MAX + $window else 1)"; then
  ok "paid \$$spent <= max_usd \$$MAX + one in-flight window \$$window"; else bad "paid \$$spent, past \$$MAX + \$$window"; fi
b_max=$(rcli -n 2 hget "orch:bud:$run_id" max_usd)
b_spent=$(rcli -n 2 hget "orch:bud:$run_id" spent_usd)
b_res=$(rcli -n 2 hget "orch:bud:$run_id" reserved_usd)
expect_eq "the server's budget agrees: spent <= max, nothing left reserved" \
  "$(python3 -c "print($b_spent <= $b_max + 1e-9, '%.9f' % $b_res)")" "True 0.000000000"
expect_grep "a worker says how to go on" "paused: budget of .* reached across the run's workers.*orch resume spend-w[0-9a-f]+ .*--budget USD" <(cat w1.log w2.log w3.log)
run_orch again.log worker llm.lua --db "$W"
expect_eq "a worker without a higher budget does not start: exit 3" "$RC" 3
expect_grep "and says how to raise it" "paused by its budget .*orch resume $run_id --budget USD" again.log
run_orch resume.log resume "$run_id" --db "$W" --budget 1000
expect_eq "orch resume --budget raises it and completes the run" "$RC" 0
expect_eq "completed, 3,000 rows" "$(rcli -n 2 hget "orch:run:$run_id" status) $(rcli -n 2 hget "orch:run:$run_id" rows_done)" \
  "completed 3000"
expect_eq "the raised budget is the run's" "$(rcli -n 2 hget "orch:bud:$run_id" max_usd)" 1000
run_orch export.log export "$run_id" --db "$W" -o out/export.jsonl
if cmp -s out/ref.jsonl out/export.jsonl; then ok "the export equals the single-process output"; else
  bad "the export differs: $(wc -l <out/export.jsonl) lines"; fi

# ---- the server is killed -9 and restarted mid-lease: the workers connect again and go on
# a million keys in another database make the restarted server take a while to read its
# AOF, answering LOADING meanwhile: the workers wait for it rather than fail
rcli -n 9 eval "for i = 1, 1000000 do redis.call('SET', 'k' .. i, i) end return 1" 0 >/dev/null
B=$(rd_url 3)
for i in 1 2; do
  "$ORCH" worker llm.lua --db "$B" --lease-rows 300 --set out=out/bounce.jsonl >b$i.log 2>&1 &
  eval "bp$i=$!"
done
wait_until '[ "$(done_leases 3)" -ge 2 ]'
kill_redis
restart_redis
wait_until '[ "$(rcli ping 2>/dev/null)" = PONG ]' # the AOF loaded
left=$((10 - $(done_leases 3)))
if [ "$left" -gt 0 ]; then ok "the server restarted mid-run ($left leases not done)"; else bad "the run was over at the restart"; fi
wait "$bp1"
b1=$?
wait "$bp2"
expect_eq "both workers ride the restart out: exit 0" "$b1:$?" "0:0"
bid=$(rcli -n 3 zrange orch:runs 0 -1)
expect_eq "the run completed with every row" "$(rcli -n 3 hget "orch:run:$bid" status) $(rcli -n 3 hlen "orch:res:$bid")" \
  "completed 3000"
if cmp -s out/ref.jsonl out/bounce.jsonl; then ok "its output equals the single-process run's"; else
  bad "the output differs: $(wc -l <out/bounce.jsonl) lines"; fi
finish
