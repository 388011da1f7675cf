-- orch.paths: the files a workflow reads and writes, and whether two of them
-- are one file (DESIGN "no file orch writes may alias an input or another
-- sink"). An output on its input truncates the input while it is read; an
-- errors file on the output loses the good rows; a store on a sink is
-- destroyed by it. So these are refused at load, before any file is opened.
--
-- Two paths are one file when they reach the same device and inode (same
-- path, ./ prefix, a symlink, a hard link); a path that does not exist yet
-- is compared by where it will be: the real path of its longest existing
-- prefix, then the rest as the sink's mkdir would make it. A dangling
-- symlink is compared as itself, not as its target.
local check = require("orch.check")
local sys = require("orch.sys")

local M = {}

--- canonical(path) -> an absolute path without symlinks in its existing
--- part, nor "." or ".." components.
function M.canonical(path)
  local real = sys.realpath(path)
  if real then
    return real
  end
  local trimmed = path:gsub("/+$", "")
  if trimmed == "" or trimmed == "." then -- "/" or "." themselves: realpath failed (cwd removed)
    return trimmed == "" and "/" or "."
  end
  local dir, base = trimmed:match("^(.*)/([^/]*)$")
  if dir == nil then
    dir, base = ".", trimmed
  elseif dir == "" then
    dir = "/"
  end
  local parent = M.canonical(dir)
  if base == "." or base == "" then
    return parent
  elseif base == ".." then
    local up = parent:match("^(.*)/[^/]*$")
    return (up == nil or up == "") and "/" or up
  end
  return (parent:sub(-1) == "/" and parent or parent .. "/") .. base
end

--- identity(path) -> a string equal for two paths exactly when they are
--- (or will be) the same file.
function M.identity(path)
  local c = M.canonical(path)
  local st = sys.stat(c)
  if st and st.ino then
    return string.format("inode %d:%d", st.dev, st.ino)
  end
  return "path " .. c
end

--- files(wf) -> the files the workflow reads and writes, input first, then
--- output, errors and observers' files in that order:
--- { what =, path =, key = (its workflow key), at = (its constructor's file:line), appends = bool,
---   id = M.identity(path) }
function M.files(wf)
  local list = {}
  local function add(what, spec, key, appends)
    list[#list + 1] = { what = what, path = spec.path, key = key, at = spec.defined_at, appends = appends,
      id = M.identity(spec.path) }
  end
  if getmetatable(wf.input) == check.Spec and type(wf.input.path) == "string" then
    add("input", wf.input, "input")
  end
  for _, k in ipairs({ "output", "errors" }) do
    if getmetatable(wf[k]) == check.Spec and type(wf[k].path) == "string" then
      add(k, wf[k], k)
    end
  end
  local Observer = require("orch.observe").Observer
  for i, o in ipairs(type(wf.observers) == "table" and wf.observers or {}) do
    if getmetatable(o) == Observer and type(o.path) == "string" then
      add(string.format("observers[%d] (%s)", i, o.name), o, "observers", true)
    end
  end
  return list
end

-- Raises: sink (a file of M.files) is other ({ what =, path = }). input:
-- one of them is the workflow's input; prefix: said before why.
local function clash(sink, other, input, prefix)
  local why = input and string.format("refusing to %s the input", sink.appends and "append to" or "overwrite")
    or other.what == "the workflow" and "refusing to overwrite the workflow"
    or "each needs a file of its own"
  check.fail_at(sink.at, sink.key, "%s %s is the same file as %s %s (%s%s)", sink.what, sink.path, other.what,
    other.path, prefix or "", why)
end

--- check(wf): raises a WorkflowError, at the later file's constructor,
--- when a sink is the input or another sink.
function M.check(wf)
  local list = M.files(wf)
  for i = 2, #list do
    for j = 1, i - 1 do
      if list[i].id == list[j].id then
        clash(list[i], list[j], list[j].what == "input")
      end
    end
  end
end

--- check_run(wf, wf_path, db) -> nil | message: whether the state store
--- at db (--db, ORCH_DB or the default; its -wal, -shm and -journal files
--- too) is the input or a sink of the workflow loaded from wf_path, or a
--- sink is that workflow file. Call before the store is opened: SQLite
--- turns an empty file into a database.
function M.check_run(wf, wf_path, db)
  local files = M.files(wf)
  local function refuse(f, other, why)
    local ok, e = pcall(clash, f, other, f.what == "input", why)
    assert(not ok and check.is_error(e))
    return tostring(check.locate(e, wf_path))
  end
  local self = M.identity(wf_path)
  for _, f in ipairs(files) do
    if f.id == self and f.what ~= "input" then
      return refuse(f, { what = "the workflow", path = wf_path }, "")
    end
  end
  if db == ":memory:" or db:find("://", 1, true) then
    return nil
  end
  local store = {}
  for _, suffix in ipairs({ "", "-wal", "-shm", "-journal" }) do
    store[M.identity(db .. suffix)] = db .. suffix
  end
  for _, f in ipairs(files) do
    local hit = store[f.id]
    if hit then
      return refuse(f, { what = hit == db and "the state store" or "the state store's", path = hit }, "--db; ")
    end
  end
  return nil
end

return M
