#!/usr/bin/env bash
# orch worker's shared rate limit, measured: one run with rpm RPM (1200 by
# default) worked by 3 workers started together and a 4th started LATE_S
# seconds later (30), once with llm.shared_rate = "bucket" (the run's token
# bucket in the store) and once with "split" (the limit divided among the
# live workers when each starts a lease). tests/llm_server.py counts the
# requests that arrive in each second of its clock; from those, the worst
# window of 60 s (requests per minute observed against the limit), of 10 s
# and of 1 s, the mean rate over the run, and the rate over time. Each
# worker is far from its own ceiling (CONC 10 at LATENCY_MS 50: 200 rows/s),
# so the limit alone sets the pace. PostgreSQL over its Unix socket
# (tests/pg_lib.sh: needs root). Writes bench/workers_rate.md.
#   bash bench/workers_rate.sh     ROWS=2400 RPM=1200 LEASE=100 LATE_S=30 by default
set -uo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 >/dev/null || exit 1
export ORCH=$PWD/build/orch ORCH_TMP=${ORCH_TMP:-/tmp}
ROWS=${ROWS:-2400} RPM=${RPM:-1200} LEASE=${LEASE:-100} LATE_S=${LATE_S:-30} LATENCY_MS=${LATENCY_MS:-50}
CONC=${CONC:-10}
. tests/lib.sh
. tests/pg_lib.sh
start_pg
start_llm_server --latency-ms "$LATENCY_MS"
trap 'stop_pg; kill ${LLM_PID:-} 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
OUT=$PWD/bench/workers_rate.md
cd "$WORK"
python3 -c "import json
with open('items.jsonl', 'w') as f:
    for i in range(1, $ROWS + 1):
        f.write(json.dumps({'id': i, 'text': 'review number %d' % i}) + '\n')"
for scheme in bucket split; do
  cat >"$scheme.lua" <<LUA
local orch = require("orch")
return orch.workflow {
  name = "bench-rate-$scheme",
  input = orch.read.jsonl("items.jsonl"),
  output = orch.write.jsonl("out/$scheme.jsonl"),
  key = "id",
  llm = { provider = "openai", model = "gpt-4o-mini", base_url = "$LLM_URL/v1", api_key = "bench",
          concurrency = $CONC, timeout = 30, rpm = $RPM, shared_rate = "$scheme" },
  stages = { orch.stage.prompt { template = "Classify: {{text}}", into = "label" } },
}
LUA
done

# measure SCHEME: 3 workers, a 4th LATE_S s later; prints the analysis line of the server's counts
measure() {
  local url pids="" rcs=""
  pg_sql "CREATE DATABASE $1"
  url="postgres:///$1?host=$PG_DIR&user=orch"
  llm_admin reset
  for _ in 1 2 3; do
    "$ORCH" worker -q "$1.lua" --db "$url" --lease-rows "$LEASE" >>"$1.log" 2>&1 &
    pids="$pids $!"
  done
  sleep "$LATE_S"
  "$ORCH" worker -q "$1.lua" --db "$url" --lease-rows "$LEASE" >>"$1.log" 2>&1 &
  pids="$pids $!"
  for p in $pids; do
    wait "$p"
    rcs="$rcs$?"
  done
  [ "$rcs" = 0000 ] || echo "bench: $1: a worker failed ($rcs)" >&2
  curl -s "$LLM_URL/admin/stats" >"$1.stats.json"
  python3 - "$RPM" "$1.stats.json" "$1" <<'PY'
import json, sys
rpm, stats, scheme = float(sys.argv[1]), json.load(open(sys.argv[2])), sys.argv[3]
per = {int(k): v for k, v in stats["per_second"].items()}
lo, hi = min(per), max(per)
c = [per.get(s, 0) for s in range(lo, hi + 1)]
def worst(w):
    w = min(w, len(c))
    return max(sum(c[i:i + w]) for i in range(len(c) - w + 1)), w
w60, n60 = worst(60)
w10, _ = worst(10)
w1, _ = worst(1)
span = len(c)
# requests per minute in each 10 s slice of the run
slices = [sum(c[i:i + 10]) * 60 // len(c[i:i + 10]) for i in range(0, len(c), 10)]
print("%s|%d|%d|%d|%d|%d|%.0f|%s" % (scheme, stats["requests"], span, w60 * 60 // n60, w10 * 6, w1 * 60,
      stats["requests"] * 60 / span, " ".join(str(s) for s in slices)))
PY
}
b=$(measure bucket)
s=$(measure split)
field() { echo "$1" | cut -d'|' -f"$2"; }
pct() { python3 -c "print('%+.0f%%' % (($1 - $RPM) * 100 / $RPM))"; }
{
  echo "# orch worker: a run's rate limit shared by its workers"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores (shared with other work): $ROWS LLM rows, rpm $RPM for the run,"
  echo "3 workers started together and a 4th $LATE_S s later, leases of $LEASE rows, each worker at LLM concurrency"
  echo "$CONC against tests/llm_server.py at $LATENCY_MS ms a reply (each could send $((CONC * 1000 / LATENCY_MS)) a second"
  echo "on its own: the limit alone sets the pace). PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') over its"
  echo "Unix socket. The server counts the requests arriving in each second of its clock; a window's figure is the"
  echo "most requests in any run of that many consecutive seconds, scaled to a minute. One run of each"
  echo "(bash bench/workers_rate.sh)."
  echo
  echo "| llm.shared_rate | requests | seconds | worst 60 s (rpm) | vs limit | worst 10 s (as rpm) | worst 1 s (as rpm) | mean rpm |"
  echo "|---|---|---|---|---|---|---|---|"
  for r in "$b" "$s"; do
    echo "| $(field "$r" 1) | $(field "$r" 2) | $(field "$r" 3) | $(field "$r" 4) | $(pct "$(field "$r" 4)") | $(field "$r" 5) | $(field "$r" 6) | $(field "$r" 7) |"
  done
  echo
  echo "Requests per minute over time (each 10 s slice of the run, scaled to a minute; the 4th worker"
  echo "starts in slice $((LATE_S / 10 + 1))):"
  echo
  echo "- bucket: $(field "$b" 8)"
  echo "- split: $(field "$s" 8)"
} | tee "$OUT"
