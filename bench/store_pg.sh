#!/usr/bin/env bash
# The state store on PostgreSQL beside SQLite, on the same machine in the
# same run: one checkpoint (500 results) and one journal group commit (50
# puts + 50 lookups), on an SQLite file, PostgreSQL over its Unix socket and
# over TCP to 127.0.0.1 (bench/store_bench.c); then 4,000 LLM calls (250 ms
# each, concurrency 200, bench/llm.lua) with each store, runs alternating,
# median wall time of LLM_RUNS. Needs root (the server runs as `postgres`,
# tests/pg_lib.sh). Writes bench/store_pg.md.
#   bash bench/store_pg.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. bench/lib_store.sh
bench_setup
start_pg
# a TCP listener on a free 127.0.0.1 port besides the socket
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_DIR/data" -m fast -w restart -l "$PG_DIR/server.log" \
  -o "-k $PG_DIR -c listen_addresses=127.0.0.1 -p $PORT -c max_connections=50" >/dev/null) || exit 1
SOCK_URL="postgres:///orch?host=$PG_DIR&port=$PORT&user=orch"
TCP_URL="postgres://orch@127.0.0.1:$PORT/orch"
build_store_bench

{
  "$WORK/store_bench" "$WORK/bench.db" "SQLite file (WAL)"
  "$WORK/store_bench" "$SOCK_URL" "PostgreSQL, Unix socket"
  "$WORK/store_bench" "$TCP_URL" "PostgreSQL, TCP 127.0.0.1"
} | tee "$WORK/ops.txt"

start_llm_server --latency-ms 250
trap 'stop_pg; kill ${LLM_PID:-} 2>/dev/null; rm -rf "$WORK"' EXIT
# run i's database, created empty
pg_db() {
  "$PGBIN/psql" -qAt -h "$PG_DIR" -p "$PORT" -U orch -d postgres -c "CREATE DATABASE llm$1" >&2 || return 1
  echo "postgres:///llm$1?host=$PG_DIR&port=$PORT&user=orch"
}
llm_runs pg pg_db
{
  echo "# state store: PostgreSQL beside SQLite"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') (default settings, fsync on) on the same machine."
  echo
  llm_figures pg "PostgreSQL, Unix socket"
} >bench/store_pg.md
cat bench/store_pg.md
