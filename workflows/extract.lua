-- Extract structured fields from free text as JSON, checked against a schema.
--   orch run workflows/extract.lua --set input=data.csv --set field=review
local orch = require "orch"

local field = orch.param("field", "review")

return orch.workflow {
  name = "extract",
  input = orch.read.csv(orch.param("input", "examples/data/reviews.csv")),
  output = orch.write.jsonl(orch.param("out", "out/extracted.jsonl")),
  errors = orch.write.jsonl(orch.param("errors", "out/extracted-errors.jsonl")),
  key = orch.param("key", "id"),
  llm = {
    provider = orch.param("provider", "mock"),
    model = orch.param("model", "mock"),
    concurrency = orch.param("concurrency", 32),
  },
  on_error = orch.retry(1),
  stages = {
    orch.stage.prompt {
      template = "From the review below, extract the aspect discussed most, the overall sentiment "
        .. "(one of: positive, negative, mixed, neutral) and whether the author would recommend it.\n"
        .. "Review: {{" .. field .. "}}",
      schema = {
        type = "object",
        required = { "aspect", "sentiment", "would_recommend" },
        properties = {
          aspect = { type = "string" },
          sentiment = { type = "string", enum = { "positive", "negative", "mixed", "neutral" } },
          would_recommend = { type = "boolean" },
        },
      },
      into = "extracted",
    },
  },
}
