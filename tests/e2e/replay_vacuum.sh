# A rerun answered by the journal reads it through the store's reader, which
# maps the database file; `orch gc --vacuum` from another process rewrites
# and shrinks that file meanwhile, again and again. The rerun pays nothing
# again, writes the same output, and the store is whole after.
. tests/lib.sh
cd "$WORK"
cat >wf.lua <<'LUA'
local orch = require("orch")
local n, i = orch.param("rows", 2000), 0
return orch.workflow {
  name = "replay-vacuum",
  input = function() i = i + 1; if i <= n then return { id = i, text = "item " .. i } end end,
  output = orch.write.jsonl(orch.param("out", "out/a.jsonl")),
  key = "id",
  concurrency = 20,
  llm = { provider = "mock", model = "mock", latency_ms = 0 },
  stages = { orch.stage.prompt { template = "Label {{text}} as one of: x, y", into = "label" },
    function(row, ctx) ctx:sleep(0.01) return row end },
}
LUA
run_orch a.log run wf.lua --db s.db
expect_eq "the first run: exit 0" "$RC" 0
paid=$(sqlite3 s.db "select count(*) from llm_journal")
expect_eq "it journaled a reply a row" "$paid" 2000
# pad the store so that a vacuum has pages to give back while the rerun reads
sqlite3 s.db "create table pad (b blob); insert into pad with recursive n(i) as (select 1 union all select i + 1 from n where i < 500) select randomblob(4000) from n;
  delete from pad;"
(cd "$WORK" && "$ORCH" run wf.lua --db s.db --fresh --set out=out/b.jsonl >b.log 2>&1; echo $? >b.rc) &
wait_until "[ -s out/b.jsonl ] || [ -f b.rc ]"
vacuums=0 during=0
while [ ! -f b.rc ]; do
  [ ! -f b.rc ] && during=$((during + 1))
  (cd "$WORK" && "$ORCH" gc --vacuum --db s.db >>gc.log 2>&1) && vacuums=$((vacuums + 1))
done
wait
expect_eq "the rerun: exit 0" "$(cat b.rc)" 0
expect_eq "vacuums ran while it read (each exit 0)" "$([ "$during" -ge 1 ] && [ "$vacuums" -eq "$during" ] && echo yes)" yes
expect_eq "the same output" "$(cmp out/a.jsonl out/b.jsonl && echo same)" same
expect_eq "nothing paid again: the journal has what it had" "$(sqlite3 s.db "select count(*) from llm_journal")" "$paid"
expect_eq "the store is whole" "$(sqlite3 s.db "pragma integrity_check")" ok
finish
