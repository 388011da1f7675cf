-- orch.check: validation of workflow descriptions.
--
-- Errors raised here are WorkflowError values whose message starts with the
-- file:line of the user's code that made the mistake (the first stack frame
-- outside orch's own modules), so `orch run` can print them without a
-- traceback and exit 2.
local M = {}

M.Spec = { __name = "orch.Spec" }
M.Workflow = { __name = "orch.Workflow" }

local WorkflowError = { __name = "orch.WorkflowError" }
WorkflowError.__tostring = function(e)
  return e.msg
end
M.WorkflowError = WorkflowError

function M.is_error(v)
  return getmetatable(v) == WorkflowError
end

-- The user's code that called into orch: the first Lua frame outside
-- orch's own modules. A C frame on the way (the loader's xpcall, when the
-- workflow chunk tail-called orch.workflow and so left no frame) means the
-- location is unknown; M.locate then finds the line in the file.
local function user_location()
  local level = 3
  while true do
    local info = debug.getinfo(level, "Sl")
    if info == nil or info.what == "C" then
      return nil
    end
    if info.currentline > 0 and not info.source:match("^@lua/orch/") then
      return info.short_src .. ":" .. info.currentline
    end
    level = level + 1
  end
end

local function raise_at(where, key, fmt, ...)
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or fmt
  error(setmetatable({ msg = where and (where .. ": " .. msg) or msg, located = where ~= nil, key = key },
    WorkflowError), 0)
end

local function raise(key, fmt, ...)
  raise_at(user_location(), key, fmt, ...)
end

--- where() -> "file:line" of the user's code calling into orch, or nil:
--- what a constructor keeps so that a later check can point at it.
function M.where()
  return user_location()
end

--- fail_at(where, key, fmt, ...): a WorkflowError at `where` (from
--- M.where()); without one, located as M.fail_key does.
function M.fail_at(where, key, fmt, ...)
  if where == nil then
    raise(key, fmt, ...)
  end
  raise_at(where, key, fmt, ...)
end

--- Raises a WorkflowError located at the user's code.
function M.fail(fmt, ...)
  raise(nil, fmt, ...)
end

--- Same, naming the key at fault: `return orch.workflow{...}` is a tail
--- call that leaves no stack frame to locate, so the loader finds the
--- key's line in the file instead (see M.locate).
function M.fail_key(key, fmt, ...)
  raise(key, fmt, ...)
end

--- Gives an unlocated WorkflowError the file:line of its key (or of the
--- orch.workflow call) in the workflow file at path.
function M.locate(e, path)
  if e.located then
    return e
  end
  local fh = io.open(path, "r")
  if fh == nil then
    return e
  end
  local n, keyline, callline = 0, nil, nil
  for line in fh:lines() do
    n = n + 1
    if e.key and keyline == nil and line:find("%f[%w_]" .. e.key:gsub("%p", "%%%0") .. "%s*=") then
      keyline = n
    end
    if callline == nil and line:find("orch%.workflow") then
      callline = n
    end
  end
  fh:close()
  local at = keyline or callline
  if at then
    e.msg = string.format("%s:%d: %s", path, at, e.msg)
    e.located = true
  end
  return e
end

local function distance(a, b)
  local prev = {}
  for j = 0, #b do
    prev[j] = j
  end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

--- The closest name in `names` to `word`, if it is a plausible typo: a few
--- edits away, or one is the start of the other ("warn" for "warn_at").
function M.suggest(word, names)
  local best, bestd
  local w = word:lower()
  for _, n in ipairs(names) do
    local l = n:lower()
    local d = distance(w, l)
    local short, long = w, l
    if #short > #long then
      short, long = long, short
    end
    local prefix = #short >= 3 and long:sub(1, #short) == short
    if (d <= math.max(2, #n // 3) or prefix) and (bestd == nil or d < bestd) then
      best, bestd = n, d
    end
  end
  return best
end

--- sorted_keys(t) -> the keys of t (all strings or all numbers), sorted
function M.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  return keys
end
local sorted_keys = M.sorted_keys

--- Checks that `t` only has keys listed in `allowed` (key -> type name,
--- "a|b" alternatives, or true for any type).
function M.known_keys(what, t, allowed)
  for k, v in pairs(t) do
    if type(k) ~= "string" then
      M.fail_key(nil, "%s: unexpected entry [%s]; expected named keys (%s)", what, tostring(k),
        table.concat(sorted_keys(allowed), ", "))
    end
    local want = allowed[k]
    if want == nil then
      local names = sorted_keys(allowed)
      if #names == 0 then
        M.fail_key(k, "%s: unknown key '%s'; it takes no options", what, k)
      end
      local hint = M.suggest(k, names)
      M.fail_key(k, "%s: unknown key '%s'%s; expected one of: %s", what, k,
        hint and (" (did you mean '" .. hint .. "'?)") or "", table.concat(names, ", "))
    end
    if want ~= true then
      local ok = false
      for alt in want:gmatch("[^|]+") do
        if type(v) == alt or (alt == "integer" and math.type(v) == "integer") then
          ok = true
        end
      end
      if not ok then
        M.fail_key(k, "%s: '%s' must be %s, got %s%s", what, k, M.with_article(want:gsub("|", " or ")),
          type(v), (type(v) == "number" or type(v) == "boolean") and (" " .. tostring(v)) or "")
      end
    end
  end
end

--- "an integer", "a string or function"
function M.with_article(words)
  return (words:match("^[aeiou]") and "an " or "a ") .. words
end

function M.arg_type(fname, n, v, want)
  if type(v) ~= want then
    M.fail("%s: argument %d must be a %s, got %s", fname, n, want, type(v))
  end
end

--- Checks an on_error value: "skip", "fail", orch.retry(...), orch.default(...).
function M.on_error(what, v, allow_retry)
  local fail = function(...)
    M.fail_key("on_error", ...)
  end
  if v == "skip" or v == "fail" then
    return
  end
  if getmetatable(v) == M.Spec and (v.policy == "default" or (allow_retry and v.policy == "retry")) then
    return
  end
  fail("%s: on_error must be \"skip\", \"fail\", %sorch.default(value), got %s", what,
    allow_retry and "orch.retry(n), " or "", type(v) == "string" and ("\"" .. v .. "\"") or type(v))
end

local workflow_keys = {
  name = "string", description = "string",
  -- rows in and out
  input = "table|function", output = "table", errors = "table", key = "string|function",
  -- the work
  stages = "table", steps = true, on_error = true, llm = "table",
  -- limits
  concurrency = "integer", burst_timeout = "number", max_memory = "integer", budget = true,
  -- durability and watching
  checkpoint = true, observers = true,
}

-- A stage written as a table (see orch.stage); orch.stage.* values carry more.
local stage_keys = { name = "string", run = "function", critical = "boolean" }

-- Keys of the contract that this version does not carry out yet: refusing
-- them beats silently ignoring a budget.
local not_yet = {}

local function check_file_spec(what, key, v, io)
  if getmetatable(v) ~= M.Spec or v.io ~= io then
    local ctor = io == "read" and "orch.read.csv(path) or orch.read.jsonl(path)"
      or "orch.write.jsonl(path) or orch.write.csv(path)"
    M.fail_key(key, "%s: expected %s, got %s", what, ctor, type(v))
  end
end

-- A DAG of steps runs as rows (orch.steps): one per step, in order.
local function plan_steps(spec)
  for _, k in ipairs({ "input", "stages", "key" }) do
    if spec[k] ~= nil then
      M.fail_key(k, "orch.workflow: '%s' cannot be given with 'steps' (the steps are the rows; a step can read "
        .. "files and call ctx:llm itself)", k)
    end
  end
  local steps = require("orch.steps")
  local input, stage = steps.plan(spec, steps.check(spec.steps))
  spec.input, spec.stages, spec.key = input, { stage }, "step"
  -- steps are few and costly: checkpoint after each, and stop at the first that fails
  spec.checkpoint = spec.checkpoint or require("orch.policy").every_rows(1)
  spec.on_error = spec.on_error or "fail"
end

local function check_files(spec)
  if spec.input == nil then
    M.fail("orch.workflow: 'input' is required: orch.read.csv(path), orch.read.jsonl(path), a table of rows or an iterator function")
  end
  if type(spec.input) == "table" and getmetatable(spec.input) == M.Spec then
    check_file_spec("orch.workflow: 'input'", "input", spec.input, "read")
  elseif type(spec.input) == "table" then
    for i, row in ipairs(spec.input) do
      if type(row) ~= "table" then
        M.fail_key("input", "orch.workflow: input[%d] must be a table (a row), got %s", i, type(row))
      end
    end
  end
  if spec.output ~= nil then
    check_file_spec("orch.workflow: 'output'", "output", spec.output, "write")
  end
  if spec.errors ~= nil then
    check_file_spec("orch.workflow: 'errors'", "errors", spec.errors, "write")
  end
end

-- checkpoint, observers and the numeric limits
local function check_run_options(spec)
  if spec.checkpoint ~= nil and type(spec.checkpoint) ~= "function"
    and getmetatable(spec.checkpoint) ~= require("orch.policy").Policy then
    M.fail_key("checkpoint", "orch.workflow: 'checkpoint' must be orch.policy.every_rows(n), every_seconds(s), "
      .. "on_events{...}, adaptive{...}, any{...} or a function(s) -> boolean, got %s", type(spec.checkpoint))
  end
  if spec.observers ~= nil then
    require("orch.observe").check(spec.observers)
  end
  if spec.burst_timeout ~= nil and not (spec.burst_timeout > 0) then
    M.fail_key("burst_timeout", "orch.workflow: 'burst_timeout' must be a positive number of seconds, got %s",
      tostring(spec.burst_timeout))
  end
  if spec.max_memory ~= nil and spec.max_memory < 1 then
    M.fail_key("max_memory", "orch.workflow: 'max_memory' must be a positive number of MB, got %d", spec.max_memory)
  end
  if spec.concurrency ~= nil and spec.concurrency < 1 then
    M.fail_key("concurrency", "orch.workflow: 'concurrency' must be at least 1, got %d", spec.concurrency)
  end
end

local function check_stages(spec)
  if spec.stages == nil or #spec.stages == 0 then
    M.fail("orch.workflow: 'stages' is required: a list of functions(row, ctx) or orch.stage.* values")
  end
  for k in pairs(spec.stages) do
    if math.type(k) ~= "integer" or k < 1 or k > #spec.stages then
      M.fail_key("stages", "orch.workflow: 'stages' must be a list, found key %s", tostring(k))
    end
  end
  for i, s in ipairs(spec.stages) do
    if type(s) == "table" and getmetatable(s) == nil then -- orch.stage.* values were checked when made
      M.known_keys("orch.workflow: stages[" .. i .. "]", s, stage_keys)
    end
    if type(s) == "table" and type(s.run) == "function" then
      if s.needs_llm and spec.llm == nil then
        M.fail_key("stages", "orch.workflow: stages[%d] (%s) calls an LLM but the workflow has no llm = { provider = ... }", i,
          s.name)
      end
    elseif type(s) ~= "function" then
      M.fail_key("stages", "orch.workflow: stages[%d] must be a function(row, ctx), an orch.stage.* value or a table { name =, run = function(row, ctx) }, got %s", i, type(s))
    end
  end
end

local function check_budget(budget)
  if type(budget) ~= "table" then
    M.fail_key("budget", "orch.workflow: 'budget' must be a table { max_usd =, warn_at = { 0.5, 0.8 } }, got %s",
      type(budget))
  end
  M.known_keys("orch.workflow: budget", budget, { max_usd = "number", warn_at = "table" })
  if budget.max_usd == nil or budget.max_usd <= 0 then
    M.fail_key("max_usd", "orch.workflow: budget.max_usd must be a positive number of dollars")
  end
  for i, f in ipairs(budget.warn_at or {}) do
    if type(f) ~= "number" or f <= 0 or f > 1 then
      M.fail_key("warn_at", "orch.workflow: budget.warn_at[%d] must be a fraction in (0, 1], got %s", i, tostring(f))
    end
  end
end

--- options(what, t, allowed): t must be a table of named options, each
--- known to `allowed` (see known_keys) and of its type; raises otherwise.
function M.options(what, t, allowed)
  if type(t) ~= "table" then
    M.fail("%s expects a table {...}, got %s", what, type(t))
  end
  M.known_keys(what, t, allowed)
end

--- orch.workflow{...}: checks the description (raising a WorkflowError at
--- the user's line) and returns it marked as a workflow.
function M.workflow(spec)
  M.options("orch.workflow", spec, workflow_keys)
  for k, what in pairs(not_yet) do
    if spec[k] ~= nil then
      M.fail_key(k, "orch.workflow: '%s' is not supported by this version of orch (%s are not available yet)", k, what)
    end
  end
  if spec.name == nil or spec.name == "" then
    M.fail("orch.workflow: 'name' is required (a string that identifies the workflow)")
  end
  if spec.steps ~= nil then
    plan_steps(spec)
  end
  check_files(spec)
  check_run_options(spec)
  check_stages(spec)
  M.on_error("orch.workflow", spec.on_error or "skip", true)
  if spec.llm ~= nil then
    require("orch.llm").check_config(spec.llm)
  end
  if spec.budget ~= nil then
    check_budget(spec.budget)
  end
  require("orch.paths").check(spec) -- no sink on the input or on another sink
  return setmetatable(spec, M.Workflow)
end

return M
