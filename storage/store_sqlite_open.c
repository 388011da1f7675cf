/* store_sqlite_open.c — opening the SQLite backend: judges the file
 * (a database, orch's or empty, a schema this build knows, not corrupt)
 * before writing a byte, then switches to WAL, migrates and prepares every
 * statement; read-only opens for the commands that only inspect; closing.
 * Pure C: depends on libc, libsqlite3, common/fsutil.h and store_impl.h. */
#include "store.h"
#include "store_impl.h"
#include "store_sqlite_impl.h"

#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The message a user can act on for a failure while opening: not a
 * database, corrupt, not writable, or (anything else) what failed. */
void sq_open_error(sqlite3 *db, const char *path, int rc, const char *what, char *err, size_t errlen)
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
        snprintf(err, errlen, "%s: %s: " SQ_LOCKED_MSG, path, what);
        break;
    default:
        snprintf(err, errlen, "%s: %s: %s", path, what, detail);
        break;
    }
}

void sq_close(struct orch_store *base)
{
    if (base == NULL)
        return;
    struct sq_store *st = sq_of(base);
    sq_journal_hits_close(st);
    orch_jhits_free(&st->hits);
    orch_jahead_free(&st->ahead);
    for (int i = 0; i < SQ_NSTMT; i++)
        sqlite3_finalize(st->stmt[i]);
    sqlite3_close(st->db);
    free(st->path);
    free(st);
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

/* Reads what identifies an orch store, in one statement and so one
 * snapshot: read separately, a migration committed by another process in
 * between would make a new store look like another program's
 * (application_id 0 but tables). This is also the first read of the
 * file, where a non-database shows up. Returns the SQLite result code. */
static int sq_read_identity(sqlite3 *db, int64_t *version, int64_t *app, int64_t *objects)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT (SELECT user_version FROM pragma_user_version), "
                                "(SELECT application_id FROM pragma_application_id), "
                                "(SELECT count(*) FROM sqlite_master)",
                                -1, &s, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *version = sqlite3_column_int64(s, 0);
        *app = sqlite3_column_int64(s, 1);
        *objects = sqlite3_column_int64(s, 2);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

/* Checks the freshly opened db before anything is written: readable as a
 * database, orch's (or empty), a schema this build knows, not corrupt.
 * Returns 0, or -1 with the message in err. existed: the file was there
 * and non-empty before the open. */
static int sq_check_existing(sqlite3 *db, const char *path, int existed, char *err, size_t errlen)
{
    int64_t version = 0;
    int64_t app = 0;
    int64_t objects = 0;
    int rc = sq_read_identity(db, &version, &app, &objects);
    if (rc != SQLITE_OK) {
        sq_open_error(db, path, rc, "cannot read the database", err, errlen);
        return -1;
    }
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
    st->base.where = path;
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
        int64_t objects = 0;
        /* the first read: a WAL store whose -shm cannot be made fails here */
        rc = sq_read_identity(st->db, &version, &app, &objects);
        if (rc == SQLITE_OK && app == 0 && version == 0 && objects == 0) {
            snprintf(err, errlen, "no state store at %s (the file is an empty database)", target);
            *bad = 1;
            return rc;
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

/* Refuses what sb describes when it cannot hold a state database: a
 * directory or a special file. 0, or -1 with the message in err. */
static int sq_judge_file(const char *target, const struct stat *sb, char *err, size_t errlen)
{
    if (S_ISDIR(sb->st_mode)) {
        snprintf(err, errlen, "%s: is a directory, not a state database file", target);
        return -1;
    }
    if (!S_ISREG(sb->st_mode)) {
        snprintf(err, errlen, "%s: not a regular file, cannot hold a state database", target);
        return -1;
    }
    return 0;
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
    if (sq_judge_file(target, &sb, err, errlen) != 0)
        return NULL;
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

/* Judges the file at target before SQLite sees it: a directory or special
 * file is refused, a missing one is created empty (with its parents).
 * *existed: the file was there and non-empty. 0, or -1 with the message in
 * err. */
static int sq_prepare_file(const char *target, int *existed, char *err, size_t errlen)
{
    struct stat sb;
    *existed = 0;
    if (stat(target, &sb) == 0) {
        *existed = sb.st_size > 0;
        return sq_judge_file(target, &sb, err, errlen);
    }
    /* Create the empty file here rather than in SQLite: its CANTOPEN
     * reports the errno of a fallback open, so a read-only directory would
     * read "No such file or directory". */
    orch_mkdir_parents(target);
    int fd = open(target, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) {
        snprintf(err, errlen,
                 "%s: cannot write the state database (cannot create the file: %s); check the "
                 "permissions of the file and its directory",
                 target, strerror(errno));
        return -1;
    }
    if (fd >= 0)
        close(fd);
    return 0;
}

/* Once the file is judged empty or ours: WAL, the connection's pragmas,
 * the schema, the statements. 0, or -1 with the message in err. */
static int sq_setup(struct sq_store *st, const char *target, int memory, char *err, size_t errlen)
{
    char mode[32];
    int rc = sq_set_wal(st->db, memory, mode, sizeof mode);
    if (rc != SQLITE_OK) {
        sq_open_error(st->db, target, rc, "cannot switch to WAL mode", err, errlen);
        return -1;
    }
    if (!memory && strcmp(mode, "wal") != 0) {
        snprintf(err, errlen, "%s: cannot switch to WAL mode (journal mode stays %s)", target, mode);
        return -1;
    }
    rc = sqlite3_exec(st->db,
                      "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -512; "
                      "PRAGMA mmap_size = " SQ_MMAP,
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        sq_open_error(st->db, target, rc, "cannot configure the connection", err, errlen);
        return -1;
    }
    if (sq_migrate(st->db, target, err, errlen) != 0)
        return -1;
    return sq_prepare_all(st, target, err, errlen);
}

/* Before SQLite's first use in the process: no count of the memory it
 * holds (sqlite3_memory_used, which orch never reads), so an allocation
 * takes no global mutex (seven a replayed row). Once; refused, harmlessly,
 * when something used SQLite first. */
static void sq_configure(void)
{
    static int done;
    if (!done) {
        done = 1;
        sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    }
}

struct orch_store *orch_store_sqlite_open(const char *target, int flags, char *err, size_t errlen)
{
    sq_configure();
    int memory = strcmp(target, ":memory:") == 0;
    if ((flags & ORCH_STORE_READONLY) && !memory)
        return sq_open_readonly(target, err, errlen);
    int existed = 0;
    if (!memory && sq_prepare_file(target, &existed, err, errlen) != 0)
        return NULL;

    struct sq_store *st = sq_new(target, memory, err, errlen);
    if (st == NULL)
        return NULL;

    /* one thread uses a connection: no mutex around each SQLite call
     * (16 a settled row, 2.5% of a passthrough run's instructions) */
    int rc = sqlite3_open_v2(target, &st->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
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
    if (sq_setup(st, target, memory, err, errlen) != 0)
        goto fail;
    return &st->base;

fail:
    sq_close(&st->base);
    return NULL;
}
