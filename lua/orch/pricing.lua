-- orch.pricing: US dollars per million tokens, { input, output }.
-- A workflow overrides or adds entries with llm = { prices = { [model] = { in, out } } }.
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

return setmetatable({ cost = cost }, { __index = M })
