-- cli_spec.lua -- the CLI's shape: one logger (orch.log) for every
-- message; with_store closing the store through a to-be-closed variable
-- and keeping an error's traceback; main.c's commands[] and orch.cli's
-- handlers naming the same commands, and the options cli reads being ones
-- main.c parses; and no function of the CLI and logging modules longer
-- than 80 lines.
local base = require("orch.cli_base")
local cli = require("orch.cli")
local json = require("orch.json")
local log = require("orch.log")

local function slurp(path)
  local fh <close> = assert(io.open(path, "rb"))
  return fh:read("a")
end

-- Runs fn with io.stderr writing into a string. -> what was written
local function capture_stderr(fn)
  local parts = {}
  local real = io.stderr
  local fake = setmetatable({}, { __index = {
    write = function(self, ...)
      for _, s in ipairs({ ... }) do
        parts[#parts + 1] = tostring(s)
      end
      return self
    end,
  } })
  io.stderr = fake
  local ok, err = pcall(fn)
  io.stderr = real
  assert(ok, err)
  return table.concat(parts)
end

describe("orch.log", function()
  it("writes text as orch: msg, filtered by rank", function()
    local out = capture_stderr(function()
      local l = log.new(0, false)
      l(0, "shown")
      l(1, "too chatty")
      l(0, "debug by level", "debug")
      l(5, "an error always", "error")
    end)
    assert.are.equal("orch: shown\norch: an error always\n", out)
  end)

  it("-q keeps warn and error, -v adds debug", function()
    local quiet = capture_stderr(function()
      local l = log.new(-1, false)
      l(0, "info", "info")
      l(0, "warn", "warn")
      l(0, "error", "error")
    end)
    assert.are.equal("orch: warn\norch: error\n", quiet)
    local verbose = capture_stderr(function()
      log.new(1, false)(1, "debug")
    end)
    assert.are.equal("orch: debug\n", verbose)
  end)

  it("writes one JSON object a line: ts_ms, level, run_id when known, msg", function()
    local out = capture_stderr(function()
      log.new(0, true)(0, "no run yet")
      log.new(0, true, "r-1")(-1, "with a run", "warn")
      log.new(0, true)(1, "debug, filtered")
    end)
    local lines = {}
    for line in out:gmatch("[^\n]+") do
      lines[#lines + 1] = line
    end
    assert.are.equal(2, #lines)
    assert.truthy(lines[1]:match('^{"ts_ms":%d+,"level":"info","msg":"no run yet"}$'), lines[1])
    assert.truthy(lines[2]:match('^{"ts_ms":%d+,"level":"warn","run_id":"r%-1","msg":"with a run"}$'), lines[2])
  end)

  it("is the logger orch.run hands out", function()
    assert.are.equal(log.new, require("orch.run").logger)
    assert.are.equal(log.LEVEL_RANK, require("orch.run").LEVEL_RANK)
    assert.are.equal(require("orch.fmt").count, require("orch.run").fmt_count)
  end)

  it("carries the CLI's own messages: --log-json makes say and note JSON", function()
    local out = capture_stderr(function()
      base.use({ verbosity = 0, log_json = true })
      base.say("a refusal")
      base.note("a note")
      base.use({ verbosity = -1 })
      base.note("-q does not silence a command's own message")
      base.use({ verbosity = 0 })
    end)
    local first, second, third = out:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n$")
    assert.are.same({ level = "error", msg = "a refusal" }, { level = json.decode(first).level, msg = json.decode(first).msg })
    assert.are.equal("info", json.decode(second).level)
    assert.are.equal("orch: -q does not silence a command's own message", third)
  end)
end)

describe("orch.cli_base.with_store", function()
  local path
  before_each(function()
    path = os.tmpname()
    os.remove(path)
  end)
  after_each(function()
    for _, suffix in ipairs({ "", "-wal", "-shm" }) do
      os.remove(path .. suffix)
    end
  end)

  it("keeps the traceback of an error raised inside, and closes the store", function()
    local seen
    local line = debug.getinfo(1, "l").currentline + 2
    local function boom()
      error("boom")
    end
    local ok, tb = xpcall(base.with_store, debug.traceback, { db = path }, function(st)
      seen = st
      boom()
    end)
    assert.is_false(ok)
    local self = debug.getinfo(1, "S").short_src
    assert.truthy(tb:find(self .. ":" .. line .. ": boom", 1, true), tb)
    -- the frame that raised, not only with_store re-raising it
    assert.truthy(tb:find("\n%s*" .. self:gsub("%p", "%%%0") .. ":" .. line .. ": in "), tb)
    assert.has_error(function()
      seen:run_list({})
    end, "attempt to use a closed store")
  end)

  it("passes an error object through as it is", function()
    local obj = setmetatable({}, { __tostring = function()
      return "an object"
    end })
    local ok, err = pcall(base.with_store, { db = path }, function()
      error(obj)
    end)
    assert.is_false(ok)
    assert.are.equal(obj, err)
  end)

  it("returns fn's exit code and closes the store", function()
    local seen
    assert.are.equal(3, base.with_store({ db = path }, function(st)
      seen = st
      return 3
    end))
    assert.has_error(function()
      seen:run_list({})
    end, "attempt to use a closed store")
  end)
end)

-- main.c's commands[]: { name = { raw = bool } } and the option keys
-- (--keep-last -> keep_last) of every command.
local function main_table()
  local src = slurp("core/main.c")
  local block = assert(src:match("static const struct command commands%[%] = {\n(.-)\n};"))
  local commands = {}
  block = "\n" .. block .. "\n    {"
  local starts = {}
  for at in block:gmatch("()\n    {") do
    starts[#starts + 1] = at
  end
  for i = 1, #starts - 1 do
    local entry = block:sub(starts[i], starts[i + 1] - 1)
    local name = entry:match('^\n    {"([%w_]+)"')
    if name then
      commands[name] = { raw = entry:match("(%d)},?%s*$") == "1" }
    end
  end
  local keys = {}
  for name in src:gmatch('{"(%-%-?[%w-]+)", [%w"-]+, [%w"|%.,=-]+, OPT_') do
    keys[(name:gsub("^%-%-?", ""):gsub("-", "_"))] = true
  end
  return commands, keys
end

describe("main.c's command table and orch.cli", function()
  local commands, keys = main_table()
  -- what orch.cli exports besides handlers, for orch lua scripts and specs
  local LIBRARY = { load_workflow = true, warn_unread_params = true }

  it("is read from main.c", function()
    assert.truthy(commands.run and commands.gc and commands.help)
    assert.is_true(commands.lua.raw)
    assert.is_false(commands.run.raw)
    assert.truthy(keys.db and keys.keep_last and keys.o and keys.quiet and keys.log_json)
  end)

  it("every command in the table has a handler in orch.cli", function()
    for name, c in pairs(commands) do
      if name ~= "help" then -- main.c prints help itself
        local handler = c.raw and "script" or name
        assert.are.equal("function", type(cli[handler]), "no orch.cli." .. handler .. " for `orch " .. name .. "`")
      end
    end
  end)

  it("every handler in orch.cli is a command in the table", function()
    local raw = false
    for _, c in pairs(commands) do
      raw = raw or c.raw
    end
    for name, v in pairs(cli) do
      if type(v) == "function" and not LIBRARY[name] then
        local known = commands[name] ~= nil and name ~= "help" or (name == "script" and raw)
        assert.is_true(known, "orch.cli." .. name .. " is no command of main.c's commands[]")
      end
    end
  end)

  it("the commands help says open the store read-only are orch.cli_inspect's", function()
    local said = assert(slurp("core/main.c"):match('help_footer%[%] =%s*"([^"]-) open the store read%-only'))
    local listed = {}
    for name in said:gmatch("[%a_]+") do
      if name ~= "and" then
        listed[#listed + 1] = name
      end
    end
    table.sort(listed)
    local inspect = {}
    for name in pairs(require("orch.cli_inspect")) do
      inspect[#inspect + 1] = name
    end
    table.sort(inspect)
    assert.are.same(inspect, listed)
  end)

  it("every option the commands read is one main.c parses", function()
    local parsed = { args = true, set = true, verbosity = true, command = true } -- parse_command's own
    for k in pairs(keys) do
      parsed[k] = true
    end
    parsed.quiet, parsed.verbose, parsed.help = nil, nil, nil -- stored as verbosity / printed by main.c
    for _, f in ipairs({ "cli", "cli_base", "cli_inspect", "cli_maint" }) do
      local src = slurp("lua/orch/" .. f .. ".lua")
      for key in src:gmatch("%f[%w_]opts%.([%a_][%w_]*)") do
        assert.is_true(parsed[key] == true, string.format("lua/orch/%s.lua reads opts.%s, an option main.c does not "
          .. "parse", f, key))
      end
    end
  end)
end)

-- The functions of a Lua source: { { name =, first =, last = } }, found
-- by matching `function` with its `end` (if/do/function open a block that
-- `end` closes) after blanking comments and strings.
local function functions_of(src)
  local out, stack = {}, {}
  local pos, line, n = 1, 1, #src
  while pos <= n do
    local c = src:sub(pos, pos)
    local long = src:match("^%-%-%[(=*)%[", pos) or src:match("^%[(=*)%[", pos)
    if long then
      local open = src:match("^%-%-", pos) and "--[" .. long .. "[" or "[" .. long .. "["
      local close = "]" .. long .. "]"
      local e = select(2, src:find(close, pos + #open, true)) or n
      line = line + select(2, src:sub(pos, e):gsub("\n", ""))
      pos = e + 1
    elseif src:match("^%-%-", pos) then
      pos = (src:find("\n", pos, true) or n + 1)
    elseif c == '"' or c == "'" then
      local i = pos + 1
      while i <= n and src:sub(i, i) ~= c do
        i = i + (src:sub(i, i) == "\\" and 2 or 1)
      end
      pos = i + 1
    elseif c == "\n" then
      line = line + 1
      pos = pos + 1
    elseif c:match("[%a_]") then
      local word = src:match("^[%w_]+", pos)
      if word == "function" then
        local name = src:match("^function%s+([%w_.:]+)", pos) or ("anonymous at line " .. line)
        stack[#stack + 1] = { name = name, first = line }
      elseif word == "if" or word == "do" then
        stack[#stack + 1] = false
      elseif word == "end" then
        local top = table.remove(stack)
        if top then
          top.last = line
          out[#out + 1] = top
        end
      end
      pos = pos + #word
    else
      pos = pos + 1
    end
  end
  assert(#stack == 0, "unbalanced blocks")
  return out
end

describe("function length", function()
  it("finds functions and their ends", function()
    local fs = functions_of("local function a()\n  if x then --[[ end ]] y() end\n  local s = \"end\"\nend\n"
      .. "for i = 1, 2 do\n  local f = function() return ']]' end\nend\n")
    assert.are.same({ { name = "a", first = 1, last = 4 }, { name = "anonymous at line 6", first = 6, last = 6 } }, fs)
  end)

  for _, f in ipairs({ "cli", "cli_base", "cli_inspect", "cli_maint", "log", "fmt", "observe", "estimate", "runs" }) do
    it("no function in lua/orch/" .. f .. ".lua is longer than 80 lines", function()
      for _, fn in ipairs(functions_of(slurp("lua/orch/" .. f .. ".lua"))) do
        local len = fn.last - fn.first + 1
        assert.is_true(len <= 80, string.format("lua/orch/%s.lua:%d: %s is %d lines long", f, fn.first, fn.name, len))
      end
    end)
  end
end)
