-- helpers.lua -- what several specs need alike (tests/busted_runner.lua puts
-- tests/spec on package.path): local h = require("helpers")
local assert = require("luassert") -- busted sets it in the specs only
local M = {}

-- "file:line" of the caller, as error messages and tracebacks spell it.
function M.here()
  local info = debug.getinfo(2, "Sl")
  return info.short_src .. ":" .. info.currentline
end

-- The line of the caller.
function M.line()
  return debug.getinfo(2, "l").currentline
end

-- A path no file has yet (os.tmpname's, removed).
function M.tmp_path()
  local path = os.tmpname()
  os.remove(path)
  return path
end

-- The whole content of the file at path.
function M.read_file(path)
  local fh = assert(io.open(path, "rb"))
  local data = fh:read("a")
  fh:close()
  return data
end

-- Asserts that f(...) raises and the message contains `text` (plain find);
-- returns the error.
function M.fails_with(text, f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error containing: " .. text)
  assert.is_truthy(tostring(err):find(text, 1, true),
    "error was: " .. tostring(err) .. "\nexpected it to contain: " .. text)
  return err
end

-- Runs f, which must raise; returns the error value.
function M.catch(f)
  local ok, e = pcall(f)
  assert.is_false(ok, "expected an error")
  return e
end

-- A regression test of a fixed bug: runs fn; when it fails, the failure
-- starts with `what`, what used to go wrong, so a reader sees which bug is back.
function M.regression(what, fn)
  local ok, err = pcall(fn)
  if ok then
    return
  end
  local prefix = "regression: the bug is back: " .. what .. "\n"
  if type(err) == "table" and type(err.message) == "string" then -- a luassert failure
    err.message = prefix .. err.message
    error(err, 0)
  end
  error(prefix .. tostring(err), 0)
end

return M
