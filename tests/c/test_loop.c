/* test_loop.c — unit tests of loop.c: timer order and cancellation,
 * descriptor readiness, signals through the self-pipe. */
#include <signal.h>
#include <unistd.h>

#include "check.h"
#include "loop.h"

static int order[16];
static int norder;

static void record(void *ud)
{
    order[norder++] = (int)(long)ud;
}

static void test_timers(void)
{
    struct orch_loop *loop = orch_loop_new();
    norder = 0;
    uint64_t start = orch_loop_update_time(loop); /* timers count from when they are armed */
    orch_loop_timer_add(loop, 30, record, (void *)3L);
    orch_loop_timer_add(loop, 10, record, (void *)1L);
    struct orch_timer *t = orch_loop_timer_add(loop, 20, record, (void *)99L);
    orch_loop_timer_add(loop, 20, record, (void *)2L);
    orch_loop_timer_add(loop, 0, record, (void *)0L);
    orch_loop_timer_cancel(loop, t);
    CHECK(orch_loop_timers_pending(loop) == 4);
    while (orch_loop_timers_pending(loop) > 0)
        CHECK(orch_loop_run_once(loop, -1) >= 0);
    CHECK(norder == 4);
    for (int i = 0; i < 4; i++)
        CHECK(order[i] == i);
    CHECK(orch_loop_now(loop) - start >= 30);
    /* nothing left that could wake the loop */
    CHECK(orch_loop_run_once(loop, -1) == -1);
    CHECK(orch_loop_run_once(loop, 0) == 0);
    orch_loop_free(loop);
}

static void test_many_timers(void)
{
    struct orch_loop *loop = orch_loop_new();
    struct orch_timer *ts[1000];
    norder = 0;
    for (int i = 0; i < 1000; i++)
        ts[i] = orch_loop_timer_add(loop, (uint64_t)(1000 - i), record, (void *)0L);
    for (int i = 0; i < 1000; i += 2)
        orch_loop_timer_cancel(loop, ts[i]);
    CHECK(orch_loop_timers_pending(loop) == 500);
    orch_loop_free(loop); /* frees pending timers; ASan checks for leaks */
}

static int fired_fd = -1;
static int fired_events;

static void on_fd(int fd, int events, void *ud)
{
    (void)ud;
    fired_fd = fd;
    fired_events = events;
}

static void test_watch(void)
{
    struct orch_loop *loop = orch_loop_new();
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK(orch_loop_watch(loop, p[0], ORCH_LOOP_READ, on_fd, NULL) == 0);
    CHECK(orch_loop_watched(loop) == 1);
    CHECK(orch_loop_run_once(loop, 0) == 0);
    CHECK(write(p[1], "x", 1) == 1);
    CHECK(orch_loop_run_once(loop, 1000) == 1);
    CHECK(fired_fd == p[0]);
    CHECK(fired_events & ORCH_LOOP_READ);
    CHECK(orch_loop_watch(loop, p[0], 0, NULL, NULL) == 0);
    CHECK(orch_loop_watched(loop) == 0);
    close(p[0]);
    close(p[1]);
    orch_loop_free(loop);
}

/* A parked descriptor keeps its kernel registration but is not reported;
 * watching it again for the same events works; an event while parked
 * unregisters it; a closed and reused number is registered anew. */
static void test_park(void)
{
    struct orch_loop *loop = orch_loop_new();
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK(orch_loop_watch(loop, p[0], ORCH_LOOP_READ, on_fd, NULL) == 0);
    orch_loop_park(loop, p[0]);
    CHECK(orch_loop_watched(loop) == 0);
    CHECK(write(p[1], "x", 1) == 1);
    fired_fd = -1;
    CHECK(orch_loop_run_once(loop, 0) == 0); /* readable while parked: not reported */
    CHECK(fired_fd == -1);
    CHECK(orch_loop_watch(loop, p[0], ORCH_LOOP_READ, on_fd, NULL) == 0);
    CHECK(orch_loop_watched(loop) == 1);
    CHECK(orch_loop_run_once(loop, 1000) == 1); /* registered again */
    CHECK(fired_fd == p[0]);
    char c;
    CHECK(read(p[0], &c, 1) == 1);

    /* parked, then closed by its owner the way it must be (watch 0 first),
     * and the number reused: the new descriptor is heard */
    orch_loop_park(loop, p[0]);
    CHECK(orch_loop_watch(loop, p[0], 0, NULL, NULL) == 0);
    close(p[0]);
    close(p[1]);
    int q[2];
    CHECK(pipe(q) == 0);
    CHECK(orch_loop_watch(loop, q[0], ORCH_LOOP_READ, on_fd, NULL) == 0);
    CHECK(write(q[1], "y", 1) == 1);
    fired_fd = -1;
    CHECK(orch_loop_run_once(loop, 1000) == 1);
    CHECK(fired_fd == q[0]);
    CHECK(orch_loop_watch(loop, q[0], 0, NULL, NULL) == 0);
    close(q[0]);
    close(q[1]);
    orch_loop_free(loop);
}

static int prepared;

static int prepare_wakes(void *ud)
{
    (void)ud;
    return prepared++ == 0 ? 1 : 0; /* "woke a task" the first time only */
}

/* A prepare hook that ran something keeps the iteration from blocking,
 * even with nothing else that could wake the loop. */
static void test_prepare(void)
{
    struct orch_loop *loop = orch_loop_new();
    prepared = 0;
    CHECK(orch_loop_on_prepare(loop, prepare_wakes, NULL) == 0);
    orch_loop_timer_add(loop, 60000, record, (void *)0L); /* would block a minute */
    uint64_t t0 = orch_loop_update_time(loop);
    CHECK(orch_loop_run_once(loop, -1) == 1);
    CHECK(orch_loop_update_time(loop) - t0 < 30000);
    CHECK(prepared == 1);
    orch_loop_remove_prepare(loop, prepare_wakes, NULL);
    orch_loop_free(loop);
}

static int got_signal;

static void on_signal(int signo, void *ud)
{
    (void)ud;
    got_signal = signo;
}

static void test_signal(void)
{
    struct orch_loop *loop = orch_loop_new();
    CHECK(orch_loop_on_signal(loop, SIGUSR1, on_signal, NULL) == 0);
    raise(SIGUSR1);
    CHECK(orch_loop_run_once(loop, 1000) == 1);
    CHECK(got_signal == SIGUSR1);
    orch_loop_signal_reset(loop, SIGUSR1);
    orch_loop_free(loop);
}

int main(void)
{
    test_timers();
    test_many_timers();
    test_watch();
    test_park();
    test_prepare();
    test_signal();
    return check_report();
}
