/* store_redis_impl.h — private to the Redis backend: what its three files
 * share. store_redis.c has the operations, store_redis_conn.c the URL, the
 * connection (login, database, reconnection), the checks at open and the
 * calls of the server-side scripts, store_redis_scripts.c the scripts'
 * Lua source. Depends on hiredis. */
#ifndef ORCH_STORE_REDIS_IMPL_H
#define ORCH_STORE_REDIS_IMPL_H

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "store_impl.h"

/* The server-side scripts: every operation that writes more than one key,
 * or must check before it writes, is one of them, so it is atomic on the
 * server whatever happens to orch. */
enum rd_script {
    RD_RUN_CREATE,
    RD_RUN_UPDATE,
    RD_RUN_CLAIM,
    RD_RUN_HEARTBEAT,
    RD_RUN_DELETE,
    RD_RUN_SCAN,
    RD_CP_WRITE,
    RD_CP_ROLLBACK,
    RD_EV_ADD,
    RD_JOURNAL,
    RD_JR_PRUNE,
    RD_STATS,
    RD_SETUP,
    /* live figures, pages, schema 2 */
    RD_LIVE_PUT,
    RD_ERR_PAGE,
    RD_MIGRATE,
    /* many workers, one run (orch worker): store_redis_lease.c */
    RD_LEASE_PLAN,
    RD_LEASE_CLAIM,
    RD_LEASE_HEARTBEAT,
    RD_LEASE_COMMIT,
    RD_LEASE_LIST,
    RD_BUDGET_RESERVE,
    RD_BUDGET_SETTLE,
    RD_BUDGET_SET,
    RD_JOURNAL_PEND,
    RD_RATE_TAKE,
    RD_NSCRIPT
};

/* The Lua source of script i (a prelude shared by all, then its body). */
const char *orch_redis_script(enum rd_script i);

/* The schema this orch writes and reads (orch:meta's "schema"). */
#define RD_SCHEMA 2

/* The parts of a redis:// or unix:// URL. Strings are heap copies. */
struct rd_url {
    char *host; /* NULL for unix:// */
    int port;
    char *path; /* the socket, for unix:// */
    char *user, *password;
    int db;
    char *prefix; /* "orch:" unless ?prefix= */
};

struct rd_store {
    struct orch_store base; /* first: a struct orch_store * is a struct rd_store * */
    redisContext *c;
    struct rd_url url;
    char *shown; /* the URL as messages show it (password masked) */
    int readonly;
    char sha[RD_NSCRIPT][41]; /* SCRIPT LOAD's digests; "" until loaded */
    char version[32];         /* the server's redis_version */
    char warning[1200];       /* base.warning's text, when set */
    /* The seq the last run this store checkpointed takes next, as the
     * write script last said: a guess the script checks, saving the
     * round trip that would read it. */
    char *seq_run;
    int64_t seq_next;
};

/* Growing argument vectors for redisCommandArgv: every value is copied. */
struct rd_args {
    int n, cap;
    char **v;
    size_t *len;
    int oom;
};

void rd_arg(struct rd_args *a, const void *p, size_t n);
void rd_arg_s(struct rd_args *a, const char *s);
void rd_arg_i(struct rd_args *a, int64_t x);
void rd_arg_d(struct rd_args *a, double x);
void rd_args_free(struct rd_args *a);
/* Adds one value per letter of fmt, taken from the arguments that follow:
 * 's' a const char * (NULL as ""), 'i' an int64_t (cast: a narrower int
 * read as one is undefined), 'd' a double. */
void rd_args_fmt(struct rd_args *a, const char *fmt, ...);

/* The Redis store behind base (its first member). */
static inline struct rd_store *rd_of(struct orch_store *base)
{
    return (struct rd_store *)base;
}

/* Runs a command (argv in a) and returns its reply, which the caller
 * frees with freeReplyObject, or NULL with "<URL>: <what>: <reason>" in
 * st->base.err (an error reply is returned as a reply: the caller reads
 * it). A connection the server dropped is opened again (for up to 10 s)
 * and the command sent once more. */
redisReply *orch_redis_cmd(struct rd_store *st, struct rd_args *a, const char *what);
/* EVALSHA of script i with a's values as ARGV (the prefix first, added
 * here); a script the server lost (NOSCRIPT: restarted, SCRIPT FLUSH) is
 * loaded again. Same contract as orch_redis_cmd, but an error reply is
 * turned into NULL with the server's reason in st->base.err. */
redisReply *orch_redis_eval(struct rd_store *st, enum rd_script i, struct rd_args *a, const char *what);

/* orch_redis_cmd and orch_redis_eval with their values listed in fmt as
 * for rd_args_fmt. The argv is built and freed here: one line for each of
 * the many calls that send a few values. Same contracts. */
redisReply *orch_redis_cmdf(struct rd_store *st, const char *what, const char *fmt, ...);
/* What a script does: a write is refused (NULL) on a read-only store. */
enum rd_access { RD_READS, RD_WRITES };
redisReply *orch_redis_evalf(struct rd_store *st, enum rd_script i, enum rd_access access, const char *what,
                             const char *fmt, ...);
/* HMGET of the n fields of key: 1 (the first field is set), 0 (it is
 * not: no such hash), or -1 (st->base.err set: the server's error, or
 * "unexpected reply"); the reply in *out whatever the outcome (NULL when
 * none came), for the caller to free. */
int orch_redis_hmget(struct rd_store *st, const char *key, const char *const *fields, size_t n,
                     redisReply **out, const char *what);
/* A write through a read-only store is refused before it is sent: 0, or
 * -1 with "<URL>: <what>: the store is open read-only" in st->base.err. */
int orch_redis_writable(struct rd_store *st, const char *what);
/* Runs write script i (a freed here) and returns its integer reply: -2
 * when it failed or the store is open read-only (st->base.err set), -3
 * when it replied with something else (st->base.err not set: the caller
 * says what that means). */
int64_t orch_redis_eval_int(struct rd_store *st, enum rd_script i, struct rd_args *a, const char *what);
/* A write script: refused on a read-only store (-2, as a failure), else
 * orch_redis_eval_int with the values fmt lists (as orch_redis_evalf). */
int64_t orch_redis_writef(struct rd_store *st, enum rd_script i, const char *what, const char *fmt, ...);
int64_t orch_redis_vwritef(struct rd_store *st, enum rd_script i, const char *what, const char *fmt,
                           va_list ap);

/* What a listing hands its rows to: one of the callbacks, and ud. */
struct rd_listing {
    orch_run_cb run;
    orch_result_cb result;
    orch_state_cb state;
    orch_event_cb event;
    orch_lease_cb lease;
    void *ud;
    struct orch_run *first; /* run_find_unfinished: the first run is kept here, no callback */
    int no_data;            /* results without their data (the error page) */
};

/* Reads one row of a listing (its elements of the reply) and hands it to
 * the listing: 0 to go on, 1 to stop (the callback said so), -1 failed
 * (st->base.err set). */
typedef int (*rd_row_fn)(struct rd_store *st, redisReply *const *row, const char *what,
                         const struct rd_listing *l);

/* Hands each row of the array reply r (width elements each: a field and
 * its value, a run and its count, a lease's values, an event) to fn, in
 * order, or sorted by cmp (which qsort gives pointers to the rows'
 * element pointers); a reply that is not an array has none. Frees r.
 * 0 the rows ran out, 1 fn stopped, -1 failed (st->base.err set; r NULL:
 * the call that should have given it failed). */
int orch_redis_each_row(struct rd_store *st, redisReply *r, size_t width,
                        int (*cmp)(const void *, const void *), rd_row_fn fn, const struct rd_listing *l,
                        const char *what);

/* Adds one result as stored in res:ID ("CPSEQ|SLEN|KLEN|ELEN|DLEN|" then
 * status, key, error and data bytes), written with checkpoint cpseq (0:
 * by a lease commit, which no rollback removes). */
void orch_redis_arg_result(struct rd_args *a, const struct orch_result *x, int64_t cpseq);

/* Records "<URL>: <fmt ...>" in st->base.err; returns -1. The store's
 * where is its URL as shown (password masked) from before it connects,
 * so store.c's orch_store_fail words it. */
#define orch_redis_fail(st, ...) orch_store_fail(&(st)->base, __VA_ARGS__)

/* Connects to the URL's server, logs in, selects the database, checks it
 * runs scripts and loads them, checks what the prefix holds (creating
 * orch's meta key unless readonly) and the server's durability settings.
 * 0, or -1 with the message naming the URL (password masked) in err;
 * nothing is written when refusing. */
int orch_redis_connect(struct rd_store *st, const char *target, int flags, char *err, size_t errlen);
void orch_redis_disconnect(struct rd_store *st);

/* The lease, shared budget, journal marker, rate limit and run status
 * operations (store_redis_lease.c) for the ops table in store_redis.c:
 * each declared with the type of its member of struct orch_store_ops, so
 * the two cannot drift apart (store.h has their contracts). */
#define RD_LEASE_OP(member) __typeof__(*((struct orch_store_ops *)0)->member) orch_redis_##member
RD_LEASE_OP(lease_plan);
RD_LEASE_OP(lease_claim);
RD_LEASE_OP(lease_heartbeat);
RD_LEASE_OP(lease_commit);
RD_LEASE_OP(lease_list);
RD_LEASE_OP(budget_reserve);
RD_LEASE_OP(budget_settle);
RD_LEASE_OP(budget_set);
RD_LEASE_OP(budget_get);
RD_LEASE_OP(journal_pend);
RD_LEASE_OP(rate_take);
RD_LEASE_OP(run_set_status);

#endif
