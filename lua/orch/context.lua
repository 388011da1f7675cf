-- orch.context: the execution context handed to every stage and step.
--
--   ctx.run_id   the run's id          ctx.row   the row's number (1-based)
--   ctx.key      the row's key         ctx.state the run's shared key/value table
--   ctx:sleep(s) ctx:llm{...} ctx:log(level, msg) ctx:emit(event, data)
--   ctx:checkpoint(name)  asks for a checkpoint now, whatever the policy
--
-- ctx:sleep and ctx:llm suspend only the calling row's coroutine.
local sched = require("orch.sched")
local llm = require("orch.llm")

local Context = {}
Context.__index = Context
Context.__name = "orch.Context"

local M = {}

--- new(run, row_number, key) -> ctx. `run` is the driver's run record.
function M.new(run, row, key)
  return setmetatable({ run_id = run.id, row = row, key = key, state = run.state, _run = run }, Context)
end

function Context:sleep(seconds)
  if type(seconds) ~= "number" then
    error("ctx:sleep(seconds): expected a number, got " .. type(seconds), 2)
  end
  sched.sleep(seconds)
end

function Context:llm(req)
  return llm.call(self, self._run.llm, req)
end

-- Adds one call to totals[group][name] (created on first use).
local function add_to(t, group, name, tokens, cost)
  local groups = t[group]
  if groups == nil then
    groups = {}
    t[group] = groups
  end
  local g = groups[name]
  if g == nil then
    g = { calls = 0, tokens = 0, cost = 0 }
    groups[name] = g
  end
  g.calls = g.calls + 1
  g.tokens = g.tokens + tokens
  g.cost = g.cost + cost
end

-- Adds one call's figures to t: calls, tokens, cost, per model and stage.
-- info's fields are read once each (a replayed row counts every call twice:
-- in the run's live totals and in its own usage).
local function add_call(t, info, stage)
  local tin, tout, cost = info.tokens_in, info.tokens_out, info.cost
  local tokens = tin + tout
  t.llm_calls = t.llm_calls + 1
  t.tokens_in = t.tokens_in + tin
  t.tokens_out = t.tokens_out + tout
  t.cost = t.cost + cost
  local model = info.model
  if model then
    add_to(t, "by_model", model, tokens, cost)
  end
  if stage then
    add_to(t, "by_stage", stage, tokens, cost)
  end
  if info.estimated then -- the provider sent no usage: tokens counted from the text
    t.estimated_calls = (t.estimated_calls or 0) + 1
  end
  local attempts = info.attempts
  if attempts and attempts > 1 then -- 429s, 5xx, timeouts sent again
    t.retries = (t.retries or 0) + attempts - 1
  end
  if info.cached then
    t.cached_calls = (t.cached_calls or 0) + 1
    t.saved = (t.saved or 0) + (info.saved or 0)
  end
end

-- A row's usage after its first call: what add_call makes of
-- { llm_calls = 0, tokens_in = 0, tokens_out = 0, cost = 0 } and info,
-- built in whole tables (most rows make one call).
local function first_call(info, stage)
  local tin, tout, cost = info.tokens_in, info.tokens_out, 0 + info.cost
  local model, tokens = info.model, tin + tout
  local u = { llm_calls = 1, tokens_in = 0 + tin, tokens_out = 0 + tout, cost = cost,
    by_model = model and { [model] = { calls = 1, tokens = 0 + tokens, cost = cost } } or nil,
    by_stage = stage and { [stage] = { calls = 1, tokens = 0 + tokens, cost = cost } } or nil }
  if info.estimated then
    u.estimated_calls = 1
  end
  if info.attempts and info.attempts > 1 then
    u.retries = info.attempts - 1
  end
  if info.cached then
    u.cached_calls = 1
    u.saved = 0 + (info.saved or 0)
  end
  return u
end

--- Adds an LLM call's usage to the run's live totals (for the budget and
--- the progress line) and to the row's own (ctx.usage), which the run
--- adds to its checkpointed figures when the row settles, so a row that
--- runs again after a crash is counted once.
function Context:account(info)
  local run, stage = self._run, self.stage
  add_call(run.totals, info, stage)
  local u = self.usage
  if u == nil then
    self.usage = first_call(info, stage)
  else
    add_call(u, info, stage)
  end
  if run.after_spend then
    run.after_spend(info)
  end
end

-- Adds src's groups (by_model or by_stage: name -> { calls, tokens, cost })
-- to dst's, creating what dst lacks.
local function add_groups(dst, src, group)
  local from = src[group]
  if from == nil then
    return
  end
  local to = dst[group]
  if to == nil then
    to = {}
    dst[group] = to
  end
  for name, g in pairs(from) do
    local d = to[name]
    if d == nil then
      to[name] = { calls = 0 + g.calls, tokens = 0 + g.tokens, cost = 0 + g.cost }
    else
      d.calls = d.calls + g.calls
      d.tokens = d.tokens + g.tokens
      d.cost = d.cost + g.cost
    end
  end
end

-- The figures a usage may hold besides the four every usage has.
local optional = { "estimated_calls", "retries", "cached_calls", "saved" }

--- add_usage(dst, src): adds a row's usage (ctx.usage, as account makes
--- it) to dst, the run's checkpointed totals, when the row settles: the
--- sums a walk of src's numbers and nested tables would make, by the
--- fields account writes, without walking (a walk cost 22,000
--- instructions a row).
function M.add_usage(dst, src)
  dst.llm_calls = (dst.llm_calls or 0) + src.llm_calls
  dst.tokens_in = (dst.tokens_in or 0) + src.tokens_in
  dst.tokens_out = (dst.tokens_out or 0) + src.tokens_out
  dst.cost = (dst.cost or 0) + src.cost
  for i = 1, 4 do
    local k = optional[i]
    local v = src[k]
    if v ~= nil then
      dst[k] = (dst[k] or 0) + v
    end
  end
  add_groups(dst, src, "by_model")
  add_groups(dst, src, "by_stage")
end

local levels = require("orch.log").LEVEL_RANK -- the levels a message may have

--- ctx:log(level, msg) or ctx:log(msg) (info): written through the run's
--- log at that level, so -q keeps warn and error, -v shows debug, and
--- --log-json carries the level as given.
function Context:log(level, msg)
  if msg == nil then
    level, msg = "info", level
  end
  if levels[level] == nil then
    error("ctx:log: level must be debug, info, warn or error, got " .. tostring(level), 2)
  end
  self._run.log(0, string.format("[%s] row %s: %s", level, tostring(self.row), tostring(msg)), level)
end

--- Asks the run for a checkpoint named `name` and waits until the driver
--- has written it. It covers the rows settled by then and ctx.state as it
--- is (a row in flight, this one included, is covered by a later one).
--- Requests of the same moment share one.
function Context:checkpoint(name)
  if name ~= nil and type(name) ~= "string" then
    error("ctx:checkpoint(name): name must be a string, got " .. type(name), 2)
  end
  if self._run.request_checkpoint then
    self._run.request_checkpoint(name or "requested")
  end
end

function Context:emit(event, data)
  if type(event) ~= "string" then
    error("ctx:emit(event, data): event must be a string, got " .. type(event), 2)
  end
  self._run.emit(event, data, self)
end

return M
