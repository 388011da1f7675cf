# A real Redis server for the tests that need one (sourced after
# tests/lib.sh): start_redis starts redis-server (Debian redis-server) with
# its data in a temporary directory, listening on a Unix socket there and
# on a random 127.0.0.1 port, with appendonly yes and appendfsync always
# (every acknowledged write on disk, what orch's guarantees need), and sets
# REDIS_DIR, REDIS_PORT, REDIS_SOCK, REDIS_URL (redis://127.0.0.1:PORT/0)
# and REDIS_UNIX_URL (unix://SOCK?db=0). The server is stopped when the
# script exits, whatever happened. Extra arguments are passed to the
# server (e.g. --requirepass pw). A missing binary fails the test with how
# to install it: CI never skips it.
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || true)}

# redis_config_args: the server settings of every test server
redis_start_in() {
  local dir=$1
  shift
  local port tries=0
  while :; do
    port=$((20000 + RANDOM % 40000))
    "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --unixsocket "$dir/redis.sock" --unixsocketperm 700 \
      --dir "$dir" --appendonly yes --appendfsync always --save '' --daemonize yes \
      --pidfile "$dir/redis.pid" --logfile "$dir/server.log" "$@" >/dev/null 2>&1
    # the pid file appears once the server listens; a taken port ends it at once
    if wait_until "[ -s '$dir/redis.pid' ] && [ -S '$dir/redis.sock' ]" >/dev/null; then break; fi
    tries=$((tries + 1))
    [ $tries -lt 5 ] || return 1
  done
  REDIS_PORT=$port
}

start_redis() {
  if [ -z "$REDIS_SERVER" ] || [ ! -x "$REDIS_SERVER" ]; then
    bad "redis-server is not installed: apt-get install -y redis-server (tests/deps.sh does)"
    finish
    exit 1
  fi
  REDIS_DIR=$(mktemp -d "${ORCH_TMP:-/tmp}/redis.XXXXXX")
  redis_start_in "$REDIS_DIR" "$@" ||
    { bad "redis-server did not start: $(tail -3 "$REDIS_DIR/server.log" 2>/dev/null)"; finish; exit 1; }
  REDIS_SOCK=$REDIS_DIR/redis.sock
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  REDIS_UNIX_URL="unix://$REDIS_SOCK?db=0"
  trap 'stop_redis; kill ${LLM_PID:-} 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
}

# stop_redis: kills the server (no final save: what is on disk is what the
# AOF holds) and removes its directory
stop_redis() {
  [ -n "${REDIS_DIR:-}" ] || return 0
  [ -s "$REDIS_DIR/redis.pid" ] && kill -9 "$(cat "$REDIS_DIR/redis.pid")" 2>/dev/null
  rm -rf "$REDIS_DIR"
  REDIS_DIR=
}

# rcli ARGS...: redis-cli on the test server's socket (db 0 unless -n N)
rcli() { redis-cli -s "$REDIS_SOCK" "$@"; }

# kill_redis: kills the server with -9, as a crash would (the AOF, fsynced
# on every write, is all that is left)
kill_redis() {
  kill -9 "$(cat "$REDIS_DIR/redis.pid")" 2>/dev/null
  wait_until "! rcli ping >/dev/null 2>&1"
  rm -f "$REDIS_DIR/redis.pid" "$REDIS_SOCK"
}

# restart_redis: starts the server again on the same port, socket and
# data (what its AOF holds)
restart_redis() {
  local port=$REDIS_PORT
  "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --unixsocket "$REDIS_SOCK" --unixsocketperm 700 \
    --dir "$REDIS_DIR" --appendonly yes --appendfsync always --save '' --daemonize yes \
    --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/server.log" >/dev/null 2>&1
  wait_until "rcli ping >/dev/null 2>&1" || bad "redis-server did not restart: $(tail -3 "$REDIS_DIR/server.log")"
}
