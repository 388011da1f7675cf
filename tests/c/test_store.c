/* test_store.c — unit tests of the state store (storage/store.c and the
 * SQLite backend): runs, claims, checkpoints with results and state,
 * checksum verification and fallback, rollback, events, stats,
 * persistence, and every refusal at open (newer schema, not a database,
 * corrupt, another program's database, unwritable location), each
 * checked to leave the user's file untouched; the LLM response journal
 * (round trip, first wins, hits, stats, persistence) and the migration of
 * a schema-1 database to it. argv[1] is a scratch directory. Timings of
 * the same operations are bench/store.c. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <zstd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "check.h"
#include "fixtures.h"
#include "result_pack.h"
#include "store.h"
#include "store_redis_impl.h" /* the lease commit script, sent twice by hand below */

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

/* The backend the conformance sections run on: ORCH_TEST_STORE=sqlite
 * (default, a file), memory (":memory:"), postgres (the server at
 * ORCH_TEST_PG_URL, which tests/with_pg.sh starts) or redis (the server at
 * ORCH_TEST_REDIS_URL, redis://127.0.0.1:PORT/N; tests/with_redis.sh). */
enum test_backend { B_SQLITE, B_MEMORY, B_POSTGRES, B_REDIS };
static enum test_backend backend = B_SQLITE;

/* Whether tests can reach the store from outside (another connection):
 * an in-memory database has no outside. */
static int can_poke(void)
{
    return backend != B_MEMORY;
}

/* The first row's first column of sql run on a PostgreSQL URL as a
 * number, or -1; with text non-NULL the value is copied there instead. */
static int64_t pg_query(const char *url, const char *sql, const char *param, char *text, size_t textlen)
{
    PGconn *c = PQconnectdb(url);
    int64_t n = -1;
    PGresult *r = NULL;
    if (PQstatus(c) == CONNECTION_OK)
        r = param != NULL ? PQexecParams(c, sql, 1, NULL, &param, NULL, NULL, 0) : PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0) {
        n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        if (text != NULL)
            snprintf(text, textlen, "%s", PQgetvalue(r, 0, 0));
    } else if (st == PGRES_COMMAND_OK) {
        n = 0;
    } else {
        fprintf(stderr, "pg_query(%s): %s", sql, r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(c));
    }
    PQclear(r);
    PQfinish(c);
    return n;
}

/* A connection of the test's own to the Redis server of url
 * (redis://HOST:PORT/N), or NULL. */
static redisContext *rd_connect(const char *url)
{
    char host[100];
    int port = 0, db = 0;
    if (sscanf(url, "redis://%99[^:]:%d/%d", host, &port, &db) != 3)
        return NULL;
    redisContext *c = redisConnect(host, port);
    if (c == NULL || c->err != 0) {
        if (c != NULL)
            redisFree(c);
        return NULL;
    }
    redisReply *r = redisCommand(c, "SELECT %d", db);
    freeReplyObject(r);
    return c;
}

/* EVAL of a Lua expression on the Redis server at url, through a
 * connection of the test's own: its integer reply (a string one read as a
 * number), or -1. */
static int64_t rd_eval(const char *url, const char *lua)
{
    redisContext *c = rd_connect(url);
    if (c == NULL)
        return -1;
    redisReply *r = redisCommand(c, "EVAL %s 0", lua);
    int64_t n = -1;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER)
        n = r->integer;
    else if (r != NULL && r->type == REDIS_REPLY_STRING)
        n = strtoll(r->str, NULL, 10);
    else
        fprintf(stderr, "rd_eval(%s): %s\n", lua, r != NULL && r->str != NULL ? r->str : c->errstr);
    freeReplyObject(r);
    redisFree(c);
    return n;
}

/* The Redis equivalent of each query the sections run from outside. */
static const char *const rd_queries[][2] = {
    {"SELECT count(*) FROM checkpoints WHERE run_id = 'r1'", "return #redis.call('KEYS', 'orch:cp:r1:*')"},
    {"SELECT count(*) FROM state WHERE run_id = 'r1'", "return redis.call('HLEN', 'orch:state:r1')"},
    {"SELECT count(*) FROM runs", "return #redis.call('KEYS', 'orch:run:*')"},
    {"SELECT count(*) FROM llm_journal", "return #redis.call('KEYS', 'orch:jr:*')"},
    {"SELECT (SELECT count(*) FROM checkpoints WHERE run_id = 'r1') + "
     "(SELECT count(*) FROM results WHERE run_id = 'r1') + "
     "(SELECT count(*) FROM events WHERE run_id = 'r1') + "
     "(SELECT count(*) FROM state WHERE run_id = 'r1')",
     "return #redis.call('KEYS', 'orch:cp:r1:*') + #redis.call('KEYS', 'orch:*:r1')"},
    {"UPDATE checkpoints SET checksum = '00000000000000000000000000000000' WHERE run_id = 'r1' AND seq = 3",
     "return redis.call('HSET', 'orch:cp:r1:3', 'checksum', '00000000000000000000000000000000')"},
    {"UPDATE checkpoints SET memento = x'28b52ffd00ff' WHERE run_id = 'r1' AND seq = 2",
     "return redis.call('HSET', 'orch:cp:r1:2', 'memento', '\\40\\181\\47\\253\\0\\255')"},
};

/* Runs the Redis equivalent of one of the sections' queries. */
static int64_t rd_query(const char *url, const char *sql)
{
    for (size_t i = 0; i < sizeof rd_queries / sizeof rd_queries[0]; i++) {
        if (strcmp(sql, rd_queries[i][0]) == 0)
            return rd_eval(url, rd_queries[i][1]);
    }
    fprintf(stderr, "rd_query: no Redis equivalent of %s\n", sql);
    return -1;
}

#define CHECK_HAS(s, sub)                                                                                    \
    do {                                                                                                     \
        const char *s_ = (s), *sub_ = (sub);                                                                 \
        if (s_ != NULL && strstr(s_, sub_) != NULL) {                                                        \
            check_passed++;                                                                                  \
        } else {                                                                                             \
            check_failed++;                                                                                  \
            fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__,                   \
                    s_ ? s_ : "(null)", sub_);                                                               \
        }                                                                                                    \
    } while (0)

static int spit(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    size_t put = fwrite(data, 1, len, f);
    fclose(f);
    return put == len ? 0 : -1;
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Sets or clears the immutable attribute of path (chattr +i / -i), which
 * stops even root from writing. 0, or -1 where the filesystem or the
 * container does not allow it. */
static int set_immutable(const char *path, int on)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int flags = 0;
    int rc = ioctl(fd, FS_IOC_GETFLAGS, &flags);
    if (rc == 0) {
        if (on)
            flags |= FS_IMMUTABLE_FL;
        else
            flags &= ~FS_IMMUTABLE_FL;
        rc = ioctl(fd, FS_IOC_SETFLAGS, &flags);
    }
    close(fd);
    return rc == 0 ? 0 : -1;
}

/* Runs constant SQL on path through a separate connection, the way a
 * user with the sqlite3 shell would. */
static int sql_on(const char *path, const char *sql)
{
    if (backend == B_POSTGRES)
        return pg_query(path, sql, NULL, NULL, 0) < 0 ? SQLITE_ERROR : SQLITE_OK;
    if (backend == B_REDIS)
        return rd_query(path, sql) < 0 ? SQLITE_ERROR : SQLITE_OK;
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        fprintf(stderr, "sql_on(%s): %s\n", sql, sqlite3_errmsg(db));
    sqlite3_close(db);
    return rc;
}

/* ---- callbacks collecting what the list functions give ---------------- */

struct ids {
    int n;
    char id[16][64];
};

static int collect_run(void *ud, const struct orch_run *r)
{
    struct ids *ids = ud;
    if (ids->n < 16)
        snprintf(ids->id[ids->n++], 64, "%s", r->id);
    return 0;
}

static int stop_after_one(void *ud, const struct orch_run *r)
{
    (void)r;
    (*(int *)ud)++;
    return 1;
}

struct results {
    int n;
    int64_t seq[16];
    char key[16][32];
    char status[16][16];
    char data[16][64];
    int has_error[16];
    int null_data[16];
};

static int collect_result(void *ud, const struct orch_result *r)
{
    struct results *rs = ud;
    if (rs->n >= 16) {
        rs->n++;
        return 0;
    }
    int i = rs->n++;
    rs->seq[i] = r->seq;
    snprintf(rs->key[i], sizeof rs->key[i], "%s", r->key ? r->key : "");
    snprintf(rs->status[i], sizeof rs->status[i], "%s", r->status ? r->status : "");
    rs->has_error[i] = r->error != NULL;
    rs->null_data[i] = r->data == NULL;
    snprintf(rs->data[i], sizeof rs->data[i], "%.*s", (int)r->data_len, r->data ? (const char *)r->data : "");
    return 0;
}

static int count_result(void *ud, const struct orch_result *r)
{
    (void)r;
    (*(int *)ud)++;
    return 0;
}

struct kvs {
    int n;
    char line[8][96];
};

static int collect_state(void *ud, const char *key, const char *value, size_t len)
{
    struct kvs *k = ud;
    if (k->n < 8) {
        snprintf(k->line[k->n], sizeof k->line[k->n], "%s=%.*s", key, (int)len, value);
        k->n++;
    }
    return 0;
}

struct cps {
    int n;
    int64_t seq[8];
    int valid[8];
    int memento_null[8];
};

static int collect_cp(void *ud, const struct orch_checkpoint *c)
{
    struct cps *cs = ud;
    if (cs->n < 8) {
        cs->seq[cs->n] = c->seq;
        cs->valid[cs->n] = c->valid;
        cs->memento_null[cs->n] = c->memento == NULL;
        cs->n++;
    }
    return 0;
}

struct evs {
    int n;
    char line[8][96];
    int64_t last_id;
    int ordered;
};

static int collect_event(void *ud, const struct orch_event *e)
{
    struct evs *es = ud;
    if (e->id <= es->last_id)
        es->ordered = 0;
    es->last_id = e->id;
    if (es->n < 8) {
        snprintf(es->line[es->n], sizeof es->line[es->n], "%s:%s", e->type, e->data ? e->data : "NULL");
        es->n++;
    }
    return 0;
}

/* ---- the checksum, computed here independently of store.c -------------- */

static void expected_checksum(const struct orch_checkpoint *c, char out[33])
{
    size_t n = 48 + c->memento_len;
    unsigned char *buf = malloc(n);
    int64_t f[6] = {c->seq,         c->input_offset,  c->input_line,
                    c->input_index, c->output_offset, c->errors_offset};
    for (int k = 0; k < 6; k++) {
        for (int b = 0; b < 8; b++)
            buf[k * 8 + b] = (unsigned char)(((uint64_t)f[k] >> (8 * b)) & 0xff);
    }
    memcpy(buf + 48, c->memento, c->memento_len);
    XXH128_hash_t h = XXH3_128bits(buf, n);
    free(buf);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
}

/* ---- sections ---------------------------------------------------------- */

static void test_status_names(void)
{
    CHECK_STR(orch_run_status_name(ORCH_RUN_PAUSED), "paused");
    CHECK(orch_run_status_parse("completed") == ORCH_RUN_COMPLETED);
    CHECK(orch_run_status_parse("pending") == ORCH_RUN_PENDING);
    CHECK(orch_run_status_parse("bogus") == -1);
    CHECK(orch_run_status_parse(NULL) == -1);
}

static void test_runs(struct orch_store *st)
{
    struct orch_run r1 = make_run("r1", "classify", "idA", ORCH_RUN_PENDING, 1000);
    struct orch_run r2 = make_run("r2", "classify", "idA", ORCH_RUN_COMPLETED, 2000);
    struct orch_run r3 = make_run("r3", "extract", "idB", ORCH_RUN_PAUSED, 3000);
    r2.output = NULL;
    r2.finished_ms = 2500;
    r3.error = (char *)"budget of $1.00 reached";
    CHECK(orch_store_run_create(st, &r1) == 0);
    CHECK(orch_store_run_create(st, &r2) == 0);
    CHECK(orch_store_run_create(st, &r3) == 0);
    CHECK(orch_store_run_create(st, &r1) == -1);
    CHECK_HAS(st->err, "cannot create run r1: ");

    struct orch_run got = {0};
    CHECK(orch_store_run_get(st, "r2", &got) == 1);
    CHECK_STR(got.id, "r2");
    CHECK_STR(got.name, "classify");
    CHECK_STR(got.workflow_path, "/work/wf.lua");
    CHECK_STR(got.input_fp, "size=10;mtime=1");
    CHECK(got.output == NULL);
    CHECK(got.error == NULL);
    CHECK(got.status == ORCH_RUN_COMPLETED);
    CHECK(got.created_ms == 2000);
    CHECK(got.updated_ms == 2000);
    CHECK(got.finished_ms == 2500);
    CHECK(got.checkpoints == 0);
    orch_run_clear(&got);
    CHECK(got.id == NULL);
    CHECK(orch_store_run_get(st, "nope", &got) == 0);

    /* newest unfinished of an identity; completed ones do not count */
    CHECK(orch_store_run_find_unfinished(st, "idA", &got) == 1);
    CHECK_STR(got.id, "r1");
    orch_run_clear(&got);
    struct orch_run r4 = make_run("r4", "classify", "idA", ORCH_RUN_RUNNING, 4000);
    CHECK(orch_store_run_create(st, &r4) == 0);
    CHECK(orch_store_run_find_unfinished(st, "idA", &got) == 1);
    CHECK_STR(got.id, "r4");
    orch_run_clear(&got);
    CHECK(orch_store_run_find_unfinished(st, "idC", &got) == 0);

    /* update */
    r4.status = ORCH_RUN_FAILED;
    r4.error = (char *)"provider returned 401";
    r4.rows_done = 10;
    r4.rows_ok = 7;
    r4.rows_failed = 2;
    r4.rows_dropped = 1;
    r4.llm_calls = 12;
    r4.tokens_in = 3400;
    r4.tokens_out = 560;
    r4.cost_usd = 0.0125;
    r4.finished_ms = 4100;
    r4.recoveries = 2;
    CHECK(orch_store_run_update(st, &r4) == 0);
    CHECK(orch_store_run_get(st, "r4", &got) == 1);
    CHECK(got.status == ORCH_RUN_FAILED);
    CHECK_STR(got.error, "provider returned 401");
    CHECK(got.rows_done == 10 && got.rows_ok == 7 && got.rows_failed == 2 && got.rows_dropped == 1);
    CHECK(got.llm_calls == 12 && got.tokens_in == 3400 && got.tokens_out == 560);
    CHECK(got.cost_usd == 0.0125);
    CHECK(got.finished_ms == 4100 && got.recoveries == 2);
    CHECK(got.updated_ms > 1000000000000LL); /* wall clock now */
    orch_run_clear(&got);
    struct orch_run ghost = make_run("ghost", "x", "x", ORCH_RUN_RUNNING, 1);
    CHECK(orch_store_run_update(st, &ghost) == -1);
    CHECK_HAS(st->err, "no such run");

    /* list with filters, newest first */
    struct ids ids = {0};
    CHECK(orch_store_run_list(st, NULL, collect_run, &ids) == 0);
    CHECK(ids.n == 4);
    CHECK_STR(ids.id[0], "r4");
    CHECK_STR(ids.id[3], "r1");
    struct orch_run_filter f = {.status = "paused"};
    memset(&ids, 0, sizeof ids);
    CHECK(orch_store_run_list(st, &f, collect_run, &ids) == 0);
    CHECK(ids.n == 1);
    CHECK_STR(ids.id[0], "r3");
    f = (struct orch_run_filter){.name = "classify"};
    memset(&ids, 0, sizeof ids);
    CHECK(orch_store_run_list(st, &f, collect_run, &ids) == 0);
    CHECK(ids.n == 3);
    f = (struct orch_run_filter){.since_ms = 2000, .until_ms = 4000};
    memset(&ids, 0, sizeof ids);
    CHECK(orch_store_run_list(st, &f, collect_run, &ids) == 0);
    CHECK(ids.n == 2);
    CHECK_STR(ids.id[0], "r3");
    CHECK_STR(ids.id[1], "r2");
    f = (struct orch_run_filter){.name = "classify", .status = "failed"};
    memset(&ids, 0, sizeof ids);
    CHECK(orch_store_run_list(st, &f, collect_run, &ids) == 0);
    CHECK(ids.n == 1);
    CHECK_STR(ids.id[0], "r4");
    int calls = 0;
    CHECK(orch_store_run_list(st, NULL, stop_after_one, &calls) == 0);
    CHECK(calls == 1);
}

static void test_claim(struct orch_store *st)
{
    /* r1 is unowned: pid 0, heartbeat 0 */
    CHECK(orch_store_run_claim(st, "r1", 100, "hostA", 5000, 0, 0) == 1);
    struct orch_run got = {0};
    CHECK(orch_store_run_get(st, "r1", &got) == 1);
    CHECK(got.owner_pid == 100);
    CHECK_STR(got.owner_host, "hostA");
    CHECK(got.heartbeat_ms == 5000);
    CHECK(got.status == ORCH_RUN_RUNNING);
    orch_run_clear(&got);
    /* a second claimer with the stale expectation loses */
    CHECK(orch_store_run_claim(st, "r1", 200, "hostB", 5001, 0, 0) == 0);
    CHECK(orch_store_run_heartbeat(st, "r1", 6000) == 0);
    /* the expectation must match both pid and heartbeat */
    CHECK(orch_store_run_claim(st, "r1", 200, "hostB", 9000, 100, 5000) == 0);
    CHECK(orch_store_run_claim(st, "r1", 200, "hostB", 9000, 100, 6000) == 1);
    CHECK(orch_store_run_get(st, "r1", &got) == 1);
    CHECK(got.owner_pid == 200);
    CHECK_STR(got.owner_host, "hostB");
    CHECK(got.heartbeat_ms == 9000);
    orch_run_clear(&got);
    CHECK(orch_store_run_claim(st, "nope", 1, "h", 1, 0, 0) == 0);
    CHECK(orch_store_run_heartbeat(st, "nope", 1) == -1);
    CHECK_HAS(st->err, "no such run");
}

static int result_count(struct orch_store *st, const char *run_id)
{
    int n = 0;
    CHECK(orch_store_result_list(st, run_id, count_result, &n) == 0);
    return n;
}

static void test_checkpoints(struct orch_store *st, const char *db_path)
{
    struct orch_run run = make_run("r1", "classify", "idA", ORCH_RUN_RUNNING, 1000);
    run.owner_pid = 200;
    run.owner_host = (char *)"hostB";
    run.heartbeat_ms = 9000;
    run.rows_done = 3;
    run.rows_ok = 2;
    run.rows_failed = 1;
    run.cost_usd = 0.5;

    struct orch_result res1[] = {
        {1, "k1", "ok", NULL, "{\"a\":1}", 7},
        {2, "k2", "failed", "timeout", NULL, 0},
        {3, "k3", "ok", NULL, "{\"a\":3}", 7},
    };
    struct orch_kv kv1[] = {
        {"count", "3", 1},
        {"labels", "[\"x\",\"y\"]", 9},
    };
    const char *m1 = "{\"state\":{\"count\":3},\"rows_done\":3}";
    struct orch_checkpoint c1 = {0};
    c1.reason = (char *)"rows";
    c1.input_offset = 300;
    c1.input_line = 4;
    c1.input_index = 3;
    c1.output_offset = 14;
    c1.errors_offset = 40;
    c1.memento = (void *)m1;
    c1.memento_len = strlen(m1);
    CHECK(orch_store_checkpoint_write(st, &run, &c1, res1, 3, kv1, 2) == 0);
    CHECK(c1.seq == 1);
    CHECK(c1.checksum != NULL && strlen(c1.checksum) == 32);
    CHECK(c1.bytes > 0);
    CHECK(c1.duration_ms >= 0.0);
    CHECK(c1.created_ms > 0);
    char sum[33], want[33];
    orch_checkpoint_checksum(&c1, sum);
    expected_checksum(&c1, want);
    CHECK_STR(sum, want);
    CHECK_STR(c1.checksum, want);
    free(c1.checksum);

    struct orch_run got = {0};
    CHECK(orch_store_run_get(st, "r1", &got) == 1);
    CHECK(got.rows_done == 3 && got.rows_ok == 2 && got.rows_failed == 1);
    CHECK(got.cost_usd == 0.5);
    CHECK(got.checkpoints == 1);
    orch_run_clear(&got);

    /* second checkpoint: two more rows, one state key changed, one deleted */
    struct orch_result res2[] = {
        {4, "k4", "ok", NULL, "{\"a\":4}", 7},
        {5, "k5", "defaulted", "bad json", "{\"a\":null}", 10},
    };
    struct orch_kv kv2[] = {
        {"count", "5", 1},
        {"labels", NULL, 0},
        {"last", "\"k5\"", 4},
    };
    const char *m2 = "{\"state\":{\"count\":5},\"rows_done\":5}";
    run.rows_done = 5;
    run.rows_ok = 3;
    run.rows_defaulted = 1;
    struct orch_checkpoint c2 = {0};
    c2.name = (char *)"after-batch";
    c2.reason = (char *)"manual";
    c2.input_offset = 500;
    c2.input_line = 6;
    c2.input_index = 5;
    c2.output_offset = 28;
    c2.errors_offset = 80;
    c2.memento = (void *)m2;
    c2.memento_len = strlen(m2);
    CHECK(orch_store_checkpoint_write(st, &run, &c2, res2, 2, kv2, 3) == 0);
    CHECK(c2.seq == 2);
    char *c2_sum = c2.checksum;

    struct results rs = {0};
    CHECK(orch_store_result_list(st, "r1", collect_result, &rs) == 0);
    CHECK(rs.n == 5);
    for (int i = 0; i < 5 && i < rs.n; i++)
        CHECK(rs.seq[i] == i + 1);
    CHECK_STR(rs.key[0], "k1");
    CHECK_STR(rs.data[0], "{\"a\":1}");
    CHECK(rs.null_data[1] && rs.has_error[1]);
    CHECK_STR(rs.status[1], "failed");
    CHECK_STR(rs.status[4], "defaulted");
    CHECK_STR(rs.data[4], "{\"a\":null}");

    struct kvs kv = {0};
    CHECK(orch_store_state_list(st, "r1", collect_state, &kv) == 0);
    CHECK(kv.n == 2);
    CHECK_STR(kv.line[0], "count=5");
    CHECK_STR(kv.line[1], "last=\"k5\"");

    /* read back: newest valid, exact memento and cursor */
    struct orch_checkpoint lc = {0};
    int skipped = -1;
    CHECK(orch_store_checkpoint_latest(st, "r1", &lc, &skipped) == 1);
    CHECK(skipped == 0);
    CHECK(lc.seq == 2 && lc.valid == 1);
    CHECK(lc.memento_len == strlen(m2) && memcmp(lc.memento, m2, lc.memento_len) == 0);
    CHECK(((const char *)lc.memento)[lc.memento_len] == '\0');
    CHECK(lc.input_offset == 500 && lc.input_line == 6 && lc.input_index == 5);
    CHECK(lc.output_offset == 28 && lc.errors_offset == 80);
    CHECK_STR(lc.name, "after-batch");
    CHECK_STR(lc.reason, "manual");
    CHECK_STR(lc.checksum, c2_sum);
    orch_checkpoint_checksum(&lc, sum);
    CHECK_STR(sum, lc.checksum);
    CHECK(lc.bytes == c2.bytes);
    orch_checkpoint_clear(&lc);

    CHECK(orch_store_checkpoint_get(st, "r1", 1, &lc) == 1);
    CHECK(lc.valid == 1 && lc.memento_len == strlen(m1) && memcmp(lc.memento, m1, lc.memento_len) == 0);
    CHECK(lc.name == NULL);
    orch_checkpoint_clear(&lc);
    CHECK(orch_store_checkpoint_get(st, "r1", 9, &lc) == 0);

    /* a re-run row (same seq) replaces the earlier one */
    struct orch_result res3[] = {
        {5, "k5", "ok", NULL, "{\"a\":5}", 7},
        {6, "k6", "ok", NULL, "{\"a\":6}", 7},
    };
    const char *m3 = "{\"state\":{\"count\":6},\"rows_done\":6}";
    struct orch_checkpoint c3 = {0};
    c3.reason = (char *)"rows";
    c3.input_offset = 600;
    c3.input_line = 7;
    c3.input_index = 6;
    c3.memento = (void *)m3;
    c3.memento_len = strlen(m3);
    CHECK(orch_store_checkpoint_write(st, &run, &c3, res3, 2, NULL, 0) == 0);
    CHECK(c3.seq == 3);
    free(c3.checksum);
    memset(&rs, 0, sizeof rs);
    CHECK(orch_store_result_list(st, "r1", collect_result, &rs) == 0);
    CHECK(rs.n == 6);
    CHECK_STR(rs.status[4], "ok");
    CHECK_STR(rs.data[4], "{\"a\":5}");

    /* a failing write leaves nothing behind */
    /* the second row breaks the NOT NULL on status */
    struct orch_result bad[] = {
        {7, "k7", "ok", NULL, "{}", 2},
        {8, "k8", NULL, NULL, NULL, 0},
    };
    struct orch_checkpoint c4 = {0};
    c4.reason = (char *)"rows";
    CHECK(orch_store_checkpoint_write(st, &run, &c4, bad, 2, kv1, 2) == -1);
    CHECK_HAS(st->err, "cannot store result 8 of run r1");
    CHECK(c4.seq == 0 && c4.checksum == NULL);
    CHECK(result_count(st, "r1") == 6);
    struct orch_run nobody = make_run("nobody", "x", "x", ORCH_RUN_RUNNING, 1);
    CHECK(orch_store_checkpoint_write(st, &nobody, &c4, res1, 1, NULL, 0) == -1);
    CHECK(result_count(st, "nobody") == 0);
    memset(&kv, 0, sizeof kv);
    CHECK(orch_store_state_list(st, "r1", collect_state, &kv) == 0);
    CHECK(kv.n == 2);

    struct cps cs = {0};
    /* the corruption below is made from outside */
    if (can_poke()) {
        /* corrupt the newest checkpoint's checksum from outside: latest falls back */
        CHECK(sql_on(db_path, "UPDATE checkpoints SET checksum = '00000000000000000000000000000000' "
                              "WHERE run_id = 'r1' AND seq = 3") == SQLITE_OK);
        skipped = -1;
        CHECK(orch_store_checkpoint_latest(st, "r1", &lc, &skipped) == 1);
        CHECK(skipped == 1);
        CHECK(lc.seq == 2 && lc.valid == 1);
        CHECK(lc.memento_len == strlen(m2) && memcmp(lc.memento, m2, lc.memento_len) == 0);
        orch_checkpoint_clear(&lc);
        /* and damage the memento bytes of seq 2: it no longer decompresses */
        CHECK(sql_on(
                  db_path,
                  backend == B_POSTGRES
                      ? "UPDATE checkpoints SET memento = '\\x28b52ffd00ff' WHERE run_id = 'r1' AND seq = 2"
                      : "UPDATE checkpoints SET memento = x'28b52ffd00ff' WHERE run_id = 'r1' AND seq = 2") ==
              SQLITE_OK);
        CHECK(orch_store_checkpoint_latest(st, "r1", &lc, &skipped) == 1);
        CHECK(skipped == 2);
        CHECK(lc.seq == 1);
        orch_checkpoint_clear(&lc);
        CHECK(orch_store_checkpoint_get(st, "r1", 3, &lc) == 1);
        CHECK(lc.valid == 0);
        orch_checkpoint_clear(&lc);
        CHECK(orch_store_checkpoint_list(st, "r1", collect_cp, &cs) == 0);
        CHECK(cs.n == 3);
        CHECK(cs.seq[0] == 1 && cs.seq[1] == 2 && cs.seq[2] == 3);
        CHECK(cs.valid[0] == 1 && cs.valid[1] == 0 && cs.valid[2] == 0);
        CHECK(cs.memento_null[0] && cs.memento_null[1] && cs.memento_null[2]);
    }
    CHECK(orch_store_checkpoint_latest(st, "r4", &lc, &skipped) == 0);
    CHECK(skipped == 0);

    /* roll back to 1: checkpoints 2, 3 and the rows they carried go */
    CHECK(orch_store_checkpoint_rollback(st, "r1", 1) == 0);
    memset(&cs, 0, sizeof cs);
    CHECK(orch_store_checkpoint_list(st, "r1", collect_cp, &cs) == 0);
    CHECK(cs.n == 1 && cs.seq[0] == 1);
    memset(&rs, 0, sizeof rs);
    CHECK(orch_store_result_list(st, "r1", collect_result, &rs) == 0);
    CHECK(rs.n == 3);
    CHECK(rs.seq[2] == 3);
    CHECK(orch_store_checkpoint_latest(st, "r1", &lc, &skipped) == 1);
    CHECK(lc.seq == 1 && skipped == 0);
    orch_checkpoint_clear(&lc);
    /* numbering resumes after the kept checkpoint */
    run.rows_done = 4;
    CHECK(orch_store_checkpoint_write(st, &run, &c2, res2, 1, NULL, 0) == 0);
    CHECK(c2.seq == 2);
    free(c2.checksum);
    CHECK(result_count(st, "r1") == 4);
}

/* store.c checks what every backend would otherwise have to: a call
 * without a run is refused with orch's message naming the store (its URL
 * with the password masked), never handed to a backend. */
static void test_contract(struct orch_store *st, const char *target)
{
    char shown[700], want[900];
    orch_store_display(target, shown, sizeof shown);
    struct orch_checkpoint c = {0};
    struct orch_run norun = {0};
    CHECK(orch_store_checkpoint_write(st, &norun, &c, NULL, 0, NULL, 0) == -1);
    snprintf(want, sizeof want, "%s: cannot write a checkpoint: no run given", shown);
    CHECK_STR(st->err, want);
    struct orch_run run = make_run("contract", "c", "idC", ORCH_RUN_RUNNING, 1000);
    CHECK(orch_store_checkpoint_write(st, &run, &c, NULL, 2, NULL, 0) == -1);
    snprintf(want, sizeof want, "%s: cannot write a checkpoint: no checkpoint, results or state given",
             shown);
    CHECK_STR(st->err, want);
    CHECK(orch_store_checkpoint_latest(st, NULL, &c, NULL) == -1);
    snprintf(want, sizeof want, "%s: cannot read the checkpoints: no run given", shown);
    CHECK_STR(st->err, want);
    CHECK(orch_store_checkpoint_get(st, "contract", 0, &c) == 0);
    CHECK(c.memento == NULL && c.checksum == NULL);

    /* what the store runs on, and the libraries `orch version` prints */
    char v[100], lib[100];
    orch_store_version(st, v, sizeof v);
    snprintf(lib, sizeof lib, "SQLite %s", sqlite3_libversion());
    if (backend == B_POSTGRES) {
        char server[40];
        CHECK(pg_query(target, "SHOW server_version", NULL, server, sizeof server) >= 0);
        server[strcspn(server, " ")] = '\0';
        snprintf(want, sizeof want, "PostgreSQL %s", server);
        CHECK_STR(v, want);
    } else if (backend == B_REDIS) {
        CHECK(strncmp(v, "Redis ", 6) == 0 && v[6] >= '1' && v[6] <= '9');
    } else {
        CHECK_STR(v, lib);
    }
    CHECK(orch_store_library(0) != NULL);
    CHECK_STR(orch_store_library(0), lib);
    int pv = PQlibVersion();
    snprintf(want, sizeof want, "PostgreSQL %d.%d (libpq)", pv / 10000, pv % 10000);
    CHECK(orch_store_library(1) != NULL);
    CHECK_STR(orch_store_library(1), want);
    CHECK(orch_store_library(2) != NULL);
    snprintf(want, sizeof want, "hiredis %d.%d.%d", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    CHECK_STR(orch_store_library(2), want);
    CHECK(orch_store_library(3) == NULL);
}

static void test_events(struct orch_store *st)
{
    CHECK(orch_store_event_add(st, "r1", "run.start", "{\"pid\":200}") == 0);
    CHECK(orch_store_event_add(st, "r1", "checkpoint", NULL) == 0);
    CHECK(orch_store_event_add(st, "r3", "run.pause", "{}") == 0);
    CHECK(orch_store_event_add(st, "r1", "run.end", "{\"ok\":true}") == 0);
    CHECK(orch_store_event_add(st, "nope", "x", NULL) == -1);
    CHECK_HAS(st->err, "cannot record an event: ");
    CHECK(orch_store_event_add(st, NULL, "store.gc", "{\"deleted\":0}") == 0);
    struct evs global = {.ordered = 1};
    CHECK(orch_store_event_list(st, NULL, collect_event, &global) == 0);
    CHECK(global.n == 1);
    CHECK_STR(global.line[0], "store.gc:{\"deleted\":0}");
    struct evs es = {.ordered = 1};
    CHECK(orch_store_event_list(st, "r1", collect_event, &es) == 0);
    CHECK(es.n == 3 && es.ordered);
    CHECK_STR(es.line[0], "run.start:{\"pid\":200}");
    CHECK_STR(es.line[1], "checkpoint:NULL");
    CHECK_STR(es.line[2], "run.end:{\"ok\":true}");
}

/* Live figures: one opaque JSON object per run, replaced in place; none
 * for a run that is not there. */
static void test_live(struct orch_store *st)
{
    char *fig = (char *)"x";
    int64_t ms = -1;
    CHECK(orch_store_live_get(st, "r1", &fig, &ms) == 0);
    CHECK(fig == NULL && ms == 0);
    CHECK(orch_store_live_put(st, "r1", 5000, "{\"rows_done\":10,\"name\":\"<b>\"}") == 0);
    CHECK(orch_store_live_put(st, "r1", 6000, "{\"rows_done\":25}") == 0);
    CHECK(orch_store_live_get(st, "r1", &fig, &ms) == 1);
    CHECK_STR(fig, "{\"rows_done\":25}");
    CHECK(ms == 6000);
    free(fig);
    CHECK(orch_store_live_put(st, "r3", 7000, "{}") == 0);
    CHECK(orch_store_live_get(st, "r3", &fig, &ms) == 1);
    CHECK_STR(fig, "{}");
    free(fig);
    CHECK(orch_store_live_put(st, "nope", 1, "{}") == -1);
    CHECK_HAS(st->err, "cannot record the live figures of run nope: no such run");
    CHECK(orch_store_live_put(st, "r1", 1, NULL) == -1);
    CHECK_HAS(st->err, "cannot record live figures: the figures are missing");
}

/* The dashboard's pages: events by id either way within bounds, and the
 * failed rows after a seq, without the ok ones. */
static void test_pages(struct orch_store *st)
{
    struct orch_run run = make_run("pg", "pages", "idP", ORCH_RUN_RUNNING, 6000);
    CHECK(orch_store_run_create(st, &run) == 0);
    for (int i = 1; i <= 5; i++) {
        char data[32];
        snprintf(data, sizeof data, "{\"i\":%d}", i);
        CHECK(orch_store_event_add(st, "pg", "ev", data) == 0);
    }
    struct evs all = {.ordered = 1};
    CHECK(orch_store_event_page(st, "pg", 0, 0, 100, 0, collect_event, &all) == 0);
    CHECK(all.n == 5 && all.ordered);
    CHECK_STR(all.line[0], "ev:{\"i\":1}");
    int64_t third = 0;
    struct evs two = {.ordered = 1};
    CHECK(orch_store_event_page(st, "pg", 0, 0, 2, 0, collect_event, &two) == 0);
    CHECK(two.n == 2 && two.ordered);
    CHECK_STR(two.line[1], "ev:{\"i\":2}");
    third = two.last_id; /* the next page starts after it */
    struct evs next = {.ordered = 1};
    CHECK(orch_store_event_page(st, "pg", third, 0, 2, 0, collect_event, &next) == 0);
    CHECK(next.n == 2);
    CHECK_STR(next.line[0], "ev:{\"i\":3}");
    struct evs newest = {.last_id = INT64_MIN};
    CHECK(orch_store_event_page(st, "pg", 0, 0, 2, 1, collect_event, &newest) == 0);
    CHECK(newest.n == 2);
    CHECK_STR(newest.line[0], "ev:{\"i\":5}");
    CHECK_STR(newest.line[1], "ev:{\"i\":4}");
    struct evs older = {0};
    CHECK(orch_store_event_page(st, "pg", 0, newest.last_id, 10, 1, collect_event, &older) == 0);
    CHECK(older.n == 3);
    CHECK_STR(older.line[0], "ev:{\"i\":3}");
    struct evs none = {0};
    CHECK(orch_store_event_page(st, "nope", 0, 0, 10, 0, collect_event, &none) == 0);
    CHECK(none.n == 0);
    CHECK(orch_store_event_page(st, "pg", 0, 0, 0, 0, collect_event, &none) == -1);
    CHECK_HAS(st->err, "cannot list a page of events: the page size must be positive");

    struct orch_result res[] = {
        {1, "k1", "ok", NULL, "{}", 2},         {2, "k2", "failed", "boom <b>", "{}", 2},
        {3, "k3", "ok", NULL, "{}", 2},         {4, "k4", "defaulted", "late", "{}", 2},
        {5, NULL, "failed", "no key", NULL, 0},
    };
    struct orch_checkpoint c = {0};
    c.reason = (char *)"rows";
    CHECK(orch_store_checkpoint_write(st, &run, &c, res, 5, NULL, 0) == 0);
    free(c.checksum);
    struct results rs = {0};
    CHECK(orch_store_error_page(st, "pg", 0, 2, collect_result, &rs) == 0);
    CHECK(rs.n == 2);
    CHECK(rs.seq[0] == 2 && rs.seq[1] == 4);
    CHECK_STR(rs.key[0], "k2");
    CHECK_STR(rs.status[1], "defaulted");
    CHECK(rs.has_error[0] && rs.null_data[0]);
    struct results rest = {0};
    CHECK(orch_store_error_page(st, "pg", 4, 10, collect_result, &rest) == 0);
    CHECK(rest.n == 1 && rest.seq[0] == 5);
    CHECK(orch_store_run_delete(st, "pg") == 1);
}

static void test_stats(struct orch_store *st, int file)
{
    struct orch_store_stats s;
    CHECK(orch_store_stats(st, &s) == 0);
    /* r1 running, r2 completed, r3 paused, r4 failed */
    CHECK(s.runs == 4);
    CHECK(s.active == 1 && s.paused == 1 && s.failed == 1 && s.completed == 1);
    CHECK(s.checkpoints == 2);
    CHECK(s.recoveries == 2);
    CHECK(file ? s.bytes > 0 : s.bytes == 0);
    CHECK(s.checkpoint_mean_ms > 0.0 && s.checkpoint_max_ms >= s.checkpoint_mean_ms);
    CHECK(s.journal_entries == 0 && s.journal_hits == 0 && s.journal_saved_usd == 0.0);
}

static int near(double a, double b)
{
    double d = a - b;
    return d < 1e-12 && d > -1e-12;
}

/* The hits column as stored, read through a separate connection; -1 when
 * the key is not there. */
static int64_t stored_hits(const char *path, const char *key)
{
    if (backend == B_POSTGRES)
        return pg_query(path, "SELECT hits FROM llm_journal WHERE key = $1", key, NULL, 0);
    if (backend == B_REDIS) {
        char lua[200];
        snprintf(lua, sizeof lua, "return redis.call('HGET', 'orch:jr:%s', 'hits') or -1", key);
        return rd_eval(path, lua);
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int64_t hits = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT hits FROM llm_journal WHERE key = ?1", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        hits = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return hits;
}

/* count(*) of a query through a separate connection; -1 on error. */
static int64_t count_of(const char *path, const char *sql)
{
    if (backend == B_POSTGRES)
        return pg_query(path, sql, NULL, NULL, 0);
    if (backend == B_REDIS)
        return rd_query(path, sql);
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int64_t n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

/* Retention: a deleted run takes its checkpoints, results, events and
 * state along; the journal is pruned by age; vacuum keeps everything else. */
static void test_retention(struct orch_store *st, const char *db_path)
{
    CHECK(!can_poke() || count_of(db_path, "SELECT count(*) FROM checkpoints WHERE run_id = 'r1'") > 0);
    CHECK(!can_poke() || count_of(db_path, "SELECT count(*) FROM state WHERE run_id = 'r1'") > 0);
    int64_t runs = can_poke() ? count_of(db_path, "SELECT count(*) FROM runs") : 0;
    CHECK(orch_store_run_delete(st, "r1") == 1);
    CHECK(orch_store_run_delete(st, "r1") == 0); /* no such run any more */
    char *fig = NULL;
    int64_t fig_ms = 0;
    CHECK(orch_store_live_get(st, "r1", &fig, &fig_ms) == 0); /* its live figures went with it */
    free(fig);
    CHECK(!can_poke() || count_of(db_path, "SELECT count(*) FROM runs") == runs - 1);
    /* SQLite keeps a checkpoint's results in one chunk row (schema 5) */
    CHECK(backend != B_SQLITE ||
          count_of(db_path, "SELECT count(*) FROM result_chunks WHERE run_id = 'r1'") == 0);
    CHECK(!can_poke() || count_of(db_path, "SELECT (SELECT count(*) FROM checkpoints WHERE run_id = 'r1') + "
                                           "(SELECT count(*) FROM results WHERE run_id = 'r1') + "
                                           "(SELECT count(*) FROM events WHERE run_id = 'r1') + "
                                           "(SELECT count(*) FROM state WHERE run_id = 'r1')") == 0);

    /* journal entries: one written at 1700000000000 (test_journal), the
     * others now; a cutoff between them removes the old one only */
    int64_t entries = can_poke() ? count_of(db_path, "SELECT count(*) FROM llm_journal") : 0;
    int64_t removed = -1;
    CHECK(orch_store_journal_prune(st, 1700000000001LL, &removed) == 0);
    CHECK(removed == 1);
    CHECK(!can_poke() || count_of(db_path, "SELECT count(*) FROM llm_journal") == entries - 1);
    CHECK(orch_store_journal_prune(st, 1, &removed) == 0 && removed == 0);

    CHECK(orch_store_vacuum(st) == 0);
    CHECK(!can_poke() || count_of(db_path, "SELECT count(*) FROM runs") == runs - 1);
    CHECK(!can_poke() || count_of(db_path, "SELECT count(*) FROM llm_journal") == entries - 1);
}

/* A reply with a NUL inside and non-UTF-8 bytes, as a raw body might be. */
static const char journal_reply[] = "{\"text\":\"positive\"}\0tail\xff\xfe";
#define JOURNAL_REPLY_LEN (sizeof journal_reply - 1)
#define JOURNAL_KEY1 "3f9a2c1b00000000000000000000000a"
#define JOURNAL_KEY2 "3f9a2c1b00000000000000000000000b"

static void test_journal(struct orch_store *st, const char *db_path)
{
    struct orch_journal_owned got = {0};
    CHECK(orch_store_journal_get(st, JOURNAL_KEY1, &got) == 0);
    CHECK(got.key == NULL && got.response == NULL);

    struct orch_journal_entry e = {0};
    e.key = JOURNAL_KEY1;
    e.run_id = "r1";
    e.provider = "openai";
    e.model = "gpt-4o-mini";
    e.response = journal_reply;
    e.response_len = JOURNAL_REPLY_LEN;
    e.tokens_in = 120;
    e.tokens_out = 30;
    e.cost_usd = 0.0021;
    e.latency_ms = 850.5;
    CHECK(orch_store_journal_put(st, &e) == 0);
    CHECK(!can_poke() || stored_hits(db_path, JOURNAL_KEY1) == 0);

    CHECK(orch_store_journal_get(st, JOURNAL_KEY1, &got) == 1);
    CHECK_STR(got.key, JOURNAL_KEY1);
    CHECK_STR(got.run_id, "r1");
    CHECK_STR(got.provider, "openai");
    CHECK_STR(got.model, "gpt-4o-mini");
    CHECK(got.response_len == JOURNAL_REPLY_LEN);
    CHECK(got.response != NULL && memcmp(got.response, journal_reply, JOURNAL_REPLY_LEN) == 0);
    CHECK(got.response != NULL && got.response[got.response_len] == '\0');
    CHECK(got.tokens_in == 120 && got.tokens_out == 30);
    CHECK(got.cost_usd == 0.0021 && got.latency_ms == 850.5);
    CHECK(got.created_ms > 1000000000000LL); /* set to now */
    CHECK(got.hits == 1);
    int64_t created = got.created_ms;
    orch_journal_clear(&got);
    CHECK(got.key == NULL && got.response == NULL && got.hits == 0);
    orch_journal_clear(NULL);
    /* SQLite counts hits in memory (journal_hits.h): a replayed row writes
     * no page. stats counts them where they are (and writes nothing); they
     * are logged (llm_journal_hits) at close or when memory holds many, and
     * reach the entry's hits when a prune or a vacuum folds the log */
    CHECK(!can_poke() || stored_hits(db_path, JOURNAL_KEY1) == (backend == B_SQLITE ? 0 : 1));
    struct orch_store_stats js;
    CHECK(orch_store_stats(st, &js) == 0 && js.journal_hits == 1);
    CHECK(!can_poke() || stored_hits(db_path, JOURNAL_KEY1) == (backend == B_SQLITE ? 0 : 1));

    /* a second reply for the same request changes nothing: first wins */
    struct orch_journal_entry dup = e;
    dup.run_id = "r4";
    dup.response = "a different reply";
    dup.response_len = strlen(dup.response);
    dup.cost_usd = 9.99;
    dup.tokens_in = 1;
    dup.created_ms = 42;
    CHECK(orch_store_journal_put(st, &dup) == 0);
    CHECK(orch_store_journal_get(st, JOURNAL_KEY1, &got) == 1);
    CHECK_STR(got.run_id, "r1");
    CHECK(got.response_len == JOURNAL_REPLY_LEN &&
          memcmp(got.response, journal_reply, JOURNAL_REPLY_LEN) == 0);
    CHECK(got.cost_usd == 0.0021 && got.tokens_in == 120);
    CHECK(got.created_ms == created);
    CHECK(got.hits == 2); /* the duplicate put did not reset it */
    orch_journal_clear(&got);
    CHECK(orch_store_journal_get(st, JOURNAL_KEY1, &got) == 1);
    CHECK(got.hits == 3);
    orch_journal_clear(&got);
    CHECK(orch_store_stats(st, &js) == 0 && js.journal_hits == 3);
    CHECK(!can_poke() || stored_hits(db_path, JOURNAL_KEY1) == (backend == B_SQLITE ? 0 : 3));
    int64_t pruned = -1; /* a prune that removes nothing still folds the hits */
    CHECK(orch_store_journal_prune(st, 0, &pruned) == 0 && pruned == 0);
    CHECK(!can_poke() || stored_hits(db_path, JOURNAL_KEY1) == 3);
    CHECK(orch_store_journal_get(st, JOURNAL_KEY1, &got) == 1 && got.hits == 4);
    orch_journal_clear(&got);

    /* no run (or a run that does not exist yet), empty reply, given time */
    struct orch_journal_entry e2 = {0};
    e2.key = JOURNAL_KEY2;
    e2.run_id = "not-created-yet";
    e2.provider = "anthropic";
    e2.model = "claude-3-5-haiku";
    e2.cost_usd = 0.5;
    e2.created_ms = 1700000000000LL;
    CHECK(orch_store_journal_put(st, &e2) == 0);
    CHECK(orch_store_journal_get(st, JOURNAL_KEY2, &got) == 1);
    CHECK_STR(got.run_id, "not-created-yet");
    CHECK(got.response != NULL && got.response_len == 0 && got.response[0] == '\0');
    CHECK(got.created_ms == 1700000000000LL);
    CHECK(got.tokens_in == 0 && got.latency_ms == 0.0);
    CHECK(got.hits == 1);
    orch_journal_clear(&got);
    struct orch_journal_entry e3 = {
        .key = "3f9a2c1b00000000000000000000000c", .response = "x", .response_len = 1};
    CHECK(orch_store_journal_put(st, &e3) == 0);
    CHECK(orch_store_journal_get(st, e3.key, &got) == 1);
    CHECK(got.run_id == NULL && got.provider == NULL && got.model == NULL);
    CHECK_STR(got.response, "x");
    orch_journal_clear(&got);

    /* refused: no key, or a length without bytes */
    struct orch_journal_entry nokey = e;
    nokey.key = NULL;
    CHECK(orch_store_journal_put(st, &nokey) == -1);
    CHECK_HAS(st->err, "cannot journal a response: it has no key");
    nokey.key = "";
    CHECK(orch_store_journal_put(st, &nokey) == -1);
    struct orch_journal_entry nodata = e;
    nodata.key = "3f9a2c1b00000000000000000000000d";
    nodata.response = NULL;
    CHECK(orch_store_journal_put(st, &nodata) == -1);
    CHECK_HAS(st->err, "bytes announced but no data");
    CHECK(orch_store_journal_get(st, nodata.key, &got) == 0);
    CHECK(orch_store_journal_get(st, NULL, &got) == -1);
    CHECK(orch_store_journal_get(st, "3f9a2c1bffffffffffffffffffffffff", &got) == 0);

    /* 3 entries; hits 4 + 1 + 1; saved 0.0021 * 4 + 0.5 * 1 + 0 * 1 */
    struct orch_store_stats s;
    CHECK(orch_store_stats(st, &s) == 0);
    CHECK(s.journal_entries == 3);
    CHECK(s.journal_hits == 6);
    CHECK(near(s.journal_saved_usd, 0.0021 * 4 + 0.5));
    CHECK(s.runs == 4); /* the journal is not runs */

    /* lookups of a replayed call (reply = 1) in a group: the reply and its
     * figures, the hit counted as a full lookup counts it */
    struct orch_journal_lookup gs[2] = {{.key = JOURNAL_KEY1, .reply = 1},
                                        {.key = "3f9a2c1bfffffffffffffffffffffffe", .reply = 1}};
    CHECK(orch_store_journal_batch(st, NULL, 0, gs, 2) == 0);
    CHECK(gs[0].found == 1 && gs[1].found == 0);
    CHECK(gs[0].out.response_len == JOURNAL_REPLY_LEN &&
          memcmp(gs[0].out.response, journal_reply, JOURNAL_REPLY_LEN) == 0);
    CHECK(gs[0].out.response[JOURNAL_REPLY_LEN] == '\0');
    CHECK(gs[0].out.tokens_in == 120 && gs[0].out.tokens_out == 30 && gs[0].out.cost_usd == 0.0021);
    CHECK(gs[1].out.response == NULL);
    orch_journal_clear(&gs[0].out);
    CHECK(orch_store_stats(st, &s) == 0 && s.journal_hits == 7);
    CHECK(!can_poke() || stored_hits(db_path, JOURNAL_KEY1) == (backend == B_SQLITE ? 3 : 5));
}

/* A process killed (SIGKILL) right after journal_put returns, without
 * closing the store: the reply is there for the next process. */
static void test_journal_crash(const char *path)
{
    pid_t kid = fork();
    if (kid == 0) {
        char err[512];
        struct orch_store *st = orch_store_open(path, err, sizeof err);
        if (st == NULL)
            _exit(1);
        struct orch_journal_entry e = {.key = "paid-once",
                                       .run_id = "gone",
                                       .response = journal_reply,
                                       .response_len = JOURNAL_REPLY_LEN,
                                       .cost_usd = 0.01};
        if (orch_store_journal_put(st, &e) != 0)
            _exit(1);
        kill(getpid(), SIGKILL);
        _exit(1);
    }
    int status = 0;
    CHECK(kid > 0 && waitpid(kid, &status, 0) == kid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    char err[512];
    struct orch_store *st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    struct orch_journal_owned jr = {0};
    CHECK(orch_store_journal_get(st, "paid-once", &jr) == 1);
    CHECK(jr.response_len == JOURNAL_REPLY_LEN && memcmp(jr.response, journal_reply, JOURNAL_REPLY_LEN) == 0);
    CHECK_STR(jr.run_id, "gone");
    orch_journal_clear(&jr);
    orch_store_close(st);
}

/* A round's lookups answered at once from the store's read snapshot
 * (journal_peek): on SQLite a read transaction on the main connection.
 * Another operation while it is open runs in a transaction of its own
 * (another connection sees its write at once, and the next lookup sees
 * it too); the group's commit ends it; a snapshot does not see what
 * another process commits until the round's end; a store in memory
 * peeks too. */
static int peek(struct orch_store *st, const char *key)
{
    struct orch_journal_lookup get = {.key = key, .reply = 1};
    int rc = orch_store_journal_peek(st, &get);
    CHECK(rc == 0);
    int found = rc == 0 ? get.found : -1;
    if (found == 1)
        CHECK(get.out.response_len == JOURNAL_REPLY_LEN &&
              memcmp(get.out.response, journal_reply, JOURNAL_REPLY_LEN) == 0);
    orch_journal_clear(&get.out);
    return found;
}

static void test_journal_peek(const char *dir)
{
    char path[600], err[512];
    snprintf(path, sizeof path, "%s/peek.db", dir);
    struct orch_store *st = orch_store_open(path, err, sizeof err);
    struct orch_store *other = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL && other != NULL);
    if (st == NULL || other == NULL)
        return;
    struct orch_journal_entry e = {.key = "peek-1",
                                   .run_id = "r",
                                   .response = journal_reply,
                                   .response_len = JOURNAL_REPLY_LEN,
                                   .cost_usd = 0.01};
    CHECK(orch_store_journal_batch(st, &e, 1, NULL, 0) == 0);
    CHECK(peek(st, "peek-1") == 1);
    CHECK(peek(st, "peek-2") == 0);

    /* an event recorded while the snapshot is open is committed at once */
    CHECK(orch_store_event_add(st, NULL, "note", "{\"n\":1}") == 0);
    struct evs seen = {.ordered = 1};
    CHECK(orch_store_event_list(other, NULL, collect_event, &seen) == 0);
    CHECK(seen.n == 1 && strcmp(seen.line[0], "note:{\"n\":1}") == 0);

    /* the group's commit, with the snapshot open, ends it first */
    CHECK(peek(st, "peek-2") == 0);
    e.key = "peek-2";
    CHECK(orch_store_journal_batch(st, &e, 1, NULL, 0) == 0);
    CHECK(peek(st, "peek-2") == 1);

    /* another process's reply: not in this round's snapshot, in the next */
    e.key = "peek-3";
    CHECK(orch_store_journal_batch(other, &e, 1, NULL, 0) == 0);
    CHECK(peek(st, "peek-3") == 0);
    orch_store_journal_peek_end(st);
    CHECK(peek(st, "peek-3") == 1);
    orch_store_journal_peek_end(st);
    orch_store_journal_peek_end(st); /* twice: nothing to end */

    /* a close with the snapshot open */
    CHECK(peek(st, "peek-1") == 1);
    orch_store_close(st);
    orch_store_close(other);

    st = orch_store_open(":memory:", err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    e.key = "peek-m";
    CHECK(orch_store_journal_batch(st, &e, 1, NULL, 0) == 0);
    CHECK(peek(st, "peek-m") == 1);
    CHECK(orch_store_event_add(st, NULL, "note", NULL) == 0);
    CHECK(peek(st, "peek-m") == 1);
    orch_store_close(st);
}

/* A replay's lookups in the order the journal was written: the store
 * reads the entries ahead (journal_ahead.h) and answers from them, each
 * reply and figure as a lookup by key gives it, each hit counted once.
 * Out of order, and past a window's end, lookups still answer. The
 * window is the snapshot's: an entry pruned after the snapshot ended is
 * not answered from it. */
#define AHEAD_N 700
static void ahead_key(char *key, size_t n, int i)
{
    snprintf(key, n, "ahead-%04d", i);
}

/* peek of key i in the round's snapshot: 1 with its own reply and
 * figures, 0 when not found, -1 when the answer is wrong. */
static int peek_ahead(struct orch_store *st, int i)
{
    char key[32];
    ahead_key(key, sizeof key, i);
    struct orch_journal_lookup get = {.key = key, .reply = 1};
    if (orch_store_journal_peek(st, &get) != 0)
        return -1;
    int found = get.found;
    if (found == 1 &&
        (get.out.response_len != strlen(key) + 6 || strncmp(get.out.response, "reply ", 6) != 0 ||
         strcmp(get.out.response + 6, key) != 0 || get.out.tokens_in != i || get.out.tokens_out != 2 * i ||
         get.out.cost_usd != 0.5 * i))
        found = -1;
    orch_journal_clear(&get.out);
    return found;
}

static void test_journal_ahead(const char *dir)
{
    char path[600], err[512], key[32], reply[40];
    snprintf(path, sizeof path, "%s/ahead.db", dir);
    struct orch_store *st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    struct orch_journal_entry e = {.run_id = "r", .created_ms = 1000};
    int ok = 1;
    for (int i = 1; i <= AHEAD_N; i++) {
        ahead_key(key, sizeof key, i);
        snprintf(reply, sizeof reply, "reply %s", key);
        e.key = key;
        e.response = reply;
        e.response_len = strlen(reply);
        e.tokens_in = i;
        e.tokens_out = 2 * i;
        e.cost_usd = 0.5 * i;
        e.created_ms = i <= 10 ? 1000 : 5000; /* the first ten are pruned below */
        ok = ok && orch_store_journal_batch(st, &e, 1, NULL, 0) == 0;
    }
    CHECK(ok);
    /* in order, with a few out of it and one never journaled */
    for (int i = 1; i <= AHEAD_N; i++)
        ok = ok && peek_ahead(st, i) == 1;
    CHECK(ok);
    CHECK(peek_ahead(st, AHEAD_N + 1) == 0);
    CHECK(peek_ahead(st, 5) == 1 && peek_ahead(st, 650) == 1 && peek_ahead(st, 3) == 1);
    orch_store_journal_peek_end(st);
    struct orch_journal_owned got = {0};
    ahead_key(key, sizeof key, 650);
    CHECK(orch_store_journal_get(st, key, &got) == 1 && got.hits == 3); /* two peeks and this get */
    orch_journal_clear(&got);
    ahead_key(key, sizeof key, 400);
    CHECK(orch_store_journal_get(st, key, &got) == 1 && got.hits == 2);
    orch_journal_clear(&got);

    /* the window does not outlive its snapshot: a prune ends it */
    for (int i = 1; i <= 12; i++)
        ok = ok && peek_ahead(st, i) == 1;
    CHECK(ok);
    int64_t removed = 0;
    CHECK(orch_store_journal_prune(st, 2000, &removed) == 0 && removed == 10);
    CHECK(peek_ahead(st, 5) == 0 && peek_ahead(st, 10) == 0 && peek_ahead(st, 11) == 1);
    orch_store_close(st);
}

static void test_reopen(const char *db_path)
{
    char err[512];
    struct orch_store *st = orch_store_open(db_path, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL) {
        fprintf(stderr, "reopen: %s\n", err);
        return;
    }
    struct orch_run got = {0};
    CHECK(orch_store_run_get(st, "r4", &got) == 1);
    CHECK_STR(got.error, "provider returned 401");
    CHECK(got.tokens_in == 3400);
    orch_run_clear(&got);
    CHECK(orch_store_run_get(st, "r1", &got) == 1);
    CHECK(got.checkpoints == 2);
    CHECK(got.rows_done == 4);
    orch_run_clear(&got);
    struct orch_checkpoint lc = {0};
    int skipped = -1;
    CHECK(orch_store_checkpoint_latest(st, "r1", &lc, &skipped) == 1);
    CHECK(lc.seq == 2 && skipped == 0 && lc.valid);
    orch_checkpoint_clear(&lc);
    CHECK(result_count(st, "r1") == 4);
    struct evs es = {.ordered = 1};
    CHECK(orch_store_event_list(st, "r1", collect_event, &es) == 0);
    CHECK(es.n == 3);
    /* the journal survived, hits included, and keeps counting */
    struct orch_journal_owned jr = {0};
    CHECK(orch_store_journal_get(st, JOURNAL_KEY1, &jr) == 1);
    CHECK(jr.response_len == JOURNAL_REPLY_LEN && memcmp(jr.response, journal_reply, JOURNAL_REPLY_LEN) == 0);
    CHECK_STR(jr.model, "gpt-4o-mini");
    CHECK(jr.cost_usd == 0.0021);
    /* 4 gets and a replayed call's lookup before, this one; on SQLite the
     * entry holds the 3 a prune folded, and the 2 logged at close reach it
     * at the next fold (stats counts them) */
    CHECK(jr.hits == (backend == B_SQLITE ? 4 : 6));
    orch_journal_clear(&jr);
    struct orch_store_stats ss;
    CHECK(orch_store_stats(st, &ss) == 0);
    CHECK(ss.journal_entries == 3 && ss.journal_hits == 8);
    CHECK(near(ss.journal_saved_usd, 0.0021 * 6 + 0.5));
    orch_store_close(st);
    if (backend != B_SQLITE)
        return;

    /* the schema is readable with plain sqlite3 and marked as orch's */
    sqlite3 *db = NULL;
    CHECK(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *s = NULL;
    CHECK(sqlite3_prepare_v2(db,
                             "SELECT (SELECT user_version FROM pragma_user_version), "
                             "(SELECT application_id FROM pragma_application_id), "
                             "(SELECT journal_mode FROM pragma_journal_mode), "
                             "(SELECT count(*) FROM results WHERE run_id = 'r1'), "
                             "(SELECT count(*) FROM result_chunks WHERE run_id = 'r1'), "
                             "(SELECT sum(n) FROM result_chunks WHERE run_id = 'r1'), "
                             "(SELECT sum(hits) || ' ' || sum(entries) FROM llm_journal_hits), "
                             "(SELECT hits FROM llm_journal WHERE key = '" JOURNAL_KEY1 "')",
                             -1, &s, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(s) == SQLITE_ROW);
    CHECK(sqlite3_column_int(s, 0) == 9);
    CHECK(sqlite3_column_int64(s, 1) == 0x4F524348);
    CHECK_STR((const char *)sqlite3_column_text(s, 2), "wal");
    /* r1's 4 rows: checkpoint 1's three and the second checkpoint 2's
     * one, each checkpoint's rows in one chunk but the failed one, which
     * stays a row of results (the dashboard pages failed rows by index) */
    CHECK(sqlite3_column_int(s, 3) == 1);
    CHECK(sqlite3_column_int(s, 4) == 2);
    CHECK(sqlite3_column_int(s, 5) == 3);
    /* the hits of the two closes wait in the log: 4 + 1 of 3 + 1 entries */
    CHECK_STR((const char *)sqlite3_column_text(s, 6), "5 4");
    CHECK(sqlite3_column_int(s, 7) == 3);
    sqlite3_finalize(s);
    sqlite3_close(db);
}

static void sql_text(const char *path, const char *sql, char *out, size_t outlen);

/* SQLite: the hits a close logs are merged into one row of the log once
 * the log holds more entries than twice the journal's, and folded into
 * the entries by a vacuum. */
static void test_hits_fold(const char *dir)
{
    char path[600], err[512], log[128];
    snprintf(path, sizeof path, "%s/fold.db", dir);
    struct orch_journal_entry e = {.key = JOURNAL_KEY1, .response = "r", .response_len = 1, .cost_usd = 0.5};
    struct orch_journal_owned got = {0};
    int64_t want[] = {0, 0, 0, 0, 5, 5}; /* the entry's stored hits after each close */
    /* the log after each close: rows, hits, entries, saved */
    const char *want_log[] = {"1 1 1 0.5", "2 2 2 1.0", "1 3 1 1.5", "2 4 2 2.0", "0   0.0", "1 1 1 0.5"};
    for (int i = 0; i < 6; i++) {
        struct orch_store *st = orch_store_open(path, err, sizeof err);
        CHECK(st != NULL);
        if (st == NULL)
            return;
        if (i == 0)
            CHECK(orch_store_journal_put(st, &e) == 0);
        CHECK(orch_store_journal_get(st, JOURNAL_KEY1, &got) == 1);
        orch_journal_clear(&got);
        struct orch_store_stats s;
        CHECK(orch_store_stats(st, &s) == 0 && s.journal_hits == i + 1 &&
              near(s.journal_saved_usd, 0.5 * (i + 1)));
        if (i == 4)
            CHECK(orch_store_vacuum(st) == 0);
        orch_store_close(st);
        CHECK(stored_hits(path, JOURNAL_KEY1) == want[i]);
        sql_text(path,
                 "SELECT count(*) || ' ' || coalesce(sum(hits), '') || ' ' || coalesce(sum(entries), '') || "
                 "' ' || "
                 "coalesce(printf('%.1f', sum(saved_usd)), '') FROM llm_journal_hits",
                 log, sizeof log);
        CHECK_STR(log, want_log[i]);
    }
    /* a row of the log changed by hand so that its counts do not read to
     * their end stays whole: stats counts its sums, a fold leaves it */
    char got_log[128];
    CHECK(sql_on(path, "INSERT INTO llm_journal_hits (hits, saved_usd, entries, counts) "
                       "VALUES (2, 1.0, 1, x'0102')") == SQLITE_OK);
    struct orch_store *st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    struct orch_store_stats s;
    CHECK(orch_store_stats(st, &s) == 0 && s.journal_hits == 8 && near(s.journal_saved_usd, 0.5 * 6 + 1.0));
    CHECK(orch_store_vacuum(st) == 0);
    CHECK(orch_store_stats(st, &s) == 0 && s.journal_hits == 8 && near(s.journal_saved_usd, 0.5 * 6 + 1.0));
    orch_store_close(st);
    CHECK(stored_hits(path, JOURNAL_KEY1) == 6);
    sql_text(path, "SELECT count(*) || ' ' || sum(hits) FROM llm_journal_hits", got_log, sizeof got_log);
    CHECK_STR(got_log, "1 2");
}

/* SQLite: a close merges the log only when the merged row would fit
 * under the threshold; rows naming keys the journal no longer holds (an
 * entry deleted by hand) are folded instead, which drops them. */
static void test_hits_merge_or_fold(const char *dir)
{
    char path[600], err[512], log[128];
    snprintf(path, sizeof path, "%s/merge.db", dir);
    struct orch_store *st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    const char *keys[] = {JOURNAL_KEY1, JOURNAL_KEY2};
    for (int k = 0; k < 2; k++) {
        struct orch_journal_entry e = {.key = keys[k], .response = "r", .response_len = 1, .cost_usd = 0.25};
        CHECK(orch_store_journal_put(st, &e) == 0);
    }
    orch_store_close(st);
    /* three closes, each logging a hit of both entries: 6 log entries for
     * a journal of 2 merge into one row of 2 at the third */
    for (int i = 0; i < 3; i++) {
        st = orch_store_open(path, err, sizeof err);
        CHECK(st != NULL);
        if (st == NULL)
            return;
        struct orch_journal_owned got = {0};
        for (int k = 0; k < 2; k++) {
            CHECK(orch_store_journal_get(st, keys[k], &got) == 1);
            orch_journal_clear(&got);
        }
        orch_store_close(st);
    }
    sql_text(path, "SELECT count(*) || ' ' || sum(hits) || ' ' || sum(entries) FROM llm_journal_hits", log,
             sizeof log);
    CHECK_STR(log, "1 6 2");
    CHECK(stored_hits(path, JOURNAL_KEY1) == 0 && stored_hits(path, JOURNAL_KEY2) == 0);
    /* an entry deleted by hand: the log names a key the journal lacks */
    CHECK(sql_on(path, "DELETE FROM llm_journal WHERE key = '" JOURNAL_KEY2 "'") == SQLITE_OK);
    st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    struct orch_journal_owned got = {0};
    CHECK(orch_store_journal_get(st, JOURNAL_KEY1, &got) == 1);
    orch_journal_clear(&got);
    orch_store_close(st);
    /* the log's 2 entries and the hit of key 1 are more than twice the
     * journal's 1, and a merge would name 2 keys: folded into the entry
     * instead (its 3 merged hits and the new one), key 2's dropped */
    CHECK(stored_hits(path, JOURNAL_KEY1) == 4);
    sql_text(path, "SELECT count(*) FROM llm_journal_hits", log, sizeof log);
    CHECK_STR(log, "0");
}

/* The user_version of the database at path, or -1. */
static int64_t user_version(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int64_t v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

/* Makes a schema-1 store at path holding run "old" with one checkpoint
 * and an event: written by this code, then with the journal taken off
 * and the tables of later migrations taken off and user_version set
 * back, which leaves exactly what migration 1 creates (later ones only
 * add tables and indexes). 0 or -1. */
static int make_v1_store(const char *path)
{
    char err[512];
    struct orch_store *st = orch_store_open(path, err, sizeof err);
    if (st == NULL) {
        fprintf(stderr, "make_v1_store: %s\n", err);
        return -1;
    }
    struct orch_run r = make_run("old", "classify", "idOld", ORCH_RUN_PAUSED, 1000);
    struct orch_checkpoint c = {0};
    c.reason = (char *)"budget";
    c.input_index = 1;
    c.memento = (void *)"{\"state\":{}}";
    c.memento_len = strlen(c.memento);
    int rc = orch_store_run_create(st, &r);
    if (rc == 0)
        rc = orch_store_checkpoint_write(st, &r, &c, NULL, 0, NULL, 0);
    if (rc == 0)
        rc = orch_store_event_add(st, "old", "run.pause", "{}");
    free(c.checksum);
    orch_store_close(st);
    if (rc != 0)
        return -1;
    /* schema 1 kept results row by row, and had no journal */
    return sql_on(path, "DROP TABLE llm_journal; DROP TABLE run_live; DROP INDEX results_errors; "
                        "DROP TABLE leases; DROP TABLE run_budget; DROP TABLE journal_pending; "
                        "DROP TABLE result_chunks; "
                        "INSERT INTO results (run_id, seq, key, status, data, checkpoint_seq) "
                        "VALUES ('old', 1, 'k1', 'ok', CAST('{\"a\":1}' AS BLOB), 1); "
                        "DROP TABLE rate_buckets; DROP TABLE llm_journal_hits; "
                        "PRAGMA user_version = 1") == SQLITE_OK
               ? 0
               : -1;
}

static void test_migrate_v1(const char *dir)
{
    char path[600], err[512];
    snprintf(path, sizeof path, "%s/v1.db", dir);
    CHECK(make_v1_store(path) == 0);
    CHECK(user_version(path) == 1);
    CHECK(stored_hits(path, "any") == -1); /* no llm_journal table */

    struct orch_store *st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL) {
        fprintf(stderr, "open v1: %s\n", err);
        return;
    }
    CHECK(user_version(path) == 9);
    /* what was there is still there and resumable */
    struct orch_run got = {0};
    CHECK(orch_store_run_get(st, "old", &got) == 1);
    CHECK(got.status == ORCH_RUN_PAUSED && got.checkpoints == 1);
    orch_run_clear(&got);
    struct orch_checkpoint lc = {0};
    int skipped = -1;
    CHECK(orch_store_checkpoint_latest(st, "old", &lc, &skipped) == 1);
    CHECK(lc.valid && skipped == 0 && strcmp(lc.reason, "budget") == 0);
    orch_checkpoint_clear(&lc);
    CHECK(result_count(st, "old") == 1);
    /* and the journal works */
    struct orch_journal_owned jr = {0};
    CHECK(orch_store_journal_get(st, JOURNAL_KEY1, &jr) == 0);
    struct orch_journal_entry e = {.key = JOURNAL_KEY1,
                                   .run_id = "old",
                                   .provider = "openai",
                                   .model = "gpt-4o",
                                   .response = journal_reply,
                                   .response_len = JOURNAL_REPLY_LEN,
                                   .cost_usd = 0.25};
    CHECK(orch_store_journal_put(st, &e) == 0);
    CHECK(orch_store_journal_get(st, JOURNAL_KEY1, &jr) == 1);
    CHECK(jr.response_len == JOURNAL_REPLY_LEN && memcmp(jr.response, journal_reply, JOURNAL_REPLY_LEN) == 0);
    orch_journal_clear(&jr);
    orch_store_close(st);

    /* migrated once: a second open finds the current schema and the entry */
    st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL) {
        CHECK(orch_store_journal_get(st, JOURNAL_KEY1, &jr) == 1);
        /* this lookup; the first one's hit was logged at close and reaches
         * the entry at the next fold (stats counts both) */
        CHECK(jr.hits == 1 && jr.cost_usd == 0.25);
        orch_journal_clear(&jr);
        struct orch_store_stats s;
        CHECK(orch_store_stats(st, &s) == 0);
        CHECK(s.runs == 1 && s.journal_entries == 1 && s.journal_hits == 2 && near(s.journal_saved_usd, 0.5));
        orch_store_close(st);
    }
    CHECK(user_version(path) == 9);

    /* a migration that cannot apply is refused whole: the v1 file keeps
     * its version and its data */
    snprintf(path, sizeof path, "%s/v1-clash.db", dir);
    CHECK(make_v1_store(path) == 0);
    CHECK(sql_on(path, "CREATE TABLE llm_journal (x)") == SQLITE_OK);
    st = orch_store_open(path, err, sizeof err);
    CHECK(st == NULL);
    if (st != NULL)
        orch_store_close(st);
    CHECK_HAS(err, "v1-clash.db: cannot create or upgrade the schema: table llm_journal already exists");
    CHECK(user_version(path) == 1);
    CHECK(sql_on(path, "DROP TABLE llm_journal") == SQLITE_OK);
    st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL) {
        CHECK(orch_store_run_get(st, "old", &got) == 1);
        orch_run_clear(&got);
        orch_store_close(st);
    }
    CHECK(user_version(path) == 9);
}

/* The first column of the rows sql gives on path, joined by ",", into
 * out (empty when none). */
static void sql_text(const char *path, const char *sql, char *out, size_t outlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    size_t n = 0;
    out[0] = '\0';
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK) {
        while (sqlite3_step(s) == SQLITE_ROW && n < outlen) {
            const unsigned char *t = sqlite3_column_text(s, 0);
            n += (size_t)snprintf(out + n, outlen - n, "%s%s", n > 0 ? "," : "",
                                  t != NULL ? (const char *)t : "");
        }
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
}

/* Schema 7 kept the journal as a WITHOUT ROWID table keyed by the hash;
 * schema 8 makes it a rowid table with the key a unique index. A schema-7
 * journal's entries, replies, costs and hits come through the upgrade, in
 * the order they were made, and the table then works as before: a lookup
 * counts a hit, the first reply of a key is kept. */
static void test_migrate_v7_journal(const char *dir)
{
    char path[600], err[512], got[512];
    snprintf(path, sizeof path, "%s/v7.db", dir);
    struct orch_store *st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    orch_store_close(st);
    CHECK(sql_on(path,
                 "DROP TABLE llm_journal; DROP TABLE llm_journal_hits;"
                 "CREATE TABLE llm_journal (key TEXT PRIMARY KEY, run_id TEXT, provider TEXT, model TEXT, "
                 "response BLOB NOT NULL, tokens_in INTEGER, tokens_out INTEGER, cost_usd REAL, "
                 "latency_ms REAL, created_ms INTEGER NOT NULL, hits INTEGER NOT NULL DEFAULT 0) "
                 "WITHOUT ROWID;"
                 "INSERT INTO llm_journal VALUES ('" JOURNAL_KEY2 "', 'r1', 'openai', 'gpt-4o', "
                 "CAST('second' AS BLOB), 10, 2, 0.5, 120.0, 2000, 0);"
                 "INSERT INTO llm_journal VALUES ('" JOURNAL_KEY1 "', 'r1', 'openai', 'gpt-4o', "
                 "CAST('first' AS BLOB), 12, 3, 0.25, 80.0, 1000, 3);"
                 "PRAGMA user_version = 7") == SQLITE_OK);
    sql_text(path, "SELECT sql LIKE '%WITHOUT ROWID' FROM sqlite_schema WHERE name = 'llm_journal'", got,
             sizeof got);
    CHECK_STR(got, "1");

    st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL) {
        fprintf(stderr, "open v7: %s\n", err);
        return;
    }
    CHECK(user_version(path) == 9);
    sql_text(path, "SELECT sql LIKE '%WITHOUT ROWID' FROM sqlite_schema WHERE name = 'llm_journal'", got,
             sizeof got);
    CHECK_STR(got, "0");
    sql_text(path, "SELECT name FROM sqlite_schema WHERE name LIKE 'llm_journal%' ORDER BY name", got,
             sizeof got);
    CHECK_STR(got, "llm_journal,llm_journal_hits");
    sql_text(path, "SELECT key || ' ' || hits || ' ' || cost_usd FROM llm_journal ORDER BY rowid", got,
             sizeof got);
    CHECK_STR(got, JOURNAL_KEY1 " 3 0.25," JOURNAL_KEY2 " 0 0.5");
    struct orch_journal_owned jr = {0};
    CHECK(orch_store_journal_get(st, JOURNAL_KEY1, &jr) == 1);
    CHECK(jr.response_len == 5 && memcmp(jr.response, "first", 5) == 0);
    CHECK(jr.tokens_in == 12 && jr.tokens_out == 3 && jr.cost_usd == 0.25 && jr.hits == 4);
    orch_journal_clear(&jr);
    struct orch_journal_entry e = {.key = JOURNAL_KEY2,
                                   .run_id = "r2",
                                   .provider = "openai",
                                   .model = "gpt-4o",
                                   .response = "again",
                                   .response_len = 5,
                                   .cost_usd = 9.0};
    CHECK(orch_store_journal_put(st, &e) == 0); /* the first reply of a key is kept */
    e.key = "3f9a2c1b00000000000000000000000c";
    CHECK(orch_store_journal_put(st, &e) == 0);
    CHECK(orch_store_journal_get(st, JOURNAL_KEY2, &jr) == 1 && jr.hits == 1);
    orch_journal_clear(&jr);
    CHECK(orch_store_journal_get(st, JOURNAL_KEY1, &jr) == 1 && jr.hits == 5);
    orch_journal_clear(&jr);
    /* hits are written at the row where each lookup found its entry; rows
     * renumbered meanwhile (by a VACUUM elsewhere, here the two swapped)
     * still take each hit for its own key */
    CHECK(sql_on(path, "UPDATE llm_journal SET rowid = 100 WHERE key = '" JOURNAL_KEY1 "';"
                       "UPDATE llm_journal SET rowid = 1 WHERE key = '" JOURNAL_KEY2 "';"
                       "UPDATE llm_journal SET rowid = 2 WHERE key = '" JOURNAL_KEY1 "'") == SQLITE_OK);
    int64_t pruned = -1;
    CHECK(orch_store_journal_prune(st, 0, &pruned) == 0 && pruned == 0); /* folds the hits counted */
    orch_store_close(st);
    sql_text(path,
             "SELECT key || ' ' || hits || ' ' || CAST(response AS TEXT) FROM llm_journal ORDER BY rowid",
             got, sizeof got);
    CHECK_STR(got,
              JOURNAL_KEY2 " 1 second," JOURNAL_KEY1 " 5 first,3f9a2c1b00000000000000000000000c 0 again");
    CHECK(sql_on(path, "INSERT INTO llm_journal (key, response, created_ms) VALUES (NULL, x'', 1)") !=
          SQLITE_OK);
}

/* The WAL frames (pages) one checkpoint of 500 results writes, averaged
 * over ten after the first: each frame is a page logged and later copied
 * into the database, most of a checkpoint's commit on a file (issue 13).
 * A checkpoint touches the run row, its checkpoint row and key, its chunk
 * and key, and the database header; rewriting the runs' status index for
 * a status that did not change cost one more frame each time. */
static void test_checkpoint_frames(const char *dir)
{
    char path[600], wal[620], err[512];
    snprintf(path, sizeof path, "%s/frames.db", dir);
    snprintf(wal, sizeof wal, "%s-wal", path);
    struct orch_store *st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    struct orch_run r = make_run("frames", "bench", "idF", ORCH_RUN_RUNNING, 1000);
    CHECK(orch_store_run_create(st, &r) == 0);
    static struct orch_result res[500];
    static char keys[500][16];
    char memento[200];
    memset(memento, 'm', sizeof memento);
    off_t before = 0;
    for (int k = 0; k < 11; k++) {
        for (int i = 0; i < 500; i++) {
            snprintf(keys[i], sizeof keys[i], "%d", k * 500 + i + 1);
            res[i] = (struct orch_result){k * 500 + i + 1, keys[i], "ok", NULL, NULL, 0};
        }
        struct orch_checkpoint c = {.reason = (char *)"rows", .input_index = (k + 1) * 500};
        c.memento = memento;
        c.memento_len = sizeof memento;
        r.rows_done = (k + 1) * 500;
        CHECK(orch_store_checkpoint_write(st, &r, &c, res, 500, NULL, 0) == 0);
        free(c.checksum);
        struct stat sb;
        CHECK(stat(wal, &sb) == 0);
        if (k == 0)
            before = sb.st_size;
        else if (k == 10)
            printf("WAL frames a checkpoint of 500 results: %.1f\n",
                   (double)(sb.st_size - before) / (4096 + 24) / 10);
        if (k == 10)
            CHECK((sb.st_size - before) / (4096 + 24) <= 75); /* 81 with the status index */
    }
    orch_store_close(st);
    /* the store's zstd context, kept from one checkpoint to the next,
     * writes the frame a fresh ZSTD_compress at level 3 writes */
    unsigned char frame[512];
    size_t flen = ZSTD_compress(frame, sizeof frame, memento, sizeof memento, 3);
    char hexs[1100], sql[1400];
    size_t hex = 0;
    for (size_t i = 0; i < flen && !ZSTD_isError(flen) && hex + 3 < sizeof hexs; i++)
        hex += (size_t)snprintf(hexs + hex, sizeof hexs - hex, "%02X", frame[i]);
    hexs[hex] = '\0';
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM checkpoints WHERE run_id = 'frames' AND hex(memento) = '%s'", hexs);
    CHECK(count_of(path, sql) == 11);
}

/* Several processes opening one fresh file at once: the schema is
 * created once and every process can write. */
/* NPROC processes open a store that does not exist yet at the same moment
 * (path: a new file, or a PostgreSQL schema without orch's tables), and
 * each writes a run, a checkpoint and journal entries. */
static void test_concurrent_open(const char *path)
{
    enum { NPROC = 4 };
    pid_t kids[NPROC];
    for (int i = 0; i < NPROC; i++) {
        kids[i] = fork();
        if (kids[i] != 0)
            continue;
        char err[512], id[32];
        struct orch_store *st = orch_store_open(path, err, sizeof err);
        if (st == NULL) {
            fprintf(stderr, "child %d: %s\n", i, err);
            _exit(1);
        }
        snprintf(id, sizeof id, "c%d", i);
        struct orch_run r = make_run(id, "conc", "idC", ORCH_RUN_RUNNING, 100 + i);
        struct orch_result res[] = {{1, "a", "ok", NULL, "{}", 2}, {2, "b", "ok", NULL, "{}", 2}};
        struct orch_checkpoint c = {0};
        c.memento = (void *)"{}";
        c.memento_len = 2;
        char reply[48];
        snprintf(reply, sizeof reply, "reply of %s", id);
        struct orch_journal_entry shared = {
            .key = "shared", .run_id = id, .response = reply, .response_len = strlen(reply), .cost_usd = 1.0};
        struct orch_journal_entry own = shared;
        own.key = id;
        int rc = orch_store_run_create(st, &r);
        if (rc == 0)
            rc = orch_store_journal_put(st, &shared);
        if (rc == 0)
            rc = orch_store_checkpoint_write(st, &r, &c, res, 2, NULL, 0);
        if (rc == 0)
            rc = orch_store_journal_put(st, &own);
        if (rc != 0)
            fprintf(stderr, "child %d: %s\n", i, st->err);
        free(c.checksum);
        orch_store_close(st);
        _exit(rc == 0 ? 0 : 1);
    }
    for (int i = 0; i < NPROC; i++) {
        int status = 0;
        CHECK(kids[i] > 0 && waitpid(kids[i], &status, 0) == kids[i]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    char err[512];
    struct orch_store *st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    struct orch_store_stats s;
    CHECK(orch_store_stats(st, &s) == 0);
    CHECK(s.runs == NPROC && s.checkpoints == NPROC && s.active == NPROC);
    /* one entry per child and a single one for the request they all made */
    CHECK(s.journal_entries == NPROC + 1 && s.journal_hits == 0);
    struct orch_journal_owned jr = {0};
    CHECK(orch_store_journal_get(st, "shared", &jr) == 1);
    CHECK(jr.run_id != NULL && jr.response != NULL &&
          strcmp(jr.response + strlen("reply of "), jr.run_id) == 0);
    orch_journal_clear(&jr);
    orch_store_close(st);
}

static void test_memory(void)
{
    char err[512];
    struct orch_store *st = orch_store_open(":memory:", err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    CHECK_STR(orch_store_backend(st), "sqlite");
    struct orch_run r = make_run("m1", "mem", "idM", ORCH_RUN_PENDING, 10);
    CHECK(orch_store_run_create(st, &r) == 0);
    struct orch_result res[] = {{1, "a", "ok", NULL, "1", 1}};
    struct orch_checkpoint c = {0};
    c.reason = (char *)"final";
    c.memento = (void *)"{}";
    c.memento_len = 2;
    CHECK(orch_store_checkpoint_write(st, &r, &c, res, 1, NULL, 0) == 0);
    free(c.checksum);
    /* an empty memento round-trips too */
    struct orch_checkpoint e = {0};
    CHECK(orch_store_checkpoint_write(st, &r, &e, NULL, 0, NULL, 0) == 0);
    free(e.checksum);
    struct orch_checkpoint lc = {0};
    int skipped = -1;
    CHECK(orch_store_checkpoint_latest(st, "m1", &lc, &skipped) == 1);
    CHECK(lc.seq == 2 && lc.valid && lc.memento_len == 0 && skipped == 0);
    orch_checkpoint_clear(&lc);
    CHECK(orch_store_checkpoint_get(st, "m1", 1, &lc) == 1);
    CHECK(lc.valid && lc.memento_len == 2 && memcmp(lc.memento, "{}", 2) == 0);
    orch_checkpoint_clear(&lc);
    struct orch_store_stats s;
    CHECK(orch_store_stats(st, &s) == 0);
    CHECK(s.runs == 1 && s.checkpoints == 2 && s.bytes == 0);
    struct orch_journal_entry je = {.key = "k", .response = journal_reply, .response_len = JOURNAL_REPLY_LEN};
    CHECK(orch_store_journal_put(st, &je) == 0);
    struct orch_journal_owned jr = {0};
    CHECK(orch_store_journal_get(st, "k", &jr) == 1);
    CHECK(jr.response_len == JOURNAL_REPLY_LEN && memcmp(jr.response, journal_reply, JOURNAL_REPLY_LEN) == 0);
    orch_journal_clear(&jr);
    CHECK(orch_store_stats(st, &s) == 0);
    CHECK(s.journal_entries == 1 && s.journal_hits == 1);
    orch_store_close(st);
}

/* Opening path must fail with a message containing want, and leave the
 * file byte-for-byte as it was, with no journal files beside it. */
static void expect_refused(const char *path, const char *want)
{
    size_t before_len = 0, after_len = 0;
    char *before = slurp(path, &before_len);
    char err[512] = "";
    struct orch_store *st = orch_store_open(path, err, sizeof err);
    CHECK(st == NULL);
    if (st != NULL)
        orch_store_close(st);
    CHECK_HAS(err, want);
    CHECK(strncmp(err, path, strlen(path)) == 0);
    char *after = slurp(path, &after_len);
    CHECK(before != NULL && after != NULL && before_len == after_len &&
          memcmp(before, after, before_len) == 0);
    char side[700];
    snprintf(side, sizeof side, "%s-wal", path);
    CHECK(!exists(side));
    snprintf(side, sizeof side, "%s-journal", path);
    CHECK(!exists(side));
    free(before);
    free(after);
}

static void test_refusals(const char *dir)
{
    char path[600], err[512], want[700];

    /* a schema from the future */
    snprintf(path, sizeof path, "%s/newer.db", dir);
    struct orch_store *st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL)
        orch_store_close(st);
    CHECK(sql_on(path, "PRAGMA user_version = 99") == SQLITE_OK);
    snprintf(want, sizeof want, "%s: created by a newer orch (schema 99, this orch knows up to 9)", path);
    expect_refused(path, want);
    st = orch_store_open(path, err, sizeof err);
    CHECK_STR(err, want);
    /* the very next version too */
    snprintf(path, sizeof path, "%s/newer5.db", dir);
    st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL)
        orch_store_close(st);
    CHECK(sql_on(path, "PRAGMA user_version = 10") == SQLITE_OK);
    snprintf(want, sizeof want, "%s: created by a newer orch (schema 10, this orch knows up to 9)", path);
    expect_refused(path, want);

    /* text files, short and long */
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    const char *text = "id,text\n1,hello\n";
    CHECK(spit(path, text, strlen(text)) == 0);
    expect_refused(path, "not an orch state database (file is not a database)");
    snprintf(path, sizeof path, "%s/big.txt", dir);
    char big[10000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('a' + i % 26);
    CHECK(spit(path, big, sizeof big) == 0);
    expect_refused(path, "not an orch state database (file is not a database)");

    /* another program's database */
    snprintf(path, sizeof path, "%s/other.db", dir);
    CHECK(sql_on(path, "CREATE TABLE contacts (name TEXT); INSERT INTO contacts VALUES ('ann')") ==
          SQLITE_OK);
    snprintf(want, sizeof want, "%s: is an SQLite database of another program", path);
    expect_refused(path, want);

    /* an orch database damaged on disk */
    snprintf(path, sizeof path, "%s/damaged.db", dir);
    st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL) {
        struct orch_run r = make_run("d1", "d", "d", ORCH_RUN_PENDING, 1);
        CHECK(orch_store_run_create(st, &r) == 0);
        orch_store_close(st);
    }
    size_t len = 0;
    char *bytes = slurp(path, &len);
    CHECK(bytes != NULL && len >= 3 * 4096);
    if (bytes != NULL && len >= 3 * 4096) {
        memset(bytes + 4096 + 8, 0xa5, 4096 - 8); /* page 2: the runs table */
        CHECK(spit(path, bytes, len) == 0);
    }
    free(bytes);
    expect_refused(path, "the state database is corrupt");

    /* a directory given as the path */
    snprintf(path, sizeof path, "%s", dir);
    st = orch_store_open(path, err, sizeof err);
    CHECK(st == NULL);
    CHECK_HAS(err, "is a directory");

    st = orch_store_open("/dev/null", err, sizeof err);
    CHECK(st == NULL);
    CHECK_STR(err, "/dev/null: not a regular file, cannot hold a state database");

    /* places that cannot be written, even by root */
    const char *proc = "/proc/orch-store-test.db";
    st = orch_store_open(proc, err, sizeof err);
    CHECK(st == NULL);
    CHECK_HAS(err, "/proc/orch-store-test.db: cannot write the state database (");
    CHECK_HAS(err, "check the permissions of the file and its directory");
    snprintf(path, sizeof path, "%s/plainfile", dir);
    CHECK(spit(path, "x", 1) == 0);
    snprintf(path, sizeof path, "%s/plainfile/state.db", dir);
    st = orch_store_open(path, err, sizeof err);
    CHECK(st == NULL);
    CHECK_HAS(err, "cannot write the state database (");
    CHECK_HAS(err, "cannot create the file: Not a directory");

    /* an immutable directory and file: read-only even for root */
    snprintf(path, sizeof path, "%s/frozen", dir);
    CHECK(mkdir(path, 0777) == 0);
    char frozen_db[700];
    snprintf(frozen_db, sizeof frozen_db, "%s/frozen/kept.db", dir);
    st = orch_store_open(frozen_db, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL)
        orch_store_close(st);
    if (set_immutable(path, 1) == 0) {
        char inside[700];
        snprintf(inside, sizeof inside, "%s/frozen/state.db", dir);
        st = orch_store_open(inside, err, sizeof err);
        set_immutable(path, 0);
        CHECK(st == NULL);
        if (st != NULL)
            orch_store_close(st);
        CHECK_HAS(err, "/frozen/state.db: cannot write the state database (");
        CHECK_HAS(err, "check the permissions of the file and its directory");
        CHECK(!exists(inside));
        size_t before_len = 0, after_len = 0;
        char *before = slurp(frozen_db, &before_len);
        CHECK(set_immutable(frozen_db, 1) == 0);
        st = orch_store_open(frozen_db, err, sizeof err);
        set_immutable(frozen_db, 0);
        CHECK(st == NULL);
        if (st != NULL)
            orch_store_close(st);
        CHECK_HAS(err, "/frozen/kept.db: cannot write the state database (the file is read-only)");
        char *after = slurp(frozen_db, &after_len);
        CHECK(before != NULL && after != NULL && before_len == after_len &&
              memcmp(before, after, before_len) == 0);
        free(before);
        free(after);
    } else {
        printf("immutable directory check skipped: chattr +i not permitted here\n");
    }

    /* a read-only directory: only meaningful when permissions apply */
    if (geteuid() != 0) {
        snprintf(path, sizeof path, "%s/ro", dir);
        CHECK(mkdir(path, 0777) == 0);
        CHECK(chmod(path, 0555) == 0);
        snprintf(path, sizeof path, "%s/ro/state.db", dir);
        st = orch_store_open(path, err, sizeof err);
        CHECK(st == NULL);
        CHECK_HAS(err, "cannot write the state database (");
        snprintf(path, sizeof path, "%s/ro", dir);
        chmod(path, 0755);
    } else {
        printf("read-only directory check skipped: running as root\n");
    }

    /* URLs of schemes orch has no backend for are refused, never taken as
     * a file name (nothing is created), with any password masked */
    static const char *const foreign[][2] = {
        {"mongodb://localhost:27017/0",
         "mongodb://localhost:27017/0: no state store backend for mongodb:// URLs "
         "(orch takes postgres://, postgresql://, redis:// or unix:// URLs, a file path or :memory:)"},
        {"mysql://bob:hunter2@db/orch",
         "mysql://bob:***@db/orch: no state store backend for mysql:// URLs "
         "(orch takes postgres://, postgresql://, redis:// or unix:// URLs, a file path or :memory:)"},
        {"postgress://u:pw@h/d?password=pw2",
         "postgress://u:***@h/d?password=***: no state store backend for postgress:// URLs "
         "(orch takes postgres://, postgresql://, redis:// or unix:// URLs, a file path or :memory:)"},
    };
    for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++) {
        st = orch_store_open(foreign[i][0], err, sizeof err);
        CHECK(st == NULL);
        CHECK_STR(err, foreign[i][1]);
        CHECK(!exists("mongodb:") && !exists("mysql:") && !exists("postgress:"));
    }
    /* the mask itself: user info, query passwords, nothing else */
    static const char *const masks[][2] = {
        {"postgres://u:secret@h:5432/d", "postgres://u:***@h:5432/d"},
        {"postgresql://u@h/d", "postgresql://u@h/d"},
        {"postgres:///d?host=/tmp/x&password=s3&user=u", "postgres:///d?host=/tmp/x&password=***&user=u"},
        {"postgres://u:p%40ss@h/d", "postgres://u:***@h/d"},
        {"/tmp/a:b@c/state.db", "/tmp/a:b@c/state.db"},
    };
    for (size_t i = 0; i < sizeof masks / sizeof masks[0]; i++) {
        char shown[256];
        orch_store_display(masks[i][0], shown, sizeof shown);
        CHECK_STR(shown, masks[i][1]);
    }
    st = orch_store_open("", err, sizeof err);
    CHECK(st == NULL);
}

/* Inspection opens a store read-only: never creates it, writes nothing,
 * and still reads a store whose directory or file cannot be written. */
static void test_readonly(const char *dir)
{
    char path[600], err[512];
    snprintf(path, sizeof path, "%s/typo/x.db", dir);
    struct orch_store *st = orch_store_open_flags(path, ORCH_STORE_READONLY, err, sizeof err);
    CHECK(st == NULL);
    CHECK_HAS(err, "no state store at ");
    CHECK_HAS(err, "/typo/x.db (no run has used it; check --db or ORCH_DB)");
    snprintf(path, sizeof path, "%s/typo", dir);
    CHECK(!exists(path));

    snprintf(path, sizeof path, "%s/empty.db", dir);
    CHECK(spit(path, "", 0) == 0);
    st = orch_store_open_flags(path, ORCH_STORE_READONLY, err, sizeof err);
    CHECK(st == NULL);
    CHECK_HAS(err, "/empty.db (the file is empty)");

    snprintf(path, sizeof path, "%s/v1ro.db", dir);
    CHECK(make_v1_store(path) == 0);
    st = orch_store_open_flags(path, ORCH_STORE_READONLY, err, sizeof err);
    CHECK(st == NULL);
    CHECK_HAS(err, "written by an older orch (schema 1, this orch reads 9) and opened read-only");
    CHECK(user_version(path) == 1);

    char rodir[600];
    snprintf(rodir, sizeof rodir, "%s/rostore", dir);
    CHECK(mkdir(rodir, 0777) == 0);
    snprintf(path, sizeof path, "%s/rostore/state.db", dir);
    st = orch_store_open(path, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    struct orch_run r = make_run("kept", "classify", "idK", ORCH_RUN_COMPLETED, 1000);
    CHECK(orch_store_run_create(st, &r) == 0);
    orch_store_close(st);

    size_t before_len = 0;
    char *before = slurp(path, &before_len);
    st = orch_store_open_flags(path, ORCH_STORE_READONLY, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL) {
        struct orch_run got = {0};
        CHECK(orch_store_run_get(st, "kept", &got) == 1);
        CHECK_STR(got.name, "classify");
        orch_run_clear(&got);
        struct orch_run r2 = make_run("new", "classify", "idK", ORCH_RUN_PENDING, 2000);
        CHECK(orch_store_run_create(st, &r2) == -1);
        CHECK_HAS(st->err, "readonly database");
        orch_store_close(st);
    }

    /* unwritable: an immutable directory (root too), else a 0555 one */
    int frozen = set_immutable(rodir, 1) == 0;
    if (!frozen && geteuid() != 0)
        frozen = chmod(rodir, 0555) == 0;
    if (frozen) {
        char shm[700];
        snprintf(shm, sizeof shm, "%s-shm", path);
        int had_shm = exists(shm);
        st = orch_store_open_flags(path, ORCH_STORE_READONLY, err, sizeof err);
        CHECK(st != NULL);
        if (st != NULL) {
            struct orch_run got = {0};
            CHECK(orch_store_run_get(st, "kept", &got) == 1);
            orch_run_clear(&got);
            orch_store_close(st);
        } else {
            fprintf(stderr, "read-only open: %s\n", err);
        }
        CHECK(exists(shm) == had_shm);
        /* and the read-write open still refuses it clearly */
        st = orch_store_open(path, err, sizeof err);
        if (st != NULL)
            orch_store_close(st);
        set_immutable(rodir, 0);
        chmod(rodir, 0755);
    } else {
        printf("read-only store directory check skipped: cannot make a directory read-only here\n");
    }
    size_t after_len = 0;
    char *after = slurp(path, &after_len);
    CHECK(before != NULL && after != NULL && before_len == after_len &&
          memcmp(before, after, before_len) == 0);
    free(before);
    free(after);
}

/* Results without data, as runs write them, with keys and errors that
 * need quoting somewhere (a backend may send them as arrays), out of seq
 * order, and one upserted again by a later checkpoint. */
static void test_results_quoted(struct orch_store *st)
{
    struct orch_run run = make_run("rq", "quote", "idQ", ORCH_RUN_RUNNING, 5000);
    CHECK(orch_store_run_create(st, &run) == 0);
    struct orch_result res[] = {
        {3, "NULL", "ok", NULL, NULL, 0},
        {1, "a\"b", "failed", "it said \"no\", then {x,y}", NULL, 0},
        {2, "c\\d,{e}", "dropped", NULL, NULL, 0},
        {4, NULL, "ok", NULL, NULL, 0},
    };
    struct orch_checkpoint c = {0};
    c.reason = (char *)"rows";
    CHECK(orch_store_checkpoint_write(st, &run, &c, res, 4, NULL, 0) == 0);
    free(c.checksum);
    struct orch_result again[] = {{2, "c2", "ok", NULL, NULL, 0}, {5, "e", "ok", NULL, NULL, 0}};
    struct orch_checkpoint c2 = {0};
    CHECK(orch_store_checkpoint_write(st, &run, &c2, again, 2, NULL, 0) == 0);
    free(c2.checksum);
    struct results rs = {0};
    CHECK(orch_store_result_list(st, "rq", collect_result, &rs) == 0);
    CHECK(rs.n == 5);
    CHECK(rs.seq[0] == 1 && rs.seq[4] == 5);
    CHECK_STR(rs.key[0], "a\"b");
    CHECK_STR(rs.status[0], "failed");
    CHECK(rs.has_error[0] && !rs.has_error[1]);
    CHECK_STR(rs.key[1], "c2");
    CHECK_STR(rs.key[2], "NULL");
    CHECK_STR(rs.key[3], "");
    CHECK(rs.null_data[0] && rs.null_data[3]);
    /* a result without a status is refused, naming it, and nothing is written */
    struct orch_result bad[] = {{6, "f", "ok", NULL, NULL, 0}, {7, "g", NULL, NULL, NULL, 0}};
    struct orch_checkpoint c3 = {0};
    CHECK(orch_store_checkpoint_write(st, &run, &c3, bad, 2, NULL, 0) == -1);
    CHECK_HAS(st->err, "cannot store result 7 of run rq");
    int n = 0;
    CHECK(orch_store_result_list(st, "rq", count_result, &n) == 0);
    CHECK(n == 5);
    CHECK(orch_store_run_delete(st, "rq") == 1);
}

/* Every result of a run, in seq order, checked against what
 * chunk_row(seq, round) wrote: seq i carries "k<i>" and data
 * {"i":<i>,"r":<round>}, where round is rewritten[i] (0 for most). */
struct chunk_check {
    int64_t n, next, bad;
    const int *round; /* indexed by seq */
};

static int check_chunk_row(void *ud, const struct orch_result *r)
{
    struct chunk_check *c = ud;
    char key[32], data[64];
    snprintf(key, sizeof key, "k%lld", (long long)r->seq);
    int dl = snprintf(data, sizeof data, "{\"i\":%lld,\"r\":%d}", (long long)r->seq, c->round[r->seq]);
    if (r->seq != c->next || r->key == NULL || strcmp(r->key, key) != 0 || r->data_len != (size_t)dl ||
        memcmp(r->data, data, (size_t)dl) != 0 || strcmp(r->status, r->seq % 7 ? "ok" : "failed") != 0 ||
        (r->error != NULL) != (r->seq % 7 == 0))
        c->bad++;
    c->next = r->seq + 1;
    c->n++;
    return 0;
}

static void chunk_rows(struct orch_result *res, char (*bufs)[2][64], const int64_t *seqs, size_t n,
                       const int *round)
{
    for (size_t i = 0; i < n; i++) {
        int64_t q = seqs[i];
        snprintf(bufs[i][0], sizeof bufs[i][0], "k%lld", (long long)q);
        int dl = snprintf(bufs[i][1], sizeof bufs[i][1], "{\"i\":%lld,\"r\":%d}", (long long)q, round[q]);
        res[i] = (struct orch_result){
            q, bufs[i][0], q % 7 ? "ok" : "failed", q % 7 ? NULL : "it failed", bufs[i][1], (size_t)dl};
    }
}

/* Checkpoints of 500 rows, as runs write them, then rows written again
 * (a rerun after a restore, out of order, across two checkpoints'
 * rows), a rollback, and on SQLite the layout (one chunk row per
 * checkpoint) and a damaged chunk's message. */
static void test_results_chunks(struct orch_store *st, const char *db_path)
{
    enum { N = 500, ROUNDS = 3, TOTAL = N * ROUNDS };
    static int round[TOTAL + 4]; /* seqs 1 .. TOTAL + 3 */
    static struct orch_result res[N];
    static char bufs[N][2][64];
    static int64_t seqs[N];
    memset(round, 0, sizeof round);
    struct orch_run run = make_run("rc", "chunks", "idC", ORCH_RUN_RUNNING, 6000);
    CHECK(orch_store_run_create(st, &run) == 0);
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < N; i++)
            seqs[i] = (int64_t)r * N + i + 1;
        chunk_rows(res, bufs, seqs, N, round);
        struct orch_checkpoint c = {0};
        c.reason = (char *)"rows";
        CHECK(orch_store_checkpoint_write(st, &run, &c, res, N, NULL, 0) == 0);
        free(c.checksum);
    }
    struct chunk_check cc = {.next = 1, .round = round};
    CHECK(orch_store_result_list(st, "rc", check_chunk_row, &cc) == 0);
    CHECK(cc.n == TOTAL && cc.bad == 0);
    if (backend == B_SQLITE) {
        CHECK(count_of(db_path, "SELECT count(*) FROM result_chunks WHERE run_id = 'rc'") == ROUNDS);
        /* the failed rows (every 7th) stay rows of results */
        CHECK(count_of(db_path, "SELECT count(*) FROM results WHERE run_id = 'rc'") == TOTAL / 7);
    }

    /* rows 498..503 (the end of the first chunk, the start of the
     * second) and 1000 again, out of order, with a new round; then 1501,
     * past the end */
    int64_t again[] = {503, 1000, 498, 499, 500, 501, 502, 1501};
    for (size_t i = 0; i < sizeof again / sizeof again[0]; i++)
        round[again[i]] = 1;
    chunk_rows(res, bufs, again, sizeof again / sizeof again[0], round);
    struct orch_checkpoint c4 = {0};
    c4.reason = (char *)"rows";
    CHECK(orch_store_checkpoint_write(st, &run, &c4, res, sizeof again / sizeof again[0], NULL, 0) == 0);
    CHECK(c4.seq == ROUNDS + 1);
    free(c4.checksum);
    cc = (struct chunk_check){.next = 1, .round = round};
    CHECK(orch_store_result_list(st, "rc", check_chunk_row, &cc) == 0);
    CHECK(cc.n == TOTAL + 1 && cc.bad == 0);
    if (backend == B_SQLITE) {
        /* the two chunks it touched went back to rows; the third stays */
        CHECK(count_of(db_path, "SELECT count(*) FROM result_chunks WHERE run_id = 'rc'") == 1);
        CHECK(count_of(db_path, "SELECT count(*) FROM results WHERE run_id = 'rc'") ==
              2 * N + 1 + (TOTAL / 7 - 2 * N / 7));
    }
    /* a following checkpoint extends the run again */
    seqs[0] = 1502;
    seqs[1] = 1503;
    chunk_rows(res, bufs, seqs, 2, round);
    struct orch_checkpoint c5 = {0};
    CHECK(orch_store_checkpoint_write(st, &run, &c5, res, 2, NULL, 0) == 0);
    free(c5.checksum);
    cc = (struct chunk_check){.next = 1, .round = round};
    CHECK(orch_store_result_list(st, "rc", check_chunk_row, &cc) == 0);
    CHECK(cc.n == TOTAL + 3 && cc.bad == 0);
    CHECK(backend != B_SQLITE ||
          count_of(db_path, "SELECT count(*) FROM result_chunks WHERE run_id = 'rc'") == 2);

    /* back to checkpoint 4: the last chunk goes, the rows stay */
    CHECK(orch_store_checkpoint_rollback(st, "rc", ROUNDS + 1) == 0);
    cc = (struct chunk_check){.next = 1, .round = round};
    CHECK(orch_store_result_list(st, "rc", check_chunk_row, &cc) == 0);
    CHECK(cc.n == TOTAL + 1 && cc.bad == 0);
    CHECK(backend != B_SQLITE ||
          count_of(db_path, "SELECT count(*) FROM result_chunks WHERE run_id = 'rc'") == 1);

    if (backend == B_SQLITE) {
        /* the chunk left (the third round's rows that did not fail),
         * written again in the fixed form of schemas 5 and 6 and in the
         * keyed form of the schemas after, reads the same */
        int64_t kept[N];
        size_t nk = 0;
        for (int64_t q = 2 * N + 1; q <= TOTAL; q++)
            if (q % 7 != 0)
                kept[nk++] = q;
        chunk_rows(res, bufs, kept, nk, round);
        const int old_forms[] = {ORCH_PACK_FIXED, ORCH_PACK_KEYED};
        for (int f = 0; f < 2; f++) {
            size_t len = 0;
            unsigned char *blob = orch_results_pack(old_forms[f], res, nk, &len);
            char *sql = malloc(2 * len + 200);
            int at = snprintf(sql, 200, "UPDATE result_chunks SET format = %d, data = x'", old_forms[f]);
            for (size_t i = 0; i < len; i++)
                at += snprintf(sql + at, 3, "%02x", blob[i]);
            snprintf(sql + at, 200, "' WHERE run_id = 'rc' AND n = %zu", nk);
            CHECK(sql_on(db_path, sql) == SQLITE_OK);
            snprintf(sql, 200, "SELECT count(*) FROM result_chunks WHERE run_id = 'rc' AND format = %d",
                     old_forms[f]);
            CHECK(count_of(db_path, sql) == 1);
            free(sql);
            free(blob);
            cc = (struct chunk_check){.next = 1, .round = round};
            CHECK(orch_store_result_list(st, "rc", check_chunk_row, &cc) == 0);
            CHECK(cc.n == TOTAL + 1 && cc.bad == 0);
        }

        /* a damaged chunk is named, with what to do */
        CHECK(sql_on(db_path, "UPDATE result_chunks SET data = x'0100' WHERE run_id = 'rc'") == SQLITE_OK);
        cc = (struct chunk_check){.next = 1, .round = round};
        CHECK(orch_store_result_list(st, "rc", check_chunk_row, &cc) == -1);
        CHECK(cc.bad == 0);
        /* the chunk starts at the third round's first row that did not fail */
        int first = 2 * N + 1 + ((2 * N + 1) % 7 == 0);
        char want[300];
        snprintf(want, sizeof want,
                 ": the stored results of run rc from row %d are damaged: restore the run to an "
                 "earlier checkpoint (orch checkpoints rc, orch restore rc SEQ) and resume it",
                 first);
        CHECK_HAS(st->err, want);
    }
    CHECK(orch_store_run_delete(st, "rc") == 1);
    CHECK(backend != B_SQLITE ||
          count_of(db_path, "SELECT count(*) FROM result_chunks WHERE run_id = 'rc'") == 0);
}

/* A run's results as text, one line a result, for comparing what two
 * runs stored. */
struct dump {
    char *p;
    size_t len, cap;
};

static int dump_result(void *ud, const struct orch_result *r)
{
    struct dump *d = ud;
    char line[512];
    int n = snprintf(line, sizeof line, "%lld|%s|%s|%s|%s\n", (long long)r->seq, r->key ? r->key : "(none)",
                     r->status, r->error ? r->error : "(none)", r->data ? "data" : "-");
    if (d->len + (size_t)n + 1 > d->cap) {
        d->cap = (d->cap + (size_t)n + 1) * 2;
        d->p = realloc(d->p, d->cap);
    }
    memcpy(d->p + d->len, line, (size_t)n + 1);
    d->len += (size_t)n;
    return 0;
}

/* Writes seqs[0..n) (ok, "failed" with an error every 7th, a key "k<seq>")
 * as one checkpoint of run: as a chunk packed one result at a time with
 * the failed beside it (packed), or as a list. The store's return. */
static int write_settled(struct orch_store *st, struct orch_run *run, const int64_t *seqs, size_t n,
                         int packed)
{
    static struct orch_result res[600];
    static char keys[600][24];
    struct orch_results_packer pk = {0};
    for (size_t i = 0; i < n; i++) {
        snprintf(keys[i], sizeof keys[i], "k%lld", (long long)seqs[i]);
        int failed = seqs[i] % 7 == 0;
        res[i] = (struct orch_result){seqs[i], keys[i], failed ? "failed" : "ok", failed ? "it failed" : NULL,
                                      NULL,    0};
        if (packed)
            CHECK(orch_results_packer_add(&pk, &res[i]) == 0);
    }
    struct orch_checkpoint c = {0};
    c.reason = (char *)"rows";
    int rc;
    if (packed) {
        struct orch_results_chunk chunk = {ORCH_PACK_COMPACT, pk.ok.p,     pk.ok.len,
                                           pk.ok.n,           pk.ok.first, pk.ok.last};
        struct orch_results_chunk bad = {ORCH_PACK_COMPACT, pk.failed.p, pk.failed.len, pk.failed.n, 0, 0};
        struct orch_result *failed = NULL;
        CHECK(orch_results_merge(&bad, NULL, 0, &failed) == 0);
        rc = orch_store_checkpoint_write_chunk(st, run, &c, &chunk, failed, (size_t)pk.failed.n, NULL, 0);
        free(failed);
    } else {
        rc = orch_store_checkpoint_write(st, run, &c, res, n, NULL, 0);
    }
    free(c.checksum);
    orch_results_packer_free(&pk);
    return rc;
}

/* Results handed over packed as rows settled (a chunk beside the failed
 * rows) are stored as the same results given as a list: every reader
 * sees the same, on every backend, whether they extend the run or
 * rewrite rows already stored; on SQLite the chunk row is the same
 * bytes. A chunk that is not one is refused. */
static void test_results_packed(struct orch_store *st, const char *db_path)
{
    struct orch_run packed = make_run("rpk", "packed", "idP", ORCH_RUN_RUNNING, 7000);
    struct orch_run listed = make_run("rls", "packed", "idP", ORCH_RUN_RUNNING, 7001);
    CHECK(orch_store_run_create(st, &packed) == 0);
    CHECK(orch_store_run_create(st, &listed) == 0);
    static int64_t seqs[600];
    for (int i = 0; i < 500; i++)
        seqs[i] = i + 1;
    int64_t again[] = {499, 500, 501, 502}; /* two stored rows written again, two new */
    int64_t next[] = {503};                 /* extends the run again */
    const char *same = "SELECT count(*) FROM result_chunks p JOIN result_chunks l ON l.run_id = 'rls' "
                       "AND p.first_seq = l.first_seq AND p.last_seq = l.last_seq AND p.n = l.n "
                       "AND p.data = l.data AND p.format = l.format AND p.checkpoint_seq = l.checkpoint_seq "
                       "WHERE p.run_id = 'rpk'";
    CHECK(write_settled(st, &packed, seqs, 500, 1) == 0);
    CHECK(write_settled(st, &listed, seqs, 500, 0) == 0);
    /* on SQLite, one chunk of the 429 rows that did not fail, the same bytes */
    CHECK(backend != B_SQLITE || count_of(db_path, same) == 1);
    CHECK(backend != B_SQLITE ||
          count_of(db_path, "SELECT count(*) FROM results WHERE run_id = 'rpk'") == 71);
    CHECK(write_settled(st, &packed, again, 4, 1) == 0);
    CHECK(write_settled(st, &listed, again, 4, 0) == 0);
    CHECK(write_settled(st, &packed, next, 1, 1) == 0);
    CHECK(write_settled(st, &listed, next, 1, 0) == 0);
    struct dump a = {0}, b = {0};
    CHECK(orch_store_result_list(st, "rpk", dump_result, &a) == 0);
    CHECK(orch_store_result_list(st, "rls", dump_result, &b) == 0);
    CHECK(a.p != NULL && b.p != NULL && a.len == b.len && memcmp(a.p, b.p, a.len) == 0);
    CHECK(a.p != NULL && strstr(a.p, "1|k1|ok|(none)|-\n") == a.p);
    CHECK(a.p != NULL && strstr(a.p, "\n7|k7|failed|it failed|-\n") != NULL);
    CHECK(a.p != NULL && strstr(a.p, "\n503|k503|ok|(none)|-\n") != NULL);
    int n = 0;
    CHECK(orch_store_result_list(st, "rpk", count_result, &n) == 0);
    CHECK(n == 503);
    free(a.p);
    free(b.p);
    /* the first chunk went back to rows when 499 and 500 came again
     * (the second checkpoint is rows only); the third's chunk is the
     * same bytes in both runs */
    CHECK(backend != B_SQLITE || count_of(db_path, same) == 1);

    /* a chunk that is not one: an unknown format, seqs that cannot hold n */
    struct orch_results_chunk bad = {7, "x", 1, 1, 1, 1};
    struct orch_checkpoint c = {0};
    CHECK(orch_store_checkpoint_write_chunk(st, &packed, &c, &bad, NULL, 0, NULL, 0) == -1);
    CHECK_HAS(st->err, "cannot write a checkpoint of run rpk: its packed results are no chunk");
    bad = (struct orch_results_chunk){ORCH_PACK_COMPACT, "x", 1, 3, 10, 11};
    CHECK(orch_store_checkpoint_write_chunk(st, &packed, &c, &bad, NULL, 0, NULL, 0) == -1);
    CHECK_HAS(st->err, "its packed results are no chunk");
    CHECK(orch_store_run_delete(st, "rpk") == 1);
    CHECK(orch_store_run_delete(st, "rls") == 1);
}

/* Every write the PostgreSQL store makes, refused by the server (a
 * trigger on each of orch's tables), fails with "<URL>: <what it did>:
 * <the server's reason>", naming the run, lease, key or row. */
static void test_pg_failures(const char *url)
{
    char err[512], target[900], shown[900], want[1200];
    CHECK(pg_query(url, "CREATE SCHEMA fail", NULL, NULL, 0) == 0);
    snprintf(target, sizeof target, "%.800s&options=-csearch_path%%3Dfail", url);
    orch_store_display(target, shown, sizeof shown);
    struct orch_store *st = orch_store_open(target, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    struct orch_run r1 = make_run("r1", "n", "idF", ORCH_RUN_RUNNING, 1000);
    struct orch_run r3 = make_run("r3", "n", "idG", ORCH_RUN_RUNNING, 1000);
    CHECK(orch_store_run_create(st, &r1) == 0);
    CHECK(orch_store_run_create(st, &r3) == 0);
    struct orch_lease plan = {.no = 1, .first_index = 0, .rows = 2, .offset = 0, .line = 1};
    CHECK(orch_store_lease_plan(st, "r1", &plan, 1) == 0);
    struct orch_lease held;
    CHECK(orch_store_lease_claim(st, "r1", "w1", 60000, &held) == 1);
    orch_lease_clear(&held);
    CHECK(
        pg_query(url,
                 "CREATE FUNCTION fail.refuse() RETURNS trigger LANGUAGE plpgsql AS "
                 "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; "
                 "DO $$ DECLARE t text; BEGIN FOREACH t IN ARRAY ARRAY['runs', 'checkpoints', 'results', "
                 "'events', 'state', 'llm_journal', 'run_live', 'leases', 'run_budget', 'journal_pending', "
                 "'rate_buckets'] LOOP EXECUTE format('CREATE TRIGGER refuse BEFORE INSERT OR UPDATE OR "
                 "DELETE ON fail.%I FOR EACH STATEMENT EXECUTE FUNCTION fail.refuse()', t); END LOOP; END $$",
                 NULL, NULL, 0) == 0);

#define REFUSED(call, what)                                                                                  \
    do {                                                                                                     \
        CHECK((call) == -1);                                                                                 \
        snprintf(want, sizeof want, "%s: %s: refused by the test", shown, what);                             \
        CHECK_STR(st->err, want);                                                                            \
    } while (0)
    struct orch_run r2 = make_run("r2", "n", "idH", ORCH_RUN_RUNNING, 1000);
    REFUSED(orch_store_run_create(st, &r2), "cannot create run r2");
    REFUSED(orch_store_run_update(st, &r1), "cannot update run");
    REFUSED(orch_store_run_claim(st, "r1", 7, "h", 2000, 0, 0), "cannot claim run");
    REFUSED(orch_store_run_heartbeat(st, "r1", 2000), "cannot record a heartbeat");
    REFUSED(orch_store_run_set_status(st, "r1", ORCH_RUN_PAUSED, NULL), "cannot update run r1");
    REFUSED(orch_store_run_delete(st, "r1"), "cannot delete a run");
    REFUSED(orch_store_event_add(st, "r1", "ev", "{}"), "cannot record an event");
    REFUSED(orch_store_live_put(st, "r1", 2000, "{}"), "cannot record live figures");
    REFUSED(orch_store_checkpoint_rollback(st, "r1", 3), "cannot roll run r1 back to checkpoint 3");
    struct orch_result one[] = {{1, "k1", "ok", NULL, "{}", 2}};
    struct orch_result two[] = {{1, "k1", "ok", NULL, NULL, 0}, {2, "k2", "failed", "x", NULL, 0}};
    struct orch_kv kv[] = {{"a", "1", 1}};
    struct orch_checkpoint c = {0};
    c.reason = (char *)"rows";
    REFUSED(orch_store_checkpoint_write(st, &r1, &c, one, 1, NULL, 0), "cannot store result 1 of run r1");
    REFUSED(orch_store_checkpoint_write(st, &r1, &c, two, 2, NULL, 0),
            "cannot store the 2 results of run r1");
    REFUSED(orch_store_checkpoint_write(st, &r1, &c, NULL, 0, kv, 1), "cannot store state key a of run r1");
    int64_t removed = 0;
    REFUSED(orch_store_journal_prune(st, 5000, &removed), "cannot prune the journal");
    struct orch_journal_entry e = {
        .key = "k1", .provider = "p", .model = "m", .response = "r", .response_len = 1};
    REFUSED(orch_store_journal_put(st, &e), "cannot journal an LLM response");
    REFUSED(orch_store_journal_batch(st, &e, 1, NULL, 0), "cannot journal LLM responses");
    REFUSED(orch_store_lease_plan(st, "r3", &plan, 1), "cannot plan the leases of run r3");
    REFUSED(orch_store_lease_claim(st, "r1", "w2", 60000, &held), "cannot claim a lease of run r1");
    REFUSED(orch_store_lease_heartbeat(st, "r1", 1, "w1"), "cannot heartbeat lease 1 of run r1");
    struct orch_lease_commit lc = {.no = 1, .worker = "w1", .offset = 20, .line = 3, .index = 2, .end = 1};
    REFUSED(orch_store_lease_commit(st, "r1", &lc, one, 1), "cannot commit lease 1 of run r1");
    REFUSED(orch_store_budget_set(st, "r1", 5), "cannot set the budget of run r1");
    REFUSED(orch_store_budget_reserve(st, "r1", 1, 5), "cannot reserve budget for run r1");
    REFUSED(orch_store_budget_settle(st, "r1", 1, 1), "cannot settle the budget of run r1");
    REFUSED(orch_store_journal_pend(st, "k1", "w1", 1000), "cannot mark LLM request k1 as being sent");
    REFUSED(orch_store_rate_take(st, "r1", "rpm", 1, 60), "cannot take from the rpm limit of run r1");
#undef REFUSED
    orch_store_close(st);
}

/* PostgreSQL only: refusals at open, each leaving the database as it
 * was; the password never in a message. url: the test server. */
static void test_pg_refusals(const char *url)
{
    char err[512], target[900];
    struct orch_store *st;
    /* a database with tables named like orch's that are not orch's */
    CHECK(pg_query(url,
                   "CREATE SCHEMA other; CREATE TABLE other.runs (id int); "
                   "INSERT INTO other.runs VALUES (7)",
                   NULL, NULL, 0) == 0);
    snprintf(target, sizeof target, "%.800s&options=-csearch_path%%3Dother", url);
    st = orch_store_open(target, err, sizeof err);
    CHECK(st == NULL);
    CHECK_HAS(err,
              ": the database has tables named like orch's (runs) that are not orch's; nothing was changed: "
              "give orch a database (or schema) of its own");
    CHECK(pg_query(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'other'", NULL, NULL, 0) == 1);
    CHECK(pg_query(url, "SELECT id FROM other.runs", NULL, NULL, 0) == 7);

    /* a schema newer than this orch */
    CHECK(pg_query(url, "CREATE SCHEMA newer", NULL, NULL, 0) == 0);
    snprintf(target, sizeof target, "%.800s&options=-csearch_path%%3Dnewer", url);
    st = orch_store_open(target, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL)
        orch_store_close(st);
    CHECK(pg_query(url, "UPDATE newer.orch_meta SET version = 99", NULL, NULL, 0) == 0);
    st = orch_store_open(target, err, sizeof err);
    CHECK(st == NULL);
    CHECK_HAS(err, ": created by a newer orch (schema 99, this orch knows up to 5)");
    CHECK(pg_query(url, "SELECT version FROM newer.orch_meta", NULL, NULL, 0) == 99);

    /* read-only: a database without orch's tables is no store, and stays so */
    CHECK(pg_query(url, "CREATE SCHEMA empty", NULL, NULL, 0) == 0);
    snprintf(target, sizeof target, "%.800s&options=-csearch_path%%3Dempty", url);
    st = orch_store_open_flags(target, ORCH_STORE_READONLY, err, sizeof err);
    CHECK(st == NULL);
    CHECK_HAS(err, "no state store at postgres");
    CHECK_HAS(err, "(the database has no orch tables; no run has used it)");
    CHECK(pg_query(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'empty'", NULL, NULL, 0) == 0);
    /* a read-only store reads, and refuses to write */
    st = orch_store_open_flags(url, ORCH_STORE_READONLY, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL) {
        struct orch_run got = {0};
        CHECK(orch_store_run_get(st, "r4", &got) == 1);
        orch_run_clear(&got);
        struct orch_run r = make_run("ro", "x", "x", ORCH_RUN_RUNNING, 1);
        CHECK(orch_store_run_create(st, &r) == -1);
        CHECK_HAS(st->err, ": cannot create run ro: ");
        orch_store_close(st);
    }

    /* a missing database, an unreachable server: orch's message, the
     * password masked */
    snprintf(target, sizeof target, "%s", url);
    char *q = strstr(target, "/orch?");
    CHECK(q != NULL);
    if (q != NULL) {
        char tail[600];
        snprintf(tail, sizeof tail, "%s", q + 5);
        snprintf(q, sizeof target - (size_t)(q - target), "/nodb%s&password=hunter2", tail);
        st = orch_store_open(target, err, sizeof err);
        CHECK(st == NULL);
        CHECK_HAS(err,
                  "&password=***: cannot connect to PostgreSQL: database \"nodb\" does not exist; create it "
                  "(createdb) or fix the URL");
        CHECK(strstr(err, "hunter2") == NULL);
    }
    st = orch_store_open("postgres://orch:hunter2@/orch?host=/nonexistent/dir", err, sizeof err);
    CHECK(st == NULL);
    CHECK_HAS(err,
              "postgres://orch:***@/orch?host=/nonexistent/dir: cannot connect to PostgreSQL: the server is "
              "not reachable (");
    CHECK_HAS(err, "); check the host and port and that the server is running");
    CHECK(strstr(err, "hunter2") == NULL);
}

/* A command on the Redis server at url through a connection of the
 * test's own; its integer reply (a string read as a number; nil -2), or -1. */
static int64_t rd_cmd(const char *url, const char *cmd, const char *a1, const char *a2, const char *a3)
{
    redisContext *c = rd_connect(url);
    if (c == NULL)
        return -1;
    const char *argv[] = {cmd, a1, a2, a3};
    int n = 1 + (a1 != NULL) + (a2 != NULL) + (a3 != NULL);
    redisReply *r = redisCommandArgv(c, n, argv, NULL);
    int64_t v = -1;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r != NULL && r->type == REDIS_REPLY_STRING)
        v = strtoll(r->str, NULL, 10);
    else if (r != NULL && r->type == REDIS_REPLY_NIL)
        v = -2;
    else if (r != NULL && r->type == REDIS_REPLY_STATUS)
        v = 0;
    freeReplyObject(r);
    redisFree(c);
    return v;
}

/* url with its database number replaced by db. */
static void rd_db_url(const char *url, int db, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", url);
    char *slash = strrchr(out, '/');
    if (slash != NULL)
        snprintf(slash, outlen - (size_t)(slash - out), "/%d", db);
}

/* Redis only: two stores writing checkpoints of one run in turn number
 * them 1, 2, 3, 4: each one's guess of the next seq, stale after the
 * other wrote, is corrected by the write script, never taken twice. */
static void test_redis_two_writers(const char *url)
{
    char err[512], target[900];
    rd_db_url(url, 14, target, sizeof target);
    struct orch_store *a = orch_store_open(target, err, sizeof err);
    struct orch_store *b = orch_store_open(target, err, sizeof err);
    CHECK(a != NULL && b != NULL);
    if (a == NULL || b == NULL) {
        orch_store_close(a);
        orch_store_close(b);
        return;
    }
    struct orch_run run = make_run("tw", "x", "idT", ORCH_RUN_RUNNING, 1);
    CHECK(orch_store_run_create(a, &run) == 0);
    struct orch_store *turn[] = {a, a, b, a, b};
    for (int i = 0; i < 5; i++) {
        struct orch_checkpoint c = {0};
        c.reason = (char *)"rows";
        c.input_index = i;
        CHECK(orch_store_checkpoint_write(turn[i], &run, &c, NULL, 0, NULL, 0) == 0);
        CHECK(c.seq == i + 1);
        free(c.checksum);
    }
    struct cps cs = {0};
    CHECK(orch_store_checkpoint_list(b, "tw", collect_cp, &cs) == 0);
    CHECK(cs.n == 5 && cs.seq[4] == 5 && cs.valid[4] == 1);
    orch_store_close(a);
    orch_store_close(b);
}

/* The lease commit script of the store at url, run by hand with one
 * progress (end 0) or done (end 1) commit of lease 1 of run "rp", token
 * token: its integer reply, or -1. */
static int64_t rd_commit_by_hand(const char *url, const char *worker, const char *end, const char *token)
{
    redisContext *c = rd_connect(url);
    if (c == NULL)
        return -1;
    const char *argv[] = {"EVAL", orch_redis_script(RD_LEASE_COMMIT), "0", "orch:", "rp", "1", worker,
                          /* offset, line, index, end, stamp, token */
                          "10", "2", "1", end, "1000", token,
                          /* rows done, ok, failed, dropped, defaulted, calls, tokens in, out; cost */
                          end[0] == '0' ? "1" : "0", end[0] == '0' ? "1" : "0", "0", "0", "0", "1", "3", "4",
                          "0.5",
                          /* one result: seq 1, ok, data "A\n" */
                          "1", "1", "0|2|-1|-1|2|okA\n"};
    redisReply *r = redisCommandArgv(c, (int)(sizeof argv / sizeof argv[0]), argv, NULL);
    int64_t n = r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (n < 0)
        fprintf(stderr, "rd_commit_by_hand: %s\n", r != NULL && r->str != NULL ? r->str : c->errstr);
    freeReplyObject(r);
    redisFree(c);
    return n;
}

/* Redis only: a lease commit whose reply was lost with the connection is
 * sent again with the same token (orch_redis_eval after a reconnect). The
 * second writes nothing and replies as the first: a progress commit's
 * counters are not added twice, and the commit that completed the run
 * still says so rather than "lost". */
static void test_redis_commit_replay(const char *url)
{
    char err[512], target[900];
    rd_db_url(url, 15, target, sizeof target);
    struct orch_store *st = orch_store_open(target, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    struct orch_run run = make_run("rp", "x", "idR", ORCH_RUN_RUNNING, 1);
    CHECK(orch_store_run_create(st, &run) == 0);
    struct orch_store_stats before = {0}, after = {0};
    CHECK(orch_store_stats(st, &before) == 0);
    struct orch_lease plan = {.no = 1, .first_index = 0, .rows = 2, .offset = 0, .line = 1};
    CHECK(orch_store_lease_plan(st, "rp", &plan, 1) == 0);
    CHECK(orch_store_stats(st, &after) == 0);
    CHECK(after.bytes > before.bytes); /* the lease keys count in the store's size */
    struct orch_lease l;
    CHECK(orch_store_lease_claim(st, "rp", "w-a", 60000, &l) == 1);
    orch_lease_clear(&l);
    CHECK(rd_commit_by_hand(target, "w-a", "0", "77") == 1);
    CHECK(rd_commit_by_hand(target, "w-a", "0", "77") == 1); /* the same commit again */
    CHECK(rd_cmd(target, "HGET", "orch:run:rp", "rows_done", NULL) == 1);
    CHECK(rd_cmd(target, "HGET", "orch:run:rp", "llm_calls", NULL) == 1);
    CHECK(rd_cmd(target, "HGET", "orch:run:rp", "tokens_out", NULL) == 4);
    CHECK(rd_cmd(target, "HLEN", "orch:res:rp", NULL, NULL) == 1);
    /* the last lease done: the run completes, and says so when asked again */
    CHECK(rd_commit_by_hand(target, "w-a", "1", "78") == 2);
    CHECK(rd_commit_by_hand(target, "w-a", "1", "78") == 2);
    CHECK(rd_commit_by_hand(target, "w-b", "1", "78") == 0); /* another worker's token is not its own */
    CHECK(rd_commit_by_hand(target, "w-a", "1", "79") == 0); /* a new commit of a lease done is refused */
    CHECK(rd_cmd(target, "HGET", "orch:run:rp", "llm_calls", NULL) == 2);
    struct orch_run got = {0};
    CHECK(orch_store_run_get(st, "rp", &got) == 1);
    CHECK(got.status == ORCH_RUN_COMPLETED && got.rows_done == 1);
    orch_run_clear(&got);
    orch_store_close(st);
}

/* Calls of a command the server has served since it started (INFO
 * commandstats), or 0 for none, -1 on error. */
static int64_t rd_calls(const char *url, const char *cmd)
{
    redisContext *c = rd_connect(url);
    if (c == NULL)
        return -1;
    redisReply *r = redisCommand(c, "INFO commandstats");
    int64_t n = -1;
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        char pat[64];
        snprintf(pat, sizeof pat, "cmdstat_%s:calls=", cmd);
        const char *p = strstr(r->str, pat);
        n = p != NULL ? strtoll(p + strlen(pat), NULL, 10) : 0;
    }
    freeReplyObject(r);
    redisFree(c);
    return n;
}

/* Redis only: the indexes behind the dashboard's pages. A run's events
 * are a sorted set by id and its failed rows have an index of their own
 * (err:ID), kept right by upserts and rollbacks; a page of a run with
 * 1,000,000 events is one range command, never a read of them all; a
 * deleted run leaves none of these keys. */
static void test_redis_pages(const char *url)
{
    char err[512], target[900];
    rd_db_url(url, 12, target, sizeof target);
    CHECK(rd_cmd(target, "DBSIZE", NULL, NULL, NULL) == 0);
    struct orch_store *st = orch_store_open(target, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    struct orch_run run = make_run("ix", "pages", "idX", ORCH_RUN_RUNNING, 1);
    CHECK(orch_store_run_create(st, &run) == 0);
    struct orch_result one[] = {{1, "k1", "failed", "a", "{}", 2}, {2, "k2", "ok", NULL, "{}", 2}};
    struct orch_result two[] = {{1, "k1", "ok", NULL, "{}", 2}, {3, "k3", "failed", "b", NULL, 0}};
    struct orch_result three[] = {{4, "k4", "defaulted", "c", NULL, 0}};
    struct orch_checkpoint c = {0};
    c.reason = (char *)"rows";
    CHECK(orch_store_checkpoint_write(st, &run, &c, one, 2, NULL, 0) == 0);
    free(c.checksum);
    c.checksum = NULL;
    CHECK(rd_cmd(target, "ZCARD", "orch:err:ix", NULL, NULL) == 1);
    CHECK(orch_store_checkpoint_write(st, &run, &c, two, 2, NULL, 0) == 0);
    free(c.checksum);
    c.checksum = NULL;
    CHECK(orch_store_checkpoint_write(st, &run, &c, three, 1, NULL, 0) == 0);
    free(c.checksum);
    c.checksum = NULL;
    /* seq 1 re-run ok leaves the index; 3 and 4 are in it */
    struct results rs = {0};
    CHECK(orch_store_error_page(st, "ix", 0, 10, collect_result, &rs) == 0);
    CHECK(rs.n == 2 && rs.seq[0] == 3 && rs.seq[1] == 4);
    CHECK_STR(rs.status[1], "defaulted");
    CHECK(rd_cmd(target, "ZCARD", "orch:err:ix", NULL, NULL) == 2);
    /* back to checkpoint 2: the row of checkpoint 3 leaves results and index */
    CHECK(orch_store_checkpoint_rollback(st, "ix", 2) == 0);
    struct results back = {0};
    CHECK(orch_store_error_page(st, "ix", 0, 10, collect_result, &back) == 0);
    CHECK(back.n == 1 && back.seq[0] == 3);
    CHECK(rd_cmd(target, "ZSCORE", "orch:err:ix", "4", NULL) == -2);

    /* 1,000,000 events, written server-side in the stored layout */
    CHECK(rd_eval(target, "for i = 1, 1000000, 1000 do local t = {} "
                          "for j = i, i + 999 do t[#t + 1] = j; t[#t + 1] = j .. '|7|2|-1|ev' end "
                          "redis.call('ZADD', 'orch:ev:ix', unpack(t)) end "
                          "redis.call('SET', 'orch:ev_id', 1000000) return 0") == 0);
    CHECK(orch_store_event_add(st, "ix", "last", "{}") == 0);
    CHECK(rd_cmd(target, "ZCARD", "orch:ev:ix", NULL, NULL) == 1000001);
    int64_t ranges = rd_calls(target, "zrangebyscore"), rev = rd_calls(target, "zrevrangebyscore");
    int64_t whole = rd_calls(target, "zrange") + rd_calls(target, "lrange") + rd_calls(target, "hgetall");
    struct evs mid = {.ordered = 1};
    CHECK(orch_store_event_page(st, "ix", 500000, 0, 3, 0, collect_event, &mid) == 0);
    CHECK(mid.n == 3 && mid.ordered && mid.last_id == 500003);
    struct evs top = {.last_id = INT64_MIN};
    CHECK(orch_store_event_page(st, "ix", 0, 0, 2, 1, collect_event, &top) == 0);
    CHECK(top.n == 2);
    CHECK_STR(top.line[0], "last:{}");
    CHECK_STR(top.line[1], "ev:NULL");
    struct evs below = {0};
    CHECK(orch_store_event_page(st, "ix", 10, 13, 100, 1, collect_event, &below) == 0);
    CHECK(below.n == 2);
    CHECK(rd_calls(target, "zrangebyscore") == ranges + 1);
    CHECK(rd_calls(target, "zrevrangebyscore") == rev + 2);
    CHECK(rd_calls(target, "zrange") + rd_calls(target, "lrange") + rd_calls(target, "hgetall") == whole);

    /* live figures go with the run, as do the events and the index */
    CHECK(orch_store_live_put(st, "ix", 9, "{\"rows_done\":3}") == 0);
    CHECK(rd_cmd(target, "HGET", "orch:live:ix", "updated_ms", NULL) == 9);
    CHECK(orch_store_run_delete(st, "ix") == 1);
    CHECK(rd_cmd(target, "EXISTS", "orch:live:ix", NULL, NULL) == 0);
    CHECK(rd_cmd(target, "EXISTS", "orch:err:ix", NULL, NULL) == 0);
    CHECK(rd_cmd(target, "EXISTS", "orch:ev:ix", NULL, NULL) == 0);
    orch_store_close(st);
    CHECK(rd_cmd(target, "FLUSHDB", NULL, NULL, NULL) == 0);
}

/* Redis only: a store of schema 1 (a run's events in a list, no failed-
 * rows index) is refused read-only with what to do, and upgraded by the
 * first writing open: its events and failed rows then page as new ones. */
static void test_redis_migrate(const char *url)
{
    char err[512], target[900], want[1200];
    rd_db_url(url, 13, target, sizeof target);
    CHECK(rd_cmd(target, "DBSIZE", NULL, NULL, NULL) == 0);
    CHECK(rd_eval(target, "redis.call('HSET', 'orch:meta', 'app', 'orch', 'schema', 1) "
                          "redis.call('ZADD', 'orch:runs', 1, 'old') "
                          "redis.call('HSET', 'orch:run:old', 'ord', 1, 'name', 'n', 'identity', 'i', "
                          "  'status', 'paused', 'created_ms', 1, 'updated_ms', 1) "
                          "redis.call('RPUSH', 'orch:ev:old', '3|5|1|-1|a', '8|6|1|2|b{}') "
                          "redis.call('HSET', 'orch:res:old', '1', '1|2|2|-1|-1|okk1', "
                          "  '2', '1|6|2|4|-1|failedk2boom') "
                          "return 0") == 0);
    struct orch_store *st = orch_store_open_flags(target, ORCH_STORE_READONLY, err, sizeof err);
    CHECK(st == NULL);
    snprintf(want, sizeof want,
             "%s: written by an older orch (schema 1, this orch reads 2); any writing command "
             "(orch run, resume or gc) upgrades it",
             target);
    CHECK_STR(err, want);
    CHECK(rd_cmd(target, "HGET", "orch:meta", "schema", NULL) == 1);
    st = orch_store_open(target, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL)
        return;
    CHECK(rd_cmd(target, "HGET", "orch:meta", "schema", NULL) == 2);
    CHECK(rd_cmd(target, "ZSCORE", "orch:ev:old", "8|6|1|2|b{}", NULL) == 8);
    struct evs es = {.ordered = 1};
    CHECK(orch_store_event_list(st, "old", collect_event, &es) == 0);
    CHECK(es.n == 2 && es.ordered);
    CHECK_STR(es.line[0], "a:NULL");
    CHECK_STR(es.line[1], "b:{}");
    struct evs newest = {.last_id = INT64_MIN};
    CHECK(orch_store_event_page(st, "old", 0, 0, 1, 1, collect_event, &newest) == 0);
    CHECK(newest.n == 1 && newest.last_id == 8);
    struct results rs = {0};
    CHECK(orch_store_error_page(st, "old", 0, 10, collect_result, &rs) == 0);
    CHECK(rs.n == 1 && rs.seq[0] == 2);
    CHECK_STR(rs.key[0], "k2");
    orch_store_close(st);
    /* a second open finds it upgraded and changes nothing */
    st = orch_store_open_flags(target, ORCH_STORE_READONLY, err, sizeof err);
    CHECK(st != NULL);
    orch_store_close(st);
    CHECK(rd_cmd(target, "FLUSHDB", NULL, NULL, NULL) == 0);
}

/* Redis only: refusals at open, each leaving the database as it was; the
 * password never in a message. url: the test server, database 0. */
static void test_redis_refusals(const char *url)
{
    char err[512], target[900], shown[900];
    struct orch_store *st;
    /* a database holding a key under orch: that is not orch's */
    rd_db_url(url, 1, target, sizeof target);
    CHECK(rd_cmd(target, "SET", "orch:contacts", "ann", NULL) == 0);
    st = orch_store_open(target, err, sizeof err);
    CHECK(st == NULL);
    char want[1200];
    snprintf(
        want, sizeof want,
        "%s: the database holds keys under orch: that are not orch's (orch:contacts); nothing was changed: "
        "give orch a database (/N) or a key prefix (?prefix=) of its own",
        target);
    CHECK_STR(err, want);
    CHECK(rd_cmd(target, "DBSIZE", NULL, NULL, NULL) == 1);
    /* the same database under a prefix of orch's own: its keys stay apart */
    char prefixed[1000];
    snprintf(prefixed, sizeof prefixed, "%s?prefix=jobs%%3A", target);
    st = orch_store_open(prefixed, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL) {
        struct orch_run r = make_run("p1", "x", "idP", ORCH_RUN_RUNNING, 1);
        CHECK(orch_store_run_create(st, &r) == 0);
        orch_store_close(st);
    }
    CHECK(rd_cmd(target, "HSTRLEN", "jobs:run:p1", "name", NULL) == 1); /* "x" */
    CHECK(rd_cmd(target, "EXISTS", "jobs:run:p1", NULL, NULL) == 1);
    CHECK(rd_cmd(target, "EXISTS", "orch:meta", NULL, NULL) == 0);
    CHECK(rd_cmd(target, "STRLEN", "orch:contacts", NULL, NULL) == 3); /* "ann", untouched */

    /* a prefix with glob characters means itself; a foreign key is found
     * among thousands of others (SCAN goes through the cursor) */
    rd_db_url(url, 4, target, sizeof target);
    CHECK(rd_eval(target, "for i = 1, 3000 do redis.call('SET', 'other:' .. i, i) end "
                          "redis.call('SET', 'aXb:1', 1) return 0") == 0);
    snprintf(prefixed, sizeof prefixed, "%s?prefix=a%%2Ab%%3A", target);
    st = orch_store_open(prefixed, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL)
        orch_store_close(st);
    CHECK(rd_cmd(target, "HSTRLEN", "a*b:meta", "app", NULL) == 4);
    CHECK(rd_cmd(target, "SET", "orch:zz", "1", NULL) == 0);
    st = orch_store_open(target, err, sizeof err);
    CHECK(st == NULL);
    CHECK_HAS(err,
              ": the database holds keys under orch: that are not orch's (orch:zz); nothing was changed");
    CHECK(rd_cmd(target, "DBSIZE", NULL, NULL, NULL) == 3003);

    /* a schema newer than this orch */
    rd_db_url(url, 2, target, sizeof target);
    st = orch_store_open(target, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL)
        orch_store_close(st);
    CHECK(rd_cmd(target, "HSET", "orch:meta", "schema", "99") == 0);
    st = orch_store_open(target, err, sizeof err);
    CHECK(st == NULL);
    CHECK_HAS(err, ": created by a newer orch (schema 99, this orch knows up to 2); use that orch");
    CHECK(rd_cmd(target, "HGET", "orch:meta", "schema", NULL) == 99);

    /* read-only: an empty database is no store, and stays empty */
    rd_db_url(url, 3, target, sizeof target);
    st = orch_store_open_flags(target, ORCH_STORE_READONLY, err, sizeof err);
    CHECK(st == NULL);
    snprintf(want, sizeof want,
             "no state store at %s (the database has no orch keys under orch:; no run has used it)", target);
    CHECK_STR(err, want);
    CHECK(rd_cmd(target, "DBSIZE", NULL, NULL, NULL) == 0);
    /* a read-only store reads, and refuses to write */
    st = orch_store_open_flags(url, ORCH_STORE_READONLY, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL) {
        struct orch_run got = {0};
        CHECK(orch_store_run_get(st, "r4", &got) == 1);
        orch_run_clear(&got);
        struct orch_run r = make_run("ro", "x", "x", ORCH_RUN_RUNNING, 1);
        CHECK(orch_store_run_create(st, &r) == -1);
        CHECK_HAS(st->err, ": cannot create run ro: the store is open read-only");
        orch_store_close(st);
    }

    /* an unreachable server, a bad URL: orch's message, the password masked */
    st = orch_store_open("redis://:hunter2@127.0.0.1:1/0", err, sizeof err);
    CHECK(st == NULL);
    CHECK_STR(err, "redis://:***@127.0.0.1:1/0: cannot connect to Redis: the server is not reachable "
                   "(Connection refused); check the host and port and that the server is running");
    st = orch_store_open("unix:///nonexistent/redis.sock?db=0&password=hunter2", err, sizeof err);
    CHECK(st == NULL);
    CHECK_HAS(err, "unix:///nonexistent/redis.sock?db=0&password=***: cannot connect to Redis: the server is "
                   "not reachable (No such file or directory)");
    CHECK(strstr(err, "hunter2") == NULL);
    st = orch_store_open("redis://127.0.0.1:notaport/0", err, sizeof err);
    CHECK(st == NULL);
    CHECK_STR(err, "redis://127.0.0.1:notaport/0: not a Redis URL: notaport is not a port");
    st = orch_store_open("redis://127.0.0.1:6379/0?pool=3", err, sizeof err);
    CHECK(st == NULL);
    CHECK_STR(err, "redis://127.0.0.1:6379/0?pool=3: not a Redis URL: unknown parameter pool (orch takes db, "
                   "prefix, user and password)");

    /* a server that wants a password: none given, a wrong one, the right one */
    CHECK(rd_cmd(url, "CONFIG", "SET", "requirepass", "s3cret") == 0);
    st = orch_store_open(url, err, sizeof err);
    CHECK(st == NULL);
    snprintf(want, sizeof want, "%s: cannot log in to Redis: the server wants a password (NOAUTH", url);
    CHECK_HAS(err, want);
    CHECK_HAS(err, "); give it in the URL (redis://:PASSWORD@host:port/N)");
    char authed[1000];
    snprintf(authed, sizeof authed, "redis://:wrong@%s", url + 8);
    st = orch_store_open(authed, err, sizeof err);
    CHECK(st == NULL);
    orch_store_display(authed, shown, sizeof shown);
    snprintf(want, sizeof want, "%s: cannot log in to Redis: WRONGPASS", shown);
    CHECK_HAS(err, want);
    CHECK_HAS(err, "; check the user and password in the URL");
    CHECK(strstr(err, "wrong@") == NULL);
    snprintf(authed, sizeof authed, "redis://default:s3cret@%s", url + 8);
    st = orch_store_open(authed, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL) {
        struct orch_run got = {0};
        CHECK(orch_store_run_get(st, "r4", &got) == 1);
        orch_run_clear(&got);
        orch_store_close(st);
    }
    redisContext *c = rd_connect(url);
    if (c != NULL) {
        redisReply *r = redisCommand(c, "AUTH s3cret");
        freeReplyObject(r);
        r = redisCommand(c, "CONFIG SET requirepass %s", "");
        freeReplyObject(r);
        redisFree(c);
    }

    /* a server out of memory refuses a checkpoint whole, and still reads */
    st = orch_store_open(url, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL) {
        CHECK(rd_cmd(url, "CONFIG", "SET", "maxmemory", "1") == 0);
        struct orch_run run = make_run("r4", "classify", "idA", ORCH_RUN_RUNNING, 4000);
        struct orch_result res[] = {{1, "k1", "ok", NULL, "{}", 2}};
        struct orch_checkpoint c = {0};
        CHECK(orch_store_checkpoint_write(st, &run, &c, res, 1, NULL, 0) == -1);
        CHECK_HAS(st->err, ": cannot store a checkpoint of run r4: OOM command not allowed");
        struct orch_run got = {0};
        CHECK(orch_store_run_get(st, "r4", &got) == 1);
        CHECK(got.status == ORCH_RUN_FAILED && got.checkpoints == 0); /* as test_runs left it */
        orch_run_clear(&got);
        struct ids ids = {0};
        CHECK(orch_store_run_list(st, NULL, collect_run, &ids) == 0);
        CHECK(ids.n > 0);
        CHECK(rd_cmd(url, "CONFIG", "SET", "maxmemory", "0") == 0);
        CHECK(orch_store_checkpoint_write(st, &run, &c, res, 1, NULL, 0) == 0);
        CHECK(c.seq == 1);
        free(c.checksum);
        orch_store_close(st);
    }

    /* durability: fsync every second is warned about, and refused on demand */
    CHECK(rd_cmd(url, "CONFIG", "SET", "appendfsync", "everysec") == 0);
    st = orch_store_open_flags(url, ORCH_STORE_REQUIRE_DURABLE, err, sizeof err);
    CHECK(st == NULL);
    snprintf(
        want, sizeof want,
        "%s: not durable (appendonly yes, appendfsync everysec: a crash of the server's machine can lose the "
        "last second of acknowledged checkpoints and journaled replies); --require-durable refuses it: set "
        "appendonly yes and appendfsync always on the server",
        url);
    CHECK_STR(err, want);
    st = orch_store_open(url, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL)
        orch_store_close(st);
    CHECK(rd_cmd(url, "CONFIG", "SET", "appendfsync", "always") == 0);
    st = orch_store_open_flags(url, ORCH_STORE_REQUIRE_DURABLE, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL)
        orch_store_close(st);
}

int main(int argc, char **argv)
{
    char dir[512];
    if (argc > 1) {
        mkdir(argv[1], 0777);
        snprintf(dir, sizeof dir, "%s/store.XXXXXX", argv[1]);
    } else {
        snprintf(dir, sizeof dir, "/tmp/store.XXXXXX");
    }
    CHECK(mkdtemp(dir) != NULL);

    /* the backend the conformance sections run on */
    const char *which = getenv("ORCH_TEST_STORE");
    const char *pg_url = getenv("ORCH_TEST_PG_URL");
    const char *redis_url = getenv("ORCH_TEST_REDIS_URL");
    const char *name = "sqlite";
    char target[900], err[512];
    if (which == NULL || which[0] == '\0' || strcmp(which, "sqlite") == 0) {
        /* the parent directory (.orch/) is created on open */
        snprintf(target, sizeof target, "%s/.orch/state.db", dir);
    } else if (strcmp(which, "memory") == 0) {
        backend = B_MEMORY;
        snprintf(target, sizeof target, ":memory:");
    } else if (strcmp(which, "postgres") == 0) {
        if (pg_url == NULL || pg_url[0] == '\0') {
            fprintf(stderr, "ORCH_TEST_STORE=postgres needs ORCH_TEST_PG_URL: run this test through "
                            "tests/with_pg.sh, which starts a server\n");
            return 1;
        }
        backend = B_POSTGRES;
        name = "postgres";
        snprintf(target, sizeof target, "%s", pg_url);
    } else if (strcmp(which, "redis") == 0) {
        if (redis_url == NULL || redis_url[0] == '\0') {
            fprintf(stderr, "ORCH_TEST_STORE=redis needs ORCH_TEST_REDIS_URL: run this test through "
                            "tests/with_redis.sh, which starts a server\n");
            return 1;
        }
        backend = B_REDIS;
        name = "redis";
        snprintf(target, sizeof target, "%s", redis_url);
    } else {
        fprintf(stderr, "ORCH_TEST_STORE=%s: not a backend (sqlite, memory, postgres or redis)\n", which);
        return 1;
    }
    printf("store tests on %s\n", backend == B_MEMORY ? "memory" : name);

    test_status_names();

    struct orch_store *st = orch_store_open(target, err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL) {
        fprintf(stderr, "open: %s\n", err);
        return check_report();
    }
    CHECK_STR(orch_store_backend(st), name);
    test_runs(st);
    test_claim(st);
    test_checkpoints(st, target);
    test_contract(st, target);
    test_events(st);
    test_live(st);
    test_pages(st);
    test_stats(st, backend != B_MEMORY);
    test_journal(st, target);
    if (backend == B_MEMORY) {
        /* nothing outlives the connection: no reopening */
        test_retention(st, target);
        test_results_quoted(st);
        test_results_chunks(st, target);
        test_results_packed(st, target);
        orch_store_close(st);
        return check_report();
    }
    orch_store_close(st);

    test_reopen(target);
    st = orch_store_open(target, err, sizeof err);
    CHECK(st != NULL);
    if (st != NULL) {
        test_retention(st, target);
        test_results_quoted(st);
        test_results_chunks(st, target);
        test_results_packed(st, target);
        orch_store_close(st);
    }

    if (backend == B_REDIS) {
        test_journal_crash(target);
        test_redis_two_writers(target);
        test_redis_commit_replay(target);
        /* four processes marking a fresh database as orch's at once, in
         * several databases: none takes another's keys for a stranger's */
        for (int db = 5; db <= 11; db++) {
            char conc[1000];
            rd_db_url(target, db, conc, sizeof conc);
            test_concurrent_open(conc);
        }
        test_redis_pages(target);
        test_redis_migrate(target);
        test_redis_refusals(target);
        return check_report();
    }
    if (backend == B_POSTGRES) {
        test_journal_crash(target);
        /* four processes creating the schema at once, in a schema of their own */
        CHECK(pg_query(target, "CREATE SCHEMA conc", NULL, NULL, 0) == 0);
        char conc[1000];
        snprintf(conc, sizeof conc, "%.800s&options=-csearch_path%%3Dconc", target);
        test_concurrent_open(conc);
        test_pg_refusals(target);
        test_pg_failures(target);
        return check_report();
    }

    test_migrate_v1(dir);
    test_migrate_v7_journal(dir);
    test_hits_fold(dir);
    test_hits_merge_or_fold(dir);
    test_checkpoint_frames(dir);
    char path[600];
    snprintf(path, sizeof path, "%s/crash.db", dir);
    test_journal_crash(path);
    test_journal_peek(dir);
    test_journal_ahead(dir);

    snprintf(path, sizeof path, "%s/shared/state.db", dir);
    test_concurrent_open(path);
    test_memory();
    test_refusals(dir);
    test_readonly(dir);
    return check_report();
}
