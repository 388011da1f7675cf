# A checkpoint the policy asks for is taken at once and committed once
# the output's fsync that covers it is done, the fsync running beside the
# rows (orch.run.checkpoint). On a disk slower than the run (fsync of the
# output made 150 ms longer by tests/c/slow_fsync.c): the checkpoints are
# the policy's, row for row; none records output the disk did not have
# yet; one fsync covers several; the fsync's thread takes no signal;
# kill -9 with checkpoints waiting for their fsync still resumes to
# every row once; and an fsync that fails commits nothing it should have
# covered.
. tests/lib.sh
cd "$WORK"
LIB=${SLOW_FSYNC_LIB:-$ROOT/build/libslow_fsync.so}
[ -f "$LIB" ] || { bad "no $LIB: build the tests first"; finish; exit 1; }
cat >wf.lua <<'LUA'
local orch = require("orch")
local rows, n = tonumber(orch.param("rows", 2000)), 0
local pause = tonumber(orch.param("pause", 0))
local function log(line)
  local f = assert(io.open("events.log", "a"))
  f:write(line, "\n")
  f:close()
end
return orch.workflow {
  name = "fsync",
  input = function()
    n = n + 1
    if n <= rows then
      return { id = n }
    end
  end,
  output = orch.write.jsonl("out.jsonl"),
  key = "id",
  checkpoint = orch.policy.every_rows(100),
  stages = { function(row, ctx)
    if pause > 0 then
      ctx:sleep(pause)
    end
    return row
  end },
  observers = { { on_checkpoint = function(ev)
    log(string.format("ckpt %d %d %s", ev.output_bytes, ev.rows, ev.reason))
  end } },
}
LUA
SLOW="SLOW_FSYNC_SUFFIX=/out.jsonl SLOW_FSYNC_MS=150 SLOW_FSYNC_LOG=$WORK/events.log LD_PRELOAD=$LIB
  ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
# shellcheck disable=SC2086 # $SLOW: the words env sets
env $SLOW "$ORCH" run wf.lua --db s.db >run.log 2>&1
expect_eq "2,000 rows on a slow disk: exit 0" "$?" 0
expect_eq "every row once, in order" "$(ids out.jsonl)" "1..2000"
expect_eq "the policy's checkpoints, row for row, then the final one" \
  "$(awk '$1 == "ckpt" {printf "%s%s:%s", sep, $4, $3; sep = " "}' events.log)" \
  "$(for i in $(seq 100 100 2000); do printf 'rows:%d ' "$i"; done)final:2000"
# each checkpoint's output size is on disk before it commits: an fsync
# that began at that size or past it ended before the checkpoint's line
python3 - events.log >order.txt <<'PY'
import sys
synced, bad, syncs, ckpts = -1, [], 0, 0
for line in open(sys.argv[1]):
    word, size = line.split()[:2]
    if word == "sync":
        synced, syncs = max(synced, int(size)), syncs + 1
    else:
        ckpts += 1
        if int(size) > synced:
            bad.append("%s before any fsync reached it (synced %d)" % (line.strip(), synced))
print("\n".join(bad) or "ok")
print("fewer" if 0 < syncs < ckpts else "%d fsyncs for %d checkpoints" % (syncs, ckpts))
PY
expect_eq "no checkpoint records output before an fsync covering it ended" "$(sed -n 1p order.txt)" "ok"
expect_eq "one fsync covers several checkpoints" "$(sed -n 2p order.txt)" "fewer"

# kill -9 while checkpoints wait for their fsync, then resume on a
# normal disk: the resumed run starts at the last committed checkpoint,
# and every row reaches the output once
rm -f events.log out.jsonl
# shellcheck disable=SC2086
env $SLOW "$ORCH" run wf.lua --db k.db --set pause=0.02 >kill.log 2>&1 & # env execs orch: $! is its pid
pid=$!
# the fsync's thread blocks every signal, so SIGINT, SIGTERM and the
# scheduler's CPU tick (SIGVTALRM) reach the thread running Lua: the
# signals a thread other than the main one blocks, read while it fsyncs
fsync_blocks() {
  for t in /proc/"$pid"/task/*; do
    [ "${t##*/}" = "$pid" ] && continue
    awk '/^SigBlk:/ {print $2}' "$t/status" 2>/dev/null
  done | head -1
}
wait_until '[ -n "$(fsync_blocks)" ]'
blk=$(fsync_blocks)
expect_eq "the fsync's thread blocks SIGINT, SIGTERM and SIGVTALRM" \
  "$(python3 -c 'import sys; m = int(sys.argv[1] or "0", 16); print(all(m >> (s - 1) & 1 for s in (2, 15, 26)))' "$blk")" True
wait_until '[ "$(cat events.log 2>/dev/null | grep -c "^ckpt")" -ge 3 ]'
kill -9 "$pid"
wait "$pid" 2>/dev/null
last=$(awk '$1 == "ckpt" {r = $3} END {print r}' events.log)
run_orch resume.log run wf.lua --db k.db --set pause=0.02
expect_eq "resumed: exit 0" "$RC" 0
expect_grep "from the last committed checkpoint ($last rows)" "resuming run .* \($last rows done\)" resume.log
expect_eq "after kill -9 and resume, every row once, in order" "$(ids out.jsonl)" "1..2000"

# the output's fsyncs fail (EIO) after the first, rows still running:
# the run fails with the output's name and the error, no checkpoint
# commits past what a successful fsync covered (the final checkpoint's
# own fsync comes before the queued ones commit), and a run on a good
# disk resumes from the last committed one and writes every row once
rm -f events.log out.jsonl
# shellcheck disable=SC2086
env $SLOW SLOW_FSYNC_FAIL_AFTER=1 "$ORCH" run wf.lua --db f.db --set pause=0.02 >fail.log 2>&1
expect_eq "an fsync failing: exit 1" "$?" 1
expect_grep "names the output and the error" "out.jsonl: Input/output error" fail.log
expect_eq "a background fsync failed" "$(awk '$1 == "fail" {n++} END {print (n >= 1) ? "yes" : "no"}' events.log)" yes
python3 - events.log >fail_order.txt <<'PY'
import sys
synced, bad = -1, []
for line in open(sys.argv[1]):
    word, size = line.split()[:2]
    if word == "sync":
        synced = max(synced, int(size))
    elif word == "ckpt" and int(size) > synced:
        bad.append("%s past what a successful fsync covered (%d)" % (line.strip(), synced))
print("\n".join(bad) or "ok")
PY
expect_eq "no checkpoint past a successful fsync" "$(cat fail_order.txt)" "ok"
last=$(awk '$1 == "ckpt" {r = $3} END {print r}' events.log)
run_orch again.log run wf.lua --db f.db --set pause=0.02
expect_eq "on a good disk: exit 0" "$RC" 0
expect_grep "resumed from the last committed checkpoint ($last rows)" "resuming run .* \($last rows done\)" again.log
expect_eq "every row once, in order" "$(ids out.jsonl)" "1..2000"
finish
