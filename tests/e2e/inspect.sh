# Inspection tells the truth and changes nothing: status, ls, history,
# checkpoints, export and stats never create a store and read one that
# cannot be written; status of an empty store and after a restore; export
# of a run whose output is gone or short fails; budget figures keep their
# digits; resume --all names the budget-paused runs it leaves; a changed
# input (even a same-size edit with the mtime put back) refuses to resume
# and shows the whole command to start over; a store written with the old
# input fingerprint still resumes.
. tests/lib.sh
cd "$WORK"
seq 1 500 | awk 'BEGIN{print "id,text"} {print $1 ",item " $1}' >rows.csv
cat >wf.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "spend",
  input = orch.read.csv(orch.param("input", "rows.csv", "the rows to label")),
  output = orch.write.jsonl(orch.param("out", "out/spend.jsonl", "where the labelled rows go")),
  key = "id",
  concurrency = 1,
  llm = { provider = "mock", model = "mock", latency_ms = 0 },
  budget = { max_usd = tonumber(orch.param("budget", "100", "dollars to spend at most")), warn_at = { 0.5 } },
  checkpoint = orch.policy.every_rows(100),
  stages = { orch.stage.prompt { template = "Label {{text}} as one of: x, y", into = "label" } },
}
LUA

# --- no store: every inspection command refuses and creates nothing
for cmd in "ls" "status" "stats" "history x" "checkpoints x" "export x"; do
  run_orch none.log $cmd --db typo/x.db
  expect_eq "$cmd of a missing store: exit 2" "$RC" 2
  expect_grep "$cmd names the missing store" "^orch: no state store at typo/x.db \(no run has used it; check --db or ORCH_DB\)$" none.log
done
if [ -e typo ]; then bad "inspection created typo/"; else ok "inspection created no directory"; fi
run_orch none.log status
expect_grep "the default store too" "no state store at .orch/state.db" none.log
if [ -e .orch ]; then bad "status created .orch/"; else ok "status created no .orch/"; fi

# --- resume, restore and gc change a store, but never create one
for cmd in "resume x" "resume --all" "restore x 1" "gc"; do
  run_orch none.log $cmd --db typo/x.db
  expect_eq "$cmd of a missing store: exit 2" "$RC" 2
  expect_grep "$cmd names the missing store" "^orch: no state store at typo/x.db" none.log
done
if [ -e typo ]; then bad "resume/restore/gc created typo/"; else ok "resume, restore and gc created no directory"; fi

# --- an empty store: status says so and exits 0
"$ORCH" lua /dev/stdin empty.db <<'LUA'
assert(require("orch.store").open(arg[1])):close()
LUA
run_orch empty.log status --db empty.db
expect_eq "status of an empty store: exit 0" "$RC" 0
expect_eq "and says there are no runs yet" "$(cat empty.log)" "no runs yet in empty.db"
run_orch emptyj.log status --db empty.db --json
expect_eq "status --json of an empty store: null" "$(cat emptyj.log)" "null"

# --- a budget of $0.001: the warning and the pause keep the digits
run_orch b1.log run wf.lua --db s.db --set budget=0.001
expect_eq "the budget pauses the run" "$RC" 3
expect_grep "the warning shows the budget as \$0.001, not \$0.00" "budget warning: \\\$0\.000[0-9]+ spent, 50% of \\\$0\.001$" b1.log
bid=$(sqlite3 s.db "select id from runs where status = 'paused'")
run_orch bst.log status "$bid" --db s.db
expect_grep "status of a budget-paused run says to give it a budget" "^resume +orch resume $bid --db s.db --budget USD$" bst.log

# --- resume --all leaves a budget-paused run, and says which and how
run_orch all.log resume --all --db s.db
expect_eq "resume --all with nothing else to do: exit 0" "$RC" 0
expect_grep "names the budget-paused run it leaves, with the command" "left alone: $bid \(spend, [0-9,]+ rows done\) is paused by its budget \(budget of .*\); give it a higher one: orch resume $bid --db s.db --budget USD" all.log
expect_grep "and why nothing ran" "no interrupted runs in s.db to resume without --budget \(1 paused by their budget\)" all.log

# --- a read-only store (immutable directory; or 0555 when not root) is read
sum_before=$(md5sum <s.db)
committed=$(sqlite3 -readonly s.db "select input_index from checkpoints where run_id = '$bid' order by seq desc limit 1")
frozen=
if chattr +i . 2>/dev/null; then frozen=chattr; elif [ "$(id -u)" != 0 ]; then chmod 0555 . && frozen=chmod; fi
if [ -n "$frozen" ]; then
  for cmd in "ls" "status $bid" "stats" "history $bid" "checkpoints $bid"; do
    (cd "$WORK" && "$ORCH" $cmd --db s.db) >"$ORCH_TMP/ro.$$.log" 2>&1
    rc=$?
    expect_eq "$cmd of a read-only store: exit 0" "$rc" 0
  done
  (cd "$WORK" && "$ORCH" status "$bid" --db s.db) >"$ORCH_TMP/ro.$$.log" 2>&1
  expect_grep "and shows the run" "^status +paused" "$ORCH_TMP/ro.$$.log"
  (cd "$WORK" && "$ORCH" export "$bid" --db s.db) >"$ORCH_TMP/ro.$$.out" 2>&1
  expect_eq "export of a read-only store: exit 0" "$?" 0
  expect_eq "export gives the committed rows" "$(wc -l <"$ORCH_TMP/ro.$$.out")" "$committed"
  rm -f "$ORCH_TMP/ro.$$.log" "$ORCH_TMP/ro.$$.out"
  if [ "$frozen" = chattr ]; then
    chattr -i .
    # the file alone read-only (its directory writable)
    chattr +i s.db
    run_orch rof.log ls --db s.db
    chattr -i s.db
    expect_eq "ls of a read-only store file: exit 0" "$RC" 0
    expect_grep "and lists the run" "^$bid +spend +paused" rof.log
  else
    chmod 0755 .
  fi
else
  ok "read-only directory checks skipped: cannot make a directory read-only here"
fi
expect_eq "inspection changed no byte of the store" "$(md5sum <s.db)" "$sum_before"

# --- restore: status shows the checkpoint's figures, not the later ones
run_orch done.log resume "$bid" --db s.db --budget 100
expect_eq "resumed with a budget, the run completes" "$RC" 0
run_orch rs.log restore "$bid" 2 --db s.db
expect_eq "restore: exit 0" "$RC" 0
run_orch st2.log status "$bid" --db s.db
expect_grep "status after restore counts the rows of checkpoint 2" "^rows +200 settled: 200 ok, 0 failed, 0 dropped$" st2.log
expect_grep "and its calls" "^llm +200 calls, " st2.log

# --- export of a run whose output is short or gone fails, writing nothing
run_orch fin.log resume "$bid" --db s.db --budget 100
cp out/spend.jsonl kept.jsonl
head -c 100 kept.jsonl >out/spend.jsonl
run_orch short.log export "$bid" --db s.db -o exported.jsonl
expect_eq "export of a short output: exit 1" "$RC" 1
expect_grep "says the output is shorter than committed" "cannot export run $bid: its output .*/out/spend.jsonl has 100 bytes, fewer than the [0-9,]+ its last checkpoint committed" short.log
rm out/spend.jsonl
run_orch gone.log export "$bid" --db s.db -o exported.jsonl
expect_eq "export of a deleted output: exit 1" "$RC" 1
expect_grep "says it is gone and how to redo it" "cannot export run $bid: its output .*/out/spend.jsonl is gone .*run the workflow again: orch run [^ ]*wf.lua --db s.db --set budget=0.001 --fresh$" gone.log
if [ -e exported.jsonl ]; then bad "export left an empty -o file"; else ok "no -o file is written"; fi
cp kept.jsonl out/spend.jsonl
run_orch back.log export "$bid" --db s.db -o exported.jsonl
expect_eq "with the output back, export works" "$RC" 0
expect_eq "and gives every row" "$(wc -l <exported.jsonl)" 500
run_orch nodir.log export "$bid" --db s.db -o no/such/dir/exported.jsonl
expect_eq "export to -o in a missing folder: exit 2" "$RC" 2
expect_grep "names the -o file it cannot write" "^orch: cannot write no/such/dir/exported.jsonl: No such file or directory$" nodir.log

# --- a same-size edit in the tail, mtime put back: refused, whole command shown
# (an input past 64 KiB, so the edit is beyond the head the old fingerprint hashed)
seq 1 2000 | awk 'BEGIN{print "id,text"} {printf "%d,item %d %s\n", $1, $1, "................................................"}' >big.csv
run_orch p.log run wf.lua --db c.db --set budget=0.0005 --set input=big.csv --set out=out/c.jsonl
expect_eq "a run paused by its budget" "$RC" 3
cid=$(sqlite3 c.db "select id from runs")
cp -p big.csv big.orig
sed -i 's/^2000,item 2000 /2000,item 200X /' big.csv
touch -r big.orig big.csv
if [ "$(stat -c %s big.csv)" = "$(stat -c %s big.orig)" ] && ! cmp -s big.csv big.orig; then
  ok "the edit changed a byte and kept the size"; else bad "the edit"; fi
run_orch ch.log resume "$cid" --db c.db --budget 100
expect_eq "a tail edit with the mtime put back refuses to resume" "$RC" 2
expect_grep "and shows the whole command to start over" "the input .*big.csv changed since run $cid began .*start over with orch run [^ ]*wf.lua --db c.db --set budget=0.0005 --set input=big.csv --set out=out/c.jsonl --fresh$" ch.log
run_orch ch2.log run wf.lua --db c.db --set budget=0.0005 --set input=big.csv --set out=out/c.jsonl
expect_eq "orch run of it refuses too" "$RC" 2
expect_grep "with the same command, as typed" "start over with orch run wf.lua --db c.db --set budget=0.0005 --set input=big.csv --set out=out/c.jsonl --fresh$" ch2.log
cp -p big.orig big.csv

# --- a run recorded with the old fingerprint (size, mtime, head hash)
# resumes while the input is unchanged, and is refused once it changes
old_fp=$("$ORCH" lua /dev/stdin big.csv <<'LUA'
print(require("orch.runs").fingerprint(arg[1], true))
LUA
)
case "$old_fp" in "size="*" mtime_ns="*" head="*) ok "the old format is computed";; *) bad "old format: $old_fp";; esac
sqlite3 c.db "update runs set input_fp = '$old_fp' where id = '$cid'"
touch big.csv
run_orch oldch.log resume "$cid" --db c.db --budget 100
expect_eq "an old-format run whose input's mtime changed is refused (as before)" "$RC" 2
touch -r big.orig big.csv
run_orch old.log resume "$cid" --db c.db --budget 100
expect_eq "an old-format run with its input unchanged resumes" "$RC" 0
expect_eq "every row once" "$(wc -l <out/c.jsonl)" 2000
finish
