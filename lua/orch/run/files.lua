-- orch.run.files: a run's input and output files. Who owns an output
-- file, opening the source and the sinks (a resumed sink must still be
-- the file its checkpoint describes), and the exit of a run that cannot
-- start. R is the run's state (see orch.run).
local oio = require("orch.io")
local json = require("orch.json")
local sys = require("orch.sys")
local store = require("orch.store")

local M = {}

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
end

--- cannot_start(R, what, msg) -> 2. Before any row runs: a run that
--- cannot start is not left "running". A new one is marked failed (the
--- next orch run starts afresh); one that has work to resume is paused,
--- to be resumed once the cause is fixed.
function M.cannot_start(R, what, msg)
  local run, st = R.run, R.st
  R.log(-1, "cannot " .. what .. ": " .. msg, "error")
  local resumable = R.ckpt ~= nil or (run.recoveries or 0) > 0
  run.status = resumable and "paused" or "failed"
  run.error = "cannot " .. what .. ": " .. msg
  run.finished_ms = resumable and 0 or store.now_ms()
  st:run_update(run)
  st:event_add(run.id, run.status, json.encode({ error = run.error }))
  return 2
end

-- A resumed sink must still be the file its checkpoint describes: the
-- committed bytes, by size and hash, else resuming would mix two files.
-- -> the sink | nil, exit code (the source closed).
local function open_sink(R, spec, columns, offset, prefix, what)
  local k, serr, why = oio.open_sink(spec, columns, offset, prefix)
  if k == nil and why == "changed" then
    serr = string.format("%s; it is not the file run %s last checkpointed (checkpoint %d), so resuming would "
      .. "mix two files: restore it, or start over with: %s", serr, R.run.id, R.ckpt.seq,
      require("orch.runs").rerun_command(R.run, R.opts.db))
  end
  if k == nil then
    R.src.close()
    return nil, M.cannot_start(R, what, serr)
  end
  return k
end

--- open(R) -> nil, or the exit code of a run that cannot start. Reads
--- the checkpoint's memento (R.memento), checks who owns the output and
--- opens the source (R.src) and the sinks (R.out, R.errs).
function M.open(R)
  local wf, ckpt = R.wf, R.ckpt
  if ckpt then
    local ok, m = pcall(json.decode, ckpt.memento)
    if not ok or type(m) ~= "table" then
      return M.cannot_start(R, "resume", string.format("checkpoint %d of run %s has an unreadable memento",
        ckpt.seq, R.run.id))
    end
    R.memento = m
  end
  if wf.output then
    local owner, oerr = M.output_owner(R.st, R.run, R.opts.fresh, R.log)
    if owner then
      return M.cannot_start(R, "write the output", oerr)
    end
  end
  local src, err = oio.open_source(wf.input)
  if src == nil then
    return M.cannot_start(R, "read the input", err)
  end
  R.src = src
  local memento, code = R.memento, nil
  if wf.output then
    R.out, code = open_sink(R, wf.output, src.columns, ckpt and ckpt.output_offset, memento and memento.output_hash,
      "write the output")
    if R.out == nil then
      return code
    end
  end
  if wf.errors then
    R.errs, code = open_sink(R, wf.errors, nil, ckpt and ckpt.errors_offset, memento and memento.errors_hash,
      "write the errors file")
    if R.errs == nil then
      if R.out then
        R.out:close()
      end
      return code
    end
  end
end

--- close(R): the sinks and the source, at the end of the run.
function M.close(R)
  if R.out then
    R.out:close()
  end
  if R.errs then
    R.errs:close()
  end
  R.src.close()
end

return M
