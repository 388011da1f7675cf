/* store_sqlite.c — the SQLite backend of the state store (store.h): one
 * database file (or ":memory:") in WAL mode, synchronous=NORMAL, every
 * statement prepared once at open and bound, never built from strings.
 * This unit holds the operations (store_ops); the schema and its
 * migrations are in store_sqlite_schema.c, opening, validation and
 * closing in store_sqlite_open.c, what they share in store_sqlite_impl.h.
 * Pure C: depends on libc, libsqlite3 and store.c's shared helpers
 * (store_impl.h: the checkpoint seal, error wording, clocks). Checkpoint
 * mementos arrive compressed and leave as stored: compression, checksums
 * and their verification are store.c's. */
#include "store.h"
#include "store_impl.h"
#include "store_sqlite_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

const char *const sq_sql[SQ_NSTMT] = {
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
    /* no row for a run that is not there: the caller hears "no such run" */
    [SQ_LIVE_PUT] = "INSERT INTO run_live (run_id, updated_ms, figures) SELECT ?1, ?2, ?3 "
                    "WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1) ON CONFLICT (run_id) DO UPDATE SET "
                    "updated_ms = excluded.updated_ms, figures = excluded.figures",
    [SQ_LIVE_GET] = "SELECT figures, updated_ms FROM run_live WHERE run_id = ?1",
    /* events_run (run_id) holds the rowid: both pages are index ranges */
    [SQ_EV_PAGE] = "SELECT id, ts_ms, type, data FROM events WHERE run_id = ?1 AND id > ?2 AND id < ?3 "
                   "ORDER BY id LIMIT ?4",
    [SQ_EV_PAGE_DESC] = "SELECT id, ts_ms, type, data FROM events WHERE run_id = ?1 AND id > ?2 AND id < ?3 "
                        "ORDER BY id DESC LIMIT ?4",
    [SQ_ERR_PAGE] = "SELECT seq, key, status, error FROM results WHERE run_id = ?1 AND seq > ?2 "
                    "AND error IS NOT NULL ORDER BY seq LIMIT ?3",
    /* results in chunks (schema 5; see "results in chunks" below) */
    [SQ_RCH_INSERT] = "INSERT INTO result_chunks (run_id, first_seq, last_seq, checkpoint_seq, n, data) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [SQ_RCH_LIST] = "SELECT first_seq, n, data FROM result_chunks WHERE run_id = ?1 ORDER BY first_seq",
    [SQ_RCH_OVERLAP] = "SELECT first_seq, n, data, checkpoint_seq FROM result_chunks "
                       "WHERE run_id = ?1 AND first_seq <= ?3 AND last_seq >= ?2 LIMIT 1",
    [SQ_RCH_DELETE] = "DELETE FROM result_chunks WHERE run_id = ?1 AND first_seq = ?2",
    [SQ_RCH_DELETE_AFTER] = "DELETE FROM result_chunks WHERE run_id = ?1 AND checkpoint_seq > ?2",
    /* chunks never overlap, so the one that starts last ends last */
    [SQ_RES_MAX_SEQ] = "SELECT max(coalesce((SELECT max(seq) FROM results WHERE run_id = ?1), 0), "
                       "coalesce((SELECT last_seq FROM result_chunks WHERE run_id = ?1 "
                       "ORDER BY first_seq DESC LIMIT 1), 0))",
};

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
        msg = SQ_LOCKED_MSG;
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

/* ---- statement helpers ----------------------------------------------- */

/* Resets s and drops its bindings, so no pointer bound with SQLITE_STATIC
 * outlives the call that bound it. */
static void sq_done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

/* A bind that failed: st->err from fmt and the database's message (read before the
 * reset, which would clear it), then the statement reset for its next use. -1. */
static int sq_bind_failed(struct sq_store *st, sqlite3_stmt *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int sq_bind_failed(struct sq_store *st, sqlite3_stmt *s, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    sq_fail(st, "%s", what);
    sq_done(s);
    return -1;
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
    if (bad)
        return sq_bind_failed(st, s, "cannot create run %s", r->id != NULL ? r->id : "(null)");
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
    if (bad)
        return sq_bind_failed(st, s, "cannot claim run %s", id);
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
    if (bad)
        return sq_bind_failed(st, s, "cannot record the heartbeat of run %s", id);
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
    if (bad)
        return sq_bind_failed(st, s, "cannot list runs");
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

/* Fills p (zeroed first; heap strings and the stored memento frame it
 * then owns) from the current row of an SQ_CP_COLS statement. 0, or -1
 * when memory runs out (p cleared). */
static int sq_checkpoint_row(sqlite3_stmt *s, struct orch_checkpoint_packed *p)
{
    int oom = 0;
    struct orch_checkpoint *out = &p->c;
    memset(p, 0, sizeof *p);
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
    p->raw_len = sqlite3_column_int64(s, 10);
    const void *blob = sqlite3_column_blob(s, 9);
    size_t blob_len = (size_t)sqlite3_column_bytes(s, 9);
    if (blob != NULL && blob_len > 0) {
        out->memento = malloc(blob_len);
        if (out->memento == NULL)
            oom = 1;
        else
            memcpy(out->memento, blob, blob_len);
        out->memento_len = blob_len;
    }
    if (oom) {
        orch_checkpoint_clear(out);
        return -1;
    }
    return 0;
}

/* Numbers the next checkpoint of run_id: max + 1, read inside the write
 * lock so two writers cannot collide. The seq, or -1 with st->err set. */
static int64_t sq_checkpoint_next_seq(struct sq_store *st, const char *run_id)
{
    sqlite3_stmt *s = st->stmt[SQ_CP_NEXT_SEQ];
    int64_t seq = 0;
    if (sq_bind_text(s, 1, run_id) == 0 && sqlite3_step(s) == SQLITE_ROW)
        seq = sqlite3_column_int64(s, 0);
    if (seq <= 0) {
        sq_fail(st, "cannot number a checkpoint of run %s", run_id);
        sq_done(s);
        return -1;
    }
    sq_done(s);
    return seq;
}

/* Inserts the nres results of a checkpoint numbered seq. 0, or -1 with
 * st->err set (the caller rolls back). */
static int sq_results_insert(struct sq_store *st, const char *run_id, int64_t seq,
                             const struct orch_result *res, size_t nres)
{
    sqlite3_stmt *s = st->stmt[SQ_RES_INSERT];
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
        if (bad)
            return sq_bind_failed(st, s, "cannot store result %lld of run %s", (long long)r->seq, run_id);
        if (sqlite3_step(s) != SQLITE_DONE) {
            sq_fail(st, "cannot store result %lld of run %s", (long long)r->seq, run_id);
            sq_done(s);
            return -1;
        }
        sqlite3_reset(s);
    }
    sq_done(s);
    return 0;
}

/* ---- results in chunks ------------------------------------------------ */

/* A checkpoint's results go into one row of result_chunks when they
 * extend the run (seqs strictly increasing, the first past every stored
 * result of the run): the case of every run, whose rows settle in input
 * order. One insert per checkpoint replaces an upsert per row, which was
 * most of a checkpoint's cost (bench/changes.md). Any other set (a seq
 * written again, rows out of order) takes the per-row results table: the
 * chunks holding one of its seqs are first moved back into that table row
 * by row, so each seq lives in one place and result_list merges two
 * sorted streams.
 *
 * A packed result, little-endian: seq (8 bytes), then the lengths of key,
 * status, error and data (4 bytes each; SQ_CHUNK_NULL for NULL), then
 * their bytes; key, status and error keep their NUL, so a reader hands
 * out pointers into the blob as the row table's reader does. */
#define SQ_CHUNK_NULL 0xFFFFFFFFu
#define SQ_CHUNK_HEAD 24

static void sq_put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t sq_get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* The bytes a field takes in a chunk, its NUL included for text; sets
 * *len to the value stored in its length slot. */
static size_t sq_chunk_field(const void *v, size_t n, int text, uint32_t *len)
{
    if (v == NULL) {
        *len = SQ_CHUNK_NULL;
        return 0;
    }
    *len = (uint32_t)n;
    return n + (text ? 1 : 0);
}

/* Packs res[0..nres) into a new buffer the caller frees; *out_len gets
 * its size. NULL when memory runs out. The caller checked (sq_chunk_fits)
 * that every length fits its slot. */
static unsigned char *sq_chunk_pack(const struct orch_result *res, size_t nres, size_t *out_len)
{
    size_t total = 0;
    for (size_t i = 0; i < nres; i++) {
        const struct orch_result *r = &res[i];
        uint32_t l;
        total += SQ_CHUNK_HEAD;
        total += sq_chunk_field(r->key, r->key != NULL ? strlen(r->key) : 0, 1, &l);
        total += sq_chunk_field(r->status, strlen(r->status), 1, &l);
        total += sq_chunk_field(r->error, r->error != NULL ? strlen(r->error) : 0, 1, &l);
        total += sq_chunk_field(r->data, r->data_len, 0, &l);
    }
    unsigned char *buf = malloc(total > 0 ? total : 1);
    if (buf == NULL)
        return NULL;
    unsigned char *p = buf;
    for (size_t i = 0; i < nres; i++) {
        const struct orch_result *r = &res[i];
        const void *v[4] = {r->key, r->status, r->error, r->data};
        size_t n[4] = {r->key != NULL ? strlen(r->key) : 0, strlen(r->status),
                       r->error != NULL ? strlen(r->error) : 0, r->data_len};
        uint64_t seq = (uint64_t)r->seq;
        sq_put_u32(p, (uint32_t)seq);
        sq_put_u32(p + 4, (uint32_t)(seq >> 32));
        size_t size[4];
        for (int f = 0; f < 4; f++) {
            uint32_t l;
            size[f] = sq_chunk_field(v[f], n[f], f < 3, &l);
            sq_put_u32(p + 8 + 4 * f, l);
        }
        p += SQ_CHUNK_HEAD;
        for (int f = 0; f < 4; f++) {
            if (size[f] > 0)
                memcpy(p, v[f], size[f]); /* text: its NUL comes along */
            p += size[f];
        }
    }
    *out_len = total;
    return buf;
}

/* A reader over one chunk's blob. */
struct sq_chunk_cursor {
    const unsigned char *p, *end;
    int64_t first; /* the chunk's first_seq, for messages */
    int64_t left;  /* results not read yet */
};

/* One field of the result at c->p: *out points into the blob (NULL for a
 * NULL field). 0, or -1 when the blob is too short or a text lacks its
 * NUL. */
static int sq_chunk_take(struct sq_chunk_cursor *c, uint32_t len, int text, const void **out)
{
    if (len == SQ_CHUNK_NULL) {
        *out = NULL;
        return 0;
    }
    size_t need = (size_t)len + (text ? 1 : 0);
    if ((size_t)(c->end - c->p) < need || (text && c->p[len] != '\0'))
        return -1;
    *out = c->p;
    c->p += need;
    return 0;
}

/* Reads the next result of the chunk into r (pointers into the blob).
 * 0, or -1 when the blob is damaged. */
static int sq_chunk_next(struct sq_chunk_cursor *c, struct orch_result *r)
{
    if (c->left <= 0 || c->end - c->p < SQ_CHUNK_HEAD)
        return -1;
    uint64_t seq = (uint64_t)sq_get_u32(c->p) | (uint64_t)sq_get_u32(c->p + 4) << 32;
    uint32_t len[4];
    for (int f = 0; f < 4; f++)
        len[f] = sq_get_u32(c->p + 8 + 4 * f);
    c->p += SQ_CHUNK_HEAD;
    const void *v[4];
    for (int f = 0; f < 4; f++)
        if (sq_chunk_take(c, len[f], f < 3, &v[f]) != 0)
            return -1;
    if (v[1] == NULL)
        return -1; /* every stored result has a status */
    r->seq = (int64_t)seq;
    r->key = v[0];
    r->status = v[1];
    r->error = v[2];
    r->data = v[3];
    r->data_len = v[3] != NULL ? len[3] : 0;
    c->left--;
    return 0;
}

/* Points c at the chunk in the current row of s (columns: first_seq, n,
 * data at 0, 1, 2). 0, or -1 when the row cannot be a chunk. */
static int sq_chunk_open(sqlite3_stmt *s, struct sq_chunk_cursor *c)
{
    c->first = sqlite3_column_int64(s, 0);
    c->left = sqlite3_column_int64(s, 1);
    c->p = sqlite3_column_blob(s, 2);
    c->end = c->p + sqlite3_column_bytes(s, 2);
    return c->p == NULL || c->left <= 0 || c->left > (c->end - c->p) / SQ_CHUNK_HEAD ? -1 : 0;
}

static int sq_chunk_damaged(struct sq_store *st, const char *run_id, int64_t first)
{
    return sq_fail_plain(st,
                         "the stored results of run %s from row %lld are damaged: restore the run to an "
                         "earlier checkpoint (orch checkpoints %s, orch restore %s SEQ) and resume it",
                         run_id, (long long)first, run_id, run_id);
}

/* 1 when res can be stored as one chunk: each result has a status and
 * lengths a chunk can hold, seqs strictly increase, and the first is past
 * every result of the run already stored. 0 when not; -1 with st->err
 * set. */
static int sq_chunk_fits(struct sq_store *st, const char *run_id, const struct orch_result *res, size_t nres)
{
    for (size_t i = 0; i < nres; i++) {
        const struct orch_result *r = &res[i];
        if (r->status == NULL || (i > 0 && r->seq <= res[i - 1].seq) || r->data_len >= SQ_CHUNK_NULL)
            return 0;
        if ((r->key != NULL && strlen(r->key) >= SQ_CHUNK_NULL) ||
            (r->error != NULL && strlen(r->error) >= SQ_CHUNK_NULL))
            return 0;
    }
    sqlite3_stmt *s = st->stmt[SQ_RES_MAX_SEQ];
    if (sq_bind_text(s, 1, run_id) != 0 || sqlite3_step(s) != SQLITE_ROW) {
        sq_fail(st, "cannot store the results of run %s", run_id);
        sq_done(s);
        return -1;
    }
    int64_t stored = sqlite3_column_int64(s, 0);
    sq_done(s);
    return res[0].seq > stored;
}

/* Stores res[0..nres) as one chunk of checkpoint seq. 0, or -1 with
 * st->err set (the caller rolls back). */
static int sq_chunk_insert(struct sq_store *st, const char *run_id, int64_t seq,
                           const struct orch_result *res, size_t nres)
{
    size_t len = 0;
    unsigned char *buf = sq_chunk_pack(res, nres, &len);
    if (buf == NULL)
        return sq_fail_plain(st, "cannot store the results of run %s: out of memory", run_id);
    sqlite3_stmt *s = st->stmt[SQ_RCH_INSERT];
    int bad = 0;
    bad |= sq_bind_text(s, 1, run_id);
    bad |= sq_bind_int(s, 2, res[0].seq);
    bad |= sq_bind_int(s, 3, res[nres - 1].seq);
    bad |= sq_bind_int(s, 4, seq);
    bad |= sq_bind_int(s, 5, (int64_t)nres);
    bad |= sqlite3_bind_blob64(s, 6, buf, len, SQLITE_STATIC) != SQLITE_OK;
    int rc = 0;
    if (bad || sqlite3_step(s) != SQLITE_DONE)
        rc = sq_fail(st, "cannot store results %lld to %lld of run %s", (long long)res[0].seq,
                     (long long)res[nres - 1].seq, run_id);
    sq_done(s);
    free(buf);
    return rc;
}

/* Moves the chunks of run_id that overlap seqs lo..hi back into the
 * results table (each row with its chunk's checkpoint_seq) and deletes
 * them, one chunk at a time (a row is never deleted under a running
 * SELECT of its table). 0, or -1 with st->err set (the caller rolls
 * back). */
static int sq_chunks_unpack(struct sq_store *st, const char *run_id, int64_t lo, int64_t hi)
{
    sqlite3_stmt *s = st->stmt[SQ_RCH_OVERLAP];
    for (;;) {
        int bad = 0;
        bad |= sq_bind_text(s, 1, run_id);
        bad |= sq_bind_int(s, 2, lo);
        bad |= sq_bind_int(s, 3, hi);
        int rc = bad ? SQLITE_ERROR : sqlite3_step(s);
        if (rc == SQLITE_DONE) {
            sq_done(s);
            return 0;
        }
        if (rc != SQLITE_ROW) {
            sq_fail(st, "cannot rewrite the stored results of run %s", run_id);
            sq_done(s);
            return -1;
        }
        struct sq_chunk_cursor c;
        int64_t cseq = sqlite3_column_int64(s, 3);
        struct orch_result *rows = NULL;
        int ret = sq_chunk_open(s, &c) != 0 ? -1 : 0;
        if (ret == 0) {
            rows = malloc((size_t)c.left * sizeof *rows);
            if (rows == NULL) {
                sq_done(s);
                return sq_fail_plain(st, "cannot rewrite the stored results of run %s: out of memory",
                                     run_id);
            }
        }
        size_t n = 0;
        while (ret == 0 && c.left > 0)
            ret = sq_chunk_next(&c, &rows[n++]);
        int64_t first = c.first;
        if (ret != 0) {
            free(rows);
            sq_done(s);
            return sq_chunk_damaged(st, run_id, first);
        }
        /* rows point into s's blob: insert them before s moves on */
        ret = sq_results_insert(st, run_id, cseq, rows, n);
        free(rows);
        sq_done(s);
        if (ret != 0)
            return -1;
        sqlite3_stmt *d = st->stmt[SQ_RCH_DELETE];
        bad = sq_bind_text(d, 1, run_id) | sq_bind_int(d, 2, first);
        if (bad || sqlite3_step(d) != SQLITE_DONE) {
            sq_fail(st, "cannot rewrite the stored results of run %s", run_id);
            sq_done(d);
            return -1;
        }
        sq_done(d);
    }
}

/* Stores res (which fits, sq_chunk_fits) as one chunk, but for its
 * failed and defaulted rows (those with an error), which go to the
 * results table: the dashboard pages them with one indexed query
 * (results_errors). Their seqs fall inside the chunk's range, which the
 * listing's merge orders. 0, or -1 with st->err set. */
static int sq_chunk_insert_split(struct sq_store *st, const char *run_id, int64_t seq,
                                 const struct orch_result *res, size_t nres)
{
    size_t nerr = 0;
    for (size_t i = 0; i < nres; i++)
        nerr += res[i].error != NULL;
    if (nerr == 0)
        return sq_chunk_insert(st, run_id, seq, res, nres);
    struct orch_result *ok = malloc(nres * sizeof *ok);
    if (ok == NULL)
        return sq_fail_plain(st, "cannot store the results of run %s: out of memory", run_id);
    struct orch_result *bad = ok + (nres - nerr);
    size_t a = 0, b = 0;
    for (size_t i = 0; i < nres; i++) {
        if (res[i].error != NULL)
            bad[b++] = res[i];
        else
            ok[a++] = res[i];
    }
    int rc = a > 0 ? sq_chunk_insert(st, run_id, seq, ok, a) : 0;
    if (rc == 0)
        rc = sq_results_insert(st, run_id, seq, bad, b);
    free(ok);
    return rc;
}

/* Stores a checkpoint's results: one chunk when they extend the run, row
 * by row otherwise. 0, or -1 with st->err set (the caller rolls back). */
static int sq_results_write(struct sq_store *st, const char *run_id, int64_t seq,
                            const struct orch_result *res, size_t nres)
{
    if (nres == 0)
        return 0;
    int fits = sq_chunk_fits(st, run_id, res, nres);
    if (fits < 0)
        return -1;
    if (fits)
        return sq_chunk_insert_split(st, run_id, seq, res, nres);
    /* only the chunks holding one of these seqs: a seq of the row table
     * may fall between a chunk's first and last, the listing's merge
     * orders it */
    for (size_t i = 0; i < nres; i++)
        if (sq_chunks_unpack(st, run_id, res[i].seq, res[i].seq) != 0)
            return -1;
    return sq_results_insert(st, run_id, seq, res, nres);
}

/* Upserts the nstate state entries, deleting those whose value is NULL.
 * 0, or -1 with st->err set (the caller rolls back). */
static int sq_state_apply(struct sq_store *st, const char *run_id, const struct orch_kv *state, size_t nstate)
{
    for (size_t i = 0; i < nstate; i++) {
        const struct orch_kv *kv = &state[i];
        int del = kv->value == NULL;
        sqlite3_stmt *s = st->stmt[del ? SQ_STATE_DELETE : SQ_STATE_UPSERT];
        int bad = 0;
        bad |= sq_bind_text(s, 1, run_id);
        bad |= sq_bind_text(s, 2, kv->key);
        if (!del)
            bad |=
                sqlite3_bind_text64(s, 3, kv->value, kv->value_len, SQLITE_STATIC, SQLITE_UTF8) != SQLITE_OK;
        if (bad || sqlite3_step(s) != SQLITE_DONE) {
            sq_fail(st, "cannot store state key %s of run %s", kv->key != NULL ? kv->key : "(null)", run_id);
            sq_done(s);
            return -1;
        }
        sq_done(s);
    }
    return 0;
}

/* Inserts the checkpoint row itself; duration_ms is measured from t0.
 * 0, or -1 with st->err set (the caller rolls back). */
static int sq_checkpoint_insert(struct sq_store *st, const char *run_id,
                                const struct orch_checkpoint_seal *sealed)
{
    const struct orch_checkpoint *c = sealed->c;
    int64_t seq = sealed->seq;
    sqlite3_stmt *s = st->stmt[SQ_CP_INSERT];
    int bad = 0;
    bad |= sq_bind_text(s, 1, run_id);
    bad |= sq_bind_int(s, 2, seq);
    bad |= sq_bind_text(s, 3, c->name);
    bad |= sq_bind_text(s, 4, c->reason);
    bad |= sq_bind_int(s, 5, sealed->created_ms);
    bad |= sq_bind_int(s, 6, c->input_offset);
    bad |= sq_bind_int(s, 7, c->input_line);
    bad |= sq_bind_int(s, 8, c->input_index);
    bad |= sq_bind_int(s, 9, c->output_offset);
    bad |= sq_bind_int(s, 10, c->errors_offset);
    bad |= sqlite3_bind_blob64(s, 11, sealed->packed, sealed->packed_len, SQLITE_STATIC) != SQLITE_OK;
    bad |= sq_bind_int(s, 12, (int64_t)c->memento_len);
    bad |= sq_bind_text(s, 13, sealed->sum);
    bad |= sq_bind_int(s, 14, sealed->bytes);
    bad |= sqlite3_bind_double(s, 15, orch_store_mono_ms() - sealed->t0) != SQLITE_OK;
    if (bad || sqlite3_step(s) != SQLITE_DONE) {
        sq_fail(st, "cannot store checkpoint %lld of run %s", (long long)seq, run_id);
        sq_done(s);
        return -1;
    }
    sq_done(s);
    return 0;
}

/* Writes results, state and the checkpoint in one BEGIN IMMEDIATE
 * transaction, then the run row as run_update does; the checkpoint is
 * sealed once numbered (store_impl.h). The stored duration_ms covers
 * everything but the COMMIT itself. A state entry whose value is NULL is
 * deleted. On failure nothing is written. */
static int sq_checkpoint_write(struct orch_store *base, const struct orch_run *run,
                               struct orch_checkpoint_seal *seal, const struct orch_result *res, size_t nres,
                               const struct orch_kv *state, size_t nstate)
{
    struct sq_store *st = sq_of(base);
    const char *run_id = run->id;
    if (sq_begin(st, "cannot start the checkpoint transaction") != 0)
        return -1;
    int64_t seq = sq_checkpoint_next_seq(st, run_id);
    if (seq < 0)
        goto fail;
    if (sq_results_write(st, run_id, seq, res, nres) != 0)
        goto fail;
    if (sq_state_apply(st, run_id, state, nstate) != 0)
        goto fail;
    if (sq_run_update_stmt(st, run) != 0)
        goto fail;
    if (orch_checkpoint_seal(base, run_id, seal, seq) != 0)
        goto fail;
    if (sq_checkpoint_insert(st, run_id, seal) != 0)
        goto fail;
    if (sq_commit(st, "cannot commit the checkpoint") != 0)
        goto fail;
    return 0;

fail:
    sq_abort(st);
    return -1;
}

/* One checkpoint (seq > 0) or all, newest or oldest first; cb must not
 * scan the checkpoints of the same store. */
static int sq_checkpoint_scan(struct orch_store *base, const char *run_id, int64_t seq, int newest_first,
                              const char *what, orch_packed_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[seq > 0 ? SQ_CP_GET : newest_first ? SQ_CP_NEWEST : SQ_CP_LIST];
    int bad = sq_bind_text(s, 1, run_id);
    if (seq > 0)
        bad |= sq_bind_int(s, 2, seq);
    if (bad)
        return sq_bind_failed(st, s, "%s", what);
    int ret = 0;
    while (ret == 0) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            ret = sq_fail(st, "%s", what);
            break;
        }
        struct orch_checkpoint_packed p;
        if (sq_checkpoint_row(s, &p) != 0) {
            ret = sq_fail_plain(st, "%s: out of memory", what);
            break;
        }
        ret = cb(ud, &p);
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
    static const enum sq_stmt which[] = {SQ_CP_DELETE_AFTER, SQ_RES_DELETE_AFTER, SQ_RCH_DELETE_AFTER};
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

/* The next result of the chunks of a listing (s: SQ_RCH_LIST), stepping
 * s to the next chunk when c is used up. 1 with *r set, 0 at the end, -1
 * with st->err set. */
static int sq_chunk_step(struct sq_store *st, const char *run_id, sqlite3_stmt *s, struct sq_chunk_cursor *c,
                         struct orch_result *r)
{
    while (c->left <= 0) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            return 0;
        if (rc != SQLITE_ROW)
            return sq_fail(st, "cannot list the results of run %s", run_id);
        if (sq_chunk_open(s, c) != 0)
            return sq_chunk_damaged(st, run_id, c->first);
    }
    if (sq_chunk_next(c, r) != 0)
        return sq_chunk_damaged(st, run_id, c->first);
    return 1;
}

/* Lists the run's results in seq order: the per-row table and the chunks
 * (each a sorted stream; no seq is in both) merged. cb gets pointers into
 * SQLite's row buffers, valid during the call only; cb must not call
 * result_list on the same store. */
static int sq_result_list(struct orch_store *base, const char *run_id, orch_result_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_RES_LIST];
    sqlite3_stmt *k = st->stmt[SQ_RCH_LIST];
    int ret = 0;
    if (sq_bind_text(s, 1, run_id) || sq_bind_text(k, 1, run_id)) {
        ret = sq_fail(st, "cannot list the results of run %s", run_id);
        goto done;
    }
    struct sq_chunk_cursor c = {0};
    struct orch_result cr;
    int have_chunk = sq_chunk_step(st, run_id, k, &c, &cr);
    int rc = sqlite3_step(s);
    for (;;) {
        if (have_chunk < 0) {
            ret = -1;
            break;
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            ret = sq_fail(st, "cannot list the results of run %s", run_id);
            break;
        }
        if (rc == SQLITE_DONE && !have_chunk)
            break;
        if (rc == SQLITE_ROW && (!have_chunk || sqlite3_column_int64(s, 0) < cr.seq)) {
            struct orch_result r;
            r.seq = sqlite3_column_int64(s, 0);
            r.key = (const char *)sqlite3_column_text(s, 1);
            r.status = (const char *)sqlite3_column_text(s, 2);
            r.error = (const char *)sqlite3_column_text(s, 3);
            r.data = sqlite3_column_blob(s, 4);
            r.data_len = (size_t)sqlite3_column_bytes(s, 4);
            if (cb(ud, &r))
                break;
            rc = sqlite3_step(s);
        } else {
            if (cb(ud, &cr))
                break;
            have_chunk = sq_chunk_step(st, run_id, k, &c, &cr);
        }
    }
done:
    sq_done(s);
    sq_done(k);
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
    if (bad)
        return sq_bind_failed(st, s, "cannot record event %s", type != NULL ? type : "(null)");
    return sq_exec(st, s, "cannot record an event");
}

/* Hands each row of s (bound; columns id, ts_ms, type, data) to cb as an
 * event until cb returns non-zero, then resets s. 0, or -1 with st->err
 * set. */
static int sq_events_each(struct sq_store *st, sqlite3_stmt *s, const char *run_id, orch_event_cb cb,
                          void *ud)
{
    int ret = 0;
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

/* Oldest first; cb must not call event_list on the same store. */
static int sq_event_list(struct orch_store *base, const char *run_id, orch_event_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_EV_LIST];
    if (sq_bind_text(s, 1, run_id)) {
        sq_done(s);
        return sq_fail(st, "cannot list the events of run %s", run_id);
    }
    return sq_events_each(st, s, run_id, cb, ud);
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
    /* the size query last: a database in memory has no size on disk */
    int nq = st->memory ? ORCH_STATS_SIZE : ORCH_STATS_NQUERIES;
    for (int q = 0; q < nq; q++) {
        sqlite3_stmt *s = st->stmt[SQ_STATS_RUNS + q];
        if (sqlite3_step(s) != SQLITE_ROW) {
            sq_fail(st, "%s", orch_stats_what[q]);
            sq_done(s);
            return -1;
        }
        for (int c = 0; c < orch_stats_ncols(q); c++)
            orch_stats_set(out, q, c, sqlite3_column_int64(s, c), sqlite3_column_double(s, c));
        sq_done(s);
    }
    if (st->memory)
        return 0;
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
    if (bad)
        return sq_bind_failed(st, s, "cannot journal response %s", e->key);
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

/* The lookup alone: no hit counted, so no write lock (journal_peek). */
static int sq_journal_read(struct orch_store *base, const char *key, struct orch_journal_owned *out)
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
    *out = got;
    return 1;
}

/* Reads first and counts the hit after, so a miss (the common case on a
 * first run) never takes the write lock. The hit is bookkeeping: when it
 * cannot be written (lock held past the busy timeout, disk full) the
 * reply is still returned, with out->hits not counting this lookup, since
 * failing here would make the caller pay for the request again. */
static int sq_journal_get(struct orch_store *base, const char *key, struct orch_journal_owned *out)
{
    int rc = sq_journal_read(base, key, out);
    if (rc != 1)
        return rc;
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_JR_HIT];
    if (sq_bind_text(s, 1, key) == 0 && sqlite3_step(s) == SQLITE_DONE && sqlite3_changes(st->db) == 1)
        out->hits++;
    sq_done(s);
    return 1;
}

void orch_store_sqlite_library(char *out, size_t outlen)
{
    snprintf(out, outlen, "SQLite %s", sqlite3_libversion());
}

/* An SQLite store runs on the library itself. */
static void sq_version(struct orch_store *base, char *out, size_t outlen)
{
    (void)base;
    orch_store_sqlite_library(out, outlen);
}

/* ---- live figures ---- */

static int sq_live_put(struct orch_store *base, const char *run_id, int64_t updated_ms, const char *figures)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_LIVE_PUT];
    int bad = 0;
    bad |= sq_bind_text(s, 1, run_id);
    bad |= sq_bind_int(s, 2, updated_ms);
    bad |= sq_bind_text(s, 3, figures);
    if (bad)
        return sq_bind_failed(st, s, "cannot record the live figures of run %s", run_id);
    if (sq_exec(st, s, "cannot record live figures") != 0)
        return -1;
    if (sqlite3_changes(st->db) != 1)
        return sq_fail_plain(st, "cannot record the live figures of run %s: no such run", run_id);
    return 0;
}

static int sq_live_get(struct orch_store *base, const char *run_id, char **figures, int64_t *updated_ms)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_LIVE_GET];
    if (sq_bind_text(s, 1, run_id)) {
        sq_done(s);
        return sq_fail(st, "cannot read the live figures of run %s", run_id);
    }
    int rc = sqlite3_step(s);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        int oom = 0;
        *figures = sq_col_dup(s, 0, &oom);
        *updated_ms = sqlite3_column_int64(s, 1);
        ret = 1;
        if (oom || *figures == NULL) {
            free(*figures);
            *figures = NULL;
            ret = sq_fail_plain(st, "cannot read the live figures of run %s: out of memory", run_id);
        }
    } else if (rc != SQLITE_DONE) {
        ret = sq_fail(st, "cannot read the live figures of run %s", run_id);
    }
    sq_done(s);
    return ret;
}

static int sq_event_page(struct orch_store *base, const char *run_id, int64_t after_id, int64_t before_id,
                         int64_t limit, int newest_first, orch_event_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[newest_first ? SQ_EV_PAGE_DESC : SQ_EV_PAGE];
    int bad = 0;
    bad |= sq_bind_text(s, 1, run_id);
    bad |= sq_bind_int(s, 2, after_id);
    bad |= sq_bind_int(s, 3, before_id);
    bad |= sq_bind_int(s, 4, limit);
    if (bad) {
        sq_done(s);
        return sq_fail(st, "cannot list the events of run %s", run_id);
    }
    return sq_events_each(st, s, run_id, cb, ud);
}

/* key, status and error point into SQLite's row buffer, valid during the
 * callback only. */
static int sq_error_page(struct orch_store *base, const char *run_id, int64_t after_seq, int64_t limit,
                         orch_result_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_ERR_PAGE];
    int bad = 0;
    bad |= sq_bind_text(s, 1, run_id);
    bad |= sq_bind_int(s, 2, after_seq);
    bad |= sq_bind_int(s, 3, limit);
    if (bad) {
        sq_done(s);
        return sq_fail(st, "cannot list the failed rows of run %s", run_id);
    }
    int ret = 0;
    for (;;) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            ret = sq_fail(st, "cannot list the failed rows of run %s", run_id);
            break;
        }
        struct orch_result x = {0};
        x.seq = sqlite3_column_int64(s, 0);
        x.key = (const char *)sqlite3_column_text(s, 1);
        x.status = (const char *)sqlite3_column_text(s, 2);
        x.error = (const char *)sqlite3_column_text(s, 3);
        if (cb(ud, &x))
            break;
    }
    sq_done(s);
    return ret;
}

/* ---- many workers, one run: leases and the shared budget --------------
 * On SQLite the workers share one machine, whose clock is the store's.
 * These statements are prepared when used (leases are claimed a few
 * times a minute, not per row); each call is one transaction. */

#define SQ_NOW_MS "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"

/* Prepares constant sql into *s. 0, or -1 with st->err set from what. */
static int sq_prep(struct sq_store *st, const char *sql, sqlite3_stmt **s, const char *what)
{
    if (sqlite3_prepare_v2(st->db, sql, -1, s, NULL) != SQLITE_OK) {
        sq_fail(st, "%s", what);
        sqlite3_finalize(*s);
        *s = NULL;
        return -1;
    }
    return 0;
}

/* Steps and finalizes a statement without rows: rows changed, or -1. */
static int64_t sq_run_count(struct sq_store *st, sqlite3_stmt *s, int bad, const char *what)
{
    if (bad || sqlite3_step(s) != SQLITE_DONE) {
        sq_fail(st, "%s", what);
        sqlite3_finalize(s);
        return -1;
    }
    sqlite3_finalize(s);
    return sqlite3_changes64(st->db);
}

static int sq_lease_row(sqlite3_stmt *s, struct orch_lease *out)
{
    int oom = 0;
    memset(out, 0, sizeof *out);
    out->no = sqlite3_column_int64(s, 0);
    out->first_index = sqlite3_column_int64(s, 1);
    out->rows = sqlite3_column_int64(s, 2);
    out->offset = sqlite3_column_int64(s, 3);
    out->line = sqlite3_column_int64(s, 4);
    out->index = sqlite3_column_int64(s, 5);
    out->status = sq_col_dup(s, 6, &oom);
    out->owner = sq_col_dup(s, 7, &oom);
    out->claims = sqlite3_column_int64(s, 8);
    out->claimed_ms = sqlite3_column_int64(s, 9);
    out->heartbeat_ms = sqlite3_column_int64(s, 10);
    out->done_ms = sqlite3_column_int64(s, 11);
    out->age_ms = sqlite3_column_int64(s, 12);
    if (oom) {
        orch_lease_clear(out);
        return -1;
    }
    return 0;
}

static int sq_lease_plan(struct orch_store *base, const char *run_id, const struct orch_lease *l, size_t n)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot plan the leases of run %s", run_id);
    sqlite3_stmt *s = NULL;
    if (sq_begin(st, what) != 0)
        return -1;
    if (sq_prep(st, "SELECT count(*) FROM leases WHERE run_id = ?1", &s, what) != 0)
        goto fail;
    int64_t have = -1;
    if (sq_bind_text(s, 1, run_id) == 0 && sqlite3_step(s) == SQLITE_ROW)
        have = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    if (have < 0) {
        sq_fail(st, "%s", what);
        goto fail;
    }
    if (have == 0 && n > 0) {
        if (sq_prep(st,
                    "INSERT INTO leases (run_id, no, first_index, nrows, cur_offset, cur_line, cur_index) "
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?3)",
                    &s, what) != 0)
            goto fail;
        for (size_t i = 0; i < n; i++) {
            int bad = sq_bind_text(s, 1, run_id) | sq_bind_int(s, 2, l[i].no) |
                      sq_bind_int(s, 3, l[i].first_index) | sq_bind_int(s, 4, l[i].rows) |
                      sq_bind_int(s, 5, l[i].offset) | sq_bind_int(s, 6, l[i].line);
            if (bad || sqlite3_step(s) != SQLITE_DONE) {
                sq_fail(st, "%s", what);
                sqlite3_finalize(s);
                goto fail;
            }
            sqlite3_reset(s);
        }
        sqlite3_finalize(s);
    }
    if (sq_commit(st, what) != 0)
        goto fail;
    return 0;
fail:
    sq_abort(st);
    return -1;
}

/* One statement: SQLite writes one at a time, so no two claimers take
 * the same lease. */
static int sq_lease_claim(struct orch_store *base, const char *run_id, const char *worker, int64_t stale_ms,
                          struct orch_lease *out)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot claim a lease of run %s", run_id);
    sqlite3_stmt *s = NULL;
    if (sq_prep(
            st,
            "UPDATE leases SET status = 'taken', owner = ?2, claims = claims + 1, claimed_ms = " SQ_NOW_MS
            ", heartbeat_ms = " SQ_NOW_MS " WHERE run_id = ?1 AND no = (SELECT no FROM leases WHERE run_id "
            "= ?1 AND (status = 'free' OR (status = 'taken' AND heartbeat_ms < " SQ_NOW_MS " - ?3)) ORDER "
            "BY no LIMIT 1) RETURNING no, first_index, nrows, cur_offset, cur_line, cur_index, status, "
            "owner, claims, claimed_ms, heartbeat_ms, done_ms, 0",
            &s, what) != 0)
        return -1;
    int bad = sq_bind_text(s, 1, run_id) | sq_bind_text(s, 2, worker) | sq_bind_int(s, 3, stale_ms);
    int rc = bad ? SQLITE_MISUSE : sqlite3_step(s);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        ret = sq_lease_row(s, out) == 0 ? 1 : sq_fail_plain(st, "%s: out of memory", what);
        rc = sqlite3_step(s);
    }
    if (rc != SQLITE_DONE) {
        sq_fail(st, "%s", what);
        orch_lease_clear(out);
        ret = -1;
    }
    sqlite3_finalize(s);
    return ret;
}

static int sq_lease_heartbeat(struct orch_store *base, const char *run_id, int64_t no, const char *worker)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot heartbeat lease %lld of run %s", (long long)no, run_id);
    sqlite3_stmt *s = NULL;
    if (sq_prep(st,
                "UPDATE leases SET heartbeat_ms = " SQ_NOW_MS " WHERE run_id = ?1 AND no = ?2 AND owner = ?3 "
                "AND status = 'taken'",
                &s, what) != 0)
        return -1;
    int bad = sq_bind_text(s, 1, run_id) | sq_bind_int(s, 2, no) | sq_bind_text(s, 3, worker);
    int64_t n = sq_run_count(st, s, bad, what);
    return n < 0 ? -1 : n > 0;
}

/* The run's counters += c->add, and the run completed when this was its
 * last lease. -> 1, 2 (completed) or -1. */
static int sq_lease_commit_run(struct sq_store *st, const char *run_id, const struct orch_lease_commit *c,
                               const char *what)
{
    const struct orch_run *a = c->add;
    struct orch_run zero = {0};
    if (a == NULL)
        a = &zero;
    sqlite3_stmt *s = NULL;
    if (sq_prep(
            st,
            "UPDATE runs SET rows_done = rows_done + ?2, rows_ok = rows_ok + ?3, rows_failed = rows_failed + "
            "?4, rows_dropped = rows_dropped + ?5, rows_defaulted = rows_defaulted + ?6, llm_calls = "
            "llm_calls + ?7, tokens_in = tokens_in + ?8, tokens_out = tokens_out + ?9, cost_usd = cost_usd + "
            "?10, updated_ms = ?11, heartbeat_ms = ?11 WHERE id = ?1",
            &s, what) != 0)
        return -1;
    int64_t now = orch_store_now_ms();
    int bad = sq_bind_text(s, 1, run_id) | sq_bind_int(s, 2, a->rows_done) | sq_bind_int(s, 3, a->rows_ok) |
              sq_bind_int(s, 4, a->rows_failed) | sq_bind_int(s, 5, a->rows_dropped) |
              sq_bind_int(s, 6, a->rows_defaulted) | sq_bind_int(s, 7, a->llm_calls) |
              sq_bind_int(s, 8, a->tokens_in) | sq_bind_int(s, 9, a->tokens_out) |
              (sqlite3_bind_double(s, 10, a->cost_usd) != SQLITE_OK) | sq_bind_int(s, 11, now);
    if (sq_run_count(st, s, bad, what) < 0)
        return -1;
    if (c->end != 1)
        return 1;
    if (sq_prep(
            st,
            "UPDATE runs SET status = 'completed', error = NULL, finished_ms = ?2, updated_ms = ?2 WHERE id "
            "= ?1 AND status <> 'completed' AND NOT EXISTS (SELECT 1 FROM leases WHERE run_id = ?1 AND "
            "status <> 'done')",
            &s, what) != 0)
        return -1;
    bad = sq_bind_text(s, 1, run_id) | sq_bind_int(s, 2, now);
    int64_t n = sq_run_count(st, s, bad, what);
    return n < 0 ? -1 : n > 0 ? 2 : 1;
}

static int sq_lease_commit(struct orch_store *base, const char *run_id, const struct orch_lease_commit *c,
                           const struct orch_result *res, size_t nres)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot commit lease %lld of run %s", (long long)c->no, run_id);
    sqlite3_stmt *s = NULL;
    if (sq_begin(st, what) != 0)
        return -1;
    if (sq_prep(st,
                "UPDATE leases SET cur_offset = ?4, cur_line = ?5, cur_index = ?6, heartbeat_ms = " SQ_NOW_MS
                ", status = CASE ?7 WHEN 1 THEN 'done' WHEN 2 THEN 'free' ELSE status END, done_ms = CASE ?7 "
                "WHEN 1 THEN " SQ_NOW_MS " ELSE done_ms END WHERE run_id = ?1 AND no = ?2 AND owner = ?3 AND "
                "status = 'taken'",
                &s, what) != 0)
        goto fail;
    int bad = sq_bind_text(s, 1, run_id) | sq_bind_int(s, 2, c->no) | sq_bind_text(s, 3, c->worker) |
              sq_bind_int(s, 4, c->offset) | sq_bind_int(s, 5, c->line) | sq_bind_int(s, 6, c->index) |
              sq_bind_int(s, 7, c->end);
    int64_t held = sq_run_count(st, s, bad, what);
    if (held < 0)
        goto fail;
    if (held == 0) {
        sq_abort(st);
        return 0;
    }
    if (sq_results_insert(st, run_id, 0, res, nres) != 0)
        goto fail;
    if (sq_prep(st,
                "DELETE FROM journal_pending WHERE owner = ?1 AND EXISTS (SELECT 1 FROM llm_journal j WHERE "
                "j.key = journal_pending.key)",
                &s, what) != 0)
        goto fail;
    if (sq_run_count(st, s, sq_bind_text(s, 1, c->worker), what) < 0)
        goto fail;
    int rc = sq_lease_commit_run(st, run_id, c, what);
    if (rc < 0 || sq_commit(st, what) != 0)
        goto fail;
    return rc;
fail:
    sq_abort(st);
    return -1;
}

static int sq_lease_list(struct orch_store *base, const char *run_id, orch_lease_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot list the leases of run %s", run_id);
    sqlite3_stmt *s = NULL;
    if (sq_prep(st,
                "SELECT no, first_index, nrows, cur_offset, cur_line, cur_index, status, owner, claims, "
                "claimed_ms, heartbeat_ms, done_ms, " SQ_NOW_MS
                " - heartbeat_ms FROM leases WHERE run_id = ?1 "
                "ORDER BY no",
                &s, what) != 0)
        return -1;
    int ret = sq_bind_text(s, 1, run_id) ? sq_fail(st, "%s", what) : 0;
    while (ret == 0) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            ret = sq_fail(st, "%s", what);
            break;
        }
        struct orch_lease l;
        if (sq_lease_row(s, &l) != 0) {
            ret = sq_fail_plain(st, "%s: out of memory", what);
            break;
        }
        int stop = cb(ud, &l);
        orch_lease_clear(&l);
        if (stop)
            break;
    }
    sqlite3_finalize(s);
    return ret;
}

static int sq_budget_reserve(struct orch_store *base, const char *run_id, double est_usd, double max_usd)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot reserve budget for run %s", run_id);
    sqlite3_stmt *s = NULL;
    if (sq_begin(st, what) != 0)
        return -1;
    if (sq_prep(st,
                "INSERT INTO run_budget (run_id, max_usd) VALUES (?1, ?2) ON CONFLICT (run_id) DO NOTHING",
                &s, what) != 0)
        goto fail;
    int bad = sq_bind_text(s, 1, run_id) | (sqlite3_bind_double(s, 2, max_usd) != SQLITE_OK);
    if (sq_run_count(st, s, bad, what) < 0)
        goto fail;
    if (sq_prep(st,
                "UPDATE run_budget SET reserved_usd = reserved_usd + ?2 WHERE run_id = ?1 AND spent_usd + "
                "reserved_usd + ?2 <= max_usd + 1e-12",
                &s, what) != 0)
        goto fail;
    bad = sq_bind_text(s, 1, run_id) | (sqlite3_bind_double(s, 2, est_usd) != SQLITE_OK);
    int64_t n = sq_run_count(st, s, bad, what);
    if (n < 0 || sq_commit(st, what) != 0)
        goto fail;
    return n > 0;
fail:
    sq_abort(st);
    return -1;
}

static int sq_budget_settle(struct orch_store *base, const char *run_id, double released_usd,
                            double spent_usd)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot settle the budget of run %s", run_id);
    sqlite3_stmt *s = NULL;
    if (sq_prep(st,
                "UPDATE run_budget SET reserved_usd = max(reserved_usd - ?2, 0), spent_usd = spent_usd + ?3 "
                "WHERE run_id = ?1",
                &s, what) != 0)
        return -1;
    int bad = sq_bind_text(s, 1, run_id) | (sqlite3_bind_double(s, 2, released_usd) != SQLITE_OK) |
              (sqlite3_bind_double(s, 3, spent_usd) != SQLITE_OK);
    return sq_run_count(st, s, bad, what) < 0 ? -1 : 0;
}

/* Reservations are dropped with a new max: they belonged to workers that
 * stopped (a budget is raised on a paused run). */
static int sq_budget_set(struct orch_store *base, const char *run_id, double max_usd)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot set the budget of run %s", run_id);
    sqlite3_stmt *s = NULL;
    if (sq_prep(st,
                "INSERT INTO run_budget (run_id, max_usd) VALUES (?1, ?2) ON CONFLICT (run_id) DO UPDATE SET "
                "max_usd = excluded.max_usd, reserved_usd = 0",
                &s, what) != 0)
        return -1;
    int bad = sq_bind_text(s, 1, run_id) | (sqlite3_bind_double(s, 2, max_usd) != SQLITE_OK);
    return sq_run_count(st, s, bad, what) < 0 ? -1 : 0;
}

static int sq_budget_get(struct orch_store *base, const char *run_id, double *max_usd, double *spent_usd,
                         double *reserved_usd)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot read the budget of run %s", run_id);
    sqlite3_stmt *s = NULL;
    if (sq_prep(st, "SELECT max_usd, spent_usd, reserved_usd FROM run_budget WHERE run_id = ?1", &s, what) !=
        0)
        return -1;
    int rc = sq_bind_text(s, 1, run_id) ? SQLITE_MISUSE : sqlite3_step(s);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        *max_usd = sqlite3_column_double(s, 0);
        *spent_usd = sqlite3_column_double(s, 1);
        *reserved_usd = sqlite3_column_double(s, 2);
        ret = 1;
    } else if (rc != SQLITE_DONE) {
        ret = sq_fail(st, "%s", what);
    }
    sqlite3_finalize(s);
    return ret;
}

static int sq_journal_pend(struct orch_store *base, const char *key, const char *owner, int64_t ttl_ms)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot mark LLM request %.40s as being sent", key);
    sqlite3_stmt *s = NULL;
    if (sq_prep(st,
                "INSERT INTO journal_pending (key, owner, expires_ms) VALUES (?1, ?2, " SQ_NOW_MS " + ?3) ON "
                "CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms WHERE "
                "journal_pending.owner = excluded.owner OR journal_pending.expires_ms < " SQ_NOW_MS,
                &s, what) != 0)
        return -1;
    int bad = sq_bind_text(s, 1, key) | sq_bind_text(s, 2, owner) | sq_bind_int(s, 3, ttl_ms);
    int64_t n = sq_run_count(st, s, bad, what);
    return n < 0 ? -1 : n > 0;
}

/* ---- shared rate limits ------------------------------------------------ */

/* One statement (SQLite's write lock serializes the processes sharing the
 * file, and 'now' holds still within it): the bucket made full on the
 * first take, else refilled for the time since its last update and taken
 * from if it holds amount. */
#define SQ_RATE_REFILLED "min(?3, b.tokens + max(excluded.updated_ms - b.updated_ms, 0) * ?5)"
#define SQ_RATE_OK "(" SQ_RATE_REFILLED " >= ?4 - 1e-9)"

static int sq_rate_take(struct orch_store *base, const char *run_id, const char *kind, double amount,
                        double capacity, double per_ms, double *left)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot take from the %.40s limit of run %s", kind, run_id);
    sqlite3_stmt *s = NULL;
    if (sq_prep(
            st,
            "INSERT INTO rate_buckets AS b (run_id, kind, tokens, updated_ms, first_ms, granted, takes, "
            "last_ok) VALUES (?1, ?2, ?3 - ?4, " SQ_NOW_MS ", " SQ_NOW_MS ", ?4, 1, 1) ON CONFLICT (run_id, "
            "kind) DO UPDATE SET tokens = " SQ_RATE_REFILLED " - CASE WHEN " SQ_RATE_OK
            " THEN ?4 ELSE 0 END, updated_ms = max(b.updated_ms, excluded.updated_ms), granted = b.granted + "
            "CASE WHEN " SQ_RATE_OK " THEN ?4 ELSE 0 END, takes = b.takes + CASE WHEN " SQ_RATE_OK
            " THEN 1 ELSE 0 END, last_ok = " SQ_RATE_OK " RETURNING last_ok, tokens",
            &s, what) != 0)
        return -1;
    int bad = sq_bind_text(s, 1, run_id) | sq_bind_text(s, 2, kind) |
              (sqlite3_bind_double(s, 3, capacity) != SQLITE_OK) |
              (sqlite3_bind_double(s, 4, amount) != SQLITE_OK) |
              (sqlite3_bind_double(s, 5, per_ms) != SQLITE_OK);
    int rc = bad ? SQLITE_MISUSE : sqlite3_step(s);
    int ret = -1;
    if (rc == SQLITE_ROW) {
        ret = sqlite3_column_int(s, 0) != 0;
        if (ret == 0)
            *left = sqlite3_column_double(s, 1);
        rc = sqlite3_step(s); /* RETURNING's statement ends, and with it the write */
    }
    if (rc != SQLITE_DONE)
        ret = sq_fail(st, "%s", what);
    else if (ret < 0)
        sq_fail_plain(st, "%s: the bucket's row was not returned", what);
    sqlite3_finalize(s);
    return ret;
}

static int sq_run_set_status(struct orch_store *base, const char *run_id, enum orch_run_status status,
                             const char *error)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot update run %s", run_id);
    sqlite3_stmt *s = NULL;
    if (sq_prep(st,
                "UPDATE runs SET status = ?2, error = ?3, updated_ms = ?4, finished_ms = ?5 WHERE id = ?1",
                &s, what) != 0)
        return -1;
    int64_t now = orch_store_now_ms();
    int bad = sq_bind_text(s, 1, run_id) | sq_bind_text(s, 2, orch_run_status_name(status)) |
              sq_bind_text(s, 3, error) | sq_bind_int(s, 4, now) |
              sq_bind_int(s, 5, status == ORCH_RUN_COMPLETED || status == ORCH_RUN_FAILED ? now : 0);
    int64_t n = sq_run_count(st, s, bad, what);
    return n < 0 ? -1 : n > 0;
}

/* ---- journal lookups without their hits, hit counts in bulk ------------ */

/* A round's lookups in one read transaction (one set of locks, not one a
 * lookup), counting no hits: the group counts them in memory. */
static int sq_journal_peek(struct orch_store *base, struct orch_journal_lookup *gets, size_t m)
{
    struct sq_store *st = sq_of(base);
    for (size_t i = 0; i < m; i++) {
        gets[i].found = 0;
        memset(&gets[i].out, 0, sizeof gets[i].out);
    }
    if (m > 1 && sq_begin(st, "cannot start looking up journaled responses") != 0)
        return -1;
    for (size_t i = 0; i < m; i++) {
        int rc = sq_journal_read(base, gets[i].key, &gets[i].out);
        if (rc < 0)
            goto fail;
        gets[i].found = rc;
    }
    if (m > 1 && sq_commit(st, "cannot end looking up journaled responses") != 0)
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


/* The hits a run's lookups counted in memory (journal_group.c), added in
 * one transaction. The statement is prepared for the call: it runs once
 * per checkpoint or so, not per lookup. */
static int sq_journal_hits(struct orch_store *base, const char *const *keys, const int64_t *counts, size_t n)
{
    struct sq_store *st = sq_of(base);
    if (n == 0)
        return 0;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, "UPDATE llm_journal SET hits = hits + ?2 WHERE key = ?1", -1, &s, NULL) != SQLITE_OK)
        return sq_fail(st, "cannot count journal hits");
    if (sq_begin(st, "cannot count journal hits") != 0) {
        sqlite3_finalize(s);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (sq_bind_text(s, 1, keys[i]) || sq_bind_int(s, 2, counts[i]) || sqlite3_step(s) != SQLITE_DONE) {
            sq_fail(st, "cannot count the hits of journaled response %s", keys[i]);
            sqlite3_finalize(s);
            sq_abort(st);
            return -1;
        }
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    return sq_commit(st, "cannot commit journal hits");
}

const struct orch_store_ops sq_ops = {
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
    .checkpoint_scan = sq_checkpoint_scan,
    .checkpoint_rollback = sq_checkpoint_rollback,
    .result_list = sq_result_list,
    .event_add = sq_event_add,
    .event_list = sq_event_list,
    .state_list = sq_state_list,
    .stats = sq_stats,
    .journal_put = sq_journal_put,
    .journal_get = sq_journal_get,
    .journal_batch = sq_journal_batch,
    .journal_peek = sq_journal_peek,
    .journal_hits = sq_journal_hits,
    .run_delete = sq_run_delete,
    .journal_prune = sq_journal_prune,
    .vacuum = sq_vacuum,
    .version = sq_version,
    .live_put = sq_live_put,
    .live_get = sq_live_get,
    .event_page = sq_event_page,
    .error_page = sq_error_page,
    .lease_plan = sq_lease_plan,
    .lease_claim = sq_lease_claim,
    .lease_heartbeat = sq_lease_heartbeat,
    .lease_commit = sq_lease_commit,
    .lease_list = sq_lease_list,
    .budget_reserve = sq_budget_reserve,
    .budget_settle = sq_budget_settle,
    .budget_set = sq_budget_set,
    .budget_get = sq_budget_get,
    .run_set_status = sq_run_set_status,
    .journal_pend = sq_journal_pend,
    .rate_take = sq_rate_take,
};
