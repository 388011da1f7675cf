-- orch.providers.http: one LLM exchange over HTTP with retries.
--
-- 429, 5xx, transport errors (refused, reset, timeout) and replies that
-- are not the JSON the provider promised are retried with exponential
-- backoff and full jitter, honouring Retry-After (seconds or an HTTP
-- date) up to retry_cap seconds, up to max_attempts. A Retry-After longer
-- than retry_cap ends the exchange with the server's value in the message.
-- Other 4xx are final and carry the provider's own message. Only the
-- calling row's coroutine waits.
local http = require("orch.http")
local json = require("orch.json")

local M = {}

--- The llm = {...} options every HTTP provider takes.
function M.options(extra)
  local o = {
    base_url = "string", api_key = "string", headers = "table", -- where and who
    timeout = "number", connect_timeout = "number", -- seconds
    max_attempts = "integer", retry_base = "number", retry_cap = "number", -- retries
    rpm = "number", tpm = "number", adaptive = "boolean", -- rate
    shared_rate = "string", -- orch worker: "bucket" (the store's) or "split" among workers
  }
  for k, v in pairs(extra or {}) do
    o[k] = v
  end
  return o
end

local function env(name)
  local v = name and os.getenv(name)
  if v == nil or v == "" then
    return nil
  end
  return v
end

--- api_key(p, cfg) -> the workflow's llm.api_key, else the provider's
--- conventional variable (p.env_key, e.g. OPENAI_API_KEY), else nil.
function M.api_key(p, cfg)
  return cfg.api_key or env(p.env_key)
end

--- base_url(p, cfg) -> llm.base_url, else p.env_base_url's variable (e.g.
--- OPENAI_BASE_URL), else nil (the provider's public URL).
function M.base_url(p, cfg)
  return cfg.base_url or env(p.env_base_url)
end

--- request(p, cfg, default_base, path, headers, body) -> the { url,
--- headers, body } a provider's build returns: the base URL (see base_url,
--- or the default) + path, the provider's headers with the workflow's
--- llm.headers over them, and the body as canonical JSON (the journal key
--- hashes it).
function M.request(p, cfg, default_base, path, headers, body)
  for k, v in pairs(cfg.headers or {}) do
    headers[k] = v
  end
  local base = (M.base_url(p, cfg) or default_base):gsub("/+$", "")
  return { url = base .. path, headers = headers, body = json.encode(body) }
end

--- text_body(pre, body) -> text_body(prompt, model), for a provider whose
--- body(req) of { prompt = prompt, model = model, json = false } is pre,
--- the prompt quoted, ',"role":"user"}],"model":', the model quoted and
--- "}": that text, written in one string (the part after the prompt kept
--- for the last model: most runs use one), or body's when a value cannot
--- be quoted (body raises with its path).
function M.text_body(pre, body)
  local quote, last_model, post = json.quote, nil, nil
  return function(prompt, model)
    if model ~= last_model then
      local m = type(model) == "string" and quote(model)
      if not m then
        return body({ prompt = prompt, model = model, json = false })
      end
      last_model, post = model, ',"role":"user"}],"model":' .. m .. "}"
    end
    return quote(prompt, pre, post) or body({ prompt = prompt, model = model, json = false })
  end
end

-- What every request of one llm table shares, built once: its URL, its
-- headers (a table, and the header set orch.http.post sends as built).
-- Found by the llm table, and rebuilt when the key or base URL in force
-- (read from the environment when the table has none) or its headers
-- table changes.
local endpoints = setmetatable({}, { __mode = "k" })

--- endpoint(p, cfg, default_base, path, headers_of) -> { url, headers,
--- header_set }: as request's, for p's requests of cfg; headers_of(cfg,
--- key) gives the provider's own headers (a new table).
function M.endpoint(p, cfg, default_base, path, headers_of)
  -- api_key's and base_url's reading, without their two calls a request
  local key, base = cfg.api_key or env(p.env_key), cfg.base_url or env(p.env_base_url) or default_base
  local e = endpoints[cfg]
  if e and e.key == key and e.base == base and e.p == p and e.path == path and e.extra == cfg.headers then
    return e
  end
  local headers = headers_of(cfg, key)
  for k, v in pairs(cfg.headers or {}) do
    headers[k] = v
  end
  e = { key = key, base = base, p = p, path = path, extra = cfg.headers, url = base:gsub("/+$", "") .. path,
    headers = headers, header_set = http.headers(headers) }
  endpoints[cfg] = e
  return e
end

local months = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10,
  Nov = 11, Dec = 12 }

--- Seconds to wait from a Retry-After value ("3", "1.5" or an HTTP date).
function M.retry_after(v)
  if v == nil then
    return nil
  end
  local n = tonumber(v)
  if n then
    return math.max(n, 0)
  end
  local d, mon, y, H, Mi, S = v:match("%a+, (%d+) (%a+) (%d+) (%d+):(%d+):(%d+) GMT")
  if d and months[mon] then
    local t = os.time({ year = tonumber(y), month = months[mon], day = tonumber(d), hour = tonumber(H),
      min = tonumber(Mi), sec = tonumber(S), isdst = false })
    -- os.time reads the table as local time; correct it to UTC
    local now = os.time()
    local utc_offset = os.difftime(now, os.time(os.date("!*t", now)))
    return math.max(t + utc_offset - now, 0)
  end
  return nil
end

local function fmt_seconds(v)
  return v == math.floor(v) and string.format("%d", v) or string.format("%g", v)
end

local function decode(body)
  local ok, d = pcall(json.decode, body)
  if ok and type(d) == "table" then
    return d
  end
end

-- A 200's body -> true, text, usage | true, nil, reason | false (not a
-- JSON object or array). A provider's parse_body reads only the fields it
-- needs; one without it gets the whole body decoded for its parse.
local function reply_of(p, body)
  if p.parse_body then
    local text, usage = p.parse_body(body)
    return text ~= false, text, usage
  end
  local d = decode(body)
  if d == nil then
    return false
  end
  return true, p.parse(d)
end

-- One attempt: -> status, body, time, retry_after | nil, transport error.
-- Offline (orch estimate, --dry-run) post sends nothing and request gives
-- the workflow's stand-in reply; its table comes back as retry_after, for
-- its headers to be read where a reply's are. Timeouts below zero go to
-- request too, which raises as it always did.
local NO_HEADERS = {}

local function post(r, cfg, pick)
  local timeout, ctimeout = cfg.timeout or 120, cfg.connect_timeout or 10
  if timeout >= 0 and ctimeout >= 0 then -- request refuses the others, with its own message
    -- headers that are not a table were never sent (request skips them)
    local status, body, time, retry_after, tin, tout = http.post(r.url, r.header_set
      or type(r.headers) == "table" and r.headers or NO_HEADERS, r.body, timeout, ctimeout, pick)
    if status ~= false then
      return status, body, time, retry_after, tin, tout
    end
  end
  local headers = r.headers
  if type(headers) == "table" then
    headers = {}
    for k, v in pairs(r.headers) do
      headers[k] = v -- the stand-in may change its copy, not the endpoint's
    end
  end
  local resp, err = http.request({ method = "POST", url = r.url, headers = headers, body = r.body, timeout = timeout,
    connect_timeout = ctimeout })
  if resp == nil then
    return nil, err
  end
  return resp.status, resp.body, resp.time, resp
end

--- exchange(p, r, cfg, ctx) -> text, usage, attempts | text, nil, attempts,
--- tokens in, tokens out | nil, err, attempts
--- p: a provider with parse (or parse_body) / error_message, and
--- optionally reply_pick: a json.picker of its reply's text, tokens in and
--- tokens out, which reads a usual reply in C (its tokens then come as
--- whole numbers, without a usage table; any other reply is read by
--- parse_body or parse); r: the request p.build made.
function M.exchange(p, r, cfg, ctx)
  local max_attempts = cfg.max_attempts or 5
  local base, cap = cfg.retry_base or 0.5, cfg.retry_cap or 30
  local last, attempts = nil, 0
  for attempt = 1, max_attempts do
    attempts = attempt
    local run = ctx._run or {}
    local gate = run.gate
    if gate then
      gate.enter()
    end
    local status, body, time, retry_after, tin, tout = post(r, cfg, p.reply_pick)
    if gate then
      local overload = status and (status == 429 or status == 503)
      gate.leave(overload and "overload" or (status and status == 200) and "ok" or "error", status and time)
    end
    local retry, wait
    if status == nil then
      last, retry = body, true
    elseif body == true then -- a 200 reply_pick read: the text, then its tokens
      return retry_after, nil, attempt, tin, tout
    elseif status == 200 then
      local json_ok, text, usage = reply_of(p, body)
      if not json_ok then
        last, retry = "the reply is not valid JSON (" .. #body .. " bytes)", true
      elseif text ~= nil then
        return text, usage, attempt
      else
        last, retry = usage, true
      end
    else
      local d = decode(body)
      local msg = d and p.error_message(d) or body:sub(1, 200)
      last = string.format("HTTP %d: %s", status, msg)
      retry = status == 429 or status >= 500 or status == 408
      if type(retry_after) == "table" then -- a stand-in reply (offline): its headers, as request gave them
        retry_after = retry_after.headers["retry-after"]
      end
      wait = M.retry_after(retry_after)
    end
    if not retry or attempt == max_attempts then
      break
    end
    -- a server's Retry-After is obeyed up to retry_cap (and never past the
    -- request's own timeout): a longer wait fails the attempt for good
    local limit = math.min(cap, cfg.timeout or 120)
    if wait and wait > limit then
      last = string.format("%s (the server asks to retry after %s s, more than the %s s orch waits; raise llm.retry_cap "
        .. "to wait longer)", last, fmt_seconds(wait), fmt_seconds(limit))
      break
    end
    local backoff = math.random() * math.min(cap, base * 2 ^ (attempt - 1))
    ctx:sleep(math.max(wait or 0, backoff))
    if ctx._run and ctx._run.note_retry then
      ctx._run.note_retry(last)
    end
  end
  return nil, last, attempts
end

return M
