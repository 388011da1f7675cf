/* store_redis_lease.c — many workers, one run, on the Redis backend: the
 * lease plan, claim, heartbeat, commit and list, the shared budget, the
 * journal's pending markers and run_set_status (store.h has their
 * contracts). Every operation that checks before it writes is one
 * server-side script (store_redis_scripts.c, which lists the keys): a
 * claim picks the first free or stale lease and takes it in one step, so
 * two workers never hold one lease, and a commit writes a lease's results,
 * cursor and counters, or nothing. Every lease time is the server's clock
 * (TIME inside the script), never a worker's.
 * Pure C: depends on libc, hiredis and the backend's shared helpers. */
#include "store.h"
#include "store_impl.h"
#include "store_redis_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a lease script's integer reply gives the caller. */
enum lease_as {
    LEASE_DONE, /* 0 */
    LEASE_FLAG, /* 1 when positive, else 0 */
    LEASE_RC,   /* the reply itself */
};

/* A lease script's integer reply rc (orch_redis_eval_int's) read as as
 * says; -1 (st->err set) when the call failed, or the script replied -1
 * (the scripts' "no such run") or something not an integer. */
static int lease_reply(struct rd_store *st, const char *what, enum lease_as as, int64_t rc)
{
    const char *why = rc == -1 ? "no such run" : rc == -3 ? "unexpected reply" : NULL;
    if (why != NULL)
        orch_redis_fail(st, "%s: %s", what, why);
    if (rc < 0)
        return -1;
    return as == LEASE_RC ? (int)rc : as == LEASE_FLAG ? rc > 0 : 0;
}

/* Write script i with the values fmt lists (orch_redis_evalf), its reply
 * read by lease_reply. */
static int lease_write(struct rd_store *st, enum rd_script i, const char *what, enum lease_as as,
                       const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int64_t rc = orch_redis_vwritef(st, i, what, fmt, ap);
    va_end(ap);
    return lease_reply(st, what, as, rc);
}

static int64_t el_int(const redisReply *e)
{
    if (e->type == REDIS_REPLY_STRING)
        return strtoll(e->str, NULL, 10);
    return e->type == REDIS_REPLY_INTEGER ? e->integer : 0;
}

static char *el_dup(const redisReply *e, int *oom)
{
    if (e->type != REDIS_REPLY_STRING)
        return NULL;
    char *p = strndup(e->str, e->len);
    *oom |= p == NULL;
    return p;
}

/* The 13 values of one lease as the scripts' lrow returns them (no, the
 * stored fields, the heartbeat's age) into out. 0, or -1 out of memory
 * (out cleared). */
static int lease_row(redisReply *const *v, struct orch_lease *out)
{
    int oom = 0;
    memset(out, 0, sizeof *out);
    out->no = el_int(v[0]);
    out->first_index = el_int(v[1]);
    out->rows = el_int(v[2]);
    out->offset = el_int(v[3]);
    out->line = el_int(v[4]);
    out->index = el_int(v[5]);
    out->status = el_dup(v[6], &oom);
    out->owner = el_dup(v[7], &oom);
    out->claims = el_int(v[8]);
    out->claimed_ms = el_int(v[9]);
    out->heartbeat_ms = el_int(v[10]);
    out->done_ms = el_int(v[11]);
    out->age_ms = el_int(v[12]);
    if (oom) {
        orch_lease_clear(out);
        return -1;
    }
    return 0;
}

#define LEASE_VALUES 13

/* One script: two workers planning at once plan once. */
int orch_redis_lease_plan(struct orch_store *base, const char *run_id, const struct orch_lease *l, size_t n)
{
    struct rd_store *st = rd_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot plan the leases of run %s", run_id);
    struct rd_args a = {0};
    rd_args_fmt(&a, "si", run_id, (int64_t)n);
    for (size_t i = 0; i < n; i++)
        rd_args_fmt(&a, "iiiii", l[i].no, l[i].first_index, l[i].rows, l[i].offset, l[i].line);
    return lease_reply(st, what, LEASE_DONE, orch_redis_eval_int(st, RD_LEASE_PLAN, &a, what));
}

int orch_redis_lease_claim(struct orch_store *base, const char *run_id, const char *worker, int64_t stale_ms,
                           struct orch_lease *out)
{
    struct rd_store *st = rd_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot claim a lease of run %s", run_id);
    redisReply *r = orch_redis_evalf(st, RD_LEASE_CLAIM, RD_WRITES, what, "ssi", run_id, worker, stale_ms);
    if (r == NULL)
        return -1;
    int rc = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == LEASE_VALUES)
        rc = lease_row(r->element, out) == 0 ? 1 : orch_redis_fail(st, "%s: out of memory", what);
    else if (r->type != REDIS_REPLY_INTEGER)
        rc = orch_redis_fail(st, "%s: unexpected reply", what);
    freeReplyObject(r);
    return rc;
}

int orch_redis_lease_heartbeat(struct orch_store *base, const char *run_id, int64_t no, const char *worker)
{
    char what[300];
    snprintf(what, sizeof what, "cannot heartbeat lease %lld of run %s", (long long)no, run_id);
    return lease_write(rd_of(base), RD_LEASE_HEARTBEAT, what, LEASE_FLAG, "sis", run_id, no, worker);
}

/* Numbers this process's commits: with the worker's name (host, pid,
 * nonce) a token no other commit of the lease carries. */
static uint64_t lease_commits;

/* One script: the results, the lease's cursor and end, the worker's
 * markers of journaled replies dropped, the run's counters, and the run
 * completed by its last lease; nothing when the lease is no longer this
 * worker's. A reply lost with the connection is sent again on a new one
 * (orch_redis_eval), with the same token: should the first have landed
 * (a server killed after it wrote its AOF), the script writes nothing
 * and gives the first reply again, so a lease is never taken for lost,
 * the run's completion never missed, and no counter added twice. */
int orch_redis_lease_commit(struct orch_store *base, const char *run_id, const struct orch_lease_commit *c,
                            const struct orch_result *res, size_t nres)
{
    struct rd_store *st = rd_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot commit lease %lld of run %s", (long long)c->no, run_id);
    const struct orch_run *add = c->add;
    struct rd_args a = {0};
    rd_args_fmt(&a, "sisiiiiii", run_id, c->no, c->worker, c->offset, c->line, c->index, (int64_t)c->end,
                orch_store_now_ms(), (int64_t)++lease_commits);
    /* the order of the script's names */
    const int64_t counters[8] = {add ? add->rows_done : 0,      add ? add->rows_ok : 0,
                                 add ? add->rows_failed : 0,    add ? add->rows_dropped : 0,
                                 add ? add->rows_defaulted : 0, add ? add->llm_calls : 0,
                                 add ? add->tokens_in : 0,      add ? add->tokens_out : 0};
    for (int i = 0; i < 8; i++)
        rd_arg_i(&a, counters[i]);
    rd_arg_d(&a, add ? add->cost_usd : 0.0);
    rd_arg_i(&a, (int64_t)nres);
    for (size_t i = 0; i < nres; i++) {
        rd_arg_i(&a, res[i].seq);
        orch_redis_arg_result(&a, &res[i], 0);
    }
    return lease_reply(st, what, LEASE_RC, orch_redis_eval_int(st, RD_LEASE_COMMIT, &a, what));
}

/* A lease's values to the listing's callback. */
static int lease_deliver(struct rd_store *st, redisReply *const *row, const char *what,
                         const struct rd_listing *l)
{
    struct orch_lease x;
    if (lease_row(row, &x) != 0)
        return orch_redis_fail(st, "%s: out of memory", what);
    int stop = l->lease(l->ud, &x);
    orch_lease_clear(&x);
    return stop != 0;
}

int orch_redis_lease_list(struct orch_store *base, const char *run_id, orch_lease_cb cb, void *ud)
{
    struct rd_store *st = rd_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot list the leases of run %s", run_id);
    redisReply *r = orch_redis_evalf(st, RD_LEASE_LIST, RD_READS, what, "s", run_id);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % LEASE_VALUES != 0) {
        freeReplyObject(r);
        return orch_redis_fail(st, "%s: unexpected reply", what);
    }
    struct rd_listing rows = {.lease = cb, .ud = ud};
    return orch_redis_each_row(st, r, LEASE_VALUES, NULL, lease_deliver, &rows, what) < 0 ? -1 : 0;
}

/* One script reads and reserves, so workers reserving at once never pass
 * the max together. */
int orch_redis_budget_reserve(struct orch_store *base, const char *run_id, double est_usd, double max_usd)
{
    char what[300];
    snprintf(what, sizeof what, "cannot reserve budget for run %s", run_id);
    return lease_write(rd_of(base), RD_BUDGET_RESERVE, what, LEASE_FLAG, "sdd", run_id, est_usd, max_usd);
}

int orch_redis_budget_settle(struct orch_store *base, const char *run_id, double released_usd,
                             double spent_usd)
{
    char what[300];
    snprintf(what, sizeof what, "cannot settle the budget of run %s", run_id);
    return lease_write(rd_of(base), RD_BUDGET_SETTLE, what, LEASE_DONE, "sdd", run_id, released_usd,
                       spent_usd);
}

int orch_redis_budget_set(struct orch_store *base, const char *run_id, double max_usd)
{
    char what[300];
    snprintf(what, sizeof what, "cannot set the budget of run %s", run_id);
    return lease_write(rd_of(base), RD_BUDGET_SET, what, LEASE_DONE, "sd", run_id, max_usd);
}

/* One HMGET: a read needs no script. */
int orch_redis_budget_get(struct orch_store *base, const char *run_id, double *max_usd, double *spent_usd,
                          double *reserved_usd)
{
    struct rd_store *st = rd_of(base);
    char what[300], key[600];
    snprintf(what, sizeof what, "cannot read the budget of run %s", run_id);
    snprintf(key, sizeof key, "%sbud:%s", st->url.prefix, run_id);
    static const char *const fields[] = {"max_usd", "spent_usd", "reserved_usd"};
    redisReply *r = NULL;
    int ret = orch_redis_hmget(st, key, fields, 3, &r, what);
    double *out[3] = {max_usd, spent_usd, reserved_usd};
    for (int i = 0; i < 3 && ret == 1; i++)
        *out[i] = r->element[i]->type == REDIS_REPLY_STRING ? strtod(r->element[i]->str, NULL) : 0.0;
    freeReplyObject(r);
    return ret;
}

/* The marker is a key that expires by the server's clock (PX), so an
 * expired marker is simply gone. */
int orch_redis_journal_pend(struct orch_store *base, const char *key, const char *owner, int64_t ttl_ms)
{
    char what[300];
    snprintf(what, sizeof what, "cannot mark LLM request %.40s as being sent", key);
    return lease_write(rd_of(base), RD_JOURNAL_PEND, what, LEASE_FLAG, "ssi", key, owner, ttl_ms);
}

/* run_update's script with only the status, error and times: the
 * counters stay the commits'. */
int orch_redis_run_set_status(struct orch_store *base, const char *run_id, enum orch_run_status status,
                              const char *error)
{
    struct rd_store *st = rd_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot update run %s", run_id);
    int64_t now = orch_store_now_ms();
    int ends = status == ORCH_RUN_COMPLETED || status == ORCH_RUN_FAILED;
    struct rd_args a = {0};
    rd_arg_s(&a, run_id);
    rd_arg_i(&a, error != NULL ? 4 : 3);
    rd_arg_s(&a, "status");
    rd_arg_s(&a, orch_run_status_name(status));
    rd_arg_s(&a, "updated_ms");
    rd_arg_i(&a, now);
    rd_arg_s(&a, "finished_ms");
    rd_arg_i(&a, ends ? now : 0);
    if (error != NULL) {
        rd_arg_s(&a, "error");
        rd_arg_s(&a, error);
        rd_arg_i(&a, 0);
    } else {
        rd_arg_i(&a, 1);
        rd_arg_s(&a, "error");
    }
    return lease_reply(st, what, LEASE_FLAG, orch_redis_eval_int(st, RD_RUN_UPDATE, &a, what));
}

/* One script refills and takes, so workers taking at once never pass the
 * bucket together; times are the server's TIME. 1 taken, 0 not (*left:
 * what the bucket holds), -1 failed. */
int orch_redis_rate_take(struct orch_store *base, const char *run_id, const char *kind, double amount,
                         double capacity, double per_ms, double *left)
{
    struct rd_store *st = rd_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot take from the %.40s limit of run %s", kind, run_id);
    redisReply *r =
        orch_redis_evalf(st, RD_RATE_TAKE, RD_WRITES, what, "ssddd", run_id, kind, amount, capacity, per_ms);
    if (r == NULL)
        return -1;
    int ret = -1;
    if (r->type == REDIS_REPLY_INTEGER && r->integer == -1)
        orch_redis_fail(st, "%s: no such run", what);
    else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_INTEGER &&
             r->element[1]->type == REDIS_REPLY_STRING) {
        ret = r->element[0]->integer == 1;
        *left = strtod(r->element[1]->str, NULL);
    } else
        orch_redis_fail(st, "%s: unexpected reply", what);
    freeReplyObject(r);
    return ret;
}
