/* loop.c — poll(2) event loop with timers and self-pipe signals. See loop.h. */
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct orch_timer {
    uint64_t when;
    uint64_t seq; /* ties broken in arming order */
    size_t idx;   /* position in the heap */
    orch_timer_fn fn;
    void *ud;
};

struct watch {
    int fd;
    int events;
    orch_watch_fn fn;
    void *ud;
};

struct sigroute {
    int signo;
    orch_signal_fn fn;
    void *ud;
};

struct orch_loop {
    uint64_t now;
    uint64_t seq;
    struct orch_timer **heap;
    size_t nheap, capheap;
    struct watch *watches;
    size_t nwatches, capwatches;
    struct pollfd *pfds;
    size_t cappfds;
    struct sigroute *sigs;
    size_t nsigs;
};

/* The self-pipe is process-wide because a signal handler has no context. */
static int sigpipe_fds[2] = {-1, -1};

static void sig_handler(int signo)
{
    int saved = errno;
    unsigned char b = (unsigned char)signo;
    ssize_t n = write(sigpipe_fds[1], &b, 1);
    (void)n;
    errno = saved;
}

uint64_t orch_loop_update_time(struct orch_loop *loop)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    loop->now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    return loop->now;
}

uint64_t orch_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t orch_loop_now(const struct orch_loop *loop)
{
    return loop->now;
}

struct orch_loop *orch_loop_new(void)
{
    struct orch_loop *loop = calloc(1, sizeof *loop);
    if (loop == NULL)
        return NULL;
    orch_loop_update_time(loop);
    return loop;
}

void orch_loop_free(struct orch_loop *loop)
{
    if (loop == NULL)
        return;
    for (size_t i = 0; i < loop->nsigs; i++)
        signal(loop->sigs[i].signo, SIG_DFL);
    for (size_t i = 0; i < loop->nheap; i++)
        free(loop->heap[i]);
    free(loop->heap);
    free(loop->watches);
    free(loop->pfds);
    free(loop->sigs);
    free(loop);
}

/* ---- timers: binary min-heap on (when, seq) ---- */

static int timer_before(const struct orch_timer *a, const struct orch_timer *b)
{
    if (a->when != b->when)
        return a->when < b->when;
    return a->seq < b->seq;
}

static void heap_set(struct orch_loop *loop, size_t i, struct orch_timer *t)
{
    loop->heap[i] = t;
    t->idx = i;
}

static void heap_up(struct orch_loop *loop, size_t i)
{
    struct orch_timer *t = loop->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_before(t, loop->heap[parent]))
            break;
        heap_set(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_set(loop, i, t);
}

static void heap_down(struct orch_loop *loop, size_t i)
{
    struct orch_timer *t = loop->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= loop->nheap)
            break;
        if (child + 1 < loop->nheap && timer_before(loop->heap[child + 1], loop->heap[child]))
            child++;
        if (!timer_before(loop->heap[child], t))
            break;
        heap_set(loop, i, loop->heap[child]);
        i = child;
    }
    heap_set(loop, i, t);
}

static void heap_remove(struct orch_loop *loop, size_t i)
{
    struct orch_timer *last = loop->heap[--loop->nheap];
    if (i == loop->nheap)
        return;
    heap_set(loop, i, last);
    heap_down(loop, i);
    heap_up(loop, last->idx);
}

struct orch_timer *orch_loop_timer_add(struct orch_loop *loop, uint64_t delay_ms,
                                       orch_timer_fn fn, void *ud)
{
    if (loop->nheap == loop->capheap) {
        size_t cap = loop->capheap ? loop->capheap * 2 : 64;
        struct orch_timer **h = realloc(loop->heap, cap * sizeof *h);
        if (h == NULL)
            return NULL;
        loop->heap = h;
        loop->capheap = cap;
    }
    struct orch_timer *t = malloc(sizeof *t);
    if (t == NULL)
        return NULL;
    /* from now, not from the iteration's cached time: Lua may have run long */
    t->when = orch_loop_update_time(loop) + delay_ms;
    t->seq = loop->seq++;
    t->fn = fn;
    t->ud = ud;
    heap_set(loop, loop->nheap++, t);
    heap_up(loop, t->idx);
    return t;
}

void orch_loop_timer_cancel(struct orch_loop *loop, struct orch_timer *t)
{
    heap_remove(loop, t->idx);
    free(t);
}

size_t orch_loop_timers_pending(const struct orch_loop *loop)
{
    return loop->nheap;
}

/* ---- descriptors ---- */

static struct watch *watch_find(struct orch_loop *loop, int fd)
{
    for (size_t i = 0; i < loop->nwatches; i++) {
        if (loop->watches[i].fd == fd)
            return &loop->watches[i];
    }
    return NULL;
}

int orch_loop_watch(struct orch_loop *loop, int fd, int events, orch_watch_fn fn, void *ud)
{
    struct watch *w = watch_find(loop, fd);
    if (events == 0) {
        if (w != NULL)
            *w = loop->watches[--loop->nwatches];
        return 0;
    }
    if (w == NULL) {
        if (loop->nwatches == loop->capwatches) {
            size_t cap = loop->capwatches ? loop->capwatches * 2 : 16;
            struct watch *ws = realloc(loop->watches, cap * sizeof *ws);
            if (ws == NULL)
                return -1;
            loop->watches = ws;
            loop->capwatches = cap;
        }
        w = &loop->watches[loop->nwatches++];
        w->fd = fd;
    }
    w->events = events;
    w->fn = fn;
    w->ud = ud;
    return 0;
}

size_t orch_loop_watched(const struct orch_loop *loop)
{
    return loop->nwatches;
}

/* ---- signals ---- */

static int sigpipe_open(void)
{
    if (sigpipe_fds[0] >= 0)
        return 0;
    if (pipe(sigpipe_fds) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(sigpipe_fds[i], F_SETFL, fcntl(sigpipe_fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(sigpipe_fds[i], F_SETFD, FD_CLOEXEC);
    }
    return 0;
}

int orch_loop_on_signal(struct orch_loop *loop, int signo, orch_signal_fn fn, void *ud)
{
    if (sigpipe_open() != 0)
        return -1;
    struct sigroute *s = NULL;
    for (size_t i = 0; i < loop->nsigs; i++) {
        if (loop->sigs[i].signo == signo)
            s = &loop->sigs[i];
    }
    if (s == NULL) {
        struct sigroute *ss = realloc(loop->sigs, (loop->nsigs + 1) * sizeof *ss);
        if (ss == NULL)
            return -1;
        loop->sigs = ss;
        s = &loop->sigs[loop->nsigs++];
    }
    s->signo = signo;
    s->fn = fn;
    s->ud = ud;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sig_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    return sigaction(signo, &sa, NULL);
}

void orch_loop_signal_reset(struct orch_loop *loop, int signo)
{
    for (size_t i = 0; i < loop->nsigs; i++) {
        if (loop->sigs[i].signo == signo) {
            loop->sigs[i] = loop->sigs[--loop->nsigs];
            signal(signo, SIG_DFL);
            return;
        }
    }
}

static int signals_dispatch(struct orch_loop *loop)
{
    unsigned char buf[64];
    int ran = 0;
    for (;;) {
        ssize_t n = read(sigpipe_fds[0], buf, sizeof buf);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            for (size_t j = 0; j < loop->nsigs; j++) {
                if (loop->sigs[j].signo == buf[i]) {
                    loop->sigs[j].fn(buf[i], loop->sigs[j].ud);
                    ran++;
                    break;
                }
            }
        }
    }
    return ran;
}

/* ---- one iteration ---- */

static int poll_timeout(struct orch_loop *loop, int timeout_ms)
{
    if (loop->nheap == 0)
        return timeout_ms;
    uint64_t when = loop->heap[0]->when;
    int until = when <= loop->now ? 0 : (int)(when - loop->now > 86400000u ? 86400000u : when - loop->now);
    if (timeout_ms < 0 || until < timeout_ms)
        return until;
    return timeout_ms;
}

static int timers_dispatch(struct orch_loop *loop)
{
    uint64_t seq_limit = loop->seq; /* timers armed by these callbacks wait a turn */
    int ran = 0;
    while (loop->nheap > 0) {
        struct orch_timer *t = loop->heap[0];
        if (t->when > loop->now || t->seq >= seq_limit)
            break;
        heap_remove(loop, 0);
        orch_timer_fn fn = t->fn;
        void *ud = t->ud;
        free(t);
        fn(ud);
        ran++;
    }
    return ran;
}

int orch_loop_run_once(struct orch_loop *loop, int timeout_ms)
{
    size_t n = loop->nwatches + (loop->nsigs > 0 ? 1 : 0);
    if (timeout_ms < 0 && n == 0 && loop->nheap == 0)
        return -1;
    if (n > loop->cappfds) {
        struct pollfd *p = realloc(loop->pfds, n * sizeof *p);
        if (p == NULL)
            return -1;
        loop->pfds = p;
        loop->cappfds = n;
    }
    size_t k = 0;
    for (size_t i = 0; i < loop->nwatches; i++) {
        loop->pfds[k].fd = loop->watches[i].fd;
        loop->pfds[k].events = (short)(((loop->watches[i].events & ORCH_LOOP_READ) ? POLLIN : 0) |
                                       ((loop->watches[i].events & ORCH_LOOP_WRITE) ? POLLOUT : 0));
        loop->pfds[k].revents = 0;
        k++;
    }
    if (loop->nsigs > 0) {
        loop->pfds[k].fd = sigpipe_fds[0];
        loop->pfds[k].events = POLLIN;
        loop->pfds[k].revents = 0;
        k++;
    }
    int rc = poll(loop->pfds, k, poll_timeout(loop, timeout_ms));
    orch_loop_update_time(loop);
    int ran = 0;
    if (rc > 0) {
        for (size_t i = 0; i < k; i++) {
            short re = loop->pfds[i].revents;
            if (re == 0)
                continue;
            int fd = loop->pfds[i].fd;
            if (loop->nsigs > 0 && fd == sigpipe_fds[0]) {
                ran += signals_dispatch(loop);
                continue;
            }
            /* a callback may have removed or replaced this watch */
            struct watch *w = watch_find(loop, fd);
            if (w == NULL)
                continue;
            int ev = ((re & POLLIN) ? ORCH_LOOP_READ : 0) | ((re & POLLOUT) ? ORCH_LOOP_WRITE : 0) |
                     ((re & (POLLERR | POLLHUP | POLLNVAL)) ? ORCH_LOOP_ERROR : 0);
            w->fn(fd, ev, w->ud);
            ran++;
        }
    }
    ran += timers_dispatch(loop);
    return ran;
}
