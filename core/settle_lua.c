/* settle_lua.c — the driver's flush of rows that got through, in C (see
 * settle_lua.h). lua/orch/run/driver.lua's flush settled each such row in
 * about 90 VM instructions: its output line written, the row counted, its
 * LLM figures added to its model's and stage's sums, its result packed,
 * the cursor moved, its slots of the reorder window cleared. This loop
 * does the same from the window's rings with the C API, and stops where
 * the Lua loop has more to do (see settle_lua.h), so what it settles is
 * settled as flush would settle it, figure for figure. */
#include "settle_lua.h"

#include <lauxlib.h>

#include "loop.h"
#include "results_lua.h"
#include "sched.h"
#include "sink.h"
#include "sink_lua.h"

/* A number added as Lua adds it: an integer while both sides are
 * integers (wrapping), else a float; none (nil) is kept apart. */
struct lnum {
    int kind; /* LNUM_NONE, LNUM_INT, LNUM_FLOAT */
    lua_Integer i;
    lua_Number f;
};
enum { LNUM_NONE, LNUM_INT, LNUM_FLOAT };

/* The number at idx; 0 when it is neither a number nor nil (nil gives
 * LNUM_NONE only when nil_ok). */
static int lnum_get(lua_State *L, int idx, int nil_ok, struct lnum *out)
{
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            *out = (struct lnum){LNUM_INT, lua_tointeger(L, idx), 0};
        else
            *out = (struct lnum){LNUM_FLOAT, 0, lua_tonumber(L, idx)};
        return 1;
    case LUA_TNIL:
        *out = (struct lnum){LNUM_NONE, 0, 0};
        return nil_ok;
    default:
        return 0;
    }
}

static struct lnum lnum_add(struct lnum a, struct lnum b)
{
    if (a.kind == LNUM_INT && b.kind == LNUM_INT)
        return (struct lnum){LNUM_INT, (lua_Integer)((lua_Unsigned)a.i + (lua_Unsigned)b.i), 0};
    lua_Number x = a.kind == LNUM_INT ? (lua_Number)a.i : a.f;
    lua_Number y = b.kind == LNUM_INT ? (lua_Number)b.i : b.f;
    return (struct lnum){LNUM_FLOAT, 0, x + y};
}

static void lnum_push(lua_State *L, struct lnum a)
{
    if (a.kind == LNUM_INT)
        lua_pushinteger(L, a.i);
    else if (a.kind == LNUM_FLOAT)
        lua_pushnumber(L, a.f);
    else
        lua_pushnil(L);
}

/* The arguments, by position (see settle_lua.h). */
enum {
    A_RESULTS = 1,
    A_DONE,
    A_LINES,
    A_KEYS,
    A_OFFSETS,
    A_LINE_NOS,
    A_SEQ,
    A_LIMIT,
    A_WINDOW,
    A_SINK,
    A_LAST_T,
    A_BOUND_S,
    A_MODEL,
    A_STAGE,
    A_SUMS /* the 12 sums, calls to s_cost */
};
enum { NSUMS = 12 };
enum {
    S_CALLS,
    S_TIN,
    S_TOUT,
    S_COST,
    S_CACHED,
    S_SAVED,
    S_MCALLS,
    S_MTOKENS,
    S_MCOST,
    S_SCALLS,
    S_STOKENS,
    S_SCOST
};

/* A usage record's fields, read with rawget: the function's upvalues
 * (lua_getfield would find each C string in Lua's string cache a row). */
static const char *const fields[] = {"status",  "_model",       "_stage",    "estimated_calls",
                                     "retries", "cached_calls", "saved",     "llm_calls",
                                     "cost",    "tokens_in",    "tokens_out"};
enum {
    F_STATUS,
    F_MODEL,
    F_STAGE,
    F_ESTIMATED,
    F_RETRIES,
    F_CACHED,
    F_SAVED,
    F_CALLS,
    F_COST,
    F_TIN,
    F_TOUT,
    NFIELDS
};

/* A row's LLM figures, as flush adds them. */
struct usage {
    struct lnum calls, cost, tin, tout, cached, saved;
};

/* Reads the usage record at idx into u: 1 when flush adds it as a row
 * like the one before (its model and stage those at A_MODEL and
 * A_STAGE); 0 when it is another kind: a status (a settled record),
 * another model or stage, an estimated or retried call, a figure that is
 * not a number. */
static int read_usage(lua_State *L, int idx, struct usage *u)
{
    if (lua_getmetatable(L, idx)) {
        lua_pop(L, 1);
        return 0;
    }
    int top = lua_gettop(L);
    for (int f = 0; f < NFIELDS; f++) {
        lua_pushvalue(L, lua_upvalueindex(1 + f));
        lua_rawget(L, idx);
    }
    int v = top + 1; /* field f at v + f */
    int ok = lua_isnil(L, v + F_STATUS) && lua_rawequal(L, v + F_MODEL, A_MODEL) &&
             lua_rawequal(L, v + F_STAGE, A_STAGE) && lua_isnil(L, v + F_ESTIMATED) &&
             lua_isnil(L, v + F_RETRIES) && lnum_get(L, v + F_CACHED, 1, &u->cached) &&
             lnum_get(L, v + F_SAVED, 1, &u->saved) &&
             (u->cached.kind == LNUM_NONE) == (u->saved.kind == LNUM_NONE) &&
             lnum_get(L, v + F_CALLS, 0, &u->calls) && lnum_get(L, v + F_COST, 0, &u->cost) &&
             lnum_get(L, v + F_TIN, 0, &u->tin) && lnum_get(L, v + F_TOUT, 0, &u->tout);
    lua_settop(L, top);
    return ok;
}

/* Adds u to sums with flush's additions, in its order. */
static void add_usage(struct lnum *sums, const struct usage *u)
{
    struct lnum tokens = lnum_add(u->tin, u->tout);
    struct lnum zero = {LNUM_INT, 0, 0};
    sums[S_CALLS] = lnum_add(sums[S_CALLS], u->calls);
    sums[S_TIN] = lnum_add(sums[S_TIN], u->tin);
    sums[S_TOUT] = lnum_add(sums[S_TOUT], u->tout);
    sums[S_COST] = lnum_add(sums[S_COST], u->cost);
    if (u->cached.kind != LNUM_NONE) {
        sums[S_CACHED] = lnum_add(sums[S_CACHED].kind != LNUM_NONE ? sums[S_CACHED] : zero, u->cached);
        sums[S_SAVED] = lnum_add(sums[S_SAVED].kind != LNUM_NONE ? sums[S_SAVED] : zero, u->saved);
    }
    sums[S_MCALLS] = lnum_add(sums[S_MCALLS], u->calls);
    sums[S_MTOKENS] = lnum_add(sums[S_MTOKENS], tokens);
    sums[S_MCOST] = lnum_add(sums[S_MCOST], u->cost);
    sums[S_SCALLS] = lnum_add(sums[S_SCALLS], u->calls);
    sums[S_STOKENS] = lnum_add(sums[S_STOKENS], tokens);
    sums[S_SCOST] = lnum_add(sums[S_SCOST], u->cost);
}

/* A call's state: what it settles into, and where on the stack. */
struct settle {
    struct orch_results_packer *pk;
    struct orch_sink *sink; /* NULL: no output */
    lua_Integer window;
    int group;          /* the sums of a model and stage are open */
    int off, lno, base; /* the last row's end in the input; the stack's top between rows */
    lua_Integer n, bytes;
    const char *err;
    struct lnum sums[NSUMS];
};

/* Settles row seq as flush would: 1 when settled, 0 when it is flush's
 * to settle (s->err set when the sink failed, or, the row counted, when
 * its result could not be packed). */
static int settle_row(lua_State *L, struct settle *s, lua_Integer seq)
{
    lua_Integer slot = seq % s->window + 1;
    int d = lua_rawgeti(L, A_DONE, slot);
    struct usage u;
    int has_usage = d == LUA_TTABLE;
    if (has_usage ? !s->group || !read_usage(L, s->base + 1, &u)
                  : d != LUA_TBOOLEAN || !lua_toboolean(L, s->base + 1))
        return 0; /* not settled yet, settled with a record, or figures flush adds */
    int lt = lua_rawgeti(L, A_LINES, slot);
    size_t len = 0;
    const char *line = lt == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if ((lt != LUA_TSTRING && lua_toboolean(L, -1)) || (line != NULL && s->sink == NULL))
        return 0; /* a line this loop cannot write */
    if (line != NULL && orch_sink_write(s->sink, line, len) != 0) {
        s->err = orch_sink_error(s->sink);
        return 0;
    }
    lua_settop(L, s->base);
    if (line != NULL) {
        s->bytes += (lua_Integer)len;
        lua_pushboolean(L, 0);
        lua_rawseti(L, A_LINES, slot);
    }
    s->n++;
    if (has_usage)
        add_usage(s->sums, &u);
    char buf[24];
    lua_rawgeti(L, A_KEYS, slot);
    struct orch_result r = {.seq = (int64_t)seq, .status = "ok"};
    r.key = orch_results_lua_key(L, s->base + 1, buf);
    int rc = orch_results_packer_add(s->pk, &r);
    lua_settop(L, s->base);
    if (rc != 0) {
        s->err = rc == -1 ? "not enough memory" : "a result's seq must be past the last one added";
        return 0;
    }
    lua_rawgeti(L, A_OFFSETS, slot);
    if (lua_toboolean(L, -1)) {
        lua_replace(L, s->off);
        lua_rawgeti(L, A_LINE_NOS, slot);
        lua_replace(L, s->lno);
    }
    lua_settop(L, s->base);
    lua_pushboolean(L, 0);
    lua_rawseti(L, A_DONE, slot);
    return 1;
}

static int settle_run(lua_State *L)
{
    struct settle s = {.pk = orch_results_lua_test(L, A_RESULTS)};
    luaL_argcheck(L, s.pk != NULL, A_RESULTS, "expected a results object");
    for (int a = A_DONE; a <= A_LINE_NOS; a++)
        luaL_checktype(L, a, LUA_TTABLE);
    lua_Integer seq = luaL_checkinteger(L, A_SEQ);
    lua_Number limit = luaL_checknumber(L, A_LIMIT);
    s.window = luaL_checkinteger(L, A_WINDOW);
    luaL_argcheck(L, s.window > 0, A_WINDOW, "the window must hold a row");
    s.sink = lua_isnil(L, A_SINK) ? NULL : orch_sink_lua_check(L, A_SINK);
    int watch = !lua_isnil(L, A_LAST_T);
    lua_Number last_t = watch ? luaL_checknumber(L, A_LAST_T) : 0,
               bound_s = watch ? luaL_checknumber(L, A_BOUND_S) : 0;
    struct orch_loop *loop = watch ? orch_sched_loop(orch_sched_get(L)) : NULL;
    /* flush adds a row's figures to the sums only when model and stage
     * are both true values */
    s.group = lua_toboolean(L, A_MODEL) && lua_toboolean(L, A_STAGE);
    for (int i = 0; i < NSUMS; i++)
        if (!lnum_get(L, A_SUMS + i, 1, &s.sums[i]))
            s.group = 0; /* not numbers: flush adds them itself */
    lua_settop(L, A_SUMS + NSUMS - 1);
    luaL_checkstack(L, NFIELDS + NSUMS + 16, NULL);
    s.off = lua_gettop(L) + 1, s.lno = s.off + 1, s.base = s.lno;
    lua_pushnil(L);
    lua_pushnil(L);
    while ((lua_Number)seq < limit && settle_row(L, &s, seq)) {
        seq++;
        if (watch && (lua_Number)orch_loop_update_time(loop) / 1000.0 - last_t >= bound_s)
            break; /* the policy's clock bound: flush asks after this row */
    }
    lua_settop(L, s.base);
    /* seq, n, bytes, offset, line, err, then the sums */
    lua_pushinteger(L, seq);
    lua_pushinteger(L, s.n);
    lua_pushinteger(L, s.bytes);
    lua_pushvalue(L, s.off);
    lua_pushvalue(L, s.lno);
    if (s.err != NULL)
        lua_pushstring(L, s.err);
    else
        lua_pushnil(L);
    for (int i = 0; i < NSUMS; i++)
        if (s.group)
            lnum_push(L, s.sums[i]);
        else
            lua_pushvalue(L, A_SUMS + i);
    return 6 + NSUMS;
}

void orch_settle_lua_push(lua_State *L)
{
    for (int f = 0; f < NFIELDS; f++)
        lua_pushstring(L, fields[f]);
    lua_pushcclosure(L, settle_run, NFIELDS);
}
