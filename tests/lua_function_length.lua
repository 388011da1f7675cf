-- lua_function_length.lua -- lists the Lua functions longer than a limit:
--   orch lua tests/lua_function_length.lua [--max N] [--allow FILE] FILE.lua...
-- The spans come from the compiler, not from reading the layout: each file
-- is compiled (loadfile) and its bytecode (string.dump, Lua 5.4 format) is
-- walked for every function prototype, nested and anonymous ones included,
-- each with its linedefined and lastlinedefined. A function's length is
-- lastlinedefined - linedefined + 1. Its name is read from its first line
-- ("function M.rows(", "local function drive(", "x.y = function(") and
-- qualified by the functions that hold it: "M.rows/drive",
-- "M.rows/<anonymous>" for one written inline as an argument.
--
-- FILE lists allowed offenders, one "path:function reason" a line (# starts
-- a comment); a line without a reason is refused, and one that no longer
-- names a long function is reported so the list only shrinks.
-- Exit 0 when every function over the limit is allowed, 1 otherwise, 2 on a
-- usage or file error.
local USAGE = "usage: orch lua tests/lua_function_length.lua [--max N] [--allow FILE] FILE.lua..."

local function die(msg)
  io.stderr:write("lua_function_length: ", msg, "\n")
  os.exit(2)
end

-- A reader over a Lua 5.4 dump (lundump.c's order and encodings).
local function dump_reader(s)
  local pos = 1
  local r = {}
  function r.byte()
    local b = s:byte(pos)
    pos = pos + 1
    return b
  end
  function r.skip(n)
    pos = pos + n
  end
  function r.size() -- loadUnsigned: 7 bits a byte, most significant first, last byte has 0x80
    local x = 0
    repeat
      local b = r.byte()
      x = (x << 7) | (b & 0x7f)
    until b & 0x80 ~= 0
    return x
  end
  function r.string()
    local n = r.size()
    if n == 0 then
      return nil
    end
    local str = s:sub(pos, pos + n - 2)
    pos = pos + n - 1
    return str
  end
  return r
end

-- Appends every prototype of the function at the reader to out, in source
-- order: { first = linedefined, last = lastlinedefined, parent }, the main
-- chunk included.
local function read_function(r, out, parent)
  r.string() -- source
  local fn = { first = r.size(), last = r.size(), parent = parent }
  out[#out + 1] = fn
  r.skip(3) -- numparams, is_vararg, maxstacksize
  r.skip(4 * r.size()) -- code
  for _ = 1, r.size() do -- constants
    local t = r.byte()
    if t == 3 or t == 19 then -- integer, float
      r.skip(8)
    elseif t == 4 or t == 20 then -- short, long string
      r.string()
    end -- nil, false, true: the tag alone
  end
  r.skip(3 * r.size()) -- upvalues: instack, idx, kind
  for _ = 1, r.size() do
    read_function(r, out, fn)
  end
  r.skip(r.size()) -- lineinfo
  for _ = 1, r.size() do -- abslineinfo
    r.size()
    r.size()
  end
  for _ = 1, r.size() do -- locvars
    r.string()
    r.size()
    r.size()
  end
  for _ = 1, r.size() do -- upvalue names
    r.string()
  end
end

-- Every function of a compiled file: { first, last, parent }, the main
-- chunk left out (its functions have no parent).
local function prototypes(path)
  local chunk, err = loadfile(path)
  if chunk == nil then
    die(err)
  end
  local d = string.dump(chunk)
  if d:sub(1, 5) ~= "\27Lua\x54" or string.packsize("j") ~= 8 or string.packsize("n") ~= 8 then
    die("this checker reads Lua 5.4 dumps with 8-byte integers and floats")
  end
  local r = dump_reader(d)
  r.skip(4 + 1 + 1 + 6 + 3 + 8 + 8 + 1) -- signature, version, format, data, sizes, int, num, #upvalues
  local out = {}
  read_function(r, out, nil)
  local main = table.remove(out, 1) -- linedefined 0
  for _, f in ipairs(out) do
    if f.parent == main then
      f.parent = nil
    end
  end
  return out
end

-- The name a function gets from the line it starts on.
local function name_on(text)
  return text:match("function%s+([%w_.:]+)%s*%(")
    or text:match("([%w_.]+)%s*=%s*function%s*%(")
    or text:match("%[%s*([\"'][^\"']+[\"'])%s*%]%s*=%s*function%s*%(")
    or "<anonymous>"
end

-- The functions of a file, each named and qualified by those that hold it.
local function functions(path)
  local lines = {}
  for l in io.lines(path) do
    lines[#lines + 1] = l
  end
  local found = prototypes(path)
  for _, f in ipairs(found) do -- a parent comes before its children
    local name = name_on(lines[f.first] or "")
    f.name = f.parent and f.parent.name .. "/" .. name or name
  end
  return found
end

local function read_allow(file)
  local fh = io.open(file, "r")
  if fh == nil then
    die("cannot read the allow-list " .. file)
  end
  local allow, n = {}, 0
  for l in fh:lines() do
    n = n + 1
    local entry = l:gsub("#.*", ""):match("^%s*(.-)%s*$")
    if entry ~= "" then
      local key = entry:match("^(%S+)%s+%S")
      if key == nil then
        die(file .. ":" .. n .. ": '" .. entry .. "' has no reason: write path:function and why it may be long")
      end
      allow[#allow + 1] = { key = key, line = n }
      allow[key] = allow[#allow]
    end
  end
  fh:close()
  return allow
end

local function main(args)
  local max, allow_file, files = 80, nil, {}
  local i = 1
  while i <= #args do
    if args[i] == "--max" then
      max = math.tointeger(tonumber(args[i + 1] or "")) or die("--max takes a whole number\n" .. USAGE)
      i = i + 2
    elseif args[i] == "--allow" then
      allow_file = args[i + 1] or die("--allow takes a file\n" .. USAGE)
      i = i + 2
    else
      files[#files + 1] = args[i]
      i = i + 1
    end
  end
  if #files == 0 then
    die(USAGE)
  end
  local allow = allow_file and read_allow(allow_file) or {}
  local over, allowed = 0, 0
  for _, path in ipairs(files) do
    for _, f in ipairs(functions(path)) do
      local len = f.last - f.first + 1
      if len > max then
        local key = path .. ":" .. f.name
        local a = allow[key]
        if a then
          a.used = true
          allowed = allowed + 1
          print(string.format("allowed  %s: %d lines (%d-%d)", key, len, f.first, f.last))
        else
          over = over + 1
          print(string.format("too long %s: %d lines (%d-%d); split it, or list it in the allow-list with why",
            key, len, f.first, f.last))
        end
      end
    end
  end
  for _, a in ipairs(allow) do
    if not a.used then
      print(string.format("%s:%d: %s is no longer over %d lines (or was renamed): remove it from the list",
        allow_file, a.line, a.key, max))
    end
  end
  print(string.format("%d function(s) over %d lines, %d of them allowed", over + allowed, max, allowed))
  return over == 0 and 0 or 1
end

os.exit(main(arg))
