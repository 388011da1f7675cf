-- 1,000 rows that each wait 0.1 s (a stand-in for an LLM call): with
-- --concurrency 100 the ideal wall time is 1,000 x 0.1 / 100 = 1 s.
local orch = require("orch")
local n, i = orch.param("rows", 1000), 0
return orch.workflow {
  name = "bench-sleep",
  input = function() i = i + 1; if i <= n then return { id = i } end end,
  output = orch.write.jsonl(orch.param("out", "/tmp/orch-bench-sleep.jsonl")),
  stages = { function(row, ctx) ctx:sleep(0.1); return row end },
}
