/* journal_hits.c — journal hits counted in memory (journal_hits.h). */
#include "journal_hits.h"

#include <stdlib.h>
#include <string.h>

/* The keys h takes: its cap, a power of two, or ORCH_JHITS_MAX. */
static size_t cap_of(const struct orch_jhits *h)
{
    return h->cap > 0 ? h->cap : ORCH_JHITS_MAX;
}

/* Slots: twice the cap, a power of two, at most half full. */
#define NSLOTS (2 * cap_of(h))

/* FNV-1a: keys are hex digests already, any spread will do. */
static size_t slot_of(const struct orch_jhits *h, const char *key)
{
    uint64_t x = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++)
        x = (x ^ *p) * 1099511628211ULL;
    return (size_t)(x & (NSLOTS - 1));
}

/* The slot holding key, or the free slot where it would go. */
static struct orch_jhit *find(const struct orch_jhits *h, const char *key)
{
    size_t i = slot_of(h, key);
    while (h->slots[i].key != NULL && strcmp(h->slots[i].key, key) != 0)
        i = (i + 1) & (NSLOTS - 1);
    return &h->slots[i];
}

int64_t orch_jhits_add(struct orch_jhits *h, const char *key, int64_t row)
{
    return orch_jhits_addn(h, key, row, 1, 0.0);
}

int64_t orch_jhits_addn(struct orch_jhits *h, const char *key, int64_t row, int64_t n, double cost)
{
    if (h->slots == NULL) {
        h->slots = calloc(NSLOTS, sizeof *h->slots);
        if (h->slots == NULL)
            return -1;
    }
    struct orch_jhit *s = find(h, key);
    if (s->key == NULL) {
        if (h->n >= cap_of(h))
            return -1;
        s->key = strdup(key);
        if (s->key == NULL)
            return -1;
        s->n = 0;
        h->n++;
    }
    s->row = row;
    s->cost = cost;
    return s->n += n;
}

int64_t orch_jhits_get(const struct orch_jhits *h, const char *key)
{
    if (h->slots == NULL || h->n == 0)
        return 0;
    return find(h, key)->n;
}

void orch_jhits_sums(const struct orch_jhits *h, int64_t *hits, double *saved)
{
    *hits = 0;
    *saved = 0.0;
    for (size_t i = 0; h->n > 0 && i < NSLOTS; i++) {
        if (h->slots[i].key != NULL) {
            *hits += h->slots[i].n;
            *saved += (double)h->slots[i].n * h->slots[i].cost;
        }
    }
}

static int by_row(const void *a, const void *b)
{
    const struct orch_jhit *x = *(struct orch_jhit *const *)a, *y = *(struct orch_jhit *const *)b;
    if (x->row != y->row)
        return x->row < y->row ? -1 : 1;
    return strcmp(x->key, y->key);
}

struct orch_jhit **orch_jhits_sorted(const struct orch_jhits *h)
{
    if (h->n == 0)
        return NULL;
    struct orch_jhit **out = malloc(h->n * sizeof *out);
    if (out == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < NSLOTS; i++) {
        if (h->slots[i].key != NULL)
            out[k++] = &h->slots[i];
    }
    qsort(out, k, sizeof *out, by_row);
    return out;
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

#define ENTRY_HEAD 18 /* row, n, key length */

unsigned char *orch_jhits_pack(struct orch_jhit *const *sorted, size_t n, size_t *len, int64_t *hits,
                               double *saved)
{
    size_t size = 0;
    for (size_t i = 0; i < n; i++)
        size += ENTRY_HEAD + strlen(sorted[i]->key);
    unsigned char *b = malloc(size > 0 ? size : 1), *p = b;
    if (b == NULL)
        return NULL;
    *hits = 0;
    *saved = 0.0;
    for (size_t i = 0; i < n; i++) {
        const struct orch_jhit *e = sorted[i];
        size_t k = strlen(e->key);
        if (k > 0xffff)
            k = 0xffff; /* no key of the journal's is near that long */
        put64(p, (uint64_t)e->row);
        put64(p + 8, (uint64_t)e->n);
        p[16] = (unsigned char)(k & 0xff);
        p[17] = (unsigned char)(k >> 8);
        memcpy(p + ENTRY_HEAD, e->key, k);
        p += ENTRY_HEAD + k;
        *hits += e->n;
        *saved += (double)e->n * e->cost;
    }
    *len = (size_t)(p - b);
    return b;
}

int orch_jhits_unpack(const unsigned char *b, size_t len, size_t *off, int64_t *row, int64_t *n, char *key,
                      size_t keymax)
{
    if (*off == len)
        return 0;
    if (len - *off < ENTRY_HEAD)
        return -1;
    const unsigned char *p = b + *off;
    size_t k = (size_t)p[16] | (size_t)p[17] << 8;
    if (len - *off - ENTRY_HEAD < k || k + 1 > keymax)
        return -1;
    *row = (int64_t)get64(p);
    *n = (int64_t)get64(p + 8);
    memcpy(key, p + ENTRY_HEAD, k);
    key[k] = '\0';
    *off += ENTRY_HEAD + k;
    return 1;
}

void orch_jhits_clear(struct orch_jhits *h)
{
    if (h->slots == NULL || h->n == 0)
        return;
    for (size_t i = 0; i < NSLOTS; i++) {
        free(h->slots[i].key);
        h->slots[i].key = NULL;
        h->slots[i].n = 0;
        h->slots[i].row = 0;
        h->slots[i].cost = 0.0;
    }
    h->n = 0;
}

void orch_jhits_free(struct orch_jhits *h)
{
    orch_jhits_clear(h);
    free(h->slots);
    h->slots = NULL;
}
