# orch estimate / orch run --dry-run: the whole input runs offline (the
# provider points at a port nothing listens on, so a sent request would
# fail), schema replies keep later stages working, nothing is written or
# stored, and tokens and dollars follow the model's prices and max_tokens.
# A stage's own orch.http.request sends nothing either (a real server
# counts zero hits): it gets an error, or the workflow's on_estimate reply.
. tests/lib.sh
cd "$WORK"
seq 1 100 | awk 'BEGIN{print "id,text"} {print $1 ",review " $1}' >rows.csv
cat >est.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "est",
  input = orch.read.csv("rows.csv"),
  output = orch.write.jsonl("out/est.jsonl"),
  errors = orch.write.jsonl("out/est-errors.jsonl"),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "http://127.0.0.1:9/v1", api_key = "k",
          max_tokens = 10, rpm = 1 },
  budget = { max_usd = 0.000001 },
  stages = {
    orch.stage.prompt { template = "Classify as one of: good, bad. {{text}}", into = "label",
      schema = { type = "object", properties = { label = { type = "string" } }, required = { "label" } } },
    function(row) assert(type(row.label) == "table", "the schema reply is a table"); return row end,
  },
}
LUA
run_orch est.log estimate est.lua
expect_eq "estimate: exit 0" "$RC" 0
expect_grep "counts rows and calls" "estimate for est: 100 rows, 100 LLM calls" est.log
expect_grep "output tokens from max_tokens" "output tokens  at most 1,000 \(each call's max_tokens" est.log
expect_grep "and says the figure is an upper bound" "the output figure is an upper bound: --sample N runs N rows for real" est.log
tin=$(grep -o 'input tokens   ~[0-9,]*' est.log | tr -dc 0-9)
want=$(python3 -c "print('%.4f' % (($tin * 0.15 + 1000 * 0.60) / 1e6))")
expect_grep "dollars at the model's prices" "cost           at most \\\$$want \(gpt-4o-mini at \\\$0.15 / \\\$0.6 per million" est.log
expect_eq "no output, errors file or state DB" "$(ls -A)" "est.log
est.lua
rows.csv"
run_orch dry.log run --dry-run est.lua
expect_eq "run --dry-run: exit 0" "$RC" 0
expect_grep "is the estimate" "estimate for est: 100 rows, 100 LLM calls" dry.log
expect_eq "and writes nothing either" "$(ls -A | grep -c -v -e '\.log$' -e '\.lua$' -e '\.csv$')" 0
sed 's/template = /templat = /' est.lua >bad.lua
run_orch bad.log estimate bad.lua
expect_eq "a workflow error: exit 2" "$RC" 2
expect_grep "named at its line" "bad.lua:[0-9]+: orch.stage.prompt: unknown key 'templat'" bad.log

start_llm_server
cat >net.lua <<LUA
local orch = require("orch")
local request = orch.http.request -- taken before the estimate starts: still offline
if orch.param("stand_in", false) then
  orch.http.on_estimate(function(req) return { status = 200, body = "stand-in for " .. req.url, headers = {} } end)
end
return orch.workflow {
  name = "net",
  input = { { id = 1 }, { id = 2 }, { id = 3 } },
  output = orch.write.jsonl("out/net.jsonl"),
  errors = orch.write.jsonl("out/net-errors.jsonl"),
  key = "id",
  llm = { provider = "mock" },
  stages = { function(row)
    local r, err = request { method = "POST", url = "$LLM_URL/v1/chat/completions",
      headers = { authorization = "Bearer k" }, body = '{"model":"m","messages":[{"role":"user","content":"x"}]}' }
    row.net = r and r.body or error(err, 0)
    return row
  end },
}
LUA
run_orch net.log estimate net.lua
expect_eq "a stage that calls orch.http: the estimate still runs, exit 0" "$RC" 0
expect_eq "the server saw no request" "$(llm_stat requests)" 0
expect_grep "the summary counts what was not sent" "orch.http       3 requests not sent \(answered with an error; orch.http.on_estimate\(fn\) gives them a reply\)" net.log
expect_grep "and the rows say why" "3 rows failed during the estimate" net.log
run_orch net2.log run --dry-run net.lua --set stand_in=true
expect_eq "--dry-run with a stand-in reply: exit 0" "$RC" 0
expect_eq "the server still saw no request" "$(llm_stat requests)" 0
expect_grep "answered by the workflow" "orch.http       3 requests not sent \(answered by the workflow's orch.http.on_estimate\)" net2.log
if grep -q "rows failed" net2.log; then bad "rows failed with a stand-in reply"; else ok "no row failed with a stand-in reply"; fi
# the estimate leaves orch.http as it was: the same workflow run for real reaches the server
run_orch net3.log run net.lua --db net.db
expect_eq "a real run sends: exit 0" "$RC" 0
expect_eq "three requests" "$(llm_stat requests)" 3
finish
