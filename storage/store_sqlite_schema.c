/* store_sqlite_schema.c — the SQLite backend's schema: the forward
 * migrations, numbered with PRAGMA user_version, and the transaction that
 * applies them at open. Pure C: depends on libsqlite3. */
#include "store_sqlite_impl.h"

#include <stdio.h>
#include <string.h>

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
    /* 2 -> 3: live figures, one row per run, replaced at most once a
     * second by the run's owner (an opaque JSON object); an index of the
     * rows that failed. */
    "CREATE TABLE run_live (\n"
    "  run_id TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  updated_ms INTEGER NOT NULL,\n"
    "  figures TEXT NOT NULL\n"
    ") WITHOUT ROWID;\n"
    /* the dashboard's page of failed rows, however many rows are ok */
    "CREATE INDEX results_errors ON results (run_id, seq) WHERE error IS NOT NULL;\n"
    "PRAGMA user_version = 3;\n",
    /* 3 -> 4: many workers, one run (see store_pg_schema.c). */
    "CREATE TABLE leases (\n"
    "  run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  no INTEGER NOT NULL,\n"
    "  first_index INTEGER NOT NULL,\n"
    "  nrows INTEGER NOT NULL,\n"
    "  cur_offset INTEGER NOT NULL,\n"
    "  cur_line INTEGER NOT NULL,\n"
    "  cur_index INTEGER NOT NULL,\n"
    "  status TEXT NOT NULL DEFAULT 'free' CHECK (status IN ('free','taken','done')),\n"
    "  owner TEXT,\n"
    "  claims INTEGER NOT NULL DEFAULT 0,\n"
    "  claimed_ms INTEGER NOT NULL DEFAULT 0,\n"
    "  heartbeat_ms INTEGER NOT NULL DEFAULT 0,\n"
    "  done_ms INTEGER NOT NULL DEFAULT 0,\n"
    "  PRIMARY KEY (run_id, no)\n"
    ") WITHOUT ROWID;\n"
    "CREATE TABLE run_budget (\n"
    "  run_id TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  max_usd REAL NOT NULL,\n"
    "  spent_usd REAL NOT NULL DEFAULT 0,\n"
    "  reserved_usd REAL NOT NULL DEFAULT 0\n"
    ") WITHOUT ROWID;\n"
    "CREATE TABLE journal_pending (\n"
    "  key TEXT PRIMARY KEY,       -- an LLM request a worker is sending: others wait for its reply\n"
    "  owner TEXT NOT NULL,\n"
    "  expires_ms INTEGER NOT NULL\n"
    ") WITHOUT ROWID;\n"
    "PRAGMA user_version = 4;\n",
    /* 4 -> 5: a checkpoint's results as one packed row (store_sqlite.c,
     * "results in chunks"): one insert per checkpoint instead of one per
     * row. A chunk holds rows first_seq..last_seq in seq order; chunks
     * of a run never overlap each other; a failed row stays in the results
     * table, and its seq may fall inside a chunk's range. */
    "CREATE TABLE result_chunks (\n"
    "  run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  first_seq INTEGER NOT NULL,\n"
    "  last_seq INTEGER NOT NULL,\n"
    "  checkpoint_seq INTEGER NOT NULL,\n"
    "  n INTEGER NOT NULL,         -- results in data\n"
    "  data BLOB NOT NULL,         -- n packed results (result_pack.h)\n"
    "  PRIMARY KEY (run_id, first_seq)\n"
    ");\n"
    "PRAGMA user_version = 5;\n",
    /* 5 -> 6: shared rate limits, one token bucket per run and kind (see
     * store_pg_schema.c). */
    "CREATE TABLE rate_buckets (\n"
    "  run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  kind TEXT NOT NULL,          -- rpm, tpm\n"
    "  tokens REAL NOT NULL,        -- what the bucket held at updated_ms\n"
    "  updated_ms INTEGER NOT NULL, -- the store's clock\n"
    "  first_ms INTEGER NOT NULL,   -- the first take\n"
    "  granted REAL NOT NULL DEFAULT 0,\n"
    "  takes INTEGER NOT NULL DEFAULT 0,\n"
    "  last_ok INTEGER NOT NULL DEFAULT 1,\n"
    "  PRIMARY KEY (run_id, kind)\n"
    ") WITHOUT ROWID;\n"
    "PRAGMA user_version = 6;\n",
    /* 6 -> 7: the format of a chunk's packed results (result_pack.h);
     * chunks written before are the fixed form. */
    "ALTER TABLE result_chunks ADD COLUMN format INTEGER NOT NULL DEFAULT 1;\n"
    "PRAGMA user_version = 7;\n",
    /* 7 -> 8: the journal as a rowid table, its key a unique index. A
     * reply is appended, and only its key lands at a random place in a
     * narrow tree: a group of replies dirties about half the pages the
     * WITHOUT ROWID table did (the reply sat at its key's random place),
     * and a hit count is written in place, where the WITHOUT ROWID table
     * deleted and inserted the whole entry (bench/changes.md, eighth
     * pass). The entries are copied in the order they were made. */
    "CREATE TABLE llm_journal_8 (\n"
    "  key TEXT NOT NULL PRIMARY KEY, -- hex hash of provider + model + canonical request\n"
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
    ");\n"
    "INSERT INTO llm_journal_8 (key, run_id, provider, model, response, tokens_in, tokens_out, cost_usd,\n"
    "  latency_ms, created_ms, hits)\n"
    "  SELECT key, run_id, provider, model, response, tokens_in, tokens_out, cost_usd, latency_ms,\n"
    "  created_ms, hits FROM llm_journal ORDER BY created_ms, key;\n"
    "DROP TABLE llm_journal;\n"
    "ALTER TABLE llm_journal_8 RENAME TO llm_journal;\n"
    "PRAGMA user_version = 8;\n",
    /* 8 -> 9: the hits lookups counted, appended one row a write (the
     * counts of up to 16,384 entries packed, journal_hits.h) instead of
     * written into each entry: an entry's hits rewrote its whole row
     * (about 11,900 instructions a replayed row). orch stats adds the
     * rows' sums; orch gc --journal and --vacuum fold them into
     * llm_journal.hits, and a store's close merges them into one row
     * once they hold more entries than twice the journal's. */
    "CREATE TABLE llm_journal_hits (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  hits INTEGER NOT NULL,      -- lookups counted in this write\n"
    "  saved_usd REAL NOT NULL,    -- what they saved: each entry's cost_usd times its hits\n"
    "  entries INTEGER NOT NULL,   -- entries in counts\n"
    "  counts BLOB NOT NULL        -- per entry: its rowid, its hits, its key (journal_hits.h)\n"
    ");\n"
    "PRAGMA user_version = 9;\n",
};

_Static_assert(sizeof sq_migrations / sizeof sq_migrations[0] == SQ_SCHEMA_VERSION,
               "SQ_SCHEMA_VERSION must be the number of migrations");

int sq_query1(sqlite3 *db, const char *sql, int64_t *out, char *text, size_t textlen)
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
int sq_migrate(sqlite3 *db, const char *path, char *err, size_t errlen)
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
