# Checkpoint policies: every_rows, a plain function, on_events (ctx:emit),
# adaptive and any decide when a run checkpoints; a policy that is not one
# is refused at load with its line; a policy that raises fails the run with
# its message; with any policy a killed run resumes to every row once.
. tests/lib.sh
cd "$WORK"
seq 1 1000 | awk 'BEGIN{print "id,n"} {print $1 "," $1}' >rows.csv
cat >pol.lua <<'LUA'
local orch = require("orch")
local which = orch.param("policy", "rows")
local policies = {
  rows = orch.policy.every_rows(100),
  fn = function(s) return s.rows_since >= 250 end,
  events = orch.policy.on_events { "chapter" },
  adaptive = orch.policy.adaptive { min_interval = 0.2, max_interval = 0.3 },
  any = orch.policy.any { orch.policy.every_rows(200), orch.policy.on_events { "chapter" } },
  raises = function(s) if s.rows_done >= 500 then error("policy gave up") end return false end,
  bounded = orch.policy.any { orch.policy.every_seconds(3600), orch.policy.every_rows(400) },
}
if which == "bounded" then -- counts the times the driver asks it
  local p, asked = policies.bounded, 0
  local decide = p.decide
  p.decide = function(s)
    asked = asked + 1
    local f = io.open("asked.txt", "w"); f:write(asked); f:close()
    return decide(s)
  end
end
return orch.workflow {
  name = "pol-" .. which,
  input = orch.read.csv("rows.csv"),
  output = orch.write.jsonl(orch.param("out", "out/" .. which .. ".jsonl")),
  key = "id",
  checkpoint = policies[which],
  stages = { function(row, ctx)
    ctx:sleep(orch.param("sleep", 0))
    if tonumber(row.id) % 300 == 0 then ctx:emit("chapter", { at = row.id }) end
    if which == "asked" and row.id == "500" then ctx:checkpoint("halfway") end
    return row
  end },
}
LUA
# reasons and row counts of a run's checkpoints: "rows:100 rows:200 ... final:1000"
cps() { sqlite3 .orch/state.db "select group_concat(reason || ':' || input_index, ' ') from
  (select c.reason, c.input_index from checkpoints c join runs r on r.id = c.run_id
   where r.name = 'pol-$1' order by c.seq)"; }

run_orch rows.log run pol.lua --set policy=rows
expect_eq "every_rows(100): exit 0" "$RC" 0
expect_eq "a checkpoint every 100 rows, then the final one" "$(cps rows)" \
  "rows:100 rows:200 rows:300 rows:400 rows:500 rows:600 rows:700 rows:800 rows:900 rows:1000 final:1000"

# a built-in policy is asked once its bounds are reached, not after every
# row: here at 400 and 800 rows and on the three events, where a row at a
# time would ask it over a thousand times; it decides the same
run_orch bounded.log run pol.lua --set policy=bounded
expect_eq "any{every_seconds(3600), every_rows(400)}: exit 0" "$RC" 0
expect_eq "any{every_seconds, every_rows}: checkpoints at 400 and 800 rows" "$(cps bounded)" \
  "any:400 any:800 final:1000"
if [ "$(cat asked.txt)" -le 10 ]; then ok "a bounded policy asked $(cat asked.txt) times over 1,000 rows"
else bad "a bounded policy asked $(cat asked.txt) times over 1,000 rows"; fi

run_orch fn.log run pol.lua --set policy=fn
expect_eq "a plain function decides" "$(cps fn)" "policy:250 policy:500 policy:750 policy:1000 final:1000"

run_orch events.log run pol.lua --set policy=events
expect_eq "on_events: exit 0" "$RC" 0
got=$(cps events)
if echo "$got" | grep -Eq '^event chapter:[0-9]+ event chapter:[0-9]+ event chapter:[0-9]+ final:1000$'; then
  ok "a checkpoint per ctx:emit(\"chapter\") and none otherwise ($got)"; else bad "on_events checkpoints: $got"; fi

run_orch any.log run pol.lua --set policy=any
got=$(cps any)
if echo "$got" | grep -q "any:200 " && echo "$got" | grep -q "event chapter:" && echo "$got" | grep -q "final:1000$"; then
  ok "any{} of rows and events: both decide ($got)"; else bad "any checkpoints: $got"; fi

run_orch adaptive.log run pol.lua --set policy=adaptive --set sleep=0.02
expect_eq "adaptive: exit 0" "$RC" 0
# at least one in a run of over a second, and never two closer than min_interval
gaps=$(sqlite3 .orch/state.db "select group_concat(created_ms, ' ') from (select c.created_ms from checkpoints c
  join runs r on r.id = c.run_id where r.name = 'pol-adaptive' and c.reason = 'adaptive' order by c.seq)" |
  python3 -c 'import sys; t=[int(x) for x in sys.stdin.read().split()]; d=[b-a for a,b in zip(t,t[1:])]; print(len(t), min(d) if d else 200)')
if [ "${gaps% *}" -ge 1 ] && [ "${gaps#* }" -ge 190 ]; then ok "adaptive checkpoints, at least min_interval apart (count, min gap ms: $gaps)"; else bad "adaptive: $gaps"; fi

run_orch asked.log run pol.lua --set policy=asked
got=$(cps asked)
# the request lands at the driver's next turn (the rows settled by then),
# and the default every 500 rows counts from it
if echo "$got" | grep -Eq '^halfway:(4[0-9][0-9]|500) rows:(9[0-9][0-9]|1000) final:1000$'; then
  ok "ctx:checkpoint(\"halfway\") writes one, named ($got)"; else bad "ctx:checkpoint: $got"; fi

cat >crit.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "pol-crit",
  input = orch.read.csv("rows.csv"),
  output = orch.write.jsonl("out/crit.jsonl"),
  key = "id",
  concurrency = 50,
  stages = { { name = "charge", critical = true, run = function(row, ctx) ctx:sleep(0.005) return row end } },
}
LUA
run_orch crit.log run crit.lua
expect_eq "a critical stage: exit 0" "$RC" 0
n=$(sqlite3 .orch/state.db "select count(*) from checkpoints c join runs r on r.id = c.run_id where r.name = 'pol-crit' and c.reason = 'before charge'")
if [ "$n" -ge 10 ] && [ "$n" -le 1000 ]; then ok "checkpoints before a critical stage, the rows of a turn sharing one: $n"; else bad "$n 'before charge' checkpoints"; fi
expect_eq "and every row once" "$(ids out/crit.jsonl)" "1..1000"

run_orch raises.log run pol.lua --set policy=raises
expect_eq "a policy that raises fails the run: exit 1" "$RC" 1
expect_grep "with the policy's message and line" "the checkpoint policy failed: .*pol.lua:[0-9]+: policy gave up" raises.log

cat >badpol.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "badpol",
  input = orch.read.csv("rows.csv"),
  output = orch.write.jsonl("out/bad.jsonl"),
  checkpoint = 500,
}
LUA
run_orch bad.log run badpol.lua
expect_eq "a checkpoint that is not a policy: exit 2" "$RC" 2
expect_grep "names the line and what is expected" "badpol.lua:6: orch.workflow: 'checkpoint' must be orch.policy.every_rows\(n\), every_seconds\(s\), on_events\{...\}, adaptive\{...\}, any\{...\} or a function\(s\) -> boolean, got number" bad.log

# kill -9 under a custom policy, then resume: every row once
"$ORCH" run pol.lua --set policy=fn --set sleep=0.01 --set out=out/killed.jsonl >/dev/null 2>&1 &
pid=$!
wait_until '[ "$(checkpoints .orch/state.db)" -ge 1 ]'
kill -9 "$pid"; wait "$pid" 2>/dev/null
run_orch resume.log run pol.lua --set policy=fn --set sleep=0.01 --set out=out/killed.jsonl
expect_eq "resume after kill -9: exit 0" "$RC" 0
expect_grep "it resumed" "resuming run pol-fn-" resume.log
expect_eq "every row once" "$(ids out/killed.jsonl)" "1..1000"
finish
