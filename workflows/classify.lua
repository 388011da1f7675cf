-- Classify each row of a CSV into one of a fixed set of labels.
--   orch run workflows/classify.lua --set input=data.csv --set field=text \
--        --set labels="positive, negative, neutral" --set out=out/classified.jsonl
-- Runs offline with the mock provider unless --set provider=... says otherwise.
local orch = require "orch"

local field = orch.param("field", "review")
local labels = orch.param("labels", "positive, negative, mixed, neutral")

return orch.workflow {
  name = "classify",
  input = orch.read.csv(orch.param("input", "examples/data/reviews.csv")),
  output = orch.write.jsonl(orch.param("out", "out/classified.jsonl")),
  errors = orch.write.jsonl(orch.param("errors", "out/classified-errors.jsonl")),
  key = orch.param("key", "id"),
  llm = {
    provider = orch.param("provider", "mock"),
    model = orch.param("model", "mock"),
    concurrency = orch.param("concurrency", 32),
  },
  on_error = orch.retry(2),
  stages = {
    orch.stage.prompt {
      system = "You are a careful annotator. Answer with the label only.",
      template = "Classify the text as one of: " .. labels .. ".\nText: {{" .. field .. "}}",
      into = "label",
    },
    function(row)
      row.label = row.label:lower():gsub("[%s%.]+$", "")
      return row
    end,
  },
}
