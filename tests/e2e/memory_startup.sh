# What `orch run` carries in memory before its first row: only the modules
# a run uses. The estimate, inspection and maintenance commands' modules
# load when those commands run (or, for the estimate, when the run has one
# stored), not for every run. And what a start costs: the modules are
# embedded precompiled (core/luac.c), with their debug information, so
# errors still name lua/orch/FILE.lua:LINE. And the collector's pause.
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

# the collector starts a cycle at 1.5 x the heap the last one kept (Lua's
# default is 2 x): the garbage a run holds grows with its rows in flight
cat >gc.lua <<'LUA'
print("pause " .. collectgarbage("setpause", 148))
LUA
run_orch gc.log lua gc.lua
expect_eq "the collector's pause is 148" "$(cat gc.log)" "pause 148"

# every embedded module is a precompiled chunk ("\27Lua"), not source text
embed="$(dirname "$ORCH")/embed_lua.c"
modules=$(find "$ROOT/lua/orch" -name '*.lua' | wc -l)
chunks=$(grep -A1 -E '^static const unsigned char lua[0-9]+\[\] = \{$' "$embed" | grep -c '^0x1b,0x4c,0x75,0x61,')
expect_eq "each of the $modules modules is embedded as a binary chunk" "$chunks" "$modules"
# an error inside an embedded module still names its file and line
cat >err.lua <<'LUA'
local ok, err = pcall(require("orch.fmt").count, nil)
print(err)
print(debug.getinfo(require("orch").retry, "S").source)
LUA
run_orch err.log lua err.lua
expect_grep "an embedded module's error names its file:line" "^lua/orch/fmt\.lua:[0-9]+: bad argument #1" err.log
expect_grep "and its functions their source" "^@lua/orch/init\.lua$" err.log
# the compiler fails the build on a syntax error, naming the file and line
luac="$(dirname "$ORCH")/orch_luac"
printf 'local x = \nreturn {\n' >bad.lua
"$luac" bad.lua bad.luac @lua/orch/bad.lua >luac.log 2>&1
expect_eq "orch_luac: a syntax error exits 1" "$?" 1
expect_grep "and names the file and line" "^orch_luac: lua/orch/bad\.lua:2: unexpected symbol" luac.log
expect_eq "and writes no chunk" "$([ -e bad.luac ] && echo written || echo none)" none
finish
