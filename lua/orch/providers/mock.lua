-- orch.providers.mock: an offline, deterministic LLM for demos and tests.
--
-- The reply is a function of the model and the prompt only: a label picked
-- from a list the prompt offers ("one of: a, b, c"), judged by the words of
-- the text for sentiment-like labels; a JSON object shaped by the schema
-- when JSON is asked for; otherwise a short digest of the prompt. Usage is
-- about four characters a token. Each call waits latency_ms (+ a
-- deterministic jitter of up to jitter_ms) on the calling row only.
local hash = require("orch.hash")
local json = require("orch.json")

local M = {
  options = { latency_ms = "number", jitter_ms = "number" },
}

-- the words a review's sentiment is scored by, as sets
local function wordset(words)
  local s = {}
  for w in words:gmatch("%a+") do
    s[w] = true
  end
  return s
end
local POS = wordset [[
  love loved great excellent perfect amazing best happy comfortable recommend
  fantastic sturdy easy solid worth delighted reliable impressed superb fast
  good works well clean nice quiet sharp dry favorite favourite glad]]
local NEG = wordset [[
  broke broken terrible awful worst disappointed disappointing poor waste return
  returned refund cheap leaked leaks stopped useless flimsy died slow never
  barely money cracked failed annoying wobbly rotted soggy unfortunately problem]]

local function sentiment(text)
  local score, pos, neg = 0, 0, 0
  for w in text:lower():gmatch("%a+") do
    if POS[w] then
      pos = pos + 1
    elseif NEG[w] then
      neg = neg + 1
    end
  end
  score = pos - neg
  return score, pos, neg
end

-- Labels offered by the prompt: "one of: a, b or c", "one of [a|b|c]".
local function labels_in(prompt)
  local list = prompt:match("%f[%a][Oo]ne of[%s:]*([^%.\n%?:]+)")
  if list == nil then
    return nil
  end
  local labels = {}
  list = list:gsub("%s+or%s+", ","):gsub("[|/]", ",")
  for item in list:gmatch("[^,]+") do
    local l = item:match("^[%s\"'`%[%(]*(.-)[%s\"'`%]%)]*$")
    if l ~= "" and #l <= 40 then
      labels[#labels + 1] = l
    end
  end
  return #labels >= 2 and labels or nil
end

-- The text a label is judged on: what follows the last "Label:" of the prompt.
local function subject(prompt)
  local last
  for rest in prompt:gmatch("%f[%w][%w ]+:%s+()") do
    last = rest
  end
  return last and prompt:sub(last) or prompt
end

local function pick(labels, prompt, h)
  local has = {}
  for _, l in ipairs(labels) do
    has[l:lower()] = l
  end
  if has.positive and has.negative then
    local score, pos, neg = sentiment(subject(prompt))
    if pos > 0 and neg > 0 and has.mixed then
      return has.mixed
    elseif score > 0 then
      return has.positive
    elseif score < 0 then
      return has.negative
    end
    return has.neutral or has.mixed or has.positive
  end
  return labels[(h % #labels) + 1]
end

local function words(text, n)
  local out = {}
  for w in text:gmatch("%S+") do
    out[#out + 1] = w
    if #out >= n then
      break
    end
  end
  return table.concat(out, " ")
end

local function fake_value(schema, name, prompt, h, depth)
  local t = schema and schema.type or "string"
  if schema and schema.enum then
    return pick(schema.enum, prompt, h)
  elseif t == "object" then
    local obj = {}
    for k, sub in pairs(schema.properties or {}) do
      obj[k] = fake_value(sub, k, prompt, tonumber(hash.xxh64(k .. prompt):sub(1, 8), 16), depth + 1)
    end
    return setmetatable(obj, { __jsontype = "object" })
  elseif t == "array" then
    return setmetatable({ fake_value(schema.items, name, prompt, h, depth + 1) }, { __jsontype = "array" })
  elseif t == "integer" then
    return h % 100
  elseif t == "number" then
    return (h % 1000) / 1000
  elseif t == "boolean" then
    local score, pos, neg = sentiment(subject(prompt))
    if pos + neg > 0 then
      return score > 0
    end
    return h % 2 == 0
  end
  return words(subject(prompt), 8)
end

local function reply(req)
  local prompt = req.prompt or ""
  if req.messages then
    local parts = {}
    for _, m in ipairs(req.messages) do
      parts[#parts + 1] = tostring(m.content)
    end
    prompt = table.concat(parts, "\n")
  end
  local h = tonumber(hash.xxh64((req.model or "") .. "\0" .. prompt):sub(1, 8), 16)
  if req.json then
    local schema = req.schema
    if schema == nil then
      local labels = labels_in(prompt)
      schema = { type = "object", properties = { answer = labels and { enum = labels } or { type = "string" },
        confidence = { type = "number" } } }
      if labels then
        return json.encode({ answer = pick(labels, prompt, h), confidence = 0.5 + (h % 50) / 100 }), prompt, h
      end
    end
    return json.encode(fake_value(schema, nil, prompt, h, 0)), prompt, h
  end
  local labels = labels_in(prompt)
  if labels then
    return pick(labels, prompt, h), prompt, h
  end
  if prompt:lower():find("summar") then
    return words(subject(prompt), 12), prompt, h
  end
  return "mock reply " .. string.format("%08x", h) .. ": " .. words(subject(prompt), 6), prompt, h
end
M.reply = reply

function M.call(req, cfg, ctx)
  local text, prompt, h = reply(req)
  local latency = cfg.latency_ms or 50
  if cfg.jitter_ms and cfg.jitter_ms > 0 then
    latency = latency + (h % (math.floor(cfg.jitter_ms) + 1))
  end
  if latency > 0 then
    ctx:sleep(latency / 1000)
  end
  local tin = math.max(1, (#prompt + #(req.system or "") + 3) // 4 + 7)
  local tout = math.max(1, (#text + 3) // 4)
  return text, { input = tin, output = tout }
end

return M
