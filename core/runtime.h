/* runtime.h — the Lua state of an orch process: standard libraries, the
 * embedded `orch` modules (Lua sources compiled into the binary and the C
 * bindings, all as package.preload entries), the event loop and the
 * scheduler, and the one protected-call helper everything goes through.
 * Depends on lua.h, loop.h, sched.h and the generated embed table. */
#ifndef ORCH_RUNTIME_H
#define ORCH_RUNTIME_H

#include <lua.h>

#include "loop.h"
#include "sched.h"

struct orch_runtime {
    lua_State *L;
    struct orch_loop *loop;
    struct orch_sched *sched;
};

/* Creates the state, loop and scheduler. Returns 0, or -1 (out of memory). */
int orch_runtime_open(struct orch_runtime *rt);
/* Tears down in order: tasks, Lua state, loop. */
void orch_runtime_close(struct orch_runtime *rt);

/* lua_pcall with a message handler that appends a traceback to string
 * errors. Never longjmps. Returns the lua_pcall status. */
int orch_runtime_pcall(lua_State *L, int nargs, int nresults);

/* Registers every embedded module in package.preload. Can raise. */
void orch_runtime_preload(lua_State *L);

#endif
