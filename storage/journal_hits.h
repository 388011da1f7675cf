/* journal_hits.h — journal lookups that found their reply, counted in
 * memory until the store writes them together (store_sqlite.c).
 *
 * Written one by one, each hit rewrote its entry's page: 4 KiB of WAL per
 * replayed row, most of a journal replay's time. The counts are
 * bookkeeping (orch stats' hits and saved dollars), so they may wait: the
 * store writes them all in one transaction when MAX keys are counted, and
 * before anything reads them (stats, prune, close).
 *
 * Pure C, no dependencies: an open-addressing table of key -> count. */
#ifndef ORCH_JOURNAL_HITS_H
#define ORCH_JOURNAL_HITS_H

#include <stddef.h>
#include <stdint.h>

/* Keys counted before the store writes them: about 1.3 MB of table and
 * keys. More keys a write means more hits a page written (a replay of
 * 20,000 rows: 5,700 page writes, 11,400 at 4,096 keys), and a longer
 * pause of the loop while they are written (tens of ms). */
#define ORCH_JHITS_MAX 16384

struct orch_jhit {
    char *key; /* owned; NULL: a free slot */
    int64_t n;
    int64_t row; /* where the entry was found (SQLite's rowid), 0 if unknown */
    double cost; /* the entry's cost: what each hit saved */
};

struct orch_jhits {
    struct orch_jhit *slots; /* 2 * the cap, allocated on first use */
    size_t n;                /* keys counted */
    size_t cap;              /* the keys it takes, a power of two; 0: ORCH_JHITS_MAX */
};

/* Counts one more hit of key, found at row (0 if unknown). -> the key's
 * count so far (>= 1), or -1 when memory runs out or the cap's keys
 * are counted (nothing counted: the caller writes the counts first). */
int64_t orch_jhits_add(struct orch_jhits *h, const char *key, int64_t row);

/* As orch_jhits_add, n hits at once of an entry that cost cost. */
int64_t orch_jhits_addn(struct orch_jhits *h, const char *key, int64_t row, int64_t n, double cost);

/* The hits of key counted so far (0 when none). */
int64_t orch_jhits_get(const struct orch_jhits *h, const char *key);

/* The hits counted (the sum of the counts) and what they saved (each
 * count times its entry's cost). */
void orch_jhits_sums(const struct orch_jhits *h, int64_t *hits, double *saved);

/* The counted entries sorted by row, then key (the table's order, so
 * neighbours share their pages), in a new array of h->n pointers into h
 * (the caller frees the array, not the entries), or NULL when there are
 * none or memory runs out. Valid until the next add or clear. */
struct orch_jhit **orch_jhits_sorted(const struct orch_jhits *h);

/* The log's form of n sorted counts (the store appends one a write and
 * folds them into its entries later): per entry its row and its hits
 * (8 bytes each, little-endian), its key's length (2 bytes) and its key.
 * Returns a new buffer of *len bytes, with the hits and what they saved
 * (hits times cost) summed; NULL when memory runs out. */
unsigned char *orch_jhits_pack(struct orch_jhit *const *sorted, size_t n, size_t *len, int64_t *hits,
                               double *saved);

/* Reads the entry at *off of a packed buffer into row, n and key (key
 * NUL-terminated, at most keymax - 1 bytes) and moves *off past it.
 * 1, 0 at the end, -1 when the bytes are not an entry (or its key does
 * not fit). */
int orch_jhits_unpack(const unsigned char *b, size_t len, size_t *off, int64_t *row, int64_t *n, char *key,
                      size_t keymax);

/* Forgets every count (keeps the table for reuse). */
void orch_jhits_clear(struct orch_jhits *h);

/* Forgets every count and frees the table; idempotent. */
void orch_jhits_free(struct orch_jhits *h);

#endif
