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
. bench/lib_store.sh
bench_setup
. tests/redis_lib.sh
start_pg
start_redis
trap 'stop_pg; stop_redis; kill ${LLM_PID:-} 2>/dev/null; rm -rf "$WORK"' EXIT
build_store_bench

load=$(cut -d' ' -f1-3 /proc/loadavg)
{
  "$WORK/store_bench" "$WORK/bench.db" "SQLite file (WAL)"
  "$WORK/store_bench" "$PG_URL" "PostgreSQL, Unix socket"
  "$WORK/store_bench" "$REDIS_UNIX_URL" "Redis, Unix socket"
  "$WORK/store_bench" "$(echo "$REDIS_URL" | sed 's,/0$,/1,')" "Redis, TCP 127.0.0.1"
} | tee "$WORK/ops.txt"

start_llm_server --latency-ms 250
trap 'stop_pg; stop_redis; kill ${LLM_PID:-} 2>/dev/null; rm -rf "$WORK"' EXIT
# run i's database: one of its own (db 0 and 1 are store_bench's)
redis_db() { echo "unix://$REDIS_SOCK?db=$(($1 + 1))"; }
llm_runs redis redis_db
{
  echo "# state store: Redis beside SQLite and PostgreSQL"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, on the same machine:"
  echo "Redis $("$REDIS_SERVER" --version | sed 's/.*v=\([^ ]*\).*/\1/') with appendonly yes and appendfsync always"
  echo "(every acknowledged write fsynced: what orch's guarantees need), PostgreSQL"
  echo "$("$PGBIN/postgres" --version | awk '{print $3}') with its default settings (fsync on). Load average when the"
  echo "store figures were taken: $load (on a shared machine, compare the rows of one run with each other only)."
  echo
  llm_figures redis "Redis, Unix socket"
} >bench/store_redis.md
cat bench/store_redis.md
