# The ready workflows against a real (local) OpenAI- or Anthropic-compatible
# server, configured the conventional way: OPENAI_API_KEY / OPENAI_BASE_URL
# (ANTHROPIC_*) exported, --set provider=... --set model=... on the command
# line. Inputs without the key column are keyed by their row number.
. tests/lib.sh
cd "$WORK"
start_llm_server
W="$ROOT/workflows"
DATA="$ROOT/examples/data/reviews.csv"
# run_env OUTFILE [-u NAME | NAME=VALUE]... ORCH ARGS... : like run_orch, in that environment
run_env() {
  local out=$1; shift
  (cd "$WORK" && env "$@") >"$out" 2>&1
  RC=$?
}
nrows=$(python3 -c "import csv,sys; print(sum(1 for _ in csv.DictReader(open(sys.argv[1]))))" "$DATA")

run_env c.log OPENAI_API_KEY=sk-from-env OPENAI_BASE_URL="$LLM_URL/v1" \
  "$ORCH" run "$W/classify.lua" --db c.db --set provider=openai --set model=m --set input="$DATA" --set out=out/c.jsonl \
  --set errors=out/c-errors.jsonl
expect_eq "classify with provider=openai, the key and URL from the environment: exit 0" "$RC" 0
expect_eq "every row classified" "$(wc -l <out/c.jsonl)" "$nrows"
expect_eq "the server saw the key from OPENAI_API_KEY on every request" "$(llm_stat 'authorization.Bearer sk-from-env')" "$nrows"
expect_grep "the reply is the server's" '"label":"echo: classify the text as one of' out/c.jsonl

llm_admin reset
run_env c2.log OPENAI_API_KEY=sk-from-env OPENAI_BASE_URL=http://127.0.0.1:9/v1 \
  "$ORCH" run "$W/classify.lua" --db c2.db --set provider=openai --set model=m --set input="$DATA" \
  --set out=out/c2.jsonl --set base_url="$LLM_URL/v1"
expect_eq "--set base_url overrides OPENAI_BASE_URL: exit 0" "$RC" 0
expect_eq "all rows went to the --set URL" "$(llm_stat requests)" "$nrows"

run_env c3.log -u OPENAI_API_KEY -u OPENAI_BASE_URL \
  "$ORCH" run "$W/classify.lua" --db c3.db --set provider=openai --set model=m --set input="$DATA"
expect_eq "no key and no URL: a workflow error, exit 2" "$RC" 2
expect_grep "which says what to export" "llm.api_key is empty: export OPENAI_API_KEY \(or set api_key" c3.log

llm_admin reset
run_env a.log ANTHROPIC_API_KEY=sk-ant-env ANTHROPIC_BASE_URL="$LLM_URL/v1" \
  "$ORCH" run "$W/classify.lua" --db a.db --set provider=anthropic --set model=claude-test --set input="$DATA" \
  --set out=out/a.jsonl
expect_eq "classify with provider=anthropic from ANTHROPIC_*: exit 0" "$RC" 0
expect_eq "the server saw x-api-key from ANTHROPIC_API_KEY" "$(llm_stat 'authorization.sk-ant-env')" "$nrows"

# summarise, as its header shows, on a JSONL file without an id field
printf '{"body":"The first document talks about boots."}\n{"body":""}\n{"body":"The third one is about tents."}\n' >docs.jsonl
run_env s.log OPENAI_API_KEY=k OPENAI_BASE_URL="$LLM_URL/v1" \
  "$ORCH" run "$W/summarise.lua" --db s.db --set input=docs.jsonl --set field=body --set out=out/s.csv \
  --set provider=openai --set model=m
expect_eq "summarise docs.jsonl --set field=body: exit 0" "$RC" 0
expect_grep "no row failed (the empty one is dropped)" "2 ok, 0 failed, 1 dropped" s.log
expect_eq "rows keyed by their number" \
  "$(python3 -c 'import csv,sys; print(" ".join(r[0] for r in csv.reader(open(sys.argv[1]))))' out/s.csv)" "row 1 3"

# report, the multi-step workflow
run_env r.log OPENAI_API_KEY=k OPENAI_BASE_URL="$LLM_URL/v1" \
  "$ORCH" run "$W/report.lua" --db r.db --set input="$DATA" --set report=report.md --set out=out/r.jsonl \
  --set provider=openai --set model=m
expect_eq "report with provider=openai: exit 0" "$RC" 0
expect_grep "the summaries are the server's" "^echo: Summarise what buyers say about" report.md

# each workflow documents its parameters, in its header and in orch.param
for f in classify extract summarise report; do
  missing=$(python3 - "$W/$f.lua" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
header = "\n".join(l for l in src.splitlines() if l.startswith("--"))
names = re.findall(r'orch\.param\("([a-z_]+)"', src)
undocumented = [n for n in names if not re.search(r"^--\s+%s\s" % n, header, re.M)]
bare = re.findall(r'orch\.param\("[a-z_]+", [^,()]+\)', src)
print(" ".join(undocumented + bare))
PY
)
  expect_eq "workflows/$f.lua: every parameter in the header and with a description" "$missing" ""
done
finish
