/* result_pack.c — results packed into one blob and read back (see
 * result_pack.h for the three formats). Pure C: depends on libc. */
#include "result_pack.h"

#include <stdlib.h>
#include <string.h>

/* ---- the fixed form ---------------------------------------------------- */

/* A result, little-endian: seq (8 bytes), then the lengths of key,
 * status, error and data (4 bytes each; FIXED_NULL for NULL), then their
 * bytes. */
#define FIXED_NULL 0xFFFFFFFFu
#define FIXED_HEAD 24

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---- the keyed and compact forms --------------------------------------- */

/* The flags byte: the status's code in the low three bits (0: the status
 * follows as text), then which of key, error and data follow; in the
 * compact form KEY_NEXT with HAS_KEY: the key is the one before counted
 * on (count_on), and no length or bytes follow. */
#define HAS_KEY 0x08
#define HAS_ERROR 0x10
#define HAS_DATA 0x20
#define KEY_NEXT 0x40
#define STATUS_MASK 0x07

/* Counts the key k (n bytes and its NUL, room for n + 2) on by one, in
 * place: the decimal digits it ends with plus one, a digit longer when
 * they are all 9s ("a9" gives "a10", "0099" "0100"). Its new length, or
 * 0 when k does not end with a digit or would grow past
 * ORCH_PACK_MAXKEY (k is then no key). */
static size_t count_on(char *k, size_t n)
{
    if (n == 0 || k[n - 1] < '0' || k[n - 1] > '9')
        return 0;
    size_t i = n;
    while (i > 0 && k[i - 1] == '9')
        k[--i] = '0';
    if (i > 0 && k[i - 1] >= '0' && k[i - 1] <= '8') {
        k[i - 1]++;
        return n;
    }
    if (n + 1 > ORCH_PACK_MAXKEY)
        return 0;
    memmove(k + i + 1, k + i, n - i + 1); /* the zeros and the NUL */
    k[i] = '1';
    return n + 1;
}

/* After a result packed with key (n bytes; NULL: none) in the compact
 * form: the key the next one counts on to, in next (*nextlen 0: none). */
static void key_after(char *next, size_t *nextlen, const char *key, size_t n)
{
    if (key == NULL || n > ORCH_PACK_MAXKEY) {
        *nextlen = 0;
        return;
    }
    memcpy(next, key, n + 1);
    *nextlen = count_on(next, n);
}

static const char *const status_names[] = {NULL, "ok", "failed", "dropped", "defaulted"};
enum { NSTATUS = sizeof status_names / sizeof status_names[0] };

static unsigned status_code(const char *status)
{
    for (unsigned i = 1; i < NSTATUS; i++)
        if (strcmp(status, status_names[i]) == 0)
            return i;
    return 0;
}

static unsigned char *put_varint(unsigned char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

/* 0, or -1 when the blob ends inside the varint or it overflows. */
static int get_varint(struct orch_results_cursor *c, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64 && c->p < c->end; shift += 7) {
        unsigned char b = *c->p++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* ---- both -------------------------------------------------------------- */

int orch_results_packable(const struct orch_result *res, size_t nres)
{
    for (size_t i = 0; i < nres; i++)
        if (res[i].status == NULL || res[i].seq < 1 || (i > 0 && res[i].seq <= res[i - 1].seq))
            return 0;
    return 1;
}

/* The status's code; the common "ok" without a call. */
static unsigned status_of(const char *status)
{
    if (status[0] == 'o' && status[1] == 'k' && status[2] == '\0')
        return 1;
    return status_code(status);
}

/* A buffer that grows as results are packed into it. */
struct pack_buf {
    unsigned char *p;
    size_t len, cap;
};

/* Room for n more bytes: 0, or -1 when memory runs out. */
static int reserve(struct pack_buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return 0;
    size_t cap = b->cap > 0 ? b->cap : 4096;
    while (cap - b->len < n)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (p == NULL)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Most rows in the keyed and compact forms: "ok", a key under 128
 * bytes, nothing else, one seq after the one before or close: step,
 * flags and length take a byte each, and the key is measured while it is
 * copied (one pass instead of strlen and memcpy: a third of a
 * checkpoint's instructions before, bench/changes.md). In the compact
 * form (next not NULL: the key counted on from the result before, see
 * key_after) a key equal to next is no bytes but a flag. The same bytes
 * as pack_one's otherwise. 1 when packed, 0 when r is no such row
 * (nothing appended), -1 when memory runs out. */
static int pack_plain(struct pack_buf *b, const struct orch_result *r, int64_t prev, char *next,
                      size_t *nextlen)
{
    enum { MAXKEY = ORCH_PACK_MAXKEY };
    const char *st = r->status;
    uint64_t step = (uint64_t)(r->seq - prev);
    if (r->key == NULL || r->error != NULL || r->data != NULL || step >= 0x80 || st[0] != 'o' ||
        st[1] != 'k' || st[2] != '\0')
        return 0;
    if (reserve(b, 3 + MAXKEY + 1) != 0)
        return -1;
    unsigned char *p = b->p + b->len;
    if (next != NULL && *nextlen > 0 && strcmp(r->key, next) == 0) {
        p[0] = (unsigned char)step;
        p[1] = 1 | HAS_KEY | KEY_NEXT;
        b->len += 2;
        *nextlen = count_on(next, *nextlen);
        return 1;
    }
    unsigned char *k = p + 3;
    size_t n = 0;
    for (;;) {
        char ch = r->key[n];
        k[n] = (unsigned char)ch; /* its NUL too */
        if (ch == '\0')
            break;
        if (++n > MAXKEY)
            return 0;
    }
    p[0] = (unsigned char)step;
    p[1] = 1 | HAS_KEY;
    p[2] = (unsigned char)n;
    b->len += 3 + n + 1;
    if (next != NULL)
        key_after(next, nextlen, r->key, n);
    return 1;
}

/* Appends r in format (prev: the seq packed before it; next, nextlen:
 * pack_plain's, updated). 0, or -1 when memory runs out or a length does
 * not fit the fixed form. */
static int pack_one(struct pack_buf *b, int format, const struct orch_result *r, int64_t prev, char *next,
                    size_t *nextlen)
{
    const void *v[4] = {r->key, r->status, r->error, r->data};
    size_t n[4] = {r->key != NULL ? strlen(r->key) : 0, 0, r->error != NULL ? strlen(r->error) : 0,
                   r->data != NULL ? r->data_len : 0};
    unsigned code = format != ORCH_PACK_FIXED ? status_of(r->status) : 0;
    if (code == 0)
        n[1] = strlen(r->status);
    size_t need = FIXED_HEAD + 1;
    for (int k = 0; k < 4; k++) {
        if (format == ORCH_PACK_FIXED && n[k] >= FIXED_NULL)
            return -1;
        need += n[k] + 11; /* a varint and a NUL at the most */
    }
    if (reserve(b, need) != 0)
        return -1;
    unsigned char *p = b->p + b->len;
    if (format == ORCH_PACK_FIXED) {
        uint64_t seq = (uint64_t)r->seq;
        put_u32(p, (uint32_t)seq);
        put_u32(p + 4, (uint32_t)(seq >> 32));
        for (int k = 0; k < 4; k++)
            put_u32(p + 8 + 4 * k, v[k] != NULL ? (uint32_t)n[k] : FIXED_NULL);
        p += FIXED_HEAD;
    } else {
        p = put_varint(p, (uint64_t)(r->seq - prev));
        *p++ = (unsigned char)(code | (r->key != NULL ? HAS_KEY : 0) | (r->error != NULL ? HAS_ERROR : 0) |
                               (r->data != NULL ? HAS_DATA : 0));
    }
    for (int k = 0; k < 4; k++) {
        if (v[k] == NULL || (k == 1 && code != 0))
            continue;
        if (format != ORCH_PACK_FIXED)
            p = put_varint(p, n[k]);
        if (n[k] > 0)
            memcpy(p, v[k], n[k]);
        p += n[k];
        if (k < 3)
            *p++ = '\0'; /* text keeps its NUL */
    }
    b->len = (size_t)(p - b->p);
    if (next != NULL)
        key_after(next, nextlen, r->key, n[0]);
    return 0;
}

unsigned char *orch_results_pack(int format, const struct orch_result *res, size_t nres, size_t *out_len)
{
    struct pack_buf b = {0};
    if (reserve(&b, nres * 16) != 0)
        return NULL;
    int64_t prev = 0;
    char keys[ORCH_PACK_MAXKEY + 2];
    char *next = format == ORCH_PACK_COMPACT ? keys : NULL; /* the keyed form counts none */
    size_t nextlen = 0;
    for (size_t i = 0; i < nres; i++) {
        int done = format != ORCH_PACK_FIXED ? pack_plain(&b, &res[i], prev, next, &nextlen) : 0;
        if (done == 0)
            done = pack_one(&b, format, &res[i], prev, next, &nextlen) == 0 ? 1 : -1;
        if (done < 0) {
            free(b.p);
            return NULL;
        }
        prev = res[i].seq;
    }
    *out_len = b.len;
    return b.p;
}

int orch_results_open(struct orch_results_cursor *c, int format, const void *blob, size_t len, int64_t n)
{
    c->p = blob;
    c->end = c->p + len;
    c->format = format;
    c->prev = 0;
    c->left = n;
    c->keylen = 0;
    size_t least = format == ORCH_PACK_FIXED                                  ? FIXED_HEAD
                   : format == ORCH_PACK_KEYED || format == ORCH_PACK_COMPACT ? 2
                                                                              : 0;
    return blob == NULL || least == 0 || n <= 0 || (uint64_t)n > len / least ? -1 : 0;
}

/* One field at c->p, len bytes (and its NUL for text): *out points into
 * the blob. 0, or -1 when the blob is too short or a text lacks its NUL. */
static int take(struct orch_results_cursor *c, uint64_t len, int text, const void **out)
{
    uint64_t need = len + (text ? 1 : 0);
    if ((uint64_t)(c->end - c->p) < need || (text && c->p[len] != '\0'))
        return -1;
    *out = c->p;
    c->p += need;
    return 0;
}

/* The next result in the keyed or compact form: its seq step and flags,
 * then the fields present (their lengths in len; a field absent is
 * NULL). A counted key is made in c->key; in the compact form every key
 * is kept there for the next one to count on from. */
static int next_compact(struct orch_results_cursor *c, int64_t *seq, const void *v[4], uint64_t len[4])
{
    uint64_t step;
    if (get_varint(c, &step) != 0 || step == 0 || step > (uint64_t)(INT64_MAX - c->prev) || c->p >= c->end)
        return -1;
    *seq = c->prev + (int64_t)step;
    unsigned flags = *c->p++;
    unsigned code = flags & STATUS_MASK;
    int compact = c->format == ORCH_PACK_COMPACT;
    if (code >= NSTATUS || ((flags & KEY_NEXT) && (!compact || (flags & HAS_KEY) == 0)))
        return -1;
    const unsigned has[4] = {HAS_KEY, 0, HAS_ERROR, HAS_DATA};
    for (int k = 0; k < 4; k++) {
        v[k] = NULL;
        len[k] = 0;
        if (k == 1 && code != 0) {
            v[k] = status_names[code];
            continue;
        }
        if (k != 1 && (flags & has[k]) == 0)
            continue;
        if (k == 0 && (flags & KEY_NEXT)) {
            c->keylen = c->keylen > 0 ? count_on(c->key, c->keylen) : 0;
            if (c->keylen == 0)
                return -1; /* nothing to count on from */
            v[0] = c->key;
            len[0] = c->keylen;
            continue;
        }
        if (get_varint(c, &len[k]) != 0 || take(c, len[k], k < 3, &v[k]) != 0)
            return -1;
    }
    if (compact && v[0] != c->key) {
        c->keylen = v[0] != NULL && len[0] <= ORCH_PACK_MAXKEY ? (size_t)len[0] : 0;
        if (c->keylen > 0)
            memcpy(c->key, v[0], c->keylen + 1);
    }
    return 0;
}

/* The next result in the fixed form. */
static int next_fixed(struct orch_results_cursor *c, int64_t *seq, const void *v[4], uint64_t len[4])
{
    if (c->end - c->p < FIXED_HEAD)
        return -1;
    *seq = (int64_t)((uint64_t)get_u32(c->p) | (uint64_t)get_u32(c->p + 4) << 32);
    uint32_t l[4];
    for (int k = 0; k < 4; k++)
        l[k] = get_u32(c->p + 8 + 4 * k);
    c->p += FIXED_HEAD;
    for (int k = 0; k < 4; k++) {
        v[k] = NULL;
        len[k] = l[k] == FIXED_NULL ? 0 : l[k];
        if (l[k] != FIXED_NULL && take(c, l[k], k < 3, &v[k]) != 0)
            return -1;
    }
    return 0;
}

int orch_results_next(struct orch_results_cursor *c, struct orch_result *r)
{
    if (c->left <= 0)
        return -1;
    int64_t seq;
    const void *v[4];
    uint64_t len[4];
    int rc = c->format != ORCH_PACK_FIXED ? next_compact(c, &seq, v, len) : next_fixed(c, &seq, v, len);
    if (rc != 0 || v[1] == NULL)
        return -1; /* every stored result has a status */
    r->seq = seq;
    r->key = v[0];
    r->status = v[1];
    r->error = v[2];
    r->data = v[3];
    r->data_len = v[3] != NULL ? (size_t)len[3] : 0;
    c->prev = seq;
    c->left--;
    return 0;
}

/* ---- packed as rows settle --------------------------------------------- */

int orch_results_packer_add(struct orch_results_packer *pk, const struct orch_result *r)
{
    if (r->status == NULL || r->data != NULL || r->seq <= pk->last || r->seq < 1)
        return -2;
    struct orch_results_part *part = r->error == NULL ? &pk->ok : &pk->failed;
    struct pack_buf b = {part->p, part->len, part->cap};
    int64_t prev = part->n > 0 ? part->last : 0;
    size_t nextlen = part->nextlen;
    int done = pack_plain(&b, r, prev, part->next, &nextlen);
    if (done == 0)
        done = pack_one(&b, ORCH_PACK_COMPACT, r, prev, part->next, &nextlen) == 0 ? 1 : -1;
    part->p = b.p; /* a grown buffer is kept even when the result did not fit */
    part->cap = b.cap;
    if (done < 0)
        return -1;
    part->len = b.len;
    part->nextlen = nextlen;
    if (part->n++ == 0)
        part->first = r->seq;
    part->last = r->seq;
    pk->last = r->seq;
    return 0;
}

static void part_clear(struct orch_results_part *part, size_t keep)
{
    if (part->cap > keep) {
        free(part->p);
        part->p = NULL;
        part->cap = 0;
    }
    part->len = 0;
    part->nextlen = 0;
    part->n = part->first = part->last = 0;
}

void orch_results_packer_clear(struct orch_results_packer *pk, size_t keep)
{
    part_clear(&pk->ok, keep);
    part_clear(&pk->failed, keep);
}

void orch_results_packer_free(struct orch_results_packer *pk)
{
    orch_results_packer_clear(pk, 0);
    pk->last = 0;
}

int orch_results_merge(const struct orch_results_chunk *chunk, const struct orch_result *res, size_t nres,
                       struct orch_result **out)
{
    size_t n = (size_t)chunk->n + nres;
    struct orch_results_cursor c;
    struct orch_result r;
    /* counted keys are made in the cursor: a first pass sizes their copies */
    size_t keys = 0;
    if (chunk->n > 0 && chunk->format == ORCH_PACK_COMPACT) {
        if (orch_results_open(&c, chunk->format, chunk->blob, chunk->len, chunk->n) != 0)
            return -2;
        while (c.left > 0) {
            if (orch_results_next(&c, &r) != 0)
                return -2;
            keys += r.key == c.key ? c.keylen + 1 : 0;
        }
    }
    size_t slots = n > 0 ? n : 1;
    struct orch_result *all = malloc(slots * sizeof *all + keys);
    if (all == NULL)
        return -1;
    char *kp = (char *)(all + slots);
    int rc = chunk->n > 0 ? orch_results_open(&c, chunk->format, chunk->blob, chunk->len, chunk->n) : 0;
    int have = rc == 0 && chunk->n > 0 && orch_results_next(&c, &r) == 0;
    size_t i = 0, k = 0;
    while (rc == 0 && k < n) {
        if (have && (i == nres || r.seq < res[i].seq)) {
            if (r.key == c.key) { /* counted: a copy that outlives the cursor */
                memcpy(kp, c.key, c.keylen + 1);
                r.key = kp;
                kp += c.keylen + 1;
            }
            all[k++] = r;
            have = c.left > 0 && orch_results_next(&c, &r) == 0;
        } else if (i < nres) {
            all[k++] = res[i++];
        } else {
            rc = -2; /* the chunk ended before its n results */
        }
    }
    if (rc != 0) {
        free(all);
        return -2;
    }
    *out = all;
    return 0;
}
