# JSON values pass through unchanged: 64-bit ids, floats, [] and {} and
# nested values come out byte for byte, on a first run and after a SIGINT
# pause and resume (ctx.state's integers and [] survive the memento); keys
# keep the input's order, new fields follow sorted; "x"..row.id gives "x5";
# a row with invalid UTF-8 or an integer beyond 64 bits fails naming the
# field, the others are written; export --format csv keeps the input's
# column order.
. tests/lib.sh
cd "$WORK"

# 2,000 rows in the canonical form orch writes (raw UTF-8, nested keys
# sorted, floats in their shortest exact spelling), top-level keys unsorted
python3 - <<'PY'
with open("in.jsonl", "w", encoding="utf-8") as f:
    for i in range(1, 2001):
        f.write('{"zid":"r%d","id":%d,"small":%d,"score":%s,"f":3.0,"tags":[],"meta":{},'
                '"nested":{"a":[1,[],{},[[]]],"b":9007199254740993,"c":{"d":[]}},'
                '"neg":-9223372036854775808,"big":9223372036854775807,"s":"café \\"q\\" \\\\ 😀\\n",'
                '"n":null,"t":true,"e":1e+300}\n'
                % (i, 9223372036854770000 + i, i, repr(i / 8 + 0.1)))
PY

cat >exact.lua <<'LUA'
local orch = require("orch")
local json = require("orch.json")
return orch.workflow {
  name = "exact",
  input = orch.read.jsonl(orch.param("input", "in.jsonl")),
  output = orch.write.jsonl(orch.param("out", "out/exact.jsonl")),
  errors = orch.write.jsonl(orch.param("errs", "out/exact-errors.jsonl")),
  key = "zid",
  concurrency = 10,
  stages = {
    function(row, ctx)
      if orch.param("mode", "identity") == "state" then
        -- values that live in ctx.state, so across a pause in the memento
        if ctx.state.seed == nil then
          ctx.state.seed = { big = 9007199254740993, max = math.maxinteger, empty = setmetatable({}, json.array_mt),
                             obj = {}, f = 2.0 }
        end
        local s = ctx.state.seed
        row.st = { big = s.big, max = s.max, empty = s.empty, obj = s.obj, f = s.f,
                   types = math.type(s.big) .. "," .. math.type(s.f) }
        ctx:sleep(0.002)
      elseif orch.param("mode", "identity") == "x" then
        row.x = "x" .. row.small
        row.msg = string.format("key %s", row.small)
        row.mt = math.type(row.id)
      end
      return row
    end,
  },
}
LUA

# 1. Identity: the output is the input, byte for byte
run_orch id.log run exact.lua
expect_eq "identity run exits 0" "$RC" 0
if cmp -s in.jsonl out/exact.jsonl; then ok "identity output is byte-identical to the input"; else
  bad "identity output differs:"; diff <(head -2 in.jsonl) <(head -2 out/exact.jsonl) | head -6; fi

# 2. Integers are Lua integers inside stages
run_orch x.log run exact.lua --set mode=x --set out=out/x.jsonl --set errs=out/x-errors.jsonl
expect_eq "x run exits 0" "$RC" 0
line5=$(sed -n 5p out/x.jsonl)
expect_eq '"x"..row.id gives x5, messages say key 5, math.type is integer' \
  "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["x"], d["msg"], d["mt"])' "$line5")" \
  "x5 key 5 integer"
expect_eq "new fields follow the input's keys, sorted" \
  "$(python3 -c 'import json,sys; print(",".join(json.loads(sys.argv[1]).keys()))' "$line5")" \
  "zid,id,small,score,f,tags,meta,nested,neg,big,s,n,t,e,msg,mt,x"

# 3. SIGINT mid-run, then resume: every line exact; ctx.state's values
# (integers beyond 2^53, [], {} and a float) survive the memento
"$ORCH" run exact.lua --set mode=state --set out=out/state.jsonl --set errs=out/state-errors.jsonl >int.log 2>&1 &
pid=$!
wait_lines out/state.jsonl 200
kill -INT "$pid"
wait "$pid"
expect_eq "SIGINT pauses with exit 3" "$?" 3
rid=$(grep -o 'orch resume exact-[0-9a-f]*' int.log | head -1 | cut -d' ' -f3)
partial=$(wc -l <out/state.jsonl)
if [ "$partial" -gt 0 ] && [ "$partial" -lt 2000 ]; then ok "paused with $partial rows written"; else
  bad "paused with $partial rows"; fi
run_orch res.log resume "$rid"
expect_eq "resume completes" "$RC" 0
st='"st":{"big":9007199254740993,"empty":[],"f":2.0,"max":9223372036854775807,"obj":{},"types":"integer,float"}}'
sed "s/}\$/,${st//\\/\\\\}/" in.jsonl >expected-state.jsonl
if cmp -s expected-state.jsonl out/state.jsonl; then
  ok "after pause + resume every line is the input plus ctx.state's exact values"; else
  bad "state output differs:"; diff expected-state.jsonl out/state.jsonl | head -6; fi

# 4. Bad rows fail naming the field; the others are written
head -3 in.jsonl >bad.jsonl
printf '{"zid":"u","id":4,"review":"caf\351"}\n' >>bad.jsonl
printf '{"zid":"w","id":123456789012345678901}\n' >>bad.jsonl
sed -n 4,5p in.jsonl >>bad.jsonl
run_orch bad.log run exact.lua --set input=bad.jsonl --set out=out/bad.jsonl --set errs=out/bad-errors.jsonl
expect_eq "bad rows are skipped: exit 0" "$RC" 0
if cmp -s <(sed -n '1,3p;4,5p' in.jsonl) out/bad.jsonl; then ok "the good rows are written unchanged"; else
  bad "good rows differ"; fi
expect_grep "invalid UTF-8 names the field" '"error":"bad.jsonl:4: invalid JSON \(invalid UTF-8 at .review\)"' \
  out/bad-errors.jsonl
expect_grep "an integer beyond 64 bits names the field" \
  '"error":"bad.jsonl:5: invalid JSON \(integer 123456789012345678901 at .id does not fit in 64 bits\)"' \
  out/bad-errors.jsonl

# CSV input with invalid UTF-8 into a JSONL output: that row fails, naming the column
printf 'id,review\n1,good\n2,caf\351\n3,fine\n' >bad.csv
cat >csv.lua <<'LUA'
local orch = require("orch")
return orch.workflow {
  name = "csv-utf8",
  input = orch.read.csv("bad.csv"),
  output = orch.write.jsonl("out/csv.jsonl"),
  errors = orch.write.jsonl("out/csv-errors.jsonl"),
  stages = { function(row) return row end },
}
LUA
run_orch csv.log run csv.lua
expect_eq "csv run with a bad row exits 0" "$RC" 0
expect_eq "csv: the other rows are written" "$(cat out/csv.jsonl)" '{"id":"1","review":"good"}
{"id":"3","review":"fine"}'
expect_grep "csv: the failed row names the column" '"row":2,.*"error":"cannot write the row: .*invalid UTF-8 at .review"' \
  out/csv-errors.jsonl

# 5. export --format csv of a JSONL output: the input's columns first, in order
run_orch ls.log ls --json
eid=$(python3 -c 'import json,sys
print([r["id"] for r in json.load(open(sys.argv[1])) if r["output"].endswith("out/x.jsonl")][0])' ls.log)
run_orch exp.log export "$eid" --format csv -o exported.csv
expect_eq "export exits 0" "$RC" 0
expect_eq "export csv keeps the output's column order" "$(head -1 exported.csv)" \
  "zid,id,small,score,f,tags,meta,nested,neg,big,s,n,t,e,msg,mt,x"
expect_eq "export csv has every row" \
  "$(python3 -c 'import csv,sys; print(sum(1 for _ in csv.reader(open(sys.argv[1], newline=""))))' exported.csv)" 2001
expect_eq "export csv writes 64-bit ids and floats as they are" \
  "$(python3 -c 'import csv,sys; r=list(csv.reader(open(sys.argv[1], newline="")))[5]; print(r[1], r[3], r[4], r[5])' exported.csv)" \
  "9223372036854770005 0.725 3.0 []"
finish
