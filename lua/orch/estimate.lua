-- orch.estimate: tokens and dollars of a workflow before spending any
-- (`orch estimate WORKFLOW.lua`, `orch run --dry-run`).
--
-- The workflow runs for real over its whole input, with three things
-- changed: its LLM answers offline (the mock provider's replies, shaped by
-- json/schema as usual, so later stages work) while every call is counted
-- at the workflow model's prices; the output and errors files go to a
-- scratch directory; runs, checkpoints and the journal live in memory.
-- Input tokens are counted as the mock provider counts them (about four
-- characters a token); output tokens as the most each call may produce:
-- its max_tokens, or DEFAULT_OUTPUT_TOKENS where none is set. Budgets, rate
-- limits and the workflow's observers are left out. No network request
-- leaves the process: orch.http is offline for the estimate, and a stage's
-- orch.http.request gets the workflow's orch.http.on_estimate reply, or nil
-- and an error saying it was not sent; the report counts them.
local mock = require("orch.providers.mock")
local llm = require("orch.llm")
local pricing = require("orch.pricing")
local http = require("orch.http")

local M = {}

M.DEFAULT_OUTPUT_TOKENS = 512

local count = require("orch.fmt").count

llm.register("estimate", {
  call = function(req, cfg, ctx)
    local text, usage = mock.call(req, { latency_ms = 0 }, ctx)
    usage.output = req.max_tokens or cfg.max_tokens or M.DEFAULT_OUTPUT_TOKENS
    return text, usage
  end,
})

-- A copy of an io spec (orch.write.*) writing into dir instead.
local function redirect(spec, dir, name)
  if spec == nil then
    return nil
  end
  local c = {}
  for k, v in pairs(spec) do
    c[k] = v
  end
  c.path = dir .. "/" .. name
  return setmetatable(c, getmetatable(spec))
end

--- prepare(wf, dir [, sampling]) -> the workflow to run, and report(log)
--- that prints the estimate once it has run (-> false when nothing was
--- run, else true and the run's finish event). sampling: a sample runs
--- next, for real (the report says this pass alone stored nothing).
function M.prepare(wf, dir, sampling)
  local e = {}
  for k, v in pairs(wf) do
    e[k] = v
  end
  e.output = redirect(wf.output, dir, "output")
  e.errors = redirect(wf.errors, dir, "errors")
  e.budget, e.checkpoint = nil, nil
  local finish
  e.observers = { { on_finish = function(ev)
    finish = ev
  end } }
  local model
  if wf.llm then
    model = wf.llm.model or wf.llm.provider
    e.llm = { provider = "estimate", model = model, prices = wf.llm.prices, system = wf.llm.system,
      temperature = wf.llm.temperature, max_tokens = wf.llm.max_tokens, concurrency = wf.llm.concurrency }
  end
  setmetatable(e, getmetatable(wf))
  http.offline(true) -- until report: the estimate runs next

  local function report(log)
    local not_sent, on_estimate = http.offline(false)
    if finish == nil then
      return false
    end
    log(string.format("estimate for %s: %s %s, %s LLM calls", wf.name, count(finish.rows), wf.steps and "steps" or "rows",
      count(finish.llm_calls)))
    local models = {}
    for name in pairs(finish.cost_by_model or {}) do
      models[#models + 1] = name
    end
    table.sort(models)
    local tin, tout = finish.tokens_in, finish.tokens_out
    log(string.format("  input tokens   ~%s (about 4 characters a token)", count(tin)))
    log(string.format("  output tokens  at most %s (each call's max_tokens, or %d where none is set)", count(tout),
      M.DEFAULT_OUTPUT_TOKENS))
    local priced = {}
    for _, name in ipairs(models) do
      local p = (wf.llm and wf.llm.prices and wf.llm.prices[name]) or pricing[name]
      priced[#priced + 1] = p and string.format("%s at $%g / $%g per million tokens in / out", name, p[1], p[2])
        or (name .. " has no price: counted as $0; give llm.prices")
    end
    log(string.format("  cost           at most $%.4f%s", finish.cost_usd,
      #priced > 0 and (" (" .. table.concat(priced, "; ") .. ")") or ""))
    local batched = wf.llm and require("orch.llm").providers[wf.llm.provider]
    if batched and batched.batch then -- side by side: the provider's batch API bills a fraction
      log(string.format("  batch cost     at most $%.4f with llm.batch = true (the provider's batch API: %g%% of the "
        .. "price, answers within 24 h)", finish.cost_usd * pricing.BATCH_DISCOUNT, pricing.BATCH_DISCOUNT * 100))
    end
    if finish.failed > 0 then
      log(string.format("  %s rows failed during the estimate; their calls after the failure are not counted",
        count(finish.failed)))
    end
    if not_sent > 0 then
      log(string.format("  orch.http       %s request%s not sent (%s)", count(not_sent), not_sent == 1 and "" or "s",
        on_estimate and "answered by the workflow's orch.http.on_estimate"
          or "answered with an error; orch.http.on_estimate(fn) gives them a reply"))
    end
    log(sampling and "  this offline pass sent, wrote and stored nothing; the sample below runs for real"
      or "  nothing was sent, written or stored; replies already in the journal would cost $0")
    log("  the output figure is an upper bound" .. (wf.steps and ""
      or ": --sample N runs N rows for real for the expected cost"))
    return true, finish
  end
  return e, report
end

-- Sampled estimates (`orch estimate WORKFLOW --sample N`) ---------------
--
-- N rows (the first N, or N drawn through the input with --spread) run
-- for real in the workflow's own store, so every reply lands in the
-- journal the real run reads: those rows cost nothing again. Their
-- figures per row (dollars, tokens, calls; a reply already in the journal
-- counted at what it cost when it was paid) give the expected cost of
-- the rows left, with a 90 % interval, beside the offline upper bound.
-- The estimate is stored as an `estimate` event of the run it precedes: the
-- unfinished run of the same workflow, input and parameters, or a new one
-- left `pending` that `orch run` starts.
local json = require("orch.json")
local store = require("orch.store")
local sys = require("orch.sys")
local hash = require("orch.hash")
local fmt = require("orch.fmt")
local oio = require("orch.io")

-- t(0.95, df), the two-sided 90 % quantile of Student's t: exact to three
-- decimals below 11 degrees of freedom, the Cornish-Fisher expansion above.
local T90 = { 6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812 }
function M.t90(df)
  if df <= #T90 then
    return T90[df]
  end
  local z = 1.6448536
  return z + (z ^ 3 + z) / (4 * df) + (5 * z ^ 5 + 16 * z ^ 3 + 3 * z) / (96 * df * df)
end

--- interval(values, total [, left]) -> expected, low, high, mean: the sum
--- over the `left` rows still to run (default: the total - #values rows
--- not sampled), predicted from the sampled values: their mean times
--- that number, and a 90 % prediction interval
--- t(0.95, n-1) * s * sqrt(left * (n + left) / n) around it (the variance
--- of a sum of `left` new rows, left * s^2, plus that of the mean it is
--- predicted from, left^2 * s^2 / n). low and high are nil below 2 values.
function M.interval(values, total, left)
  local n = #values
  left = left or math.max(total - n, 0)
  local sum = 0
  for _, v in ipairs(values) do
    sum = sum + v
  end
  local mean = n > 0 and sum / n or 0
  local expected = mean * left
  if n < 2 then
    return expected, nil, nil, mean
  end
  local ss = 0
  for _, v in ipairs(values) do
    ss = ss + (v - mean) ^ 2
  end
  local half = M.t90(n - 1) * math.sqrt(ss / (n - 1)) * math.sqrt(left * (n + left) / n)
  return expected, math.max(expected - half, 0), expected + half, mean
end

-- A seeded generator of whole numbers 1..n (splitmix64): the same seed
-- draws the same rows on every machine, and math.random is left alone.
local function rng(seed)
  local x = seed
  return function(n)
    x = x + 0x9E3779B97F4A7C15
    local z = x
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    z = z ~ (z >> 31)
    return (z >> 1) % n + 1
  end
end

--- choose(total, n, spread, seed) -> { [row number] = true }: the first n
--- rows, or with spread n of the total drawn without replacement (Floyd's
--- algorithm), every row as likely as any other.
function M.choose(total, n, spread, seed)
  local pick = {}
  if not spread or n >= total then
    for i = 1, math.min(n, total) do
      pick[i] = true
    end
    return pick
  end
  local draw = rng(seed or 1)
  for j = total - n + 1, total do
    local t = draw(j)
    pick[pick[t] and j or t] = true
  end
  return pick
end

-- The picked rows of the workflow's input, in input order (a malformed
-- one is left out: it costs nothing). -> rows | nil, message
local function read_rows(wf, pick, n)
  local src, err = oio.open_source(wf.input)
  if src == nil then
    return nil, err
  end
  local rows, i = {}, 0
  while #rows < n do
    local row = src.next()
    if row == nil then
      break
    end
    i = i + 1
    if row and pick[i] then
      rows[#rows + 1] = row
    end
  end
  src.close()
  return rows
end

-- A run record for the sample, in the workflow's store (its replies are
-- journaled there), apart from the real run: its own identity, no output
-- file. Deleted once its figures are read. -> run | nil, message
local function sample_record(st, ident)
  local runs = require("orch.runs")
  for _, r in ipairs(st:run_list({ status = "running" }) or {}) do -- a sample killed before it could clean up
    if runs.is_sample(r) and not runs.owner_alive(r, store.now_ms()) then
      st:run_delete(r.id)
    end
  end
  local now = store.now_ms()
  local run = {}
  for k, v in pairs(ident) do
    run[k] = v
  end
  run.id = "sample-" .. hash.xxh64(string.format("%s|%d|%d|%s", ident.identity, sys.pid(), now, tostring({}))):sub(1, 8)
  run.name = ident.name .. " (estimate sample)"
  run.identity = hash.xxh128(ident.identity .. "\0sample")
  run.status, run.owner_pid, run.owner_host, run.heartbeat_ms, run.created_ms = "running", sys.pid(),
    sys.hostname(), now, now
  run.output = nil
  local ok, err = st:run_create(run)
  if not ok then
    return nil, err
  end
  return run
end

-- Runs the sample rows through the workflow for real: its stages, LLM and
-- journal; output and errors to a scratch directory; only an observer of
-- ours, which keeps each row's status and LLM figures. Not the budget: the
-- user asked for these N rows, and the budget is the run's, checked
-- against the estimate.
-- -> exit code, { rows = { { status =, usage = } ... }, finish = event }
local function run_sample(st, wf, rows, run, opts)
  local s, seen = {}, { rows = {} }
  for k, v in pairs(wf) do
    s[k] = v
  end
  local dir = os.tmpname() -- a unique name; the sinks create the directory
  os.remove(dir)
  s.input, s.output, s.errors = rows, redirect(wf.output, dir, "output"), redirect(wf.errors, dir, "errors")
  s.budget = nil
  if wf.llm and wf.llm.batch then
    -- llm.batch: the sample must not submit provider batches (it would wait up to 24 h, and a batch cut
    -- short by the sample's end would be paid with no run to collect it): its requests go synchronously.
    -- The journal key is the same either way, so the real run answers the sampled rows from the journal;
    -- the batch price is applied to the sample's tokens (batch_figures).
    local llm = {}
    for k, v in pairs(wf.llm) do
      llm[k] = v
    end
    llm.batch = false
    s.llm = setmetatable(llm, getmetatable(wf.llm))
  end
  s.observers = { {
    on_row = function(ev)
      seen.rows[#seen.rows + 1] = { status = ev.status, usage = ev.usage }
    end,
    on_finish = function(ev)
      seen.finish = ev
    end,
  } }
  setmetatable(s, getmetatable(wf))
  local code = require("orch.run").rows(s, { store = st, run = run, verbosity = -1, concurrency = opts.concurrency,
    db = opts.db })
  for _, name in ipairs({ "output", "errors" }) do
    os.remove(dir .. "/" .. name)
  end
  os.remove(dir)
  return code, seen
end

-- Adds a row's by_model or by_stage figures to acc[name] = { cost, tokens }.
local function add_groups(acc, groups)
  for name, g in pairs(groups or {}) do
    local a = acc[name] or { cost = 0, tokens = 0 }
    acc[name] = a
    a.cost, a.tokens = a.cost + g.cost, a.tokens + g.tokens
  end
end

-- The share of each model or stage in the expected cost: by its dollars in
-- the sample, or by its tokens when the sample's replies all came from the
-- journal (at $0). -> { [name] = dollars }
local function shares(acc, expected)
  local cost, tokens = 0, 0
  for _, a in pairs(acc) do
    cost, tokens = cost + a.cost, tokens + a.tokens
  end
  local out = {}
  for name, a in pairs(acc) do
    local share = cost > 0 and a.cost / cost or (tokens > 0 and a.tokens / tokens or 0)
    out[name] = expected * share
  end
  return setmetatable(out, { __jsontype = "object" })
end

-- A row's dollars at the provider's batch price: each model's share of the
-- row's tokens (exact for a row that calls one model) priced by
-- pricing.batch_cost (llm.batch_prices, else half the llm.prices / built-in
-- price). From tokens, not dollars, so a reply that came from the journal
-- counts as well.
local function row_batch_usd(u, llm)
  local tokens, usd_ = (u.tokens_in or 0) + (u.tokens_out or 0), 0
  if tokens == 0 then
    return 0
  end
  for model, g in pairs(u.by_model or {}) do
    local share = g.tokens / tokens
    usd_ = usd_ + pricing.batch_cost(model, u.tokens_in * share, u.tokens_out * share, llm.prices, llm.batch_prices)
  end
  return usd_
end

--- batch_figures(seen, total, left, llm) -> { expected_usd, low_usd, high_usd, row_usd }: the rows left
--- at the provider's batch price (llm: the workflow's llm table, for its prices and batch_prices).
function M.batch_figures(seen, total, left, llm)
  local cost = {}
  for i, r in ipairs(seen.rows) do
    cost[i] = row_batch_usd(r.usage or {}, llm)
  end
  local b = {}
  b.expected_usd, b.low_usd, b.high_usd, b.row_usd = M.interval(cost, total, left)
  return b
end

-- The figures the run will be billed by: at batch prices for a batched
-- workflow (e.batch), else synchronous. -> { expected_usd, low_usd, high_usd, row_usd }
local function billed(e)
  return e.batch or e
end

--- figures(seen, total [, left]) -> the estimate (the `estimate` event's
--- data): the sample's figures per row and the expected figures of the
--- rows left (default: those not sampled).
function M.figures(seen, total, left)
  local cost, tin, tout, calls, retries = {}, {}, {}, 0, 0
  local failed = 0
  local by_model, by_stage = {}, {}
  for i, r in ipairs(seen.rows) do
    local u = r.usage or {}
    cost[i] = (u.cost or 0) + (u.saved or 0) -- a reply from the journal: what it cost when paid
    tin[i], tout[i] = u.tokens_in or 0, u.tokens_out or 0
    calls, retries = calls + (u.llm_calls or 0), retries + (u.retries or 0)
    failed = failed + (r.status == "failed" and 1 or 0)
    add_groups(by_model, u.by_model)
    add_groups(by_stage, u.by_stage)
  end
  local n = #cost
  left = left or math.max(total - n, 0)
  local e = { rows_total = total, sample_rows = n, rows_left = left, failed = failed,
    calls_per_row = n > 0 and calls / n or 0, retries_per_call = calls > 0 and retries / calls or 0, sample_usd = seen.finish and seen.finish.cost_usd or 0 }
  e.expected_usd, e.low_usd, e.high_usd, e.row_usd = M.interval(cost, total, left)
  local ti, tl, th, tm = M.interval(tin, total, left)
  local oi, ol, oh, om = M.interval(tout, total, left)
  e.tokens_in = { expected = ti, low = tl, high = th, per_row = tm }
  e.tokens_out = { expected = oi, low = ol, high = oh, per_row = om }
  e.by_model, e.by_stage = shares(by_model, e.expected_usd), shares(by_stage, e.expected_usd)
  return e
end

-- The run the estimate precedes: the unfinished run of this workflow,
-- input and parameters (existing), or a new one left pending (no owner)
-- for `orch run` to start. -> run | nil, message
local function preceded_run(st, ident, existing)
  if existing then
    return existing
  end
  local now = store.now_ms()
  run = { status = "pending", owner_pid = 0, owner_host = sys.hostname(), heartbeat_ms = 0, created_ms = now }
  for k, v in pairs(ident) do
    run[k] = v
  end
  run.id = require("orch.runs").new_id(ident.name)
  local ok, cerr = st:run_create(run)
  if not ok then
    return nil, cerr
  end
  return run
end

--- stored(st, run_id) -> the newest estimate recorded for the run, or nil.
function M.stored(st, run_id)
  local found
  for _, ev in ipairs(st:event_list(run_id) or {}) do
    if ev.type == "estimate" and ev.data then
      local ok, d = pcall(json.decode, ev.data)
      if ok and type(d) == "table" then
        found = d
      end
    end
  end
  return found
end

-- Dollars with three significant digits below $1 ("$0.00211"), so an
-- estimate, its interval and the actual cost can be told apart.
local function usd(x)
  local a = math.abs(x)
  if a == 0 or a >= 1 then
    return string.format("$%.2f", x)
  end
  return string.format("$%." .. math.min(math.max(2, math.ceil(-math.log(a, 10)) + 2), 12) .. "f", x)
end
M.usd = usd

-- "90 % interval $0.0019 to $0.0023", or why there is none.
local function range(lo, hi, f)
  if lo == nil then
    return "no interval from a single row"
  end
  return string.format("90 %% interval %s to %s", f(lo), f(hi))
end

-- A budget that covers the interval's top, in whole cents.
local function budget_for(e)
  return math.max(math.ceil((e.high_usd or e.expected_usd) * 100 - 1e-9) / 100, 0.01) -- 1.1 * 100 is 110.00000000000001
end

--- budget_warning(e, max_usd) -> a warning when the expected cost (or the
--- interval's top) passes max_usd, naming a budget that covers it; or nil.
function M.budget_warning(e, max_usd)
  local b = billed(e) -- a batched workflow is billed at batch prices
  if max_usd == nil or b.expected_usd == nil then
    return nil
  elseif b.expected_usd > max_usd then
    return string.format("the expected cost %s passes the budget %s: the run would pause after about %s rows; "
      .. "a budget for the whole run: --budget %.2f", usd(b.expected_usd), fmt.usd(max_usd),
      count(b.row_usd > 0 and max_usd / b.row_usd or e.rows_left), budget_for(b))
  elseif b.high_usd and b.high_usd > max_usd then
    return string.format("the expected cost %s is within the budget %s, but the interval's top %s is not: the "
      .. "run may pause; to be sure: --budget %.2f", usd(b.expected_usd), fmt.usd(max_usd), usd(b.high_usd),
      budget_for(b))
  end
end

-- "mock $0.0021, gpt-4o $0.0100", sorted by name.
local function by_group(t)
  local names = {}
  for name in pairs(t or {}) do
    names[#names + 1] = name
  end
  table.sort(names)
  for i, name in ipairs(names) do
    names[i] = string.format("%s %s", name, usd(t[name]))
  end
  return table.concat(names, ", ")
end

--- report(log, e, name, run): prints a sampled estimate.
function M.report(log, e, name, run)
  local n = e.sample_rows
  log(string.format("sample for %s: %s of %s rows run for real (%s), %s LLM calls, %s spent", name, count(n),
    count(e.rows_total), e.how, count(e.calls_per_row * n + 0.5), usd(e.sample_usd)))
  log(string.format("  per row        %.2f LLM calls (%.2f retries a call), %.1f tokens in, %.1f out, %s; %s of %s "
    .. "rows failed", e.calls_per_row, e.retries_per_call, e.tokens_in.per_row, e.tokens_out.per_row, usd(e.row_usd), count(e.failed), count(n)))
  log(string.format("  expected cost  %s for the %s rows left%s (%s); the %s sampled rows come from the journal at $0",
    usd(e.expected_usd), count(e.rows_left), (e.rows_done_before or 0) > 0
      and string.format(" after the %s the run has done", count(e.rows_done_before)) or "",
    range(e.low_usd, e.high_usd, usd), count(n)))
  if e.batch then
    log(string.format("  batch cost     %s for the %s rows left with llm.batch = true (%s): the run's price; the "
      .. "sample ran synchronously (no provider batch), priced above at the synchronous price", usd(e.batch.expected_usd),
      count(e.rows_left), range(e.batch.low_usd, e.batch.high_usd, usd)))
  end
  log(string.format("  tokens         %s in (%s), %s out (%s)", count(e.tokens_in.expected),
    range(e.tokens_in.low, e.tokens_in.high, count), count(e.tokens_out.expected),
    range(e.tokens_out.low, e.tokens_out.high, count)))
  if next(e.by_model) then
    log("  by model       " .. by_group(e.by_model))
    log("  by stage       " .. by_group(e.by_stage))
  end
  if e.upper_scaled then
    log(string.format("  upper bound    about %s for all %s rows (the sampled rows' at max_tokens, scaled; "
      .. "orch estimate without --sample bounds every row)", usd(e.upper_usd), count(e.rows_total)))
  elseif e.upper_usd then
    log(string.format("  upper bound    %s for all %s rows (output at max_tokens)", usd(e.upper_usd),
      count(e.rows_total)))
  end
  if not e.spread and n < e.rows_total then
    log("  the sample is the first rows: if the input is sorted or grouped, --spread draws them through it")
  end
  log(string.format("  stored as the estimate of run %s (%s)%s", run.id, run.status,
    run.status == "pending" and "; orch run starts it, and its summary shows the estimate beside the actual" or ""))
end

-- Above this many rows (counted by a scan), `--sample` runs the offline
-- pass over the sampled rows only, and scales their upper bound.
M.FULL_PASS_ROWS = 100000

--- row_count(wf) -> the rows of the workflow's input when known without
--- reading them: a CSV or JSONL file's records by a scan of its bytes
--- (orch.reader.count), a Lua array's length; nil for an iterator (or a
--- file that cannot be read: the offline pass says why).
function M.row_count(wf)
  local input = wf.input
  if type(input) == "table" and input.path then
    return (require("orch.reader").count(input.path, input.kind == "csv" and "csv" or "lines"))
  elseif type(input) == "table" and getmetatable(input) == nil then
    return #input
  end
end

--- sampled(wf, total, opts) -> a copy of wf whose input is the rows
--- opts.sample, opts.spread and opts.seed pick of its total | nil, message.
function M.sampled(wf, total, opts)
  local n = math.min(opts.sample, total)
  local rows, err = read_rows(wf, M.choose(total, n, opts.spread, opts.seed or 1), n)
  if rows == nil then
    return nil, err
  end
  local c = {}
  for k, v in pairs(wf) do
    c[k] = v
  end
  c.input = rows
  return setmetatable(c, getmetatable(wf))
end

--- sample(opts, wf, path, offline, log, warn) -> exit code. Runs the
--- sample (opts.sample rows; opts.spread, opts.seed) of the workflow wf
--- (loaded afresh: the offline pass has read its input) in the store of
--- opts, stores and prints the estimate, and warns when the expected cost
--- passes the budget (--budget, else the workflow's max_usd). offline: the
--- offline pass's finish event (the row count, the upper bound).
function M.sample(opts, wf, path, offline, log, warn)
  local total = offline.rows
  if total == 0 then
    log("sample for " .. wf.name .. ": the input has no rows; nothing to sample, nothing stored")
    return 0
  end
  local n = math.min(opts.sample, total)
  local pick = M.choose(total, n, opts.spread, opts.seed or 1)
  local rows, rerr = read_rows(wf, pick, n)
  if rows == nil then
    warn(rerr)
    return 2
  end
  local runs = require("orch.runs")
  return require("orch.cli_base").with_store(opts, function(st)
    local ident = runs.identify(wf, path, opts.set)
    -- an unfinished run has rows done: the rows left are those after them, less the sampled ones
    local existing, ferr = st:run_find_unfinished(ident.identity)
    if ferr then
      warn(ferr)
      return 1
    end
    local done, left = existing and existing.rows_done or 0, total
    for i in pairs(pick) do
      left = left - (i > done and 1 or 0)
    end
    local srun, serr = sample_record(st, ident)
    if srun == nil then
      warn(serr)
      return 1
    end
    local code, seen = run_sample(st, wf, rows, srun, opts)
    st:run_delete(srun.id)
    if code ~= 0 or #seen.rows == 0 then
      warn(string.format("the sample could not run (exit %d); no estimate was stored", code))
      return code ~= 0 and code or 1
    end
    local e = M.figures(seen, total, math.max(left - done, 0))
    if wf.llm and wf.llm.batch then
      e.batch = M.batch_figures(seen, total, e.rows_left, wf.llm)
    end
    e.rows_done_before, e.spent_before = done, existing and existing.cost_usd or 0
    e.spread, e.seed, e.upper_usd = opts.spread or nil, opts.spread and (opts.seed or 1) or nil, offline.cost_usd
    e.upper_scaled = offline.scaled
    e.how = opts.spread and string.format("%s drawn through the input, seed %d", count(n), opts.seed or 1)
      or string.format("the first %s", count(n))
    e.budget_usd = opts.budget or (wf.budget and wf.budget.max_usd)
    local run, perr = preceded_run(st, ident, existing)
    if run == nil then
      warn(perr)
      return 1
    end
    st:event_add(run.id, "estimate", json.encode(e))
    M.report(log, e, wf.name, run)
    local w = M.budget_warning(e, e.budget_usd)
    if w then
      warn("warning: " .. w)
    end
    return 0
  end)
end

--- beside_actual(e, spent [, status]) -> "estimate $0.0021 (90 % interval
--- ...) for 190 rows, from a sample of 50; actual $0.0020 (-4.8 %)": a
--- stored estimate beside what the run spent. status (the run's, default
--- completed): a run not started yet has no actual, an unfinished one has
--- spent so far.
function M.beside_actual(e, spent, status)
  local b = billed(e) -- a batched workflow: its estimate at batch prices
  local head = string.format("estimate %s%s (%s) for %s rows, from a sample of %s", usd(b.expected_usd),
    e.batch and " at batch prices" or "", range(b.low_usd, b.high_usd, usd), count(e.rows_left), count(e.sample_rows))
  if status == "pending" then
    return head .. "; not started yet"
  elseif status ~= nil and status ~= "completed" then
    return head .. "; spent so far " .. usd(spent)
  end
  spent = spent - (e.spent_before or 0) -- a run estimated half-way: what it spent after the estimate
  local diff = b.expected_usd > 0 and string.format(" (%+.1f %%)", (spent - b.expected_usd) / b.expected_usd * 100)
    or ""
  return head .. "; actual " .. ((e.spent_before or 0) > 0 and "since the estimate " or "") .. usd(spent) .. diff
end

return M
