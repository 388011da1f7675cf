-- orch.io: opening a workflow's input as a stream of rows and its output
-- as an ordered sink. Both are opened before any work starts, so a missing
-- input or an unwritable output fails fast.
local reader = require "orch.reader"
local sink = require "orch.sink"
local json = require "orch.json"
local cjson = require "cjson"

local M = {}

-- A source: src:next() -> row, line | false, err, fatal | nil at the end.
-- fatal: the input cannot go on (an I/O error), as opposed to one bad row.
-- src.columns: the input's column order when known (CSV).

local function file_source(spec)
  local kind = spec.kind == "csv" and "csv" or "lines"
  local r, err = reader.open(spec.path, kind)
  if r == nil then
    return nil, err
  end
  local src = { columns = kind == "csv" and r:header() or nil, reader = r, path = spec.path }
  if kind == "csv" then
    function src:next()
      local row, line, fatal = r:next()
      if row == false then
        return false, line, fatal
      end
      return row, line
    end
  else
    local path = spec.path
    function src:next()
      local text, line, fatal = r:next()
      if not text then
        return text, line, fatal
      end
      local ok, v = pcall(cjson.decode, text)
      if not ok then
        return false, string.format("%s:%d: invalid JSON (%s)", path, line, tostring(v))
      end
      if type(v) ~= "table" or not text:find("^%s*{") then
        local what = type(v) == "table" and "an array" or v == cjson.null and "null" or type(v)
        return false, string.format("%s:%d: expected a JSON object, got %s", path, line, what)
      end
      return v, line
    end
  end
  function src:size()
    return r:size()
  end
  function src:close()
    r:close()
  end
  return src
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do
    c[k] = v
  end
  return c
end

--- open_source(input) -> src | nil, err
function M.open_source(input)
  if type(input) == "function" then
    local n = 0
    return {
      next = function()
        local row = input()
        if row == nil then
          return nil
        end
        n = n + 1
        if type(row) ~= "table" then
          return false, string.format("input iterator: row %d is a %s, expected a table", n, type(row))
        end
        return row, n
      end,
      close = function() end,
    }
  elseif getmetatable(input) == nil then
    local i = 0
    return {
      next = function()
        i = i + 1
        local row = input[i]
        if row == nil then
          return nil
        end
        return copy(row), i
      end,
      close = function() end,
    }
  end
  return file_source(input)
end

-- CSV output ---------------------------------------------------------------

local function csv_field(v)
  local t = type(v)
  if v == nil or v == cjson.null then
    return ""
  elseif t == "table" then
    v = json.encode(v)
  elseif t == "number" then
    v = json.encode(v) -- shortest text that reads back exactly; 3.0 as 3
  else
    v = tostring(v)
  end
  if v:find('[,"\r\n]') then
    return '"' .. v:gsub('"', '""') .. '"'
  end
  return v
end

local function csv_line(values, n)
  local out = {}
  for i = 1, n do
    out[i] = csv_field(values[i])
  end
  return table.concat(out, ",") .. "\n"
end

-- The columns of a CSV output: the input's columns that the row still has,
-- then its other fields, sorted.
local function columns_for(row, input_columns)
  local cols, seen = {}, {}
  for _, c in ipairs(input_columns or {}) do
    if row[c] ~= nil then
      cols[#cols + 1] = c
      seen[c] = true
    end
  end
  local extra = {}
  for k in pairs(row) do
    if type(k) == "string" and not seen[k] then
      extra[#extra + 1] = k
    end
  end
  table.sort(extra)
  for _, k in ipairs(extra) do
    cols[#cols + 1] = k
  end
  return cols
end

--- open_sink(spec, input_columns) -> out | nil, err
--- out:encode(row) -> line (may raise for unencodable values);
--- out:write(line); out:flush(sync); out:close().
function M.open_sink(spec, input_columns)
  local k, err = sink.open(spec.path)
  if k == nil then
    return nil, err
  end
  local out = { path = spec.path, handle = k }
  if spec.kind == "jsonl" then
    function out.encode(_, row)
      return json.encode(row, input_columns) .. "\n"
    end
  else
    local cols = spec.columns
    function out.encode(_, row)
      if cols == nil then
        cols = columns_for(row, input_columns)
      end
      local values = {}
      for i, c in ipairs(cols) do
        values[i] = row[c]
      end
      return csv_line(values, #cols)
    end
    local write_header = true
    function out.header()
      if write_header and cols ~= nil then
        write_header = false
        return csv_line(cols, #cols)
      end
    end
  end
  function out.write(_, line)
    if out.header then
      local h = out.header()
      if h then
        assert(k:write(h))
      end
    end
    local ok, werr = k:write(line)
    if not ok then
      error(werr, 0)
    end
  end
  function out.flush(_, sync)
    local off, ferr = k:flush(sync)
    if off == nil then
      error(ferr, 0)
    end
    return off
  end
  function out.close()
    k:close()
  end
  return out
end

return M
