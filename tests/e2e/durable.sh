# Durable runs: SIGINT pauses (exit 3) and resume completes; a second
# `orch run` of a live run is refused; a changed input refuses to resume;
# resume --all picks up every interrupted run; a corrupt checkpoint falls
# back to the previous one, and restore rolls a run back to one; the
# inspection commands show what happened; a row stuck in a Lua loop fails
# alone, and SIGINT stops it; bad state DBs are refused without being
# touched.
. tests/lib.sh
cd "$WORK"
seq 1 3000 | awk 'BEGIN{print "id,n"} {print $1 "," $1*3}' >rows.csv
cat >slow.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "slow",
  input = orch.read.csv(orch.param("input", "rows.csv")),
  output = orch.write.jsonl(orch.param("out", "out/slow.jsonl")),
  key = "id",
  concurrency = 20,
  stages = { function(row, ctx) ctx:sleep(orch.param("sleep", 0.01)); row.double = row.n * 2; return row end },
}
LUA
expected=1..3000

# SIGINT: stop admitting, finish in-flight rows, checkpoint, exit 3, resume
"$ORCH" run slow.lua >int.log 2>&1 &
pid=$!
wait_lines out/slow.jsonl 500
kill -INT "$pid"
wait "$pid"
expect_eq "SIGINT pauses with exit 3" "$?" 3
expect_grep "says how to resume" "paused after [0-9,]+ rows \(SIGINT\); resume with: orch resume slow-[0-9a-f]{8}" int.log
id=$(grep -o 'orch resume slow-[0-9a-f]*' int.log | head -1 | cut -d' ' -f3)
run_orch st.log status "$id"
expect_grep "status shows paused" "^status +paused" st.log
partial=$(wc -l <out/slow.jsonl)
if [ "$partial" -gt 0 ] && [ "$partial" -lt 3000 ]; then ok "paused with $partial rows written"; else bad "paused with $partial rows"; fi
run_orch res.log resume "$id"
expect_eq "resume completes" "$RC" 0
expect_grep "resume says where it starts" "resuming run $id from checkpoint [0-9]+ \([0-9,]+ rows done\)" res.log
expect_eq "every row once, in order, after pause + resume" "$(ids out/slow.jsonl)" "$expected"
run_orch again.log resume "$id"
expect_eq "resuming a completed run is a no-op" "$RC" 0
expect_grep "and says so" "already completed" again.log

# A second `orch run` of a live run is refused (exit 2)
"$ORCH" run slow.lua --set out=out/live.jsonl --set sleep=0.02 >live.log 2>&1 &
pid=$!
wait_lines out/live.jsonl 1
run_orch second.log run slow.lua --set out=out/live.jsonl --set sleep=0.02
expect_eq "a second run of a live run exits 2" "$RC" 2
expect_grep "and names the owner" "is in progress in process $pid on" second.log
kill -9 "$pid"; wait "$pid" 2>/dev/null
# the owner is dead now: the same command takes the run over
run_orch takeover.log run slow.lua --set out=out/live.jsonl --set sleep=0.02
expect_eq "a dead owner's run is taken over" "$RC" 0
expect_grep "takeover resumes" "resuming run slow-" takeover.log
expect_eq "every row once after the takeover" "$(ids out/live.jsonl)" "$expected"

# The input changed since the run began: refuse, say how to start fresh
cp rows.csv rows2.csv
"$ORCH" run slow.lua --set input=rows2.csv --set out=out/two.jsonl >/dev/null 2>&1 &
pid=$!
wait_lines out/two.jsonl 1
kill -9 "$pid"; wait "$pid" 2>/dev/null
echo "3001,1" >>rows2.csv
run_orch changed.log run slow.lua --set input=rows2.csv --set out=out/two.jsonl
expect_eq "a changed input refuses to resume" "$RC" 2
expect_grep "says what changed and the whole command to start over" "the input .*rows2.csv changed since run slow-[0-9a-f]+ began.*start over with orch run slow.lua --set input=rows2.csv --set out=out/two.jsonl --fresh$" changed.log
run_orch fresh.log run slow.lua --set input=rows2.csv --set out=out/two.jsonl --fresh
expect_eq "--fresh starts over" "$RC" 0
expect_eq "with every row" "$(wc -l <out/two.jsonl)" 3001
run_orch sup.log ls --status failed
expect_grep "the replaced run is marked failed, not left to resume" "slow-[0-9a-f]+ +slow +failed" sup.log

# resume --all picks up every interrupted run
for n in a b; do
  "$ORCH" run slow.lua --set out=out/all-$n.jsonl --set sleep=0.02 >/dev/null 2>&1 &
  pid=$!
  wait_lines out/all-$n.jsonl 1
  kill -9 "$pid"; wait "$pid" 2>/dev/null
done
run_orch all.log resume --all
expect_eq "resume --all exits 0" "$RC" 0
expect_grep "resumes each" "resuming 2/2" all.log
expect_eq "first interrupted run completed" "$(ids out/all-a.jsonl)" "$expected"
expect_eq "second interrupted run completed" "$(ids out/all-b.jsonl)" "$expected"
run_orch none.log resume --all
expect_grep "nothing left" "no interrupted runs" none.log

# A corrupt checkpoint is detected and the run falls back to the previous one
"$ORCH" run slow.lua --set out=out/corrupt.jsonl --set sleep=0.01 >/dev/null 2>&1 &
pid=$!
# the output is flushed just before each checkpoint commits: wait for the
# commits themselves, not for lines
wait_until '[ "$(checkpoints .orch/state.db "r.name = '"'slow'"'")" -ge 2 ]'
kill -9 "$pid"; wait "$pid" 2>/dev/null
cid=$("$ORCH" ls --status running --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
ncp=$(sqlite3 .orch/state.db "select count(*) from checkpoints where run_id = '$cid'")
if [ "$ncp" -ge 2 ]; then ok "$ncp checkpoints before the corruption"; else bad "only $ncp checkpoints"; fi
sqlite3 .orch/state.db "update checkpoints set checksum = '00000000000000000000000000000000' where run_id = '$cid' and seq = (select max(seq) from checkpoints where run_id = '$cid')"
run_orch cp.log checkpoints "$cid"
expect_grep "checkpoints lists the corrupt one" "CORRUPT" cp.log
run_orch fb.log resume "$cid"
expect_eq "resume after corruption completes" "$RC" 0
expect_grep "warns and falls back" "1 newer checkpoint\(s\) of run $cid failed their checksum; falling back to checkpoint" fb.log
expect_eq "still every row once after the fallback" "$(ids out/corrupt.jsonl)" "$expected"
run_orch hist.log history "$cid"
expect_grep "history records the fallback" "checkpoint_corrupt" hist.log
expect_grep "history records the resume" "resumed" hist.log

# restore: roll a completed run back to an early checkpoint and resume it
run_orch rs.log restore "$cid" 2
expect_eq "restore exits 0" "$RC" 0
expect_grep "restore says how to go on" "restored to checkpoint 2 \(1,000 rows done\); resume with: orch resume $cid" rs.log
expect_eq "later checkpoints are gone" "$(sqlite3 .orch/state.db "select max(seq) from checkpoints where run_id = '$cid'")" 2
run_orch rs2.log resume "$cid"
expect_eq "the restored run resumes" "$RC" 0
expect_grep "from the restored checkpoint" "resuming run $cid from checkpoint 2 \(1,000 rows done\)" rs2.log
expect_eq "and its output is whole again" "$(ids out/corrupt.jsonl)" "$expected"
run_orch rs3.log restore "$cid" 99
expect_eq "an unknown checkpoint exits 2" "$RC" 2
expect_grep "and says where to look" "has no checkpoint 99 \(see orch checkpoints $cid\)" rs3.log

# Inspection commands
run_orch ls.log ls --status completed
expect_grep "ls lists runs" "^ID +NAME +STATUS +ROWS" ls.log
expect_grep "ls shows completed runs" "slow-[0-9a-f]+ +slow +completed +3,000" ls.log
run_orch ls2.log ls --since 1d --name nope
expect_eq "ls with filters matching nothing prints only the header" "$(wc -l <ls2.log)" 1
run_orch ls3.log ls --since yesterday
expect_eq "a bad time is a usage error" "$RC" 2
run_orch stats.log stats
expect_grep "stats counts runs" "^runs +[0-9]+ total: 0 active, 0 paused, 1 failed, [0-9]+ completed" stats.log
expect_grep "stats has checkpoint ms" "^checkpoint +[0-9.]+ ms mean, [0-9.]+ ms max" stats.log
expect_grep "stats counts recoveries" "^recoveries +[1-9]" stats.log
run_orch exp.log export "$id" -o exported.jsonl
expect_eq "export exits 0" "$RC" 0
if cmp -s exported.jsonl out/slow.jsonl; then ok "export jsonl equals the output"; else bad "export differs"; fi
run_orch exp2.log export "$id" --format csv -o exported.csv
expect_eq "export csv has a header (the input's columns first) and every row" "$(head -1 exported.csv) $(wc -l <exported.csv)" "id,n,double 3001"

# Runaway Lua: a row stuck in a loop fails after burst_timeout, naming the
# loop's line, and the run goes on; SIGINT stops rows stuck computing, and
# those rows run again on resume
cat >spin.lua <<'LUA'
local orch = require("orch")
local function spinning(id)
  local f = io.open("spin.flag")
  if f == nil then
    return false
  end
  local which = f:read("l")
  f:close()
  return which == "all" and id >= 3 or tonumber(which) == id
end
return orch.workflow {
  name = "spin",
  input = orch.read.csv("rows.csv"),
  output = orch.write.jsonl(orch.param("out", "out/spin.jsonl")),
  key = "id",
  concurrency = 2,
  burst_timeout = tonumber(orch.param("burst", "60")),
  stages = { function(row)
    local id = tonumber(row.id)
    if id > 6 then
      return nil
    end
    if spinning(id) then
      io.open("spinning." .. id, "w"):close() -- the test waits for this
      local x = 0
      while true do x = x + 1 end
    end
    return row
  end },
}
LUA
echo 3 >spin.flag
run_orch spin1.log run spin.lua --set burst=0.5 --set out=out/spin1.jsonl
expect_eq "a row stuck in a loop does not stop the run: exit 0" "$RC" 0
expect_grep "it fails naming the loop's line" "row 3 \(key 3\): spin.lua:[0-9]+: ran [0-9.]+ s of Lua code without waiting \(an endless loop\?\); burst_timeout = 0.5 s" spin1.log
expect_eq "the other rows are written" "$(wc -l <out/spin1.jsonl)" 5
echo all >spin.flag
rm -f spinning.* # left by the run above
"$ORCH" run spin.lua --set out=out/spin2.jsonl >spin2.log 2>&1 &
pid=$!
wait_until "[ -e spinning.3 ]"
kill -INT "$pid"
wait "$pid"
expect_eq "SIGINT stops rows that never wait: exit 3" "$?" 3
expect_grep "says which rows and that they run again" "row 3( \(key [^)]*\))?: spin.lua:[0-9]+: interrupted \(SIGINT\) after [0-9.]+ s of Lua code that never waited; it runs again on resume" spin2.log
rm spin.flag
sid=$(grep -o 'orch resume spin-[0-9a-f]*' spin2.log | head -1 | cut -d' ' -f3)
run_orch spin3.log resume "$sid"
expect_eq "resume completes" "$RC" 0
expect_eq "the interrupted rows ran again: every row once" "$(ids out/spin2.jsonl)" "1..6"

# Bad state databases are refused, named, and left untouched
echo "not a database" >notdb.db
cp notdb.db notdb.orig
run_orch bad.log run slow.lua --db notdb.db
expect_eq "a file that is not SQLite exits 2" "$RC" 2
expect_grep "names the file" "notdb.db: not an orch state database" bad.log
if cmp -s notdb.db notdb.orig; then ok "the file is untouched"; else bad "the file was modified"; fi
sqlite3 newer.db "pragma application_id = 1330791240; create table runs(id text); pragma user_version = 99;"
run_orch newer.log run slow.lua --db newer.db
expect_eq "a newer schema exits 2" "$RC" 2
expect_grep "says it is newer" "newer.db: created by a newer orch" newer.log
mkdir -p ro && chmod 0555 ro
if [ "$(id -u)" != 0 ]; then
  run_orch ro.log run slow.lua --db ro/state.db
  expect_eq "a read-only directory exits 2" "$RC" 2
else
  echo "skip a read-only directory: root writes into it anyway"
fi
run_orch ro2.log run slow.lua --db rows.csv/state.db
expect_eq "an impossible DB path exits 2 before any work" "$RC" 2
expect_grep "names it" "rows.csv/state.db" ro2.log
ORCH_DB=:memory: run_orch mem.log run slow.lua --set sleep=0 --set out=out/mem.jsonl
expect_eq "ORCH_DB=:memory: runs without a file" "$RC" 0
finish
