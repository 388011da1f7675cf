-- orch.providers.anthropic: the Anthropic messages API (x-api-key,
-- anthropic-version). The exchange itself is orch.providers.http.
local provider_http = require("orch.providers.http")
local json = require("orch.json")

local M = {
  options = provider_http.options({ version = "string" }),
  needs_key = true,
  env_key = "ANTHROPIC_API_KEY", -- read when llm.api_key is not set
  env_base_url = "ANTHROPIC_BASE_URL", -- read when llm.base_url is not set
}

local function headers_of(cfg, key)
  local headers = {
    ["content-type"] = "application/json",
    ["anthropic-version"] = cfg.version or "2023-06-01",
  }
  if key then
    headers["x-api-key"] = key
  end
  return headers
end

--- body(req) -> the request's body, canonical JSON (the journal key's
--- bytes): asked for alone while the journal may answer (see orch.llm).
function M.body(req)
  local msgs = {}
  if req.messages then
    for _, m in ipairs(req.messages) do
      if m.role ~= "system" then
        msgs[#msgs + 1] = { role = m.role, content = m.content }
      end
    end
  else
    msgs[1] = { role = "user", content = req.prompt }
  end
  local system = req.system
  if req.json then
    system = (system and (system .. "\n") or "") .. "Reply with one JSON object and nothing else."
  end
  local body = {
    model = req.model,
    system = system,
    messages = setmetatable(msgs, json.array_mt),
    max_tokens = req.max_tokens or 1024,
    temperature = req.temperature,
  }
  return json.encode(body)
end

--- text_body(prompt, model) -> body { prompt = prompt, model = model,
--- json = false } (see openai's).
M.text_body = provider_http.text_body('{"max_tokens":1024,"messages":[{"content":', M.body)

--- build(req, cfg, body) -> { url =, headers =, header_set =, body = }:
--- body(req)'s, or the one given (made by body(req) already).
function M.build(req, cfg, body)
  local e = provider_http.endpoint(M, cfg, "https://api.anthropic.com/v1", "/messages", headers_of)
  return { url = e.url, headers = e.headers, header_set = e.header_set, body = body or M.body(req) }
end

-- The reply's text and usage from its content and usage fields.
local function reply_of(content, tin, tout)
  if type(content) ~= "table" then
    return nil, "the reply has no content"
  end
  local parts = {}
  for _, c in ipairs(content) do
    if type(c) == "table" and c.type == "text" and type(c.text) == "string" then
      parts[#parts + 1] = c.text
    end
  end
  if #parts == 0 then
    return nil, "the reply has no text content"
  end
  return table.concat(parts), { input = tonumber(tin), output = tonumber(tout) }
end

function M.parse(d)
  local u = type(d.usage) == "table" and d.usage or {}
  return reply_of(d.content, u.input_tokens, u.output_tokens)
end

-- the reply's three fields, the paths read once
local pick_reply = json.picker({ "content" }, { "usage", "input_tokens" }, { "usage", "output_tokens" })

--- parse_body(text) -> what parse(json.decode(text)) gives, or false when
--- the text is not a JSON object or array; builds only the content list.
function M.parse_body(text)
  local ok, container, content, tin, tout = pcall(pick_reply, text)
  if not (ok and container) then
    return false
  end
  return reply_of(content, tin, tout)
end

function M.error_message(d)
  if type(d.error) == "table" and d.error.message then
    return tostring(d.error.message)
  end
end

-- Message Batches (used when llm.batch is set; see orch.batch): one POST
-- with every request, polled until processing_status is "ended", results
-- read from results_url. Batches carry no metadata: a batch whose create
-- call's answer was lost is found by waiting for every batch created
-- since (batch.since) and claiming results by custom_id.
local batch_api = require("orch.batch_api")

M.batch = { max_requests = 100000, max_bytes = 256 * 1024 * 1024 }

function M.batch.line(custom_id, built)
  return '{"custom_id":' .. json.encode(custom_id) .. ',"params":' .. built.body .. "}"
end

-- Days from 1970-01-01 to the civil date y-m-d (proleptic Gregorian): no
-- os.time, whose local time and DST would move a UTC instant by an hour.
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
end

-- "2026-11-30T00:09:08.653Z" -> milliseconds since the epoch (UTC)
local function ms_of(t)
  local y, mo, d, H, Mi, S, frac = tostring(t):match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.?(%d*)Z$")
  if not y then
    return nil
  end
  local secs = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400 + tonumber(H) * 3600
    + tonumber(Mi) * 60 + tonumber(S)
  return secs * 1000 + (frac ~= "" and math.floor(tonumber("0." .. frac) * 1000 + 0.5) or 0)
end
M.batch.ms_of = ms_of

function M.batch.view(b)
  local c = type(b.request_counts) == "table" and b.request_counts or {}
  return { id = b.id, status = tostring(b.processing_status), ended = b.processing_status == "ended", raw = b,
    counts = { processing = c.processing, succeeded = c.succeeded, errored = c.errored, expired = c.expired,
      canceled = c.canceled }, expected_ms = ms_of(b.expires_at), created_ms = ms_of(b.created_at) }
end

function M.batch.submit(api, lines, _, creating)
  local ok, cerr = creating(nil)
  if not ok then
    return nil, cerr, true
  end
  return batch_api.create(api, "/messages/batches", '{"requests":[' .. table.concat(lines, ",") .. "]}", M.batch.view)
end

function M.batch.poll(api, id)
  return batch_api.poll(api, "/messages/batches/" .. id, M.batch.view)
end

local function result_of(x)
  local r = type(x.result) == "table" and x.result or {}
  if r.type == "succeeded" and type(r.message) == "table" then
    local text, usage = M.parse(r.message)
    if text then
      return { custom_id = x.custom_id, text = text, usage = usage, model = r.message.model }
    end
    return { custom_id = x.custom_id, err = usage, resend = true }
  end
  local e = type(r.error) == "table" and (type(r.error.error) == "table" and r.error.error or r.error) or {}
  local final = e.type == "invalid_request_error" -- the request itself is wrong: sending it again cannot help
  return { custom_id = x.custom_id, err = string.format("%s%s", tostring(r.type or "no result"),
    e.message and (": " .. tostring(e.message)) or ""), resend = not final }
end

function M.batch.results(api, view)
  local url = view.raw.results_url
  if type(url) ~= "string" then
    return nil, "batch " .. tostring(view.id) .. " has ended without a results_url"
  end
  return batch_api.read_results(api, url, result_of, {})
end

--- batch.since(api, since_ms) -> views of the batches created since
--- since_ms (less a minute for clocks apart) | nil, err
function M.batch.since(api, since_ms)
  local views = {}
  return batch_api.each_listed(api, "/messages/batches", "after_id", function(b)
    local v = M.batch.view(b)
    if v.created_ms and v.created_ms < since_ms - 60000 then
      return views -- listed newest first
    end
    views[#views + 1] = v
  end, views)
end

return M
