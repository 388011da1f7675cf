/* store.c — the backend-independent half of the state store: choosing a
 * backend from the target, run status names, the checkpoint checksum
 * (XXH3-128, libxxhash), the memento codec (zstd, libzstd) the backends
 * share, and the functions that free what the store fills in (runs,
 * checkpoints, events, journal entries).
 * See store.h for the contract and store_impl.h for the shared helpers. */
#include "store.h"
#include "store_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>
#include <zstd.h>

/* How a target picks a backend: a URL ("scheme://...") by its scheme,
 * anything else is a file path or ":memory:" for SQLite. A URL of a scheme
 * with no backend is refused rather than taken for a file name. A backend
 * not built in has open == NULL. */
struct store_backend {
    const char *scheme;
    const char *name;
    struct orch_store *(*open)(const char *target, int flags, char *err, size_t errlen);
};

static const struct store_backend store_backends[] = {
    {"postgres", "PostgreSQL", orch_store_pg_open},
    {"postgresql", "PostgreSQL", orch_store_pg_open},
};

#define STORE_SCHEMES "postgres:// or postgresql:// URLs, a file path or :memory:"

/* Length of target's URL scheme ("postgres" in "postgres://..."), or 0
 * when target is not a URL: a scheme is a letter then letters, digits,
 * '+', '-' or '.', followed by "://". */
static size_t url_scheme_len(const char *target)
{
    size_t i = 0;
    if (!((target[0] >= 'a' && target[0] <= 'z') || (target[0] >= 'A' && target[0] <= 'Z')))
        return 0;
    while (target[i] != '\0' &&
           strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.", target[i]) != NULL)
        i++;
    return strncmp(target + i, "://", 3) == 0 ? i : 0;
}

/* Appends n bytes of s to out (capacity outlen, *at used), truncating. */
static void put_bytes(char *out, size_t outlen, size_t *at, const char *s, size_t n)
{
    for (size_t i = 0; i < n && *at + 1 < outlen; i++)
        out[(*at)++] = s[i];
}

void orch_store_display(const char *target, char *out, size_t outlen)
{
    if (outlen == 0)
        return;
    size_t at = 0;
    size_t scheme = target != NULL ? url_scheme_len(target) : 0;
    if (scheme == 0) {
        put_bytes(out, outlen, &at, target != NULL ? target : "", target != NULL ? strlen(target) : 0);
        out[at] = '\0';
        return;
    }
    const char *p = target + scheme + 3;
    /* authority: up to the first '/', '?' or '#'; user info ends at its last '@' */
    size_t auth = strcspn(p, "/?#");
    const char *at_sign = NULL;
    for (size_t i = 0; i < auth; i++) {
        if (p[i] == '@')
            at_sign = p + i;
    }
    const char *colon = at_sign != NULL ? memchr(p, ':', (size_t)(at_sign - p)) : NULL;
    if (colon != NULL) {
        put_bytes(out, outlen, &at, target, (size_t)(colon + 1 - target));
        put_bytes(out, outlen, &at, "***", 3);
        p = at_sign;
    } else {
        put_bytes(out, outlen, &at, target, (size_t)(p - target));
    }
    /* the rest, with the value of every password= query parameter masked */
    const char *q = strchr(p, '?');
    if (q == NULL) {
        put_bytes(out, outlen, &at, p, strlen(p));
        out[at] = '\0';
        return;
    }
    put_bytes(out, outlen, &at, p, (size_t)(q - p));
    while (*q != '\0') {
        size_t param = strcspn(q + 1, "&#") + 1; /* the separator and the parameter */
        if (strncmp(q + 1, "password=", 9) == 0) {
            put_bytes(out, outlen, &at, q, 10);
            put_bytes(out, outlen, &at, "***", 3);
        } else {
            put_bytes(out, outlen, &at, q, param);
        }
        q += param;
    }
    out[at] = '\0';
}

struct orch_store *orch_store_open(const char *target, char *err, size_t errlen)
{
    return orch_store_open_flags(target, 0, err, errlen);
}

struct orch_store *orch_store_open_flags(const char *target, int flags, char *err, size_t errlen)
{
    if (target == NULL || target[0] == '\0') {
        snprintf(err, errlen, "no state database given (use --db PATH or ORCH_DB)");
        return NULL;
    }
    size_t scheme = url_scheme_len(target);
    if (scheme == 0)
        return orch_store_sqlite_open(target, flags, err, errlen);
    char shown[400];
    orch_store_display(target, shown, sizeof shown);
    size_t n = sizeof store_backends / sizeof store_backends[0];
    for (size_t i = 0; i < n; i++) {
        const struct store_backend *b = &store_backends[i];
        if (strlen(b->scheme) != scheme || strncmp(target, b->scheme, scheme) != 0)
            continue;
        if (b->open == NULL) {
            snprintf(err, errlen, "%s: %s state stores are not supported by this build of orch", shown,
                     b->name);
            return NULL;
        }
        return b->open(target, flags, err, errlen);
    }
    snprintf(err, errlen, "%s: no state store backend for %.*s:// URLs (orch takes " STORE_SCHEMES ")", shown,
             (int)scheme, target);
    return NULL;
}

const char *orch_store_backend(const struct orch_store *st)
{
    return st->ops->name;
}

void orch_store_close(struct orch_store *st)
{
    if (st != NULL)
        st->ops->close(st);
}

int orch_store_run_create(struct orch_store *st, const struct orch_run *r)
{
    return st->ops->run_create(st, r);
}

int orch_store_run_get(struct orch_store *st, const char *id, struct orch_run *out)
{
    return st->ops->run_get(st, id, out);
}

int orch_store_run_find_unfinished(struct orch_store *st, const char *identity, struct orch_run *out)
{
    return st->ops->run_find_unfinished(st, identity, out);
}

int orch_store_run_update(struct orch_store *st, const struct orch_run *r)
{
    return st->ops->run_update(st, r);
}

int orch_store_run_claim(struct orch_store *st, const char *id, int64_t pid, const char *host, int64_t now_ms,
                         int64_t expect_pid, int64_t expect_heartbeat_ms)
{
    return st->ops->run_claim(st, id, pid, host, now_ms, expect_pid, expect_heartbeat_ms);
}

int orch_store_run_heartbeat(struct orch_store *st, const char *id, int64_t now_ms)
{
    return st->ops->run_heartbeat(st, id, now_ms);
}

int orch_store_run_list(struct orch_store *st, const struct orch_run_filter *f, orch_run_cb cb, void *ud)
{
    return st->ops->run_list(st, f, cb, ud);
}

int orch_store_checkpoint_write(struct orch_store *st, const struct orch_run *run, struct orch_checkpoint *c,
                                const struct orch_result *res, size_t nres, const struct orch_kv *state,
                                size_t nstate)
{
    return st->ops->checkpoint_write(st, run, c, res, nres, state, nstate);
}

int orch_store_checkpoint_latest(struct orch_store *st, const char *run_id, struct orch_checkpoint *out,
                                 int *skipped)
{
    return st->ops->checkpoint_latest(st, run_id, out, skipped);
}

int orch_store_checkpoint_get(struct orch_store *st, const char *run_id, int64_t seq,
                              struct orch_checkpoint *out)
{
    return st->ops->checkpoint_get(st, run_id, seq, out);
}

int orch_store_checkpoint_list(struct orch_store *st, const char *run_id, orch_checkpoint_cb cb, void *ud)
{
    return st->ops->checkpoint_list(st, run_id, cb, ud);
}

int orch_store_checkpoint_rollback(struct orch_store *st, const char *run_id, int64_t seq)
{
    return st->ops->checkpoint_rollback(st, run_id, seq);
}

int orch_store_result_list(struct orch_store *st, const char *run_id, orch_result_cb cb, void *ud)
{
    return st->ops->result_list(st, run_id, cb, ud);
}

int orch_store_event_add(struct orch_store *st, const char *run_id, const char *type, const char *data)
{
    return st->ops->event_add(st, run_id, type, data);
}

int orch_store_event_list(struct orch_store *st, const char *run_id, orch_event_cb cb, void *ud)
{
    return st->ops->event_list(st, run_id, cb, ud);
}

int orch_store_state_list(struct orch_store *st, const char *run_id, orch_state_cb cb, void *ud)
{
    return st->ops->state_list(st, run_id, cb, ud);
}

int orch_store_stats(struct orch_store *st, struct orch_store_stats *out)
{
    return st->ops->stats(st, out);
}

int orch_store_journal_put(struct orch_store *st, const struct orch_journal_entry *e)
{
    return st->ops->journal_put(st, e);
}

int orch_store_journal_get(struct orch_store *st, const char *key, struct orch_journal_owned *out)
{
    return st->ops->journal_get(st, key, out);
}

int orch_store_journal_batch(struct orch_store *st, const struct orch_journal_entry *e, size_t n,
                             struct orch_journal_lookup *gets, size_t m)
{
    return st->ops->journal_batch(st, e, n, gets, m);
}

int orch_store_run_delete(struct orch_store *st, const char *run_id)
{
    return st->ops->run_delete(st, run_id);
}

int orch_store_journal_prune(struct orch_store *st, int64_t before_ms, int64_t *removed)
{
    return st->ops->journal_prune(st, before_ms, removed);
}

int orch_store_vacuum(struct orch_store *st)
{
    return st->ops->vacuum(st);
}

static const char *const run_status_names[] = {
    [ORCH_RUN_PENDING] = "pending",     [ORCH_RUN_RUNNING] = "running", [ORCH_RUN_PAUSED] = "paused",
    [ORCH_RUN_COMPLETED] = "completed", [ORCH_RUN_FAILED] = "failed",
};

#define RUN_STATUS_COUNT (sizeof run_status_names / sizeof run_status_names[0])

const char *orch_run_status_name(enum orch_run_status s)
{
    if ((unsigned)s >= RUN_STATUS_COUNT)
        return "unknown";
    return run_status_names[s];
}

int orch_run_status_parse(const char *s)
{
    if (s == NULL)
        return -1;
    for (size_t i = 0; i < RUN_STATUS_COUNT; i++) {
        if (strcmp(s, run_status_names[i]) == 0)
            return (int)i;
    }
    return -1;
}

static void put_le64(unsigned char *p, int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(u & 0xff);
        u >>= 8;
    }
}

/* The hashed bytes are: seq, input_offset, input_line, input_index,
 * output_offset, errors_offset as 8-byte little-endian two's complement,
 * then the raw memento. Fixed layout, so a checksum written on one machine
 * verifies on any other. out is "" only if the hash state cannot be
 * allocated, which never matches a stored checksum. */
void orch_checkpoint_checksum(const struct orch_checkpoint *c, char out[33])
{
    unsigned char head[48];
    put_le64(head + 0, c->seq);
    put_le64(head + 8, c->input_offset);
    put_le64(head + 16, c->input_line);
    put_le64(head + 24, c->input_index);
    put_le64(head + 32, c->output_offset);
    put_le64(head + 40, c->errors_offset);

    out[0] = '\0';
    XXH3_state_t *h = XXH3_createState();
    if (h == NULL)
        return;
    XXH3_128bits_reset(h);
    XXH3_128bits_update(h, head, sizeof head);
    if (c->memento != NULL && c->memento_len > 0)
        XXH3_128bits_update(h, c->memento, c->memento_len);
    XXH128_hash_t sum = XXH3_128bits_digest(h);
    XXH3_freeState(h);

    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, sum);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[canon.digest[i] >> 4];
        out[2 * i + 1] = hex[canon.digest[i] & 0xf];
    }
    out[32] = '\0';
}

int orch_store_compress(const void *src, size_t len, void **out, size_t *out_len, char *err, size_t errlen)
{
    if (len > ORCH_STORE_MEMENTO_MAX) {
        snprintf(err, errlen, "memento of %zu bytes is over the %zu MiB limit", len,
                 ORCH_STORE_MEMENTO_MAX >> 20);
        return -1;
    }
    size_t cap = ZSTD_compressBound(len);
    void *dst = malloc(cap);
    if (dst == NULL) {
        snprintf(err, errlen, "out of memory compressing a %zu-byte memento", len);
        return -1;
    }
    size_t n = ZSTD_compress(dst, cap, src != NULL ? src : "", len, ORCH_STORE_ZSTD_LEVEL);
    if (ZSTD_isError(n)) {
        snprintf(err, errlen, "compressing the memento: %s", ZSTD_getErrorName(n));
        free(dst);
        return -1;
    }
    *out = dst;
    *out_len = n;
    return 0;
}

int orch_store_decompress(const void *src, size_t len, void **out, size_t *out_len, char *err, size_t errlen)
{
    if (src == NULL || len == 0) {
        snprintf(err, errlen, "memento is empty (no zstd frame)");
        return -1;
    }
    unsigned long long size = ZSTD_getFrameContentSize(src, len);
    if (size == ZSTD_CONTENTSIZE_ERROR) {
        snprintf(err, errlen, "memento is not a zstd frame");
        return -1;
    }
    if (size == ZSTD_CONTENTSIZE_UNKNOWN) {
        snprintf(err, errlen, "memento frame does not record its size");
        return -1;
    }
    if (size > ORCH_STORE_MEMENTO_MAX) {
        snprintf(err, errlen, "memento claims %llu bytes, over the %zu MiB limit", size,
                 ORCH_STORE_MEMENTO_MAX >> 20);
        return -1;
    }
    char *dst = malloc((size_t)size + 1);
    if (dst == NULL) {
        snprintf(err, errlen, "out of memory decompressing a %llu-byte memento", size);
        return -2;
    }
    size_t n = ZSTD_decompress(dst, (size_t)size, src, len);
    if (ZSTD_isError(n)) {
        snprintf(err, errlen, "memento does not decompress: %s", ZSTD_getErrorName(n));
        free(dst);
        return -1;
    }
    if (n != size) {
        snprintf(err, errlen, "memento decompressed to %zu bytes, its frame says %llu", n, size);
        free(dst);
        return -1;
    }
    dst[n] = '\0';
    *out = dst;
    *out_len = n;
    return 0;
}

int64_t orch_store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double orch_store_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

void orch_run_clear(struct orch_run *r)
{
    if (r == NULL)
        return;
    free(r->id);
    free(r->name);
    free(r->identity);
    free(r->workflow_path);
    free(r->workflow_hash);
    free(r->input);
    free(r->input_fp);
    free(r->params);
    free(r->output);
    free(r->error);
    free(r->owner_host);
    memset(r, 0, sizeof *r);
}

void orch_checkpoint_clear(struct orch_checkpoint *c)
{
    if (c == NULL)
        return;
    free(c->name);
    free(c->reason);
    free(c->memento);
    free(c->checksum);
    memset(c, 0, sizeof *c);
}

void orch_event_clear(struct orch_event *e)
{
    if (e == NULL)
        return;
    free(e->type);
    free(e->data);
    memset(e, 0, sizeof *e);
}

void orch_journal_clear(struct orch_journal_owned *e)
{
    if (e == NULL)
        return;
    free(e->key);
    free(e->run_id);
    free(e->provider);
    free(e->model);
    free(e->response);
    memset(e, 0, sizeof *e);
}
