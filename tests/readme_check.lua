-- Holds README.md to its word (run by tests/e2e/readme.sh through
-- `orch lua`): every fenced lua block loads as a workflow, offline, with
-- its syntax and keys checked; a block that is a fragment of a workflow
-- (fields such as `llm = {...}`) is loaded inside a minimal one. Every
-- `orch COMMAND` README names is a command `orch help` lists, and the
-- CLI section is `orch help` itself.
--   orch lua tests/readme_check.lua README.md HELP_TEXT_FILE WORKDIR
local readme, helpfile, workdir = arg[1], arg[2], arg[3]
local cli = require("orch.cli")

local function slurp(path)
  local fh = assert(io.open(path, "rb"))
  local s = fh:read("a")
  fh:close()
  return s
end

local text, help = slurp(readme), slurp(helpfile)
local failures, checked = 0, 0
local function fail(fmt, ...)
  failures = failures + 1
  io.stdout:write("FAIL ", string.format(fmt, ...), "\n")
end

-- the fenced lua blocks, with the README line each starts on
local n = 0
for before, block in text:gmatch("()```lua\n(.-)\n```") do
  n = n + 1
  local line = select(2, text:sub(1, before):gsub("\n", "")) + 2
  local src = block
  if not src:find("orch%.workflow") then
    -- a fragment: the fields of a workflow
    local stages = src:find("%f[%w_]stages%s*=") and "" or "stages = { function(row) return row end },\n"
    src = "return orch.workflow { name = 'readme', input = { { id = 1 } },\n" .. stages .. src .. "\n}"
  end
  if not src:find("require%s*%(?%s*\"orch\"") then
    src = "local orch = require \"orch\"\n" .. src
  end
  local path = string.format("%s/readme_block_%d.lua", workdir, n)
  local fh = assert(io.open(path, "w"))
  fh:write(src)
  fh:close()
  local wf, err = cli.load_workflow(path, {})
  checked = checked + 1
  if wf == nil then
    fail("README.md:%d: the lua block does not load: %s", line, tostring(err))
  end
end
if n == 0 then
  fail("README.md has no lua blocks")
end

-- every command README names (in `code`, in indented command lines, or
-- after a shell prompt) exists in `orch help`
local commands = {}
for _, pat in ipairs({ "`orch (%l[%l%-]*)", "\n[ \t]+orch (%l[%l%-]*)", "\n[ \t]*%$ [^\n]-orch (%l[%l%-]*)" }) do
  for cmd in text:gmatch(pat) do
    commands[cmd] = true
  end
end
local known = {}
for cmd in help:gmatch("\n  (%l[%l%-]*)") do -- the commands list: two spaces, then the command
  known[cmd] = true
end
local names = {}
for cmd in pairs(commands) do
  names[#names + 1] = cmd
end
table.sort(names)
for _, cmd in ipairs(names) do
  checked = checked + 1
  if not known[cmd] then
    fail("README names `orch %s`, which `orch help` does not list", cmd)
  end
end
-- README's CLI section is `orch help`, word for word (indented four spaces)
if readme:match("README%.md$") then
  local block = help:gsub("\n+$", ""):gsub("[^\n]+", "    %0")
  checked = checked + 1
  if not text:find(block, 1, true) then
    fail("README's CLI block is not `orch help` word for word; paste `orch help` there, indented four spaces")
  end
end
io.stdout:write(string.format("%d checked, %d failed\n", checked, failures))
return failures == 0 and 0 or 1
