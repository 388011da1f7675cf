-- orch.run.services: what the rows' contexts reach through the run (rt,
-- see orch.context): events and checkpoint requests for the driver, and
-- the LLM services: the response journal, the budget, rate limits, the
-- concurrency gate, and the early stop when the first LLM calls all fail
-- the same way. R is the run's state (see orch.run).
local sched = require("orch.sched")
local json = require("orch.json")
local limits = require("orch.limits")
local observe = require("orch.observe")

local M = {}

--- disk_full(msg, db_path) -> the path a full disk (or quota) refused, in
--- an error message from the sinks (ENOSPC, EDQUOT) or the store
--- (SQLITE_FULL), or nil when msg is about something else.
function M.disk_full(msg, db_path)
  msg = tostring(msg)
  local path = msg:match("([^\n]-): No space left on device") or msg:match("([^\n]-): Disk quota exceeded")
  if path then
    return (path:gsub("^cannot write a checkpoint: ", ""))
  elseif msg:find("database or disk is full", 1, true) then
    return db_path
  end
end

-- Events and checkpoint requests: the rows report them, the driver looks
-- at them once a turn (R.events, R.requested).
local function driver_mail(R, rt)
  local st, run, log = R.st, R.run, R.log
  R.bus = observe.bus(R.wf.observers, log)
  R.events = {} -- reported since the driver last looked: for the policy and the observers
  function rt.emit(event, data, ctx)
    log(1, string.format("event %s%s", event, ctx and (" from row " .. ctx.row) or ""))
    local ok, enc = pcall(json.encode, { data = data, row = ctx and ctx.row })
    st:event_add(run.id, event, ok and enc or nil)
    local events = R.events
    events[#events + 1] = { type = "event", name = event, data = data, row = ctx and ctx.row }
  end
  -- a provider batch's record, already in the store (orch.batch writes it
  -- itself, checked): observers and policies hear it as the event "batch"
  function rt.notify_batch(data)
    local events = R.events
    events[#events + 1] = { type = "event", name = "batch", data = data }
  end
  -- ctx:checkpoint: { name =, task = id } since the driver last looked. The
  -- caller waits (parked) until the driver has written the checkpoint.
  R.requested = {}
  function rt.request_checkpoint(name)
    local me = sched.current()
    local requested, driver_id = R.requested, R.driver_id
    requested[#requested + 1] = { name = name, task = me }
    if driver_id then
      sched.poke(driver_id) -- it may be waiting for rows to finish
    end
    if me and me ~= driver_id then
      sched.park()
    end
  end
end

-- The response journal: a failed write is a warning once, then debug;
-- a full disk pauses the run (R.full).
local function journal(R)
  local st, run, log = R.st, R.run, R.log
  local journal_warned = 0
  return {
    get = function(key)
      return st:journal_get(key)
    end,
    reply = st:journal_replier(), -- what a replayed call reads, without the entry's table
    -- put(key, provider, model, response, tokens_in, tokens_out, cost_usd,
    -- latency_ms): an LLM call's reply, without an entry table; or
    -- put(key, entry) with the same fields as a table (a batch's reply)
    put = function(key, provider, model, response, tin, tout, cost, latency)
      local ok, jerr
      if type(provider) == "table" then
        provider.key, provider.run_id = key, run.id
        ok, jerr = st:journal_put(provider)
      else
        ok, jerr = st:journal_put(key, run.id, provider, model, response, tin, tout, cost, latency)
      end
      if not ok then
        R.full = R.full or M.disk_full(jerr, R.db_path) -- then the pause says it, once
        journal_warned = journal_warned + 1
        local later = journal_warned > 1 or R.full -- debug: said once, or by the pause
        log(later and 1 or 0, "warning: cannot journal an LLM response: " .. tostring(jerr)
          .. (not later and "; later failures are logged with -v" or ""), later and "debug" or "warn")
      end
    end,
  }
end

-- The budget, rate limits and the LLM concurrency gate.
local function llm_limits(R, rt)
  local wf, log = R.wf, R.log
  local max_usd = R.opts.budget or (wf.budget and wf.budget.max_usd)
  if max_usd then
    rt.budget = limits.budget(max_usd, wf.budget and wf.budget.warn_at, R.live, function(f, spent)
      log(0, string.format("budget warning: %s spent, %.0f%% of %s", require("orch.fmt").usd(spent), f * 100,
        require("orch.fmt").usd(max_usd)), "warn")
      rt.emit("budget_warning", { fraction = f, spent_usd = spent, max_usd = max_usd })
    end)
    rt.after_spend = rt.budget.after_spend
  end
  rt.limiter = wf.llm and limits.limiter(wf.llm.rpm, wf.llm.tpm)
  if wf.llm then
    rt.gate = limits.gate(wf.llm.concurrency or R.conc, wf.llm.adaptive, function(from, to, why)
      log(1, string.format("LLM concurrency %d -> %d (%s)", from, to, why))
      rt.emit("concurrency", { from = from, to = to, reason = why })
    end)
  end
end

-- When the first LLM calls all fail the same way (no key, wrong model,
-- unreachable host), stop instead of burning through every row.
local function early_stop(R, rt)
  local live, log = R.live, R.log
  local streak_msg, streak = nil, 0
  function rt.note_failure(msg)
    if live.llm_calls > 0 then
      return
    end
    msg = tostring(msg)
    if msg == streak_msg then
      streak = streak + 1
    else
      streak_msg, streak = msg, 1
    end
    if streak >= R.M.SAME_FAILURES then -- at any concurrency: one unlucky call is no pattern
      rt.abort = "every LLM request fails the same way: " .. msg
    end
  end
  function rt.note_retry(msg)
    R.retries = (R.retries or 0) + 1 -- the live figures' retries and 429s
    if tostring(msg):find("^HTTP 429") then
      R.http_429 = (R.http_429 or 0) + 1
    end
    log(1, "retrying an LLM request: " .. tostring(msg))
  end
end

--- setup(R) -> rt, the run as the rows' contexts see it (R.rt): its id,
--- ctx.state, the LLM settings and services, the live LLM figures (every
--- call as it is made: the budget's and the progress line's).
function M.setup(R)
  local rt = { id = R.run.id, state = R.state, llm = R.wf.llm, totals = R.live, log = R.log,
    store = R.st } -- the store: provider batches are recorded in it (orch.batch)
  R.rt = rt
  driver_mail(R, rt)
  if not R.opts.no_cache then
    rt.journal = journal(R)
  end
  llm_limits(R, rt)
  early_stop(R, rt)
  return rt
end

return M
