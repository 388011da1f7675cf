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
#include "result_pack.h"
#include "store_sqlite_impl.h"

#include <stdarg.h>
#include <stddef.h>
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
#define SQ_EV_COLS "id, ts_ms, type, data"
/* sq_result_at reads them */
#define SQ_RES_COLS "seq, key, status, error"
/* sq_chunk_open reads them */
#define SQ_RCH_COLS "first_seq, n, data, format"
/* events_run (run_id) holds the rowid: both pages are index ranges */
#define SQ_EV_PAGE_SELECT                                                                                    \
    "SELECT " SQ_EV_COLS " FROM events WHERE run_id = ?1 AND id > ?2 AND id < ?3 ORDER BY id"

const char *const sq_sql[SQ_NSTMT] = {
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_BEGIN_READ] = "BEGIN",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_RUN_INSERT] =
        "INSERT INTO runs (" SQ_RUN_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
        "?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)",
    [SQ_RUN_GET] = SQ_RUN_SELECT "WHERE id = ?1",
    [SQ_RUN_FIND] = SQ_RUN_SELECT "WHERE identity = ?1 AND status IN ('pending', 'running', 'paused') "
                                  "ORDER BY created_ms DESC, rowid DESC LIMIT 1",
    /* numbered as SQ_RUN_INSERT's, so one binder serves both (the
     * parameters it does not use are bound and ignored) */
    [SQ_RUN_UPDATE] =
        "UPDATE runs SET status = ?12, error = ?10, owner_pid = ?13, owner_host = ?11, "
        "heartbeat_ms = ?14, finished_ms = ?17, rows_done = ?18, rows_ok = ?19, rows_failed = ?20, "
        "rows_dropped = ?21, rows_defaulted = ?22, llm_calls = ?23, tokens_in = ?24, "
        "tokens_out = ?25, cost_usd = ?26, recoveries = ?27, updated_ms = ?16 WHERE id = ?1",
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
    [SQ_RES_LIST] = "SELECT " SQ_RES_COLS ", data FROM results WHERE run_id = ?1 ORDER BY seq",
    [SQ_STATE_UPSERT] = "INSERT INTO state (run_id, key, value) VALUES (?1, ?2, ?3) "
                        "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
    [SQ_STATE_DELETE] = "DELETE FROM state WHERE run_id = ?1 AND key = ?2",
    [SQ_STATE_LIST] = "SELECT key, value FROM state WHERE run_id = ?1 ORDER BY key",
    [SQ_EV_INSERT] = "INSERT INTO events (run_id, ts_ms, type, data) VALUES (?1, ?2, ?3, ?4)",
    /* IS, so a NULL run_id lists the store-wide events */
    [SQ_EV_LIST] = "SELECT " SQ_EV_COLS " FROM events WHERE run_id IS ?1 ORDER BY id",
    /* First wins: a key already journaled keeps its reply, its cost and
     * its hits (a second payer for the same request changes nothing). */
    [SQ_JR_INSERT] = "INSERT INTO llm_journal (" SQ_JR_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
                     "?10, 0) ON CONFLICT (key) DO NOTHING",
    /* each lookup also reads where the entry is: its hits are written there */
    [SQ_JR_GET] = "SELECT " SQ_JR_COLS ", rowid FROM llm_journal WHERE key = ?1",
    [SQ_JR_REPLY] = "SELECT response, tokens_in, tokens_out, cost_usd, rowid FROM llm_journal WHERE key = ?1",
    /* a window read ahead (journal_ahead.h): the entries from a row on */
    [SQ_JR_AHEAD] =
        "SELECT key, response, tokens_in, tokens_out, cost_usd, rowid FROM llm_journal WHERE rowid >= ?1 "
        "ORDER BY rowid LIMIT ?2",
    [SQ_JR_HIT] = "UPDATE llm_journal SET hits = hits + ?2 WHERE key = ?1",
    [SQ_JR_HIT_ROW] = "UPDATE llm_journal SET hits = hits + ?2 WHERE rowid = ?3 AND key = ?1",
    [SQ_JR_PRUNE] = "DELETE FROM llm_journal WHERE created_ms < ?1",
    [SQ_JH_INSERT] =
        "INSERT INTO llm_journal_hits (hits, saved_usd, entries, counts) VALUES (?1, ?2, ?3, ?4)",
    [SQ_JH_LIST] = "SELECT id, counts, saved_usd FROM llm_journal_hits ORDER BY id",
    [SQ_JH_CLEAR] = "DELETE FROM llm_journal_hits WHERE id = ?1",
    /* the journal's last rowid for its size: count(*) would read it all */
    [SQ_JH_SIZE] = "SELECT coalesce(sum(entries), 0), (SELECT coalesce(max(rowid), 0) FROM llm_journal) "
                   "FROM llm_journal_hits",
    [SQ_STATS_RUNS] =
        "SELECT count(*), coalesce(sum(status = 'running'), 0), coalesce(sum(status = 'paused'), 0), "
        "coalesce(sum(status = 'failed'), 0), coalesce(sum(status = 'completed'), 0), "
        "coalesce(sum(recoveries), 0) FROM runs",
    [SQ_STATS_CPS] = "SELECT count(*), coalesce(avg(duration_ms), 0.0), coalesce(max(duration_ms), 0.0) "
                     "FROM checkpoints",
    /* the hits folded into the entries, and those in the log */
    [SQ_STATS_JOURNAL] = "SELECT count(*), coalesce(sum(hits), 0) + (SELECT coalesce(sum(hits), 0) FROM "
                         "llm_journal_hits), coalesce(sum(cost_usd * hits), 0.0) + (SELECT "
                         "coalesce(sum(saved_usd), 0.0) FROM llm_journal_hits) FROM llm_journal",
    [SQ_STATS_SIZE] = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
    /* no row for a run that is not there: the caller hears "no such run" */
    [SQ_LIVE_PUT] = "INSERT INTO run_live (run_id, updated_ms, figures) SELECT ?1, ?2, ?3 "
                    "WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1) ON CONFLICT (run_id) DO UPDATE SET "
                    "updated_ms = excluded.updated_ms, figures = excluded.figures",
    [SQ_LIVE_GET] = "SELECT figures, updated_ms FROM run_live WHERE run_id = ?1",
    [SQ_EV_PAGE] = SQ_EV_PAGE_SELECT " LIMIT ?4",
    [SQ_EV_PAGE_DESC] = SQ_EV_PAGE_SELECT " DESC LIMIT ?4",
    [SQ_ERR_PAGE] = "SELECT " SQ_RES_COLS " FROM results WHERE run_id = ?1 AND seq > ?2 "
                    "AND error IS NOT NULL ORDER BY seq LIMIT ?3",
    /* results in chunks (schema 5; see "results in chunks" below) */
    [SQ_RCH_INSERT] =
        "INSERT INTO result_chunks (run_id, first_seq, last_seq, checkpoint_seq, n, data, format) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [SQ_RCH_LIST] = "SELECT " SQ_RCH_COLS " FROM result_chunks WHERE run_id = ?1 ORDER BY first_seq",
    [SQ_RCH_OVERLAP] = "SELECT " SQ_RCH_COLS ", checkpoint_seq FROM result_chunks "
                       "WHERE run_id = ?1 AND first_seq <= ?3 AND last_seq >= ?2 LIMIT 1",
    [SQ_RCH_DELETE] = "DELETE FROM result_chunks WHERE run_id = ?1 AND first_seq = ?2",
    [SQ_RCH_DELETE_AFTER] = "DELETE FROM result_chunks WHERE run_id = ?1 AND checkpoint_seq > ?2",
    /* chunks never overlap, so the one that starts last ends last */
    [SQ_RES_MAX_SEQ] = "SELECT max(coalesce((SELECT max(seq) FROM results WHERE run_id = ?1), 0), "
                       "coalesce((SELECT last_seq FROM result_chunks WHERE run_id = ?1 "
                       "ORDER BY first_seq DESC LIMIT 1), 0))",
    /* SQ_RUN_UPDATE but the status, then the status only where it
     * changed: setting a column rewrites its index entry (runs'
     * identity_status) even to the same value, one more page logged a
     * checkpoint */
    [SQ_RUN_UPDATE_KEEP] =
        "UPDATE runs SET error = ?10, owner_pid = ?13, owner_host = ?11, "
        "heartbeat_ms = ?14, finished_ms = ?17, rows_done = ?18, rows_ok = ?19, rows_failed = ?20, "
        "rows_dropped = ?21, rows_defaulted = ?22, llm_calls = ?23, tokens_in = ?24, "
        "tokens_out = ?25, cost_usd = ?26, recoveries = ?27, updated_ms = ?16 WHERE id = ?1",
    [SQ_RUN_STATUS] = "UPDATE runs SET status = ?2 WHERE id = ?1 AND status IS NOT ?2",
};

/* ---- errors ---------------------------------------------------------- */

static int sq_vfail(struct sq_store *st, const char *fmt, va_list ap)
{
    char what[256];
    vsnprintf(what, sizeof what, fmt, ap);
    int rc = sqlite3_errcode(st->db) & 0xff;
    const char *msg = sqlite3_errmsg(st->db);
    if (rc == SQLITE_BUSY)
        msg = SQ_LOCKED_MSG;
    snprintf(st->base.err, sizeof st->base.err, "%s: %s: %s", st->path, what, msg);
    return -1;
}

/* Records "PATH: <what>: <sqlite's message>" in st->base.err and returns
 * -1. Call it before anything else touches the connection (a ROLLBACK
 * would replace the message). */
static int sq_fail(struct sq_store *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sq_fail(struct sq_store *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sq_vfail(st, fmt, ap);
    va_end(ap);
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

/* One parameter of a statement: text (NUL-ended, or n bytes), an
 * integer, a double, or a blob of n bytes (a NULL pointer binds SQL NULL,
 * as it does for text). Written with SQ_TEXT, SQ_INT, ... inside SQ_ARGS,
 * so the compiler checks each value against its kind; kind 0 ends a
 * list. */
struct sq_arg {
    char kind; /* 't' text, 's' text of n bytes, 'i' integer, 'd' double, 'b' blob */
    size_t n;
    union {
        const char *t;
        const void *b;
        int64_t i;
        double d;
    } v;
};
/* clang-format off */
#define SQ_TEXT(x) {.kind = 't', .v.t = (x)}
#define SQ_TEXTN(x, len) {.kind = 's', .n = (len), .v.t = (x)}
#define SQ_INT(x) {.kind = 'i', .v.i = (x)}
#define SQ_REAL(x) {.kind = 'd', .v.d = (x)}
#define SQ_BLOB(x, len) {.kind = 'b', .n = (len), .v.b = (x)}
/* The parameters ?1, ?2, ... of a statement, in order. */
#define SQ_ARGS(...) ((const struct sq_arg[]){__VA_ARGS__, {0}})
/* clang-format on */

static const struct sq_arg sq_noargs[] = {{0}};

/* Binds a[0], a[1], ... to s's parameters 1, 2, ..., text and blobs
 * without a copy (SQLITE_STATIC: sq_done drops them before the caller's
 * pointers go). 0, or -1 at the first that failed, the database's message
 * saying why. */
static int sq_bind(sqlite3_stmt *s, const struct sq_arg *a)
{
    for (int i = 1; a->kind != 0; a++, i++) {
        int rc = SQLITE_MISUSE;
        switch (a->kind) {
        case 't':
            rc = sqlite3_bind_text(s, i, a->v.t, -1, SQLITE_STATIC);
            break;
        case 's':
            rc = sqlite3_bind_text64(s, i, a->v.t, a->n, SQLITE_STATIC, SQLITE_UTF8);
            break;
        case 'i':
            rc = sqlite3_bind_int64(s, i, a->v.i);
            break;
        case 'd':
            rc = sqlite3_bind_double(s, i, a->v.d);
            break;
        case 'b':
            rc = sqlite3_bind_blob64(s, i, a->v.b, a->n, SQLITE_STATIC);
            break;
        }
        if (rc != SQLITE_OK)
            return -1;
    }
    return 0;
}

/* Binds a to s and takes the first step. SQLITE_ROW with s on its first
 * row (the caller reads it, then calls sq_done), SQLITE_DONE with s reset
 * (sqlite3_changes64 then tells what a write changed), or -1 with s reset
 * and st->err "<what>: <reason>": what is fmt's text for a failed bind,
 * and for a failed step too unless step_what (a shorter wording some
 * operations use) is not NULL. The text is formatted only on failure. */
static int sq_start(struct sq_store *st, sqlite3_stmt *s, const struct sq_arg *a, const char *step_what,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int sq_start(struct sq_store *st, sqlite3_stmt *s, const struct sq_arg *a, const char *step_what,
                    const char *fmt, ...)
{
    int bound = sq_bind(s, a) == 0;
    int rc = bound ? sqlite3_step(s) : SQLITE_ERROR;
    if (rc == SQLITE_ROW)
        return rc;
    if (rc != SQLITE_DONE) {
        va_list ap;
        va_start(ap, fmt);
        if (bound && step_what != NULL)
            sq_fail(st, "%s", step_what);
        else
            sq_vfail(st, fmt, ap);
        va_end(ap);
        rc = -1;
    }
    sq_done(s);
    return rc;
}

/* Runs statement which (no rows), which changes the row of one run: 0, or
 * -1 with st->err set as sq_start's, or "<what>: no such run" when it
 * changed none. fmt has one %s, the run's id. */
static int sq_update_run(struct sq_store *st, enum sq_stmt which, const struct sq_arg *a,
                         const char *step_what, const char *fmt, const char *id)
    __attribute__((format(printf, 5, 0)));
static int sq_update_run(struct sq_store *st, enum sq_stmt which, const struct sq_arg *a,
                         const char *step_what, const char *fmt, const char *id)
{
    if (sq_start(st, st->stmt[which], a, step_what, fmt, id) < 0)
        return -1;
    if (sqlite3_changes64(st->db) == 1)
        return 0;
    char what[400]; /* orch_store_fail's size: the same text where it cuts a long id */
    snprintf(what, sizeof what, fmt, id);
    return orch_store_fail(&st->base, "%s: no such run", what);
}

/* sq_start for a query of one integer (a count, a max): the value of its
 * row, or -1 with st->err set (no row is a failure). Resets s. */
static int64_t sq_get_int(struct sq_store *st, sqlite3_stmt *s, const struct sq_arg *a, const char *what)
{
    int rc = sq_start(st, s, a, NULL, "%s", what);
    if (rc != SQLITE_ROW)
        return rc < 0 ? -1 : sq_fail(st, "%s", what);
    int64_t v = sqlite3_column_int64(s, 0);
    sq_done(s);
    return v;
}

static int sq_begin(struct sq_store *st, const char *what)
{
    return sq_start(st, st->stmt[SQ_BEGIN], sq_noargs, NULL, "%s", what) < 0 ? -1 : 0;
}

static int sq_commit(struct sq_store *st, const char *what)
{
    return sq_start(st, st->stmt[SQ_COMMIT], sq_noargs, NULL, "%s", what) < 0 ? -1 : 0;
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

/* Where column col of a row goes in a struct: kind 't' a heap copy of its
 * text into a char * (NULL for SQL NULL), 'i' an int64_t, 'd' a double,
 * 'S' an enum orch_run_status from its name. Tables of them end with kind
 * 0. */
struct sq_col {
    int col;
    char kind;
    size_t off;
};
/* clang-format off */
#define SQ_COL(type, col, kind, field) {(col), (kind), offsetof(type, field)}
/* clang-format on */

/* Frees the text fields cols reads into the struct at row, and NULLs them. */
static void sq_cols_free(const struct sq_col *cols, void *row)
{
    for (const struct sq_col *c = cols; c->kind != 0; c++) {
        if (c->kind == 't') {
            char **field = (char **)(void *)((char *)row + c->off);
            free(*field);
            *field = NULL;
        }
    }
}

/* Reads the columns of cols from the row s is on into the struct at out
 * (its fields that cols does not name are left as they are). 0, or -1
 * when a copy could not be made (its text fields then freed and NULL). */
static int sq_cols_read(sqlite3_stmt *s, const struct sq_col *cols, void *out)
{
    int oom = 0;
    for (const struct sq_col *c = cols; c->kind != 0; c++) {
        void *field = (char *)out + c->off;
        int status;
        switch (c->kind) {
        case 't':
            *(char **)field = sq_col_dup(s, c->col, &oom);
            break;
        case 'i':
            *(int64_t *)field = sqlite3_column_int64(s, c->col);
            break;
        case 'd':
            *(double *)field = sqlite3_column_double(s, c->col);
            break;
        case 'S':
            status = orch_run_status_parse((const char *)sqlite3_column_text(s, c->col));
            /* The CHECK constraint keeps other values out; a hand-edited
             * row reads as failed rather than as something resumable. */
            *(enum orch_run_status *)field = status >= 0 ? (enum orch_run_status)status : ORCH_RUN_FAILED;
            break;
        }
    }
    if (oom)
        sq_cols_free(cols, out);
    return oom ? -1 : 0;
}

/* How sq_each hands a row to the caller's callback. With cols, the row is
 * read into row first and its text freed after give; give calls the
 * callback in cb (and without cols reads the row itself). give returns 0
 * to go on, 1 to stop, -1 when memory ran out. */
struct sq_visit {
    const struct sq_col *cols;
    void *row;
    int (*give)(struct sq_visit *v, sqlite3_stmt *s);
    union {
        orch_run_cb run;
        orch_event_cb event;
        orch_result_cb result;
        orch_state_cb state;
        orch_lease_cb lease;
        orch_packed_cb packed;
    } cb;
    void *ud;
    int ret; /* what sq_each returns when give stops it: 0 unless give sets it */
};

/* Binds a to s and hands each row to v until the rows run out or v stops.
 * 0 (or what v set), or -1 with st->err "<what>: <reason>" ("<what>: out
 * of memory" when v ran out), what being fmt with id for its %s, if it
 * has one. Resets s. */
static int sq_each(struct sq_store *st, sqlite3_stmt *s, const struct sq_arg *a, struct sq_visit *v,
                   const char *fmt, const char *id) __attribute__((format(printf, 5, 0)));
static int sq_each(struct sq_store *st, sqlite3_stmt *s, const struct sq_arg *a, struct sq_visit *v,
                   const char *fmt, const char *id)
{
    char what[400];
    snprintf(what, sizeof what, fmt, id);
    int rc = sq_start(st, s, a, NULL, "%s", what);
    v->ret = rc < 0 ? -1 : 0;
    while (rc == SQLITE_ROW) {
        int stop = v->cols != NULL && sq_cols_read(s, v->cols, v->row) != 0 ? -1 : v->give(v, s);
        if (v->cols != NULL)
            sq_cols_free(v->cols, v->row);
        if (stop < 0)
            v->ret = orch_store_fail(&st->base, "%s: out of memory", what);
        if (stop != 0)
            break;
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            v->ret = sq_fail(st, "%s", what);
    }
    sq_done(s);
    return v->ret;
}

/* ---- runs ------------------------------------------------------------- */

/* The columns of SQ_RUN_SELECT, in SQ_RUN_COLS's order and the checkpoint
 * count after them; but for the count, also the parameters of
 * SQ_RUN_INSERT and SQ_RUN_UPDATE (column i is parameter i + 1). */
#define SQ_R(col, kind, field) SQ_COL(struct orch_run, col, kind, field)
/* clang-format off */
static const struct sq_col sq_run_cols[] = {
    SQ_R(0, 't', id), SQ_R(1, 't', name), SQ_R(2, 't', identity),
    SQ_R(3, 't', workflow_path), SQ_R(4, 't', workflow_hash), SQ_R(5, 't', input),
    SQ_R(6, 't', input_fp), SQ_R(7, 't', params), SQ_R(8, 't', output),
    SQ_R(9, 't', error), SQ_R(10, 't', owner_host), SQ_R(11, 'S', status),
    SQ_R(12, 'i', owner_pid), SQ_R(13, 'i', heartbeat_ms), SQ_R(14, 'i', created_ms),
    SQ_R(15, 'i', updated_ms), SQ_R(16, 'i', finished_ms), SQ_R(17, 'i', rows_done),
    SQ_R(18, 'i', rows_ok), SQ_R(19, 'i', rows_failed), SQ_R(20, 'i', rows_dropped),
    SQ_R(21, 'i', rows_defaulted), SQ_R(22, 'i', llm_calls), SQ_R(23, 'i', tokens_in),
    SQ_R(24, 'i', tokens_out), SQ_R(25, 'd', cost_usd), SQ_R(26, 'i', recoveries),
    SQ_R(27, 'i', checkpoints), {0},
};
/* clang-format on */
#undef SQ_R
#define SQ_RUN_NPARAMS 27
#define SQ_RUN_CREATED_COL 14
#define SQ_RUN_UPDATED_COL 15

/* The parameters of SQ_RUN_INSERT and SQ_RUN_UPDATE from r (a[] points
 * into r), with its created_ms and updated_ms replaced. */
static void sq_run_args(const struct orch_run *r, int64_t created, int64_t updated,
                        struct sq_arg a[SQ_RUN_NPARAMS + 1])
{
    memset(a, 0, (SQ_RUN_NPARAMS + 1) * sizeof *a);
    for (const struct sq_col *c = sq_run_cols; c->kind != 0; c++) {
        if (c->col >= SQ_RUN_NPARAMS)
            continue; /* the checkpoint count is no parameter */
        const void *field = (const char *)r + c->off;
        struct sq_arg *p = &a[c->col];
        p->kind = c->kind == 'd' ? 'd' : c->kind == 'i' ? 'i' : 't';
        if (c->kind == 't')
            p->v.t = *(char *const *)field;
        else if (c->kind == 'S')
            p->v.t = orch_run_status_name(r->status);
        else if (c->kind == 'i')
            p->v.i = *(const int64_t *)field;
        else
            p->v.d = *(const double *)field;
    }
    a[SQ_RUN_CREATED_COL].v.i = created;
    a[SQ_RUN_UPDATED_COL].v.i = updated;
}

/* Runs SQ_RUN_UPDATE for r; a run that does not exist is an error. */
static int sq_run_update_stmt(struct sq_store *st, const struct orch_run *r)
{
    struct sq_arg a[SQ_RUN_NPARAMS + 1];
    sq_run_args(r, r->created_ms, orch_store_now_ms(), a);
    return sq_update_run(st, SQ_RUN_UPDATE, a, "cannot update run", "cannot update run %s", r->id);
}

/* sq_run_update_stmt inside a transaction (a checkpoint's): the same
 * row in the end, but the status index is written only when the status
 * changed. 0, or -1 with st->err set as sq_run_update_stmt's. */
static int sq_run_update_in_tx(struct sq_store *st, const struct orch_run *r)
{
    struct sq_arg a[SQ_RUN_NPARAMS + 1];
    sq_run_args(r, r->created_ms, orch_store_now_ms(), a);
    if (sq_update_run(st, SQ_RUN_UPDATE_KEEP, a, "cannot update run", "cannot update run %s", r->id) != 0)
        return -1;
    return sq_start(st, st->stmt[SQ_RUN_STATUS],
                    SQ_ARGS(SQ_TEXT(r->id), SQ_TEXT(orch_run_status_name(r->status))), "cannot update run",
                    "cannot update run %s", r->id) < 0
               ? -1
               : 0;
}

static int sq_run_create(struct orch_store *base, const struct orch_run *r)
{
    struct sq_store *st = sq_of(base);
    int64_t created = r->created_ms != 0 ? r->created_ms : orch_store_now_ms();
    struct sq_arg a[SQ_RUN_NPARAMS + 1];
    sq_run_args(r, created, r->updated_ms != 0 ? r->updated_ms : created, a);
    return sq_start(st, st->stmt[SQ_RUN_INSERT], a, NULL, "cannot create run %s",
                    r->id != NULL ? r->id : "(null)") < 0
               ? -1
               : 0;
}

/* Runs SQ_RUN_SELECT statement which for key, expected to give at most
 * one row: 1 with out filled, 0 none, -1 error (st->err from bind_what,
 * or step_what when the step failed or memory ran out). */
static int sq_run_one(struct sq_store *st, enum sq_stmt which, const char *key, struct orch_run *out,
                      const char *step_what, const char *bind_what)
{
    sqlite3_stmt *s = st->stmt[which];
    int rc = sq_start(st, s, SQ_ARGS(SQ_TEXT(key)), step_what, "%s", bind_what);
    if (rc != SQLITE_ROW)
        return rc < 0 ? -1 : 0;
    int ret = sq_cols_read(s, sq_run_cols, out) == 0
                  ? 1
                  : orch_store_fail(&st->base, "%s: out of memory", step_what);
    sq_done(s);
    return ret;
}

static int sq_run_get(struct orch_store *base, const char *id, struct orch_run *out)
{
    char what[300];
    snprintf(what, sizeof what, "cannot read run %s", id);
    return sq_run_one(sq_of(base), SQ_RUN_GET, id, out, "cannot read run", what);
}

static int sq_run_find_unfinished(struct orch_store *base, const char *identity, struct orch_run *out)
{
    return sq_run_one(sq_of(base), SQ_RUN_FIND, identity, out, "cannot look up unfinished runs",
                      "cannot look up unfinished runs");
}

static int sq_run_update(struct orch_store *base, const struct orch_run *r)
{
    return sq_run_update_stmt(sq_of(base), r);
}

static int sq_run_claim(struct orch_store *base, const char *id, int64_t pid, const char *host,
                        int64_t now_ms, int64_t expect_pid, int64_t expect_heartbeat_ms)
{
    struct sq_store *st = sq_of(base);
    if (sq_start(st, st->stmt[SQ_RUN_CLAIM],
                 SQ_ARGS(SQ_TEXT(id), SQ_INT(pid), SQ_TEXT(host), SQ_INT(now_ms), SQ_INT(expect_pid),
                         SQ_INT(expect_heartbeat_ms)),
                 "cannot claim run", "cannot claim run %s", id) < 0)
        return -1;
    return sqlite3_changes64(st->db) == 1;
}

static int sq_run_heartbeat(struct orch_store *base, const char *id, int64_t now_ms)
{
    return sq_update_run(sq_of(base), SQ_RUN_HEARTBEAT, SQ_ARGS(SQ_TEXT(id), SQ_INT(now_ms)),
                         "cannot record a heartbeat", "cannot record the heartbeat of run %s", id);
}

/* Deletes a run and everything stored for it, in one transaction. 1, 0
 * when there is no such run, or -1. */
static int sq_run_delete(struct orch_store *base, const char *id)
{
    struct sq_store *st = sq_of(base);
    if (sq_start(st, st->stmt[SQ_RUN_DELETE], SQ_ARGS(SQ_TEXT(id)), "cannot delete a run",
                 "cannot delete run %s", id) < 0)
        return -1;
    return sqlite3_changes64(st->db) > 0;
}

/* Deletes the journal entries created before before_ms; *removed gets how
 * many. 0 or -1. */
static int sq_journal_prune(struct orch_store *base, int64_t before_ms, int64_t *removed)
{
    struct sq_store *st = sq_of(base);
    sq_journal_hits_fold(st); /* the counts of entries about to go go with them */
    if (sq_start(st, st->stmt[SQ_JR_PRUNE], SQ_ARGS(SQ_INT(before_ms)), NULL, "cannot prune the journal") < 0)
        return -1;
    *removed = sqlite3_changes64(st->db);
    return 0;
}

/* Rewrites the file without its free pages. 0 or -1. */
static int sq_vacuum(struct orch_store *base)
{
    struct sq_store *st = sq_of(base);
    sq_journal_hits_fold(st); /* the log's rows name entries by rowid, which VACUUM may change */
    /* in WAL mode the rewritten file lands in the log first: fold it back */
    int rc = sqlite3_exec(st->db, "VACUUM; PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return sq_fail(st, "cannot vacuum the store");
    return 0;
}

static int sq_give_run(struct sq_visit *v, sqlite3_stmt *s)
{
    (void)s;
    return v->cb.run(v->ud, v->row) != 0;
}

/* Calls cb for each matching run, newest first. cb must not call
 * run_list on the same store (the statement is in use). */
static int sq_run_list(struct orch_store *base, const struct orch_run_filter *f, orch_run_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    struct orch_run_filter none = {0};
    if (f == NULL)
        f = &none;
    struct orch_run r;
    struct sq_visit v = {.cols = sq_run_cols, .row = &r, .give = sq_give_run, .cb.run = cb, .ud = ud};
    return sq_each(st, st->stmt[SQ_RUN_LIST],
                   SQ_ARGS(SQ_TEXT(f->status), SQ_TEXT(f->name), SQ_INT(f->since_ms), SQ_INT(f->until_ms)),
                   &v, "cannot list runs", NULL);
}

/* ---- checkpoints ------------------------------------------------------ */

/* The columns of SQ_CP_COLS but the memento (9) and its raw length (10),
 * into a struct orch_checkpoint_packed. */
#define SQ_C(col, kind, field) SQ_COL(struct orch_checkpoint_packed, col, kind, c.field)
/* clang-format off */
static const struct sq_col sq_checkpoint_cols[] = {
    SQ_C(0, 'i', seq), SQ_C(1, 't', name), SQ_C(2, 't', reason),
    SQ_C(3, 'i', created_ms), SQ_C(4, 'i', input_offset), SQ_C(5, 'i', input_line),
    SQ_C(6, 'i', input_index), SQ_C(7, 'i', output_offset), SQ_C(8, 'i', errors_offset),
    SQ_C(11, 't', checksum), SQ_C(12, 'i', bytes), SQ_C(13, 'd', duration_ms), {0},
};
/* clang-format on */
#undef SQ_C

/* Fills p (zeroed first; heap strings and the stored memento frame it
 * then owns) from the current row of an SQ_CP_COLS statement. 0, or -1
 * when memory runs out (p cleared). */
static int sq_checkpoint_row(sqlite3_stmt *s, struct orch_checkpoint_packed *p)
{
    struct orch_checkpoint *out = &p->c;
    memset(p, 0, sizeof *p);
    int oom = sq_cols_read(s, sq_checkpoint_cols, p);
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

/* Inserts the nres results of a checkpoint numbered seq. 0, or -1 with
 * st->err set (the caller rolls back). */
static int sq_results_insert(struct sq_store *st, const char *run_id, int64_t seq,
                             const struct orch_result *res, size_t nres)
{
    sqlite3_stmt *s = st->stmt[SQ_RES_INSERT];
    for (size_t i = 0; i < nres; i++) {
        const struct orch_result *r = &res[i];
        if (sq_start(st, s,
                     SQ_ARGS(SQ_TEXT(run_id), SQ_INT(r->seq), SQ_TEXT(r->key), SQ_TEXT(r->status),
                             SQ_TEXT(r->error), SQ_BLOB(r->data, r->data_len), SQ_INT(seq)),
                     NULL, "cannot store result %lld of run %s", (long long)r->seq, run_id) < 0)
            return -1;
    }
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
 * A chunk's results are packed by result_pack.c in the format its format
 * column names (schema 7; the chunks of schemas 5 and 6 are
 * ORCH_PACK_FIXED, later ones ORCH_PACK_KEYED); new chunks are
 * ORCH_PACK_COMPACT. Text fields keep their NUL, so a reader hands out
 * pointers into the blob as the row table's reader does (a counted key
 * points into the cursor, until its next result). */
struct sq_chunk_cursor {
    struct orch_results_cursor rc;
    int64_t first; /* the chunk's first_seq, for messages */
};

/* Points c at the chunk in the current row of s (columns: first_seq, n,
 * data, format at 0, 1, 2, 3). 0, or -1 when the row cannot be a chunk. */
static int sq_chunk_open(sqlite3_stmt *s, struct sq_chunk_cursor *c)
{
    c->first = sqlite3_column_int64(s, 0);
    const void *blob = sqlite3_column_blob(s, 2);
    return orch_results_open(&c->rc, (int)sqlite3_column_int64(s, 3), blob,
                             (size_t)sqlite3_column_bytes(s, 2), sqlite3_column_int64(s, 1));
}

static int sq_chunk_damaged(struct sq_store *st, const char *run_id, int64_t first)
{
    return orch_store_fail(&st->base,
                           "the stored results of run %s from row %lld are damaged: restore the run to an "
                           "earlier checkpoint (orch checkpoints %s, orch restore %s SEQ) and resume it",
                           run_id, (long long)first, run_id, run_id);
}

/* 1 when seq first is past every result of the run already stored, 0
 * when not; -1 with st->err set. */
static int sq_extends(struct sq_store *st, const char *run_id, int64_t first)
{
    char what[300];
    snprintf(what, sizeof what, "cannot store the results of run %s", run_id);
    int64_t stored = sq_get_int(st, st->stmt[SQ_RES_MAX_SEQ], SQ_ARGS(SQ_TEXT(run_id)), what);
    if (stored < 0)
        return -1;
    return first > stored;
}

/* 1 when res can be stored as one chunk: each result has a status, seqs
 * strictly increase from 1 (orch_results_packable), and the first is past
 * every result of the run already stored. 0 when not; -1 with st->err
 * set. */
static int sq_chunk_fits(struct sq_store *st, const char *run_id, const struct orch_result *res, size_t nres)
{
    if (!orch_results_packable(res, nres))
        return 0;
    return sq_extends(st, run_id, res[0].seq);
}

/* Stores res[0..nres) as one chunk of checkpoint seq. 0, or -1 with
 * st->err set (the caller rolls back). */
static int sq_chunk_insert(struct sq_store *st, const char *run_id, int64_t seq,
                           const struct orch_result *res, size_t nres)
{
    size_t len = 0;
    unsigned char *buf = orch_results_pack(ORCH_PACK_COMPACT, res, nres, &len);
    if (buf == NULL)
        return orch_store_fail(&st->base, "cannot store the results of run %s: out of memory", run_id);
    int64_t first = res[0].seq;
    int64_t last = res[nres - 1].seq;
    int64_t n = sq_start(st, st->stmt[SQ_RCH_INSERT],
                         SQ_ARGS(SQ_TEXT(run_id), SQ_INT(first), SQ_INT(last), SQ_INT(seq),
                                 SQ_INT((int64_t)nres), SQ_BLOB(buf, len), SQ_INT(ORCH_PACK_COMPACT)),
                         NULL, "cannot store results %lld to %lld of run %s", (long long)first,
                         (long long)last, run_id);
    free(buf);
    return n < 0 ? -1 : 0;
}

/* Moves the chunk the row s is on (an SQ_RCH_OVERLAP row) back into the
 * results table, each row with the chunk's checkpoint_seq; *first gets
 * the chunk's first seq. 0, -1 with st->err set, or -2 when the chunk is
 * damaged. Resets s. */
static int sq_chunk_move(struct sq_store *st, const char *run_id, sqlite3_stmt *s, int64_t *first)
{
    struct sq_chunk_cursor c;
    int64_t cseq = sqlite3_column_int64(s, 4);
    struct orch_result *rows = NULL;
    int ret = sq_chunk_open(s, &c) != 0 ? -2 : 0;
    *first = c.first;
    size_t n = (size_t)c.rc.left;
    if (ret == 0) { /* the chunk as a list: a merge with no other results */
        struct orch_results_chunk chunk = {c.rc.format, c.rc.p,  (size_t)(c.rc.end - c.rc.p),
                                           c.rc.left,   c.first, 0};
        int rc = orch_results_merge(&chunk, NULL, 0, &rows);
        ret = rc == -1 ? orch_store_fail(&st->base,
                                         "cannot rewrite the stored results of run %s: out of memory", run_id)
                       : rc;
    }
    /* rows point into s's blob: insert them before s moves on */
    if (ret == 0)
        ret = sq_results_insert(st, run_id, cseq, rows, n);
    free(rows);
    sq_done(s);
    return ret;
}

/* Moves the chunks of run_id that overlap seqs lo..hi back into the
 * results table (each row with its chunk's checkpoint_seq) and deletes
 * them, one chunk at a time (a row is never deleted under a running
 * SELECT of its table). 0, or -1 with st->err set (the caller rolls
 * back). */
static int sq_chunks_unpack(struct sq_store *st, const char *run_id, int64_t lo, int64_t hi)
{
    for (;;) {
        int rc = sq_start(st, st->stmt[SQ_RCH_OVERLAP], SQ_ARGS(SQ_TEXT(run_id), SQ_INT(lo), SQ_INT(hi)),
                          NULL, "cannot rewrite the stored results of run %s", run_id);
        if (rc != SQLITE_ROW)
            return rc < 0 ? -1 : 0;
        int64_t first = 0;
        int ret = sq_chunk_move(st, run_id, st->stmt[SQ_RCH_OVERLAP], &first);
        if (ret == -2)
            return sq_chunk_damaged(st, run_id, first);
        if (ret != 0)
            return -1;
        if (sq_start(st, st->stmt[SQ_RCH_DELETE], SQ_ARGS(SQ_TEXT(run_id), SQ_INT(first)), NULL,
                     "cannot rewrite the stored results of run %s", run_id) < 0)
            return -1;
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
        return orch_store_fail(&st->base, "cannot store the results of run %s: out of memory", run_id);
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

/* Inserts a chunk packed as rows settled (store.h) as it is: the row
 * sq_chunk_insert would have made of the same results. 0, or -1 with
 * st->err set (the caller rolls back). */
static int sq_chunk_insert_packed(struct sq_store *st, const char *run_id, int64_t seq,
                                  const struct orch_results_chunk *chunk)
{
    int64_t n = sq_start(st, st->stmt[SQ_RCH_INSERT],
                         SQ_ARGS(SQ_TEXT(run_id), SQ_INT(chunk->first), SQ_INT(chunk->last), SQ_INT(seq),
                                 SQ_INT(chunk->n), SQ_BLOB(chunk->blob, chunk->len), SQ_INT(chunk->format)),
                         NULL, "cannot store results %lld to %lld of run %s", (long long)chunk->first,
                         (long long)chunk->last, run_id);
    return n < 0 ? -1 : 0;
}

/* Stores a checkpoint's results given as a list: one chunk when they
 * extend the run, row by row otherwise. 0, or -1 with st->err set (the
 * caller rolls back). */
static int sq_results_write_list(struct sq_store *st, const char *run_id, int64_t seq,
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

/* Stores a checkpoint's results, chunk (may be NULL) and res: when they
 * extend the run, the chunk as it is and res (the rows with an error)
 * in the per-row table, as sq_chunk_insert_split stores the same list;
 * otherwise merged into one list and stored as a list. 0, or -1 with
 * st->err set (the caller rolls back). */
static int sq_results_write(struct sq_store *st, const char *run_id, int64_t seq,
                            const struct orch_results_chunk *chunk, const struct orch_result *res,
                            size_t nres)
{
    if (chunk == NULL || chunk->n == 0)
        return sq_results_write_list(st, run_id, seq, res, nres);
    int64_t least = nres > 0 && res[0].seq < chunk->first ? res[0].seq : chunk->first;
    int fits = nres == 0 || orch_results_packable(res, nres);
    if (fits)
        fits = sq_extends(st, run_id, least);
    if (fits < 0)
        return -1;
    if (fits)
        return sq_chunk_insert_packed(st, run_id, seq, chunk) != 0
                   ? -1
                   : sq_results_insert(st, run_id, seq, res, nres);
    struct orch_result *all = NULL;
    int rc = orch_results_merge(chunk, res, nres, &all);
    if (rc != 0)
        return orch_store_fail(&st->base, "cannot store the results of run %s: %s", run_id,
                               rc == -1 ? "out of memory" : "its packed results are damaged");
    rc = sq_results_write_list(st, run_id, seq, all, (size_t)chunk->n + nres);
    free(all);
    return rc;
}

/* Upserts the nstate state entries, deleting those whose value is NULL.
 * 0, or -1 with st->err set (the caller rolls back). */
static int sq_state_apply(struct sq_store *st, const char *run_id, const struct orch_kv *state, size_t nstate)
{
    for (size_t i = 0; i < nstate; i++) {
        const struct orch_kv *kv = &state[i];
        int del = kv->value == NULL;
        struct sq_arg a[] = {SQ_TEXT(run_id), SQ_TEXT(kv->key), SQ_TEXTN(kv->value, kv->value_len), {0}};
        if (del)
            a[2].kind = 0; /* SQ_STATE_DELETE has two parameters */
        if (sq_start(st, st->stmt[del ? SQ_STATE_DELETE : SQ_STATE_UPSERT], a, NULL,
                     "cannot store state key %s of run %s", kv->key != NULL ? kv->key : "(null)", run_id) < 0)
            return -1;
    }
    return 0;
}

/* Numbers the next checkpoint of run_id: max + 1, read inside the write
 * lock so two writers cannot collide. The seq, or -1 with st->err set. */
static int64_t sq_checkpoint_next_seq(struct sq_store *st, const char *run_id)
{
    char what[300];
    snprintf(what, sizeof what, "cannot number a checkpoint of run %s", run_id);
    return sq_get_int(st, st->stmt[SQ_CP_NEXT_SEQ], SQ_ARGS(SQ_TEXT(run_id)), what);
}

/* Inserts the checkpoint row itself; duration_ms is measured from t0.
 * 0, or -1 with st->err set (the caller rolls back). */
static int sq_checkpoint_insert(struct sq_store *st, const char *run_id,
                                const struct orch_checkpoint_seal *sealed)
{
    const struct orch_checkpoint *c = sealed->c;
    int64_t seq = sealed->seq;
    int64_t n = sq_start(st, st->stmt[SQ_CP_INSERT],
                         SQ_ARGS(SQ_TEXT(run_id), SQ_INT(seq), SQ_TEXT(c->name), SQ_TEXT(c->reason),
                                 SQ_INT(sealed->created_ms), SQ_INT(c->input_offset), SQ_INT(c->input_line),
                                 SQ_INT(c->input_index), SQ_INT(c->output_offset), SQ_INT(c->errors_offset),
                                 SQ_BLOB(sealed->packed, sealed->packed_len), SQ_INT((int64_t)c->memento_len),
                                 SQ_TEXT(sealed->sum), SQ_INT(sealed->bytes),
                                 SQ_REAL(orch_store_mono_ms() - sealed->t0)),
                         NULL, "cannot store checkpoint %lld of run %s", (long long)seq, run_id);
    return n < 0 ? -1 : 0;
}

/* Writes results, state and the checkpoint in one BEGIN IMMEDIATE
 * transaction, then the run row as run_update does; the checkpoint is
 * sealed once numbered (store_impl.h). The stored duration_ms covers
 * everything but the COMMIT itself. A state entry whose value is NULL is
 * deleted. On failure nothing is written. */
static int sq_checkpoint_write_chunk(struct orch_store *base, const struct orch_run *run,
                                     struct orch_checkpoint_seal *seal,
                                     const struct orch_results_chunk *chunk, const struct orch_result *res,
                                     size_t nres, const struct orch_kv *state, size_t nstate)
{
    struct sq_store *st = sq_of(base);
    const char *run_id = run->id;
    if (sq_begin(st, "cannot start the checkpoint transaction") != 0)
        return -1;
    int64_t seq = sq_checkpoint_next_seq(st, run_id);
    if (seq < 0)
        goto fail;
    if (sq_results_write(st, run_id, seq, chunk, res, nres) != 0)
        goto fail;
    if (sq_state_apply(st, run_id, state, nstate) != 0)
        goto fail;
    if (sq_run_update_in_tx(st, run) != 0)
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

static int sq_checkpoint_write(struct orch_store *base, const struct orch_run *run,
                               struct orch_checkpoint_seal *seal, const struct orch_result *res, size_t nres,
                               const struct orch_kv *state, size_t nstate)
{
    return sq_checkpoint_write_chunk(base, run, seal, NULL, res, nres, state, nstate);
}

/* Reads the row itself (the memento is no column of a table); p's owner
 * is cb: it is not cleared here. */
static int sq_give_checkpoint(struct sq_visit *v, sqlite3_stmt *s)
{
    struct orch_checkpoint_packed p;
    if (sq_checkpoint_row(s, &p) != 0)
        return -1;
    v->ret = v->cb.packed(v->ud, &p);
    return v->ret != 0;
}

/* One checkpoint (seq > 0) or all, newest or oldest first; cb must not
 * scan the checkpoints of the same store. */
static int sq_checkpoint_scan(struct orch_store *base, const char *run_id, int64_t seq, int newest_first,
                              const char *what, orch_packed_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[seq > 0 ? SQ_CP_GET : newest_first ? SQ_CP_NEWEST : SQ_CP_LIST];
    struct sq_arg a[] = {SQ_TEXT(run_id), SQ_INT(seq), {0}};
    if (seq <= 0)
        a[1].kind = 0; /* the statements of all checkpoints have one parameter */
    struct sq_visit v = {.give = sq_give_checkpoint, .cb.packed = cb, .ud = ud};
    return sq_each(st, s, a, &v, "%s", what);
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
        if (sq_start(st, st->stmt[which[i]], SQ_ARGS(SQ_TEXT(run_id), SQ_INT(seq)), NULL,
                     "cannot roll run %s back to checkpoint %lld", run_id, (long long)seq) < 0) {
            sq_abort(st);
            return -1;
        }
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
    while (c->rc.left <= 0) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            return 0;
        if (rc != SQLITE_ROW)
            return sq_fail(st, "cannot list the results of run %s", run_id);
        if (sq_chunk_open(s, c) != 0)
            return sq_chunk_damaged(st, run_id, c->first);
    }
    if (orch_results_next(&c->rc, r) != 0)
        return sq_chunk_damaged(st, run_id, c->first);
    return 1;
}

/* Points r into the row s is on: seq, key, status, error and, when
 * with_data, data (columns 0 to 4 of SQ_RES_LIST and SQ_ERR_PAGE). Valid
 * until s moves. */
static void sq_result_at(sqlite3_stmt *s, int with_data, struct orch_result *r)
{
    memset(r, 0, sizeof *r);
    r->seq = sqlite3_column_int64(s, 0);
    r->key = (const char *)sqlite3_column_text(s, 1);
    r->status = (const char *)sqlite3_column_text(s, 2);
    r->error = (const char *)sqlite3_column_text(s, 3);
    if (!with_data)
        return;
    r->data = sqlite3_column_blob(s, 4);
    r->data_len = (size_t)sqlite3_column_bytes(s, 4);
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
    const struct sq_arg *a = SQ_ARGS(SQ_TEXT(run_id));
    int ret = 0;
    if (sq_bind(s, a) != 0 || sq_bind(k, a) != 0) {
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
            sq_result_at(s, 1, &r);
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
    int64_t n = sq_start(st, st->stmt[SQ_EV_INSERT],
                         SQ_ARGS(SQ_TEXT(run_id), SQ_INT(orch_store_now_ms()), SQ_TEXT(type), SQ_TEXT(data)),
                         "cannot record an event", "cannot record event %s", type != NULL ? type : "(null)");
    return n < 0 ? -1 : 0;
}

/* Columns id, ts_ms, type, data of SQ_EV_LIST, SQ_EV_PAGE and SQ_EV_PAGE_DESC. */
/* clang-format off */
static const struct sq_col sq_event_cols[] = {
    SQ_COL(struct orch_event, 0, 'i', id), SQ_COL(struct orch_event, 1, 'i', ts_ms),
    SQ_COL(struct orch_event, 2, 't', type), SQ_COL(struct orch_event, 3, 't', data), {0},
};
/* clang-format on */

static int sq_give_event(struct sq_visit *v, sqlite3_stmt *s)
{
    (void)s;
    return v->cb.event(v->ud, v->row) != 0;
}

/* Oldest first; cb must not call event_list on the same store. */
static int sq_event_list(struct orch_store *base, const char *run_id, orch_event_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    struct orch_event e;
    struct sq_visit v = {.cols = sq_event_cols, .row = &e, .give = sq_give_event, .cb.event = cb, .ud = ud};
    return sq_each(st, st->stmt[SQ_EV_LIST], SQ_ARGS(SQ_TEXT(run_id)), &v, "cannot list the events of run %s",
                   run_id);
}

static int sq_give_state(struct sq_visit *v, sqlite3_stmt *s)
{
    const char *key = (const char *)sqlite3_column_text(s, 0);
    const char *value = (const char *)sqlite3_column_text(s, 1);
    return v->cb.state(v->ud, key, value, (size_t)sqlite3_column_bytes(s, 1)) != 0;
}

/* Sorted by key; key and value point into SQLite's row buffer, valid
 * during the call only. */
static int sq_state_list(struct orch_store *base, const char *run_id, orch_state_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    struct sq_visit v = {.give = sq_give_state, .cb.state = cb, .ud = ud};
    return sq_each(st, st->stmt[SQ_STATE_LIST], SQ_ARGS(SQ_TEXT(run_id)), &v,
                   "cannot list the state of run %s", run_id);
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
    /* and the hits counted in memory, read where they are: a stats call
     * writes nothing */
    int64_t hits;
    double saved;
    orch_jhits_sums(&st->hits, &hits, &saved);
    out->journal_hits += hits;
    out->journal_saved_usd += saved;
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
        return orch_store_fail(&st->base, "cannot journal a response: it has no key");
    if (e->response == NULL && e->response_len > 0)
        return orch_store_fail(&st->base, "cannot journal response %s: %zu bytes announced but no data",
                               e->key, e->response_len);
    int64_t created = e->created_ms != 0 ? e->created_ms : orch_store_now_ms();
    /* a NULL pointer would bind SQL NULL and break NOT NULL */
    const void *response = e->response != NULL ? e->response : "";
    int64_t n =
        sq_start(st, st->stmt[SQ_JR_INSERT],
                 SQ_ARGS(SQ_TEXT(e->key), SQ_TEXT(e->run_id), SQ_TEXT(e->provider), SQ_TEXT(e->model),
                         SQ_BLOB(response, e->response_len), SQ_INT(e->tokens_in), SQ_INT(e->tokens_out),
                         SQ_REAL(e->cost_usd), SQ_REAL(e->latency_ms), SQ_INT(created)),
                 "cannot journal an LLM response", "cannot journal response %s", e->key);
    return n < 0 ? -1 : 0;
}

static int sq_journal_get(struct orch_store *base, const char *key, struct orch_journal_owned *out);
static int sq_journal_reply(struct sq_store *st, sqlite3_stmt *s, const char *key,
                            struct orch_journal_owned *out, int64_t *row);

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
        int rc = gets[i].reply ? sq_journal_reply(st, st->stmt[SQ_JR_REPLY], gets[i].key, &gets[i].out, NULL)
                               : sq_journal_get(base, gets[i].key, &gets[i].out);
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

/* The columns of SQ_JR_COLS but the response (4). */
#define SQ_J(col, kind, field) SQ_COL(struct orch_journal_owned, col, kind, field)
/* clang-format off */
static const struct sq_col sq_journal_cols[] = {
    SQ_J(0, 't', key), SQ_J(1, 't', run_id), SQ_J(2, 't', provider), SQ_J(3, 't', model),
    SQ_J(5, 'i', tokens_in), SQ_J(6, 'i', tokens_out), SQ_J(7, 'd', cost_usd), SQ_J(8, 'd', latency_ms),
    SQ_J(9, 'i', created_ms), SQ_J(10, 'i', hits), {0},
};
/* clang-format on */
#undef SQ_J

/* Fills out (zeroed first, heap copies it then owns) from the current row
 * of an SQ_JR_COLS statement. 0, or -1 when memory runs out (out
 * cleared). */
static int sq_journal_row(sqlite3_stmt *s, struct orch_journal_owned *out)
{
    memset(out, 0, sizeof *out);
    int oom = sq_cols_read(s, sq_journal_cols, out);
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
    if (oom) {
        orch_journal_clear(out);
        return -1;
    }
    return 0;
}

/* Writes n hits of key at once, at the row where the lookup found it
 * (row > 0), else by its key: the key's index is then read, and it is
 * when the row holds another key by now (a VACUUM renumbers rows). An
 * entry pruned meanwhile takes none. */
static void sq_hit_write(struct sq_store *st, const char *key, int64_t row, int64_t n)
{
    if (row > 0) {
        sqlite3_stmt *s = st->stmt[SQ_JR_HIT_ROW];
        int done = sq_bind(s, SQ_ARGS(SQ_TEXT(key), SQ_INT(n), SQ_INT(row))) == 0 &&
                   sqlite3_step(s) == SQLITE_DONE && sqlite3_changes(st->db) == 1;
        sq_done(s);
        if (done)
            return;
    }
    sqlite3_stmt *s = st->stmt[SQ_JR_HIT];
    if (sq_bind(s, SQ_ARGS(SQ_TEXT(key), SQ_INT(n))) == 0)
        sqlite3_step(s);
    sq_done(s);
}

/* Writes the counts of h to the entries, sorted by row, the table's
 * order, so neighbours share their pages; clears h. In the caller's
 * transaction. */
static void sq_hits_apply(struct sq_store *st, struct orch_jhits *h)
{
    struct orch_jhit **sorted = orch_jhits_sorted(h);
    for (size_t i = 0; sorted != NULL && i < h->n; i++)
        sq_hit_write(st, sorted[i]->key, sorted[i]->row, sorted[i]->n);
    free(sorted);
    orch_jhits_clear(h);
}

/* The hits counted in memory, appended to the log as one row: their sums
 * and their counts packed (journal_hits.h), sorted by row so a fold
 * writes the entries in the table's order. A row of the log is one
 * statement where each entry's count rewrote the entry's whole row. */
static int sq_hits_log(struct sq_store *st)
{
    struct orch_jhit **sorted = orch_jhits_sorted(&st->hits);
    size_t len = 0;
    int64_t hits = 0;
    double saved = 0.0;
    unsigned char *packed = sorted != NULL ? orch_jhits_pack(sorted, st->hits.n, &len, &hits, &saved) : NULL;
    free(sorted);
    int rc = packed == NULL ? -1
                            : sq_start(st, st->stmt[SQ_JH_INSERT],
                                       SQ_ARGS(SQ_INT(hits), SQ_REAL(saved), SQ_INT((int64_t)st->hits.n),
                                               SQ_BLOB(packed, len)),
                                       NULL, "cannot write journal hits");
    free(packed);
    return rc < 0 ? -1 : 0;
}

/* Whether a log row's packed counts read to their end. */
static int sq_hits_packed_ok(const unsigned char *b, size_t len)
{
    size_t off = 0;
    int64_t row, n;
    char key[512];
    int rc;
    while ((rc = orch_jhits_unpack(b, len, &off, &row, &n, key, sizeof key)) == 1)
        ;
    return rc == 0;
}

/* The entries a fold adds up at once: 262,144 keys take about 34 MB
 * while the fold runs. A journal of up to that many entries is folded one
 * write an entry, however many rows of the log count it. */
#define SQ_FOLD_MAX ((size_t)1 << 18)

/* The journal's entries (its last rowid: count(*) would read it all). */
static int64_t sq_journal_entries(struct sq_store *st)
{
    sqlite3_stmt *s = st->stmt[SQ_JH_SIZE];
    int64_t entries = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 1) : 0;
    sq_done(s);
    return entries;
}

/* The cap of a fold's table: the journal's entries, rounded up to a
 * power of two, between ORCH_JHITS_MAX and SQ_FOLD_MAX. */
static size_t sq_fold_cap(int64_t entries)
{
    size_t cap = ORCH_JHITS_MAX;
    while (cap < SQ_FOLD_MAX && (int64_t)cap < entries)
        cap *= 2;
    return cap;
}

/* The rows of the log read (their ids, the sum of their saved_usd), for
 * the caller to delete once what they counted is written elsewhere. */
struct sq_hits_read {
    int64_t *ids;
    size_t n, cap;
    double saved;
};

/* Reads the log's rows in order into merged, an entry's counts added up.
 * A row whose counts do not read to their end (changed by hand, say) is
 * left out, whole: orch stats still counts its sums, and nothing of it is
 * folded twice. When merged holds all it takes, full(st, merged) writes
 * and clears it; with full NULL the read stops there. 0; 1 stopped full;
 * -1 a failed read (st's error set). */
static int sq_hits_read_log(struct sq_store *st, struct orch_jhits *merged,
                            void (*full)(struct sq_store *, struct orch_jhits *), struct sq_hits_read *r)
{
    sqlite3_stmt *s = st->stmt[SQ_JH_LIST];
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const unsigned char *b = sqlite3_column_blob(s, 1);
        size_t len = (size_t)sqlite3_column_bytes(s, 1), off = 0;
        if (len > 0 && (b == NULL || !sq_hits_packed_ok(b, len)))
            continue;
        if (r->n == r->cap) {
            size_t ncap = r->cap > 0 ? 2 * r->cap : 16;
            int64_t *more = realloc(r->ids, ncap * sizeof *more);
            if (more == NULL)
                break; /* the rows read so far are written; the rest wait */
            r->ids = more;
            r->cap = ncap;
        }
        r->ids[r->n++] = sqlite3_column_int64(s, 0);
        r->saved += sqlite3_column_double(s, 2);
        int64_t row, n;
        char key[512];
        while (b != NULL && orch_jhits_unpack(b, len, &off, &row, &n, key, sizeof key) == 1) {
            if (orch_jhits_addn(merged, key, row, n, 0.0) >= 0)
                continue;
            if (full == NULL) {
                sq_done(s);
                return 1;
            }
            full(st, merged);
            if (orch_jhits_addn(merged, key, row, n, 0.0) < 0)
                sq_hit_write(st, key, row, n); /* out of memory: this one alone */
        }
    }
    sq_done(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return sq_fail(st, "cannot read the journal's hits");
    return 0;
}

/* Deletes the log's rows r read. 0 or -1. */
static int sq_hits_clear(struct sq_store *st, const struct sq_hits_read *r)
{
    for (size_t i = 0; i < r->n; i++) {
        if (sq_start(st, st->stmt[SQ_JH_CLEAR], SQ_ARGS(SQ_INT(r->ids[i])), NULL,
                     "cannot clear the journal's folded hits") < 0)
            return -1;
    }
    return 0;
}

/* Folds the log into the entries' hits (llm_journal.hits), the counts of
 * an entry in all the rows added up first (in passes of SQ_FOLD_MAX
 * entries for a larger journal), then deletes the rows folded (a row
 * whose counts do not read to their end stays, see sq_hits_read_log). In
 * the caller's transaction. */
static int sq_hits_fold(struct sq_store *st)
{
    struct orch_jhits merged = {.cap = sq_fold_cap(sq_journal_entries(st))};
    struct sq_hits_read r = {0};
    int rc = sq_hits_read_log(st, &merged, sq_hits_apply, &r);
    sq_hits_apply(st, &merged);
    orch_jhits_free(&merged);
    if (rc == 0)
        rc = sq_hits_clear(st, &r);
    free(r.ids);
    return rc;
}

/* Merges the log's rows into one, an entry's counts added up, with the
 * sums of the rows it replaces: what a close does once the log holds more
 * entries than twice the journal's. A fold writes each entry's row, one
 * UPDATE an entry (0.065 s for 20,000 entries, every second rerun of a
 * replay); the merged row is one INSERT, and the entries' own hits wait
 * for a fold (orch gc --journal, --vacuum, a prune). The log then holds
 * at most one count an entry. Folds instead when the rows name more keys
 * than the journal holds (entries since removed by hand) or more than a
 * fold's table takes, so the log stays under the threshold. In the
 * caller's transaction. */
static int sq_hits_compact(struct sq_store *st)
{
    int64_t entries = sq_journal_entries(st);
    struct orch_jhits merged = {.cap = sq_fold_cap(entries)};
    struct sq_hits_read r = {0};
    int rc = sq_hits_read_log(st, &merged, NULL, &r);
    if (rc == 0 && r.n > 1 && (int64_t)merged.n <= entries) {
        struct orch_jhit **sorted = orch_jhits_sorted(&merged);
        size_t len = 0;
        int64_t hits = 0;
        double unused = 0.0;
        unsigned char *packed =
            sorted != NULL ? orch_jhits_pack(sorted, merged.n, &len, &hits, &unused) : NULL;
        free(sorted);
        rc = packed == NULL ? sq_fail(st, "cannot merge journal hits: out of memory") : sq_hits_clear(st, &r);
        if (rc == 0 &&
            sq_start(st, st->stmt[SQ_JH_INSERT],
                     SQ_ARGS(SQ_INT(hits), SQ_REAL(r.saved), SQ_INT((int64_t)merged.n), SQ_BLOB(packed, len)),
                     NULL, "cannot write journal hits") < 0)
            rc = -1;
        free(packed);
    } else if (rc >= 0) {
        rc = 2; /* fold instead */
    }
    orch_jhits_free(&merged);
    free(r.ids);
    return rc == 2 ? sq_hits_fold(st) : rc < 0 ? -1 : 0;
}

/* Runs one of the two in a transaction of its own unless one is open.
 * The error text of a failure is the caller's to keep: it is restored. */
static void sq_hits_run(struct sq_store *st, int (*step)(struct sq_store *), const char *what)
{
    char keep[sizeof st->base.err];
    memcpy(keep, st->base.err, sizeof keep);
    int own = sqlite3_get_autocommit(st->db);
    if (!own || sq_begin(st, what) == 0) {
        int rc = step(st);
        if (own && (rc != 0 || sq_commit(st, what) != 0))
            sq_abort(st);
    }
    memcpy(st->base.err, keep, sizeof keep);
}

void sq_journal_hits_write(struct sq_store *st)
{
    if (st->hits.n == 0)
        return;
    sq_hits_run(st, sq_hits_log, "cannot write journal hits");
    orch_jhits_clear(&st->hits);
}

/* The hits in memory written, and the log folded into the entries. */
void sq_journal_hits_fold(struct sq_store *st)
{
    sq_journal_hits_write(st);
    sq_hits_run(st, sq_hits_fold, "cannot fold journal hits");
}

/* At close: the log's rows merged into one once they hold more entries
 * than twice the journal's (sq_hits_compact), so the log stays a
 * fraction of the journal's size. */
void sq_journal_hits_close(struct sq_store *st)
{
    sq_journal_hits_write(st);
    if (st->stmt[SQ_JH_SIZE] == NULL || sqlite3_db_readonly(st->db, "main") == 1)
        return;
    sqlite3_stmt *s = st->stmt[SQ_JH_SIZE];
    int big = sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int64(s, 0) > 2 * sqlite3_column_int64(s, 1);
    sq_done(s);
    if (big)
        sq_hits_run(st, sq_hits_compact, "cannot merge journal hits");
}

/* Counts a hit of key in memory (journal_hits.h); a full table is written
 * first. -> the hits not yet written, this one included (0 when memory ran
 * out and it was written at once, or when the store is read-only). */
static int64_t sq_hit_count(struct sq_store *st, const char *key, int64_t row, double cost)
{
    if (sqlite3_db_readonly(st->db, "main") == 1)
        return 0; /* opened read-only: no hit can be written, none is counted */
    int64_t n = orch_jhits_addn(&st->hits, key, row, 1, cost);
    if (n < 0) {
        sq_journal_hits_write(st);
        n = orch_jhits_addn(&st->hits, key, row, 1, cost);
    }
    if (n < 0) {
        sq_hit_write(st, key, row, 1);
        n = 0;
    }
    return n;
}

/* A read only: the hit is counted in memory and written with others later
 * (sq_journal_hits_write), so a replayed row writes no page. out->hits is
 * the stored count plus those not yet written, this lookup included. */
static int sq_journal_read(struct sq_store *st, sqlite3_stmt *s, const char *key,
                           struct orch_journal_owned *out)
{
    int rc = sq_start(st, s, SQ_ARGS(SQ_TEXT(key)), NULL, "cannot look up journaled response %s", key);
    if (rc != SQLITE_ROW)
        return rc < 0 ? -1 : 0;
    struct orch_journal_owned got;
    rc = sq_journal_row(s, &got);
    int64_t row = sqlite3_column_int64(s, 11);
    sq_done(s);
    if (rc != 0)
        return orch_store_fail(&st->base, "cannot read journaled response %s: out of memory", key);
    got.hits += sq_hit_count(st, key, row, got.cost_usd);
    *out = got;
    return 1;
}

static int sq_journal_get(struct orch_store *base, const char *key, struct orch_journal_owned *out)
{
    struct sq_store *st = sq_of(base);
    if (key == NULL)
        return orch_store_fail(&st->base, "cannot look up a journaled response: no key");
    return sq_journal_read(st, st->stmt[SQ_JR_GET], key, out);
}

/* What a replayed call reads of an entry into out: a copy of its reply
 * (n bytes), its tokens and cost; out's other fields NULL or 0. 0, or -1
 * when memory runs out. */
static int sq_reply_copy(struct orch_journal_owned *out, const void *reply, size_t n, int64_t tokens_in,
                         int64_t tokens_out, double cost_usd)
{
    memset(out, 0, sizeof *out);
    out->response = malloc(n + 1);
    if (out->response == NULL)
        return -1;
    if (n > 0)
        memcpy(out->response, reply, n);
    out->response[n] = '\0';
    out->response_len = n;
    out->tokens_in = tokens_in;
    out->tokens_out = tokens_out;
    out->cost_usd = cost_usd;
    return 0;
}

/* sq_journal_get for a replayed call, which reads only the reply and its
 * figures: four columns, one copy (not eleven columns and five copies a
 * row). The hit is counted the same; out's other fields stay NULL or 0.
 * *row (when row is not NULL) gets where the entry is. */
static int sq_journal_reply(struct sq_store *st, sqlite3_stmt *s, const char *key,
                            struct orch_journal_owned *out, int64_t *row)
{
    int rc = sq_start(st, s, SQ_ARGS(SQ_TEXT(key)), NULL, "cannot look up journaled response %s", key);
    if (rc != SQLITE_ROW)
        return rc < 0 ? -1 : 0;
    /* blob before bytes, as SQLite asks; an empty blob gives NULL */
    const void *blob = sqlite3_column_blob(s, 0);
    int copied = sq_reply_copy(out, blob, (size_t)sqlite3_column_bytes(s, 0), sqlite3_column_int64(s, 1),
                               sqlite3_column_int64(s, 2), sqlite3_column_double(s, 3));
    int64_t at = sqlite3_column_int64(s, 4);
    sq_done(s);
    if (copied != 0)
        return orch_store_fail(&st->base, "cannot read journaled response %s: out of memory", key);
    out->hits = sq_hit_count(st, key, at, out->cost_usd);
    if (row != NULL)
        *row = at;
    return 1;
}

/* ---- the journal read ahead (journal_ahead.h) ---- */

/* Reads the window: ORCH_JAHEAD_ROWS entries from row -
 * ORCH_JAHEAD_BEHIND on, in the round's snapshot. A failed read is no
 * error: the window is only shorter, and lookups by key answer. */
static void sq_ahead_read(struct sq_store *st, int64_t row)
{
    sqlite3_stmt *s = st->stmt[SQ_JR_AHEAD];
    orch_jahead_clear(&st->ahead);
    int64_t from = row > ORCH_JAHEAD_BEHIND ? row - ORCH_JAHEAD_BEHIND : 1;
    if (sq_bind(s, SQ_ARGS(SQ_INT(from), SQ_INT(ORCH_JAHEAD_ROWS))) == 0) {
        while (sqlite3_step(s) == SQLITE_ROW) {
            const char *key = (const char *)sqlite3_column_text(s, 0);
            const void *reply = sqlite3_column_blob(s, 1); /* blob before bytes */
            if (key == NULL || orch_jahead_add(&st->ahead, key, reply, (size_t)sqlite3_column_bytes(s, 1),
                                               sqlite3_column_int64(s, 2), sqlite3_column_int64(s, 3),
                                               sqlite3_column_double(s, 4), sqlite3_column_int64(s, 5)) != 0)
                break;
        }
    }
    sq_done(s);
}

/* sq_journal_reply for a lookup in the round's snapshot: from the window
 * when it holds key, else by key, and then the window read from the entry
 * found when it follows the one found before. */
static int sq_journal_ahead(struct sq_store *st, const char *key, struct orch_journal_owned *out)
{
    const struct orch_jahead_entry *w = orch_jahead_find(&st->ahead, key);
    if (w != NULL) {
        if (sq_reply_copy(out, orch_jahead_at(&st->ahead, w->resp), w->resplen, w->tokens_in, w->tokens_out,
                          w->cost_usd) != 0)
            return orch_store_fail(&st->base, "cannot read journaled response %s: out of memory", key);
        out->hits = sq_hit_count(st, key, w->row, w->cost_usd);
        return 1;
    }
    int64_t row = 0;
    int rc = sq_journal_reply(st, st->stmt[SQ_JR_REPLY], key, out, &row);
    if (rc == 1 && orch_jahead_follows(&st->ahead, row))
        sq_ahead_read(st, row);
    return rc;
}

/* ---- the journal's read snapshot (journal_peek) ---- */

/* A task's lookup reads at once, on the main connection in one read
 * transaction a round, instead of waiting for the round's group
 * transaction (a suspended row, its task and its wake-up cost more than
 * the read). The group ends the transaction before it commits replies, so
 * the snapshot never misses a reply this process journaled; any other
 * operation ends it first too (sq_of). On the connection that wrote the
 * journal's pages they are still in its cache: a second connection
 * dropped its whole cache after each commit and read the pages again. */

/* Steps a statement of no rows and resets it: the step's result code. */
static int sq_step_reset(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc;
}

void sq_peek_end(struct sq_store *st)
{
    st->peeking = 0;
    orch_jahead_clear(&st->ahead); /* the window is the snapshot's */
    if (sq_step_reset(st->stmt[SQ_COMMIT]) != SQLITE_DONE)
        sq_step_reset(st->stmt[SQ_ROLLBACK]);
}

static void sq_journal_peek_end(struct orch_store *base)
{
    struct sq_store *st = (struct sq_store *)base;
    if (st->peeking)
        sq_peek_end(st);
}

static int sq_journal_peek(struct orch_store *base, struct orch_journal_lookup *get)
{
    struct sq_store *st = (struct sq_store *)base; /* not sq_of: the snapshot stays */
    get->found = 0;
    memset(&get->out, 0, sizeof get->out);
    if (get->key == NULL)
        return -1;
    if (!st->peeking) {
        /* not inside another operation's transaction */
        if (!sqlite3_get_autocommit(st->db) || sq_step_reset(st->stmt[SQ_BEGIN_READ]) != SQLITE_DONE)
            return -1;
        st->peeking = 1;
    }
    char keep[sizeof st->base.err]; /* a failed read here is no error: the group answers */
    memcpy(keep, st->base.err, sizeof keep);
    int rc = get->reply ? sq_journal_ahead(st, get->key, &get->out)
                        : sq_journal_read(st, st->stmt[SQ_JR_GET], get->key, &get->out);
    memcpy(st->base.err, keep, sizeof keep);
    if (rc < 0) {
        sq_peek_end(st);
        return -1;
    }
    get->found = rc;
    return 0;
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
    return sq_update_run(sq_of(base), SQ_LIVE_PUT,
                         SQ_ARGS(SQ_TEXT(run_id), SQ_INT(updated_ms), SQ_TEXT(figures)),
                         "cannot record live figures", "cannot record the live figures of run %s", run_id);
}

static int sq_live_get(struct orch_store *base, const char *run_id, char **figures, int64_t *updated_ms)
{
    struct sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->stmt[SQ_LIVE_GET];
    int rc =
        sq_start(st, s, SQ_ARGS(SQ_TEXT(run_id)), NULL, "cannot read the live figures of run %s", run_id);
    if (rc != SQLITE_ROW)
        return rc < 0 ? -1 : 0;
    int oom = 0;
    int ret = 1;
    *figures = sq_col_dup(s, 0, &oom);
    *updated_ms = sqlite3_column_int64(s, 1);
    if (oom || *figures == NULL) {
        free(*figures);
        *figures = NULL;
        ret = orch_store_fail(&st->base, "cannot read the live figures of run %s: out of memory", run_id);
    }
    sq_done(s);
    return ret;
}

static int sq_event_page(struct orch_store *base, const char *run_id, int64_t after_id, int64_t before_id,
                         int64_t limit, int newest_first, orch_event_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    struct orch_event e;
    struct sq_visit v = {.cols = sq_event_cols, .row = &e, .give = sq_give_event, .cb.event = cb, .ud = ud};
    return sq_each(st, st->stmt[newest_first ? SQ_EV_PAGE_DESC : SQ_EV_PAGE],
                   SQ_ARGS(SQ_TEXT(run_id), SQ_INT(after_id), SQ_INT(before_id), SQ_INT(limit)), &v,
                   "cannot list the events of run %s", run_id);
}

static int sq_give_error(struct sq_visit *v, sqlite3_stmt *s)
{
    struct orch_result x;
    sq_result_at(s, 0, &x);
    return v->cb.result(v->ud, &x) != 0;
}

/* key, status and error point into SQLite's row buffer, valid during the
 * callback only. */
static int sq_error_page(struct orch_store *base, const char *run_id, int64_t after_seq, int64_t limit,
                         orch_result_cb cb, void *ud)
{
    struct sq_store *st = sq_of(base);
    struct sq_visit v = {.give = sq_give_error, .cb.result = cb, .ud = ud};
    return sq_each(st, st->stmt[SQ_ERR_PAGE], SQ_ARGS(SQ_TEXT(run_id), SQ_INT(after_seq), SQ_INT(limit)), &v,
                   "cannot list the failed rows of run %s", run_id);
}

/* ---- many workers, one run: leases and the shared budget --------------
 * On SQLite the workers share one machine, whose clock is the store's.
 * These statements are prepared when used (leases are claimed a few
 * times a minute, not per row); each call is one transaction. */

/* The time in ms since 1970, as orch_store_now_ms reads it. SQLite holds
 * 'now' as a whole number of ms, but the day fraction julianday gives
 * back multiplies out a hair above or below it: rounded, not truncated,
 * or it read 1 ms early about half the time (and a rate limit's wait,
 * measured against it, came out 1 ms short). */
#define SQ_NOW_MS "CAST((julianday('now') - 2440587.5) * 86400000.0 + 0.5 AS INTEGER)"

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

/* Prepares constant sql, runs it with a (no rows) and finalizes it: the
 * rows it changed, or -1 with st->err set from what, fmt with id for its
 * %s. */
static int64_t sq_once(struct sq_store *st, const char *sql, const struct sq_arg *a, const char *fmt,
                       const char *id) __attribute__((format(printf, 4, 0)));
static int64_t sq_once(struct sq_store *st, const char *sql, const struct sq_arg *a, const char *fmt,
                       const char *id)
{
    char what[300];
    snprintf(what, sizeof what, fmt, id);
    sqlite3_stmt *s = NULL;
    if (sq_prep(st, sql, &s, what) != 0)
        return -1;
    int64_t n = sq_start(st, s, a, NULL, "%s", what) < 0 ? -1 : sqlite3_changes64(st->db);
    sqlite3_finalize(s);
    return n;
}

/* Steps a statement with RETURNING, whose row has been read, to its end:
 * the write is done only then. 0, or -1 with st->err set from what. */
static int sq_returned(struct sq_store *st, sqlite3_stmt *s, const char *what)
{
    return sqlite3_step(s) == SQLITE_DONE ? 0 : sq_fail(st, "%s", what);
}

/* The columns of a lease row (lease_claim's RETURNING, lease_list). */
#define SQ_L(col, kind, field) SQ_COL(struct orch_lease, col, kind, field)
/* clang-format off */
static const struct sq_col sq_lease_cols[] = {
    SQ_L(0, 'i', no), SQ_L(1, 'i', first_index), SQ_L(2, 'i', rows), SQ_L(3, 'i', offset),
    SQ_L(4, 'i', line), SQ_L(5, 'i', index), SQ_L(6, 't', status), SQ_L(7, 't', owner),
    SQ_L(8, 'i', claims), SQ_L(9, 'i', claimed_ms), SQ_L(10, 'i', heartbeat_ms), SQ_L(11, 'i', done_ms),
    SQ_L(12, 'i', age_ms), {0},
};
/* clang-format on */
#undef SQ_L

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
    int64_t have = sq_get_int(st, s, SQ_ARGS(SQ_TEXT(run_id)), what);
    sqlite3_finalize(s);
    if (have < 0)
        goto fail;
    if (have == 0 && n > 0) {
        if (sq_prep(st,
                    "INSERT INTO leases (run_id, no, first_index, nrows, cur_offset, cur_line, cur_index) "
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?3)",
                    &s, what) != 0)
            goto fail;
        for (size_t i = 0; i < n; i++) {
            if (sq_start(st, s,
                         SQ_ARGS(SQ_TEXT(run_id), SQ_INT(l[i].no), SQ_INT(l[i].first_index),
                                 SQ_INT(l[i].rows), SQ_INT(l[i].offset), SQ_INT(l[i].line)),
                         NULL, "%s", what) < 0) {
                sqlite3_finalize(s);
                goto fail;
            }
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
    int rc = sq_start(st, s, SQ_ARGS(SQ_TEXT(run_id), SQ_TEXT(worker), SQ_INT(stale_ms)), NULL, "%s", what);
    int ret = rc < 0 ? -1 : 0;
    if (rc == SQLITE_ROW) {
        ret = sq_cols_read(s, sq_lease_cols, out) == 0
                  ? 1
                  : orch_store_fail(&st->base, "%s: out of memory", what);
        if (sq_returned(st, s, what) != 0) {
            orch_lease_clear(out);
            ret = -1;
        }
    }
    sqlite3_finalize(s);
    return ret;
}

static int sq_lease_heartbeat(struct orch_store *base, const char *run_id, int64_t no, const char *worker)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot heartbeat lease %lld of run %s", (long long)no, run_id);
    int64_t n = sq_once(st,
                        "UPDATE leases SET heartbeat_ms = " SQ_NOW_MS
                        " WHERE run_id = ?1 AND no = ?2 AND owner = ?3 AND status = 'taken'",
                        SQ_ARGS(SQ_TEXT(run_id), SQ_INT(no), SQ_TEXT(worker)), "%s", what);
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
    int64_t now = orch_store_now_ms();
    if (sq_once(
            st,
            "UPDATE runs SET rows_done = rows_done + ?2, rows_ok = rows_ok + ?3, rows_failed = rows_failed + "
            "?4, rows_dropped = rows_dropped + ?5, rows_defaulted = rows_defaulted + ?6, llm_calls = "
            "llm_calls + ?7, tokens_in = tokens_in + ?8, tokens_out = tokens_out + ?9, cost_usd = cost_usd + "
            "?10, updated_ms = ?11, heartbeat_ms = ?11 WHERE id = ?1",
            SQ_ARGS(SQ_TEXT(run_id), SQ_INT(a->rows_done), SQ_INT(a->rows_ok), SQ_INT(a->rows_failed),
                    SQ_INT(a->rows_dropped), SQ_INT(a->rows_defaulted), SQ_INT(a->llm_calls),
                    SQ_INT(a->tokens_in), SQ_INT(a->tokens_out), SQ_REAL(a->cost_usd), SQ_INT(now)),
            "%s", what) < 0)
        return -1;
    if (c->end != 1)
        return 1;
    int64_t n =
        sq_once(st,
                "UPDATE runs SET status = 'completed', error = NULL, finished_ms = ?2, updated_ms = ?2 "
                "WHERE id = ?1 AND status <> 'completed' AND NOT EXISTS (SELECT 1 FROM leases WHERE "
                "run_id = ?1 AND status <> 'done')",
                SQ_ARGS(SQ_TEXT(run_id), SQ_INT(now)), "%s", what);
    return n < 0 ? -1 : n > 0 ? 2 : 1;
}

static int sq_lease_commit(struct orch_store *base, const char *run_id, const struct orch_lease_commit *c,
                           const struct orch_result *res, size_t nres)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot commit lease %lld of run %s", (long long)c->no, run_id);
    if (sq_begin(st, what) != 0)
        return -1;
    int64_t held =
        sq_once(st,
                "UPDATE leases SET cur_offset = ?4, cur_line = ?5, cur_index = ?6, heartbeat_ms = " SQ_NOW_MS
                ", status = CASE ?7 WHEN 1 THEN 'done' WHEN 2 THEN 'free' ELSE status END, done_ms = "
                "CASE ?7 WHEN 1 THEN " SQ_NOW_MS " ELSE done_ms END WHERE run_id = ?1 AND no = ?2 AND "
                "owner = ?3 AND status = 'taken'",
                SQ_ARGS(SQ_TEXT(run_id), SQ_INT(c->no), SQ_TEXT(c->worker), SQ_INT(c->offset),
                        SQ_INT(c->line), SQ_INT(c->index), SQ_INT(c->end)),
                "%s", what);
    if (held < 0)
        goto fail;
    if (held == 0) {
        sq_abort(st);
        return 0;
    }
    if (sq_results_insert(st, run_id, 0, res, nres) != 0)
        goto fail;
    if (sq_once(st,
                "DELETE FROM journal_pending WHERE owner = ?1 AND EXISTS (SELECT 1 FROM llm_journal j WHERE "
                "j.key = journal_pending.key)",
                SQ_ARGS(SQ_TEXT(c->worker)), "%s", what) < 0)
        goto fail;
    int rc = sq_lease_commit_run(st, run_id, c, what);
    if (rc < 0 || sq_commit(st, what) != 0)
        goto fail;
    return rc;
fail:
    sq_abort(st);
    return -1;
}

static int sq_give_lease(struct sq_visit *v, sqlite3_stmt *s)
{
    (void)s;
    return v->cb.lease(v->ud, v->row) != 0;
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
    struct orch_lease l;
    struct sq_visit v = {.cols = sq_lease_cols, .row = &l, .give = sq_give_lease, .cb.lease = cb, .ud = ud};
    int ret = sq_each(st, s, SQ_ARGS(SQ_TEXT(run_id)), &v, "%s", what);
    sqlite3_finalize(s);
    return ret;
}

static int sq_budget_reserve(struct orch_store *base, const char *run_id, double est_usd, double max_usd)
{
    struct sq_store *st = sq_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot reserve budget for run %s", run_id);
    if (sq_begin(st, what) != 0)
        return -1;
    if (sq_once(st,
                "INSERT INTO run_budget (run_id, max_usd) VALUES (?1, ?2) ON CONFLICT (run_id) DO NOTHING",
                SQ_ARGS(SQ_TEXT(run_id), SQ_REAL(max_usd)), "%s", what) < 0)
        goto fail;
    int64_t n =
        sq_once(st,
                "UPDATE run_budget SET reserved_usd = reserved_usd + ?2 WHERE run_id = ?1 AND spent_usd + "
                "reserved_usd + ?2 <= max_usd + 1e-12",
                SQ_ARGS(SQ_TEXT(run_id), SQ_REAL(est_usd)), "%s", what);
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
    int64_t n =
        sq_once(sq_of(base),
                "UPDATE run_budget SET reserved_usd = max(reserved_usd - ?2, 0), spent_usd = spent_usd + ?3 "
                "WHERE run_id = ?1",
                SQ_ARGS(SQ_TEXT(run_id), SQ_REAL(released_usd), SQ_REAL(spent_usd)),
                "cannot settle the budget of run %s", run_id);
    return n < 0 ? -1 : 0;
}

/* Reservations are dropped with a new max: they belonged to workers that
 * stopped (a budget is raised on a paused run). */
static int sq_budget_set(struct orch_store *base, const char *run_id, double max_usd)
{
    return sq_once(
               sq_of(base),
               "INSERT INTO run_budget (run_id, max_usd) VALUES (?1, ?2) ON CONFLICT (run_id) DO UPDATE SET "
               "max_usd = excluded.max_usd, reserved_usd = 0",
               SQ_ARGS(SQ_TEXT(run_id), SQ_REAL(max_usd)), "cannot set the budget of run %s", run_id) < 0
               ? -1
               : 0;
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
    int rc = sq_start(st, s, SQ_ARGS(SQ_TEXT(run_id)), NULL, "%s", what);
    if (rc == SQLITE_ROW) {
        *max_usd = sqlite3_column_double(s, 0);
        *spent_usd = sqlite3_column_double(s, 1);
        *reserved_usd = sqlite3_column_double(s, 2);
    }
    sqlite3_finalize(s);
    return rc < 0 ? -1 : rc == SQLITE_ROW;
}

static int sq_journal_pend(struct orch_store *base, const char *key, const char *owner, int64_t ttl_ms)
{
    int64_t n = sq_once(sq_of(base),
                        "INSERT INTO journal_pending (key, owner, expires_ms) SELECT ?1, ?2, " SQ_NOW_MS
                        " + ?3 WHERE NOT EXISTS (SELECT 1 FROM llm_journal WHERE key = ?1) "
                        "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_ms = "
                        "excluded.expires_ms WHERE journal_pending.owner = excluded.owner OR "
                        "journal_pending.expires_ms < " SQ_NOW_MS,
                        SQ_ARGS(SQ_TEXT(key), SQ_TEXT(owner), SQ_INT(ttl_ms)),
                        "cannot mark LLM request %.40s as being sent", key);
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
    int rc = sq_start(
        st, s, SQ_ARGS(SQ_TEXT(run_id), SQ_TEXT(kind), SQ_REAL(capacity), SQ_REAL(amount), SQ_REAL(per_ms)),
        NULL, "%s", what);
    int ret = -1;
    if (rc == SQLITE_DONE)
        orch_store_fail(&st->base, "%s: the bucket's row was not returned", what);
    if (rc == SQLITE_ROW) {
        ret = sqlite3_column_int(s, 0) != 0;
        if (ret == 0)
            *left = sqlite3_column_double(s, 1);
        /* RETURNING's statement ends, and with it the write */
        if (sq_returned(st, s, what) != 0)
            ret = -1;
    }
    sqlite3_finalize(s);
    return ret;
}

static int sq_run_set_status(struct orch_store *base, const char *run_id, enum orch_run_status status,
                             const char *error)
{
    int64_t now = orch_store_now_ms();
    int64_t finished = status == ORCH_RUN_COMPLETED || status == ORCH_RUN_FAILED ? now : 0;
    int64_t n =
        sq_once(sq_of(base),
                "UPDATE runs SET status = ?2, error = ?3, updated_ms = ?4, finished_ms = ?5 WHERE id = ?1",
                SQ_ARGS(SQ_TEXT(run_id), SQ_TEXT(orch_run_status_name(status)), SQ_TEXT(error), SQ_INT(now),
                        SQ_INT(finished)),
                "cannot update run %s", run_id);
    return n < 0 ? -1 : n > 0;
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
    .checkpoint_write_chunk = sq_checkpoint_write_chunk,
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
    .journal_peek_end = sq_journal_peek_end,
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
