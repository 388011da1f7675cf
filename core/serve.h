/* serve.h — the HTTP side of `orch serve`: a read-only server on
 * libmicrohttpd, driven from this thread (MHD_run_wait, no internal
 * thread), so every request is answered on the thread that owns the Lua
 * state and the store. It enforces what does not depend on the content:
 * GET and HEAD only (405 otherwise), the bearer token (header or cookie,
 * `/?token=T` sets the cookie), response headers that keep pages from
 * being framed or sniffed. What to answer is the handler's.
 *
 * Pure C (no lua.h): depends on libmicrohttpd. */
#ifndef ORCH_SERVE_H
#define ORCH_SERVE_H

#include <stddef.h>

#define ORCH_SERVE_MAX_ARGS 16

/* One request as the handler sees it; strings live during the call. */
struct orch_serve_request {
    const char *method; /* "GET" or "HEAD" */
    const char *path;   /* "/api/runs", decoded, without the query */
    int nargs;
    const char *key[ORCH_SERVE_MAX_ARGS]; /* query arguments, decoded */
    const char *value[ORCH_SERVE_MAX_ARGS];
};

/* What the handler answers. body is malloc'd and handed over to the
 * server (freed after sending); type is a static string. */
struct orch_serve_response {
    int status;
    const char *type;
    char *body;
    size_t len;
};

/* Fills rs for rq. Must not fail: a handler that cannot answer sets a
 * 500 and a short body. */
typedef void (*orch_serve_handler)(void *ud, const struct orch_serve_request *rq,
                                   struct orch_serve_response *rs);

struct orch_serve_config {
    const char *host;  /* IPv4 address to bind, "127.0.0.1" by default */
    int port;          /* 0: any free port (the port bound is reported) */
    const char *token; /* required on every request when non-NULL */
    orch_serve_handler handler;
    void *ud;
    /* called once listening, with the port bound: the caller prints it */
    void (*ready)(void *ud, const char *host, int port);
};

/* Serves until SIGINT or SIGTERM. 0 after a clean stop, -1 with the
 * reason in err (the address is not an IPv4 address, the port is taken,
 * ...). */
int orch_serve_run(const struct orch_serve_config *cfg, char *err, size_t errlen);

/* Whether host is a loopback address (127.0.0.0/8, "localhost"). */
int orch_serve_is_loopback(const char *host);

#endif
