-- batch_spec.lua -- provider batch APIs (llm = { batch = true }): batch
-- prices, the workflow checks of the batch options, each provider's batch
-- request lines and result parsing, and what `orch status` makes of the
-- batch records. The batcher end to end is tests/e2e/batch*.sh.
local llm = require("orch.llm")
local pricing = require("orch.pricing")
local batch = require("orch.batch")
local json = require("orch.json")
local openai = require("orch.providers.openai")
local anthropic = require("orch.providers.anthropic")

local h = require("helpers")

-- A fake batch api (orch.batch_api) answering GETs from a table of bodies.
local function fake_api(bodies)
  return {
    request = function(method, path)
      local b = bodies[path]
      if b == nil then
        return { status = 404, body = "{}", headers = {} }
      end
      return { status = 200, body = b, headers = {} }
    end,
  }
end

local function jsonl(list)
  local out = {}
  for _, x in ipairs(list) do
    out[#out + 1] = json.encode(x)
  end
  return table.concat(out, "\n") .. "\n"
end

describe("batch prices", function()
  it("are half the synchronous price unless the workflow names one", function()
    assert.are.equal(pricing.cost("gpt-4o", 1000000, 1000000) / 2, pricing.batch_cost("gpt-4o", 1000000, 1000000))
    assert.are.equal(6.25, pricing.batch_cost("gpt-4o", 1000000, 1000000))
    assert.are.equal(3, pricing.batch_cost("m", 1000000, 1000000, { m = { 100, 100 } }, { m = { 1, 2 } }))
    assert.are.equal(100, pricing.batch_cost("m", 1000000, 1000000, { m = { 100, 100 } }))
    assert.are.equal(0, pricing.batch_cost("unknown-model", 10, 10))
  end)
end)

describe("the batch options of llm = {...}", function()
  local function cfg(extra)
    local c = { provider = "openai", api_key = "k", model = "gpt-4o-mini" }
    for k, v in pairs(extra) do
      c[k] = v
    end
    return c
  end

  it("are accepted for providers with a batch API", function()
    llm.check_config(cfg({ batch = true, batch_size = 50000, batch_window = 2, poll_interval = 60,
      batch_fallback = "sync", batch_prices = { ["gpt-4o-mini"] = { 0.075, 0.3 } } }))
    llm.check_config({ provider = "anthropic", api_key = "k", batch = true, batch_size = 100000 })
  end)

  it("refuse a provider without one, naming those that have one", function()
    h.fails_with("llm.batch: provider 'mock' has no batch API (these have: anthropic, openai); remove batch = true "
      .. "or change the provider", llm.check_config, { provider = "mock", batch = true })
  end)

  it("are the provider's: batch = false is accepted anywhere, the others only with a batch API", function()
    llm.check_config({ provider = "mock", batch = false })
    h.fails_with("llm: unknown key 'batch_size'", llm.check_config, { provider = "mock", batch_size = 5 })
  end)

  it("are type-checked before their values", function()
    h.fails_with("batch_size", llm.check_config, cfg({ batch = true, batch_size = "many" }))
    local e = h.catch(function()
      llm.check_config(cfg({ batch = true, batch_size = "many" }))
    end)
    assert.is_falsy(tostring(e):find("attempt to compare", 1, true))
  end)

  it("refuse a batch_size past the provider's limit", function()
    h.fails_with("llm.batch_size must be from 1 to 50000 (the provider's limit), got 50001", llm.check_config,
      cfg({ batch = true, batch_size = 50001 }))
    h.fails_with("llm.batch_size must be from 1 to 100000 (the provider's limit), got 0", llm.check_config,
      { provider = "anthropic", api_key = "k", batch = true, batch_size = 0 })
  end)

  it("refuse windows and poll intervals that are not positive, and unknown fallbacks", function()
    h.fails_with("llm.poll_interval must be a positive number of seconds, got 0", llm.check_config,
      cfg({ batch = true, poll_interval = 0 }))
    h.fails_with("llm.batch_window must be a positive number of seconds, got -1", llm.check_config,
      cfg({ batch = true, batch_window = -1 }))
    h.fails_with('llm.batch_fallback must be "sync" (send what batches could not answer synchronously) or "fail" '
      .. "(the default), got 'retry'", llm.check_config, cfg({ batch = true, batch_fallback = "retry" }))
  end)
end)

describe("OpenAI batches", function()
  local built = openai.build({ model = "gpt-4o-mini", prompt = "hi", max_tokens = 5 }, { api_key = "k" })

  it("carry each request as a line of the input file, its body as the journal key hashed it", function()
    local line = openai.batch.line("orch-abc", built)
    assert.are.equal("\n", line:sub(-1))
    local d = json.decode(line)
    assert.are.same({ custom_id = "orch-abc", method = "POST", url = "/v1/chat/completions" },
      { custom_id = d.custom_id, method = d.method, url = d.url })
    assert.is_truthy(line:find(',"body":' .. built.body .. "}", 1, true))
  end)

  it("read replies from the output file and failures from the error file", function()
    local ok_body = { choices = { { message = { content = "fine" } } }, usage = { prompt_tokens = 3,
      completion_tokens = 1 }, model = "gpt-4o-mini" }
    local api = fake_api({
      ["/files/out/content"] = jsonl({ { custom_id = "orch-1", response = { status_code = 200, body = ok_body } } }),
      ["/files/err/content"] = jsonl({
        { custom_id = "orch-2", response = json.null, error = { code = "batch_expired", message = "too late" } },
        { custom_id = "orch-3", response = { status_code = 500, body = { error = { message = "boom" } } } },
        { custom_id = "orch-4", response = { status_code = 400, body = { error = { message = "bad model" } } } },
      }),
    })
    local view = openai.batch.view({ id = "b", status = "expired", output_file_id = "out", error_file_id = "err",
      request_counts = { total = 4, completed = 1, failed = 3 }, expires_at = 100 })
    assert.is_true(view.ended)
    assert.are.equal(100000, view.expected_ms)
    local r = assert(openai.batch.results(api, view))
    assert.are.same({ custom_id = "orch-1", text = "fine", usage = { input = 3, output = 1 } }, r[1])
    assert.are.same({ custom_id = "orch-2", err = "batch_expired: too late", resend = true }, r[2])
    assert.are.same({ custom_id = "orch-3", err = "HTTP 500: boom", resend = true }, r[3])
    assert.are.same({ custom_id = "orch-4", err = "HTTP 400: bad model", resend = false }, r[4])
  end)

  it("say which download failed", function()
    local view = openai.batch.view({ id = "b", status = "completed", output_file_id = "gone" })
    local r, err = openai.batch.results(fake_api({}), view)
    assert.is_nil(r)
    assert.are.equal("GET /files/gone/content: HTTP 404", err)
  end)
end)

describe("Anthropic message batches", function()
  it("carry params as the synchronous body", function()
    local built = anthropic.build({ model = "claude-3-5-haiku-latest", prompt = "hi" }, { api_key = "k" })
    assert.are.equal('{"custom_id":"orch-ab","params":' .. built.body .. "}", anthropic.batch.line("orch-ab", built))
  end)

  it("read RFC 3339 times as UTC milliseconds", function()
    assert.are.equal(1796001748653, anthropic.batch.ms_of("2026-11-30T01:22:28.653Z"))
    assert.are.equal(0, anthropic.batch.ms_of("1970-01-01T00:00:00Z"))
    assert.are.equal(951782400000, anthropic.batch.ms_of("2000-02-29T00:00:00Z"))
    assert.are.equal(1783900800000, anthropic.batch.ms_of("2026-07-13T00:00:00Z")) -- summer: no DST shift
    assert.is_nil(anthropic.batch.ms_of("yesterday"))
  end)

  it("read succeeded, errored and expired results", function()
    local msg = { content = { { type = "text", text = "yes" } }, usage = { input_tokens = 4, output_tokens = 2 },
      model = "claude-3-5-haiku-latest" }
    local api = fake_api({ ["http://x/results"] = jsonl({
      { custom_id = "orch-1", result = { type = "succeeded", message = msg } },
      { custom_id = "orch-2", result = { type = "errored", error = { type = "error",
        error = { type = "api_error", message = "overloaded" } } } },
      { custom_id = "orch-3", result = { type = "expired" } },
      { custom_id = "orch-4", result = { type = "errored", error = { type = "error",
        error = { type = "invalid_request_error", message = "max_tokens: required" } } } },
    }) })
    local view = anthropic.batch.view({ id = "m", processing_status = "ended", results_url = "http://x/results",
      created_at = "1970-01-01T00:00:01Z" })
    assert.is_true(view.ended)
    assert.are.equal(1000, view.created_ms)
    local r = assert(anthropic.batch.results(api, view))
    assert.are.same({ custom_id = "orch-1", text = "yes", usage = { input = 4, output = 2 },
      model = "claude-3-5-haiku-latest" }, r[1])
    assert.are.same({ custom_id = "orch-2", err = "errored: overloaded", resend = true }, r[2])
    assert.are.same({ custom_id = "orch-3", err = "expired", resend = true }, r[3])
    assert.are.same({ custom_id = "orch-4", err = "errored: max_tokens: required", resend = false }, r[4])
  end)
end)

-- A fake batch api whose json calls answer from a table of decoded bodies
-- by path (nil: the error "GET <path>: HTTP 500"), recording the paths asked.
local function fake_json_api(pages)
  local api = { asked = {} }
  function api.json(method, path, body)
    api.asked[#api.asked + 1] = method .. " " .. path
    if method == "POST" then
      return pages[path] and pages[path](body), "POST " .. path .. ": HTTP 400: bad", true
    end
    if pages[path] == nil then
      return nil, "GET " .. path .. ": HTTP 500"
    end
    return pages[path]
  end
  return api
end

describe("listing and creating batches", function()
  it("walks OpenAI's list page by page with after= until the batch whose metadata matches", function()
    local api = fake_json_api({
      ["/batches?limit=100"] = { data = { { id = "b3", created_at = 100, metadata = {} } }, has_more = true },
      ["/batches?limit=100&after=b3"] = { data = { { id = "b2", created_at = 99,
        metadata = { orch_run = "r", orch_batch = "1" } } }, has_more = true },
    })
    assert.are.equal("b2", openai.batch.find(api, { orch_run = "r", orch_batch = "1" }, 0))
    assert.are.same({ "GET /batches?limit=100", "GET /batches?limit=100&after=b3" }, api.asked)
    -- older than the create call: false; the end of the list: false; a failed page: nil, err
    assert.are.equal(false, openai.batch.find(api, { orch_run = "r", orch_batch = "2" }, 200000))
    local ended = fake_json_api({ ["/batches?limit=100"] = { data = {}, has_more = false } })
    assert.are.equal(false, openai.batch.find(ended, { orch_run = "r", orch_batch = "2" }, 0))
    local broken = fake_json_api({ ["/batches?limit=100"] = { data = { { id = "b9", created_at = 100 } },
      has_more = true } })
    assert.are.same({ nil, "GET /batches?limit=100&after=b9: HTTP 500" },
      { openai.batch.find(broken, { orch_run = "r", orch_batch = "2" }, 0) })
  end)

  it("gathers Anthropic's batches created since a time, page by page with after_id=", function()
    local api = fake_json_api({
      ["/messages/batches?limit=100"] = { data = { { id = "m3", created_at = "1970-01-01T00:03:00Z" } },
        has_more = true },
      ["/messages/batches?limit=100&after_id=m3"] = { data = { { id = "m2", created_at = "1970-01-01T00:02:00Z" },
        { id = "m1", created_at = "1970-01-01T00:00:00Z" } }, has_more = true },
    })
    local views = assert(anthropic.batch.since(api, 120000)) -- less a minute: m2 is in, m1 is not
    assert.are.same({ "m3", "m2" }, { views[1].id, views[2].id })
    assert.are.equal(2, #views)
    local ended = fake_json_api({ ["/messages/batches?limit=100"] = { data = { { id = "m3",
      created_at = "1970-01-01T00:03:00Z" } }, has_more = false } })
    assert.are.equal(1, #assert(anthropic.batch.since(ended, 0)))
  end)

  it("creates and polls a batch, naming the failed create call", function()
    local api = fake_json_api({
      ["/messages/batches"] = function()
        return { id = "m7", processing_status = "in_progress" }
      end,
      ["/messages/batches/m7"] = { id = "m7", processing_status = "ended" },
    })
    local id, view = anthropic.batch.submit(api, { "{}" }, nil, function()
      return true
    end)
    assert.are.same({ "m7", "in_progress", false }, { id, view.status, view.ended })
    assert.is_true(assert(anthropic.batch.poll(api, "m7")).ended)
    assert.are.same({ nil, "GET /messages/batches/m8: HTTP 500" }, { anthropic.batch.poll(api, "m8") })
    local refused = fake_json_api({})
    assert.are.same({ nil, "creating the batch: POST /messages/batches: HTTP 400: bad", true },
      { anthropic.batch.submit(refused, { "{}" }, nil, function()
        return true
      end) })
    assert.are.same({ nil, "not now", true }, { anthropic.batch.submit(refused, { "{}" }, nil, function()
      return nil, "not now"
    end) })
  end)
end)

describe("orch status", function()
  local function ev(kind, d)
    return { type = kind, data = json.encode(d) }
  end

  it("shows each batch from its records: id, provider status, counts, submitted at, expected by", function()
    local list = batch.summaries({
      ev("batch_requests", { batch = 1, provider = "openai", keys = { "a", "b", "c" } }),
      ev("batch", { batch = 1, state = "creating", at_ms = 1000 }),
      ev("batch", { batch = 1, state = "submitted", id = "batch_9", status = "validating", submitted_ms = 0,
        expected_ms = 86400000 }),
      ev("batch", { batch = 1, state = "polled", id = "batch_9", status = "in_progress",
        counts = { total = 3, completed = 2, failed = 0 } }),
      ev("batch_requests", { batch = 2, provider = "openai", keys = { "d" } }),
      ev("batch", { batch = 2, state = "ended", status = "not_submitted" }),
      ev("usage_estimated", {}),
    })
    assert.are.equal(2, #list)
    assert.are.same({ { "batches", "2, 1 not ended" },
      { "batch 1", "batch_9 in_progress, 3 requests, 2 completed; submitted 1970-01-01 00:00:00Z, expected by "
        .. "1970-01-02 00:00:00Z" },
      { "batch 2", "(no id yet) not_submitted, 1 requests" } }, batch.status_lines(list))
    assert.are.same({}, batch.status_lines(batch.summaries({})))
  end)
end)
