-- settle_spec.lua -- results:settle_run (core/settle_lua.c), the driver's
-- flush of rows that got through in C: what it settles (lines, results,
-- slots, cursor, LLM sums, figure for figure as flush adds them) and
-- where it stops, leaving the row to flush's Lua loop.
local store = require("orch.store")
local sink = require("orch.sink")

local WINDOW = 8

-- The reorder window's rings, as driver.lua makes them, with rows from
-- seq first: each { d, line, key, offset, line_no } (nil: false).
local function rings(first, rows)
  local r = { done = {}, lines = {}, keys = {}, offsets = {}, line_nos = {} }
  for i = 1, WINDOW do
    r.done[i], r.lines[i], r.keys[i], r.offsets[i], r.line_nos[i] = false, false, false, false, false
  end
  for i, row in ipairs(rows) do
    local slot = (first + i - 1) % WINDOW + 1
    r.done[slot], r.lines[slot], r.keys[slot] = row[1], row[2] or false, row[3] or false
    r.offsets[slot], r.line_nos[slot] = row[4] or false, row[5] or false
  end
  return r
end

local function usage(model, stage, calls, tin, tout, cost, extra)
  local u = { llm_calls = calls, tokens_in = tin, tokens_out = tout, cost = cost, _model = model, _stage = stage }
  for k, v in pairs(extra or {}) do
    u[k] = v
  end
  return u
end

local h = require("helpers")

-- the twelve sums of an open model and stage: calls, tin, tout, cost,
-- cached, saved, then the model's and the stage's calls, tokens, cost
local SUMS = { 10, 100, 50, 1.5, nil, nil, 4, 60, 0.5, 6, 90, 1.0 }

local function run(packed, r, seq, limit, out, model, stage, sums, last_t, bound_s)
  sums = sums or SUMS
  return { packed:settle_run(r.done, r.lines, r.keys, r.offsets, r.line_nos, seq, limit, WINDOW, out, last_t,
    bound_s, model, stage, sums[1], sums[2], sums[3], sums[4], sums[5], sums[6], sums[7], sums[8], sums[9], sums[10],
    sums[11], sums[12]) }
end

describe("results:settle_run", function()
  it("settles rows that got through as flush does: lines, results, slots, cursor, LLM sums", function()
    local path = h.tmp_path()
    local out = assert(sink.open(path))
    local packed = store.results()
    local r = rings(6, {
      { true, "a\n", 6, 100, 7 },
      { usage("m", "s", 1, 3, 2, 0.25), "b\n", "k7" },
      { usage("m", "s", 2, 4, 1, 0.125, { cached_calls = 1, saved = 0.5 }), "c\n", 8.0, 130, 9 },
      { true, nil, "k9" },
      { usage("other", "s", 1, 1, 1, 1) , "e\n", "k10" },
    })
    local got = run(packed, r, 6, math.huge, out, "m", "s")
    -- seq, n, bytes, offset, line, err
    assert.are.same({ 10, 4, 6, 130, 9 }, { got[1], got[2], got[3], got[4], got[5] })
    assert.is_nil(got[6])
    -- calls, tin, tout, cost: flush's additions; cached and saved start from 0
    assert.equal(13, got[7])
    assert.equal(107, got[8])
    assert.equal(53, got[9])
    assert.equal(1.5 + 0.25 + 0.125, got[10])
    assert.equal("integer", math.type(got[11]))
    assert.equal(1, got[11])
    assert.equal(0.5, got[12])
    assert.are.same({ 7, 70, 0.5 + 0.25 + 0.125, 9, 100, 1.0 + 0.25 + 0.125 },
      { got[13], got[14], got[15], got[16], got[17], got[18] })
    assert.equal("integer", math.type(got[7]))
    assert(out:flush())
    assert.equal("a\nb\nc\n", h.read_file(path))
    assert.are.same({ { seq = 6, key = "6", status = "ok" }, { seq = 7, key = "k7", status = "ok" },
      { seq = 8, key = "8", status = "ok" }, { seq = 9, key = "k9", status = "ok" } }, packed:list())
    -- the slots it settled are free, the row it stopped at is as it was
    for seq = 6, 9 do
      assert.is_false(r.done[seq % WINDOW + 1])
      assert.is_false(r.lines[seq % WINDOW + 1])
    end
    assert.equal("e\n", r.lines[10 % WINDOW + 1])
    assert.equal("other", r.done[10 % WINDOW + 1]._model)
    out:close()
    os.remove(path)
  end)

  it("stops at a row it does not settle: unsettled, a record, figures it does not add, a line without a sink", function()
    local packed = store.results()
    local stops = {
      { false },
      { { status = "failed", error = "e" } },
      { usage("m", "s", 1, 1, 1, 0.5, { estimated_calls = 1 }) },
      { usage("m", "s", 1, 1, 1, 0.5, { retries = 1 }) },
      { usage("m", "s", 1, 1, 1, 0.5, { cached_calls = 1 }) }, -- saved missing
      { usage("m", "s", 1, "1", 1, 0.5) },
      { usage("m", "other", 1, 1, 1, 0.5) },
      { true, "line\n" }, -- no sink
    }
    local seq = 1
    for _, stop in ipairs(stops) do
      local r = rings(seq, { { true, nil, "k" }, stop })
      local got = run(packed, r, seq, math.huge, nil, "m", "s")
      assert.are.same({ seq + 1, 1, 0 }, { got[1], got[2], got[3] })
      assert.equal(SUMS[1], got[7]) -- the first row had no figures
      seq = seq + 1
    end
    -- no model and stage open: figures are flush's to add
    local r = rings(seq, { { true }, { usage("m", "s", 1, 1, 1, 0.5) } })
    local got = run(packed, r, seq, math.huge, nil, nil, nil, {})
    assert.are.same({ seq + 1, 1 }, { got[1], got[2] })
    assert.is_nil(got[7])
  end)

  it("stops before limit, and after a row at which the policy's clock bound passed", function()
    local packed = store.results()
    local r = rings(1, { { true }, { true }, { true }, { true } })
    local got = run(packed, r, 1, 3, nil, "m", "s")
    assert.are.same({ 3, 2 }, { got[1], got[2] })
    got = run(packed, r, 3, math.huge, nil, "m", "s", nil, -1e9, 1) -- long past
    assert.are.same({ 4, 1 }, { got[1], got[2] })
    got = run(packed, r, 4, math.huge, nil, "m", "s", nil, 0, 1e9) -- far ahead
    assert.are.same({ 5, 1 }, { got[1], got[2] })
    assert.equal(4, #packed)
  end)

  it("gives a result it cannot pack as an error, and refuses arguments of the wrong kind", function()
    local packed = store.results()
    packed:adder()(5, "k", "ok")
    local r = rings(5, { { true, nil, "again" } })
    local got = run(packed, r, 5, math.huge, nil, "m", "s")
    assert.are.same({ 5, 1 }, { got[1], got[2] })
    assert.equal("a result's seq must be past the last one added", got[6])
    h.fails_with("the window must hold a row", packed.settle_run, packed, {}, {}, {}, {}, {}, 1, 1, 0)
    h.fails_with("orch.Sink expected", packed.settle_run, packed, {}, {}, {}, {}, {}, 1, 1, 8, "not a sink")
  end)
end)
