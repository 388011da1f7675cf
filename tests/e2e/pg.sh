# State on PostgreSQL: every CLI command works with --db postgres://...
# against a real server of the test's own (tests/pg_lib.sh); bad URLs and
# bad databases are refused with orch's message, the password masked, and
# nothing touched; a run with an LLM stage killed -9 several times and
# resumed on PostgreSQL writes output byte-identical to an uninterrupted
# run, the journal answering the requests sent again; a server restart
# mid-run is ridden out.
. tests/lib.sh
. tests/pg_lib.sh
start_pg
start_llm_server --latency-ms 20 --seed 3
# start_llm_server replaced the exit trap: stop both servers
trap 'stop_pg; kill ${LLM_PID:-} 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
cd "$WORK"
SOCK=$PG_DIR

# pg_url DB: the URL of another database on the test server
pg_url() { echo "postgres:///$1?host=$SOCK&user=orch"; }
pg_db() { "$PGBIN/psql" -qAt -h "$SOCK" -U orch -d "$1" -c "$2"; }

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

# ---- every command on PostgreSQL ------------------------------------------
run_orch run.log run slow.lua --db "$PG_URL"
expect_eq "run on PostgreSQL exits 0" "$RC" 0
expect_eq "every row once, in order" "$(ids out/slow.jsonl)" "$expected"
expect_eq "the schema is orch's, at version 5" "$(pg_sql "select app, version from orch_meta")" "orch|5"
id=$(pg_sql "select id from runs")
expect_eq "one run row, completed, 3,000 rows" "$(pg_sql "select status, rows_done from runs")" "completed|3000"
run_orch ls.log ls --db "$PG_URL"
expect_grep "ls lists it" "^$id +slow +completed +3,000" ls.log
run_orch st.log status "$id" --db "$PG_URL"
expect_grep "status shows it" "^status +completed" st.log
run_orch cp.log checkpoints "$id" --db "$PG_URL"
expect_grep "checkpoints lists them, checksums verified" "^7 +.* final +3,000 .* ok$" cp.log
run_orch hist.log history "$id" --db "$PG_URL"
expect_grep "history has the run's events" "completed +\{" hist.log
run_orch stats.log stats --db "$PG_URL"
expect_grep "stats counts the run" "^runs +1 total: 0 active, 0 paused, 0 failed, 1 completed" stats.log
expect_grep "stats measures the database" "^bytes +[1-9][0-9,]*$" stats.log
run_orch exp.log export "$id" --db "$PG_URL" -o exported.jsonl
expect_eq "export exits 0" "$RC" 0
if cmp -s exported.jsonl out/slow.jsonl; then ok "export equals the output"; else bad "export differs"; fi

# SIGINT pauses, resume completes
"$ORCH" run slow.lua --db "$PG_URL" --set out=out/paused.jsonl --set sleep=0.01 >int.log 2>&1 &
pid=$!
wait_lines out/paused.jsonl 500
kill -INT "$pid"
wait "$pid"
expect_eq "SIGINT pauses with exit 3" "$?" 3
pid2=$(grep -o 'orch resume slow-[0-9a-f]*' int.log | head -1 | cut -d' ' -f3)
expect_eq "the store says paused" "$(pg_sql "select status from runs where id = '$pid2'")" paused
run_orch res.log resume "$pid2" --db "$PG_URL"
expect_eq "resume completes" "$RC" 0
expect_eq "every row once after pause + resume" "$(ids out/paused.jsonl)" "$expected"
expect_eq "ctx.state is stored with the checkpoints" "$(pg_sql "select value from state where run_id = '$pid2' and key = 'seen'")" 3000

# a corrupt checkpoint is found and skipped
pg_sql "update checkpoints set checksum = '00000000000000000000000000000000' where run_id = '$pid2' and seq = (select max(seq) from checkpoints where run_id = '$pid2')"
run_orch cpc.log checkpoints "$pid2" --db "$PG_URL"
expect_grep "checkpoints shows the corrupt one" "CORRUPT" cpc.log

# restore to checkpoint 2 and resume from it
run_orch rs.log restore "$pid2" 2 --db "$PG_URL"
expect_eq "restore exits 0" "$RC" 0
expect_eq "later checkpoints are gone" "$(pg_sql "select max(seq) from checkpoints where run_id = '$pid2'")" 2
run_orch rs2.log resume "$pid2" --db "$PG_URL"
expect_eq "the restored run resumes" "$RC" 0
expect_grep "from checkpoint 2" "resuming run $pid2 from checkpoint 2 " rs2.log
expect_eq "and its output is whole again" "$(ids out/paused.jsonl)" "$expected"

# gc removes finished runs with everything they had
run_orch gc.log gc --older-than 0m --vacuum --db "$PG_URL"
expect_eq "gc exits 0" "$RC" 0
expect_grep "gc says what it removed" "gc: removed 2 run\(s\) \(2 completed\)" gc.log
expect_eq "no run, checkpoint, result or state left" \
  "$(pg_sql "select (select count(*) from runs) + (select count(*) from checkpoints) + (select count(*) from results) + (select count(*) from state)")" 0

ORCH_DB=$PG_URL run_orch env.log stats
expect_grep "ORCH_DB names the store too" "^store +postgres:///orch\?host=.*&user=orch$" env.log
expect_grep "and reads it" "^runs +0 total" env.log
pg_sql "CREATE DATABASE empty"
run_orch empty.log ls --db "$(pg_url empty)"
expect_eq "inspecting a database orch never used: exit 2" "$RC" 2
expect_grep "says so, and creates nothing" "no state store at postgres:///empty\?.*\(the database has no orch tables; no run has used it\)" empty.log
expect_eq "no table was made" "$("$PGBIN/psql" -qAt -h "$SOCK" -U orch -d empty -c "select count(*) from pg_tables where schemaname = 'public'")" 0

# two processes creating the schema at once: one migration, both run
pg_sql "CREATE DATABASE twin"
"$ORCH" run slow.lua --db "$(pg_url twin)" --set out=out/t1.jsonl >t1.log 2>&1 &
p1=$!
"$ORCH" run slow.lua --db "$(pg_url twin)" --set input=rows.csv --set out=out/t2.jsonl >t2.log 2>&1 &
p2=$!
wait "$p1"; r1=$?
wait "$p2"; r2=$?
expect_eq "two orch processes on a fresh database both finish" "$r1 $r2" "0 0"
expect_eq "the schema was made once" "$(pg_db twin "select version from orch_meta")" 5

# the server restarts mid-run: the run connects again and goes on
pg_sql "CREATE DATABASE bounce"
"$ORCH" run slow.lua --db "$(pg_url bounce)" --set out=out/bounce.jsonl --set sleep=0.02 >bounce.log 2>&1 &
pid=$!
wait_lines out/bounce.jsonl 600
(cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$SOCK/data" -m fast -w restart -l "$SOCK/server.log" \
  -o "-k $SOCK -c listen_addresses='' -c max_connections=50" >/dev/null)
wait "$pid"
expect_eq "a run through a server restart exits 0" "$?" 0
expect_eq "with every row once" "$(ids out/bounce.jsonl)" "$expected"
expect_eq "and its store says completed" "$(pg_db bounce "select status, rows_done from runs")" "completed|3000"

# ---- bad input ----------------------------------------------------------
for url in "mongodb://localhost:27017/0" "mysql://bob:hunter2@db/orch" "postgress://bob:hunter2@/orch"; do
  scheme=${url%%://*}
  run_orch bad.log run slow.lua --db "$url"
  expect_eq "$scheme:// is refused: exit 2" "$RC" 2
  expect_grep "$scheme:// names the scheme and the accepted ones" "no state store backend for $scheme:// URLs \(orch takes postgres://, postgresql://, redis:// or unix:// URLs, a file path or :memory:\)" bad.log
  if grep -q hunter2 bad.log; then bad "$scheme://: the password is shown"; else ok "$scheme://: the password is masked"; fi
done
if [ -z "$(ls -A | grep -E '^(mongodb|mysql|postgress):')" ]; then ok "no file was made of a URL"; else bad "a URL became a file: $(ls)"; fi

run_orch unreach.log run slow.lua --db "postgres://orch:hunter2@/orch?host=$WORK/nowhere"
expect_eq "an unreachable server: exit 2" "$RC" 2
expect_grep "says so, naming the masked URL" "postgres://orch:\*\*\*@/orch\?host=$WORK/nowhere: cannot connect to PostgreSQL: the server is not reachable \(.*\); check the host and port and that the server is running" unreach.log
run_orch nodb.log ls --db "$(pg_url nodb)"
expect_eq "a missing database: exit 2" "$RC" 2
expect_grep "says which and what to do" "cannot connect to PostgreSQL: database \"nodb\" does not exist; create it \(createdb\) or fix the URL" nodb.log

# passwords: the server asks every user but orch for one
(cd / && runuser -u postgres -- sh -c "printf 'local all orch trust\nlocal all all scram-sha-256\n' >'$SOCK/data/pg_hba.conf'")
(cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$SOCK/data" reload >/dev/null)
pg_sql "CREATE ROLE sam LOGIN PASSWORD 'open-sesame-42'"
pg_sql "CREATE DATABASE sams OWNER sam"
run_orch pw.log ls --db "postgres://sam:wrong-pw-17@/sams?host=$SOCK"
expect_eq "a wrong password: exit 2" "$RC" 2
expect_grep "says the credentials were refused, password masked" "postgres://sam:\*\*\*@/sams\?host=.*: cannot connect to PostgreSQL: the server refused the user or password \(password authentication failed for user \"sam\"\); check the URL's user, PGPASSWORD or ~/.pgpass" pw.log
PGPASSWORD=wrong-pw-17 run_orch pw2.log ls --db "postgres://sam@/sams?host=$SOCK"
expect_grep "PGPASSWORD refused the same way" "the server refused the user or password" pw2.log
run_orch pw3.log ls --db "postgres:///sams?host=$SOCK&user=sam&password=wrong-pw-17"
expect_grep "a password= parameter is masked too" "password=\*\*\*: cannot connect" pw3.log
good="postgres://sam:open-sesame-42@/sams?host=$SOCK"
run_orch pw4.log run slow.lua --db "$good" --set out=out/sam.jsonl -v
expect_eq "the right password runs" "$RC" 0
"$ORCH" status --db "$good" >pw5.log 2>&1
"$ORCH" stats --db "$good" >>pw5.log 2>&1
"$ORCH" ls --db "$good" --json >>pw5.log 2>&1
"$ORCH" history "$(pg_db sams "select id from runs")" --db "$good" >>pw5.log 2>&1
if grep -l -e open-sesame-42 -e wrong-pw-17 ./*.log >leaks.txt; then bad "a password is in $(cat leaks.txt)"; else ok "no password in any message"; fi
"$PGBIN/pg_dump" -h "$SOCK" -U orch sams >sams.sql
if grep -q -e open-sesame-42 sams.sql; then bad "the password is in the store"; else ok "no password in the store"; fi

# a database whose tables are named like orch's but are another program's
pg_sql "CREATE DATABASE other"
pg_db other "CREATE TABLE runs (id int, owner text); INSERT INTO runs VALUES (1, 'them')"
run_orch other.log run slow.lua --db "$(pg_url other)"
expect_eq "another program's tables: exit 2" "$RC" 2
expect_grep "refused, naming them" "the database has tables named like orch's \(runs\) that are not orch's; nothing was changed" other.log
expect_eq "their table is untouched, nothing added" "$(pg_db other "select count(*) from pg_tables where schemaname = 'public'"):$(pg_db other "select owner from runs")" "1:them"

# a schema newer than this orch
pg_sql "CREATE DATABASE newer"
run_orch n1.log run slow.lua --db "$(pg_url newer)" --set out=out/newer.jsonl
expect_eq "a run makes the schema" "$(pg_db newer "select version from orch_meta")" 5
run_orch n2.log ls --db "$(pg_url other)"
pg_db newer "UPDATE orch_meta SET version = 99"
run_orch newer.log run slow.lua --db "$(pg_url newer)"
expect_eq "a newer schema: exit 2" "$RC" 2
expect_grep "names both versions" "created by a newer orch \(schema 99, this orch knows up to 5\)" newer.log
expect_eq "and is left as it was" "$(pg_db newer "select version from orch_meta")" 99

# ---- kill -9 with an LLM stage: 6,000 rows, five kills -------------------
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
pg_sql "CREATE DATABASE ref"
pg_sql "CREATE DATABASE crash"
run_orch ref.log run llm.lua --db "$(pg_url ref)" --set out=out/ref.jsonl
expect_eq "the uninterrupted LLM run exits 0" "$RC" 0
curl -s -X POST "$LLM_URL/admin/reset" >/dev/null
CRASH=$(pg_url crash)
crash_done() { [ "$(pg_db crash "select count(*) from runs where status = 'completed'" 2>/dev/null || echo 0)" != 0 ]; }
kill_repeatedly 5 30 crash.log crash_done 6 run llm.lua --db "$CRASH" -v
kills=$KILLED
if [ $kills -ge 3 ]; then ok "killed the LLM run $kills times"; else bad "only $kills kills before the run finished"; fi
run_orch final.log resume --all --db "$CRASH"
expect_eq "the last resume completes" "$RC" 0
expect_eq "a single run did all the work" "$(pg_db crash "select count(*) from runs")" 1
if cmp -s out/ref.jsonl out/llm.jsonl; then ok "output is byte-identical to the uninterrupted run"; else
  bad "output differs: $(wc -l <out/ref.jsonl) vs $(wc -l <out/llm.jsonl) lines"; fi
dups=$(llm_stat duplicates)
if [ "$dups" -le $((50 * kills)) ]; then ok "$dups request(s) sent twice over $kills kills (<= concurrency 50 per kill)"; else
  bad "$dups requests sent twice over $kills kills"; fi
curl -s -X POST "$LLM_URL/admin/reset" >/dev/null
run_orch again.log run llm.lua --db "$CRASH" --set out=out/again.jsonl --fresh
expect_eq "a fresh rerun on the same store makes 0 calls: the journal answers" "$(llm_stat requests)" 0
if cmp -s out/ref.jsonl out/again.jsonl; then ok "and writes the same output"; else bad "the journal's answers differ"; fi
expect_eq "the journal holds one reply per row" "$(pg_db crash "select count(*) from llm_journal")" 6000
finish
