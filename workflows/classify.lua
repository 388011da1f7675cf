-- Classify each row of a CSV into one of a fixed set of labels.
--   orch run workflows/classify.lua --set input=data.csv --set field=text \
--        --set labels="positive, negative, neutral" --set out=out/classified.jsonl
--
-- Parameters (--set NAME=VALUE; `orch params workflows/classify.lua` lists them):
--   input        CSV file to classify                     (examples/data/reviews.csv)
--   field        column holding the text                  (review)
--   labels       the labels, comma-separated              (positive, negative, mixed, neutral)
--   out          JSONL output                             (out/classified.jsonl)
--   errors       JSONL file of the rows that failed       (out/classified-errors.jsonl)
--   key          column naming each row; when the input has no such column,
--                rows are keyed by their row number      (id)
--   provider     mock (offline), openai or anthropic     (mock)
--   model        the model's name                        (mock)
--   base_url     the server's URL (default: OPENAI_BASE_URL / ANTHROPIC_BASE_URL,
--                else the provider's public API)
--   concurrency  LLM requests in flight at once          (32)
-- The API key comes from OPENAI_API_KEY (openai) or ANTHROPIC_API_KEY (anthropic).
-- Runs offline with the mock provider unless --set provider=... says otherwise.
local orch = require("orch")

local input = orch.param("input", "examples/data/reviews.csv", "CSV file to classify")
local field = orch.param("field", "review", "column holding the text")
local labels = orch.param("labels", "positive, negative, mixed, neutral", "the labels, comma-separated")

return orch.workflow {
  name = "classify",
  input = orch.read.csv(input),
  output = orch.write.jsonl(orch.param("out", "out/classified.jsonl", "JSONL output")),
  errors = orch.write.jsonl(orch.param("errors", "out/classified-errors.jsonl", "JSONL file of the rows that failed")),
  key = orch.key_if_present(input, orch.param("key", "id", "column naming each row (the row number when the input has none)")),
  llm = orch.llm_params(), -- --set provider=, model=, base_url=, concurrency=
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
