/* journal_ahead.h — journal entries read ahead in the order they were
 * written, for a rerun's lookups (store_sqlite.c).
 *
 * A rerun asks the journal for its rows' replies in about the order the
 * run that paid for them wrote them: its input's order, shuffled only by
 * the order the replies came back in. A lookup by key seeks the key's
 * index and then the table, about 7,000 instructions a replayed row. Once
 * three lookups in a row found entries each written a little after the
 * one before, the store reads the entries from a little before the third
 * on, ORCH_JAHEAD_ROWS of them in one scan of the table, and answers the
 * next lookups from this window: a step of the scan and a probe of a small
 * table instead of two seeks. A key the window does not hold (written far
 * out of order, or never) is looked up by key as before. Lookups in no
 * order (a shuffled input) rarely make three such steps in a row, so they
 * rarely pay for a scan they do not use.
 *
 * The window belongs to one read snapshot of the store: it is emptied
 * when the snapshot ends, so it only ever answers what that snapshot
 * reads.
 *
 * Pure C, no dependencies: the entries' keys and replies in one buffer,
 * and an open-addressing table of key -> entry. */
#ifndef ORCH_JOURNAL_AHEAD_H
#define ORCH_JOURNAL_AHEAD_H

#include <stddef.h>
#include <stdint.h>

/* Entries one scan reads; the first ORCH_JAHEAD_BEHIND of them were
 * written before the entry that started it (replies that came back
 * late). A lookup follows the one before when it found an entry at most
 * ORCH_JAHEAD_ROWS after the other's. */
#define ORCH_JAHEAD_ROWS 256
#define ORCH_JAHEAD_BEHIND 32

/* The bytes of keys and replies a window holds at most: a scan stops
 * short of it (large replies make a shorter window, not a larger one). */
#define ORCH_JAHEAD_BYTES (1u << 20)

/* An entry: its key and reply are offsets into the window's buffer (the
 * key NUL-terminated, the reply followed by a NUL). */
struct orch_jahead_entry {
    size_t key, resp, resplen;
    int64_t tokens_in, tokens_out;
    double cost_usd;
    int64_t row; /* the entry's row (SQLite's rowid) */
};

struct orch_jahead {
    struct orch_jahead_entry *e; /* ORCH_JAHEAD_ROWS, allocated on first use */
    size_t n;                    /* entries held */
    uint16_t *slots;             /* 2 * ORCH_JAHEAD_ROWS: an entry's index + 1; 0: free */
    char *mem;                   /* keys and replies */
    size_t used, cap;
    int64_t last; /* the row the last lookup by key found; 0: none yet */
    int steps;    /* lookups by key in a row, up to last, each following the one before */
};

/* Notes that a lookup by key found the entry at row. -> 1 when it and the
 * one before each follow the lookup before them (see ORCH_JAHEAD_ROWS):
 * the entries from there on are worth a scan. */
int orch_jahead_follows(struct orch_jahead *a, int64_t row);

/* Adds an entry: key (NUL-terminated) and its reply of resplen bytes,
 * copied. -> 0, or -1 when the window is full (ORCH_JAHEAD_ROWS entries
 * or ORCH_JAHEAD_BYTES) or memory runs out: nothing added. */
int orch_jahead_add(struct orch_jahead *a, const char *key, const void *resp, size_t resplen,
                    int64_t tokens_in, int64_t tokens_out, double cost_usd, int64_t row);

/* The entry of key, or NULL when the window does not hold it. Valid until
 * the next add or clear. */
const struct orch_jahead_entry *orch_jahead_find(const struct orch_jahead *a, const char *key);

/* The bytes at offset off of the window's buffer (an entry's key or reply). */
static inline const char *orch_jahead_at(const struct orch_jahead *a, size_t off)
{
    return a->mem + off;
}

/* Empties the window (keeps its memory for the next scan, and the
 * lookups noted by orch_jahead_follows). */
void orch_jahead_clear(struct orch_jahead *a);

/* Empties the window and frees its memory; idempotent. */
void orch_jahead_free(struct orch_jahead *a);

#endif
