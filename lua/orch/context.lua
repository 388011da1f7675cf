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

--- ctx:llm_text(prompt) -> text | nil, err: ctx:llm { prompt = prompt }
--- without the info table (a prompt stage's call, which reads only the
--- text).
function Context:llm_text(prompt)
  return llm.text(self, self._run.llm, prompt)
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

-- A call's figures, as account_call takes them: tokens in and out, cost,
-- model; cached (answered by the journal) and saved (the cost that saved);
-- attempts (1: sent once; 0: not sent) and estimated (the provider sent
-- no usage: tokens counted from the text).

-- Adds a call's rarer figures to t: estimated, retried, answered by the journal.
local function add_extras(t, cached, saved, attempts, estimated)
  if estimated then
    t.estimated_calls = (t.estimated_calls or 0) + 1
  end
  if attempts and attempts > 1 then -- 429s, 5xx, timeouts sent again
    t.retries = (t.retries or 0) + attempts - 1
  end
  if cached then
    t.cached_calls = (t.cached_calls or 0) + 1
    t.saved = (t.saved or 0) + (saved or 0)
  end
end

-- Adds one call's figures to t: calls, tokens, cost, per model and stage
-- (a row's nested usage); a group already there is added to in place,
-- without add_to's call.
local function add_call(t, stage, tin, tout, cost, model, cached, saved, attempts, estimated)
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
  if cached or estimated or (attempts or 0) > 1 then
    add_extras(t, cached, saved, attempts, estimated)
  end
end

-- A row's usage after its first call, flat (see expand): one table where
-- the nested form made five. A reply from the journal (every replayed
-- row's) or a call paid once, not estimated (most others), is made by
-- one constructor, with add_extras' two figures of a journal's reply in
-- it.
local function first_call(stage, tin, tout, cost, model, cached, saved, attempts, estimated)
  if estimated or (attempts or 0) > 1 then
    local u = { llm_calls = 1, tokens_in = 0 + tin, tokens_out = 0 + tout, cost = 0 + cost, _model = model or false,
      _stage = stage or false }
    add_extras(u, cached, saved, attempts, estimated)
    return u
  end
  return { llm_calls = 1, tokens_in = 0 + tin, tokens_out = 0 + tout, cost = 0 + cost, _model = model or false,
    _stage = stage or false, cached_calls = cached and 1 or nil, saved = cached and 0 + (saved or 0) or nil }
end

-- A later call of a row whose usage is flat: added to the flat figures
-- when its model and stage are the row's, else to the nested form.
local function next_call(ctx, u, stage, tin, tout, cost, model, cached, saved, attempts, estimated)
  if u._model == (model or false) and u._stage == (stage or false) then
    u.llm_calls = u.llm_calls + 1
    u.tokens_in = u.tokens_in + tin
    u.tokens_out = u.tokens_out + tout
    u.cost = u.cost + cost
    if cached or estimated or (attempts or 0) > 1 then
      add_extras(u, cached, saved, attempts, estimated)
    end
  else
    add_call(nested(ctx), stage, tin, tout, cost, model, cached, saved, attempts, estimated)
  end
end

--- ctx:account_call(tin, tout, cost, model, cached, saved, attempts,
--- estimated): adds an LLM call's figures to the run's live totals (for
--- the budget, the checkpoint policy, the progress line and the live
--- figures: sums, no groups) and to the row's own (ctx._usage; ctx.usage
--- is its nested form, made when read), which the run adds to its
--- checkpointed figures, groups by model and stage with them, when the
--- row settles, so a row that runs again after a crash is counted once.
--- A call whose info table nobody reads (a prompt stage's) is counted
--- from its figures, without one.
function Context:account_call(tin, tout, cost, model, cached, saved, attempts, estimated)
  local run, stage = self._run, self.stage
  local t = run.totals
  t.llm_calls = t.llm_calls + 1
  t.tokens_in = t.tokens_in + tin
  t.tokens_out = t.tokens_out + tout
  t.cost = t.cost + cost
  if cached and not estimated and (attempts or 0) <= 1 then -- a journal's reply: add_extras' figures, inline
    t.cached_calls = (t.cached_calls or 0) + 1
    t.saved = (t.saved or 0) + (saved or 0)
  elseif cached or estimated or (attempts or 0) > 1 then
    add_extras(t, cached, saved, attempts, estimated)
  end
  local u = self._usage -- the row's usage, flat or nested (ctx.usage then)
  if u == nil then
    self._usage = first_call(stage, tin, tout, cost, model, cached, saved, attempts, estimated)
    setmetatable(self, Flat)
  elseif u._model ~= nil then
    next_call(self, u, stage, tin, tout, cost, model, cached, saved, attempts, estimated)
  else
    add_call(u, stage, tin, tout, cost, model, cached, saved, attempts, estimated)
  end
  local after_spend = run.after_spend
  if after_spend then
    after_spend(cost)
  end
end

--- ctx:account(info): account_call with the figures of info, the table
--- ctx:llm returns.
function Context:account(info)
  return self:account_call(info.tokens_in, info.tokens_out, info.cost, info.model, info.cached, info.saved,
    info.attempts, info.estimated)
end

--- live_totals(totals) -> the live totals a run starts from: totals' sums
--- (the checkpointed figures of a resumed run), without their groups.
function M.live_totals(totals)
  local live = {}
  for k, v in next, totals do
    if type(v) == "number" then
      live[k] = v
    end
  end
  return live
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

--- sums_open(dst, model, stage) -> the by_model and by_stage groups of
--- model and stage, and dst's figures and theirs, for a settling loop to
--- add rows up in locals (see the driver's flush), once add_usage has
--- added a row whose usage is flat with that model and stage (both set:
--- its groups are there). A later row is added in locals when its usage
--- is flat with the same model and stage and has no estimated calls or
--- retries, and a saved figure with its cached calls or neither:
--- add_usage's additions, in its order. The locals go back with sums_put
--- before anything else reads or adds to dst.
function M.sums_open(dst, model, stage)
  local gm, gs = dst.by_model[model], dst.by_stage[stage]
  return gm, gs, dst.llm_calls, dst.tokens_in, dst.tokens_out, dst.cost, dst.cached_calls, dst.saved, gm.calls,
    gm.tokens, gm.cost, gs.calls, gs.tokens, gs.cost
end

--- sums_put(dst, gm, gs, figures...): stores what sums_open gave, added
--- to, back in dst and its two groups. -> nothing
function M.sums_put(dst, gm, gs, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost, s_calls, s_tokens,
                    s_cost)
  dst.llm_calls, dst.tokens_in, dst.tokens_out, dst.cost = calls, tin, tout, cost
  if cached ~= nil then
    dst.cached_calls = cached
  end
  if saved ~= nil then
    dst.saved = saved
  end
  gm.calls, gm.tokens, gm.cost = m_calls, m_tokens, m_cost
  gs.calls, gs.tokens, gs.cost = s_calls, s_tokens, s_cost
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
