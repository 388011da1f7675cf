-- orch.run.outcome: what becomes of a row. The row task's body (its
-- stages under xpcall, on_error's retries, orch.default's fallback), and
-- one handler for each way a row task can end, as the driver hands them
-- over: settled (ok, dropped, defaulted, failed), stopped by the budget,
-- interrupted. R is the run's state (see orch.run).
local context = require("orch.context")
local sched = require("orch.sched")
local json = require("orch.json")
local sys = require("orch.sys")
local progress = require("orch.run.progress")
-- the errors that stop a row without settling it: it runs again on resume
local BudgetStop, Interrupted = require("orch.llm").BudgetStop, require("orch.sched").Interrupted

local M = {}

-- globals a row uses, as locals: an upvalue, not a lookup in _ENV a use
local type, pcall, xpcall, getmetatable = type, pcall, xpcall, getmetatable

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
M.deepcopy = deepcopy

--- parse(on_error) -> { retries =, after =, fallback =, keep_input = }:
--- on_error as the rows and the steps both read it. retries: the tries
--- after the first (orch.retry(n)); after: the policy once they are used
--- up ("skip", "fail" or orch.default); fallback: orch.default's value
--- (a table or a function), or nil; keep_input: whether a row's input
--- must be kept for a retry or the fallback.
function M.parse(on_error)
  local policy = on_error or "skip"
  local retries = type(policy) == "table" and policy.policy == "retry" and policy.times or 0
  local after = retries > 0 and policy.after or policy
  local fallback = type(after) == "table" and after.policy == "default" and after.value or nil
  return { retries = retries, after = after, fallback = fallback, keep_input = retries > 0 or fallback ~= nil }
end

--- stages(wf) -> { { name =, fn =, critical = } ... }: the workflow's
--- stages, a bare function named by its place.
function M.stages(wf)
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

--- key_function(key) -> function(row, seq) -> the row's key; raises
--- when the row has none.
function M.key_function(key)
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
-- without the frames of the row machinery below the user's stages (the
-- run's modules: lua/orch/run.lua and lua/orch/run/*.lua).
local function row_traceback(e)
  if getmetatable(e) == BudgetStop then
    return { msg = e.msg, budget = true }
  elseif getmetatable(e) == Interrupted then
    return { msg = e.msg, interrupted = true }
  end
  local msg = M.error_text(e)
  local lines = {}
  for line in debug.traceback(msg, 2):gmatch("[^\n]+") do
    if line:find("^%s+lua/orch/run[%./]") or line:find("^%s+%[C%]: in function 'xpcall'") then
      break
    end
    -- orch's own frames and error() itself say nothing about the user's code
    if not (line:find("^%s+lua/orch/") or line:find("^%s+%[C%]: in function 'error'")) then
      lines[#lines + 1] = line
    end
  end
  return { msg = msg, tb = table.concat(lines, "\n") }
end

--- row_error(e) -> a row's error value as the {msg=, tb=} of
--- row_traceback. Lua 5.4's xpcall skips the message handler when memory
--- runs out: the value is then the bare string "not enough memory", named
--- here with the limit it hit.
function M.row_error(e)
  if type(e) == "table" then
    return e
  elseif e == "not enough memory" then
    return { msg = string.format("out of memory (limit %d MB)", sys.memory_limit() // 1048576) }
  end
  return { msg = tostring(e) }
end
local row_error = M.row_error

-- takes_ctx(stages) -> whether a stage may use a row's context: one that
-- declares a second parameter or varargs, a C function or a callable
-- table, a critical stage (its checkpoint goes through the context). A
-- stage function(row) cannot see one: its rows are run without one (a
-- table of six keys a row fewer to make and collect).
local function takes_ctx(stages)
  for _, s in ipairs(stages) do
    if s.critical or type(s.fn) ~= "function" then
      return true
    end
    local info = debug.getinfo(s.fn, "u")
    if info.isvararg or info.nparams > 1 then
      return true
    end
  end
  return false
end

-- apply(stages) -> function(row, ctx): runs the stages in turn; -> the
-- row, or nil when a stage dropped it.
local function applier(stages)
  local nstages = #stages
  return function(row, ctx)
    for i = 1, nstages do
      local stage = stages[i] -- called as stage.fn: a traceback names it "field 'fn'"
      if ctx then -- none when no stage takes one (takes_ctx)
        ctx.stage = stage.name
      end
      if stage.critical then
        ctx:checkpoint("before " .. stage.name) -- what is settled is durable before it runs
      end
      local r = stage.fn(row, ctx)
      if r == nil then
        return nil
      end
      if r ~= row and type(r) ~= "table" then -- the row given back is a table: no type call
        error(string.format("%s returned a %s; a stage returns the row (a table) or nil to drop it",
          stage.name, type(r)), 0)
      end
      row = r
    end
    return row
  end
end

-- encoder(out) -> encode, sink: encode(sink, row) -> the row's output
-- line, or false when the workflow has no output; raises when the row
-- cannot be written. The sink's own method, called as
-- pcall(encode, sink, row): no wrapper call per row.
local function encoder(out)
  if out == nil then
    return function()
      return false
    end, nil
  end
  return out.encode, out
end

-- defaulter(fallback, encode, sink) -> defaulted(input, msg) -> line | nil,
-- message. orch.default: the input row (a copy; {} for a malformed input
-- row) with the default merged over it, the default being a table or
-- what function(row, err) returns.
local function defaulter(fallback, encode, sink)
  return function(input, msg)
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
      local eok, line = pcall(encode, sink, drow)
      if eok then
        return line
      end
      val = line
    end
    return nil, msg .. "; and orch.default failed too: " .. M.error_text(val)
  end
end

-- How a row that did not get through ends: -> status, line|false,
-- message, traceback (the tail of process, below).
local function not_through(res, input, defaulted, key, usage)
  if defaulted then
    local line, msg = defaulted(input, res.msg)
    if line then
      return "defaulted", line, res.msg, res.tb, key, usage
    end
    res.msg = msg
  end
  return "failed", false, res.msg, res.tb, key, usage
end

--- processor(R) -> process, defaulted. process(row, seq), the body of a
--- row task: -> status, line|false, message, traceback, key, usage (the
--- row's LLM calls, ctx._usage, flat or nested: added to the run's figures
--- when it settles).
--- defaulted(input, msg): orch.default for a row (see defaulter), nil
--- when on_error has no default. Both are made once a run: a row costs
--- no closure.
function M.processor(R)
  local oe, rt, log = R.on_error, R.rt, R.log
  local retries, keep_input = oe.retries, oe.keep_input
  local stages = M.stages(R.wf)
  local key_of, apply, need_ctx = M.key_function(R.wf.key), applier(stages), takes_ctx(stages)
  local encode, sink = encoder(R.out)
  local defaulted = oe.fallback ~= nil and defaulter(oe.fallback, encode, sink) or nil
  -- a key column read from a plain table cannot raise: no pcall then
  local key_col = type(R.wf.key) == "string" and R.wf.key or nil
  local function process(row, seq)
    local key = key_col and getmetatable(row) == nil and row[key_col]
    if not key then
      local kok
      kok, key = pcall(key_of, row, seq)
      if not kok then
        return "failed", false, key, nil, nil
      end
    end
    local ctx = need_ctx and context.new(rt, seq, key) or nil
    local input = keep_input and deepcopy(row) or nil
    local ok, res = xpcall(apply, row_traceback, row, ctx)
    if not ok then
      res = row_error(res)
    end
    for _ = 1, retries do
      if ok or res.budget or res.interrupted then
        break
      end
      log(1, string.format("%s failed, retrying: %s", progress.which(R, seq, key), res.msg))
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
        return "dropped", false, nil, nil, key, ctx and ctx._usage
      end
      local eok, line = pcall(encode, sink, res)
      if eok then
        return "ok", line, nil, nil, key, ctx and ctx._usage
      end
      res = { msg = "cannot write the row: " .. tostring(line) }
    end
    return not_through(res, input, defaulted, key, ctx and ctx._usage)
  end
  return process, defaulted
end

-- row_loop(R, stages, settle, settle_ok) -> loop(b, D): runs the rows of
-- batch b from b.ran + 1 (see batch_runner) until its last, a suspension
-- of the task (resumes() ~= b.r0; the driver's settle also sets b.r0 to
-- -1 to end the batch after a failed row) or the run's stop; each row
-- settled at once. Raises with the error of row b.ran + 1; b.key and
-- b.ctx are its key and context, b.encoding whether it was being
-- written. Few locals are live at a stage's call: a row that waits
-- keeps a short stack.
local function row_loop(R, stages, settle, settle_ok)
  local nstages, rt, resumes, new_ctx = #stages, R.rt, sched.resumes, context.new
  local need_ctx, key_of = takes_ctx(stages), M.key_function(R.wf.key)
  local key_col = type(R.wf.key) == "string" and R.wf.key or nil
  local plain = R.src and R.src.plain_rows -- rows with no metatable: no check a row
  local encode, sink = encoder(R.out)
  return function(b, D)
    local rows, seqs = b.rows, b.seqs
    for i = b.ran + 1, b.n do
      if i > 1 and (R.stop or resumes() ~= b.r0) then
        return
      end
      local row, seq = rows[i], seqs[i]
      local key = key_col and (plain or getmetatable(row) == nil) and row[key_col]
      if not key then
        local kok
        kok, key = pcall(key_of, row, seq)
        if not kok then
          settle(R, D, seq, "failed", false, key)
          b.ran = i
          goto next
        end
      end
      local ctx = need_ctx and new_ctx(rt, seq, key) or nil
      b.key = key
      if need_ctx then -- b.ctx stays nil for a run without contexts
        b.ctx = ctx
      end
      for s = 1, nstages do
        local stage = stages[s] -- called as stage.fn: a traceback names it "field 'fn'"
        if ctx then
          ctx.stage = stage.name
        end
        if stage.critical then
          ctx:checkpoint("before " .. stage.name) -- what is settled is durable before it runs
        end
        local r = stage.fn(row, ctx)
        if r ~= row and r ~= nil and type(r) ~= "table" then -- the row given back is a table: no type call
          error(string.format("%s returned a %s; a stage returns the row (a table) or nil to drop it",
            stage.name, type(r)), 0)
        end
        row = r
        if r == nil then
          break
        end
      end
      if row == nil then
        settle(R, D, seq, "dropped", false, nil, nil, key, ctx and ctx._usage)
      else
        b.encoding = true
        local line = encode(sink, row)
        b.encoding = false
        settle_ok(R, D, seq, line, key, ctx and ctx._usage)
      end
      b.ran = i
      ::next::
    end
  end
end

-- Settles the row seq that raised err (row_traceback's value, or Lua's
-- bare "not enough memory") with its key and context, as process settles
-- a row that raised.
local function settle_error(R, D, seq, key, ctx, err, settle)
  local res = row_error(err)
  if res.budget then
    settle(R, D, seq, "budget", false, res.msg, nil, key)
  elseif res.interrupted then
    settle(R, D, seq, "interrupted", false, res.msg, nil, key)
  else
    settle(R, D, seq, "failed", false, res.msg, res.tb, key, ctx and ctx._usage)
  end
end

-- Settles row b.ran + 1 of batch b, which raised err: a failure in writing
-- it names the write, no traceback (as process's pcall of encode).
local function settle_raised(R, D, b, err, settle)
  local seq, key, ctx = b.seqs[b.ran + 1], b.key, b.ctx
  if b.encoding then
    b.encoding = false
    settle(R, D, seq, "failed", false, "cannot write the row: " .. tostring(type(err) == "table" and err.msg or err),
      nil, key, ctx and ctx._usage)
    return
  end
  settle_error(R, D, seq, key, ctx, err, settle)
end

--- one_runner(R, settle, settle_ok) -> run_one(row, seq, D): the body of a
--- task of one row (a row that waits, an LLM call each) where batch_runner
--- applies: the row's key, context, stages under xpcall and settlement in
--- one function, no batch table (a waiting row keeps less), its stages
--- three frames above the task's start. -> whether the task was suspended.
local function one_runner(R, settle, settle_ok, stages)
  local rt, resumes, new_ctx, apply = R.rt, sched.resumes, context.new, applier(stages)
  local need_ctx, key_of = takes_ctx(stages), M.key_function(R.wf.key)
  local key_col = type(R.wf.key) == "string" and R.wf.key or nil
  local encode, sink = encoder(R.out)
  return function(row, seq, D)
    local r0 = resumes()
    local key = key_col and getmetatable(row) == nil and row[key_col]
    if not key then
      local kok
      kok, key = pcall(key_of, row, seq)
      if not kok then
        settle(R, D, seq, "failed", false, key)
        return resumes() ~= r0
      end
    end
    local ctx = need_ctx and new_ctx(rt, seq, key) or nil
    local ok, res = xpcall(apply, row_traceback, row, ctx)
    if not ok then
      settle_error(R, D, seq, key, ctx, res, settle)
    elseif res == nil then
      settle(R, D, seq, "dropped", false, nil, nil, key, ctx and ctx._usage)
    else
      local eok, line = pcall(encode, sink, res)
      if eok then
        settle_ok(R, D, seq, line, key, ctx and ctx._usage)
      else
        settle(R, D, seq, "failed", false, "cannot write the row: " .. tostring(line), nil, key, ctx and ctx._usage)
      end
    end
    return resumes() ~= r0
  end
end

--- batch_runner(R, settle, settle_ok) -> run(b, D), run_one(row, seq, D)
--- | nil. run: the body of a batch task (orch.run.driver: rows
--- b.rows[1..b.n], seqs b.seqs, b.ran = 0), run_one a task of one row's
--- (one_runner), when a failed row needs neither another try nor its
--- input again (no orch.retry, no orch.default; else nil: each row goes
--- through process).
--- The rows run under one xpcall, each settled at once with
--- settle(R, D, seq, status, line, msg, tb, key, usage) (a row that got
--- through: settle_ok(R, D, seq, line, key, usage)); a row that raises
--- ends it, is settled as process would, and the rows after it run under
--- a new one. A row costs no process call, xpcall or apply call, and no
--- context when no stage takes one. -> whether the task was suspended;
--- b.ran counts the rows that ran.
function M.batch_runner(R, settle, settle_ok)
  local oe = R.on_error
  if oe.retries > 0 or oe.keep_input then
    return nil
  end
  local stages = M.stages(R.wf)
  local loop, resumes = row_loop(R, stages, settle, settle_ok), sched.resumes
  return function(b, D)
    b.r0, b.encoding = resumes(), false
    D.batch = b -- the batch running: the driver's settle may end it (b.r0)
    while true do
      local ok, err = xpcall(loop, row_traceback, b, D)
      if ok then
        break
      end
      settle_raised(R, D, b, err, settle)
      b.ran = b.ran + 1
    end
    return resumes() ~= b.r0
  end, one_runner(R, settle, settle_ok, stages)
end

--- record_failure(R, seq, key, msg, tb, status): a settled row that
--- failed or used its default: kept for the end summary (the first few),
--- logged with -v, written to the errors file.
function M.record_failure(R, seq, key, msg, tb, status)
  local failures = R.failures
  if #failures < R.nfail_kept then
    failures[#failures + 1] = { seq = seq, key = key, msg = msg, tb = tb }
  end
  if R.verbosity >= 1 then
    R.log(1, string.format("%s %s: %s", progress.which(R, seq, key),
      status == "defaulted" and "used its default" or "failed", tb or msg), "debug")
  end
  if R.errs then
    R.errs:write(json.encode({ row = seq, key = key, status = status, error = msg, traceback = tb },
      { "row", "key", "status", "error", "traceback" }) .. "\n")
  end
end

--- same_failure(R, msg): a settled row failed with msg. A workflow whose
--- first rows all fail the same way (a missing key column, a typo in a
--- stage) stops instead of failing every row.
function M.same_failure(R, msg)
  local counts = R.counts
  if counts.ok + counts.dropped + counts.defaulted > 0 or R.same_fails < 0 then
    R.same_fails = -1 -- a row has got through: the failures are the rows' own
    return
  end
  if msg == R.first_fail then
    R.same_fails = R.same_fails + 1
  else
    R.first_fail, R.same_fails = msg, 1
  end
  if R.same_fails >= R.M.SAME_FAILURES and not R.fatal then
    R.fatal = { msg = string.format("the first %d %s all failed the same way: %s", R.same_fails, R.unit, msg) }
    R.stop = true
  end
end

--- note_outcome(R, seq, key, msg, tb, status): a row has ended (not yet
--- settled). on_error = "fail" (or orch.retry(n, "fail") once its tries
--- are used up): stop admitting rows as soon as one fails.
function M.note_outcome(R, seq, key, msg, tb, status)
  if status == "failed" and R.on_error.after == "fail" then
    R.stop = true
    R.fatal = R.fatal or { seq = seq, key = key, msg = msg, tb = tb }
  end
end

--- handlers[status](R, seq, key, msg): a row task that ended without
--- settling its row; the row runs again on resume. Every other status
--- settles the row (the driver's reorder window takes it).
M.handlers = {
  -- the budget is spent: no new rows, the run pauses once those in flight end
  budget = function(R, _, _, msg)
    if not R.paused then
      R.paused, R.budget_msg, R.stop = "budget", msg, true
      R.log(0, msg .. "; finishing the rows in flight")
    end
  end,
  -- stopped mid-computation (a second signal, the grace period's end)
  interrupted = function(R, seq, key, msg)
    -- rows stopped while waiting on provider batches: orch.batch says it once
    R.log(R.rt.batch_stop and 1 or 0, string.format("%s: %s; it runs again on resume", progress.which(R, seq, key), msg))
  end,
}

return M
