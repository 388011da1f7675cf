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

-- A row's usage is kept flat while its calls share one model and one
-- stage (most rows make one call): its figures, with the names in _model
-- and _stage (false: none), and no by_model/by_stage tables. expand makes
-- the nested form in place; its figures are the flat ones (calls, tokens
-- in + out, cost: the same sums in the same order). -> u
local function expand(u)
  local model, stage = u._model, u._stage
  if model == nil then
    return u -- nested already
  end
  local calls, tokens, cost = u.llm_calls, u.tokens_in + u.tokens_out, u.cost
  u._model, u._stage = nil, nil
  if model then
    u.by_model = { [model] = { calls = calls, tokens = tokens, cost = cost } }
  end
  if stage then
    u.by_stage = { [stage] = { calls = calls, tokens = tokens, cost = cost } }
  end
  return u
end
M.expand_usage = expand

-- A context whose row's usage is flat has this metatable: the same
-- methods, and ctx.usage, not a field yet, made nested on its first read
-- (then a field: next, rawget, json.encode and cjson see it as before).
local Flat = { __name = "orch.Context" }

-- ctx.usage from ctx._usage, nested; ctx back to Context. -> the usage
local function nested(ctx)
  local u = expand(rawget(ctx, "_usage"))
  rawset(ctx, "usage", u)
  setmetatable(ctx, Context)
  return u
end

function Flat.__index(ctx, k)
  if k == "usage" then
    return nested(ctx)
  end
  return Context[k]
end

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

-- Adds a call's rarer figures to t: estimated, retried, answered by the journal.
local function add_extras(t, info)
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

-- Adds one call's figures to t: calls, tokens, cost, per model and stage.
-- tin, tout, cost and model are info's, read once by account (a call is
-- counted twice: in the run's live totals and in the row's usage); a group
-- already there is added to in place, without add_to's call.
local function add_call(t, info, stage, tin, tout, cost, model)
  local tokens = tin + tout
  t.llm_calls = t.llm_calls + 1
  t.tokens_in = t.tokens_in + tin
  t.tokens_out = t.tokens_out + tout
  t.cost = t.cost + cost
  if model then
    local groups = t.by_model
    local g = groups and groups[model]
    if g then
      g.calls, g.tokens, g.cost = g.calls + 1, g.tokens + tokens, g.cost + cost
    else
      add_to(t, "by_model", model, tokens, cost)
    end
  end
  if stage then
    local groups = t.by_stage
    local g = groups and groups[stage]
    if g then
      g.calls, g.tokens, g.cost = g.calls + 1, g.tokens + tokens, g.cost + cost
    else
      add_to(t, "by_stage", stage, tokens, cost)
    end
  end
  local estimated, cached, attempts = info.estimated, info.cached, info.attempts
  if cached and not estimated and (attempts or 0) <= 1 then -- a journal's reply: add_extras' figures, inline
    t.cached_calls = (t.cached_calls or 0) + 1
    t.saved = (t.saved or 0) + (info.saved or 0)
  elseif estimated or cached or (attempts or 0) > 1 then
    add_extras(t, info)
  end
end

-- A row's usage after its first call, flat (see expand): one table where
-- the nested form made five. A reply from the journal (every replayed
-- row's) has its two figures set here, in add_extras' order, without its
-- call and its two other checks.
local function first_call(info, stage, tin, tout, cost, model)
  local u = { llm_calls = 1, tokens_in = 0 + tin, tokens_out = 0 + tout, cost = 0 + cost, _model = model or false,
    _stage = stage or false }
  local estimated, cached, attempts = info.estimated, info.cached, info.attempts
  if cached and not estimated and (attempts or 0) <= 1 then
    u.cached_calls = 1
    u.saved = 0 + (info.saved or 0)
  elseif estimated or cached or (attempts or 0) > 1 then
    add_extras(u, info)
  end
  return u
end

-- A later call of a row whose usage is flat: added to the flat figures
-- when its model and stage are the row's, else to the nested form.
local function next_call(ctx, u, info, stage, tin, tout, cost, model)
  if u._model == (model or false) and u._stage == (stage or false) then
    u.llm_calls = u.llm_calls + 1
    u.tokens_in = u.tokens_in + tin
    u.tokens_out = u.tokens_out + tout
    u.cost = u.cost + cost
    if info.estimated or info.cached or (info.attempts or 0) > 1 then
      add_extras(u, info)
    end
  else
    add_call(nested(ctx), info, stage, tin, tout, cost, model)
  end
end

--- Adds an LLM call's usage to the run's live totals (for the budget and
--- the progress line) and to the row's own (ctx._usage; ctx.usage is its
--- nested form, made when read), which the run adds to its checkpointed
--- figures when the row settles, so a row that runs again after a crash
--- is counted once.
function Context:account(info)
  local run, stage = self._run, self.stage
  local tin, tout, cost, model = info.tokens_in, info.tokens_out, info.cost, info.model
  add_call(run.totals, info, stage, tin, tout, cost, model)
  local u = self._usage -- the row's usage, flat or nested (ctx.usage then)
  if u == nil then
    self._usage = first_call(info, stage, tin, tout, cost, model)
    setmetatable(self, Flat)
  elseif u._model ~= nil then
    next_call(self, u, info, stage, tin, tout, cost, model)
  else
    add_call(u, info, stage, tin, tout, cost, model)
  end
  local after_spend = run.after_spend
  if after_spend then
    after_spend(info)
  end
end

-- Adds one group's figures to dst[group][name], creating what dst lacks.
local function add_group(dst, group, name, calls, tokens, cost)
  local to = dst[group]
  if to == nil then
    to = {}
    dst[group] = to
  end
  local d = to[name]
  if d == nil then
    to[name] = { calls = 0 + calls, tokens = 0 + tokens, cost = 0 + cost }
  else
    d.calls = d.calls + calls
    d.tokens = d.tokens + tokens
    d.cost = d.cost + cost
  end
end

-- Adds src's groups (by_model or by_stage: name -> { calls, tokens, cost })
-- to dst's.
local function add_groups(dst, src, group)
  for name, g in next, src[group] do
    add_group(dst, group, name, g.calls, g.tokens, g.cost)
  end
end

-- Adds a flat usage's one model and one stage (see expand) to dst's
-- groups: the figures its nested form would hold.
local function add_flat(dst, src, model, stage)
  local calls, tokens, cost = src.llm_calls, src.tokens_in + src.tokens_out, src.cost
  if model then
    add_group(dst, "by_model", model, calls, tokens, cost)
  end
  if stage then
    add_group(dst, "by_stage", stage, calls, tokens, cost)
  end
end

-- Adds src's rarer figures (those add_extras writes) to dst's.
local function add_optional(dst, src, estimated, retries, cached, saved)
  if estimated ~= nil then
    dst.estimated_calls = (dst.estimated_calls or 0) + estimated
  end
  if retries ~= nil then
    dst.retries = (dst.retries or 0) + retries
  end
  if cached ~= nil then
    dst.cached_calls = (dst.cached_calls or 0) + cached
  end
  if saved ~= nil then
    dst.saved = (dst.saved or 0) + saved
  end
end

--- add_usage(dst, src): adds a row's usage (ctx._usage, flat or nested,
--- as account makes it) to dst, the run's checkpointed totals, when the
--- row settles: the sums a walk of its nested form's numbers and tables
--- would make, by the fields account writes, without walking (a walk cost
--- 22,000 instructions a row) and without making the nested form.
function M.add_usage(dst, src)
  dst.llm_calls = (dst.llm_calls or 0) + src.llm_calls
  dst.tokens_in = (dst.tokens_in or 0) + src.tokens_in
  dst.tokens_out = (dst.tokens_out or 0) + src.tokens_out
  dst.cost = (dst.cost or 0) + src.cost
  local estimated, retries, cached, saved = src.estimated_calls, src.retries, src.cached_calls, src.saved
  if cached and not (estimated or retries) then -- a journal's reply (every replayed row): add_optional's, inline
    dst.cached_calls = (dst.cached_calls or 0) + cached
    if saved ~= nil then
      dst.saved = (dst.saved or 0) + saved
    end
  elseif estimated or retries or cached or saved then
    add_optional(dst, src, estimated, retries, cached, saved)
  end
  local model = src._model
  if model ~= nil then
    local stage = src._stage
    local bm, bs = dst.by_model, dst.by_stage
    local gm, gs = model and bm and bm[model], stage and bs and bs[stage]
    if gm and gs then -- most rows: their model's and stage's groups are there, added to in place
      local calls, tokens, cost = src.llm_calls, src.tokens_in + src.tokens_out, src.cost
      gm.calls, gm.tokens, gm.cost = gm.calls + calls, gm.tokens + tokens, gm.cost + cost
      gs.calls, gs.tokens, gs.cost = gs.calls + calls, gs.tokens + tokens, gs.cost + cost
    elseif model or stage then
      add_flat(dst, src, model, stage)
    end
    return
  end
  if src.by_model then
    add_groups(dst, src, "by_model")
  end
  if src.by_stage then
    add_groups(dst, src, "by_stage")
  end
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
