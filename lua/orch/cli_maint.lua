-- orch.cli_maint: the commands that change a store — gc (remove old runs)
-- and restore (roll a run back to a checkpoint). They open an existing
-- store only, and write their messages through orch.cli_base's log.
local base = require("orch.cli_base")
local say, note, count = base.say, base.note, base.count
local json = require("orch.json")
local runs = require("orch.runs")
local sys = require("orch.sys")
local now_ms = require("orch.store").now_ms
local when = require("orch.fmt").when

local M = {}

-- gc's options checked -> { cutoff =, statuses = { [name] = true }, keep = }
-- | nil (said)
local function gc_options(opts)
  local cutoff = base.parse_time(opts.older_than or "30d")
  if cutoff == nil then
    say(string.format("--older-than: '%s' is not an age or a time (30d, 12h, 30m, 2026-11-25)", opts.older_than))
    return nil
  end
  local statuses = {}
  for name in (opts.status or "completed,failed"):gmatch("[^,]+") do
    if not base.STATUSES[name] then
      say("--status must list pending, running, paused, completed or failed, got '" .. name .. "'")
      return nil
    end
    statuses[name] = true
  end
  local keep = tonumber(opts.keep_last or 0)
  if keep == nil or keep < 0 or math.type(keep) == "float" and keep ~= math.floor(keep) then
    say("--keep-last must be a whole number, got '" .. tostring(opts.keep_last) .. "'")
    return nil
  end
  return { cutoff = cutoff, statuses = statuses, keep = keep }
end

-- The runs of list (newest first) that gc removes: of a status asked for,
-- last touched before the cutoff, not running here, and not among the
-- newest `keep` of their workflow.
local function doomed_runs(list, g)
  local kept_per_name, doomed = {}, {}
  for _, r in ipairs(list) do
    kept_per_name[r.name] = (kept_per_name[r.name] or 0)
    local last = r.finished_ms and r.finished_ms > 0 and r.finished_ms or r.updated_ms or r.created_ms
    local live = r.status == "running" and r.owner_host == sys.hostname() and sys.alive(r.owner_pid or 0)
    if kept_per_name[r.name] < g.keep then
      kept_per_name[r.name] = kept_per_name[r.name] + 1
    elseif g.statuses[r.status] and last < g.cutoff and not live then
      doomed[#doomed + 1] = r
    end
  end
  return doomed
end

-- Removes (or, with --dry-run, lists) the doomed runs. -> the number of
-- runs per status | nil (said)
local function remove_runs(st, doomed, dry_run)
  local by_status = {}
  for _, r in ipairs(doomed) do
    if dry_run then
      io.stdout:write(string.format("would remove %s  %s  %s  %s rows  %s", r.id, r.name, r.status,
        count(r.rows_done), when(r.created_ms)), "\n")
    else
      local ok, derr = st:run_delete(r.id)
      if ok == nil then
        say(derr)
        return nil
      end
    end
    by_status[r.status] = (by_status[r.status] or 0) + 1
  end
  return by_status
end

-- --journal and --vacuum. -> the journal entries pruned | nil (said)
local function prune_store(st, opts, cutoff)
  local pruned = 0
  if opts.journal and not opts.dry_run then
    local n, jerr = st:journal_prune(cutoff)
    if n == nil then
      say(jerr)
      return nil
    end
    pruned = n
  end
  if opts.vacuum and not opts.dry_run then
    local ok, verr = st:vacuum()
    if not ok then
      say(verr)
      return nil
    end
  end
  return pruned
end

--- gc: removes finished runs (with their checkpoints, results, events and
--- state) older than --older-than (30d), of the statuses --status
--- (completed,failed), keeping the newest --keep-last of each workflow;
--- --journal also drops journal entries older than that, --vacuum shrinks
--- the file, --dry-run only lists. Running and paused runs are kept unless
--- --status names them (running only when its owner is gone).
function M.gc(opts)
  local g = gc_options(opts)
  if g == nil then
    return 2
  end
  return base.with_store(opts, function(st)
    local list, err = st:run_list({})
    if list == nil then
      say(err)
      return 1
    end
    local doomed = doomed_runs(list, g)
    local before = st:stats().bytes
    local by_status = remove_runs(st, doomed, opts.dry_run)
    local pruned = by_status and prune_store(st, opts, g.cutoff)
    if pruned == nil then
      return 1
    end
    local parts = {}
    for _, name in ipairs({ "completed", "failed", "paused", "running", "pending" }) do
      if by_status[name] then
        parts[#parts + 1] = by_status[name] .. " " .. name
      end
    end
    note(string.format("gc: %s %d run(s)%s%s; store %s -> %s bytes", opts.dry_run and "would remove" or "removed",
      #doomed, #parts > 0 and (" (" .. table.concat(parts, ", ") .. ")") or "",
      opts.journal and string.format(", %d journal entr%s", pruned, pruned == 1 and "y" or "ies") or "",
      count(before), count(st:stats().bytes)))
    return 0
  end, "w")
end

-- The run's figures as of checkpoint c, as the resume will count them.
local function rewind_figures(run, c)
  run.rows_done = c.input_index
  local mok, m = pcall(json.decode, c.memento or "")
  if mok and type(m) == "table" and type(m.counts) == "table" then
    local counts, totals = m.counts or {}, m.totals or {}
    run.rows_ok, run.rows_failed = counts.ok or 0, counts.failed or 0
    run.rows_dropped, run.rows_defaulted = counts.dropped or 0, counts.defaulted or 0
    run.llm_calls, run.tokens_in, run.tokens_out = totals.llm_calls or 0, totals.tokens_in or 0, totals.tokens_out or 0
    run.cost_usd = totals.cost or run.cost_usd
  end
end

--- orch restore RUN CHECKPOINT: drops the checkpoints after CHECKPOINT
--- (and the results written with them) and leaves the run paused; the
--- next resume truncates the output and seeks the input back to it.
function M.restore(opts)
  local seq = math.tointeger(tonumber(opts.args[2]))
  if seq == nil or seq < 1 then
    say("restore: CHECKPOINT must be a checkpoint number (see orch checkpoints RUN), got '" .. opts.args[2] .. "'")
    return 2
  end
  return base.run_command(opts, function(st, run)
    if runs.owner_alive(run, now_ms()) and run.status == "running" then
      say(string.format("run %s is in progress in process %d on %s; stop it before restoring", run.id,
        run.owner_pid, run.owner_host or "?"))
      return 2
    end
    local c, err = st:checkpoint_get(run.id, seq)
    if c == nil then
      say(err or string.format("run %s has no checkpoint %d (see orch checkpoints %s)", run.id, seq, run.id))
      return 2
    end
    if not c.valid then
      say(string.format("checkpoint %d of run %s fails its checksum; pick an earlier one", seq, run.id))
      return 2
    end
    local ok, rerr = st:checkpoint_rollback(run.id, seq)
    if not ok then
      say(rerr)
      return 1
    end
    run.status, run.error, run.finished_ms = "paused", "restored to checkpoint " .. seq, 0
    rewind_figures(run, c)
    st:run_update(run)
    st:event_add(run.id, "restored", json.encode({ checkpoint = seq, rows_done = c.input_index }))
    note(string.format("run %s restored to checkpoint %d (%s rows done); resume with: orch resume %s", run.id, seq,
      count(c.input_index), run.id))
    return 0
  end, "w")
end

return M
