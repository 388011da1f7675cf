-- orch.runs: a run's identity and life in the state store — find the
-- unfinished run to resume or create a new one, claim it from a dead
-- owner, check that its input has not changed, pick the checkpoint to
-- resume from, and record how it ends.
local check = require("orch.check")
local store = require("orch.store")
local json = require("orch.json")
local hash = require("orch.hash")
local sys = require("orch.sys")

local M = {}

M.STALE_MS = 30000 -- an owner whose heartbeat is older than this is presumed dead
M.HEARTBEAT_S = 5

--- The store path: --db, else ORCH_DB, else .orch/state.db.
function M.db_path(opts)
  return opts.db or os.getenv("ORCH_DB") or ".orch/state.db"
end

--- open(opts [, mode]) -> store | nil, message. mode "r": read-only, for
--- inspection (never creates the store). opts.require_durable
--- (--require-durable) refuses a store server that could lose
--- acknowledged writes in a crash of its own (Redis without appendonly yes
--- and appendfsync always), which is otherwise opened with a warning.
function M.open(opts, mode)
  if mode == nil and opts.require_durable then
    mode = "durable"
  end
  return store.open(M.db_path(opts), mode)
end

--- fingerprint(path [, old]) -> the input's fingerprint, or nil when it
--- cannot be read. Size and an XXH3-128 of the whole file, streamed in C:
--- any edit shows, wherever it is and whatever the mtime says, and a
--- touch that changes nothing does not stop a resume. old = true gives the
--- format stores written before this one hold ("size= mtime_ns= head=",
--- a hash of the first 64 KiB), to compare an old run's record with.
local function fingerprint(path, old)
  local st = sys.stat(path)
  if st == nil then
    return nil
  end
  if old then
    local fh = io.open(path, "rb")
    local head = fh and fh:read(65536) or ""
    if fh then
      fh:close()
    end
    return string.format("size=%d mtime_ns=%d head=%s", st.size, st.mtime_ns, hash.xxh64(head))
  end
  local h = hash.file(path)
  if h == nil then
    return nil
  end
  return string.format("size=%d xxh3=%s", st.size, h)
end
M.fingerprint = fingerprint

--- Whether a run's recorded input fingerprint is one from before the
--- whole-file hash.
local function old_fingerprint(fp)
  return type(fp) == "string" and fp:find(" head=", 1, true) ~= nil
end

--- shell_quote(s) -> s as one shell word.
function M.shell_quote(s)
  s = tostring(s)
  if s ~= "" and not s:find("[^%w%-_./=:,@+%%]") then
    return s
  end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- rerun_command(run_or_ident, db [, fresh]) -> the whole `orch run` line
--- that starts the run's workflow again with its parameters and store:
--- "orch run wf.lua --db x.db --set k=v ... --fresh".
function M.rerun_command(r, db, fresh)
  local words = { "orch", "run", M.shell_quote(r.workflow_arg or r.workflow_path) }
  if db then
    words[#words + 1] = "--db " .. M.shell_quote(db)
  end
  local ok, params = pcall(json.decode, r.params or "{}")
  if ok and type(params) == "table" then
    for _, k in ipairs(check.sorted_keys(params)) do
      words[#words + 1] = "--set " .. M.shell_quote(k .. "=" .. tostring(params[k]))
    end
  end
  if fresh ~= false then
    words[#words + 1] = "--fresh"
  end
  return table.concat(words, " ")
end

local function read_file(path)
  local fh = assert(io.open(path, "rb"))
  local s = fh:read("a")
  fh:close()
  return s
end

--- identify(wf, workflow_path, params) -> the identity fields of a new run.
function M.identify(wf, workflow_path, params)
  local abs_wf = sys.realpath(workflow_path) or workflow_path
  local input, input_fp, input_path
  if type(wf.input) == "table" and wf.input.path then
    input = sys.realpath(wf.input.path) or wf.input.path
    input_fp = fingerprint(wf.input.path)
    input_path = wf.input.path
  else
    input = type(wf.input) == "function" and "iterator" or "table"
    input_fp = input
  end
  local params_json = json.encode(setmetatable(params or {}, { __jsontype = "object" }))
  local whash = hash.xxh128(read_file(workflow_path))
  local output = wf.output and (wf.output.path:sub(1, 1) == "/" and wf.output.path
    or ((sys.realpath(".") or ".") .. "/" .. wf.output.path)) or nil
  return {
    workflow_arg = workflow_path, -- as given: resume loads it the same way, so messages name it the same
    input_path = input_path, -- as the workflow names it (for an old-format fingerprint)
    name = wf.name,
    workflow_path = abs_wf,
    workflow_hash = whash,
    input = input,
    input_fp = input_fp,
    params = params_json,
    output = output,
    identity = hash.xxh128(table.concat({ wf.name, whash, input, params_json }, "\0")),
  }
end

--- never_started(run): a run `orch estimate --sample` stored its estimate
--- on, pending with no owner: `orch run` starts it (it has nothing to
--- resume), `orch resume --all` leaves it alone.
function M.never_started(run)
  return run.status == "pending" and (run.owner_pid or 0) == 0
end

--- is_sample(run): the run record of an `orch estimate --sample` (see
--- orch.estimate): never resumed; the next sample removes one left over.
function M.is_sample(run)
  return run.id:find("^sample%-") ~= nil
end

--- Whether the run's owner is alive: a fresh heartbeat, and on this host a
--- live pid. A stale heartbeat means a hung or dead owner.
function M.owner_alive(run, now_ms)
  if run.owner_pid == nil or run.owner_pid == 0 then
    return false
  end
  if now_ms - (run.heartbeat_ms or 0) > M.STALE_MS then
    return false
  end
  if run.owner_host == sys.hostname() then
    return run.owner_pid ~= sys.pid() and sys.alive(run.owner_pid)
  end
  return true
end

local function age(ms)
  return string.format("%.0f s", ms / 1000)
end

--- Claims run for this process. -> true | nil, message
function M.claim(st, run)
  local now = store.now_ms()
  if M.owner_alive(run, now) then
    return nil, string.format("run %s is in progress in process %d on %s (heartbeat %s ago); "
      .. "wait for it to finish, or stop it first", run.id, run.owner_pid, run.owner_host or "?",
      age(now - run.heartbeat_ms))
  end
  local ok, err = st:run_claim(run.id, sys.pid(), sys.hostname(), now, run.owner_pid or 0, run.heartbeat_ms or 0)
  if ok == nil then
    return nil, err
  end
  if not ok then
    return nil, string.format("run %s was just claimed by another process", run.id)
  end
  run.owner_pid, run.owner_host, run.heartbeat_ms, run.status = sys.pid(), sys.hostname(), now, "running"
  return true
end

local function new_id(name)
  local seed = string.format("%s|%d|%d|%s", name, sys.pid(), store.now_ms(), tostring({}))
  local slug = name:lower():gsub("[^%w]+", "-"):gsub("^%-+", ""):gsub("%-+$", ""):sub(1, 40)
  return (slug ~= "" and slug or "run") .. "-" .. hash.xxh64(seed):sub(1, 8)
end
M.new_id = new_id

-- The run `orch resume RUN` names, if it may be resumed with this
-- workflow. -> run | nil, message [, exit code]
local function resumable(st, ident, opts)
  local run, err = st:run_get(opts.resume_id)
  if run == nil then
    return nil, err or string.format("no run '%s' in %s", opts.resume_id, M.db_path(opts))
  end
  if M.is_sample(run) then
    return nil, string.format("run %s is the sample of an estimate that was cut short; there is nothing to resume: "
      .. "run orch estimate --sample again (its replies so far are in the journal)", run.id)
  end
  if run.status == "completed" then
    return nil, string.format("run %s already completed; nothing to resume", run.id), 0
  end
  if run.status == "failed" then
    return nil, string.format("run %s failed (%s); it cannot be resumed: start a new one with "
      .. "%s", run.id, run.error or "no reason recorded", M.rerun_command(ident, opts.db))
  end
  if run.workflow_hash ~= ident.workflow_hash then
    return nil, string.format("the workflow %s changed since run %s began; resuming would mix "
      .. "two versions: start over with %s", run.workflow_path, run.id, M.rerun_command(ident, opts.db))
  end
  return run
end

-- A new run of ident, claimed by this process; superseded: the unfinished
-- run --fresh replaces, or nil. -> run | nil, message
local function create(st, ident, superseded)
  local now = store.now_ms()
  local run = {
    id = new_id(ident.name),
    status = "running",
    owner_pid = sys.pid(),
    owner_host = sys.hostname(),
    heartbeat_ms = now,
    created_ms = now,
  }
  for k, v in pairs(ident) do
    run[k] = v
  end
  local ok, cerr = st:run_create(run)
  if not ok then
    return nil, cerr
  end
  st:event_add(run.id, "started", json.encode({ pid = run.owner_pid, host = run.owner_host,
    cwd = sys.realpath("."), workflow = ident.workflow_arg }))
  if superseded then
    -- the unfinished run this one replaces will never be resumed
    superseded.error = "superseded by run " .. run.id .. (M.never_started(superseded)
      and " (its estimate was of the input before it changed)" or " (--fresh)")
    superseded.status = "failed"
    superseded.finished_ms = store.now_ms()
    st:run_update(superseded)
    st:event_add(superseded.id, "superseded", json.encode({ by = run.id }))
  end
  return run, nil
end

-- Takes an unfinished run over: its input must be unchanged; claims it,
-- picks the checkpoint to resume from (falling back past corrupt ones)
-- and drops what came after it. -> run, checkpoint_or_nil | nil, message
local function take_over(st, run, ident, opts, log)
  local now_fp = ident.input_fp
  if old_fingerprint(run.input_fp) and ident.input_path then
    now_fp = fingerprint(ident.input_path, true) -- recorded before the whole-file hash: compare like with like
  end
  if run.input_fp ~= now_fp then
    return nil, string.format("the input %s changed since run %s began (%s, now %s); resuming would "
      .. "mix two inputs: start over with %s", run.input, run.id, run.input_fp,
      now_fp or "missing", M.rerun_command(ident, opts.db))
  end
  local first = M.never_started(run) -- it starts here: no recovery
  local ok, cerr = M.claim(st, run)
  if not ok then
    return nil, cerr
  end
  if first then
    st:event_add(run.id, "started", json.encode({ pid = run.owner_pid, host = run.owner_host,
      cwd = sys.realpath("."), workflow = ident.workflow_arg }))
    return run, nil
  end
  local ckpt, skipped = st:checkpoint_latest(run.id)
  if ckpt == nil and type(skipped) == "string" then
    return nil, skipped
  end
  if skipped > 0 then
    log(0, string.format("warning: %d newer checkpoint(s) of run %s failed their checksum; "
      .. "falling back to %s", skipped, run.id, ckpt and ("checkpoint " .. ckpt.seq) or "the start"), "warn")
    st:event_add(run.id, "checkpoint_corrupt", json.encode({ skipped = skipped, fallback = ckpt and ckpt.seq or 0 }))
  end
  local rok, rerr = st:checkpoint_rollback(run.id, ckpt and ckpt.seq or 0)
  if not rok then
    return nil, rerr
  end
  run.recoveries = (run.recoveries or 0) + 1
  local uok, uerr = st:run_update(run) -- counted now, even if this attempt dies before a checkpoint
  if not uok then
    return nil, uerr
  end
  st:event_add(run.id, "resumed", json.encode({
    pid = run.owner_pid,
    checkpoint = ckpt and ckpt.seq or 0,
    rows_done = ckpt and ckpt.input_index or 0,
  }))
  return run, ckpt
end

--- begin(st, ident, opts, log) -> run, checkpoint_or_nil | nil, message
--- [, exit code]. ident: from identify(); opts.resume_id, opts.fresh,
--- opts.db; log: the run's log (orch.log). The run comes back claimed by
--- this process, status "running".
function M.begin(st, ident, opts, log)
  local run, err, code
  if opts.resume_id then
    run, err, code = resumable(st, ident, opts)
    if run == nil then
      return nil, err, code
    end
  else
    run, err = st:run_find_unfinished(ident.identity)
    if err then
      return nil, err
    end
  end
  if run ~= nil and M.never_started(run) then
    if run.input_fp ~= ident.input_fp then -- estimated on an input that has changed since: replaced
      return create(st, ident, run)
    end
    return take_over(st, run, ident, opts, log) -- --fresh or not: it has nothing to resume
  end
  if run ~= nil and opts.fresh then
    if M.owner_alive(run, store.now_ms()) then
      return nil, string.format("run %s is in progress in process %d on %s; --fresh cannot replace a live run",
        run.id, run.owner_pid, run.owner_host or "?")
    end
    return create(st, ident, run)
  end
  if run == nil then
    return create(st, ident, nil)
  end
  return take_over(st, run, ident, opts, log)
end

--- The runs `orch resume --all` should pick up: running with a dead owner,
--- or paused by a signal; runs paused by their budget too when a new
--- budget is given. Oldest first. -> list, nil, the budget-paused runs
--- left out (without a new budget) | nil, message
function M.interrupted(st, with_budget)
  local list, left = {}, {}
  local now = store.now_ms()
  for _, status in ipairs({ "running", "paused", "pending" }) do
    local runs, err = st:run_list({ status = status })
    if runs == nil then
      return nil, err
    end
    for _, r in ipairs(runs) do
      local budget_paused = r.status == "paused" and (r.error or ""):find("^budget") ~= nil
      if not M.owner_alive(r, now) and not M.never_started(r) and not M.is_sample(r) then
        if with_budget or not budget_paused then
          list[#list + 1] = r
        else
          left[#left + 1] = r
        end
      end
    end
  end
  local function oldest_first(a, b)
    return a.created_ms < b.created_ms
  end
  table.sort(list, oldest_first)
  table.sort(left, oldest_first)
  return list, nil, left
end

return M
