/* http_lua.c — Lua bindings of http.c (`require "orch.http"`).
 *
 * request{...} builds a C-owned request (strings copied: Lua's may move or
 * be collected), starts it on the state's one multi handle, records a
 * cleanup hook that cancels it, and yields. The done callback only wakes
 * the task; the response table is built when the scheduler resumes it.
 *
 * post(url, headers, body, timeout, connect_timeout) is the LLM call's
 * request: positional arguments, status, body, time and Retry-After as
 * results (no argument or response tables), and headers either a table or
 * a header set from headers{...}, whose curl list is built once and sent
 * with every request given it.
 *
 * offline(true) makes request send nothing (orch estimate, --dry-run): it
 * answers with the workflow's on_estimate(function(req) ... end) reply, or
 * nil and an error that says so, and counts what it did not send. */
#include "http_lua.h"

#include <assert.h>
#include <ctype.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>

#include "http.h"
#include "json_lua.h"
#include "sched.h"
#include "runtime.h"

#define HTTP_MT "orch.Http"
#define PENDING_MT "orch.HttpPending" /* a request in flight: __close frees it */
#define HEADERS_MT "orch.HttpHeaders" /* a header set (http.headers): __gc frees it */

static const char http_key = 'H';
/* Offline mode (orch estimate, --dry-run): a table { count = requests not
 * sent } while on, absent otherwise. The workflow's stand-in reply, a
 * function(request) set with on_estimate, lives under its own key. */
static const char offline_key = 'O';
static const char on_estimate_key = 'E';

struct lhttp {
    struct orch_http *h;
};

struct lheaders {
    struct orch_http_headers *hs;
};

/* The module's functions hold the two metatables as upvalues: a request's
 * pending record and a header set get theirs, and post checks its header
 * set, without looking the names up in the registry each call. */
enum { UPV_PENDING_MT = 1, UPV_HEADERS_MT = 2 };

/* 1 when the value at idx is a header set (http.headers). */
static int is_header_set(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx))
        return 0;
    int same = lua_rawequal(L, -1, lua_upvalueindex(UPV_HEADERS_MT));
    lua_pop(L, 1);
    return same;
}

static int l_http_gc(lua_State *L)
{
    struct lhttp *u = luaL_checkudata(L, 1, HTTP_MT);
    orch_http_free(u->h);
    u->h = NULL;
    return 0;
}

/* The state's multi handle, created on first use and freed with the state. */
static struct orch_http *get_http(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &http_key) == LUA_TUSERDATA) {
        struct lhttp *u = lua_touserdata(L, -1);
        lua_pop(L, 1);
        return u->h;
    }
    lua_pop(L, 1);
    struct lhttp *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->h = NULL;
    if (luaL_newmetatable(L, HTTP_MT)) {
        lua_pushcfunction(L, l_http_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    u->h = orch_http_new(orch_sched_loop(orch_sched_get(L)));
    if (u->h == NULL)
        luaL_error(L, "cannot create the HTTP client (out of memory)");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &http_key);
    return u->h;
}

struct pending {
    struct orch_http_req *req;
    struct orch_http *h;
    struct orch_task *task;
};

static void req_done(struct orch_http_req *req, void *ud)
{
    (void)req;
    struct pending *p = ud;
    orch_task_wake(p->task, NULL, NULL);
}

static void req_cancel(struct orch_task *t, void *ud)
{
    (void)t;
    struct pending *p = ud;
    orch_http_cancel(p->h, p->req);
}

/* The response table, or nil + the transport error. */
static int push_response(lua_State *L, struct orch_http_req *req)
{
    const struct orch_http_result *res = orch_http_req_result(req);
    if (res->error != 0) {
        lua_pushnil(L);
        lua_pushstring(L, res->message);
        return 2;
    }
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, res->status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, res->body, res->body_len);
    lua_setfield(L, -2, "body");
    lua_pushnumber(L, res->seconds);
    lua_setfield(L, -2, "time");
    lua_createtable(L, 0, 8);
    char name[256]; /* header names are short; a longer one is skipped */
    const char *pos = res->headers;
    struct orch_http_header hd;
    while (orch_http_header_next(&pos, &hd)) {
        if (hd.name_len >= sizeof name)
            continue;
        for (size_t i = 0; i < hd.name_len; i++)
            name[i] = (char)tolower((unsigned char)hd.name[i]);
        lua_pushlstring(L, name, hd.name_len);
        lua_pushlstring(L, hd.value, hd.value_len);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");
    return 1;
}

/* The stack of l_http_request: the argument table, the fields read from
 * it, one slot each in this order (a number converted to a string lives
 * only there), then the pending record. A new field gets its slot here;
 * l_http_request asserts the count. */
enum {
    REQ_ARGS = 1,
    REQ_URL,
    REQ_METHOD,
    REQ_BODY,
    REQ_TIMEOUT,
    REQ_CONNECT_TIMEOUT,
    REQ_MAX_BODY,
    PENDING_SLOT
};

/* Continuation after the transfer: build the result from the pending
 * record and let __close free the request. */
static int request_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    struct pending *p = lua_touserdata(L, PENDING_SLOT);
    return push_response(L, p->req);
}

static int l_pending_close(lua_State *L)
{
    struct pending *p = lua_touserdata(L, 1);
    orch_http_req_free(p->req);
    p->req = NULL;
    return 0;
}

static const luaL_Reg pending_meta[] = {
    {"__close", l_pending_close},
    {NULL, NULL},
};

/* Continuation of the stand-in reply: its results are request's. */
static int offline_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    return lua_gettop(L) - (int)ctx;
}

/* In offline mode: counts the request and answers with the workflow's
 * stand-in reply (which may yield) or nil + why. Returns -1 when online.
 * The argument table is slot 1, the method and url slots 2 and 3. */
static int request_offline(lua_State *L, const char *method, const char *url)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &offline_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        return -1;
    }
    lua_getfield(L, -1, "count");
    lua_Integer n = lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_pushinteger(L, n + 1);
    lua_setfield(L, -2, "count");
    lua_pop(L, 1);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &on_estimate_key) == LUA_TFUNCTION) {
        int base = lua_gettop(L) - 1;
        lua_pushvalue(L, 1);
        lua_callk(L, 1, LUA_MULTRET, base, offline_k);
        return offline_k(L, LUA_OK, base);
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_pushfstring(
        L,
        "orch.http.request: %s %s was not sent: an estimate (orch estimate, orch run --dry-run) sends "
        "nothing; to give the workflow a reply meanwhile, set orch.http.on_estimate(function(req) "
        "return { status = 200, body = \"...\", headers = {} } end)",
        method, url);
    return 2;
}

/* Adds the header lines of the table at idx to p's request: "name: value"
 * for a string key, a ready "Name: value" line for any other. Uses the
 * stack above idx; raises on out of memory. */
static void add_headers(lua_State *L, struct pending *p, int idx)
{
    int top = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) { /* key top+1, value top+2 */
        const char *line;
        if (lua_type(L, top + 1) == LUA_TSTRING) {
            const char *v = luaL_tolstring(L, top + 2, NULL);
            line = lua_pushfstring(L, "%s: %s", lua_tostring(L, top + 1), v);
        } else {
            line = luaL_tolstring(L, top + 2, NULL); /* a ready "Name: value" line */
        }
        if (orch_http_req_header(p->req, line) != 0)
            luaL_error(L, "out of memory adding a header");
        lua_settop(L, top + 1);
    }
}

/* Pushes the pending record at slot (the top), to be closed, with its
 * request built (strings copied); raises on out of memory. */
static struct pending *pending_new(lua_State *L, int slot, const char *method, const char *url,
                                   const char *body, size_t body_len, lua_Number timeout, lua_Number ctimeout,
                                   lua_Integer max_body)
{
    struct orch_task *t = orch_task_current(L);
    struct orch_http *h = get_http(L);
    /* to be closed: the request is freed however the call ends (error,
     * cancellation, normal return) */
    struct pending *p = lua_newuserdatauv(L, sizeof *p, 0);
    p->req = NULL;
    p->h = h;
    p->task = t;
    lua_pushvalue(L, lua_upvalueindex(UPV_PENDING_MT));
    lua_setmetatable(L, -2);
    assert(lua_gettop(L) == slot);
    lua_toclose(L, slot);
    p->req = orch_http_req_new(h, method, url, body, body_len, (long)llround(timeout * 1000.0),
                               (long)llround(ctimeout * 1000.0), (size_t)max_body);
    if (p->req == NULL)
        luaL_error(L, "out of memory building an HTTP request");
    return p;
}

/* Starts p's request and suspends the task until it is done; k runs then. */
static int pending_start(lua_State *L, struct pending *p, lua_KFunction k)
{
    if (orch_http_start(p->h, p->req, req_done, p) != 0)
        return luaL_error(L, "cannot start the HTTP request");
    orch_task_suspend(p->task, req_cancel, p);
    return lua_yieldk(L, 0, 0, k);
}

/* Raises unless called from a task that may suspend. */
static void check_task(lua_State *L, const char *fn)
{
    if (orch_task_current(L) == NULL || !lua_isyieldable(L))
        luaL_error(L, "%s must be called from a row, step or task", fn);
}

/* request{ method = "GET", url =, headers = { name = value }, body =,
 *          timeout = 60, connect_timeout = 10, max_body = 64 MiB }
 * -> { status =, body =, headers = { lowercase name = value }, time = }
 *  | nil, transport error. Suspends the calling task. */
static int l_http_request(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "url");
    const char *url = luaL_checkstring(L, -1);
    lua_getfield(L, 1, "method");
    const char *method = luaL_optstring(L, -1, "GET");
    lua_getfield(L, 1, "body");
    size_t body_len = 0;
    const char *body = luaL_optlstring(L, -1, NULL, &body_len);
    lua_getfield(L, 1, "timeout");
    lua_Number timeout = luaL_optnumber(L, -1, 60);
    lua_getfield(L, 1, "connect_timeout");
    lua_Number ctimeout = luaL_optnumber(L, -1, 10);
    lua_getfield(L, 1, "max_body");
    lua_Integer max_body = luaL_optinteger(L, -1, 64 * 1024 * 1024);
    luaL_argcheck(L, timeout >= 0 && ctimeout >= 0 && max_body > 0, 1,
                  "timeouts and max_body must be positive");
    assert(lua_gettop(L) == REQ_MAX_BODY); /* one slot per field, as the enum says */
    int off = request_offline(L, method, url);
    if (off >= 0)
        return off;
    check_task(L, "orch.http.request");
    struct pending *p =
        pending_new(L, PENDING_SLOT, method, url, body, body_len, timeout, ctimeout, max_body);
    lua_getfield(L, 1, "headers");
    if (lua_istable(L, PENDING_SLOT + 1))
        add_headers(L, p, PENDING_SLOT + 1);
    lua_settop(L, PENDING_SLOT);
    return pending_start(L, p, request_k);
}

/* The stack of l_http_post: its six arguments, then the pending record. */
enum { POST_URL = 1, POST_HEADERS, POST_BODY, POST_TIMEOUT, POST_CONNECT_TIMEOUT, POST_PICK, POST_PENDING };

/* The value of the last Retry-After line of a header block, or nil. */
static void push_retry_after(lua_State *L, const char *block)
{
    const char *pos = block;
    const char *value = NULL;
    size_t len = 0;
    struct orch_http_header hd;
    while (orch_http_header_next(&pos, &hd)) {
        if (hd.name_len == 11 && strncasecmp(hd.name, "retry-after", 11) == 0) {
            value = hd.value;
            len = hd.value_len;
        }
    }
    if (value != NULL)
        lua_pushlstring(L, value, len);
    else
        lua_pushnil(L);
}

/* Continuation of post: status, body, time, retry-after | 200, true, time,
 * text, tokens in, tokens out (picked) | nil, error. */
static int post_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    struct pending *p = lua_touserdata(L, POST_PENDING);
    const struct orch_http_result *res = orch_http_req_result(p->req);
    if (res->error != 0) {
        lua_pushnil(L);
        lua_pushstring(L, res->message);
        return 2;
    }
    lua_pushinteger(L, res->status);
    if (res->status == 200 && lua_toboolean(L, POST_PICK)) {
        int top = lua_gettop(L);
        if (orch_json_pick_reply(L, POST_PICK, res->body, res->body_len) == 1) {
            lua_pushboolean(L, 1);
            lua_pushnumber(L, res->seconds);
            lua_rotate(L, top + 1, 2); /* status, true, time, text, in, out */
            return 6;
        }
    }
    lua_pushlstring(L, res->body, res->body_len);
    lua_pushnumber(L, res->seconds);
    push_retry_after(L, res->headers);
    return 4;
}

/* post(url, headers, body, timeout, connect_timeout [, pick]) -> status,
 * body, time, retry_after | nil, transport error | false offline (nothing
 * sent, nothing counted: the caller asks request for the stand-in reply).
 * The LLM call's request: no argument or response tables, and headers a
 * header set (http.headers) sent as built, or a table as request takes
 * them. pick (nil or false: none): a json.picker of a reply's text and
 * its tokens in and out (see orch_json_pick_reply); a 200 it reads so gives 200, true, time,
 * text, tokens in, tokens out, and its body is never made a string; any
 * other reply comes as without it. Suspends the calling task. */
static int l_http_post(lua_State *L)
{
    const char *url = luaL_checkstring(L, POST_URL);
    if (!lua_istable(L, POST_HEADERS) && !is_header_set(L, POST_HEADERS))
        luaL_checkudata(L, POST_HEADERS, HEADERS_MT); /* raises, with its message */
    size_t body_len;
    const char *body = luaL_checklstring(L, POST_BODY, &body_len);
    lua_Number timeout = luaL_checknumber(L, POST_TIMEOUT);
    lua_Number ctimeout = luaL_checknumber(L, POST_CONNECT_TIMEOUT);
    luaL_argcheck(L, timeout >= 0 && ctimeout >= 0, POST_TIMEOUT, "timeouts must be positive");
    lua_settop(L, POST_PICK);
    luaL_argcheck(L, !lua_toboolean(L, POST_PICK) || orch_json_reply_picker(L, POST_PICK), POST_PICK,
                  "a json.picker of three paths (the text, tokens in, tokens out) expected");
    int offline = lua_rawgetp(L, LUA_REGISTRYINDEX, &offline_key) == LUA_TTABLE;
    lua_pop(L, 1);
    if (offline) {
        lua_pushboolean(L, 0);
        return 1;
    }
    check_task(L, "orch.http.post");
    struct pending *p =
        pending_new(L, POST_PENDING, "POST", url, body, body_len, timeout, ctimeout, 64 * 1024 * 1024);
    if (lua_istable(L, POST_HEADERS)) {
        add_headers(L, p, POST_HEADERS);
        lua_settop(L, POST_PENDING);
    } else {
        /* the set stays anchored in its argument slot while the task waits */
        struct lheaders *hs = lua_touserdata(L, POST_HEADERS);
        luaL_argcheck(L, hs->hs != NULL, POST_HEADERS, "a freed header set");
        orch_http_req_use_headers(p->req, hs->hs);
    }
    return pending_start(L, p, post_k);
}

/* headers{ name = value, "Name: value" } -> a header set: the lines built
 * once, for post to send with many requests. */
static int l_http_headers(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    struct lheaders *u = lua_newuserdatauv(L, sizeof *u, 0); /* slot 2 */
    u->hs = NULL;
    lua_pushvalue(L, lua_upvalueindex(UPV_HEADERS_MT));
    lua_setmetatable(L, -2);
    u->hs = orch_http_headers_new();
    if (u->hs == NULL)
        return luaL_error(L, "out of memory building a header set");
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) { /* key 3, value 4 */
        const char *line;
        if (lua_type(L, 3) == LUA_TSTRING) {
            const char *v = luaL_tolstring(L, 4, NULL);
            line = lua_pushfstring(L, "%s: %s", lua_tostring(L, 3), v);
        } else {
            line = luaL_tolstring(L, 4, NULL);
        }
        if (orch_http_headers_add(u->hs, line) != 0)
            return luaL_error(L, "out of memory building a header set");
        lua_settop(L, 3);
    }
    lua_settop(L, 2);
    return 1;
}

static int l_headers_gc(lua_State *L)
{
    struct lheaders *u = luaL_checkudata(L, 1, HEADERS_MT);
    orch_http_headers_free(u->hs);
    u->hs = NULL;
    return 0;
}

static const luaL_Reg headers_meta[] = {
    {"__gc", l_headers_gc},
    {NULL, NULL},
};

/* offline(on) -> how many requests were not sent since it was turned on,
 * and whether the workflow gave a stand-in reply (on_estimate). */
static int l_http_offline(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    lua_Integer n = 0;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &offline_key) == LUA_TTABLE) {
        lua_getfield(L, -1, "count");
        n = lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (lua_toboolean(L, 1)) {
        lua_createtable(L, 0, 1);
        lua_pushinteger(L, 0);
        lua_setfield(L, -2, "count");
    } else {
        lua_pushnil(L);
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &offline_key);
    lua_pushinteger(L, n);
    lua_pushboolean(L, lua_rawgetp(L, LUA_REGISTRYINDEX, &on_estimate_key) == LUA_TFUNCTION);
    lua_remove(L, -2);
    return 2;
}

/* on_estimate(function(req) -> response | nil, err): the reply request
 * gives in offline mode; nil removes it. */
static int l_http_on_estimate(lua_State *L)
{
    if (!lua_isnoneornil(L, 1))
        luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &on_estimate_key);
    return 0;
}

static const luaL_Reg http_funcs[] = {
    {"request", l_http_request},         {"post", l_http_post},
    {"headers", l_http_headers},         {"offline", l_http_offline},
    {"on_estimate", l_http_on_estimate}, {NULL, NULL},
};

int luaopen_orch_http(lua_State *L)
{
    orch_lua_class(L, PENDING_MT, pending_meta, NULL);
    orch_lua_class(L, HEADERS_MT, headers_meta, NULL);
    luaL_newlibtable(L, http_funcs);
    luaL_getmetatable(L, PENDING_MT); /* UPV_PENDING_MT */
    luaL_getmetatable(L, HEADERS_MT); /* UPV_HEADERS_MT */
    luaL_setfuncs(L, http_funcs, 2);
    return 1;
}
