-- Row-engine overhead: every row of a CSV goes through one no-op Lua stage
-- into JSONL, no waiting, so the figure is orch's own cost per row.
-- --set policy=rows|adaptive|seconds picks the checkpoint policy (rows:
-- the default, every 500 rows), for bench/run.sh's policy comparison.
local orch = require("orch")
local policies = {
  rows = orch.policy.every_rows(500),
  adaptive = orch.policy.adaptive {},
  seconds = orch.policy.every_seconds(1),
}
return orch.workflow {
  name = "bench-passthrough",
  input = orch.read.csv(orch.param("input", "/tmp/orch-bench-rows.csv")),
  output = orch.write.jsonl(orch.param("out", "/tmp/orch-bench-rows.jsonl")),
  key = "id",
  checkpoint = policies[orch.param("policy", "rows")],
  stages = { function(row) row.n = #row.text; return row end },
}
