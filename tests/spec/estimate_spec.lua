-- estimate_spec.lua -- orch.estimate's arithmetic: the 90 % interval of a
-- sampled estimate, the seeded draw of --spread, the budget warning and
-- the estimate-beside-actual line (lua/orch/estimate.lua). The sample run
-- itself, through the journal, is tests/e2e/estimate_sample.sh.
local estimate = require("orch.estimate")

describe("orch.estimate sampled figures", function()
  it("t90 is Student's t(0.95, df): the table below 11, the expansion above", function()
    assert.are.equal(6.314, estimate.t90(1))
    assert.are.equal(1.812, estimate.t90(10))
    -- published values: t(0.95, 11) = 1.796, 49 = 1.677, 120 = 1.658; the normal's 1.645 in the limit
    assert.is_true(math.abs(estimate.t90(11) - 1.796) < 0.002)
    assert.is_true(math.abs(estimate.t90(49) - 1.677) < 0.001)
    assert.is_true(math.abs(estimate.t90(120) - 1.658) < 0.001)
    assert.is_true(math.abs(estimate.t90(1e6) - 1.645) < 0.001)
  end)

  it("interval: the mean times the rows left, +- t * s * sqrt(left * total / n)", function()
    -- values 1..5: mean 3, s = sqrt(2.5); total 105: 100 rows left
    local e, lo, hi, mean = estimate.interval({ 1, 2, 3, 4, 5 }, 105)
    assert.are.equal(3, mean)
    assert.are.equal(300, e)
    local half = 2.132 * math.sqrt(2.5) * math.sqrt(100 * 105 / 5)
    assert.is_true(math.abs(lo - (300 - half)) < 1e-9)
    assert.is_true(math.abs(hi - (300 + half)) < 1e-9)
  end)

  it("interval: the rows left may be fewer than those not sampled (a run estimated half-way)", function()
    local e, lo, hi = estimate.interval({ 1, 2, 3, 4, 5 }, 105, 40)
    assert.are.equal(120, e)
    local half = 2.132 * math.sqrt(2.5) * math.sqrt(40 * 45 / 5)
    assert.is_true(math.abs(lo - (120 - half)) < 1e-9)
    assert.is_true(math.abs(hi - (120 + half)) < 1e-9)
  end)

  it("interval: no spread, no width; nothing left, nothing expected; one value, no interval", function()
    local e, lo, hi = estimate.interval({ 2, 2, 2 }, 10)
    assert.are.same({ 14, 14, 14 }, { e, lo, hi })
    e, lo, hi = estimate.interval({ 1, 3 }, 2)
    assert.are.same({ 0, 0, 0 }, { e, lo, hi })
    e, lo, hi = estimate.interval({ 4 }, 10)
    assert.are.equal(36, e)
    assert.is_nil(lo)
    assert.is_nil(hi)
  end)

  it("interval: the low end never goes below $0", function()
    local _, lo = estimate.interval({ 0, 0, 0, 100 }, 1000)
    assert.are.equal(0, lo)
  end)

  it("interval: 90 % of predictions cover the true total, on a skewed cost", function()
    -- rows cost 1 + an exponential draw; a sample of 50 predicts the other 950
    local seed = 12345
    local function u()
      seed = (seed * 1103515245 + 12345) % 2147483648
      return (seed + 0.5) / 2147483648
    end
    local covered, trials = 0, 400
    for _ = 1, trials do
      local sample, rest = {}, 0
      for i = 1, 1000 do
        local v = 1 - math.log(u())
        if i <= 50 then
          sample[i] = v
        else
          rest = rest + v
        end
      end
      local _, lo, hi = estimate.interval(sample, 1000)
      if lo <= rest and rest <= hi then
        covered = covered + 1
      end
    end
    assert.is_true(covered / trials > 0.84 and covered / trials < 0.95, "covered " .. covered .. " of " .. trials)
  end)

  it("orch.reader.count: a file's data records by a scan, quotes and blank lines minded", function()
    local reader = require("orch.reader")
    local path = os.tmpname()
    local fh = assert(io.open(path, "wb"))
    fh:write('id,text\n1,"two\nlines"\n\n2,b\r\n3,c')
    fh:close()
    assert.are.equal(3, reader.count(path, "csv"))
    assert.are.equal(5, reader.count(path, "lines")) -- as lines: the header and the quoted newline count too
    os.remove(path)
    local n, err = reader.count(path, "csv")
    assert.is_nil(n)
    assert.are.equal(path .. ": No such file or directory", err)
  end)

  it("choose: the first n rows, or n distinct rows drawn through the input by the seed", function()
    assert.are.same({ true, true, true }, estimate.choose(10, 3, false))
    assert.are.same({ true, true }, estimate.choose(2, 5, true, 1)) -- fewer rows than asked: all of them
    local a, b, c = estimate.choose(1000, 50, true, 7), estimate.choose(1000, 50, true, 7),
      estimate.choose(1000, 50, true, 8)
    local list = require("orch.check").sorted_keys
    assert.are.same(list(a), list(b))
    assert.are_not.same(list(a), list(c))
    local la = list(a)
    assert.are.equal(50, #la)
    assert.is_true(la[1] >= 1 and la[50] <= 1000)
    assert.is_true(la[50] > 500 and la[1] < 500, "drawn through the input, not from its start")
  end)

  it("choose: every row as likely as any other", function()
    local hits = {}
    for seed = 1, 2000 do
      for i in pairs(estimate.choose(10, 3, true, seed)) do
        hits[i] = (hits[i] or 0) + 1
      end
    end
    for i = 1, 10 do -- 600 expected each
      assert.is_true(hits[i] > 520 and hits[i] < 680, "row " .. i .. " drawn " .. tostring(hits[i]) .. " times")
    end
  end)

  it("budget_warning: the expected cost past the budget, or only the interval's top, or nothing", function()
    local e = { expected_usd = 2.0, low_usd = 1.5, high_usd = 2.5, row_usd = 0.001, rows_left = 2000 }
    assert.are.equal("the expected cost $2.00 passes the budget $1.00: the run would pause after about 1,000 rows; "
      .. "a budget for the whole run: --budget 2.50", estimate.budget_warning(e, 1.0))
    assert.are.equal("the expected cost $2.00 is within the budget $2.20, but the interval's top $2.50 is not: "
      .. "the run may pause; to be sure: --budget 2.50", estimate.budget_warning(e, 2.2))
    assert.is_nil(estimate.budget_warning(e, 3))
    assert.is_nil(estimate.budget_warning(e, nil))
  end)

  it("beside_actual: the estimate, its interval and the actual with the difference", function()
    local e = { expected_usd = 0.002, low_usd = 0.0019, high_usd = 0.0021, rows_left = 190, sample_rows = 50 }
    assert.are.equal("estimate $0.00200 (90 % interval $0.00190 to $0.00210) for 190 rows, from a sample of 50; "
      .. "actual $0.00210 (+5.0 %)", estimate.beside_actual(e, 0.0021))
    assert.are.equal("estimate $0.00200 (90 % interval $0.00190 to $0.00210) for 190 rows, from a sample of 50; "
      .. "not started yet", estimate.beside_actual(e, 0, "pending"))
    assert.are.equal("estimate $0.00200 (90 % interval $0.00190 to $0.00210) for 190 rows, from a sample of 50; "
      .. "spent so far $0.00100", estimate.beside_actual(e, 0.001, "paused"))
    e.spent_before = 0.0005 -- estimated half-way: the actual is what the run spent after it
    assert.are.equal("estimate $0.00200 (90 % interval $0.00190 to $0.00210) for 190 rows, from a sample of 50; "
      .. "actual since the estimate $0.00200 (+0.0 %)", estimate.beside_actual(e, 0.0025))
  end)

  it("figures: per-row dollars count journal replies at what they cost when paid", function()
    local seen = { finish = { cost_usd = 0.01 }, rows = {
      { status = "ok", usage = { llm_calls = 1, tokens_in = 10, tokens_out = 2, cost = 0.01, retries = 3,
        by_model = { m = { calls = 1, tokens = 12, cost = 0.01 } } } },
      { status = "ok", usage = { llm_calls = 1, tokens_in = 10, tokens_out = 2, cost = 0, saved = 0.01,
        by_model = { m = { calls = 1, tokens = 12, cost = 0 } } } },
      { status = "failed" },
    } }
    local e = estimate.figures(seen, 9)
    assert.are.equal(3, e.sample_rows)
    assert.are.equal(6, e.rows_left)
    assert.are.equal(1, e.failed)
    assert.is_true(math.abs(e.expected_usd - 6 * 0.02 / 3) < 1e-12)
    assert.is_true(math.abs(e.by_model.m - e.expected_usd) < 1e-12)
    assert.are.equal(40, e.tokens_in.expected)
    assert.is_true(math.abs(e.calls_per_row - 2 / 3) < 1e-12)
    assert.are.equal(1.5, e.retries_per_call)
  end)
end)
