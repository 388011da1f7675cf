-- orch.batch_api: the HTTP calls of a provider's batch API (upload,
-- create, poll, list, download), made by the batcher's own task. 429, 5xx
-- and transport errors are retried with backoff, honouring Retry-After;
-- what the answer means is the provider's business (providers/*.lua,
-- their `batch` table).
local http = require("orch.http")
local json = require("orch.json")
local sched = require("orch.sched")
local provider_http = require("orch.providers.http")

local M = {}

--- new(p, cfg, built) -> api: base (the provider's base URL), headers (the
--- workflow's credentials and headers, as one synchronous request of this
--- run carries them) and request(method, path, body, content_type).
function M.new(p, cfg, built)
  local base = built.url:match("^(.*)/chat/completions$") or built.url:match("^(.*)/messages$") or built.url
  local headers = {}
  for k, v in pairs(built.headers) do
    if k ~= "content-type" then
      headers[k] = v
    end
  end
  local api = { base = base, headers = headers, p = p }
  local max_attempts, cap = cfg.max_attempts or 5, cfg.retry_cap or 30

  --- request(method, path, body, content_type) -> resp | nil, err: resp
  --- is the final answer (any status but 429/5xx, or the last of those);
  --- nil, err when the server could not be reached max_attempts times.
  --- path may be a full URL (Anthropic's results_url).
  function api.request(method, path, body, content_type)
    local h = {}
    for k, v in pairs(headers) do
      h[k] = v
    end
    if content_type then
      h["content-type"] = content_type
    end
    local url = path:find("^https?://") and path or (base .. path)
    local resp, err
    for attempt = 1, max_attempts do
      resp, err = http.request({ method = method, url = url, headers = h, body = body,
        timeout = cfg.timeout or 300, connect_timeout = cfg.connect_timeout or 10, max_body = 1024 * 1024 * 1024 })
      -- api.once (set by the batcher around a create call): a call lost on
      -- the way may still reach the provider, so it is not sent again
      local retry = resp == nil and not api.once or resp and (resp.status == 429 or resp.status >= 500)
      if not retry or attempt == max_attempts then
        break
      end
      local wait = resp and provider_http.retry_after(resp.headers["retry-after"])
      sched.sleep(math.min(math.max(wait or 0, math.random() * math.min(cap, 0.5 * 2 ^ (attempt - 1))), cap))
    end
    if resp == nil then
      return nil, string.format("%s %s: %s", method, url, tostring(err))
    end
    return resp
  end

  --- json(method, path, body_table_or_text) -> decoded 2xx reply | nil, err
  --- (err names the call, the HTTP status and the provider's message),
  --- definite (true when the server answered: the call did not happen).
  function api.json(method, path, body, content_type)
    if type(body) == "table" then
      body = json.encode(body)
    end
    local resp, err = api.request(method, path, body, content_type or (body and "application/json"))
    if resp == nil then
      return nil, err, false
    end
    local ok, d = pcall(json.decode, resp.body)
    if resp.status >= 200 and resp.status < 300 and ok and type(d) == "table" then
      return d
    end
    local msg = ok and type(d) == "table" and p.error_message and p.error_message(d) or resp.body:sub(1, 200)
    return nil, string.format("%s %s: HTTP %d: %s", method, path, resp.status, msg),
      resp.status >= 400 and resp.status < 500 and resp.status ~= 429
  end

  return api
end

-- What every provider's batch API does alike, on an api from new: its
-- `batch` table names the paths and reads the answers.

--- create(api, path, body, view) -> id, view(answer) | nil, err, definite:
--- the call that creates a batch.
function M.create(api, path, body, view)
  local b, err, definite = api.json("POST", path, body)
  if b == nil then
    return nil, "creating the batch: " .. err, definite
  end
  return b.id, view(b)
end

--- poll(api, path, view) -> view(answer) | nil, err
function M.poll(api, path, view)
  local b, err = api.json("GET", path)
  return b and view(b), err
end

--- read_results(api, path, result_of, out) -> out | nil, err: the JSONL
--- file at path (or a full URL), each line that names a custom_id turned
--- into a result by result_of and appended to out.
function M.read_results(api, path, result_of, out)
  local resp, err = api.request("GET", path)
  if resp == nil or resp.status ~= 200 then
    return nil, err or string.format("GET %s: HTTP %d", path, resp.status)
  end
  for line in resp.body:gmatch("[^\n]+") do
    local ok, x = pcall(json.decode, line)
    if ok and type(x) == "table" and type(x.custom_id) == "string" then
      out[#out + 1] = result_of(x)
    end
  end
  return out
end

--- each_listed(api, path, after_param, visit, done) -> the first answer of
--- visit(batch) that is not nil, else done once the list ends | nil, err:
--- the provider's list of batches (newest first), page by page, the next
--- page asked for with ?after_param=<the last id>.
function M.each_listed(api, path, after_param, visit, done)
  local after = nil
  while true do
    local page, err = api.json("GET", path .. "?limit=100" .. (after and ("&" .. after_param .. "=" .. after) or ""))
    if page == nil then
      return nil, err
    end
    for _, b in ipairs(type(page.data) == "table" and page.data or {}) do
      local answer = visit(b)
      if answer ~= nil then
        return answer
      end
      after = b.id
    end
    if not page.has_more or after == nil then
      return done
    end
  end
end

return M
