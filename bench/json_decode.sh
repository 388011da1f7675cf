#!/usr/bin/env bash
# json_decode.sh -- how fast orch.json.decode reads rows, against lua-cjson
# 2.1.0 (which it replaces: cjson turns every number into a double and []
# into {}) and against the floor of a yajl-based decoder (yajl's parse of
# the same lines with callbacks that build nothing; needs libyajl-dev, else
# skipped).  Run from the repository root after building:
#
#   bench/json_decode.sh [ROWS] [ROUNDS]
#
# Figures are the best round's CPU time; the ratios matter, not the absolute
# numbers (this runs on a shared machine).  Results: bench/json_decode.md.
set -euo pipefail
ROWS=${1:-200000}
ROUNDS=${2:-5}
ORCH=${ORCH:-./build/orch}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

"$ORCH" lua bench/json_decode.lua "$ROWS" "$ROUNDS" "$TMP"

if [ -e /usr/include/yajl/yajl_parse.h ]; then
  cc -O2 -o "$TMP/yajl_floor" bench/json_yajl_floor.c -lyajl
  echo "yajl 2.1 parse only, building no Lua values (the floor of a yajl-based decoder):"
  for f in reviews numeric; do
    read -r secs _ < <("$TMP/yajl_floor" "$TMP/$f.jsonl" "$ROUNDS")
    awk -v f="$f" -v s="$secs" -v n="$ROWS" 'BEGIN { printf "  %-18s %8.3f s  %10.0f rows/s\n", f, s, n / s }'
  done
else
  echo "(libyajl-dev not installed: yajl floor skipped)"
fi
