/* store.c — the backend-independent half of the state store: choosing a
 * backend from the target, the orch_store_* functions every caller goes
 * through (argument checks, then the backend's operation), and what is the
 * same for every backend: checkpoints compressed (zstd, libzstd) and
 * checksummed (XXH3-128, libxxhash) on the way in, decompressed and
 * verified on the way out with the fall back to the newest valid one,
 * messages naming the store as st->where does; run status names, and the
 * functions that free what the store fills in.
 * See store.h for the contract and store_impl.h for the shared helpers. */
#include "store.h"
#include "store_impl.h"
#include "result_pack.h"

#include <stdarg.h>
#include <stddef.h>
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
    {"redis", "Redis", orch_store_redis_open},
    {"unix", "Redis", orch_store_redis_open},
};

#define STORE_SCHEMES "postgres://, postgresql://, redis:// or unix:// URLs, a file path or :memory:"

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
    if (st == NULL)
        return;
    ZSTD_freeCCtx(st->zcctx);
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

int orch_store_journal_peek(struct orch_store *st, struct orch_journal_lookup *get)
{
    return st->ops->journal_peek != NULL ? st->ops->journal_peek(st, get) : -1;
}

void orch_store_journal_peek_end(struct orch_store *st)
{
    if (st->ops->journal_peek_end != NULL)
        st->ops->journal_peek_end(st);
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

void orch_store_version(struct orch_store *st, char *out, size_t outlen)
{
    if (outlen > 0)
        out[0] = '\0';
    st->ops->version(st, out, outlen);
}

/* ---- live figures ------------------------------------------------------ */

int orch_store_live_put(struct orch_store *st, const char *run_id, int64_t updated_ms, const char *figures)
{
    if (run_id == NULL || figures == NULL)
        return orch_store_fail(st, "cannot record live figures: %s missing",
                               run_id == NULL ? "the run id is" : "the figures are");
    return st->ops->live_put(st, run_id, updated_ms, figures);
}

int orch_store_live_get(struct orch_store *st, const char *run_id, char **figures, int64_t *updated_ms)
{
    *figures = NULL;
    *updated_ms = 0;
    if (run_id == NULL)
        return orch_store_fail(st, "cannot read live figures: the run id is missing");
    return st->ops->live_get(st, run_id, figures, updated_ms);
}

int orch_store_event_page(struct orch_store *st, const char *run_id, int64_t after_id, int64_t before_id,
                          int64_t limit, int newest_first, orch_event_cb cb, void *ud)
{
    if (run_id == NULL || limit <= 0)
        return orch_store_fail(st, "cannot list a page of events: %s",
                               run_id == NULL ? "the run id is missing" : "the page size must be positive");
    return st->ops->event_page(st, run_id, after_id, before_id > 0 ? before_id : INT64_MAX, limit,
                               newest_first, cb, ud);
}

int orch_store_error_page(struct orch_store *st, const char *run_id, int64_t after_seq, int64_t limit,
                          orch_result_cb cb, void *ud)
{
    if (run_id == NULL || limit <= 0)
        return orch_store_fail(st, "cannot list a page of failed rows: %s",
                               run_id == NULL ? "the run id is missing" : "the page size must be positive");
    return st->ops->error_page(st, run_id, after_seq, limit, cb, ud);
}

const char *orch_store_library(size_t i)
{
    static char libs[3][64];
    void (*const fill[])(char *, size_t) = {orch_store_sqlite_library, orch_store_pg_library,
                                            orch_store_redis_library};
    if (i >= sizeof libs / sizeof libs[0])
        return NULL;
    fill[i](libs[i], sizeof libs[i]);
    return libs[i];
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

/* A memento larger than this is refused both ways: writing one this big
 * means a runaway ctx.state, and reading one means a hostile or corrupt
 * frame header asking for an absurd allocation. */
#define ORCH_STORE_MEMENTO_MAX ((size_t)256 * 1024 * 1024)

/* zstd level used for mementos: fast, and state JSON shrinks well. */
#define ORCH_STORE_ZSTD_LEVEL 3

/* Compresses len bytes at src (src may be NULL when len is 0) into one zstd
 * frame that records its content size. On success *out is a malloc'd
 * buffer the caller frees and *out_len its size; returns 0. Returns -1 with
 * the reason (no path) in err when len is over ORCH_STORE_MEMENTO_MAX or
 * memory runs out. */
static int memento_compress(struct orch_store *st, const void *src, size_t len, void **out, size_t *out_len,
                            char *err, size_t errlen)
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
    if (st->zcctx == NULL)
        st->zcctx = ZSTD_createCCtx();
    /* the same frame either way; without a context (no memory for one)
     * ZSTD_compress makes its own */
    size_t n =
        st->zcctx != NULL
            ? ZSTD_compressCCtx(st->zcctx, dst, cap, src != NULL ? src : "", len, ORCH_STORE_ZSTD_LEVEL)
            : ZSTD_compress(dst, cap, src != NULL ? src : "", len, ORCH_STORE_ZSTD_LEVEL);
    if (ZSTD_isError(n)) {
        snprintf(err, errlen, "compressing the memento: %s", ZSTD_getErrorName(n));
        free(dst);
        return -1;
    }
    *out = dst;
    *out_len = n;
    return 0;
}

/* Decompresses one zstd frame written by memento_compress. The size is
 * taken from the frame header and must be known and at most
 * ORCH_STORE_MEMENTO_MAX. On success *out is a malloc'd buffer of
 * *out_len bytes plus a terminating NUL (so JSON text can be used as a C
 * string), owned by the caller; returns 0. Returns -1 with the reason in
 * err for anything that is not a complete, intact frame, and -2 when
 * memory runs out (so callers can tell a damaged memento, which is a
 * verdict on the data, from a shortage, which is not). */
static int memento_decompress(const void *src, size_t len, void **out, size_t *out_len, char *err,
                              size_t errlen)
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

/* ---- checkpoints: compression, checksums, verification ---------------- */

int orch_store_fail(struct orch_store *st, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(st->err, sizeof st->err, "%s: %s", st->where != NULL ? st->where : "state store", what);
    return -1;
}

int orch_checkpoint_seal(struct orch_store *st, const char *run_id, struct orch_checkpoint_seal *seal,
                         int64_t seq)
{
    const struct orch_checkpoint *c = seal->c;
    struct orch_checkpoint sum_of = *c;
    sum_of.seq = seq;
    orch_checkpoint_checksum(&sum_of, seal->sum);
    if (seal->sum[0] == '\0')
        return orch_store_fail(st, "cannot checksum a checkpoint of run %s: out of memory", run_id);
    seal->seq = seq;
    seal->created_ms = c->created_ms != 0 ? c->created_ms : orch_store_now_ms();
    seal->bytes = (int64_t)seal->packed_len + 32 + 80;
    if (c->name != NULL)
        seal->bytes += (int64_t)strlen(c->name);
    if (c->reason != NULL)
        seal->bytes += (int64_t)strlen(c->reason);
    return 0;
}

/* Hands the results to the backend: the chunk as it is to a backend
 * that stores chunks, else read back and merged with res into one list
 * (store.h: the same results either way). rc of the backend's write, or
 * -1 with st->err set. */
static int checkpoint_store(struct orch_store *st, const struct orch_run *run,
                            struct orch_checkpoint_seal *seal, const struct orch_results_chunk *chunk,
                            const struct orch_result *res, size_t nres, const struct orch_kv *state,
                            size_t nstate)
{
    if (chunk == NULL || chunk->n == 0)
        return st->ops->checkpoint_write(st, run, seal, res, nres, state, nstate);
    if (st->ops->checkpoint_write_chunk != NULL)
        return st->ops->checkpoint_write_chunk(st, run, seal, chunk, res, nres, state, nstate);
    struct orch_result *all = NULL;
    int rc = orch_results_merge(chunk, res, nres, &all);
    if (rc != 0)
        return orch_store_fail(st, "cannot write a checkpoint of run %s: %s", run->id,
                               rc == -1 ? "out of memory" : "its packed results are damaged");
    rc = st->ops->checkpoint_write(st, run, seal, all, (size_t)chunk->n + nres, state, nstate);
    free(all);
    return rc;
}

/* A chunk as store.h describes it, or none (NULL, or no results). */
static int chunk_valid(const struct orch_results_chunk *chunk)
{
    if (chunk == NULL || chunk->n == 0)
        return 1;
    return chunk->n > 0 && chunk->blob != NULL && chunk->format == ORCH_PACK_COMPACT && chunk->first >= 1 &&
           chunk->last >= chunk->first + chunk->n - 1;
}

/* Compresses the memento, lets the backend number, seal and store it in
 * its transaction, then sets c->seq, created_ms (when 0), checksum (a heap
 * copy; a previous value is freed, so c must start zeroed), bytes and
 * duration_ms (the whole call, monotonic clock). The checksum's copy is
 * allocated before the backend commits, so a shortage cannot follow a
 * write that landed. On failure c is untouched. */
int orch_store_checkpoint_write_chunk(struct orch_store *st, const struct orch_run *run,
                                      struct orch_checkpoint *c, const struct orch_results_chunk *chunk,
                                      const struct orch_result *res, size_t nres, const struct orch_kv *state,
                                      size_t nstate)
{
    if (run == NULL || run->id == NULL || c == NULL || (res == NULL && nres > 0) ||
        (state == NULL && nstate > 0))
        return orch_store_fail(st, "cannot write a checkpoint: %s",
                               run == NULL || run->id == NULL ? "no run given"
                                                              : "no checkpoint, results or state given");
    if (!chunk_valid(chunk))
        return orch_store_fail(st,
                               "cannot write a checkpoint of run %s: its packed results are no chunk "
                               "(a format, a blob, seqs first to last)",
                               run->id);
    struct orch_checkpoint_seal seal = {.c = c, .t0 = orch_store_mono_ms()};
    void *packed = NULL;
    char why[200];
    if (memento_compress(st, c->memento, c->memento_len, &packed, &seal.packed_len, why, sizeof why) != 0)
        return orch_store_fail(st, "cannot write a checkpoint of run %s: %s", run->id, why);
    seal.packed = packed;
    char *sum_copy = malloc(sizeof seal.sum);
    int rc = sum_copy != NULL
                 ? checkpoint_store(st, run, &seal, chunk, res, nres, state, nstate)
                 : orch_store_fail(st, "cannot write a checkpoint of run %s: out of memory", run->id);
    free(packed);
    if (rc != 0) {
        free(sum_copy);
        return -1;
    }
    memcpy(sum_copy, seal.sum, sizeof seal.sum);
    free(c->checksum);
    c->checksum = sum_copy;
    c->seq = seal.seq;
    c->created_ms = seal.created_ms;
    c->bytes = seal.bytes;
    c->duration_ms = orch_store_mono_ms() - seal.t0;
    return 0;
}

int orch_store_checkpoint_write(struct orch_store *st, const struct orch_run *run, struct orch_checkpoint *c,
                                const struct orch_result *res, size_t nres, const struct orch_kv *state,
                                size_t nstate)
{
    return orch_store_checkpoint_write_chunk(st, run, c, NULL, res, nres, state, nstate);
}

/* Turns a stored row into a checkpoint in place: decompresses its memento
 * and verifies it (valid = 1 when it decompresses to the stored length
 * and the checksum over it matches); without with_memento the raw bytes
 * are dropped (memento NULL, memento_len kept). A memento that does not
 * decompress leaves valid 0 and memento NULL. 0, or -1 when memory runs
 * out (p->c cleared) — never reported as an invalid checkpoint, so a
 * transient shortage cannot make the caller fall back to an older one. */
static int cp_unpack(struct orch_checkpoint_packed *p, int with_memento)
{
    struct orch_checkpoint *c = &p->c;
    void *blob = c->memento;
    size_t blob_len = c->memento_len;
    c->memento = NULL;
    c->memento_len = p->raw_len > 0 ? (size_t)p->raw_len : 0;
    void *raw = NULL;
    size_t raw_len = 0;
    char why[200];
    int rc = memento_decompress(blob, blob_len, &raw, &raw_len, why, sizeof why);
    free(blob);
    if (rc == -2) {
        orch_checkpoint_clear(c);
        return -1;
    }
    if (rc != 0)
        return 0;
    c->memento = raw;
    c->memento_len = raw_len;
    char sum[33];
    orch_checkpoint_checksum(c, sum);
    if (sum[0] == '\0') {
        orch_checkpoint_clear(c);
        return -1;
    }
    c->valid = p->raw_len >= 0 && (size_t)p->raw_len == raw_len && c->checksum != NULL &&
               strcmp(sum, c->checksum) == 0;
    if (!with_memento) {
        free(c->memento);
        c->memento = NULL;
    }
    return 0;
}

/* What the scans of latest, get and list carry to their callback. */
struct cp_scan {
    struct orch_store *st;
    const char *what;
    int with_memento;
    struct orch_checkpoint *out; /* latest, get: the pick */
    int need_valid;              /* latest: skip the ones that do not verify */
    int found, skipped;
    orch_checkpoint_cb cb; /* list */
    void *ud;
};

static int cp_scan_row(void *ud, struct orch_checkpoint_packed *p)
{
    struct cp_scan *s = ud;
    if (cp_unpack(p, s->with_memento) != 0)
        return orch_store_fail(s->st, "%s: out of memory", s->what);
    if (s->cb != NULL) {
        int stop = s->cb(s->ud, &p->c);
        orch_checkpoint_clear(&p->c);
        return stop ? 1 : 0;
    }
    if (s->need_valid && !p->c.valid) {
        s->skipped++;
        orch_checkpoint_clear(&p->c);
        return 0;
    }
    *s->out = p->c;
    s->found = 1;
    return 1;
}

int orch_store_checkpoint_latest(struct orch_store *st, const char *run_id, struct orch_checkpoint *out,
                                 int *skipped)
{
    if (run_id == NULL || out == NULL)
        return orch_store_fail(st, "cannot read the checkpoints: no run given");
    char what[300];
    snprintf(what, sizeof what, "cannot read the checkpoints of run %s", run_id);
    struct cp_scan s = {.st = st, .what = what, .with_memento = 1, .out = out, .need_valid = 1};
    int rc = st->ops->checkpoint_scan(st, run_id, 0, 1, what, cp_scan_row, &s);
    if (skipped != NULL)
        *skipped = s.skipped;
    return rc < 0 ? -1 : s.found;
}

int orch_store_checkpoint_get(struct orch_store *st, const char *run_id, int64_t seq,
                              struct orch_checkpoint *out)
{
    if (run_id == NULL || out == NULL)
        return orch_store_fail(st, "cannot read checkpoint %lld: no run given", (long long)seq);
    if (seq <= 0)
        return 0; /* checkpoints are numbered from 1 */
    char what[300];
    snprintf(what, sizeof what, "cannot read checkpoint %lld of run %s", (long long)seq, run_id);
    struct cp_scan s = {.st = st, .what = what, .with_memento = 1, .out = out};
    int rc = st->ops->checkpoint_scan(st, run_id, seq, 0, what, cp_scan_row, &s);
    return rc < 0 ? -1 : s.found;
}

int orch_store_checkpoint_list(struct orch_store *st, const char *run_id, orch_checkpoint_cb cb, void *ud)
{
    if (run_id == NULL || cb == NULL)
        return orch_store_fail(st, "cannot list the checkpoints: no run given");
    char what[300];
    snprintf(what, sizeof what, "cannot list the checkpoints of run %s", run_id);
    struct cp_scan s = {.st = st, .what = what, .cb = cb, .ud = ud};
    return st->ops->checkpoint_scan(st, run_id, 0, 0, what, cp_scan_row, &s) < 0 ? -1 : 0;
}

/* Where each column of the four stats queries goes: an int64 field, or
 * a double one when dbl is set. */
struct stats_col {
    size_t off;
    int dbl;
};
#define STAT_I(f)                                                                                            \
    {                                                                                                        \
        offsetof(struct orch_store_stats, f), 0                                                              \
    }
#define STAT_D(f)                                                                                            \
    {                                                                                                        \
        offsetof(struct orch_store_stats, f), 1                                                              \
    }
static const struct stats_col stats_cols[ORCH_STATS_NQUERIES][6] = {
    [ORCH_STATS_RUNS] = {STAT_I(runs), STAT_I(active), STAT_I(paused), STAT_I(failed), STAT_I(completed),
                         STAT_I(recoveries)},
    [ORCH_STATS_CPS] = {STAT_I(checkpoints), STAT_D(checkpoint_mean_ms), STAT_D(checkpoint_max_ms)},
    [ORCH_STATS_JOURNAL] = {STAT_I(journal_entries), STAT_I(journal_hits), STAT_D(journal_saved_usd)},
    [ORCH_STATS_SIZE] = {STAT_I(bytes)},
};
static const int stats_ncols[ORCH_STATS_NQUERIES] = {6, 3, 3, 1};

const char *const orch_stats_what[ORCH_STATS_NQUERIES] = {
    "cannot count runs",
    "cannot count checkpoints",
    "cannot count journal entries",
    "cannot measure the database",
};

int orch_stats_ncols(int q)
{
    return stats_ncols[q];
}

void orch_stats_set(struct orch_store_stats *out, int q, int col, int64_t iv, double dv)
{
    const struct stats_col *c = &stats_cols[q][col];
    char *field = (char *)out + c->off;
    if (c->dbl)
        memcpy(field, &dv, sizeof dv);
    else
        memcpy(field, &iv, sizeof iv);
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

/* ---- many workers, one run -------------------------------------------- */

/* A backend without the operation (none today) is refused by name, not
 * crashed into. */
static int store_unsupported(struct orch_store *st, const char *what)
{
    return orch_store_fail(st, "%s is not supported by the %s store", what, st->ops->name);
}

int orch_store_lease_plan(struct orch_store *st, const char *run_id, const struct orch_lease *l, size_t n)
{
    if (st->ops->lease_plan == NULL)
        return store_unsupported(st, "orch worker");
    if (run_id == NULL || (l == NULL && n > 0))
        return orch_store_fail(st, "lease_plan: no run id or no leases");
    for (size_t i = 0; i < n; i++) {
        if (l[i].no != (int64_t)i + 1 || l[i].rows < 0 || l[i].first_index < 0)
            return orch_store_fail(st,
                                   "lease_plan: lease %zu of run %s is numbered %lld with %lld rows; leases "
                                   "are numbered 1, 2, ... with 0 or more rows",
                                   i + 1, run_id, (long long)l[i].no, (long long)l[i].rows);
    }
    return st->ops->lease_plan(st, run_id, l, n);
}

int orch_store_lease_claim(struct orch_store *st, const char *run_id, const char *worker, int64_t stale_ms,
                           struct orch_lease *out)
{
    if (st->ops->lease_claim == NULL)
        return store_unsupported(st, "orch worker");
    if (run_id == NULL || worker == NULL || out == NULL || stale_ms < 0)
        return orch_store_fail(st, "lease_claim: needs a run id, a worker and a staleness of 0 ms or more");
    memset(out, 0, sizeof *out);
    return st->ops->lease_claim(st, run_id, worker, stale_ms, out);
}

int orch_store_lease_heartbeat(struct orch_store *st, const char *run_id, int64_t no, const char *worker)
{
    if (st->ops->lease_heartbeat == NULL)
        return store_unsupported(st, "orch worker");
    if (run_id == NULL || worker == NULL)
        return orch_store_fail(st, "lease_heartbeat: needs a run id and a worker");
    return st->ops->lease_heartbeat(st, run_id, no, worker);
}

int orch_store_lease_commit(struct orch_store *st, const char *run_id, const struct orch_lease_commit *c,
                            const struct orch_result *res, size_t nres)
{
    if (st->ops->lease_commit == NULL)
        return store_unsupported(st, "orch worker");
    if (run_id == NULL || c == NULL || c->worker == NULL || c->end < 0 || c->end > 2 ||
        (res == NULL && nres > 0))
        return orch_store_fail(st, "lease_commit: needs a run id, a worker and an end of 0, 1 or 2");
    for (size_t i = 0; i < nres; i++) {
        if (res[i].status == NULL)
            return orch_store_fail(st, "cannot store result %lld of run %s: it has no status",
                                   (long long)res[i].seq, run_id);
    }
    return st->ops->lease_commit(st, run_id, c, res, nres);
}

int orch_store_lease_list(struct orch_store *st, const char *run_id, orch_lease_cb cb, void *ud)
{
    if (st->ops->lease_list == NULL)
        return store_unsupported(st, "orch worker");
    if (run_id == NULL || cb == NULL)
        return orch_store_fail(st, "lease_list: needs a run id and a callback");
    return st->ops->lease_list(st, run_id, cb, ud);
}

int orch_store_budget_reserve(struct orch_store *st, const char *run_id, double est_usd, double max_usd)
{
    if (st->ops->budget_reserve == NULL)
        return store_unsupported(st, "a shared budget");
    if (run_id == NULL || !(est_usd >= 0) || !(max_usd >= 0))
        return orch_store_fail(st, "budget_reserve: needs a run id and amounts of 0 or more");
    return st->ops->budget_reserve(st, run_id, est_usd, max_usd);
}

int orch_store_budget_settle(struct orch_store *st, const char *run_id, double released_usd, double spent_usd)
{
    if (st->ops->budget_settle == NULL)
        return store_unsupported(st, "a shared budget");
    if (run_id == NULL || !(released_usd >= 0) || !(spent_usd >= 0))
        return orch_store_fail(st, "budget_settle: needs a run id and amounts of 0 or more");
    return st->ops->budget_settle(st, run_id, released_usd, spent_usd);
}

int orch_store_budget_set(struct orch_store *st, const char *run_id, double max_usd)
{
    if (st->ops->budget_set == NULL)
        return store_unsupported(st, "a shared budget");
    if (run_id == NULL || !(max_usd >= 0))
        return orch_store_fail(st, "budget_set: needs a run id and an amount of 0 or more");
    return st->ops->budget_set(st, run_id, max_usd);
}

int orch_store_budget_get(struct orch_store *st, const char *run_id, double *max_usd, double *spent_usd,
                          double *reserved_usd)
{
    if (st->ops->budget_get == NULL)
        return store_unsupported(st, "a shared budget");
    if (run_id == NULL || max_usd == NULL || spent_usd == NULL || reserved_usd == NULL)
        return orch_store_fail(st, "budget_get: needs a run id and three outputs");
    return st->ops->budget_get(st, run_id, max_usd, spent_usd, reserved_usd);
}

int orch_store_journal_pend(struct orch_store *st, const char *key, const char *owner, int64_t ttl_ms)
{
    if (st->ops->journal_pend == NULL)
        return store_unsupported(st, "a shared journal");
    if (key == NULL || owner == NULL || ttl_ms <= 0)
        return orch_store_fail(st, "journal_pend: needs a key, an owner and a time to live above 0 ms");
    return st->ops->journal_pend(st, key, owner, ttl_ms);
}

int orch_store_run_set_status(struct orch_store *st, const char *run_id, enum orch_run_status status,
                              const char *error)
{
    if (st->ops->run_set_status == NULL)
        return store_unsupported(st, "orch worker");
    if (run_id == NULL || (unsigned)status > ORCH_RUN_FAILED)
        return orch_store_fail(st, "run_set_status: needs a run id and a status");
    return st->ops->run_set_status(st, run_id, status, error);
}

/* The bucket's shape is decided here, once for every backend: one
 * second's worth of the limit (at least one token) is the burst a run may
 * send at once, as one process's own limiter allows (orch.limits). */
int64_t orch_store_rate_take(struct orch_store *st, const char *run_id, const char *kind, double amount,
                             double limit_per_min)
{
    if (st->ops->rate_take == NULL)
        return store_unsupported(st, "a shared rate limit");
    if (run_id == NULL || kind == NULL || kind[0] == '\0' || !(amount >= 0) ||
        !(limit_per_min > 0 && limit_per_min < 1e15))
        return orch_store_fail(st, "rate_take: needs a run id, a kind, an amount of 0 or more and a limit "
                                   "per minute above 0");
    double capacity = limit_per_min / 60.0;
    if (capacity < 1)
        capacity = 1;
    if (amount > capacity)
        amount = capacity;
    double per_ms = limit_per_min / 60000.0;
    double left = 0;
    int rc = st->ops->rate_take(st, run_id, kind, amount, capacity, per_ms, &left);
    if (rc != 0)
        return rc > 0 ? 0 : -1;
    double wait = (amount - left) / per_ms;
    return wait < 1 ? 1 : (int64_t)wait + 1;
}

void orch_lease_clear(struct orch_lease *l)
{
    if (l == NULL)
        return;
    free(l->status);
    free(l->owner);
    memset(l, 0, sizeof *l);
}
