/* hash_lua.h -- the `orch.hash` Lua module: xxHash digests of strings as hex.
 *
 * xxh128(s [, seed]) is XXH3_128bits; xxh64(s [, seed]) is XXH3_64bits (the
 * 64-bit XXH3 variant, not the older XXH64).  Both return lowercase hex of
 * the canonical big-endian form, the text `xxhsum -H2` / `xxhsum -H3` print.
 *
 * Depends on: Lua 5.4 (lua.h, lauxlib.h); libxxhash >= 0.8 (-lxxhash).
 */
#ifndef ORCH_HASH_LUA_H
#define ORCH_HASH_LUA_H

#include <lua.h>

/* Pushes the module table; register with luaL_requiref or package.preload
 * as "orch.hash".  May raise a Lua error (out of memory). */
int luaopen_orch_hash(lua_State *L);

#endif
