-- orch.providers.openai: any OpenAI-compatible chat completions server
-- (base_url + bearer key): OpenAI, vLLM, llama.cpp, Ollama, LiteLLM, ...
-- The exchange itself (retries, Retry-After, timeouts) is orch.providers.http.
local provider_http = require "orch.providers.http"

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
  return setmetatable(msgs, { __jsontype = "array" })
end

--- build(req, cfg) -> { url =, headers =, body = } (body: canonical JSON)
function M.build(req, cfg)
  local body = {
    model = req.model,
    messages = messages_of(req),
    temperature = req.temperature,
    max_tokens = req.max_tokens,
  }
  if req.json then
    body.response_format = { type = "json_object" }
  end
  local headers = { ["content-type"] = "application/json" }
  local key = provider_http.api_key(M, cfg)
  if key then
    headers.authorization = "Bearer " .. key
  end
  return provider_http.request(M, cfg, "https://api.openai.com/v1", "/chat/completions", headers, body)
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

--- error_message(decoded error body) -> the provider's own words
function M.error_message(d)
  if type(d.error) == "table" and d.error.message then
    return tostring(d.error.message)
  elseif type(d.error) == "string" then
    return d.error
  end
end

return M
