-- orch: the workflow DSL (`require("orch")`).
--
-- Everything here only describes a run: constructors return plain tables
-- that orch.run executes. orch.workflow checks the description at load time
-- so a typo is reported against the workflow file's own line.
local check = require("orch.check")
local stage = require("orch.stage")
local llm = require("orch.llm")
local json = require("orch.json")

local orch = {
  stage = stage,
  llm = llm,
  json = json,
  http = require("orch.http"), -- orch.http.request{...}, the same as require("orch.http")
  params = {}, -- --set k=v, as strings; filled in by the CLI before the workflow loads
  params_read = {}, -- what orch.param recorded: list of { name, default, description }, and by name
}

orch.version = require("orch.sys").versions().orch

--- orch.env(name [, default]) -> the environment variable, or default.
function orch.env(name, default)
  check.arg_type("orch.env", 1, name, "string")
  local v = os.getenv(name)
  if v == nil or v == "" then
    return default
  end
  return v
end

--- orch.param(name [, default [, description]]) -> the --set value
--- converted to default's type. Each name read is recorded (in
--- orch.params_read, in order) with its default and one-line description,
--- for `orch params WORKFLOW.lua` and the warning about --set keys the
--- workflow never reads.
function orch.param(name, default, description)
  check.arg_type("orch.param", 1, name, "string")
  if description ~= nil then
    check.arg_type("orch.param", 3, description, "string")
  end
  local read = orch.params_read
  if read[name] == nil then
    read[name] = { name = name, default = default, description = description }
    read[#read + 1] = read[name]
  elseif read[name].description == nil then
    read[name].description = description
  end
  local v = orch.params[name]
  if v == nil then
    return default
  end
  if type(default) == "number" then
    local n = tonumber(v)
    if n == nil then
      check.fail("--set %s=%s: expected a number", name, v)
    end
    return n
  elseif type(default) == "boolean" then
    if v == "true" or v == "1" or v == "yes" then
      return true
    elseif v == "false" or v == "0" or v == "no" then
      return false
    end
    check.fail("--set %s=%s: expected true or false", name, v)
  end
  return v
end

-- Inputs and outputs ------------------------------------------------------

local function file_spec(io, kind, what, path, opts, allowed)
  check.arg_type(what, 1, path, "string")
  if opts ~= nil then
    check.arg_type(what, 2, opts, "table")
    check.known_keys(what, opts, allowed)
  end
  -- defined_at: where the file was named, for orch.paths to point at
  local spec = { io = io, kind = kind, path = path, defined_at = check.where() }
  for k, v in pairs(opts or {}) do
    spec[k] = v
  end
  return setmetatable(spec, check.Spec)
end

orch.read = {
  --- orch.read.csv(path): RFC 4180 CSV with a header row, streamed.
  csv = function(path, opts)
    return file_spec("read", "csv", "orch.read.csv", path, opts, {})
  end,
  --- orch.read.jsonl(path): one JSON object per line, streamed.
  jsonl = function(path, opts)
    return file_spec("read", "jsonl", "orch.read.jsonl", path, opts, {})
  end,
}

orch.write = {
  --- orch.write.jsonl(path): one JSON object per row, in input order.
  jsonl = function(path, opts)
    return file_spec("write", "jsonl", "orch.write.jsonl", path, opts, {})
  end,
  --- orch.write.csv(path [, { columns = {...} }]): CSV with a header row;
  --- columns default to the input's columns followed by new fields, sorted.
  csv = function(path, opts)
    local spec = file_spec("write", "csv", "orch.write.csv", path, opts, { columns = "table" })
    if spec.columns ~= nil then
      for i, c in ipairs(spec.columns) do
        if type(c) ~= "string" then
          check.fail("orch.write.csv: columns[%d] must be a string, got %s", i, type(c))
        end
      end
    end
    return spec
  end,
}

--- orch.rows(path) -> an iterator over the rows of a CSV (with a header
--- row) or JSONL file (by its extension), for steps and scripts that read a
--- file themselves: for row in orch.rows("reviews.csv") do ... end. A
--- malformed row raises with its file:line.
function orch.rows(path)
  check.arg_type("orch.rows", 1, path, "string")
  local spec = path:match("%.jsonl$") and orch.read.jsonl(path) or orch.read.csv(path)
  local src, err = require("orch.io").open_source(spec)
  if src == nil then
    error("orch.rows: " .. tostring(err), 2)
  end
  return function()
    local row, msg = src.next()
    if row == false then
      src.close()
      error(msg, 0)
    elseif row == nil then
      src.close()
    end
    return row or nil
  end
end

--- orch.key_if_present(path, name) -> name, or nil when the first row of
--- the CSV or JSONL file at path has no field `name`: a workflow's
--- `key = orch.key_if_present(input, "id")` keys rows by that field when the
--- input has it and by their row number when it does not. A file that cannot
--- be read gives name (the run then reports the file).
function orch.key_if_present(path, name)
  check.arg_type("orch.key_if_present", 1, path, "string")
  check.arg_type("orch.key_if_present", 2, name, "string")
  local ok, first = pcall(function()
    return orch.rows(path)()
  end)
  if ok and type(first) == "table" and first[name] == nil then
    return nil
  end
  return name
end

--- orch.llm_params([defaults]) -> the llm table of a ready workflow, read
--- from --set provider=, model=, base_url= and concurrency= (each listed by
--- `orch params`); defaults: provider "mock", model "mock", concurrency 32.
--- Other keys of defaults (max_tokens, say) are copied as they are.
function orch.llm_params(defaults)
  defaults = defaults or {}
  check.arg_type("orch.llm_params", 1, defaults, "table")
  local llm = {}
  for k, v in pairs(defaults) do
    llm[k] = v
  end
  llm.provider = orch.param("provider", defaults.provider or "mock", "mock (offline), openai or anthropic")
  llm.model = orch.param("model", defaults.model or "mock", "the model's name")
  llm.base_url = orch.param("base_url", nil, "the server's URL (default: OPENAI_BASE_URL or ANTHROPIC_BASE_URL)")
  llm.concurrency = orch.param("concurrency", defaults.concurrency or 32, "LLM requests in flight at once")
  return llm
end

-- Error policies ----------------------------------------------------------

--- orch.retry(n [, after]) : rerun a failed row up to n more times, then
--- apply `after` ("skip" by default, or "fail", or orch.default(...)).
function orch.retry(n, after)
  if math.type(n) ~= "integer" or n < 1 or n > 100 then
    check.fail("orch.retry(n): n must be an integer from 1 to 100, got %s", tostring(n))
  end
  after = after or "skip"
  check.on_error("orch.retry", after, false)
  return setmetatable({ policy = "retry", times = n, after = after }, check.Spec)
end

--- orch.default(value) : a failed row is written as value. A table is
--- merged over the input row; a function(row, err) returns the row.
function orch.default(value)
  local t = type(value)
  if t ~= "table" and t ~= "function" then
    check.fail("orch.default(value): value must be a table or a function(row, err), got %s", t)
  end
  return setmetatable({ policy = "default", value = value }, check.Spec)
end

-- Checkpoint policies: orch.policy.every_rows(n), every_seconds(s),
-- on_events{...}, adaptive{...}, any{...} (see lua/orch/policy.lua).
orch.policy = require("orch.policy")

-- Observers: orch.observe.progress{...}, cost(), jsonl(path) (see lua/orch/observe.lua).
orch.observe = require("orch.observe")

-- The workflow ------------------------------------------------------------

--- orch.workflow{...} -> the checked workflow description.
function orch.workflow(spec)
  return check.workflow(spec)
end

return orch
