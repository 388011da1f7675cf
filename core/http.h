/* http.h — concurrent HTTP requests over libcurl multi, driven by loop.c.
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION ->
 * orch_loop_watch) and when to wake it (CURLMOPT_TIMERFUNCTION -> a loop
 * timer); readiness goes back through curl_multi_socket_action, and each
 * finished transfer is handed to its done callback, which only records
 * and wakes: no Lua runs here (curl refuses re-entrant calls, and the
 * scheduler resumes tasks outside loop callbacks). One easy handle per
 * request; connections are reused through the multi handle's cache
 * (HTTP/1.1 keep-alive, HTTP/2 multiplexing where the server offers it).
 * Pure C: depends on libcurl and loop.h. */
#ifndef ORCH_HTTP_H
#define ORCH_HTTP_H

#include <stddef.h>

#include "loop.h"

struct orch_http;
struct orch_http_req;

typedef void (*orch_http_done_fn)(struct orch_http_req *req, void *ud);

/* The result of a finished request (valid until orch_http_req_free). */
struct orch_http_result {
    int error;           /* 0, or the libcurl error code of a transport failure */
    const char *message; /* transport failure text ("Connection refused", "Operation timed out ...") */
    long status;         /* HTTP status; 0 when no response arrived */
    const char *body;    /* NUL-terminated; body_len bytes */
    size_t body_len;
    const char *headers; /* the final response's header block, lines ending in \r\n */
    double seconds;      /* total transfer time */
};

/* Creates the multi handle (initialising libcurl on the first call); the
 * loop must outlive it. NULL when out of memory. */
struct orch_http *orch_http_new(struct orch_loop *loop);
/* Aborts every transfer still in flight (their done callbacks are not
 * called; their requests stay owned by whoever started them) and frees. */
void orch_http_free(struct orch_http *h);
/* Undoes libcurl's global initialisation, if any client made it; after
 * every client is freed. */
void orch_http_global_cleanup(void);

/* A request on h: method ("GET", "POST", ...), url, optional body (copied),
 * total and connect timeouts in ms (0 = none), and the largest response
 * body to accept. Returns NULL when out of memory. The caller owns it. */
struct orch_http_req *orch_http_req_new(struct orch_http *h, const char *method, const char *url,
                                        const char *body, size_t body_len, long timeout_ms,
                                        long connect_timeout_ms, size_t max_body);
/* Adds a header line "Name: value" (copied). 0 or -1. */
int orch_http_req_header(struct orch_http_req *r, const char *line);
/* Header lines built once and sent with many requests (an LLM provider's
 * content type and key): building curl's list anew costs a request two
 * allocations a line. A request given them borrows them, so they must
 * outlive it. */
struct orch_http_headers;
/* An empty list; NULL when out of memory. */
struct orch_http_headers *orch_http_headers_new(void);
/* Adds a "Name: value" line (copied). 0 or -1. */
int orch_http_headers_add(struct orch_http_headers *hs, const char *line);
void orch_http_headers_free(struct orch_http_headers *hs);
/* Sends r with hs's lines in place of its own (orch_http_req_header).
 * Every list sent gets orch's User-Agent and Accept-Encoding lines at its
 * first use, unless it has its own: add a set's lines before using it. */
void orch_http_req_use_headers(struct orch_http_req *r, struct orch_http_headers *hs);
/* Starts r; done(r, ud) runs from a loop callback when it finishes. 0, or
 * -1 (r not started: out of memory, or curl refused it). */
int orch_http_start(struct orch_http *h, struct orch_http_req *r, orch_http_done_fn done, void *ud);
/* Stops r if it is in flight (done is not called). */
void orch_http_cancel(struct orch_http *h, struct orch_http_req *r);
const struct orch_http_result *orch_http_req_result(const struct orch_http_req *r);
/* One "Name: value" line of a response's header block, as spans into the
 * block: the name as sent, the value without surrounding blanks. */
struct orch_http_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};
/* The one parser of header blocks (orch_http_result.headers): fills *out
 * with the next header line at *pos and advances *pos past it, skipping
 * lines without a colon (the status line, the blank line). 1, or 0 at the
 * end of the block. */
int orch_http_header_next(const char **pos, struct orch_http_header *out);
void orch_http_req_free(struct orch_http_req *r);

#endif
