-- A multi-step workflow: load reviews, then two independent analyses at
-- once (an LLM summary per product; rating figures), then a Markdown report.
-- Each step's output is kept with the run, so a resumed run only redoes
-- the steps that had not finished.
--   orch run workflows/report.lua [--set input=reviews.csv] [--set report=out/report.md]
--
-- Parameters (--set NAME=VALUE; `orch params workflows/report.lua` lists them):
--   input        CSV of reviews (columns product, rating, review)  (examples/data/reviews.csv)
--   report       the Markdown report written                      (out/report.md)
--   out          JSONL of each step's output                      (out/report-steps.jsonl)
--   provider     mock (offline), openai or anthropic              (mock)
--   model        the model's name                                 (mock)
--   base_url     the server's URL (default: OPENAI_BASE_URL / ANTHROPIC_BASE_URL,
--                else the provider's public API)
--   concurrency  LLM requests in flight at once                   (8)
-- The API key comes from OPENAI_API_KEY (openai) or ANTHROPIC_API_KEY (anthropic).
-- Steps have no key: each is named.
local orch = require("orch")

local input = orch.param("input", "examples/data/reviews.csv", "CSV of reviews (columns product, rating, review)")
local report_path = orch.param("report", "out/report.md", "the Markdown report written")

return orch.workflow {
  name = "review-report",
  output = orch.write.jsonl(orch.param("out", "out/report-steps.jsonl", "JSONL of each step's output")),
  llm = orch.llm_params { max_tokens = 120, concurrency = 8 }, -- --set provider=, model=, base_url=, concurrency=
  steps = {
    { name = "load", run = function()
      -- reviews grouped by product: { [product] = { { rating =, review = }, ... } }
      local by_product, n = {}, 0
      for row in orch.rows(input) do
        by_product[row.product] = by_product[row.product] or {}
        table.insert(by_product[row.product], { rating = tonumber(row.rating), review = row.review })
        n = n + 1
      end
      return { products = by_product, reviews = n }
    end },
    { name = "summaries", after = { "load" }, run = function(ctx, inputs)
      local out = {}
      for product, reviews in pairs(inputs.load.products) do
        local texts = {}
        for i = 1, math.min(#reviews, 5) do
          texts[i] = reviews[i].review
        end
        out[product] = ctx:llm { prompt = "Summarise what buyers say about " .. product .. ": "
          .. table.concat(texts, " / ") }
      end
      return out
    end },
    { name = "ratings", after = { "load" }, run = function(_, inputs)
      local out = {}
      for product, reviews in pairs(inputs.load.products) do
        local sum = 0
        for _, r in ipairs(reviews) do
          sum = sum + (r.rating or 0)
        end
        out[product] = { reviews = #reviews, mean = math.floor(sum / #reviews * 100 + 0.5) / 100 }
      end
      return out
    end },
    { name = "report", after = { "summaries", "ratings" }, run = function(_, inputs)
      local products = {}
      for product in pairs(inputs.ratings) do
        products[#products + 1] = product
      end
      table.sort(products)
      local lines = { "# Review report", "" }
      for _, p in ipairs(products) do
        local r = inputs.ratings[p]
        lines[#lines + 1] = string.format("## %s (%d reviews, mean rating %.2f)", p, r.reviews, r.mean)
        lines[#lines + 1] = ""
        lines[#lines + 1] = inputs.summaries[p]
        lines[#lines + 1] = ""
      end
      local path = report_path
      local f = assert(io.open(path, "w"))
      f:write(table.concat(lines, "\n"))
      f:close()
      return { path = path, products = #products }
    end },
  },
}
