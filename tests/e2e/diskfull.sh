# A full disk pauses the run (exit 3) with one message naming the path and
# the space it needs; resume after space is freed completes, with output
# byte-identical to a run that had room. The full disk is real: a small
# tmpfs mounted in a private mount namespace (unshare -rm), for the output
# file, then for the store (SQLite: SQLITE_FULL in the journal and the
# checkpoint transaction).
. tests/lib.sh
cd "$WORK"
if ! unshare -rm true 2>/dev/null; then
  bad "unshare -rm (a private mount namespace for a small tmpfs) is not available here"
  finish
  exit 1
fi
start_llm_server
cat >fill.lua <<'LUA'
local orch = require("orch")
local n, i = orch.param("rows", 20000), 0
return orch.workflow {
  name = "fill",
  input = function() i = i + 1; if i <= n then return { id = i, text = string.rep("x", 100) } end end,
  output = orch.write.jsonl(orch.param("out", "full/out.jsonl")),
  errors = orch.write.jsonl(orch.param("errors", "full/errors.jsonl")),
  key = "id",
  checkpoint = orch.policy.every_rows(1000),
  stages = { function(row) if row.id % 1000 == 7 then error("row " .. row.id .. " fails") end return row end },
}
LUA
cat >llm.lua <<LUA
local orch = require("orch")
local n, i = orch.param("rows", 1500), 0
return orch.workflow {
  name = "fill-llm",
  input = function() i = i + 1; if i <= n then return { id = i, text = "item " .. i .. string.rep(" pad", 50) } end end,
  output = orch.write.jsonl(orch.param("out", "out/llm.jsonl")),
  key = "id",
  checkpoint = orch.policy.every_rows(200),
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$LLM_URL/v1", api_key = "test-key",
          concurrency = 16, max_attempts = 1, max_tokens = 16 },
  stages = { orch.stage.prompt { template = "Repeat: {{text}}", into = "reply" } },
}
LUA
# references, on a disk with room
run_orch ref1.log run fill.lua --db ref.db --set out=ref/out.jsonl --set errors=ref/errors.jsonl
expect_eq "reference run: exit 0" "$RC" 0
run_orch ref2.log run llm.lua --db ref2.db --set out=ref/llm.jsonl --no-cache
expect_eq "reference LLM run: exit 0" "$RC" 0

cat >inner.sh <<'SH2'
set -u
mkdir -p full dbd
mount -t tmpfs -o size=1m tmpfs full
"$ORCH" run fill.lua --db s.db >out1.log 2>&1; echo $? >out1.rc
"$ORCH" status --db s.db >out1.status 2>&1
mount -o remount,size=16m tmpfs full
"$ORCH" resume --all --db s.db >out2.log 2>&1; echo $? >out2.rc
cp full/out.jsonl full/errors.jsonl .
mount -t tmpfs -o size=600k tmpfs dbd
"$ORCH" run llm.lua --db dbd/s.db >db1.log 2>&1; echo $? >db1.rc
"$ORCH" status --db dbd/s.db >db1.status 2>&1
mount -o remount,size=64m tmpfs dbd
"$ORCH" resume --all --db dbd/s.db >db2.log 2>&1; echo $? >db2.rc
SH2
ORCH=$ORCH unshare -rm sh inner.sh

expect_eq "output on a full disk: exit 3 (paused)" "$(cat out1.rc)" 3
expect_grep "one message names the path, the space and how to resume" \
  "^orch: run fill-[0-9a-f]+ paused: disk full writing full/out\.jsonl \(needs about [0-9]+ MB free\); free space and run: orch resume fill-[0-9a-f]+$" out1.log
expect_eq "and nothing else is said" "$(wc -l <out1.log)" 1
expect_grep "the run is paused, with the message" "^status +paused — disk full writing full/out\.jsonl" out1.status
expect_eq "resume after space is freed: exit 0" "$(cat out2.rc)" 0
expect_grep "it completes" "20,000 rows .*: 19980 ok, 20 failed" out2.log
if cmp -s out.jsonl ref/out.jsonl; then ok "the output is byte-identical to a run with room"; else bad "the output differs"; fi
if cmp -s errors.jsonl ref/errors.jsonl; then ok "so is the errors file"; else bad "the errors file differs"; fi

expect_eq "store on a full disk: exit 3 (paused)" "$(cat db1.rc)" 3
expect_grep "one message names the store" \
  "^orch: run fill-llm-[0-9a-f]+ paused: disk full writing dbd/s\.db \(needs about [0-9]+ MB free\); free space and run: orch resume fill-llm-[0-9a-f]+$" db1.log
expect_eq "no journal warnings, no traceback: one line" "$(wc -l <db1.log)" 1
expect_grep "a store that cannot take the status either shows the run resumable" "^status +(paused|running \(owner gone: resume it\))" db1.status
expect_eq "resume after space is freed: exit 0" "$(cat db2.rc)" 0
if cmp -s out/llm.jsonl ref/llm.jsonl; then ok "the LLM output is byte-identical to a run with room"; else bad "the LLM output differs"; fi
[ "$FAIL" -eq 0 ] || tail -n 5 out1.log out2.log db1.log db2.log
finish
