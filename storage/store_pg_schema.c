/* store_pg_schema.c — the PostgreSQL store's schema and its checks at
 * open: the versioned migrations (the model is store_sqlite.c's), run in
 * one transaction under an advisory lock so that processes starting at
 * once on a fresh database migrate it once; the refusals (another
 * program's tables named like orch's, a schema newer than this orch, no
 * store for a read-only open), each before anything is written; and the
 * message for a connection that fails.
 * Pure C: depends on libc and libpq. */
#include "store_pg_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* pg_advisory_xact_lock key held while the schema is checked and migrated:
 * "ORCH" in ASCII. */
#define PG_LOCK_KEY "1330791240"

/* Forward migrations: pg_migrations[v] takes the schema from version v to
 * v + 1 and ends by recording v + 1 in orch_meta. They run in one
 * transaction at open. Never edit a shipped entry; append a new one. The
 * steps match SQLite's (1: runs, checkpoints, results, events, state;
 * 2: the LLM response journal). */
static const char *const pg_migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE orch_meta (\n"
    "  app text PRIMARY KEY,\n"
    "  version integer NOT NULL\n"
    ");\n"
    "INSERT INTO orch_meta (app, version) VALUES ('orch', 0);\n"
    "CREATE TABLE runs (\n"
    "  id text PRIMARY KEY,\n"
    "  name text NOT NULL,\n"
    "  identity text NOT NULL,\n"
    "  workflow_path text,\n"
    "  workflow_hash text,\n"
    "  input text,\n"
    "  input_fp text,\n"
    "  params text,\n"
    "  output text,\n"
    "  error text,\n"
    "  owner_host text,\n"
    "  status text NOT NULL CHECK (status IN ('pending','running','paused','completed','failed')),\n"
    "  owner_pid bigint NOT NULL DEFAULT 0,\n"
    "  heartbeat_ms bigint NOT NULL DEFAULT 0,\n"
    "  created_ms bigint NOT NULL,\n"
    "  updated_ms bigint NOT NULL,\n"
    "  finished_ms bigint NOT NULL DEFAULT 0,\n"
    "  rows_done bigint NOT NULL DEFAULT 0,\n"
    "  rows_ok bigint NOT NULL DEFAULT 0,\n"
    "  rows_failed bigint NOT NULL DEFAULT 0,\n"
    "  rows_dropped bigint NOT NULL DEFAULT 0,\n"
    "  rows_defaulted bigint NOT NULL DEFAULT 0,\n"
    "  llm_calls bigint NOT NULL DEFAULT 0,\n"
    "  tokens_in bigint NOT NULL DEFAULT 0,\n"
    "  tokens_out bigint NOT NULL DEFAULT 0,\n"
    "  cost_usd double precision NOT NULL DEFAULT 0,\n"
    "  recoveries bigint NOT NULL DEFAULT 0,\n"
    "  ord bigint GENERATED ALWAYS AS IDENTITY -- insertion order, SQLite's rowid\n"
    ");\n"
    "CREATE INDEX runs_identity_status ON runs (identity, status);\n"
    "CREATE INDEX runs_created ON runs (created_ms);\n"
    "CREATE TABLE checkpoints (\n"
    "  run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  seq bigint NOT NULL,\n"
    "  name text,\n"
    "  reason text,\n"
    "  created_ms bigint NOT NULL,\n"
    "  input_offset bigint NOT NULL,\n"
    "  input_line bigint NOT NULL,\n"
    "  input_index bigint NOT NULL,\n"
    "  output_offset bigint NOT NULL,\n"
    "  errors_offset bigint NOT NULL,\n"
    "  memento bytea NOT NULL,\n"
    "  memento_len bigint NOT NULL,\n"
    "  checksum text NOT NULL,\n"
    "  bytes bigint NOT NULL,\n"
    "  duration_ms double precision NOT NULL,\n"
    "  PRIMARY KEY (run_id, seq)\n"
    ");\n"
    "COMMENT ON COLUMN checkpoints.memento IS 'zstd frame of the raw memento';\n"
    "COMMENT ON COLUMN checkpoints.checksum IS 'hex XXH3-128 of the cursor fields + raw memento';\n"
    "CREATE TABLE results (\n"
    "  run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  seq bigint NOT NULL,\n"
    "  key text,\n"
    "  status text NOT NULL,\n"
    "  error text,\n"
    "  data bytea,\n"
    "  checkpoint_seq bigint NOT NULL,\n"
    "  PRIMARY KEY (run_id, seq)\n"
    ");\n"
    "CREATE TABLE events (\n"
    "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
    "  run_id text REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  ts_ms bigint NOT NULL,\n"
    "  type text NOT NULL,\n"
    "  data text\n"
    ");\n"
    "CREATE INDEX events_run ON events (run_id);\n"
    "CREATE TABLE state (\n"
    "  run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  key text NOT NULL,\n"
    "  value text NOT NULL,\n"
    "  PRIMARY KEY (run_id, key)\n"
    ");\n"
    "UPDATE orch_meta SET version = 1 WHERE app = 'orch';\n",
    /* 1 -> 2: the LLM response journal. No foreign key to runs: entries
     * outlive their run, and one may be written before its run row. */
    "CREATE TABLE llm_journal (\n"
    "  key text PRIMARY KEY,\n"
    "  run_id text,\n"
    "  provider text,\n"
    "  model text,\n"
    "  response bytea NOT NULL,\n"
    "  tokens_in bigint,\n"
    "  tokens_out bigint,\n"
    "  cost_usd double precision,\n"
    "  latency_ms double precision,\n"
    "  created_ms bigint NOT NULL,\n"
    "  hits bigint NOT NULL DEFAULT 0\n"
    ");\n"
    "COMMENT ON COLUMN llm_journal.key IS 'hex hash of provider + model + canonical request';\n"
    "UPDATE orch_meta SET version = 2 WHERE app = 'orch';\n",
    /* 2 -> 3: live figures, one row per run, replaced at most once a
     * second by the run's owner (an opaque JSON object); indexes of a
     * run's events and failed rows. */
    "CREATE TABLE run_live (\n"
    "  run_id text PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  updated_ms bigint NOT NULL,\n"
    "  figures text NOT NULL\n"
    ");\n"
    /* the dashboard's pages: a run's events by id, its failed rows */
    "CREATE INDEX events_run_id ON events (run_id, id);\n"
    "CREATE INDEX results_errors ON results (run_id, seq) WHERE error IS NOT NULL;\n"
    "UPDATE orch_meta SET version = 3 WHERE app = 'orch';\n",
    /* 3 -> 4: many workers, one run. leases: a worker run's input in
     * contiguous ranges of rows, claimed by workers; times by the
     * server's clock. run_budget: the spend every worker of a run shares. */
    "CREATE TABLE leases (\n"
    "  run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  no bigint NOT NULL,\n"
    "  first_index bigint NOT NULL,\n"
    "  nrows bigint NOT NULL,\n"
    "  cur_offset bigint NOT NULL,\n"
    "  cur_line bigint NOT NULL,\n"
    "  cur_index bigint NOT NULL,\n"
    "  status text NOT NULL DEFAULT 'free' CHECK (status IN ('free','taken','done')),\n"
    "  owner text,\n"
    "  claims bigint NOT NULL DEFAULT 0,\n"
    "  claimed_ms bigint NOT NULL DEFAULT 0,\n"
    "  heartbeat_ms bigint NOT NULL DEFAULT 0,\n"
    "  done_ms bigint NOT NULL DEFAULT 0,\n"
    "  PRIMARY KEY (run_id, no)\n"
    ");\n"
    "CREATE TABLE run_budget (\n"
    "  run_id text PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  max_usd double precision NOT NULL,\n"
    "  spent_usd double precision NOT NULL DEFAULT 0,\n"
    "  reserved_usd double precision NOT NULL DEFAULT 0\n"
    ");\n"
    "CREATE TABLE journal_pending (\n"
    "  key text PRIMARY KEY,\n"
    "  owner text NOT NULL,\n"
    "  expires_ms bigint NOT NULL\n"
    ");\n"
    "COMMENT ON TABLE journal_pending IS 'LLM requests a worker is sending: others wait for its reply';\n"
    "UPDATE orch_meta SET version = 4 WHERE app = 'orch';\n",
    /* 4 -> 5: shared rate limits: one token bucket per run and kind
     * (rpm, tpm) that every worker of the run takes from; times by the
     * server's clock. granted / takes / first_ms are the bucket's own
     * record of what it let through. */
    "CREATE TABLE rate_buckets (\n"
    "  run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  kind text NOT NULL,\n"
    "  tokens double precision NOT NULL,\n"
    "  updated_ms bigint NOT NULL,\n"
    "  first_ms bigint NOT NULL,\n"
    "  granted double precision NOT NULL DEFAULT 0,\n"
    "  takes bigint NOT NULL DEFAULT 0,\n"
    "  last_ok boolean NOT NULL DEFAULT true,\n"
    "  PRIMARY KEY (run_id, kind)\n"
    ");\n"
    "COMMENT ON TABLE rate_buckets IS 'worker runs'' shared rate limits, by the server''s clock';\n"
    "UPDATE orch_meta SET version = 5 WHERE app = 'orch';\n",
};

#define PG_SCHEMA_VERSION ((int)(sizeof pg_migrations / sizeof pg_migrations[0]))

/* The message a user can act on when the connection fails: the server
 * unreachable, the credentials refused, the database missing. libpq's
 * own text says which; it never contains the password. */
void orch_pg_connect_error(const char *shown, PGconn *conn, char *err, size_t errlen)
{
    const char *msg = conn != NULL ? PQerrorMessage(conn) : "out of memory";
    /* libpq prefixes the server's reason with where it connected:
     * 'connection to server on socket "..." failed: FATAL:  ...' */
    const char *fatal = strstr(msg, "FATAL:  ");
    char why[300];
    orch_pg_first_line(fatal != NULL ? fatal : msg, why, sizeof why);
    if (strstr(msg, "password authentication failed") != NULL ||
        strstr(msg, "no password supplied") != NULL || strstr(msg, "authentication failed") != NULL)
        snprintf(err, errlen,
                 "%s: cannot connect to PostgreSQL: the server refused the user or password (%s); check the "
                 "URL's user, PGPASSWORD or ~/.pgpass",
                 shown, why);
    else if (fatal != NULL && strstr(fatal, "database") != NULL && strstr(fatal, "does not exist") != NULL)
        snprintf(err, errlen, "%s: cannot connect to PostgreSQL: %s; create it (createdb) or fix the URL",
                 shown, why);
    else if (fatal != NULL)
        snprintf(err, errlen, "%s: cannot connect to PostgreSQL: %s", shown, why);
    else
        snprintf(
            err, errlen,
            "%s: cannot connect to PostgreSQL: the server is not reachable (%s); check the host and port "
            "and that the server is running",
            shown, why);
}

/* Reads what the database holds: whether orch_meta is there, which of
 * orch's table names exist, and the schema version. 0, or -1 with the
 * message in err. */
static int pg_probe(PGconn *conn, const char *shown, int *has_meta, char *names, size_t nameslen,
                    int64_t *version, char *err, size_t errlen)
{
    *has_meta = 0;
    *version = 0;
    names[0] = '\0';
    PGresult *r = PQexec(conn, "SELECT to_regclass('orch_meta') IS NOT NULL, "
                               "(SELECT string_agg(t, ', ') FROM unnest(" PG_TABLES
                               ") t WHERE to_regclass(t) IS NOT NULL)");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        char why[300];
        orch_pg_first_line(PQresultErrorMessage(r), why, sizeof why);
        snprintf(err, errlen, "%s: cannot read the database: %s", shown, why);
        PQclear(r);
        return -1;
    }
    *has_meta = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    snprintf(names, nameslen, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    if (!*has_meta)
        return 0;
    r = PQexec(conn, "SELECT version FROM orch_meta WHERE app = 'orch'");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        PQclear(r);
        *has_meta = 0; /* an orch_meta that is not ours */
        return 0;
    }
    *version = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

/* Checks and brings the schema up to PG_SCHEMA_VERSION in one transaction
 * under the advisory lock (read-only: checks only). 0, or -1 with the
 * message in err; nothing is written when refusing. */
/* Runs constant SQL expecting status want. 0, or -1 with "SHOWN: what:
 * <the server's reason>" in err. */
static int pg_setup_exec(PGconn *conn, const char *sql, ExecStatusType want, const char *shown,
                         const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexec(conn, sql);
    int ok = PQresultStatus(r) == want;
    if (!ok) {
        char why[300];
        orch_pg_first_line(PQresultErrorMessage(r), why, sizeof why);
        snprintf(err, errlen, "%s: %s: %s", shown, what, why);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

int orch_pg_setup(PGconn *conn, const char *shown, int readonly, char *err, size_t errlen)
{
    const char *upgrade = "cannot create or upgrade the schema";
    if (pg_setup_exec(conn, readonly ? "BEGIN READ ONLY" : "BEGIN", PGRES_COMMAND_OK, shown,
                      "cannot read the database", err, errlen) != 0)
        return -1;
    if (!readonly && pg_setup_exec(conn, "SELECT pg_advisory_xact_lock(" PG_LOCK_KEY ")", PGRES_TUPLES_OK,
                                   shown, upgrade, err, errlen) != 0)
        goto fail;
    int has_meta = 0;
    int64_t version = 0;
    char names[200];
    if (pg_probe(conn, shown, &has_meta, names, sizeof names, &version, err, errlen) != 0)
        goto fail;
    if (!has_meta && names[0] != '\0') {
        snprintf(
            err, errlen,
            "%s: the database has tables named like orch's (%s) that are not orch's; nothing was changed: "
            "give orch a database (or schema) of its own",
            shown, names);
        goto fail;
    }
    if (version > PG_SCHEMA_VERSION) {
        snprintf(err, errlen, "%s: created by a newer orch (schema %lld, this orch knows up to %d)", shown,
                 (long long)version, PG_SCHEMA_VERSION);
        goto fail;
    }
    if (readonly && !has_meta) {
        snprintf(err, errlen, "no state store at %s (the database has no orch tables; no run has used it)",
                 shown);
        goto fail;
    }
    if (readonly && version < PG_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "%s: written by an older orch (schema %lld, this orch reads %d) and opened read-only; run "
                 "orch once with write access to the store to upgrade it",
                 shown, (long long)version, PG_SCHEMA_VERSION);
        goto fail;
    }
    for (int64_t v = version; v < PG_SCHEMA_VERSION; v++) {
        char what[80];
        snprintf(what, sizeof what, "%s (to version %lld)", upgrade, (long long)v + 1);
        if (pg_setup_exec(conn, pg_migrations[v], PGRES_COMMAND_OK, shown, what, err, errlen) != 0)
            goto fail;
    }
    if (pg_setup_exec(conn, "COMMIT", PGRES_COMMAND_OK, shown, upgrade, err, errlen) != 0)
        goto fail;
    return 0;
fail:
    PQclear(PQexec(conn, "ROLLBACK"));
    return -1;
}
