-- orch.llm: ctx:llm{...} — request normalisation, provider dispatch, JSON
-- replies, usage and cost. Providers live in orch.providers.* and register
-- here; a workflow can register its own with orch.llm.register(name, p).
--
-- A provider is a table { options = { key = "type" }, call = function(req, cfg, ctx) }
-- whose call returns text, { input = tokens, output = tokens } or nil, err;
-- or one with build(req, cfg[, body]) -> { url, headers, body } and
-- parse(decoded reply), and optionally body(req, cfg) -> build's body alone
-- (then a reply the journal holds is found without building the request)
-- and, with body, text_body(prompt, model) -> body's bytes for { prompt =
-- prompt, model = model, json = false } (then a prompt stage's call the
-- journal answers makes no request table); and reply_pick, a json.picker
-- of the reply's text, tokens in and tokens out, which reads a usual
-- reply in C (see orch.providers.http's exchange; not inherited).
-- It may suspend (ctx:sleep, orch.http) but only its own row's coroutine.
-- Usage may also be named input_tokens/output_tokens (Anthropic) or
-- prompt_tokens/completion_tokens (OpenAI); when a provider or a server
-- gives none, the tokens are counted from the request and the reply (about
-- four characters a token) and the figures are marked estimated.
local check = require("orch.check")
local pricing = require("orch.pricing")
local sched = require("orch.sched")
local hash = require("orch.hash")
local json = require("orch.json")
local provider_http = require("orch.providers.http")

local M = { providers = {} }

local common_options = {
  provider = "string", model = "string", prices = "table", concurrency = "integer",
  -- defaults of every request
  system = "string", temperature = "number", max_tokens = "integer",
}

-- The options of providers with a batch API (p.batch; see orch.batch):
-- half price, answers within 24 h.
local batch_options = {
  batch = "boolean",
  batch_size = "integer",
  batch_window = "number",
  poll_interval = "number",
  batch_fallback = "string",
  batch_prices = "table",
}

--- register(name, provider): adds a provider a workflow names with
--- llm = { provider = name }. provider.call(req, cfg, ctx) returns the reply
--- text and its usage, or nil and an error message; see the header.
function M.register(name, provider)
  check.arg_type("orch.llm.register", 1, name, "string")
  check.arg_type("orch.llm.register", 2, provider, "table")
  if type(provider.call) ~= "function" and (type(provider.build) ~= "function" or type(provider.parse) ~= "function") then
    check.fail("orch.llm.register: provider '%s' needs call(req, cfg, ctx), or build(req, cfg) and parse(reply)",
      name)
  end
  if provider.text_body then
    if type(provider.text_body) ~= "function" or type(provider.body) ~= "function"
      or type(provider.build) ~= "function" then
      check.fail("orch.llm.register: provider '%s': text_body(prompt, model) goes with build(req, cfg, body) and "
        .. "body(req, cfg): it gives body's bytes for a prompt alone", name)
    end
    -- a provider made from another with its body changed and text_body
    -- kept (setmetatable(p, { __index = openai }), say) would send and key
    -- text_body's bytes: text_body is used only where it writes body's
    local ok1, a = pcall(provider.text_body, "orch", "orch")
    local ok2, b = pcall(provider.body, { prompt = "orch", model = "orch", json = false }, {})
    if not (ok1 and ok2 and a == b) then
      provider.text_body = false
    end
  end
  if provider.reply_pick ~= nil and rawget(provider, "reply_pick") == nil then
    -- inherited (setmetatable(p, { __index = openai })): p's replies are
    -- read by its own parse_body or parse, which may differ from the
    -- provider's the pick was made for
    provider.reply_pick = false
  end
  if provider.options ~= nil then
    if type(provider.options) ~= "table" then
      check.fail("orch.llm.register: provider '%s': options must be a table { key = \"type\" }, got %s", name,
        type(provider.options))
    end
    for k, v in pairs(provider.options) do
      if type(k) ~= "string" or type(v) ~= "string" then
        check.fail("orch.llm.register: provider '%s': options must map names to type names, e.g. "
          .. "{ latency_ms = \"number\" }; got [%s] = %s", name, tostring(k), tostring(v))
      end
    end
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

-- batch = true for a provider without a batch API: raises, naming those with one.
local function no_batch_api(cfg)
  local with = {}
  for _, n in ipairs(provider_names()) do
    if M.providers[n].batch then
      with[#with + 1] = n
    end
  end
  check.fail_key("batch", "orch.workflow: llm.batch: provider '%s' has no batch API (these have: %s); remove "
    .. "batch = true or change the provider", cfg.provider, table.concat(with, ", "))
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
  if cfg.batch and not p.batch then
    no_batch_api(cfg)
  end
  for k, v in pairs(p.batch and batch_options or {}) do
    allowed[k] = v
  end
  allowed.batch = allowed.batch or (cfg.batch == false and "boolean") or nil -- batch = false: as without it
  check.known_keys("orch.workflow: llm", cfg, allowed)
  if p.batch then
    M.check_batch(cfg, p)
  end
  -- the key and the URL default to the provider's conventional variables
  -- (OPENAI_API_KEY, OPENAI_BASE_URL, ...), read when a request is built
  if p.needs_key and provider_http.api_key(p, cfg) == nil and provider_http.base_url(p, cfg) == nil then
    check.fail_key("api_key", "orch.workflow: llm.api_key is empty: export %s (or set api_key = ... in the llm "
      .. "table); a local OpenAI-compatible server needs only base_url (or %s)",
      p.env_key or "the provider's API key variable", p.env_base_url or "base_url")
  end
end

--- check_batch(cfg, p): the batch options of a workflow's llm table, their
--- types already checked, for a provider with a batch API (raises a
--- WorkflowError naming the key).
function M.check_batch(cfg, p)
  local limit = p.batch.max_requests
  if cfg.batch_size ~= nil and (cfg.batch_size < 1 or cfg.batch_size > limit) then
    check.fail_key("batch_size", "orch.workflow: llm.batch_size must be from 1 to %d (the provider's limit), got %d",
      limit, cfg.batch_size)
  end
  for _, k in ipairs({ "batch_window", "poll_interval" }) do
    if cfg[k] ~= nil and not (cfg[k] > 0) then
      check.fail_key(k, "orch.workflow: llm.%s must be a positive number of seconds, got %s", k, tostring(cfg[k]))
    end
  end
  if cfg.batch_fallback ~= nil and cfg.batch_fallback ~= "sync" and cfg.batch_fallback ~= "fail" then
    check.fail_key("batch_fallback", "orch.workflow: llm.batch_fallback must be \"sync\" (send what batches "
      .. "could not answer synchronously) or \"fail\" (the default), got '%s'", cfg.batch_fallback)
  end
end

local request_keys = {
  prompt = "string", messages = "table", system = "string", -- what is asked
  model = "string", temperature = "number", max_tokens = "integer", -- how
  json = "boolean", schema = "table", -- what the reply must be
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
      if v[k] ~= nil and v[k] ~= json.null then
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
  local ok, v = pcall(json.decode, json_body(text))
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

-- Budget stops are errors of their own kind: the row is not failed, it
-- is left for the resumed run (see orch.run).
M.BudgetStop = { __name = "orch.BudgetStop" }
M.BudgetStop.__tostring = function(e)
  return e.msg
end

-- The characters of a request's text: its system prompt and its prompt or messages.
local function chars_in(r)
  local n = #(r.system or "")
  if r.messages then
    for _, m in ipairs(r.messages) do
      n = n + #tostring(m.content)
    end
  else
    n = n + #(r.prompt or "")
  end
  return n
end

-- What a request may cost at most, in tokens in and out, before it is
-- sent; chars: chars_in(r).
local function est_tokens(r, chars)
  return chars // 4 + 8, r.max_tokens or 512
end

local function tokens_of(text)
  return (#text + 3) // 4
end

local usage_names = { { "input", "output" }, { "input_tokens", "output_tokens" },
  { "prompt_tokens", "completion_tokens" }, { "tokens_in", "tokens_out" } }

-- A usage figure of usage.name: raises unless a whole number of tokens.
local function check_tokens(provider, name, v)
  if type(v) ~= "number" or v < 0 or v ~= math.floor(v) then
    error(string.format("orch.llm provider '%s': usage.%s must be a whole number of tokens, got %s", provider,
      name, type(v) == "number" and tostring(v) or type(v)), 0)
  end
end

local mtype = math.type

--- usage(name, u, chars, text) -> tokens in, tokens out, estimated
--- Reads what a provider returned as usage; what is missing is counted from
--- the request's characters (chars_in) and the reply. A usage of the wrong
--- shape raises, naming the provider (a bug in the provider, not in the row).
local function read_usage(name, u, chars, text)
  local tin, tout
  if u ~= nil then
    if type(u) ~= "table" then
      error(string.format("orch.llm provider '%s': call returned %s as usage; return { input = tokens, output = "
        .. "tokens } or nothing (then the tokens are estimated)", name, type(u)), 0)
    end
    local input, output = u.input, u.output
    if mtype(input) == "integer" and mtype(output) == "integer" and input >= 0 and output >= 0 then
      return input, output, false -- the usual usage, as the loop below reads it
    end
    for i = 1, #usage_names do
      local pair = usage_names[i]
      local a, b = u[pair[1]], u[pair[2]]
      if a ~= nil or b ~= nil then
        check_tokens(name, pair[1], a or 0)
        check_tokens(name, pair[2], b or 0)
        tin, tout = a and math.tointeger(a), b and math.tointeger(b)
        break
      end
    end
  end
  local estimated = tin == nil or tout == nil
  return tin or (chars + 3) // 4, tout or tokens_of(text), estimated
end

-- One request through the provider: -> text, usage, attempts | text, nil,
-- attempts, tokens in, tokens out (whole numbers, read in C: see
-- orch.providers.http's exchange) | nil, err, attempts
-- built: the HTTP request p.build made (nil for providers with call).
local function exchange(p, r, cfg, ctx, built)
  if p.call then
    local text, usage = p.call(r, cfg, ctx)
    if text == nil then
      if usage == nil then
        usage = string.format("provider '%s' failed without saying why (its call returned nil and no message)", p.name)
      end
      return nil, tostring(usage), 1
    elseif type(text) ~= "string" then
      error(string.format("orch.llm provider '%s': call returned %s as the reply; return the reply text (a string) "
        .. "and its usage, or nil and an error message", p.name, type(text)), 0)
    end
    return text, usage, 1
  end
  return provider_http.exchange(p, built, cfg, ctx)
end

-- The journal key: provider, model and the canonical request body, NUL
-- between, hashed without joining them into a string first (the body may
-- be kilobytes; the digest is xxh128 of the joined bytes).
local xxh128_parts = hash.xxh128_parts
local function journal_key(cfg, model, body)
  return xxh128_parts(cfg.provider, "\0", model, "\0", body)
end

-- A call's figures counted (ctx:account_call, or ctx:account with the
-- info of a context that has only that), and the info a call returns:
-- the reply, its tokens and how it was answered, in one constructor (a
-- `how` table copied in with pairs was a table and a walk every call);
-- none when bare (a prompt stage's call reads only the text).
local function answered(ctx, cfg, model, text, tin, tout, cost, latency, attempts, estimated, batch, bare)
  local account_call = ctx.account_call
  if account_call then
    account_call(ctx, tin, tout, cost, model, false, nil, attempts, estimated)
    if bare then
      return nil
    end
  end
  local info = { text = text, model = model, provider = cfg.provider, tokens_in = tin, tokens_out = tout,
    tokens = tin + tout, cost = cost, latency = latency, attempts = attempts, cached = false,
    estimated = estimated or nil, batch = batch }
  if not account_call and ctx.account then
    ctx:account(info)
  end
  return info
end

local NO_RUN = {} -- the run of a context without one (read only)

-- A request through the provider's batch API (see orch.batch), at batch
-- prices; chars: chars_in(r). -> text, info | false, err | nil
-- (batch_fallback = "sync": send it synchronously)
local function batched(ctx, cfg, p, r, built, key, chars)
  local run = ctx._run or NO_RUN
  local tin_est, tout_est = est_tokens(r, chars)
  local t0 = sched.now()
  local res = require("orch.batch").await(ctx, cfg, p, key, built,
    pricing.batch_cost(r.model, tin_est, tout_est, cfg.prices, cfg.batch_prices))
  if res.stop then
    error(setmetatable({ msg = res.stop }, sched.Interrupted), 0)
  elseif res.budget then
    error(setmetatable({ msg = res.budget }, M.BudgetStop), 0)
  elseif res.sync then
    return nil
  elseif res.err then
    if run.note_failure then
      run.note_failure(res.err)
    end
    return false, res.err
  end
  local tin, tout, estimated = read_usage(p.name or cfg.provider, res.usage, chars, res.text)
  return res.text, answered(ctx, cfg, r.model, res.text, tin, tout,
    pricing.batch_cost(r.model, tin, tout, cfg.prices, cfg.batch_prices), sched.now() - t0, res.attempts,
    estimated, res.batch)
end

-- A reply the journal already holds: nothing paid, the cost it saved
-- counted. The info answered would make, built in one table, or none
-- when bare: every replayed row comes this way.
local function from_journal(ctx, cfg, model, text, tin, tout, saved, bare)
  local account_call = ctx.account_call
  if account_call then
    account_call(ctx, tin, tout, 0, model, true, saved, 0, nil)
    if bare then
      return text
    end
  end
  local info = { text = text, model = model, provider = cfg.provider, tokens_in = tin, tokens_out = tout,
    tokens = tin + tout, cost = 0, saved = saved, latency = 0, attempts = 0, cached = true }
  if not account_call and ctx.account then
    ctx:account(info)
  end
  return text, info
end

-- The journal's reply for key: text, tokens in, tokens out, cost | nil.
-- journal.reply gives them as values (no entry table a replayed row); a
-- journal with get only (a worker's shared journal) gives the entry.
local function journaled(journal, key)
  local reply = journal.reply
  if reply then
    return reply(key)
  end
  local hit = journal.get(key)
  if hit then
    return hit.response, hit.tokens_in, hit.tokens_out, hit.cost_usd
  end
  return nil
end

-- Reserves a request's worst case (estimate) in the run's budget: waits
-- while requests in flight hold the room; raises a BudgetStop only when
-- this request's worst case alone would pass max_usd.
local function reserve(run, budget, estimate)
  local ok, why = budget.acquire(estimate)
  if not ok then
    error(setmetatable({ msg = why }, M.BudgetStop), 0)
  end
  if budget.waited > 0 and not run.budget_said and run.log then
    run.budget_said = true
    local _, n = budget.in_flight()
    run.log(1, string.format("budget: fewer LLM requests in flight (%d now): each reserves up to $%.4f (its "
      .. "max_tokens at the model's price) until its real cost is known", n, estimate))
  end
end

-- The rate limiter, then the exchange: called with arguments (under
-- pcall while a budget reservation is held), not through a closure made
-- per call, and by tail calls, so no frame of its own waits with the row.
local function send(run, ctx, tokens, p, r, cfg, built)
  local limiter = run.limiter
  if limiter then
    limiter.acquire(ctx, tokens)
  end
  return exchange(p, r, cfg, ctx, built)
end

-- A reply received: its usage read (unless its tokens came as whole
-- numbers, tin and tout), journaled and counted. -> text, info (text
-- alone when bare)
local function settle(ctx, cfg, run, name, model, chars, key, text, usage, attempts, t0, bare, tin, tout)
  local estimated = nil
  if tout == nil then
    tin, tout, estimated = read_usage(name, usage, chars, text)
  end
  local cost, latency = pricing.cost(model, tin, tout, cfg.prices), sched.now() - t0
  if key and run.journal then
    run.journal.put(key, cfg.provider, model, text, tin, tout, cost, latency * 1000) -- no entry table a reply
  end
  -- counts estimated calls too
  local info = answered(ctx, cfg, model, text, tin, tout, cost, latency, attempts, estimated, nil, bare)
  if estimated and run.totals and run.totals.estimated_calls == 1 and run.emit then
    run.emit("usage_estimated", { provider = cfg.provider, model = model,
      reason = "the provider sent no usage: tokens counted as about four characters a token" }, ctx)
  end
  return text, info
end

--- One model call with the journal, the budget and the accounting around
--- it. -> text, info | nil, err (text alone when bare and answered). body
--- and key: text's, which asked the journal already.
local function complete(ctx, cfg, p, r, bare, body, key)
  local run = ctx._run or NO_RUN
  local journal = run.journal
  local build, built = p.build, nil
  if body then -- text's: the body and its key made, the journal asked
    journal = nil
  elseif build then
    -- once: the body is the journal key's bytes and what is sent. A
    -- provider with body(req) is asked for the body alone while the
    -- journal may answer, and for the request only when it does not.
    if journal and p.body then
      body = p.body(r, cfg)
    else
      built = build(r, cfg)
      body = built.body
    end
  end
  key = key or (journal or cfg.batch) and journal_key(cfg, r.model, body or json.encode(r))
  if key and journal then
    local reply, text, tin, tout, saved = journal.reply, nil, nil, nil, nil
    if reply then -- every replayed row: no call of journaled's
      text, tin, tout, saved = reply(key)
    else
      text, tin, tout, saved = journaled(journal, key)
    end
    if text then
      return from_journal(ctx, cfg, r.model, text, tin, tout, saved, bare)
    end
  end
  if build and not built then
    built = build(r, cfg, body)
  end
  local chars = chars_in(r)
  if cfg.batch and built then
    local text, info = batched(ctx, cfg, p, r, built, key, chars)
    if text ~= nil then
      return text or nil, info
    end
  end
  local model = r.model
  local tin_est, tout_est = est_tokens(r, chars)
  if built and not p.call then
    r = nil -- built.body is what is sent: the prompt need not wait with the row
  end
  local budget, t0 = run.budget, nil
  local ok, text, usage, attempts, tin, tout
  if budget then
    local estimate = pricing.cost(model, tin_est, tout_est, cfg.prices)
    reserve(run, budget, estimate)
    t0 = sched.now()
    -- the reservation is released however the exchange ends (a provider may raise)
    ok, text, usage, attempts, tin, tout = pcall(send, run, ctx, tin_est + tout_est, p, r, cfg, built)
    budget.release(estimate)
    if not ok then
      error(text, 0)
    end
  else
    t0 = sched.now()
    text, usage, attempts, tin, tout = send(run, ctx, tin_est + tout_est, p, r, cfg, built)
  end
  if text == nil then
    if run.note_failure then
      run.note_failure(usage)
    end
    return nil, usage
  end
  return settle(ctx, cfg, run, p.name or cfg.provider, model, chars, key, text, usage, attempts, t0, bare, tin, tout)
end

-- Raises, naming ctx:llm's caller (level 3: call's caller), for a key
-- the request may not have, a value of the wrong type, or no prompt.
local function check_request(req)
  for k, v in pairs(req) do
    local want = request_keys[k]
    if want == nil then
      error(string.format("ctx:llm: unknown key '%s'", tostring(k)), 3)
    elseif type(v) ~= want and not (want == "integer" and math.type(v) == "integer") then
      error(string.format("ctx:llm: '%s' must be a %s, got %s", k, want, type(v)), 3)
    end
  end
  if req.prompt == nil and req.messages == nil then
    error("ctx:llm: give a prompt or messages", 3)
  end
end

--- text(ctx, cfg, prompt) -> text | nil, err: call(ctx, cfg, { prompt =
--- prompt }) (prompt a string) without the info table, which a prompt
--- stage does not read: every replayed row's call, and most calls, made
--- one table fewer. A request of the prompt alone, to a provider with
--- text_body, asks the journal before it is made: a replayed row's call
--- makes no request table, and its body is one string.
function M.text(ctx, cfg, prompt)
  if cfg == nil then
    error("ctx:llm: the workflow has no llm = { provider = ... } table", 2)
  end
  local system, temperature, max_tokens = cfg.system, cfg.temperature, cfg.max_tokens
  if system == nil and temperature == nil and max_tokens == nil then -- a table of three fields, not six
    local p, model, journal = M.providers[cfg.provider], cfg.model or cfg.provider, (ctx._run or NO_RUN).journal
    local text_body = journal and p.text_body
    if not text_body then
      return complete(ctx, cfg, p, { prompt = prompt, model = model, json = false }, true)
    end
    local body = text_body(prompt, model) -- complete's journal lookup, without its request table
    local key = journal_key(cfg, model, body)
    local text, tin, tout, saved = journaled(journal, key)
    if text then
      return from_journal(ctx, cfg, model, text, tin, tout, saved, true)
    end
    return complete(ctx, cfg, p, { prompt = prompt, model = model, json = false }, true, body, key)
  end
  return complete(ctx, cfg, M.providers[cfg.provider], { prompt = prompt, system = system,
    model = cfg.model or cfg.provider, temperature = temperature, max_tokens = max_tokens, json = false }, true)
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
  local p = M.providers[cfg.provider]
  local prompt = req.prompt
  if type(prompt) == "string" and next(req, next(req)) == nil then
    -- { prompt = "..." } alone (a prompt stage's request): nothing to check,
    -- and the request is the workflow's defaults around it (what the
    -- constructor below makes of it, without reading seven absent keys)
    return complete(ctx, cfg, p, { prompt = prompt, system = cfg.system, model = cfg.model or cfg.provider,
      temperature = cfg.temperature, max_tokens = cfg.max_tokens, json = false })
  end
  check_request(req)
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
  if not r.json then
    return complete(ctx, cfg, p, r) -- a tail call: this frame does not wait with the row
  end
  local text, info = complete(ctx, cfg, p, r)
  if text == nil then
    return text, info
  end
  local v, err = M.decode_reply(text, r.schema)
  if v ~= nil then
    return v, info
  end
  -- one repair round: show the model its reply and what is wrong with it
  local msgs = {}
  for _, m in ipairs(r.messages or { { role = "user", content = r.prompt } }) do
    msgs[#msgs + 1] = m
  end
  msgs[#msgs + 1] = { role = "assistant", content = text }
  msgs[#msgs + 1] = { role = "user", content = "That reply cannot be used: " .. err
    .. ". Reply again with only the corrected JSON." }
  local r2 = {}
  for k, x in pairs(r) do
    r2[k] = x
  end
  r2.prompt, r2.messages = nil, msgs
  local text2, info2 = complete(ctx, cfg, p, r2)
  if text2 == nil then
    return nil, info2
  end
  local v2, err2 = M.decode_reply(text2, r.schema)
  if v2 == nil then
    return nil, err2 .. " (after one repair attempt)"
  end
  info2.attempts = info.attempts + info2.attempts
  info2.repaired = true
  return v2, info2
end

M.register("mock", require("orch.providers.mock"))
M.register("openai", require("orch.providers.openai"))
M.register("anthropic", require("orch.providers.anthropic"))

return M
