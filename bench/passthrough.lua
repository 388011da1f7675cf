-- Row-engine overhead: every row of a CSV goes through one no-op Lua stage
-- into JSONL, no waiting, so the figure is orch's own cost per row.
local orch = require "orch"
return orch.workflow {
  name = "bench-passthrough",
  input = orch.read.csv(orch.param("input", "/tmp/orch-bench-rows.csv")),
  output = orch.write.jsonl(orch.param("out", "/tmp/orch-bench-rows.jsonl")),
  key = "id",
  stages = { function(row) row.n = #row.text; return row end },
}
