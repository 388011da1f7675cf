-- Extract structured fields from free text as JSON, checked against a schema.
--   orch run workflows/extract.lua --set input=data.csv --set field=review
--
-- Parameters (--set NAME=VALUE; `orch params workflows/extract.lua` lists them):
--   input        CSV file to read                         (examples/data/reviews.csv)
--   field        column holding the text                  (review)
--   out          JSONL output                             (out/extracted.jsonl)
--   errors       JSONL file of the rows that failed       (out/extracted-errors.jsonl)
--   key          column naming each row; when the input has no such column,
--                rows are keyed by their row number      (id)
--   provider     mock (offline), openai or anthropic     (mock)
--   model        the model's name                        (mock)
--   base_url     the server's URL (default: OPENAI_BASE_URL / ANTHROPIC_BASE_URL,
--                else the provider's public API)
--   concurrency  LLM requests in flight at once          (32)
-- The API key comes from OPENAI_API_KEY (openai) or ANTHROPIC_API_KEY (anthropic).
local orch = require("orch")

local input = orch.param("input", "examples/data/reviews.csv", "CSV file to read")
local field = orch.param("field", "review", "column holding the text")

return orch.workflow {
  name = "extract",
  input = orch.read.csv(input),
  output = orch.write.jsonl(orch.param("out", "out/extracted.jsonl", "JSONL output")),
  errors = orch.write.jsonl(orch.param("errors", "out/extracted-errors.jsonl", "JSONL file of the rows that failed")),
  key = orch.key_if_present(input, orch.param("key", "id", "column naming each row (the row number when the input has none)")),
  llm = orch.llm_params(), -- --set provider=, model=, base_url=, concurrency=
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
