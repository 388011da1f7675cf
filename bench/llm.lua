-- 4,000 LLM calls against tests/llm_server.py (250 ms per reply) at
-- concurrency 200: ideal wall time N*L/C = 4000 * 0.25 / 200 = 5 s.
local orch = require("orch")
local n, i = orch.param("rows", 4000), 0
return orch.workflow {
  name = "bench-llm",
  input = function() i = i + 1; if i <= n then return { id = i, text = "review number " .. i } end end,
  output = orch.write.jsonl(orch.param("out", "/tmp/orch-bench-llm.jsonl")),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = orch.param("base_url", "http://127.0.0.1:8000/v1"),
          api_key = "bench", concurrency = orch.param("concurrency", 200), timeout = 30 },
  stages = { orch.stage.prompt { template = "Classify: {{text}}", into = "label" } },
}
