-- Summarise a text field of each JSONL or CSV row in one sentence.
--   orch run workflows/summarise.lua --set input=docs.jsonl --set field=body
--
-- Parameters (--set NAME=VALUE; `orch params workflows/summarise.lua` lists them):
--   input        JSONL (*.jsonl) or CSV file to read      (examples/data/reviews.csv)
--   field        field holding the text; rows where it is empty are dropped (review)
--   out          CSV output: the key and the summary      (out/summaries.csv)
--   errors       JSONL file of the rows that failed       (out/summaries-errors.jsonl)
--   key          field naming each row; when the input has no such field,
--                rows are keyed by their row number      (id)
--   provider     mock (offline), openai or anthropic     (mock)
--   model        the model's name                        (mock)
--   base_url     the server's URL (default: OPENAI_BASE_URL / ANTHROPIC_BASE_URL,
--                else the provider's public API)
--   concurrency  LLM requests in flight at once          (32)
-- The API key comes from OPENAI_API_KEY (openai) or ANTHROPIC_API_KEY (anthropic).
local orch = require("orch")

local input = orch.param("input", "examples/data/reviews.csv", "JSONL (*.jsonl) or CSV file to read")
local field = orch.param("field", "review", "field holding the text (rows where it is empty are dropped)")
local key = orch.param("key", "id", "field naming each row (the row number when the input has none)")

local key_field = orch.key_if_present(input, key)

return orch.workflow {
  name = "summarise",
  input = input:match("%.jsonl$") and orch.read.jsonl(input) or orch.read.csv(input),
  -- without a key field, the output's first column is the row number
  output = orch.write.csv(orch.param("out", "out/summaries.csv", "CSV output: the key and the summary"),
    { columns = { key_field or "row", "summary" } }),
  errors = orch.write.jsonl(orch.param("errors", "out/summaries-errors.jsonl", "JSONL file of the rows that failed")),
  key = key_field,
  llm = orch.llm_params { max_tokens = 80 }, -- --set provider=, model=, base_url=, concurrency=
  stages = {
    function(row, ctx)
      if (row[field] or "") == "" then
        return nil -- nothing to summarise: drop the row
      end
      if key_field == nil then
        row.row = ctx.row
      end
      return row
    end,
    orch.stage.prompt {
      template = "Summarise in one sentence of at most 20 words:\n{{" .. field .. "}}",
      into = "summary",
    },
  },
}
