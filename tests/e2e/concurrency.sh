# Rows suspend only their own coroutine: 1,000 rows sleeping 0.1 s at
# concurrency 100 take about a second, not 100 s; rows finishing out of
# order are still written in input order.
. tests/lib.sh
cat >"$WORK/sleepy.lua" <<'LUA'
local orch = require("orch")
local n, i = orch.param("rows", 1000), 0
return orch.workflow {
  name = "sleepy",
  input = function() i = i + 1; if i <= n then return { id = i } end end,
  output = orch.write.jsonl("out/sleepy.jsonl"),
  stages = { function(row, ctx) ctx:sleep(0.1); row.slept = true; return row end },
}
LUA
start=$(date +%s%N)
run_orch "$WORK/log" run sleepy.lua --concurrency 100
ms=$((($(date +%s%N) - start) / 1000000))
expect_eq "sleepy run exits 0" "$RC" 0
expect_eq "1000 rows written" "$(wc -l <"$WORK/out/sleepy.jsonl")" 1000
# ~1 s expected; a serial run would take 100 s. Loose bound: shared machines are noisy.
if [ "$ms" -lt 20000 ]; then ok "1000 x 0.1 s at concurrency 100 took ${ms} ms (order of 1 s)"; else bad "took ${ms} ms"; fi

cat >"$WORK/reverse.lua" <<'LUA'
local orch = require("orch")
local rows = {}
for i = 1, 300 do rows[i] = { id = i } end
return orch.workflow {
  name = "reverse",
  input = rows,
  output = orch.write.jsonl("out/reverse.jsonl"),
  concurrency = 300,
  stages = { function(row, ctx) ctx:sleep((300 - row.id) / 1000); row.finished_at = ctx.row; return row end },
}
LUA
run_orch "$WORK/log2" run reverse.lua
expect_eq "reverse run exits 0" "$RC" 0
expect_eq "rows that finish last-first are written first-first" "$(id_list "$WORK/out/reverse.jsonl" ,)" "$(seq -s, 1 300)"
finish
