-- orch.estimate: tokens and dollars of a workflow before spending any
-- (`orch estimate WORKFLOW.lua`, `orch run --dry-run`).
--
-- The workflow runs for real over its whole input, with three things
-- changed: its LLM answers offline (the mock provider's replies, shaped by
-- json/schema as usual, so later stages work) while every call is counted
-- at the workflow model's prices; the output and errors files go to a
-- scratch directory; runs, checkpoints and the journal live in memory.
-- Input tokens are counted as the mock provider counts them (about four
-- characters a token); output tokens as the most each call may produce:
-- its max_tokens, or DEFAULT_OUTPUT_TOKENS where none is set. Budgets, rate
-- limits and the workflow's observers are left out. No network request
-- leaves the process: orch.http is offline for the estimate, and a stage's
-- orch.http.request gets the workflow's orch.http.on_estimate reply, or nil
-- and an error saying it was not sent; the report counts them.
local mock = require "orch.providers.mock"
local llm = require "orch.llm"
local pricing = require "orch.pricing"
local http = require "orch.http"

local M = {}

M.DEFAULT_OUTPUT_TOKENS = 512

local count = require("orch.fmt").count

llm.register("estimate", {
  call = function(req, cfg, ctx)
    local text, usage = mock.call(req, { latency_ms = 0 }, ctx)
    usage.output = req.max_tokens or cfg.max_tokens or M.DEFAULT_OUTPUT_TOKENS
    return text, usage
  end,
})

-- A copy of an io spec (orch.write.*) writing into dir instead.
local function redirect(spec, dir, name)
  if spec == nil then
    return nil
  end
  local c = {}
  for k, v in pairs(spec) do
    c[k] = v
  end
  c.path = dir .. "/" .. name
  return setmetatable(c, getmetatable(spec))
end

--- prepare(wf, dir) -> the workflow to run, and report(log) that prints the
--- estimate once it has run (returns false when nothing was run).
function M.prepare(wf, dir)
  local e = {}
  for k, v in pairs(wf) do
    e[k] = v
  end
  e.output = redirect(wf.output, dir, "output")
  e.errors = redirect(wf.errors, dir, "errors")
  e.budget, e.checkpoint = nil, nil
  local finish
  e.observers = { { on_finish = function(ev)
    finish = ev
  end } }
  local model
  if wf.llm then
    model = wf.llm.model or wf.llm.provider
    e.llm = { provider = "estimate", model = model, prices = wf.llm.prices, system = wf.llm.system,
      temperature = wf.llm.temperature, max_tokens = wf.llm.max_tokens, concurrency = wf.llm.concurrency }
  end
  setmetatable(e, getmetatable(wf))
  http.offline(true) -- until report: the estimate runs next

  local function report(log)
    local not_sent, on_estimate = http.offline(false)
    if finish == nil then
      return false
    end
    log(string.format("estimate for %s: %s %s, %s LLM calls", wf.name, count(finish.rows), wf.steps and "steps" or "rows",
      count(finish.llm_calls)))
    local models = {}
    for name in pairs(finish.cost_by_model or {}) do
      models[#models + 1] = name
    end
    table.sort(models)
    local tin, tout = finish.tokens_in, finish.tokens_out
    log(string.format("  input tokens   ~%s (about 4 characters a token)", count(tin)))
    log(string.format("  output tokens  at most %s (each call's max_tokens, or %d where none is set)", count(tout),
      M.DEFAULT_OUTPUT_TOKENS))
    local priced = {}
    for _, name in ipairs(models) do
      local p = (wf.llm and wf.llm.prices and wf.llm.prices[name]) or pricing[name]
      priced[#priced + 1] = p and string.format("%s at $%g / $%g per million tokens in / out", name, p[1], p[2])
        or (name .. " has no price: counted as $0; give llm.prices")
    end
    log(string.format("  cost           at most $%.4f%s", finish.cost_usd,
      #priced > 0 and (" (" .. table.concat(priced, "; ") .. ")") or ""))
    local batched = wf.llm and require("orch.llm").providers[wf.llm.provider]
    if batched and batched.batch then -- side by side: the provider's batch API bills a fraction
      log(string.format("  batch cost     at most $%.4f with llm.batch = true (the provider's batch API: %g%% of the "
        .. "price, answers within 24 h)", finish.cost_usd * pricing.BATCH_DISCOUNT, pricing.BATCH_DISCOUNT * 100))
    end
    if finish.failed > 0 then
      log(string.format("  %s rows failed during the estimate; their calls after the failure are not counted",
        count(finish.failed)))
    end
    if not_sent > 0 then
      log(string.format("  orch.http       %s request%s not sent (%s)", count(not_sent), not_sent == 1 and "" or "s",
        on_estimate and "answered by the workflow's orch.http.on_estimate"
          or "answered with an error; orch.http.on_estimate(fn) gives them a reply"))
    end
    log("  nothing was sent, written or stored; replies already in the journal would cost $0")
    return true
  end
  return e, report
end

return M
