/* store_impl.h — private to storage/: what the backends share with
 * store.c (the checkpoint seal, error wording, clocks) and each backend's open function,
 * which orch_store_open dispatches to. Not for use outside storage/.
 * Depends on libc; store.c implements the helpers (with libzstd and
 * libxxhash for the memento codec and checksum, which stay inside it). */
#ifndef ORCH_STORE_IMPL_H
#define ORCH_STORE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* A checkpoint on its way into a backend: the compressed memento, and
 * the checksum once the backend has numbered it (orch_checkpoint_seal). */
struct orch_checkpoint_seal {
    const struct orch_checkpoint *c; /* the fields and the raw memento, as the caller gave them */
    const void *packed;              /* zstd frame of c->memento */
    size_t packed_len;
    double t0; /* monotonic start of the write: the stored duration_ms is now - t0 */
    /* set by orch_checkpoint_seal: */
    int64_t seq;
    int64_t created_ms; /* c->created_ms, or now when 0 */
    char sum[33];       /* hex XXH3-128 over the fields with seq, and the raw memento */
    int64_t bytes;      /* packed memento + checksum + name and reason + 80 bytes of numbers */
};

/* A checkpoint row as a backend returns it: c holds the stored fields and
 * strings (heap copies) with c.memento the stored zstd frame (heap, or
 * NULL) and c.memento_len its size; raw_len is the memento length stored
 * beside it. The callback owns c and clears it. */
struct orch_checkpoint_packed {
    struct orch_checkpoint c;
    int64_t raw_len;
};

/* Callback of checkpoint_scan: 0 to go on, non-zero to stop (-1: failed,
 * with the message in st->err). */
typedef int (*orch_packed_cb)(void *ud, struct orch_checkpoint_packed *p);

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
     * checkpoint row and the run's counters/status as in run_update. The
     * backend numbers the checkpoint, calls orch_checkpoint_seal with that
     * seq inside the transaction, and stores seal->packed, seal->sum and
     * seal->bytes as they are. 0 or -1 (nothing written). */
    int (*checkpoint_write)(struct orch_store *st, const struct orch_run *run,
                            struct orch_checkpoint_seal *seal, const struct orch_result *res, size_t nres,
                            const struct orch_kv *state, size_t nstate);
    /* checkpoint_write with a packed chunk beside res (store.h:
     * orch_store_checkpoint_write_chunk; chunk non-empty, checked by
     * store.c). NULL for a backend that stores results one by one:
     * store.c then reads the chunk back and calls checkpoint_write. */
    int (*checkpoint_write_chunk)(struct orch_store *st, const struct orch_run *run,
                                  struct orch_checkpoint_seal *seal, const struct orch_results_chunk *chunk,
                                  const struct orch_result *res, size_t nres, const struct orch_kv *state,
                                  size_t nstate);
    /* The run's checkpoint rows as stored, each handed to cb as a struct
     * orch_checkpoint_packed: only checkpoint seq when seq > 0, else all,
     * newest first when newest_first. No verification: that is store.c's.
     * Returns cb's last return value (0 when the rows ran out, cb stops
     * on non-zero), or -1 with "<store>: <what>: <reason>" in st->err. */
    int (*checkpoint_scan)(struct orch_store *st, const char *run_id, int64_t seq, int newest_first,
                           const char *what, orch_packed_cb cb, void *ud);
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
    /* Optional (NULL: every lookup waits for a group). Answers one lookup at
     * once from a read snapshot the store keeps until journal_peek_end, so
     * the lookups of a round share one read transaction and no lookup waits
     * for the group's write. The snapshot sees what was committed when it
     * began: the caller ends it before anything it journals commits. 0
     * (get->found and get->out set, the hit counted as journal_get counts
     * it), or -1: no answer now (the caller asks a group instead). */
    int (*journal_peek)(struct orch_store *st, struct orch_journal_lookup *get);
    void (*journal_peek_end)(struct orch_store *st);

    /* Retention. Deletes a run with its checkpoints, results, events and
     * state: 1, 0 when there is no such run, -1 on error. */
    int (*run_delete)(struct orch_store *st, const char *run_id);
    /* Deletes the journal entries created before before_ms; *removed gets
     * their number. 0 or -1. */
    int (*journal_prune)(struct orch_store *st, int64_t before_ms, int64_t *removed);
    /* Gives the space of deleted data back to the file system. 0 or -1. */
    int (*vacuum)(struct orch_store *st);
    /* What the store runs on, "SQLite 3.40.1" or "PostgreSQL 15.4" (the
     * server's version), into out (always NUL-terminated). */
    void (*version)(struct orch_store *st, char *out, size_t outlen);

    /* Live figures (store.h: orch_store_live_put / _get); the arguments
     * are checked by store.c. */
    int (*live_put)(struct orch_store *st, const char *run_id, int64_t updated_ms, const char *figures);
    int (*live_get)(struct orch_store *st, const char *run_id, char **figures, int64_t *updated_ms);
    /* Dashboard pages (store.h: orch_store_event_page / _error_page);
     * before_id is never 0 here (store.c passes INT64_MAX for none). */
    int (*event_page)(struct orch_store *st, const char *run_id, int64_t after_id, int64_t before_id,
                      int64_t limit, int newest_first, orch_event_cb cb, void *ud);
    int (*error_page)(struct orch_store *st, const char *run_id, int64_t after_seq, int64_t limit,
                      orch_result_cb cb, void *ud);
    /* ---- many workers, one run (store.h has the contracts) ---- */
    int (*lease_plan)(struct orch_store *st, const char *run_id, const struct orch_lease *l, size_t n);
    int (*lease_claim)(struct orch_store *st, const char *run_id, const char *worker, int64_t stale_ms,
                       struct orch_lease *out);
    int (*lease_heartbeat)(struct orch_store *st, const char *run_id, int64_t no, const char *worker);
    int (*lease_commit)(struct orch_store *st, const char *run_id, const struct orch_lease_commit *c,
                        const struct orch_result *res, size_t nres);
    int (*lease_list)(struct orch_store *st, const char *run_id, orch_lease_cb cb, void *ud);
    int (*budget_reserve)(struct orch_store *st, const char *run_id, double est_usd, double max_usd);
    int (*budget_settle)(struct orch_store *st, const char *run_id, double released_usd, double spent_usd);
    int (*budget_set)(struct orch_store *st, const char *run_id, double max_usd);
    int (*budget_get)(struct orch_store *st, const char *run_id, double *max_usd, double *spent_usd,
                      double *reserved_usd);
    int (*journal_pend)(struct orch_store *st, const char *key, const char *owner, int64_t ttl_ms);
    int (*run_set_status)(struct orch_store *st, const char *run_id, enum orch_run_status status,
                          const char *error);
    /* ---- shared rate limits (store.h: orch_store_rate_take); store.c
     * checks the arguments and passes the capacity (tokens) and the
     * refill rate (tokens per ms), amount already at most the capacity.
     * 1 taken, 0 not (*left: what the bucket holds now, short of
     * amount), -1 error. */
    int (*rate_take)(struct orch_store *st, const char *run_id, const char *kind, double amount,
                     double capacity, double per_ms, double *left);
};

/* Seals a checkpoint a backend has numbered seq, inside its write
 * transaction: fills seal->seq, created_ms, sum and bytes. 0, or -1 with
 * the message in st->err (out of memory). */
int orch_checkpoint_seal(struct orch_store *st, const char *run_id, struct orch_checkpoint_seal *seal,
                         int64_t seq);

/* Records "<the store>: <fmt ...>" in st->err (the store named by
 * st->where) and returns -1. */
int orch_store_fail(struct orch_store *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Wall-clock milliseconds since the epoch (for *_ms columns). */
int64_t orch_store_now_ms(void);

/* orch_store_stats comes from four one-row queries, the same four in
 * every backend (only their SQL differs), run in this order: the runs
 * by status, the checkpoints' durations, the journal, the size on disk.
 * orch_stats_what names each for error messages; orch_stats_set stores
 * column col of query q (read by the backend both ways) in its field. */
enum { ORCH_STATS_RUNS, ORCH_STATS_CPS, ORCH_STATS_JOURNAL, ORCH_STATS_SIZE, ORCH_STATS_NQUERIES };
extern const char *const orch_stats_what[ORCH_STATS_NQUERIES];
/* The number of columns query q returns. */
int orch_stats_ncols(int q);
void orch_stats_set(struct orch_store_stats *out, int q, int col, int64_t iv, double dv);
/* Monotonic milliseconds, for measuring durations. */
double orch_store_mono_ms(void);

/* The SQLite backend: target is a file path or ":memory:"; flags as in
 * orch_store_open_flags. Same contract as orch_store_open_flags. */
struct orch_store *orch_store_sqlite_open(const char *target, int flags, char *err, size_t errlen);

/* The library each backend is built with, for orch_store_library:
 * "SQLite 3.40.1" (store_sqlite.c), "PostgreSQL 15.10 (libpq)"
 * (store_pg.c). out is always NUL-terminated. */
void orch_store_sqlite_library(char *out, size_t outlen);
void orch_store_pg_library(char *out, size_t outlen);

/* The PostgreSQL backend (store_pg.c): target is a postgres:// or
 * postgresql:// URL, handed to libpq as it is; flags as in
 * orch_store_open_flags. Same contract as orch_store_open_flags, with
 * messages naming the URL with its password masked. */
struct orch_store *orch_store_pg_open(const char *target, int flags, char *err, size_t errlen);

/* The Redis backend (store_redis.c): target is a redis:// or unix:// URL;
 * flags as in orch_store_open_flags (ORCH_STORE_REQUIRE_DURABLE included).
 * Same contract as orch_store_open_flags. */
struct orch_store *orch_store_redis_open(const char *target, int flags, char *err, size_t errlen);
/* "hiredis 0.14.1", for orch_store_library (i = 2). */
void orch_store_redis_library(char *out, size_t outlen);

#endif
