# A real PostgreSQL server for the tests that need one (sourced after
# tests/lib.sh): start_pg initdb's a cluster in a temporary directory as the
# unprivileged `postgres` user (initdb refuses root), starts it with a Unix
# socket in that directory and no TCP listener, creates the database `orch`
# and sets PG_URL (postgres:///orch?host=DIR&user=orch); the server is
# stopped when the script exits, whatever happened. Missing binaries fail
# the test with how to install them: CI never skips it.
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}

start_pg() {
  if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ] || ! id postgres >/dev/null 2>&1; then
    bad "PostgreSQL is not installed: apt-get install -y postgresql (tests/deps.sh does)"
    finish
    exit 1
  fi
  PG_DIR=$(mktemp -d "${ORCH_TMP:-/tmp}/pg.XXXXXX")
  chmod 755 "$PG_DIR"
  chown postgres "$PG_DIR"
  runuser -u postgres -- "$PGBIN/initdb" -D "$PG_DIR/data" -A trust -U orch --no-sync >"$PG_DIR/initdb.log" 2>&1 ||
    { bad "initdb failed: $(tail -3 "$PG_DIR/initdb.log")"; finish; exit 1; }
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
    -o "-k $PG_DIR -c listen_addresses='' -c max_connections=50" start >/dev/null 2>&1 ||
    { bad "pg_ctl start failed: $(tail -3 "$PG_DIR/server.log")"; finish; exit 1; }
  trap 'stop_pg; kill ${LLM_PID:-} 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
  "$PGBIN/psql" -q -h "$PG_DIR" -U orch -d postgres -c "CREATE DATABASE orch" >/dev/null
  PG_URL="postgres:///orch?host=$PG_DIR&user=orch"
}

stop_pg() {
  [ -n "${PG_DIR:-}" ] || return 0
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1
  rm -rf "$PG_DIR"
  PG_DIR=
}

# pg_sql SQL...: runs SQL in the test database, unaligned, tuples only
pg_sql() { "$PGBIN/psql" -qAt -h "$PG_DIR" -U orch -d orch -c "$*"; }
