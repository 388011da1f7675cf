/* store_redis_conn.c — the Redis backend's connection: the URL
 * (redis://[user:password@]host[:port][/N] or unix:///path?db=N, with
 * ?prefix=, ?password= and ?user=), login and database, the checks at open
 * (a server that runs Lua scripts, a prefix holding orch's keys or
 * nothing, a schema this orch knows, durable settings), the calls of the
 * server-side scripts (SCRIPT LOAD once, EVALSHA after, loaded again on
 * NOSCRIPT) and reconnection after the server dropped the connection.
 * Messages name the store by its URL with the password masked.
 * Pure C: depends on libc, hiredis and store.c's helpers. */
#include "store.h"
#include "store_impl.h"
#include "store_redis_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/* ---- argument vectors ------------------------------------------------ */

void rd_arg(struct rd_args *a, const void *p, size_t n)
{
    if (a->oom)
        return;
    if (a->n == a->cap) {
        int cap = a->cap != 0 ? a->cap * 2 : 32;
        char **v = realloc(a->v, (size_t)cap * sizeof *v);
        if (v != NULL)
            a->v = v;
        size_t *len = v != NULL ? realloc(a->len, (size_t)cap * sizeof *len) : NULL;
        if (len == NULL) {
            a->oom = 1;
            return;
        }
        a->len = len;
        a->cap = cap;
    }
    char *copy = malloc(n + 1);
    if (copy == NULL) {
        a->oom = 1;
        return;
    }
    if (n > 0)
        memcpy(copy, p, n);
    copy[n] = '\0';
    a->v[a->n] = copy;
    a->len[a->n] = n;
    a->n++;
}

void rd_arg_s(struct rd_args *a, const char *s)
{
    rd_arg(a, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

void rd_arg_i(struct rd_args *a, int64_t x)
{
    char num[32];
    snprintf(num, sizeof num, "%lld", (long long)x);
    rd_arg_s(a, num);
}

void rd_arg_d(struct rd_args *a, double x)
{
    char num[40];
    snprintf(num, sizeof num, "%.17g", x);
    rd_arg_s(a, num);
}

void rd_args_free(struct rd_args *a)
{
    for (int i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    free(a->len);
    memset(a, 0, sizeof *a);
}

static void rd_args_vfmt(struct rd_args *a, const char *fmt, va_list ap)
{
    for (const char *f = fmt; *f != '\0'; f++) {
        if (*f == 's')
            rd_arg_s(a, va_arg(ap, const char *));
        else if (*f == 'i')
            rd_arg_i(a, va_arg(ap, int64_t));
        else
            rd_arg_d(a, va_arg(ap, double));
    }
}

void rd_args_fmt(struct rd_args *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rd_args_vfmt(a, fmt, ap);
    va_end(ap);
}

/* ---- the URL ---------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A heap copy of n bytes of s with %XX decoded; NULL when out of memory. */
static char *url_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[j++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            out[j++] = s[i];
        }
    }
    out[j] = '\0';
    return out;
}

static void url_set(char **field, const char *s, size_t n)
{
    free(*field);
    *field = url_decode(s, n);
}

/* The query's parameters: db, prefix, password, user. 0, or -1 with the
 * reason in why for one orch does not know or a bad number. */
static int url_query(struct rd_url *u, const char *q, char *why, size_t whylen)
{
    while (q != NULL && *q != '\0') {
        size_t n = strcspn(q, "&");
        const char *eq = memchr(q, '=', n);
        size_t klen = eq != NULL ? (size_t)(eq - q) : n;
        const char *v = eq != NULL ? eq + 1 : q + n;
        size_t vlen = (size_t)(q + n - v);
        if (klen == 2 && strncmp(q, "db", 2) == 0) {
            char *end = NULL;
            long db = strtol(v, &end, 10);
            if (vlen == 0 || end != v + vlen || db < 0 || db > 100000) {
                snprintf(why, whylen, "db=%.*s is not a database number", (int)vlen, v);
                return -1;
            }
            u->db = (int)db;
        } else if (klen == 6 && strncmp(q, "prefix", 6) == 0) {
            url_set(&u->prefix, v, vlen);
        } else if (klen == 8 && strncmp(q, "password", 8) == 0) {
            url_set(&u->password, v, vlen);
        } else if (klen == 4 && strncmp(q, "user", 4) == 0) {
            url_set(&u->user, v, vlen);
        } else {
            snprintf(why, whylen, "unknown parameter %.*s (orch takes db, prefix, user and password)",
                     (int)klen, q);
            return -1;
        }
        q += n;
        if (*q == '&')
            q++;
    }
    return 0;
}

/* redis://[user[:password]@]host[:port][/N]: the authority part. */
static int url_authority(struct rd_url *u, const char *p, size_t n, char *why, size_t whylen)
{
    const char *at = NULL;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '@')
            at = p + i;
    }
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon != NULL) {
            url_set(&u->password, colon + 1, (size_t)(at - colon - 1));
            if (colon > p)
                url_set(&u->user, p, (size_t)(colon - p));
        } else if (at > p) {
            url_set(&u->user, p, (size_t)(at - p));
        }
        n -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    const char *colon = memchr(p, ':', n);
    size_t hlen = colon != NULL ? (size_t)(colon - p) : n;
    url_set(&u->host, hlen > 0 ? p : "127.0.0.1", hlen > 0 ? hlen : 9);
    u->port = 6379;
    if (colon != NULL) {
        char *end = NULL;
        long port = strtol(colon + 1, &end, 10);
        if (end != p + n || port <= 0 || port > 65535) {
            snprintf(why, whylen, "%.*s is not a port", (int)(p + n - colon - 1), colon + 1);
            return -1;
        }
        u->port = (int)port;
    }
    return 0;
}

/* Fills u from target. 0, or -1 with the reason in why. */
static int url_parse(struct rd_url *u, const char *target, char *why, size_t whylen)
{
    memset(u, 0, sizeof *u);
    const char *q = strchr(target, '?');
    size_t body = q != NULL ? (size_t)(q - target) : strlen(target);
    if (strncmp(target, "unix://", 7) == 0) {
        if (body <= 7 || target[7] != '/') {
            snprintf(why, whylen, "a unix:// URL names the socket's absolute path (unix:///run/redis.sock)");
            return -1;
        }
        url_set(&u->path, target + 7, body - 7);
    } else {
        const char *p = target + 8; /* "redis://" */
        size_t auth = strcspn(p, "/?");
        if (url_authority(u, p, auth, why, whylen) != 0)
            return -1;
        const char *db = p + auth;
        if (*db == '/' && db + 1 < target + body) {
            char *end = NULL;
            long n = strtol(db + 1, &end, 10);
            if (end != target + body || n < 0 || n > 100000) {
                snprintf(why, whylen, "/%.*s is not a database number", (int)(target + body - db - 1),
                         db + 1);
                return -1;
            }
            u->db = (int)n;
        }
    }
    if (url_query(u, q != NULL ? q + 1 : NULL, why, whylen) != 0)
        return -1;
    if (u->prefix == NULL)
        u->prefix = strdup("orch:");
    if (u->prefix == NULL || (u->path == NULL && u->host == NULL)) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    return 0;
}

static void url_free(struct rd_url *u)
{
    free(u->host);
    free(u->path);
    free(u->user);
    free(u->password);
    free(u->prefix);
    memset(u, 0, sizeof *u);
}

/* ---- commands --------------------------------------------------------- */

/* A fixed command: argv of n C strings. */
static redisReply *rd_cmdv(struct rd_store *st, int n, const char *const *argv)
{
    size_t len[8];
    for (int i = 0; i < n; i++)
        len[i] = strlen(argv[i]);
    return redisCommandArgv(st->c, n, (const char **)argv, len);
}

/* The first line of an error reply or of the connection's error. */
static void rd_reason(struct rd_store *st, const redisReply *r, char *out, size_t outlen)
{
    const char *msg = r != NULL && r->type == REDIS_REPLY_ERROR ? r->str
                      : st->c != NULL && st->c->err != 0        ? st->c->errstr
                                                                : "no reply";
    size_t n = strcspn(msg, "\r\n");
    /* an unknown command's error quotes its arguments: a whole script */
    const char *args = strstr(msg, ", with args beginning with");
    if (args != NULL && (size_t)(args - msg) < n)
        n = (size_t)(args - msg);
    snprintf(out, outlen, "%.*s", (int)n, msg);
}

/* Logs in and selects the database on a fresh connection. 0, or -1 with
 * the reason in why and *login set when the server refused the
 * credentials (or wants some). */
static int rd_login(struct rd_store *st, char *why, size_t whylen, int *login)
{
    *login = 0;
    redisReply *r = NULL;
    if (st->url.password != NULL) {
        const char *argv[] = {"AUTH", st->url.user != NULL ? st->url.user : st->url.password,
                              st->url.password};
        r = rd_cmdv(st, st->url.user != NULL ? 3 : 2, argv);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            rd_reason(st, r, why, whylen);
            *login = r != NULL;
            freeReplyObject(r);
            return -1;
        }
        freeReplyObject(r);
    }
    char db[16];
    snprintf(db, sizeof db, "%d", st->url.db);
    const char *argv[] = {"SELECT", db};
    r = rd_cmdv(st, 2, argv);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        rd_reason(st, r, why, whylen);
        *login = r != NULL && strncmp(r->str, "NOAUTH", 6) == 0;
        freeReplyObject(r);
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

/* Opens the connection (10 s to connect, 60 s per reply) and logs in.
 * 0, or -1 with why and *login as rd_login. */
static int rd_dial(struct rd_store *st, char *why, size_t whylen, int *login)
{
    *login = 0;
    if (st->c != NULL)
        redisFree(st->c);
    struct timeval connect_tv = {10, 0}, reply_tv = {60, 0};
    st->c = st->url.path != NULL ? redisConnectUnixWithTimeout(st->url.path, connect_tv)
                                 : redisConnectWithTimeout(st->url.host, st->url.port, connect_tv);
    if (st->c == NULL || st->c->err != 0) {
        snprintf(why, whylen, "%s", st->c != NULL ? st->c->errstr : "out of memory");
        return -1;
    }
    redisSetTimeout(st->c, reply_tv);
    return rd_login(st, why, whylen, login);
}

#define RD_RECONNECT_TRIES 40
#define RD_RECONNECT_PAUSE_NS 250000000L

/* A connection the server dropped (restart, failover, idle timeout) is
 * opened again, for up to 10 s; scripts the restarted server lost are
 * loaded again when EVALSHA says NOSCRIPT. 1 reconnected, 0 not. */
static int rd_reconnect(struct rd_store *st)
{
    if (st->c != NULL && st->c->err == 0)
        return 0;
    for (int i = 0; i < RD_RECONNECT_TRIES; i++) {
        if (i > 0) {
            struct timespec pause = {0, RD_RECONNECT_PAUSE_NS};
            nanosleep(&pause, NULL);
        }
        char why[300];
        int login = 0;
        if (rd_dial(st, why, sizeof why, &login) == 0)
            return 1;
        if (login)
            return 0;
    }
    return 0;
}

redisReply *orch_redis_cmd(struct rd_store *st, struct rd_args *a, const char *what)
{
    if (a->oom) {
        orch_redis_fail(st, "%s: out of memory", what);
        return NULL;
    }
    int loading = 0;
    for (int attempt = 0;; attempt++) {
        redisReply *r = st->c != NULL && st->c->err == 0
                            ? redisCommandArgv(st->c, a->n, (const char **)a->v, a->len)
                            : NULL;
        /* a restarted server still reading its AOF ran nothing: wait for
         * it as for a reconnection, then send the command again */
        if (r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "LOADING", 7) == 0 &&
            loading < RD_RECONNECT_TRIES) {
            freeReplyObject(r);
            loading++;
            attempt--;
            struct timespec pause = {0, RD_RECONNECT_PAUSE_NS};
            nanosleep(&pause, NULL);
            continue;
        }
        if (r != NULL)
            return r;
        if (attempt == 0 && rd_reconnect(st))
            continue;
        char why[300];
        rd_reason(st, NULL, why, sizeof why);
        orch_redis_fail(st, "%s: lost the connection to the server (%s)", what, why);
        return NULL;
    }
}

/* SCRIPT LOAD of script i into st->sha[i]. 0, or -1 with the reason. */
static int rd_load(struct rd_store *st, enum rd_script i, char *why, size_t whylen)
{
    const char *argv[] = {"SCRIPT", "LOAD", orch_redis_script(i)};
    redisReply *r = rd_cmdv(st, 3, argv);
    int ok = r != NULL && r->type == REDIS_REPLY_STRING && r->len == 40;
    if (ok)
        memcpy(st->sha[i], r->str, 41);
    else
        rd_reason(st, r, why, whylen);
    freeReplyObject(r);
    return ok ? 0 : -1;
}

redisReply *orch_redis_eval(struct rd_store *st, enum rd_script i, struct rd_args *a, const char *what)
{
    struct rd_args call = {0};
    rd_arg_s(&call, "EVALSHA");
    rd_arg_s(&call, st->sha[i]);
    rd_arg_s(&call, "0");
    rd_arg_s(&call, st->url.prefix);
    for (int k = 0; k < a->n && !a->oom; k++)
        rd_arg(&call, a->v[k], a->len[k]);
    call.oom |= a->oom;
    redisReply *r = NULL;
    for (int attempt = 0; attempt < 3; attempt++) {
        r = orch_redis_cmd(st, &call, what);
        if (r == NULL || r->type != REDIS_REPLY_ERROR || strncmp(r->str, "NOSCRIPT", 8) != 0)
            break;
        freeReplyObject(r);
        r = NULL;
        char why[300];
        if (rd_load(st, i, why, sizeof why) != 0) {
            orch_redis_fail(st, "%s: cannot load a script (%s)", what, why);
            break;
        }
        free(call.v[1]);
        call.v[1] = strdup(st->sha[i]);
        if (call.v[1] == NULL) {
            orch_redis_fail(st, "%s: out of memory", what);
            break;
        }
    }
    rd_args_free(&call);
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        char why[300];
        rd_reason(st, r, why, sizeof why);
        orch_redis_fail(st, "%s: %s", what, why);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* ---- calls with their values listed ------------------------------------ */

int orch_redis_writable(struct rd_store *st, const char *what)
{
    if (!st->readonly)
        return 0;
    return orch_redis_fail(st, "%s: the store is open read-only", what);
}

/* Script i, or a command when i is RD_NSCRIPT, with the values fmt lists;
 * a write is refused (NULL) on a read-only store. */
static redisReply *rd_vcall(struct rd_store *st, enum rd_script i, enum rd_access access, const char *what,
                            const char *fmt, va_list ap)
{
    if (access == RD_WRITES && orch_redis_writable(st, what) != 0)
        return NULL;
    struct rd_args a = {0};
    rd_args_vfmt(&a, fmt, ap);
    redisReply *r = i == RD_NSCRIPT ? orch_redis_cmd(st, &a, what) : orch_redis_eval(st, i, &a, what);
    rd_args_free(&a);
    return r;
}

redisReply *orch_redis_cmdf(struct rd_store *st, const char *what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = rd_vcall(st, RD_NSCRIPT, RD_READS, what, fmt, ap);
    va_end(ap);
    return r;
}

redisReply *orch_redis_evalf(struct rd_store *st, enum rd_script i, enum rd_access access, const char *what,
                             const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = rd_vcall(st, i, access, what, fmt, ap);
    va_end(ap);
    return r;
}

int orch_redis_hmget(struct rd_store *st, const char *key, const char *const *fields, size_t n,
                     redisReply **out, const char *what)
{
    struct rd_args a = {0};
    rd_arg_s(&a, "HMGET");
    rd_arg_s(&a, key);
    for (size_t i = 0; i < n; i++)
        rd_arg_s(&a, fields[i]);
    redisReply *r = orch_redis_cmd(st, &a, what);
    rd_args_free(&a);
    *out = r;
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != n)
        return orch_redis_fail(st, "%s: %s", what,
                               r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    return r->element[0]->type == REDIS_REPLY_STRING;
}

/* An integer reply's value (r freed here); -2 for no reply, -3 for any
 * other. */
static int64_t rd_int_reply(redisReply *r)
{
    if (r == NULL)
        return -2;
    int64_t n = r->type == REDIS_REPLY_INTEGER ? r->integer : -3;
    freeReplyObject(r);
    return n;
}

int64_t orch_redis_eval_int(struct rd_store *st, enum rd_script i, struct rd_args *a, const char *what)
{
    redisReply *r = orch_redis_writable(st, what) == 0 ? orch_redis_eval(st, i, a, what) : NULL;
    rd_args_free(a);
    return rd_int_reply(r);
}

int64_t orch_redis_vwritef(struct rd_store *st, enum rd_script i, const char *what, const char *fmt,
                           va_list ap)
{
    return rd_int_reply(rd_vcall(st, i, RD_WRITES, what, fmt, ap));
}

int64_t orch_redis_writef(struct rd_store *st, enum rd_script i, const char *what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int64_t n = orch_redis_vwritef(st, i, what, fmt, ap);
    va_end(ap);
    return n;
}

/* ---- checks at open ---------------------------------------------------- */

/* The value of a field "name:value" of INFO's text, into out. */
static void info_field(const char *info, const char *name, char *out, size_t outlen)
{
    out[0] = '\0';
    size_t n = strlen(name);
    for (const char *p = info; p != NULL && *p != '\0';
         p = strchr(p, '\n') != NULL ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && p[n] == ':') {
            snprintf(out, outlen, "%.*s", (int)strcspn(p + n + 1, "\r\n"), p + n + 1);
            return;
        }
    }
}

static void rd_read_version(struct rd_store *st)
{
    const char *argv[] = {"INFO", "server"};
    redisReply *r = rd_cmdv(st, 2, argv);
    if (r != NULL && r->type == REDIS_REPLY_STRING)
        info_field(r->str, "redis_version", st->version, sizeof st->version);
    freeReplyObject(r);
}

/* Every script loaded: a server without scripting is refused. */
static int rd_load_all(struct rd_store *st, char *err, size_t errlen)
{
    for (int i = 0; i < RD_NSCRIPT; i++) {
        char why[300];
        if (rd_load(st, (enum rd_script)i, why, sizeof why) != 0) {
            snprintf(err, errlen,
                     "%s: the server does not run Lua scripts (%s); orch writes every checkpoint as one "
                     "server-side script: use a Redis server with scripting (SCRIPT, EVALSHA) enabled",
                     st->shown, why);
            return -1;
        }
    }
    return 0;
}

/* HGET of the meta key's field into out ("" when missing). 0 or -1. */
static int rd_meta(struct rd_store *st, const char *field, char *out, size_t outlen, char *err, size_t errlen)
{
    struct rd_args a = {0};
    rd_arg_s(&a, "HGET");
    char key[300];
    snprintf(key, sizeof key, "%smeta", st->url.prefix);
    rd_arg_s(&a, key);
    rd_arg_s(&a, field);
    redisReply *r = orch_redis_cmd(st, &a, "cannot read orch's meta key");
    rd_args_free(&a);
    out[0] = '\0';
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        char why[300];
        rd_reason(st, r, why, sizeof why);
        snprintf(err, errlen, "%s: cannot read %smeta: %s", st->shown, st->url.prefix, why);
        freeReplyObject(r);
        return -1;
    }
    if (r->type == REDIS_REPLY_STRING)
        snprintf(out, outlen, "%s", r->str);
    freeReplyObject(r);
    return 0;
}

/* The SCAN pattern of every key under the prefix, its glob characters
 * escaped. */
static void scan_pattern(const char *prefix, char *out, size_t outlen)
{
    size_t at = 0;
    for (const char *p = prefix; *p != '\0' && at + 3 < outlen; p++) {
        if (strchr("*?[]\\", *p) != NULL)
            out[at++] = '\\';
        out[at++] = *p;
    }
    out[at++] = '*';
    out[at] = '\0';
}

/* The first key under the prefix (SCAN, a batch at a time, so a big
 * database is never blocked), into key ("" when there is none). 0 or -1. */
static int rd_first_key(struct rd_store *st, char *key, size_t keylen, char *err, size_t errlen)
{
    char pat[600], cursor[32] = "0";
    scan_pattern(st->url.prefix, pat, sizeof pat);
    key[0] = '\0';
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", pat, "COUNT", "1000"};
        redisReply *r = rd_cmdv(st, 6, argv);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            char why[300];
            rd_reason(st, r, why, sizeof why);
            snprintf(err, errlen, "%s: cannot look at the keys under %s: %s", st->shown, st->url.prefix, why);
            freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        if (r->element[1]->elements > 0)
            snprintf(key, keylen, "%s", r->element[1]->element[0]->str);
        freeReplyObject(r);
    } while (key[0] == '\0' && strcmp(cursor, "0") != 0);
    return 0;
}

/* Marks the prefix as orch's, or refuses one holding other keys. */
static int rd_setup(struct rd_store *st, char *err, size_t errlen)
{
    char key[200];
    if (rd_first_key(st, key, sizeof key, err, errlen) != 0)
        return -1;
    struct rd_args a = {0};
    rd_arg_i(&a, RD_SCHEMA);
    rd_arg_s(&a, key);
    redisReply *r = orch_redis_eval(st, RD_SETUP, &a, "cannot set up the store");
    rd_args_free(&a);
    if (r == NULL) {
        snprintf(err, errlen, "%s", st->base.err);
        return -1;
    }
    int foreign =
        r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->type == REDIS_REPLY_STRING;
    if (foreign)
        snprintf(err, errlen,
                 "%s: the database holds keys under %s that are not orch's (%.100s); nothing was changed: "
                 "give orch a database (/N) or a key prefix (?prefix=) of its own",
                 st->shown, st->url.prefix, r->element[0]->str);
    freeReplyObject(r);
    return foreign ? -1 : 0;
}

/* The schema: orch's, and not newer than this orch; readonly: present. */
static int rd_check_schema(struct rd_store *st, char *err, size_t errlen)
{
    char app[64], schema[32];
    if (rd_meta(st, "app", app, sizeof app, err, errlen) != 0)
        return -1;
    if (app[0] == '\0' && st->readonly) {
        snprintf(err, errlen,
                 "no state store at %s (the database has no orch keys under %s; no run has used it)",
                 st->shown, st->url.prefix);
        return -1;
    }
    if (!st->readonly && strcmp(app, "orch") != 0 && rd_setup(st, err, errlen) != 0)
        return -1;
    if (rd_meta(st, "schema", schema, sizeof schema, err, errlen) != 0)
        return -1;
    long v = strtol(schema, NULL, 10);
    if (v > RD_SCHEMA) {
        snprintf(err, errlen,
                 "%s: created by a newer orch (schema %ld, this orch knows up to %d); use that orch",
                 st->shown, v, RD_SCHEMA);
        return -1;
    }
    if (v < RD_SCHEMA && st->readonly) {
        snprintf(err, errlen,
                 "%s: written by an older orch (schema %ld, this orch reads %d); any writing command "
                 "(orch run, resume or gc) upgrades it",
                 st->shown, v, RD_SCHEMA);
        return -1;
    }
    if (v < RD_SCHEMA) {
        struct rd_args a = {0};
        redisReply *r = orch_redis_eval(st, RD_MIGRATE, &a, "cannot upgrade the store to schema 2");
        rd_args_free(&a);
        if (r == NULL) {
            snprintf(err, errlen, "%s", st->base.err);
            return -1;
        }
        freeReplyObject(r);
    }
    return 0;
}

/* CONFIG GET name's value into out, or "" with why when refused. */
static void rd_config(struct rd_store *st, const char *name, char *out, size_t outlen, char *why,
                      size_t whylen)
{
    const char *argv[] = {"CONFIG", "GET", name};
    redisReply *r = rd_cmdv(st, 3, argv);
    out[0] = '\0';
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING)
        snprintf(out, outlen, "%s", r->element[1]->str);
    else
        rd_reason(st, r, why, whylen);
    freeReplyObject(r);
}

/* What a crash of the server could lose with these settings, or NULL
 * when nothing acknowledged can be lost. */
static const char *rd_risk(const char *aof, const char *fsync)
{
    if (aof[0] == '\0' || fsync[0] == '\0')
        return "unknown";
    if (strcmp(aof, "yes") != 0)
        return "no append-only file: a crash of the Redis server loses everything written since its last "
               "snapshot (checkpoints, and journaled replies that were paid for)";
    if (strcmp(fsync, "always") != 0)
        return strcmp(fsync, "everysec") == 0
                   ? "a crash of the server's machine can lose the last second of acknowledged checkpoints "
                     "and journaled replies"
                   : "a crash of the server's machine can lose the acknowledged checkpoints and journaled "
                     "replies the OS had not yet written (up to ~30 s)";
    return NULL;
}

/* Reads appendonly and appendfsync: 1 with what a crash of the server
 * could lose in what when it could lose acknowledged writes, else 0. */
static int rd_durability(struct rd_store *st, char *what, size_t whatlen)
{
    char aof[32], fsync[32], why[300] = "";
    rd_config(st, "appendonly", aof, sizeof aof, why, sizeof why);
    rd_config(st, "appendfsync", fsync, sizeof fsync, why, sizeof why);
    const char *risk = rd_risk(aof, fsync);
    if (risk == NULL)
        return 0;
    if (strcmp(risk, "unknown") == 0)
        snprintf(
            what, whatlen,
            "cannot read the server's durability settings (CONFIG GET: %s): acknowledged checkpoints may "
            "not survive a crash of the server",
            why);
    else
        snprintf(what, whatlen, "appendonly %s, appendfsync %s: %s", aof, fsync, risk);
    return 1;
}

/* Inspection writes nothing, so it has nothing to lose: no warning. */
static void rd_warn(struct rd_store *st, const char *what)
{
    if (st->readonly)
        return;
    snprintf(st->warning, sizeof st->warning,
             "%s: %s; set appendonly yes and appendfsync always for orch's guarantees (--require-durable "
             "refuses such a server)",
             st->shown, what);
    st->base.warning = st->warning;
}

/* The message for a connection or login that failed. */
static void rd_connect_error(struct rd_store *st, const char *why, int login, char *err, size_t errlen)
{
    if (login && strncmp(why, "NOAUTH", 6) == 0)
        snprintf(err, errlen,
                 "%s: cannot log in to Redis: the server wants a password (%s); give it in the URL "
                 "(redis://:PASSWORD@host:port/N)",
                 st->shown, why);
    else if (login)
        snprintf(err, errlen, "%s: cannot log in to Redis: %s; check the user and password in the URL",
                 st->shown, why);
    else
        snprintf(err, errlen,
                 "%s: cannot connect to Redis: the server is not reachable (%s); check the host and port and "
                 "that the server is running",
                 st->shown, why);
}

int orch_redis_connect(struct rd_store *st, const char *target, int flags, char *err, size_t errlen)
{
    char why[300];
    if (url_parse(&st->url, target, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: not a Redis URL: %s", st->shown, why);
        return -1;
    }
    st->readonly = (flags & ORCH_STORE_READONLY) != 0;
    int login = 0;
    if (rd_dial(st, why, sizeof why, &login) != 0) {
        rd_connect_error(st, why, login, err, errlen);
        return -1;
    }
    rd_read_version(st);
    if (rd_load_all(st, err, errlen) != 0)
        return -1;
    /* refused before anything is written; warned about only once it opens */
    char what[600];
    int risky = rd_durability(st, what, sizeof what);
    if (risky && (flags & ORCH_STORE_REQUIRE_DURABLE) != 0) {
        snprintf(err, errlen,
                 "%s: not durable (%s); --require-durable refuses it: set appendonly yes and appendfsync "
                 "always on the server",
                 st->shown, what);
        return -1;
    }
    if (rd_check_schema(st, err, errlen) != 0)
        return -1;
    if (risky)
        rd_warn(st, what);
    return 0;
}

void orch_redis_disconnect(struct rd_store *st)
{
    if (st->c != NULL)
        redisFree(st->c);
    st->c = NULL;
    url_free(&st->url);
}
