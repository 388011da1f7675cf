-- orch.run.progress: what a run says about itself. The progress line on
-- a terminal, the end summary (figures, the first failures), the pause
-- and failure messages, and how rows and steps are named in them. R is
-- the run's state (see orch.run).
local sched = require("orch.sched")
local sys = require("orch.sys")
local limits = require("orch.limits")
local metrics = require("orch.metrics")

local M = {}

local function fmt_count(n)
  return require("orch.run").fmt_count(n)
end

--- which(R, seq, key) -> how messages name a row ("row 3 (key a)") or,
--- in a multi-step workflow, a step ("step 'search'").
function M.which(R, seq, key)
  if R.steps then
    return string.format("step '%s'", tostring(key))
  end
  return string.format("row %d%s", seq, key ~= nil and (" (key " .. tostring(key) .. ")") or "")
end

--- count_of(R, n) -> "1,200 rows", "1 step".
function M.count_of(R, n)
  local unit = R.unit
  return fmt_count(n) .. " " .. (n == 1 and unit:sub(1, -2) or unit)
end

--- start(R): the clock and the figures progress is measured from.
function M.start(R)
  R.tty = R.verbosity >= 0 and not R.opts.log_json and sys.isatty(2)
  R.t0 = sched.now()
  R.start_index, R.start_offset = R.cursor.index, R.cursor.offset
  R.size = R.src.size and R.src.size() or nil
  R.last_draw = R.t0 -- the first plain line comes PLAIN_S in
end

-- "1h02m", "3m05s": an ETA as the line shows it
local function eta_text(eta)
  eta = math.floor(eta)
  if eta >= 3600 then
    return string.format("%dh%02dm", eta // 3600, eta % 3600 // 60)
  end
  return string.format("%dm%02ds", eta // 60, eta % 60)
end

-- The progress text without control characters: rows, % and ETA when the
-- total is known (a Lua array, the steps, a file's bytes), rows/s, $, failures.
local function line_text(R)
  local f = metrics.figures(R)
  local share = ""
  if f.share then
    share = string.format("  %3.0f%%", f.share * 100)
    if f.eta_s then
      share = share .. "  ETA " .. eta_text(f.eta_s)
    end
  end
  local of = f.rows_total and ("/" .. fmt_count(f.rows_total)) or ""
  return string.format("%s%s %s%s  %.0f %s/s  $%.4f  %d failed", fmt_count(f.rows_done), of, R.unit, share,
    f.rows_per_s, R.unit, f.cost_usd, f.rows_failed)
end
M.line_text = line_text

-- Checkpoint durations for the --metrics histogram, from the run's count
-- and total checkpoint ms (one new checkpoint a turn, as a rule).
local function note_checkpoints(R)
  local n, seen = R.ckpt_count or 0, R.seen_ckpts or 0
  if n > seen then
    local list = R.ckpt_durations or {}
    local each = ((R.ckpt_ms or 0) - (R.seen_ckpt_ms or 0)) / (n - seen)
    for _ = seen + 1, n do
      if #list < 100000 then
        list[#list + 1] = each
      end
    end
    R.ckpt_durations, R.seen_ckpts, R.seen_ckpt_ms = list, n, R.ckpt_ms
  end
end

-- seconds between the plain progress lines when stderr is no terminal
M.PLAIN_S = tonumber(os.getenv("ORCH_PROGRESS_S") or "") or 10

--- draw(R, final): once a turn of the driver. The progress line on a
--- terminal, at most five times a second (final ends it with a newline);
--- a plain line every PLAIN_S seconds when stderr is not a terminal (no
--- control characters); the live figures in the store (orch.metrics).
function M.draw(R, final)
  note_checkpoints(R)
  metrics.publish(R, final)
  local now = sched.now()
  if not R.tty then
    if not final and R.verbosity >= 0 and now - R.last_draw >= M.PLAIN_S then
      R.last_draw = now
      R.log(0, "progress: " .. line_text(R))
    end
    return
  end
  if not final and now - R.last_draw < 0.2 then
    return
  end
  R.last_draw = now
  io.stderr:write("\r\27[K  " .. line_text(R) .. (final and "\n" or ""))
end

--- finish(R, status): the run's end in the live figures and the
--- --metrics file, once its last checkpoint is written.
function M.finish(R, status)
  note_checkpoints(R)
  R.inflight = 0
  R.final_status = status
  metrics.publish(R, true)
end

--- full_text(R) -> the pause message of a full disk, with the space the
--- rest of the run needs.
function M.full_text(R)
  local cursor, size = R.cursor, R.size
  local done = math.max(cursor.index, 1)
  local left = done -- rows to come, when the input cannot tell
  if size and size > 0 and cursor.offset > 0 then
    left = math.max(math.ceil(done * (size - cursor.offset) / cursor.offset), 0)
  end
  local mb = math.ceil(R.out_bytes / done * left / 1048576) + 16 -- and room for the store to grow
  return string.format("disk full writing %s (needs about %d MB free); free space and run: orch resume %s",
    R.full, mb, R.run.id)
end

--- budget_hint(R) -> the budget that would finish the run: what is spent
--- plus the rows left at the cost per row seen so far (rows left: the
--- run's total, a table's length, or a file's bytes left at the bytes per
--- row so far).
function M.budget_hint(R)
  local cursor, size, totals, run, wf = R.cursor, R.size, R.totals, R.run, R.wf
  local total = run.rows_total or (type(wf.input) == "table" and wf.input.path == nil and #wf.input) or nil
  local left = total and math.max(total - cursor.index, 0)
  if left == nil and size and size > 0 and cursor.offset > 0 and cursor.index > 0 then
    left = math.ceil((size - cursor.offset) * cursor.index / cursor.offset)
  end
  local suggest = limits.suggest_budget(totals.cost, cursor.index, left, R.rt.budget and R.rt.budget.largest)
  if suggest then
    return string.format("about %s rows left at $%.6f a row: orch resume %s --budget %.2f",
      fmt_count(left), cursor.index > 0 and totals.cost / cursor.index or 0, run.id, suggest)
  end
  return string.format("the rows left are not known ahead (the input is an iterator): orch resume %s "
    .. "--budget USD, with USD above $%.4f spent so far", run.id, totals.cost)
end

-- The LLM part of the summary line: "; 3 LLM calls, 1,200 tokens, $0.0100".
local function llm_figures(totals)
  if totals.llm_calls == 0 then
    return ""
  end
  return string.format("; %s%s, %s tokens, $%.4f",
    totals.llm_calls == 1 and "1 LLM call" or (fmt_count(totals.llm_calls) .. " LLM calls"),
    (totals.cached_calls or 0) > 0 and string.format(" (%d from the journal, $%.4f saved)", totals.cached_calls,
      totals.saved or 0) or "",
    fmt_count(totals.tokens_in + totals.tokens_out), totals.cost) .. ((totals.estimated_calls or 0) > 0
      and string.format(" (tokens and cost estimated for %d calls: no usage from the provider)",
        totals.estimated_calls) or "")
end

-- The first failures, under the summary line (-v logs them all).
local function failure_list(R)
  local failures, log = R.failures, R.log
  for i = 1, math.min(#failures, 5) do
    local f = failures[i]
    log(0, string.format("  %s: %s", M.which(R, f.seq, f.key), (f.msg:gsub("\n.*", ""))))
  end
  local nfail = R.counts.failed + R.counts.defaulted
  if nfail > 5 then
    log(0, string.format("  ... %d more; run with -v for every failure and its traceback", nfail - 5))
  end
end

--- summary(R): the end of a run that did not fail outright: the summary
--- line, the first failures, and why it paused or failed.
function M.summary(R)
  local log, counts, cursor, run, fatal = R.log, R.counts, R.cursor, R.run, R.fatal
  local el = math.max(sched.now() - R.t0, 1e-3)
  local done_now = cursor.index - R.start_index
  log(0, string.format("%s: %s in %.2f s (%s %s/s): %d ok, %d failed, %d dropped%s%s%s",
    R.wf.name, M.count_of(R, cursor.index), el, fmt_count(done_now / el), R.unit, counts.ok, counts.failed,
    counts.dropped, counts.defaulted > 0 and string.format(", %d defaulted", counts.defaulted) or "",
    llm_figures(R.totals), R.out and ("; output " .. R.out.path) or ""))
  local est = R.opts.estimate -- the one orch estimate --sample stored before the run
  if est then
    log(0, "  " .. require("orch.estimate").beside_actual(est, R.totals.cost,
      (R.paused or fatal) and "unfinished" or "completed"))
  end
  if #R.failures > 0 and R.verbosity == 0 and not fatal then
    failure_list(R)
  end
  if R.paused == "budget" then
    log(-1, string.format("run %s paused after %s: %s; resume with a higher budget, %s", run.id,
      M.count_of(R, cursor.index), R.budget_msg, R.budget_hint), "warn")
  elseif R.paused then
    log(-1, string.format("run %s paused after %s (%s); resume with: orch resume %s",
      run.id, M.count_of(R, cursor.index), R.paused, run.id), "warn")
  elseif fatal then
    log(-1, string.format("run %s failed%s: %s", run.id,
      fatal.seq and (" at " .. M.which(R, fatal.seq, fatal.key)) or "",
      fatal.tb or fatal.msg), "error")
  end
end

return M
