/* loop.h — the event loop: epoll(7) over watched descriptors, a min-heap of
 * one-shot timers, and signals delivered through a self-pipe.
 *
 * Pure C (no lua.h). Callbacks run from orch_loop_run_once() and must not
 * call back into Lua: they record results and mark tasks ready, and the
 * scheduler resumes those tasks afterwards. libcurl multi plugs in through
 * orch_loop_watch() (CURLMOPT_SOCKETFUNCTION) and the timer API
 * (CURLMOPT_TIMERFUNCTION). Depends on libc only. */
#ifndef ORCH_LOOP_H
#define ORCH_LOOP_H

#include <stddef.h>
#include <stdint.h>

#define ORCH_LOOP_READ 1
#define ORCH_LOOP_WRITE 2
#define ORCH_LOOP_ERROR 4

struct orch_loop;
struct orch_timer;

typedef void (*orch_timer_fn)(void *ud);
typedef void (*orch_watch_fn)(int fd, int events, void *ud);
typedef void (*orch_signal_fn)(int signo, void *ud);

struct orch_loop *orch_loop_new(void);
void orch_loop_free(struct orch_loop *loop);

/* Milliseconds on the monotonic clock, cached once per iteration. */
uint64_t orch_loop_now(const struct orch_loop *loop);
/* Milliseconds since the Unix epoch (wall clock, for timestamps). */
uint64_t orch_wall_ms(void);
/* Re-reads the clock; returns the new value. */
uint64_t orch_loop_update_time(struct orch_loop *loop);

/* Arms a one-shot timer firing after delay_ms. Returns the timer (owned by
 * the loop until it fires or is cancelled) or NULL when out of memory. */
struct orch_timer *orch_loop_timer_add(struct orch_loop *loop, uint64_t delay_ms, orch_timer_fn fn, void *ud);
/* Cancels a pending timer. Must not be called on a timer that already fired. */
void orch_loop_timer_cancel(struct orch_loop *loop, struct orch_timer *t);
size_t orch_loop_timers_pending(const struct orch_loop *loop);

/* Watches fd for ORCH_LOOP_READ|WRITE; events == 0 stops watching.
 * Returns 0 or -1 when out of memory. */
int orch_loop_watch(struct orch_loop *loop, int fd, int events, orch_watch_fn fn, void *ud);
size_t orch_loop_watched(const struct orch_loop *loop);
/* Stops calling fd's callback but leaves it registered with the kernel, so
 * that watching it again for the same events costs no system call (curl
 * parks a kept-alive connection after every request). Events arriving
 * while parked unregister it. The owner must call orch_loop_watch(fd, 0)
 * before it closes fd: a new descriptor under the same number would
 * otherwise be taken for the registered one. */
void orch_loop_park(struct orch_loop *loop, int fd);

/* Routes signo to fn, called from the loop (never from the handler). */
int orch_loop_on_signal(struct orch_loop *loop, int signo, orch_signal_fn fn, void *ud);
/* fn(signo) is also called from inside the signal handler of every routed
 * signal, so it must be async-signal-safe: the way to reach code that is
 * busy and will not return to the loop soon. Process-wide; NULL removes. */
void orch_loop_set_interrupt(void (*fn)(int signo));
/* Restores the default disposition of signo. */
void orch_loop_signal_reset(struct orch_loop *loop, int signo);

/* A prepare hook returns how many callbacks it ran (tasks it woke, say):
 * when any, the iteration does not block. */
typedef int (*orch_prepare_fn)(void *ud);

/* Runs fn(ud) at the start of every iteration, before waiting: work that
 * must happen before any I/O of the round (committing what the tasks just
 * produced before the requests they queued go out). 0 or -1. */
int orch_loop_on_prepare(struct orch_loop *loop, orch_prepare_fn fn, void *ud);
void orch_loop_remove_prepare(struct orch_loop *loop, orch_prepare_fn fn, void *ud);

/* One iteration: runs the prepare hooks, waits for at most timeout_ms (-1 =
 * until the next timer or descriptor event, 0 = do not block; never when a
 * hook ran something), then runs due timers and descriptor and signal
 * callbacks. Returns the number of callbacks run (hooks' included), or -1 when
 * there was nothing that could ever wake it (no timers, no descriptors, no
 * signal handlers) and timeout_ms was -1. */
int orch_loop_run_once(struct orch_loop *loop, int timeout_ms);

#endif
