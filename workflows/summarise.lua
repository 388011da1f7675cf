-- Summarise a text field of each JSONL or CSV row in one sentence.
--   orch run workflows/summarise.lua --set input=docs.jsonl --set field=body
local orch = require "orch"

local input = orch.param("input", "examples/data/reviews.csv")
local field = orch.param("field", "review")

return orch.workflow {
  name = "summarise",
  input = input:match("%.jsonl$") and orch.read.jsonl(input) or orch.read.csv(input),
  output = orch.write.csv(orch.param("out", "out/summaries.csv"), { columns = { "id", "summary" } }),
  key = orch.param("key", "id"),
  llm = {
    provider = orch.param("provider", "mock"),
    model = orch.param("model", "mock"),
    concurrency = orch.param("concurrency", 32),
    max_tokens = 80,
  },
  stages = {
    function(row)
      if (row[field] or "") == "" then
        return nil -- nothing to summarise: drop the row
      end
      return row
    end,
    orch.stage.prompt {
      template = "Summarise in one sentence of at most 20 words:\n{{" .. field .. "}}",
      into = "summary",
    },
  },
}
