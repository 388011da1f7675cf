/* store_pg_impl.h — private to the PostgreSQL backend (store_pg.c, its
 * operations, and store_pg_schema.c, its schema and checks at open): what
 * the two share. Depends on libpq. */
#ifndef ORCH_STORE_PG_IMPL_H
#define ORCH_STORE_PG_IMPL_H

#include <libpq-fe.h>
#include <stddef.h>

/* orch's table names: a database holding any of them without orch_meta
 * is another program's. */
#define PG_TABLES                                                                                            \
    "ARRAY['orch_meta', 'runs', 'checkpoints', 'results', 'events', 'state', 'llm_journal', 'run_live', "    \
    "'leases', 'run_budget', 'journal_pending', 'rate_buckets']"

/* The first line of a libpq message, without "ERROR:  " / "FATAL:  ". */
void orch_pg_first_line(const char *msg, char *out, size_t outlen);

/* The message for a connection that failed (conn may be NULL): the server
 * unreachable, the credentials refused or the database missing, naming
 * shown (the URL, password masked). */
void orch_pg_connect_error(const char *shown, PGconn *conn, char *err, size_t errlen);

/* Checks what conn's database holds and creates or migrates orch's schema
 * in one transaction under an advisory lock (readonly: checks only, and
 * refuses a database without the schema or with an older one). 0, or -1
 * with the message naming shown in err; nothing is written when refusing. */
int orch_pg_setup(PGconn *conn, const char *shown, int readonly, char *err, size_t errlen);

#endif
