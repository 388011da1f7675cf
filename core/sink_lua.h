/* sink_lua.h — the `orch.sink` module: output files with durable offsets. */
#ifndef ORCH_SINK_LUA_H
#define ORCH_SINK_LUA_H

#include <lua.h>

int luaopen_orch_sink(lua_State *L);

#endif
