/* result_pack.h — a run of results (struct orch_result) packed into one
 * blob, the way a backend stores a checkpoint's results in one row, and a
 * cursor that reads them back with pointers into the blob.
 *
 * Two formats, named by the number the backend stores beside the blob:
 * ORCH_PACK_FIXED, a 24-byte head a result (seq, four lengths) and the
 * fields; ORCH_PACK_COMPACT, varints: the seq as the step from the one
 * before, one byte of flags with the status's code, each present field
 * as a length and its bytes. A plain row (status "ok", a short key)
 * takes 10 bytes in the compact form against 34 (bench/changes.md),
 * and fewer bytes are less to copy into pages, log and fsync. Text
 * fields keep their NUL in both, so a reader hands out pointers into the
 * blob. Pure C: depends on libc and store.h's struct orch_result. */
#ifndef ORCH_RESULT_PACK_H
#define ORCH_RESULT_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

enum { ORCH_PACK_FIXED = 1, ORCH_PACK_COMPACT = 2 };

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
    int64_t prev; /* the seq read last (compact: the next is a step from it) */
    int64_t left; /* results not read yet */
};

/* Points c at blob[0..len) holding n results in format. 0, or -1 when
 * the format is unknown or the blob is too short for n results. */
int orch_results_open(struct orch_results_cursor *c, int format, const void *blob, size_t len, int64_t n);

/* Reads the next result into r (pointers into the blob). 0, or -1 when
 * none is left or the blob is damaged. */
int orch_results_next(struct orch_results_cursor *c, struct orch_result *r);

#endif
