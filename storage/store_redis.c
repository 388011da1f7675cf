/* store_redis.c — the Redis backend of the state store (store.h), over
 * hiredis: one connection per store; every operation that writes more
 * than one key, or checks before it writes, is one server-side Lua script
 * (store_redis_scripts.c, which also lists the keys), so a crash of orch
 * at any moment leaves all of one or none of it. A checkpoint is sealed
 * with the seq the run's checkpoints say comes next and written by a
 * script that checks that seq is still next (another writer of the run
 * makes it seal again). The connection, the checks at open and the script
 * calls are store_redis_conn.c's.
 * Pure C: depends on libc, hiredis and store.c's shared helpers. Mementos
 * arrive compressed and leave as stored. */
#include "store.h"
#include "store_impl.h"
#include "store_redis_impl.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- replies ---------------------------------------------------------- */

/* The value of field name in an HGETALL reply, or NULL. */
static const redisReply *rd_field(const redisReply *h, const char *name)
{
    if (h == NULL || h->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *k = h->element[i];
        if (k->type == REDIS_REPLY_STRING && strcmp(k->str, name) == 0)
            return h->element[i + 1];
    }
    return NULL;
}

static char *rd_dup(const redisReply *h, const char *name, int *oom)
{
    const redisReply *v = rd_field(h, name);
    if (v == NULL || v->type != REDIS_REPLY_STRING)
        return NULL;
    char *p = malloc(v->len + 1);
    if (p == NULL) {
        *oom = 1;
        return NULL;
    }
    memcpy(p, v->str, v->len);
    p[v->len] = '\0';
    return p;
}

static int64_t rd_int(const redisReply *h, const char *name)
{
    const redisReply *v = rd_field(h, name);
    return v != NULL && v->type == REDIS_REPLY_STRING ? strtoll(v->str, NULL, 10) : 0;
}

static double rd_dbl(const redisReply *h, const char *name)
{
    const redisReply *v = rd_field(h, name);
    return v != NULL && v->type == REDIS_REPLY_STRING ? strtod(v->str, NULL) : 0.0;
}

/* An integer reply's value, or fallback for any other reply. */
static int64_t rd_reply_int(const redisReply *r, int64_t fallback)
{
    return r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : fallback;
}

/* The first element of the row a qsort comparison of rows is given. */
static const redisReply *row_head(const void *p)
{
    return (*(redisReply * *const *)p)[0];
}

int orch_redis_each_row(struct rd_store *st, redisReply *r, size_t width,
                        int (*cmp)(const void *, const void *), rd_row_fn fn, const struct rd_listing *l,
                        const char *what)
{
    if (r == NULL)
        return -1;
    size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements / width : 0;
    redisReply ***rows = malloc((n + 1) * sizeof *rows);
    int ret = rows == NULL ? orch_redis_fail(st, "%s: out of memory", what) : 0;
    for (size_t i = 0; i < n && rows != NULL; i++)
        rows[i] = r->element + width * i;
    if (rows != NULL && cmp != NULL)
        qsort(rows, n, sizeof *rows, cmp);
    for (size_t i = 0; i < n && ret == 0; i++)
        ret = fn(st, rows[i], what, l);
    free(rows);
    freeReplyObject(r);
    return ret < 0 ? -1 : ret;
}

/* ---- runs ------------------------------------------------------------- */

static void pair_s(struct rd_args *a, int *n, const char *name, const char *v)
{
    if (v == NULL)
        return;
    rd_arg_s(a, name);
    rd_arg_s(a, v);
    (*n)++;
}

static void pair_i(struct rd_args *a, int *n, const char *name, int64_t v)
{
    rd_arg_s(a, name);
    rd_arg_i(a, v);
    (*n)++;
}

static void pair_d(struct rd_args *a, int *n, const char *name, double v)
{
    rd_arg_s(a, name);
    rd_arg_d(a, v);
    (*n)++;
}

/* A field of a struct as a hash stores it: its name and where it lies. */
struct rd_member {
    const char *name;
    size_t off;
};

#define RD_COUNT(t) (sizeof(t) / sizeof((t)[0]))
/* clang-format off */
#define RUN_MEMBER(f) {#f, offsetof(struct orch_run, f)}
#define CP_MEMBER(f) {#f, offsetof(struct orch_checkpoint, f)}
/* clang-format on */

/* The run's strings that run_create writes (error and owner_host are
 * run_update's), and its int64_t numbers that run_update writes: one
 * list for the writes and the reads. */
static const struct rd_member run_strs[] = {
    RUN_MEMBER(id),
    RUN_MEMBER(name),
    RUN_MEMBER(identity),
    RUN_MEMBER(workflow_path),
    RUN_MEMBER(workflow_hash),
    RUN_MEMBER(input),
    RUN_MEMBER(input_fp),
    RUN_MEMBER(params),
    RUN_MEMBER(output),
};
static const struct rd_member run_ints[] = {
    RUN_MEMBER(owner_pid), RUN_MEMBER(heartbeat_ms), RUN_MEMBER(finished_ms),  RUN_MEMBER(rows_done),
    RUN_MEMBER(rows_ok),   RUN_MEMBER(rows_failed),  RUN_MEMBER(rows_dropped), RUN_MEMBER(rows_defaulted),
    RUN_MEMBER(llm_calls), RUN_MEMBER(tokens_in),    RUN_MEMBER(tokens_out),   RUN_MEMBER(recoveries),
};
/* A checkpoint's int64_t cursor, written and read as they are. */
static const struct rd_member cp_ints[] = {
    CP_MEMBER(input_offset),  CP_MEMBER(input_line),    CP_MEMBER(input_index),
    CP_MEMBER(output_offset), CP_MEMBER(errors_offset),
};

static int64_t int_of(const void *x, const struct rd_member *m)
{
    return *(const int64_t *)((const char *)x + m->off);
}

static const char *str_of(const void *x, const struct rd_member *m)
{
    return *(char *const *)((const char *)x + m->off);
}

/* The count of the pairs put after index at, written into that slot. */
static void put_count(struct rd_args *a, int at, int n)
{
    if (a->oom || at >= a->n)
        return; /* the placeholder never went in: the call fails on oom */
    char num[16];
    snprintf(num, sizeof num, "%d", n);
    char *copy = strdup(num);
    if (copy == NULL) {
        a->oom = 1;
        return;
    }
    free(a->v[at]);
    a->v[at] = copy;
    a->len[at] = strlen(copy);
}

/* Adds the fields run_update writes, as "set" pairs then "delete" names
 * (error and owner_host when NULL). */
static void args_run_update(struct rd_args *a, const struct orch_run *r, int64_t now)
{
    int at = a->n, n = 0;
    rd_arg_s(a, "0");
    pair_s(a, &n, "status", orch_run_status_name(r->status));
    pair_s(a, &n, "error", r->error);
    pair_s(a, &n, "owner_host", r->owner_host);
    for (size_t k = 0; k < RD_COUNT(run_ints); k++)
        pair_i(a, &n, run_ints[k].name, int_of(r, &run_ints[k]));
    pair_d(a, &n, "cost_usd", r->cost_usd);
    pair_i(a, &n, "updated_ms", now);
    put_count(a, at, n);
    rd_arg_i(a, (r->error == NULL) + (r->owner_host == NULL));
    if (r->error == NULL)
        rd_arg_s(a, "error");
    if (r->owner_host == NULL)
        rd_arg_s(a, "owner_host");
}

static int rd_run_create(struct orch_store *base, const struct orch_run *r)
{
    struct rd_store *st = rd_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot create run %s", r->id != NULL ? r->id : "(null)");
    if (orch_redis_writable(st, what) != 0)
        return -1;
    if (r->id == NULL)
        return orch_redis_fail(st, "%s: it has no id", what);
    int64_t created = r->created_ms != 0 ? r->created_ms : orch_store_now_ms();
    struct rd_args a = {0};
    rd_arg_s(&a, r->id);
    int at = a.n, n = 0;
    rd_arg_s(&a, "0");
    for (size_t k = 0; k < RD_COUNT(run_strs); k++)
        pair_s(&a, &n, run_strs[k].name, str_of(r, &run_strs[k]));
    pair_i(&a, &n, "created_ms", created);
    put_count(&a, at, n);
    /* the rest as run_update writes it, updated_ms included */
    struct rd_args u = {0};
    args_run_update(&u, r, r->updated_ms != 0 ? r->updated_ms : created);
    int extra = u.oom ? 0 : (int)strtol(u.v[0], NULL, 10);
    for (int i = 1; i <= 2 * extra && !u.oom; i++)
        rd_arg(&a, u.v[i], u.len[i]);
    put_count(&a, at, n + extra);
    a.oom |= u.oom;
    rd_args_free(&u);
    return orch_redis_eval_int(st, RD_RUN_CREATE, &a, what) < 0 ? -1 : 0;
}

/* Fills out (zeroed first) from an HGETALL of a run and its checkpoint
 * count. 0, or -1 when memory runs out (out cleared). */
static int rd_run_row(const redisReply *h, int64_t cps, struct orch_run *out)
{
    int oom = 0;
    memset(out, 0, sizeof *out);
    for (size_t k = 0; k < RD_COUNT(run_strs); k++)
        *(char **)((char *)out + run_strs[k].off) = rd_dup(h, run_strs[k].name, &oom);
    out->error = rd_dup(h, "error", &oom);
    out->owner_host = rd_dup(h, "owner_host", &oom);
    const redisReply *s = rd_field(h, "status");
    int status = s != NULL ? orch_run_status_parse(s->str) : -1;
    out->status = status >= 0 ? (enum orch_run_status)status : ORCH_RUN_FAILED;
    for (size_t k = 0; k < RD_COUNT(run_ints); k++)
        *(int64_t *)((char *)out + run_ints[k].off) = rd_int(h, run_ints[k].name);
    out->created_ms = rd_int(h, "created_ms");
    out->updated_ms = rd_int(h, "updated_ms");
    out->cost_usd = rd_dbl(h, "cost_usd");
    out->checkpoints = cps;
    if (oom) {
        orch_run_clear(out);
        return -1;
    }
    return 0;
}

/* One key's name under the prefix: prefix + a + b (+ ":" + c). */
static void rd_key(struct rd_store *st, char *out, size_t outlen, const char *a, const char *b)
{
    snprintf(out, outlen, "%s%s%s", st->url.prefix, a, b);
}

static int rd_run_get(struct orch_store *base, const char *id, struct orch_run *out)
{
    struct rd_store *st = rd_of(base);
    char key[600], cps[600];
    rd_key(st, key, sizeof key, "run:", id);
    rd_key(st, cps, sizeof cps, "cps:", id);
    redisReply *h = orch_redis_cmdf(st, "cannot read run", "ss", "HGETALL", key);
    if (h == NULL)
        return -1;
    if (h->type != REDIS_REPLY_ARRAY || h->elements == 0) {
        int err = h->type == REDIS_REPLY_ERROR;
        if (err)
            orch_redis_fail(st, "cannot read run %s: %s", id, h->str);
        freeReplyObject(h);
        return err ? -1 : 0;
    }
    redisReply *n = orch_redis_cmdf(st, "cannot read run", "ss", "ZCARD", cps);
    int ret = n == NULL ? -1 : 1;
    if (ret == 1 && rd_run_row(h, rd_reply_int(n, 0), out) != 0)
        ret = orch_redis_fail(st, "cannot read run %s: out of memory", id);
    freeReplyObject(n);
    freeReplyObject(h);
    return ret;
}

/* Newest first: created_ms, then creation order. */
static int scan_cmp(const void *pa, const void *pb)
{
    const redisReply *a = row_head(pa), *b = row_head(pb);
    int64_t ca = rd_int(a, "created_ms"), cb = rd_int(b, "created_ms");
    if (ca != cb)
        return ca > cb ? -1 : 1;
    int64_t oa = rd_int(a, "ord"), ob = rd_int(b, "ord");
    return (oa < ob) - (oa > ob);
}

/* A run (its hash and checkpoint count) to the listing's callback, or
 * into l->first, which takes the first row only. */
static int run_row(struct rd_store *st, redisReply *const *row, const char *what, const struct rd_listing *l)
{
    struct orch_run run;
    if (rd_run_row(row[0], rd_reply_int(row[1], 0), &run) != 0)
        return orch_redis_fail(st, "%s: out of memory", what);
    if (l->first != NULL) {
        *l->first = run;
        return 1;
    }
    int stop = l->run(l->ud, &run);
    orch_run_clear(&run);
    return stop != 0;
}

/* The runs matching the filter (identity non-NULL: the unfinished ones of
 * it), newest first, handed to the listing: as orch_redis_each_row. */
static int rd_scan(struct rd_store *st, const struct orch_run_filter *f, const char *identity,
                   const struct rd_listing *l, const char *what)
{
    redisReply *r = orch_redis_evalf(st, RD_RUN_SCAN, RD_READS, what, "ssiiss", f->status, f->name,
                                     f->since_ms, f->until_ms, identity, identity != NULL ? "1" : "0");
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return orch_redis_fail(st, "%s: unexpected reply", what);
    }
    return orch_redis_each_row(st, r, 2, scan_cmp, run_row, l, what);
}

static int rd_run_find_unfinished(struct orch_store *base, const char *identity, struct orch_run *out)
{
    struct orch_run_filter none = {0};
    struct rd_listing l = {.first = out};
    if (identity == NULL || identity[0] == '\0')
        return 0;
    return rd_scan(rd_of(base), &none, identity, &l, "cannot look up unfinished runs");
}

static int rd_run_list(struct orch_store *base, const struct orch_run_filter *f, orch_run_cb cb, void *ud)
{
    struct orch_run_filter none = {0};
    struct rd_listing l = {.run = cb, .ud = ud};
    return rd_scan(rd_of(base), f != NULL ? f : &none, NULL, &l, "cannot list runs") < 0 ? -1 : 0;
}

static int rd_run_update(struct orch_store *base, const struct orch_run *r)
{
    struct rd_store *st = rd_of(base);
    if (orch_redis_writable(st, "cannot update run") != 0)
        return -1;
    struct rd_args a = {0};
    rd_arg_s(&a, r->id);
    args_run_update(&a, r, orch_store_now_ms());
    int64_t n = orch_redis_eval_int(st, RD_RUN_UPDATE, &a, "cannot update run");
    if (n == 0)
        return orch_redis_fail(st, "cannot update run %s: no such run", r->id);
    return n == 1 ? 0 : -1;
}

static int rd_run_claim(struct orch_store *base, const char *id, int64_t pid, const char *host,
                        int64_t now_ms, int64_t expect_pid, int64_t expect_heartbeat_ms)
{
    int64_t n = orch_redis_writef(rd_of(base), RD_RUN_CLAIM, "cannot claim run", "sisiii", id, pid, host,
                                  now_ms, expect_pid, expect_heartbeat_ms);
    return n < 0 ? -1 : n == 1;
}

static int rd_run_heartbeat(struct orch_store *base, const char *id, int64_t now_ms)
{
    struct rd_store *st = rd_of(base);
    int64_t n = orch_redis_writef(st, RD_RUN_HEARTBEAT, "cannot record a heartbeat", "si", id, now_ms);
    if (n == 0)
        return orch_redis_fail(st, "cannot record the heartbeat of run %s: no such run", id);
    return n == 1 ? 0 : -1;
}

static int rd_run_delete(struct orch_store *base, const char *id)
{
    int64_t n = orch_redis_writef(rd_of(base), RD_RUN_DELETE, "cannot delete a run", "s", id);
    return n < 0 ? -1 : n == 1;
}

/* ---- checkpoints ------------------------------------------------------ */

/* The seq the run's next checkpoint gets. 0 or -1. */
static int rd_next_seq(struct rd_store *st, const char *run_id, int64_t *seq, const char *what)
{
    char key[600];
    rd_key(st, key, sizeof key, "cps:", run_id);
    redisReply *r = orch_redis_cmdf(st, what, "ssss", "ZREVRANGE", key, "0", "0");
    if (r == NULL)
        return -1;
    *seq = 1;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->type == REDIS_REPLY_STRING)
        *seq = strtoll(r->element[0]->str, NULL, 10) + 1;
    freeReplyObject(r);
    return 0;
}

/* One result as stored: "CPSEQ|SLEN|KLEN|ELEN|DLEN|" then status, key,
 * error and data bytes; a length of -1 is NULL. (store_redis_impl.h) */
void orch_redis_arg_result(struct rd_args *a, const struct orch_result *x, int64_t cpseq)
{
    char head[160];
    long long klen = x->key != NULL ? (long long)strlen(x->key) : -1;
    long long elen = x->error != NULL ? (long long)strlen(x->error) : -1;
    long long dlen = x->data != NULL ? (long long)x->data_len : -1;
    int h = snprintf(head, sizeof head, "%lld|%zu|%lld|%lld|%lld|", (long long)cpseq, strlen(x->status), klen,
                     elen, dlen);
    size_t total = (size_t)h + strlen(x->status) + (size_t)(klen > 0 ? klen : 0) +
                   (size_t)(elen > 0 ? elen : 0) + (size_t)(dlen > 0 ? dlen : 0);
    char *buf = malloc(total + 1);
    if (buf == NULL) {
        a->oom = 1;
        return;
    }
    size_t at = 0;
    memcpy(buf, head, (size_t)h);
    at += (size_t)h;
    memcpy(buf + at, x->status, strlen(x->status));
    at += strlen(x->status);
    if (klen > 0)
        memcpy(buf + at, x->key, (size_t)klen);
    at += (size_t)(klen > 0 ? klen : 0);
    if (elen > 0)
        memcpy(buf + at, x->error, (size_t)elen);
    at += (size_t)(elen > 0 ? elen : 0);
    if (dlen > 0)
        memcpy(buf + at, x->data, (size_t)dlen);
    rd_arg(a, buf, total);
    free(buf);
}

/* The checkpoint's fields as pairs. */
static void args_checkpoint(struct rd_args *a, const struct orch_checkpoint_seal *seal)
{
    const struct orch_checkpoint *c = seal->c;
    int at = a->n, n = 0;
    rd_arg_s(a, "0");
    pair_s(a, &n, "name", c->name);
    pair_s(a, &n, "reason", c->reason);
    pair_i(a, &n, "created_ms", seal->created_ms);
    for (size_t k = 0; k < RD_COUNT(cp_ints); k++)
        pair_i(a, &n, cp_ints[k].name, int_of(c, &cp_ints[k]));
    rd_arg_s(a, "memento");
    rd_arg(a, seal->packed, seal->packed_len);
    n++;
    pair_i(a, &n, "memento_len", (int64_t)c->memento_len);
    pair_s(a, &n, "checksum", seal->sum);
    pair_i(a, &n, "bytes", seal->bytes);
    pair_d(a, &n, "duration_ms", orch_store_mono_ms() - seal->t0);
    put_count(a, at, n);
}

/* The values of RD_CP_WRITE for a checkpoint sealed seq. */
static void args_cp_write(struct rd_args *a, const struct orch_run *run,
                          const struct orch_checkpoint_seal *seal, const struct orch_result *res, size_t nres,
                          const struct orch_kv *state, size_t nstate)
{
    rd_arg_s(a, run->id);
    rd_arg_i(a, seal->seq);
    args_run_update(a, run, orch_store_now_ms());
    args_checkpoint(a, seal);
    rd_arg_i(a, (int64_t)nres);
    for (size_t i = 0; i < nres; i++) {
        rd_arg_i(a, res[i].seq);
        orch_redis_arg_result(a, &res[i], seal->seq);
    }
    size_t set = 0;
    for (size_t i = 0; i < nstate; i++)
        set += state[i].value != NULL;
    rd_arg_i(a, (int64_t)set);
    for (size_t i = 0; i < nstate; i++) {
        if (state[i].value == NULL)
            continue;
        rd_arg_s(a, state[i].key);
        rd_arg(a, state[i].value, state[i].value_len);
    }
    rd_arg_i(a, (int64_t)(nstate - set));
    for (size_t i = 0; i < nstate; i++) {
        if (state[i].value == NULL)
            rd_arg_s(a, state[i].key);
    }
}

/* Remembers the seq run_id's next checkpoint takes (forgotten when the
 * copy cannot be made: the next write reads it). */
static void rd_remember_seq(struct rd_store *st, const char *run_id, int64_t next)
{
    if (st->seq_run == NULL || strcmp(st->seq_run, run_id) != 0) {
        free(st->seq_run);
        st->seq_run = strdup(run_id);
    }
    st->seq_next = next;
}

/* One script: the results, the state, the run's counters and the
 * checkpoint, under the seq it was sealed with. Should another writer of
 * the run have taken that seq, the script writes nothing and says which
 * is next: sealed again with it. A reply lost with the connection is
 * sent again on a new one: if the first did land, the second writes the
 * same cursor and results once more under the next seq, and resuming from
 * either gives the same run. */
static int rd_checkpoint_write(struct orch_store *base, const struct orch_run *run,
                               struct orch_checkpoint_seal *seal, const struct orch_result *res, size_t nres,
                               const struct orch_kv *state, size_t nstate)
{
    struct rd_store *st = rd_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot store a checkpoint of run %s", run->id);
    if (orch_redis_writable(st, what) != 0)
        return -1;
    for (size_t i = 0; i < nres; i++) {
        if (res[i].status == NULL)
            return orch_redis_fail(st, "cannot store result %lld of run %s: it has no status",
                                   (long long)res[i].seq, run->id);
    }
    int64_t seq = 0;
    if (st->seq_run != NULL && strcmp(st->seq_run, run->id) == 0)
        seq = st->seq_next;
    else if (rd_next_seq(st, run->id, &seq, what) != 0)
        return -1;
    for (int attempt = 0; attempt < 16; attempt++) {
        if (orch_checkpoint_seal(base, run->id, seal, seq) != 0)
            return -1;
        struct rd_args a = {0};
        args_cp_write(&a, run, seal, res, nres, state, nstate);
        int64_t rc = orch_redis_eval_int(st, RD_CP_WRITE, &a, what);
        if (rc == 0) {
            rd_remember_seq(st, run->id, seq + 1);
            return 0;
        }
        if (rc == -1)
            return orch_redis_fail(st, "cannot update run %s: no such run", run->id);
        if (rc < 0)
            return -1;
        seq = rc;
    }
    return orch_redis_fail(st, "%s: other writers of the run kept taking its next checkpoint number", what);
}

/* Fills p from an HGETALL of a checkpoint. 0, or -1 (out of memory). */
static int rd_checkpoint_row(const redisReply *h, int64_t seq, struct orch_checkpoint_packed *p)
{
    int oom = 0;
    memset(p, 0, sizeof *p);
    struct orch_checkpoint *c = &p->c;
    c->seq = seq;
    c->name = rd_dup(h, "name", &oom);
    c->reason = rd_dup(h, "reason", &oom);
    c->created_ms = rd_int(h, "created_ms");
    for (size_t k = 0; k < RD_COUNT(cp_ints); k++)
        *(int64_t *)((char *)c + cp_ints[k].off) = rd_int(h, cp_ints[k].name);
    c->checksum = rd_dup(h, "checksum", &oom);
    c->bytes = rd_int(h, "bytes");
    c->duration_ms = rd_dbl(h, "duration_ms");
    p->raw_len = rd_int(h, "memento_len");
    const redisReply *m = rd_field(h, "memento");
    if (m != NULL && m->type == REDIS_REPLY_STRING) {
        c->memento = rd_dup(h, "memento", &oom);
        c->memento_len = c->memento != NULL ? m->len : 0;
    }
    if (oom) {
        orch_checkpoint_clear(c);
        return -1;
    }
    return 0;
}

/* The run's checkpoint seqs: just seq when seq > 0, else all in order. */
static redisReply *rd_cp_seqs(struct rd_store *st, const char *run_id, int newest_first, const char *what)
{
    char key[600];
    rd_key(st, key, sizeof key, "cps:", run_id);
    return orch_redis_cmdf(st, what, "ssss", newest_first ? "ZREVRANGE" : "ZRANGE", key, "0", "-1");
}

/* HGETALL of checkpoint seq handed to cb; 0 when it is gone. */
static int rd_cp_one(struct rd_store *st, const char *run_id, int64_t seq, const char *what,
                     orch_packed_cb cb, void *ud)
{
    char key[700], num[32];
    snprintf(num, sizeof num, ":%lld", (long long)seq);
    snprintf(key, sizeof key, "%scp:%s%s", st->url.prefix, run_id, num);
    redisReply *h = orch_redis_cmdf(st, what, "ss", "HGETALL", key);
    if (h == NULL)
        return -1;
    int ret = 0;
    if (h->type == REDIS_REPLY_ARRAY && h->elements > 0) {
        struct orch_checkpoint_packed row;
        ret = rd_checkpoint_row(h, seq, &row) != 0 ? orch_redis_fail(st, "%s: out of memory", what)
                                                   : cb(ud, &row);
    }
    freeReplyObject(h);
    return ret;
}

/* One at a time, so latest reads no more than it needs. */
static int rd_checkpoint_scan(struct orch_store *base, const char *run_id, int64_t seq, int newest_first,
                              const char *what, orch_packed_cb cb, void *ud)
{
    struct rd_store *st = rd_of(base);
    if (seq > 0)
        return rd_cp_one(st, run_id, seq, what, cb, ud);
    redisReply *r = rd_cp_seqs(st, run_id, newest_first, what);
    if (r == NULL)
        return -1;
    int ret = 0;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements && ret == 0; i++)
        ret = rd_cp_one(st, run_id, strtoll(r->element[i]->str, NULL, 10), what, cb, ud);
    freeReplyObject(r);
    return ret;
}

static int rd_checkpoint_rollback(struct orch_store *base, const char *run_id, int64_t seq)
{
    char what[300];
    snprintf(what, sizeof what, "cannot roll run %s back to checkpoint %lld", run_id, (long long)seq);
    return orch_redis_writef(rd_of(base), RD_CP_ROLLBACK, what, "si", run_id, seq) < 0 ? -1 : 0;
}

/* ---- results, events, state ------------------------------------------- */

/* r when it is an array; else NULL, with the server's error or
 * "unexpected reply" in st->err, and r freed. */
static redisReply *rd_array(struct rd_store *st, redisReply *r, const char *what)
{
    if (r != NULL && r->type != REDIS_REPLY_ARRAY) {
        orch_redis_fail(st, "%s: %s", what, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* HGETALL, LRANGE or ZRANGE of one of the run's keys (kind "res:", ...). */
static redisReply *rd_read_all(struct rd_store *st, const char *cmd, const char *kind, const char *run_id,
                               const char *what)
{
    char key[600];
    rd_key(st, key, sizeof key, kind, run_id);
    int range = strcmp(cmd, "LRANGE") == 0 || strcmp(cmd, "ZRANGE") == 0;
    return rd_array(st, orch_redis_cmdf(st, what, range ? "ssss" : "ss", cmd, key, "0", "-1"), what);
}

/* Reads "N|" from *p (within end): the number, *p past the bar. */
static long long take_num(const char **p, const char *end, int *bad)
{
    char *stop = NULL;
    long long n = strtoll(*p, &stop, 10);
    if (stop == *p || stop >= end || *stop != '|')
        *bad = 1;
    else
        *p = stop + 1;
    return n;
}

/* A stored result (arg_result's layout) into x, pointing into v. */
static int parse_result(const redisReply *f, const redisReply *v, struct orch_result *x, char *strs[3])
{
    int bad = 0;
    const char *p = v->str, *end = v->str + v->len;
    take_num(&p, end, &bad);
    long long len[4];
    for (int i = 0; i < 4; i++)
        len[i] = bad ? 0 : take_num(&p, end, &bad);
    size_t need = 0;
    for (int i = 0; i < 4; i++)
        need += len[i] > 0 ? (size_t)len[i] : 0;
    if (bad || (size_t)(end - p) != need)
        return -1;
    x->seq = strtoll(f->str, NULL, 10);
    const char *at = p;
    for (int i = 0; i < 3; i++) {
        strs[i] = NULL;
        if (len[i] < 0)
            continue;
        strs[i] = strndup(at, (size_t)len[i]);
        at += len[i];
    }
    x->status = strs[0];
    x->key = strs[1];
    x->error = strs[2];
    x->data = len[3] >= 0 ? at : NULL;
    x->data_len = len[3] >= 0 ? (size_t)len[3] : 0;
    return 0;
}

/* Field and value rows by their field: a number, or text. */
static int cmp_seq_pair(const void *pa, const void *pb)
{
    long long a = strtoll(row_head(pa)->str, NULL, 10);
    long long b = strtoll(row_head(pb)->str, NULL, 10);
    return (a > b) - (a < b);
}

static int cmp_str_pair(const void *pa, const void *pb)
{
    return strcmp(row_head(pa)->str, row_head(pb)->str);
}

/* The run's hash kind ("res:", "state:") handed to fn pair by pair, sorted
 * by cmp; messages say "cannot list the <noun> of run <run_id>". */
static int rd_hash_each(struct rd_store *st, const char *kind, const char *noun, const char *run_id,
                        int (*cmp)(const void *, const void *), rd_row_fn fn, const struct rd_listing *l)
{
    char what[300];
    snprintf(what, sizeof what, "cannot list the %s of run %s", noun, run_id);
    redisReply *r = rd_read_all(st, "HGETALL", kind, run_id, what);
    return orch_redis_each_row(st, r, 2, cmp, fn, l, what) < 0 ? -1 : 0;
}

/* A stored result (seq field, value) to the listing's callback. */
static int result_pair(struct rd_store *st, redisReply *const *row, const char *what,
                       const struct rd_listing *l)
{
    struct orch_result x;
    char *strs[3] = {NULL, NULL, NULL};
    if (parse_result(row[0], row[1], &x, strs) != 0)
        return orch_redis_fail(st, "%s: result %s is damaged", what, row[0]->str);
    if (l->no_data) {
        x.data = NULL;
        x.data_len = 0;
    }
    int rc = x.status == NULL ? orch_redis_fail(st, "%s: out of memory", what) : l->result(l->ud, &x) != 0;
    for (int k = 0; k < 3; k++)
        free(strs[k]);
    return rc;
}

/* A state entry (key, JSON value) to the listing's callback. */
static int state_pair(struct rd_store *st, redisReply *const *row, const char *what,
                      const struct rd_listing *l)
{
    (void)st;
    (void)what;
    return l->state(l->ud, row[0]->str, row[1]->str, row[1]->len) != 0;
}

static int rd_result_list(struct orch_store *base, const char *run_id, orch_result_cb cb, void *ud)
{
    struct rd_listing l = {.result = cb, .ud = ud};
    return rd_hash_each(rd_of(base), "res:", "results", run_id, cmp_seq_pair, result_pair, &l);
}

/* Events are stored "EVID|TS|TLEN|DLEN|" type data (DLEN -1: no data). */
static int rd_event_add(struct orch_store *base, const char *run_id, const char *type, const char *data)
{
    struct rd_store *st = rd_of(base);
    if (orch_redis_writable(st, "cannot record an event") != 0)
        return -1;
    if (type == NULL)
        return orch_redis_fail(st, "cannot record an event: it has no type");
    size_t tlen = strlen(type), dlen = data != NULL ? strlen(data) : 0;
    char head[96];
    int h = snprintf(head, sizeof head, "%lld|%zu|%lld|", (long long)orch_store_now_ms(), tlen,
                     data != NULL ? (long long)dlen : -1LL);
    char *buf = malloc((size_t)h + tlen + dlen + 1);
    if (buf == NULL)
        return orch_redis_fail(st, "cannot record an event: out of memory");
    memcpy(buf, head, (size_t)h);
    memcpy(buf + h, type, tlen);
    if (dlen > 0)
        memcpy(buf + h + tlen, data, dlen);
    struct rd_args a = {0};
    rd_arg_s(&a, run_id != NULL ? "1" : "0");
    rd_arg_s(&a, run_id);
    rd_arg(&a, buf, (size_t)h + tlen + dlen);
    free(buf);
    int64_t n = orch_redis_eval_int(st, RD_EV_ADD, &a, "cannot record an event");
    if (n == -1)
        return orch_redis_fail(st, "cannot record an event: no such run %s", run_id);
    return n > 0 ? 0 : -1;
}

/* A stored event into e (heap strings). 0, -1 damaged, -2 out of memory. */
static int parse_event(const redisReply *v, struct orch_event *e)
{
    int bad = 0;
    const char *p = v->str, *end = v->str + v->len;
    memset(e, 0, sizeof *e);
    e->id = take_num(&p, end, &bad);
    e->ts_ms = bad ? 0 : take_num(&p, end, &bad);
    long long tlen = bad ? 0 : take_num(&p, end, &bad);
    long long dlen = bad ? 0 : take_num(&p, end, &bad);
    if (bad || tlen < 0 || (size_t)(end - p) != (size_t)tlen + (size_t)(dlen > 0 ? dlen : 0))
        return -1;
    e->type = strndup(p, (size_t)tlen);
    e->data = dlen >= 0 ? strndup(p + tlen, (size_t)dlen) : NULL;
    if (e->type == NULL || (dlen >= 0 && e->data == NULL)) {
        orch_event_clear(e);
        return -2;
    }
    return 0;
}

/* A stored event to the listing's callback. */
static int event_row(struct rd_store *st, redisReply *const *row, const char *what,
                     const struct rd_listing *l)
{
    struct orch_event e;
    int rc = parse_event(row[0], &e);
    if (rc != 0)
        return orch_redis_fail(st, "%s: %s", what, rc == -2 ? "out of memory" : "an event is damaged");
    int stop = l->event(l->ud, &e);
    orch_event_clear(&e);
    return stop != 0;
}

/* Hands each stored event of the array r to cb; frees r. 0 or -1 (also
 * when r is NULL: its call failed). */
static int rd_each_event(struct rd_store *st, redisReply *r, const char *what, orch_event_cb cb, void *ud)
{
    struct rd_listing l = {.event = cb, .ud = ud};
    return orch_redis_each_row(st, r, 1, NULL, event_row, &l, what) < 0 ? -1 : 0;
}

static int rd_event_list(struct orch_store *base, const char *run_id, orch_event_cb cb, void *ud)
{
    struct rd_store *st = rd_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot list the events of run %s", run_id != NULL ? run_id : "(none)");
    redisReply *r = run_id != NULL ? rd_read_all(st, "ZRANGE", "ev:", run_id, what)
                                   : rd_read_all(st, "LRANGE", "ev", "", what);
    return rd_each_event(st, r, what, cb, ud);
}

static int rd_state_list(struct orch_store *base, const char *run_id, orch_state_cb cb, void *ud)
{
    struct rd_listing l = {.state = cb, .ud = ud};
    return rd_hash_each(rd_of(base), "state:", "state", run_id, cmp_str_pair, state_pair, &l);
}

static int rd_stats(struct orch_store *base, struct orch_store_stats *out)
{
    struct rd_store *st = rd_of(base);
    memset(out, 0, sizeof *out);
    struct rd_args a = {0};
    redisReply *r = orch_redis_eval(st, RD_STATS, &a, "cannot read the store's figures");
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 13) {
        freeReplyObject(r);
        return orch_redis_fail(st, "cannot read the store's figures: unexpected reply");
    }
    int64_t *ints[] = {&out->runs,      &out->active,     &out->paused,     &out->failed,
                       &out->completed, &out->recoveries, &out->checkpoints};
    for (size_t i = 0; i < 7; i++)
        *ints[i] = strtoll(r->element[i]->str, NULL, 10);
    out->checkpoint_mean_ms = strtod(r->element[7]->str, NULL);
    out->checkpoint_max_ms = strtod(r->element[8]->str, NULL);
    out->journal_entries = strtoll(r->element[9]->str, NULL, 10);
    out->journal_hits = strtoll(r->element[10]->str, NULL, 10);
    out->journal_saved_usd = strtod(r->element[11]->str, NULL);
    out->bytes = strtoll(r->element[12]->str, NULL, 10);
    freeReplyObject(r);
    return 0;
}

/* ---- LLM response journal --------------------------------------------- */

/* Adds one put of RD_JOURNAL: key, created_ms, the fields. -1 (st->err
 * set) for an entry that cannot be journaled. */
static int args_journal_put(struct rd_store *st, struct rd_args *a, const struct orch_journal_entry *e)
{
    if (e->key == NULL || e->key[0] == '\0')
        return orch_redis_fail(st, "cannot journal a response: it has no key");
    if (e->response == NULL && e->response_len > 0)
        return orch_redis_fail(st, "cannot journal response %s: %zu bytes announced but no data", e->key,
                               e->response_len);
    rd_arg_s(a, e->key);
    rd_arg_i(a, e->created_ms != 0 ? e->created_ms : orch_store_now_ms());
    int at = a->n, n = 0;
    rd_arg_s(a, "0");
    pair_s(a, &n, "run_id", e->run_id);
    pair_s(a, &n, "provider", e->provider);
    pair_s(a, &n, "model", e->model);
    rd_arg_s(a, "response");
    rd_arg(a, e->response != NULL ? e->response : "", e->response_len);
    n++;
    pair_i(a, &n, "tokens_in", e->tokens_in);
    pair_i(a, &n, "tokens_out", e->tokens_out);
    pair_d(a, &n, "cost_usd", e->cost_usd);
    pair_d(a, &n, "latency_ms", e->latency_ms);
    put_count(a, at, n);
    return 0;
}

/* An HGETALL of a journal entry into out. 0 or -1 (out of memory). */
static int rd_journal_row(const redisReply *h, const char *key, struct orch_journal_owned *out)
{
    int oom = 0;
    memset(out, 0, sizeof *out);
    out->key = strdup(key);
    oom = out->key == NULL;
    out->run_id = rd_dup(h, "run_id", &oom);
    out->provider = rd_dup(h, "provider", &oom);
    out->model = rd_dup(h, "model", &oom);
    const redisReply *resp = rd_field(h, "response");
    out->response = resp != NULL ? rd_dup(h, "response", &oom) : calloc(1, 1);
    out->response_len = resp != NULL ? resp->len : 0;
    oom |= out->response == NULL;
    out->tokens_in = rd_int(h, "tokens_in");
    out->tokens_out = rd_int(h, "tokens_out");
    out->cost_usd = rd_dbl(h, "cost_usd");
    out->latency_ms = rd_dbl(h, "latency_ms");
    out->created_ms = rd_int(h, "created_ms");
    out->hits = rd_int(h, "hits");
    if (oom) {
        orch_journal_clear(out);
        return -1;
    }
    return 0;
}

/* One script: the n puts (first wins), then the m lookups, which see
 * them and count a hit unless the store is read-only. */
static int rd_journal_batch(struct orch_store *base, const struct orch_journal_entry *e, size_t n,
                            struct orch_journal_lookup *gets, size_t m)
{
    struct rd_store *st = rd_of(base);
    const char *what = "cannot journal LLM responses";
    for (size_t i = 0; i < m; i++) {
        gets[i].found = 0;
        memset(&gets[i].out, 0, sizeof gets[i].out);
        if (gets[i].key == NULL)
            return orch_redis_fail(st, "cannot look up a journaled response: no key");
    }
    if (n + m == 0)
        return 0;
    if (n > 0 && orch_redis_writable(st, what) != 0)
        return -1;
    struct rd_args a = {0};
    rd_arg_s(&a, st->readonly ? "0" : "1");
    rd_arg_i(&a, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        if (args_journal_put(st, &a, &e[i]) != 0) {
            rd_args_free(&a);
            return -1;
        }
    }
    rd_arg_i(&a, (int64_t)m);
    for (size_t i = 0; i < m; i++)
        rd_arg_s(&a, gets[i].key);
    redisReply *r =
        orch_redis_eval(st, RD_JOURNAL, &a, m > 0 && n == 0 ? "cannot look up journaled responses" : what);
    rd_args_free(&a);
    if (r == NULL)
        return -1;
    int ret = 0;
    for (size_t i = 0; i < m && ret == 0; i++) {
        const redisReply *h = r->type == REDIS_REPLY_ARRAY && i < r->elements ? r->element[i] : NULL;
        if (h == NULL || h->type != REDIS_REPLY_ARRAY)
            continue;
        if (rd_journal_row(h, gets[i].key, &gets[i].out) != 0)
            ret = orch_redis_fail(st, "cannot read journaled response %s: out of memory", gets[i].key);
        else
            gets[i].found = 1;
    }
    freeReplyObject(r);
    for (size_t i = 0; i < m && ret != 0; i++) {
        orch_journal_clear(&gets[i].out);
        gets[i].found = 0;
    }
    return ret;
}

static int rd_journal_put(struct orch_store *base, const struct orch_journal_entry *e)
{
    return rd_journal_batch(base, e, 1, NULL, 0);
}

static int rd_journal_get(struct orch_store *base, const char *key, struct orch_journal_owned *out)
{
    struct rd_store *st = rd_of(base);
    if (key == NULL)
        return orch_redis_fail(st, "cannot look up a journaled response: no key");
    struct orch_journal_lookup g = {.key = key};
    if (rd_journal_batch(base, NULL, 0, &g, 1) != 0)
        return -1;
    if (!g.found)
        return 0;
    *out = g.out;
    return 1;
}

static int rd_journal_prune(struct orch_store *base, int64_t before_ms, int64_t *removed)
{
    int64_t n = orch_redis_writef(rd_of(base), RD_JR_PRUNE, "cannot prune the journal", "i", before_ms);
    if (n < 0)
        return -1;
    *removed = n;
    return 0;
}

/* Redis gives the memory of deleted keys back at once, and rewrites its
 * append-only file itself (auto-aof-rewrite-percentage): nothing to do. */
static int rd_vacuum(struct orch_store *base)
{
    (void)base;
    return 0;
}

static void rd_version(struct orch_store *base, char *out, size_t outlen)
{
    snprintf(out, outlen, "Redis %s", rd_of(base)->version[0] != '\0' ? rd_of(base)->version : "(unknown)");
}

void orch_store_redis_library(char *out, size_t outlen)
{
    snprintf(out, outlen, "hiredis %d.%d.%d", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
}

/* ---- open / close ----------------------------------------------------- */

static void rd_close(struct orch_store *base)
{
    if (base == NULL)
        return;
    struct rd_store *st = rd_of(base);
    orch_redis_disconnect(st);
    free(st->seq_run);
    free(st->shown);
    free(st);
}

/* ---- live figures, pages ---------------------------------------------- */

static int rd_live_put(struct orch_store *base, const char *run_id, int64_t updated_ms, const char *figures)
{
    struct rd_store *st = rd_of(base);
    int64_t n =
        orch_redis_writef(st, RD_LIVE_PUT, "cannot record live figures", "sis", run_id, updated_ms, figures);
    if (n == 0)
        return orch_redis_fail(st, "cannot record the live figures of run %s: no such run", run_id);
    return n == 1 ? 0 : -1;
}

static int rd_live_get(struct orch_store *base, const char *run_id, char **figures, int64_t *updated_ms)
{
    struct rd_store *st = rd_of(base);
    char what[300], key[600];
    snprintf(what, sizeof what, "cannot read the live figures of run %s", run_id);
    rd_key(st, key, sizeof key, "live:", run_id);
    static const char *const fields[] = {"figures", "updated_ms"};
    redisReply *r = NULL;
    int ret = orch_redis_hmget(st, key, fields, 2, &r, what);
    if (ret == 1) {
        *figures = strndup(r->element[0]->str, r->element[0]->len);
        if (r->element[1]->type == REDIS_REPLY_STRING)
            *updated_ms = strtoll(r->element[1]->str, NULL, 10);
        ret = *figures != NULL ? 1 : orch_redis_fail(st, "%s: out of memory", what);
    }
    freeReplyObject(r);
    return ret;
}

/* One range of the run's event set by id: ZRANGEBYSCORE (or REV) with
 * exclusive bounds and a LIMIT, so the page costs log(events) + limit. */
static int rd_event_page(struct orch_store *base, const char *run_id, int64_t after_id, int64_t before_id,
                         int64_t limit, int newest_first, orch_event_cb cb, void *ud)
{
    struct rd_store *st = rd_of(base);
    char what[300], key[600], lo[32], hi[32];
    snprintf(what, sizeof what, "cannot list the events of run %s", run_id);
    rd_key(st, key, sizeof key, "ev:", run_id);
    snprintf(lo, sizeof lo, "(%lld", (long long)after_id);
    snprintf(hi, sizeof hi, "(%lld", (long long)before_id);
    redisReply *r = orch_redis_cmdf(st, what, "ssssssi", newest_first ? "ZREVRANGEBYSCORE" : "ZRANGEBYSCORE",
                                    key, newest_first ? hi : lo, newest_first ? lo : hi, "LIMIT", "0", limit);
    return rd_each_event(st, rd_array(st, r, what), what, cb, ud);
}

/* The error index err:ID gives the seqs, res:ID their rows (one script,
 * so a rollback cannot come between); data is left NULL. */
static int rd_error_page(struct orch_store *base, const char *run_id, int64_t after_seq, int64_t limit,
                         orch_result_cb cb, void *ud)
{
    struct rd_store *st = rd_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot list the failed rows of run %s", run_id);
    struct rd_listing l = {.result = cb, .ud = ud, .no_data = 1};
    redisReply *r = orch_redis_evalf(st, RD_ERR_PAGE, RD_READS, what, "sii", run_id, after_seq, limit);
    return orch_redis_each_row(st, r, 2, NULL, result_pair, &l, what) < 0 ? -1 : 0;
}

static const struct orch_store_ops rd_ops = {
    .name = "redis",
    .close = rd_close,
    .run_create = rd_run_create,
    .run_get = rd_run_get,
    .run_find_unfinished = rd_run_find_unfinished,
    .run_update = rd_run_update,
    .run_claim = rd_run_claim,
    .run_heartbeat = rd_run_heartbeat,
    .run_list = rd_run_list,
    .checkpoint_write = rd_checkpoint_write,
    .checkpoint_scan = rd_checkpoint_scan,
    .checkpoint_rollback = rd_checkpoint_rollback,
    .result_list = rd_result_list,
    .event_add = rd_event_add,
    .event_list = rd_event_list,
    .state_list = rd_state_list,
    .stats = rd_stats,
    .journal_put = rd_journal_put,
    .journal_get = rd_journal_get,
    .journal_batch = rd_journal_batch,
    .run_delete = rd_run_delete,
    .journal_prune = rd_journal_prune,
    .vacuum = rd_vacuum,
    .version = rd_version,
    .live_put = rd_live_put,
    .live_get = rd_live_get,
    .event_page = rd_event_page,
    .error_page = rd_error_page,
    .lease_plan = orch_redis_lease_plan,
    .lease_claim = orch_redis_lease_claim,
    .lease_heartbeat = orch_redis_lease_heartbeat,
    .lease_commit = orch_redis_lease_commit,
    .lease_list = orch_redis_lease_list,
    .budget_reserve = orch_redis_budget_reserve,
    .budget_settle = orch_redis_budget_settle,
    .budget_set = orch_redis_budget_set,
    .budget_get = orch_redis_budget_get,
    .journal_pend = orch_redis_journal_pend,
    .rate_take = orch_redis_rate_take,
    .run_set_status = orch_redis_run_set_status,
};

struct orch_store *orch_store_redis_open(const char *target, int flags, char *err, size_t errlen)
{
    struct rd_store *st = calloc(1, sizeof *st);
    char shown[400];
    orch_store_display(target, shown, sizeof shown);
    if (st != NULL)
        st->shown = strdup(shown);
    if (st == NULL || st->shown == NULL) {
        snprintf(err, errlen, "%s: out of memory", shown);
        free(st);
        return NULL;
    }
    st->base.ops = &rd_ops;
    st->base.where = st->shown;
    if (orch_redis_connect(st, target, flags, err, errlen) != 0) {
        rd_close(&st->base);
        return NULL;
    }
    return &st->base;
}
