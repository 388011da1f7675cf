/* store_lua.h — the `orch.store` module: the state store (storage/store.h)
 * as Lua objects, with the group commit of LLM replies (journal_group.h)
 * and a run's heartbeat timer (heartbeat.h) driven from the event loop. */
#ifndef ORCH_STORE_LUA_H
#define ORCH_STORE_LUA_H

#include <lua.h>

int luaopen_orch_store(lua_State *L);

#endif
