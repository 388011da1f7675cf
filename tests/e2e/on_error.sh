# A stage that raises fails only its row: the error and a traceback naming
# the workflow file and line are kept, other rows carry on, and on_error
# ("skip", "fail", orch.retry(n), orch.default(v)) decides the rest.
. tests/lib.sh
cd "$WORK"
cat >flaky.lua <<'LUA'
local orch = require("orch")
local attempts = {}
local rows = {}
for i = 1, 12 do rows[i] = { id = i } end

local function check_row(row, ctx)
  attempts[row.id] = (attempts[row.id] or 0) + 1
  ctx:sleep(0.001 * (row.id % 4))
  if row.id % 4 == 0 and attempts[row.id] <= orch.param("fail_times", 99) then
    error("row " .. row.id .. " is not divisible enough")
  end
  row.attempts = attempts[row.id]
  return row
end

local policies = {
  skip = "skip",
  fail = "fail",
  retry = orch.retry(2),
  retry_then_default = orch.retry(1, orch.default { attempts = -1, fallback = true }),
  default_fn = orch.default(function(row, err) row.err = err:match("is not %a+ enough"); return row end),
}

return orch.workflow {
  name = "flaky",
  input = rows,
  key = "id",
  output = orch.write.jsonl("out/flaky.jsonl"),
  errors = orch.write.jsonl("out/flaky-errors.jsonl"),
  on_error = policies[orch.param("policy", "skip")],
  concurrency = 4,
  stages = { check_row, function(row) if row.id == 6 then return nil end return row end },
}
LUA

run_orch log run flaky.lua
expect_eq "skip: exit 0" "$RC" 0
expect_eq "skip: failed and dropped rows are absent, the rest in order" "$(id_list out/flaky.jsonl)" "1 2 3 5 7 9 10 11"
expect_grep "skip: summary counts" "12 rows .*: 8 ok, 3 failed, 1 dropped" log
expect_grep "skip: failure names the workflow line" "row 4 \(key 4\): flaky.lua:10: row 4 is not divisible enough" log
expect_grep "errors file keeps the traceback" '"traceback":"flaky.lua:10: row 4 is not divisible enough\\nstack traceback:.*flaky.lua:10: in' out/flaky-errors.jsonl

run_orch log run flaky.lua -v
expect_grep "-v prints the traceback" "flaky.lua:10: in (local 'check_row'|field 'fn'|function)" log

run_orch log run flaky.lua --set policy=fail
expect_eq "fail: exit 1" "$RC" 1
expect_grep "fail: names the row, the line and a traceback" "failed at row 4 \(key 4\): flaky.lua:10: row 4 is not divisible enough" log
expect_grep "fail: traceback present" "stack traceback:" log

run_orch log run flaky.lua --set policy=retry --set fail_times=2
expect_eq "retry: exit 0" "$RC" 0
expect_eq "retry: every row but the dropped one" "$(id_list out/flaky.jsonl)" "1 2 3 4 5 7 8 9 10 11 12"
expect_grep "retry: third attempt succeeded" '"attempts":3,"id":4' out/flaky.jsonl

run_orch log run flaky.lua --set policy=retry --set fail_times=3
expect_grep "retry exhausted: rows fail" "8 ok, 3 failed, 1 dropped" log

run_orch log run flaky.lua --set policy=retry_then_default
expect_eq "retry then default: exit 0" "$RC" 0
expect_grep "default merged over the input row" '^\{"attempts":-1,"fallback":true,"id":4\}$' out/flaky.jsonl
expect_grep "summary counts defaulted rows" "3 defaulted" log

run_orch log run flaky.lua --set policy=default_fn
expect_grep "default function gets the row and the error" '^\{"err":"is not divisible enough","id":8\}$' out/flaky.jsonl
finish
