-- orch.run.driver: the driver task of a row run. Each turn it looks at
-- the signals, admits rows while there is room (at most `concurrency` in
-- flight, in batch tasks of one or more rows, within a reorder window),
-- settles the finished rows to the output strictly in input order, then
-- waits for batch tasks to end (each row's outcome already went to its
-- handler from the batch task). After a first
-- SIGINT/SIGTERM no row is admitted; the rows in flight have GRACE_S
-- seconds to finish. R is the run's state (see orch.run); D, the
-- driver's own (below), lives for one drive. The per-row loops keep what
-- they use in locals: they run once for every row.
local sched = require("orch.sched")
local outcome = require("orch.run.outcome")
local checkpoint = require("orch.run.checkpoint")
local progress = require("orch.run.progress")

local M = {}

local pcall = pcall -- once a row: an upvalue, not a lookup in _ENV
local now = sched.now

local note_outcome, record_failure, same_failure = outcome.note_outcome, outcome.record_failure, outcome.same_failure
local row_error, handlers = outcome.row_error, outcome.handlers
local due, begin = checkpoint.due, checkpoint.begin

-- Row batches. A task per row costs a coroutine, a completion record and
-- a pass of the driver for every row: for rows whose stages never wait
-- (plain Lua functions) that was most of what a row cost besides its
-- stages. So a task runs a batch of rows one after another. The batch
-- size grows by a task's rows (up to MAX_BATCH) after each task that ran
-- them all without being suspended, and drops to 1 as soon as one was
-- (a row waited for an LLM reply, a timer, or was preempted): the rows
-- it had not started go back to tasks of their own, so rows that wait
-- keep all the concurrency they had. A task has at most one row started and not ended (a batch stops
-- after a row that waited), so `concurrency` bounds the tasks, not the
-- rows a batch holds: rows that never wait run up to concurrency x
-- MAX_BATCH a driver turn (within the reorder window), and a turn's
-- fixed cost (the signals, admit, the wait, collect, the checkpoint and
-- progress checks) is spread over that many rows. Until a row has got
-- through, a batch also stops after a failed row, so that a turn settles
-- at most `concurrency` failures, as when batches were capped by it: the
-- run's stop on its first rows all failing the same way
-- (outcome.same_failure) comes after as many rows as before. D.batch is
-- the batch task that ran last (batches run one at a time between
-- suspensions); settle ends it by setting its b.r0, the resume count at
-- its start, to -1: it then stops, as after a suspension.
local MAX_BATCH = 64

-- Adds a row's LLM figures (as Context:account made them, flat or nested)
-- to the run's; expand_usage makes the nested form a row event carries.
local add_usage, expand_usage = require("orch.context").add_usage, require("orch.context").expand_usage
local sums_open, sums_put = require("orch.context").sums_open, require("orch.context").sums_put

-- A first signal stops admission and starts the grace period. -> how many
-- signals have come.
local function signals(R, D)
  local nsig, signame = sched.signals()
  if nsig > 0 and not D.grace_until then
    R.paused = signame
    R.stop = true
    D.grace_until = sched.now() + R.M.GRACE_S
    R.log(0, string.format("%s: no new rows; waiting up to %d s for %d in flight (again to stop now)",
      signame, R.M.GRACE_S, D.inflight))
  end
  return nsig
end

-- A malformed input row: retrying cannot mend it, orch.default can.
local function malformed(R, D, seq, msg)
  local dline, derr = nil, msg
  if R.defaulted then
    dline, derr = R.defaulted(nil, msg)
  end
  local slot = seq % D.window + 1
  if dline then
    D.done[slot] = { status = "defaulted", line = dline, error = msg }
  else
    D.done[slot] = { status = "failed", error = derr }
    note_outcome(R, seq, nil, derr, nil, "failed")
  end
end

-- A batch table for admit: one a collected batch left (D.spare_batches),
-- else a new one. Reused, a batch's arrays keep their size: no table
-- and no array growth per batch.
local function take_batch(D)
  local spare = D.spare_batches
  local n = #spare
  if n == 0 then
    return { rows = {}, seqs = {}, ran = 0 }
  end
  local b = spare[n]
  spare[n] = nil
  b.ran = 0
  return b
end

-- Spawns the batch task of the first n rows of b (b.rows, b.seqs).
local function spawn_batch(D, b, n)
  b.n = n
  D.tasks[sched.spawn(D.run_batch, b)] = b
  D.ntasks = D.ntasks + 1
end

-- Spawns the task of one row: no batch table (rows that wait, an LLM
-- call each, run this way).
local function spawn_one(D, row, seq)
  D.tasks[sched.spawn(D.run_one, row, seq)] = seq
  D.ntasks = D.ntasks + 1
end

-- Reads rows and spawns their tasks while there is room (fewer than
-- `concurrency` tasks, the reorder window not full): first the rows a
-- suspended batch did not start, one task each, then new rows, in
-- batches of D.size. D.inflight counts the rows admitted and not yet
-- ended or handed back; D.ntasks the tasks.
local function admit(R, D)
  local src, conc, window, write_seq = R.src, R.conc, D.window, D.write_seq
  local end_offset, end_line, redo_rows, redo_seqs = D.end_offset, D.end_line, D.redo_rows, D.redo_seqs
  local next_seq, inflight, eof = D.next_seq, D.inflight, D.eof
  local nredo = #redo_seqs
  while nredo > 0 and not R.stop and D.ntasks < conc do
    spawn_one(D, redo_rows[nredo], redo_seqs[nredo])
    redo_rows[nredo], redo_seqs[nredo] = nil, nil
    nredo = nredo - 1
    inflight = inflight + 1
  end
  local size = D.size
  local b, n, brows, bseqs = nil, 0, nil, nil
  while not eof and not R.stop and D.ntasks < conc and next_seq - write_seq < window do
    local iok, row, line, a, c1, c2 = pcall(src.next)
    if not iok then
      R.fatal = { msg = "the input failed: " .. tostring(row) }
      R.stop = true
    elseif row == nil then
      eof = true
    elseif row == false then
      if a then -- fatal I/O error
        R.fatal = { msg = line }
        R.stop = true
      else
        local slot = next_seq % window + 1
        end_offset[slot], end_line[slot] = c1 or false, c2
        malformed(R, D, next_seq, line)
        next_seq = next_seq + 1
      end
    else
      local slot = next_seq % window + 1
      end_offset[slot], end_line[slot] = a or false, c1
      if size == 1 then
        spawn_one(D, row, next_seq)
        next_seq = next_seq + 1
        inflight = inflight + 1
        goto next
      end
      if b == nil then
        b = take_batch(D)
        brows, bseqs = b.rows, b.seqs
      end
      n = n + 1
      brows[n], bseqs[n] = row, next_seq
      next_seq = next_seq + 1
      inflight = inflight + 1
      if n == size then
        spawn_batch(D, b, n)
        b, n = nil, 0
      end
    end
    ::next::
  end
  if n > 0 then
    spawn_batch(D, b, n)
  end
  D.next_seq, D.inflight, D.eof = next_seq, inflight, eof
end

-- Writes, counts and records the settled row write_seq from its record d
-- (a row that did not get through: failed, dropped, defaulted; see flush).
local function flush_record(R, d, write_seq)
  local line, status = d.line, d.status
  if line then
    R.out:write(line)
    R.out_bytes = R.out_bytes + #line
  end
  local counts, bus = R.counts, R.bus
  counts[status] = counts[status] + 1
  local usage = d.usage -- the row's LLM figures, for the row event too
  if usage then
    add_usage(R.totals, usage)
    d.usage = nil
    if bus.wants.row then -- observers see ctx.usage's nested form
      usage = expand_usage(usage)
    end
  end
  if d.error ~= nil then
    record_failure(R, write_seq, d.key, d.error, d.tb, status)
  end
  if status == "failed" then
    same_failure(R, d.error)
  end
  if bus.wants.row then
    bus.notify({ type = "row", seq = write_seq, key = d.key, status = status, error = d.error, usage = usage })
  end
  d.line = nil
  if d.tb ~= nil then
    d.tb = nil
  end
  local add_result = R.add_result
  if add_result then -- packed for the checkpoint; the record is free again
    add_result(write_seq, d.key, status, d.error)
    local spare = R.spare
    spare[#spare + 1] = d
  else
    d.seq = write_seq
    local pending = R.pending
    pending[#pending + 1] = d -- the record doubles as the result to store
  end
end

-- Begins a checkpoint (why: its reason) from flush. -> what flush watches
-- next: the last checkpoint's row, time and cost, the policy's bounds of
-- seconds and dollars, the rows threshold and whether the bounds apply
local function begun(R, why)
  begin(R, why)
  return R.last_ckpt_index, R.last_t, R.last_cost, R.bound_seconds, R.bound_usd, checkpoint.threshold(R)
end

-- Adds the LLM figures d of a row that got through to the run's (see
-- flush): to the sums in locals when they are a row like the one before
-- (am, as: its model and stage; flat usage: most rows), opening them
-- (context.sums_open: add_usage's additions in its order, without its
-- call and table writes) when the row before was added by add_usage;
-- else the sums go back in the totals and add_usage adds d. -> am, as,
-- gm, gs and the twelve sums, as they now stand
local function sum_usage(totals, d, am, as, gm, gs, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost,
                         s_calls, s_tokens, s_cost)
  local model, stage, d_cached, d_saved = d._model, d._stage, d.cached_calls, d.saved
  if model == am and stage == as and model and stage and d.estimated_calls == nil and d.retries == nil
    and (d_cached == nil) == (d_saved == nil) then
    if not gm then -- the row before was added by add_usage: its groups are there
      gm, gs, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost, s_calls, s_tokens, s_cost =
        sums_open(totals, model, stage)
    end
    local d_calls, d_cost, d_tin, d_tout = d.llm_calls, d.cost, d.tokens_in, d.tokens_out
    local d_tokens = d_tin + d_tout
    calls, tin, tout, cost = calls + d_calls, tin + d_tin, tout + d_tout, cost + d_cost
    if d_cached then
      cached, saved = (cached or 0) + d_cached, (saved or 0) + d_saved
    end
    m_calls, m_tokens, m_cost = m_calls + d_calls, m_tokens + d_tokens, m_cost + d_cost
    s_calls, s_tokens, s_cost = s_calls + d_calls, s_tokens + d_tokens, s_cost + d_cost
  else
    gm = gm and sums_put(totals, gm, gs, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost, s_calls,
      s_tokens, s_cost)
    add_usage(totals, d)
    am, as = model, stage
  end
  return am, as, gm, gs, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost, s_calls, s_tokens, s_cost
end

-- Settles in C (results:settle_run, see core/settle_lua.h) the rows from
-- write_seq that got through, before limit, as flush settles them: their
-- count, output bytes and the cursor after the last of them go in R. ->
-- how many, the next seq and the twelve sums (of model and stage, when
-- open), as they now stand
local function settle_c(R, D, packed, sink, write_seq, limit, last_t, bound_s, model, stage, calls, tin, tout, cost,
                        cached, saved, m_calls, m_tokens, m_cost, s_calls, s_tokens, s_cost)
  local n, bytes, off, lno, err
  write_seq, n, bytes, off, lno, err, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost, s_calls,
    s_tokens, s_cost = packed:settle_run(D.done, D.lines, D.keys, D.end_offset, D.end_line, write_seq, limit,
    D.window, sink, last_t, bound_s, model, stage, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost,
    s_calls, s_tokens, s_cost)
  if n > 0 then
    local cursor = R.cursor
    R.counts.ok = R.counts.ok + n
    R.out_bytes = R.out_bytes + bytes
    if off then
      cursor.offset, cursor.line = off, lno
    end
    cursor.index = write_seq - 1
  end
  if err then
    error(err, 0)
  end
  return n, write_seq, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost, s_calls, s_tokens, s_cost
end

-- Settles rows in input order: output line, figures, result, cursor; and
-- a checkpoint when one is due. Counted and recorded when settled, so a
-- checkpoint's figures and errors file hold exactly the rows before its
-- cursor. A row that got through has no record (see settle_ok): its
-- slot holds its LLM figures (a table without status) or true. The LLM
-- figures of rows like the one before are added up in locals
-- (sum_usage), put back in the totals (gm = gm and sums_put(...): gm,
-- the model's group while open, nil after) before a checkpoint, another
-- kind of row or the end. Runs of rows that got through settle in C
-- (settle_c), the same way, up to the row after which a checkpoint is
-- asked for.
local function flush(R, D)
  local done, end_offset, end_line, cursor, window = D.done, D.end_offset, D.end_line, R.cursor, D.window
  local lines, keys, out, counts, totals, bus = D.lines, D.keys, R.out, R.counts, R.totals, R.bus
  local write_seq, wants, add_result, live = D.write_seq, bus.wants, R.add_result, R.live
  local last, last_t, last_cost = R.last_ckpt_index, R.last_t, R.last_cost
  local bound_s, bound_usd, threshold, watch = R.bound_seconds, R.bound_usd, checkpoint.threshold(R)
  local am, as, gm, gs, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost, s_calls, s_tokens, s_cost
  -- in C (settle_c) where nothing reads a row as it settles (no row
  -- events, results packed, the output a sink's bytes or none), for two
  -- rows or more (a call costs more than a row here: rows that wait end
  -- one or two a turn), a row with LLM figures once their sums are open
  local packed, sink = R.packed, out and out.sink
  local in_c = add_result and packed and (sink or not out) and not wants.row
  while true do
    if in_c and (gm or done[write_seq % window + 1] == true) and done[(write_seq + 1) % window + 1]
      and write_seq < last + threshold and not (watch and live.cost - last_cost >= bound_usd) then
      local n
      n, write_seq, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost, s_calls, s_tokens, s_cost =
        settle_c(R, D, packed, sink, write_seq, last + threshold, watch and last_t or nil, bound_s, gm and am, as,
          calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost, s_calls, s_tokens, s_cost)
      if n > 0 then
        goto settled -- asked, as after a row settled below
      end
    end
    do
      local slot = write_seq % window + 1
      local d = done[slot]
      if not d then
        break
      elseif d == true or d.status == nil then -- a row that got through: true, or its LLM figures
        local line, key, usage = lines[slot], keys[slot], nil
        if line then
          out:write(line)
          R.out_bytes = R.out_bytes + #line
          lines[slot] = false
        end
        counts.ok = counts.ok + 1
        if d ~= true then -- the row's LLM figures, for the row event too
          am, as, gm, gs, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost, s_calls, s_tokens, s_cost =
            sum_usage(totals, d, am, as, gm, gs, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost,
              s_calls, s_tokens, s_cost)
          usage = wants.row and expand_usage(d) or nil -- observers see ctx.usage's nested form
        end
        if wants.row then
          bus.notify({ type = "row", seq = write_seq, key = key, status = "ok", usage = usage })
        end
        if add_result then -- packed for the checkpoint
          add_result(write_seq, key, "ok", nil)
        else -- a worker's lease store takes records
          R.pending[#R.pending + 1] = { seq = write_seq, key = key, status = "ok" }
        end
      else
        gm = gm and sums_put(totals, gm, gs, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost, s_calls,
          s_tokens, s_cost) -- flush_record may add to the totals
        flush_record(R, d, write_seq)
      end
      local e = end_offset[slot]
      if e then
        cursor.offset, cursor.line = e, end_line[slot]
      end
      cursor.index = write_seq
      done[slot] = false
      write_seq = write_seq + 1
    end
    ::settled::
    -- cursor.index - last >= threshold, or a bound of the policy reached
    if write_seq - last > threshold
      or (watch and (now() - last_t >= bound_s or live.cost - last_cost >= bound_usd)) then
      local why = due(R)
      if why then
        gm = gm and sums_put(totals, gm, gs, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost,
          s_calls, s_tokens, s_cost) -- the checkpoint writes the totals
        last, last_t, last_cost, bound_s, bound_usd, threshold, watch = begun(R, why)
      end
    end
  end
  gm = gm and sums_put(totals, gm, gs, calls, tin, tout, cost, cached, saved, m_calls, m_tokens, m_cost, s_calls,
    s_tokens, s_cost)
  D.write_seq = write_seq
end

-- A settled row's record: one whose checkpoint is written (R.spare, see
-- checkpoint.write), else a new one. The error is set only when there is
-- one or the reused record had one (setting an absent key to nil costs;
-- flush clears line, tb and usage).
local function record(R, line, status, key, msg)
  local spare = R.spare
  local ns = #spare
  if ns == 0 then
    return { line = line, status = status, key = key, error = msg }
  end
  local d = spare[ns]
  spare[ns] = nil
  d.line, d.status, d.key = line, status, key
  if msg ~= nil or d.error ~= nil then
    d.error = msg
  end
  return d
end

-- Hands an ended row's outcome to its handler; a settled row waits in
-- the reorder window for flush. Called from the row's batch task.
local function settle(R, D, seq, status, line, msg, tb, key, usage)
  local handle = handlers[status]
  if handle then
    handle(R, seq, key, msg)
    return
  end
  local d = record(R, line, status, key, msg)
  if tb ~= nil then
    d.tb = tb
  end
  if usage ~= nil then
    d.usage = usage
  end
  D.done[seq % D.window + 1] = d
  if status == "failed" then -- note_outcome acts on failures only: no call per row
    note_outcome(R, seq, key, msg, tb, status)
    if R.same_fails >= 0 and D.batch then -- no row through yet: flush may stop the run on this one
      D.batch.r0 = -1 -- its batch ends after this row (as if suspended), see batcher
    end
  end
end

-- oner(R, D) -> run_one(row, seq): a batch of one row, without the batch
-- table. -> whether the task was suspended.
local function oner(R, D)
  local resumes, process = sched.resumes, R.process
  return function(row, seq)
    local r0 = resumes()
    settle(R, D, seq, process(row, seq))
    return resumes() ~= r0
  end
end

-- settle for a row that got through (status "ok", no error): settle
-- without the checks such a row skips, and without a record: its line
-- and key wait in the window's rings, its slot holds its LLM figures, or
-- true when it has none.
local function settle_ok(R, D, seq, line, key, usage)
  local slot = seq % D.window + 1
  D.lines[slot], D.keys[slot] = line, key
  D.done[slot] = usage or true
end

-- batcher(R, D) -> run_batch(b), run_one(row, seq): the bodies of a
-- batch task and of a row's own task: outcome.batch_runner's when it
-- applies, else run_batch runs R.process on b.rows[i], b.seqs[i] in turn
-- and settles each row into the reorder window at once (no completion
-- record per row), until the task has been suspended or the run stops.
-- b.ran counts the rows that ran (the row that raised, when the task
-- fails, is b.ran + 1). -> whether the task was suspended.
local function batcher(R, D)
  local run, one = outcome.batch_runner(R, settle, settle_ok) -- the rows under one xpcall, when it applies
  if run then
    return function(b)
      return run(b, D)
    end, function(row, seq)
      return one(row, seq, D)
    end
  end
  local resumes, process = sched.resumes, R.process
  return function(b)
    local rows, seqs, n = b.rows, b.seqs, b.n
    b.r0 = resumes()
    D.batch = b
    for i = 1, n do
      if i > 1 and (R.stop or resumes() ~= b.r0) then
        break
      end
      local seq = seqs[i]
      settle(R, D, seq, process(rows[i], seq))
      b.ran = i
    end
    return resumes() ~= b.r0
  end, oner(R, D)
end

-- Takes each ended batch task: the rows it did not start go back to
-- admit, and the outcome sizes the next batches.
local function collect(R, D, ended)
  local tasks, inflight, redo_rows, redo_seqs = D.tasks, D.inflight, D.redo_rows, D.redo_seqs
  D.ntasks = D.ntasks - #ended
  for _, c in ipairs(ended) do
    local b = tasks[c.id]
    tasks[c.id] = nil
    if type(b) == "number" then -- one row (spawn_one): b is its seq
      inflight = inflight - 1
      if not c.ok then
        settle(R, D, b, "failed", false, row_error(c.err).msg)
      elseif c[1] then
        D.size = 1
      else
        D.size = math.min(D.size + 1, MAX_BATCH)
      end
    else
      local seqs, n, ran = b.seqs, b.n, b.ran
      inflight = inflight - n
      if not c.ok then -- the row after the last that ran raised
        ran = ran + 1
        settle(R, D, seqs[ran], "failed", false, row_error(c.err).msg)
      elseif c[1] then
        D.size = 1
      elseif ran == n then
        D.size = math.min(D.size + n, MAX_BATCH)
      end
      for i = n, ran + 1, -1 do -- admit takes them from the end: in input order
        redo_rows[#redo_rows + 1], redo_seqs[#redo_seqs + 1] = b.rows[i], seqs[i]
      end
      local spare = D.spare_batches
      spare[#spare + 1] = b -- its rows stay referenced until admit overwrites them
    end
  end
  D.inflight = inflight
end

-- How long the driver may wait for rows to end (nil: until one does):
-- until the grace period ends; checkpoints waiting for their fsyncs
-- are looked at every SYNC_POLL_S, so they commit soon after; a
-- policy that watches the clock is asked at least once a second.
local SYNC_POLL_S = 0.002
local function wait_s(R, grace_until)
  local s = grace_until and math.max(grace_until - now(), 0)
    or (not R.every_rows and 1 or nil)
  if R.syncing > 0 and (s == nil or s > SYNC_POLL_S) then
    return SYNC_POLL_S
  end
  return s
end

-- One turn's end: an early stop, a full disk, then checkpoints and the
-- progress line.
local function after_turn(R)
  local abort = R.rt.abort
  if abort and not R.fatal then
    R.fatal, R.stop = { msg = abort }, true
  end
  if R.full then
    R.stop = true -- the rows in flight finish; the final checkpoint may still fit
  end
  checkpoint.turn(R)
  progress.draw(R, false)
end

--- drive(R) -> whether the input was read to its end with nothing
--- stopping the run. The body of the driver task (see the header).
function M.drive(R)
  R.driver_id = sched.current()
  sched.trap_signals()
  R.st:keepalive(R.run.id, require("orch.runs").HEARTBEAT_S)
  if R.bus.wants.start then
    R.bus.notify({ type = "start", run_id = R.run.id, name = R.wf.name, resumed = R.ckpt ~= nil,
      rows_done = R.cursor.index })
  end
  local first = R.cursor.index + 1
  local window = math.max(R.conc * 16, 1024)
  -- the reorder window's rings, indexed by seq % window + 1 (admission
  -- keeps fewer than window rows unsettled): a settled row's record (for
  -- a row that got through, its LLM figures or true, with its output
  -- line and key in lines and keys), and where the input continues after
  -- it (false: the source does not say). Slots are reused, never added
  -- or removed: no table churn per row. A ring of 32,000 slots (2,000 in
  -- flight) takes 0.5 MB.
  local done, end_offset, end_line, lines, keys = {}, {}, {}, {}, {}
  for i = 1, window do
    done[i], end_offset[i], end_line[i], lines[i], keys[i] = false, false, false, false, false
  end
  local D = { next_seq = first, write_seq = first, done = done, tasks = {}, inflight = 0, ntasks = 0, eof = false,
    end_offset = end_offset, end_line = end_line, lines = lines, keys = keys, window = window,
    size = 1, redo_rows = {}, redo_seqs = {}, spare_batches = {} }
  D.run_batch, D.run_one = batcher(R, D)
  R.out_bytes = R.ckpt and R.ckpt.output_offset or 0
  while true do
    local nsig = signals(R, D)
    admit(R, D)
    flush(R, D)
    if D.inflight == 0 and ((D.eof and #D.redo_seqs == 0) or R.stop) then
      break
    end
    local grace_until = D.grace_until
    if grace_until and (nsig > 1 or sched.now() >= grace_until) then
      R.log(0, string.format("abandoning %d row(s) in flight; they will run again on resume", D.inflight))
      break
    end
    R.inflight = D.ntasks -- the live figures' rows in flight: a task runs one row at a time
    collect(R, D, sched.wait(wait_s(R, grace_until)))
    after_turn(R)
  end
  flush(R, D)
  progress.draw(R, true)
  R.st:keepalive(nil)
  sched.untrap_signals()
  return D.eof and not R.stop
end

return M
