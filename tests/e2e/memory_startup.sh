# What `orch run` carries in memory before its first row: only the modules
# a run uses. The estimate, inspection and maintenance commands' modules
# load when those commands run (or, for the estimate, when the run has one
# stored), not for every run.
. tests/lib.sh
cd "$WORK"
cat >mods.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "modules",
  input = { { id = 1 } },
  output = orch.write.jsonl("out/mods.jsonl"),
  stages = { function(row)
    local names = {}
    for _, m in ipairs({ "orch.estimate", "orch.cli_inspect", "orch.cli_maint", "orch.run", "orch.cli" }) do
      if package.loaded[m] ~= nil then
        names[#names + 1] = m
      end
    end
    row.loaded = table.concat(names, " ")
    return row
  end },
}
LUA
run_orch run.log run -q mods.lua --db s.db
expect_eq "the run exits 0" "$RC" 0
expect_grep "a run loads neither the estimate nor the inspection modules" '"loaded":"orch.run orch.cli"' out/mods.jsonl
# the commands whose modules are no longer loaded up front still run
run_orch status.log status --db s.db
expect_eq "orch status: exit 0" "$RC" 0
expect_grep "orch status: loads its module when it runs" "completed" status.log
run_orch gc.log gc --db s.db --keep-last 5 --dry-run
expect_eq "orch gc: exit 0" "$RC" 0
finish
