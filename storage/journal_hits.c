/* journal_hits.c — journal hits counted in memory (journal_hits.h). */
#include "journal_hits.h"

#include <stdlib.h>
#include <string.h>

#define NSLOTS (2 * ORCH_JHITS_MAX) /* a power of two, at most half full */

/* FNV-1a: keys are hex digests already, any spread will do. */
static size_t slot_of(const char *key)
{
    uint64_t x = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++)
        x = (x ^ *p) * 1099511628211ULL;
    return (size_t)(x & (NSLOTS - 1));
}

/* The slot holding key, or the free slot where it would go. */
static struct orch_jhit *find(const struct orch_jhits *h, const char *key)
{
    size_t i = slot_of(key);
    while (h->slots[i].key != NULL && strcmp(h->slots[i].key, key) != 0)
        i = (i + 1) & (NSLOTS - 1);
    return &h->slots[i];
}

int64_t orch_jhits_add(struct orch_jhits *h, const char *key, int64_t row)
{
    if (h->slots == NULL) {
        h->slots = calloc(NSLOTS, sizeof *h->slots);
        if (h->slots == NULL)
            return -1;
    }
    struct orch_jhit *s = find(h, key);
    if (s->key == NULL) {
        if (h->n >= ORCH_JHITS_MAX)
            return -1;
        s->key = strdup(key);
        if (s->key == NULL)
            return -1;
        s->n = 0;
        h->n++;
    }
    s->row = row;
    return ++s->n;
}

int64_t orch_jhits_get(const struct orch_jhits *h, const char *key)
{
    if (h->slots == NULL || h->n == 0)
        return 0;
    return find(h, key)->n;
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

void orch_jhits_clear(struct orch_jhits *h)
{
    if (h->slots == NULL || h->n == 0)
        return;
    for (size_t i = 0; i < NSLOTS; i++) {
        free(h->slots[i].key);
        h->slots[i].key = NULL;
        h->slots[i].n = 0;
        h->slots[i].row = 0;
    }
    h->n = 0;
}

void orch_jhits_free(struct orch_jhits *h)
{
    orch_jhits_clear(h);
    free(h->slots);
    h->slots = NULL;
}
