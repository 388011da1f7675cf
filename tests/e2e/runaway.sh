# Rows stuck in an endless loop fail alone, each with the line it was stuck
# on, after burst_timeout of CPU; meanwhile the other rows' LLM calls go out
# and come back (the loops give way to them every tick).
. tests/lib.sh
cd "$WORK"
start_llm_server --latency-ms 200
cat >loops.lua <<LUA
local orch = require("orch")
local i = 0
return orch.workflow {
  name = "runaway",
  input = function() i = i + 1; if i <= 10 then return { id = i, text = "item " .. i } end end,
  output = orch.write.jsonl("out/loops.jsonl"),
  errors = orch.write.jsonl("out/loops-errors.jsonl"),
  key = "id",
  concurrency = 10,
  burst_timeout = 1,
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$LLM_URL/v1", api_key = "test-key",
          concurrency = 10, timeout = 30, max_attempts = 1, max_tokens = 16 },
  stages = {
    function(row)
      if row.id == 2 or row.id == 7 then
        local x = 0
        while true do x = x + 1 end
      end
      return row
    end,
    orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" },
  },
}
LUA
run_orch run.log run loops.lua --db s.db
expect_eq "two looping rows: the run exits 0" "$RC" 0
expect_grep "8 ok, 2 failed" "10 rows .*: 8 ok, 2 failed" run.log
expect_eq "the others are written, with their replies" \
  "$(python3 -c 'import json,sys; print([r["id"] for r in map(json.loads, open(sys.argv[1])) if r["reply"].startswith("echo: Repeat: item")])' out/loops.jsonl)" \
  "[1, 3, 4, 5, 6, 8, 9, 10]"
for r in 2 7; do
  expect_grep "row $r fails with the loop's line" \
    "^\{\"row\":$r,\"key\":$r,\"status\":\"failed\",\"error\":\"[^\"]*loops\.lua:17: ran [0-9.]+ s of Lua code without waiting \(an endless loop\?\); burst_timeout = 1\.0 s\"" \
    out/loops-errors.jsonl
done
expect_eq "the server answered the 8 others" "$(llm_stat requests)" 8

# a row that spins until the others are done: they finish while it spins
cat >spin.lua <<'LUA'
local orch = require("orch")
local i, finished = 0, 0
return orch.workflow {
  name = "spin-until",
  input = function() i = i + 1; if i <= 5 then return { id = i } end end,
  output = orch.write.jsonl("out/spin.jsonl"),
  errors = orch.write.jsonl("out/spin-errors.jsonl"),
  key = "id",
  burst_timeout = 5,
  stages = { function(row, ctx)
    if row.id == 1 then
      while finished < 4 do end -- never waits
      error("the 4 others finished while row 1 spun", 0)
    end
    ctx:sleep(0.01)
    finished = finished + 1
    return row
  end },
}
LUA
run_orch spin.log run spin.lua --db s2.db
expect_eq "spinning row: exit 0" "$RC" 0
expect_grep "the others ran while it spun, and it saw them finish" \
  '^\{"row":1,"key":1,"status":"failed","error":"the 4 others finished while row 1 spun"' out/spin-errors.jsonl
[ "$FAIL" -eq 0 ] || cat run.log out/loops-errors.jsonl spin.log
finish
