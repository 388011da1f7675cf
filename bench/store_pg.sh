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
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 >/dev/null || exit 1
export ORCH=$PWD/build/orch ORCH_TMP=${ORCH_TMP:-/tmp}
. tests/lib.sh
. tests/pg_lib.sh
start_pg
# a TCP listener on a free 127.0.0.1 port besides the socket
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_DIR/data" -m fast -w restart -l "$PG_DIR/server.log" \
  -o "-k $PG_DIR -c listen_addresses=127.0.0.1 -p $PORT -c max_connections=50" >/dev/null) || exit 1
SOCK_URL="postgres:///orch?host=$PG_DIR&port=$PORT&user=orch"
TCP_URL="postgres://orch@127.0.0.1:$PORT/orch"
LIBS=$(pkg-config --libs libpq sqlite3 libxxhash libzstd libcurl)
cc -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -Istorage -Icore bench/store_bench.c build/liborchc.a $LIBS -lcsv \
  -o "$WORK/store_bench" || exit 1

{
  "$WORK/store_bench" "$WORK/bench.db" "SQLite file (WAL)"
  "$WORK/store_bench" "$SOCK_URL" "PostgreSQL, Unix socket"
  "$WORK/store_bench" "$TCP_URL" "PostgreSQL, TCP 127.0.0.1"
} | tee "$WORK/ops.txt"

start_llm_server --latency-ms 250
trap 'stop_pg; kill ${LLM_PID:-} 2>/dev/null; rm -rf "$WORK"' EXIT
wall() { /usr/bin/time -f "%e" "$@" 2>&1 >/dev/null | tail -1; }
for i in $(seq 1 "${LLM_RUNS:-3}"); do
  rm -f "$WORK"/llm.db*
  "$PGBIN/psql" -qAt -h "$PG_DIR" -p "$PORT" -U orch -d postgres -c "CREATE DATABASE llm$i"
  wall "$ORCH" run -q bench/llm.lua --db "$WORK/llm.db" --set base_url="$LLM_URL/v1" --set out="$WORK/s.jsonl" >>"$WORK/w_sqlite"
  wall "$ORCH" run -q bench/llm.lua --db "postgres:///llm$i?host=$PG_DIR&port=$PORT&user=orch" \
    --set base_url="$LLM_URL/v1" --set out="$WORK/p.jsonl" >>"$WORK/w_pg"
  cmp -s "$WORK/s.jsonl" "$WORK/p.jsonl" || { echo "bench: outputs differ" >&2; exit 1; }
done
med() { sort -n "$1" | awk '{l[NR] = $0} END {print l[int((NR + 1) / 2)]}'; }
ws=$(med "$WORK/w_sqlite")
wp=$(med "$WORK/w_pg")
{
  echo "# state store: PostgreSQL beside SQLite"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') (default settings, fsync on) on the same machine."
  echo
  echo '```'
  cat "$WORK/ops.txt"
  echo '```'
  echo
  echo "| 4,000 LLM calls, 250 ms each, concurrency 200 (ideal 5.00 s), median of ${LLM_RUNS:-3} | wall s |"
  echo "|---|---|"
  echo "| SQLite file | $ws |"
  echo "| PostgreSQL, Unix socket | $wp ($(python3 -c "print('%+.1f %%' % (($wp / $ws - 1) * 100))") vs SQLite) |"
} >bench/store_pg.md
cat bench/store_pg.md
