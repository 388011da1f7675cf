/* store_lua.h — the `orch.store` module: the state store (storage/store.h)
 * as Lua objects, plus a loop timer that keeps a run's heartbeat fresh. */
#ifndef ORCH_STORE_LUA_H
#define ORCH_STORE_LUA_H

#include <lua.h>

int luaopen_orch_store(lua_State *L);

#endif
