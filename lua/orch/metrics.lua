-- orch.metrics: a run's figures as the world outside the run sees them.
--
-- figures(R): the live figures a running orch writes to the store beside
-- its heartbeat (at most once a second), so `orch status` and `orch
-- serve` show values between checkpoints. exposition(entries): the
-- Prometheus text format (version 0.0.4) of runs with their figures, for
-- `orch serve`'s /metrics and `orch run --metrics FILE`. write_atomic:
-- a file replaced whole (temp file + rename), as node_exporter's textfile
-- collector needs.
local sched = require("orch.sched")
local store = require("orch.store")
local json = require("orch.json")

local M = {}

--- total_of(R) -> the rows (or steps) the run will have in all, when known:
--- the run's own count, a Lua array input, the steps; else nil.
function M.total_of(R)
  local wf = R.wf
  if R.run.rows_total then
    return R.run.rows_total
  end
  if wf.steps then
    return #wf.steps
  end
  if type(wf.input) == "table" and wf.input.path == nil and getmetatable(wf.input) == nil then
    return #wf.input
  end
  return nil
end

--- figures(R) -> the live figures of the run R (see orch.run), a plain table.
function M.figures(R)
  local now = sched.now()
  local cursor, counts, live = R.cursor, R.counts, R.live
  local el = math.max(now - R.t0, 1e-3)
  local rate = (cursor.index - R.start_index) / el
  local total = M.total_of(R)
  local f = {
    rows_done = cursor.index, rows_ok = counts.ok, rows_failed = counts.failed, rows_dropped = counts.dropped,
    rows_defaulted = counts.defaulted, rows_in_flight = R.inflight or 0, rows_total = total,
    rows_per_s = rate, input_offset = cursor.offset, input_size = R.size,
    llm_calls = live.llm_calls, tokens_in = live.tokens_in, tokens_out = live.tokens_out, cost_usd = live.cost,
    retries = R.retries or 0, http_429 = R.http_429 or 0, journal_hits = live.cached_calls or 0,
    concurrency = R.conc, elapsed_s = el, checkpoints = R.ckpt_count or 0,
    checkpoint_ms = R.ckpt_ms or 0, unit = R.unit,
  }
  local share = M.share(f)
  if share and rate > 0 then
    f.eta_s = (1 - share) * el / math.max(share - M.start_share(R), 1e-9)
  end
  f.share = share
  return f
end

--- share(f) -> the part of the run done (0..1) from figures, or nil when
--- unknown: rows of a known total, else bytes of a file input.
function M.share(f)
  if f.rows_total and f.rows_total > 0 then
    return math.min(f.rows_done / f.rows_total, 1)
  end
  if f.input_size and f.input_size > 0 and (f.input_offset or 0) > 0 then
    return math.min(f.input_offset / f.input_size, 1)
  end
  return nil
end

--- start_share(R) -> the share done when this process took the run up.
function M.start_share(R)
  local total = M.total_of(R)
  if total and total > 0 then
    return R.start_index / total
  end
  if R.size and R.size > 0 then
    return (R.start_offset or 0) / R.size
  end
  return 0
end

--- publish(R, force): writes the live figures (at most once a second
--- unless force) and the --metrics file (every METRICS_S seconds unless
--- force). A failed write is not fatal: the next checkpoint reports a
--- store that fails.
M.METRICS_S = 2
function M.publish(R, force)
  local now = sched.now()
  if not force and now - (R.live_at or -1e9) < 1 then
    return
  end
  R.live_at = now
  local f = M.figures(R)
  R.st:live_put(R.run.id, store.now_ms(), json.encode(f))
  local path = R.opts.metrics
  if path and (force or now - (R.metrics_at or -1e9) >= M.METRICS_S) then
    R.metrics_at = now
    local run = setmetatable({ status = R.final_status or "running" }, { __index = R.run })
    local ok, err = M.write_atomic(path, M.exposition({ { run = run, live = f, durations = R.ckpt_durations } }))
    if not ok and not R.metrics_warned then
      R.metrics_warned = true
      R.log(-1, "--metrics: " .. err, "warn")
    end
  end
end

--- write_atomic(path, text) -> true | nil, err: text replaces path whole
--- (a temp file beside it, then rename), so a reader never sees half.
function M.write_atomic(path, text)
  local tmp = string.format("%s.tmp.%d", path, require("orch.sys").pid())
  local fh, err = io.open(tmp, "wb")
  if fh == nil then
    return nil, "cannot write " .. tostring(err)
  end
  local ok, werr = fh:write(text)
  local cok, cerr = fh:close()
  if not ok or not cok then
    os.remove(tmp)
    return nil, string.format("cannot write %s: %s", tmp, tostring(werr or cerr))
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, string.format("cannot rename %s to %s: %s", tmp, path, tostring(rerr))
  end
  return true
end

-- ---- the exposition format ----

-- A label value: backslash, double quote and newline escaped.
local function label(v)
  return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

-- A sample value: integers as they are, others with enough digits.
local function num(v)
  v = tonumber(v) or 0
  if math.type(v) == "integer" then
    return tostring(v)
  end
  if v ~= v then
    return "NaN"
  end
  if v == math.huge then
    return "+Inf"
  end
  local short = string.format("%.15g", v) -- 0.005, not 0.0050000000000000001
  return tonumber(short) == v and short or string.format("%.17g", v)
end

-- The per-run counters: metric name, HELP, TYPE, and where the value is
-- (the live figures' key, the run record's key).
local PER_RUN = {
  { "rows_done", "Rows (or steps) settled: written, failed, dropped or defaulted.", "counter", "rows_done",
    "rows_done" },
  { "rows_failed", "Rows that failed.", "counter", "rows_failed", "rows_failed" },
  { "llm_calls", "LLM calls made (journal hits included).", "counter", "llm_calls", "llm_calls" },
  { "tokens_in", "Prompt tokens.", "counter", "tokens_in", "tokens_in" },
  { "tokens_out", "Completion tokens.", "counter", "tokens_out", "tokens_out" },
  { "cost_usd", "Dollars spent on LLM calls.", "counter", "cost_usd", "cost_usd" },
  { "retries", "LLM requests retried (429, 5xx, transport errors) while this process ran the run.", "counter",
    "retries" },
  { "http_429", "HTTP 429 answers while this process ran the run.", "counter", "http_429" },
  { "journal_hits", "LLM calls answered from the journal instead of paid again.", "counter", "journal_hits" },
}

-- The value of one counter for an entry: the live figures while they are
-- newer than the run record, else the record.
local function value_of(e, live_key, run_key)
  local f = e.live
  if f and f[live_key] ~= nil then
    return f[live_key]
  end
  if run_key then
    return e.run[run_key] or 0
  end
  return 0
end

-- Checkpoint durations bucket bounds, in seconds.
local BUCKETS = { 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local STATUSES = { "pending", "running", "paused", "completed", "failed" }

local function histogram(out, labels, durations)
  local counts, sum = {}, 0
  for i = 1, #BUCKETS do
    counts[i] = 0
  end
  for _, ms in ipairs(durations or {}) do
    local s = ms / 1000
    sum = sum + s
    for i, b in ipairs(BUCKETS) do
      if s <= b then
        counts[i] = counts[i] + 1
      end
    end
  end
  for i, b in ipairs(BUCKETS) do
    out[#out + 1] = string.format('orch_run_checkpoint_duration_seconds_bucket{%s,le="%s"} %d', labels, num(b),
      counts[i])
  end
  local n = #(durations or {})
  out[#out + 1] = string.format('orch_run_checkpoint_duration_seconds_bucket{%s,le="+Inf"} %d', labels, n)
  out[#out + 1] = string.format("orch_run_checkpoint_duration_seconds_sum{%s} %s", labels, num(sum))
  out[#out + 1] = string.format("orch_run_checkpoint_duration_seconds_count{%s} %d", labels, n)
end

-- The per-run families, one family's samples together as the format asks.
local function per_run(out, entries)
  local labels = {}
  for i, e in ipairs(entries) do
    labels[i] = string.format('run_id="%s",workflow="%s"', label(e.run.id), label(e.run.name))
  end
  for _, m in ipairs(PER_RUN) do
    out[#out + 1] = string.format("# HELP orch_run_%s_total %s", m[1], m[2])
    out[#out + 1] = string.format("# TYPE orch_run_%s_total %s", m[1], m[3])
    for i, e in ipairs(entries) do
      out[#out + 1] = string.format("orch_run_%s_total{%s} %s", m[1], labels[i], num(value_of(e, m[4], m[5])))
    end
  end
  out[#out + 1] = "# HELP orch_run_requests_in_flight Rows (or steps) in flight now (0 unless running)."
  out[#out + 1] = "# TYPE orch_run_requests_in_flight gauge"
  for i, e in ipairs(entries) do
    local n = e.run.status == "running" and e.live and e.live.rows_in_flight or 0
    out[#out + 1] = string.format("orch_run_requests_in_flight{%s} %s", labels[i], num(n))
  end
  out[#out + 1] = "# HELP orch_run_status The run's status: 1 for the status it is in, 0 for the others."
  out[#out + 1] = "# TYPE orch_run_status gauge"
  for i, e in ipairs(entries) do
    for _, s in ipairs(STATUSES) do
      out[#out + 1] = string.format('orch_run_status{%s,status="%s"} %d', labels[i], s, e.run.status == s and 1 or 0)
    end
  end
  out[#out + 1] = "# HELP orch_run_checkpoint_duration_seconds How long the run's checkpoints took to write."
  out[#out + 1] = "# TYPE orch_run_checkpoint_duration_seconds histogram"
  for i, e in ipairs(entries) do
    histogram(out, labels[i], e.durations)
  end
end

-- The store-wide families: sums over every run in totals (see exposition).
local function totals(out, t)
  for _, m in ipairs(PER_RUN) do
    if m[5] then
      out[#out + 1] = string.format("# HELP orch_%s_total %s Sum over every run in the store.", m[1], m[2])
      out[#out + 1] = string.format("# TYPE orch_%s_total counter", m[1])
      out[#out + 1] = string.format("orch_%s_total %s", m[1], num(t[m[1]] or 0))
    end
  end
  out[#out + 1] = "# HELP orch_runs Runs in the store by status."
  out[#out + 1] = "# TYPE orch_runs gauge"
  for _, s in ipairs(STATUSES) do
    out[#out + 1] = string.format('orch_runs{status="%s"} %d', s, t.by_status and t.by_status[s] or 0)
  end
end

--- exposition(entries, all) -> the text /metrics answers. entries: { run
--- = a run record, live = its live figures or nil, durations = its
--- checkpoints' ms }; all: the sums over every run (rows_done, ...,
--- by_status), or nil (a single run's file: the sums are its own).
function M.exposition(entries, all)
  local out = {}
  if all == nil then
    all = { by_status = {} }
    for _, e in ipairs(entries) do
      for _, m in ipairs(PER_RUN) do
        if m[5] then
          all[m[1]] = (all[m[1]] or 0) + value_of(e, m[4], m[5])
        end
      end
      all.by_status[e.run.status] = (all.by_status[e.run.status] or 0) + 1
    end
  end
  totals(out, all)
  per_run(out, entries)
  out[#out + 1] = ""
  return table.concat(out, "\n")
end

--- value_of(e, key) -> the counter key of an entry, live figures first.
M.value_of = value_of
M.PER_RUN = PER_RUN

return M
