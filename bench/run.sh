#!/usr/bin/env bash
# Benchmarks, each against a baseline measured in the same run on the same
# machine; figures are ratios, never absolute targets. Writes
# bench/results.md, bench/sweep.dat and bench/results.png (gnuplot).
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
# the same, as user+sys CPU seconds of 5 alternating runs (medians): on a
# shared machine a run's wall time is mostly the other processes'
cpu_s() { /usr/bin/time -f "%U %S" "$@" 2>&1 >/dev/null | tail -1 | awk '{print $1 + $2}'; }
for _ in 1 2 3 4 5; do
  cpu_s "$ORCH" run -q bench/passthrough.lua --set input="$T/rows.csv" --set out="$T/o2.jsonl" >>"$T/p_cpu"
  cpu_s python3 bench/passthrough_baseline.py "$T/rows.csv" "$T/p2.jsonl" >>"$T/p_pycpu"
done
p_cpu=$(sort -n "$T/p_cpu" | sed -n 3p)
p_pycpu=$(sort -n "$T/p_pycpu" | sed -n 3p)

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
# and three more provider-like servers: 1 s replies (2,000 in flight), 50 ms
# (the concurrency sweep), at once (journal replay's first run)
python3 bench/llm_server_fast.py --port 0 --port-file "$T/port3" --latency-ms 1000 >"$T/server3.log" 2>&1 &
srv3=$!
python3 bench/llm_server_fast.py --port 0 --port-file "$T/port4" --latency-ms 50 >"$T/server4.log" 2>&1 &
srv4=$!
python3 bench/llm_server_fast.py --port 0 --port-file "$T/port5" --latency-ms 0 >"$T/server5.log" 2>&1 &
srv5=$!
trap 'kill $srv $srv2 $srv3 $srv4 $srv5 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 1 100); do
  [ -s "$T/port" ] && [ -s "$T/port2" ] && [ -s "$T/port3" ] && [ -s "$T/port4" ] && [ -s "$T/port5" ] && break
  sleep 0.05
done
URL="http://127.0.0.1:$(cat "$T/port")/v1"
URL2="http://127.0.0.1:$(cat "$T/port2")/v1"
URL3="http://127.0.0.1:$(cat "$T/port3")/v1"
URL4="http://127.0.0.1:$(cat "$T/port4")/v1"
URL5="http://127.0.0.1:$(cat "$T/port5")/v1"
# a server's /stats field
stat() { python3 -c 'import json,sys,urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1] + "/stats"))[sys.argv[2]])' "${1%/v1}" "$2"; }
# the Node baseline's packages (the official openai SDK, p-limit), once
( cd bench && [ -d node_modules/openai ] && [ -d node_modules/p-limit ] || npm install --no-audit --no-fund --loglevel=error >/dev/null )
# Debian's python3 has python3-aiohttp, whatever python3 comes first in PATH
PYDEB=/usr/bin/python3
# user+sys CPU seconds, max RSS MB and wall seconds of one run
# (bench/rusage.c: wait4's microseconds, where /usr/bin/time prints hundredths)
cc -O2 -Wall -Wextra -Werror bench/rusage.c -o "$T/rusage"
cpu() { "$T/rusage" "$@" || true; }
# the median run of a file of cpu() lines (by CPU seconds)
median() { sort -n "$1" | awk '{l[NR] = $0} END {print l[int((NR + 1) / 2)]}'; }
# the least libcurl itself spends on the same requests (bench/curl_floor.c)
cc -O2 -Wall -Wextra -Werror bench/curl_floor.c -o "$T/curl_floor" -lcurl
# Runs alternate (orch, floor, Python, then orch and floor against the
# test server), LLM_RUNS times, and each figure is the median: the server
# shares the machine's cores with the client.
for _ in $(seq 1 "${LLM_RUNS:-5}"); do
  rm -f "$T"/llm.db*
  ORCH_DB="$T/llm.db" cpu "$ORCH" run -q bench/llm.lua --set base_url="$URL" --set out="$T/llm.jsonl" >>"$T/l_orch"
  [ "$(wc -l <"$T/llm.jsonl")" = 4000 ] || { echo "bench: llm run lost rows" >&2; exit 1; }
  cpu "$T/curl_floor" "$URL/chat/completions" 4000 200 >>"$T/l_floor"
  cpu python3 bench/llm_baseline.py "$URL" 4000 "$T/pllm.jsonl" >>"$T/l_py"
  rm -f "$T"/llm.db*
  ORCH_DB="$T/llm.db" cpu "$ORCH" run -q bench/llm.lua --set base_url="$URL2" --set out="$T/llm.jsonl" >>"$T/l_orch2"
  cpu "$T/curl_floor" "$URL2/chat/completions" 4000 200 >>"$T/l_floor2"
done
# the asyncio and Node clients, once each, same calls
cpu $PYDEB bench/llm_aiohttp.py "$URL" 4000 "$T/aio.jsonl" 200 >"$T/l_aio"
cpu node bench/llm_node.mjs "$URL" 4000 "$T/node.jsonl" 200 >"$T/l_node"
rm -f "$T"/pyj.db*
cpu python3 bench/llm_baseline.py "$URL" 4000 "$T/pyj.jsonl" 200 "$T/pyj.db" >"$T/l_pyj"
cmp -s "$T/aio.jsonl" "$T/node.jsonl" && cmp -s "$T/aio.jsonl" "$T/pyj.jsonl" ||
  { echo "bench: the baselines' outputs differ" >&2; exit 1; }

# (a2) 2,000 in flight: 8,000 calls of 1 s at concurrency 2,000 (ideal 4 s)
inflight_run() { # LABEL COMMAND... -> "cpu rss wall peak" in $T/f_LABEL
  python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1] + "/stats/reset").read()' "${URL3%/v1}"
  cpu "${@:2}" | tr '\n' ' ' >"$T/f_$1"
  stat "$URL3" peak_in_flight >>"$T/f_$1"
}
rm -f "$T"/f.db*
ORCH_DB="$T/f.db" inflight_run orch "$ORCH" run -q bench/llm.lua --set rows=8000 --set concurrency=2000 \
  --set base_url="$URL3" --set out="$T/f.jsonl"
[ "$(wc -l <"$T/f.jsonl")" = 8000 ] || { echo "bench: the 2,000-in-flight run lost rows" >&2; exit 1; }
inflight_run floor "$T/curl_floor" "$URL3/chat/completions" 8000 2000
inflight_run aio $PYDEB bench/llm_aiohttp.py "$URL3" 8000 "$T/faio.jsonl" 2000
inflight_run node node bench/llm_node.mjs "$URL3" 8000 "$T/fnode.jsonl" 2000

# (e) journal replay: N LLM rows answered by a server that replies at
# once, then reruns (--fresh) of the same rows, every one answered by
# the journal: rows/s of the rerun. Three rounds, orch and Python
# alternating; the median round by wall time (the machine is shared)
REPLAY=${REPLAY:-20000}
rm -f "$T"/j.db* "$T"/jp.db* "$T/j_runs" "$T/jp_runs"
ORCH_DB="$T/j.db" "$ORCH" run -q bench/llm.lua --set rows="$REPLAY" --set base_url="$URL5" --set out="$T/j1.jsonl"
python3 bench/llm_baseline.py "$URL5" "$REPLAY" "$T/jp1.jsonl" 200 "$T/jp.db"
for _ in 1 2 3; do
  before=$(stat "$URL5" requests)
  j_time=$(ORCH_DB="$T/j.db" cpu "$ORCH" run -q --fresh bench/llm.lua --set rows="$REPLAY" --set base_url="$URL5" \
    --set out="$T/j2.jsonl")
  [ "$(stat "$URL5" requests)" = "$before" ] || { echo "bench: the replay paid again" >&2; exit 1; }
  cmp -s "$T/j1.jsonl" "$T/j2.jsonl" || { echo "bench: the replay's output differs" >&2; exit 1; }
  set -- $j_time; echo "$3 $1" >>"$T/j_runs"
  set -- $(cpu python3 bench/llm_baseline.py "$URL5" "$REPLAY" "$T/jp2.jsonl" 200 "$T/jp.db"); echo "$3 $1" >>"$T/jp_runs"
done
set -- $(sort -n "$T/j_runs" | sed -n 2p); j_wall=$1 j_cpu=$2
set -- $(sort -n "$T/jp_runs" | sed -n 2p); jp_wall=$1 jp_cpu=$2

# (d) checkpoint cost per policy on the row engine: checkpoints, their
# mean store time, their share of the run's wall time, and max RSS (the
# results a rare checkpoint holds until it is written)
for pol in rows adaptive seconds; do
  rm -f "$T"/pol.db*
  w=$( { /usr/bin/time -f "%e %M" "$ORCH" run -q bench/passthrough.lua --db "$T/pol.db" --set policy=$pol \
    --set input="$T/rows.csv" --set out="$T/pol.jsonl" 2>&1 >/dev/null; } | tail -1)
  "$ORCH" stats --db "$T/pol.db" --json | python3 -c '
import json, sys
s = json.load(sys.stdin); wall, rss = (float(x) for x in sys.argv[2].split())
print("| %s | %d | %.2f | %.2f | %.2f %% | %.1f |" % (sys.argv[1], s["checkpoints"], s["checkpoint_mean_ms"], wall,
      100.0 * s["checkpoints"] * s["checkpoint_mean_ms"] / 1000.0 / wall, rss / 1024))' "$pol" "$w" >>"$T/policies"
done

# (f) kill -9 at 50 %: 4,000 calls of 250 ms at concurrency 200, killed
# once 2,000 rows are written; then the resume: time from its start to
# the first request it sends (new work: the rows answered before the kill
# come from the journal) and to its first new output bytes (written at
# its first checkpoint, 500 rows on), and the calls paid twice
rm -f "$T"/k.db* "$T/k.jsonl"
k_before=$(stat "$URL" requests)
ORCH_DB="$T/k.db" "$ORCH" run -q bench/llm.lua --set base_url="$URL" --set out="$T/k.jsonl" &
kpid=$!
for _ in $(seq 1 2000); do [ "$(wc -l 2>/dev/null <"$T/k.jsonl" || echo 0)" -ge 2000 ] && break; sleep 0.01; done
kill -9 "$kpid"; wait "$kpid" 2>/dev/null || true
k_lines=$(wc -l <"$T/k.jsonl")
k_offset=$(sqlite3 "$T/k.db" "select output_offset from checkpoints order by created_ms desc, seq desc limit 1")
# the resume cuts the output back to its checkpoint before anything else;
# cut it here first, so the first byte past that offset is the resume's
truncate -s "$k_offset" "$T/k.jsonl"
sleep 0.3 # the killed run's requests answered: what the server receives next is the resume's
k_first=$(ORCH_DB="$T/k.db" python3 - "$ORCH" "$URL" "$T/k.jsonl" "$k_offset" <<'PY'
import json, os, subprocess, sys, time, urllib.request
orch, url, out, offset = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
stats = url[:-len("/v1")] + "/stats"
received = lambda: json.load(urllib.request.urlopen(stats))["received"]
r0 = received()
t0 = time.monotonic()
p = subprocess.Popen([orch, "run", "-q", "bench/llm.lua", "--set", "base_url=" + url, "--set", "out=" + out])
req = first = None
while p.poll() is None and (req is None or first is None):
    if req is None and received() > r0:
        req = time.monotonic() - t0
    try:
        if first is None and os.path.getsize(out) > offset:
            first = time.monotonic() - t0
    except OSError:
        pass
    time.sleep(0.003)
p.wait()
print("%.3f / %.3f" % (req if req is not None else float("nan"), first if first is not None else float("nan")))
PY
)
[ "$(wc -l <"$T/k.jsonl")" = 4000 ] || { echo "bench: the killed run did not end with 4,000 rows" >&2; exit 1; }
k_repeat=$(( $(stat "$URL" requests) - k_before - 4000 ))

# (g) the concurrency sweep: calls of 50 ms at concurrency 1 .. 1,000
# (10 calls a slot, at least 40, at most 5,000): calls/s and max RSS of
# orch, Python (ThreadPool; asyncio + aiohttp) and Node
SWEEP=${SWEEP:-1 10 100 300 1000}
echo "# concurrency calls orch_cps orch_rss pythreads_cps pythreads_rss aiohttp_cps aiohttp_rss node_cps node_rss" \
  >bench/sweep.dat
for c in $SWEEP; do
  n=$((c * 10)); [ "$n" -lt 40 ] && n=40; [ "$n" -gt 5000 ] && n=5000
  rm -f "$T"/s.db*
  set -- $(ORCH_DB="$T/s.db" cpu "$ORCH" run -q bench/llm.lua --set rows=$n --set concurrency=$c \
    --set base_url="$URL4" --set out="$T/s.jsonl"); so="$(python3 -c "print('%.1f' % ($n / $3))") $2"
  set -- $(cpu python3 bench/llm_baseline.py "$URL4" $n "$T/sp.jsonl" $c); sp="$(python3 -c "print('%.1f' % ($n / $3))") $2"
  set -- $(cpu $PYDEB bench/llm_aiohttp.py "$URL4" $n "$T/sa.jsonl" $c); sa="$(python3 -c "print('%.1f' % ($n / $3))") $2"
  set -- $(cpu node bench/llm_node.mjs "$URL4" $n "$T/sn.jsonl" $c); sn="$(python3 -c "print('%.1f' % ($n / $3))") $2"
  echo "$c $n $so $sp $sa $sn" >>bench/sweep.dat
done
gnuplot <<'GP'
set terminal pngcairo size 1100,450 font ",10"
set output "bench/results.png"
set multiplot layout 1,2 title "orch and its peers against a provider-like server (50 ms replies)"
set logscale x; set xlabel "concurrency"; set key top left; set grid
set title "throughput"; set ylabel "calls/s"; set logscale y
plot "bench/sweep.dat" using 1:3 with linespoints title "orch", \
     "" using 1:5 with linespoints title "Python ThreadPool", \
     "" using 1:7 with linespoints title "Python asyncio+aiohttp", \
     "" using 1:9 with linespoints title "Node openai SDK + p-limit"
set title "max RSS"; set ylabel "MB"; unset logscale y
plot "bench/sweep.dat" using 1:4 with linespoints title "orch", \
     "" using 1:6 with linespoints title "Python ThreadPool", \
     "" using 1:8 with linespoints title "Python asyncio+aiohttp", \
     "" using 1:10 with linespoints title "Node openai SDK + p-limit"
unset multiplot
GP

printf '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Classify: review number 1"}]}' >"$T/body.json"
l_ab=$(ab -q -n 4000 -c 200 -k -p "$T/body.json" -T application/json -H "Authorization: Bearer bench" \
  "$URL/chat/completions" 2>/dev/null | awk '/Time taken for tests/ {print $5}')
set -- $(median "$T/l_orch"); lo_cpu=$1 lo_rss=$2 lo_wall=$3
set -- $(median "$T/l_floor"); lf_cpu=$1 lf_rss=$2
set -- $(median "$T/l_py"); lp_cpu=$1 lp_rss=$2 lp_wall=$3
set -- $(median "$T/l_orch2"); lo2_cpu=$1 lo2_rss=$2
set -- $(median "$T/l_floor2"); lf2_cpu=$1 lf2_rss=$2
set -- $(cat "$T/l_aio"); la_cpu=$1 la_rss=$2
set -- $(cat "$T/l_node"); ln_cpu=$1 ln_rss=$2
set -- $(cat "$T/l_pyj"); lj_cpu=$1 lj_rss=$2
set -- $(cat "$T/f_orch"); fo_cpu=$1 fo_rss=$2 fo_wall=$3 fo_peak=$4
set -- $(cat "$T/f_floor"); ff_rss=$2
set -- $(cat "$T/f_aio"); fa_rss=$2 fa_wall=$3 fa_peak=$4
set -- $(cat "$T/f_node"); fn_rss=$2 fn_wall=$3 fn_peak=$4

{
  echo "# bench results"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -m)); medians of ${RUNS:-5} hyperfine runs (3 runs for the 1M-row and replay rows, ${LLM_RUNS:-5} alternating runs for the LLM calls)."
  echo
  echo "| benchmark | orch | baseline | ratio |"
  echo "|---|---|---|---|"
  echo "| 1,000 rows x ctx:sleep(0.1), concurrency 100: wall s (ideal 1.00) | $s_orch | Python ThreadPool(100): $s_py | $(ratio "$s_orch" 1.0) x ideal, $(ratio "$s_orch" "$s_py") x Python |"
  echo "| same: max RSS MB | $s_rss | $s_pyrss | $(ratio "$s_rss" "$s_pyrss") |"
  echo "| $ROWS-row CSV -> Lua stage -> JSONL: wall s | $p_orch | Python csv+json loop: $p_py | $(ratio "$p_orch" "$p_py") |"
  echo "| same: rows/s | $(python3 -c "print(int($ROWS/$p_orch))") | $(python3 -c "print(int($ROWS/$p_py))") | |"
  echo "| same: max RSS MB | $p_rss | $p_pyrss | $(ratio "$p_rss" "$p_pyrss") |"
  echo "| same: CPU s (user+sys), median of 5 alternating runs (target <= 0.5 x Python) | $p_cpu | $p_pycpu | $(ratio "$p_cpu" "$p_pycpu") |"
  echo "| $BIG-row durable run (checkpoint every 500 rows, fsync): wall s | $b_wall | Python loop, no durability: $b_py | $(ratio "$b_wall" "$b_py") |"
  echo "| same: rows/s | $(python3 -c "print(int($BIG/$b_wall))") | $(python3 -c "print(int($BIG/$b_py))") | |"
  echo "| same: max RSS MB (target <= 64) | $b_rss | | |"
  echo "| 4,000 LLM calls over HTTP (provider-like server), 250 ms each, concurrency 200: wall s (ideal 5.00) | $lo_wall | ab -k (C load generator): $l_ab; Python ThreadPool(200): $lp_wall | $(ratio "$lo_wall" 5) x ideal, $(ratio "$lo_wall" "$l_ab") x ab |"
  echo "| same: CPU s (user+sys, journal included), median of ${LLM_RUNS:-5} (target <= 2 x libcurl alone) | $lo_cpu | libcurl alone: $lf_cpu; Python: $lp_cpu | $(ratio "$lo_cpu" "$lf_cpu") x libcurl alone, $(ratio "$lo_cpu" "$lp_cpu") x Python |"
  echo "| same: max RSS MB (target <= libcurl alone + 3) | $lo_rss | libcurl alone: $lf_rss; Python: $lp_rss | $(python3 -c "print('%+.1f' % ($lo_rss - $lf_rss))") MB over libcurl alone, $(ratio "$lo_rss" "$lp_rss") x Python |"
  echo "| same against tests/llm_server.py (thread per connection, two writes per reply): CPU s | $lo2_cpu | libcurl alone: $lf2_cpu | $(ratio "$lo2_cpu" "$lf2_cpu") x libcurl alone |"
  echo "| same: max RSS MB | $lo2_rss | libcurl alone: $lf2_rss | |"
  echo "| same, asyncio + aiohttp and Node (official openai SDK + p-limit), one run each: CPU s / max RSS MB | | Python asyncio: $la_cpu / $la_rss; Node: $ln_cpu / $ln_rss; Python ThreadPool journaling each reply to SQLite: $lj_cpu / $lj_rss | |"
  echo "| 8,000 calls of 1 s at concurrency 2,000: max RSS MB (target <= 40) | $fo_rss | libcurl alone: $ff_rss; Python asyncio: $fa_rss; Node: $fn_rss | |"
  echo "| same: wall s (ideal 4.00) / most requests the server held at once | $fo_wall / $fo_peak | Python asyncio: $fa_wall / $fa_peak; Node: $fn_wall / $fn_peak | |"
  echo "| journal replay: a rerun of $REPLAY LLM rows, all answered by the journal: rows/s (target >= 100,000), median of 3 | $(python3 -c "print(int($REPLAY/$j_wall))") | Python ThreadPool from its SQLite journal: $(python3 -c "print(int($REPLAY/$jp_wall))") | $(ratio "$jp_wall" "$j_wall") x Python |"
  echo "| same: wall s / CPU s | $j_wall / $j_cpu | Python: $jp_wall / $jp_cpu | |"
  echo "| kill -9 at 50 % (4,000 calls of 250 ms, concurrency 200, killed at $k_lines rows): resume to its first request / its first new output bytes, s / calls paid twice | $k_first / $k_repeat | | |"
  echo "| one checkpoint of 500 rows: mean / max ms, over N checkpoints | $(echo "$b_ckpt" | awk '{print $1 " / " $2 ", N = " $3}') | | |"
  echo
  echo "Checkpoint cost per policy ($ROWS-row run of bench/passthrough.lua; store time of the checkpoints over the run's wall time):"
  echo
  echo "| policy | checkpoints | mean ms | run wall s | checkpoint share of wall | max RSS MB |"
  echo "|---|---|---|---|---|---|"
  cat "$T/policies"
  echo
  echo "The concurrency sweep (bench/sweep.dat, plotted in bench/results.png): calls of 50 ms, 10 per slot (40 to 5,000); calls/s and max RSS MB."
  echo
  echo "| concurrency | calls | orch | Python ThreadPool | Python asyncio+aiohttp | Node openai + p-limit |"
  echo "|---|---|---|---|---|---|"
  grep -v '^#' bench/sweep.dat | awk '{printf "| %s | %s | %s/s, %s MB | %s/s, %s MB | %s/s, %s MB | %s/s, %s MB |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10}'
  echo
  echo "Load average at the end of the run: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "The state store alone (bench/store.c, one run):"
  echo
  build/bench_store "$T" | grep -v ' passed, ' | sed 's/^/- /'
} >bench/results.md
cat bench/results.md
# what each performance change bought (kept by hand, measured when made)
[ -f bench/changes.md ] && { echo; cat bench/changes.md; } >>bench/results.md
