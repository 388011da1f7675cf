# What a row costs the engine (lua/orch/run/outcome.lua batch_runner,
# one_runner): its stages run on three frames of the engine (in a batch:
# the batch body, one xpcall for the batch, the row loop; in a task of its
# own: the row's body, xpcall, apply), so a row that waits keeps a short
# stack; a stage that declares no context parameter gets no
# context made for its row; a row that raises mid-batch fails alone, with
# its traceback, and the rows after it run on in the same task; a row
# that cannot be written fails with the write's message.
. tests/lib.sh
cd "$WORK"
seq 1 100 | awk 'BEGIN{print "id,text"} {print $1 ",item " $1}' >rows.csv

# contexts made so far (orch.context.new counted), and the stage's depth:
# the Lua frames from the stage down to its task's first function
cat >count.lua <<'LUA'
local context = require("orch.context")
local made, new = 0, context.new
context.new = function(...)
  made = made + 1
  return new(...)
end
local function depth()
  local d = 1
  while debug.getinfo(d + 2, "S") do
    d = d + 1
  end
  return d
end
-- the coroutine stack slots below the stage: each frame under it, its
-- function's slot and its locals and temporaries up to the call
local function slots()
  local total, level = 0, 3
  while debug.getinfo(level, "S") do
    local n = 0
    while debug.getlocal(level, n + 1) do
      n = n + 1
    end
    total, level = total + n + 1, level + 1
  end
  return total
end
return { made = function() return made end, depth = depth, slots = slots }
LUA

cat >plain.lua <<'LUA'
local orch = require("orch")
local count = dofile("count.lua")
return orch.workflow {
  name = "plain",
  input = orch.read.csv("rows.csv"),
  output = orch.write.jsonl("out/plain.jsonl"),
  key = "id",
  stages = { function(row)
    row.made, row.depth, row.slots = count.made(), count.depth(), count.slots()
    if row.id == "40" then error("row 40 is bad") end
    if row.id == "60" then row.bad = function() end end
    return row
  end },
}
LUA
run_orch plain.log run -v plain.lua --concurrency 16
expect_eq "plain: exit 0" "$RC" 0
expect_eq "plain: no context made for a stage function(row)" \
  "$(python3 -c 'import json; print(sorted({json.loads(l)["made"] for l in open("out/plain.jsonl")}))')" "[0]"
# in a batch task: the stage, the row loop, xpcall, the batch body: 4
# frames (process, xpcall, apply and the batch body made 5); in a row's
# own task (the first turn's 16, a row that waits): the stage, apply,
# xpcall, the row's body (apply, xpcall, process and run_one made 5).
expect_eq "plain: the stage runs 4 frames deep" \
  "$(python3 -c 'import json; print(sorted({json.loads(l)["depth"] for l in open("out/plain.jsonl")}))')" "[4]"
# a row that waits keeps what lies below its stage: 26 slots for a task of
# its own and 33 in a batch before, 19 and 25 now
expect_eq "plain: at most 25 stack slots below a stage" \
  "$(python3 -c 'import json; print(max(json.loads(l)["slots"] for l in open("out/plain.jsonl")))')" 25
expect_eq "plain: 19 below a stage in a row's own task (the first turn's rows)" \
  "$(python3 -c 'import json; print(max(r["slots"] for r in map(json.loads, open("out/plain.jsonl")) if int(r["id"]) <= 16))')" 19
expect_eq "plain: 98 rows, in order, 40 and 60 missing" \
  "$(python3 -c 'import json; print([int(json.loads(l)["id"]) for l in open("out/plain.jsonl")] == [i for i in range(1, 101) if i not in (40, 60)])')" True
expect_grep "plain: the failed row names its stage's line" "row 40 \(key 40\) failed: plain.lua:10: row 40 is bad" plain.log
expect_grep "plain: and its traceback names the stage" "plain.lua:10: in field 'fn'" plain.log
expect_grep "plain: a row that cannot be written names the write" "row 60 \(key 60\) failed: cannot write the row: " plain.log
expect_eq "plain: 98 ok, 2 failed" "$(sqlite3 .orch/state.db "select rows_ok || ' ' || rows_failed from runs")" "98 2"

cat >withctx.lua <<'LUA'
local orch = require("orch")
local count = dofile("count.lua")
return orch.workflow {
  name = "withctx",
  input = orch.read.csv("rows.csv"),
  output = orch.write.jsonl("out/withctx.jsonl"),
  key = "id",
  stages = {
    function(row, ctx)
      row.made, row.row, row.key = count.made(), ctx.row, ctx.key
      return row
    end,
    function(row, ...)
      row.stage = (...).stage
      return row
    end,
  },
}
LUA
run_orch withctx.log run withctx.lua --concurrency 16
expect_eq "withctx: exit 0" "$RC" 0
expect_eq "withctx: a stage function(row, ctx) gets its row's context, one made a row" \
  "$(python3 -c 'import json; print(all(r["made"] == r["row"] == int(r["id"]) and r["key"] == r["id"] for r in map(json.loads, open("out/withctx.jsonl"))))')" True
expect_eq "withctx: a vararg stage gets it too, named by its place" \
  "$(python3 -c 'import json; print(sorted({json.loads(l)["stage"] for l in open("out/withctx.jsonl")}))')" "['stage 2']"
finish
