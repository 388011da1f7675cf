/* store_sqlite.c — the SQLite backend of the state store (store.h): one
 * database file (or ":memory:") in WAL mode, synchronous=NORMAL, every
 * statement prepared once at open and bound, never built from strings.
 * The schema is versioned with PRAGMA user_version and marked as orch's
 * with PRAGMA application_id; opening refuses, without writing a byte,
 * files that are not databases, corrupt ones, other programs' databases
 * and schemas newer than this build knows.
 * Pure C: depends on libc, libsqlite3 and store.c's shared helpers
 * (store_impl.h: zstd memento codec, XXH3 checksum, clocks). */
#include "store.h"
#include "store_impl.h"

#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* PRAGMA application_id of an orch state database: "ORCH" in ASCII. */
#define SQ_APPLICATION_ID 0x4F524348

/* How long a statement waits for another process's lock. */
#define SQ_BUSY_MS 5000

/* Forward migrations: sq_migrations[v] takes a database from schema v to
 * v + 1 and ends by setting user_version to v + 1. They run in one
 * transaction at open. Never edit a shipped entry; append a new one. */
static const char *const sq_migrations[] = {
    /* 0 -> 1 */
    "PRAGMA application_id = 1330791240;\n" /* SQ_APPLICATION_ID */
    "CREATE TABLE runs (\n"
    "  id TEXT PRIMARY KEY,\n"
    "  name TEXT NOT NULL,\n"
    "  identity TEXT NOT NULL,\n"
    "  workflow_path TEXT,\n"
    "  workflow_hash TEXT,\n"
    "  input TEXT,\n"
    "  input_fp TEXT,\n"
    "  params TEXT,\n"
    "  output TEXT,\n"
    "  error TEXT,\n"
    "  owner_host TEXT,\n"
    "  status TEXT NOT NULL CHECK (status IN ('pending','running','paused','completed','failed')),\n"
    "  owner_pid INTEGER NOT NULL DEFAULT 0,\n"
    "  heartbeat_ms INTEGER NOT NULL DEFAULT 0,\n"
    "  created_ms INTEGER NOT NULL,\n"
    "  updated_ms INTEGER NOT NULL,\n"
    "  finished_ms INTEGER NOT NULL DEFAULT 0,\n"
    "  rows_done INTEGER NOT NULL DEFAULT 0,\n"
    "  rows_ok INTEGER NOT NULL DEFAULT 0,\n"
    "  rows_failed INTEGER NOT NULL DEFAULT 0,\n"
    "  rows_dropped INTEGER NOT NULL DEFAULT 0,\n"
    "  rows_defaulted INTEGER NOT NULL DEFAULT 0,\n"
    "  llm_calls INTEGER NOT NULL DEFAULT 0,\n"
    "  tokens_in INTEGER NOT NULL DEFAULT 0,\n"
    "  tokens_out INTEGER NOT NULL DEFAULT 0,\n"
    "  cost_usd REAL NOT NULL DEFAULT 0,\n"
    "  recoveries INTEGER NOT NULL DEFAULT 0\n"
    ");\n"
    "CREATE INDEX runs_identity_status ON runs (identity, status);\n"
    "CREATE INDEX runs_created ON runs (created_ms);\n"
    "CREATE TABLE checkpoints (\n"
    "  run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  seq INTEGER NOT NULL,\n"
    "  name TEXT,\n"
    "  reason TEXT,\n"
    "  created_ms INTEGER NOT NULL,\n"
    "  input_offset INTEGER NOT NULL,\n"
    "  input_line INTEGER NOT NULL,\n"
    "  input_index INTEGER NOT NULL,\n"
    "  output_offset INTEGER NOT NULL,\n"
    "  errors_offset INTEGER NOT NULL,\n"
    "  memento BLOB NOT NULL,      -- zstd frame of the raw memento\n"
    "  memento_len INTEGER NOT NULL, -- raw size\n"
    "  checksum TEXT NOT NULL,     -- hex XXH3-128 of the cursor fields + raw memento\n"
    "  bytes INTEGER NOT NULL,\n"
    "  duration_ms REAL NOT NULL,\n"
    "  PRIMARY KEY (run_id, seq)\n"
    ");\n"
    "CREATE TABLE results (\n"
    "  run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  seq INTEGER NOT NULL,\n"
    "  key TEXT,\n"
    "  status TEXT NOT NULL,\n"
    "  error TEXT,\n"
    "  data BLOB,\n"
    "  checkpoint_seq INTEGER NOT NULL,\n"
    "  PRIMARY KEY (run_id, seq)\n"
    ") WITHOUT ROWID;\n"
    "CREATE TABLE events (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  run_id TEXT REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  ts_ms INTEGER NOT NULL,\n"
    "  type TEXT NOT NULL,\n"
    "  data TEXT\n"
    ");\n"
    "CREATE INDEX events_run ON events (run_id);\n"
    "CREATE TABLE state (\n"
    "  run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  key TEXT NOT NULL,\n"
    "  value TEXT NOT NULL,\n"
    "  PRIMARY KEY (run_id, key)\n"
    ") WITHOUT ROWID;\n"
    "PRAGMA user_version = 1;\n",
    /* 1 -> 2: the LLM response journal. No foreign key to runs: entries
     * outlive their run, and one may be written before its run row. */
    "CREATE TABLE llm_journal (\n"
    "  key TEXT PRIMARY KEY,       -- hex hash of provider + model + canonical request\n"
    "  run_id TEXT,                -- the run that paid for it\n"
    "  provider TEXT,\n"
    "  model TEXT,\n"
    "  response BLOB NOT NULL,\n"
    "  tokens_in INTEGER,\n"
    "  tokens_out INTEGER,\n"
    "  cost_usd REAL,\n"
    "  latency_ms REAL,\n"
    "  created_ms INTEGER NOT NULL,\n"
    "  hits INTEGER NOT NULL DEFAULT 0 -- lookups that found it\n"
    ") WITHOUT ROWID;\n"
    "PRAGMA user_version = 2;\n",
};

#define SQ_SCHEMA_VERSION ((int)(sizeof sq_migrations / sizeof sq_migrations[0]))

/* Column lists shared by several statements; the readers below depend on
 * their order. */
#define SQ_RUN_COLS                                                                                          \
    "id, name, identity, workflow_path, workflow_hash, input, input_fp, params, output, error, "             \
    "owner_host, status, owner_pid, heartbeat_ms, created_ms, updated_ms, finished_ms, rows_done, "          \
    "rows_ok, rows_failed, rows_dropped, rows_defaulted, llm_calls, tokens_in, tokens_out, cost_usd, "       \
    "recoveries"
#define SQ_RUN_SELECT                                                                                        \
    "SELECT " SQ_RUN_COLS ", (SELECT count(*) FROM checkpoints c WHERE c.run_id = runs.id) FROM runs "
#define SQ_JR_COLS                                                                                           \
    "key, run_id, provider, model, response, tokens_in, tokens_out, cost_usd, latency_ms, created_ms, hits"
#define SQ_CP_COLS                                                                                           \
    "seq, name, reason, created_ms, input_offset, input_line, input_index, output_offset, "                  \
    "errors_offset, memento, memento_len, checksum, bytes, duration_ms"

enum sq_stmt {
    SQ_BEGIN,
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
    SQ_JR_HIT,
    SQ_JR_PRUNE,
    SQ_STATS_RUNS,
    SQ_STATS_CPS,
    SQ_STATS_JOURNAL,
    SQ_STATS_SIZE,
    SQ_NSTMT
};

static const char *const sq_sql[SQ_NSTMT] = {
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_RUN_INSERT] =
        "INSERT INTO runs (" SQ_RUN_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
        "?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)",
    [SQ_RUN_GET] = SQ_RUN_SELECT "WHERE id = ?1",
    [SQ_RUN_FIND] = SQ_RUN_SELECT "WHERE identity = ?1 AND status IN ('pending', 'running', 'paused') "
                                  "ORDER BY created_ms DESC, rowid DESC LIMIT 1",
    [SQ_RUN_UPDATE] = "UPDATE runs SET status = ?2, error = ?3, owner_pid = ?4, owner_host = ?5, "
                      "heartbeat_ms = ?6, finished_ms = ?7, rows_done = ?8, rows_ok = ?9, rows_failed = ?10, "
                      "rows_dropped = ?11, rows_defaulted = ?12, llm_calls = ?13, tokens_in = ?14, "
                      "tokens_out = ?15, cost_usd = ?16, recoveries = ?17, updated_ms = ?18 WHERE id = ?1",
    [SQ_RUN_CLAIM] = "UPDATE runs SET owner_pid = ?2, owner_host = ?3, heartbeat_ms = ?4, updated_ms = ?4, "
                     "status = 'running' WHERE id = ?1 AND owner_pid = ?5 AND heartbeat_ms = ?6",
    [SQ_RUN_HEARTBEAT] = "UPDATE runs SET heartbeat_ms = ?2 WHERE id = ?1",
    /* its checkpoints, results, events and state go with it (ON DELETE CASCADE) */
    [SQ_RUN_DELETE] = "DELETE FROM runs WHERE id = ?1",
    [SQ_RUN_LIST] = SQ_RUN_SELECT "WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR name = ?2) "
                                  "AND (?3 = 0 OR created_ms >= ?3) AND (?4 = 0 OR created_ms < ?4) "
                                  "ORDER BY created_ms DESC, rowid DESC",
    [SQ_CP_NEXT_SEQ] = "SELECT coalesce(max(seq), 0) + 1 FROM checkpoints WHERE run_id = ?1",
    [SQ_CP_INSERT] =
        "INSERT INTO checkpoints (run_id, " SQ_CP_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
        "?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    [SQ_CP_NEWEST] = "SELECT " SQ_CP_COLS " FROM checkpoints WHERE run_id = ?1 ORDER BY seq DESC",
    [SQ_CP_GET] = "SELECT " SQ_CP_COLS " FROM checkpoints WHERE run_id = ?1 AND seq = ?2",
    [SQ_CP_LIST] = "SELECT " SQ_CP_COLS " FROM checkpoints WHERE run_id = ?1 ORDER BY seq",
    [SQ_CP_DELETE_AFTER] = "DELETE FROM checkpoints WHERE run_id = ?1 AND seq > ?2",
    /* An upsert, not INSERT OR REPLACE: same effect (a row re-run after a
     * rollback or crash overwrites the old one), but REPLACE's delete +
     * insert costs ~20% more per row with foreign keys on. */
    [SQ_RES_INSERT] = "INSERT INTO results (run_id, seq, key, status, error, data, checkpoint_seq) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (run_id, seq) DO UPDATE SET "
                      "key = excluded.key, status = excluded.status, error = excluded.error, "
                      "data = excluded.data, checkpoint_seq = excluded.checkpoint_seq",
    [SQ_RES_DELETE_AFTER] = "DELETE FROM results WHERE run_id = ?1 AND checkpoint_seq > ?2",
    [SQ_RES_LIST] = "SELECT seq, key, status, error, data FROM results WHERE run_id = ?1 ORDER BY seq",
    [SQ_STATE_UPSERT] = "INSERT INTO state (run_id, key, value) VALUES (?1, ?2, ?3) "
                        "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
    [SQ_STATE_DELETE] = "DELETE FROM state WHERE run_id = ?1 AND key = ?2",
    [SQ_STATE_LIST] = "SELECT key, value FROM state WHERE run_id = ?1 ORDER BY key",
    [SQ_EV_INSERT] = "INSERT INTO events (run_id, ts_ms, type, data) VALUES (?1, ?2, ?3, ?4)",
    /* IS, so a NULL run_id lists the store-wide events */
    [SQ_EV_LIST] = "SELECT id, ts_ms, type, data FROM events WHERE run_id IS ?1 ORDER BY id",
    /* First wins: a key already journaled keeps its reply, its cost and
     * its hits (a second payer for the same request changes nothing). */
    [SQ_JR_INSERT] = "INSERT INTO llm_journal (" SQ_JR_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
                     "?10, 0) ON CONFLICT (key) DO NOTHING",
    [SQ_JR_GET] = "SELECT " SQ_JR_COLS " FROM llm_journal WHERE key = ?1",
    [SQ_JR_HIT] = "UPDATE llm_journal SET hits = hits + 1 WHERE key = ?1",
    [SQ_JR_PRUNE] = "DELETE FROM llm_journal WHERE created_ms < ?1",
    [SQ_STATS_RUNS] =
        "SELECT count(*), coalesce(sum(status = 'running'), 0), coalesce(sum(status = 'paused'), 0), "
        "coalesce(sum(status = 'failed'), 0), coalesce(sum(status = 'completed'), 0), "
        "coalesce(sum(recoveries), 0) FROM runs",
    [SQ_STATS_CPS] = "SELECT count(*), coalesce(avg(duration_ms), 0.0), coalesce(max(duration_ms), 0.0) "
                     "FROM checkpoints",
    [SQ_STATS_JOURNAL] = "SELECT count(*), coalesce(sum(hits), 0), coalesce(sum(cost_usd * hits), 0.0) "
                         "FROM llm_journal",
    [SQ_STATS_SIZE] = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
};

struct sq_store {
    struct orch_store base; /* first: a struct orch_store * is a struct sq_store * */
    sqlite3 *db;
    char *path;
    int memory;
    sqlite3_stmt *stmt[SQ_NSTMT];
};

static struct sq_store *sq_of(struct orch_store *st)
{
    return (struct sq_store *)st;
}

/* ---- errors ---------------------------------------------------------- */

/* Records "PATH: <what>: <sqlite's message>" in st->base.err and returns
 * -1. Call it before anything else touches the connection (a ROLLBACK
 * would replace the message). */
static int sq_fail(struct sq_store *st, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int rc = sqlite3_errcode(st->db) & 0xff;
    const char *msg = sqlite3_errmsg(st->db);
    if (rc == SQLITE_BUSY)
        msg = "the database is locked by another process (waited 5 s)";
    snprintf(st->base.err, sizeof st->base.err, "%s: %s: %s", st->path, what, msg);
    return -1;
}

/* Like sq_fail for failures that are not SQLite's (memory, codec). */
static int sq_fail_plain(struct sq_store *st, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(st->base.err, sizeof st->base.err, "%s: %s", st->path, what);
    return -1;
}

/* The message a user can act on for a failure while opening: not a
 * database, corrupt, not writable, or (anything else) what failed. */
static void sq_open_error(sqlite3 *db, const char *path, int rc, const char *what, char *err, size_t errlen)
{
    char detail[300];
    const char *msg = db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    int sys = db != NULL ? sqlite3_system_errno(db) : 0;
    int prim = rc & 0xff;
    if (sys != 0 && (prim == SQLITE_CANTOPEN || prim == SQLITE_IOERR || prim == SQLITE_READONLY))
        snprintf(detail, sizeof detail, "%s: %s", msg, strerror(sys));
    else
        snprintf(detail, sizeof detail, "%s", msg);
    switch (prim) {
    case SQLITE_NOTADB:
        snprintf(err, errlen, "%s: not an orch state database (%s)", path, detail);
        break;
    case SQLITE_CORRUPT:
        snprintf(err, errlen, "%s: the state database is corrupt (%s)", path, detail);
        break;
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
        snprintf(
            err, errlen,
            "%s: cannot write the state database (%s); check the permissions of the file and its directory",
            path, detail);
        break;
    case SQLITE_BUSY:
        snprintf(err, errlen, "%s: %s: the database is locked by another process (waited 5 s)", path, what);
        break;
    default:
        snprintf(err, errlen, "%s: %s: %s", path, what, detail);
        break;
    }
}

/* ---- statement helpers ----------------------------------------------- */

/* Resets s and drops its bindings, so no pointer bound with SQLITE_STATIC
 * outlives the call that bound it. */
static void sq_done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

/* Steps a statement that returns no rows. 0, or -1 with st->err set from
 * what. Always resets. */
static int sq_exec(struct sq_store *st, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        sq_fail(st, "%s", what);
        sq_done(s);
        return -1;
    }
    sq_done(s);
    return 0;
}

static int sq_begin(struct sq_store *st, const char *what)
{
    return sq_exec(st, st->stmt[SQ_BEGIN], what);
}

static int sq_commit(struct sq_store *st, const char *what)
{
    return sq_exec(st, st->stmt[SQ_COMMIT], what);
}

/* Rolls back the open transaction, if SQLite has not already done so;
 * keeps st->err as the caller set it. */
static void sq_abort(struct sq_store *st)
{
    if (sqlite3_get_autocommit(st->db))
        return;
    sqlite3_step(st->stmt[SQ_ROLLBACK]);
    sq_done(st->stmt[SQ_ROLLBACK]);
}

static int sq_bind_text(sqlite3_stmt *s, int i, const char *v)
{
    return sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC) != SQLITE_OK;
}

static int sq_bind_int(sqlite3_stmt *s, int i, int64_t v)
{
    return sqlite3_bind_int64(s, i, v) != SQLITE_OK;
}

/* A heap copy of text column i, or NULL for SQL NULL; *oom is set when
 * the copy cannot be made. */
static char *sq_col_dup(sqlite3_stmt *s, int i, int *oom)
{
    if (sqlite3_column_type(s, i) == SQLITE_NULL)
        return NULL;
    const unsigned char *t = sqlite3_column_text(s, i);
    size_t n = (size_t)sqlite3_column_bytes(s, i);
    char *p = t != NULL ? malloc(n + 1) : NULL;
    if (p == NULL) {
        *oom = 1;
        return NULL;
    }
    memcpy(p, t, n);
    p[n] = '\0';
    return p;
}

/* ---- runs ------------------------------------------------------------- */

/* Fills out (zeroed first, heap strings it then owns) from the current
 * row of an SQ_RUN_SELECT statement. 0, or -1 when memory runs out (out
 * cleared). */
static int sq_run_row(sqlite3_stmt *s, struct orch_run *out)
{
    int oom = 0;
    memset(out, 0, sizeof *out);
    out->id = sq_col_dup(s, 0, &oom);
    out->name = sq_col_dup(s, 1, &oom);
    out->identity = sq_col_dup(s, 2, &oom);
    out->workflow_path = sq_col_dup(s, 3, &oom);
    out->workflow_hash = sq_col_dup(s, 4, &oom);
    out->input = sq_col_dup(s, 5, &oom);
    out->input_fp = sq_col_dup(s, 6, &oom);
    out->params = sq_col_dup(s, 7, &oom);
    out->output = sq_col_dup(s, 8, &oom);
    out->error = sq_col_dup(s, 9, &oom);
    out->owner_host = sq_col_dup(s, 10, &oom);
    int status = orch_run_status_parse((const char *)sqlite3_column_text(s, 11));
    /* The CHECK constraint keeps other values out; a hand-edited row
     * reads as failed rather than as something resumable. */
    out->status = status >= 0 ? (enum orch_run_status)status : ORCH_RUN_FAILED;
    out->owner_pid = sqlite3_column_int64(s, 12);
    out->heartbeat_ms = sqlite3_column_int64(s, 13);
    out->created_ms = sqlite3_column_int64(s, 14);
    out->updated_ms = sqlite3_column_int64(s, 15);
    out->finished_ms = sqlite3_column_int64(s, 16);
    out->rows_done = sqlite3_column_int64(s, 17);
    out->rows_ok = sqlite3_column_int64(s, 18);
    out->rows_failed = sqlite3_column_int64(s, 19);
    out->rows_dropped = sqlite3_column_int64(s, 20);
    out->rows_defaulted = sqlite3_column_int64(s, 21);
    out->llm_calls = sqlite3_column_int64(s, 22);
    out->tokens_in = sqlite3_column_int64(s, 23);
    out->tokens_out = sqlite3_column_int64(s, 24);
    out->cost_usd = sqlite3_column_double(s, 25);
    out->recoveries = sqlite3_column_int64(s, 26);
    out->checkpoints = sqlite3_column_int64(s, 27);
    if (oom) {
        orch_run_clear(out);
        return -1;
    }
    return 0;
}

/* Binds the fields run_update writes (SQ_RUN_UPDATE's parameters). */
static int sq_bind_run_update(sqlite3_stmt *s, const struct orch_run *r, int64_t now)
{
    int bad = 0;
    bad |= sq_bind_text(s, 1, r->id);
    bad |= sq_bind_text(s, 2, orch_run_status_name(r->status));
    bad |= sq_bind_text(s, 3, r->error);
    bad |= sq_bind_int(s, 4, r->owner_pid);
    bad |= sq_bind_text(s, 5, r->owner_host);
    bad |= sq_bind_int(s, 6, r->heartbeat_ms);
    bad |= sq_bind_int(s, 7, r->finished_ms);
    bad |= sq_bind_int(s, 8, r->rows_done);
    bad |= sq_bind_int(s, 9, r->rows_ok);
    bad |= sq_bind_int(s, 10, r->rows_failed);
    bad |= sq_bind_int(s, 11, r->rows_dropped);
    bad |= sq_bind_int(s, 12, r->rows_defaulted);
    bad |= sq_bind_int(s, 13, r->llm_calls);
    bad |= sq_bind_int(s, 14, r->tokens_in);
    bad |= sq_bind_int(s, 15, r->tokens_out);
    bad |= sqlite3_bind_double(s, 16, r->cost_usd) != SQLITE_OK;
    bad |= sq_bind_int(s, 17, r->recoveries);
    bad |= sq_bind_int(s, 18, now);
    return bad ? -1 : 0;
}

/* Runs SQ_RUN_UPDATE for r; a run that does not exist is an error. */
static int sq_run_update_stmt(struct sq_store *st, const struct orch_run *r)
{
    sqlite3_stmt *s = st->stmt[SQ_RUN_UPDATE];
    if (sq_bind_run_update(s, r, orch_store_now_ms()) != 0) {
        sq_fail(st, "cannot update run %s", r->id);
        sq_done(s);
        return -1;
    }
    if (sq_exec(st, s, "cannot update run") != 0)
        return -1;
    if (sqlite3_changes(st->db) != 1)
        return sq_fail_plain(st, "cannot update run %s: no such run", r->id);
    return 0;
}

static int sq_run_create(struct orch_store *base, const struct orch_run *r)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_RUN_INSERT];
    int64_t created = r->created_ms != 0 ? r->created_ms : orch_store_now_ms();
    int64_t updated = r->updated_ms != 0 ? r->updated_ms : created;
    int bad = 0;
    bad |= sq_bind_text(s, 1, r->id);
    bad |= sq_bind_text(s, 2, r->name);
    bad |= sq_bind_text(s, 3, r->identity);
    bad |= sq_bind_text(s, 4, r->workflow_path);
    bad |= sq_bind_text(s, 5, r->workflow_hash);
    bad |= sq_bind_text(s, 6, r->input);
    bad |= sq_bind_text(s, 7, r->input_fp);
    bad |= sq_bind_text(s, 8, r->params);
    bad |= sq_bind_text(s, 9, r->output);
    bad |= sq_bind_text(s, 10, r->error);
    bad |= sq_bind_text(s, 11, r->owner_host);
    bad |= sq_bind_text(s, 12, orch_run_status_name(r->status));
    bad |= sq_bind_int(s, 13, r->owner_pid);
    bad |= sq_bind_int(s, 14, r->heartbeat_ms);
    bad |= sq_bind_int(s, 15, created);
    bad |= sq_bind_int(s, 16, updated);
    bad |= sq_bind_int(s, 17, r->finished_ms);
    bad |= sq_bind_int(s, 18, r->rows_done);
    bad |= sq_bind_int(s, 19, r->rows_ok);
    bad |= sq_bind_int(s, 20, r->rows_failed);
    bad |= sq_bind_int(s, 21, r->rows_dropped);
    bad |= sq_bind_int(s, 22, r->rows_defaulted);
    bad |= sq_bind_int(s, 23, r->llm_calls);
    bad |= sq_bind_int(s, 24, r->tokens_in);
    bad |= sq_bind_int(s, 25, r->tokens_out);
    bad |= sqlite3_bind_double(s, 26, r->cost_usd) != SQLITE_OK;
    bad |= sq_bind_int(s, 27, r->recoveries);
    if (bad) {
        sq_fail(st, "cannot create run %s", r->id != NULL ? r->id : "(null)");
        sq_done(s);
        return -1;
    }
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) {
        sq_fail(st, "cannot create run %s", r->id != NULL ? r->id : "(null)");
        sq_done(s);
        return -1;
    }
    sq_done(s);
    return 0;
}

/* Runs a bound SQ_RUN_SELECT statement expected to give at most one row:
 * 1 with out filled, 0 none, -1 error. Resets s. */
static int sq_run_one(struct sq_store *st, sqlite3_stmt *s, struct orch_run *out, const char *what)
{
    int rc = sqlite3_step(s);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        ret = 1;
        if (sq_run_row(s, out) != 0)
            ret = sq_fail_plain(st, "%s: out of memory", what);
    } else if (rc != SQLITE_DONE) {
        ret = sq_fail(st, "%s", what);
    }
    sq_done(s);
    return ret;
}

static int sq_run_get(struct orch_store *base, const char *id, struct orch_run *out)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_RUN_GET];
    if (sq_bind_text(s, 1, id)) {
        sq_done(s);
        return sq_fail(st, "cannot read run %s", id);
    }
    return sq_run_one(st, s, out, "cannot read run");
}

static int sq_run_find_unfinished(struct orch_store *base, const char *identity, struct orch_run *out)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_RUN_FIND];
    if (sq_bind_text(s, 1, identity)) {
        sq_done(s);
        return sq_fail(st, "cannot look up unfinished runs");
    }
    return sq_run_one(st, s, out, "cannot look up unfinished runs");
}

static int sq_run_update(struct orch_store *base, const struct orch_run *r)
{
    return sq_run_update_stmt(sq_of(base), r);
}

static int sq_run_claim(struct orch_store *base, const char *id, int64_t pid, const char *host,
                        int64_t now_ms, int64_t expect_pid, int64_t expect_heartbeat_ms)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_RUN_CLAIM];
    int bad = 0;
    bad |= sq_bind_text(s, 1, id);
    bad |= sq_bind_int(s, 2, pid);
    bad |= sq_bind_text(s, 3, host);
    bad |= sq_bind_int(s, 4, now_ms);
    bad |= sq_bind_int(s, 5, expect_pid);
    bad |= sq_bind_int(s, 6, expect_heartbeat_ms);
    if (bad) {
        sq_fail(st, "cannot claim run %s", id);
        sq_done(s);
        return -1;
    }
    if (sq_exec(st, s, "cannot claim run") != 0)
        return -1;
    return sqlite3_changes(st->db) == 1 ? 1 : 0;
}

static int sq_run_heartbeat(struct orch_store *base, const char *id, int64_t now_ms)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_RUN_HEARTBEAT];
    int bad = 0;
    bad |= sq_bind_text(s, 1, id);
    bad |= sq_bind_int(s, 2, now_ms);
    if (bad) {
        sq_fail(st, "cannot record the heartbeat of run %s", id);
        sq_done(s);
        return -1;
    }
    if (sq_exec(st, s, "cannot record a heartbeat") != 0)
        return -1;
    if (sqlite3_changes(st->db) != 1)
        return sq_fail_plain(st, "cannot record the heartbeat of run %s: no such run", id);
    return 0;
}

/* Deletes a run and everything stored for it, in one transaction. 1, 0
 * when there is no such run, or -1. */
static int sq_run_delete(struct orch_store *base, const char *id)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_RUN_DELETE];
    if (sq_bind_text(s, 1, id)) {
        sq_done(s);
        return sq_fail(st, "cannot delete run %s", id);
    }
    if (sq_exec(st, s, "cannot delete a run") != 0)
        return -1;
    return sqlite3_changes(st->db) > 0 ? 1 : 0;
}

/* Deletes the journal entries created before before_ms; *removed gets how
 * many. 0 or -1. */
static int sq_journal_prune(struct orch_store *base, int64_t before_ms, int64_t *removed)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_JR_PRUNE];
    if (sq_bind_int(s, 1, before_ms)) {
        sq_done(s);
        return sq_fail(st, "cannot prune the journal");
    }
    if (sq_exec(st, s, "cannot prune the journal") != 0)
        return -1;
    *removed = sqlite3_changes64(st->db);
    return 0;
}

/* Rewrites the file without its free pages. 0 or -1. */
static int sq_vacuum(struct orch_store *base)
{
    struct sq_store *st = sq_of(base);
    /* in WAL mode the rewritten file lands in the log first: fold it back */
    int rc = sqlite3_exec(st->db, "VACUUM; PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return sq_fail(st, "cannot vacuum the store");
    return 0;
}

/* Calls cb for each matching run, newest first. cb must not call
 * run_list on the same store (the statement is in use). */
static int sq_run_list(struct orch_store *base, const struct orch_run_filter *f, orch_run_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_RUN_LIST];
    struct orch_run_filter none = {0};
    if (f == NULL)
        f = &none;
    int bad = 0;
    bad |= sq_bind_text(s, 1, f->status);
    bad |= sq_bind_text(s, 2, f->name);
    bad |= sq_bind_int(s, 3, f->since_ms);
    bad |= sq_bind_int(s, 4, f->until_ms);
    if (bad) {
        sq_fail(st, "cannot list runs");
        sq_done(s);
        return -1;
    }
    int ret = 0;
    for (;;) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            ret = sq_fail(st, "cannot list runs");
            break;
        }
        struct orch_run r;
        if (sq_run_row(s, &r) != 0) {
            ret = sq_fail_plain(st, "cannot list runs: out of memory");
            break;
        }
        int stop = cb(ud, &r);
        orch_run_clear(&r);
        if (stop)
            break;
    }
    sq_done(s);
    return ret;
}

/* ---- checkpoints ------------------------------------------------------ */

/* Fills out (zeroed first; heap strings and memento it then owns) from
 * the current row of an SQ_CP_COLS statement and verifies it: valid = 1
 * when the memento decompresses to memento_len bytes and the checksum
 * over it matches. Without with_memento the raw bytes are dropped
 * (memento NULL, memento_len kept). 0, or -1 when memory runs out —
 * never reported as an invalid checkpoint, so a transient shortage cannot
 * make the caller fall back to an older one. */
static int sq_checkpoint_row(sqlite3_stmt *s, struct orch_checkpoint *out, int with_memento)
{
    int oom = 0;
    memset(out, 0, sizeof *out);
    out->seq = sqlite3_column_int64(s, 0);
    out->name = sq_col_dup(s, 1, &oom);
    out->reason = sq_col_dup(s, 2, &oom);
    out->created_ms = sqlite3_column_int64(s, 3);
    out->input_offset = sqlite3_column_int64(s, 4);
    out->input_line = sqlite3_column_int64(s, 5);
    out->input_index = sqlite3_column_int64(s, 6);
    out->output_offset = sqlite3_column_int64(s, 7);
    out->errors_offset = sqlite3_column_int64(s, 8);
    out->checksum = sq_col_dup(s, 11, &oom);
    out->bytes = sqlite3_column_int64(s, 12);
    out->duration_ms = sqlite3_column_double(s, 13);
    int64_t stored_len = sqlite3_column_int64(s, 10);
    out->memento_len = stored_len > 0 ? (size_t)stored_len : 0;
    if (oom) {
        orch_checkpoint_clear(out);
        return -1;
    }

    const void *blob = sqlite3_column_blob(s, 9);
    size_t blob_len = (size_t)sqlite3_column_bytes(s, 9);
    void *raw = NULL;
    size_t raw_len = 0;
    char why[200];
    int rc = orch_store_decompress(blob, blob_len, &raw, &raw_len, why, sizeof why);
    if (rc == -2) {
        orch_checkpoint_clear(out);
        return -1;
    }
    if (rc != 0)
        return 0; /* valid stays 0, memento NULL */
    out->memento = raw;
    out->memento_len = raw_len;
    char sum[33];
    orch_checkpoint_checksum(out, sum);
    if (sum[0] == '\0') {
        orch_checkpoint_clear(out);
        return -1;
    }
    out->valid = stored_len >= 0 && (size_t)stored_len == raw_len && out->checksum != NULL &&
                 strcmp(sum, out->checksum) == 0;
    if (!with_memento) {
        free(out->memento);
        out->memento = NULL;
    }
    return 0;
}

/* Writes results, state and the checkpoint in one BEGIN IMMEDIATE
 * transaction, then the run row as run_update does. On success sets
 * c->seq, c->created_ms (when 0), c->checksum (a heap copy; a previous
 * value in c->checksum is freed, so c must start zeroed), c->bytes
 * (compressed memento + checksum + name and reason + 80 bytes of numbers)
 * and c->duration_ms (the whole call, monotonic clock; the stored
 * duration_ms covers everything but the COMMIT itself). A state entry
 * whose value is NULL is deleted. On failure nothing is written and c is
 * untouched. */
static int sq_checkpoint_write(struct orch_store *base, const struct orch_run *run, struct orch_checkpoint *c,
                               const struct orch_result *res, size_t nres, const struct orch_kv *state,
                               size_t nstate)
{
    struct sq_store *st = sq_of(base);
    double t0 = orch_store_mono_ms();
    const char *run_id = run->id;
    void *packed = NULL;
    size_t packed_len = 0;
    char why[200];
    if (orch_store_compress(c->memento, c->memento_len, &packed, &packed_len, why, sizeof why) != 0)
        return sq_fail_plain(st, "cannot write a checkpoint of run %s: %s", run_id, why);
    if (sq_begin(st, "cannot start the checkpoint transaction") != 0) {
        free(packed);
        return -1;
    }

    /* seq = max + 1 inside the write lock, so two writers cannot collide */
    sqlite3_stmt *s = st->stmt[SQ_CP_NEXT_SEQ];
    int64_t seq = 0;
    if (sq_bind_text(s, 1, run_id) == 0 && sqlite3_step(s) == SQLITE_ROW)
        seq = sqlite3_column_int64(s, 0);
    if (seq <= 0) {
        sq_fail(st, "cannot number a checkpoint of run %s", run_id);
        sq_done(s);
        goto fail;
    }
    sq_done(s);

    s = st->stmt[SQ_RES_INSERT];
    for (size_t i = 0; i < nres; i++) {
        const struct orch_result *r = &res[i];
        int bad = 0;
        bad |= sq_bind_text(s, 1, run_id);
        bad |= sq_bind_int(s, 2, r->seq);
        bad |= sq_bind_text(s, 3, r->key);
        bad |= sq_bind_text(s, 4, r->status);
        bad |= sq_bind_text(s, 5, r->error);
        if (r->data != NULL)
            bad |= sqlite3_bind_blob64(s, 6, r->data, r->data_len, SQLITE_STATIC) != SQLITE_OK;
        else
            bad |= sqlite3_bind_null(s, 6) != SQLITE_OK;
        bad |= sq_bind_int(s, 7, seq);
        if (bad) {
            sq_fail(st, "cannot store result %lld of run %s", (long long)r->seq, run_id);
            sq_done(s);
            goto fail;
        }
        if (sqlite3_step(s) != SQLITE_DONE) {
            sq_fail(st, "cannot store result %lld of run %s", (long long)r->seq, run_id);
            sq_done(s);
            goto fail;
        }
        sqlite3_reset(s);
    }
    sq_done(s);

    for (size_t i = 0; i < nstate; i++) {
        const struct orch_kv *kv = &state[i];
        int del = kv->value == NULL;
        s = st->stmt[del ? SQ_STATE_DELETE : SQ_STATE_UPSERT];
        int bad = 0;
        bad |= sq_bind_text(s, 1, run_id);
        bad |= sq_bind_text(s, 2, kv->key);
        if (!del)
            bad |=
                sqlite3_bind_text64(s, 3, kv->value, kv->value_len, SQLITE_STATIC, SQLITE_UTF8) != SQLITE_OK;
        if (bad || sqlite3_step(s) != SQLITE_DONE) {
            sq_fail(st, "cannot store state key %s of run %s", kv->key != NULL ? kv->key : "(null)", run_id);
            sq_done(s);
            goto fail;
        }
        sq_done(s);
    }

    if (sq_run_update_stmt(st, run) != 0)
        goto fail;

    /* the checksum covers the final seq, so it is computed here */
    struct orch_checkpoint sum_of = *c;
    sum_of.seq = seq;
    char sum[33];
    orch_checkpoint_checksum(&sum_of, sum);
    if (sum[0] == '\0') {
        sq_fail_plain(st, "cannot checksum a checkpoint of run %s: out of memory", run_id);
        goto fail;
    }
    int64_t created = c->created_ms != 0 ? c->created_ms : orch_store_now_ms();
    int64_t bytes = (int64_t)packed_len + 32 + 80;
    if (c->name != NULL)
        bytes += (int64_t)strlen(c->name);
    if (c->reason != NULL)
        bytes += (int64_t)strlen(c->reason);
    s = st->stmt[SQ_CP_INSERT];
    int bad = 0;
    bad |= sq_bind_text(s, 1, run_id);
    bad |= sq_bind_int(s, 2, seq);
    bad |= sq_bind_text(s, 3, c->name);
    bad |= sq_bind_text(s, 4, c->reason);
    bad |= sq_bind_int(s, 5, created);
    bad |= sq_bind_int(s, 6, c->input_offset);
    bad |= sq_bind_int(s, 7, c->input_line);
    bad |= sq_bind_int(s, 8, c->input_index);
    bad |= sq_bind_int(s, 9, c->output_offset);
    bad |= sq_bind_int(s, 10, c->errors_offset);
    bad |= sqlite3_bind_blob64(s, 11, packed, packed_len, SQLITE_STATIC) != SQLITE_OK;
    bad |= sq_bind_int(s, 12, (int64_t)c->memento_len);
    bad |= sq_bind_text(s, 13, sum);
    bad |= sq_bind_int(s, 14, bytes);
    bad |= sqlite3_bind_double(s, 15, orch_store_mono_ms() - t0) != SQLITE_OK;
    if (bad || sqlite3_step(s) != SQLITE_DONE) {
        sq_fail(st, "cannot store checkpoint %lld of run %s", (long long)seq, run_id);
        sq_done(s);
        goto fail;
    }
    sq_done(s);

    char *sum_copy = strdup(sum);
    if (sum_copy == NULL) {
        sq_fail_plain(st, "cannot write a checkpoint of run %s: out of memory", run_id);
        goto fail;
    }
    if (sq_commit(st, "cannot commit the checkpoint") != 0) {
        free(sum_copy);
        goto fail;
    }
    free(packed);
    free(c->checksum);
    c->checksum = sum_copy;
    c->seq = seq;
    c->created_ms = created;
    c->bytes = bytes;
    c->duration_ms = orch_store_mono_ms() - t0;
    return 0;

fail:
    sq_abort(st);
    free(packed);
    return -1;
}

static int sq_checkpoint_latest(struct orch_store *base, const char *run_id, struct orch_checkpoint *out,
                                int *skipped)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_CP_NEWEST];
    int bad_count = 0;
    int ret = 0;
    if (sq_bind_text(s, 1, run_id)) {
        sq_done(s);
        return sq_fail(st, "cannot read the checkpoints of run %s", run_id);
    }
    for (;;) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            ret = sq_fail(st, "cannot read the checkpoints of run %s", run_id);
            break;
        }
        struct orch_checkpoint c;
        if (sq_checkpoint_row(s, &c, 1) != 0) {
            ret = sq_fail_plain(st, "cannot read the checkpoints of run %s: out of memory", run_id);
            break;
        }
        if (c.valid) {
            *out = c;
            ret = 1;
            break;
        }
        bad_count++;
        orch_checkpoint_clear(&c);
    }
    sq_done(s);
    if (skipped != NULL)
        *skipped = bad_count;
    return ret;
}

static int sq_checkpoint_get(struct orch_store *base, const char *run_id, int64_t seq,
                             struct orch_checkpoint *out)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_CP_GET];
    int bad = 0;
    bad |= sq_bind_text(s, 1, run_id);
    bad |= sq_bind_int(s, 2, seq);
    int rc = bad ? SQLITE_ERROR : sqlite3_step(s);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        ret = 1;
        if (sq_checkpoint_row(s, out, 1) != 0)
            ret = sq_fail_plain(st, "cannot read checkpoint %lld of run %s: out of memory", (long long)seq,
                                run_id);
    } else if (rc != SQLITE_DONE) {
        ret = sq_fail(st, "cannot read checkpoint %lld of run %s", (long long)seq, run_id);
    }
    sq_done(s);
    return ret;
}

/* Oldest first, each verified; cb must not call checkpoint_list on the
 * same store. */
static int sq_checkpoint_list(struct orch_store *base, const char *run_id, orch_checkpoint_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_CP_LIST];
    int ret = 0;
    if (sq_bind_text(s, 1, run_id)) {
        sq_done(s);
        return sq_fail(st, "cannot list the checkpoints of run %s", run_id);
    }
    for (;;) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            ret = sq_fail(st, "cannot list the checkpoints of run %s", run_id);
            break;
        }
        struct orch_checkpoint c;
        if (sq_checkpoint_row(s, &c, 0) != 0) {
            ret = sq_fail_plain(st, "cannot list the checkpoints of run %s: out of memory", run_id);
            break;
        }
        int stop = cb(ud, &c);
        orch_checkpoint_clear(&c);
        if (stop)
            break;
    }
    sq_done(s);
    return ret;
}

/* Deletes checkpoints after seq and the results they carried. The state
 * table and the run row are left as they are: the caller restores them
 * from the memento it resumes from. Results are found by scanning the
 * run's rows (no index on checkpoint_seq, to keep inserts cheap); restore
 * is rare. */
static int sq_checkpoint_rollback(struct orch_store *base, const char *run_id, int64_t seq)
{
    struct sq_store *st = sq_of(base);
    if (sq_begin(st, "cannot start the rollback transaction") != 0)
        return -1;
    static const enum sq_stmt which[] = {SQ_CP_DELETE_AFTER, SQ_RES_DELETE_AFTER};
    for (size_t i = 0; i < sizeof which / sizeof which[0]; i++) {
        sqlite3_stmt *s = st->stmt[which[i]];
        int bad = 0;
        bad |= sq_bind_text(s, 1, run_id);
        bad |= sq_bind_int(s, 2, seq);
        if (bad || sqlite3_step(s) != SQLITE_DONE) {
            sq_fail(st, "cannot roll run %s back to checkpoint %lld", run_id, (long long)seq);
            sq_done(s);
            sq_abort(st);
            return -1;
        }
        sq_done(s);
    }
    if (sq_commit(st, "cannot commit the rollback") != 0) {
        sq_abort(st);
        return -1;
    }
    return 0;
}

/* ---- results, events, state ------------------------------------------- */

/* cb gets pointers into SQLite's row buffer, valid during the call only;
 * cb must not call result_list on the same store. */
static int sq_result_list(struct orch_store *base, const char *run_id, orch_result_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_RES_LIST];
    int ret = 0;
    if (sq_bind_text(s, 1, run_id)) {
        sq_done(s);
        return sq_fail(st, "cannot list the results of run %s", run_id);
    }
    for (;;) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            ret = sq_fail(st, "cannot list the results of run %s", run_id);
            break;
        }
        struct orch_result r;
        r.seq = sqlite3_column_int64(s, 0);
        r.key = (const char *)sqlite3_column_text(s, 1);
        r.status = (const char *)sqlite3_column_text(s, 2);
        r.error = (const char *)sqlite3_column_text(s, 3);
        r.data = sqlite3_column_blob(s, 4);
        r.data_len = (size_t)sqlite3_column_bytes(s, 4);
        if (cb(ud, &r))
            break;
    }
    sq_done(s);
    return ret;
}

static int sq_event_add(struct orch_store *base, const char *run_id, const char *type, const char *data)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_EV_INSERT];
    int bad = 0;
    bad |= sq_bind_text(s, 1, run_id);
    bad |= sq_bind_int(s, 2, orch_store_now_ms());
    bad |= sq_bind_text(s, 3, type);
    bad |= sq_bind_text(s, 4, data);
    if (bad) {
        sq_fail(st, "cannot record event %s", type != NULL ? type : "(null)");
        sq_done(s);
        return -1;
    }
    return sq_exec(st, s, "cannot record an event");
}

/* Oldest first; cb must not call event_list on the same store. */
static int sq_event_list(struct orch_store *base, const char *run_id, orch_event_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_EV_LIST];
    int ret = 0;
    if (sq_bind_text(s, 1, run_id)) {
        sq_done(s);
        return sq_fail(st, "cannot list the events of run %s", run_id);
    }
    for (;;) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            ret = sq_fail(st, "cannot list the events of run %s", run_id);
            break;
        }
        int oom = 0;
        struct orch_event e;
        e.id = sqlite3_column_int64(s, 0);
        e.ts_ms = sqlite3_column_int64(s, 1);
        e.type = sq_col_dup(s, 2, &oom);
        e.data = sq_col_dup(s, 3, &oom);
        if (oom) {
            orch_event_clear(&e);
            ret = sq_fail_plain(st, "cannot list the events of run %s: out of memory", run_id);
            break;
        }
        int stop = cb(ud, &e);
        orch_event_clear(&e);
        if (stop)
            break;
    }
    sq_done(s);
    return ret;
}

/* Sorted by key; key and value point into SQLite's row buffer, valid
 * during the call only. */
static int sq_state_list(struct orch_store *base, const char *run_id,
                         int (*cb)(void *ud, const char *key, const char *value, size_t len), void *ud)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_STATE_LIST];
    int ret = 0;
    if (sq_bind_text(s, 1, run_id)) {
        sq_done(s);
        return sq_fail(st, "cannot list the state of run %s", run_id);
    }
    for (;;) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            ret = sq_fail(st, "cannot list the state of run %s", run_id);
            break;
        }
        const char *key = (const char *)sqlite3_column_text(s, 0);
        const char *value = (const char *)sqlite3_column_text(s, 1);
        size_t len = (size_t)sqlite3_column_bytes(s, 1);
        if (cb(ud, key, value, len))
            break;
    }
    sq_done(s);
    return ret;
}

static int sq_stats(struct orch_store *base, struct orch_store_stats *out)
{
    struct sq_store *st = sq_of(base);
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = st->stmt[SQ_STATS_RUNS];
    if (sqlite3_step(s) != SQLITE_ROW) {
        sq_fail(st, "cannot count runs");
        sq_done(s);
        return -1;
    }
    out->runs = sqlite3_column_int64(s, 0);
    out->active = sqlite3_column_int64(s, 1);
    out->paused = sqlite3_column_int64(s, 2);
    out->failed = sqlite3_column_int64(s, 3);
    out->completed = sqlite3_column_int64(s, 4);
    out->recoveries = sqlite3_column_int64(s, 5);
    sq_done(s);

    s = st->stmt[SQ_STATS_CPS];
    if (sqlite3_step(s) != SQLITE_ROW) {
        sq_fail(st, "cannot count checkpoints");
        sq_done(s);
        return -1;
    }
    out->checkpoints = sqlite3_column_int64(s, 0);
    out->checkpoint_mean_ms = sqlite3_column_double(s, 1);
    out->checkpoint_max_ms = sqlite3_column_double(s, 2);
    sq_done(s);

    s = st->stmt[SQ_STATS_JOURNAL];
    if (sqlite3_step(s) != SQLITE_ROW) {
        sq_fail(st, "cannot count journal entries");
        sq_done(s);
        return -1;
    }
    out->journal_entries = sqlite3_column_int64(s, 0);
    out->journal_hits = sqlite3_column_int64(s, 1);
    out->journal_saved_usd = sqlite3_column_double(s, 2);
    sq_done(s);

    if (st->memory)
        return 0;
    s = st->stmt[SQ_STATS_SIZE];
    if (sqlite3_step(s) != SQLITE_ROW) {
        sq_fail(st, "cannot measure the database");
        sq_done(s);
        return -1;
    }
    out->bytes = sqlite3_column_int64(s, 0);
    sq_done(s);
    size_t n = strlen(st->path) + 5;
    char *wal = malloc(n);
    if (wal != NULL) {
        snprintf(wal, n, "%s-wal", st->path);
        struct stat sb;
        if (stat(wal, &sb) == 0)
            out->bytes += (int64_t)sb.st_size;
        free(wal);
    }
    return 0;
}

/* ---- LLM response journal --------------------------------------------- */

/* One autocommit INSERT, so the reply is in the WAL when this returns: a
 * crash of the process (kill -9 included) cannot lose it; with
 * synchronous=NORMAL a power loss can take back the last commits before
 * the next WAL checkpoint. An existing key is kept as it is and counts as
 * success. An empty reply (response NULL or not, length 0) is stored as
 * an empty blob. */
static int sq_journal_put(struct orch_store *base, const struct orch_journal_entry *e)
{
    struct sq_store *st = sq_of(base);
    if (e->key == NULL || e->key[0] == '\0')
        return sq_fail_plain(st, "cannot journal a response: it has no key");
    if (e->response == NULL && e->response_len > 0)
        return sq_fail_plain(st, "cannot journal response %s: %zu bytes announced but no data", e->key,
                             e->response_len);
    sqlite3_stmt *s = st->stmt[SQ_JR_INSERT];
    int64_t created = e->created_ms != 0 ? e->created_ms : orch_store_now_ms();
    /* a NULL pointer would bind SQL NULL and break NOT NULL */
    const void *response = e->response != NULL ? e->response : "";
    int bad = 0;
    bad |= sq_bind_text(s, 1, e->key);
    bad |= sq_bind_text(s, 2, e->run_id);
    bad |= sq_bind_text(s, 3, e->provider);
    bad |= sq_bind_text(s, 4, e->model);
    bad |= sqlite3_bind_blob64(s, 5, response, e->response_len, SQLITE_STATIC) != SQLITE_OK;
    bad |= sq_bind_int(s, 6, e->tokens_in);
    bad |= sq_bind_int(s, 7, e->tokens_out);
    bad |= sqlite3_bind_double(s, 8, e->cost_usd) != SQLITE_OK;
    bad |= sqlite3_bind_double(s, 9, e->latency_ms) != SQLITE_OK;
    bad |= sq_bind_int(s, 10, created);
    if (bad) {
        sq_fail(st, "cannot journal response %s", e->key);
        sq_done(s);
        return -1;
    }
    return sq_exec(st, s, "cannot journal an LLM response");
}

static int sq_journal_get(struct orch_store *base, const char *key, struct orch_journal_owned *out);

/* Several replies and lookups in one transaction: one WAL commit, and one
 * set of locks, instead of one per reply and per lookup. */
static int sq_journal_batch(struct orch_store *base, const struct orch_journal_entry *e, size_t n,
                            struct orch_journal_lookup *gets, size_t m)
{
    struct sq_store *st = sq_of(base);
    for (size_t i = 0; i < m; i++) {
        gets[i].found = 0;
        memset(&gets[i].out, 0, sizeof gets[i].out);
    }
    if (n + m == 0)
        return 0;
    if (sq_begin(st, "cannot start journaling") != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (sq_journal_put(base, &e[i]) != 0)
            goto fail;
    }
    for (size_t i = 0; i < m; i++) {
        int rc = sq_journal_get(base, gets[i].key, &gets[i].out);
        if (rc < 0)
            goto fail;
        gets[i].found = rc;
    }
    if (sq_commit(st, "cannot commit journaled responses") != 0)
        goto fail;
    return 0;
fail:
    sq_abort(st);
    for (size_t i = 0; i < m; i++) {
        orch_journal_clear(&gets[i].out);
        gets[i].found = 0;
    }
    return -1;
}

/* Fills out (zeroed first, heap copies it then owns) from the current row
 * of an SQ_JR_COLS statement. 0, or -1 when memory runs out (out
 * cleared). */
static int sq_journal_row(sqlite3_stmt *s, struct orch_journal_owned *out)
{
    int oom = 0;
    memset(out, 0, sizeof *out);
    out->key = sq_col_dup(s, 0, &oom);
    out->run_id = sq_col_dup(s, 1, &oom);
    out->provider = sq_col_dup(s, 2, &oom);
    out->model = sq_col_dup(s, 3, &oom);
    /* blob before bytes, as SQLite asks; an empty blob gives NULL */
    const void *blob = sqlite3_column_blob(s, 4);
    size_t n = (size_t)sqlite3_column_bytes(s, 4);
    out->response = malloc(n + 1);
    if (out->response == NULL) {
        oom = 1;
    } else {
        if (n > 0)
            memcpy(out->response, blob, n);
        out->response[n] = '\0';
        out->response_len = n;
    }
    out->tokens_in = sqlite3_column_int64(s, 5);
    out->tokens_out = sqlite3_column_int64(s, 6);
    out->cost_usd = sqlite3_column_double(s, 7);
    out->latency_ms = sqlite3_column_double(s, 8);
    out->created_ms = sqlite3_column_int64(s, 9);
    out->hits = sqlite3_column_int64(s, 10);
    if (oom) {
        orch_journal_clear(out);
        return -1;
    }
    return 0;
}

/* Reads first and counts the hit after, so a miss (the common case on a
 * first run) never takes the write lock. The hit is bookkeeping: when it
 * cannot be written (lock held past the busy timeout, disk full) the
 * reply is still returned, with out->hits not counting this lookup, since
 * failing here would make the caller pay for the request again. */
static int sq_journal_get(struct orch_store *base, const char *key, struct orch_journal_owned *out)
{
    struct sq_store *st = sq_of(base);
    if (key == NULL)
        return sq_fail_plain(st, "cannot look up a journaled response: no key");
    sqlite3_stmt *s = st->stmt[SQ_JR_GET];
    if (sq_bind_text(s, 1, key)) {
        sq_done(s);
        return sq_fail(st, "cannot look up journaled response %s", key);
    }
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        sq_done(s);
        return 0;
    }
    if (rc != SQLITE_ROW) {
        sq_fail(st, "cannot look up journaled response %s", key);
        sq_done(s);
        return -1;
    }
    struct orch_journal_owned got;
    if (sq_journal_row(s, &got) != 0) {
        sq_done(s);
        return sq_fail_plain(st, "cannot read journaled response %s: out of memory", key);
    }
    sq_done(s);

    s = st->stmt[SQ_JR_HIT];
    if (sq_bind_text(s, 1, key) == 0 && sqlite3_step(s) == SQLITE_DONE && sqlite3_changes(st->db) == 1)
        got.hits++;
    sq_done(s);
    *out = got;
    return 1;
}

/* ---- open / close ----------------------------------------------------- */

static void sq_close(struct orch_store *base)
{
    if (base == NULL)
        return;
    struct sq_store *st = sq_of(base);
    for (int i = 0; i < SQ_NSTMT; i++)
        sqlite3_finalize(st->stmt[i]);
    sqlite3_close(st->db);
    free(st->path);
    free(st);
}

static const struct orch_store_ops sq_ops = {
    .name = "sqlite",
    .close = sq_close,
    .run_create = sq_run_create,
    .run_get = sq_run_get,
    .run_find_unfinished = sq_run_find_unfinished,
    .run_update = sq_run_update,
    .run_claim = sq_run_claim,
    .run_heartbeat = sq_run_heartbeat,
    .run_list = sq_run_list,
    .checkpoint_write = sq_checkpoint_write,
    .checkpoint_latest = sq_checkpoint_latest,
    .checkpoint_get = sq_checkpoint_get,
    .checkpoint_list = sq_checkpoint_list,
    .checkpoint_rollback = sq_checkpoint_rollback,
    .result_list = sq_result_list,
    .event_add = sq_event_add,
    .event_list = sq_event_list,
    .state_list = sq_state_list,
    .stats = sq_stats,
    .journal_put = sq_journal_put,
    .journal_get = sq_journal_get,
    .journal_batch = sq_journal_batch,
    .run_delete = sq_run_delete,
    .journal_prune = sq_journal_prune,
    .vacuum = sq_vacuum,
};

/* Runs a one-row, one-column pragma or query (constant SQL, not kept).
 * Returns the SQLite result code; *out gets the integer value, or the
 * text value in text (when non-NULL). */
static int sq_query1(sqlite3 *db, const char *sql, int64_t *out, char *text, size_t textlen)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        if (out != NULL)
            *out = sqlite3_column_int64(s, 0);
        if (text != NULL) {
            const unsigned char *t = sqlite3_column_text(s, 0);
            snprintf(text, textlen, "%s", t != NULL ? (const char *)t : "");
        }
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

/* Brings the schema up to SQ_SCHEMA_VERSION in one transaction. The
 * version is read again under the write lock, so two processes opening a
 * fresh file at once migrate it once. 0, or -1 with the message in err
 * (formatted before the ROLLBACK, which would replace SQLite's). */
static int sq_migrate(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        sq_open_error(db, path, rc, "cannot create or upgrade the schema", err, errlen);
        return -1;
    }
    int64_t version = 0;
    rc = sq_query1(db, "PRAGMA user_version", &version, NULL, 0);
    for (int64_t v = version; rc == SQLITE_OK && v < SQ_SCHEMA_VERSION; v++)
        rc = sqlite3_exec(db, sq_migrations[v], NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        return 0;
    sq_open_error(db, path, rc, "cannot create or upgrade the schema", err, errlen);
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* Switches the database to WAL (mode gets the resulting journal mode).
 * SQLite does not call the busy handler for this switch while other
 * connections hold read locks (it would deadlock), so processes opening a
 * new file at the same moment retry here, for as long as busy_timeout
 * would have waited. Returns the SQLite result code. */
static int sq_set_wal(sqlite3 *db, int memory, char *mode, size_t modelen)
{
    double deadline = orch_store_mono_ms() + SQ_BUSY_MS;
    for (;;) {
        int rc = sq_query1(db, "PRAGMA journal_mode = WAL", NULL, mode, modelen);
        int prim = rc & 0xff;
        int retry = prim == SQLITE_BUSY || prim == SQLITE_LOCKED ||
                    (rc == SQLITE_OK && !memory && strcmp(mode, "wal") != 0);
        if (!retry || orch_store_mono_ms() >= deadline)
            return rc;
        sqlite3_sleep(10);
    }
}

/* Checks the freshly opened db before anything is written: readable as a
 * database, orch's (or empty), a schema this build knows, not corrupt.
 * Returns 0, or -1 with the message in err. existed: the file was there
 * and non-empty before the open. */
static int sq_check_existing(sqlite3 *db, const char *path, int existed, char *err, size_t errlen)
{
    /* One statement, so one snapshot: read separately, a migration
     * committed by another process in between would make a new store
     * look like another program's (application_id 0 but tables). This is
     * also the first read of the file, where a non-database shows up. */
    int64_t version = 0;
    int64_t app = 0;
    int64_t objects = 0;
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT (SELECT user_version FROM pragma_user_version), "
                                "(SELECT application_id FROM pragma_application_id), "
                                "(SELECT count(*) FROM sqlite_master)",
                                -1, &s, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        version = sqlite3_column_int64(s, 0);
        app = sqlite3_column_int64(s, 1);
        objects = sqlite3_column_int64(s, 2);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) {
        sq_open_error(db, path, rc, "cannot read the database", err, errlen);
        sqlite3_finalize(s);
        return -1;
    }
    sqlite3_finalize(s);
    if (app != SQ_APPLICATION_ID) {
        if (app != 0 || objects != 0 || version != 0) {
            snprintf(err, errlen, "%s: is an SQLite database of another program", path);
            return -1;
        }
        return 0; /* empty: a new store */
    }
    if (version > SQ_SCHEMA_VERSION) {
        snprintf(err, errlen, "%s: created by a newer orch (schema %lld, this orch knows up to %d)", path,
                 (long long)version, SQ_SCHEMA_VERSION);
        return -1;
    }
    if (!existed)
        return 0;
    /* Only the small tables every command reads: a check of the whole file
     * reads every page, and the results and the journal grow with each run
     * (a 58 MB store took 0.2 s to open). Damage elsewhere surfaces as
     * SQLITE_CORRUPT where it is read, and checkpoints carry checksums. */
    static const char *const checks[] = {"PRAGMA quick_check(runs)", "PRAGMA quick_check(state)"};
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        char verdict[256];
        rc = sq_query1(db, checks[i], NULL, verdict, sizeof verdict);
        if (rc != SQLITE_OK) {
            sq_open_error(db, path, rc, "cannot check the database", err, errlen);
            return -1;
        }
        if (strcmp(verdict, "ok") != 0) {
            /* quick_check's report spans lines; an error message should not */
            for (char *p = verdict; *p != '\0'; p++) {
                if (*p == '\n')
                    *p = ' ';
            }
            snprintf(err, errlen, "%s: the state database is corrupt (%s)", path, verdict);
            return -1;
        }
    }
    return 0;
}

/* Open order matters: nothing is written (WAL switch, schema) until the
 * file has been read and judged ours or empty. */
/* Allocates the store for target with its db handle still NULL. */
static struct sq_store *sq_new(const char *target, int memory, char *err, size_t errlen)
{
    struct sq_store *st = calloc(1, sizeof *st);
    char *path = strdup(target);
    if (st == NULL || path == NULL) {
        snprintf(err, errlen, "%s: out of memory", target);
        free(st);
        free(path);
        return NULL;
    }
    st->base.ops = &sq_ops;
    st->path = path;
    st->memory = memory;
    return st;
}

static int sq_prepare_all(struct sq_store *st, const char *target, char *err, size_t errlen)
{
    for (int i = 0; i < SQ_NSTMT; i++) {
        int rc = sqlite3_prepare_v3(st->db, sq_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            sq_open_error(st->db, target, rc, "cannot prepare a statement", err, errlen);
            return -1;
        }
    }
    return 0;
}

/* "file:<path>?mode=ro&immutable=1" with the URI's special characters of
 * path escaped; a malloc'd string or NULL. */
static char *sq_immutable_uri(const char *path)
{
    static const char tail[] = "?mode=ro&immutable=1";
    size_t n = strlen(path);
    char *uri = malloc(5 + 3 * n + sizeof tail);
    if (uri == NULL)
        return NULL;
    char *p = uri;
    memcpy(p, "file:", 5);
    p += 5;
    for (const char *c = path; *c != '\0'; c++) {
        if (*c == '%' || *c == '?' || *c == '#') {
            snprintf(p, 4, "%%%02X", (unsigned char)*c);
            p += 3;
        } else {
            *p++ = *c;
        }
    }
    memcpy(p, tail, sizeof tail);
    return uri;
}

/* Opens db read-only and checks it is an orch store of a schema this build
 * reads. Returns the SQLite code of the open (SQLITE_OK when st->db is
 * usable, with 0 in *bad), or *bad = 1 with the message in err when the
 * file is there but is not a store this orch can read. */
static int sq_open_ro_db(struct sq_store *st, const char *target, int immutable, int *bad, char *err,
                         size_t errlen)
{
    *bad = 0;
    int rc;
    if (immutable) {
        char *uri = sq_immutable_uri(target);
        if (uri == NULL)
            return SQLITE_NOMEM;
        rc = sqlite3_open_v2(uri, &st->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
        free(uri);
    } else {
        rc = sqlite3_open_v2(target, &st->db, SQLITE_OPEN_READONLY, NULL);
    }
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(st->db, 1);
        sqlite3_busy_timeout(st->db, SQ_BUSY_MS);
        int64_t version = 0;
        int64_t app = 0;
        /* the first read: a WAL store whose -shm cannot be made fails here */
        rc = sq_query1(st->db, "PRAGMA application_id", &app, NULL, 0);
        if (rc == SQLITE_OK)
            rc = sq_query1(st->db, "PRAGMA user_version", &version, NULL, 0);
        if (rc == SQLITE_OK && app == 0 && version == 0) {
            int64_t objects = 0;
            rc = sq_query1(st->db, "SELECT count(*) FROM sqlite_master", &objects, NULL, 0);
            if (rc == SQLITE_OK && objects == 0) {
                snprintf(err, errlen, "no state store at %s (the file is an empty database)", target);
                *bad = 1;
                return rc;
            }
        }
        if (rc == SQLITE_OK && app == SQ_APPLICATION_ID && version < SQ_SCHEMA_VERSION) {
            snprintf(err, errlen,
                     "%s: written by an older orch (schema %lld, this orch reads %d) and opened read-only; "
                     "run orch once with write access to the store to upgrade it",
                     target, (long long)version, SQ_SCHEMA_VERSION);
            *bad = 1;
            return rc;
        }
    }
    if (rc == SQLITE_OK && sq_check_existing(st->db, target, 1, err, errlen) != 0) {
        *bad = 1;
        return SQLITE_ERROR;
    }
    if (rc == SQLITE_OK && sq_prepare_all(st, target, err, errlen) != 0) {
        *bad = 1;
        return SQLITE_ERROR;
    }
    return rc;
}

/* Read-only: for commands that inspect a store and must change nothing,
 * not even create it. A file that cannot be written (permissions, a
 * read-only directory or file system) is read where SQLite's shared
 * memory cannot be set up by opening it immutable: nothing can write it
 * then either. */
static struct orch_store *sq_open_readonly(const char *target, char *err, size_t errlen)
{
    struct stat sb;
    if (stat(target, &sb) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            snprintf(err, errlen, "no state store at %s (no run has used it; check --db or ORCH_DB)", target);
        else
            snprintf(err, errlen, "%s: cannot read the state database: %s", target, strerror(errno));
        return NULL;
    }
    if (S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "%s: is a directory, not a state database file", target);
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file, cannot hold a state database", target);
        return NULL;
    }
    if (sb.st_size == 0) {
        snprintf(err, errlen, "no state store at %s (the file is empty)", target);
        return NULL;
    }
    struct sq_store *st = sq_new(target, 0, err, errlen);
    if (st == NULL)
        return NULL;
    int bad = 0;
    int rc = sq_open_ro_db(st, target, 0, &bad, err, errlen);
    if (rc != SQLITE_OK && !bad) {
        int prim = rc & 0xff;
        if (prim == SQLITE_CANTOPEN || prim == SQLITE_READONLY) {
            for (int i = 0; i < SQ_NSTMT; i++) {
                sqlite3_finalize(st->stmt[i]);
                st->stmt[i] = NULL;
            }
            sqlite3_close(st->db);
            st->db = NULL;
            rc = sq_open_ro_db(st, target, 1, &bad, err, errlen);
        }
    }
    if (rc != SQLITE_OK || bad) {
        if (!bad)
            snprintf(err, errlen, "%s: cannot read the state database (%s)", target,
                     st->db != NULL ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        sq_close(&st->base);
        return NULL;
    }
    return &st->base;
}

struct orch_store *orch_store_sqlite_open(const char *target, int flags, char *err, size_t errlen)
{
    int memory = strcmp(target, ":memory:") == 0;
    if ((flags & ORCH_STORE_READONLY) && !memory)
        return sq_open_readonly(target, err, errlen);
    int existed = 0;
    if (!memory) {
        struct stat sb;
        if (stat(target, &sb) == 0) {
            if (S_ISDIR(sb.st_mode)) {
                snprintf(err, errlen, "%s: is a directory, not a state database file", target);
                return NULL;
            }
            if (!S_ISREG(sb.st_mode)) {
                snprintf(err, errlen, "%s: not a regular file, cannot hold a state database", target);
                return NULL;
            }
            existed = sb.st_size > 0;
        } else {
            /* Create the empty file here rather than in SQLite: its
             * CANTOPEN reports the errno of a fallback open, so a
             * read-only directory would read "No such file or directory". */
            orch_mkdir_parents(target);
            int fd = open(target, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
            if (fd < 0 && errno != EEXIST) {
                snprintf(err, errlen,
                         "%s: cannot write the state database (cannot create the file: %s); check the "
                         "permissions of the file and its directory",
                         target, strerror(errno));
                return NULL;
            }
            if (fd >= 0)
                close(fd);
        }
    }

    struct sq_store *st = sq_new(target, memory, err, errlen);
    if (st == NULL)
        return NULL;

    int rc = sqlite3_open_v2(target, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        sq_open_error(st->db, target, rc, "cannot open", err, errlen);
        goto fail;
    }
    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_busy_timeout(st->db, SQ_BUSY_MS);
    if (!memory && sqlite3_db_readonly(st->db, "main") == 1) {
        snprintf(err, errlen,
                 "%s: cannot write the state database (the file is read-only); check the permissions of the "
                 "file and its directory",
                 target);
        goto fail;
    }
    if (sq_check_existing(st->db, target, existed, err, errlen) != 0)
        goto fail;

    /* From here on the file is empty or ours: writing is allowed. */
    char mode[32];
    rc = sq_set_wal(st->db, memory, mode, sizeof mode);
    if (rc != SQLITE_OK) {
        sq_open_error(st->db, target, rc, "cannot switch to WAL mode", err, errlen);
        goto fail;
    }
    if (!memory && strcmp(mode, "wal") != 0) {
        snprintf(err, errlen, "%s: cannot switch to WAL mode (journal mode stays %s)", target, mode);
        goto fail;
    }
    rc = sqlite3_exec(st->db, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -512", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        sq_open_error(st->db, target, rc, "cannot configure the connection", err, errlen);
        goto fail;
    }
    if (sq_migrate(st->db, target, err, errlen) != 0)
        goto fail;
    if (sq_prepare_all(st, target, err, errlen) != 0)
        goto fail;
    return &st->base;

fail:
    sq_close(&st->base);
    return NULL;
}
