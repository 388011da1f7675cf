# The README's example: every input row comes out once, in input order,
# classified by the offline mock provider.
. tests/lib.sh
cp -r "$ROOT/examples" "$WORK/"
run_orch "$WORK/log" run examples/classify_reviews.lua
expect_eq "example exits 0" "$RC" 0
expect_grep "summary names the rows" "240 rows in .*240 ok, 0 failed" "$WORK/log"
python3 - "$WORK/examples/data/reviews.csv" "$WORK/out/reviews-sentiment.jsonl" >"$WORK/check" 2>&1 <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
out = [json.loads(l) for l in open(sys.argv[2])]
assert len(rows) >= 200, len(rows)
assert len(out) == len(rows), (len(out), len(rows))
assert [o["id"] for o in out] == [r["id"] for r in rows], "order differs"
assert all(o["review"] == r["review"] for o, r in zip(out, rows)), "review text changed"
labels = {o["sentiment"] for o in out}
assert labels <= {"positive", "negative", "mixed", "neutral"}, labels
assert len(labels) >= 3, labels
print("checked", len(out))
PY
expect_grep "one output line per input row, in order, with a label" "^checked 240" "$WORK/check"
# the same input and workflow give byte-identical output
cp "$WORK/out/reviews-sentiment.jsonl" "$WORK/first.jsonl"
run_orch "$WORK/log2" run examples/classify_reviews.lua -q
expect_eq "second run exits 0" "$RC" 0
expect_eq "quiet run prints nothing" "$(cat "$WORK/log2")" ""
if cmp -s "$WORK/first.jsonl" "$WORK/out/reviews-sentiment.jsonl"; then ok "output is deterministic"; else bad "output differs between runs"; fi
# on a terminal a progress line is drawn (rows, %, ETA, rows/s, $, failures); off one, never
(cd "$WORK" && script -qfec "$ORCH run examples/classify_reviews.lua --fresh" /dev/null) | tr '\r' '\n' >"$WORK/tty.log" 2>&1
expect_grep "a TTY shows progress with % and ETA" "240 rows +100% +ETA 0m00s +[0-9]+ rows/s +\\\$0\.[0-9]+ +0 failed" "$WORK/tty.log"
if grep -q "rows/s  \\$" "$WORK/log"; then bad "progress drawn without a TTY"; else ok "no progress line without a TTY"; fi
finish
