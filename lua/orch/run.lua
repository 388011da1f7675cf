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
-- counters, cost). A policy's checkpoint fsyncs on a thread while the
-- next rows run, and commits once the fsync has ended (orch.run.checkpoint).
-- A resume truncates the output to that size and seeks the input to that
-- cursor, so each row reaches the output exactly once.
--
-- The parts, each a module that takes the run's state R (one table, made
-- by new_state below; each module's functions say which fields they
-- read and set):
--   orch.run.files       the input and output files, their ownership
--   orch.run.services    rt, as the rows' contexts see the run: events,
--                        checkpoint requests, the LLM journal, budget, limits
--   orch.run.outcome     a row's task body (stages, retries, orch.default)
--                        and one handler for each way a row task ends
--   orch.run.checkpoint  when to checkpoint (the policy, the safety net)
--                        and how (the transaction, the memento)
--   orch.run.driver      the driver task: admission, the reorder window,
--                        signals and the grace period
--   orch.run.progress    the progress line, the end summary and messages
local sched = require("orch.sched")
local json = require("orch.json")
local sys = require("orch.sys")
local store = require("orch.store")
local files = require("orch.run.files")
local services = require("orch.run.services")
local outcome = require("orch.run.outcome")
local context = require("orch.context")
local checkpoint = require("orch.run.checkpoint")
local driver = require("orch.run.driver")
local progress = require("orch.run.progress")

local M = {}

M.CHECKPOINT_ROWS = 500 -- the default policy: orch.policy.every_rows(500)
M.MAX_PENDING = 100000 -- rows whose results wait in memory, whatever the policy says
M.GRACE_S = 30 -- after a first SIGINT/SIGTERM, how long in-flight rows may finish
M.SAME_FAILURES = 5 -- this many first rows failing the same way stop the run

M.error_text = outcome.error_text
M.output_owner = files.output_owner

local fmt_count = require("orch.fmt").count
M.fmt_count = fmt_count

M.LEVEL_RANK = require("orch.log").LEVEL_RANK

--- logger(verbosity [, as_json [, run_id]]) -> log(rank, msg [, level]):
--- see orch.log, the one logger.
M.logger = require("orch.log").new

-- The run's state: what the parts share (see the header). Fields that
-- only a part sets are named where it sets them.
local function new_state(wf, opts)
  local verbosity = opts.verbosity or 0
  return {
    M = M, -- CHECKPOINT_ROWS, MAX_PENDING, GRACE_S, SAME_FAILURES: read when used
    wf = wf,
    opts = opts,
    verbosity = verbosity,
    st = opts.store,
    run = opts.run,
    ckpt = opts.checkpoint, -- the checkpoint to resume from, or nil
    log = M.logger(verbosity, opts.log_json, opts.run.id),
    db_path = opts.db or os.getenv("ORCH_DB") or ".orch/state.db",
    -- a multi-step workflow runs its steps as rows: say steps, by name
    steps = wf.steps and true or false,
    unit = wf.steps and "steps" or "rows",
    on_error = outcome.parse(wf.on_error),
    counts = { ok = 0, failed = 0, dropped = 0, defaulted = 0 },
    -- the LLM figures of the settled rows (checkpointed, summed up at the
    -- end), so a row re-run after a crash is never counted twice; live
    -- (set by restore): the same with the calls of rows still in flight
    totals = { llm_calls = 0, tokens_in = 0, tokens_out = 0, cost = 0 },
    state = {}, -- ctx.state
    cursor = { offset = 0, index = 0, line = 1 }, -- the input just past the last settled row
    failures = {}, -- the first nfail_kept, for the summary
    nfail_kept = 20,
    first_fail = nil, -- the first rows' failures: the same message, how many times
    same_fails = 0,
    stop = false, -- no more rows are admitted
    fatal = nil, -- { msg =, seq =, key =, tb = }: why the run failed
    paused = nil, -- "budget" or the signal's name
    budget_msg = nil,
    full = nil, -- the path a full disk refused: the run pauses
    out_bytes = 0, -- output written, for the space a full disk needs
  }
end

-- A resumed run starts from its checkpoint's figures and input cursor.
-- -> nil, or the exit code of a run that cannot resume.
local function restore(R)
  local ckpt, m = R.ckpt, R.memento
  if ckpt then
    for k, v in pairs(m.counts or {}) do
      R.counts[k] = math.tointeger(v) or v
    end
    for k, v in pairs(m.totals or {}) do
      R.totals[k] = math.tointeger(v) or v
    end
    R.state = m.state or {}
    R.cursor = { offset = ckpt.input_offset, index = ckpt.input_index, line = ckpt.input_line }
    local ok, serr = pcall(R.src.skip, R.cursor)
    if not ok then
      return files.cannot_start(R, "resume the input", tostring(serr))
    end
  end
  R.live = context.live_totals(R.totals)
end

-- Runs the driver task, the workflow's limits set for the run. -> ok,
-- what the driver returned or the error that stopped it. os.exit stays
-- refused until finish (observers hear the end with it refused too).
local function run_driver(R)
  local wf = R.wf
  local prev_burst = sched.burst_timeout(wf.burst_timeout or sched.BURST_TIMEOUT)
  local prev_mem = wf.max_memory and sys.memory_limit(wf.max_memory * 1048576) -- unless --max-memory fixed it
  -- os.exit in a stage would end the process with no checkpoint, the run
  -- left "running" (and exit 0 for os.exit(0)): inside the run it raises
  R.os_exit = os.exit
  os.exit = function()
    error("os.exit is not allowed in a workflow; return nil to drop a row or error() to fail it", 2)
  end
  local ok, finished = pcall(sched.run, driver.drive, R)
  sched.burst_timeout(prev_burst)
  if prev_mem then
    sys.memory_limit(prev_mem)
  end
  return ok, finished
end

-- How the run ended: -> exit code, status, reason, error text, and
-- whether a full disk broke the driver (then no checkpoint is written).
local function conclude(R, ok, finished)
  -- a full disk pauses the run: the last checkpoint stands (a sink that
  -- failed mid-write is past it, and resume truncates it back)
  local broken = not ok and services.disk_full(finished, R.db_path)
  R.full = R.full or broken
  local fatal = R.fatal
  if R.full then
    return 3, "paused", "disk full", progress.full_text(R), broken
  elseif not ok then
    return 1, "failed", "failed", tostring(finished), broken
  elseif R.paused == "budget" then
    R.budget_hint = progress.budget_hint(R)
    return 3, "paused", "budget", R.budget_msg .. "; to finish: " .. R.budget_hint, broken
  elseif R.paused then
    return 3, "paused", "signal", "stopped by " .. R.paused, broken
  elseif fatal then
    return 1, "failed", "failed", (fatal.seq and (progress.which(R, fatal.seq, fatal.key) .. ": ") or "")
      .. fatal.msg, broken
  end
  return 0, "completed", "final", nil, broken
end

-- The last checkpoint, with the run's end status. -> exit code, status,
-- error text: a full disk now pauses the run, another failure fails it.
local function last_checkpoint(R, broken, exit, status, reason, error_text)
  local run, db_path = R.run, R.db_path
  local cok, cerr = true, nil
  if not broken then
    cok, cerr = pcall(checkpoint.write, R, reason, status, error_text)
  end
  if not cok and not R.full and services.disk_full(cerr, db_path) then
    R.full = services.disk_full(cerr, db_path)
    exit, status, error_text = 3, "paused", progress.full_text(R)
  end
  if broken or (not cok and R.full) then
    -- no checkpoint: the run record keeps the last one's figures
    run.status, run.error, run.heartbeat_ms = "paused", error_text, store.now_ms()
    R.st:run_update(run)
  elseif not cok then
    R.log(-1, "run " .. run.id .. ": " .. tostring(cerr), "error")
    exit = 1
  end
  return exit, status, error_text
end

-- The end in the store's events and to the observers.
local function report(R, status, error_text)
  local run, totals, bus = R.run, R.totals, R.bus
  R.st:event_add(run.id, status, json.encode({ rows = R.cursor.index, checkpoints = R.ckpt_count,
    checkpoint_ms = R.ckpt_ms, error = error_text, usage_estimated_calls = totals.estimated_calls,
    cost_by_model = totals.by_model, cost_by_stage = totals.by_stage }))
  for _, ev in ipairs(bus.wants.event and R.events or {}) do -- reported after the driver's last look
    bus.notify(ev)
  end
  if bus.wants.finish then
    local counts = R.counts
    bus.notify({ type = "finish", run_id = run.id, status = status, error = error_text, rows = R.cursor.index,
      ok = counts.ok, failed = counts.failed, dropped = counts.dropped, cost_usd = totals.cost,
      tokens = totals.tokens_in + totals.tokens_out, tokens_in = totals.tokens_in, tokens_out = totals.tokens_out,
      llm_calls = totals.llm_calls, usage_estimated_calls = totals.estimated_calls or 0,
      seconds = sched.now() - R.t0, cost_by_model = totals.by_model, cost_by_stage = totals.by_stage })
  end
end

--- rows(wf, opts) -> exit code.
--- opts: concurrency, verbosity (-1 quiet, 0 normal, 1 verbose), store
--- (an open orch.store), run (the claimed run record), checkpoint (the one
--- to resume from, or nil), estimate (the run's stored estimate, shown
--- beside the actual in the summary, or nil).
function M.rows(wf, opts)
  local R = new_state(wf, opts)
  local code = files.open(R)
  if code then
    return code
  end
  R.conc = opts.concurrency or wf.concurrency or (wf.llm and wf.llm.concurrency)
    or (wf.llm and wf.llm.batch and require("orch.batch").concurrency())
    or 16
  code = restore(R)
  if code then
    return code
  end
  services.setup(R)
  R.process, R.defaulted = outcome.processor(R)
  checkpoint.start(R)
  progress.start(R)
  local ok, finished = run_driver(R)
  local exit, status, reason, error_text, broken = conclude(R, ok, finished)
  exit, status, error_text = last_checkpoint(R, broken, exit, status, reason, error_text)
  files.close(R)
  progress.finish(R, status)
  report(R, status, error_text)
  os.exit = R.os_exit

  if R.full then
    R.log(-1, "run " .. R.run.id .. " paused: " .. error_text, "warn")
    return 3
  end
  if not ok then
    R.log(-1, "run " .. R.run.id .. " failed: " .. tostring(finished), "error")
    return 1
  end
  progress.summary(R)
  return exit
end

-- The parts orch.worker runs a lease with: the same state, driver and
-- ending as a run, around a lease's source and sink.
M.parts = { new_state = new_state, run_driver = run_driver, conclude = conclude }

return M
