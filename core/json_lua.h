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

/* An LLM reply read in C: picker is the stack index of a function that
 * json.picker made of three paths, the reply's text and its tokens in and
 * out. When s (len bytes) is a JSON object or array whose first path
 * leads to a string and whose other two lead to whole numbers of tokens
 * (numbers, or strings tonumber reads as numbers, integral, at least 0,
 * within lua_Integer), pushes the text and the two counts as integers and
 * returns 1. Otherwise (not JSON, another shape, counts missing or not
 * whole) pushes nothing and returns 0: the caller reads the text its own
 * way, with its own errors. Returns -1 (nothing pushed) when picker is not
 * such a function. Never raises but for a memory error in the values'
 * push. */
int orch_json_pick_reply(lua_State *L, int picker, const char *s, size_t len);

/* 1 when the value at idx is a picker orch_json_pick_reply takes, else 0. */
int orch_json_reply_picker(lua_State *L, int idx);

#endif
