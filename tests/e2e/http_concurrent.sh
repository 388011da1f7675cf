# Concurrent requests to a plain http:// host go out at once: on HTTP/1.1
# nothing multiplexes, so a request must not wait for another's connection
# (CURLOPT_PIPEWAIT) while its timeout runs. A slow local server (llama.cpp,
# vLLM, Ollama are plain HTTP) sees every row's request together.
. tests/lib.sh
cd "$WORK"
start_llm_server --latency-ms 1500
cat >slow.lua <<LUA
local orch = require("orch")
local n, i = orch.param("rows", 8), 0
return orch.workflow {
  name = "slow-server",
  input = function() i = i + 1; if i <= n then return { id = i, text = "item " .. i } end end,
  output = orch.write.jsonl("out/slow.jsonl"),
  errors = orch.write.jsonl("out/slow-errors.jsonl"),
  key = "id",
  concurrency = 8,
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$LLM_URL/v1", api_key = "test-key",
          concurrency = 8, timeout = 2, max_attempts = 1, max_tokens = 16 },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA
run_orch run.log run slow.lua --db s.db
expect_eq "8 rows against a 1.5 s server with timeout = 2: exit 0" "$RC" 0
expect_eq "every row succeeded" "$(wc -l <out/slow.jsonl)" 8
expect_eq "no row failed" "$(wc -l <out/slow-errors.jsonl)" 0
expect_eq "the server saw 8 requests" "$(llm_stat requests)" 8
expect_eq "all 8 at once" "$(llm_stat max_inflight)" 8
[ "$FAIL" -eq 0 ] || cat run.log out/slow-errors.jsonl
finish
