/* runtime.h — the Lua state of an orch process: standard libraries, the
 * embedded `orch` modules (Lua sources compiled into the binary and the C
 * bindings, all as package.preload entries), the event loop and the
 * scheduler, and the one protected-call helper everything goes through.
 * Depends on lua.h, loop.h, sched.h and the generated embed table. */
#ifndef ORCH_RUNTIME_H
#define ORCH_RUNTIME_H

#include <lauxlib.h>
#include <lua.h>

#include "loop.h"
#include "sched.h"

struct orch_mem;

struct orch_runtime {
    lua_State *L;
    struct orch_loop *loop;
    struct orch_sched *sched;
    struct orch_mem *mem; /* the allocator's byte count and limit; outlives L */
};

/* The Lua heap's limit when nothing sets one: half the physical memory,
 * at most 4 GiB (a run that wants more says so with max_memory). */
size_t orch_runtime_default_memory_limit(void);

/* The byte limit of L's heap, or 0 when L was not made by
 * orch_runtime_open. An allocation that would pass it fails as out of
 * memory (LUA_ERRMEM, after an emergency collection). */
size_t orch_runtime_memory_limit(lua_State *L);
/* Bytes L's heap holds now (0 as above). */
size_t orch_runtime_memory_used(lua_State *L);
/* Sets the limit unless the command line fixed it (fixed = 1 fixes it:
 * --max-memory beats the workflow's max_memory). Returns the limit before
 * the call; 0 when L has no limit to set. */
size_t orch_runtime_set_memory_limit(lua_State *L, size_t bytes, int fixed);

/* Creates the state, loop and scheduler. Returns 0, or -1 (out of memory). */
int orch_runtime_open(struct orch_runtime *rt);
/* Tears down in order: tasks, Lua state, loop. */
void orch_runtime_close(struct orch_runtime *rt);

/* lua_pcall with a message handler that appends a traceback to string
 * errors. Never longjmps. Returns the lua_pcall status. */
int orch_runtime_pcall(lua_State *L, int nargs, int nresults);

/* Registers the metatable `name` (luaL_newmetatable) with meta's
 * functions and, unless methods is NULL, a table of methods as its
 * __index; every one of them holds the metatable as its upvalue 1 (see
 * orch_lua_self). Leaves the stack as it was. Bindings call it once in
 * their luaopen, not once per object. Can raise (memory). */
void orch_lua_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods);

/* The userdata at index 1 of a call to a function orch_lua_class
 * registered for class `name`: its metatable compared with the one the
 * function holds, without looking the class up by name (a row's reader,
 * sink and store calls make that check once each); called any other way,
 * luaL_checkudata's check, which raises its usual message. */
void *orch_lua_self(lua_State *L, const char *name);

/* Registers every embedded module in package.preload. Can raise. */
void orch_runtime_preload(lua_State *L);

#endif
