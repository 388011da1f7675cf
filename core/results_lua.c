/* results_lua.c — the results object of `orch.store.results()` (see
 * results_lua.h). A run held each settled row's record, a Lua table,
 * until its checkpoint, which read them all back and packed them
 * (bench/changes.md, sixth pass): now each row is packed as it settles,
 * about 10 bytes a row, and its record is free for the next row at once.
 * The object owns its packer's buffers; __gc frees them. */
#include "results_lua.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "runtime.h"
#include "settle_lua.h"

#define RESULTS_MT "orch.Results"

/* What a cleared packer keeps of a buffer: a checkpoint every 500 rows
 * reuses its few kilobytes; max_rows = 100,000 gives its megabyte back. */
enum { RESULTS_KEEP = 64 * 1024 };

struct orch_results_packer *orch_results_lua_test(lua_State *L, int idx)
{
    return luaL_testudata(L, idx, RESULTS_MT);
}

static struct orch_results_packer *check_results(lua_State *L)
{
    return orch_lua_self(L, RESULTS_MT);
}

/* i in decimal into buf (24 bytes), as lua_pushfstring's "%I" writes it
 * (without making a Lua string a row). -> where the text starts. */
static const char *int_text(lua_Integer i, char *buf)
{
    char *p = buf + 23;
    *p = '\0';
    uint64_t u = i < 0 ? 0 - (uint64_t)i : (uint64_t)i;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (i < 0)
        *--p = '-';
    return p;
}

/* The key at idx as text, as checkpoint_write has always stored a
 * result's key (store_lua.c key_text). */
const char *orch_results_lua_key(lua_State *L, int idx, char *buf)
{
    lua_Integer i;
    switch (lua_type(L, idx)) {
    case LUA_TNONE:
    case LUA_TNIL:
        return NULL;
    case LUA_TSTRING:
        return lua_tostring(L, idx);
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return int_text(lua_tointeger(L, idx), buf);
        if (lua_numbertointeger(lua_tonumber(L, idx), &i))
            return int_text(i, buf);
        lua_pushvalue(L, idx);
        return lua_tostring(L, -1);
    default:
        return luaL_tolstring(L, idx, NULL);
    }
}

/* add(seq, key, status [, error]): packs one settled row (the adder's
 * upvalue is its results object). Raises when seq does not follow the
 * last one added, or when memory runs out. */
static int l_results_add(lua_State *L)
{
    struct orch_results_packer *pk = lua_touserdata(L, lua_upvalueindex(1));
    char buf[24];
    struct orch_result r = {0};
    r.seq = (int64_t)luaL_checkinteger(L, 1);
    r.status = luaL_checkstring(L, 3);
    r.error = luaL_optstring(L, 4, NULL);
    r.key = orch_results_lua_key(L, 2, buf);
    int rc = orch_results_packer_add(pk, &r);
    if (rc == -1)
        return luaL_error(L, "not enough memory");
    if (rc != 0)
        return luaL_error(L, "result %I: a result's seq must be past the last one added (%I)",
                          (lua_Integer)r.seq, (lua_Integer)pk->last);
    return 0;
}

/* results:adder() -> add(seq, key, status [, error]): a function bound
 * to this object, so a row costs no method lookup and no argument check
 * of the object. */
static int l_results_adder(lua_State *L)
{
    check_results(L);
    lua_settop(L, 1);
    lua_pushcclosure(L, l_results_add, 1);
    return 1;
}

/* results:clear(): empty again, once a checkpoint stored them. */
static int l_results_clear(lua_State *L)
{
    orch_results_packer_clear(check_results(L), RESULTS_KEEP);
    return 0;
}

/* results:take() -> a new results object holding what this one held;
 * this one is empty, and the next seq it takes must still follow the
 * last one added. A checkpoint whose output is still being fsynced
 * keeps its results apart while the rows that settle meanwhile are
 * added here (orch.run.checkpoint). */
static int l_results_take(lua_State *L)
{
    struct orch_results_packer *pk = check_results(L);
    struct orch_results_packer *to = lua_newuserdatauv(L, sizeof *to, 0);
    *to = *pk; /* the buffers move: to owns them now */
    memset(&pk->ok, 0, sizeof pk->ok);
    memset(&pk->failed, 0, sizeof pk->failed);
    luaL_setmetatable(L, RESULTS_MT);
    return 1;
}

/* Pushes { seq, key, status, error } of r. */
static void push_result(lua_State *L, const struct orch_result *r)
{
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)r->seq);
    lua_setfield(L, -2, "seq");
    lua_pushstring(L, r->key);
    lua_setfield(L, -2, "key");
    lua_pushstring(L, r->status);
    lua_setfield(L, -2, "status");
    lua_pushstring(L, r->error);
    lua_setfield(L, -2, "error");
}

/* results:list() -> { { seq, key, status, error }, ... } in seq order:
 * what a checkpoint would store (for tests and inspection). */
static int l_results_list(lua_State *L)
{
    struct orch_results_packer *pk = check_results(L);
    struct orch_results_chunk ok = {ORCH_PACK_COMPACT, pk->ok.p,     pk->ok.len,
                                    pk->ok.n,          pk->ok.first, pk->ok.last};
    struct orch_results_chunk bad = {ORCH_PACK_COMPACT, pk->failed.p, pk->failed.len, pk->failed.n, 0, 0};
    struct orch_result *failed = NULL, *all = NULL;
    size_t nall = (size_t)(pk->ok.n + pk->failed.n);
    int rc = orch_results_merge(&bad, NULL, 0, &failed);
    if (rc == 0)
        rc = orch_results_merge(&ok, failed, (size_t)pk->failed.n, &all);
    if (rc == 0) {
        lua_createtable(L, (int)nall, 0);
        for (size_t i = 0; i < nall; i++) {
            push_result(L, &all[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
    }
    free(failed);
    free(all);
    if (rc != 0)
        return luaL_error(L, rc == -1 ? "not enough memory" : "the packed results are damaged");
    return 1;
}

/* #results -> results held. */
static int l_results_len(lua_State *L)
{
    struct orch_results_packer *pk = check_results(L);
    lua_pushinteger(L, (lua_Integer)(pk->ok.n + pk->failed.n));
    return 1;
}

static int l_results_gc(lua_State *L)
{
    orch_results_packer_free(check_results(L));
    return 0;
}

/* results() -> an empty results object. */
static int l_results_new(lua_State *L)
{
    struct orch_results_packer *pk = lua_newuserdatauv(L, sizeof *pk, 0);
    memset(pk, 0, sizeof *pk);
    luaL_setmetatable(L, RESULTS_MT);
    return 1;
}

static const luaL_Reg results_methods[] = {
    {"adder", l_results_adder},
    {"clear", l_results_clear},
    {"take", l_results_take},
    {"list", l_results_list},
    {NULL, NULL},
};

static const luaL_Reg results_meta[] = {
    {"__len", l_results_len}, {"__gc", l_results_gc}, {"__close", l_results_gc},
    {"__index", NULL},        {NULL, NULL},
};

void orch_results_lua_open(lua_State *L)
{
    orch_lua_class(L, RESULTS_MT, results_meta, results_methods);
    luaL_getmetatable(L, RESULTS_MT);
    lua_getfield(L, -1, "__index");
    orch_settle_lua_push(L); /* a closure of its own: its upvalues are field names */
    lua_setfield(L, -2, "settle_run");
    lua_pop(L, 2);
    lua_pushcfunction(L, l_results_new);
    lua_setfield(L, -2, "results");
}
