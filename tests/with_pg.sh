# with_pg.sh COMMAND ARGS...: runs COMMAND with a PostgreSQL server of its
# own (tests/pg_lib.sh: a temporary cluster on a Unix socket, stopped at
# the end whatever happens), selected for the store tests by
# ORCH_TEST_STORE=postgres and ORCH_TEST_PG_URL. ctest runs the store's
# conformance tests through it once more, on PostgreSQL.
. tests/lib.sh
. tests/pg_lib.sh
start_pg
ORCH_TEST_STORE=postgres ORCH_TEST_PG_URL=$PG_URL "$@"
