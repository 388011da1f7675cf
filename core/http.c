/* http.c — libcurl multi over the event loop. See http.h. */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#ifndef ORCH_VERSION
#define ORCH_VERSION "0.0.0"
#endif

/* Easy handles are kept for reuse: creating one allocates its buffers and
 * caches anew, and a busy run makes thousands. */
#define HTTP_POOL_MAX 256

/* What curl's callbacks and CURLINFO_PRIVATE reach, one per easy handle,
 * given to curl once when the handle is made: pointing curl at each
 * request's own record (PRIVATE, WRITEDATA, HEADERDATA, ERRORBUFFER) and
 * clearing them after took eight curl_easy_setopt calls a request. The
 * request holding the handle owns it meanwhile. */
struct slot {
    struct orch_http_req *req; /* the request on the handle, or NULL */
    char errbuf[CURL_ERROR_SIZE];
};

/* A pooled easy handle and the per-request options it was last given:
 * setting an option to the value it holds costs curl a call for nothing. */
struct pooled {
    CURL *easy;
    struct slot *slot; /* owned; curl holds its address */
    long timeout_ms, connect_timeout_ms;
    char *url; /* the URL uh holds (owned), or NULL: the handle has none */
    CURLU *uh; /* that URL parsed once (owned; the easy handle borrows it) */
};

struct orch_http {
    struct orch_loop *loop;
    CURLM *multi;
    struct orch_timer *timer; /* curl's requested timeout, or NULL */
    struct pooled pool[HTTP_POOL_MAX];
    size_t npool;
    size_t live;           /* requests not yet freed: the pool outlives none of them */
    size_t inflight, peak; /* requests started and not finished; the most at once */
    int closing;           /* orch_http_free ran while requests were live */
};

struct buf {
    char *p;
    size_t len, cap, max;
};

/* A list of header lines, with orch's own User-Agent and Accept-Encoding
 * lines added once, at first use, unless the caller gave its own. */
struct orch_http_headers {
    struct curl_slist *list;
    unsigned given; /* HDR_UA | HDR_AE: the caller's own lines */
    int sealed;     /* orch's lines added */
};

enum { HDR_UA = 1, HDR_AE = 2 };

struct orch_http_req {
    struct orch_http *owner; /* whose pool the easy handle returns to */
    struct pooled p;
    struct orch_http_headers headers;
    struct orch_http_headers *shared; /* borrowed: sent in place of headers */
    struct orch_http *h;              /* while in flight */
    orch_http_done_fn done;
    void *ud;
    struct buf body;
    struct buf head;
    struct orch_http_result res;
};

/* ---- buffers ---- */

/* Appends n bytes; -1 past the cap or out of memory. Keeps a NUL after. */
static int buf_add(struct buf *b, const char *p, size_t n)
{
    if (b->len + n > b->max)
        return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (q == NULL)
            return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct orch_http_req *r = ((struct slot *)ud)->req;
    if (buf_add(&r->body, p, size * n) != 0)
        return 0; /* aborts with CURLE_WRITE_ERROR */
    return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct orch_http_req *r = ((struct slot *)ud)->req;
    if (size * n >= 5 && strncmp(p, "HTTP/", 5) == 0)
        r->head.len = 0; /* a new response (after a 100 Continue): keep only the last */
    if (buf_add(&r->head, p, size * n) != 0)
        return 0;
    return size * n;
}

/* ---- loop glue ---- */

static void drain(struct orch_http *h)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct slot *slot = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&slot);
        struct orch_http_req *r = slot->req;
        CURLcode code = m->data.result;
        curl_multi_remove_handle(h->multi, r->p.easy);
        r->h = NULL;
        h->inflight--;
        r->res.error = (int)code;
        if (code != CURLE_OK) {
            if (code == CURLE_WRITE_ERROR && r->body.len + CURL_MAX_WRITE_SIZE > r->body.max)
                r->res.message = "response body larger than the limit";
            else
                r->res.message = slot->errbuf[0] != '\0' ? slot->errbuf : curl_easy_strerror(code);
        }
        curl_easy_getinfo(r->p.easy, CURLINFO_RESPONSE_CODE, &r->res.status);
        curl_easy_getinfo(r->p.easy, CURLINFO_TOTAL_TIME, &r->res.seconds);
        r->res.body = r->body.p != NULL ? r->body.p : "";
        r->res.body_len = r->body.len;
        r->res.headers = r->head.p != NULL ? r->head.p : "";
        r->done(r, r->ud);
    }
}

static void on_fd(int fd, int events, void *ud)
{
    struct orch_http *h = ud;
    int flags = ((events & ORCH_LOOP_READ) ? CURL_CSELECT_IN : 0) |
                ((events & ORCH_LOOP_WRITE) ? CURL_CSELECT_OUT : 0) |
                ((events & ORCH_LOOP_ERROR) ? CURL_CSELECT_ERR : 0);
    int running;
    curl_multi_socket_action(h->multi, fd, flags, &running);
    drain(h);
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct orch_http *h = userp;
    (void)e;
    (void)socketp;
    if (what == CURL_POLL_REMOVE) {
        /* usually a kept-alive connection going back to the cache, about to
         * be watched for the same events again; on_close unregisters it */
        orch_loop_park(h->loop, s);
        return 0;
    }
    int events =
        ((what & CURL_POLL_IN) ? ORCH_LOOP_READ : 0) | ((what & CURL_POLL_OUT) ? ORCH_LOOP_WRITE : 0);
    return orch_loop_watch(h->loop, s, events, on_fd, h) == 0 ? 0 : -1;
}

/* curl closes every socket it opened through here: the loop forgets it
 * first, so a parked registration cannot outlive its descriptor. */
static int on_close(void *userp, curl_socket_t s)
{
    struct orch_http *h = userp;
    orch_loop_watch(h->loop, s, 0, NULL, NULL);
    return close(s);
}

static void on_timeout(void *ud)
{
    struct orch_http *h = ud;
    h->timer = NULL; /* fired: the loop freed it */
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    drain(h);
}

static int on_timer(CURLM *m, long timeout_ms, void *userp)
{
    struct orch_http *h = userp;
    (void)m;
    if (h->timer != NULL) {
        orch_loop_timer_cancel(h->loop, h->timer);
        h->timer = NULL;
    }
    if (timeout_ms < 0)
        return 0;
    h->timer = orch_loop_timer_add(h->loop, (uint64_t)timeout_ms, on_timeout, h);
    return h->timer != NULL ? 0 : -1;
}

/* ---- public ---- */

static void pooled_free(struct pooled *p)
{
    curl_easy_cleanup(p->easy); /* first: it borrows uh and slot */
    curl_url_cleanup(p->uh);
    free(p->slot);
    free(p->url);
}

/* curl_global_init runs on the first client, not at start-up: it brings up
 * the TLS library (megabytes of memory) that runs without HTTP never use. */
static int curl_ready;

void orch_http_global_cleanup(void)
{
    if (curl_ready)
        curl_global_cleanup();
    curl_ready = 0;
}

/* orch's own header lines. curl would add the same two itself
 * (CURLOPT_USERAGENT, CURLOPT_ACCEPT_ENCODING "") by formatting them anew
 * with its printf for every transfer; written once into the header list,
 * they cost a request about 4,000 instructions less. The Accept-Encoding
 * value is the one curl builds: the encodings this libcurl decodes, in
 * curl's order. CURLOPT_ACCEPT_ENCODING stays set on every handle, so
 * curl still decodes a compressed reply; it skips its own line when the
 * list has one. */
static const char ua_line[] = "User-Agent: orch/" ORCH_VERSION;
static char ae_line[64];

static void ae_line_init(void)
{
    static const struct {
        int feature;
        const char *names;
    } enc[] = {
        {CURL_VERSION_LIBZ, "deflate, gzip"}, {CURL_VERSION_BROTLI, "br"}, {CURL_VERSION_ZSTD, "zstd"}};
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    size_t n = (size_t)snprintf(ae_line, sizeof ae_line, "Accept-Encoding: ");
    const char *sep = "";
    for (size_t i = 0; i < sizeof enc / sizeof enc[0]; i++) {
        if (v != NULL && (v->features & enc[i].feature)) {
            n += (size_t)snprintf(ae_line + n, sizeof ae_line - n, "%s%s", sep, enc[i].names);
            sep = ", ";
        }
    }
    if (*sep == '\0')
        snprintf(ae_line + n, sizeof ae_line - n, "identity"); /* curl's value with no decoder */
}

/* Whether the environment names a proxy, or hosts that go without one:
 * the variables curl reads for every transfer that has no proxy set
 * (http_proxy for http; https_proxy and HTTPS_PROXY; all_proxy and
 * ALL_PROXY; no_proxy and NO_PROXY), read here once. When none is set, a
 * handle is told "no proxy" itself, and curl skips those lookups (about
 * 1,500 instructions a request); when one is, curl reads them as it
 * always does. */
static int proxy_env;

static void proxy_env_init(void)
{
    static const char *const names[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                        "ALL_PROXY",  "no_proxy",    "NO_PROXY"};
    proxy_env = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = getenv(names[i]);
        if (v != NULL && v[0] != '\0')
            proxy_env = 1;
    }
}

struct orch_http *orch_http_new(struct orch_loop *loop)
{
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return NULL;
        ae_line_init();
        proxy_env_init();
        curl_ready = 1;
    }
    struct orch_http *h = calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    h->loop = loop;
    h->multi = curl_multi_init();
    if (h->multi == NULL) {
        free(h);
        return NULL;
    }
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    return h;
}

void orch_http_free(struct orch_http *h)
{
    if (h == NULL)
        return;
    if (h->timer != NULL)
        orch_loop_timer_cancel(h->loop, h->timer);
    h->timer = NULL;
    /* requests still in flight belong to their tasks, cancelled before this */
    curl_multi_cleanup(h->multi);
    h->multi = NULL;
    while (h->npool > 0)
        pooled_free(&h->pool[--h->npool]);
    if (h->live > 0) {
        h->closing = 1; /* the last orch_http_req_free frees h */
        return;
    }
    free(h);
}

/* A new easy handle in p, with its slot and the options every request of
 * h shares, set once: a pooled handle keeps them (curl_easy_reset would
 * cost as much again as the request's own setup). 0, or -1 when out of
 * memory (p holds nothing). */
static int easy_new(struct orch_http *h, struct pooled *p)
{
    p->timeout_ms = p->connect_timeout_ms = -1; /* neither set yet */
    p->url = NULL;
    p->uh = NULL;
    p->slot = calloc(1, sizeof *p->slot);
    CURL *e = p->slot != NULL ? curl_easy_init() : NULL;
    p->easy = e;
    if (e == NULL) {
        free(p->slot);
        p->slot = NULL;
        return -1;
    }
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)p->slot);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, p->slot->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, p->slot);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, p->slot);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, h);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* decodes; the line itself is ae_line */
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 4096L); /* LLM replies are small; 200 handles x 16 KiB adds up */
    /* no proxy in the environment: say so, and curl skips its lookups */
    if (!proxy_env) {
        curl_easy_setopt(e, CURLOPT_PROXY, "");
        curl_easy_setopt(e, CURLOPT_NOPROXY, "");
    }
    return 0;
}

/* Points p's handle at url. A URL given with CURLOPT_URL is parsed, and
 * written back out with curl's printf, for every transfer (about 10,000
 * instructions); one given parsed (CURLOPT_CURLU) is only copied. So a
 * handle keeps its URL parsed, and parses again only when the URL
 * changes: most requests of a run go to one URL. A URL curl cannot parse
 * goes in as text, for curl to fail the transfer with its own message. */
static void set_url(struct pooled *p, const char *url)
{
    if (p->url != NULL && strcmp(p->url, url) == 0)
        return;
    CURLU *uh = curl_url();
    char *copy = strdup(url);
    /* the flags curl parses a CURLOPT_URL with */
    if (uh == NULL || copy == NULL ||
        curl_url_set(uh, CURLUPART_URL, url, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
        curl_url_cleanup(uh);
        free(copy);
        uh = NULL;
        copy = NULL;
    }
    curl_easy_setopt(p->easy, CURLOPT_CURLU, uh);
    /* the text URL: forgotten with a parsed one (curl then writes it out
     * of uh once, at the next transfer) */
    curl_easy_setopt(p->easy, CURLOPT_URL, uh != NULL ? NULL : url);
    curl_url_cleanup(p->uh);
    free(p->url);
    p->uh = uh;
    p->url = copy;
}

struct orch_http_req *orch_http_req_new(struct orch_http *h, const char *method, const char *url,
                                        const char *body, size_t body_len, long timeout_ms,
                                        long connect_timeout_ms, size_t max_body)
{
    struct orch_http_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    if (h->npool > 0) {
        r->p = h->pool[--h->npool];
    } else if (easy_new(h, &r->p) != 0) {
        free(r);
        return NULL;
    }
    r->p.slot->req = r;
    r->p.slot->errbuf[0] = '\0'; /* no message left from the handle's last transfer */
    r->owner = h;
    h->live++;
    r->body.max = max_body;
    r->head.max = 256 * 1024;
    CURL *e = r->p.easy;
    set_url(&r->p, url);
    if (r->p.timeout_ms != timeout_ms)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    if (r->p.connect_timeout_ms != connect_timeout_ms)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms);
    r->p.timeout_ms = timeout_ms;
    r->p.connect_timeout_ms = connect_timeout_ms;
    /* Waiting for a connection that may multiplex pays off only where
     * HTTP/2 is negotiated (TLS, ALPN). Plain http:// is HTTP/1.1: a waiting
     * request would queue behind another's whole reply while its timeout
     * runs, so a slow local server (llama.cpp, vLLM, Ollama) would see one
     * request at a time and time the rest out. There each request opens its
     * own connection at once. Set per request: the easy handle is pooled. */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, strncasecmp(url, "https://", 8) == 0 ? 1L : 0L);
    /* a pooled handle remembers its last method: state this one in full */
    curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
    if (body != NULL) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body); /* curl keeps its own copy */
    } else {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        if (strcmp(method, "HEAD") == 0)
            curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    }
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    return r;
}

/* 1 when line is a "name:" or "name;" line (curl's own test for a
 * caller's header replacing one of its own). */
static int line_names(const char *line, const char *name, size_t n)
{
    return strncasecmp(line, name, n) == 0 && (line[n] == ':' || line[n] == ';');
}

static int hdr_add(struct orch_http_headers *hs, const char *line)
{
    struct curl_slist *l = curl_slist_append(hs->list, line);
    if (l == NULL)
        return -1;
    hs->list = l;
    if (line_names(line, "user-agent", 10))
        hs->given |= HDR_UA;
    else if (line_names(line, "accept-encoding", 15))
        hs->given |= HDR_AE;
    return 0;
}

/* Adds orch's lines the caller did not give, once. 0, or -1 when out of
 * memory (then again at the next use). */
static int hdr_seal(struct orch_http_headers *hs)
{
    if (hs->sealed)
        return 0;
    if (!(hs->given & HDR_UA) && hdr_add(hs, ua_line) != 0)
        return -1;
    if (!(hs->given & HDR_AE) && hdr_add(hs, ae_line) != 0)
        return -1;
    hs->sealed = 1;
    return 0;
}

int orch_http_req_header(struct orch_http_req *r, const char *line)
{
    return hdr_add(&r->headers, line);
}

struct orch_http_headers *orch_http_headers_new(void)
{
    return calloc(1, sizeof(struct orch_http_headers));
}

int orch_http_headers_add(struct orch_http_headers *hs, const char *line)
{
    return hdr_add(hs, line);
}

void orch_http_headers_free(struct orch_http_headers *hs)
{
    if (hs == NULL)
        return;
    curl_slist_free_all(hs->list);
    free(hs);
}

void orch_http_req_use_headers(struct orch_http_req *r, struct orch_http_headers *hs)
{
    r->shared = hs;
}

int orch_http_start(struct orch_http *h, struct orch_http_req *r, orch_http_done_fn done, void *ud)
{
    struct orch_http_headers *hs = r->shared != NULL ? r->shared : &r->headers;
    if (hdr_seal(hs) != 0)
        return -1;
    curl_easy_setopt(r->p.easy, CURLOPT_HTTPHEADER, hs->list);
    r->done = done;
    r->ud = ud;
    r->h = h;
    if (curl_multi_add_handle(h->multi, r->p.easy) != CURLM_OK) {
        r->h = NULL;
        return -1;
    }
    if (++h->inflight > h->peak) {
        /* curl sizes its connection cache at 4 per transfer added at the
         * moment a connection goes back to it: when a whole wave of replies
         * finishes before the next wave starts (rows resume only after the
         * loop callback), that count drops and the cache closes the
         * connections the next wave then opens anew. The same rule on the
         * most transfers ever in flight keeps them. */
        h->peak = h->inflight;
        curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)(4 * h->peak));
    }
    return 0;
}

void orch_http_cancel(struct orch_http *h, struct orch_http_req *r)
{
    if (r->h == NULL)
        return;
    curl_multi_remove_handle(h->multi, r->p.easy);
    r->h = NULL;
    h->inflight--;
}

const struct orch_http_result *orch_http_req_result(const struct orch_http_req *r)
{
    return &r->res;
}

int orch_http_header_next(const char **pos, struct orch_http_header *out)
{
    const char *p = *pos;
    while (*p != '\0') {
        const char *eol = strchr(p, '\n');
        if (eol == NULL)
            eol = p + strlen(p);
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        const char *line = p;
        p = *eol != '\0' ? eol + 1 : eol;
        if (colon == NULL)
            continue;
        const char *v = colon + 1;
        while (v < eol && (*v == ' ' || *v == '\t'))
            v++;
        const char *end = eol;
        while (end > v && (end[-1] == '\r' || end[-1] == ' '))
            end--;
        out->name = line;
        out->name_len = (size_t)(colon - line);
        out->value = v;
        out->value_len = (size_t)(end - v);
        *pos = p;
        return 1;
    }
    *pos = p;
    return 0;
}

void orch_http_req_free(struct orch_http_req *r)
{
    if (r == NULL)
        return;
    struct orch_http *h = r->owner;
    if (r->h != NULL)
        orch_http_cancel(r->h, r);
    if (!h->closing && h->npool < HTTP_POOL_MAX) {
        /* back to the pool with its shared options and its slot; nothing
         * of r's stays reachable (the next request sets its own list) */
        curl_easy_setopt(r->p.easy, CURLOPT_HTTPHEADER, NULL);
        r->p.slot->req = NULL;
        h->pool[h->npool++] = r->p;
    } else {
        pooled_free(&r->p);
    }
    h->live--;
    if (h->closing && h->live == 0)
        free(h);
    curl_slist_free_all(r->headers.list);
    free(r->body.p);
    free(r->head.p);
    free(r);
}
