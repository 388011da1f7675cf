/* sched.h — the task scheduler: one Lua coroutine per task (a row, a step,
 * the run driver), a FIFO ready queue, and the only call to lua_resume in
 * the program.
 *
 * A C function that must wait (sleep, HTTP, waiting on children) calls
 * orch_task_suspend() with a cleanup hook and then yields; whatever it waits
 * on later calls orch_task_wake() from a loop callback, which only queues the
 * task. orch_sched_run() resumes queued tasks between loop iterations, so no
 * Lua code ever runs inside a loop, curl or SQLite callback.
 * The task pointer lives in the coroutine's extra space (haproxy-style).
 * Depends on lua.h and loop.h. */
#ifndef ORCH_SCHED_H
#define ORCH_SCHED_H

#include <stdint.h>

#include <lua.h>

#include "loop.h"

struct orch_sched;
struct orch_task;

enum orch_task_state {
    ORCH_TASK_READY,
    ORCH_TASK_RUNNING,
    ORCH_TASK_WAITING,
    ORCH_TASK_DONE,
};

/* Pushes onto co the values that the suspended call returns; returns how
 * many. Called by the scheduler just before resuming. */
typedef int (*orch_task_push_fn)(lua_State *co, void *ud);
/* Cancels what a suspended task waits on (timer, request). */
typedef void (*orch_task_cleanup_fn)(struct orch_task *t, void *ud);

/* Creates the scheduler for L's state and stores it in L's registry.
 * The scheduler does not own the loop. */
struct orch_sched *orch_sched_new(lua_State *L, struct orch_loop *loop);
/* Cancels every live task and frees the scheduler (before lua_close). */
void orch_sched_free(struct orch_sched *s);
/* The scheduler registered in L's state (never NULL once created). */
struct orch_sched *orch_sched_get(lua_State *L);
struct orch_loop *orch_sched_loop(struct orch_sched *s);

/* The task running in coroutine L, or NULL when L is not a task's own
 * coroutine (the main thread, or a coroutine the user created). */
struct orch_task *orch_task_current(lua_State *L);
uint64_t orch_task_id(const struct orch_task *t);
struct orch_loop *orch_task_loop(const struct orch_task *t);

/* Spawns a task running the function below nargs arguments on L's top;
 * pops them. Completion is reported to parent's mailbox (see
 * orch_task_take_mailbox) when parent is not NULL. May raise a Lua error
 * (memory). */
struct orch_task *orch_sched_spawn(struct orch_sched *s, lua_State *L, int nargs, struct orch_task *parent);

/* Marks t waiting; the caller must then return lua_yield(L, 0). cleanup
 * (may be NULL) runs if the task is cancelled before it is woken. */
void orch_task_suspend(struct orch_task *t, orch_task_cleanup_fn cleanup, void *ud);
/* Queues a waiting task; push (may be NULL) supplies the values the
 * suspended call returns. Safe to call from any loop callback. */
void orch_task_wake(struct orch_task *t, orch_task_push_fn push, void *ud);

/* Suspends t until orch_sched_unpark(id of t); the caller then yields.
 * The building block of waits on conditions kept in Lua (semaphores). */
void orch_task_park(struct orch_task *t);
/* Wakes the parked task with this id: 1, or 0 when no such task is parked
 * (finished, cancelled, or not parked). O(live tasks). */
int orch_sched_unpark(struct orch_sched *s, uint64_t id);

/* Children of t that have not finished. */
size_t orch_task_children(const struct orch_task *t);
/* Pushes t's mailbox onto L: an array of completion records
 * { id = n, ok = true, n = k, v1..vk } or { id = n, ok = false, err = e },
 * and starts a new empty one. */
void orch_task_take_mailbox(struct orch_task *t, lua_State *L);
/* Suspends t until a child completes, or timeout_ms passes (-1: no
 * timeout), or orch_task_poke; the caller then yields and the resumed call
 * returns the mailbox (possibly empty). Returns 0, or -1 out of memory. */
int orch_task_wait_children(struct orch_task *t, int64_t timeout_ms);
/* Wakes t early if it waits for children (a signal arrived, say). */
void orch_task_poke(struct orch_task *t);
/* orch_task_poke of the live task with this id: 1, or 0 when there is no
 * such task or it does not wait for children. O(live tasks). */
int orch_sched_poke(struct orch_sched *s, uint64_t id);

/* Runs the loop and resumes tasks until root is done, then cancels what is
 * left. Leaves root's results on L (returns their count) or, when root
 * failed, its error value with a traceback and returns -1. L must not be
 * a task. */
int orch_sched_run(struct orch_sched *s, lua_State *L, struct orch_task *root);

/* Routes SIGINT and SIGTERM through the loop to the scheduler: each is
 * counted and pokes t (when t waits for children), so a driver can stop
 * admitting work, drain, checkpoint. Returns 0 or -1. */
int orch_sched_trap_signals(struct orch_sched *s, struct orch_task *t);
/* Restores the default dispositions. */
void orch_sched_untrap_signals(struct orch_sched *s);
/* Signals counted since trapping; *last_signo (may be NULL) the last one. */
int orch_sched_signals(const struct orch_sched *s, int *last_signo);

/* How long (ms) a task (other than the root) may run Lua code without
 * waiting before an error is raised in it. Past a second (or half that
 * limit) without waiting, where it runs user code, it gives way to the
 * other tasks and the loop every 100 ms of CPU time. The default bounds what a stuck row costs: its own burst
 * of CPU, shared with the rows that still make progress. Once SIGINT/SIGTERM arrived, a task busy for a
 * second gets an error { msg = } with metatable ORCH_INTERRUPTED_MT instead (sched.Interrupted in Lua). */
#define ORCH_INTERRUPTED_MT "orch.Interrupted"
#define ORCH_SCHED_BURST_MS 10000
void orch_sched_set_burst(struct orch_sched *s, uint64_t ms);
uint64_t orch_sched_burst(const struct orch_sched *s);

/* 1 while orch_sched_run is driving tasks (runs do not nest). */
int orch_sched_running(const struct orch_sched *s);
/* How many times a task has been resumed so far. Tasks run one at a time
 * and only a suspended task lets another run, so a task that reads the
 * same count twice has not been suspended in between (the row batches of
 * lua/orch/run/driver.lua rely on it). */
uint64_t orch_sched_resumes(const struct orch_sched *s);

/* Number of live tasks. */
size_t orch_sched_live(const struct orch_sched *s);

#endif
