# State on Redis: every CLI command works with --db redis://... against a
# real server of the test's own (tests/redis_lib.sh: appendonly yes,
# appendfsync always), its data in the server and nowhere else; bad URLs
# and bad servers (unreachable, wrong password, keys under orch's prefix
# that are not orch's, no Lua scripting) are refused with orch's message,
# the password masked, nothing touched; a server killed -9 and restarted
# mid-run is ridden out; a run with an LLM stage killed -9 five times and
# resumed on Redis writes output byte-identical to an uninterrupted run,
# the journal answering the requests sent again.
. tests/lib.sh
. tests/redis_lib.sh
start_redis
start_llm_server --latency-ms 20 --seed 3
# start_llm_server replaced the exit trap: stop both servers
trap 'stop_redis; kill ${LLM_PID:-} 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
cd "$WORK"

# rdb N: the URL of database N on the test server
rdb() { echo "redis://127.0.0.1:$REDIS_PORT/$1"; }

seq 1 3000 | awk 'BEGIN{print "id,n"} {print $1 "," $1*3}' >rows.csv
cat >slow.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "slow",
  input = orch.read.csv(orch.param("input", "rows.csv")),
  output = orch.write.jsonl(orch.param("out", "out/slow.jsonl")),
  key = "id",
  concurrency = 20,
  stages = { function(row, ctx)
    ctx:sleep(orch.param("sleep", 0.001))
    ctx.state.seen = (ctx.state.seen or 0) + 1
    row.double = row.n * 2
    return row
  end },
}
LUA
expected=1..3000

# ---- every command on Redis ------------------------------------------------
run_orch run.log run slow.lua --db "$REDIS_URL"
expect_eq "run on Redis exits 0" "$RC" 0
expect_eq "every row once, in order" "$(ids out/slow.jsonl)" "$expected"
if grep -q "warning" run.log; then bad "a durable server is warned about: $(grep warning run.log)"; else
  ok "no durability warning on appendonly yes + appendfsync always"; fi
expect_eq "the keys are orch's, schema 2" "$(rcli hget orch:meta app) $(rcli hget orch:meta schema)" "orch 2"
id=$(rcli zrange orch:runs 0 -1)
expect_eq "one run, completed, 3,000 rows" "$(rcli hget "orch:run:$id" status) $(rcli hget "orch:run:$id" rows_done)" "completed 3000"
expect_eq "its 3,000 results are in the server" "$(rcli hlen "orch:res:$id")" 3000
if [ -e .orch ]; then bad "a local store was made: $(ls -R .orch)"; else ok "no local file stands in for the server"; fi
run_orch ls.log ls --db "$REDIS_URL"
expect_grep "ls lists it" "^$id +slow +completed +3,000" ls.log
run_orch st.log status "$id" --db "unix://$REDIS_SOCK?db=0"
expect_grep "status shows it (over the Unix socket)" "^status +completed" st.log
run_orch cp.log checkpoints "$id" --db "$REDIS_URL"
expect_grep "checkpoints lists them, checksums verified" "final +3,000 .* ok$" cp.log
run_orch hist.log history "$id" --db "$REDIS_URL"
expect_grep "history has the run's events" "completed +\{" hist.log
run_orch stats.log stats --db "$REDIS_URL"
expect_grep "stats counts the run" "^runs +1 total: 0 active, 0 paused, 0 failed, 1 completed" stats.log
expect_grep "stats measures the keys" "^bytes +[1-9][0-9,]*$" stats.log
run_orch exp.log export "$id" --db "$REDIS_URL" -o exported.jsonl
expect_eq "export exits 0" "$RC" 0
if cmp -s exported.jsonl out/slow.jsonl; then ok "export equals the output"; else bad "export differs"; fi

# SIGINT pauses, resume completes
"$ORCH" run slow.lua --db "$REDIS_URL" --set out=out/paused.jsonl --set sleep=0.01 >int.log 2>&1 &
pid=$!
wait_lines out/paused.jsonl 500
kill -INT "$pid"
wait "$pid"
expect_eq "SIGINT pauses with exit 3" "$?" 3
rid=$(grep -o 'orch resume slow-[0-9a-f]*' int.log | head -1 | cut -d' ' -f3)
expect_eq "the store says paused" "$(rcli hget "orch:run:$rid" status)" paused
run_orch res.log resume "$rid" --db "$REDIS_URL"
expect_eq "resume completes" "$RC" 0
expect_eq "every row once after pause + resume" "$(ids out/paused.jsonl)" "$expected"
expect_eq "ctx.state is stored with the checkpoints" "$(rcli hget "orch:state:$rid" seen)" 3000

# a corrupt checkpoint is found and skipped
last=$(rcli zrevrange "orch:cps:$rid" 0 0)
rcli hset "orch:cp:$rid:$last" checksum 00000000000000000000000000000000 >/dev/null
run_orch cpc.log checkpoints "$rid" --db "$REDIS_URL"
expect_grep "checkpoints shows the corrupt one" "CORRUPT" cpc.log

# restore to checkpoint 2 and resume from it
run_orch rs.log restore "$rid" 2 --db "$REDIS_URL"
expect_eq "restore exits 0" "$RC" 0
expect_eq "later checkpoints are gone" "$(rcli zrevrange "orch:cps:$rid" 0 0) $(rcli --no-raw keys "orch:cp:$rid:*" | wc -l)" "2 2"
run_orch rs2.log resume "$rid" --db "$REDIS_URL"
expect_eq "the restored run resumes" "$RC" 0
expect_grep "from checkpoint 2" "resuming run $rid from checkpoint 2 " rs2.log
expect_eq "and its output is whole again" "$(ids out/paused.jsonl)" "$expected"

# gc removes finished runs with everything they had
run_orch gc.log gc --older-than 0m --vacuum --db "$REDIS_URL"
expect_eq "gc exits 0" "$RC" 0
expect_grep "gc says what it removed" "gc: removed 2 run\(s\) \(2 completed\)" gc.log
expect_eq "no run, checkpoint, result or state left" \
  "$(rcli --scan --pattern 'orch:*' | grep -cE '^orch:(run|cps|cp|res|state|ev):')" 0

# ---- bad input ---------------------------------------------------------------
run_orch unreach.log run slow.lua --db "redis://:hunter2@127.0.0.1:1/0"
expect_eq "an unreachable server: exit 2" "$RC" 2
expect_grep "says so, naming the masked URL" "redis://:\*\*\*@127.0.0.1:1/0: cannot connect to Redis: the server is not reachable \(Connection refused\); check the host and port and that the server is running" unreach.log
rcli config set requirepass open-sesame-42 >/dev/null
run_orch pw.log run slow.lua --db "redis://:wrong-pw-17@127.0.0.1:$REDIS_PORT/5"
expect_eq "a wrong password: exit 2" "$RC" 2
expect_grep "says the login was refused, password masked" "redis://:\*\*\*@127.0.0.1:$REDIS_PORT/5: cannot log in to Redis: WRONGPASS .*; check the user and password in the URL" pw.log
run_orch pw2.log ls --db "$(rdb 5)"
expect_grep "no password: says the server wants one" "cannot log in to Redis: the server wants a password \(NOAUTH .*\); give it in the URL" pw2.log
run_orch pw3.log run slow.lua --db "redis://:open-sesame-42@127.0.0.1:$REDIS_PORT/5" --set out=out/pw.jsonl
expect_eq "the right password runs" "$RC" 0
"$ORCH" stats --db "unix://$REDIS_SOCK?db=5&password=open-sesame-42" >pw4.log 2>&1
"$ORCH" ls --db "redis://default:open-sesame-42@127.0.0.1:$REDIS_PORT/5" >>pw4.log 2>&1
expect_grep "a password= parameter works too" "^runs +1 total" pw4.log
if grep -l -e open-sesame-42 -e wrong-pw-17 ./*.log >leaks.txt; then bad "a password is in $(cat leaks.txt)"; else ok "no password in any message"; fi
redis-cli -s "$REDIS_SOCK" -a open-sesame-42 --no-auth-warning config set requirepass "" >/dev/null

rcli -n 6 set orch:cache:x 1 >/dev/null
rcli -n 6 set other 2 >/dev/null
run_orch other.log run slow.lua --db "$(rdb 6)"
expect_eq "a key under orch: that is not orch's: exit 2" "$RC" 2
expect_grep "refused, naming it" "the database holds keys under orch: that are not orch's \(orch:cache:x\); nothing was changed: give orch a database \(/N\) or a key prefix \(\?prefix=\) of its own" other.log
expect_eq "nothing was touched" "$(rcli -n 6 dbsize) $(rcli -n 6 get orch:cache:x)" "2 1"
run_orch pre.log run slow.lua --db "$(rdb 6)?prefix=orch2:" --set out=out/pre.jsonl
expect_eq "a prefix of orch's own in the same database runs" "$RC" 0
expect_eq "its keys sit under it" "$(rcli -n 6 hget orch2:meta app) $(rcli -n 6 get orch:cache:x)" "orch 1"

run_orch newer0.log run slow.lua --db "$(rdb 7)" --set out=out/newer.jsonl
rcli -n 7 hset orch:meta schema 99 >/dev/null
run_orch newer.log run slow.lua --db "$(rdb 7)"
expect_eq "a newer schema: exit 2" "$RC" 2
expect_grep "names both versions" "created by a newer orch \(schema 99, this orch knows up to 2\)" newer.log

run_orch empty.log ls --db "$(rdb 8)"
expect_eq "inspecting a database orch never used: exit 2" "$RC" 2
expect_grep "says so" "no state store at redis://127.0.0.1:$REDIS_PORT/8 \(the database has no orch keys under orch:; no run has used it\)" empty.log
expect_eq "and creates nothing" "$(rcli -n 8 dbsize)" 0

# a server without Lua scripting
mkdir noscript
"$REDIS_SERVER" --port 0 --unixsocket "$WORK/noscript/s.sock" --dir "$WORK/noscript" --save '' \
  --rename-command SCRIPT "" --rename-command EVALSHA "" --rename-command EVAL "" --daemonize yes \
  --pidfile "$WORK/noscript/p.pid" --logfile "$WORK/noscript/l.log" >/dev/null 2>&1
wait_until "[ -S '$WORK/noscript/s.sock' ]"
run_orch noscript.log run slow.lua --db "unix://$WORK/noscript/s.sock"
expect_eq "a server without scripting: exit 2" "$RC" 2
expect_grep "refused with the reason" "unix://$WORK/noscript/s.sock: the server does not run Lua scripts \(ERR unknown command 'SCRIPT'\); orch writes every checkpoint as one server-side script" noscript.log
expect_eq "and nothing is written" "$(redis-cli -s "$WORK/noscript/s.sock" dbsize)" 0
kill "$(cat "$WORK/noscript/p.pid")" 2>/dev/null

# a server that could lose acknowledged writes: warned about once, and run
rcli config set appendfsync everysec >/dev/null
run_orch warn.log run slow.lua --db "$(rdb 12)" --set out=out/warn.jsonl
expect_eq "a server fsyncing every second still runs" "$RC" 0
expect_eq "with one warning" "$(grep -c 'warning' warn.log)" 1
expect_grep "saying what a crash could lose and what to set" "^orch: warning: redis://127.0.0.1:$REDIS_PORT/12: appendonly yes, appendfsync everysec: a crash of the server's machine can lose the last second of acknowledged checkpoints and journaled replies; set appendonly yes and appendfsync always for orch's guarantees" warn.log
run_orch strict.log run slow.lua --db "$(rdb 13)" --set out=out/strict.jsonl --require-durable
expect_eq "--require-durable refuses it: exit 2" "$RC" 2
expect_grep "saying why and what to set" "^orch: redis://127.0.0.1:$REDIS_PORT/13: not durable \(appendonly yes, appendfsync everysec: .*\); --require-durable refuses it: set appendonly yes and appendfsync always on the server" strict.log
expect_eq "and writes nothing" "$(rcli -n 13 dbsize)" 0
if [ -e out/strict.jsonl ]; then bad "the refused run wrote its output"; else ok "nor any output"; fi
run_orch warnj.log run slow.lua --db "$(rdb 12)" --set out=out/warnj.jsonl --fresh --log-json
expect_eq "with --log-json the warning is a JSON line of the log" \
  "$(grep 'appendfsync everysec' warnj.log | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["level"])')" warn
rcli config set appendonly no >/dev/null
run_orch warn2.log run slow.lua --db "$(rdb 12)" --set out=out/warn2.jsonl
expect_grep "no append-only file: everything since the last snapshot" "appendonly no, appendfsync everysec: no append-only file: a crash of the Redis server loses everything written since its last snapshot" warn2.log
run_orch warn3.log ls --db "$(rdb 12)"
if grep -q warning warn3.log; then bad "inspection warns too"; else ok "inspection (read-only) does not warn"; fi
rcli config set appendonly yes >/dev/null
rcli config set appendfsync always >/dev/null
# turning the AOF on rewrites it in the background: the crash below must find it whole
wait_until "rcli info persistence | grep -q 'aof_rewrite_in_progress:0' && rcli info persistence | grep -q 'aof_rewrite_scheduled:0'"

run_orch strict2.log run slow.lua --db "$(rdb 13)" --set out=out/strict.jsonl --require-durable
expect_eq "--require-durable runs on appendonly yes + appendfsync always" "$RC" 0
if grep -q warning strict2.log; then bad "a durable server is warned about"; else ok "without a warning"; fi

# ---- the server killed -9 and restarted mid-run: the run goes on ---------------
"$ORCH" run slow.lua --db "$(rdb 9)" --set out=out/bounce.jsonl --set sleep=0.02 >bounce.log 2>&1 &
pid=$!
wait_lines out/bounce.jsonl 600
kill_redis
restart_redis
wait "$pid"
expect_eq "a run through a server crash and restart exits 0" "$?" 0
expect_eq "with every row once" "$(ids out/bounce.jsonl)" "$expected"
bid=$(rcli -n 9 zrange orch:runs 0 -1)
expect_eq "and its store says completed" "$(rcli -n 9 hget "orch:run:$bid" status) $(rcli -n 9 hget "orch:run:$bid" rows_done)" "completed 3000"

# ---- kill -9 with an LLM stage: 6,000 rows, five kills -------------------------
cat >llm.lua <<LUA
local orch = require("orch")
local n, i = 6000, 0
return orch.workflow {
  name = "llm",
  input = function() i = i + 1; if i <= n then return { id = i, text = "item number " .. i } end end,
  output = orch.write.jsonl(orch.param("out", "out/llm.jsonl")),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$LLM_URL/v1", api_key = "test-key",
          concurrency = 50, timeout = 5, max_tokens = 16, prices = { ["gpt-4o-mini"] = { 1000, 1000 } } },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA
run_orch ref.log run llm.lua --db "$(rdb 10)" --set out=out/ref.jsonl
expect_eq "the uninterrupted LLM run exits 0" "$RC" 0
curl -s -X POST "$LLM_URL/admin/reset" >/dev/null
CRASH=$(rdb 11)
crash_done() {
  local r
  r=$(rcli -n 11 zrange orch:runs 0 -1 2>/dev/null)
  [ -n "$r" ] && [ "$(rcli -n 11 hget "orch:run:$r" status)" = completed ]
}
kill_repeatedly 5 30 crash.log crash_done 6 run llm.lua --db "$CRASH" -v
kills=$KILLED
if [ $kills -ge 5 ]; then ok "killed the LLM run $kills times"; else bad "only $kills kills before the run finished"; fi
run_orch final.log resume --all --db "$CRASH"
expect_eq "the last resume completes" "$RC" 0
expect_eq "a single run did all the work" "$(rcli -n 11 zcard orch:runs)" 1
if cmp -s out/ref.jsonl out/llm.jsonl; then ok "output is byte-identical to the uninterrupted run"; else
  bad "output differs: $(wc -l <out/ref.jsonl) vs $(wc -l <out/llm.jsonl) lines"; fi
dups=$(llm_stat duplicates)
if [ "$dups" -le $((50 * kills)) ]; then ok "$dups request(s) sent twice over $kills kills (<= concurrency 50 per kill)"; else
  bad "$dups requests sent twice over $kills kills"; fi
if [ -e .orch ]; then bad "a local store was made"; else ok "the data is in the server: no local store file"; fi
expect_eq "the journal holds one reply per row, in the server" "$(rcli -n 11 zcard orch:jrz) $(rcli -n 11 --scan --pattern 'orch:jr:*' | wc -l)" "6000 6000"
curl -s -X POST "$LLM_URL/admin/reset" >/dev/null
run_orch again.log run llm.lua --db "$CRASH" --set out=out/again.jsonl --fresh
expect_eq "a fresh rerun on the same store makes 0 calls: the journal answers" "$(llm_stat requests)" 0
if cmp -s out/ref.jsonl out/again.jsonl; then ok "and writes the same output"; else bad "the journal's answers differ"; fi
finish
