# orch worker's bad inputs, on a SQLite store shared by processes of one
# machine: SIGINT on one worker gives its lease back and the other worker
# completes the run, its output equal to a single-process run; a workflow
# that writes ctx.state fails with why; a steps workflow and a CSV output
# are refused at load; bad --lease-timeout values are refused.
. tests/lib.sh
cd "$WORK"
python3 -c 'import json
with open("items.jsonl", "w") as f:
    for i in range(1, 2001):
        f.write(json.dumps({"id": i, "text": "item %d" % i}) + "\n")'
cat >slow.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "slow",
  input = orch.read.jsonl("items.jsonl"),
  output = orch.write.jsonl(orch.param("out", "out/slow.jsonl")),
  key = "id",
  concurrency = 5,
  stages = { function(row, ctx) ctx:sleep(0.01); row.twice = row.id * 2; return row end },
}
LUA
run_orch ref.log run slow.lua --db ref.db --set out=out/ref.jsonl --concurrency 50
expect_eq "the single-process run exits 0" "$RC" 0

# ---- SIGINT on one worker: it gives its lease back, the other goes on
"$ORCH" worker slow.lua --db w.db --lease-rows 100 -v >w1.log 2>&1 &
p1=$!
wait_until '[ "$(grep -c "lease [0-9]*: rows" w1.log)" -ge 2 ]'
"$ORCH" worker slow.lua --db w.db --lease-rows 100 >w2.log 2>&1 &
p2=$!
kill -INT "$p1"
wait "$p1"
expect_eq "the interrupted worker exits 3" "$?" 3
expect_grep "and says it gave its lease back" "stopped by SIGINT: lease [0-9]+ given back; the other workers go on" w1.log
wait "$p2"
expect_eq "the other worker completes the run: exit 0" "$?" 0
expect_eq "one run, completed, 2,000 rows" "$(sqlite3 w.db "select count(*), min(status), min(rows_done) from runs")" "1|completed|2000"
if cmp -s out/ref.jsonl out/slow.jsonl; then ok "the output equals the single-process run's"; else
  bad "the output differs: $(wc -l <out/slow.jsonl) lines"; fi
expect_eq "no lease was claimed from a live worker: each claimed once, the given-back one twice" \
  "$(sqlite3 w.db "select max(claims) from leases")" 2

# ---- ctx.state is not shared between workers: a workflow that writes it fails with why
cat >state.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "stateful",
  input = orch.read.jsonl("items.jsonl"),
  output = orch.write.jsonl("out/state.jsonl"),
  stages = { function(row, ctx) ctx.state.n = (ctx.state.n or 0) + 1; return row end },
}
LUA
run_orch state.log worker state.lua --db s.db --lease-rows 100
expect_eq "a worker of a workflow that writes ctx.state exits 1" "$RC" 1
expect_grep "and says why" "ctx.state is not shared between workers: a workflow run by orch worker must not write ctx.state" state.log
expect_eq "the run is failed with that reason" "$(sqlite3 s.db "select status, error like '%ctx.state is not shared%' from runs")" "failed|1"

# ---- refused at load
cat >steps.lua <<'LUA'
local orch = require("orch")
return orch.workflow { name = "dag", steps = { { name = "a", run = function() return 1 end } } }
LUA
run_orch steps.log worker steps.lua --db x.db
expect_eq "a steps workflow: exit 2" "$RC" 2
expect_grep "says to use orch run" "steps.lua: orch worker runs row workflows \(input = ...\); a steps workflow runs with orch run" steps.log
sed 's/orch.write.jsonl(orch.param("out", "out\/slow.jsonl"))/orch.write.csv("out\/slow.csv")/' slow.lua >csv.lua
run_orch csv.log worker csv.lua --db x.db
expect_eq "a CSV output: exit 2" "$RC" 2
expect_grep "says to write JSONL" "orch worker writes JSONL output; this workflow writes csv" csv.log
run_orch timeout.log worker slow.lua --db x.db --lease-timeout 0
expect_eq "--lease-timeout 0: exit 2" "$RC" 2
expect_grep "says what it must be" "--lease-timeout must be a number of seconds above 0, got '0'" timeout.log
finish
