# Kept-alive connections survive a wave of replies that finish together.
# 2,000 calls at concurrency 200 against a provider-like server
# (bench/llm_server_fast.py: one event loop, each reply in one write)
# answering each in 100 ms arrive in waves of 200, and a whole wave can
# finish in one pass of the loop before the rows start the next one.
# libcurl sizes its connection cache by the transfers added at that moment
# (4 each), so it closed most connections between waves and the next wave
# connected anew (about 500 connections for 4,000 calls in bench/run.sh).
. tests/lib.sh
cd "$WORK"
python3 "$ROOT/bench/llm_server_fast.py" --port 0 --port-file fast.port --latency-ms 100 >fast.log 2>&1 &
FAST_PID=$!
trap 'kill $FAST_PID 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
wait_until "[ -s fast.port ]" || { bad "bench/llm_server_fast.py did not start:"; cat fast.log; exit 1; }
FAST_URL="http://127.0.0.1:$(cat fast.port)"
fast_stat() { curl -s "$FAST_URL/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
cat >waves.lua <<LUA
local orch = require "orch"
local n, i = 2000, 0
return orch.workflow {
  name = "waves",
  input = function() i = i + 1; if i <= n then return { id = i, text = "item " .. i } end end,
  output = orch.write.jsonl("out/waves.jsonl"),
  key = "id",
  concurrency = 200,
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$FAST_URL/v1", api_key = "test-key",
          concurrency = 200, max_attempts = 1 },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA
run_orch run.log run waves.lua --db w.db
expect_eq "2,000 calls at concurrency 200: exit 0" "$RC" 0
expect_eq "every row written" "$(wc -l <out/waves.jsonl)" 2000
expect_eq "the server answered 2,000 calls" "$(fast_stat requests)" 2000
expect_eq "200 at once" "$(fast_stat peak_in_flight)" 200
expect_eq "over 200 connections, each kept alive for the next waves" "$(fast_stat connections)" 200
[ "$FAIL" -eq 0 ] || cat run.log fast.log
finish
