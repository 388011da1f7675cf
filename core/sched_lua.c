/* sched_lua.c — Lua bindings of the scheduler (`require "orch.sched"`). */
#include "sched_lua.h"

#include <math.h>
#include <signal.h>
#include <stdint.h>

#include <lauxlib.h>

#include "loop.h"
#include "sched.h"

/* The task running L; raises a Lua error naming what when L is not a task. */
static struct orch_task *check_task(lua_State *L, const char *what)
{
    struct orch_task *t = orch_task_current(L);
    if (t == NULL)
        luaL_error(L,
                   "%s must be called from a row, step or task, not from a coroutine of "
                   "your own or at load time",
                   what);
    return t;
}

/* Like check_task, for calls that suspend: they must also be able to
 * yield, which they cannot inside a C function's callback (table.sort's
 * comparator, a string.gsub replacement, a metamethod called from C). */
static struct orch_task *check_suspendable(lua_State *L, const char *what)
{
    struct orch_task *t = check_task(L, what);
    if (!lua_isyieldable(L))
        luaL_error(L,
                   "%s cannot wait here: it is inside a callback of a C function (such as "
                   "table.sort or string.gsub) or a metamethod",
                   what);
    return t;
}

/* spawn(fn, ...) -> id. The new task reports to the caller's mailbox. */
static int l_sched_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    struct orch_task *self = check_task(L, "orch.sched.spawn");
    struct orch_task *t = orch_sched_spawn(orch_sched_get(L), L, lua_gettop(L) - 1, self);
    lua_pushinteger(L, (lua_Integer)orch_task_id(t));
    return 1;
}

/* wait([timeout]) -> { {id=, ok=, n=, ...} | {id=, ok=false, err=} ... }:
 * the completions since the last call; suspends while there are none and
 * children are still running, at most timeout seconds, and returns early
 * (possibly empty) when a trapped signal arrives. May yield. */
static int l_sched_wait(lua_State *L)
{
    lua_Number timeout = luaL_optnumber(L, 1, -1);
    struct orch_task *t = check_suspendable(L, "orch.sched.wait");
    orch_task_take_mailbox(t, L);
    if (lua_rawlen(L, -1) > 0 || orch_task_children(t) == 0)
        return 1;
    lua_pop(L, 1);
    int64_t ms = timeout < 0 ? -1 : (int64_t)llround(timeout * 1000.0);
    if (orch_task_wait_children(t, ms) != 0)
        return luaL_error(L, "out of memory arming a timer");
    return lua_yield(L, 0);
}

/* park(): suspends the calling task until another calls unpark(its id). */
static int l_sched_park(lua_State *L)
{
    struct orch_task *t = check_suspendable(L, "orch.sched.park");
    orch_task_park(t);
    return lua_yield(L, 0);
}

/* unpark(id) -> whether a parked task with that id was woken */
static int l_sched_unpark(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    lua_pushboolean(L, orch_sched_unpark(orch_sched_get(L), (uint64_t)id));
    return 1;
}

/* trap_signals() -> true: SIGINT/SIGTERM no longer kill the process; they
 * are counted (see signals()) and wake the calling task from wait(). */
static int l_sched_trap_signals(lua_State *L)
{
    struct orch_task *t = check_task(L, "orch.sched.trap_signals");
    if (orch_sched_trap_signals(orch_sched_get(L), t) != 0)
        return luaL_error(L, "cannot install signal handlers");
    lua_pushboolean(L, 1);
    return 1;
}

static int l_sched_untrap_signals(lua_State *L)
{
    orch_sched_untrap_signals(orch_sched_get(L));
    return 0;
}

/* signals() -> count, last signal name ("SIGINT"/"SIGTERM") or nil */
static int l_sched_signals(lua_State *L)
{
    int last = 0;
    int n = orch_sched_signals(orch_sched_get(L), &last);
    lua_pushinteger(L, n);
    if (n == 0)
        lua_pushnil(L);
    else
        lua_pushstring(L, last == SIGINT ? "SIGINT" : last == SIGTERM ? "SIGTERM" : "signal");
    return 2;
}

static void sleep_fire(void *ud)
{
    orch_task_wake(ud, NULL, NULL);
}

static void sleep_cancel(struct orch_task *t, void *ud)
{
    orch_loop_timer_cancel(orch_task_loop(t), ud);
}

/* sleep(seconds): suspends the calling task only. May yield. */
static int l_sched_sleep(lua_State *L)
{
    lua_Number secs = luaL_checknumber(L, 1);
    luaL_argcheck(L, secs >= 0 && secs < 1e9, 1, "expected seconds between 0 and 1e9");
    struct orch_task *t = check_suspendable(L, "sleep");
    struct orch_timer *timer =
        orch_loop_timer_add(orch_task_loop(t), (uint64_t)llround(secs * 1000.0), sleep_fire, t);
    if (timer == NULL)
        return luaL_error(L, "out of memory arming a timer");
    orch_task_suspend(t, sleep_cancel, timer);
    return lua_yield(L, 0);
}

/* run(fn, ...) -> fn's results: runs fn as the root task and drives the
 * loop until it returns; tasks it leaves behind are cancelled. Raises fn's
 * error (with the task's traceback). */
static int l_sched_run(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    struct orch_sched *s = orch_sched_get(L);
    if (orch_task_current(L) != NULL || orch_sched_running(s))
        return luaL_error(L, "orch.sched.run cannot be called from inside a task (one run at a time)");
    int top = lua_gettop(L);
    struct orch_task *root = orch_sched_spawn(s, L, top - 1, NULL);
    int n = orch_sched_run(s, L, root);
    if (n < 0)
        return lua_error(L);
    return n;
}

/* now() -> seconds on the loop's monotonic clock (ms resolution). */
static int l_sched_now(lua_State *L)
{
    struct orch_loop *loop = orch_sched_loop(orch_sched_get(L));
    lua_pushnumber(L, (lua_Number)orch_loop_update_time(loop) / 1000.0);
    return 1;
}

/* current() -> the running task's id, or nil outside a task. */
static int l_sched_current(lua_State *L)
{
    struct orch_task *t = orch_task_current(L);
    if (t == NULL)
        lua_pushnil(L);
    else
        lua_pushinteger(L, (lua_Integer)orch_task_id(t));
    return 1;
}

/* poke(id) -> whether the task with that id waited for children and was
 * woken (its wait returns early, possibly with nothing). */
static int l_sched_poke(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    lua_pushboolean(L, orch_sched_poke(orch_sched_get(L), (uint64_t)id));
    return 1;
}

/* burst_timeout([seconds]) -> the previous limit: how long a task may run
 * Lua code without waiting before an error is raised in it. */
static int l_sched_burst_timeout(lua_State *L)
{
    struct orch_sched *s = orch_sched_get(L);
    lua_Number prev = (lua_Number)orch_sched_burst(s) / 1000.0;
    if (!lua_isnoneornil(L, 1)) {
        lua_Number secs = luaL_checknumber(L, 1);
        luaL_argcheck(L, secs > 0 && secs < 1e9, 1, "seconds must be positive");
        orch_sched_set_burst(s, (uint64_t)(secs * 1000.0));
    }
    lua_pushnumber(L, prev);
    return 1;
}

/* live() -> number of tasks alive in the scheduler. */
static int l_sched_live(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)orch_sched_live(orch_sched_get(L)));
    return 1;
}

/* resumes() -> how many times tasks have been resumed (sched.h): equal
 * before and after a stretch of code means the caller was not suspended. */
static int l_sched_resumes(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)orch_sched_resumes(orch_sched_get(L)));
    return 1;
}

static const luaL_Reg sched_funcs[] = {
    {"spawn", l_sched_spawn},
    {"wait", l_sched_wait},
    {"sleep", l_sched_sleep},
    {"run", l_sched_run},
    {"now", l_sched_now},
    {"current", l_sched_current},
    {"live", l_sched_live},
    {"resumes", l_sched_resumes},
    {"burst_timeout", l_sched_burst_timeout},
    {"poke", l_sched_poke},
    {"park", l_sched_park},
    {"unpark", l_sched_unpark},
    {"trap_signals", l_sched_trap_signals},
    {"untrap_signals", l_sched_untrap_signals},
    {"signals", l_sched_signals},
    {NULL, NULL},
};

static int l_interrupted_tostring(lua_State *L)
{
    lua_getfield(L, 1, "msg");
    return 1;
}

int luaopen_orch_sched(lua_State *L)
{
    luaL_newlib(L, sched_funcs);
    lua_pushnumber(L, ORCH_SCHED_BURST_MS / 1000.0);
    lua_setfield(L, -2, "BURST_TIMEOUT"); /* the default of burst_timeout, in seconds */
    luaL_newmetatable(L, ORCH_INTERRUPTED_MT);
    lua_pushcfunction(L, l_interrupted_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_setfield(L, -2, "Interrupted");
    return 1;
}
