#!/usr/bin/env bash
# orch worker on one machine: rows/s of one run shared by 1, 2 and 4
# workers against tests/llm_server.py at a fixed latency (LATENCY_MS, 100
# by default), each worker bound by its own LLM concurrency (CONC, 10): the
# ideal is CONC / latency rows/s per worker. Beside them `orch run` of the
# same workflow at the same concurrency, so the lease overhead per row is
# (1 worker - orch run) / rows. PostgreSQL over its Unix socket
# (tests/pg_lib.sh: needs root). Writes bench/workers.md.
#   bash bench/workers.sh          ROWS=2000 LATENCY_MS=100 CONC=10 by default
set -uo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 >/dev/null || exit 1
export ORCH=$PWD/build/orch ORCH_TMP=${ORCH_TMP:-/tmp}
ROWS=${ROWS:-2000} LATENCY_MS=${LATENCY_MS:-100} CONC=${CONC:-10} LEASE=${LEASE:-250}
. tests/lib.sh
. tests/pg_lib.sh
start_pg
start_llm_server --latency-ms "$LATENCY_MS"
trap 'stop_pg; kill ${LLM_PID:-} 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
cd "$WORK"
python3 -c "import json
with open('items.jsonl', 'w') as f:
    for i in range(1, $ROWS + 1):
        f.write(json.dumps({'id': i, 'text': 'review number %d' % i}) + '\n')"
cat >wf.lua <<LUA
local orch = require("orch")
return orch.workflow {
  name = "bench-workers",
  input = orch.read.jsonl("items.jsonl"),
  output = orch.write.jsonl(orch.param("out", "out/w.jsonl")),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$LLM_URL/v1", api_key = "bench",
          concurrency = $CONC, timeout = 30 },
  stages = { orch.stage.prompt { template = "Classify: {{text}}", into = "label" } },
}
LUA
# newdb NAME: a fresh database (its own journal: no run answers another's requests)
newdb() { pg_sql "CREATE DATABASE $1"; echo "postgres:///$1?host=$PG_DIR&user=orch"; }
now() { date +%s.%N; }
# workers N: wall seconds of N workers started together, until the last ends
workers() {
  local url pids="" t0 t1
  url=$(newdb "w$1")
  t0=$(now)
  for _ in $(seq 1 "$1"); do
    "$ORCH" worker -q wf.lua --db "$url" --lease-rows "$LEASE" --set out=out/w$1.jsonl >>workers.log 2>&1 &
    pids="$pids $!"
  done
  for p in $pids; do wait "$p" || echo "bench: a worker failed" >&2; done
  t1=$(now)
  cmp -s out/ref.jsonl "out/w$1.jsonl" || echo "bench: $1 workers: output differs" >&2
  python3 -c "print('%.2f' % ($t1 - $t0))"
}
url=$(newdb single)
t0=$(now)
"$ORCH" run -q wf.lua --db "$url" --set out=out/ref.jsonl || exit 1
t1=$(now)
w_run=$(python3 -c "print('%.2f' % ($t1 - $t0))")
w1=$(workers 1)
w2=$(workers 2)
w4=$(workers 4)
rate() { python3 -c "print('%.0f' % ($ROWS / $1))"; }
ideal=$(python3 -c "print('%.0f' % ($CONC * 1000 / $LATENCY_MS))")
cd - >/dev/null
{
  echo "# orch worker: one run, several workers on one machine"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores: $ROWS LLM rows, tests/llm_server.py at $LATENCY_MS ms a"
  echo "reply, each process at LLM concurrency $CONC (ideal $ideal rows/s a process), leases of $LEASE rows,"
  echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') over its Unix socket on the same machine. One"
  echo "measurement each (bash bench/workers.sh); the mock server is Python on the same cores."
  echo
  echo "| | wall s | rows/s | vs 1 worker |"
  echo "|---|---|---|---|"
  echo "| orch run (one process) | $w_run | $(rate "$w_run") | |"
  for n in 1 2 4; do
    eval "w=\$w$n"
    echo "| $n worker(s) | $w | $(rate "$w") | $(python3 -c "print('%.2fx' % ($w1 / $w))") |"
  done
  echo
  echo "Lease overhead: (1 worker - orch run) / rows = $(python3 -c "print('%.3f' % (($w1 - $w_run) * 1000 / $ROWS))") ms a row"
  echo "(planning the leases: reading the input once; a claim, a commit of each lease's rows with their output"
  echo "lines, a heartbeat; and the output assembled from the store at the end)."
} | tee bench/workers.md
