# A row that allocates without end fails on its own: the Lua heap has a limit
# (max_memory, --max-memory), the row's error names it, the memory it held
# is collected and the run goes on.
. tests/lib.sh
cd "$WORK"
cat >mem.lua <<'LUA'
local orch = require("orch")
local i = 0
return orch.workflow {
  name = "memory-hog",
  input = function() i = i + 1; if i <= 10 then return { id = i } end end,
  output = orch.write.jsonl("out/mem.jsonl"),
  errors = orch.write.jsonl("out/mem-errors.jsonl"),
  key = "id",
  max_memory = orch.param("mb", 64),
  stages = { function(row)
    if row.id == 3 then
      local s = "x"
      while true do s = s .. s .. row.id end -- grows until refused
    end
    row.big = #string.rep("y", 4 * 1024 * 1024) -- the others still get memory
    return row
  end },
}
LUA
run_orch run.log run mem.lua --db s.db
expect_eq "a row out of memory: the run exits 0" "$RC" 0
expect_grep "9 ok, 1 failed" "10 rows .*: 9 ok, 1 failed" run.log
expect_eq "the others are written" "$(id_list out/mem.jsonl)" "1 2 4 5 6 7 8 9 10"
expect_grep "the errors sink names the limit" '^\{"row":3,"key":3,"status":"failed","error":"out of memory \(limit 64 MB\)"' out/mem-errors.jsonl
expect_grep "so does the summary" "row 3 \(key 3\): out of memory \(limit 64 MB\)" run.log
expect_grep "the run's record says so" '"rows_failed": ?1' <(cd "$WORK" && "$ORCH" status --json --db s.db)

# --max-memory beats the workflow's max_memory
run_orch run2.log run mem.lua --db s2.db --max-memory 48
expect_eq "--max-memory: exit 0" "$RC" 0
expect_grep "--max-memory names its own limit" "row 3 \(key 3\): out of memory \(limit 48 MB\)" run2.log
run_orch run3.log run mem.lua --db s3.db --max-memory 0
expect_eq "--max-memory 0 is a usage error" "$RC" 2
expect_grep "and says what it expects" "--max-memory expects a number of MB from 1 up, got '0'" run3.log
run_orch run4.log run mem.lua --db s4.db --set mb=-1
expect_eq "max_memory = -1 is a workflow error" "$RC" 2
expect_grep "named as such" "'max_memory' must be a positive number of MB, got -1" run4.log
[ "$FAIL" -eq 0 ] || cat run.log out/mem-errors.jsonl
finish
