-- orch.pricing: US dollars per million tokens, { input, output }.
-- A workflow overrides or adds entries with llm = { prices = { [model] = { in, out } } }.
-- Provider batch APIs (OpenAI Batch, Anthropic Message Batches) bill
-- BATCH_DISCOUNT of these prices; llm = { batch_prices = {...} } overrides
-- a model's batch price.
local M = {
  ["mock"] = { 0.15, 0.60 },
  ["gpt-4o-mini"] = { 0.15, 0.60 },
  ["gpt-4o"] = { 2.50, 10.00 },
  ["gpt-4.1-mini"] = { 0.40, 1.60 },
  ["gpt-4.1"] = { 2.00, 8.00 },
  ["claude-3-5-haiku-latest"] = { 0.80, 4.00 },
  ["claude-sonnet-4-5"] = { 3.00, 15.00 },
}

--- cost(model, tokens_in, tokens_out [, overrides]) -> dollars (0 for unknown models)
local function cost(model, tin, tout, overrides)
  local p = (overrides and overrides[model]) or M[model]
  if p == nil then
    return 0
  end
  return (tin * p[1] + tout * p[2]) / 1e6
end

local BATCH_DISCOUNT = 0.5 -- both providers bill batched requests at half price

--- batch_cost(model, tokens_in, tokens_out [, overrides [, batch_overrides]]) ->
--- dollars for a request sent through a provider's batch API: the
--- model's batch_overrides entry, else BATCH_DISCOUNT of its price.
local function batch_cost(model, tin, tout, overrides, batch_overrides)
  local b = batch_overrides and batch_overrides[model]
  if b then
    return (tin * b[1] + tout * b[2]) / 1e6
  end
  return cost(model, tin, tout, overrides) * BATCH_DISCOUNT
end

return setmetatable({ cost = cost, batch_cost = batch_cost, BATCH_DISCOUNT = BATCH_DISCOUNT }, { __index = M })
