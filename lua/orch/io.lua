-- orch.io: opening a workflow's input as a stream of rows and its output
-- as an ordered sink. Both are opened before any work starts, so a missing
-- input or an unwritable output fails fast.
local reader = require("orch.reader")
local sink = require("orch.sink")
local json = require("orch.json")

local M = {}

-- A source: src:next() -> row, line, end_offset, end_line
--                     | false, err, fatal, end_offset, end_line | nil at the end.
-- fatal: the input cannot go on (an I/O error), as opposed to one bad row.
-- end_offset/end_line: where the next record starts (file sources only),
-- the cursor a checkpoint records. src:skip(cursor) resumes at one.
-- src.columns: the input's column order when known: a CSV header, or the
-- keys of the first JSONL object in the order the file has them.

-- The key order of the first line of a JSONL file that is a JSON object
-- (nil when there is none). Read with a reader of its own, so it is the
-- same on a fresh run and on a resume that starts mid-file.
local function jsonl_columns(path)
  local r = reader.open(path, "lines")
  if r == nil then
    return nil
  end
  local cols
  while cols == nil do
    local text, _, fatal = r:next()
    if text == nil or (text == false and fatal) then
      break
    end
    if text then
      local ok, _, order = pcall(json.decode, text, true)
      cols = ok and order or nil
    end
  end
  r:close()
  return cols
end

local function file_source(spec)
  local kind = spec.kind == "csv" and "csv" or "lines"
  local r, err = reader.open(spec.path, kind)
  if r == nil then
    return nil, err
  end
  local src = { columns = kind == "csv" and r:header() or jsonl_columns(spec.path), path = spec.path }
  local rnext = r.next -- looked up once, not for every record
  if kind == "csv" then
    src.next = r:taker() -- C: next's results in this order, no Lua call a row
    src.plain_rows = true -- its rows are new tables with no metatable
  else
    local path = spec.path
    function src.next()
      local text, line, fatal_or_index, _, e, eline = rnext(r)
      if not text then
        return text, line, fatal_or_index, e, eline
      end
      local ok, v = pcall(json.decode, text)
      if not ok then
        return false, string.format("%s:%d: invalid JSON (%s)", path, line, tostring(v)), false, e, eline
      end
      if type(v) ~= "table" or not text:find("^%s*{") then
        local what = type(v) == "table" and "an array" or v == json.null and "null" or type(v)
        return false, string.format("%s:%d: expected a JSON object, got %s", path, line, what), false, e, eline
      end
      return v, line, e, eline
    end
  end
  function src.skip(cursor)
    if cursor.index == 0 then
      return -- nothing settled yet (a run paused before its first row): start at the top
    end
    local ok, serr = r:seek(cursor.offset, cursor.index, cursor.line)
    if not ok then
      error(serr, 0)
    end
  end
  function src.size()
    return r:size()
  end
  function src.close()
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
    local src = {}
    function src.next()
      local row = input()
      if row == nil then
        return nil
      end
      n = n + 1
      if type(row) ~= "table" then
        return false, string.format("input iterator: row %d is a %s, expected a table", n, type(row))
      end
      return row, n
    end
    -- an iterator cannot seek: replay it (workflows must make it deterministic)
    function src.skip(cursor)
      for _ = 1, cursor.index do
        if input() == nil then
          break
        end
      end
      n = cursor.index
    end
    src.close = function() end
    return src
  elseif getmetatable(input) == nil then
    local i = 0
    local src = {}
    function src.next()
      i = i + 1
      local row = input[i]
      if row == nil then
        return nil
      end
      return copy(row), i
    end
    function src.skip(cursor)
      i = cursor.index
    end
    src.close = function() end
    return src
  end
  return file_source(input)
end

-- CSV output ---------------------------------------------------------------

local function csv_field(v)
  local t = type(v)
  if v == nil or v == json.null then
    return ""
  elseif t == "table" then
    v = json.encode(v)
  elseif t == "number" then
    v = json.encode(v) -- as in JSON: shortest text that reads back exactly; 3 and 3.0 differ
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
M.csv_line = csv_line

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

-- out:flush, out:sync_begin and out:sync_done over the sink k, each
-- raising the sink's error; write_header() first writes a CSV header
-- that is still due.
local function durability(out, k, write_header)
  function out.flush(_, sync)
    write_header()
    local off, ferr = k:flush(sync)
    if off == nil then
      error(ferr, 0)
    end
    return off
  end
  -- the same, its fsync overlapping what the run does next: the offset
  -- is durable once out:sync_done() says true
  function out.sync_begin()
    write_header()
    local off, ferr = k:sync_begin()
    if off == nil then
      error(ferr, 0)
    end
    return off
  end
  function out.sync_done(_, wait)
    local done, ferr = k:sync_poll(wait)
    if done == nil then
      error(ferr, 0)
    end
    return done
  end
end

--- open_sink(spec, input_columns [, offset [, prefix]]) -> out | nil, err, why
--- offset: a checkpointed size to truncate back to (nil: start empty);
--- prefix: the hash the file's first offset bytes must have (out:hash()
--- at that checkpoint; nil: not checked). why: "busy", "changed", "error".
--- out:encode(row) -> line (may raise for unencodable values);
--- out:write(line); out:flush(sync) -> offset; out:sync_begin() -> offset
--- (its fsync on a thread); out:sync_done(wait) -> whether that fsync is
--- done (raises when it failed); out:hash(); out:close().
function M.open_sink(spec, input_columns, offset, prefix)
  local k, err, why = sink.open(spec.path, offset, prefix)
  if k == nil then
    return nil, err, why
  end
  local out = { path = spec.path }
  local header -- a CSV header still to write before the first line
  if spec.kind == "jsonl" then
    out.encode = json.encoder(input_columns, "\n") -- C: json.encode(row, input_columns, "\n")
  else
    local cols = spec.columns
    if cols ~= nil and (offset or 0) == 0 then
      header = csv_line(cols, #cols)
    end
    function out.encode(_, row)
      if cols == nil then
        cols = columns_for(row, input_columns)
        if (offset or 0) == 0 then
          header = csv_line(cols, #cols)
        end
      end
      local values = {}
      for i, c in ipairs(cols) do
        values[i] = row[c]
      end
      return csv_line(values, #cols)
    end
    if (offset or 0) > 0 then
      -- resuming: the header is on disk; read the columns back from it
      local r = reader.open(spec.path, "csv")
      if r then
        cols = cols or r:header()
        r:close()
      end
    end
  end
  local kwrite = k.write -- looked up once, not for every row
  local function put(line)
    local ok, werr = kwrite(k, line)
    if not ok then
      error(werr, 0)
    end
  end
  function out.write(_, line)
    if header then
      put(header)
      header = nil
      out.sink = k -- the rest of the lines may be written from C
    end
    local ok, werr = kwrite(k, line) -- put, inline: this runs once a row
    if not ok then
      error(werr, 0)
    end
  end
  if spec.kind == "jsonl" then
    out.write = k:writer() -- no header ever: C, no Lua call a row
  end
  -- out.sink: the sink the driver's flush writes lines to from C
  -- (results:settle_run), once no header can be due: a CSV header is
  -- made with the first line when the columns come from the first row
  out.sink = (spec.kind == "jsonl" or (offset or 0) > 0) and k or nil
  durability(out, k, function()
    if header then
      put(header)
      header = nil
    end
  end)
  function out.hash()
    return k:hash()
  end
  function out.close()
    k:close()
  end
  return out
end

return M
