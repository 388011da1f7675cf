/* store_sqlite_impl.h — private to the SQLite backend (store_sqlite*.c):
 * the connection struct, the prepared statements, and the helpers the
 * three units share. store_sqlite_schema.c owns the schema and its
 * migrations, store_sqlite_open.c opening, validation and closing,
 * store_sqlite.c the operations. Depends on libsqlite3 and store_impl.h. */
#ifndef ORCH_STORE_SQLITE_IMPL_H
#define ORCH_STORE_SQLITE_IMPL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "journal_ahead.h"
#include "journal_hits.h"
#include "store.h"

/* PRAGMA application_id of an orch state database: "ORCH" in ASCII. */
#define SQ_APPLICATION_ID 0x4F524348

/* The schema version this build writes: the number of migrations
 * (store_sqlite_schema.c checks the two agree at compile time). */
#define SQ_SCHEMA_VERSION 9

/* How long a statement waits for another process's lock, in seconds; the
 * messages for a lock that outlasted it are derived from it. */
#define SQ_BUSY_S 5
#define SQ_BUSY_MS (SQ_BUSY_S * 1000)
#define SQ_STR_(x) #x
#define SQ_STR(x) SQ_STR_(x)
#define SQ_LOCKED_MSG "the database is locked by another process (waited " SQ_STR(SQ_BUSY_S) " s)"

/* The main connection reads the database file through a mapping of up to
 * this many bytes: a replay's lookups land on random pages of the key's
 * index and the journal, and a page read from the mapping is not copied
 * in by a pread (a 20,000-row replay made 11,431 of them with the 512 KiB
 * cache). Pages still in the WAL are read as before; SQLite maps the file
 * again at a read transaction's start when its size has changed. */
#define SQ_MMAP "268435456"

enum sq_stmt {
    SQ_BEGIN,
    SQ_BEGIN_READ,
    SQ_COMMIT,
    SQ_ROLLBACK,
    SQ_RUN_INSERT,
    SQ_RUN_GET,
    SQ_RUN_FIND,
    SQ_RUN_UPDATE,
    SQ_RUN_CLAIM,
    SQ_RUN_HEARTBEAT,
    SQ_RUN_DELETE,
    SQ_RUN_LIST,
    SQ_CP_NEXT_SEQ,
    SQ_CP_INSERT,
    SQ_CP_NEWEST,
    SQ_CP_GET,
    SQ_CP_LIST,
    SQ_CP_DELETE_AFTER,
    SQ_RES_INSERT,
    SQ_RES_DELETE_AFTER,
    SQ_RES_LIST,
    SQ_STATE_UPSERT,
    SQ_STATE_DELETE,
    SQ_STATE_LIST,
    SQ_EV_INSERT,
    SQ_EV_LIST,
    SQ_JR_INSERT,
    SQ_JR_GET,
    SQ_JR_REPLY,
    SQ_JR_AHEAD,
    SQ_JR_HIT,
    SQ_JR_HIT_ROW,
    SQ_JR_PRUNE,
    SQ_JH_INSERT,
    SQ_JH_LIST,
    SQ_JH_CLEAR,
    SQ_JH_SIZE,
    SQ_STATS_RUNS,
    SQ_STATS_CPS,
    SQ_STATS_JOURNAL,
    SQ_STATS_SIZE,
    /* live figures */
    SQ_LIVE_PUT,
    SQ_LIVE_GET,
    SQ_EV_PAGE,
    SQ_EV_PAGE_DESC,
    SQ_ERR_PAGE,
    /* results in chunks (schema 5) */
    SQ_RCH_INSERT,
    SQ_RCH_LIST,
    SQ_RCH_OVERLAP,
    SQ_RCH_DELETE,
    SQ_RCH_DELETE_AFTER,
    SQ_RES_MAX_SEQ,
    /* a checkpoint's run row: the status apart */
    SQ_RUN_UPDATE_KEEP,
    SQ_RUN_STATUS,
    SQ_NSTMT
};

/* SQL text of each statement, indexed by enum sq_stmt (store_sqlite.c). */
extern const char *const sq_sql[SQ_NSTMT];

struct sq_store {
    struct orch_store base; /* first: a struct orch_store * is a struct sq_store * */
    sqlite3 *db;
    char *path;
    int memory;
    sqlite3_stmt *stmt[SQ_NSTMT];
    struct orch_jhits hits;   /* journal hits not yet written (journal_hits.h) */
    int peeking;              /* the journal's read snapshot for this round is open (journal_peek) */
    struct orch_jahead ahead; /* entries the snapshot read ahead (journal_ahead.h) */
};

/* Ends the journal's read snapshot (store_sqlite.c). */
void sq_peek_end(struct sq_store *st);

/* The store of an operation: any operation but journal_peek first ends
 * the round's read snapshot, so it runs in a transaction of its own. */
static inline struct sq_store *sq_of(struct orch_store *base)
{
    struct sq_store *st = (struct sq_store *)base;
    if (st->peeking)
        sq_peek_end(st);
    return st;
}

/* The backend's operations table (store_sqlite.c). */
extern const struct orch_store_ops sq_ops;

/* Runs a one-row, one-column pragma or query (constant SQL, not kept).
 * Returns the SQLite result code; *out gets the integer value, or the
 * text value in text (when non-NULL). */
int sq_query1(sqlite3 *db, const char *sql, int64_t *out, char *text, size_t textlen);

/* Brings the schema up to SQ_SCHEMA_VERSION (store_sqlite_schema.c). */
int sq_migrate(sqlite3 *db, const char *path, char *err, size_t errlen);

/* The message a user can act on for a failure while opening
 * (store_sqlite_open.c). */
void sq_open_error(sqlite3 *db, const char *path, int rc, const char *what, char *err, size_t errlen);

/* The journal's hits (store_sqlite.c), bookkeeping, so a failure only
 * loses counts. write: those counted in memory appended to the log
 * (llm_journal_hits), in the open transaction or one of its own. fold:
 * those and the log added to the entries' hits, the log emptied. close:
 * write, and fold once the log is large. */
void sq_journal_hits_write(struct sq_store *st);
void sq_journal_hits_fold(struct sq_store *st);
void sq_journal_hits_close(struct sq_store *st);

/* Finalizes the statements, closes the connection, frees st; NULL is a
 * no-op (store_sqlite_open.c). */
void sq_close(struct orch_store *base);

#endif
