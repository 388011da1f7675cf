-- Classify the sentiment of 240 product reviews with the offline mock
-- provider and write one JSON line per review, in input order.
--   orch run examples/classify_reviews.lua
local orch = require("orch")

return orch.workflow {
  name = "classify-reviews",
  input = orch.read.csv("examples/data/reviews.csv"),
  output = orch.write.jsonl("out/reviews-sentiment.jsonl"),
  key = "id",
  llm = { provider = "mock", model = "mock", latency_ms = 40, jitter_ms = 40, concurrency = 32 },
  on_error = "skip",
  stages = {
    orch.stage.prompt {
      template = "Classify the tone of this review as one of: positive, negative, mixed, neutral.\n"
        .. "Review of {{product}}: {{review}}",
      into = "sentiment",
    },
    function(row)
      row.sentiment = row.sentiment:lower()
      row.rating = tonumber(row.rating)
      row.agrees_with_rating = (row.sentiment == "positive") == (row.rating >= 4)
      return row
    end,
  },
}
