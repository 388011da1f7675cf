# The command line: orch help and every command's options come from one
# table (what help lists is accepted, what it does not list is refused);
# orch params / run WORKFLOW --help list the parameters a workflow reads;
# --set keys it never reads are warned about; --since refuses dates that
# do not exist; under --log-json every line orch writes on stderr, the
# CLI's own messages too, is one JSON object.
. tests/lib.sh
cd "$WORK"
seq 1 20 | awk 'BEGIN{print "id,n"} {print $1 "," $1}' >rows.csv
cat >wf.lua <<'LUA'
local orch = require("orch")
local field = orch.param("field", "double", "the name of the new column")
return orch.workflow {
  name = "params",
  input = orch.read.csv(orch.param("input", "rows.csv", "the CSV to read")),
  output = orch.write.jsonl(orch.param("out", "out/p.jsonl")),
  key = "id",
  stages = { function(row) row[field] = row.n * orch.param("factor", 2) return row end },
}
LUA
cat >none.lua <<'LUA'
local orch = require("orch")
return orch.workflow { name = "none", input = { { id = 1 } }, stages = { function(r) return r end } }
LUA

# --- help: every command, from the table; per command, its options.
# The commands are read from help itself (tests/spec/cli_spec.lua holds
# main.c's table and orch.cli's handlers to each other).
run_orch help.log help
expect_eq "orch help: exit 0" "$RC" 0
COMMANDS=$(sed -n 's/^  \([a-z]\{1,\}\)\( .*\)\{0,1\}$/\1/p' help.log | tr '\n' ' ')
expect_eq "orch help lists the commands" "$(echo "$COMMANDS" | wc -w)" "$(sed -n '/^static const struct command commands/,/^};/p' "$ROOT/core/main.c" | grep -c '^    {"')"
expect_grep "run shows --dry-run" "^ +\[--fresh\] \[--no-cache\] \[--dry-run\]" help.log
expect_grep "resume shows --no-cache, --metrics and --log-json" "\[--no-cache\] \[--max-memory MB\] \[--metrics FILE\]" help.log
expect_grep "estimate takes --db, as run --dry-run does" "^  estimate WORKFLOW.lua .*\[--db PATH\]" help.log
expect_grep "status without an id" "^  status \[RUN_ID\] \[--db PATH\] \[--json\]$" help.log
run_orch h2.log help resume
expect_grep "orch help resume lists --log-json with its help" "^  --log-json +write the log as one JSON object a line$" h2.log
run_orch h3.log resume --help
expect_eq "orch resume --help is orch help resume" "$(cat h3.log)" "$(cat h2.log)"
run_orch h4.log run --help
expect_grep "orch run --help without a workflow: run's own options" "^usage: orch run WORKFLOW.lua \[options\]" h4.log
run_orch nohelp.log help nosuch
expect_eq "orch help of no command: exit 2" "$RC" 2

# --- orch params / orch run WORKFLOW --help
run_orch p.log params wf.lua
expect_eq "orch params: exit 0" "$RC" 0
expect_grep "names the workflow" "^wf.lua \(workflow params\) reads these parameters; set them with --set NAME=VALUE$" p.log
expect_grep "the header" "^NAME +DEFAULT +DESCRIPTION$" p.log
expect_grep "a parameter with its default and description" "^field +\"double\" +the name of the new column$" p.log
expect_grep "one without a description" "^out +\"out/p.jsonl\" +-$" p.log
if grep -q "^factor" p.log; then bad "a parameter read only while rows run is listed"; else ok "only parameters read at load are listed"; fi
run_orch p2.log run wf.lua --help
expect_eq "orch run WORKFLOW --help is orch params" "$(cat p2.log)" "$(cat p.log)"
if [ -e out ] || [ -e .orch ]; then bad "params ran the workflow or made a store"; else ok "params runs and stores nothing"; fi
run_orch pj.log params wf.lua --json --set field=triple
expect_eq "orch params --json" "$(cat pj.log)" '[{"default":"double","description":"the name of the new column","name":"field","value":"triple"},{"default":"rows.csv","description":"the CSV to read","name":"input"},{"default":"out/p.jsonl","name":"out"}]'
run_orch pn.log params none.lua
expect_eq "a workflow without parameters" "$(cat pn.log)" "none.lua (workflow none) reads no parameters"

# every option orch help CMD lists is accepted by CMD's parser; one it
# does not list is refused, naming the command
for c in $COMMANDS; do
  case $c in lua | version | help) continue ;; esac # options: --help only
  "$ORCH" help "$c" | sed -n 's/^  \(-[a-z]\), \(--[a-z-]*\).*/\1 \2/p; s/^  \(--\{0,1\}[a-z-]*\)\( [A-Z]\|  \).*/\1/p' >opts.txt
  for o in $(cat opts.txt); do
    "$ORCH" "$c" "$o" >opt.log 2>&1
    if grep -q "unknown option" opt.log; then bad "$c refuses $o, which its help lists"; fi
  done
  if [ -s opts.txt ]; then ok "$c accepts each of the $(wc -w <opts.txt) options its help lists"; else
    bad "$c: no option found in orch help $c"; fi
  run_orch unk.log "$c" --nosuch
  expect_eq "$c --nosuch: exit 2" "$RC" 2
  expect_grep "$c names itself" "^orch: $c: unknown option '--nosuch'" unk.log
done
run_orch j.log version --json
expect_eq "--json where it is not listed is refused" "$RC" 2

# --- --set keys the workflow never reads
run_orch w.log run wf.lua --set colour=red --set feld=x --set factor=3
expect_eq "an unread --set key does not stop the run" "$RC" 0
expect_grep "warns, naming what the workflow reads" "^orch: warning: --set colour=red: the workflow reads no parameter 'colour' \(it reads: field, input, out\)$" w.log
expect_grep "with a did-you-mean" "^orch: warning: --set feld=x: the workflow reads no parameter 'feld' \(it reads: field, input, out\); did you mean --set field=x\?$" w.log
run_orch wn.log params none.lua --set x=1
expect_grep "a workflow that reads none" "the workflow reads no parameter 'x' \(it reads: none\)$" wn.log
run_orch e.log estimate wf.lua --set colour=red --db never.db
expect_eq "estimate takes --db: exit 0" "$RC" 0
expect_grep "estimate warns too" "warning: --set colour=red" e.log
if [ -e never.db ]; then bad "estimate created the --db store"; else ok "estimate stores nothing"; fi
cat >bad.lua <<'LUA'
local orch = require("orch")
orch.param("x", 1, 42)
return orch.workflow { name = "bad", input = { { id = 1 } }, stages = {} }
LUA
run_orch bad.log params bad.lua
expect_eq "a description that is not a string: exit 2" "$RC" 2
expect_grep "names the argument and the line" "bad.lua:2: orch.param: argument 3 must be a string, got number" bad.log

# --- ls --since / --until: only dates that exist
for t in 2026-13-45 2026-02-30 2026-11-25T24:00 2026-11-25T10:61 yesterday; do
  run_orch t.log ls --since "$t"
  expect_eq "--since $t: exit 2" "$RC" 2
  expect_grep "--since $t is named" "^orch: --since: '$t' is not a date or time" t.log
done
run_orch t.log ls --until 2028-02-29
expect_eq "a leap day is a date" "$RC" 0
run_orch t.log ls --since 2026-11-25T10:00:00
expect_eq "a full time is one" "$RC" 0

# --- --log-json: the CLI's own messages are JSON lines too
# json_lines NAME FILE: every line of FILE is one JSON object with ts_ms,
# level and msg; prints "level|run_id|msg" a line into FILE.txt
json_lines() {
  if python3 -c 'import json,sys
out = open(sys.argv[1] + ".txt", "w")
for line in open(sys.argv[1]):
    o = json.loads(line)
    assert isinstance(o["ts_ms"], int) and o["level"] in ("error", "warn", "info", "debug"), line
    assert list(o)[:2] == ["ts_ms", "level"] and list(o)[-1] == "msg", line
    out.write("%s|%s|%s\n" % (o["level"], o.get("run_id", ""), o["msg"]))' "$2" 2>"$2.err"; then
    ok "$1: every line is a JSON object"
  else
    bad "$1: not all JSON lines:"; sed 's/^/     | /' "$2" "$2.err" | head -20
  fi
}
cat >lj.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "logjson",
  input = orch.read.csv("lj.csv"),
  output = orch.write.jsonl("out/lj.jsonl"),
  key = "id",
  checkpoint = orch.policy.every_rows(5),
  stages = { function(row) return row end },
}
LUA
cp rows.csv lj.csv
(cd "$WORK" && "$ORCH" run lj.lua --db lj.db --log-json) >lj.out 2>lj.log
expect_eq "a --log-json run: exit 0" "$?" 0
ljid=$(sqlite3 lj.db "select id from runs")
"$ORCH" restore "$ljid" 2 --db lj.db >/dev/null 2>&1
(cd "$WORK" && "$ORCH" resume "$ljid" --db lj.db --log-json) >/dev/null 2>ljr.log
expect_eq "resumed from checkpoint 2: exit 0" "$?" 0
json_lines "resume --log-json" ljr.log
expect_grep "the resuming line, with its run" "^info\|$ljid\|resuming run $ljid from checkpoint 2 \(10 rows done\)$" ljr.log.txt
"$ORCH" restore "$ljid" 2 --db lj.db >/dev/null 2>&1
echo "21,21" >>lj.csv
(cd "$WORK" && "$ORCH" resume "$ljid" --db lj.db --log-json) >/dev/null 2>ljc.log
expect_eq "a changed input is refused: exit 2" "$?" 2
json_lines "a refusal under --log-json" ljc.log
expect_grep "the refusal, as an error" "^error\|\|the input [^ ]*/lj.csv changed since run $ljid began \(size=[0-9]+ .*\); resuming would mix two inputs: start over with orch run lj.lua --db lj.db --fresh$" ljc.log.txt
(cd "$WORK" && "$ORCH" resume nosuch --db lj.db --log-json) >/dev/null 2>ljn.log
json_lines "no such run, under --log-json" ljn.log
expect_grep "says so as an error" "^error\|\|no run 'nosuch' in lj.db$" ljn.log.txt
(cd "$WORK" && "$ORCH" run wf.lua --dry-run --log-json --set colour=red) >/dev/null 2>lje.log
json_lines "run --dry-run --log-json: the estimate and the warning" lje.log
expect_grep "the warning, as a warning" "^warn\|\|warning: --set colour=red: the workflow reads no parameter 'colour'" lje.log.txt
expect_grep "the estimate, as info" "^info\|\|estimate for params: 20 rows, 0 LLM calls$" lje.log.txt

# --- a numeric option's value that is not of its kind: what it expects,
# the value as given, exit 2, and no store opened
i=0
while IFS='|' read -r opt val expects; do
  i=$((i + 1))
  run_orch num$i.log run none.lua --db num.db "$opt" "$val"
  expect_eq "$opt '$val': exit 2" "$RC" 2
  expect_eq "$opt '$val': says what it expects" "$(cat num$i.log)" \
    "orch: $opt expects $expects, got '$val'
run 'orch help' for usage"
done <<'EOF'
--concurrency|0|a number from 1 to 100000
--concurrency|100001|a number from 1 to 100000
--concurrency|1e3|a number from 1 to 100000
--concurrency|99999999999999999999|a number from 1 to 100000
--concurrency||a number from 1 to 100000
--budget|0|a positive number of dollars
--budget|-1|a positive number of dollars
--budget|5x|a positive number of dollars
--max-memory|0|a number of MB from 1 up
--max-memory|1073741825|a number of MB from 1 up
--max-memory|12MB|a number of MB from 1 up
EOF
if [ -e num.db ]; then bad "a refused option opens no store"; else ok "a refused option opens no store"; fi
finish
