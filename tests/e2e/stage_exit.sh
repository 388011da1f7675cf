# os.exit in a stage fails that row with a message that says what to do
# instead; it never ends the process silently with the run left "running".
# Outside a workflow (orch lua SCRIPT, which busted uses) os.exit works.
. tests/lib.sh
cd "$WORK"
cat >exit.lua <<'LUA'
local orch = require("orch")
local i = 0
return orch.workflow {
  name = "exits",
  input = function() i = i + 1; if i <= 4 then return { id = i } end end,
  output = orch.write.jsonl("out/exit.jsonl"),
  errors = orch.write.jsonl("out/exit-errors.jsonl"),
  key = "id",
  stages = { function(row)
    if row.id == 2 then
      os.exit(0)
    end
    return row
  end },
}
LUA
run_orch run.log run exit.lua --db s.db
expect_eq "os.exit(0) in a stage: the run goes on and exits 0" "$RC" 0
expect_grep "3 ok, 1 failed" "4 rows .*: 3 ok, 1 failed" run.log
expect_grep "the row's error names the line and says what to do" \
  '^\{"row":2,"key":2,"status":"failed","error":"[^"]*exit\.lua:11: os\.exit is not allowed in a workflow; return nil to drop a row or error\(\) to fail it"' \
  out/exit-errors.jsonl
expect_grep "the run is completed, not left running" '"status": ?"completed"' <("$ORCH" status --json --db s.db)
printf 'io.write("before ")\nos.exit(5)\nio.write("after")\n' >script.lua
run_orch lua.log lua script.lua
expect_eq "orch lua SCRIPT keeps a working os.exit" "$RC" 5
expect_eq "that ends the script there" "$(cat lua.log)" "before "
[ "$FAIL" -eq 0 ] || cat run.log out/exit-errors.jsonl
finish
