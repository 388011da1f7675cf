-- estimate_batch_spec.lua -- the batch column of a sampled estimate
-- (orch.estimate.batch_figures, lua/orch/estimate.lua): each sampled row's
-- tokens priced at the provider's batch price (llm.batch_prices, else half
-- the price), a row that came from the journal included, extrapolated with
-- the same interval as the synchronous figure; the summary and the budget
-- warning of a batched workflow use it. The sample run itself is
-- tests/e2e/estimate_batch.sh.
local estimate = require("orch.estimate")

-- a sampled row: tokens in and out, split over models by their tokens
local function row(tin, tout, by_model)
  return { status = "ok", usage = { llm_calls = 1, tokens_in = tin, tokens_out = tout, cost = 0, by_model = by_model } }
end

describe("orch.estimate batch figures", function()
  it("prices each row's tokens at llm.batch_prices: in and out apart", function()
    local seen = { rows = { row(100, 50, { m = { tokens = 150, cost = 0 } }), row(200, 100, { m = { tokens = 300, cost = 0 } }) } }
    local b = estimate.batch_figures(seen, 12, 10, { prices = { m = { 1, 1 } }, batch_prices = { m = { 0.2, 0.6 } } })
    -- rows: (100 * 0.2 + 50 * 0.6) / 1e6 = 5e-5 and 1e-4; mean 7.5e-5, 10 rows left
    assert.is_true(math.abs(b.row_usd - 7.5e-5) < 1e-15)
    assert.is_true(math.abs(b.expected_usd - 7.5e-4) < 1e-15)
    local e, lo, hi = estimate.interval({ 5e-5, 1e-4 }, 12, 10)
    assert.are.same({ e, lo, hi }, { b.expected_usd, b.low_usd, b.high_usd })
  end)

  it("without batch_prices: half of llm.prices; a row from the journal (cost 0) still counts by its tokens", function()
    local seen = { rows = { row(1000, 1000, { m = { tokens = 2000, cost = 0 } }), row(1000, 1000, { m = { tokens = 2000, cost = 0 } }) } }
    local b = estimate.batch_figures(seen, 4, 2, { prices = { m = { 3, 5 } } })
    assert.is_true(math.abs(b.row_usd - (1000 * 3 + 1000 * 5) / 1e6 * 0.5) < 1e-15)
    assert.are.equal(b.row_usd * 2, b.expected_usd)
  end)

  it("a row calling two models: each priced on its share of the row's tokens", function()
    local seen = { rows = { row(300, 300, { a = { tokens = 200, cost = 0 }, b = { tokens = 400, cost = 0 } }) } }
    local b = estimate.batch_figures(seen, 2, 1, { batch_prices = { a = { 1, 1 }, b = { 2, 2 } } })
    -- a: 100 in + 100 out at 1; b: 200 in + 200 out at 2 -> (200 + 800) / 1e6
    assert.is_true(math.abs(b.row_usd - 1e-3) < 1e-15)
    assert.is_nil(b.low_usd) -- one row: no interval
  end)

  it("the summary and the budget warning of a batched workflow use the batch figures", function()
    local e = { expected_usd = 2.0, low_usd = 1.8, high_usd = 2.2, row_usd = 0.02, rows_left = 100, sample_rows = 10,
      batch = { expected_usd = 1.0, low_usd = 0.9, high_usd = 1.1, row_usd = 0.01 } }
    assert.are.equal("estimate $1.00 at batch prices (90 % interval $0.900 to $1.10) for 100 rows, from a sample of 10; "
      .. "actual $1.05 (+5.0 %)", estimate.beside_actual(e, 1.05))
    assert.is_nil(estimate.budget_warning(e, 1.5)) -- past at the synchronous price, within at the batch price
    assert.are.equal("the expected cost $1.00 is within the budget $1.05, but the interval's top $1.10 is not: "
      .. "the run may pause; to be sure: --budget 1.10", estimate.budget_warning(e, 1.05))
    assert.are.equal("the expected cost $1.00 passes the budget $0.50: the run would pause after about 50 rows; "
      .. "a budget for the whole run: --budget 1.10", estimate.budget_warning(e, 0.5))
  end)
end)
