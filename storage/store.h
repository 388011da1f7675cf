/* store.h — the state store behind one C interface: runs, checkpoints,
 * per-row results, events (audit trail) and the run's key/value state.
 *
 * The core talks to a struct orch_store through the orch_store_*
 * functions, which store.c implements over a backend's operations
 * (store_impl.h); the SQLite backend (store_sqlite.c) is the default, and a path of ":memory:" gives
 * an ephemeral in-memory database for tests and throwaway runs. A
 * postgres:// or postgresql:// URL picks the PostgreSQL backend
 * (store_pg.c), which fills the same table.
 *
 * A checkpoint is written in one transaction together with the results
 * buffered since the previous one, the run's counters and its state, so a
 * crash leaves either all of it or none. The memento is stored compressed
 * (zstd) with a checksum (XXH3-128) over the cursor fields and the raw
 * memento; reading verifies both and reports a corrupt checkpoint as
 * invalid so the caller can fall back to an older one.
 *
 * The LLM response journal (durability guarantee 3, "no paying twice")
 * keeps every provider reply under a hash of its request, written on its
 * own the moment it arrives, so a resumed or re-run workflow reads it back
 * instead of paying again. Entries belong to no run: they outlive runs and
 * may be written before their run's row exists.
 *
 * Strings in structs filled by the store are heap copies owned by the
 * struct (free with orch_run_clear / orch_checkpoint_clear / ...). Strings
 * passed in are only read during the call. Every function returns -1 on
 * error with a message in st->err ("<the store>: <reason>", the store
 * named by its path or by its URL with the password masked).
 * Pure C: depends on libc, and the backends on their libraries. */
#ifndef ORCH_STORE_H
#define ORCH_STORE_H

#include <stddef.h>
#include <stdint.h>

enum orch_run_status {
    ORCH_RUN_PENDING,
    ORCH_RUN_RUNNING,
    ORCH_RUN_PAUSED,
    ORCH_RUN_COMPLETED,
    ORCH_RUN_FAILED,
};

/* "pending", "running", "paused", "completed", "failed" */
const char *orch_run_status_name(enum orch_run_status s);
/* The status named s, or -1. */
int orch_run_status_parse(const char *s);

struct orch_run {
    char *id;            /* e.g. "classify-reviews-3f9a2c1b" */
    char *name;          /* workflow name */
    char *identity;      /* hex hash of name + workflow hash + input + params */
    char *workflow_path; /* absolute path of the workflow file */
    char *workflow_hash; /* hex hash of the workflow file's bytes */
    char *input;         /* absolute input path, or "table" / "iterator" */
    char *input_fp;      /* fingerprint checked before a resume (size, mtime, head hash) */
    char *params;        /* canonical JSON of the --set parameters */
    char *output;        /* absolute output path, or NULL */
    char *error;         /* why it failed or paused; NULL when none */
    char *owner_host;
    enum orch_run_status status;
    int64_t owner_pid;
    int64_t heartbeat_ms;
    int64_t created_ms;
    int64_t updated_ms;
    int64_t finished_ms; /* 0 while unfinished */
    int64_t rows_done;   /* rows settled (written, failed or dropped) up to the last checkpoint */
    int64_t rows_ok;
    int64_t rows_failed;
    int64_t rows_dropped;
    int64_t rows_defaulted;
    int64_t llm_calls;
    int64_t tokens_in;
    int64_t tokens_out;
    double cost_usd;
    int64_t recoveries;  /* times the run was resumed */
    int64_t checkpoints; /* filled by run_get / run_list: checkpoints stored */
};

struct orch_result {
    int64_t seq;        /* row number, 1-based, unique per run */
    const char *key;    /* the row's key as text */
    const char *status; /* "ok", "failed", "dropped", "defaulted" */
    const char *error;  /* NULL unless failed / defaulted */
    const void *data;   /* the row as written to the output (one JSON line), or NULL */
    size_t data_len;
};

struct orch_checkpoint {
    int64_t seq;  /* 1, 2, ... within the run; assigned by checkpoint_write */
    char *name;   /* a ctx:checkpoint(name), or NULL */
    char *reason; /* "rows", "final", "signal", "budget", "manual", ... */
    int64_t created_ms;
    int64_t input_offset;  /* byte offset of the next unread row */
    int64_t input_line;    /* physical line number at input_offset */
    int64_t input_index;   /* rows consumed from the input so far */
    int64_t output_offset; /* durable size of the output file */
    int64_t errors_offset; /* durable size of the errors file */
    void *memento;         /* raw bytes (JSON of ctx.state, counters, cost) */
    size_t memento_len;
    char *checksum;     /* hex XXH3-128; computed by checkpoint_write */
    int64_t bytes;      /* bytes stored for this checkpoint (compressed memento + fields) */
    double duration_ms; /* how long the write took; set by checkpoint_write */
    int valid;          /* reads: 1 when the checksum verified */
};

struct orch_event {
    int64_t id;
    int64_t ts_ms;
    char *type;
    char *data; /* JSON text or NULL */
};

struct orch_kv {
    const char *key;
    const char *value; /* JSON text */
    size_t value_len;
};

/* One LLM response for journal_put; the strings are only read during the
 * call. */
struct orch_journal_entry {
    const char *key;      /* hex hash of provider + model + canonical request body (computed by the caller) */
    const char *run_id;   /* the run that paid for it, may be NULL */
    const char *provider; /* "openai", "anthropic", ... */
    const char *model;
    const char *response; /* the reply text as the provider returned it (raw body or extracted text;
                           * the caller decides) */
    size_t response_len;
    int64_t tokens_in, tokens_out;
    double cost_usd;
    double latency_ms;
    int64_t created_ms; /* set by journal_put when 0 */
};

/* A journal entry as journal_get returns it. Every pointer is a heap copy
 * owned by the struct (free with orch_journal_clear). response holds
 * response_len bytes, which may include NULs, plus a terminating NUL so a
 * text reply can be used as a C string. */
struct orch_journal_owned {
    char *key;
    char *run_id; /* NULL when written without one */
    char *provider;
    char *model;
    char *response;
    size_t response_len;
    int64_t tokens_in, tokens_out;
    double cost_usd;
    double latency_ms;
    int64_t created_ms;
    int64_t hits; /* lookups that found the entry, the one returning it included */
};

/* One lookup of a journal_batch: key in, found and out back. */
struct orch_journal_lookup {
    const char *key;
    int reply;                     /* 1: only the reply and its figures are read (response, tokens,
                                    * cost): a backend may leave the other fields NULL or 0 */
    int found;                     /* 1: out holds the entry (the caller clears it) */
    struct orch_journal_owned out; /* zeroed when not found */
};

struct orch_store_stats {
    int64_t runs, active, paused, failed, completed;
    int64_t checkpoints;
    int64_t recoveries;
    int64_t bytes; /* size of the store on disk (0 in memory) */
    double checkpoint_mean_ms, checkpoint_max_ms;
    int64_t journal_entries, journal_hits;
    double journal_saved_usd; /* sum over journal entries of cost_usd * hits */
};

struct orch_run_filter {
    const char *status; /* NULL = any */
    const char *name;   /* NULL = any */
    int64_t since_ms;   /* created at or after; 0 = any */
    int64_t until_ms;   /* created before; 0 = any */
};

struct orch_store;

/* Callbacks of the list functions return 0 to go on, non-zero to stop. */
typedef int (*orch_run_cb)(void *ud, const struct orch_run *r);
typedef int (*orch_checkpoint_cb)(void *ud, const struct orch_checkpoint *c);
typedef int (*orch_result_cb)(void *ud, const struct orch_result *r);
typedef int (*orch_event_cb)(void *ud, const struct orch_event *e);
/* state_list: key and JSON value of one entry. */
typedef int (*orch_state_cb)(void *ud, const char *key, const char *value, size_t len);

/* The backend behind st: "sqlite", "postgres" or "redis". */
const char *orch_store_backend(const struct orch_store *st);
/* Closes the store and frees it; NULL is a no-op. */
void orch_store_close(struct orch_store *st);

/* Inserts r (r->id set by the caller, unique). 0 or -1. */
int orch_store_run_create(struct orch_store *st, const struct orch_run *r);
/* 1 found (out filled), 0 not found, -1 error. */
int orch_store_run_get(struct orch_store *st, const char *id, struct orch_run *out);
/* The newest run with this identity whose status is pending, running
 * or paused: 1 found, 0 none, -1 error. */
int orch_store_run_find_unfinished(struct orch_store *st, const char *identity, struct orch_run *out);
/* Writes status, counters, cost, tokens, error, owner, heartbeat,
 * finished_ms, recoveries of r->id; updated_ms = now. 0 or -1. */
int orch_store_run_update(struct orch_store *st, const struct orch_run *r);
/* Compare-and-swap of the owner: sets owner pid/host and heartbeat to
 * now_ms, status to running, only if the stored owner_pid and
 * heartbeat_ms still equal the expected ones. 1 claimed, 0 someone else
 * changed it first, -1 error. */
int orch_store_run_claim(struct orch_store *st, const char *id, int64_t pid, const char *host, int64_t now_ms,
                         int64_t expect_pid, int64_t expect_heartbeat_ms);
/* Sets heartbeat_ms of a run this process owns. 0 or -1. */
int orch_store_run_heartbeat(struct orch_store *st, const char *id, int64_t now_ms);
/* Runs matching f, newest first. 0 or -1. */
int orch_store_run_list(struct orch_store *st, const struct orch_run_filter *f, orch_run_cb cb, void *ud);

/* One transaction: the results, the state entries (upserted), the
 * checkpoint (c->seq, checksum, bytes, duration_ms are set on return)
 * and run's counters/status as in run_update. 0 or -1 (nothing written). */
int orch_store_checkpoint_write(struct orch_store *st, const struct orch_run *run, struct orch_checkpoint *c,
                                const struct orch_result *res, size_t nres, const struct orch_kv *state,
                                size_t nstate);
/* A checkpoint's results packed as its rows settled (result_pack.h's
 * orch_results_packer): n results in blob[0..len) in format, seqs first
 * to last strictly increasing, none with an error or data. */
struct orch_results_chunk {
    int format; /* ORCH_PACK_COMPACT */
    const void *blob;
    size_t len;
    int64_t n, first, last;
};
/* orch_store_checkpoint_write with the results in two parts: chunk (may
 * be NULL or empty) and res[0..nres), whose seqs are none of the chunk's.
 * Every reader sees the same results as when all of them came in res:
 * a backend that stores chunks takes the blob as it is, the others get
 * them read back one by one, merged with res in seq order. */
int orch_store_checkpoint_write_chunk(struct orch_store *st, const struct orch_run *run,
                                      struct orch_checkpoint *c, const struct orch_results_chunk *chunk,
                                      const struct orch_result *res, size_t nres, const struct orch_kv *state,
                                      size_t nstate);
/* The newest checkpoint of the run whose memento decompresses and whose
 * checksum verifies; *skipped counts newer ones that did not. 1 found,
 * 0 none valid, -1 error. */
int orch_store_checkpoint_latest(struct orch_store *st, const char *run_id, struct orch_checkpoint *out,
                                 int *skipped);
/* Checkpoint seq of the run (memento included, valid set). 1, 0 or -1. */
int orch_store_checkpoint_get(struct orch_store *st, const char *run_id, int64_t seq,
                              struct orch_checkpoint *out);
/* All checkpoints of the run, oldest first, without memento bytes
 * (memento NULL) but with valid set. 0 or -1. */
int orch_store_checkpoint_list(struct orch_store *st, const char *run_id, orch_checkpoint_cb cb, void *ud);
/* Deletes the run's checkpoints after seq and the results written with
 * them, in one transaction. 0 or -1. */
int orch_store_checkpoint_rollback(struct orch_store *st, const char *run_id, int64_t seq);

/* The run's results in seq order. 0 or -1. */
int orch_store_result_list(struct orch_store *st, const char *run_id, orch_result_cb cb, void *ud);
/* Appends an event; data is JSON text or NULL. 0 or -1. */
int orch_store_event_add(struct orch_store *st, const char *run_id, const char *type, const char *data);
/* The run's events, oldest first. 0 or -1. */
int orch_store_event_list(struct orch_store *st, const char *run_id, orch_event_cb cb, void *ud);
/* The run's state entries, sorted by key; cb gets key and JSON value. 0 or -1. */
int orch_store_state_list(struct orch_store *st, const char *run_id, orch_state_cb cb, void *ud);
/* Store-wide figures. 0 or -1. */
int orch_store_stats(struct orch_store *st, struct orch_store_stats *out);

/* Records a response under its key (the first one wins: an existing key is kept). 0 or -1. */
int orch_store_journal_put(struct orch_store *st, const struct orch_journal_entry *e);
/* Looks up a key: 1 found (*out filled with heap copies the caller frees with orch_journal_clear),
 * 0 not found, -1 error. Also counts a hit on the entry (hits column). A hit that cannot be
 * written (lock held past the busy timeout, disk full) is dropped rather than failing the lookup:
 * the reply matters more than the counter. */
int orch_store_journal_get(struct orch_store *st, const char *key, struct orch_journal_owned *out);
/* A group commit: journal_put of the n entries, then journal_get of the m
 * lookups (which see those entries), in one transaction. 0, or -1 with
 * none of the entries written and every lookup cleared. */
int orch_store_journal_batch(struct orch_store *st, const struct orch_journal_entry *e, size_t n,
                             struct orch_journal_lookup *gets, size_t m);
/* One lookup answered at once from the store's read snapshot, where the
 * backend keeps one (SQLite): 0, or -1 when it cannot answer now (then
 * journal_batch answers it). The snapshot lasts until
 * orch_store_journal_peek_end, which must come before replies commit; on
 * SQLite any other operation of the store ends it first. */
int orch_store_journal_peek(struct orch_store *st, struct orch_journal_lookup *get);
void orch_store_journal_peek_end(struct orch_store *st);

/* Retention. Deletes a run with its checkpoints, results, events and
 * state: 1, 0 when there is no such run, -1 on error. */
int orch_store_run_delete(struct orch_store *st, const char *run_id);
/* Deletes the journal entries created before before_ms; *removed gets
 * their number. 0 or -1. */
int orch_store_journal_prune(struct orch_store *st, int64_t before_ms, int64_t *removed);
/* Gives the space of deleted data back to the file system. 0 or -1. */
int orch_store_vacuum(struct orch_store *st);
/* What the open store runs on: "SQLite 3.40.1", or "PostgreSQL 15.4"
 * (the server's version). Always NUL-terminates out. */
void orch_store_version(struct orch_store *st, char *out, size_t outlen);

/* The store libraries this orch is built with, for `orch version`: i = 0
 * gives "SQLite 3.40.1", i = 1 "PostgreSQL 15.10 (libpq)", i = 2
 * "hiredis 0.14.1" (Redis); NULL past the last. Needs no open store. */
const char *orch_store_library(size_t i);

/* Live figures: a running run's counters between checkpoints (rows done,
 * failed and in flight, rows/s, calls, tokens, cost, retries, ...), as one
 * JSON object the store keeps opaque, beside the heartbeat. The owner
 * writes them at most once a second; `orch status` and `orch serve` read
 * them. Deleted with the run. */
/* Replaces run_id's figures (JSON text) stamped updated_ms. 0 or -1 (no
 * such run included). */
int orch_store_live_put(struct orch_store *st, const char *run_id, int64_t updated_ms, const char *figures);
/* 1 found (*figures a heap copy the caller frees, *updated_ms its stamp),
 * 0 none written yet, -1 error. */
int orch_store_live_get(struct orch_store *st, const char *run_id, char **figures, int64_t *updated_ms);

/* Pages for the dashboard, each one indexed query however long the run:
 * the run's events with after_id < id < before_id (before_id 0: no upper
 * bound), oldest first or newest first, at most limit (> 0). 0 or -1. */
int orch_store_event_page(struct orch_store *st, const char *run_id, int64_t after_id, int64_t before_id,
                          int64_t limit, int newest_first, orch_event_cb cb, void *ud);
/* The run's results that carry an error (failed, defaulted) with seq >
 * after_seq, in seq order, at most limit (> 0), data left NULL. 0 or -1. */
int orch_store_error_page(struct orch_store *st, const char *run_id, int64_t after_seq, int64_t limit,
                          orch_result_cb cb, void *ud);

struct orch_store_ops; /* a backend's operations (store_impl.h) */

struct orch_store {
    const struct orch_store_ops *ops;
    const char *where; /* the store as messages name it: its path, or its URL with the password masked */
    char err[512];
    /* Set at open when the store works but cannot keep all of orch's
     * guarantees (a Redis server that does not fsync every write): what
     * could be lost and what to set, for the caller to warn with. NULL
     * otherwise, and always for read-only opens. */
    const char *warning;
    /* The memento's zstd context (ZSTD_CCtx), made at the first
     * checkpoint and kept until close: a context made per call clears its
     * tables each time, half the store's time of a small checkpoint
     * (bench/changes.md). NULL until then; backends calloc the struct. */
    void *zcctx;
};

/* Opens the store at target: a file path (created with its parent
 * directory when missing), ":memory:", or a postgres:// / postgresql://
 * URL (the schema created in that database when missing). A URL of any
 * other scheme is refused, never taken for a file name. Refuses, with a
 * message naming the file or the URL (password masked), a file that is
 * not a database, a corrupt one, another program's database, one whose
 * schema is newer than this orch knows, one that cannot be written (e.g.
 * a read-only directory) and a server that cannot be reached or refuses
 * the login. Never overwrites what it refuses. Returns NULL with the
 * message in err. */
struct orch_store *orch_store_open(const char *target, char *err, size_t errlen);

/* Flags of orch_store_open_flags. */
enum {
    /* Inspect only: never create, migrate or write the store. A missing
     * file is refused ("no state store at PATH"); a store whose file or
     * directory cannot be written is still read. Writes through such a
     * store fail. */
    ORCH_STORE_READONLY = 1,
    /* Refuse a store whose server could lose acknowledged writes in a
     * crash of its own (Redis without appendonly yes + appendfsync
     * always); without it such a store is opened with a warning. */
    ORCH_STORE_REQUIRE_DURABLE = 2,
};

/* orch_store_open with flags (0 = orch_store_open). */
struct orch_store *orch_store_open_flags(const char *target, int flags, char *err, size_t errlen);

/* target as messages show it: a URL's password (user:PASSWORD@ and any
 * password= query parameter) replaced by "***"; anything else as is.
 * Always NUL-terminates out (truncating). */
void orch_store_display(const char *target, char *out, size_t outlen);

/* The checksum a checkpoint must carry: hex XXH3-128 over its cursor
 * fields and raw memento. out holds 33 bytes. */
void orch_checkpoint_checksum(const struct orch_checkpoint *c, char out[33]);

void orch_run_clear(struct orch_run *r);
void orch_checkpoint_clear(struct orch_checkpoint *c);
void orch_event_clear(struct orch_event *e);
void orch_journal_clear(struct orch_journal_owned *e);

/* ---- many workers, one run (orch worker) ----------------------------
 * A worker run's input is split into leases: contiguous ranges of rows,
 * planned once (the first worker indexes the input) and claimed one at a
 * time by workers. Every time a lease operation reads or writes a time it
 * is the store's own clock (PostgreSQL's clock_timestamp()), never the
 * worker's, so workers whose clocks disagree still agree on staleness. */

/* One lease. Strings are heap copies owned by the struct (orch_lease_clear);
 * lease_plan reads only no, first_index, rows, offset, line. */
struct orch_lease {
    int64_t no;          /* 1, 2, ... in input order */
    int64_t first_index; /* rows of the input before the lease's first row */
    int64_t rows;        /* rows in the lease */
    int64_t offset;      /* the input cursor of the lease's first unsettled row: byte offset, */
    int64_t line;        /* physical line, */
    int64_t index;       /* and rows before it (first_index + rows committed) */
    char *status;        /* "free", "taken" or "done" */
    char *owner;         /* the worker that holds it (or finished it); NULL before the first claim */
    int64_t claims;      /* times it was claimed (more than 1: it was taken back from a stale worker) */
    int64_t claimed_ms, heartbeat_ms, done_ms; /* store clock; 0 when not yet */
    int64_t age_ms;                            /* lease_list: the store's now - heartbeat_ms */
};

/* What lease_commit writes besides the results. */
struct orch_lease_commit {
    int64_t no;
    const char *worker;
    int64_t offset, line, index; /* the lease's cursor past its last committed row */
    int end;                     /* 0: progress (the lease stays taken), 1: done, 2: given back (free) */
    const struct orch_run *add;  /* counters to add to the run: rows_*, llm_calls, tokens_*, cost_usd */
};

/* Inserts the run's lease plan (n leases) unless the run has one already:
 * two workers that index the input at once plan the same leases. 0 or -1. */
int orch_store_lease_plan(struct orch_store *st, const char *run_id, const struct orch_lease *l, size_t n);
/* Claims for worker the first lease (lowest no) that is free, or taken by
 * a worker whose heartbeat is older than stale_ms by the store's clock;
 * never one another claimer holds (FOR UPDATE SKIP LOCKED). 1 claimed
 * (*out filled), 0 none left to claim, -1 error. */
int orch_store_lease_claim(struct orch_store *st, const char *run_id, const char *worker, int64_t stale_ms,
                           struct orch_lease *out);
/* Heartbeats lease no held by worker. 1 held, 0 lost (taken back or not
 * the worker's), -1 error. */
int orch_store_lease_heartbeat(struct orch_store *st, const char *run_id, int64_t no, const char *worker);
/* One transaction: the nres results (with their data), the lease's cursor
 * and end, the run's counters (+= c->add), and, when this completes the
 * run's last lease, the run's status "completed". Nothing is written when
 * the worker no longer holds the lease. 1 committed, 2 committed and the
 * run completed, 0 lost, -1 error. Also drops c->worker's journal_pend
 * markers whose replies are journaled. */
int orch_store_lease_commit(struct orch_store *st, const char *run_id, const struct orch_lease_commit *c,
                            const struct orch_result *res, size_t nres);
/* Callback of lease_list: 0 to go on. The lease is valid during the call. */
typedef int (*orch_lease_cb)(void *ud, const struct orch_lease *l);
/* The run's leases in order. 0 or -1. */
int orch_store_lease_list(struct orch_store *st, const char *run_id, orch_lease_cb cb, void *ud);

/* The run's shared budget (every worker's spend): reserves est_usd if
 * spent + reserved + est_usd <= the run's max (set to max_usd by the first
 * reservation, or by budget_set). 1 reserved, 0 it would pass the max, -1
 * error. */
int orch_store_budget_reserve(struct orch_store *st, const char *run_id, double est_usd, double max_usd);
/* Settles: reserved -= released_usd (not below 0), spent += spent_usd. 0 or -1. */
int orch_store_budget_settle(struct orch_store *st, const char *run_id, double released_usd,
                             double spent_usd);
/* Sets the run's max (orch resume --budget). 0 or -1. */
int orch_store_budget_set(struct orch_store *st, const char *run_id, double max_usd);
/* The run's budget: 1 (filled), 0 none yet, -1 error. */
int orch_store_budget_get(struct orch_store *st, const char *run_id, double *max_usd, double *spent_usd,
                          double *reserved_usd);

/* The shared journal's pending markers: before sending a request whose
 * reply is not journaled, a worker marks its key as its own for ttl_ms
 * (store clock); a worker that finds another's live marker waits for the
 * reply to reach the journal instead of paying again. 1 the key is now
 * this owner's (it was free, expired, or already its own), 0 another
 * owner's live marker holds it or the reply is journaled already (a
 * lookup that missed it raced the commit that journaled it and dropped
 * its marker: look again rather than pay again), -1 error. A
 * lease_commit removes the committing worker's markers whose replies
 * are journaled. */
int orch_store_journal_pend(struct orch_store *st, const char *key, const char *owner, int64_t ttl_ms);

/* Sets only the run's status and error (finished_ms when completed or
 * failed), leaving its counters to the workers' commits, which add to
 * them meanwhile. 1, 0 no such run, -1 error. */
int orch_store_run_set_status(struct orch_store *st, const char *run_id, enum orch_run_status status,
                              const char *error);

/* ---- shared rate limits (many workers, one run) ---- */

/* The run's shared rate limit of one kind ("rpm", "tpm", ...): a token
 * bucket in the store, so every worker of the run draws on one limit.
 * It holds at most limit_per_min / 60 tokens (one second's worth, at
 * least 1) and refills at limit_per_min / 60 a second by the store's
 * clock, never a worker's. Takes amount (at most the capacity: a larger
 * one takes a full bucket) when the bucket holds it, in one atomic
 * statement. 0 granted; else nothing is taken and the result is the ms
 * until it would be (1 or more); -1 error. So the grants of any span of
 * T ms of the store's clock add up to at most capacity + T x rate. */
int64_t orch_store_rate_take(struct orch_store *st, const char *run_id, const char *kind, double amount,
                             double limit_per_min);

void orch_lease_clear(struct orch_lease *l);

#endif
