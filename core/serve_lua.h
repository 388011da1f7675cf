/* serve_lua.h — `require "orch.httpd"`: the HTTP server of `orch serve`
 * (serve.h) with a Lua handler, and the web page's files embedded in the
 * binary (web/, by core/embed.cmake). */
#ifndef ORCH_SERVE_LUA_H
#define ORCH_SERVE_LUA_H

#include <lua.h>

int luaopen_orch_httpd(lua_State *L);

#endif
