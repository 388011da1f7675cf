/* sink.h — an append-only output file that knows its durable byte offset.
 *
 * Rows are appended through a write buffer; orch_sink_flush() hands it to
 * the kernel and, when asked, fsyncs, so a checkpoint can record an offset
 * that is on disk. Opening at a recorded offset truncates whatever a crash
 * left past it, which is how output stays exactly-once across resumes.
 *
 * Ownership: an open sink holds an exclusive flock(2) on its file, so two
 * processes never interleave lines in one file. Identity: the sink keeps an
 * XXH3-64 of every byte written, so a checkpoint can record what the
 * committed prefix was, and a resume can check that the file it is about
 * to extend is still that file.
 * Pure C, depends on libc (pthreads: the background fsync) and libxxhash. */
#ifndef ORCH_SINK_H
#define ORCH_SINK_H

#include <stddef.h>
#include <stdint.h>

#define ORCH_SINK_FRESH UINT64_MAX

struct orch_sink;

/* Opens path for writing, creating missing parent directories, and locks
 * it. With offset == ORCH_SINK_FRESH the file is truncated to empty;
 * otherwise it must be at least offset bytes long, its first offset bytes
 * must hash to *prefix (when prefix is not NULL), and it is truncated to
 * offset. Returns NULL with "path: reason" in err; *why (when not NULL)
 * tells a locked file (ORCH_SINK_BUSY) and a changed prefix
 * (ORCH_SINK_CHANGED) from other failures (ORCH_SINK_ERROR). */
enum orch_sink_why { ORCH_SINK_ERROR = 1, ORCH_SINK_BUSY, ORCH_SINK_CHANGED };
struct orch_sink *orch_sink_open(const char *path, uint64_t offset, const uint64_t *prefix, char *err,
                                 size_t errlen, enum orch_sink_why *why);
/* XXH3-64 of every byte written so far, buffered ones included. */
uint64_t orch_sink_hash(struct orch_sink *k);
/* Buffers len bytes. Returns 0, or -1 with orch_sink_error() set. */
int orch_sink_write(struct orch_sink *k, const void *data, size_t len);
/* Writes the buffer out; with sync, also fsyncs. Returns 0 or -1. */
int orch_sink_flush(struct orch_sink *k, int sync);
/* Writes the buffer out and starts fsync(2) of the file on a thread of
 * its own, so the caller goes on while the disk catches up: a checkpoint
 * records the offset this returns only once orch_sink_sync_poll() says
 * the fsync is done. A sync still going is waited for first. Returns the
 * offset the fsync will make durable, or -1 with orch_sink_error() set
 * (a failed write, or a failed earlier sync). Without a thread, the fsync
 * is done before it returns. */
int64_t orch_sink_sync_begin(struct orch_sink *k);
/* Whether the fsync orch_sink_sync_begin() started is done: 1 done (or
 * none started), 0 still going (only without wait), -1 failed
 * (orch_sink_error() says why). With wait, blocks until it ends. */
int orch_sink_sync_poll(struct orch_sink *k, int wait);
/* Bytes written so far, buffered ones included. */
uint64_t orch_sink_offset(const struct orch_sink *k);
const char *orch_sink_error(const struct orch_sink *k);
const char *orch_sink_path(const struct orch_sink *k);
/* Waits for a sync still going, flushes (no fsync) and closes; returns
 * 0 or -1. Frees k either way. */
int orch_sink_close(struct orch_sink *k);

#endif
