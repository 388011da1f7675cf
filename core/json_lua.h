/* json_lua.h -- the `orch.json` Lua module: a canonical JSON encoder and an
 * exact decoder.
 *
 * encode(value [, order]) returns the same bytes for the same Lua value in
 * every process (object keys are sorted byte-wise, numbers have one spelling),
 * so its output can be hashed to build cache keys.  decode(text [, want_order])
 * gives values that encode back unchanged: 64-bit integers stay integers,
 * floats floats, [] stays []; strings must be UTF-8 both ways.
 *
 * Depends on: Lua 5.4 (lua.h, lauxlib.h); libc.
 */
#ifndef ORCH_JSON_LUA_H
#define ORCH_JSON_LUA_H

#include <lua.h>

/* Pushes the module table; register with luaL_requiref or package.preload
 * as "orch.json".  May raise a Lua error (out of memory). */
int luaopen_orch_json(lua_State *L);

#endif
