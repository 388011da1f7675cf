/* sink_lua.h — the `orch.sink` module: output files with durable offsets. */
#ifndef ORCH_SINK_LUA_H
#define ORCH_SINK_LUA_H

#include <lua.h>

int luaopen_orch_sink(lua_State *L);

struct orch_sink;

/* The open sink of the orch.sink object at idx; raises when idx holds
 * something else or a closed sink. */
struct orch_sink *orch_sink_lua_check(lua_State *L, int idx);

#endif
