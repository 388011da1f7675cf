-- orch.run: executes a row workflow, durably.
--
-- One driver task reads the input, keeps at most `concurrency` rows in
-- flight (each row its own task), and writes finished rows to the output
-- strictly in input order through a bounded reorder window. Each row runs
-- its stages under xpcall, so a failing row carries its error and the
-- traceback of the stage that raised it, and on_error decides what happens.
--
-- Every CHECKPOINT_ROWS settled rows (and at the end, and when stopped) the
-- driver flushes and fsyncs the output, then writes one checkpoint
-- transaction: the settled rows' results, the input cursor just past the
-- last settled row, the output's durable size, the memento (ctx.state,
-- counters, cost). A resume truncates the output to that size and seeks
-- the input to that cursor, so each row reaches the output exactly once.
local sched = require "orch.sched"
local context = require "orch.context"
local oio = require "orch.io"
local json = require "orch.json"
local sys = require "orch.sys"
local store = require "orch.store"
local llm = require "orch.llm"
local limits = require "orch.limits"
local policies = require "orch.policy"
local observe = require "orch.observe"

local M = {}

M.CHECKPOINT_ROWS = 500 -- the default policy: orch.policy.every_rows(500)
M.MAX_PENDING = 100000 -- rows whose results wait in memory, whatever the policy says
M.GRACE_S = 30 -- after a first SIGINT/SIGTERM, how long in-flight rows may finish
M.SAME_FAILURES = 5 -- this many first rows failing the same way stop the run

local function deepcopy(v)
  if type(v) ~= "table" then
    return v
  end
  local c = {}
  for k, x in pairs(v) do
    c[k] = deepcopy(x)
  end
  return setmetatable(c, getmetatable(v))
end

-- Adds the LLM figures of src (a row's, as Context:account made them) to
-- dst: numbers are summed, tables (by_model, by_stage) merged.
local function add_usage(dst, src)
  for k, v in pairs(src) do
    if type(v) == "table" then
      local d = dst[k]
      if d == nil then
        d = {}
        dst[k] = d
      end
      add_usage(d, v)
    else
      dst[k] = (dst[k] or 0) + v
    end
  end
end

local function stage_list(wf)
  local list = {}
  for i, s in ipairs(wf.stages) do
    if type(s) == "function" then
      list[i] = { name = "stage " .. i, fn = s }
    else
      list[i] = { name = s.name or ("stage " .. i), fn = s.run, critical = s.critical }
    end
  end
  return list
end

local function key_function(key)
  if key == nil then
    return function(_, seq)
      return seq
    end
  elseif type(key) == "function" then
    return function(row)
      local k = key(row)
      if k == nil then
        error("the workflow's key function returned nil for this row", 0)
      end
      return k
    end
  end
  return function(row)
    local k = row[key]
    if k == nil then
      error(string.format("the row has no '%s' field (the workflow's key)", key), 0)
    end
    return k
  end
end

--- error_text(e) -> what error(e) said, for any e: a string as it is; a
--- table by its __tostring, else as JSON (error{ code = 5 } ->
--- '{"code":5}'); nil as "error with no message".
function M.error_text(e)
  local t = type(e)
  if t == "string" then
    return e
  elseif e == nil then
    return "error with no message (error() or error(nil))"
  elseif t == "table" then
    local mt = getmetatable(e)
    if mt and mt.__tostring then
      return tostring(e)
    end
    local ok, s = pcall(json.encode, e)
    if ok then
      return "error " .. s
    end
  end
  return tostring(e)
end

-- The message handler of a row: keeps the message and the row's traceback,
-- without the frames of the row machinery below the user's stages.
local function row_traceback(e)
  if getmetatable(e) == llm.BudgetStop then
    return { msg = e.msg, budget = true }
  elseif getmetatable(e) == sched.Interrupted then
    return { msg = e.msg, interrupted = true }
  end
  local msg = M.error_text(e)
  local lines = {}
  for line in debug.traceback(msg, 2):gmatch("[^\n]+") do
    if line:find("^%s+lua/orch/run%.lua:") or line:find("^%s+%[C%]: in function 'xpcall'") then
      break
    end
    -- orch's own frames and error() itself say nothing about the user's code
    if not (line:find("^%s+lua/orch/") or line:find("^%s+%[C%]: in function 'error'")) then
      lines[#lines + 1] = line
    end
  end
  return { msg = msg, tb = table.concat(lines, "\n") }
end

-- A row's error value as the {msg=, tb=} of row_traceback. Lua 5.4's
-- xpcall skips the message handler when memory runs out: the value is then
-- the bare string "not enough memory", named here with the limit it hit.
local function row_error(e)
  if type(e) == "table" then
    return e
  elseif e == "not enough memory" then
    return { msg = string.format("out of memory (limit %d MB)", sys.memory_limit() // 1048576) }
  end
  return { msg = tostring(e) }
end

-- A full disk (or quota) in an error message from the sinks (ENOSPC,
-- EDQUOT) or the store (SQLITE_FULL): -> the path that could not be
-- written, or nil when msg is about something else.
local function disk_full(msg, db_path)
  msg = tostring(msg)
  local path = msg:match("([^\n]-): No space left on device") or msg:match("([^\n]-): Disk quota exceeded")
  if path then
    return (path:gsub("^cannot write a checkpoint: ", ""))
  elseif msg:find("database or disk is full", 1, true) then
    return db_path
  end
end

local fmt_count = require("orch.fmt").count
M.fmt_count = fmt_count

M.LEVEL_RANK = require("orch.log").LEVEL_RANK

--- logger(verbosity [, as_json [, run_id]]) -> log(rank, msg [, level]):
--- see orch.log, the one logger.
M.logger = require("orch.log").new

--- output_owner(st, run, fresh, log) -> nil | owner, message.
--- An output file belongs to one unfinished run at a time: another run
--- of the store that is running, paused or pending with the same output
--- owns it. With fresh (--fresh), a owner that is not alive is superseded
--- and the file taken over.
function M.output_owner(st, run, fresh, log)
  local mine = run.output and (sys.realpath(run.output) or run.output)
  if mine == nil then
    return nil
  end
  for _, status in ipairs({ "running", "paused", "pending" }) do
    for _, r in ipairs(st:run_list({ status = status }) or {}) do
      if r.id ~= run.id and r.output and (sys.realpath(r.output) or r.output) == mine then
        local alive = require("orch.runs").owner_alive(r, store.now_ms())
        if fresh and not alive then
          r.status, r.error, r.finished_ms = "failed", "superseded by run " .. run.id
            .. " (--fresh took over its output)", store.now_ms()
          st:run_update(r)
          st:event_add(r.id, "superseded", json.encode({ by = run.id, output = r.output }))
          log(0, string.format("run %s (%s) gave up its output %s to this run", r.id, status, r.output))
        else
          return r, string.format("%s belongs to run %s, which is %s%s; an output file belongs to one unfinished "
            .. "run at a time: %s, give this workflow another output, or take the file over with --fresh",
            r.output, r.id, alive and "running" or status, alive and (" in process " .. tostring(r.owner_pid)) or "",
            alive and "wait for it to finish" or ("resume it with: orch resume " .. r.id))
        end
      end
    end
  end
  return nil
end

--- rows(wf, opts) -> exit code.
--- opts: concurrency, verbosity (-1 quiet, 0 normal, 1 verbose), store
--- (an open orch.store), run (the claimed run record), checkpoint (the one
--- to resume from, or nil).
function M.rows(wf, opts)
  local verbosity = opts.verbosity or 0
  local st, run, ckpt = opts.store, opts.run, opts.checkpoint
  local log = M.logger(verbosity, opts.log_json, run.id)

  -- Before any row runs: a run that cannot start is not left "running".
  -- A new one is marked failed (the next orch run starts afresh); one that
  -- has work to resume is paused, to be resumed once the cause is fixed.
  local function cannot_start(what, msg)
    log(-1, "cannot " .. what .. ": " .. msg, "error")
    local resumable = ckpt ~= nil or (run.recoveries or 0) > 0
    run.status = resumable and "paused" or "failed"
    run.error = "cannot " .. what .. ": " .. msg
    run.finished_ms = resumable and 0 or store.now_ms()
    st:run_update(run)
    st:event_add(run.id, run.status, json.encode({ error = run.error }))
    return 2
  end
  local memento
  if ckpt then
    local ok, m = pcall(json.decode, ckpt.memento)
    if not ok or type(m) ~= "table" then
      return cannot_start("resume", string.format("checkpoint %d of run %s has an unreadable memento", ckpt.seq,
        run.id))
    end
    memento = m
  end
  if wf.output then
    local owner, oerr = M.output_owner(st, run, opts.fresh, log)
    if owner then
      return cannot_start("write the output", oerr)
    end
  end
  local src, err = oio.open_source(wf.input)
  if src == nil then
    return cannot_start("read the input", err)
  end
  -- A resumed sink must still be the file its checkpoint describes: the
  -- committed bytes, by size and hash, else resuming would mix two files.
  local function open_sink(spec, columns, offset, prefix, what)
    local k, serr, why = oio.open_sink(spec, columns, offset, prefix)
    if k == nil and why == "changed" then
      serr = string.format("%s; it is not the file run %s last checkpointed (checkpoint %d), so resuming would "
        .. "mix two files: restore it, or start over with: %s", serr, run.id, ckpt.seq, require("orch.runs").rerun_command(run, opts.db))
    end
    if k == nil then
      src.close()
      return nil, cannot_start(what, serr)
    end
    return k
  end
  local out, errs, code
  if wf.output then
    out, code = open_sink(wf.output, src.columns, ckpt and ckpt.output_offset, memento and memento.output_hash,
      "write the output")
    if out == nil then
      return code
    end
  end
  if wf.errors then
    errs, code = open_sink(wf.errors, nil, ckpt and ckpt.errors_offset, memento and memento.errors_hash,
      "write the errors file")
    if errs == nil then
      if out then
        out:close()
      end
      return code
    end
  end

  local conc = opts.concurrency or wf.concurrency or (wf.llm and wf.llm.concurrency) or 16
  -- a multi-step workflow runs its steps as rows: say steps, by name
  local unit = wf.steps and "steps" or "rows"
  local function count_of(n)
    return fmt_count(n) .. " " .. (n == 1 and unit:sub(1, -2) or unit)
  end
  local function which(seq, key)
    if wf.steps then
      return string.format("step '%s'", tostring(key))
    end
    return string.format("row %d%s", seq, key ~= nil and (" (key " .. tostring(key) .. ")") or "")
  end
  local policy = wf.on_error or "skip"
  local retries = type(policy) == "table" and policy.policy == "retry" and policy.times or 0
  local after = retries > 0 and policy.after or policy
  local fallback = type(after) == "table" and after.policy == "default" and after.value or nil
  local keep_input = retries > 0 or fallback ~= nil
  local stages = stage_list(wf)
  local nstages = #stages
  local key_of = key_function(wf.key)

  local counts = { ok = 0, failed = 0, dropped = 0, defaulted = 0 }
  local totals = { llm_calls = 0, tokens_in = 0, tokens_out = 0, cost = 0 }
  local state = {}
  local cursor = { offset = 0, index = 0, line = 1 }
  if ckpt then
    local m = memento
    for k, v in pairs(m.counts or {}) do
      counts[k] = math.tointeger(v) or v
    end
    for k, v in pairs(m.totals or {}) do
      totals[k] = math.tointeger(v) or v
    end
    state = m.state or {}
    cursor = { offset = ckpt.input_offset, index = ckpt.input_index, line = ckpt.input_line }
    local ok2, serr = pcall(src.skip, cursor)
    if not ok2 then
      return cannot_start("resume the input", tostring(serr))
    end
  end

  -- totals: the LLM figures of the settled rows (checkpointed, summed up
  -- at the end), so a row re-run after a crash is never counted twice;
  -- live: the same with the calls of rows still in flight.
  local live = deepcopy(totals)
  local rt = {
    id = run.id,
    state = state,
    llm = wf.llm,
    totals = live, -- every call as it is made: the budget's and the progress bar's
    log = log,
  }
  local bus = observe.bus(wf.observers, log)
  local events = {} -- reported since the driver last looked: for the policy and the observers
  function rt.emit(event, data, ctx)
    log(1, string.format("event %s%s", event, ctx and (" from row " .. ctx.row) or ""))
    local ok, enc = pcall(json.encode, { data = data, row = ctx and ctx.row })
    st:event_add(run.id, event, ok and enc or nil)
    events[#events + 1] = { type = "event", name = event, data = data, row = ctx and ctx.row }
  end
  -- ctx:checkpoint: { name =, task = id } since the driver last looked. The
  -- caller waits (parked) until the driver has written the checkpoint.
  local requested = {}
  local driver_id
  function rt.request_checkpoint(name)
    local me = sched.current()
    requested[#requested + 1] = { name = name, task = me }
    if driver_id then
      sched.poke(driver_id) -- it may be waiting for rows to finish
    end
    if me and me ~= driver_id then
      sched.park()
    end
  end

  -- LLM services: the response journal, the budget, rate limits
  local db_path = opts.db or os.getenv("ORCH_DB") or ".orch/state.db"
  local full -- the path a full disk refused: the run pauses
  local journal_warned = 0
  if not opts.no_cache then
    rt.journal = {
      get = function(key)
        return st:journal_get(key)
      end,
      put = function(key, e)
        e.key, e.run_id = key, run.id
        local ok, jerr = st:journal_put(e)
        if not ok then
          full = full or disk_full(jerr, db_path) -- then the pause says it, once
          journal_warned = journal_warned + 1
          local later = journal_warned > 1 or full -- debug: said once, or by the pause
          log(later and 1 or 0, "warning: cannot journal an LLM response: " .. tostring(jerr)
            .. (not later and "; later failures are logged with -v" or ""), later and "debug" or "warn")
        end
      end,
    }
  end
  local max_usd = opts.budget or (wf.budget and wf.budget.max_usd)
  if max_usd then
    rt.budget = limits.budget(max_usd, wf.budget and wf.budget.warn_at, live, function(f, spent)
      log(0, string.format("budget warning: %s spent, %.0f%% of %s", require("orch.fmt").usd(spent), f * 100,
        require("orch.fmt").usd(max_usd)), "warn")
      rt.emit("budget_warning", { fraction = f, spent_usd = spent, max_usd = max_usd })
    end)
    rt.after_spend = rt.budget.after_spend
  end
  rt.limiter = wf.llm and limits.limiter(wf.llm.rpm, wf.llm.tpm)
  if wf.llm then
    rt.gate = limits.gate(wf.llm.concurrency or conc, wf.llm.adaptive, function(from, to, why)
      log(1, string.format("LLM concurrency %d -> %d (%s)", from, to, why))
      rt.emit("concurrency", { from = from, to = to, reason = why })
    end)
  end
  -- when the first LLM calls all fail the same way (no key, wrong model,
  -- unreachable host), stop instead of burning through every row
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
    if streak >= M.SAME_FAILURES then -- at any concurrency: one unlucky call is no pattern
      rt.abort = "every LLM request fails the same way: " .. msg
    end
  end
  function rt.note_retry(msg)
    log(1, "retrying an LLM request: " .. tostring(msg))
  end

  local function apply(row, ctx)
    for i = 1, nstages do
      ctx.stage = stages[i].name
      if stages[i].critical then
        ctx:checkpoint("before " .. stages[i].name) -- what is settled is durable before it runs
      end
      local r = stages[i].fn(row, ctx)
      if r == nil then
        return nil
      end
      if type(r) ~= "table" then
        error(string.format("%s returned a %s; a stage returns the row (a table) or nil to drop it",
          stages[i].name, type(r)), 0)
      end
      row = r
    end
    return row
  end

  local function encode(row)
    if out == nil then
      return false
    end
    return out:encode(row)
  end

  -- orch.default: the input row (a copy; {} for a malformed input row)
  -- with the default merged over it, the default being a table or what
  -- function(row, err) returns. -> line | nil, message
  local function defaulted(input, msg)
    local drow, dok, val = deepcopy(input or {}), true, fallback
    if type(fallback) == "function" then
      dok, val = pcall(fallback, deepcopy(input or {}), msg)
    end
    if dok and type(val) ~= "table" then
      dok, val = false, string.format("orch.default's function returned a %s, not a table", type(val))
    end
    if dok then
      for k, v in pairs(val) do
        drow[k] = v
      end
      local eok, line = pcall(encode, drow)
      if eok then
        return line
      end
      val = line
    end
    return nil, msg .. "; and orch.default failed too: " .. M.error_text(val)
  end

  -- The body of a row task: -> status, line|false, message, traceback, key,
  -- usage (the row's LLM calls, added to the run's figures when it settles)
  local function process(row, seq)
    local kok, key = pcall(key_of, row, seq)
    if not kok then
      return "failed", false, key, nil, nil
    end
    local ctx = context.new(rt, seq, key)
    local input = keep_input and deepcopy(row) or nil
    local ok, res = xpcall(apply, row_traceback, row, ctx)
    if not ok then
      res = row_error(res)
    end
    for _ = 1, retries do
      if ok or res.budget or res.interrupted then
        break
      end
      log(1, string.format("%s failed, retrying: %s", which(seq, key), res.msg))
      ok, res = xpcall(apply, row_traceback, deepcopy(input), ctx)
      if not ok then
        res = row_error(res)
      end
    end
    if not ok and res.budget then
      return "budget", false, res.msg, nil, key -- not settled: the row runs again on resume
    elseif not ok and res.interrupted then
      return "interrupted", false, res.msg, nil, key -- stopped mid-computation: likewise
    end
    if ok then
      if res == nil then
        return "dropped", false, nil, nil, key, ctx.usage
      end
      local eok, line = pcall(encode, res)
      if eok then
        return "ok", line, nil, nil, key, ctx.usage
      end
      res = { msg = "cannot write the row: " .. tostring(line) }
    end
    if fallback ~= nil then
      local line, msg = defaulted(input, res.msg)
      if line then
        return "defaulted", line, res.msg, res.tb, key, ctx.usage
      end
      res.msg = msg
    end
    return "failed", false, res.msg, res.tb, key, ctx.usage
  end

  local failures, nfail_kept = {}, 20
  local stop, fatal, paused, budget_msg = false, nil, nil, nil

  -- A workflow whose first rows all fail the same way (a missing key
  -- column, a typo in a stage) stops instead of failing every row.
  local first_fail, same_fails = nil, 0
  local function same_failure(msg)
    if counts.ok + counts.dropped + counts.defaulted > 0 or same_fails < 0 then
      same_fails = -1 -- a row has got through: the failures are the rows' own
      return
    end
    if msg == first_fail then
      same_fails = same_fails + 1
    else
      first_fail, same_fails = msg, 1
    end
    if same_fails >= M.SAME_FAILURES and not fatal then
      fatal = { msg = string.format("the first %d %s all failed the same way: %s", same_fails, unit, msg) }
      stop = true
    end
  end

  local function record_failure(seq, key, msg, tb, status)
    if #failures < nfail_kept then
      failures[#failures + 1] = { seq = seq, key = key, msg = msg, tb = tb }
    end
    if verbosity >= 1 then
      log(1, string.format("%s %s: %s", which(seq, key), status == "defaulted" and "used its default" or "failed",
        tb or msg), "debug")
    end
    if errs then
      errs:write(json.encode({ row = seq, key = key, status = status, error = msg, traceback = tb },
        { "row", "key", "status", "error", "traceback" }) .. "\n")
    end
  end

  -- on_error = "fail" (or orch.retry(n, "fail") once its tries are used
  -- up): stop admitting rows as soon as one fails
  local function note_outcome(seq, key, msg, tb, status)
    if status == "failed" and after == "fail" then
      stop = true
      fatal = fatal or { seq = seq, key = key, msg = msg, tb = tb }
    end
  end

  -- Checkpoints --------------------------------------------------------

  local pending = {} -- results settled since the last checkpoint
  local last_ckpt_index = cursor.index
  local ckpt_count, ckpt_ms = 0, 0

  -- The checkpoint policy and the counters it decides from (one table,
  -- refreshed before each question).
  local ckpt_policy = wf.checkpoint or policies.every_rows(M.CHECKPOINT_ROWS)
  local every_rows = type(ckpt_policy) == "table" and ckpt_policy.rows -- the common case, asked inline
  local decide = policies.decider(ckpt_policy, "checkpoint")
  local policy_reason = policies.name(ckpt_policy)
  local since = { rows_since = 0, seconds_since = 0, cost_since_usd = 0, tokens_since = 0,
    last_checkpoint_ms = store.now_ms(), mean_checkpoint_ms = 0, rows_done = cursor.index }
  local last_t, last_cost, last_tokens = sched.now(), live.cost, live.tokens_in + live.tokens_out
  local function policy_says(event)
    local s = since
    s.rows_since = cursor.index - last_ckpt_index
    s.seconds_since = sched.now() - last_t
    s.cost_since_usd = live.cost - last_cost
    s.tokens_since = live.tokens_in + live.tokens_out - last_tokens
    s.event = event
    s.rows_done = cursor.index
    local ok, yes = pcall(decide, s)
    if not ok then
      error("the checkpoint policy failed: " .. tostring(yes), 0)
    end
    return yes
  end

  local function run_record(status, error_text)
    run.status = status
    run.error = error_text
    run.rows_done = cursor.index
    run.rows_ok = counts.ok
    run.rows_failed = counts.failed
    run.rows_dropped = counts.dropped
    run.rows_defaulted = counts.defaulted
    run.llm_calls = totals.llm_calls
    run.tokens_in = totals.tokens_in
    run.tokens_out = totals.tokens_out
    run.cost_usd = totals.cost
    run.heartbeat_ms = store.now_ms()
    if status == "completed" or status == "failed" then
      run.finished_ms = run.heartbeat_ms
    end
    return run
  end

  -- Writes a checkpoint at the current cursor; raises on failure.
  local function checkpoint(reason, status, error_text)
    local output_offset = out and out:flush(true) or 0
    local errors_offset = errs and errs:flush(true) or 0
    local ok, memento = pcall(json.encode, { state = state, counts = counts, totals = totals,
      output_hash = out and out:hash(), errors_hash = errs and errs:hash() })
    if not ok then
      error("ctx.state must hold only JSON values (strings, numbers, booleans, tables): " .. tostring(memento), 0)
    end
    local kv = {}
    for k, v in pairs(state) do
      if type(k) == "string" then
        kv[k] = json.encode(v)
      end
    end
    local info, werr = st:checkpoint_write(run_record(status or "running", error_text), {
      reason = reason,
      input_offset = cursor.offset,
      input_line = cursor.line,
      input_index = cursor.index,
      output_offset = output_offset,
      errors_offset = errors_offset,
      memento = memento,
    }, pending, kv)
    if info == nil then
      error("cannot write a checkpoint: " .. tostring(werr), 0)
    end
    pending = {}
    last_ckpt_index = cursor.index
    ckpt_count = ckpt_count + 1
    ckpt_ms = ckpt_ms + info.duration_ms
    last_t, last_cost, last_tokens = sched.now(), live.cost, live.tokens_in + live.tokens_out
    since.last_checkpoint_ms = store.now_ms()
    since.mean_checkpoint_ms = ckpt_ms / ckpt_count
    if bus.wants.checkpoint then
      bus.notify({ type = "checkpoint", seq = info.seq, reason = reason, rows = cursor.index,
        output_bytes = output_offset, ms = info.duration_ms })
    end
    log(1, string.format("checkpoint %d (%s): %d rows, output %d bytes, %.2f ms", info.seq, reason,
      cursor.index, output_offset, info.duration_ms))
    return info
  end

  -- Progress -------------------------------------------------------------

  local tty = verbosity >= 0 and not opts.log_json and sys.isatty(2)
  local t0 = sched.now()
  local start_index, start_offset = cursor.index, cursor.offset
  local size = src.size and src.size() or nil
  local last_draw = 0
  local function progress(final)
    if not tty then
      return
    end
    local now = sched.now()
    if not final and now - last_draw < 0.2 then
      return
    end
    last_draw = now
    local el = math.max(now - t0, 1e-3)
    local rate = (cursor.index - start_index) / el
    -- a file input knows its size: the settled bytes give % and an ETA
    local share = ""
    if size and size > 0 and cursor.offset > 0 then
      local done = cursor.offset / size
      local bytes_rate = (cursor.offset - start_offset) / el
      local eta = math.floor(bytes_rate > 0 and (size - cursor.offset) / bytes_rate or 0)
      share = string.format("  %3.0f%%  ETA %s", done * 100,
        eta >= 3600 and string.format("%dh%02dm", eta // 3600, eta % 3600 // 60)
          or string.format("%dm%02ds", eta // 60, eta % 60))
    end
    io.stderr:write(string.format("\r\27[K  %s rows%s  %.0f rows/s  $%.4f  %d failed%s", fmt_count(cursor.index),
      share, rate, live.cost, counts.failed, final and "\n" or ""))
  end

  -- The driver -----------------------------------------------------------

  local out_bytes = 0 -- output written, for the space a full disk needs

  local function drive()
    driver_id = sched.current()
    sched.trap_signals()
    st:keepalive(run.id, 5)
    if bus.wants.start then
      bus.notify({ type = "start", run_id = run.id, name = wf.name, resumed = ckpt ~= nil, rows_done = cursor.index })
    end
    local next_seq, write_seq = cursor.index + 1, cursor.index + 1
    out_bytes = ckpt and ckpt.output_offset or 0
    local done, tasks = {}, {}
    local end_offset, end_line = {}, {} -- where the input continues after row seq
    local inflight, eof = 0, false
    local window = math.max(conc * 16, 1024)
    local grace_until

    -- settles rows in input order: output line, result, cursor
    local function flush()
      while true do
        local d = done[write_seq]
        if d == nil then
          break
        end
        if d.line then
          out:write(d.line)
          out_bytes = out_bytes + #d.line
        end
        -- counted and recorded when settled, so a checkpoint's figures and
        -- errors file hold exactly the rows before its cursor
        counts[d.status] = counts[d.status] + 1
        if d.usage then
          add_usage(totals, d.usage)
          d.usage = nil
        end
        if d.error ~= nil then
          record_failure(write_seq, d.key, d.error, d.tb, d.status)
        end
        if d.status == "failed" then
          same_failure(d.error)
        end
        if bus.wants.row then
          bus.notify({ type = "row", seq = write_seq, key = d.key, status = d.status, error = d.error })
        end
        d.seq, d.line, d.tb = write_seq, nil, nil
        pending[#pending + 1] = d -- the record doubles as the result to store
        local e = end_offset[write_seq]
        if e then
          cursor.offset, cursor.line = e, end_line[write_seq]
          end_offset[write_seq], end_line[write_seq] = nil, nil
        end
        cursor.index = write_seq
        done[write_seq] = nil
        write_seq = write_seq + 1
        if every_rows then
          local n = cursor.index - last_ckpt_index
          if n >= every_rows then
            checkpoint(policy_reason)
          elseif n >= M.MAX_PENDING then
            checkpoint("rows") -- the safety net holds under every policy
          end
        elseif cursor.index - last_ckpt_index >= M.MAX_PENDING then
          checkpoint("rows")
        elseif policy_says(nil) then
          checkpoint(policy_reason)
        end
      end
    end

    while true do
      local nsig, signame = sched.signals()
      if nsig > 0 and not grace_until then
        paused = signame
        stop = true
        grace_until = sched.now() + M.GRACE_S
        log(0, string.format("%s: no new rows; waiting up to %d s for %d in flight (again to stop now)",
          signame, M.GRACE_S, inflight))
      end
      while not eof and not stop and inflight < conc and next_seq - write_seq < window do
        local iok, row, line, a, b, c = pcall(src.next)
        if not iok then
          fatal = { msg = "the input failed: " .. tostring(row) }
          stop = true
        elseif row == nil then
          eof = true
        elseif row == false then
          if a then -- fatal I/O error
            fatal = { msg = line }
            stop = true
          else
            if b then
              end_offset[next_seq], end_line[next_seq] = b, c
            end
            -- a malformed row: retrying cannot mend it, orch.default can
            local dline, derr = nil, line
            if fallback ~= nil then
              dline, derr = defaulted(nil, line)
            end
            if dline then
              done[next_seq] = { status = "defaulted", line = dline, error = line }
            else
              done[next_seq] = { status = "failed", error = derr }
              note_outcome(next_seq, nil, derr, nil, "failed")
            end
            next_seq = next_seq + 1
          end
        else
          if a then
            end_offset[next_seq], end_line[next_seq] = a, b
          end
          local id = sched.spawn(process, row, next_seq)
          tasks[id] = next_seq
          next_seq = next_seq + 1
          inflight = inflight + 1
        end
      end
      flush()
      if inflight == 0 and (eof or stop) then
        break
      end
      if grace_until and (nsig > 1 or sched.now() >= grace_until) then
        log(0, string.format("abandoning %d row(s) in flight; they will run again on resume", inflight))
        break
      end
      -- a policy that watches the clock is asked at least once a second
      local batch = sched.wait(grace_until and math.max(grace_until - sched.now(), 0) or (not every_rows and 1 or nil))
      for _, c in ipairs(batch) do
        inflight = inflight - 1
        local seq = tasks[c.id]
        tasks[c.id] = nil
        local status, line, msg, tb, key, usage
        if c.ok then
          status, line, msg, tb, key, usage = c[1], c[2], c[3], c[4], c[5], c[6]
        else
          status, line, msg = "failed", false, row_error(c.err).msg
        end
        if status == "budget" then
          if not paused then
            paused, budget_msg, stop = "budget", msg, true
            log(0, msg .. "; finishing the rows in flight")
          end
        elseif status == "interrupted" then
          log(0, string.format("%s: %s; it runs again on resume", which(seq, key), msg))
        else
          done[seq] = { line = line, status = status, key = key, error = msg, tb = tb, usage = usage }
          note_outcome(seq, key, msg, tb, status)
        end
      end
      if rt.abort and not fatal then
        fatal, stop = { msg = rt.abort }, true
      end
      if full then
        stop = true -- the rows in flight finish; the final checkpoint may still fit
      end
      if #requested > 0 then -- the requests of one turn share a checkpoint
        local asked = requested
        requested = {}
        checkpoint(asked[1].name)
        for _, r in ipairs(asked) do
          if r.task then
            sched.unpark(r.task)
          end
        end
      end
      local evs = events
      events = {}
      for _, ev in ipairs(evs) do
        if bus.wants.event then
          bus.notify(ev)
        end
        if not every_rows and policy_says(ev.name) then
          checkpoint("event " .. ev.name)
        end
      end
      if not every_rows then
        if policy_says(nil) then
          checkpoint(policy_reason)
        end
      end
      progress(false)
    end
    flush()
    progress(true)
    st:keepalive(nil)
    sched.untrap_signals()
    return eof and not stop
  end

  local prev_burst = sched.burst_timeout(wf.burst_timeout or sched.BURST_TIMEOUT)
  local prev_mem = wf.max_memory and sys.memory_limit(wf.max_memory * 1048576) -- unless --max-memory fixed it
  -- os.exit in a stage would end the process with no checkpoint, the run
  -- left "running" (and exit 0 for os.exit(0)): inside the run it raises
  local os_exit = os.exit
  os.exit = function()
    error("os.exit is not allowed in a workflow; return nil to drop a row or error() to fail it", 2)
  end
  local ok, finished = pcall(sched.run, drive)
  sched.burst_timeout(prev_burst)
  if prev_mem then
    sys.memory_limit(prev_mem)
  end
  local exit, status, reason, error_text
  local budget_hint
  -- a full disk pauses the run: the last checkpoint stands (a sink that
  -- failed mid-write is past it, and resume truncates it back)
  local broken = not ok and disk_full(finished, db_path)
  full = full or broken
  local function full_text()
    local done = math.max(cursor.index, 1)
    local left = done -- rows to come, when the input cannot tell
    if size and size > 0 and cursor.offset > 0 then
      left = math.max(math.ceil(done * (size - cursor.offset) / cursor.offset), 0)
    end
    local mb = math.ceil(out_bytes / done * left / 1048576) + 16 -- and room for the store to grow
    return string.format("disk full writing %s (needs about %d MB free); free space and run: orch resume %s",
      full, mb, run.id)
  end
  if full then
    exit, status, reason, error_text = 3, "paused", "disk full", full_text()
  elseif not ok then
    exit, status, reason, error_text = 1, "failed", "failed", tostring(finished)
  elseif paused == "budget" then
    -- the budget that would finish the run: what is spent plus the rows
    -- left at the cost per row seen so far (rows left: the run's total, a
    -- table's length, or a file's bytes left at the bytes per row so far)
    local total = run.rows_total or (type(wf.input) == "table" and wf.input.path == nil and #wf.input) or nil
    local left = total and math.max(total - cursor.index, 0)
    if left == nil and size and size > 0 and cursor.offset > 0 and cursor.index > 0 then
      left = math.ceil((size - cursor.offset) * cursor.index / cursor.offset)
    end
    local suggest = limits.suggest_budget(totals.cost, cursor.index, left, rt.budget and rt.budget.largest)
    if suggest then
      budget_hint = string.format("about %s rows left at $%.6f a row: orch resume %s --budget %.2f",
        fmt_count(left), cursor.index > 0 and totals.cost / cursor.index or 0, run.id, suggest)
    else
      budget_hint = string.format("the rows left are not known ahead (the input is an iterator): orch resume %s "
        .. "--budget USD, with USD above $%.4f spent so far", run.id, totals.cost)
    end
    exit, status, reason, error_text = 3, "paused", "budget", budget_msg .. "; to finish: " .. budget_hint
  elseif paused then
    exit, status, reason, error_text = 3, "paused", "signal", "stopped by " .. paused
  elseif fatal then
    exit, status, reason = 1, "failed", "failed"
    error_text = (fatal.seq and (which(fatal.seq, fatal.key) .. ": ") or "") .. fatal.msg
  else
    exit, status, reason = 0, "completed", "final"
  end
  local cok, cerr = true, nil
  if not broken then
    cok, cerr = pcall(checkpoint, reason, status, error_text)
  end
  if not cok and not full and disk_full(cerr, db_path) then
    full = disk_full(cerr, db_path)
    exit, status, reason, error_text = 3, "paused", "disk full", full_text()
  end
  if broken or (not cok and full) then
    -- no checkpoint: the run record keeps the last one's figures
    run.status, run.error, run.heartbeat_ms = "paused", error_text, store.now_ms()
    st:run_update(run)
  elseif not cok then
    log(-1, "run " .. run.id .. ": " .. tostring(cerr), "error")
    exit = 1
  end
  if out then
    out:close()
  end
  if errs then
    errs:close()
  end
  src.close()
  st:event_add(run.id, status, json.encode({ rows = cursor.index, checkpoints = ckpt_count,
    checkpoint_ms = ckpt_ms, error = error_text, usage_estimated_calls = totals.estimated_calls,
    cost_by_model = totals.by_model, cost_by_stage = totals.by_stage }))
  for _, ev in ipairs(bus.wants.event and events or {}) do -- reported after the driver's last look
    bus.notify(ev)
  end
  if bus.wants.finish then
    bus.notify({ type = "finish", run_id = run.id, status = status, error = error_text, rows = cursor.index,
      ok = counts.ok, failed = counts.failed, dropped = counts.dropped, cost_usd = totals.cost,
      tokens = totals.tokens_in + totals.tokens_out, tokens_in = totals.tokens_in, tokens_out = totals.tokens_out,
      llm_calls = totals.llm_calls, usage_estimated_calls = totals.estimated_calls or 0, seconds = sched.now() - t0,
      cost_by_model = totals.by_model, cost_by_stage = totals.by_stage })
  end
  os.exit = os_exit

  if full then
    log(-1, "run " .. run.id .. " paused: " .. error_text, "warn")
    return 3
  end
  if not ok then
    log(-1, "run " .. run.id .. " failed: " .. tostring(finished), "error")
    return 1
  end
  local el = math.max(sched.now() - t0, 1e-3)
  local done_now = cursor.index - start_index
  log(0, string.format("%s: %s in %.2f s (%s %s/s): %d ok, %d failed, %d dropped%s%s%s",
    wf.name, count_of(cursor.index), el, fmt_count(done_now / el), unit, counts.ok, counts.failed, counts.dropped,
    counts.defaulted > 0 and string.format(", %d defaulted", counts.defaulted) or "",
    totals.llm_calls > 0 and string.format("; %s%s, %s tokens, $%.4f",
      totals.llm_calls == 1 and "1 LLM call" or (fmt_count(totals.llm_calls) .. " LLM calls"),
      (totals.cached_calls or 0) > 0 and string.format(" (%d from the journal, $%.4f saved)", totals.cached_calls,
        totals.saved or 0) or "",
      fmt_count(totals.tokens_in + totals.tokens_out), totals.cost) .. ((totals.estimated_calls or 0) > 0
        and string.format(" (tokens and cost estimated for %d calls: no usage from the provider)",
          totals.estimated_calls) or "") or "",
    out and ("; output " .. out.path) or ""))
  if #failures > 0 and verbosity == 0 and not fatal then
    for i = 1, math.min(#failures, 5) do
      local f = failures[i]
      log(0, string.format("  %s: %s", which(f.seq, f.key), (f.msg:gsub("\n.*", ""))))
    end
    local nfail = counts.failed + counts.defaulted
    if nfail > 5 then
      log(0, string.format("  ... %d more; run with -v for every failure and its traceback", nfail - 5))
    end
  end
  if paused == "budget" then
    log(-1, string.format("run %s paused after %s: %s; resume with a higher budget, %s", run.id,
      count_of(cursor.index), budget_msg, budget_hint), "warn")
  elseif paused then
    log(-1, string.format("run %s paused after %s (%s); resume with: orch resume %s",
      run.id, count_of(cursor.index), paused, run.id), "warn")
  elseif fatal then
    log(-1, string.format("run %s failed%s: %s", run.id,
      fatal.seq and (" at " .. which(fatal.seq, fatal.key)) or "",
      fatal.tb or fatal.msg), "error")
  end
  return exit
end

return M
