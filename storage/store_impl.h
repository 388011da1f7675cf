/* store_impl.h — private to storage/: what the backends share with
 * store.c (the memento codec, clocks) and each backend's open function,
 * which orch_store_open dispatches to. Not for use outside storage/.
 * Depends on libc; store.c implements the helpers with libzstd. */
#ifndef ORCH_STORE_IMPL_H
#define ORCH_STORE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* A backend's operations, one per orch_store_* function (store.h has
 * their contract); store.c calls them after its own checks. */
struct orch_store_ops {
    const char *name; /* "sqlite", "postgres" */
    void (*close)(struct orch_store *st);

    /* Inserts r (r->id set by the caller, unique). 0 or -1. */
    int (*run_create)(struct orch_store *st, const struct orch_run *r);
    /* 1 found (out filled), 0 not found, -1 error. */
    int (*run_get)(struct orch_store *st, const char *id, struct orch_run *out);
    /* The newest run with this identity whose status is pending, running
     * or paused: 1 found, 0 none, -1 error. */
    int (*run_find_unfinished)(struct orch_store *st, const char *identity, struct orch_run *out);
    /* Writes status, counters, cost, tokens, error, owner, heartbeat,
     * finished_ms, recoveries of r->id; updated_ms = now. 0 or -1. */
    int (*run_update)(struct orch_store *st, const struct orch_run *r);
    /* Compare-and-swap of the owner: sets owner pid/host and heartbeat to
     * now_ms, status to running, only if the stored owner_pid and
     * heartbeat_ms still equal the expected ones. 1 claimed, 0 someone else
     * changed it first, -1 error. */
    int (*run_claim)(struct orch_store *st, const char *id, int64_t pid, const char *host, int64_t now_ms,
                     int64_t expect_pid, int64_t expect_heartbeat_ms);
    /* Sets heartbeat_ms of a run this process owns. 0 or -1. */
    int (*run_heartbeat)(struct orch_store *st, const char *id, int64_t now_ms);
    /* Runs matching f, newest first. 0 or -1. */
    int (*run_list)(struct orch_store *st, const struct orch_run_filter *f, orch_run_cb cb, void *ud);

    /* One transaction: the results, the state entries (upserted), the
     * checkpoint (c->seq, checksum, bytes, duration_ms are set on return)
     * and run's counters/status as in run_update. 0 or -1 (nothing written). */
    int (*checkpoint_write)(struct orch_store *st, const struct orch_run *run, struct orch_checkpoint *c,
                            const struct orch_result *res, size_t nres, const struct orch_kv *state,
                            size_t nstate);
    /* The newest checkpoint of the run whose memento decompresses and whose
     * checksum verifies; *skipped counts newer ones that did not. 1 found,
     * 0 none valid, -1 error. */
    int (*checkpoint_latest)(struct orch_store *st, const char *run_id, struct orch_checkpoint *out,
                             int *skipped);
    /* Checkpoint seq of the run (memento included, valid set). 1, 0 or -1. */
    int (*checkpoint_get)(struct orch_store *st, const char *run_id, int64_t seq,
                          struct orch_checkpoint *out);
    /* All checkpoints of the run, oldest first, without memento bytes
     * (memento NULL) but with valid set. 0 or -1. */
    int (*checkpoint_list)(struct orch_store *st, const char *run_id, orch_checkpoint_cb cb, void *ud);
    /* Deletes the run's checkpoints after seq and the results written with
     * them, in one transaction. 0 or -1. */
    int (*checkpoint_rollback)(struct orch_store *st, const char *run_id, int64_t seq);

    /* The run's results in seq order. 0 or -1. */
    int (*result_list)(struct orch_store *st, const char *run_id, orch_result_cb cb, void *ud);
    /* Appends an event; data is JSON text or NULL. 0 or -1. */
    int (*event_add)(struct orch_store *st, const char *run_id, const char *type, const char *data);
    /* The run's events, oldest first. 0 or -1. */
    int (*event_list)(struct orch_store *st, const char *run_id, orch_event_cb cb, void *ud);
    /* The run's state entries, sorted by key; cb gets key and JSON value. 0 or -1. */
    int (*state_list)(struct orch_store *st, const char *run_id, orch_state_cb cb, void *ud);
    /* Store-wide figures. 0 or -1. */
    int (*stats)(struct orch_store *st, struct orch_store_stats *out);

    /* Records a response under its key (the first one wins: an existing key is kept). 0 or -1. */
    int (*journal_put)(struct orch_store *st, const struct orch_journal_entry *e);
    /* Looks up a key: 1 found (*out filled with heap copies the caller frees with orch_journal_clear),
     * 0 not found, -1 error. Also counts a hit on the entry (hits column). A hit that cannot be
     * written (lock held past the busy timeout, disk full) is dropped rather than failing the lookup:
     * the reply matters more than the counter. */
    int (*journal_get)(struct orch_store *st, const char *key, struct orch_journal_owned *out);
    /* A group commit: journal_put of the n entries, then journal_get of the m
     * lookups (which see those entries), in one transaction. 0, or -1 with
     * none of the entries written and every lookup cleared. */
    int (*journal_batch)(struct orch_store *st, const struct orch_journal_entry *e, size_t n,
                         struct orch_journal_lookup *gets, size_t m);

    /* Retention. Deletes a run with its checkpoints, results, events and
     * state: 1, 0 when there is no such run, -1 on error. */
    int (*run_delete)(struct orch_store *st, const char *run_id);
    /* Deletes the journal entries created before before_ms; *removed gets
     * their number. 0 or -1. */
    int (*journal_prune)(struct orch_store *st, int64_t before_ms, int64_t *removed);
    /* Gives the space of deleted data back to the file system. 0 or -1. */
    int (*vacuum)(struct orch_store *st);
};

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
