-- Live Lua bytes while rows wait on their replies: row 2000 sleeps 0.5 s (the
-- rows before it are then waiting on the server), collects twice and prints
-- collectgarbage("count"). Run against bench/llm_server_fast.py --latency-ms 1000:
--   orch run -q bench/inflight_mem.lua --set base_url=http://127.0.0.1:PORT/v1
-- (--set probe=1 --set rows=1 gives the figure with none waiting: the probe is then the only row)
local orch = require("orch")
local n, i = orch.param("rows", 8000), 0
local probe = { [orch.param("probe", 2000)] = true }
return orch.workflow {
  name = "bench-mem",
  input = function() i = i + 1; if i <= n then return { id = i, text = "review number " .. i } end end,
  output = orch.write.jsonl(orch.param("out", "/tmp/orch-bench-inflight.jsonl")),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = orch.param("base_url", "http://127.0.0.1:8000/v1"),
          api_key = "bench", concurrency = orch.param("concurrency", 2000), timeout = 30 },
  stages = {
    function(row, ctx)
      if probe[ctx.row] then
        ctx:sleep(0.5) -- the rows before it are waiting on their replies by then
        collectgarbage("collect"); collectgarbage("collect")
        io.stderr:write(string.format("row %d: live Lua %.1f KB\n", ctx.row, collectgarbage("count")))
      end
      return row
    end,
    orch.stage.prompt { template = "Classify: {{text}}", into = "label" } },
}
