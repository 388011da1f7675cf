# Shared helpers of the end-to-end scenarios (sourced, not run by ctest).
# ORCH: the binary under test; ORCH_TMP: a scratch root.
set -u
ORCH=${ORCH:-$(pwd)/build/orch}
ROOT=$(pwd)
mkdir -p "${ORCH_TMP:-/tmp}"
WORK=$(mktemp -d "${ORCH_TMP:-/tmp}/e2e.XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
PASS=0
FAIL=0

ok() { PASS=$((PASS + 1)); echo "ok   $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $1"; }

# expect_eq NAME ACTUAL EXPECTED
expect_eq() {
  if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: expected [$3], got [$2]"; fi
}

# expect_grep NAME PATTERN FILE   (extended regex; an empty one, which
# matches anything, is a mistake in the test)
expect_grep() {
  if [ -z "$2" ]; then bad "$1: an empty pattern matches anything"; return; fi
  if grep -Eq -- "$2" "$3"; then ok "$1"; else
    bad "$1: /$2/ not found in $3:"; sed 's/^/     | /' "$3" | head -20; fi
}

# run_orch OUTFILE ARGS... : runs orch in $WORK, stderr+stdout to OUTFILE, sets RC
run_orch() {
  local out=$1; shift
  (cd "$WORK" && "$ORCH" "$@") >"$out" 2>&1
  RC=$?
}

# ids FILE: "1..N" when a JSONL file's ids are exactly 1..N in order, else
# what is wrong
ids() { python3 -c 'import json,sys
ids=[int(json.loads(l)["id"]) for l in open(sys.argv[1])]
print("1..%d" % len(ids) if ids == list(range(1, len(ids) + 1)) else "%d rows, not 1..n in order (first %s)" % (len(ids), ids[:5]))' "$1"; }

# id_list FILE [SEP]: the "id" of each line of a JSONL file, in order,
# joined by SEP (a space unless given)
id_list() { python3 -c 'import json,sys
print(sys.argv[2].join(str(json.loads(l)["id"]) for l in open(sys.argv[1])))' "$1" "${2:- }"; }

# wait_until CONDITION: evaluates the shell CONDITION every 0.05 s until it
# holds, for up to 30 s; 1 if it never did. A background run is waited for
# by what it has done (lines, checkpoints, marker files), never by a fixed
# sleep, so slow builds (ASan) and a busy machine do not change the outcome.
wait_until() {
  for _ in $(seq 1 600); do
    eval "$1" && return 0
    sleep 0.05
  done
  echo "     (waited 30 s for: $1)"
  return 1
}

# kill_repeatedly KILLS TRIES LOG DONE SPREAD ARGS...: starts `orch ARGS...`
# in the background again and again (its output appended to LOG) and kills
# it with -9 at a random moment (0.3 s to SPREAD/10 + 0.2 s) once that
# attempt has claimed its run, until KILLS kills, TRIES attempts, an attempt
# ends by itself, or the function named DONE says the run has completed.
# Sets KILLED to the number of kills.
kill_repeatedly() {
  local max=$1 tries=$2 klog=$3 done_fn=$4 spread=$5
  shift 5
  local attempts=0 begun pid
  KILLED=0
  while [ $KILLED -lt "$max" ] && [ $attempts -lt "$tries" ]; do
    attempts=$((attempts + 1))
    "$done_fn" && break # a kill can land after the final checkpoint, while the process exits
    begun=$(grep -cE "started run|resuming run" "$klog" 2>/dev/null || true)
    "$ORCH" "$@" >>"$klog" 2>&1 &
    pid=$!
    # kill only once this attempt has claimed the run (slow starts under ASan)
    wait_until '[ "$(grep -cE "started run|resuming run" "$klog")" -gt "${begun:-0}" ] || ! kill -0 "$pid" 2>/dev/null'
    sleep "0.$((RANDOM % spread + 3))" # a random moment of the run to kill it at: the point of the test
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid"
      wait "$pid" 2>/dev/null
      KILLED=$((KILLED + 1))
    else
      wait "$pid"
      break
    fi
  done
  echo "killed $KILLED times"
}

# wait_lines FILE N: waits until FILE has at least N lines, i.e. a
# background run has reached a checkpoint
wait_lines() {
  wait_until "[ -f '$1' ] && [ \"\$(wc -l <'$1')\" -ge $2 ]"
}

# checkpoints DB [CONDITION]: how many checkpoints the running runs in the
# store DB have committed (CONDITION: more SQL on c = checkpoints, r = runs)
checkpoints() {
  sqlite3 "$1" "select count(*) from checkpoints c join runs r on r.id = c.run_id
    where r.status = 'running'${2:+ and $2}" 2>/dev/null || echo 0
}

# expect_refused NAME FILE PATTERN: `orch run FILE` exits 2 and its output
# matches PATTERN (a workflow refused at load)
expect_refused() {
  run_orch "$2.log" run "$2"
  expect_eq "$1: exit 2" "$RC" 2
  expect_grep "$1: says so" "$3" "$2.log"
}

finish() {
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
}

# start_llm_server [ARGS...]: starts tests/llm_server.py on a free port;
# sets LLM_PORT and LLM_URL; stopped on exit.
start_llm_server() {
  local pf="$WORK/llm.port"
  rm -f "$pf"
  python3 "$ROOT/tests/llm_server.py" --port 0 --port-file "$pf" "$@" >"$WORK/llm_server.log" 2>&1 &
  LLM_PID=$!
  trap 'kill $LLM_PID 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
  wait_until "[ -s '$pf' ]" || { bad "tests/llm_server.py did not start:"; cat "$WORK/llm_server.log"; exit 1; }
  LLM_PORT=$(cat "$pf")
  LLM_URL="http://127.0.0.1:$LLM_PORT"
}

# llm_admin config JSON | llm_admin reset: changes the server's faults and
# latency, or zeroes its counters; a change the server refused is a failure
llm_admin() {
  curl -sf -X POST "$LLM_URL/admin/$1" ${2:+-d "$2"} >/dev/null || bad "the server refused admin/$1 ${2:-}"
}

# llm_stat KEY: a field of the server's /admin/stats (dotted path)
llm_stat() {
  curl -s "$LLM_URL/admin/stats" | python3 -c 'import json,sys
v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v.get(k, 0) if isinstance(v, dict) else 0
print(v)' "$1"
}
