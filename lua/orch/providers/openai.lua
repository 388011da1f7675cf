-- orch.providers.openai: any OpenAI-compatible chat completions server
-- (base_url + bearer key): OpenAI, vLLM, llama.cpp, Ollama, LiteLLM, ...
-- The exchange itself (retries, Retry-After, timeouts) is orch.providers.http.
local provider_http = require("orch.providers.http")
local json = require("orch.json")

local M = {
  options = provider_http.options(),
  needs_key = true,
  env_key = "OPENAI_API_KEY", -- read when llm.api_key is not set
  env_base_url = "OPENAI_BASE_URL", -- read when llm.base_url is not set
}

local function messages_of(req)
  local msgs = {}
  if req.system then
    msgs[1] = { role = "system", content = req.system }
  end
  if req.messages then
    for _, m in ipairs(req.messages) do
      msgs[#msgs + 1] = { role = m.role, content = m.content }
    end
  else
    msgs[#msgs + 1] = { role = "user", content = req.prompt }
  end
  return setmetatable(msgs, json.array_mt)
end

local function headers_of(_, key)
  local headers = { ["content-type"] = "application/json" }
  if key then
    headers.authorization = "Bearer " .. key
  end
  return headers
end

local encode, quote = json.encode, json.quote

-- The body as a table, for json.encode.
local function body_of(req)
  local body = {
    model = req.model,
    messages = messages_of(req),
    temperature = req.temperature,
    max_tokens = req.max_tokens,
  }
  if req.json then
    body.response_format = { type = "json_object" }
  end
  return body
end

-- The model's JSON text, kept for the next request (most use one model).
local last_model, last_model_json

--- body(req) -> the request's body, canonical JSON: the journal key's
--- bytes and what build sends. orch.llm asks for it alone first, so a call
--- the journal answers makes no request table and reads no endpoint.
function M.body(req)
  -- The common request, a prompt (and a system text) as strings, is
  -- written as json.encode would write body_of's table: the same bytes
  -- (they are the journal key), without the four tables a call would make
  -- and walk. The members in the encoder's order (keys sorted bytewise:
  -- max_tokens, messages, model, response_format, temperature; content
  -- before role), each value through json.quote. Any other request, or a
  -- value quote refuses, is encoded from its table (which raises with the
  -- value's path).
  local prompt, system, model, max_tokens, temperature = req.prompt, req.system, req.model, req.max_tokens,
    req.temperature
  local body
  if not req.messages and type(prompt) == "string" and type(model) == "string" then
    if model ~= last_model then
      last_model, last_model_json = model, quote(model)
    end
    local p, s = quote(prompt), system == nil or quote(system)
    local m, t = max_tokens == nil or quote(max_tokens), temperature == nil or quote(temperature)
    if p and s and m and t and last_model_json then
      body = (m == true and '{"messages":[' or '{"max_tokens":' .. m .. ',"messages":[')
        .. (s == true and "" or '{"content":' .. s .. ',"role":"system"},')
        .. '{"content":' .. p .. ',"role":"user"}],"model":' .. last_model_json
        .. (req.json and ',"response_format":{"type":"json_object"}' or "")
        .. (t == true and "}" or ',"temperature":' .. t .. "}")
    end
  end
  return body or encode(body_of(req))
end

--- text_body(prompt, model) -> body { prompt = prompt, model = model,
--- json = false }: a prompt stage's request, which orch.llm hashes for the
--- journal before it makes a request table.
M.text_body = provider_http.text_body('{"messages":[{"content":', M.body)

--- build(req, cfg, body) -> { url =, headers =, header_set =, body = }
--- (body: body(req)'s, or the one given, made by body(req) already;
--- headers and header_set shared by cfg's requests: read only)
function M.build(req, cfg, body)
  local e = provider_http.endpoint(M, cfg, "https://api.openai.com/v1", "/chat/completions", headers_of)
  return { url = e.url, headers = e.headers, header_set = e.header_set, body = body or M.body(req) }
end

--- parse(decoded body) -> text, { input =, output = } (nil fields when the
--- server sent no usage: orch.llm then estimates them) | nil, reason
function M.parse(d)
  local choice = type(d.choices) == "table" and d.choices[1]
  local msg = type(choice) == "table" and choice.message
  if type(msg) ~= "table" or type(msg.content) ~= "string" then
    return nil, "the reply has no choices[1].message.content"
  end
  local u = type(d.usage) == "table" and d.usage or {} -- some servers and proxies send none
  return msg.content, { input = tonumber(u.prompt_tokens), output = tonumber(u.completion_tokens) }
end

-- the reply's three fields, the paths read once
local pick_reply = json.picker({ "choices", 1, "message", "content" }, { "usage", "prompt_tokens" },
  { "usage", "completion_tokens" })

-- a usual reply read in C by the exchange, parse_body reading the others
M.reply_pick = pick_reply

--- parse_body(text) -> what parse(json.decode(text)) gives, or false when
--- the text is not a JSON object or array: the reply read for its three
--- fields, without building its tables (a fifth of the decode's work).
function M.parse_body(text)
  local ok, container, content, tin, tout = pcall(pick_reply, text)
  if not (ok and container) then
    return false
  end
  if type(content) ~= "string" then
    return nil, "the reply has no choices[1].message.content"
  end
  return content, { input = tonumber(tin), output = tonumber(tout) }
end

--- error_message(decoded error body) -> the provider's own words
function M.error_message(d)
  if type(d.error) == "table" and d.error.message then
    return tostring(d.error.message)
  elseif type(d.error) == "string" then
    return d.error
  end
end

-- The Batch API (used when llm.batch is set; see orch.batch): a JSONL file
-- of requests uploaded to /files, a batch created from it, polled, and its
-- output and error files downloaded. api is orch.batch_api's.
local batch_api = require("orch.batch_api")

M.batch = { max_requests = 50000, max_bytes = 200 * 1024 * 1024 }

--- batch.line(custom_id, built) -> the request's line of the input file
function M.batch.line(custom_id, built)
  return '{"custom_id":' .. json.encode(custom_id) .. ',"method":"POST","url":"/v1/chat/completions","body":'
    .. built.body .. "}\n"
end

local BOUNDARY = "orch-batch-7f3c9a61e2b84d05"

--- batch.submit(api, lines, meta, creating) -> id, view | nil, err, definite
--- creating(file_id) is called once the file is uploaded, before the
--- create call (the batcher records that the batch may exist from then on).
function M.batch.submit(api, lines, meta, creating)
  local body = table.concat({ "--", BOUNDARY, '\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--',
    BOUNDARY, '\r\nContent-Disposition: form-data; name="file"; filename="orch-batch.jsonl"\r\n',
    "Content-Type: application/jsonl\r\n\r\n", table.concat(lines), "\r\n--", BOUNDARY, "--\r\n" })
  local f, err = api.json("POST", "/files", body, "multipart/form-data; boundary=" .. BOUNDARY)
  if f == nil then
    return nil, "uploading the batch file: " .. err, true -- an upload alone submits nothing
  end
  local ok, cerr = creating(f.id)
  if not ok then
    return nil, cerr, true
  end
  return batch_api.create(api, "/batches", { input_file_id = f.id, endpoint = "/v1/chat/completions",
    completion_window = "24h", metadata = meta }, M.batch.view)
end

local ENDED = { completed = true, expired = true, cancelled = true, failed = true }

--- batch.view(decoded batch) -> { id, status, ended, counts, expected_ms, raw }
function M.batch.view(b)
  local c = type(b.request_counts) == "table" and b.request_counts or {}
  return { id = b.id, status = tostring(b.status), ended = ENDED[b.status] or false, raw = b,
    counts = { total = c.total, completed = c.completed, failed = c.failed },
    expected_ms = tonumber(b.expires_at) and b.expires_at * 1000 or nil }
end

function M.batch.poll(api, id)
  return batch_api.poll(api, "/batches/" .. id, M.batch.view)
end

-- One line of an output or error file -> a result for the batcher.
local function result_of(x)
  local resp = type(x.response) == "table" and x.response or nil
  if resp and resp.status_code == 200 and type(resp.body) == "table" then
    local text, usage = M.parse(resp.body)
    if text then
      return { custom_id = x.custom_id, text = text, usage = usage }
    end
    return { custom_id = x.custom_id, err = usage, resend = true }
  end
  local e = type(x.error) == "table" and x.error or {}
  local msg = e.message or (resp and type(resp.body) == "table" and M.error_message(resp.body))
    or "no result"
  local code = e.code or (resp and ("HTTP " .. tostring(resp.status_code)))
  local final = resp and resp.status_code and resp.status_code >= 400 and resp.status_code < 500
    and resp.status_code ~= 429 and resp.status_code ~= 408
  return { custom_id = x.custom_id, err = string.format("%s: %s", tostring(code), tostring(msg)), resend = not final }
end

--- batch.results(api, view) -> { result... } | nil, err; a result is
--- { custom_id, text, usage } or { custom_id, err, resend }.
function M.batch.results(api, view)
  local out = {}
  for _, fid in ipairs({ view.raw.output_file_id or false, view.raw.error_file_id or false }) do
    if fid and fid ~= json.null then
      local _, err = batch_api.read_results(api, "/files/" .. fid .. "/content", result_of, out)
      if err then
        return nil, err
      end
    end
  end
  return out
end

--- batch.find(api, meta, since_ms) -> id | false (no such batch) | nil, err:
--- the batch whose metadata is meta, among those created since since_ms.
function M.batch.find(api, meta, since_ms)
  return batch_api.each_listed(api, "/batches", "after", function(b)
    local m = type(b.metadata) == "table" and b.metadata or {}
    if m.orch_run == meta.orch_run and m.orch_batch == meta.orch_batch then
      return b.id
    end
    if tonumber(b.created_at) and b.created_at * 1000 < since_ms - 60000 then
      return false -- older than the create call: listed newest first
    end
  end, false)
end

return M
