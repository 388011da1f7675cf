-- orch.policy: when a run writes a checkpoint.
--
-- A policy is a table { name =, decide = function(s) -> bool } (what the
-- constructors below return), or a plain function(s) -> bool. The row
-- driver asks it after every settled row and after every event, with one
-- table s of counters:
--
--   rows_since, seconds_since, cost_since_usd, tokens_since  since the last checkpoint
--   event               the event being reported ("budget_warning", a ctx:emit name), or nil
--   last_checkpoint_ms  wall-clock ms of the last checkpoint
--   mean_checkpoint_ms  what a checkpoint has cost this run, on average
--   rows_done, rows_total  rows settled so far; rows_total is nil (not known ahead)
--
-- Whatever the policy says, the driver also checkpoints at the end, when
-- stopped, and when MAX_PENDING rows wait (their results are held in memory).
--
-- A built-in policy also has bounds(mean_checkpoint_ms) -> rows, seconds,
-- usd: with no event, its decide says no while rows_since, seconds_since
-- and cost_since_usd are all below them. The driver asks such a policy
-- only once one of them is reached (a call a settled row cost a quarter
-- of the row engine's instructions under every_seconds and adaptive);
-- what it decides, and when, is the same.
local check = require("orch.check")

local M = {}

local Policy = { __name = "orch.Policy" }
M.Policy = Policy

local function make(name, decide, bounds)
  return setmetatable({ name = name, decide = decide, bounds = bounds }, Policy)
end

local huge = math.huge

local function positive(fname, v, integer)
  if type(v) ~= "number" or v <= 0 or (integer and math.type(v) ~= "integer") then
    check.fail("%s expects a positive %s, got %s", fname, integer and "integer" or "number",
      (type(v) == "number" or v == nil) and tostring(v) or type(v))
  end
end

-- Raises unless list (a table) holds only the entries 1..n: a named key
-- there is a typo that ipairs would silently skip.
local function list_only(fname, list, what)
  for k in pairs(list) do
    if math.type(k) ~= "integer" or k < 1 or k > #list then
      check.fail("%s: unexpected key '%s'; it takes a list of %s", fname, tostring(k), what)
    end
  end
end

-- Something new to save: a checkpoint of nothing is not worth a transaction.
local function dirty(s)
  return s.rows_since > 0 or s.cost_since_usd > 0
end

--- every_rows(n): after every n settled rows.
function M.every_rows(n)
  positive("orch.policy.every_rows(n)", n, true)
  local p = make("rows", function(s)
    return s.rows_since >= n
  end, function()
    return n, huge, huge
  end)
  p.rows = n -- the row driver compares this itself, without a call per row
  return p
end

--- every_seconds(sec): when sec seconds have passed since the last one.
function M.every_seconds(sec)
  positive("orch.policy.every_seconds(seconds)", sec)
  return make("time", function(s)
    return s.seconds_since >= sec and dirty(s)
  end, function()
    return huge, sec, huge
  end)
end

-- A non-empty list of what, and nothing but a list.
local function list_arg(what, v, noun)
  if type(v) ~= "table" or #v == 0 then
    check.fail("%s expects a list of %s, got %s", what, noun, type(v))
  end
  list_only(what, v, noun)
end

--- on_events{ "budget_warning", "my_event", ... }: when one of these is
--- reported (budget warnings, names given to ctx:emit).
function M.on_events(names)
  list_arg("orch.policy.on_events{...}", names, "event names")
  local set = {}
  for i, n in ipairs(names) do
    if type(n) ~= "string" then
      check.fail("orch.policy.on_events: event %d must be a string, got %s", i, type(n))
    end
    set[n] = true
  end
  return make("event", function(s)
    return s.event ~= nil and set[s.event] == true
  end, function()
    return huge, huge, huge
  end)
end

--- any{ p1, p2, ... }: when any of them says so.
function M.any(list)
  list_arg("orch.policy.any{...}", list, "policies")
  local decides, all_bounds = {}, {}
  for i, p in ipairs(list) do
    decides[i] = M.decider(p, "orch.policy.any: policy " .. i)
    all_bounds[i] = type(p) == "table" and p.bounds
  end
  local bounds = function(mean_ms) -- the lowest of its policies' (none if one has none)
    local rows, seconds, usd = huge, huge, huge
    for i = 1, #list do
      if not all_bounds[i] then
        return 0, 0, 0
      end
      local r, t, u = all_bounds[i](mean_ms)
      rows, seconds, usd = math.min(rows, r), math.min(seconds, t), math.min(usd, u)
    end
    return rows, seconds, usd
  end
  return make("any", function(s)
    for _, d in ipairs(decides) do
      if d(s) then
        return true
      end
    end
    return false
  end, bounds)
end

local adaptive_keys = {
  target = "number", min_interval = "number", max_interval = "number", mtbf = "number", -- the interval
  max_rows = "integer", max_usd = "number", -- what may be at risk
}

--- adaptive{ target = 0.01, min_interval = 1, max_interval = 60, mtbf = 3600,
---           max_rows = 100000, max_usd = 1 }:
--- the Young–Daly interval sqrt(2·C·MTBF) from the measured checkpoint cost
--- C, no shorter than C / target (so checkpoints take at most `target` of
--- the wall time), clamped to [min_interval, max_interval] seconds; and
--- sooner when max_rows rows or max_usd dollars are at risk.
function M.adaptive(opts)
  opts = opts or {}
  check.options("orch.policy.adaptive", opts, adaptive_keys)
  local target = opts.target or 0.01
  local lo, hi = opts.min_interval or 1, opts.max_interval or 60
  local mtbf = opts.mtbf or 3600
  local max_rows, max_usd = opts.max_rows or 100000, opts.max_usd or 1
  for k, v in pairs({ target = target, min_interval = lo, max_interval = hi, mtbf = mtbf, max_rows = max_rows,
    max_usd = max_usd }) do
    positive("orch.policy.adaptive: " .. k, v)
  end
  if lo > hi then
    check.fail("orch.policy.adaptive: min_interval (%g) is above max_interval (%g)", lo, hi)
  end
  local p = make("adaptive", nil)
  function p.interval(mean_ms)
    local c = (mean_ms or 0) / 1000
    local t = math.max(math.sqrt(2 * c * mtbf), c / target)
    return math.min(math.max(t, lo), hi)
  end
  p.decide = function(s)
    if s.rows_since >= max_rows or s.cost_since_usd >= max_usd then
      return true
    end
    return dirty(s) and s.seconds_since >= p.interval(s.mean_checkpoint_ms)
  end
  p.bounds = function(mean_ms)
    return max_rows, p.interval(mean_ms), max_usd
  end
  return p
end

--- decider(p, what) -> function(s) -> bool, for a policy table or function.
function M.decider(p, what)
  if type(p) == "function" then
    return p
  end
  if getmetatable(p) == Policy then
    return p.decide
  end
  check.fail("%s: expected orch.policy.every_rows(n), every_seconds(s), on_events{...}, adaptive{...}, "
    .. "any{...} or a function(s) -> boolean, got %s", what, type(p))
end

--- name(p) -> the reason checkpoints written for p record.
function M.name(p)
  return type(p) == "table" and p.name or "policy"
end

return M
