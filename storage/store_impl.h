/* store_impl.h — private to storage/: what the backends share with
 * store.c (the memento codec, clocks) and each backend's open function,
 * which orch_store_open dispatches to. Not for use outside storage/.
 * Depends on libc; store.c implements the helpers with libzstd. */
#ifndef ORCH_STORE_IMPL_H
#define ORCH_STORE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

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
int orch_store_compress(const void *src, size_t len, void **out, size_t *out_len, char *err, size_t errlen);

/* Decompresses one zstd frame written by orch_store_compress. The size is
 * taken from the frame header and must be known and at most
 * ORCH_STORE_MEMENTO_MAX. On success *out is a malloc'd buffer of
 * *out_len bytes plus a terminating NUL (so JSON text can be used as a C
 * string), owned by the caller; returns 0. Returns -1 with the reason in
 * err for anything that is not a complete, intact frame, and -2 when
 * memory runs out (so callers can tell a damaged memento, which is a
 * verdict on the data, from a shortage, which is not). */
int orch_store_decompress(const void *src, size_t len, void **out, size_t *out_len, char *err, size_t errlen);

/* Wall-clock milliseconds since the epoch (for *_ms columns). */
int64_t orch_store_now_ms(void);
/* Monotonic milliseconds, for measuring durations. */
double orch_store_mono_ms(void);

/* The SQLite backend: target is a file path or ":memory:"; flags as in
 * orch_store_open_flags. Same contract as orch_store_open_flags. */
struct orch_store *orch_store_sqlite_open(const char *target, int flags, char *err, size_t errlen);

/* The PostgreSQL backend (store_pg.c): target is a postgres:// or
 * postgresql:// URL, handed to libpq as it is; flags as in
 * orch_store_open_flags. Same contract as orch_store_open_flags, with
 * messages naming the URL with its password masked. */
struct orch_store *orch_store_pg_open(const char *target, int flags, char *err, size_t errlen);

#endif
