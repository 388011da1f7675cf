/* result_pack.h — a run of results (struct orch_result) packed into one
 * blob, the way a backend stores a checkpoint's results in one row, and a
 * cursor that reads them back with pointers into the blob.
 *
 * Three formats, named by the number the backend stores beside the blob:
 * ORCH_PACK_FIXED, a 24-byte head a result (seq, four lengths) and the
 * fields; ORCH_PACK_KEYED, varints: the seq as the step from the one
 * before, one byte of flags with the status's code, each present field
 * as a length and its bytes; ORCH_PACK_COMPACT, the same but a key may
 * be given as the key before it counted on by one (the number it ends
 * with plus one: "17" after "16", "doc-0100" after "doc-0099"). A plain
 * row (status "ok", a short key) takes 10 bytes in the keyed form
 * against 34 in the fixed one, and 2 in the compact form when its key
 * counts on from the row before (an id column, as inputs mostly have);
 * fewer bytes are less to copy into pages, log and fsync
 * (bench/changes.md). Text fields keep their NUL, so a reader hands out
 * pointers into the blob, but for a counted key: that one is made in the
 * cursor, and valid until its next result. Pure C: depends on libc and
 * store.h's struct orch_result. */
#ifndef ORCH_RESULT_PACK_H
#define ORCH_RESULT_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

enum { ORCH_PACK_FIXED = 1, ORCH_PACK_KEYED = 2, ORCH_PACK_COMPACT = 3 };

/* The longest key the compact form counts on from (a length in one
 * varint byte). */
#define ORCH_PACK_MAXKEY 127

/* 1 when res[0..nres) can be packed: each result has a status, and
 * seqs strictly increase from 1 up. */
int orch_results_packable(const struct orch_result *res, size_t nres);

/* Packs res[0..nres) (packable) in format into a new buffer the caller
 * frees; *out_len gets its size. NULL when memory runs out, or in the
 * fixed form when a field is 4 GiB or longer. */
unsigned char *orch_results_pack(int format, const struct orch_result *res, size_t nres, size_t *out_len);

/* A reader over one packed blob of n results. */
struct orch_results_cursor {
    const unsigned char *p, *end;
    int format;
    int64_t prev;  /* the seq read last (compact: the next is a step from it) */
    int64_t left;  /* results not read yet */
    size_t keylen; /* compact: the length of the key read last, in key; 0 when none to count on */
    char key[ORCH_PACK_MAXKEY + 2];
};

/* Points c at blob[0..len) holding n results in format. 0, or -1 when
 * the format is unknown or the blob is too short for n results. */
int orch_results_open(struct orch_results_cursor *c, int format, const void *blob, size_t len, int64_t n);

/* Reads the next result into r (pointers into the blob, or for a counted
 * key into c, until the next call). 0, or -1 when none is left or the
 * blob is damaged. */
int orch_results_next(struct orch_results_cursor *c, struct orch_result *r);

/* The results of chunk and res[0..nres) (store.h's
 * orch_store_checkpoint_write_chunk: both in seq order, no seq in both)
 * as one array in seq order, pointing into the chunk's blob and res
 * (counted keys are copied behind the array); *out (the caller frees it,
 * keys and all) gets chunk->n + nres entries. 0; -1 when
 * memory runs out; -2 when the chunk does not read back as chunk->n
 * results. */
int orch_results_merge(const struct orch_results_chunk *chunk, const struct orch_result *res, size_t nres,
                       struct orch_result **out);

/* Results packed one at a time as rows settle, in the compact form, so a
 * checkpoint hands the store a chunk already made instead of a list to
 * read and pack (bench/changes.md, sixth pass). Two blobs: the results
 * without an error, the chunk a backend stores as it is, and the few
 * with one (failed, defaulted), which SQLite keeps in its per-row table
 * for the dashboard's error pages. Each blob starts its seq steps from
 * 0, as orch_results_pack does, so both are the bytes it would make of
 * the same results. */
struct orch_results_part {
    unsigned char *p; /* malloc'd, owned by the packer; NULL until the first result */
    size_t len, cap;
    int64_t n;           /* results in p */
    int64_t first, last; /* their seqs (0 while n is 0) */
    size_t nextlen;      /* the key the last one counts on to, in next; 0 when none */
    char next[ORCH_PACK_MAXKEY + 2];
};

struct orch_results_packer {
    struct orch_results_part ok;     /* results without an error */
    struct orch_results_part failed; /* results with one */
    int64_t last;                    /* the last seq added to either */
};

/* Appends r (no data) to the part its error picks. 0; -1 when memory
 * runs out; -2 when r has no status, data, or a seq not past the last
 * one added (nothing appended in both cases). */
int orch_results_packer_add(struct orch_results_packer *pk, const struct orch_result *r);

/* Empties pk; a part whose buffer grew past keep bytes gives it back
 * (a policy checkpointing every 100,000 rows should not hold a
 * megabyte between checkpoints). */
void orch_results_packer_clear(struct orch_results_packer *pk, size_t keep);

/* Frees both buffers; pk is then empty and reusable. */
void orch_results_packer_free(struct orch_results_packer *pk);

#endif
