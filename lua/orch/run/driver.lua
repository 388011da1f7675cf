-- orch.run.driver: the driver task of a row run. Each turn it looks at
-- the signals, admits rows while there is room (at most `concurrency` in
-- flight, each row its own task, within a reorder window), settles the
-- finished rows to the output strictly in input order, then waits for
-- rows to end and hands each one's outcome to its handler. After a first
-- SIGINT/SIGTERM no row is admitted; the rows in flight have GRACE_S
-- seconds to finish. R is the run's state (see orch.run); D, the
-- driver's own (below), lives for one drive. The per-row loops keep what
-- they use in locals: they run once for every row.
local sched = require "orch.sched"
local outcome = require "orch.run.outcome"
local checkpoint = require "orch.run.checkpoint"
local progress = require "orch.run.progress"

local M = {}

local note_outcome, record_failure, same_failure = outcome.note_outcome, outcome.record_failure, outcome.same_failure
local row_error, handlers = outcome.row_error, outcome.handlers
local due, write = checkpoint.due, checkpoint.write

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

-- Reads rows and spawns their tasks while there is room.
local function admit(R, D)
  local src, process, conc, window, write_seq = R.src, R.process, R.conc, D.window, D.write_seq
  local tasks, end_offset, end_line = D.tasks, D.end_offset, D.end_line
  local next_seq, inflight, eof = D.next_seq, D.inflight, D.eof
  while not eof and not R.stop and inflight < conc and next_seq - write_seq < window do
    local iok, row, line, a, b, c = pcall(src.next)
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
        end_offset[slot], end_line[slot] = b or false, c
        malformed(R, D, next_seq, line)
        next_seq = next_seq + 1
      end
    else
      local slot = next_seq % window + 1
      end_offset[slot], end_line[slot] = a or false, b
      tasks[sched.spawn(process, row, next_seq)] = next_seq
      next_seq = next_seq + 1
      inflight = inflight + 1
    end
  end
  D.next_seq, D.inflight, D.eof = next_seq, inflight, eof
end

-- Settles rows in input order: output line, figures, result, cursor; and
-- a checkpoint when one is due.
local function flush(R, D)
  local done, end_offset, end_line, cursor, window = D.done, D.end_offset, D.end_line, R.cursor, D.window
  local out, counts, totals, bus = R.out, R.counts, R.totals, R.bus
  local pending, last, threshold = R.pending, R.last_ckpt_index, checkpoint.threshold(R)
  local write_seq = D.write_seq
  while true do
    local slot = write_seq % window + 1
    local d = done[slot]
    if not d then
      break
    end
    if d.line then
      out:write(d.line)
      R.out_bytes = R.out_bytes + #d.line
    end
    -- counted and recorded when settled, so a checkpoint's figures and
    -- errors file hold exactly the rows before its cursor
    counts[d.status] = counts[d.status] + 1
    local usage = d.usage -- the row's LLM figures, for the row event too
    if usage then
      add_usage(totals, usage)
      d.usage = nil
    end
    if d.error ~= nil then
      record_failure(R, write_seq, d.key, d.error, d.tb, d.status)
    end
    if d.status == "failed" then
      same_failure(R, d.error)
    end
    if bus.wants.row then
      bus.notify({ type = "row", seq = write_seq, key = d.key, status = d.status, error = d.error, usage = usage })
    end
    d.seq, d.line = write_seq, nil
    if d.tb ~= nil then
      d.tb = nil
    end
    pending[#pending + 1] = d -- the record doubles as the result to store
    local e = end_offset[slot]
    if e then
      cursor.offset, cursor.line = e, end_line[slot]
    end
    cursor.index = write_seq
    done[slot] = false
    write_seq = write_seq + 1
    if cursor.index - last >= threshold then
      local why = due(R)
      if why then
        write(R, why)
        pending, last = R.pending, R.last_ckpt_index
      end
    end
  end
  D.write_seq = write_seq
end

-- Hands each ended row task's outcome to its handler; a settled row
-- waits in the reorder window for flush.
local function collect(R, D, batch)
  local tasks, done, inflight, window = D.tasks, D.done, D.inflight, D.window
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
    local handle = handlers[status]
    if handle then
      handle(R, seq, key, msg)
    else
      -- a settled row's record; the fields a row that got through lacks
      -- are added only when present (setting an absent key to nil costs)
      local d = { line = line, status = status, key = key }
      if msg ~= nil then
        d.error = msg
      end
      if tb ~= nil then
        d.tb = tb
      end
      if usage ~= nil then
        d.usage = usage
      end
      done[seq % window + 1] = d
      if status == "failed" then -- note_outcome acts on failures only: no call per row
        note_outcome(R, seq, key, msg, tb, status)
      end
    end
  end
  D.inflight = inflight
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
  -- keeps fewer than window rows unsettled): a settled row's record, and
  -- where the input continues after it (false: the source does not say).
  -- Slots are reused, never added or removed: no table churn per row.
  local done, end_offset, end_line = {}, {}, {}
  for i = 1, window do
    done[i], end_offset[i], end_line[i] = false, false, false
  end
  local D = { next_seq = first, write_seq = first, done = done, tasks = {}, inflight = 0, eof = false,
    end_offset = end_offset, end_line = end_line, window = window }
  R.out_bytes = R.ckpt and R.ckpt.output_offset or 0
  while true do
    local nsig = signals(R, D)
    admit(R, D)
    flush(R, D)
    if D.inflight == 0 and (D.eof or R.stop) then
      break
    end
    local grace_until = D.grace_until
    if grace_until and (nsig > 1 or sched.now() >= grace_until) then
      R.log(0, string.format("abandoning %d row(s) in flight; they will run again on resume", D.inflight))
      break
    end
    -- a policy that watches the clock is asked at least once a second
    R.inflight = D.inflight -- the live figures' rows in flight
    collect(R, D, sched.wait(grace_until and math.max(grace_until - sched.now(), 0)
      or (not R.every_rows and 1 or nil)))
    after_turn(R)
  end
  flush(R, D)
  progress.draw(R, true)
  R.st:keepalive(nil)
  sched.untrap_signals()
  return D.eof and not R.stop
end

return M
