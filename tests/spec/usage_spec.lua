-- A row's LLM usage (ctx.usage): kept flat while the row's calls share one
-- model and one stage, and the same nested table for every reader.
local context = require("orch.context")
local json = require("orch.json")
local cjson = require("cjson")

local function fake_run()
  return { id = "r", state = {}, llm = { provider = "mock" },
    totals = { llm_calls = 0, tokens_in = 0, tokens_out = 0, cost = 0 }, log = function() end, emit = function() end }
end

local function call(model, tin, tout, cost, extra)
  local info = { text = "t", model = model, provider = "mock", tokens_in = tin, tokens_out = tout, tokens = tin + tout,
    cost = cost, latency = 0, attempts = 1, cached = false }
  for k, v in pairs(extra or {}) do
    info[k] = v
  end
  return info
end

-- A context after calls = { { stage, info } ... }.
local function row_after(calls)
  local ctx = context.new(fake_run(), 1, "k")
  for _, c in ipairs(calls) do
    ctx.stage = c[1]
    ctx:account(c[2])
  end
  return ctx
end

-- The keys of t as next walks them, sorted.
local function keys(t)
  local ks = {}
  for k in next, t do
    ks[#ks + 1] = k
  end
  table.sort(ks)
  return table.concat(ks, " ")
end

describe("a row's usage", function()
  it("stays flat after a first call: no by_model or by_stage table until ctx.usage is read", function()
    local ctx = row_after({ { "classify", call("m1", 5, 2, 0.25) } })
    assert.is_nil(rawget(ctx, "usage"))
    local flat = rawget(ctx, "_usage")
    assert.are.same({ llm_calls = 1, tokens_in = 5, tokens_out = 2, cost = 0.25, _model = "m1",
      _stage = "classify" }, flat)
    assert.are.equal("orch.Context", getmetatable(ctx).__name)
    assert.are.equal("function", type(ctx.llm)) -- the methods are there
    local u = ctx.usage
    assert.are.equal(flat, u) -- made nested in place: one table for every reader
    assert.are.equal(u, rawget(ctx, "usage"))
    assert.are.same({ llm_calls = 1, tokens_in = 5, tokens_out = 2, cost = 0.25,
      by_model = { m1 = { calls = 1, tokens = 7, cost = 0.25 } },
      by_stage = { classify = { calls = 1, tokens = 7, cost = 0.25 } } }, u)
  end)

  it("is read whole by next, pairs, rawget, orch.json and cjson once ctx.usage is read", function()
    local ctx = row_after({ { "s", call("m", 3, 4, 0.5, { attempts = 2 }) } })
    local u = ctx.usage
    assert.are.equal("by_model by_stage cost llm_calls retries tokens_in tokens_out", keys(u))
    local seen = {}
    for k in pairs(u) do
      seen[#seen + 1] = k
    end
    assert.are.equal(7, #seen)
    assert.are.same({ m = { calls = 1, tokens = 7, cost = 0.5 } }, rawget(u, "by_model"))
    assert.are.equal('{"by_model":{"m":{"calls":1,"cost":0.5,"tokens":7}},"by_stage":{"s":{"calls":1,"cost":0.5,'
      .. '"tokens":7}},"cost":0.5,"llm_calls":1,"retries":1,"tokens_in":3,"tokens_out":4}', json.encode(u))
    assert.are.same(json.decode(json.encode(u)), cjson.decode(cjson.encode(u)))
  end)

  it("adds later calls of the same model and stage to the flat figures, and the nested form holds them", function()
    local ctx = row_after({ { "s", call("m", 3, 4, 0.5) }, { "s", call("m", 1, 1, 0.125, { estimated = true }) },
      { "s", call("m", 2, 0, 0, { cached = true, saved = 0.75, attempts = 0 }) } })
    assert.is_nil(rawget(ctx, "usage"))
    assert.are.equal("m", rawget(ctx, "_usage")._model)
    assert.are.same({ llm_calls = 3, tokens_in = 6, tokens_out = 5, cost = 0.625, estimated_calls = 1,
      cached_calls = 1, saved = 0.75, by_model = { m = { calls = 3, tokens = 11, cost = 0.625 } },
      by_stage = { s = { calls = 3, tokens = 11, cost = 0.625 } } }, ctx.usage)
  end)

  it("is nested from the call whose model or stage differs, and a table read before sees the calls after", function()
    local ctx = row_after({ { "a", call("m1", 1, 2, 0.5) }, { "a", call("m2", 3, 4, 0.25) } })
    assert.are.equal(ctx.usage, rawget(ctx, "usage"))
    assert.are.same({ llm_calls = 2, tokens_in = 4, tokens_out = 6, cost = 0.75,
      by_model = { m1 = { calls = 1, tokens = 3, cost = 0.5 }, m2 = { calls = 1, tokens = 7, cost = 0.25 } },
      by_stage = { a = { calls = 2, tokens = 10, cost = 0.75 } } }, ctx.usage)
    ctx = row_after({ { "a", call("m", 1, 2, 0.5) }, { "b", call("m", 3, 4, 0.25) } })
    assert.are.same({ a = { calls = 1, tokens = 3, cost = 0.5 }, b = { calls = 1, tokens = 7, cost = 0.25 } },
      ctx.usage.by_stage)
    ctx = row_after({ { nil, call("m", 1, 2, 0.5) } }) -- no stage: no by_stage
    local held = ctx.usage
    assert.are.same({ llm_calls = 1, tokens_in = 1, tokens_out = 2, cost = 0.5,
      by_model = { m = { calls = 1, tokens = 3, cost = 0.5 } } }, held)
    ctx:account(call("m", 1, 1, 0.5))
    assert.are.equal(held, ctx.usage)
    assert.are.same({ calls = 2, tokens = 5, cost = 1.0 }, held.by_model.m)
  end)

  it("adds to the run's totals, flat, what its nested form adds", function()
    local rows = {
      { { "s", call("m1", 5, 2, 0, { cached = true, saved = 0.25, attempts = 0 }) } },
      { { "s", call("m1", 3, 1, 0.5, { attempts = 3, estimated = true }) }, { "s", call("m1", 1, 1, 0.125) } },
      { { nil, call("m2", 1, 1, 0.125) } },
      { { "t", call(nil, 2, 2, 0.25) } },
      { { "s", call("m1", 1, 1, 0.375) }, { "t", call("m2", 1, 1, 0.75) } },
    }
    local flat, nested = { llm_calls = 0, tokens_in = 0, tokens_out = 0, cost = 0 },
      { llm_calls = 0, tokens_in = 0, tokens_out = 0, cost = 0 }
    for _, calls in ipairs(rows) do
      context.add_usage(flat, rawget(row_after(calls), "_usage"))
      context.add_usage(nested, row_after(calls).usage)
    end
    assert.are.same(nested, flat)
    assert.are.same({ llm_calls = 7, tokens_in = 14, tokens_out = 9, cost = 2.125, estimated_calls = 1, retries = 2,
      cached_calls = 1, saved = 0.25,
      by_model = { m1 = { calls = 4, tokens = 15, cost = 1.0 }, m2 = { calls = 2, tokens = 4, cost = 0.875 } },
      by_stage = { s = { calls = 4, tokens = 15, cost = 1.0 }, t = { calls = 2, tokens = 6, cost = 1.0 } } }, flat)
    assert.are.equal("integer", math.type(flat.by_model.m1.tokens))
  end)

  it("adds a journal's reply, alone or with other rare figures, as add_extras adds it", function()
    local replies = {
      { cached = true, saved = 0.5, attempts = 0 },
      { cached = true, attempts = 0 }, -- no saved figure: 0 saved
      { cached = true, saved = 0.25, attempts = 0, estimated = true },
      { cached = true, saved = 0.125, attempts = 2 },
    }
    for i, extra in ipairs(replies) do
      local ctx = row_after({ { "s", call("m", 2, 1, 0, extra) }, { "s", call("m", 1, 1, 0, extra) } })
      local u, t = rawget(ctx, "_usage"), rawget(ctx, "_run").totals
      local saved = 2 * (extra.saved or 0)
      assert.are.same({ 2, saved, extra.estimated and 2 or nil, extra.attempts > 1 and 2 or nil },
        { u.cached_calls, u.saved, u.estimated_calls, u.retries }, "reply " .. i)
      assert.are.same({ 2, saved, extra.estimated and 2 or nil, extra.attempts > 1 and 2 or nil },
        { t.cached_calls, t.saved, t.estimated_calls, t.retries }, "totals " .. i)
      local flat, nested = {}, {}
      context.add_usage(flat, u)
      context.add_usage(nested, ctx.usage)
      assert.are.same(nested, flat, "add_usage " .. i)
      context.add_usage(flat, u) -- into groups already there: added in place
      context.add_usage(nested, ctx.usage)
      assert.are.same(nested, flat, "add_usage again " .. i)
      assert.are.same({ calls = 4, tokens = 10, cost = 0 }, flat.by_model.m)
    end
  end)

  it("is nested by expand_usage for a row event, once, and the context then reads the same table", function()
    local ctx = row_after({ { "s", call("m", 3, 4, 0.5) } })
    local u = context.expand_usage(rawget(ctx, "_usage"))
    assert.are.same({ m = { calls = 1, tokens = 7, cost = 0.5 } }, u.by_model)
    local by_model = u.by_model
    assert.are.equal(u, context.expand_usage(u))
    assert.are.equal(by_model, u.by_model)
    assert.are.equal(u, ctx.usage)
    local totals = { llm_calls = 0, tokens_in = 0, tokens_out = 0, cost = 0 }
    context.add_usage(totals, u)
    assert.are.same({ calls = 1, tokens = 7, cost = 0.5 }, totals.by_stage.s)
  end)
end)
