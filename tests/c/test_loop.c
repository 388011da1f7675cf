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
    test_signal();
    return check_report();
}
