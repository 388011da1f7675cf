# What bench/store_pg.sh and bench/store_redis.sh share, sourced from the
# repository's root: the build and the test helpers, bench/store_bench.c
# built against orch's libraries, the LLM runs that alternate an SQLite
# file with the store measured, and the figures' part of the report.

# bench_setup: builds orch (RelWithDebInfo), exports ORCH and ORCH_TMP and
# sources tests/lib.sh and tests/pg_lib.sh (both benches start PostgreSQL).
bench_setup() {
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j2 >/dev/null || exit 1
  export ORCH=$PWD/build/orch ORCH_TMP=${ORCH_TMP:-/tmp}
  . tests/lib.sh
  . tests/pg_lib.sh
}

# build_store_bench: bench/store_bench.c as $WORK/store_bench.
build_store_bench() {
  local libs
  libs=$(pkg-config --libs libpq sqlite3 libxxhash libzstd libcurl hiredis)
  cc -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -Istorage -Icore bench/store_bench.c build/liborchc.a \
    build/liborchstore.a $libs -lcsv -o "$WORK/store_bench" || exit 1
}

wall() { /usr/bin/time -f "%e" "$@" 2>&1 >/dev/null | tail -1; }
med() { sort -n "$1" | awk '{l[NR] = $0} END {print l[int((NR + 1) / 2)]}'; }

# llm_runs NAME URL_OF: LLM_RUNS (3) runs of bench/llm.lua, each on an
# SQLite file and then on the store whose URL `URL_OF i` prints for run i;
# wall times appended to $WORK/w_sqlite and $WORK/w_NAME. Exits when the
# two outputs of a run differ.
llm_runs() {
  local name=$1 url_of=$2 i url
  for i in $(seq 1 "${LLM_RUNS:-3}"); do
    rm -f "$WORK"/llm.db*
    url=$("$url_of" "$i") || exit 1
    wall "$ORCH" run -q bench/llm.lua --db "$WORK/llm.db" --set base_url="$LLM_URL/v1" --set out="$WORK/s.jsonl" >>"$WORK/w_sqlite"
    wall "$ORCH" run -q bench/llm.lua --db "$url" --set base_url="$LLM_URL/v1" --set out="$WORK/o.jsonl" >>"$WORK/w_$name"
    cmp -s "$WORK/s.jsonl" "$WORK/o.jsonl" || { echo "bench: outputs differ" >&2; exit 1; }
  done
}

# llm_figures NAME LABEL: the report's figures: store_bench's ($WORK/ops.txt)
# and the table of the LLM runs' medians, SQLite's and NAME's as LABEL.
llm_figures() {
  local name=$1 label=$2 ws wo
  ws=$(med "$WORK/w_sqlite")
  wo=$(med "$WORK/w_$name")
  echo '```'
  cat "$WORK/ops.txt"
  echo '```'
  echo
  echo "| 4,000 LLM calls, 250 ms each, concurrency 200 (ideal 5.00 s), median of ${LLM_RUNS:-3} | wall s |"
  echo "|---|---|"
  echo "| SQLite file | $ws |"
  echo "| $label | $wo ($(python3 -c "print('%+.1f %%' % (($wo / $ws - 1) * 100))") vs SQLite) |"
}
