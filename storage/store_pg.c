/* store_pg.c — the PostgreSQL backend of the state store (store.h), over
 * libpq: one connection per store, every statement prepared once at open
 * and given its values as parameters, never built from strings.
 * The schema, its migrations and the checks at open are in
 * store_pg_schema.c. Every operation that is one transaction on SQLite is
 * one transaction here.
 * Messages name the store by its URL with any password masked
 * (orch_store_display); libpq never sees a message of ours and we never
 * print its connection parameters.
 * Pure C: depends on libc, libpq and store.c's shared helpers
 * (store_impl.h: the checkpoint seal, error wording, clocks). Checkpoint
 * mementos arrive compressed and leave as stored: compression, checksums
 * and their verification are store.c's. */
#include "store.h"
#include "store_impl.h"
#include "store_pg_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PG_RUN_COLS                                                                                          \
    "id, name, identity, workflow_path, workflow_hash, input, input_fp, params, output, error, "             \
    "owner_host, status, owner_pid, heartbeat_ms, created_ms, updated_ms, finished_ms, rows_done, "          \
    "rows_ok, rows_failed, rows_dropped, rows_defaulted, llm_calls, tokens_in, tokens_out, cost_usd, "       \
    "recoveries"
#define PG_RUN_SELECT                                                                                        \
    "SELECT " PG_RUN_COLS ", (SELECT count(*) FROM checkpoints c WHERE c.run_id = runs.id) FROM runs "
#define PG_JR_COLS                                                                                           \
    "key, run_id, provider, model, response, tokens_in, tokens_out, cost_usd, latency_ms, created_ms, hits"
#define PG_CP_COLS                                                                                           \
    "seq, name, reason, created_ms, input_offset, input_line, input_index, output_offset, "                  \
    "errors_offset, memento, memento_len, checksum, bytes, duration_ms"

enum pg_stmt {
    PG_RUN_INSERT,
    PG_RUN_GET,
    PG_RUN_FIND,
    PG_RUN_UPDATE,
    PG_RUN_CLAIM,
    PG_RUN_HEARTBEAT,
    PG_RUN_DELETE,
    PG_RUN_LIST,
    PG_RUN_LOCK_SEQ,
    PG_CP_INSERT,
    PG_CP_NEWEST,
    PG_CP_GET,
    PG_CP_LIST,
    PG_CP_DELETE_AFTER,
    PG_RES_INSERT,
    PG_RES_BULK,
    PG_RES_DELETE_AFTER,
    PG_RES_LIST,
    PG_STATE_UPSERT,
    PG_STATE_DELETE,
    PG_STATE_LIST,
    PG_EV_INSERT,
    PG_EV_LIST,
    PG_JR_INSERT,
    PG_JR_GET,
    PG_JR_GET_HIT,
    PG_JR_PRUNE,
    PG_STATS_RUNS,
    PG_STATS_CPS,
    PG_STATS_JOURNAL,
    PG_STATS_SIZE,
    /* live figures */
    PG_LIVE_PUT,
    PG_LIVE_GET,
    PG_EV_PAGE,
    PG_EV_PAGE_DESC,
    PG_ERR_PAGE,
    PG_NSTMT
};

static const char *const pg_sql[PG_NSTMT] = {
    [PG_RUN_INSERT] =
        "INSERT INTO runs (" PG_RUN_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
        "$12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27)",
    [PG_RUN_GET] = PG_RUN_SELECT "WHERE id = $1",
    [PG_RUN_FIND] = PG_RUN_SELECT "WHERE identity = $1 AND status IN ('pending', 'running', 'paused') "
                                  "ORDER BY created_ms DESC, ord DESC LIMIT 1",
    [PG_RUN_UPDATE] = "UPDATE runs SET status = $2, error = $3, owner_pid = $4, owner_host = $5, "
                      "heartbeat_ms = $6, finished_ms = $7, rows_done = $8, rows_ok = $9, rows_failed = $10, "
                      "rows_dropped = $11, rows_defaulted = $12, llm_calls = $13, tokens_in = $14, "
                      "tokens_out = $15, cost_usd = $16, recoveries = $17, updated_ms = $18 WHERE id = $1",
    [PG_RUN_CLAIM] = "UPDATE runs SET owner_pid = $2, owner_host = $3, heartbeat_ms = $4, updated_ms = $4, "
                     "status = 'running' WHERE id = $1 AND owner_pid = $5 AND heartbeat_ms = $6",
    [PG_RUN_HEARTBEAT] = "UPDATE runs SET heartbeat_ms = $2 WHERE id = $1",
    /* its checkpoints, results, events and state go with it (ON DELETE CASCADE) */
    [PG_RUN_DELETE] = "DELETE FROM runs WHERE id = $1",
    [PG_RUN_LIST] =
        PG_RUN_SELECT "WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR name = $2) "
                      "AND ($3::bigint = 0 OR created_ms >= $3) AND ($4::bigint = 0 OR created_ms < $4) "
                      "ORDER BY created_ms DESC, ord DESC",
    /* locks the run row, so two writers of one run number their
     * checkpoints one after the other */
    [PG_RUN_LOCK_SEQ] = "SELECT coalesce((SELECT max(seq) FROM checkpoints WHERE run_id = $1), 0) + 1 "
                        "FROM runs WHERE id = $1 FOR UPDATE",
    [PG_CP_INSERT] =
        "INSERT INTO checkpoints (run_id, " PG_CP_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
        "$9, $10, $11, $12, $13, $14, $15)",
    [PG_CP_NEWEST] = "SELECT " PG_CP_COLS " FROM checkpoints WHERE run_id = $1 ORDER BY seq DESC",
    [PG_CP_GET] = "SELECT " PG_CP_COLS " FROM checkpoints WHERE run_id = $1 AND seq = $2",
    [PG_CP_LIST] = "SELECT " PG_CP_COLS " FROM checkpoints WHERE run_id = $1 ORDER BY seq",
    [PG_CP_DELETE_AFTER] = "DELETE FROM checkpoints WHERE run_id = $1 AND seq > $2",
    [PG_RES_INSERT] = "INSERT INTO results (run_id, seq, key, status, error, data, checkpoint_seq) "
                      "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (run_id, seq) DO UPDATE SET "
                      "key = excluded.key, status = excluded.status, error = excluded.error, "
                      "data = excluded.data, checkpoint_seq = excluded.checkpoint_seq",
    /* all of a checkpoint's results in one statement, from arrays: a
     * statement per row costs ~20x more on the server */
    [PG_RES_BULK] =
        "INSERT INTO results (run_id, seq, key, status, error, data, checkpoint_seq) "
        "SELECT $1, u.seq, u.key, u.status, u.error, NULL, $6 "
        "FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[]) AS u (seq, key, status, error) "
        "ON CONFLICT (run_id, seq) DO UPDATE SET key = excluded.key, status = excluded.status, "
        "error = excluded.error, data = excluded.data, checkpoint_seq = excluded.checkpoint_seq",
    [PG_RES_DELETE_AFTER] = "DELETE FROM results WHERE run_id = $1 AND checkpoint_seq > $2",
    [PG_RES_LIST] = "SELECT seq, key, status, error, data FROM results WHERE run_id = $1 ORDER BY seq",
    [PG_STATE_UPSERT] = "INSERT INTO state (run_id, key, value) VALUES ($1, $2, $3) "
                        "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
    [PG_STATE_DELETE] = "DELETE FROM state WHERE run_id = $1 AND key = $2",
    [PG_STATE_LIST] = "SELECT key, value FROM state WHERE run_id = $1 ORDER BY key",
    [PG_EV_INSERT] = "INSERT INTO events (run_id, ts_ms, type, data) VALUES ($1, $2, $3, $4)",
    /* a NULL run_id lists the store-wide events */
    [PG_EV_LIST] =
        "SELECT id, ts_ms, type, data FROM events WHERE run_id IS NOT DISTINCT FROM $1::text ORDER BY id",
    /* First wins: a key already journaled keeps its reply, cost and hits. */
    [PG_JR_INSERT] = "INSERT INTO llm_journal (" PG_JR_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
                     "$10, 0) ON CONFLICT (key) DO NOTHING",
    [PG_JR_GET] = "SELECT " PG_JR_COLS " FROM llm_journal WHERE key = $1",
    /* lookup and hit in one statement: a miss takes no lock */
    [PG_JR_GET_HIT] = "UPDATE llm_journal SET hits = hits + 1 WHERE key = $1 RETURNING " PG_JR_COLS,
    [PG_JR_PRUNE] = "DELETE FROM llm_journal WHERE created_ms < $1",
    [PG_STATS_RUNS] = "SELECT count(*), count(*) FILTER (WHERE status = 'running'), "
                      "count(*) FILTER (WHERE status = 'paused'), count(*) FILTER (WHERE status = 'failed'), "
                      "count(*) FILTER (WHERE status = 'completed'), coalesce(sum(recoveries), 0) FROM runs",
    [PG_STATS_CPS] = "SELECT count(*), coalesce(avg(duration_ms), 0), coalesce(max(duration_ms), 0) "
                     "FROM checkpoints",
    [PG_STATS_JOURNAL] = "SELECT count(*), coalesce(sum(hits), 0), coalesce(sum(cost_usd * hits), 0) "
                         "FROM llm_journal",
    [PG_STATS_SIZE] =
        "SELECT coalesce(sum(pg_total_relation_size(to_regclass(t))), 0) FROM unnest(" PG_TABLES ") t",
    /* no row for a run that is not there: the caller hears "no such run" */
    [PG_LIVE_PUT] = "INSERT INTO run_live (run_id, updated_ms, figures) SELECT $1, $2, $3 "
                    "WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1) ON CONFLICT (run_id) DO UPDATE SET "
                    "updated_ms = excluded.updated_ms, figures = excluded.figures",
    [PG_LIVE_GET] = "SELECT figures, updated_ms FROM run_live WHERE run_id = $1",
    [PG_EV_PAGE] = "SELECT id, ts_ms, type, data FROM events WHERE run_id = $1 AND id > $2 AND id < $3 "
                   "ORDER BY id LIMIT $4",
    [PG_EV_PAGE_DESC] = "SELECT id, ts_ms, type, data FROM events WHERE run_id = $1 AND id > $2 AND id < $3 "
                        "ORDER BY id DESC LIMIT $4",
    [PG_ERR_PAGE] = "SELECT seq, key, status, error FROM results WHERE run_id = $1 AND seq > $2 "
                    "AND error IS NOT NULL ORDER BY seq LIMIT $3",
};

struct pg_store {
    struct orch_store base; /* first: a struct orch_store * is a struct pg_store * */
    PGconn *conn;
    char *target; /* the URL as given: libpq connects with it */
    char *shown;  /* the URL as messages show it (password masked) */
    int readonly;
    int in_tx; /* inside BEGIN ... COMMIT: a lost connection is not reopened */
};

static struct pg_store *pg_of(struct orch_store *st)
{
    return (struct pg_store *)st;
}

/* ---- errors ---------------------------------------------------------- */

void orch_pg_first_line(const char *msg, char *out, size_t outlen)
{
    if (msg == NULL || msg[0] == '\0')
        msg = "unknown error";
    for (const char *const *p = (const char *const[]){"ERROR:  ", "FATAL:  ", NULL}; *p != NULL; p++) {
        if (strncmp(msg, *p, strlen(*p)) == 0)
            msg += strlen(*p);
    }
    size_t n = strcspn(msg, "\n");
    snprintf(out, outlen, "%.*s", (int)n, msg);
}

/* Records "URL: <what>: <the server's reason>" and returns -1. r may be
 * NULL (the connection's last error is used). */
static int pg_fail_res(struct pg_store *st, const PGresult *r, const char *what)
{
    char why[300];
    const char *msg = r != NULL ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (msg == NULL)
        msg = PQerrorMessage(st->conn);
    orch_pg_first_line(msg, why, sizeof why);
    if (PQstatus(st->conn) == CONNECTION_BAD)
        snprintf(st->base.err, sizeof st->base.err, "%s: %s: lost the connection to the server (%s)",
                 st->shown, what, why);
    else
        snprintf(st->base.err, sizeof st->base.err, "%s: %s: %s", st->shown, what, why);
    return -1;
}

/* ---- parameters ------------------------------------------------------- */

#define PG_MAXPARAMS 27

/* The values of one statement: text, or binary for bytea (and for a text
 * value given with its length). Numbers are formatted into num. */
struct pg_params {
    int n;
    const char *v[PG_MAXPARAMS];
    int len[PG_MAXPARAMS];
    int fmt[PG_MAXPARAMS];
    char num[PG_MAXPARAMS][32];
};

static void p_text(struct pg_params *p, const char *s)
{
    p->v[p->n] = s;
    p->len[p->n] = 0;
    p->fmt[p->n] = 0;
    p->n++;
}

static void p_int(struct pg_params *p, int64_t x)
{
    snprintf(p->num[p->n], sizeof p->num[p->n], "%lld", (long long)x);
    p_text(p, p->num[p->n]);
}

static void p_dbl(struct pg_params *p, double x)
{
    snprintf(p->num[p->n], sizeof p->num[p->n], "%.17g", x);
    p_text(p, p->num[p->n]);
}

/* Raw bytes: binary format (a bytea's or a text's bytes as they are). */
static void p_bytes(struct pg_params *p, const void *b, size_t n)
{
    p->v[p->n] = b != NULL ? b : "";
    p->len[p->n] = (int)n;
    p->fmt[p->n] = 1;
    p->n++;
}

/* ---- statements ------------------------------------------------------- */

static void pg_stmt_name(enum pg_stmt i, char name[16])
{
    snprintf(name, 16, "orch_%d", (int)i);
}

/* Prepares every statement on the connection. 0, or -1 with the reason in
 * err. */
static int pg_prepare_all(struct pg_store *st, char *err, size_t errlen)
{
    for (int i = 0; i < PG_NSTMT; i++) {
        char name[16];
        pg_stmt_name((enum pg_stmt)i, name);
        PGresult *r = PQprepare(st->conn, name, pg_sql[i], 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            char why[300];
            orch_pg_first_line(PQresultErrorMessage(r), why, sizeof why);
            snprintf(err, errlen, "%s: cannot prepare a statement: %s", st->shown, why);
            PQclear(r);
            return -1;
        }
        PQclear(r);
    }
    return 0;
}

/* How long a lost connection is tried again: a server restart takes a
 * few seconds. */
#define PG_RECONNECT_TRIES 40
#define PG_RECONNECT_PAUSE_NS 250000000L

/* A connection the server dropped (restart, failover, idle timeout) is
 * opened again, for up to 10 s, with the statements prepared anew. Callers
 * do it outside a transaction only, and then run again what failed:
 * nothing is lost, since every write is a transaction of its own (or
 * one whose rerun is harmless). 1 reconnected, 0 not. */
static int pg_reconnect(struct pg_store *st)
{
    if (PQstatus(st->conn) != CONNECTION_BAD)
        return 0;
    for (int i = 0; i < PG_RECONNECT_TRIES; i++) {
        if (i > 0) {
            struct timespec pause = {0, PG_RECONNECT_PAUSE_NS};
            nanosleep(&pause, NULL);
        }
        PQreset(st->conn);
        if (PQstatus(st->conn) == CONNECTION_OK)
            break;
    }
    if (PQstatus(st->conn) != CONNECTION_OK)
        return 0;
    st->in_tx = 0;
    char err[512];
    if (st->readonly) {
        PGresult *r = PQexec(st->conn, "SET default_transaction_read_only = on");
        PQclear(r);
    }
    return pg_prepare_all(st, err, sizeof err) == 0;
}

/* Runs prepared statement i, or, where sql is not NULL, the constant
 * text sql (PQexecParams; i is not used). The result (rows or command)
 * the caller clears, or NULL with st->err set from what. A dropped
 * connection outside a transaction is opened again and the statement run
 * once more. */
static PGresult *pg_exec(struct pg_store *st, enum pg_stmt i, const char *sql, const struct pg_params *p,
                         const char *what)
{
    char name[16];
    pg_stmt_name(i, name);
    for (int attempt = 0;; attempt++) {
        PGresult *r = sql == NULL ? PQexecPrepared(st->conn, name, p->n, p->v, p->len, p->fmt, 0)
                                  : PQexecParams(st->conn, sql, p->n, NULL, p->v, p->len, p->fmt, 0);
        ExecStatusType s = PQresultStatus(r);
        if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK)
            return r;
        if (attempt == 0 && !st->in_tx && pg_reconnect(st)) {
            PQclear(r);
            continue;
        }
        pg_fail_res(st, r, what);
        PQclear(r);
        return NULL;
    }
}

/* pg_exec with the values types lists, one argument each (two for b),
 * then what the statement does, for its message, as a format and its
 * arguments; the values are given as redisCommand takes them:
 *   t  const char *          text; NULL is SQL NULL
 *   i  int64_t               (cast what is not one: varargs do not convert)
 *   d  double
 *   b  const void *, size_t  raw bytes (binary format)
 * e.g. pg_query(st, PG_RUN_HEARTBEAT, "ti", id, now_ms, "cannot record a
 * heartbeat"). The result the caller clears, or NULL with st->err set. */
static PGresult *pg_query_at(struct pg_store *st, enum pg_stmt i, const char *sql, const char *types, ...)
{
    struct pg_params p = {0};
    va_list ap;
    va_start(ap, types);
    for (const char *t = types; *t != '\0'; t++) {
        if (*t == 't') {
            p_text(&p, va_arg(ap, const char *));
        } else if (*t == 'i') {
            p_int(&p, va_arg(ap, int64_t));
        } else if (*t == 'd') {
            p_dbl(&p, va_arg(ap, double));
        } else {
            const void *b = va_arg(ap, const void *);
            p_bytes(&p, b, va_arg(ap, size_t));
        }
    }
    char what[300];
    const char *fmt = va_arg(ap, const char *);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return pg_exec(st, i, sql, &p, what);
}

/* Prepared statement i; constant SQL text. */
#define pg_query(st, i, ...) pg_query_at((st), (i), NULL, __VA_ARGS__)
#define pg_query_sql(st, sql, ...) pg_query_at((st), PG_NSTMT, (sql), __VA_ARGS__)

/* The rows a command changed, clearing r; -1 when r is NULL (it failed,
 * st->err set). */
static int64_t pg_changes(PGresult *r)
{
    if (r == NULL)
        return -1;
    int64_t n = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return n;
}

/* Runs constant SQL without values (transaction control). 0 or -1. */
static int pg_simple(struct pg_store *st, const char *sql, const char *what)
{
    PGresult *r = PQexec(st->conn, sql);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        pg_fail_res(st, r, what);
        PQclear(r);
        return -1;
    }
    PQclear(r);
    return 0;
}

/* BEGIN, on a connection opened again if the server dropped it (which
 * libpq learns only when the next statement fails). */
static int pg_begin(struct pg_store *st, const char *what)
{
    pg_reconnect(st);
    if (pg_simple(st, "BEGIN", what) != 0 && (!pg_reconnect(st) || pg_simple(st, "BEGIN", what) != 0))
        return -1;
    st->in_tx = 1;
    return 0;
}

/* COMMIT, checked to have committed: after a failed statement the server
 * answers COMMIT with ROLLBACK. */
static int pg_commit(struct pg_store *st, const char *what)
{
    PGresult *r = PQexec(st->conn, "COMMIT");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0;
    if (!ok)
        pg_fail_res(st, r, what);
    PQclear(r);
    if (ok)
        st->in_tx = 0;
    return ok ? 0 : -1;
}

/* Rolls back the open transaction, if any; keeps st->err. */
static void pg_abort(struct pg_store *st)
{
    PGTransactionStatusType t = PQtransactionStatus(st->conn);
    if (t == PQTRANS_INTRANS || t == PQTRANS_INERROR) {
        PGresult *r = PQexec(st->conn, "ROLLBACK");
        PQclear(r);
    }
    st->in_tx = 0;
}

/* ---- pipelines: many statements, one round trip ---------------------- */

/* Starts sending statements without waiting for each reply. 0 or -1. */
static int pg_pipe_begin(struct pg_store *st, const char *what)
{
    if (PQenterPipelineMode(st->conn) != 1)
        return pg_fail_res(st, NULL, what);
    return 0;
}

/* Queues statement i; its reply is read by pg_pipe_end. 0 or -1. */
static int pg_pipe_send(struct pg_store *st, enum pg_stmt i, const struct pg_params *p, const char *what)
{
    char name[16];
    pg_stmt_name(i, name);
    if (PQsendQueryPrepared(st->conn, name, p->n, p->v, p->len, p->fmt, 0) != 1)
        return pg_fail_res(st, NULL, what);
    return 0;
}

/* Sends the queued statements and reads their replies in order: each
 * result with rows goes to cb (may be NULL) with its index among the
 * queued statements. Leaves pipeline mode. 0, or -1 with st->err from the
 * first statement that failed (the ones after it are skipped by the
 * server). */
/* How a caller names the statement at index for a message ("cannot store
 * result 8 of run r1"). */
typedef void (*pg_namer)(void *ud, size_t index, char *what, size_t whatlen);

static int pg_pipe_end(struct pg_store *st, const char *what, pg_namer namer, void *nud,
                       int (*cb)(void *ud, size_t index, const PGresult *r), void *ud)
{
    int ret = 0;
    int synced = PQpipelineSync(st->conn) == 1;
    if (!synced)
        ret = pg_fail_res(st, NULL, what);
    size_t index = 0;
    int got_result = 0;
    while (synced) {
        PGresult *r = PQgetResult(st->conn);
        if (r == NULL) {
            if (PQstatus(st->conn) != CONNECTION_OK) {
                if (ret == 0)
                    ret = pg_fail_res(st, NULL, what);
                break;
            }
            /* the end of one statement's replies */
            if (got_result)
                index++;
            got_result = 0;
            continue;
        }
        ExecStatusType s = PQresultStatus(r);
        if (s == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            break;
        }
        got_result = 1;
        if (ret == 0 && s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
            char named[300];
            if (namer != NULL)
                namer(nud, index, named, sizeof named);
            ret = pg_fail_res(st, r, namer != NULL ? named : what);
        } else if (ret == 0 && s == PGRES_TUPLES_OK && cb != NULL && cb(ud, index, r) != 0)
            ret = -1;
        PQclear(r);
    }
    if (PQexitPipelineMode(st->conn) != 1 && ret == 0)
        ret = pg_fail_res(st, NULL, what);
    return ret;
}

/* Ends the pipeline whose statements the caller queued: sent is 0, or
 * nonzero when a send failed (the pipeline is then left keeping that
 * send's message, which ending it would replace with its own); else the
 * replies are read as pg_pipe_end reads them. 0 or -1. */
static int pg_pipe_finish(struct pg_store *st, int sent, const char *what, pg_namer namer, void *nud,
                          int (*cb)(void *ud, size_t index, const PGresult *r), void *ud)
{
    if (sent == 0)
        return pg_pipe_end(st, what, namer, nud, cb, ud);
    char keep[sizeof st->base.err];
    memcpy(keep, st->base.err, sizeof keep);
    pg_pipe_end(st, what, NULL, NULL, NULL, NULL);
    memcpy(st->base.err, keep, sizeof keep);
    return -1;
}

/* ---- columns ---------------------------------------------------------- */

/* A heap copy of a text column, or NULL for SQL NULL; *oom set when the
 * copy cannot be made. */
static char *pg_col_dup(const PGresult *r, int row, int col, int *oom)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    char *p = strdup(PQgetvalue(r, row, col));
    if (p == NULL)
        *oom = 1;
    return p;
}

static int64_t pg_col_int(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static double pg_col_dbl(const PGresult *r, int row, int col)
{
    return strtod(PQgetvalue(r, row, col), NULL);
}

/* The bytes of a bytea column (text format, unescaped) in a malloc'd
 * buffer with a NUL after them; *len gets their number. NULL with *len 0
 * for SQL NULL; NULL with *oom set when memory runs out. */
static char *pg_col_bytes(const PGresult *r, int row, int col, size_t *len, int *oom)
{
    *len = 0;
    if (PQgetisnull(r, row, col))
        return NULL;
    size_t n = 0;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &n);
    char *p = raw != NULL ? malloc(n + 1) : NULL;
    if (p == NULL) {
        PQfreemem(raw);
        *oom = 1;
        return NULL;
    }
    if (n > 0)
        memcpy(p, raw, n);
    p[n] = '\0';
    PQfreemem(raw);
    *len = n;
    return p;
}

/* Reads row of r, column after column, into the places the arguments
 * point to, as types says (the counterpart of pg_query):
 *   s  char **            a heap copy (pg_col_dup), NULL for SQL NULL
 *   i  int64_t *
 *   d  double *
 *   b  char **, size_t *  a bytea's bytes (pg_col_bytes)
 *   -  nothing            the column is skipped
 * 0, or -1 when memory ran out: the copies made are the caller's to free
 * (each place not reached or not copied holds NULL). */
static int pg_scan(const PGresult *r, int row, const char *types, ...)
{
    int oom = 0;
    va_list ap;
    va_start(ap, types);
    for (int col = 0; types[col] != '\0'; col++) {
        char t = types[col];
        if (t == 's') {
            *va_arg(ap, char **) = pg_col_dup(r, row, col, &oom);
        } else if (t == 'i') {
            *va_arg(ap, int64_t *) = pg_col_int(r, row, col);
        } else if (t == 'd') {
            *va_arg(ap, double *) = pg_col_dbl(r, row, col);
        } else if (t == 'b') {
            char **b = va_arg(ap, char **);
            *b = pg_col_bytes(r, row, col, va_arg(ap, size_t *), &oom);
        }
    }
    va_end(ap);
    return oom ? -1 : 0;
}

/* ---- runs ------------------------------------------------------------- */

/* Fills out (zeroed first, heap strings it then owns) from row of a
 * PG_RUN_SELECT result. 0, or -1 when memory runs out (out cleared). */
static int pg_run_row(const PGresult *r, int row, struct orch_run *out)
{
    memset(out, 0, sizeof *out);
    int rc = pg_scan(r, row, "sssssssssss-iiiiiiiiiiiiidii", &out->id, &out->name, &out->identity,
                     &out->workflow_path, &out->workflow_hash, &out->input, &out->input_fp, &out->params,
                     &out->output, &out->error, &out->owner_host, &out->owner_pid, &out->heartbeat_ms,
                     &out->created_ms, &out->updated_ms, &out->finished_ms, &out->rows_done, &out->rows_ok,
                     &out->rows_failed, &out->rows_dropped, &out->rows_defaulted, &out->llm_calls,
                     &out->tokens_in, &out->tokens_out, &out->cost_usd, &out->recoveries, &out->checkpoints);
    int status = orch_run_status_parse(PQgetvalue(r, row, 11));
    out->status = status >= 0 ? (enum orch_run_status)status : ORCH_RUN_FAILED;
    if (rc != 0)
        orch_run_clear(out);
    return rc;
}

static void pg_params_run_update(struct pg_params *p, const struct orch_run *r, int64_t now)
{
    p_text(p, r->id);
    p_text(p, orch_run_status_name(r->status));
    p_text(p, r->error);
    p_int(p, r->owner_pid);
    p_text(p, r->owner_host);
    p_int(p, r->heartbeat_ms);
    p_int(p, r->finished_ms);
    p_int(p, r->rows_done);
    p_int(p, r->rows_ok);
    p_int(p, r->rows_failed);
    p_int(p, r->rows_dropped);
    p_int(p, r->rows_defaulted);
    p_int(p, r->llm_calls);
    p_int(p, r->tokens_in);
    p_int(p, r->tokens_out);
    p_dbl(p, r->cost_usd);
    p_int(p, r->recoveries);
    p_int(p, now);
}

/* Runs PG_RUN_UPDATE for r; a run that does not exist is an error. */
static int pg_run_update_stmt(struct pg_store *st, const struct orch_run *r)
{
    struct pg_params p = {0};
    pg_params_run_update(&p, r, orch_store_now_ms());
    int64_t n = pg_changes(pg_exec(st, PG_RUN_UPDATE, NULL, &p, "cannot update run"));
    if (n < 0)
        return -1;
    if (n != 1)
        return orch_store_fail(&st->base, "cannot update run %s: no such run", r->id);
    return 0;
}

static int pg_run_create(struct orch_store *base, const struct orch_run *r)
{
    int64_t created = r->created_ms != 0 ? r->created_ms : orch_store_now_ms();
    int64_t updated = r->updated_ms != 0 ? r->updated_ms : created;
    PGresult *res =
        pg_query(pg_of(base), PG_RUN_INSERT, "ttttttttttttiiiiiiiiiiiiidi", r->id, r->name, r->identity,
                 r->workflow_path, r->workflow_hash, r->input, r->input_fp, r->params, r->output, r->error,
                 r->owner_host, orch_run_status_name(r->status), r->owner_pid, r->heartbeat_ms, created,
                 updated, r->finished_ms, r->rows_done, r->rows_ok, r->rows_failed, r->rows_dropped,
                 r->rows_defaulted, r->llm_calls, r->tokens_in, r->tokens_out, r->cost_usd, r->recoveries,
                 "cannot create run %s", r->id != NULL ? r->id : "(null)");
    return pg_changes(res) < 0 ? -1 : 0;
}

/* Runs a PG_RUN_SELECT statement expected to give at most one row: 1 with
 * out filled, 0 none, -1 error. */
static int pg_run_one(struct pg_store *st, enum pg_stmt i, const char *key, struct orch_run *out,
                      const char *what)
{
    PGresult *r = pg_query(st, i, "t", key, "%s", what);
    if (r == NULL)
        return -1;
    int ret = 0;
    if (PQntuples(r) > 0) {
        ret = 1;
        if (pg_run_row(r, 0, out) != 0)
            ret = orch_store_fail(&st->base, "%s: out of memory", what);
    }
    PQclear(r);
    return ret;
}

static int pg_run_get(struct orch_store *base, const char *id, struct orch_run *out)
{
    return pg_run_one(pg_of(base), PG_RUN_GET, id, out, "cannot read run");
}

static int pg_run_find_unfinished(struct orch_store *base, const char *identity, struct orch_run *out)
{
    return pg_run_one(pg_of(base), PG_RUN_FIND, identity, out, "cannot look up unfinished runs");
}

static int pg_run_update(struct orch_store *base, const struct orch_run *r)
{
    return pg_run_update_stmt(pg_of(base), r);
}

static int pg_run_claim(struct orch_store *base, const char *id, int64_t pid, const char *host,
                        int64_t now_ms, int64_t expect_pid, int64_t expect_heartbeat_ms)
{
    int64_t n = pg_changes(pg_query(pg_of(base), PG_RUN_CLAIM, "titiii", id, pid, host, now_ms, expect_pid,
                                    expect_heartbeat_ms, "cannot claim run"));
    if (n < 0)
        return -1;
    return n == 1 ? 1 : 0;
}

static int pg_run_heartbeat(struct orch_store *base, const char *id, int64_t now_ms)
{
    struct pg_store *st = pg_of(base);
    int64_t n = pg_changes(pg_query(st, PG_RUN_HEARTBEAT, "ti", id, now_ms, "cannot record a heartbeat"));
    if (n < 0)
        return -1;
    if (n != 1)
        return orch_store_fail(&st->base, "cannot record the heartbeat of run %s: no such run", id);
    return 0;
}

/* One statement, so one transaction: the run and everything stored for it
 * (ON DELETE CASCADE). 1, 0 when there is no such run, or -1. */
static int pg_run_delete(struct orch_store *base, const char *id)
{
    int64_t n = pg_changes(pg_query(pg_of(base), PG_RUN_DELETE, "t", id, "cannot delete a run"));
    if (n < 0)
        return -1;
    return n > 0 ? 1 : 0;
}

static int pg_journal_prune(struct orch_store *base, int64_t before_ms, int64_t *removed)
{
    *removed = pg_changes(pg_query(pg_of(base), PG_JR_PRUNE, "i", before_ms, "cannot prune the journal"));
    return *removed < 0 ? -1 : 0;
}

/* Plain VACUUM, not VACUUM FULL: the space of deleted rows is marked for
 * reuse (PostgreSQL rarely hands it back to the file system) without the
 * exclusive locks FULL takes, which would stall every run writing to the
 * same database while gc rewrites the tables. */
static int pg_vacuum(struct orch_store *base)
{
    return pg_simple(pg_of(base), "VACUUM (ANALYZE) runs, checkpoints, results, events, state, llm_journal",
                     "cannot vacuum the store");
}

/* What a listing hands each row to: the caller's callback and its ud,
 * and the run listed (for messages). */
struct pg_list {
    union {
        orch_run_cb run;
        orch_result_cb result;
        orch_event_cb event;
    } cb;
    void *ud;
    const char *run_id;
};

/* Hands row after row of r (NULL: the query failed) to each until it
 * returns non-zero: 1 to stop, -1 failed with st->base.err set. Clears r.
 * Returns 0 or -1. */
static int pg_each_row(struct pg_store *st, PGresult *r,
                       int (*each)(struct pg_store *, PGresult *, int, void *), void *ud)
{
    if (r == NULL)
        return -1;
    int ret = 0;
    for (int i = 0; i < PQntuples(r) && ret == 0; i++)
        ret = each(st, r, i, ud);
    PQclear(r);
    return ret < 0 ? -1 : 0;
}

static int pg_run_each(struct pg_store *st, PGresult *r, int i, void *ud)
{
    struct pg_list *c = ud;
    struct orch_run run;
    if (pg_run_row(r, i, &run) != 0)
        return orch_store_fail(&st->base, "cannot list runs: out of memory");
    int stop = c->cb.run(c->ud, &run);
    orch_run_clear(&run);
    return stop ? 1 : 0;
}

static int pg_run_list(struct orch_store *base, const struct orch_run_filter *f, orch_run_cb cb, void *ud)
{
    struct pg_store *st = pg_of(base);
    struct orch_run_filter none = {0};
    if (f == NULL)
        f = &none;
    struct pg_list c = {.cb.run = cb, .ud = ud};
    PGresult *r =
        pg_query(st, PG_RUN_LIST, "ttii", f->status, f->name, f->since_ms, f->until_ms, "cannot list runs");
    return pg_each_row(st, r, pg_run_each, &c);
}

/* ---- checkpoints ------------------------------------------------------ */

/* Fills p (zeroed first; heap strings and the stored memento frame it
 * then owns) from row of a PG_CP_COLS result. 0, or -1 when memory runs
 * out (p cleared). */
static int pg_checkpoint_row(const PGresult *r, int row, struct orch_checkpoint_packed *p)
{
    struct orch_checkpoint *out = &p->c;
    memset(p, 0, sizeof *p);
    int oom = pg_scan(r, row, "issiiiiii-isid", &out->seq, &out->name, &out->reason, &out->created_ms,
                      &out->input_offset, &out->input_line, &out->input_index, &out->output_offset,
                      &out->errors_offset, &p->raw_len, &out->checksum, &out->bytes, &out->duration_ms) != 0;
    out->memento = pg_col_bytes(r, row, 9, &out->memento_len, &oom);
    if (oom) {
        orch_checkpoint_clear(out);
        return -1;
    }
    return 0;
}

/* A growing buffer for an array parameter's text ("{1,2}", "{"a",NULL}"). */
struct pg_buf {
    char *p;
    size_t n, cap;
    int oom;
};

static void buf_put(struct pg_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap != 0 ? b->cap : 256;
        while (b->n + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

/* Appends one element of a text[] value: NULL, or the string quoted with
 * its '"' and '\' escaped, as the array input syntax wants. */
static void buf_elem(struct pg_buf *b, const char *s)
{
    buf_put(b, b->n > 1 ? "," : "", b->n > 1 ? 1 : 0);
    if (s == NULL) {
        buf_put(b, "NULL", 4);
        return;
    }
    buf_put(b, "\"", 1);
    const char *c = s;
    for (;;) {
        size_t run = strcspn(c, "\"\\");
        buf_put(b, c, run);
        c += run;
        if (*c == '\0')
            break;
        buf_put(b, "\\", 1);
        buf_put(b, c, 1);
        c++;
    }
    buf_put(b, "\"", 1);
}

/* Appends x to an int8[] literal being built ("{1,2,3"). */
static void buf_int(struct pg_buf *b, int64_t x)
{
    char num[32];
    snprintf(num, sizeof num, "%s%lld", b->n > 1 ? "," : "", (long long)x);
    buf_put(b, num, strlen(num));
}

/* Array values built a row at a time, an element to each column, for
 * the statements that take a batch as arrays (unnest): each value opens
 * with its first element. */
struct pg_arrays {
    struct pg_buf col[5];
};

/* Appends one row, as types says (i int64_t, t const char *: as
 * pg_query's). */
static void arrays_row(struct pg_arrays *a, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    for (int k = 0; types[k] != '\0'; k++) {
        struct pg_buf *b = &a->col[k];
        if (b->n == 0)
            buf_put(b, "{", 1);
        if (types[k] == 'i')
            buf_int(b, va_arg(ap, int64_t));
        else
            buf_elem(b, va_arg(ap, const char *));
    }
    va_end(ap);
}

/* Closes the first n values. 0, or -1 (st->err set) when memory ran out
 * for any of them. */
static int arrays_close(struct pg_store *st, struct pg_arrays *a, int n, const char *what)
{
    int oom = 0;
    for (int k = 0; k < n; k++) {
        if (a->col[k].n == 0)
            buf_put(&a->col[k], "{", 1);
        buf_put(&a->col[k], "}", 1);
        oom |= a->col[k].oom;
    }
    return oom ? orch_store_fail(&st->base, "%s: out of memory", what) : 0;
}

static void arrays_free(struct pg_arrays *a)
{
    for (size_t k = 0; k < sizeof a->col / sizeof a->col[0]; k++)
        free(a->col[k].p);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Whether res can go in one PG_RES_BULK statement: no row carries data
 * (the arrays hold text only), none lacks its status (refused here, naming
 * the row, as a row-by-row insert would), and no seq comes twice (one
 * statement cannot upsert a row twice). -1 with st->err set for a missing
 * status. */
static int pg_res_bulk_ok(struct pg_store *st, const char *run_id, const struct orch_result *res, size_t nres)
{
    if (nres < 2)
        return 0;
    for (size_t i = 0; i < nres; i++) {
        if (res[i].status == NULL)
            return orch_store_fail(&st->base, "cannot store result %lld of run %s: it has no status",
                                   (long long)res[i].seq, run_id);
        if (res[i].data != NULL)
            return 0;
    }
    int64_t *seqs = malloc(nres * sizeof *seqs);
    if (seqs == NULL)
        return 0;
    for (size_t i = 0; i < nres; i++)
        seqs[i] = res[i].seq;
    qsort(seqs, nres, sizeof *seqs, cmp_i64);
    int ok = 1;
    for (size_t i = 1; i < nres && ok; i++)
        ok = seqs[i] != seqs[i - 1];
    free(seqs);
    return ok;
}

/* Queues res as one PG_RES_BULK statement. 0 or -1. */
static int pg_res_bulk_send(struct pg_store *st, const char *run_id, int64_t seq,
                            const struct orch_result *res, size_t nres, const char *what)
{
    struct pg_arrays a = {0};
    for (size_t i = 0; i < nres; i++)
        arrays_row(&a, "ittt", res[i].seq, res[i].key, res[i].status, res[i].error);
    int rc = arrays_close(st, &a, 4, what);
    if (rc == 0) {
        struct pg_params p = {0};
        p_text(&p, run_id);
        for (int k = 0; k < 4; k++)
            p_text(&p, a.col[k].p);
        p_int(&p, seq);
        rc = pg_pipe_send(st, PG_RES_BULK, &p, what);
    }
    arrays_free(&a);
    return rc;
}

/* What a checkpoint write queues, in order: the results, the state
 * entries, the run update, the checkpoint. */
struct pg_cp_names {
    const char *run_id;
    int64_t seq;
    const struct orch_result *res;
    size_t nres;
    int bulk; /* the results went as one statement */
    const struct orch_kv *state;
    size_t nstate;
};

static void pg_cp_namer(void *ud, size_t index, char *what, size_t whatlen)
{
    const struct pg_cp_names *n = ud;
    if (n->bulk && index == 0) {
        snprintf(what, whatlen, "cannot store the %zu results of run %s", n->nres, n->run_id);
        return;
    }
    if (n->bulk)
        index += n->nres - 1; /* the one statement stood for nres */
    if (index < n->nres) {
        snprintf(what, whatlen, "cannot store result %lld of run %s", (long long)n->res[index].seq,
                 n->run_id);
    } else if (index < n->nres + n->nstate) {
        const char *key = n->state[index - n->nres].key;
        snprintf(what, whatlen, "cannot store state key %s of run %s", key != NULL ? key : "(null)",
                 n->run_id);
    } else if (index == n->nres + n->nstate) {
        snprintf(what, whatlen, "cannot update run");
    } else {
        snprintf(what, whatlen, "cannot store checkpoint %lld of run %s", (long long)n->seq, n->run_id);
    }
}

/* Queues a checkpoint's results (in one statement when bulk) and its
 * state entries in the open pipeline. Returns 0, or nonzero with the
 * message in st->base.err. */
static int pg_cp_send_rows(struct pg_store *st, const char *run_id, int64_t seq,
                           const struct orch_result *res, size_t nres, int bulk, const struct orch_kv *state,
                           size_t nstate, const char *what)
{
    struct pg_params p;
    int sent = bulk ? pg_res_bulk_send(st, run_id, seq, res, nres, what) : 0;
    for (size_t i = 0; i < nres && sent == 0 && !bulk; i++) {
        const struct orch_result *x = &res[i];
        memset(&p, 0, sizeof p);
        p_text(&p, run_id);
        p_int(&p, x->seq);
        p_text(&p, x->key);
        p_text(&p, x->status);
        p_text(&p, x->error);
        if (x->data != NULL)
            p_bytes(&p, x->data, x->data_len);
        else
            p_text(&p, NULL);
        p_int(&p, seq);
        sent = pg_pipe_send(st, PG_RES_INSERT, &p, what);
    }
    for (size_t i = 0; i < nstate && sent == 0; i++) {
        const struct orch_kv *kv = &state[i];
        memset(&p, 0, sizeof p);
        p_text(&p, run_id);
        p_text(&p, kv->key);
        if (kv->value != NULL)
            p_bytes(&p, kv->value, kv->value_len);
        sent = pg_pipe_send(st, kv->value == NULL ? PG_STATE_DELETE : PG_STATE_UPSERT, &p, what);
    }
    return sent;
}

/* Queues the run's counters and the checkpoint row. Returns 0, or nonzero
 * with the message in st->base.err. */
static int pg_cp_send_tail(struct pg_store *st, const struct orch_run *run,
                           const struct orch_checkpoint_seal *row, const char *what)
{
    const struct orch_checkpoint *c = row->c;
    struct pg_params p = {0};
    pg_params_run_update(&p, run, orch_store_now_ms());
    int sent = pg_pipe_send(st, PG_RUN_UPDATE, &p, what);
    if (sent != 0)
        return sent;
    memset(&p, 0, sizeof p);
    p_text(&p, run->id);
    p_int(&p, row->seq);
    p_text(&p, c->name);
    p_text(&p, c->reason);
    p_int(&p, row->created_ms);
    p_int(&p, c->input_offset);
    p_int(&p, c->input_line);
    p_int(&p, c->input_index);
    p_int(&p, c->output_offset);
    p_int(&p, c->errors_offset);
    p_bytes(&p, row->packed, row->packed_len);
    p_int(&p, (int64_t)c->memento_len);
    p_text(&p, row->sum);
    p_int(&p, row->bytes);
    p_dbl(&p, orch_store_mono_ms() - row->t0);
    return pg_pipe_send(st, PG_CP_INSERT, &p, what);
}

/* In the open transaction: locks the run row, numbers the checkpoint and
 * seals it (store_impl.h). Returns 0, or -1 with st->base.err set. */
static int pg_cp_number(struct pg_store *st, const char *run_id, struct orch_checkpoint_seal *seal)
{
    PGresult *r = pg_query(st, PG_RUN_LOCK_SEQ, "t", run_id, "cannot number a checkpoint of run %s", run_id);
    if (r == NULL)
        return -1;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return orch_store_fail(&st->base, "cannot update run %s: no such run", run_id);
    }
    int64_t seq = pg_col_int(r, 0, 0);
    PQclear(r);
    return orch_checkpoint_seal(&st->base, run_id, seal, seq);
}

/* One transaction, as on SQLite: the run row is locked and the next seq
 * read, then the results, state, run counters and the checkpoint go out
 * in one pipeline (one round trip), then COMMIT. On failure nothing is
 * written. */
static int pg_checkpoint_write_once(struct orch_store *base, const struct orch_run *run,
                                    struct orch_checkpoint_seal *seal, const struct orch_result *res,
                                    size_t nres, const struct orch_kv *state, size_t nstate)
{
    struct pg_store *st = pg_of(base);
    const char *run_id = run->id;
    char what[300];
    if (pg_begin(st, "cannot start the checkpoint transaction") != 0)
        return -1;
    if (pg_cp_number(st, run_id, seal) != 0)
        goto fail;
    int64_t seq = seal->seq;
    snprintf(what, sizeof what, "cannot store checkpoint %lld of run %s", (long long)seq, run_id);
    int bulk = pg_res_bulk_ok(st, run_id, res, nres);
    if (bulk < 0)
        goto fail;
    struct pg_cp_names names = {run_id, seq, res, nres, bulk, state, nstate};
    if (pg_pipe_begin(st, what) != 0)
        goto fail;
    int sent = pg_cp_send_rows(st, run_id, seq, res, nres, bulk, state, nstate, what);
    if (sent == 0)
        sent = pg_cp_send_tail(st, run, seal, what);
    if (pg_pipe_finish(st, sent, what, pg_cp_namer, &names, NULL, NULL) != 0 ||
        pg_commit(st, "cannot commit the checkpoint") != 0)
        goto fail;
    return 0;

fail:
    pg_abort(st);
    return -1;
}

/* A checkpoint whose transaction the lost connection took along is
 * written again on a new one. Should the first COMMIT have landed with
 * only its reply lost, the second writes the same cursor and results once
 * more under the next seq: resuming from either gives the same run. */
static int pg_checkpoint_write(struct orch_store *base, const struct orch_run *run,
                               struct orch_checkpoint_seal *seal, const struct orch_result *res, size_t nres,
                               const struct orch_kv *state, size_t nstate)
{
    struct pg_store *st = pg_of(base);
    int rc = pg_checkpoint_write_once(base, run, seal, res, nres, state, nstate);
    if (rc != 0 && pg_reconnect(st))
        rc = pg_checkpoint_write_once(base, run, seal, res, nres, state, nstate);
    return rc;
}

/* One checkpoint (seq > 0) or all, newest or oldest first. */
static int pg_checkpoint_scan(struct orch_store *base, const char *run_id, int64_t seq, int newest_first,
                              const char *what, orch_packed_cb cb, void *ud)
{
    struct pg_store *st = pg_of(base);
    struct pg_params p = {0};
    p_text(&p, run_id);
    if (seq > 0)
        p_int(&p, seq);
    PGresult *r = pg_exec(st, seq > 0 ? PG_CP_GET : newest_first ? PG_CP_NEWEST : PG_CP_LIST, NULL, &p, what);
    if (r == NULL)
        return -1;
    int ret = 0;
    for (int i = 0; ret == 0 && i < PQntuples(r); i++) {
        struct orch_checkpoint_packed row;
        if (pg_checkpoint_row(r, i, &row) != 0) {
            ret = orch_store_fail(&st->base, "%s: out of memory", what);
            break;
        }
        ret = cb(ud, &row);
    }
    PQclear(r);
    return ret;
}

/* Deletes checkpoints after seq and their results, in one transaction. */
static int pg_checkpoint_rollback(struct orch_store *base, const char *run_id, int64_t seq)
{
    struct pg_store *st = pg_of(base);
    if (pg_begin(st, "cannot start the rollback transaction") != 0)
        return -1;
    static const enum pg_stmt which[] = {PG_CP_DELETE_AFTER, PG_RES_DELETE_AFTER};
    for (size_t i = 0; i < sizeof which / sizeof which[0]; i++) {
        if (pg_changes(pg_query(st, which[i], "ti", run_id, seq, "cannot roll run %s back to checkpoint %lld",
                                run_id, (long long)seq)) < 0) {
            pg_abort(st);
            return -1;
        }
    }
    if (pg_commit(st, "cannot commit the rollback") != 0) {
        pg_abort(st);
        return -1;
    }
    return 0;
}

/* ---- results, events, state ------------------------------------------- */

/* Runs the listing statement i, whose one parameter is run_id: NULL with
 * "cannot list the <things> of run <id>" in st->base.err on failure. */
static PGresult *pg_run_listing(struct pg_store *st, enum pg_stmt i, const char *run_id, const char *things)
{
    return pg_query(st, i, "t", run_id, "cannot list the %s of run %s", things,
                    run_id != NULL ? run_id : "(none)");
}

static int pg_result_each(struct pg_store *st, PGresult *r, int i, void *ud)
{
    struct pg_list *c = ud;
    int oom = 0;
    struct orch_result x;
    x.seq = pg_col_int(r, i, 0);
    x.key = PQgetisnull(r, i, 1) ? NULL : PQgetvalue(r, i, 1);
    x.status = PQgetvalue(r, i, 2);
    x.error = PQgetisnull(r, i, 3) ? NULL : PQgetvalue(r, i, 3);
    char *data = pg_col_bytes(r, i, 4, &x.data_len, &oom);
    x.data = data;
    if (oom)
        return orch_store_fail(&st->base, "cannot list the results of run %s: out of memory", c->run_id);
    int stop = c->cb.result(c->ud, &x);
    free(data);
    return stop ? 1 : 0;
}

/* cb gets pointers valid during the call only. */
static int pg_result_list(struct orch_store *base, const char *run_id, orch_result_cb cb, void *ud)
{
    struct pg_store *st = pg_of(base);
    struct pg_list c = {.cb.result = cb, .ud = ud, .run_id = run_id};
    return pg_each_row(st, pg_run_listing(st, PG_RES_LIST, run_id, "results"), pg_result_each, &c);
}

static int pg_event_add(struct orch_store *base, const char *run_id, const char *type, const char *data)
{
    PGresult *r = pg_query(pg_of(base), PG_EV_INSERT, "titt", run_id, orch_store_now_ms(), type, data,
                           "cannot record an event");
    return pg_changes(r) < 0 ? -1 : 0;
}

static int pg_event_each(struct pg_store *st, PGresult *r, int i, void *ud)
{
    struct pg_list *c = ud;
    struct orch_event e = {0};
    if (pg_scan(r, i, "iiss", &e.id, &e.ts_ms, &e.type, &e.data) != 0) {
        orch_event_clear(&e);
        return orch_store_fail(&st->base, "cannot list the events of run %s: out of memory",
                               c->run_id != NULL ? c->run_id : "(none)");
    }
    int stop = c->cb.event(c->ud, &e);
    orch_event_clear(&e);
    return stop ? 1 : 0;
}

static int pg_event_list(struct orch_store *base, const char *run_id, orch_event_cb cb, void *ud)
{
    struct pg_store *st = pg_of(base);
    struct pg_list c = {.cb.event = cb, .ud = ud, .run_id = run_id};
    return pg_each_row(st, pg_run_listing(st, PG_EV_LIST, run_id, "events"), pg_event_each, &c);
}

static int pg_state_list(struct orch_store *base, const char *run_id,
                         int (*cb)(void *ud, const char *key, const char *value, size_t len), void *ud)
{
    struct pg_store *st = pg_of(base);
    PGresult *r = pg_run_listing(st, PG_STATE_LIST, run_id, "state");
    if (r == NULL)
        return -1;
    for (int i = 0; i < PQntuples(r); i++) {
        if (cb(ud, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1)))
            break;
    }
    PQclear(r);
    return 0;
}

/* The one row of a no-parameter statement, or NULL with st->err set. */
static PGresult *pg_row1(struct pg_store *st, enum pg_stmt i, const char *what)
{
    PGresult *r = pg_query(st, i, "", "%s", what);
    if (r != NULL && PQntuples(r) != 1) {
        PQclear(r);
        orch_store_fail(&st->base, "%s: no row", what);
        return NULL;
    }
    return r;
}

static int pg_stats(struct orch_store *base, struct orch_store_stats *out)
{
    struct pg_store *st = pg_of(base);
    memset(out, 0, sizeof *out);
    for (int q = 0; q < ORCH_STATS_NQUERIES; q++) {
        PGresult *r = pg_row1(st, PG_STATS_RUNS + q, orch_stats_what[q]);
        if (r == NULL)
            return -1;
        for (int c = 0; c < orch_stats_ncols(q); c++)
            orch_stats_set(out, q, c, pg_col_int(r, 0, c), pg_col_dbl(r, 0, c));
        PQclear(r);
    }
    return 0;
}

/* ---- LLM response journal --------------------------------------------- */

/* The values of PG_JR_INSERT for e. -1 (st->err set) for an entry that
 * cannot be journaled. */
static int pg_journal_params(struct pg_store *st, const struct orch_journal_entry *e, struct pg_params *p)
{
    if (e->key == NULL || e->key[0] == '\0')
        return orch_store_fail(&st->base, "cannot journal a response: it has no key");
    if (e->response == NULL && e->response_len > 0)
        return orch_store_fail(&st->base, "cannot journal response %s: %zu bytes announced but no data",
                               e->key, e->response_len);
    memset(p, 0, sizeof *p);
    p_text(p, e->key);
    p_text(p, e->run_id);
    p_text(p, e->provider);
    p_text(p, e->model);
    p_bytes(p, e->response, e->response_len);
    p_int(p, e->tokens_in);
    p_int(p, e->tokens_out);
    p_dbl(p, e->cost_usd);
    p_dbl(p, e->latency_ms);
    p_int(p, e->created_ms != 0 ? e->created_ms : orch_store_now_ms());
    return 0;
}

/* One autocommit INSERT: committed (and, with the server's default
 * synchronous_commit, on its disk) when this returns. */
static int pg_journal_put(struct orch_store *base, const struct orch_journal_entry *e)
{
    struct pg_store *st = pg_of(base);
    struct pg_params p;
    if (pg_journal_params(st, e, &p) != 0)
        return -1;
    return pg_changes(pg_exec(st, PG_JR_INSERT, NULL, &p, "cannot journal an LLM response")) < 0 ? -1 : 0;
}

/* Fills out from row 0 of a PG_JR_COLS result. 0 or -1 (out of memory). */
static int pg_journal_row(const PGresult *r, struct orch_journal_owned *out)
{
    memset(out, 0, sizeof *out);
    int oom = pg_scan(r, 0, "ssssbiiddii", &out->key, &out->run_id, &out->provider, &out->model,
                      &out->response, &out->response_len, &out->tokens_in, &out->tokens_out, &out->cost_usd,
                      &out->latency_ms, &out->created_ms, &out->hits) != 0;
    if (out->response == NULL && !oom) {
        out->response = calloc(1, 1);
        oom = out->response == NULL;
    }
    if (oom) {
        orch_journal_clear(out);
        return -1;
    }
    return 0;
}

/* A lookup's result: 1 with out filled, 0 none, -1 error. */
static int pg_journal_found(struct pg_store *st, const PGresult *r, const char *key,
                            struct orch_journal_owned *out)
{
    if (PQntuples(r) == 0)
        return 0;
    if (pg_journal_row(r, out) != 0)
        return orch_store_fail(&st->base, "cannot read journaled response %s: out of memory", key);
    return 1;
}

/* Looks up and counts the hit in one statement. Where the hit cannot be
 * written (a read-only store or a failed UPDATE outside a transaction) the
 * reply is read without counting it, since failing here would make the
 * caller pay for the request again. */
static int pg_journal_get(struct orch_store *base, const char *key, struct orch_journal_owned *out)
{
    struct pg_store *st = pg_of(base);
    if (key == NULL)
        return orch_store_fail(&st->base, "cannot look up a journaled response: no key");
    const char *what = "cannot look up journaled response %s";
    PGresult *r = NULL;
    if (!st->readonly)
        r = pg_query(st, PG_JR_GET_HIT, "t", key, what, key);
    if (r == NULL && PQtransactionStatus(st->conn) == PQTRANS_IDLE)
        r = pg_query(st, PG_JR_GET, "t", key, what, key);
    if (r == NULL)
        return -1;
    int ret = pg_journal_found(st, r, key, out);
    PQclear(r);
    return ret;
}

struct pg_batch {
    struct pg_store *st;
    size_t first; /* index of the first lookup among the queued statements */
    struct orch_journal_lookup *gets;
};

static int pg_batch_answer(void *ud, size_t index, const PGresult *r)
{
    struct pg_batch *b = ud;
    if (index < b->first)
        return 0;
    struct orch_journal_lookup *g = &b->gets[index - b->first];
    int rc = pg_journal_found(b->st, r, g->key, &g->out);
    if (rc < 0)
        return -1;
    g->found = rc;
    return 0;
}

/* A group commit: the n puts and the m lookups (which see them) go out in
 * one pipeline inside one transaction: two round trips besides BEGIN,
 * whatever n and m. */
static int pg_journal_batch_once(struct orch_store *base, const struct orch_journal_entry *e, size_t n,
                                 struct orch_journal_lookup *gets, size_t m)
{
    struct pg_store *st = pg_of(base);
    for (size_t i = 0; i < m; i++) {
        gets[i].found = 0;
        memset(&gets[i].out, 0, sizeof gets[i].out);
    }
    if (n + m == 0)
        return 0;
    for (size_t i = 0; i < m; i++) {
        if (gets[i].key == NULL)
            return orch_store_fail(&st->base, "cannot look up a journaled response: no key");
    }
    struct pg_params p;
    for (size_t i = 0; i < n; i++) {
        if (pg_journal_params(st, &e[i], &p) != 0)
            return -1;
    }
    if (pg_begin(st, "cannot start journaling") != 0)
        return -1;
    const char *what = "cannot journal LLM responses";
    if (pg_pipe_begin(st, what) != 0)
        goto fail;
    int sent = 0;
    for (size_t i = 0; i < n && sent == 0; i++) {
        pg_journal_params(st, &e[i], &p);
        sent = pg_pipe_send(st, PG_JR_INSERT, &p, what);
    }
    for (size_t i = 0; i < m && sent == 0; i++) {
        memset(&p, 0, sizeof p);
        p_text(&p, gets[i].key);
        sent = pg_pipe_send(st, st->readonly ? PG_JR_GET : PG_JR_GET_HIT, &p, what);
    }
    struct pg_batch b = {st, n, gets};
    if (pg_pipe_finish(st, sent, what, NULL, NULL, pg_batch_answer, &b) != 0 ||
        pg_commit(st, "cannot commit journaled responses") != 0)
        goto fail;
    return 0;
fail:
    pg_abort(st);
    for (size_t i = 0; i < m; i++) {
        orch_journal_clear(&gets[i].out);
        gets[i].found = 0;
    }
    return -1;
}

/* Sent again on a new connection when the server dropped the first: the
 * puts keep the first reply of a key, so a rerun changes nothing but the
 * hits. */
static int pg_journal_batch(struct orch_store *base, const struct orch_journal_entry *e, size_t n,
                            struct orch_journal_lookup *gets, size_t m)
{
    int rc = pg_journal_batch_once(base, e, n, gets, m);
    if (rc != 0 && pg_reconnect(pg_of(base)))
        rc = pg_journal_batch_once(base, e, n, gets, m);
    return rc;
}

/* ---- open / close ----------------------------------------------------- */

static void pg_close(struct orch_store *base)
{
    if (base == NULL)
        return;
    struct pg_store *st = pg_of(base);
    PQfinish(st->conn);
    free(st->target);
    free(st->shown);
    free(st);
}

/* "15.10" from libpq's encoding of a version (150010; 90624 for 9.6.24). */
static void pg_version_text(int v, char *out, size_t outlen)
{
    if (v >= 100000)
        snprintf(out, outlen, "%d.%d", v / 10000, v % 10000);
    else
        snprintf(out, outlen, "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
}

void orch_store_pg_library(char *out, size_t outlen)
{
    char v[32];
    pg_version_text(PQlibVersion(), v, sizeof v);
    snprintf(out, outlen, "PostgreSQL %s (libpq)", v);
}

/* The server's version, as the connection reported it at login. */
static void pg_version(struct orch_store *base, char *out, size_t outlen)
{
    char v[32];
    pg_version_text(PQserverVersion(pg_of(base)->conn), v, sizeof v);
    snprintf(out, outlen, "PostgreSQL %s", v);
}

/* ---- live figures ---- */

static int pg_live_put(struct orch_store *base, const char *run_id, int64_t updated_ms, const char *figures)
{
    struct pg_store *st = pg_of(base);
    int64_t n = pg_changes(
        pg_query(st, PG_LIVE_PUT, "tit", run_id, updated_ms, figures, "cannot record live figures"));
    if (n < 0)
        return -1;
    if (n != 1)
        return orch_store_fail(&st->base, "cannot record the live figures of run %s: no such run", run_id);
    return 0;
}

static int pg_live_get(struct orch_store *base, const char *run_id, char **figures, int64_t *updated_ms)
{
    struct pg_store *st = pg_of(base);
    PGresult *r = pg_query(st, PG_LIVE_GET, "t", run_id, "cannot read live figures");
    if (r == NULL)
        return -1;
    int ret = 0;
    if (PQntuples(r) > 0) {
        ret = 1;
        if (pg_scan(r, 0, "si", figures, updated_ms) != 0 || *figures == NULL) {
            free(*figures);
            *figures = NULL;
            ret = orch_store_fail(&st->base, "cannot read the live figures of run %s: out of memory", run_id);
        }
    }
    PQclear(r);
    return ret;
}

static int pg_event_page(struct orch_store *base, const char *run_id, int64_t after_id, int64_t before_id,
                         int64_t limit, int newest_first, orch_event_cb cb, void *ud)
{
    struct pg_store *st = pg_of(base);
    struct pg_list c = {.cb.event = cb, .ud = ud, .run_id = run_id};
    PGresult *r = pg_query(st, newest_first ? PG_EV_PAGE_DESC : PG_EV_PAGE, "tiii", run_id, after_id,
                           before_id, limit, "cannot list the events of run %s", run_id);
    return pg_each_row(st, r, pg_event_each, &c);
}

static int pg_error_each(struct pg_store *st, PGresult *r, int i, void *ud)
{
    (void)st;
    struct pg_list *c = ud;
    struct orch_result x = {0};
    x.seq = pg_col_int(r, i, 0);
    x.key = PQgetisnull(r, i, 1) ? NULL : PQgetvalue(r, i, 1);
    x.status = PQgetvalue(r, i, 2);
    x.error = PQgetvalue(r, i, 3);
    return c->cb.result(c->ud, &x) ? 1 : 0;
}

static int pg_error_page(struct orch_store *base, const char *run_id, int64_t after_seq, int64_t limit,
                         orch_result_cb cb, void *ud)
{
    struct pg_store *st = pg_of(base);
    struct pg_list c = {.cb.result = cb, .ud = ud, .run_id = run_id};
    PGresult *r = pg_query(st, PG_ERR_PAGE, "tii", run_id, after_seq, limit,
                           "cannot list the failed rows of run %s", run_id);
    return pg_each_row(st, r, pg_error_each, &c);
}

/* ---- many workers, one run: leases and the shared budget --------------
 * Every time is the server's clock (PG_NOW_MS), never a worker's. These
 * statements go through PQexecParams (pg_query_sql): bound values,
 * constant SQL. */

#define PG_NOW_MS "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
#define PG_LEASE_COLS                                                                                        \
    "no, first_index, nrows, cur_offset, cur_line, cur_index, status, owner, claims, claimed_ms, "           \
    "heartbeat_ms, done_ms, " PG_NOW_MS " - heartbeat_ms"

/* Fills out from row i of a PG_LEASE_COLS result. 0, or -1 out of memory. */
static int pg_lease_row(const PGresult *r, int i, struct orch_lease *out)
{
    memset(out, 0, sizeof *out);
    if (pg_scan(r, i, "iiiiiissiiiii", &out->no, &out->first_index, &out->rows, &out->offset, &out->line,
                &out->index, &out->status, &out->owner, &out->claims, &out->claimed_ms, &out->heartbeat_ms,
                &out->done_ms, &out->age_ms) != 0) {
        orch_lease_clear(out);
        return -1;
    }
    return 0;
}

/* Inserts the n leases l in one statement, from arrays. 0 or -1. */
static int pg_lease_insert(struct pg_store *st, const char *run_id, const struct orch_lease *l, size_t n,
                           const char *what)
{
    struct pg_arrays a = {0};
    for (size_t i = 0; i < n; i++)
        arrays_row(&a, "iiiii", l[i].no, l[i].first_index, l[i].rows, l[i].offset, l[i].line);
    int rc = arrays_close(st, &a, 5, what);
    if (rc == 0 &&
        pg_changes(pg_query_sql(
            st,
            "INSERT INTO leases (run_id, no, first_index, nrows, cur_offset, cur_line, "
            "cur_index) SELECT $1, u.no, u.fi, u.n, u.off, u.line, u.fi FROM unnest($2::bigint[], "
            "$3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) AS u (no, fi, n, off, line)",
            "tttttt", run_id, a.col[0].p, a.col[1].p, a.col[2].p, a.col[3].p, a.col[4].p, "%s", what)) < 0)
        rc = -1;
    arrays_free(&a);
    return rc;
}

/* The run row is locked first: two workers planning at once plan once. */
static int pg_lease_plan(struct orch_store *base, const char *run_id, const struct orch_lease *l, size_t n)
{
    struct pg_store *st = pg_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot plan the leases of run %s", run_id);
    if (pg_begin(st, what) != 0)
        return -1;
    /* the lock first, then the count: a count in the locking statement
     * would read the snapshot taken before the wait */
    int64_t locked =
        pg_changes(pg_query_sql(st, "SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", "t", run_id, "%s", what));
    if (locked <= 0) {
        if (locked == 0)
            orch_store_fail(&st->base, "%s: no such run", what);
        goto fail;
    }
    PGresult *r = pg_query_sql(st, "SELECT count(*) FROM leases WHERE run_id = $1", "t", run_id, "%s", what);
    if (r == NULL)
        goto fail;
    int64_t have = pg_col_int(r, 0, 0);
    PQclear(r);
    if (have == 0 && n > 0 && pg_lease_insert(st, run_id, l, n, what) != 0)
        goto fail;
    if (pg_commit(st, what) != 0)
        goto fail;
    return 0;
fail:
    pg_abort(st);
    return -1;
}

static int pg_lease_claim(struct orch_store *base, const char *run_id, const char *worker, int64_t stale_ms,
                          struct orch_lease *out)
{
    struct pg_store *st = pg_of(base);
    const char *what = "cannot claim a lease of run %s";
    PGresult *r = pg_query_sql(
        st,
        "WITH c AS (SELECT no FROM leases WHERE run_id = $1 AND (status = 'free' OR (status = 'taken' AND "
        "heartbeat_ms < " PG_NOW_MS " - $3)) ORDER BY no LIMIT 1 FOR UPDATE SKIP LOCKED) "
        "UPDATE leases l SET status = 'taken', owner = $2, claims = l.claims + 1, claimed_ms = " PG_NOW_MS
        ", heartbeat_ms = " PG_NOW_MS " FROM c WHERE l.run_id = $1 AND l.no = c.no RETURNING l.no, "
        "l.first_index, l.nrows, l.cur_offset, l.cur_line, l.cur_index, l.status, l.owner, l.claims, "
        "l.claimed_ms, l.heartbeat_ms, l.done_ms, 0",
        "tti", run_id, worker, stale_ms, what, run_id);
    if (r == NULL)
        return -1;
    int rc = 0;
    if (PQntuples(r) == 1)
        rc = pg_lease_row(r, 0, out) == 0
                 ? 1
                 : orch_store_fail(&st->base, "cannot claim a lease of run %s: out of memory", run_id);
    PQclear(r);
    return rc;
}

static int pg_lease_heartbeat(struct orch_store *base, const char *run_id, int64_t no, const char *worker)
{
    int64_t n = pg_changes(pg_query_sql(
        pg_of(base),
        "UPDATE leases SET heartbeat_ms = " PG_NOW_MS " WHERE run_id = $1 AND no = $2 "
        "AND owner = $3 AND status = 'taken'",
        "tit", run_id, no, worker, "cannot heartbeat lease %lld of run %s", (long long)no, run_id));
    return n < 0 ? -1 : n > 0;
}

/* The run's counters += c->add, and the run completed when this was its
 * last lease. -> 1, 2 (completed) or -1. */
static int pg_lease_commit_run(struct pg_store *st, const char *run_id, const struct orch_lease_commit *c,
                               const char *what)
{
    const struct orch_run none = {0};
    const struct orch_run *a = c->add != NULL ? c->add : &none;
    if (pg_changes(pg_query_sql(
            st,
            "UPDATE runs SET rows_done = rows_done + $2, rows_ok = rows_ok + $3, rows_failed = "
            "rows_failed + $4, rows_dropped = rows_dropped + $5, rows_defaulted = rows_defaulted + $6, "
            "llm_calls = llm_calls + $7, tokens_in = tokens_in + $8, tokens_out = tokens_out + $9, "
            "cost_usd = cost_usd + $10, updated_ms = $11, heartbeat_ms = $11 WHERE id = $1",
            "tiiiiiiiidi", run_id, a->rows_done, a->rows_ok, a->rows_failed, a->rows_dropped,
            a->rows_defaulted, a->llm_calls, a->tokens_in, a->tokens_out, a->cost_usd, orch_store_now_ms(),
            "%s", what)) < 0)
        return -1;
    if (c->end != 1)
        return 1;
    int64_t n = pg_changes(
        pg_query_sql(st,
                     "UPDATE runs SET status = 'completed', error = NULL, finished_ms = $2, updated_ms = "
                     "$2 WHERE id = $1 AND status <> 'completed' AND NOT EXISTS (SELECT 1 FROM leases "
                     "WHERE run_id = $1 AND status <> 'done')",
                     "ti", run_id, orch_store_now_ms(), "%s", what));
    return n < 0 ? -1 : n > 0 ? 2 : 1;
}

/* The run row is locked first, so the commits of a run's last two leases
 * see each other and exactly one completes the run. */
static int pg_lease_commit_once(struct orch_store *base, const char *run_id,
                                const struct orch_lease_commit *c, const struct orch_result *res, size_t nres)
{
    struct pg_store *st = pg_of(base);
    char what[300];
    snprintf(what, sizeof what, "cannot commit lease %lld of run %s", (long long)c->no, run_id);
    if (pg_begin(st, what) != 0)
        return -1;
    if (pg_changes(pg_query_sql(st, "SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", "t", run_id, "%s", what)) <
        0)
        goto fail;
    int64_t held = pg_changes(pg_query_sql(
        st,
        "UPDATE leases SET cur_offset = $4, cur_line = $5, cur_index = $6, heartbeat_ms = " PG_NOW_MS ", "
        "status = CASE $7::int WHEN 1 THEN 'done' WHEN 2 THEN 'free' ELSE status END, done_ms = CASE $7::int "
        "WHEN 1 THEN " PG_NOW_MS
        " ELSE done_ms END WHERE run_id = $1 AND no = $2 AND owner = $3 AND status = "
        "'taken'",
        "titiiii", run_id, c->no, c->worker, c->offset, c->line, c->index, (int64_t)c->end, "%s", what));
    if (held <= 0) {
        if (held == 0)
            pg_abort(st);
        else
            goto fail;
        return 0;
    }
    if (nres > 0) {
        int bulk = pg_res_bulk_ok(st, run_id, res, nres);
        if (bulk < 0 || pg_pipe_begin(st, what) != 0)
            goto fail;
        int sent = pg_cp_send_rows(st, run_id, 0, res, nres, bulk, NULL, 0, what);
        if (pg_pipe_finish(st, sent, what, NULL, NULL, NULL, NULL) != 0)
            goto fail;
    }
    if (pg_changes(pg_query_sql(
            st,
            "DELETE FROM journal_pending p WHERE p.owner = $1 AND EXISTS (SELECT 1 FROM llm_journal j "
            "WHERE j.key = p.key)",
            "t", c->worker, "%s", what)) < 0)
        goto fail;
    int rc = pg_lease_commit_run(st, run_id, c, what);
    if (rc < 0 || pg_commit(st, what) != 0)
        goto fail;
    return rc;
fail:
    pg_abort(st);
    return -1;
}

/* A commit whose transaction a lost connection took along is made again
 * on a new one (a server restart mid-lease). Should the first COMMIT have
 * landed with only its reply lost, the second finds the lease done and
 * writes nothing (0: the worker moves on), or, for a progress commit,
 * stores the same rows again (results are upserted) and counts them in
 * the run's counters twice: the output stays right, a figure may not. */
static int pg_lease_commit(struct orch_store *base, const char *run_id, const struct orch_lease_commit *c,
                           const struct orch_result *res, size_t nres)
{
    int rc = pg_lease_commit_once(base, run_id, c, res, nres);
    if (rc < 0 && pg_reconnect(pg_of(base)))
        rc = pg_lease_commit_once(base, run_id, c, res, nres);
    return rc;
}

static int pg_lease_list(struct orch_store *base, const char *run_id, orch_lease_cb cb, void *ud)
{
    struct pg_store *st = pg_of(base);
    PGresult *r = pg_query_sql(st, "SELECT " PG_LEASE_COLS " FROM leases WHERE run_id = $1 ORDER BY no", "t",
                               run_id, "cannot list the leases of run %s", run_id);
    if (r == NULL)
        return -1;
    int ret = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        struct orch_lease l;
        if (pg_lease_row(r, i, &l) != 0) {
            ret = orch_store_fail(&st->base, "cannot list the leases of run %s: out of memory", run_id);
            break;
        }
        int stop = cb(ud, &l);
        orch_lease_clear(&l);
        if (stop)
            break;
    }
    PQclear(r);
    return ret;
}

/* Two statements: the row made if missing, then the reservation, which
 * the server checks against the row as it is when the lock is granted
 * (READ COMMITTED re-reads an updated row), so concurrent workers never
 * reserve past the max together. */
static int pg_budget_reserve(struct orch_store *base, const char *run_id, double est_usd, double max_usd)
{
    struct pg_store *st = pg_of(base);
    const char *what = "cannot reserve budget for run %s";
    if (pg_changes(pg_query_sql(
            st, "INSERT INTO run_budget (run_id, max_usd) VALUES ($1, $2) ON CONFLICT (run_id) DO NOTHING",
            "td", run_id, max_usd, what, run_id)) < 0)
        return -1;
    int64_t n = pg_changes(
        pg_query_sql(st,
                     "UPDATE run_budget SET reserved_usd = reserved_usd + $2 WHERE run_id = $1 AND "
                     "spent_usd + reserved_usd + $2 <= max_usd + 1e-12",
                     "td", run_id, est_usd, what, run_id));
    return n < 0 ? -1 : n > 0;
}

static int pg_budget_settle(struct orch_store *base, const char *run_id, double released_usd,
                            double spent_usd)
{
    PGresult *r =
        pg_query_sql(pg_of(base),
                     "UPDATE run_budget SET reserved_usd = greatest(reserved_usd - $2, 0), spent_usd = "
                     "spent_usd + $3 WHERE run_id = $1",
                     "tdd", run_id, released_usd, spent_usd, "cannot settle the budget of run %s", run_id);
    return pg_changes(r) < 0 ? -1 : 0;
}

/* Reservations are dropped with a new max: they belonged to workers that
 * stopped (a budget is raised on a paused run). */
static int pg_budget_set(struct orch_store *base, const char *run_id, double max_usd)
{
    PGresult *r =
        pg_query_sql(pg_of(base),
                     "INSERT INTO run_budget (run_id, max_usd) VALUES ($1, $2) ON CONFLICT (run_id) DO "
                     "UPDATE SET max_usd = excluded.max_usd, reserved_usd = 0",
                     "td", run_id, max_usd, "cannot set the budget of run %s", run_id);
    return pg_changes(r) < 0 ? -1 : 0;
}

static int pg_budget_get(struct orch_store *base, const char *run_id, double *max_usd, double *spent_usd,
                         double *reserved_usd)
{
    PGresult *r =
        pg_query_sql(pg_of(base), "SELECT max_usd, spent_usd, reserved_usd FROM run_budget WHERE run_id = $1",
                     "t", run_id, "cannot read the budget of run %s", run_id);
    if (r == NULL)
        return -1;
    int found = PQntuples(r) == 1;
    if (found)
        pg_scan(r, 0, "ddd", max_usd, spent_usd, reserved_usd);
    PQclear(r);
    return found;
}

static int pg_journal_pend(struct orch_store *base, const char *key, const char *owner, int64_t ttl_ms)
{
    int64_t n = pg_changes(
        pg_query_sql(pg_of(base),
                     "INSERT INTO journal_pending (key, owner, expires_ms) SELECT $1, $2, " PG_NOW_MS
                     " + $3 WHERE NOT EXISTS (SELECT 1 FROM llm_journal WHERE key = $1) "
                     "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_ms = "
                     "excluded.expires_ms WHERE journal_pending.owner = excluded.owner OR "
                     "journal_pending.expires_ms < " PG_NOW_MS,
                     "tti", key, owner, ttl_ms, "cannot mark LLM request %.40s as being sent", key));
    return n < 0 ? -1 : n > 0;
}

/* ---- shared rate limits ------------------------------------------------ */

/* One statement: the bucket made full on the first take, else refilled
 * for the server's time since its last update and taken from if it holds
 * amount; the row lock of ON CONFLICT serializes concurrent workers.
 * The time is read before that lock, so a take that waited for it may
 * carry an older time than the row's: the refill is never negative and
 * updated_ms never goes back, which can only grant less. */
#define PG_RATE_REFILLED                                                                                     \
    "least($3::float8, b.tokens + greatest(excluded.updated_ms - b.updated_ms, 0) * $5::float8)"
#define PG_RATE_OK "(" PG_RATE_REFILLED " >= $4::float8 - 1e-9)"

static int pg_rate_take(struct orch_store *base, const char *run_id, const char *kind, double amount,
                        double capacity, double per_ms, double *left)
{
    struct pg_store *st = pg_of(base);
    const char *what = "cannot take from the %.40s limit of run %s";
    PGresult *r = pg_query_sql(
        st,
        "INSERT INTO rate_buckets AS b (run_id, kind, tokens, updated_ms, first_ms, granted, takes, last_ok) "
        "SELECT $1, $2, $3::float8 - $4::float8, t.ms, t.ms, $4::float8, 1, true FROM (SELECT " PG_NOW_MS
        " AS ms) t ON CONFLICT (run_id, kind) DO UPDATE SET tokens = " PG_RATE_REFILLED
        " - CASE WHEN " PG_RATE_OK
        " THEN $4::float8 ELSE 0 END, updated_ms = greatest(b.updated_ms, excluded.updated_ms), granted = "
        "b.granted + CASE WHEN " PG_RATE_OK
        " THEN $4::float8 ELSE 0 END, takes = b.takes + CASE WHEN " PG_RATE_OK
        " THEN 1 ELSE 0 END, last_ok = " PG_RATE_OK " RETURNING last_ok, tokens",
        "ttddd", run_id, kind, capacity, amount, per_ms, what, kind, run_id);
    if (r == NULL)
        return -1;
    int ret = PQntuples(r) == 1 ? strcmp(PQgetvalue(r, 0, 0), "t") == 0 : -1;
    if (ret == 0)
        *left = pg_col_dbl(r, 0, 1);
    PQclear(r);
    if (ret < 0)
        return orch_store_fail(
            &st->base, "cannot take from the %.40s limit of run %s: the bucket's row was not returned", kind,
            run_id);
    return ret;
}

static int pg_run_set_status(struct orch_store *base, const char *run_id, enum orch_run_status status,
                             const char *error)
{
    int64_t now = orch_store_now_ms();
    int64_t finished = status == ORCH_RUN_COMPLETED || status == ORCH_RUN_FAILED ? now : 0;
    int64_t n = pg_changes(pg_query_sql(
        pg_of(base),
        "UPDATE runs SET status = $2, error = $3, updated_ms = $4, finished_ms = $5 WHERE id = $1", "tttii",
        run_id, orch_run_status_name(status), error, now, finished, "cannot update run %s", run_id));
    return n < 0 ? -1 : n > 0;
}

static const struct orch_store_ops pg_ops = {
    .name = "postgres",
    .close = pg_close,
    .run_create = pg_run_create,
    .run_get = pg_run_get,
    .run_find_unfinished = pg_run_find_unfinished,
    .run_update = pg_run_update,
    .run_claim = pg_run_claim,
    .run_heartbeat = pg_run_heartbeat,
    .run_list = pg_run_list,
    .checkpoint_write = pg_checkpoint_write,
    .checkpoint_scan = pg_checkpoint_scan,
    .checkpoint_rollback = pg_checkpoint_rollback,
    .result_list = pg_result_list,
    .event_add = pg_event_add,
    .event_list = pg_event_list,
    .state_list = pg_state_list,
    .stats = pg_stats,
    .journal_put = pg_journal_put,
    .journal_get = pg_journal_get,
    .journal_batch = pg_journal_batch,
    .run_delete = pg_run_delete,
    .journal_prune = pg_journal_prune,
    .vacuum = pg_vacuum,
    .version = pg_version,
    .live_put = pg_live_put,
    .live_get = pg_live_get,
    .event_page = pg_event_page,
    .error_page = pg_error_page,
    .lease_plan = pg_lease_plan,
    .lease_claim = pg_lease_claim,
    .lease_heartbeat = pg_lease_heartbeat,
    .lease_commit = pg_lease_commit,
    .lease_list = pg_lease_list,
    .budget_reserve = pg_budget_reserve,
    .budget_settle = pg_budget_settle,
    .budget_set = pg_budget_set,
    .budget_get = pg_budget_get,
    .run_set_status = pg_run_set_status,
    .journal_pend = pg_journal_pend,
    .rate_take = pg_rate_take,
};

/* Notices (e.g. from VACUUM) are not errors and must not reach stderr. */
static void pg_quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

struct orch_store *orch_store_pg_open(const char *target, int flags, char *err, size_t errlen)
{
    struct pg_store *st = calloc(1, sizeof *st);
    char shown[400];
    orch_store_display(target, shown, sizeof shown);
    if (st != NULL) {
        st->target = strdup(target);
        st->shown = strdup(shown);
    }
    if (st == NULL || st->target == NULL || st->shown == NULL) {
        snprintf(err, errlen, "%s: out of memory", shown);
        if (st != NULL)
            pg_close(&st->base);
        return NULL;
    }
    st->base.ops = &pg_ops;
    st->base.where = st->shown;
    st->readonly = (flags & ORCH_STORE_READONLY) != 0;
    /* the URL's own settings come after the defaults, so they win */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const vals[] = {"10", "orch", target, NULL};
    st->conn = PQconnectdbParams(keys, vals, 1);
    if (st->conn == NULL || PQstatus(st->conn) != CONNECTION_OK) {
        orch_pg_connect_error(st->shown, st->conn, err, errlen);
        pg_close(&st->base);
        return NULL;
    }
    PQsetNoticeProcessor(st->conn, pg_quiet, NULL);
    if (orch_pg_setup(st->conn, st->shown, st->readonly, err, errlen) != 0) {
        pg_close(&st->base);
        return NULL;
    }
    if (st->readonly) {
        PGresult *r = PQexec(st->conn, "SET default_transaction_read_only = on");
        PQclear(r);
    }
    if (pg_prepare_all(st, err, errlen) != 0) {
        pg_close(&st->base);
        return NULL;
    }
    return &st->base;
}
