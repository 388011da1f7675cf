/* serve_lua.c — Lua bindings of the dashboard server (serve_lua.h).
 *
 * httpd.serve{...} blocks in serve.c's loop; each request calls the Lua
 * handler under lua_pcall on this thread, so a handler error becomes a
 * 500 (the traceback on stderr) and never crosses libmicrohttpd. */
#include "serve_lua.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "embed.h"
#include "runtime.h"
#include "serve.h"

struct lserve {
    lua_State *L;
    int handler; /* registry refs */
    int ready;
};

/* Calls handler(method, path, args) -> status, type, body; runs under
 * lua_pcall (upvalue-free: the request comes as a light userdata). */
static int call_handler(lua_State *L)
{
    const struct orch_serve_request *rq = lua_touserdata(L, 2);
    lua_settop(L, 1); /* the handler */
    lua_pushstring(L, rq->method);
    lua_pushstring(L, rq->path);
    lua_createtable(L, 0, rq->nargs);
    for (int i = 0; i < rq->nargs; i++) {
        lua_pushstring(L, rq->value[i]);
        lua_setfield(L, -2, rq->key[i]);
    }
    lua_call(L, 3, 3);
    return 3;
}

static void set_error(struct orch_serve_response *rs)
{
    static const char msg[] = "500 internal error (the reason is in orch serve's log)\n";
    rs->status = 500;
    rs->type = "text/plain; charset=utf-8";
    rs->body = malloc(sizeof msg - 1);
    rs->len = rs->body != NULL ? sizeof msg - 1 : 0;
    if (rs->body != NULL)
        memcpy(rs->body, msg, rs->len);
}

/* Content types the handler may answer with (rs->type must outlive the
 * call: the handler's string is mapped to one of these). */
static const char *const content_types[] = {
    "text/html; charset=utf-8",
    "text/css; charset=utf-8",
    "text/javascript; charset=utf-8",
    "application/json",
    "text/plain; version=0.0.4; charset=utf-8",
    "text/plain; charset=utf-8",
    "image/png",
    NULL,
};

static void on_request(void *ud, const struct orch_serve_request *rq, struct orch_serve_response *rs)
{
    struct lserve *s = ud;
    lua_State *L = s->L;
    int top = lua_gettop(L);
    lua_pushcfunction(L, call_handler);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->handler);
    lua_pushlightuserdata(L, (void *)rq);
    if (orch_runtime_pcall(L, 2, 3) != LUA_OK) {
        fprintf(stderr, "orch serve: %s %s: %s\n", rq->method, rq->path, lua_tostring(L, -1));
        lua_settop(L, top);
        set_error(rs);
        return;
    }
    size_t len = 0;
    const char *type = lua_tostring(L, -2);
    const char *body = lua_tolstring(L, -1, &len);
    rs->status = (int)lua_tointeger(L, -3);
    rs->type = NULL;
    for (size_t i = 0; type != NULL && content_types[i] != NULL; i++)
        if (strcmp(type, content_types[i]) == 0)
            rs->type = content_types[i];
    if (body == NULL || rs->type == NULL || rs->status < 100 || rs->status > 599) {
        fprintf(stderr, "orch serve: %s %s: the handler must return status, a known content type, body\n",
                rq->method, rq->path);
        lua_settop(L, top);
        set_error(rs);
        return;
    }
    rs->body = malloc(len > 0 ? len : 1);
    if (rs->body != NULL) {
        memcpy(rs->body, body, len);
        rs->len = len;
    }
    lua_settop(L, top);
}

static void on_ready(void *ud, const char *host, int port)
{
    struct lserve *s = ud;
    lua_State *L = s->L;
    if (s->ready == LUA_NOREF)
        return;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ready);
    lua_pushstring(L, host);
    lua_pushinteger(L, port);
    if (orch_runtime_pcall(L, 2, 0) != LUA_OK)
        fprintf(stderr, "orch serve: %s\n", lua_tostring(L, -1));
    lua_settop(L, top);
}

/* serve{host=, port=, token=, handler=fn, ready=fn} -> true | nil, err.
 * Returns on SIGINT/SIGTERM. */
static int l_httpd_serve(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "host");
    const char *host = luaL_optstring(L, -1, "127.0.0.1");
    lua_getfield(L, 1, "port");
    lua_Integer port = luaL_optinteger(L, -1, 8377);
    luaL_argcheck(L, port >= 0 && port <= 65535, 1, "port must be 0 to 65535");
    lua_getfield(L, 1, "token");
    const char *token = luaL_optstring(L, -1, NULL);
    lua_getfield(L, 1, "handler");
    luaL_checktype(L, -1, LUA_TFUNCTION);
    struct lserve s = {.L = L, .ready = LUA_NOREF};
    s.handler = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, 1, "ready");
    s.ready = lua_isfunction(L, -1) ? luaL_ref(L, LUA_REGISTRYINDEX) : (lua_pop(L, 1), LUA_NOREF);
    /* host and token stay on the stack (anchored) while the server runs */
    struct orch_serve_config cfg = {
        .host = host, .port = (int)port, .token = token, .handler = on_request, .ud = &s, .ready = on_ready};
    char err[512];
    int rc = orch_serve_run(&cfg, err, sizeof err);
    luaL_unref(L, LUA_REGISTRYINDEX, s.handler);
    luaL_unref(L, LUA_REGISTRYINDEX, s.ready);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* asset(name) -> the embedded web file's bytes ("index.html", ...) | nil */
static int l_httpd_asset(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    for (size_t i = 0; orch_embedded_web[i].module != NULL; i++) {
        if (strcmp(orch_embedded_web[i].module, name) == 0) {
            lua_pushlstring(L, (const char *)orch_embedded_web[i].src, orch_embedded_web[i].len);
            return 1;
        }
    }
    lua_pushnil(L);
    return 1;
}

/* is_loopback(host) -> bool */
static int l_httpd_is_loopback(lua_State *L)
{
    lua_pushboolean(L, orch_serve_is_loopback(luaL_checkstring(L, 1)));
    return 1;
}

static const luaL_Reg httpd_funcs[] = {
    {"serve", l_httpd_serve},
    {"asset", l_httpd_asset},
    {"is_loopback", l_httpd_is_loopback},
    {NULL, NULL},
};

int luaopen_orch_httpd(lua_State *L)
{
    luaL_newlib(L, httpd_funcs);
    return 1;
}
