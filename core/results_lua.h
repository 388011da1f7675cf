/* results_lua.h — a run's results packed as its rows settle
 * (storage/result_pack.h's orch_results_packer) as a Lua object,
 * `orch.store.results()`: the driver's flush appends each settled row
 * through the object's adder, and checkpoint_write (store_lua.c) hands
 * what it holds to the store as a chunk already made. Depends on Lua and
 * storage/result_pack.h. */
#ifndef ORCH_RESULTS_LUA_H
#define ORCH_RESULTS_LUA_H

#include <lua.h>

#include "result_pack.h"

/* Registers the results class and sets `results` (the constructor) in
 * the table on top of the stack. Can raise (memory). */
void orch_results_lua_open(lua_State *L);

/* The packer of the results object at idx, or NULL when idx holds
 * something else. */
struct orch_results_packer *orch_results_lua_test(lua_State *L, int idx);

/* The key at idx as text, as a result's key is stored: NULL for nil, a
 * string as it is, a number in its integer form when integral,
 * anything else by tostring. A text made here lives in buf (24 bytes)
 * or on the stack until the caller pops it. */
const char *orch_results_lua_key(lua_State *L, int idx, char *buf);

#endif
