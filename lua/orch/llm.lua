-- orch.llm: ctx:llm{...} — request normalisation, provider dispatch, JSON
-- replies, usage and cost. Providers live in orch.providers.* and register
-- here; a workflow can register its own with orch.llm.register(name, p).
--
-- A provider is a table { options = { key = "type" }, call = function(req, cfg, ctx) }
-- whose call returns text, { input = tokens, output = tokens } or nil, err.
-- It may suspend (ctx:sleep, orch.http) but only its own row's coroutine.
local check = require "orch.check"
local pricing = require "orch.pricing"
local sched = require "orch.sched"
local cjson = require "cjson"

local M = { providers = {} }

local common_options = {
  provider = "string",
  model = "string",
  concurrency = "integer",
  temperature = "number",
  max_tokens = "integer",
  system = "string",
  prices = "table",
}

function M.register(name, provider)
  check.arg_type("orch.llm.register", 1, name, "string")
  check.arg_type("orch.llm.register", 2, provider, "table")
  if type(provider.call) ~= "function" then
    check.fail("orch.llm.register: provider '%s' needs a call(req, cfg, ctx) function", name)
  end
  provider.name = name
  M.providers[name] = provider
end

local function provider_names()
  local names = {}
  for n in pairs(M.providers) do
    names[#names + 1] = n
  end
  table.sort(names)
  return names
end

--- Validates a workflow's llm = {...} table (raises a WorkflowError).
function M.check_config(cfg)
  if type(cfg.provider) ~= "string" then
    check.fail_key("llm", "orch.workflow: llm.provider is required (one of: %s)", table.concat(provider_names(), ", "))
  end
  local p = M.providers[cfg.provider]
  if p == nil then
    local hint = check.suggest(cfg.provider, provider_names())
    check.fail_key("provider", "orch.workflow: llm.provider '%s' is not available%s; available: %s", cfg.provider,
      hint and (" (did you mean '" .. hint .. "'?)") or "", table.concat(provider_names(), ", "))
  end
  local allowed = {}
  for k, v in pairs(common_options) do
    allowed[k] = v
  end
  for k, v in pairs(p.options or {}) do
    allowed[k] = v
  end
  check.known_keys("orch.workflow: llm", cfg, allowed)
end

local request_keys = {
  prompt = "string",
  messages = "table",
  system = "string",
  model = "string",
  temperature = "number",
  max_tokens = "integer",
  json = "boolean",
  schema = "table",
}

-- Strips ```json fences and surrounding prose a model may add.
local function json_body(text)
  local fenced = text:match("```[%w]*%s*\n(.-)\n?```")
  if fenced then
    return fenced
  end
  return text:match("^%s*(.-)%s*$")
end

-- A small JSON-Schema subset: type, properties, required, enum, items.
local function schema_error(schema, v, path)
  local t = schema.type
  local lt = type(v)
  if lt == "table" then
    -- decoded JSON: an array has [1] (or is empty), an object has no [1]
    local empty = next(v) == nil
    lt = (v[1] ~= nil and "array") or (empty and t == "array" and "array") or "object"
  end
  if t == "object" and lt ~= "object" or t == "array" and lt ~= "array" or t == "string" and lt ~= "string"
    or (t == "number" and lt ~= "number") or (t == "boolean" and lt ~= "boolean")
    or (t == "integer" and math.type(v) ~= "integer" and not (lt == "number" and v == math.floor(v))) then
    return string.format("%s: expected %s, got %s", path, t, lt)
  end
  if schema.enum then
    local found = false
    for _, e in ipairs(schema.enum) do
      if e == v then
        found = true
      end
    end
    if not found then
      return string.format("%s: %s is not one of the allowed values", path, tostring(v))
    end
  end
  if lt == "object" or lt == "array" then
    for _, req in ipairs(schema.required or {}) do
      if v[req] == nil then
        return string.format("%s: missing required field '%s'", path, req)
      end
    end
    for k, sub in pairs(schema.properties or {}) do
      if v[k] ~= nil and v[k] ~= cjson.null then
        local err = schema_error(sub, v[k], path .. "." .. k)
        if err then
          return err
        end
      end
    end
    if schema.items then
      for i, item in ipairs(v) do
        local err = schema_error(schema.items, item, path .. "[" .. i .. "]")
        if err then
          return err
        end
      end
    end
  end
  return nil
end
M.schema_error = schema_error

--- Decodes a JSON reply and checks it against schema; value or nil, reason.
function M.decode_reply(text, schema)
  local ok, v = pcall(cjson.decode, json_body(text))
  if not ok then
    return nil, "the model's reply is not valid JSON (" .. tostring(v):gsub("^.-:%d+: ", "") .. ")"
  end
  if schema then
    local err = schema_error(schema, v, "$")
    if err then
      return nil, "the model's reply does not match the schema: " .. err
    end
  end
  return v
end

--- call(ctx, cfg, req) -> value, info | nil, err
--- value is the reply text, or the decoded table when req.json or req.schema.
function M.call(ctx, cfg, req)
  if cfg == nil then
    error("ctx:llm: the workflow has no llm = { provider = ... } table", 2)
  end
  if type(req) == "string" then
    req = { prompt = req }
  elseif type(req) ~= "table" then
    error("ctx:llm expects a table {prompt = ...} or a string, got " .. type(req), 2)
  end
  for k, v in pairs(req) do
    local want = request_keys[k]
    if want == nil then
      error(string.format("ctx:llm: unknown key '%s'", tostring(k)), 2)
    elseif type(v) ~= want and not (want == "integer" and math.type(v) == "integer") then
      error(string.format("ctx:llm: '%s' must be a %s, got %s", k, want, type(v)), 2)
    end
  end
  if req.prompt == nil and req.messages == nil then
    error("ctx:llm: give a prompt or messages", 2)
  end
  local p = M.providers[cfg.provider]
  local r = {
    prompt = req.prompt,
    messages = req.messages,
    system = req.system or cfg.system,
    model = req.model or cfg.model or cfg.provider,
    temperature = req.temperature or cfg.temperature,
    max_tokens = req.max_tokens or cfg.max_tokens,
    json = req.json or req.schema ~= nil,
    schema = req.schema,
  }
  local t0 = sched.now()
  local text, usage = p.call(r, cfg, ctx)
  if text == nil then
    return nil, usage
  end
  local tin, tout = usage and usage.input or 0, usage and usage.output or 0
  local info = {
    text = text,
    model = r.model,
    provider = cfg.provider,
    tokens_in = tin,
    tokens_out = tout,
    tokens = tin + tout,
    cost = pricing.cost(r.model, tin, tout, cfg.prices),
    latency = sched.now() - t0,
    attempts = 1,
    cached = false,
  }
  if ctx.account then
    ctx:account(info)
  end
  if r.json then
    local v, err = M.decode_reply(text, r.schema)
    if v == nil then
      return nil, err
    end
    return v, info
  end
  return text, info
end

M.register("mock", require "orch.providers.mock")

return M
