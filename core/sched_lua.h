/* sched_lua.h — the `orch.sched` module: spawn, wait, sleep, run, now.
 * Thin glue over sched.c and loop.c. */
#ifndef ORCH_SCHED_LUA_H
#define ORCH_SCHED_LUA_H

#include <lua.h>

int luaopen_orch_sched(lua_State *L);

#endif
