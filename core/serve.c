/* serve.c — libmicrohttpd driven from the calling thread (serve.h). */
#include "serve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

static volatile sig_atomic_t serve_stop;

static void serve_on_signal(int sig)
{
    (void)sig;
    serve_stop = 1;
}

int orch_serve_is_loopback(const char *host)
{
    struct in_addr a;
    if (strcmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a) != 1)
        return 0;
    return (ntohl(a.s_addr) >> 24) == 127;
}

/* Constant-time comparison: how long it takes says nothing about how
 * much of a guessed token was right. */
static int token_equal(const char *given, const char *want)
{
    size_t n = strlen(want);
    size_t m = strlen(given);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)want[i] ^ (unsigned char)(i < m ? given[i] : 0);
    return diff == 0;
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    struct orch_serve_request *rq = cls;
    if (rq->nargs >= ORCH_SERVE_MAX_ARGS)
        return MHD_NO;
    rq->key[rq->nargs] = key;
    rq->value[rq->nargs] = value != NULL ? value : "";
    rq->nargs++;
    return MHD_YES;
}

/* Queues a response of status with body (copied); the security headers
 * go on every answer. */
static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *type, char *body,
                                 size_t len, enum MHD_ResponseMemoryMode mode, const char *cookie)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (r == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                            "object-src 'none'; frame-ancestors 'none'");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, "Allow", "GET, HEAD");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"orch\"");
    if (cookie != NULL) {
        MHD_add_response_header(r, "Set-Cookie", cookie);
        MHD_add_response_header(r, "Location", "/");
    }
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_static(struct MHD_Connection *c, unsigned status, const char *msg)
{
    return send_text(c, status, "text/plain; charset=utf-8", (char *)msg, strlen(msg), MHD_RESPMEM_PERSISTENT,
                     NULL);
}

/* The token the request carries: "Authorization: Bearer T", else the
 * token cookie; NULL when none. */
static const char *request_token(struct MHD_Connection *c)
{
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth != NULL && strncmp(auth, "Bearer ", 7) == 0)
        return auth + 7;
    return MHD_lookup_connection_value(c, MHD_COOKIE_KIND, "orch_token");
}

/* The access check: NULL when the request may go on, else it has been
 * answered (401, or the redirect that sets the cookie) and *ret says
 * how. */
static int check_token(const struct orch_serve_config *cfg, struct MHD_Connection *c, const char *url,
                       enum MHD_Result *ret)
{
    if (cfg->token == NULL)
        return 0;
    const char *given = request_token(c);
    if (given != NULL && token_equal(given, cfg->token))
        return 0;
    const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "token");
    if (strcmp(url, "/") == 0 && q != NULL && token_equal(q, cfg->token)) {
        /* the token leaves the address bar: the cookie carries it from now on */
        char cookie[600];
        snprintf(cookie, sizeof cookie, "orch_token=%s; HttpOnly; SameSite=Strict; Path=/", cfg->token);
        *ret = send_text(c, MHD_HTTP_SEE_OTHER, "text/plain; charset=utf-8", (char *)"", 0,
                         MHD_RESPMEM_PERSISTENT, cookie);
        return 1;
    }
    *ret = send_static(c, MHD_HTTP_UNAUTHORIZED,
                       "401 unauthorized: send \"Authorization: Bearer TOKEN\", or open /?token=TOKEN once "
                       "(the token orch serve was started with)\n");
    return 1;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size,
                                  void **con_cls)
{
    (void)version;
    (void)upload_data;
    const struct orch_serve_config *cfg = cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        /* no body is read: the answer does not depend on it */
        if (*upload_size != 0) {
            *upload_size = 0;
            return MHD_YES;
        }
        if (*con_cls == NULL) {
            *con_cls = (void *)1;
            return MHD_YES;
        }
        return send_static(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                           "405 method not allowed: orch serve is read-only "
                           "(GET and HEAD)\n");
    }
    enum MHD_Result ret = MHD_NO;
    if (check_token(cfg, c, url, &ret))
        return ret;
    struct orch_serve_request rq = {.method = method, .path = url};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_arg, &rq);
    struct orch_serve_response rs = {0};
    cfg->handler(cfg->ud, &rq, &rs);
    if (rs.body == NULL)
        return send_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "500 internal error\n");
    /* ownership of rs.body moves to libmicrohttpd */
    return send_text(c, (unsigned)rs.status, rs.type, rs.body, rs.len, MHD_RESPMEM_MUST_FREE, NULL);
}

int orch_serve_run(const struct orch_serve_config *cfg, char *err, size_t errlen)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    const char *host = strcmp(cfg->host, "localhost") == 0 ? "127.0.0.1" : cfg->host;
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "--listen %s: not an IPv4 address (e.g. 127.0.0.1 or 0.0.0.0)", cfg->host);
        return -1;
    }
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_AUTO, 0, NULL, NULL, on_request, (void *)cfg, MHD_OPTION_SOCK_ADDR,
                         (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    if (d == NULL) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s (is another server using the port?)", cfg->host,
                 cfg->port, strerror(errno != 0 ? errno : EADDRINUSE));
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int port = info != NULL ? (int)info->port : cfg->port;
    struct sigaction sa_new, old_int, old_term;
    memset(&sa_new, 0, sizeof sa_new);
    sa_new.sa_handler = serve_on_signal; /* no SA_RESTART: the wait returns */
    sigemptyset(&sa_new.sa_mask);
    serve_stop = 0;
    sigaction(SIGINT, &sa_new, &old_int);
    sigaction(SIGTERM, &sa_new, &old_term);
    signal(SIGPIPE, SIG_IGN);
    if (cfg->ready != NULL)
        cfg->ready(cfg->ud, cfg->host, port);
    while (!serve_stop)
        MHD_run_wait(d, 500);
    MHD_stop_daemon(d);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return 0;
}
