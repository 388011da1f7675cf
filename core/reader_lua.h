/* reader_lua.h — the `orch.reader` module: streaming CSV / line readers. */
#ifndef ORCH_READER_LUA_H
#define ORCH_READER_LUA_H

#include <lua.h>

int luaopen_orch_reader(lua_State *L);

#endif
