-- orch.cli_inspect: the commands that look at a store without changing
-- it — status, ls, history, checkpoints, export, stats. They open the
-- store read-only, print plain text (or --json) on stdout, and say what
-- is wrong through orch.cli_base's log.
local base = require("orch.cli_base")
local say, count = base.say, base.count
local fmt = require("orch.fmt")
local when = fmt.when
local json = require("orch.json")
local runs = require("orch.runs")
local store = require("orch.store")
local sys = require("orch.sys")
local mask = require("orch.log").mask

local M = {}

-- The run `status` shows: the one named, else the newest. -> run | nil,
-- exit code (said, or "no runs yet" printed)
local function status_run(st, opts)
  if opts.args[1] then
    local run = base.get_run(st, opts, opts.args[1])
    return run, 2
  end
  local list, lerr = st:run_list({})
  if list == nil then
    say(lerr)
    return nil, 1
  end
  if list[1] == nil then
    io.stdout:write(opts.json and "null\n" or ("no runs yet in " .. mask(runs.db_path(opts)) .. "\n"))
    return nil, 0
  end
  return list[1]
end

-- The lines of `status`: { label, value } pairs.
local function status_lines(run, cps, live, opts)
  local last = cps[#cps]
  local lines = {
    { "run", run.id },
    { "workflow", string.format("%s (%s)", run.name, run.workflow_path) },
    { "status", run.status .. (run.status == "running" and not live and " (owner gone: resume it)" or "")
      .. (run.error and (" — " .. run.error) or "") },
    { "rows", string.format("%s settled: %s ok, %s failed, %s dropped%s", count(run.rows_done), count(run.rows_ok),
      count(run.rows_failed), count(run.rows_dropped),
      run.rows_defaulted > 0 and (", " .. count(run.rows_defaulted) .. " defaulted") or "") },
    { "llm", string.format("%s calls, %s tokens, %s%s", count(run.llm_calls), count(run.tokens_in + run.tokens_out),
      fmt.usd(run.cost_usd), run.usage_estimated and " (estimated in part: the provider sent no usage)" or "") },
    { "input", run.input },
    { "output", run.output or "-" },
    { "owner", run.status == "pending" and run.owner_pid == 0 and "none yet (estimated: orch run starts it)"
      or string.format("pid %d on %s, heartbeat %s", run.owner_pid, run.owner_host or "?", fmt.ago(run.heartbeat_ms)) },
    { "created", when(run.created_ms) },
    { "finished", when(run.finished_ms) },
    { "recoveries", tostring(run.recoveries) },
    { "checkpoints", last and string.format("%d, last #%d (%s) at row %s, %.2f ms", #cps, last.seq, last.reason,
      count(last.input_index), last.duration_ms) or "none" },
  }
  if run.estimate then -- orch estimate --sample stored one before the run
    table.insert(lines, 6, { "estimate", require("orch.estimate").beside_actual(run.estimate, run.cost_usd,
      run.status) })
  end
  if run.status == "paused" or (run.status == "running" and not live) then
    local budget = run.status == "paused" and (run.error or ""):find("^budget") and " --budget USD" or ""
    lines[#lines + 1] = { "resume", "orch resume " .. run.id .. (opts.db and (" --db " .. runs.shell_quote(mask(opts.db)))
      or "") .. budget }
  end
  return lines
end

-- orch status of a worker run (orch.worker): the run's totals, its leases
-- and its workers, live ones first, with the rows each committed and their
-- rate. -> exit code
local function worker_status(st, run, cps, opts)
  local w, err = require("orch.worker").workers(st, run)
  if w == nil then
    say(err)
    return 1
  end
  local lines = status_lines(run, cps, run.status == "running", opts)
  for i = #lines, 1, -1 do
    if lines[i][1] == "owner" or lines[i][1] == "checkpoints" then
      table.remove(lines, i)
    end
  end
  local nlive = 0
  for _, x in ipairs(w.workers) do
    nlive = nlive + (x.live and 1 or 0)
  end
  lines[#lines + 1] = { "leases", string.format("%d: %d done, %d taken, %d free (taken back after %s s without a "
    .. "heartbeat)", w.leases.total, w.leases.done, w.leases.taken, w.leases.free, tostring(w.timeout_s)) }
  lines[#lines + 1] = { "workers", string.format("%d live, %d in all", nlive, #w.workers) }
  for _, x in ipairs(w.workers) do
    lines[#lines + 1] = { "  " .. x.name, string.format("%s, %s rows, %.1f rows/s", x.live and ("live, lease "
      .. x.lease) or "holds no lease", count(x.rows), x.rows_per_s) }
  end
  fmt.fields(io.stdout, lines)
  return 0
end

function M.status(opts)
  return base.with_store(opts, function(st)
    local run, code = status_run(st, opts)
    if run == nil then
      return code
    end
    local cps = st:checkpoint_list(run.id) or {}
    local events = st:event_list(run.id) or {}
    for _, ev in ipairs(events) do
      if ev.type == "usage_estimated" then -- tokens counted from the text, not told by the provider
        run.usage_estimated = true
      elseif ev.type == "estimate" then -- the newest wins
        local ok, d = pcall(json.decode, ev.data or "")
        run.estimate = ok and type(d) == "table" and d or run.estimate
      end
    end
    local figures = require("orch.serve_live").read(st, run)
    local batch = require("orch.batch") -- provider batches: recorded as events
    local batches = batch.summaries(events)
    if opts.json then
      run.last_checkpoint = cps[#cps]
      run.live = figures
      run.batches = #batches > 0 and batches or nil
      if require("orch.worker").is_worker_run(run) then
        run.workers = require("orch.worker").workers(st, run)
      end
      base.print_json(run)
      return 0
    end
    local live = (run.status == "running") and runs.owner_alive(run, store.now_ms())
    if require("orch.worker").is_worker_run(run) then
      return worker_status(st, run, cps, opts)
    end
    local lines = status_lines(run, cps, live, opts)
    if figures then -- between checkpoints: what the running orch wrote last
      table.insert(lines, 5, { "live", require("orch.serve_live").text(figures) })
    end
    for _, l in ipairs(batch.status_lines(batches)) do
      lines[#lines + 1] = l
    end
    fmt.fields(io.stdout, lines)
    return 0
  end, "r")
end

function M.ls(opts)
  local filter = { status = opts.status, name = opts.name }
  for _, k in ipairs({ "since", "until" }) do
    if opts[k] then
      local ms = base.parse_time(opts[k])
      if ms == nil then
        say(string.format("--%s: '%s' is not a date or time (2026-11-25, 2026-11-25T10:00:00, 3d, 12h or 30m)", k,
        opts[k]))
        return 2
      end
      filter[k .. "_ms"] = ms
    end
  end
  if opts.status and not base.STATUSES[opts.status] then
    say("--status must be pending, running, paused, completed or failed, got '" .. opts.status .. "'")
    return 2
  end
  return base.with_store(opts, function(st)
    local list, err = st:run_list(filter)
    if list == nil then
      say(err)
      return 1
    end
    return base.print_list(opts, list, { "ID", "NAME", "STATUS", "ROWS", "COST", "CREATED" }, function(r)
      return { r.id, r.name, r.status, count(r.rows_done), fmt.usd(r.cost_usd), when(r.created_ms) }
    end)
  end, "r")
end

function M.history(opts)
  return base.run_command(opts, function(st, run)
    return base.print_list(opts, st:event_list(run.id) or {}, { "TIME", "EVENT", "DATA" }, function(e)
      return { when(e.ts_ms), e.type, e.data or "" }
    end)
  end, "r")
end

function M.checkpoints(opts)
  return base.run_command(opts, function(st, run)
    return base.print_list(opts, st:checkpoint_list(run.id) or {},
      { "SEQ", "CREATED", "REASON", "ROWS", "OUTPUT BYTES", "STORED BYTES", "MS", "CHECKSUM" }, function(c)
        return { c.seq, when(c.created_ms), c.reason, count(c.input_index), count(c.output_offset), count(c.bytes),
          string.format("%.2f", c.duration_ms), c.valid and "ok" or "CORRUPT" }
      end)
  end, "r")
end

-- Export ---------------------------------------------------------------

-- order: the columns, when known; else the first row's keys, sorted.
local function csv_writer(fh, order)
  local oio = require("orch.io")
  local cols = order
  return function(row)
    if cols == nil then
      cols = {}
      for k in pairs(row) do
        cols[#cols + 1] = k
      end
      table.sort(cols)
    end
    if order ~= false then
      order = false
      fh:write(oio.csv_line(cols, #cols))
    end
    local vals = {}
    for i, c in ipairs(cols) do
      vals[i] = row[c]
    end
    fh:write(oio.csv_line(vals, #cols))
  end
end

-- The committed output must still be there, whole, before -o is written:
-- the rows themselves are not kept in the store to rebuild it from.
-- -> nil when it is, else the exit code (said)
local function output_missing(run, want, opts)
  local fst = sys.stat(run.output)
  local redo = runs.rerun_command(run, opts.db)
  if fst == nil then
    say(string.format("cannot export run %s: its output %s is gone (deleted or moved), and the store keeps "
      .. "only the rows' status, not the rows; put the file back, or run the workflow again: %s", run.id,
      run.output, redo))
    return 1
  elseif fst.size < want then
    say(string.format("cannot export run %s: its output %s has %s bytes, fewer than the %s its last checkpoint "
      .. "committed (truncated or overwritten since); put the file back, or run the workflow again: %s",
      run.id, run.output, count(fst.size), count(want), redo))
    return 1
  end
end

-- The row writer of an export in format to fh: CSV (the columns of a CSV
-- export of a JSONL output: its first line's keys, in its order — the
-- input's columns, then new fields) or JSON lines.
local function row_writer(format, fh, run)
  if format ~= "csv" then
    return function(row, keys)
      fh:write(json.encode(row, keys), "\n")
    end
  end
  local order
  if run.output ~= nil and not run.output:match("%.csv$") then
    local f = io.open(run.output, "rb")
    local first = f and f:read("l")
    if f then
      f:close()
    end
    local ok, _, keys = pcall(json.decode, first or "", true)
    order = ok and keys or nil
  end
  return csv_writer(fh, order)
end

-- Copies the first limit bytes of src to fh.
local function copy_bytes(src, fh, limit)
  local left = limit
  while left > 0 do
    local chunk = src:read(math.min(left, 65536))
    if chunk == nil then
      break
    end
    fh:write(chunk)
    left = left - #chunk
  end
end

-- The rows of a CSV output up to byte limit, each through write_row.
local function each_csv_row(path, limit, write_row)
  local r = require("orch.reader").open(path, "csv")
  local header = r:header()
  while true do
    local row, _, _, _, e = r:next()
    if row == nil or (e and e > limit) then
      break
    end
    if row then
      write_row(row, header)
    end
  end
  r:close()
end

-- Writes the committed part (limit bytes) of the run's output to fh in
-- format. -> nil, or the exit code (said)
local function export_output(run, limit, format, fh, write_row)
  local src = io.open(run.output, "rb")
  if src == nil then
    say(string.format("the output of run %s, %s, is gone", run.id, run.output))
    return 1
  end
  local is_csv = run.output:match("%.csv$") ~= nil
  if (format == "csv") == is_csv then
    copy_bytes(src, fh, limit)
  elseif is_csv then
    src:close()
    src = nil
    each_csv_row(run.output, limit, write_row)
  else
    local used = 0
    for line in src:lines() do
      used = used + #line + 1
      if used > limit then
        break
      end
      write_row(json.decode(line))
    end
  end
  if src then
    src:close()
  end
end

-- Where export writes: the -o file, else stdout. -> fh | nil, exit code
-- (said)
local function export_target(opts)
  if not opts.o then
    return io.stdout
  end
  local fh, ferr = io.open(opts.o, "wb")
  if fh == nil then
    say("cannot write " .. tostring(ferr))
    return nil, 2
  end
  return fh
end

-- A worker run's output is its results' data, in input order (orch.worker):
-- whole once the run completed. -> exit code
local function export_worker_run(st, run, opts, format)
  if run.status ~= "completed" then
    say(string.format("cannot export run %s yet: it is %s with %s rows committed by its workers; the output is "
      .. "whole once every lease is done (orch status %s shows them)", run.id, run.status, count(run.rows_done),
      run.id))
    return 1
  end
  local fh, code = export_target(opts)
  if fh == nil then
    return code
  end
  local write_row -- CSV: the columns of the first row, in its order
  local ok, err = st:each_result(run.id, function(r)
    if r.data then
      if format == "csv" then
        local _, row, keys = pcall(json.decode, r.data, true)
        write_row = write_row or csv_writer(fh, keys)
        write_row(row)
      else
        fh:write(r.data)
      end
    end
  end)
  if fh ~= io.stdout then
    fh:close()
  end
  if not ok then
    say(err)
    return 1
  end
  return 0
end

local function export_run(st, run, opts, format)
  if require("orch.worker").is_worker_run(run) then
    return export_worker_run(st, run, opts, format)
  end
  local cps = st:checkpoint_list(run.id) or {}
  local last = cps[#cps]
  local limit = last and last.output_offset or 0
  if run.output ~= nil then
    local code = output_missing(run, limit, opts)
    if code then
      return code
    end
  end
  local fh, code = export_target(opts)
  if fh == nil then
    return code
  end
  local write_row = row_writer(format, fh, run)
  if run.output == nil then
    -- no output file: export the per-row results
    st:each_result(run.id, function(r)
      write_row({ row = r.seq, key = r.key, status = r.status, error = r.error })
    end)
  else
    code = export_output(run, limit, format, fh, write_row)
    if code then
      return code
    end
  end
  if fh ~= io.stdout then
    fh:close()
  end
  return 0
end

function M.export(opts)
  local format = opts.format or "jsonl"
  if format ~= "jsonl" and format ~= "csv" then
    say("--format must be jsonl or csv, got '" .. format .. "'")
    return 2
  end
  return base.run_command(opts, function(st, run)
    return export_run(st, run, opts, format)
  end, "r")
end

function M.stats(opts)
  return base.with_store(opts, function(st)
    local s, err = st:stats()
    if s == nil then
      say(err)
      return 1
    end
    if opts.json then
      base.print_json(s)
      return 0
    end
    fmt.fields(io.stdout, {
      { "store", mask(runs.db_path(opts)) },
      { "runs", string.format("%s total: %s active, %s paused, %s failed, %s completed", count(s.runs),
        count(s.active), count(s.paused), count(s.failed), count(s.completed)) },
      { "checkpoints", count(s.checkpoints) },
      { "checkpoint", string.format("%.2f ms mean, %.2f ms max", s.checkpoint_mean_ms, s.checkpoint_max_ms) },
      { "recoveries", count(s.recoveries) },
      { "journal", string.format("%s LLM responses, %s answered again from it, %s saved", count(s.journal_entries),
        count(s.journal_hits), fmt.usd(s.journal_saved_usd)) },
      { "bytes", count(s.bytes) },
    })
    return 0
  end, "r")
end

return M
