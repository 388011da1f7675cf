-- orch.cli: the commands behind main.c. Each takes the options table that
-- main.c parsed and returns the process exit code:
-- 0 done, 1 failed, 2 usage or workflow error, 3 paused.
local check = require "orch.check"

local M = {}

function M.version()
  local v = require("orch.sys").versions()
  io.stdout:write(string.format("orch %s\nLua %s\nlibcurl %s\nSQLite %s\n", v.orch, v.lua:gsub("^Lua ", ""),
    v.curl, v.sqlite))
  return 0
end

-- Message handler for loading a workflow: WorkflowErrors stay as they are
-- (their message already names file:line); anything else gets a traceback.
local function load_handler(e)
  if check.is_error(e) then
    return e
  end
  return debug.traceback(tostring(e), 2)
end

--- Loads and evaluates a workflow file -> workflow | nil, message.
function M.load_workflow(path, params)
  local orch = require "orch"
  orch.params = params or {}
  local fh = io.open(path, "r")
  if fh == nil then
    local _, err = io.open(path, "r")
    return nil, "cannot open workflow: " .. tostring(err)
  end
  fh:close()
  local chunk, err = loadfile(path, "t")
  if chunk == nil then
    return nil, err
  end
  local ok, wf = xpcall(chunk, load_handler)
  if not ok then
    if check.is_error(wf) then
      check.locate(wf, path)
    end
    return nil, tostring(wf)
  end
  if getmetatable(wf) ~= check.Workflow then
    return nil, string.format("%s: the file must return orch.workflow{...}, but it returned %s", path,
      wf == nil and "nothing" or type(wf))
  end
  return wf
end

function M.run(opts)
  local wf, err = M.load_workflow(opts.file, opts.set)
  if wf == nil then
    io.stderr:write("orch: ", err, "\n")
    return 2
  end
  return require("orch.run").rows(wf, opts)
end

--- orch lua SCRIPT [ARG]...: runs a script with `arg` set as lua.c does.
function M.script(args)
  _G.arg = args
  local chunk, err = loadfile(args[0])
  if chunk == nil then
    io.stderr:write("orch: ", err, "\n")
    return 2
  end
  local ok, res = xpcall(chunk, function(e)
    return debug.traceback(tostring(e), 2)
  end, table.unpack(args, 1, #args))
  if not ok then
    io.stderr:write("orch: ", res, "\n")
    return 1
  end
  return math.type(res) == "integer" and res or 0
end

return M
