-- orch.run.checkpoint: when a run writes a checkpoint, and how.
--
-- When: the checkpoint policy (orch.policy), asked as rows settle, once a
-- turn of the driver and on each event; the safety net of MAX_PENDING
-- settled rows under every policy; the rows' own ctx:checkpoint requests.
-- How: flush and fsync the sinks, then one store transaction with the
-- settled rows' results, the input cursor, the sinks' durable sizes and
-- the memento (ctx.state, counters, cost, the sinks' hashes). R is the
-- run's state (see orch.run).
-- A checkpoint the policy asks for while rows flow (begin) is taken at
-- once and queued, and the sinks' fsyncs start on threads unless some
-- are going; the rows go on. Once the fsyncs end, a turn's poll commits
-- the checkpoints they cover, in order, each its own transaction as
-- before, then starts fsyncs for those queued meanwhile: a checkpoint
-- never records output that is not on disk, and when the disk is slower
-- than the policy one fsync covers several. Any other checkpoint (the
-- end, a stop, a request, an event) commits the queue first.
local sched = require("orch.sched")
local json = require("orch.json")
local store = require("orch.store")
local policies = require("orch.policy")

local M = {}

local SPARE_MAX = 4096 -- settled records kept for reuse after a checkpoint

--- start(R): no checkpoint yet this process; the policy and the
--- counters it decides from (R.since, one table refreshed before each
--- question).
function M.start(R)
  local cursor, live = R.cursor, R.live
  R.pending = {} -- results settled since the last checkpoint (records)
  R.spare = {} -- records free for settle to reuse
  -- A store of this process takes the results packed as they settle
  -- (orch.store.results(): about 10 bytes a row, and the row's record
  -- is free again at once); a worker's lease store, a Lua proxy that
  -- commits each result with its output line, takes the records.
  if type(R.st) == "userdata" then
    R.packed = store.results()
    R.add_result = R.packed:adder() -- add(seq, key, status, error)
  end
  R.last_ckpt_index = cursor.index
  R.committed_index = cursor.index -- the last committed checkpoint's
  R.queue = {} -- checkpoints taken, waiting for their sinks' fsyncs (begin)
  R.syncing = 0 -- how many of them the fsyncs going now cover
  R.ckpt_count, R.ckpt_ms = 0, 0
  local policy = R.wf.checkpoint or policies.every_rows(R.M.CHECKPOINT_ROWS)
  R.every_rows = type(policy) == "table" and policy.rows -- the common case, asked inline
  R.decide = policies.decider(policy, "checkpoint")
  R.policy_reason = policies.name(policy)
  R.bounds = type(policy) == "table" and policy.bounds -- nil: asked after every row
  R.since = { rows_since = 0, seconds_since = 0, cost_since_usd = 0, tokens_since = 0,
    last_checkpoint_ms = store.now_ms(), mean_checkpoint_ms = 0, rows_done = cursor.index }
  R.last_t, R.last_cost, R.last_tokens = sched.now(), live.cost, live.tokens_in + live.tokens_out
  M.bound(R)
end

--- bound(R): the policy's bounds since the last checkpoint (R.bound_rows,
--- R.bound_seconds, R.bound_usd), read again after each checkpoint, when
--- its mean cost changes; all 0 for a policy without bounds.
function M.bound(R)
  if R.bounds then
    R.bound_rows, R.bound_seconds, R.bound_usd = R.bounds(R.since.mean_checkpoint_ms)
  else
    R.bound_rows, R.bound_seconds, R.bound_usd = 0, 0, 0
  end
end

-- Whether the policy, asked with no event, would say no without being
-- asked: its bounds are not reached.
local function within_bounds(R)
  return R.cursor.index - R.last_ckpt_index < R.bound_rows and R.live.cost - R.last_cost < R.bound_usd
    and sched.now() - R.last_t < R.bound_seconds
end

--- policy_says(R, event) -> whether the policy wants a checkpoint now
--- (event: the name of an event just reported, or nil); raises when the
--- policy fails.
function M.policy_says(R, event)
  local s, cursor, live = R.since, R.cursor, R.live
  s.rows_since = cursor.index - R.last_ckpt_index
  s.seconds_since = sched.now() - R.last_t
  s.cost_since_usd = live.cost - R.last_cost
  s.tokens_since = live.tokens_in + live.tokens_out - R.last_tokens
  s.event = event
  s.rows_done = cursor.index
  local ok, yes = pcall(R.decide, s)
  if not ok then
    error("the checkpoint policy failed: " .. tostring(yes), 0)
  end
  return yes
end

--- threshold(R) -> rows, watch: due is asked once `rows` rows have
--- settled past the last checkpoint and, when watch (a policy other than
--- every_rows), once the policy's seconds or dollars bound is reached
--- (R.bound_seconds, R.bound_usd; all 0 for a policy without bounds, so
--- asked after every row): the driver tests both inline, for every row,
--- with within_bounds' own comparisons, so due is asked at the same rows.
--- Read again after each checkpoint.
function M.threshold(R)
  local every, max = R.every_rows, R.M.MAX_PENDING
  if every then
    return math.min(every, max), false
  end
  return math.min(R.bound_rows, max), true
end

--- due(R) -> the reason for a checkpoint after a row settles, or nil.
function M.due(R)
  local n = R.cursor.index - R.last_ckpt_index
  if R.every_rows then
    if n >= R.every_rows then
      return R.policy_reason
    elseif n >= R.M.MAX_PENDING then
      return "rows" -- the safety net holds under every policy
    end
  elseif n >= R.M.MAX_PENDING then
    return "rows"
  elseif not within_bounds(R) and M.policy_says(R, nil) then
    return R.policy_reason
  end
end

--- run_record(R, status, error_text [, run]) -> the run record (R.run,
--- or run) with the settled figures, as the checkpoint stores it.
function M.run_record(R, status, error_text, run)
  local counts, totals = R.counts, R.totals
  run = run or R.run
  run.status = status
  run.error = error_text
  run.rows_done = R.cursor.index
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

-- The memento (ctx.state, counters, cost, the sinks' hashes) and
-- ctx.state's string keys, each as JSON; raises when ctx.state holds
-- what JSON cannot.
local function memento(R)
  local state, out, errs = R.state, R.out, R.errs
  local ok, m = pcall(json.encode, { state = state, counts = R.counts, totals = R.totals,
    output_hash = out and out:hash(), errors_hash = errs and errs:hash() })
  if not ok then
    error("ctx.state must hold only JSON values (strings, numbers, booleans, tables): " .. tostring(m), 0)
  end
  local kv = {}
  for k, v in pairs(state) do
    if type(k) == "string" then
      kv[k] = json.encode(v)
    end
  end
  return m, kv
end

-- The counters a policy asks about start again from the checkpoint just
-- taken (written, or begun and waiting for its fsyncs).
local function restart(R)
  local cursor, live, since = R.cursor, R.live, R.since
  R.last_ckpt_index = cursor.index
  R.last_t, R.last_cost, R.last_tokens = sched.now(), live.cost, live.tokens_in + live.tokens_out
  since.last_checkpoint_ms = store.now_ms()
end

-- What follows a committed checkpoint: its cost counts, the observers
-- and -v hear of it.
local function written(R, info, reason, rows, output_offset)
  R.ckpt_count = R.ckpt_count + 1
  R.ckpt_ms = R.ckpt_ms + info.duration_ms
  R.since.mean_checkpoint_ms = R.ckpt_ms / R.ckpt_count
  M.bound(R)
  if R.bus.wants.checkpoint then
    R.bus.notify({ type = "checkpoint", seq = info.seq, reason = reason, rows = rows,
      output_bytes = output_offset, ms = info.duration_ms })
  end
  R.log(1, string.format("checkpoint %d (%s): %d rows, output %d bytes, %.2f ms", info.seq, reason,
    rows, output_offset, info.duration_ms))
end

-- The checkpoint's transaction. -> info; raises on failure.
local function commit(R, run, ckpt, results, kv)
  local info, werr = R.st:checkpoint_write(run, ckpt, results, kv)
  if info == nil then
    error("cannot write a checkpoint: " .. tostring(werr), 0)
  end
  return info
end

-- The checkpoint at the cursor: its record, and the memento and state.
local function contents(R, reason, output_offset, errors_offset)
  local cursor = R.cursor
  local m, kv = memento(R)
  return {
    reason = reason,
    input_offset = cursor.offset,
    input_line = cursor.line,
    input_index = cursor.index,
    output_offset = output_offset,
    errors_offset = errors_offset,
    memento = m,
  }, kv
end

-- Starts the sinks' fsyncs, which cover every checkpoint queued so far
-- (each flushed its sinks when it was taken).
local function sync_queued(R)
  local out, errs = R.out, R.errs
  if out then
    out:sync_begin()
  end
  if errs then
    errs:sync_begin()
  end
  R.syncing = #R.queue
end

-- Commits the queued checkpoints the ended fsyncs cover (R.syncing of
-- them), in order, each leaving the queue once its transaction is in: a
-- commit that raises leaves it and those after it queued and covered.
local function commit_queued(R)
  local q = R.queue
  while R.syncing > 0 do
    local b = q[1]
    local info = commit(R, b.run, b.ckpt, b.results, b.kv)
    table.remove(q, 1)
    R.syncing = R.syncing - 1
    local run = R.run
    for k, v in pairs(b.run) do -- the run record has the committed figures
      run[k] = v
    end
    R.committed_index = b.ckpt.input_index
    written(R, info, b.ckpt.reason, b.ckpt.input_index, b.ckpt.output_offset)
  end
end

--- poll(R, wait): commits the queued checkpoints the sinks' fsyncs
--- cover once those are done, then starts the fsyncs of those queued
--- meanwhile; with wait, waits until none is queued. Raises on failure.
function M.poll(R, wait)
  local out, errs = R.out, R.errs
  while R.syncing > 0 do
    if (out and not out:sync_done(wait)) or (errs and not errs:sync_done(wait)) then
      return
    end
    commit_queued(R)
    if #R.queue > 0 then
      sync_queued(R)
    end
  end
end

--- begin(R, reason): a checkpoint the policy asked for while rows flow:
--- taken now, queued, committed by a later poll once the sinks' fsyncs
--- that cover it are done (see the header). A run whose results are not
--- packed (a worker's lease) or that runs steps, and one whose rows in
--- memory reach the safety net, write it at once.
function M.begin(R, reason)
  if not R.packed or R.steps or R.cursor.index - R.committed_index >= R.M.MAX_PENDING then
    return M.write(R, reason)
  end
  local out, errs = R.out, R.errs
  local output_offset = out and out:flush(false) or 0
  local errors_offset = errs and errs:flush(false) or 0
  local ckpt, kv = contents(R, reason, output_offset, errors_offset)
  local run = {}
  for k, v in pairs(R.run) do
    run[k] = v
  end
  local q = R.queue
  q[#q + 1] = { run = M.run_record(R, "running", nil, run), ckpt = ckpt, results = R.packed:take(), kv = kv }
  if R.syncing == 0 then
    sync_queued(R)
  end
  restart(R)
end

--- write(R, reason [, status, error_text]) -> info: writes a checkpoint
--- at the current cursor (the run record's status: "running" unless
--- given), the queued ones committed first; raises on failure. Its own
--- fsync comes first and covers the queued ones too, so none commits
--- after a failed fsync unless a later one succeeded.
function M.write(R, reason, status, error_text)
  local out, errs = R.out, R.errs
  local output_offset = out and out:flush(true) or 0
  local errors_offset = errs and errs:flush(true) or 0
  M.poll(R, true)
  local ckpt, kv = contents(R, reason, output_offset, errors_offset)
  local info = commit(R, M.run_record(R, status or "running", error_text), ckpt, R.packed or R.pending, kv)
  R.committed_index = R.cursor.index
  local packed = R.packed
  if packed then
    packed:clear()
  else
    -- the records just stored are reused for the rows that settle next
    -- (the driver's settle), unless there are so many they would hold
    -- memory a large policy (max_rows) means to give back
    R.spare = #R.pending <= SPARE_MAX and R.pending or {}
    R.pending = {}
  end
  restart(R)
  written(R, info, reason, R.cursor.index, output_offset)
  return info
end

--- turn(R): once a turn of the driver: the rows' ctx:checkpoint requests
--- (one checkpoint for all of a turn's, then their tasks go on), the
--- events reported (to the observers, and to the policy), and a policy
--- that is not every_rows.
function M.turn(R)
  M.poll(R, false)
  if #R.requested > 0 then
    local asked = R.requested
    R.requested = {}
    M.write(R, asked[1].name)
    for _, r in ipairs(asked) do
      if r.task then
        sched.unpark(r.task)
      end
    end
  end
  local evs, bus = R.events, R.bus
  if #evs > 0 then -- a new list only after events: not a table every turn
    R.events = {}
    for _, ev in ipairs(evs) do
      if bus.wants.event then
        bus.notify(ev)
      end
      if not R.every_rows and M.policy_says(R, ev.name) then
        M.write(R, "event " .. ev.name)
      end
    end
  end
  if not R.every_rows and not within_bounds(R) and M.policy_says(R, nil) then
    M.begin(R, R.policy_reason)
  end
end

return M
