# The progress line: on a terminal it shows % and ETA whenever the total
# is known (a Lua array, the steps, a CSV or JSONL file by its bytes);
# when stderr is not a terminal, plain periodic lines (every
# $ORCH_PROGRESS_S, default 10 s) with the same figures and never a
# control character.
. tests/lib.sh
cd "$WORK"
cat >arr.lua <<'LUA'
local orch = require("orch")
local rows = {}
for i = 1, 300 do rows[i] = { id = i } end
return orch.workflow {
  name = "arr", input = rows, output = orch.write.jsonl("out/arr.jsonl"), key = "id", concurrency = 10,
  stages = { function(row, ctx) ctx:sleep(0.01); return row end },
}
LUA
cat >steps.lua <<'LUA'
local orch = require("orch")
local function nap(ctx) ctx:sleep(0.3); return true end
return orch.workflow {
  name = "steps",
  steps = { { name = "a", run = nap }, { name = "b", after = { "a" }, run = nap }, { name = "c", after = { "b" }, run = nap } },
}
LUA
python3 -c '
print("id,text")
for i in range(1, 1501): print("%d,row number %d" % (i, i))' >rows.csv
cat >csv.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "csv", input = orch.read.csv("rows.csv"), output = orch.write.jsonl("out/csv.jsonl"), key = "id",
  concurrency = 10, stages = { function(row, ctx) ctx:sleep(0.01); return row end },
}
LUA

# on a terminal (script gives the run a pty)
script -qec "$ORCH run arr.lua --db t.db" /dev/null >tty.out 2>&1
expect_grep "a Lua array: rows of the total, % (terminal)" $'\r\033\\[K  300/300 rows  100%' tty.out
script -qec "$ORCH run steps.lua --db t.db" /dev/null >tty2.out 2>&1
expect_grep "steps: of the total, % (terminal)" $'\r\033\\[K  3/3 steps  100%' tty2.out
script -qec "$ORCH run csv.lua --db t.db" /dev/null >tty3.out 2>&1
expect_grep "a CSV file: % and ETA by its bytes (terminal)" $'\r\033\\[K  [0-9,]+ rows +[0-9]+%  ETA [0-9]+m[0-9]{2}s' tty3.out

# in a pipe: plain lines, no control characters
ORCH_PROGRESS_S=0.2 "$ORCH" run csv.lua --db p.db --fresh 2>pipe.err | cat >/dev/null
expect_grep "a plain progress line in a pipe, with % and ETA" "^orch: progress: [0-9,]+ rows +[0-9]+%  ETA [0-9]+m[0-9]{2}s  [0-9,]+ rows/s  \\\$0.0000  0 failed$" pipe.err
if LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f]' pipe.err; then bad "a control character in the pipe"; else ok "no control character in the pipe"; fi
ORCH_PROGRESS_S=0.2 "$ORCH" run arr.lua --db p.db --fresh 2>pipe2.err | cat >/dev/null
expect_grep "a Lua array in a pipe: of the total and %" "^orch: progress: [0-9,]+/300 rows +[0-9]+%" pipe2.err
"$ORCH" run arr.lua --db p.db --fresh -q 2>quiet.err
if grep -q "progress:" quiet.err; then bad "-q still prints progress"; else ok "-q prints no progress lines"; fi
finish
