/* journal_ahead.c — journal entries read ahead (journal_ahead.h). */
#include "journal_ahead.h"

#include <stdlib.h>
#include <string.h>

/* Slots: twice the entries, a power of two, at most half full. */
#define NSLOTS (2 * ORCH_JAHEAD_ROWS)

/* FNV-1a: keys are hex digests already, any spread will do. */
static size_t slot_of(const char *key)
{
    uint64_t x = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++)
        x = (x ^ *p) * 1099511628211ULL;
    return (size_t)(x & (NSLOTS - 1));
}

/* The slot holding key, or the free slot where it would go. */
static size_t find(const struct orch_jahead *a, const char *key)
{
    size_t i = slot_of(key);
    while (a->slots[i] != 0 && strcmp(a->mem + a->e[a->slots[i] - 1].key, key) != 0)
        i = (i + 1) & (NSLOTS - 1);
    return i;
}

int orch_jahead_follows(struct orch_jahead *a, int64_t row)
{
    int follows = a->last > 0 && row > a->last && row - a->last <= ORCH_JAHEAD_ROWS;
    a->steps = follows ? a->steps + 1 : 0;
    a->last = row;
    return a->steps >= 2;
}

/* Room for need more bytes in a->mem, within ORCH_JAHEAD_BYTES: 0 or -1. */
static int reserve(struct orch_jahead *a, size_t need)
{
    if (need > ORCH_JAHEAD_BYTES - a->used)
        return -1;
    if (a->used + need <= a->cap)
        return 0;
    size_t cap = a->cap > 0 ? a->cap : 16384;
    while (cap < a->used + need)
        cap *= 2;
    if (cap > ORCH_JAHEAD_BYTES)
        cap = ORCH_JAHEAD_BYTES;
    char *mem = realloc(a->mem, cap);
    if (mem == NULL)
        return -1;
    a->mem = mem;
    a->cap = cap;
    return 0;
}

int orch_jahead_add(struct orch_jahead *a, const char *key, const void *resp, size_t resplen,
                    int64_t tokens_in, int64_t tokens_out, double cost_usd, int64_t row)
{
    if (a->e == NULL) {
        a->e = malloc(ORCH_JAHEAD_ROWS * sizeof *a->e);
        a->slots = calloc(NSLOTS, sizeof *a->slots);
        if (a->e == NULL || a->slots == NULL) {
            orch_jahead_free(a);
            return -1;
        }
    }
    size_t keylen = strlen(key);
    if (a->n >= ORCH_JAHEAD_ROWS || resplen > ORCH_JAHEAD_BYTES || reserve(a, keylen + resplen + 2) != 0)
        return -1;
    size_t i = find(a, key);
    if (a->slots[i] != 0)
        return 0; /* a key is one entry: the journal's keys are unique */
    struct orch_jahead_entry *e = &a->e[a->n];
    e->key = a->used;
    memcpy(a->mem + a->used, key, keylen + 1);
    e->resp = a->used + keylen + 1;
    if (resplen > 0)
        memcpy(a->mem + e->resp, resp, resplen);
    a->mem[e->resp + resplen] = '\0';
    a->used += keylen + resplen + 2;
    e->resplen = resplen;
    e->tokens_in = tokens_in;
    e->tokens_out = tokens_out;
    e->cost_usd = cost_usd;
    e->row = row;
    a->slots[i] = (uint16_t)(++a->n);
    return 0;
}

const struct orch_jahead_entry *orch_jahead_find(const struct orch_jahead *a, const char *key)
{
    if (a->n == 0)
        return NULL;
    size_t i = find(a, key);
    return a->slots[i] != 0 ? &a->e[a->slots[i] - 1] : NULL;
}

void orch_jahead_clear(struct orch_jahead *a)
{
    if (a->n == 0)
        return;
    memset(a->slots, 0, NSLOTS * sizeof *a->slots);
    a->n = 0;
    a->used = 0;
}

void orch_jahead_free(struct orch_jahead *a)
{
    free(a->e);
    free(a->slots);
    free(a->mem);
    a->e = NULL;
    a->slots = NULL;
    a->mem = NULL;
    a->n = a->used = a->cap = 0;
}
