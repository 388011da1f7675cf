# An output file belongs to one unfinished run at a time: a second run
# writing it (another identity, a live or a paused owner, or another store)
# is refused with the owner named; --fresh takes a paused owner's file over;
# a resume whose output's committed bytes were rewritten is refused and
# leaves the file as it is.
. tests/lib.sh
cd "$WORK"
seq 1 400 | awk 'BEGIN { print "id,text" } { print $1 ",row " $1 }' >in.csv
cat >wf.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "owned",
  input = orch.read.csv("in.csv"),
  output = orch.write.jsonl("out/shared.jsonl"),
  key = "id",
  concurrency = 4,
  checkpoint = orch.policy.every_rows(10),
  stages = { function(row, ctx) ctx:sleep(orch.param("sleep", 0.02)); row.tag = orch.param("tag", "a"); return row end },
}
LUA

# run A starts (slow enough to outlast the two refused runs on a loaded
# machine: 400 rows of 0.1 s, 4 at a time); while it runs, run B (another
# --set, so another run) is refused
"$ORCH" run wf.lua --set tag=a --set sleep=0.1 >a.log 2>&1 &
A=$!
wait_lines out/shared.jsonl 30 || bad "run A made no progress"
run_orch b.log run wf.lua --set tag=b
expect_eq "a second run of a live owner's output exits 2" "$RC" 2
expect_grep "it names the owner and that it is running" "out/shared.jsonl belongs to run owned-[0-9a-f]+, which is running in process $A" b.log
# another store knows nothing of run A: the file lock refuses it
run_orch c.log run wf.lua --set tag=c --db other.db
expect_eq "a run from another store is refused too" "$RC" 2
expect_grep "the lock names the file" "out/shared.jsonl: another orch process is writing this file" c.log
kill -INT $A
wait $A
expect_eq "run A pauses on SIGINT" "$?" 3
RUN_A=$(grep -Eo 'orch resume owned-[0-9a-f]+' a.log | head -1 | cut -d' ' -f3)

# A is paused: B is still refused, and told how to go on
run_orch b2.log run wf.lua --set tag=b
expect_eq "a paused owner's output is refused" "$RC" 2
expect_grep "and how to go on" "belongs to run $RUN_A, which is paused.*orch resume $RUN_A.*--fresh" b2.log

# --fresh takes the file over; A is superseded
run_orch b3.log run wf.lua --set tag=b --set sleep=0 --fresh
expect_eq "--fresh takes the output over" "$RC" 0
expect_grep "A gave up its output" "run $RUN_A \(paused\) gave up its output" b3.log
expect_eq "the output is B's alone" "$(grep -c '"tag":"b"' out/shared.jsonl)" 400
run_orch s.log status "$RUN_A"
expect_grep "A is failed, superseded" "superseded by run .*--fresh took over its output" s.log

# a paused run whose output's committed bytes were rewritten (same size)
rm out/shared.jsonl
"$ORCH" run wf.lua --set tag=d >d.log 2>&1 &
D=$!
wait_lines out/shared.jsonl 30 || bad "run D made no progress"
kill -INT $D
wait $D
expect_eq "run D pauses" "$?" 3
sed -i '1s/row 1/ROW 1/' out/shared.jsonl
cp out/shared.jsonl changed.jsonl
run_orch d2.log run wf.lua --set tag=d
expect_eq "resuming over a rewritten output exits 2" "$RC" 2
expect_grep "it says why and how to start over" "its first [0-9]+ bytes are not the ones the last checkpoint recorded; it is not the file run owned-[0-9a-f]+ last checkpointed .*orch run [^ ]*wf.lua --set tag=d --fresh" d2.log
if cmp -s changed.jsonl out/shared.jsonl; then ok "the rewritten file is left as it was"; else bad "the file was changed"; fi
sed -i '1s/ROW 1/row 1/' out/shared.jsonl
run_orch d3.log run wf.lua --set tag=d
expect_eq "with the bytes put back, the run resumes and completes" "$RC" 0
expect_eq "each row once" "$(ids out/shared.jsonl)" "1..400"
finish
