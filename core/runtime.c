/* runtime.c — Lua state set-up, embedded modules, protected calls. */
#include "runtime.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "embed.h"
#include "hash_lua.h"
#include "http.h"
#include "http_lua.h"
#include "json_lua.h"
#include "reader_lua.h"
#include "sched_lua.h"
#include "sink_lua.h"
#include "store_lua.h"
#include "sys_lua.h"

static const luaL_Reg c_modules[] = {
    {"orch.sched", luaopen_orch_sched},
    {"orch.json", luaopen_orch_json},
    {"orch.hash", luaopen_orch_hash},
    {"orch.http", luaopen_orch_http},
    {"orch.reader", luaopen_orch_reader},
    {"orch.sink", luaopen_orch_sink},
    {"orch.store", luaopen_orch_store},
    {"orch.sys", luaopen_orch_sys},
    {NULL, NULL},
};

/* Message handler: string errors get a traceback; other values are kept
 * unless they have __tostring (lua.c msghandler). */
static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        return 1; /* keep the error object for the caller to inspect */
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int orch_runtime_pcall(lua_State *L, int nargs, int nresults)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    return status;
}

/* package.preload loader of an embedded Lua module; upvalue 1 is its index. */
static int load_embedded(lua_State *L)
{
    const struct orch_embedded *e = &orch_embedded_lua[lua_tointeger(L, lua_upvalueindex(1))];
    if (luaL_loadbuffer(L, (const char *)e->src, e->len, e->chunkname) != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, e->module);
    lua_pushstring(L, e->chunkname + 1);
    lua_call(L, 2, 1);
    return 1;
}

void orch_runtime_preload(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const luaL_Reg *m = c_modules; m->name != NULL; m++) {
        lua_pushcfunction(L, m->func);
        lua_setfield(L, -2, m->name);
    }
    for (size_t i = 0; orch_embedded_lua[i].module != NULL; i++) {
        lua_pushinteger(L, (lua_Integer)i);
        lua_pushcclosure(L, load_embedded, 1);
        lua_setfield(L, -2, orch_embedded_lua[i].module);
    }
    lua_pop(L, 1);
}

static int pinit(lua_State *L)
{
    luaL_openlibs(L);
    orch_runtime_preload(L);
    return 0;
}

int orch_runtime_open(struct orch_runtime *rt)
{
    memset(rt, 0, sizeof *rt);
    rt->L = luaL_newstate();
    rt->loop = orch_loop_new();
    if (rt->L == NULL || rt->loop == NULL)
        goto fail;
    rt->sched = orch_sched_new(rt->L, rt->loop);
    if (rt->sched == NULL)
        goto fail;
    lua_pushcfunction(rt->L, pinit);
    if (lua_pcall(rt->L, 0, 0, 0) != LUA_OK)
        goto fail;
    return 0;
fail:
    orch_runtime_close(rt);
    return -1;
}

void orch_runtime_close(struct orch_runtime *rt)
{
    orch_sched_free(rt->sched);
    if (rt->L != NULL)
        lua_close(rt->L);
    orch_loop_free(rt->loop);
    memset(rt, 0, sizeof *rt);
    orch_http_global_cleanup();
}
