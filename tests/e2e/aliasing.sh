# No file orch writes may alias its input or another file it writes: an
# output that is the input (same path, ./ prefix, a symlink, a hard link,
# through a directory not made yet), errors or an observer's file on the
# output, two observers on one file, a sink on the workflow file, and the
# state store (--db, ORCH_DB) on a sink or the input are refused at load
# (exit 2, the workflow's line named), before any row runs and before any
# file is truncated.
. tests/lib.sh
cd "$WORK"
mkdir -p data
INPUT='{"id":1,"text":"a"}\n{"id":2,"text":"b"}\n'
printf "$INPUT" >data/a.jsonl
SUM=$(sha1sum data/a.jsonl)

# wf FILE OUTPUT [EXTRA-LINE]: a workflow reading data/a.jsonl, writing OUTPUT
# (line 5), with EXTRA-LINE as line 6
wf() {
  cat >"$1" <<LUA
local orch = require("orch")
return orch.workflow {
  name = "alias",
  input = orch.read.jsonl("data/a.jsonl"),
  output = orch.write.jsonl("$2"),
  ${3:-}
  stages = { function(r) io.open("ran", "w"):close(); return r end },
}
LUA
}

# refused NAME FILE PATTERN [ARGS...]: exit 2, PATTERN in the log, no stage
# ran, the input is untouched
refused() {
  local name=$1 file=$2 pattern=$3
  shift 3
  rm -f ran
  printf "$INPUT" >data/a.jsonl # in place (the links stay links), so one case cannot spoil the next
  run_orch "$file.log" run "$file" "$@"
  expect_eq "$name: exit 2" "$RC" 2
  expect_grep "$name: says which files and where" "$pattern" "$file.log"
  if [ -e ran ]; then bad "$name: a stage ran"; else ok "$name: no stage ran"; fi
  expect_eq "$name: the input is untouched" "$(sha1sum data/a.jsonl)" "$SUM"
}

wf same.lua data/a.jsonl
refused "output = input" same.lua \
  "^orch: same.lua:5: output data/a.jsonl is the same file as input data/a.jsonl \(refusing to overwrite the input\)$"

wf dot.lua ./data/a.jsonl
refused "output = ./input" dot.lua \
  "^orch: dot.lua:5: output ./data/a.jsonl is the same file as input data/a.jsonl \(refusing to overwrite the input\)$"

ln -s data/a.jsonl link.jsonl
wf symlink.lua link.jsonl
refused "output = a symlink to the input" symlink.lua \
  "^orch: symlink.lua:5: output link.jsonl is the same file as input data/a.jsonl \(refusing to overwrite the input\)$"

ln data/a.jsonl hard.jsonl
wf hardlink.lua hard.jsonl
refused "output = a hard link to the input" hardlink.lua \
  "^orch: hardlink.lua:5: output hard.jsonl is the same file as input data/a.jsonl \(refusing to overwrite the input\)$"

wf updown.lua not-yet/../data/a.jsonl
refused "output = the input through a directory not made yet" updown.lua \
  "^orch: updown.lua:5: output not-yet/../data/a.jsonl is the same file as input data/a.jsonl \(refusing to overwrite the input\)$"
if [ -e not-yet ]; then bad "the output's directory was made"; else ok "no directory was made"; fi

wf errors.lua out/a.jsonl 'errors = orch.write.jsonl("out/./a.jsonl"),'
refused "errors = output" errors.lua \
  "^orch: errors.lua:6: errors out/./a.jsonl is the same file as output out/a.jsonl \(each needs a file of its own\)$"
if [ -e out ]; then bad "errors = output: a file was made"; else ok "errors = output: nothing was made"; fi

wf errin.lua out/a.jsonl 'errors = orch.write.jsonl("data/../data/a.jsonl"),'
refused "errors = input" errin.lua \
  "^orch: errin.lua:6: errors data/../data/a.jsonl is the same file as input data/a.jsonl \(refusing to overwrite the input\)$"

wf self.lua self.lua
refused "output = the workflow file" self.lua \
  "^orch: self.lua:5: output self.lua is the same file as the workflow self.lua \(refusing to overwrite the workflow\)$"
expect_eq "output = the workflow file: the workflow is intact" "$(head -1 self.lua)" 'local orch = require("orch")'

wf observer.lua out/a.jsonl 'observers = { orch.observe.jsonl("out/a.jsonl") },'
refused "an observer's file = output" observer.lua \
  "^orch: observer.lua:6: observers\[1\] \(orch.observe.jsonl\) out/a.jsonl is the same file as output out/a.jsonl \(each needs a file of its own\)$"

wf observer2.lua out/a.jsonl 'observers = { orch.observe.jsonl("ev.jsonl"), orch.observe.jsonl("./ev.jsonl", { rows = true }) },'
refused "two observers on one file" observer2.lua \
  "^orch: observer2.lua:6: observers\[2\] \(orch.observe.jsonl\) ./ev.jsonl is the same file as observers\[1\] \(orch.observe.jsonl\) ev.jsonl \(each needs a file of its own\)$"

wf observer3.lua out/a.jsonl 'observers = { orch.observe.jsonl("data/a.jsonl") },'
refused "an observer's file = input" observer3.lua \
  "^orch: observer3.lua:6: observers\[1\] \(orch.observe.jsonl\) data/a.jsonl is the same file as input data/a.jsonl \(refusing to append to the input\)$"

wf db.lua out/a.jsonl
refused "--db = output" db.lua \
  "^orch: db.lua:5: output out/a.jsonl is the same file as the state store out/a.jsonl \(--db; each needs a file of its own\)$" \
  --db out/a.jsonl
if [ -e out ]; then bad "--db = output: a file was made"; else ok "--db = output: nothing was made"; fi
refused "--db = ./output" db.lua \
  "^orch: db.lua:5: output out/a.jsonl is the same file as the state store ./out/a.jsonl \(--db; each needs a file of its own\)$" \
  --db ./out/a.jsonl
refused "--db = input" db.lua \
  "^orch: db.lua:4: input data/a.jsonl is the same file as the state store data/a.jsonl \(--db; refusing to overwrite the input\)$" \
  --db data/a.jsonl
# ORCH_DB is the same store by another name
rm -f ran
(cd "$WORK" && ORCH_DB=link.jsonl "$ORCH" run db.lua) >envdb.log 2>&1
expect_eq "ORCH_DB = the input (a symlink): exit 2" "$?" 2
expect_grep "ORCH_DB = the input: says so" \
  "^orch: db.lua:4: input data/a.jsonl is the same file as the state store link.jsonl \(--db; refusing to overwrite the input\)$" envdb.log
expect_eq "ORCH_DB = the input: untouched" "$(sha1sum data/a.jsonl)" "$SUM"

# An empty input is not a database yet: SQLite would happily make it one.
: >data/empty.jsonl
sed 's#data/a.jsonl#data/empty.jsonl#' db.lua >emptydb.lua
run_orch emptydb.log run emptydb.lua --db data/empty.jsonl
expect_eq "--db = an empty input: exit 2" "$RC" 2
expect_eq "--db = an empty input: still empty" "$(wc -c <data/empty.jsonl)" 0

# Distinct files still run, and a dry run (its own scratch files, store in
# memory) is not refused for the real --db.
wf fine.lua out/b.jsonl 'errors = orch.write.jsonl("out/b-errors.jsonl"), observers = { orch.observe.jsonl("out/events.jsonl") },'
run_orch fine.log run fine.lua --db out/state.db
expect_eq "distinct files: exit 0" "$RC" 0
expect_eq "distinct files: the output has both rows" "$(wc -l <out/b.jsonl)" 2
expect_eq "distinct files: the input is untouched" "$(sha1sum data/a.jsonl)" "$SUM"

# A resumed run is checked again: the run dies, then its workflow is changed
# to write over the store it is resumed from.
cat >dies.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "dies",
  input = orch.read.jsonl("data/a.jsonl"),
  output = orch.write.jsonl("out/dies.jsonl"),
  stages = { function(r) os.execute("kill -9 " .. require("orch.sys").pid()) end },
}
LUA
"$ORCH" run dies.lua --db state2.db >dies.log 2>&1
expect_eq "the run dies in its first row" "$?" 137
sed -i 's#out/dies.jsonl#state2.db#' dies.lua
run_orch resume.log resume --all --db state2.db
expect_eq "resume of a workflow that now writes over the store: exit 2" "$RC" 2
expect_grep "resume: says so" \
  "dies.lua:5: output state2.db is the same file as the state store state2.db \(--db; each needs a file of its own\)$" resume.log
expect_eq "resume: the store is intact, the run still to resume" \
  "$(sqlite3 state2.db "select status from runs where name = 'dies'")" "running"
finish
