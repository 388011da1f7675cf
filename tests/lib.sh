# Shared helpers of the end-to-end scenarios (sourced, not run by ctest).
# ORCH: the binary under test; ORCH_TMP: a scratch root.
set -u
ORCH=${ORCH:-$(pwd)/build/orch}
ROOT=$(pwd)
mkdir -p "${ORCH_TMP:-/tmp}"
WORK=$(mktemp -d "${ORCH_TMP:-/tmp}/e2e.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PASS=0
FAIL=0

ok() { PASS=$((PASS + 1)); echo "ok   $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $1"; }

# expect_eq NAME ACTUAL EXPECTED
expect_eq() {
  if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: expected [$3], got [$2]"; fi
}

# expect_grep NAME PATTERN FILE   (extended regex)
expect_grep() {
  if grep -Eq -- "$2" "$3"; then ok "$1"; else
    bad "$1: /$2/ not found in $3:"; sed 's/^/     | /' "$3" | head -20; fi
}

# run_orch OUTFILE ARGS... : runs orch in $WORK, stderr+stdout to OUTFILE, sets RC
run_orch() {
  local out=$1; shift
  (cd "$WORK" && "$ORCH" "$@") >"$out" 2>&1
  RC=$?
}

finish() {
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
}
