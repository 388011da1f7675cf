#!/usr/bin/env bash
# Benchmarks, each against a baseline measured in the same run on the same
# machine; figures are ratios, never absolute targets. Writes bench/results.md.
#   bash bench/run.sh            (builds orch in build/ first if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh --bench
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
ORCH=$PWD/build/orch
T=$(mktemp -d /tmp/orch-bench.XXXXXX)
trap 'rm -rf "$T"' EXIT
ROWS=${ROWS:-200000}
BIG=${BIG:-1000000}

# median seconds of a command over hyperfine runs (orch runs share one store,
# as a user's repeated runs do); the median: the machine is shared
export ORCH_DB=$T/bench.db
secs() { hyperfine -N --warmup 1 --runs "${RUNS:-5}" --export-json "$T/h.json" "$@" >/dev/null
         python3 -c 'import json,sys; print("%.3f" % json.load(open(sys.argv[1]))["results"][0]["median"])' "$T/h.json"; }
# max RSS in MB of one run
rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F: '/Maximum resident/ {printf "%.1f", $2/1024}'; }
ratio() { python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2"; }

python3 - "$T/rows.csv" "$ROWS" <<'PY'
import csv, sys, random
random.seed(7)
words = "the quick brown fox jumps over a lazy dog while rain falls on quiet hills".split()
with open(sys.argv[1], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "product", "text"])
    for i in range(1, int(sys.argv[2]) + 1):
        w.writerow([i, "product %d" % (i % 50), " ".join(random.choice(words) for _ in range(12))])
PY

s_orch=$(secs "$ORCH run -q bench/sleep.lua --concurrency 100 --set out=$T/o.jsonl")
s_py=$(secs "python3 bench/sleep_baseline.py 1000 $T/p.jsonl")
s_rss=$(rss "$ORCH" run -q bench/sleep.lua --concurrency 100 --set out="$T/o.jsonl")
s_pyrss=$(rss python3 bench/sleep_baseline.py 1000 "$T/p.jsonl")
cmp -s "$T/o.jsonl" "$T/p.jsonl" || { echo "bench: sleep outputs differ" >&2; exit 1; }

p_orch=$(secs "$ORCH run -q bench/passthrough.lua --set input=$T/rows.csv --set out=$T/o2.jsonl")
p_py=$(secs "python3 bench/passthrough_baseline.py $T/rows.csv $T/p2.jsonl")
p_rss=$(rss "$ORCH" run -q bench/passthrough.lua --set input="$T/rows.csv" --set out="$T/o2.jsonl")
p_pyrss=$(rss python3 bench/passthrough_baseline.py "$T/rows.csv" "$T/p2.jsonl")
[ "$(wc -l <"$T/o2.jsonl")" = "$ROWS" ] || { echo "bench: passthrough lost rows" >&2; exit 1; }

# Durable no-op run over 1M rows: rows/s, max RSS (must not grow with rows),
# and the store's own figure for one checkpoint of 500 buffered rows.
python3 - "$T/big.csv" "$BIG" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("id,product,text\n")
    for i in range(1, int(sys.argv[2]) + 1):
        f.write("%d,product %d,the quick brown fox jumps over a lazy dog %d\n" % (i, i % 50, i))
PY
# three runs, each on a new store; the median one by wall time
for _ in 1 2 3; do
  rm -f "$T"/big.db*
  { /usr/bin/time -f "%e %M" "$ORCH" run -q bench/passthrough.lua --db "$T/big.db" \
    --set input="$T/big.csv" --set out="$T/big.jsonl" 2>&1 >/dev/null; } | tail -1 >>"$T/b_runs"
done
b_time=$(sort -n "$T/b_runs" | sed -n 2p)
b_wall=${b_time% *}
b_rss=$(python3 -c "print('%.1f' % (${b_time#* } / 1024))")
[ "$(wc -l <"$T/big.jsonl")" = "$BIG" ] || { echo "bench: 1M run lost rows" >&2; exit 1; }
b_ckpt=$("$ORCH" stats --db "$T/big.db" --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print("%.2f %.2f %d" % (s["checkpoint_mean_ms"], s["checkpoint_max_ms"], s["checkpoints"]))')
b_py=$(secs "python3 bench/passthrough_baseline.py $T/big.csv $T/pbig.jsonl")

# LLM over HTTP: 4,000 calls at 250 ms, concurrency 200. The main case
# runs against bench/llm_server_fast.py, which answers as a provider does
# (keep-alive, one write per response, one event loop); the second case
# against tests/llm_server.py, the test server (a thread per connection,
# headers and body in two writes: two wake-ups and reads per reply), to
# show what a slow server costs a client.
python3 bench/llm_server_fast.py --port 0 --port-file "$T/port" --latency-ms 250 >"$T/server.log" 2>&1 &
srv=$!
python3 tests/llm_server.py --port 0 --port-file "$T/port2" --latency-ms 250 >"$T/server2.log" 2>&1 &
srv2=$!
trap 'kill $srv $srv2 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 1 100); do [ -s "$T/port" ] && [ -s "$T/port2" ] && break; sleep 0.05; done
URL="http://127.0.0.1:$(cat "$T/port")/v1"
URL2="http://127.0.0.1:$(cat "$T/port2")/v1"
# user+sys CPU seconds, max RSS MB and wall seconds of one run
cpu() { /usr/bin/time -f "%U %S %M %e" "$@" 2>&1 >/dev/null | tail -1 |
        awk '{printf "%.2f %.1f %.2f\n", $1 + $2, $3 / 1024, $4}'; }
# the median run of a file of cpu() lines (by CPU seconds)
median() { sort -n "$1" | awk '{l[NR] = $0} END {print l[int((NR + 1) / 2)]}'; }
# the least libcurl itself spends on the same requests (bench/curl_floor.c)
cc -O2 -Wall -Wextra -Werror bench/curl_floor.c -o "$T/curl_floor" -lcurl
# Runs alternate (orch, floor, Python, then orch and floor against the
# test server), LLM_RUNS times, and each figure is the median: the server
# shares the machine's cores with the client.
for _ in $(seq 1 "${LLM_RUNS:-3}"); do
  rm -f "$T"/llm.db*
  ORCH_DB="$T/llm.db" cpu "$ORCH" run -q bench/llm.lua --set base_url="$URL" --set out="$T/llm.jsonl" >>"$T/l_orch"
  [ "$(wc -l <"$T/llm.jsonl")" = 4000 ] || { echo "bench: llm run lost rows" >&2; exit 1; }
  cpu "$T/curl_floor" "$URL/chat/completions" 4000 200 >>"$T/l_floor"
  cpu python3 bench/llm_baseline.py "$URL" 4000 "$T/pllm.jsonl" >>"$T/l_py"
  rm -f "$T"/llm.db*
  ORCH_DB="$T/llm.db" cpu "$ORCH" run -q bench/llm.lua --set base_url="$URL2" --set out="$T/llm.jsonl" >>"$T/l_orch2"
  cpu "$T/curl_floor" "$URL2/chat/completions" 4000 200 >>"$T/l_floor2"
done
printf '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Classify: review number 1"}]}' >"$T/body.json"
l_ab=$(ab -q -n 4000 -c 200 -k -p "$T/body.json" -T application/json -H "Authorization: Bearer bench" \
  "$URL/chat/completions" 2>/dev/null | awk '/Time taken for tests/ {print $5}')
set -- $(median "$T/l_orch"); lo_cpu=$1 lo_rss=$2 lo_wall=$3
set -- $(median "$T/l_floor"); lf_cpu=$1 lf_rss=$2
set -- $(median "$T/l_py"); lp_cpu=$1 lp_rss=$2 lp_wall=$3
set -- $(median "$T/l_orch2"); lo2_cpu=$1 lo2_rss=$2
set -- $(median "$T/l_floor2"); lf2_cpu=$1 lf2_rss=$2

{
  echo "# bench results"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -m)); medians of ${RUNS:-5} hyperfine runs (3 runs for the 1M-row and LLM rows)."
  echo
  echo "| benchmark | orch | baseline | ratio |"
  echo "|---|---|---|---|"
  echo "| 1,000 rows x ctx:sleep(0.1), concurrency 100: wall s (ideal 1.00) | $s_orch | Python ThreadPool(100): $s_py | $(ratio "$s_orch" 1.0) x ideal, $(ratio "$s_orch" "$s_py") x Python |"
  echo "| same: max RSS MB | $s_rss | $s_pyrss | $(ratio "$s_rss" "$s_pyrss") |"
  echo "| $ROWS-row CSV -> Lua stage -> JSONL: wall s | $p_orch | Python csv+json loop: $p_py | $(ratio "$p_orch" "$p_py") |"
  echo "| same: rows/s | $(python3 -c "print(int($ROWS/$p_orch))") | $(python3 -c "print(int($ROWS/$p_py))") | |"
  echo "| same: max RSS MB | $p_rss | $p_pyrss | $(ratio "$p_rss" "$p_pyrss") |"
  echo "| $BIG-row durable run (checkpoint every 500 rows, fsync): wall s | $b_wall | Python loop, no durability: $b_py | $(ratio "$b_wall" "$b_py") |"
  echo "| same: rows/s | $(python3 -c "print(int($BIG/$b_wall))") | $(python3 -c "print(int($BIG/$b_py))") | |"
  echo "| same: max RSS MB (target <= 64) | $b_rss | | |"
  echo "| 4,000 LLM calls over HTTP (provider-like server), 250 ms each, concurrency 200: wall s (ideal 5.00) | $lo_wall | ab -k (C load generator): $l_ab; Python ThreadPool(200): $lp_wall | $(ratio "$lo_wall" 5) x ideal, $(ratio "$lo_wall" "$l_ab") x ab |"
  echo "| same: CPU s (user+sys, journal included), median of ${LLM_RUNS:-3} (target <= 2 x libcurl alone) | $lo_cpu | libcurl alone: $lf_cpu; Python: $lp_cpu | $(ratio "$lo_cpu" "$lf_cpu") x libcurl alone, $(ratio "$lo_cpu" "$lp_cpu") x Python |"
  echo "| same: max RSS MB (target <= libcurl alone + 3) | $lo_rss | libcurl alone: $lf_rss; Python: $lp_rss | $(python3 -c "print('%+.1f' % ($lo_rss - $lf_rss))") MB over libcurl alone, $(ratio "$lo_rss" "$lp_rss") x Python |"
  echo "| same against tests/llm_server.py (thread per connection, two writes per reply): CPU s | $lo2_cpu | libcurl alone: $lf2_cpu | $(ratio "$lo2_cpu" "$lf2_cpu") x libcurl alone |"
  echo "| same: max RSS MB | $lo2_rss | libcurl alone: $lf2_rss | |"
  echo "| one checkpoint of 500 rows: mean / max ms, over N checkpoints | $(echo "$b_ckpt" | awk '{print $1 " / " $2 ", N = " $3}') | | |"
  echo
  echo "The state store alone (bench/store.c, one run):"
  echo
  build/bench_store "$T" | grep -v ' passed, ' | sed 's/^/- /'
} >bench/results.md
cat bench/results.md
# what each performance change bought (kept by hand, measured when made)
[ -f bench/changes.md ] && { echo; cat bench/changes.md; } >>bench/results.md
