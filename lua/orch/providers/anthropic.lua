-- orch.providers.anthropic: the Anthropic messages API (x-api-key,
-- anthropic-version). The exchange itself is orch.providers.http.
local provider_http = require "orch.providers.http"

local M = {
  options = provider_http.options({ version = "string" }),
  needs_key = true,
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
  if cfg.api_key then
    headers["x-api-key"] = cfg.api_key
  end
  return provider_http.request(cfg, "https://api.anthropic.com/v1", "/messages", headers, body)
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
  return table.concat(parts), { input = tonumber(u.input_tokens) or 0, output = tonumber(u.output_tokens) or 0 }
end

function M.error_message(d)
  if type(d.error) == "table" and d.error.message then
    return tostring(d.error.message)
  end
end

return M
