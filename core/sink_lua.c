/* sink_lua.c — Lua bindings of sink.c (`require "orch.sink"`).
 * A sink userdata owns its struct orch_sink; __gc and __close share one
 * idempotent release. */
#include "sink_lua.h"

#include <lauxlib.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "sink.h"
#include "runtime.h"

#define SINK_MT "orch.Sink"

struct lsink {
    struct orch_sink *k; /* NULL once closed */
};

static struct orch_sink *check_open(lua_State *L)
{
    struct lsink *s = orch_lua_self(L, SINK_MT);
    if (s->k == NULL)
        luaL_error(L, "attempt to use a closed sink");
    return s->k;
}

struct orch_sink *orch_sink_lua_check(lua_State *L, int idx)
{
    struct lsink *s = luaL_checkudata(L, idx, SINK_MT);
    if (s->k == NULL)
        luaL_error(L, "attempt to use a closed sink");
    return s->k;
}

/* Expected failures return nil, message (the luaL_fileresult convention). */
static int push_failure(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* open(path [, offset [, prefix]]) -> sink | nil, err, why
 * prefix: the hash (16 hex digits, as sink:hash() gives) the file's first
 * offset bytes must have. why: "busy" (another process holds the file),
 * "changed" (not the file the offset and prefix describe) or "error". */
static int l_sink_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer off = luaL_optinteger(L, 2, -1);
    luaL_argcheck(L, lua_isnoneornil(L, 2) || off >= 0, 2, "offset must be 0 or more");
    const char *hex = luaL_optstring(L, 3, NULL);
    uint64_t prefix = 0;
    if (hex != NULL) {
        char *end;
        errno = 0;
        prefix = strtoull(hex, &end, 16);
        luaL_argcheck(L, errno == 0 && *hex != '\0' && *end == '\0', 3, "expected 16 hex digits");
    }
    struct lsink *s = lua_newuserdatauv(L, sizeof *s, 0);
    s->k = NULL; /* closed until the file is open, so __gc is safe */
    luaL_setmetatable(L, SINK_MT);
    char err[512];
    enum orch_sink_why why = ORCH_SINK_ERROR;
    s->k = orch_sink_open(path, off < 0 ? ORCH_SINK_FRESH : (uint64_t)off, hex != NULL ? &prefix : NULL, err,
                          sizeof err, &why);
    if (s->k == NULL) {
        push_failure(L, err);
        lua_pushstring(L, why == ORCH_SINK_BUSY ? "busy" : why == ORCH_SINK_CHANGED ? "changed" : "error");
        return 3;
    }
    return 1;
}

/* sink:hash() -> the XXH3-64 of every byte written, as 16 hex digits */
static int l_sink_hash(lua_State *L)
{
    struct orch_sink *k = check_open(L);
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)orch_sink_hash(k));
    lua_pushstring(L, hex);
    return 1;
}

/* sink:write(s) -> true | nil, err */
static int l_sink_write(lua_State *L)
{
    struct orch_sink *k = check_open(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    if (orch_sink_write(k, data, len) != 0)
        return push_failure(L, orch_sink_error(k));
    lua_pushboolean(L, 1);
    return 1;
}

/* The function sink:writer() returns, its sink the upvalue: write(self,
 * s) writes s or raises the sink's error (the message alone, as
 * error(msg, 0)); self is not used. A row sink's write method with no
 * Lua function between. */
static int l_sink_put(lua_State *L)
{
    struct lsink *s = lua_touserdata(L, lua_upvalueindex(1));
    if (s->k == NULL)
        return luaL_error(L, "attempt to use a closed sink");
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    if (orch_sink_write(s->k, data, len) != 0) {
        lua_pushstring(L, orch_sink_error(s->k));
        return lua_error(L);
    }
    return 0;
}

/* sink:writer() -> write (see l_sink_put), bound to this sink */
static int l_sink_writer(lua_State *L)
{
    check_open(L);
    lua_settop(L, 1);
    lua_pushcclosure(L, l_sink_put, 1);
    return 1;
}

/* sink:flush([sync]) -> offset | nil, err */
static int l_sink_flush(lua_State *L)
{
    struct orch_sink *k = check_open(L);
    if (orch_sink_flush(k, lua_toboolean(L, 2)) != 0)
        return push_failure(L, orch_sink_error(k));
    lua_pushinteger(L, (lua_Integer)orch_sink_offset(k));
    return 1;
}

/* sink:sync_begin() -> offset | nil, err: writes the buffer out and
 * starts its fsync on a thread (see orch_sink_sync_begin); offset is
 * durable once sink:sync_poll() says true. */
static int l_sink_sync_begin(lua_State *L)
{
    struct orch_sink *k = check_open(L);
    int64_t off = orch_sink_sync_begin(k);
    if (off < 0)
        return push_failure(L, orch_sink_error(k));
    lua_pushinteger(L, (lua_Integer)off);
    return 1;
}

/* sink:sync_poll([wait]) -> true (the fsync sync_begin started is done,
 * or none was) | false (still going; never with wait) | nil, err */
static int l_sink_sync_poll(lua_State *L)
{
    struct orch_sink *k = check_open(L);
    int rc = orch_sink_sync_poll(k, lua_toboolean(L, 2));
    if (rc < 0)
        return push_failure(L, orch_sink_error(k));
    lua_pushboolean(L, rc);
    return 1;
}

static int l_sink_offset(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)orch_sink_offset(check_open(L)));
    return 1;
}

static int l_sink_path(lua_State *L)
{
    lua_pushstring(L, orch_sink_path(check_open(L)));
    return 1;
}

static int sink_release(struct lsink *s)
{
    int rc = 0;
    if (s->k != NULL)
        rc = orch_sink_close(s->k);
    s->k = NULL;
    return rc;
}

/* sink:close() -> true | nil, err; closing twice is harmless */
static int l_sink_close(lua_State *L)
{
    struct lsink *s = orch_lua_self(L, SINK_MT);
    if (sink_release(s) != 0)
        return luaL_fileresult(L, 0, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_sink_gc(lua_State *L)
{
    sink_release(orch_lua_self(L, SINK_MT));
    return 0;
}

static const luaL_Reg sink_methods[] = {
    {"write", l_sink_write},         {"writer", l_sink_writer},
    {"flush", l_sink_flush},         {"offset", l_sink_offset},
    {"hash", l_sink_hash},           {"path", l_sink_path},
    {"close", l_sink_close},         {"sync_begin", l_sink_sync_begin},
    {"sync_poll", l_sink_sync_poll}, {NULL, NULL},
};

static const luaL_Reg sink_meta[] = {
    {"__gc", l_sink_gc},
    {"__close", l_sink_gc},
    {"__index", NULL},
    {NULL, NULL},
};

static const luaL_Reg sink_funcs[] = {
    {"open", l_sink_open},
    {NULL, NULL},
};

int luaopen_orch_sink(lua_State *L)
{
    orch_lua_class(L, SINK_MT, sink_meta, sink_methods);
    luaL_newlib(L, sink_funcs);
    return 1;
}
