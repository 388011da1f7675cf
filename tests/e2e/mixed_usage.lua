-- mixed_usage.lua -- rows of every kind of LLM usage, for the scenarios
-- that check a run's figures to the last bit (usage_sums.sh, settle_c.sh;
-- each copies this file into its work directory): a provider "fixed"
-- whose costs are fractions, rows whose kind picks their calls, and the
-- stage that makes them.
local orch = require("orch")
local M = {}

orch.llm.register("fixed", { call = function(req)
  if req.prompt:find("^est") then
    return "e:" .. req.prompt -- no usage: counted from the text
  end
  return "r:" .. req.prompt, { input = #req.prompt, output = 3 + #req.prompt % 5 }
end })

-- the llm table of such a workflow: two models, at prices that do not add
-- up exactly
M.llm = { provider = "fixed", model = "a", concurrency = 50, max_tokens = 8,
  prices = { a = { 0.3, 0.7 }, b = { 1.1, 2.3 } } }

--- rows(n, kinds) -> rows 1..n, row i of kind kinds[i % 10] or "one"
function M.rows(n, kinds)
  local rows = {}
  for i = 1, n do
    rows[i] = { id = i, kind = kinds[i % 10] or "one" }
  end
  return rows
end

-- one call (one model and stage: flat usage); two_models: a second call of
-- model b (nested usage); none: no call; fail: a call, then an error;
-- est: a call without usage (estimated); drop: a call, then dropped
M.stage = { name = "ask", run = function(row, ctx)
  local k = row.kind
  if k == "none" then return row end
  ctx:llm { prompt = (k == "est" and "est" or "q") .. row.id .. string.rep("x", row.id % 13) }
  if k == "two_models" then ctx:llm { prompt = "b" .. row.id, model = "b" } end
  if k == "fail" then error("failed after its call") end
  if k == "drop" then return nil end
  return row
end }

return M
