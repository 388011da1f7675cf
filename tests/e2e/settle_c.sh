# Rows that got through settle in C (results:settle_run) unless something
# reads each row as it settles (an observer of rows: then driver.lua's
# loop settles them). The two give the same run: the same output bytes,
# the same results, and at every checkpoint the same stored totals to the
# last bit (costs are fractions, so another order of additions would
# differ), for rows of every kind between the like ones: two models, no
# call, a failure after a call, an estimated call, a dropped row; with a
# JSONL and a CSV output, and for a rerun answered by the journal.
. tests/lib.sh
cd "$WORK"
cp "$ROOT/tests/e2e/mixed_usage.lua" .
cat >s.lua <<'LUA'
local orch = require("orch")
local mixed = dofile("mixed_usage.lua")
local rows = mixed.rows(1500, { [0] = "two_models", [3] = "none", [5] = "fail", [7] = "est", [9] = "drop" })
local fmt = orch.param("fmt", "jsonl")
return orch.workflow {
  name = "settle-c",
  input = rows,
  output = orch.write[fmt](orch.param("out", "out.jsonl")),
  key = "id",
  concurrency = 50,
  llm = mixed.llm,
  checkpoint = orch.policy.every_rows(97),
  observers = orch.param("observe", "no") == "yes" and { { on_row = function() end } } or {},
  on_error = "skip",
  stages = { mixed.stage },
}
LUA
# totals.lua DB RUN: each checkpoint of the run's input index and stored
# totals, one line each
cat >totals.lua <<'LUA'
local store = require("orch.store")
local json = require("orch.json")
local st = assert(store.open(arg[1], "r"))
for _, c in ipairs(st:checkpoint_list(arg[2])) do
  local full = st:checkpoint_get(arg[2], c.seq)
  print(full.input_index, json.encode(json.decode(full.memento).totals))
end
LUA
for fmt in jsonl csv; do
  for observe in yes no; do
    run_orch "$fmt-$observe.log" run s.lua --db "$fmt-$observe.db" --set fmt=$fmt --set observe=$observe \
      --set out="$fmt-$observe.out"
    expect_eq "$fmt, observed: $observe: exit 0" "$RC" 0
    run_id=$(sqlite3 "$fmt-$observe.db" "select id from runs")
    (cd "$WORK" && "$ORCH" lua totals.lua "$fmt-$observe.db" "$run_id") >"$fmt-$observe.totals"
    sqlite3 "$fmt-$observe.db" "select first_seq, last_seq, n, format, hex(data) from result_chunks order by first_seq;
      select seq, key, status, error from results order by seq" >"$fmt-$observe.results"
    # again, every call answered by the journal
    run_orch "$fmt-$observe-2.log" run s.lua --db "$fmt-$observe.db" --fresh --set fmt=$fmt \
      --set observe=$observe --set out="$fmt-$observe-2.out"
    expect_eq "$fmt, observed: $observe, from the journal: exit 0" "$RC" 0
    run_id=$(sqlite3 "$fmt-$observe.db" "select id from runs order by created_ms desc, rowid desc limit 1")
    (cd "$WORK" && "$ORCH" lua totals.lua "$fmt-$observe.db" "$run_id") >"$fmt-$observe-2.totals"
  done
  # 1,500 rows less 150 failed and 150 dropped (and a CSV header)
  expect_eq "$fmt: the same output bytes" "$(cmp "$fmt-yes.out" "$fmt-no.out" && wc -l <"$fmt-no.out")" \
    "$([ $fmt = csv ] && echo 1201 || echo 1200)"
  expect_eq "$fmt: the same output from the journal" "$(cmp "$fmt-yes-2.out" "$fmt-no-2.out" && echo same)" "same"
  # a chunk a checkpoint, and the 150 failed rows in the results table
  expect_eq "$fmt: the same results, packed the same" \
    "$(cmp "$fmt-yes.results" "$fmt-no.results" && wc -l <"$fmt-no.results")" "166"
  expect_eq "$fmt: the same totals at each of the 16 checkpoints" \
    "$(cmp "$fmt-yes.totals" "$fmt-no.totals" && wc -l <"$fmt-no.totals")" "16"
  expect_eq "$fmt: the same totals from the journal" \
    "$(cmp "$fmt-yes-2.totals" "$fmt-no-2.totals" && wc -l <"$fmt-no-2.totals")" "16"
done
expect_grep "the totals are fractions and the journal's saved figures" '"saved":[0-9]+\.[0-9]{6,}' jsonl-no-2.totals
finish
