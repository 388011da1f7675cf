-- orch.worker: many workers, one run (`orch worker WORKFLOW.lua --db URL`).
--
-- Any number of processes, on any machines, start the same workflow
-- against one store; they share one run. The run is found by its identity
-- (workflow file, input and --set parameters): its id is derived from it,
-- so workers starting at once create it once, and a worker whose workflow,
-- input or parameters differ from an unfinished worker run of the same
-- workflow name is refused with the difference named.
--
-- The input is split into leases of --lease-rows rows, planned once by
-- the first worker, which reads the input through (the leases' byte
-- offsets are stored with them). A worker claims the next free lease (or
-- one whose heartbeat is older than --lease-timeout by the store's clock),
-- and runs the ordinary row engine over it (orch.run's state, driver,
-- outcome handlers and policies) with a source that starts at the lease's
-- cursor and ends after its last row, and a sink that keeps the lines in
-- memory. A checkpoint of a lease is one store transaction: the settled
-- rows' results with their output lines (results.data), the lease's
-- cursor and the run's counters; it writes nothing once the lease was taken
-- back. The commit of the run's last lease completes the run, and that
-- worker writes the workflow's output file from the results; `orch
-- export RUN` writes it too.
--
-- Shared: the budget (each request reserves its estimate in the store,
-- which refuses once spent + reserved + estimate would pass max_usd; every
-- worker then drains and stops, exit 3, the run paused; `orch resume RUN
-- --budget X` raises it and joins as a worker) and the LLM response
-- journal (replies are journaled in the store and looked up before
-- sending; a request being sent by one worker is marked in the store, and
-- an identical one on another worker waits for its reply instead of paying
-- again: see shared_journal) and the rate limits (token buckets in the
-- store, or divided among the live workers: see shared_limits). Refused: ctx.state (a checkpoint of a lease
-- that holds any fails the worker with why) and steps workflows (at load).
local cli_base = require("orch.cli_base")
local fmt = require("orch.fmt")
local hash = require("orch.hash")
local json = require("orch.json")
local log = require("orch.log")
local oio = require("orch.io")
local runs = require("orch.runs")
local sched = require("orch.sched")
local store = require("orch.store")
local sys = require("orch.sys")

local say = cli_base.say

local M = {}

M.LEASE_ROWS = 1000
M.LEASE_TIMEOUT_S = 30 -- a lease whose heartbeat is older than this (store clock) is taken back
M.IDENTITY_PREFIX = "worker:" -- worker runs' identities: never resumed by orch run

--- is_worker_run(run) -> whether run was made by orch worker.
function M.is_worker_run(run)
  return type(run.identity) == "string" and run.identity:sub(1, #M.IDENTITY_PREFIX) == M.IDENTITY_PREFIX
end

-- The worker's name in the store: host, pid and a nonce (a pid may come
-- back after a reboot).
local function worker_name()
  return string.format("%s:%d:%s", sys.hostname(), sys.pid(), hash.xxh64(tostring({}) .. store.now_ms()):sub(1, 6))
end

-- What differs between a worker run and this worker's identity: -> text | nil
local function difference(run, ident)
  if run.workflow_hash ~= ident.workflow_hash then
    return string.format("the workflow file differs (%s here, the run's was %s; content hash %s here, %s in the run)",
      ident.workflow_path, run.workflow_path, ident.workflow_hash:sub(1, 12), tostring(run.workflow_hash):sub(1, 12))
  elseif run.input ~= ident.input or run.input_fp ~= ident.input_fp then
    return string.format("the input differs (%s, %s here; the run's: %s, %s)", ident.input, tostring(ident.input_fp),
      run.input, tostring(run.input_fp))
  elseif run.params ~= ident.params then
    return string.format("the parameters differ (--set %s here, %s in the run)", ident.params, run.params)
  end
end

-- The run this worker joins or creates. -> run | nil, message, exit code
local function join(st, wf, ident, opts)
  local identity = M.IDENTITY_PREFIX .. ident.identity
  for _, status in ipairs({ "running", "paused", "pending" }) do
    for _, r in ipairs(st:run_list({ status = status, name = wf.name }) or {}) do
      if M.is_worker_run(r) and r.identity ~= identity then
        return nil, string.format("run %s of workflow %s is %s with other workers, and this worker's %s; a worker "
          .. "joins only the same workflow file, input and parameters: start it with those, or wait for run %s "
          .. "to finish", r.id, wf.name, r.status, difference(r, ident) or "identity differs", r.id), 2
      end
    end
  end
  local slug = wf.name:lower():gsub("[^%w]+", "-"):gsub("^%-+", ""):gsub("%-+$", ""):sub(1, 40)
  local id = (slug ~= "" and slug or "run") .. "-w" .. ident.identity:sub(1, 8)
  local run = st:run_get(id)
  if run == nil then
    local now = store.now_ms()
    local new = { id = id, status = "running", created_ms = now, heartbeat_ms = now, owner_pid = 0,
      owner_host = nil }
    for k, v in pairs(ident) do
      new[k] = v
    end
    new.identity = identity
    if st:run_create(new) then
      st:event_add(id, "started", json.encode({ workers = true, cwd = sys.realpath("."),
        workflow = ident.workflow_arg, lease_rows = opts.lease_rows, lease_timeout = opts.lease_timeout }))
    end
    run = st:run_get(id) -- made here or by a worker that started at the same time
    if run == nil then
      return nil, "cannot create the worker run " .. id, 1
    end
  end
  if run.status == "completed" then
    return nil, string.format("run %s already completed; export it with: orch export %s%s -o FILE", run.id, run.id,
      opts.db and (" --db " .. runs.shell_quote(log.mask(opts.db))) or ""), 0
  elseif run.status == "failed" then
    return nil, string.format("run %s failed (%s); the workers of this workflow, input and parameters cannot go on",
      run.id, run.error or "no reason recorded"), 1
  end
  local diff = difference(run, ident)
  if diff then
    return nil, string.format("run %s: %s; a worker joins only the same workflow file, input and parameters", run.id,
      diff), 2
  end
  return run
end

-- Reads the input through once and stores the lease plan (unless another
-- worker stored one first). -> true | nil, message
local function plan_leases(st, wf, run, lease_rows)
  local have = st:lease_list(run.id)
  if have and #have > 0 then
    return true
  end
  local src, err = oio.open_source(wf.input)
  if src == nil then
    return nil, "cannot read the input: " .. tostring(err)
  end
  local plan = {}
  local cur = { offset = 0, line = 1, index = 0 }
  local function close_lease(n)
    plan[#plan + 1] = { no = #plan + 1, first_index = cur.index - n, rows = n, offset = cur.start_offset,
      line = cur.start_line }
  end
  cur.start_offset, cur.start_line = 0, 1
  local n = 0
  while true do
    local ok, row, _, a, b, c = pcall(src.next)
    if not ok then
      src.close()
      return nil, "cannot read the input: " .. tostring(row)
    end
    if row == nil then
      break
    end
    local e, eline = a, b
    if row == false then
      if a then -- a fatal read error
        src.close()
        return nil, "cannot read the input: " .. tostring(_)
      end
      e, eline = b, c
    end
    n = n + 1
    cur.index = cur.index + 1
    if e then
      cur.offset, cur.line = e, eline or cur.line
    end
    if n == lease_rows then
      close_lease(n)
      n = 0
      cur.start_offset, cur.start_line = cur.offset, cur.line
    end
  end
  if n > 0 or #plan == 0 then
    close_lease(n)
  end
  src.close()
  local pok, perr = st:lease_plan(run.id, plan)
  if not pok then
    return nil, perr
  end
  return true
end

-- The source of one lease: the input from the lease's cursor, ending
-- after its last row.
local function lease_source(wf, lease)
  local src, err = oio.open_source(wf.input)
  if src == nil then
    return nil, err
  end
  local last = lease.first_index + lease.rows
  local taken = lease.index
  local inner = src.next
  function src.next()
    if taken >= last then
      return nil
    end
    taken = taken + 1
    return inner()
  end
  local ok, serr = pcall(src.skip, { offset = lease.offset, index = lease.index, line = lease.line })
  if not ok then
    src.close()
    return nil, serr
  end
  return src
end

-- The sink of a lease: each settled row's output line, kept until the
-- lease's next checkpoint stores it as the row's result data.
local function lease_sink(columns)
  local sink = { lines = {}, bytes = 0 }
  function sink.encode(_, row)
    return json.encode(row, columns, "\n")
  end
  function sink.write(self, line)
    self.lines[#self.lines + 1] = line
    self.bytes = self.bytes + #line
    return true
  end
  function sink.flush(self)
    return self.bytes
  end
  function sink.hash()
    return "0000000000000000"
  end
  function sink.close() end
  return sink
end

local HAS_LINE = { ok = true, defaulted = true }
local COUNTED = { "llm_calls", "tokens_in", "tokens_out" }

-- W: this worker ({ st, name, run, opts }); R: the lease's run state.
-- The store R sees: a checkpoint is a lease commit, the heartbeat also
-- beats the lease, and the shared run record is written by commits only.
local function lease_store(W, R, lease)
  local real = W.st
  local proxy = {}
  setmetatable(proxy, { __index = function(_, k)
    local f = real[k]
    return function(_, ...)
      return f(real, ...)
    end
  end })
  function proxy.run_update()
    return true
  end
  function proxy.keepalive(_, id, secs)
    if id == nil then
      return real:keepalive(nil)
    end
    return real:keepalive(id, math.min(secs, W.beat_s), lease.no, W.name)
  end
  local committed = { cost = 0, llm_calls = 0, tokens_in = 0, tokens_out = 0 }
  local seq = 0
  function proxy.checkpoint_write(_, run, ckpt, pending, state_kv)
    if next(state_kv) ~= nil then
      return nil, "ctx.state is not shared between workers: a workflow run by orch worker must not write ctx.state "
        .. "(write what a row needs into the row, or run it with orch run)"
    end
    local sink = R.out
    local lines, j = sink and sink.lines or {}, 1
    local add = { rows_done = #pending, rows_ok = 0, rows_failed = 0, rows_dropped = 0, rows_defaulted = 0 }
    local results = {}
    for i, d in ipairs(pending) do
      local data
      if sink and HAS_LINE[d.status] then
        data = lines[j]
        j = j + 1
      end
      add["rows_" .. d.status] = add["rows_" .. d.status] + 1
      results[i] = { seq = d.seq, key = d.key, status = d.status, error = d.error, data = data }
    end
    if j - 1 ~= #lines then
      return nil, string.format("lease %d: %d output lines for %d rows that write one", lease.no, #lines, j - 1)
    end
    local totals = R.totals
    for _, k in ipairs(COUNTED) do
      add[k] = (totals[k] or 0) - committed[k]
    end
    add.cost_usd = (totals.cost or 0) - committed.cost
    local t0 = sched.now()
    local rc, err = real:lease_commit(run.id, { no = lease.no, worker = W.name, offset = ckpt.input_offset,
      line = ckpt.input_line, index = ckpt.input_index, ["end"] = R.lease_end or 0, add = add }, results)
    if rc == nil then
      return nil, err
    elseif rc == 0 then
      R.lease_lost = true
      return nil, string.format("lease %d of run %s was taken back by another worker (this worker's heartbeat "
        .. "went stale); its rows since the last commit run again there", lease.no, run.id)
    end
    R.run_completed = rc == 2
    committed.cost = totals.cost or 0
    for _, k in ipairs(COUNTED) do
      committed[k] = totals[k] or 0
    end
    if sink then
      sink.lines = {}
    end
    seq = seq + 1
    return { seq = seq, checksum = "", bytes = 0, duration_ms = (sched.now() - t0) * 1000 }
  end
  return proxy
end

-- The shared budget: the run's own (orch.limits) for waiting and warnings,
-- with every request's estimate reserved in the store first.
local function shared_budget(W, R, max_usd)
  local rt, st, run_id = R.rt, W.st, W.run.id
  local own = rt.budget
  if own == nil then
    return
  end
  local b = setmetatable({}, { __index = own })
  function b.acquire(estimate)
    local ok, why = own.acquire(estimate)
    if not ok then
      return ok, why
    end
    local got, err = st:budget_reserve(run_id, estimate, max_usd)
    if got then
      return true
    end
    own.release(estimate)
    if got == nil then
      return false, "cannot reserve budget in the store: " .. tostring(err)
    end
    local s = st:budget_get(run_id) or { max_usd = max_usd, spent_usd = 0, reserved_usd = 0 }
    return false, string.format("budget of $%.4f reached across the run's workers: $%.4f spent, $%.4f in flight, "
      .. "next request up to $%.4f", s.max_usd, s.spent_usd, s.reserved_usd, estimate)
  end
  function b.release(estimate)
    own.release(estimate)
    st:budget_settle(run_id, estimate, 0)
  end
  rt.budget = b
  local own_after = rt.after_spend
  rt.after_spend = function(cost) -- a call's cost, once counted
    if cost and cost > 0 then
      st:budget_settle(run_id, 0, cost)
    end
    if own_after then
      own_after(cost)
    end
  end
end

-- The shared journal: a request whose reply is not journaled is marked
-- as this worker's in the store before it is sent (journal_pend, for the
-- LLM timeout twice over); a worker that finds another's live marker, or a
-- row of its own already sending the same request, waits for the reply to
-- reach the journal instead of paying again, and sends it itself only once
-- the marker expired (its sender died or failed). W.pending: this
-- worker's requests being sent, key -> { until_t (sched clock), task }.
local function shared_journal(W, R)
  local rt, st = R.rt, W.st
  local own = rt.journal
  if own == nil then
    return
  end
  local ttl_s = 2 * ((R.wf.llm and R.wf.llm.timeout) or 60)
  local pending = W.pending
  rt.journal = {
    get = function(key)
      local hit = own.get(key)
      local wait = 0.02
      local me = sched.current()
      while hit == nil do
        local p = pending[key]
        if p and p.task == me then -- this row asks again (a retry): it is the one sending
          return nil
        end
        if p == nil or p.until_t < sched.now() then
          local mine, err = st:journal_pend(key, W.name, math.floor(ttl_s * 1000))
          if mine or mine == nil then -- a store that cannot mark it: send, as one process would
            if mine == nil then
              R.log(1, "cannot mark an LLM request as being sent: " .. tostring(err))
            end
            pending[key] = { until_t = sched.now() + ttl_s, task = me }
            return nil
          end
        end
        W.waits = W.waits + 1
        sched.sleep(wait) -- another worker, or another row here, is sending it (or has journaled it): look again
        wait = math.min(wait * 2, 0.25)
        hit = own.get(key)
      end
      return hit
    end,
    put = function(key, ...) -- the entry's fields, or its table, as the run's journal takes them
      own.put(key, ...)
      pending[key] = nil -- the marker goes with the lease's next commit, once the reply is journaled
    end,
  }
end

M.SHARED_RATE = { bucket = true, split = true }

-- The workflow's rpm/tpm hold for the run as a whole, by llm.shared_rate:
-- "bucket" (the default): every request takes from the run's token
-- buckets in the store (rate_take: refilled by the store's clock, one
-- second's worth of burst), so the run never sends more than the limit
-- plus that burst in any span, however many workers start, stop or die.
-- "split": each worker takes an equal share, the limit divided by the
-- workers live when it starts a lease (holding a lease with a fresh
-- heartbeat, itself included), with no store traffic per request; but
-- workers that start together each see themselves alone, and one that
-- joins mid-lease raises the run's rate until the others' next lease
-- (bench/workers_rate.md measures both).
local function shared_limits(W, R, lease)
  local llm = R.wf.llm
  if not (llm and (llm.rpm or llm.tpm)) then
    return
  end
  local limits = require("orch.limits")
  if (llm.shared_rate or "bucket") == "bucket" then
    local st, run_id = W.st, W.run.id
    R.rt.limiter = limits.shared_limiter(function(kind, amount, limit)
      return st:rate_take(run_id, kind, amount, limit)
    end, llm.rpm, llm.tpm)
    R.log(1, string.format("lease %d: rate limits %s%s for the run, from its buckets in the store", lease.no,
      llm.rpm and string.format("rpm %g", llm.rpm) or "", llm.tpm and string.format(" tpm %g", llm.tpm) or ""))
    return
  end
  local live = { [W.name] = true }
  local n = 1
  for _, l in ipairs(W.st:lease_list(W.run.id) or {}) do
    if l.status == "taken" and l.owner and not live[l.owner] and l.age_ms < W.timeout_s * 1000 then
      live[l.owner] = true
      n = n + 1
    end
  end
  local rpm, tpm = llm.rpm and llm.rpm / n, llm.tpm and llm.tpm / n
  R.rt.limiter = limits.limiter(rpm, tpm)
  R.log(1, string.format("lease %d: rate limits %s%s, the run's shared by %d live worker(s)", lease.no,
    rpm and string.format("rpm %.1f", rpm) or "", tpm and string.format(" tpm %.1f", tpm) or "", n))
end

-- Runs one lease with the row engine. -> "done" | "lost" | "budget" |
-- "signal" | "failed", message
local function run_lease(W, lease)
  local wf, opts = W.wf, W.opts
  local parts = require("orch.run").parts
  local services = require("orch.run.services")
  local outcome = require("orch.run.outcome")
  local context = require("orch.context")
  local checkpoint = require("orch.run.checkpoint")
  local progress = require("orch.run.progress")
  local run = {}
  for k, v in pairs(W.run) do
    run[k] = v
  end
  local ropts = { budget = W.max_usd, no_cache = opts.no_cache, concurrency = opts.concurrency,
    verbosity = opts.verbosity, log_json = opts.log_json, store = nil, run = run, db = opts.db }
  local R = parts.new_state(wf, ropts)
  local proxy = lease_store(W, R, lease)
  R.st, ropts.store = proxy, proxy
  local src, serr = lease_source(wf, lease)
  if src == nil then
    return "failed", "cannot read the input: " .. tostring(serr)
  end
  R.src = src
  if wf.output then
    R.out = lease_sink(src.columns)
  end
  R.conc = opts.concurrency or wf.concurrency or (wf.llm and wf.llm.concurrency) or 16
  R.cursor = { offset = lease.offset, index = lease.index, line = lease.line }
  R.live = context.live_totals(R.totals)
  services.setup(R)
  if W.max_usd then
    shared_budget(W, R, W.max_usd)
  end
  shared_journal(W, R)
  shared_limits(W, R, lease)
  R.process, R.defaulted = outcome.processor(R)
  checkpoint.start(R)
  progress.start(R)
  local ok, finished = parts.run_driver(R)
  local _, status, reason, error_text = parts.conclude(R, ok, finished)
  src.close()
  if R.lease_lost then
    return "lost", tostring(finished)
  end
  local ended = status == "completed"
  R.lease_end = ended and 1 or 2 -- not finished: given back, for another worker or a resume
  local cok, cerr = pcall(checkpoint.write, R, reason, "running")
  if not cok then
    if R.lease_lost then
      return "lost", tostring(cerr)
    end
    return "failed", tostring(cerr)
  end
  W.rows = W.rows + (R.cursor.index - lease.index)
  W.completed = W.completed or R.run_completed
  if ended then
    return "done"
  elseif R.paused == "budget" then
    return "budget", R.budget_msg
  elseif R.paused then
    return "signal", "stopped by " .. R.paused
  end
  return "failed", error_text
end

-- The run's output from its results, in input order, to path (through a
-- temporary file renamed over it). -> true | nil, message
function M.write_output(st, run, path)
  local tmp = path .. ".orch-tmp"
  local k, err = require("orch.sink").open(tmp, 0) -- makes the directory, as a run's sink does
  if k == nil then
    return nil, err
  end
  local werr
  local ok, lerr = st:each_result(run.id, function(r)
    if r.data and not werr then
      local wok, e = k:write(r.data)
      werr = not wok and e or nil
    end
  end)
  local fok, ferr = k:flush(true)
  k:close()
  werr = werr or (not ok and lerr) or (not fok and ferr) or nil
  if werr then
    os.remove(tmp)
    return nil, werr
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, rerr
  end
  return true
end

-- Waits s seconds, the event loop running.
local function pause(s)
  sched.run(function()
    sched.sleep(s)
  end)
end

-- Claims and runs leases until none is left. -> exit code
local function work(W)
  local st, run, wlog = W.st, W.run, W.log
  local stale_ms = math.floor(W.timeout_s * 1000)
  while true do
    local now = st:run_get(run.id)
    if now and now.status ~= "running" then -- paused by the budget on another worker, or failed there
      return now.status == "completed" and 0 or now.status == "paused" and 3 or 1
    end
    local lease, cerr = st:lease_claim(run.id, W.name, stale_ms)
    if lease == nil then
      wlog(-1, "worker " .. W.name .. ": " .. tostring(cerr), "error")
      return 1
    end
    if lease then
      wlog(1, string.format("lease %d: rows %d-%d%s", lease.no, lease.index + 1, lease.first_index + lease.rows,
        lease.claims > 1 and string.format(" (taken back from a stale worker, claim %d)", lease.claims) or ""))
      st:event_add(run.id, "lease", json.encode({ no = lease.no, worker = W.name, claims = lease.claims }))
      W.leases = W.leases + 1
      local how, msg = run_lease(W, lease)
      if how == "lost" then
        wlog(0, "warning: " .. msg, "warn")
      elseif how == "budget" then
        st:run_set_status(run.id, "paused", "budget: " .. tostring(msg)) -- the counters are the commits' alone
        wlog(-1, string.format("run %s paused: %s; to finish: orch resume %s%s --budget USD", run.id, msg, run.id,
          W.opts.db and (" --db " .. runs.shell_quote(log.mask(W.opts.db))) or ""), "warn")
        return 3
      elseif how == "signal" then
        wlog(0, string.format("worker %s %s: lease %d given back; the other workers go on", W.name, msg, lease.no))
        return 3
      elseif how == "failed" then
        st:run_set_status(run.id, "failed", tostring(msg))
        st:event_add(run.id, "failed", json.encode({ error = tostring(msg), worker = W.name }))
        wlog(-1, string.format("run %s failed: %s", run.id, tostring(msg)), "error")
        return 1
      end
    else
      local r = st:run_get(run.id)
      if r == nil or r.status ~= "running" then
        return r and r.status == "completed" and 0 or r and r.status == "paused" and 3 or 1
      end
      -- every lease is done or held by a live worker: wait for one to end or go stale
      pause(math.min(1, W.timeout_s / 4))
    end
  end
end

-- The lease timeout of the run, as its first worker set it (its "started"
-- event), or nil.
local function run_timeout(st, run)
  for _, ev in ipairs(st:event_list(run.id) or {}) do
    local ok, d = pcall(json.decode, ev.type == "started" and ev.data or "null")
    if ok and type(d) == "table" and tonumber(d.lease_timeout) then
      return tonumber(d.lease_timeout)
    end
  end
end

--- workers(st, run) -> { leases = { done, taken, free, total }, workers = { { name, live, lease, rows,
--- rows_per_s }, ... }, timeout_s } | nil, err: what orch status shows of a worker run. A worker is live
--- while it holds a lease whose heartbeat (store clock) is younger than the run's lease timeout; its
--- rows/s are the rows it committed over the time from its first claim to its last heartbeat.
function M.workers(st, run)
  local leases, err = st:lease_list(run.id)
  if leases == nil then
    return nil, err
  end
  local timeout_s = run_timeout(st, run) or M.LEASE_TIMEOUT_S
  local out = { leases = { done = 0, taken = 0, free = 0, total = #leases }, workers = {}, timeout_s = timeout_s }
  local by = {}
  for _, l in ipairs(leases) do
    out.leases[l.status] = out.leases[l.status] + 1
    if l.owner then
      local w = by[l.owner]
      if w == nil then
        w = { name = l.owner, live = false, rows = 0, first_ms = l.claimed_ms, last_ms = 0 }
        by[l.owner] = w
        out.workers[#out.workers + 1] = w
      end
      w.rows = w.rows + (l.index - l.first_index)
      w.first_ms = math.min(w.first_ms, l.claimed_ms)
      w.last_ms = math.max(w.last_ms, l.status == "done" and l.done_ms or l.heartbeat_ms)
      if l.status == "taken" and l.age_ms < timeout_s * 1000 then
        w.live, w.lease = true, l.no
      end
    end
  end
  for _, w in ipairs(out.workers) do
    local secs = (w.last_ms - w.first_ms) / 1000
    w.rows_per_s = secs > 0 and w.rows / secs or 0
    w.first_ms, w.last_ms = nil, nil
  end
  table.sort(out.workers, function(a, b)
    if a.live ~= b.live then
      return a.live
    end
    return a.name < b.name
  end)
  return out
end

-- What makes a worker refuse to start: -> nil | exit code (said)
local function refused(wf, path, opts)
  if wf.steps then
    say(string.format("%s: orch worker runs row workflows (input = ...); a steps workflow runs with orch run", path))
    return 2
  end
  local share = wf.llm and wf.llm.shared_rate
  if share ~= nil and not M.SHARED_RATE[share] then
    say(string.format("%s: llm.shared_rate must be \"bucket\" (the run's token buckets in the store) or \"split\" "
      .. "(the limit divided among the live workers), got %s", path, json.encode(share)))
    return 2
  end
  if wf.output and wf.output.kind ~= "jsonl" then
    say(string.format("%s: orch worker writes JSONL output; this workflow writes %s (%s): make it "
      .. "orch.write.jsonl(...), or run it with orch run", path, tostring(wf.output.kind), wf.output.path))
    return 2
  end
  local lease_rows, timeout_s = tonumber(opts.lease_rows or M.LEASE_ROWS), tonumber(opts.lease_timeout or
    M.LEASE_TIMEOUT_S)
  if not lease_rows or lease_rows < 1 or lease_rows ~= math.floor(lease_rows) then
    say("--lease-rows must be a whole number of rows, 1 or more, got '" .. tostring(opts.lease_rows) .. "'")
    return 2
  end
  if not timeout_s or timeout_s <= 0 then
    say("--lease-timeout must be a number of seconds above 0, got '" .. tostring(opts.lease_timeout) .. "'")
    return 2
  end
end

-- The worker that completed the run writes the workflow's output file.
local function completed(W)
  local st, run = W.st, W.run
  local final = st:run_get(run.id) or run
  W.log(0, string.format("run %s completed: %s rows (%s ok, %s failed, %s dropped), %s", run.id,
    fmt.count(final.rows_done), fmt.count(final.rows_ok), fmt.count(final.rows_failed),
    fmt.count(final.rows_dropped), fmt.usd(final.cost_usd)))
  if run.output then
    local ok, werr = M.write_output(st, final, run.output)
    if ok then
      W.log(0, "wrote " .. run.output)
    else
      W.log(0, string.format("warning: cannot write %s from here (%s); write it with: orch export %s -o FILE",
        run.output, tostring(werr), run.id), "warn")
    end
  end
end

-- --budget for a run's workers: setting the max drops the reservations
-- (on a paused run they were its stopped workers'); a run being worked
-- keeps its workers' reservations, so a worker joining with the max
-- already set changes nothing, and one that finds no budget creates it
-- with an empty reservation.
local function set_budget(st, run, max_usd)
  local b = st:budget_get(run.id)
  if run.status == "paused" or (b and math.abs(b.max_usd - max_usd) > 1e-9) then
    st:budget_set(run.id, max_usd)
  elseif not b then
    st:budget_reserve(run.id, 0, max_usd)
  end
end

-- The run's budget for this worker (--budget sets it for all: a higher one
-- lets a paused run go on); a run paused by its budget goes on only with
-- one. -> nil | exit code (said)
local function budget_and_status(W, st, run, opts)
  if opts.budget then
    set_budget(st, run, opts.budget)
  end
  local b = st:budget_get(run.id)
  W.max_usd = b and b.max_usd or (W.wf.budget and W.wf.budget.max_usd)
  if run.status == "paused" then
    if (run.error or ""):find("^budget") and not opts.budget then
      say(string.format("run %s is paused by its budget (%s); raise it for every worker: orch resume %s --budget "
        .. "USD", run.id, run.error, run.id))
      return 3
    end
    run.status, run.error = "running", nil
    st:run_set_status(run.id, "running")
  end
end

-- Joins the run and works its leases. -> exit code
local function serve(st, wf, path, opts)
  local timeout_s = tonumber(opts.lease_timeout or M.LEASE_TIMEOUT_S)
  local lease_rows = tonumber(opts.lease_rows or M.LEASE_ROWS)
  local run, err, code = join(st, wf, runs.identify(wf, path, opts.set), { db = opts.db, lease_rows = lease_rows,
    lease_timeout = timeout_s })
  if run == nil then
    (code == 0 and cli_base.note or say)(err)
    return code
  end
  local first = run_timeout(st, run) -- every worker of a run counts staleness alike: as its first one
  if first and opts.lease_timeout and tonumber(opts.lease_timeout) ~= first then
    cli_base.warn(string.format("warning: run %s takes leases back after %s s without a heartbeat (set by its "
      .. "first worker); --lease-timeout %s is ignored", run.id, tostring(first), opts.lease_timeout))
  end
  timeout_s = first or timeout_s
  local W = { st = st, wf = wf, run = run, opts = opts, name = worker_name(), timeout_s = timeout_s,
    beat_s = math.max(timeout_s / 4, 0.05), rows = 0, leases = 0, t0 = sched.now(), pending = {}, waits = 0,
    log = log.new(opts.verbosity or 0, opts.log_json, run.id) }
  code = budget_and_status(W, st, run, opts)
  if code then
    return code
  end
  local pok, perr = plan_leases(st, wf, run, lease_rows)
  if not pok then
    say(string.format("run %s: %s", run.id, perr))
    return 1
  end
  st:event_add(run.id, "worker", json.encode({ worker = W.name, pid = sys.pid(), host = sys.hostname() }))
  W.log(0, string.format("worker %s joined run %s", W.name, run.id))
  local exit = work(W)
  st:event_add(run.id, "worker_left", json.encode({ worker = W.name, rows = W.rows, leases = W.leases,
    waited_for_replies = W.waits, exit = exit }))
  if W.completed then
    completed(W)
  end
  return exit
end

--- command(opts, wf, path): `orch worker WORKFLOW.lua`, or (opts.resume_run)
--- the run `orch resume` named. -> exit code
function M.command(opts, wf, path)
  local code = refused(wf, path, opts)
  if code then
    return code
  end
  require("orch.cli").warn_unread_params(opts.set)
  return cli_base.with_store(opts, function(st)
    return serve(st, wf, path, opts)
  end)
end

return M
