# orch reaches a provider through the proxy its environment names, as
# curl does (http_proxy, all_proxy; no_proxy exempts hosts), and with
# none named sends straight to the host. With no proxy variable set, a
# pooled handle is told "no proxy" itself so curl skips its environment
# lookups on every request (core/http.c proxy_env_init); this pins that
# a proxy named in the environment still takes effect. The proxy is
# tests/llm_server.py, which serves a whole-URL request target as its
# path and counts it (/admin/stats "proxied").
. tests/lib.sh
cd "$WORK"
start_llm_server
cat >wf.lua <<'LUA'
local orch = require("orch")
local i = 0
return orch.workflow {
  name = "proxy",
  input = function() i = i + 1; if i <= 5 then return { id = i, text = "item " .. i } end end,
  output = orch.write.jsonl(orch.param("out", "out.jsonl")),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = orch.param("base", "") .. "/v1",
          api_key = "test-key", concurrency = 2, max_attempts = 1, timeout = 5 },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA
NOPROXY="-u http_proxy -u https_proxy -u HTTPS_PROXY -u all_proxy -u ALL_PROXY -u no_proxy -u NO_PROXY"
# shellcheck disable=SC2086 # $NOPROXY: the words env takes
orch_env() { (cd "$WORK" && env $NOPROXY "$@") ; }

orch_env http_proxy="$LLM_URL" "$ORCH" run wf.lua --db a.db --set base=http://llm.invalid --set out=a.jsonl >a.log 2>&1
expect_eq "http_proxy: a host no resolver knows is reached through it: exit 0" "$?" 0
expect_eq "http_proxy: every row answered" "$(ids a.jsonl)" "1..5"
expect_eq "http_proxy: the proxy took the 5 requests" "$(llm_stat proxied)" 5

orch_env all_proxy="$LLM_URL" "$ORCH" run wf.lua --db b.db --set base=http://llm.invalid --set out=b.jsonl >b.log 2>&1
expect_eq "all_proxy: exit 0" "$?" 0
expect_eq "all_proxy: the proxy took 5 more" "$(llm_stat proxied)" 10

orch_env http_proxy="$LLM_URL" no_proxy=llm.invalid "$ORCH" run wf.lua --db c.db --set base=http://llm.invalid \
  --set out=c.jsonl >c.log 2>&1
expect_eq "no_proxy names the host: sent straight to it, which does not resolve: exit 1" "$?" 1
expect_grep "no_proxy: the rows fail on the host's name" "llm.invalid" c.log
expect_eq "no_proxy: nothing went through the proxy" "$(llm_stat proxied)" 10

before=$(llm_stat requests)
orch_env "$ORCH" run wf.lua --db d.db --set base="$LLM_URL" --set out=d.jsonl >d.log 2>&1
expect_eq "no proxy variable: straight to the server: exit 0" "$?" 0
expect_eq "no proxy variable: every row answered" "$(ids d.jsonl)" "1..5"
expect_eq "no proxy variable: 5 requests, none as to a proxy" "$(( $(llm_stat requests) - before )) $(llm_stat proxied)" "5 10"
finish
