/* sched.c — tasks as coroutines; the only caller of lua_resume. See sched.h. */
#include "sched.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <lauxlib.h>

#if LUA_VERSION_NUM == 504 && LUA_VERSION_RELEASE_NUM >= 50406
#define close_thread(co, from) lua_closethread((co), (from))
#else
#define close_thread(co, from) ((void)(from), lua_resetthread(co))
#endif

struct orch_task {
    struct orch_sched *s;
    lua_State *co;
    int ref; /* anchors co in the registry */
    uint64_t id;
    enum orch_task_state state;
    struct orch_task *parent;
    size_t nchildren;
    int mailbox; /* registry ref of the completion array, or LUA_NOREF */
    int waiting_children;
    int parked;                    /* suspended by orch_task_park until orch_sched_unpark */
    struct orch_timer *wait_timer; /* armed by a wait with a timeout */
    uint64_t spent_ms;             /* Lua run in earlier slices since it last waited */
    int preempted;                 /* its last yield was the busy hook's, not its own */
    int start_nargs;
    int nresults; /* root only: values left on co when it finished */
    orch_task_push_fn push;
    void *push_ud;
    orch_task_cleanup_fn cleanup;
    void *cleanup_ud;
    struct orch_task *next_ready;
    struct orch_task *prev, *next; /* live list */
};

/* Finished tasks keep their coroutine for the next spawn: a coroutine
 * that returned normally has an empty stack and can run a new function,
 * which spares a lua_newthread, a registry ref and GC work per row. */
#define SCHED_POOL_MAX 256

struct orch_sched {
    lua_State *L;           /* main thread */
    struct orch_task *pool; /* idle tasks, linked through next */
    size_t npool;
    struct orch_loop *loop;
    uint64_t next_id;
    size_t live;
    struct orch_task *tasks;
    struct orch_task *ready_head, *ready_tail;
    size_t nready;
    struct orch_task *trap; /* poked when SIGINT/SIGTERM arrives */
    int signals;            /* how many arrived since trapping */
    int running;            /* inside orch_sched_run */
    int last_signal;
    uint64_t resume_ticks; /* cpu_ticks when the running task was resumed */
    uint64_t burst_ms;     /* how long a task may run Lua without waiting */
    uint64_t resumes;      /* lua_resume calls so far (orch_sched_resumes) */
};

/* Runaway Lua. A task that never waits would keep the loop, its timers and
 * its signals out for good. While tasks run, a CPU-time interval timer
 * (SIGVTALRM: it only ticks while the process computes) arms a count hook
 * on the running coroutine, as lua.c does for Ctrl-C; the hook raises an
 * error in that task once it has run burst_ms without waiting, or at once
 * when SIGINT/SIGTERM came while it had been busy a second or more (and
 * from then on, for the rest of the run: it is stopping). Children only,
 * not the root task. The signal handler can only reach process-wide state.
 *
 * Before that, once a task has run a second (or half its burst_ms) without
 * waiting, each tick the hook makes it give way (a yield from the hook, as
 * haproxy's hlua_hook does), so one looping row does not stall the others'
 * I/O, timers and Lua while it runs out its burst_ms; the time it ran adds
 * up across these slices until it waits. Code that waits within a second
 * keeps running undisturbed between its waits, as it always did. Only where
 * the task could have called coroutine.yield() itself: in user code, with
 * no orch library frame on its stack but the row machinery (run/outcome.lua,
 * the row batches of run/driver.lua, steps.lua, which a stage may suspend
 * anyway). Library code counts on
 * running without a break between its waits (budget reservations, the
 * journal), so there the hook never yields.
 *
 * Busy time is counted in ticks, that is in CPU time: on a loaded machine
 * the wall clock may run seconds ahead between two ticks, and a task must
 * not pass its burst before it had the slices it was due. */
#define SCHED_TICK_US 100000
#define SCHED_TICK_MS (SCHED_TICK_US / 1000)
#define SCHED_INTERRUPT_MS 1000
#define SCHED_SLICE_AFTER_MS 1000
static lua_State *volatile busy_co;          /* the coroutine inside lua_resume */
static volatile sig_atomic_t busy_interrupt; /* SIGINT/SIGTERM during a resume */
static volatile sig_atomic_t cpu_ticks;      /* SIGVTALRM ticks so far: CPU time */

static const char sched_key = 'S';

/* Whether the busy hook may suspend co here: see "Runaway Lua". Only on a
 * count event (Lua 5.4 lets a hook yield on count and line events only). */
static int preemptible(lua_State *co, const lua_Debug *hook_ar)
{
    if (hook_ar->event != LUA_HOOKCOUNT || !lua_isyieldable(co))
        return 0;
    lua_Debug ar;
    for (int level = 0; lua_getstack(co, level, &ar); level++) {
        if (!lua_getinfo(co, "S", &ar))
            return 0;
        if (strncmp(ar.source, "@lua/orch/", 10) == 0 &&
            strcmp(ar.source, "@lua/orch/run/outcome.lua") != 0 &&
            strcmp(ar.source, "@lua/orch/run/driver.lua") != 0 &&
            strcmp(ar.source, "@lua/orch/steps.lua") != 0)
            return 0;
    }
    return 1;
}

struct orch_sched *orch_sched_new(lua_State *L, struct orch_loop *loop)
{
    struct orch_sched *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    s->L = lua_tothread(L, -1);
    lua_pop(L, 1);
    s->loop = loop;
    s->next_id = 1;
    s->burst_ms = ORCH_SCHED_BURST_MS;
    *(struct orch_task **)lua_getextraspace(s->L) = NULL;
    lua_pushlightuserdata(L, s);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sched_key);
    return s;
}

/* A task's coroutine finds its scheduler through its task (extra space):
 * a row's sched calls (resumes() once a row) skip the registry lookup. */
struct orch_sched *orch_sched_get(lua_State *L)
{
    struct orch_task *t = *(struct orch_task **)lua_getextraspace(L);
    if (t != NULL && t->co == L)
        return t->s;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sched_key);
    struct orch_sched *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return s;
}

struct orch_loop *orch_sched_loop(struct orch_sched *s)
{
    return s->loop;
}

size_t orch_sched_live(const struct orch_sched *s)
{
    return s->live;
}

struct orch_task *orch_task_current(lua_State *L)
{
    struct orch_task *t = *(struct orch_task **)lua_getextraspace(L);
    if (t == NULL || t->co != L)
        return NULL;
    return t;
}

uint64_t orch_task_id(const struct orch_task *t)
{
    return t->id;
}

struct orch_loop *orch_task_loop(const struct orch_task *t)
{
    return t->s->loop;
}

static void park_cancel(struct orch_task *t, void *ud)
{
    (void)ud;
    t->parked = 0;
}

void orch_task_park(struct orch_task *t)
{
    t->parked = 1;
    orch_task_suspend(t, park_cancel, NULL);
}

/* The live task with this id, or NULL. O(live tasks). */
static struct orch_task *task_by_id(struct orch_sched *s, uint64_t id)
{
    for (struct orch_task *t = s->tasks; t != NULL; t = t->next) {
        if (t->id == id)
            return t;
    }
    return NULL;
}

int orch_sched_unpark(struct orch_sched *s, uint64_t id)
{
    struct orch_task *t = task_by_id(s, id);
    if (t == NULL || !t->parked || t->state != ORCH_TASK_WAITING)
        return 0;
    t->parked = 0;
    orch_task_wake(t, NULL, NULL);
    return 1;
}

int orch_sched_poke(struct orch_sched *s, uint64_t id)
{
    struct orch_task *t = task_by_id(s, id);
    if (t == NULL || t->state != ORCH_TASK_WAITING || !t->waiting_children)
        return 0;
    orch_task_poke(t);
    return 1;
}

size_t orch_task_children(const struct orch_task *t)
{
    return t->nchildren;
}

static void ready_push(struct orch_sched *s, struct orch_task *t)
{
    t->state = ORCH_TASK_READY;
    t->next_ready = NULL;
    if (s->ready_tail != NULL)
        s->ready_tail->next_ready = t;
    else
        s->ready_head = t;
    s->ready_tail = t;
    s->nready++;
}

static struct orch_task *ready_pop(struct orch_sched *s)
{
    struct orch_task *t = s->ready_head;
    if (t == NULL)
        return NULL;
    s->ready_head = t->next_ready;
    if (s->ready_head == NULL)
        s->ready_tail = NULL;
    t->next_ready = NULL;
    s->nready--;
    return t;
}

static void ready_unlink(struct orch_sched *s, struct orch_task *t)
{
    struct orch_task **pp = &s->ready_head;
    struct orch_task *prev = NULL;
    while (*pp != NULL && *pp != t) {
        prev = *pp;
        pp = &(*pp)->next_ready;
    }
    if (*pp == NULL)
        return;
    *pp = t->next_ready;
    if (s->ready_tail == t)
        s->ready_tail = prev;
    s->nready--;
}

struct orch_task *orch_sched_spawn(struct orch_sched *s, lua_State *L, int nargs, struct orch_task *parent)
{
    struct orch_task *t = s->pool;
    if (t != NULL) {
        s->pool = t->next;
        s->npool--;
    } else {
        lua_State *co = lua_newthread(L);
        int ref = luaL_ref(L, LUA_REGISTRYINDEX);
        t = malloc(sizeof *t);
        if (t == NULL) {
            luaL_unref(L, LUA_REGISTRYINDEX, ref);
            luaL_error(L, "out of memory spawning a task");
            return NULL;
        }
        t->co = co;
        t->ref = ref;
    }
    lua_State *co = t->co;
    int ref = t->ref;
    memset(t, 0, sizeof *t);
    t->co = co;
    t->ref = ref;
    lua_xmove(L, co, nargs + 1); /* function and arguments now belong to co */
    *(struct orch_task **)lua_getextraspace(co) = t;
    t->s = s;
    t->id = s->next_id++;
    t->mailbox = LUA_NOREF;
    t->start_nargs = nargs;
    t->parent = parent;
    if (parent != NULL)
        parent->nchildren++;
    t->next = s->tasks;
    if (s->tasks != NULL)
        s->tasks->prev = t;
    s->tasks = t;
    s->live++;
    ready_push(s, t);
    return t;
}

void orch_task_suspend(struct orch_task *t, orch_task_cleanup_fn cleanup, void *ud)
{
    t->state = ORCH_TASK_WAITING;
    t->cleanup = cleanup;
    t->cleanup_ud = ud;
}

void orch_task_wake(struct orch_task *t, orch_task_push_fn push, void *ud)
{
    if (t->state != ORCH_TASK_WAITING)
        return;
    t->cleanup = NULL;
    t->push = push;
    t->push_ud = ud;
    ready_push(t->s, t);
}

void orch_task_take_mailbox(struct orch_task *t, lua_State *L)
{
    if (t->mailbox == LUA_NOREF) {
        lua_newtable(L);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->mailbox);
    luaL_unref(L, LUA_REGISTRYINDEX, t->mailbox);
    t->mailbox = LUA_NOREF;
}

static int push_mailbox(lua_State *co, void *ud)
{
    orch_task_take_mailbox(ud, co);
    return 1;
}

/* Wakes t from a wait for children, with whatever its mailbox holds. */
static void wake_waiter(struct orch_task *t)
{
    t->waiting_children = 0;
    if (t->wait_timer != NULL) {
        orch_loop_timer_cancel(t->s->loop, t->wait_timer);
        t->wait_timer = NULL;
    }
    orch_task_wake(t, push_mailbox, t);
}

static void wait_timeout(void *ud)
{
    struct orch_task *t = ud;
    t->wait_timer = NULL; /* fired: the loop has freed it */
    wake_waiter(t);
}

static void wait_cancel(struct orch_task *t, void *ud)
{
    (void)ud;
    if (t->wait_timer != NULL)
        orch_loop_timer_cancel(t->s->loop, t->wait_timer);
    t->wait_timer = NULL;
    t->waiting_children = 0;
}

int orch_task_wait_children(struct orch_task *t, int64_t timeout_ms)
{
    if (timeout_ms >= 0) {
        t->wait_timer = orch_loop_timer_add(t->s->loop, (uint64_t)timeout_ms, wait_timeout, t);
        if (t->wait_timer == NULL)
            return -1;
    }
    t->waiting_children = 1;
    orch_task_suspend(t, wait_cancel, NULL);
    return 0;
}

void orch_task_poke(struct orch_task *t)
{
    if (t->state == ORCH_TASK_WAITING && t->waiting_children)
        wake_waiter(t);
}

/* Detaches t from the scheduler and frees it; its coroutine is released. */
static void task_dispose(struct orch_sched *s, struct orch_task *t)
{
    lua_State *L = s->L;
    if (s->trap == t)
        s->trap = NULL;
    for (struct orch_task *c = s->tasks; c != NULL && t->nchildren > 0; c = c->next) {
        if (c->parent == t) {
            c->parent = NULL; /* orphans report to nobody */
            t->nchildren--;
        }
    }
    if (t->parent != NULL)
        t->parent->nchildren--;
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        s->tasks = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    s->live--;
    *(struct orch_task **)lua_getextraspace(t->co) = NULL;
    if (t->mailbox != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, t->mailbox);
    if (s->npool < SCHED_POOL_MAX && lua_status(t->co) == LUA_OK && lua_gettop(t->co) == 0) {
        t->next = s->pool;
        s->pool = t;
        s->npool++;
        return;
    }
    luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
    free(t);
}

/* Replaces the error value on top of L by "msg\ntraceback of co" when it
 * is a string; other error values are left as they are. Out of memory
 * (status LUA_ERRMEM) keeps Lua's preallocated "not enough memory" as it
 * is: building a traceback would allocate where nothing can be. */
static void push_error(lua_State *L, lua_State *co, int status)
{
    lua_xmove(co, L, 1);
    if (status != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
        const char *msg = lua_tostring(L, -1);
        luaL_traceback(L, co, msg, 0);
        lua_remove(L, -2);
    }
}

/* Appends t's outcome (values or error on top of L, count n) to its
 * parent's mailbox and wakes the parent if it waits for children. */
static void deliver(struct orch_sched *s, struct orch_task *t, int ok, int n)
{
    lua_State *L = s->L;
    struct orch_task *p = t->parent;
    int base = lua_gettop(L) - n;
    lua_createtable(L, ok ? n : 0, 3);
    lua_pushinteger(L, (lua_Integer)t->id);
    lua_setfield(L, -2, "id");
    lua_pushboolean(L, ok);
    lua_setfield(L, -2, "ok");
    if (ok) {
        for (int i = 1; i <= n; i++) {
            lua_pushvalue(L, base + i);
            lua_rawseti(L, -2, i);
        }
        lua_pushinteger(L, n);
        lua_setfield(L, -2, "n");
    } else {
        lua_pushvalue(L, base + 1);
        lua_setfield(L, -2, "err");
    }
    if (p->mailbox == LUA_NOREF) {
        lua_newtable(L);
        p->mailbox = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->mailbox);
    lua_insert(L, -2);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_settop(L, base);
    if (p->waiting_children)
        wake_waiter(p);
}

/* Pushes "file:line: " of the innermost Lua function running in co (the
 * hook may fire on a call into a C function, which has no line). */
static void push_where(lua_State *co)
{
    lua_Debug ar;
    for (int level = 0; lua_getstack(co, level, &ar); level++) {
        if (lua_getinfo(co, "Sl", &ar) && ar.currentline > 0) {
            lua_pushfstring(co, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
    }
    lua_pushliteral(co, "");
}

/* The count hook armed by the tick or by an interrupt; runs in the busy
 * task, removes itself, and raises there when it is time (may longjmp). */
static void busy_hook(lua_State *co, lua_Debug *ar)
{
    lua_sethook(co, NULL, 0, 0);
    struct orch_sched *s = orch_sched_get(co);
    struct orch_task *t = orch_task_current(co);
    uint64_t busy = (uint64_t)(cpu_ticks - s->resume_ticks) * SCHED_TICK_MS + (t != NULL ? t->spent_ms : 0);
    int sig = (int)busy_interrupt;
    if (sig != 0 && busy >= SCHED_INTERRUPT_MS) {
        /* the task is not at fault: an error of its own kind, which a row
         * driver can tell from a failure (the row runs again on resume) */
        lua_createtable(co, 0, 1);
        push_where(co);
        lua_pushfstring(co, "interrupted (%s) after %f s of Lua code that never waited",
                        sig == SIGINT ? "SIGINT" : "SIGTERM", (lua_Number)busy / 1000.0);
        lua_concat(co, 2);
        lua_setfield(co, -2, "msg");
        luaL_setmetatable(co, ORCH_INTERRUPTED_MT);
        lua_error(co);
    }
    if (busy >= s->burst_ms) {
        push_where(co);
        lua_pushfstring(co, "ran %f s of Lua code without waiting (an endless loop?); burst_timeout = %f s",
                        (lua_Number)busy / 1000.0, (lua_Number)s->burst_ms / 1000.0);
        lua_concat(co, 2);
        lua_error(co);
    }
    uint64_t slice_after = s->burst_ms / 2 < SCHED_SLICE_AFTER_MS ? s->burst_ms / 2 : SCHED_SLICE_AFTER_MS;
    if (t == NULL || sig != 0 || busy < slice_after)
        return;
    if (ar->event != LUA_HOOKCOUNT) {
        /* a call or return (of a long C function, say): yield at the next
         * instruction instead, where a hook may */
        lua_sethook(co, busy_hook, LUA_MASKCOUNT, 1);
    } else if (preemptible(co, ar)) {
        t->preempted = 1;
        lua_yield(co, 0); /* returns: Lua yields once the hook is done */
    }
}

static void busy_arm(void)
{
    lua_State *co = busy_co;
    if (co != NULL)
        lua_sethook(co, busy_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void on_tick(int signo)
{
    (void)signo;
    cpu_ticks++; /* the only writer */
    busy_arm();
}

/* From loop.c's signal handler: async-signal-safe. */
static void on_interrupt(int signo)
{
    if (signo != SIGINT && signo != SIGTERM)
        return;
    busy_interrupt = signo;
    busy_arm();
}

/* Starts (on = 1, a new run: no interrupt yet) or stops the tick. */
static void ticks(int on)
{
    static int installed;
    if (on)
        busy_interrupt = 0;
    if (on && !installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_tick;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        installed = sigaction(SIGVTALRM, &sa, NULL) == 0;
        orch_loop_set_interrupt(on_interrupt);
    }
    struct itimerval it;
    memset(&it, 0, sizeof it);
    if (on && installed) {
        it.it_interval.tv_usec = SCHED_TICK_US;
        it.it_value.tv_usec = SCHED_TICK_US;
    }
    setitimer(ITIMER_VIRTUAL, &it, NULL);
}

void orch_sched_set_burst(struct orch_sched *s, uint64_t ms)
{
    s->burst_ms = ms;
}

uint64_t orch_sched_burst(const struct orch_sched *s)
{
    return s->burst_ms;
}

/* Resumes t once and handles every outcome. Returns 1 when t finished. */
static int task_resume(struct orch_sched *s, struct orch_task *t, struct orch_task *root)
{
    lua_State *L = s->L;
    int nargs = t->start_nargs;
    t->start_nargs = 0;
    if (t->push != NULL) {
        nargs = t->push(t->co, t->push_ud);
        t->push = NULL;
    }
    t->state = ORCH_TASK_RUNNING;
    int nres = 0;
    s->resume_ticks = cpu_ticks;
    /* the root (a run's driver, a script) is never stopped this way: the
     * library code there has no row to fail, and a failed driver would
     * fail the run that a signal only meant to pause */
    busy_co = t != root ? t->co : NULL;
    s->resumes++;
    int status = lua_resume(t->co, L, nargs, &nres);
    busy_co = NULL;
    if (lua_gethook(t->co) != NULL)
        lua_sethook(t->co, NULL, 0, 0); /* armed, but the task yielded first */
    switch (status) {
    case LUA_YIELD:
        lua_pop(t->co, nres);
        if (t->preempted)
            t->spent_ms += (uint64_t)(cpu_ticks - s->resume_ticks) * SCHED_TICK_MS;
        else
            t->spent_ms = 0; /* it gave way or waits: a new burst starts */
        t->preempted = 0;
        /* a plain coroutine.yield() from task code gives way to others */
        if (t->state == ORCH_TASK_RUNNING)
            ready_push(s, t);
        return 0;
    case LUA_OK:
        t->state = ORCH_TASK_DONE;
        if (t == root) {
            t->nresults = nres; /* they stay on co for orch_sched_run */
            return 1;
        }
        if (t->parent != NULL) {
            luaL_checkstack(L, nres + 4, "task results");
            lua_xmove(t->co, L, nres);
            deliver(s, t, 1, nres);
        }
        lua_settop(t->co, 0);
        task_dispose(s, t);
        return 1;
    default:
        t->state = ORCH_TASK_DONE;
        if (t == root)
            return 1;
        if (t->parent != NULL) {
            push_error(L, t->co, status);
            close_thread(t->co, L); /* first: what its stack held is garbage for deliver's allocations */
            deliver(s, t, 0, 1);
        } else {
            close_thread(t->co, L);
        }
        task_dispose(s, t);
        return 1;
    }
}

static void task_cancel(struct orch_sched *s, struct orch_task *t)
{
    if (t->state == ORCH_TASK_WAITING && t->cleanup != NULL)
        t->cleanup(t, t->cleanup_ud);
    t->cleanup = NULL;
    if (t->state == ORCH_TASK_READY)
        ready_unlink(s, t);
    close_thread(t->co, s->L);
    task_dispose(s, t);
}

static void cancel_all_but(struct orch_sched *s, struct orch_task *keep)
{
    struct orch_task *t = s->tasks;
    while (t != NULL) {
        struct orch_task *next = t->next;
        if (t != keep)
            task_cancel(s, t);
        t = next;
    }
}

uint64_t orch_sched_resumes(const struct orch_sched *s)
{
    return s->resumes;
}

int orch_sched_running(const struct orch_sched *s)
{
    return s->running;
}

int orch_sched_run(struct orch_sched *s, lua_State *L, struct orch_task *root)
{
    int stuck = 0;
    s->running = 1;
    ticks(1);
    /* Rounds: resume the tasks that were ready when the round began, then
     * give the loop a turn (without blocking while tasks are still ready),
     * so a task that keeps yielding cannot keep I/O and timers out. */
    while (root->state != ORCH_TASK_DONE) {
        for (size_t n = s->nready; n > 0 && root->state != ORCH_TASK_DONE; n--)
            task_resume(s, ready_pop(s), root);
        if (root->state == ORCH_TASK_DONE)
            break;
        if (orch_loop_run_once(s->loop, s->nready > 0 ? 0 : -1) < 0 && s->nready == 0) {
            stuck = 1;
            break;
        }
    }
    s->running = 0;
    ticks(0);
    if (stuck) {
        cancel_all_but(s, NULL);
        lua_pushstring(L, "deadlock: every task waits and nothing is left that could wake one");
        return -1;
    }
    cancel_all_but(s, root);
    int n;
    if (lua_status(root->co) == LUA_OK) {
        n = root->nresults;
        luaL_checkstack(L, n + 2, "task results");
        lua_xmove(root->co, L, n);
    } else {
        push_error(L, root->co, lua_status(root->co));
        n = -1;
    }
    root->parent = NULL;
    close_thread(root->co, s->L);
    task_dispose(s, root);
    return n;
}

static void on_signal(int signo, void *ud)
{
    struct orch_sched *s = ud;
    s->signals++;
    s->last_signal = signo;
    if (s->trap != NULL)
        orch_task_poke(s->trap);
}

int orch_sched_trap_signals(struct orch_sched *s, struct orch_task *t)
{
    s->trap = t;
    s->signals = 0;
    if (orch_loop_on_signal(s->loop, SIGINT, on_signal, s) != 0)
        return -1;
    return orch_loop_on_signal(s->loop, SIGTERM, on_signal, s);
}

void orch_sched_untrap_signals(struct orch_sched *s)
{
    s->trap = NULL;
    orch_loop_signal_reset(s->loop, SIGINT);
    orch_loop_signal_reset(s->loop, SIGTERM);
}

int orch_sched_signals(const struct orch_sched *s, int *last_signo)
{
    if (last_signo != NULL)
        *last_signo = s->last_signal;
    return s->signals;
}

void orch_sched_free(struct orch_sched *s)
{
    if (s == NULL)
        return;
    cancel_all_but(s, NULL);
    while (s->pool != NULL) {
        struct orch_task *t = s->pool;
        s->pool = t->next;
        luaL_unref(s->L, LUA_REGISTRYINDEX, t->ref);
        free(t);
    }
    free(s);
}
