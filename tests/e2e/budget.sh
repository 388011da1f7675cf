# Budgets against tests/llm_server.py: each request in flight reserves its
# worst case (max_tokens at the model's price), yet a budget far above the
# real cost is not paused by those reservations: requests wait for the ones
# in flight to settle. A run paused by its budget says, here and in
# `orch status`, a --budget that finishes it, and that budget does.
. tests/lib.sh
cd "$WORK"
start_llm_server
seq 1 200 | awk 'BEGIN{print "id,text"} {print $1 ",row " $1}' >rows.csv
cat >b.lua <<LUA
local orch = require("orch")
return orch.workflow {
  name = "budget",
  input = orch.read.csv(orch.param("input", "rows.csv")),
  output = orch.write.jsonl(orch.param("out", "out/b.jsonl")),
  key = "id",
  -- a request costs about \$0.014 (14 tokens at \$1,000 a million); its worst
  -- case (512 tokens out, the default max_tokens) about \$0.52
  llm = { provider = "openai", model = "m", base_url = "$LLM_URL/v1", api_key = "k", concurrency = 16,
          prices = { m = { 1000, 1000 } } },
  budget = { max_usd = orch.param("budget", 2.0) },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA
head -61 rows.csv >rows60.csv
run_orch a.log run b.lua --db a.db --set input=rows60.csv --set out=out/a.jsonl
expect_eq "60 rows (about \$0.84) within \$2.00, 16 at once, worst case \$0.52 each: exit 0" "$RC" 0
expect_eq "every row is written" "$(wc -l <out/a.jsonl)" 60
expect_eq "the server saw one request a row" "$(llm_stat requests)" 60

llm_admin reset
run_orch p.log run b.lua --db p.db --set budget=1.5 --set out=out/p.jsonl
expect_eq "200 rows (about \$2.80) with \$1.50: paused, exit 3" "$RC" 3
rid=$(grep -Eo 'budget-[0-9a-f]+' p.log | head -1)
expect_grep "the pause says why" "budget of \\\$1.5000 reached: \\\$[0-9.]+ spent, next request up to \\\$0.52" p.log
expect_grep "and a budget that finishes, from the rows left and the cost per row" \
  "about [0-9,]+ rows left at \\\$0.01[0-9]+ a row: orch resume $rid --budget [0-9]+\.[0-9]{2}" p.log
spent=$(sqlite3 p.db "select cost_usd from runs where id = '$rid'")
expect_eq "spend stayed within \$1.50" "$(python3 -c "print($spent <= 1.5)")" True
done1=$(wc -l <out/p.jsonl)
if [ "$done1" -gt 60 ]; then ok "paused late ($done1 rows), not at the first reservations"; else bad "paused after $done1 rows"; fi
run_orch s.log status "$rid" --db p.db
[ -n "${SHOW:-}" ] && cat p.log s.log
expect_grep "orch status shows the same command" "paused — budget of .*orch resume $rid --budget [0-9]+\.[0-9]{2}" s.log
suggest=$(grep -Eo -- "--budget [0-9]+\.[0-9]{2}" s.log | head -1 | cut -d' ' -f2)
run_orch r.log resume "$rid" --db p.db --budget "$suggest"
expect_eq "resuming with the suggested --budget $suggest finishes: exit 0" "$RC" 0
expect_eq "and every row is there once" "$(ids out/p.jsonl)" "1..200"

# an iterator input: the rows left are not known, and the message says so
sed 's/input = .*/input = (function() local i = 0 return function() i = i + 1 if i <= 200 then return { id = i, text = "row " .. i } end end end)(),/' b.lua >it.lua
run_orch i.log run it.lua --db i.db --set budget=1.5 --set out=out/i.jsonl
expect_eq "iterator: paused, exit 3" "$RC" 3
expect_grep "says the rows left are unknown" "the rows left are not known ahead \(the input is an iterator\): orch resume budget-[0-9a-f]+ --budget USD, with USD above \\\$[0-9.]+ spent so far" i.log
finish
