-- orch.run: executes a row workflow.
--
-- One driver task reads the input, keeps at most `concurrency` rows in
-- flight (each row its own task), and writes finished rows to the output
-- strictly in input order through a bounded reorder window. Each row runs
-- its stages under xpcall, so a failing row carries its error and the
-- traceback of the stage that raised it, and on_error decides what happens.
local sched = require "orch.sched"
local context = require "orch.context"
local oio = require "orch.io"
local json = require "orch.json"
local hash = require "orch.hash"
local sys = require "orch.sys"

local M = {}

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

local function stage_list(wf)
  local list = {}
  for i, s in ipairs(wf.stages) do
    if type(s) == "function" then
      list[i] = { name = "stage " .. i, fn = s }
    else
      list[i] = { name = s.name or ("stage " .. i), fn = s.run }
    end
  end
  return list
end

local function key_function(key)
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

local function new_run_id(name)
  local seed = string.format("%s|%d|%s|%.6f", name, sys.pid(), os.time(), sched.now())
  return os.date("!%Y%m%d-%H%M%S-") .. hash.xxh64(seed):sub(1, 6)
end

-- The message handler of a row: keeps the message and the row's traceback,
-- without the frames of the row machinery below the user's stages.
local function row_traceback(e)
  local msg = type(e) == "string" and e or tostring(e)
  local lines = {}
  for line in debug.traceback(msg, 2):gmatch("[^\n]+") do
    if line:find("^%s+lua/orch/run%.lua:") or line:find("^%s+%[C%]: in function 'xpcall'") then
      break
    end
    lines[#lines + 1] = line
  end
  return { msg = msg, tb = table.concat(lines, "\n") }
end

local function fmt_count(n)
  local s = tostring(math.floor(n))
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

--- rows(wf, opts) -> exit code.
--- opts: concurrency, verbosity (-1 quiet, 0 normal, 1 verbose).
function M.rows(wf, opts)
  local verbosity = opts.verbosity or 0
  local function log(rank, msg)
    if rank <= verbosity then
      io.stderr:write("orch: ", msg, "\n")
    end
  end

  local src, err = oio.open_source(wf.input)
  if src == nil then
    io.stderr:write("orch: cannot read the input: ", err, "\n")
    return 2
  end
  local out, errs
  if wf.output then
    out, err = oio.open_sink(wf.output, src.columns)
    if out == nil then
      io.stderr:write("orch: cannot write the output: ", err, "\n")
      return 2
    end
  end
  if wf.errors then
    errs, err = oio.open_sink(wf.errors, nil)
    if errs == nil then
      io.stderr:write("orch: cannot write the errors file: ", err, "\n")
      return 2
    end
  end

  local conc = opts.concurrency or wf.concurrency or (wf.llm and wf.llm.concurrency) or 16
  local policy = wf.on_error or "skip"
  local retries = type(policy) == "table" and policy.policy == "retry" and policy.times or 0
  local after = retries > 0 and policy.after or policy
  local fallback = type(after) == "table" and after.policy == "default" and after.value or nil
  local keep_input = retries > 0 or fallback ~= nil
  local stages = stage_list(wf)
  local nstages = #stages
  local key_of = key_function(wf.key)

  local run = {
    id = new_run_id(wf.name),
    state = {},
    llm = wf.llm,
    totals = { llm_calls = 0, tokens_in = 0, tokens_out = 0, cost = 0 },
    log = log,
  }
  local events = {}
  function run.emit(event, data, ctx)
    events[#events + 1] = { event = event, data = data, row = ctx and ctx.row }
    log(1, string.format("event %s%s", event, ctx and (" from row " .. ctx.row) or ""))
  end

  local function apply(row, ctx)
    for i = 1, nstages do
      local r = stages[i].fn(row, ctx)
      if r == nil then
        return nil
      end
      if type(r) ~= "table" then
        error(string.format("%s returned a %s; a stage returns the row (a table) or nil to drop it",
          stages[i].name, type(r)), 0)
      end
      row = r
    end
    return row
  end

  local function encode(row)
    if out == nil then
      return false
    end
    return out:encode(row)
  end

  -- The body of a row task: -> status, line|false, message, traceback, key
  local function process(row, seq)
    local kok, key = pcall(key_of, row, seq)
    if not kok then
      return "failed", false, key, nil, nil
    end
    local ctx = context.new(run, seq, key)
    local input = keep_input and deepcopy(row) or nil
    local ok, res = xpcall(apply, row_traceback, row, ctx)
    for _ = 1, retries do
      if ok then
        break
      end
      log(1, string.format("row %d (key %s) failed, retrying: %s", seq, tostring(key), res.msg))
      ok, res = xpcall(apply, row_traceback, deepcopy(input), ctx)
    end
    if ok then
      if res == nil then
        return "dropped", false
      end
      local eok, line = pcall(encode, res)
      if eok then
        return "ok", line, nil, nil, key
      end
      res = { msg = "cannot write the row: " .. tostring(line) }
    end
    if fallback ~= nil then
      local dok, drow
      if type(fallback) == "function" then
        dok, drow = pcall(fallback, deepcopy(input), res.msg)
      else
        drow = deepcopy(input)
        for k, v in pairs(fallback) do
          drow[k] = v
        end
        dok = true
      end
      if dok and type(drow) == "table" then
        local eok, line = pcall(encode, drow)
        if eok then
          return "defaulted", line, res.msg, res.tb, key
        end
        drow = line
      end
      res.msg = res.msg .. "; and orch.default failed too: " .. tostring(drow)
    end
    return "failed", false, res.msg, res.tb, key
  end

  local counts = { ok = 0, failed = 0, dropped = 0, defaulted = 0 }
  local failures, nfail_kept = {}, 20
  local stop, fatal = false, nil

  local function record_failure(seq, key, msg, tb, status)
    if #failures < nfail_kept then
      failures[#failures + 1] = { seq = seq, key = key, msg = msg, tb = tb }
    end
    if verbosity >= 1 then
      log(1, string.format("row %d%s %s: %s", seq, key ~= nil and (" (key " .. tostring(key) .. ")") or "",
        status == "defaulted" and "used its default" or "failed", tb or msg))
    end
    if errs then
      errs:write(json.encode({ row = seq, key = key, status = status, error = msg, traceback = tb },
        { "row", "key", "status", "error", "traceback" }) .. "\n")
    end
    if status == "failed" and policy == "fail" then
      stop = true
      fatal = fatal or { seq = seq, key = key, msg = msg, tb = tb }
    end
  end

  local tty = verbosity >= 0 and sys.isatty(2)
  local t0 = sched.now()
  local last_draw = 0
  local function progress(final, done_rows)
    if not tty then
      return
    end
    local now = sched.now()
    if not final and now - last_draw < 0.2 then
      return
    end
    last_draw = now
    local el = math.max(now - t0, 1e-3)
    io.stderr:write(string.format("\r\27[K  %s rows  %.0f rows/s  $%.4f  %d failed%s", fmt_count(done_rows),
      done_rows / el, run.totals.cost, counts.failed, final and "\n" or ""))
  end

  local function drive()
    local next_seq, write_seq = 1, 1
    local done, pending = {}, {}
    local inflight, eof = 0, false
    local window = math.max(conc * 16, 1024)
    local function flush()
      while true do
        local line = done[write_seq]
        if line == nil then
          break
        end
        if line then
          out:write(line)
        end
        done[write_seq] = nil
        write_seq = write_seq + 1
      end
    end
    while true do
      while not eof and not stop and inflight < conc and next_seq - write_seq < window do
        local iok, row, line, ifatal = pcall(src.next, src)
        if not iok then
          fatal = { msg = "the input failed: " .. tostring(row) }
          stop = true
        elseif row == nil then
          eof = true
        elseif row == false then
          if ifatal then
            fatal = { msg = line }
            stop = true
          else
            counts.failed = counts.failed + 1
            done[next_seq] = false
            record_failure(next_seq, nil, line, nil, "failed")
            next_seq = next_seq + 1
          end
        else
          local id = sched.spawn(process, row, next_seq)
          pending[id] = next_seq
          next_seq = next_seq + 1
          inflight = inflight + 1
        end
      end
      flush()
      if inflight == 0 and (eof or stop) then
        break
      end
      for _, c in ipairs(sched.wait()) do
        inflight = inflight - 1
        local seq = pending[c.id]
        pending[c.id] = nil
        local status, line, msg, tb, key
        if c.ok then
          status, line, msg, tb, key = c[1], c[2], c[3], c[4], c[5]
        else
          status, line, msg = "failed", false, tostring(c.err)
        end
        counts[status] = counts[status] + 1
        done[seq] = line
        if msg ~= nil then
          record_failure(seq, key, msg, tb, status)
        end
      end
      progress(false, write_seq - 1)
    end
    flush()
    progress(true, write_seq - 1)
    return next_seq - 1
  end

  local ok, total = pcall(sched.run, drive)
  local flush_err
  if out then
    local fok, ferr = pcall(out.flush, out, true)
    if not fok then
      flush_err = ferr
    end
    out:close()
  end
  if errs then
    pcall(errs.flush, errs, true)
    errs:close()
  end
  src:close()
  if not ok then
    io.stderr:write("orch: run ", run.id, " failed: ", tostring(total), "\n")
    return 1
  end
  if flush_err then
    io.stderr:write("orch: run ", run.id, " failed: cannot write the output: ", tostring(flush_err), "\n")
    return 1
  end

  local el = math.max(sched.now() - t0, 1e-3)
  local t = run.totals
  log(0, string.format("%s: %s rows in %.2f s (%s rows/s): %d ok, %d failed, %d dropped%s%s%s",
    wf.name, fmt_count(total), el, fmt_count(total / el), counts.ok, counts.failed, counts.dropped,
    counts.defaulted > 0 and string.format(", %d defaulted", counts.defaulted) or "",
    t.llm_calls > 0 and string.format("; %d LLM calls, %s tokens, $%.4f", t.llm_calls,
      fmt_count(t.tokens_in + t.tokens_out), t.cost) or "",
    out and ("; output " .. out.path) or ""))
  if #failures > 0 and verbosity == 0 then
    for i = 1, math.min(#failures, 5) do
      local f = failures[i]
      log(0, string.format("  row %d%s: %s", f.seq, f.key ~= nil and (" (key " .. tostring(f.key) .. ")") or "",
        (f.msg:gsub("\n.*", ""))))
    end
    if counts.failed + counts.defaulted > 5 then
      log(0, string.format("  ... %d more; run with -v for every failure and its traceback",
        counts.failed + counts.defaulted - 5))
    end
  end
  if fatal then
    io.stderr:write(string.format("orch: run %s failed%s: %s\n", run.id,
      fatal.seq and string.format(" at row %d%s", fatal.seq,
        fatal.key ~= nil and (" (key " .. tostring(fatal.key) .. ")") or "") or "",
      fatal.tb or fatal.msg))
    return 1
  end
  return 0
end

return M
