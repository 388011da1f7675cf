-- orch.serve: `orch serve`, a read-only web dashboard over a store: the
-- page (web/, embedded in the binary), the JSON API it reads, and
-- /metrics in Prometheus text. The HTTP server is libmicrohttpd driven
-- from this thread (orch.httpd, core/serve.c): requests are answered one
-- at a time on the thread that owns the Lua state and the store, so no
-- lock is needed and a slow store answer delays the others (they are
-- bounded by paging).
--
-- Every answer passes through redact(): values of the environment's
-- secrets (variables named *KEY*, *TOKEN*, *SECRET*, *PASSWORD*), bearer
-- tokens, "sk-..." keys and URL passwords never leave the process. Row-
-- derived strings go out as JSON; the page builds its DOM with
-- textContent, never innerHTML.
local base = require("orch.cli_base")
local httpd = require("orch.httpd")
local json = require("orch.json")
local metrics = require("orch.metrics")
local runs = require("orch.runs")
local serve_fleet = require("orch.serve_fleet")
local serve_live = require("orch.serve_live")
local store = require("orch.store")
local mask = require("orch.log").mask

local M = {}

M.PAGE = 50 -- runs a page of /api/runs holds by default
M.MAX_PAGE = 500
M.METRIC_RUNS = 100 -- per-run series of /metrics: unfinished runs and the newest finished up to this many

local JSON = "application/json"
local TYPES = { html = "text/html; charset=utf-8", js = "text/javascript; charset=utf-8",
  css = "text/css; charset=utf-8", png = "image/png" }

-- ---- secrets ----

--- secrets() -> the values of this process's secret-looking environment
--- variables (6 characters or more), longest first.
function M.secrets(extra)
  local list = {}
  local fh = io.open("/proc/self/environ", "rb")
  if fh then
    local env = fh:read("a")
    fh:close()
    for name, value in env:gmatch("([^=%z]+)=([^%z]*)") do
      local up = name:upper()
      if (up:find("KEY", 1, true) or up:find("TOKEN", 1, true) or up:find("SECRET", 1, true)
          or up:find("PASSWORD", 1, true) or up:find("PASSWD", 1, true)) and #value >= 6 then
        list[#list + 1] = value
      end
    end
  end
  for _, v in ipairs(extra or {}) do
    if #v >= 1 then
      list[#list + 1] = v
    end
  end
  table.sort(list, function(a, b)
    return #a > #b
  end)
  return list
end

--- redact(text, secrets) -> text without the secrets, bearer tokens,
--- "sk-" keys or URL passwords.
function M.redact(text, secrets)
  for _, s in ipairs(secrets) do
    local at = 1
    while true do
      local i, j = text:find(s, at, true)
      if i == nil then
        break
      end
      text = text:sub(1, i - 1) .. "***" .. text:sub(j + 1)
      at = i + 3
    end
  end
  text = text:gsub("([Bb]earer%s+)[%w%-%._~%+/]+=*", "%1***")
  text = text:gsub("sk%-[%w%-_]+", "sk-***")
  return mask(text)
end

-- ---- the API ----

-- A run as the API shows it: the record's public fields, live figures
-- folded in while it runs, and what the page derives (share, duration).
local function run_view(st, r, now)
  local live = serve_live.read(st, r)
  local v = {
    id = r.id, name = r.name, status = r.status, error = r.error, input = r.input, output = r.output,
    created_ms = r.created_ms, updated_ms = r.updated_ms, finished_ms = r.finished_ms, heartbeat_ms = r.heartbeat_ms,
    owner_pid = r.owner_pid, owner_host = r.owner_host, recoveries = r.recoveries, checkpoints = r.checkpoints,
    rows_done = r.rows_done, rows_ok = r.rows_ok, rows_failed = r.rows_failed, rows_dropped = r.rows_dropped,
    rows_defaulted = r.rows_defaulted, llm_calls = r.llm_calls, tokens_in = r.tokens_in, tokens_out = r.tokens_out,
    cost_usd = r.cost_usd,
  }
  if live then
    for _, k in ipairs({ "rows_done", "rows_ok", "rows_failed", "rows_dropped", "rows_defaulted", "llm_calls",
      "tokens_in", "tokens_out", "cost_usd" }) do
      if live[k] ~= nil then
        v[k] = live[k]
      end
    end
    v.live = live
    v.rows_per_s = live.rows_per_s
    v.share = live.share
    v.eta_s = live.eta_s
    v.rows_total = live.rows_total
  elseif r.status == "completed" then
    v.share = 1
  end
  local stop = r.finished_ms > 0 and r.finished_ms or (r.status == "running" and now or r.updated_ms)
  v.duration_s = math.max(stop - r.created_ms, 0) / 1000
  if v.rows_per_s == nil and v.duration_s > 0 then
    v.rows_per_s = v.rows_done / v.duration_s
  end
  return v
end

local function array(t)
  return setmetatable(t, { __jsontype = "array" })
end

local function int_arg(q, k, default, lo, hi)
  local n = math.tointeger(tonumber(q[k] or ""))
  if n == nil then
    return default
  end
  return math.max(lo, math.min(hi, n))
end

-- GET /api/runs?status=S&name=TEXT&offset=N&limit=N: newest first.
local function api_runs(st, q)
  local list, err = st:run_list({ status = q.status ~= "" and q.status or nil })
  if list == nil then
    return 500, { error = err }
  end
  local name = q.name and q.name:lower() or ""
  local limit = int_arg(q, "limit", M.PAGE, 1, M.MAX_PAGE)
  local offset = int_arg(q, "offset", 0, 0, math.maxinteger)
  local out, matched, now = {}, 0, store.now_ms()
  for _, r in ipairs(list) do
    if name == "" or r.name:lower():find(name, 1, true) or r.id:lower():find(name, 1, true) then
      matched = matched + 1
      if matched > offset and #out < limit then
        out[#out + 1] = run_view(st, r, now)
      end
    end
  end
  return 200, { runs = array(out), total = matched, offset = offset, limit = limit }
end

-- cost by stage and by model, from the newest valid checkpoint's memento
local function cost_split(st, id)
  local c = st:checkpoint_latest(id)
  if not c or not c.memento then
    return nil
  end
  local ok, m = pcall(json.decode, c.memento)
  if not ok or type(m) ~= "table" or type(m.totals) ~= "table" then
    return nil
  end
  return { by_stage = m.totals.by_stage, by_model = m.totals.by_model }
end

-- GET /api/runs/ID: the run, its checkpoints (the newest 500), costs.
local function api_run(st, id)
  local r = st:run_get(id)
  if r == nil then
    return 404, { error = "no run '" .. id .. "' in this store" }
  end
  local cps = st:checkpoint_list(id) or {}
  local list = {}
  for i = math.max(#cps - 499, 1), #cps do
    local c = cps[i]
    list[#list + 1] = { seq = c.seq, name = c.name, reason = c.reason, created_ms = c.created_ms,
      rows = c.input_index, duration_ms = c.duration_ms, bytes = c.bytes, valid = c.valid }
  end
  local v = run_view(st, r, store.now_ms())
  v.checkpoint_list = array(list)
  v.costs = cost_split(st, id)
  -- workers (orch worker) and provider batches (llm.batch), where the run has them
  local w, werr = serve_fleet.workers(st, r)
  if werr then
    return 500, { error = werr }
  end
  if w then
    w.workers = array(w.workers)
    v.workers = w
  end
  local b, berr = serve_fleet.batches(st, r)
  if b == nil then
    return 500, { error = berr }
  end
  v.batches = #b > 0 and array(b) or nil
  return 200, v
end

-- GET /api/runs/ID/events?after=N&before=N&limit=N&order=desc: a page of
-- the run's events, oldest first (order=desc: newest first); next is the
-- last id of the page, to ask for the following one.
local function api_events(st, id, q)
  local limit = int_arg(q, "limit", 100, 1, 1000)
  local after = int_arg(q, "after", 0, 0, math.maxinteger)
  local before = int_arg(q, "before", 0, 0, math.maxinteger)
  local evs, err = st:event_page(id, after, before, limit, q.order == "desc")
  if evs == nil then
    return 500, { error = err }
  end
  local last = evs[#evs]
  return 200, { events = array(evs), next = last and last.id or (q.order == "desc" and before or after) }
end

-- GET /api/runs/ID/errors?after=SEQ&limit=N: failed and defaulted rows
-- committed by the run's checkpoints, in row order, a page.
local function api_errors(st, id, q)
  local limit = int_arg(q, "limit", 100, 1, 1000)
  local after = int_arg(q, "after", 0, 0, math.maxinteger)
  local out, err = st:error_page(id, after, limit)
  if out == nil then
    return 500, { error = err }
  end
  local last = out[#out]
  return 200, { errors = array(out), next = last and last.seq or after }
end

-- ---- /metrics ----

local function metrics_text(st)
  local list, err = st:run_list({})
  if list == nil then
    return nil, err
  end
  local all = { by_status = {} }
  local entries, finished = {}, 0
  for _, r in ipairs(list) do
    local e = { run = r }
    local unfinished = r.status == "running" or r.status == "paused" or r.status == "pending"
    if unfinished or finished < M.METRIC_RUNS then
      if not unfinished then
        finished = finished + 1
      end
      e.live = serve_live.read(st, r)
      local durations = {}
      for _, c in ipairs(st:checkpoint_list(r.id) or {}) do
        durations[#durations + 1] = c.duration_ms
      end
      e.durations = durations
      entries[#entries + 1] = e
    end
    for _, m in ipairs(metrics.PER_RUN) do
      if m[5] then
        all[m[1]] = (all[m[1]] or 0) + metrics.value_of(e, m[4], m[5])
      end
    end
    all.by_status[r.status] = (all.by_status[r.status] or 0) + 1
  end
  local runs_shown = {}
  for i, e in ipairs(entries) do
    runs_shown[i] = e.run
  end
  return metrics.exposition(entries, all) .. serve_fleet.metrics(st, runs_shown)
end

-- ---- routing ----

--- handler(st, secrets) -> fn(method, path, query) -> status, type, body
function M.handler(st, secrets)
  local function answer(status, v)
    return status, JSON, M.redact(json.encode(v), secrets)
  end
  return function(_, path, q)
    if path == "/" or path == "/index.html" then
      return 200, TYPES.html, httpd.asset("index.html")
    end
    local file, ext = path:match("^/([%w_%-]+%.(%a+))$")
    if file and httpd.asset(file) and TYPES[ext] then
      return 200, TYPES[ext], httpd.asset(file)
    end
    if path == "/metrics" then
      local text, err = metrics_text(st)
      if text == nil then
        return 500, "text/plain; charset=utf-8", M.redact(err, secrets) .. "\n"
      end
      return 200, "text/plain; version=0.0.4; charset=utf-8", M.redact(text, secrets)
    end
    if path == "/api/runs" then
      return answer(api_runs(st, q))
    end
    local id, rest = path:match("^/api/runs/([^/]+)(.*)$")
    if id and rest == "" then
      return answer(api_run(st, id))
    elseif id and rest == "/events" then
      return answer(api_events(st, id, q))
    elseif id and rest == "/errors" then
      return answer(api_errors(st, id, q))
    end
    return answer(404, { error = "no such page: " .. path .. " (see /, /api/runs, /metrics)" })
  end
end

-- ADDR:PORT -> host, port | nil, err
local function parse_listen(s)
  local host, port = s:match("^(.+):(%d+)$")
  port = math.tointeger(tonumber(port or ""))
  if host == nil or port == nil or port > 65535 then
    return nil, string.format("--listen %s: expected ADDR:PORT, e.g. 127.0.0.1:8377 or 0.0.0.0:8377", s)
  end
  return host, port
end

--- command(opts) -> exit code: `orch serve`.
function M.command(opts)
  local host, port = parse_listen(opts.listen or "127.0.0.1:8377")
  if host == nil then
    base.say(port)
    return 2
  end
  local token = opts.token or os.getenv("ORCH_SERVE_TOKEN")
  if token == "" then
    token = nil
  end
  if token and not token:match("^[%w%-%._~%+/=]+$") then
    base.say("--token: use letters, digits and - . _ ~ + / = only (it travels in a header and a cookie)")
    return 2
  end
  if not httpd.is_loopback(host) and not token and not opts.insecure then
    base.say(string.format("refusing to listen on %s without a token: anyone who can reach it could read "
      .. "every run; pass --token T (or $ORCH_SERVE_TOKEN), or --insecure if the network is yours alone", host))
    return 2
  end
  return base.with_store(opts, function(st)
    local secrets = M.secrets({ token })
    local ok, err = httpd.serve({
      host = host, port = port, token = token,
      handler = M.handler(st, secrets),
      ready = function(h, p)
        io.stdout:write(string.format("orch serve: http://%s:%d/ over %s%s (Ctrl-C stops)\n", h, p,
          mask(runs.db_path(opts)), token and ", token required" or ""))
        io.stdout:flush()
      end,
    })
    if not ok then
      base.say(err)
      return 1
    end
    return 0
  end, "r")
end

return M
