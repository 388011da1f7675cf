/* sys_lua.h — the `orch.sys` module: process facts the Lua side needs
 * (library versions, whether stderr is a terminal, pid, host). */
#ifndef ORCH_SYS_LUA_H
#define ORCH_SYS_LUA_H

#include <lua.h>

int luaopen_orch_sys(lua_State *L);

#endif
