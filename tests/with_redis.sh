# with_redis.sh COMMAND ARGS...: runs COMMAND with a Redis server of its
# own (tests/redis_lib.sh: a temporary directory, appendonly yes,
# appendfsync always, stopped at the end whatever happens), selected for
# the store tests by ORCH_TEST_STORE=redis and ORCH_TEST_REDIS_URL. ctest
# runs the store's conformance tests through it once more, on Redis.
. tests/lib.sh
. tests/redis_lib.sh
start_redis
ORCH_TEST_STORE=redis ORCH_TEST_REDIS_URL=$REDIS_URL "$@"
