/* runtime.c — Lua state set-up, embedded modules, protected calls. */
#include "runtime.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
#include "serve_lua.h"
#include "sys_lua.h"

static const luaL_Reg c_modules[] = {
    {"orch.sched", luaopen_orch_sched},   {"orch.json", luaopen_orch_json},
    {"orch.hash", luaopen_orch_hash},     {"orch.http", luaopen_orch_http},
    {"orch.reader", luaopen_orch_reader}, {"orch.sink", luaopen_orch_sink},
    {"orch.store", luaopen_orch_store},   {"orch.sys", luaopen_orch_sys},
    {"orch.httpd", luaopen_orch_httpd},   {NULL, NULL},
};

/* Message handler: string errors get a traceback; other values are kept
 * unless they have __tostring (lua.c msghandler). */
static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        /* what __tostring gives, if there is one; else the error object
         * itself, kept for the caller to inspect */
        luaL_callmeta(L, 1, "__tostring");
        return 1;
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

void orch_lua_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods)
{
    luaL_newmetatable(L, name);
    luaL_setfuncs(L, meta, 0);
    if (methods != NULL) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
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

/* ---- the counting allocator ---- */

struct orch_mem {
    size_t used;  /* bytes Lua holds (its own count: the sizes it passes) */
    size_t limit; /* growth past it is refused */
    int fixed;    /* set by the command line: a workflow cannot change it */
};

size_t orch_runtime_default_memory_limit(void)
{
    const size_t cap = (size_t)4 << 30;
    long pages = sysconf(_SC_PHYS_PAGES);
    long psize = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psize <= 0)
        return cap;
    size_t half = (size_t)pages / 2 * (size_t)psize;
    return half < cap ? half : cap;
}

/* lua_Alloc over realloc/free that keeps a byte count and refuses to grow
 * past the limit. Shrinking and freeing never fail (Lua relies on it).
 * A refusal makes Lua collect in full and retry once before it raises
 * LUA_ERRMEM, so garbage never counts against a row. One branch and an
 * add per call: it is on every allocation's path. */
static void *mem_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct orch_mem *m = ud;
    if (ptr == NULL)
        osize = 0; /* then osize is the kind of object, not a size */
    if (nsize == 0) {
        free(ptr);
        m->used -= osize;
        return NULL;
    }
    if (nsize > osize && m->used + (nsize - osize) > m->limit)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p == NULL)
        return NULL;
    m->used = m->used - osize + nsize;
    return p;
}

static struct orch_mem *mem_of(lua_State *L)
{
    void *ud;
    if (lua_getallocf(L, &ud) != mem_alloc)
        return NULL;
    return ud;
}

size_t orch_runtime_memory_limit(lua_State *L)
{
    struct orch_mem *m = mem_of(L);
    return m != NULL ? m->limit : 0;
}

size_t orch_runtime_memory_used(lua_State *L)
{
    struct orch_mem *m = mem_of(L);
    return m != NULL ? m->used : 0;
}

size_t orch_runtime_set_memory_limit(lua_State *L, size_t bytes, int fixed)
{
    struct orch_mem *m = mem_of(L);
    if (m == NULL)
        return 0;
    size_t prev = m->limit;
    if (fixed || !m->fixed)
        m->limit = bytes;
    if (fixed)
        m->fixed = 1;
    return prev;
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
    rt->mem = calloc(1, sizeof *rt->mem);
    rt->L = luaL_newstate(); /* its panic and warning functions, then our allocator */
    rt->loop = orch_loop_new();
    if (rt->mem == NULL || rt->L == NULL || rt->loop == NULL)
        goto fail;
    /* the blocks made so far came from realloc too: counting starts from
     * Lua's own figure, and mem_alloc frees them like any other */
    rt->mem->used = (size_t)lua_gc(rt->L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(rt->L, LUA_GCCOUNTB, 0);
    rt->mem->limit = orch_runtime_default_memory_limit();
    lua_setallocf(rt->L, mem_alloc, rt->mem);
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
    free(rt->mem); /* after lua_close: its frees still count */
    orch_loop_free(rt->loop);
    memset(rt, 0, sizeof *rt);
    orch_http_global_cleanup();
}
