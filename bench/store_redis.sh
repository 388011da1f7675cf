#!/usr/bin/env bash
# The state store on Redis beside SQLite and PostgreSQL, on the same
# machine in the same run: one checkpoint (500 results) and one journal
# group commit (50 puts + 50 lookups) on an SQLite file, PostgreSQL over
# its Unix socket, and Redis (appendonly yes, appendfsync always: every
# write on disk before it is acknowledged, as orch's guarantees need) over
# its Unix socket and over TCP to 127.0.0.1 (bench/store_bench.c); then
# 4,000 LLM calls (250 ms each, concurrency 200, bench/llm.lua) on SQLite
# and on Redis, runs alternating, median wall time of LLM_RUNS. Needs root
# for PostgreSQL (tests/pg_lib.sh). Writes bench/store_redis.md.
#   bash bench/store_redis.sh
set -uo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 >/dev/null || exit 1
export ORCH=$PWD/build/orch ORCH_TMP=${ORCH_TMP:-/tmp}
. tests/lib.sh
. tests/pg_lib.sh
. tests/redis_lib.sh
start_pg
start_redis
trap 'stop_pg; stop_redis; kill ${LLM_PID:-} 2>/dev/null; rm -rf "$WORK"' EXIT
LIBS=$(pkg-config --libs libpq sqlite3 libxxhash libzstd libcurl hiredis)
cc -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -Istorage -Icore bench/store_bench.c build/liborchc.a \
  build/liborchstore.a $LIBS -lcsv -o "$WORK/store_bench" || exit 1

load=$(cut -d' ' -f1-3 /proc/loadavg)
{
  "$WORK/store_bench" "$WORK/bench.db" "SQLite file (WAL)"
  "$WORK/store_bench" "$PG_URL" "PostgreSQL, Unix socket"
  "$WORK/store_bench" "$REDIS_UNIX_URL" "Redis, Unix socket"
  "$WORK/store_bench" "$(echo "$REDIS_URL" | sed 's,/0$,/1,')" "Redis, TCP 127.0.0.1"
} | tee "$WORK/ops.txt"

start_llm_server --latency-ms 250
trap 'stop_pg; stop_redis; kill ${LLM_PID:-} 2>/dev/null; rm -rf "$WORK"' EXIT
wall() { /usr/bin/time -f "%e" "$@" 2>&1 >/dev/null | tail -1; }
for i in $(seq 1 "${LLM_RUNS:-3}"); do
  rm -f "$WORK"/llm.db*
  wall "$ORCH" run -q bench/llm.lua --db "$WORK/llm.db" --set base_url="$LLM_URL/v1" --set out="$WORK/s.jsonl" >>"$WORK/w_sqlite"
  wall "$ORCH" run -q bench/llm.lua --db "unix://$REDIS_SOCK?db=$((i + 1))" \
    --set base_url="$LLM_URL/v1" --set out="$WORK/r.jsonl" >>"$WORK/w_redis"
  cmp -s "$WORK/s.jsonl" "$WORK/r.jsonl" || { echo "bench: outputs differ" >&2; exit 1; }
done
med() { sort -n "$1" | awk '{l[NR] = $0} END {print l[int((NR + 1) / 2)]}'; }
ws=$(med "$WORK/w_sqlite")
wr=$(med "$WORK/w_redis")
{
  echo "# state store: Redis beside SQLite and PostgreSQL"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, on the same machine:"
  echo "Redis $("$REDIS_SERVER" --version | sed 's/.*v=\([^ ]*\).*/\1/') with appendonly yes and appendfsync always"
  echo "(every acknowledged write fsynced: what orch's guarantees need), PostgreSQL"
  echo "$("$PGBIN/postgres" --version | awk '{print $3}') with its default settings (fsync on). Load average when the"
  echo "store figures were taken: $load (on a shared machine, compare the rows of one run with each other only)."
  echo
  echo '```'
  cat "$WORK/ops.txt"
  echo '```'
  echo
  echo "| 4,000 LLM calls, 250 ms each, concurrency 200 (ideal 5.00 s), median of ${LLM_RUNS:-3} | wall s |"
  echo "|---|---|"
  echo "| SQLite file | $ws |"
  echo "| Redis, Unix socket | $wr ($(python3 -c "print('%+.1f %%' % (($wr / $ws - 1) * 100))") vs SQLite) |"
} >bench/store_redis.md
cat bench/store_redis.md
