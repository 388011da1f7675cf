/* http_lua.h — the `orch.http` module: request{...} suspends only the
 * calling task while libcurl multi does the transfer. */
#ifndef ORCH_HTTP_LUA_H
#define ORCH_HTTP_LUA_H

#include <lua.h>

int luaopen_orch_http(lua_State *L);

#endif
