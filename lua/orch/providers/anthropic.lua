-- orch.providers.anthropic: the Anthropic messages API (x-api-key,
-- anthropic-version). The exchange itself is orch.providers.http.
local provider_http = require "orch.providers.http"

local M = {
  options = provider_http.options({ version = "string" }),
  needs_key = true,
  env_key = "ANTHROPIC_API_KEY", -- read when llm.api_key is not set
  env_base_url = "ANTHROPIC_BASE_URL", -- read when llm.base_url is not set
}

function M.build(req, cfg)
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
    messages = setmetatable(msgs, { __jsontype = "array" }),
    max_tokens = req.max_tokens or 1024,
    temperature = req.temperature,
  }
  local headers = {
    ["content-type"] = "application/json",
    ["anthropic-version"] = cfg.version or "2023-06-01",
  }
  local key = provider_http.api_key(M, cfg)
  if key then
    headers["x-api-key"] = key
  end
  return provider_http.request(M, cfg, "https://api.anthropic.com/v1", "/messages", headers, body)
end

function M.parse(d)
  if type(d.content) ~= "table" then
    return nil, "the reply has no content"
  end
  local parts = {}
  for _, c in ipairs(d.content) do
    if type(c) == "table" and c.type == "text" and type(c.text) == "string" then
      parts[#parts + 1] = c.text
    end
  end
  if #parts == 0 then
    return nil, "the reply has no text content"
  end
  local u = type(d.usage) == "table" and d.usage or {}
  return table.concat(parts), { input = tonumber(u.input_tokens), output = tonumber(u.output_tokens) }
end

function M.error_message(d)
  if type(d.error) == "table" and d.error.message then
    return tostring(d.error.message)
  end
end

return M
