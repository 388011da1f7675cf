/* loop.c — epoll event loop with timers and self-pipe signals. See loop.h.
 * epoll rather than poll: with hundreds of connections open, each wait costs
 * what is ready, not what is watched. Watches are indexed by descriptor. */
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
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
    int events; /* wanted; 0: not watched (or parked) */
    int armed;  /* what epoll has registered; 0: not registered */
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
    int epfd;
    struct watch *watches; /* indexed by fd */
    size_t capwatches;
    size_t nwatches;
    int sigpipe_added;
    struct sigroute *sigs;
    size_t nsigs;
    struct prepare {
        orch_prepare_fn fn;
        void *ud;
    } prepares[8];
    size_t nprepares;
};

/* The self-pipe is process-wide because a signal handler has no context. */
static int sigpipe_fds[2] = {-1, -1};
static void (*volatile interrupt_fn)(int signo);

static void sig_handler(int signo)
{
    int saved = errno;
    unsigned char b = (unsigned char)signo;
    ssize_t n = write(sigpipe_fds[1], &b, 1);
    (void)n;
    void (*fn)(int) = interrupt_fn;
    if (fn != NULL)
        fn(signo);
    errno = saved;
}

void orch_loop_set_interrupt(void (*fn)(int signo))
{
    interrupt_fn = fn;
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
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        free(loop);
        return NULL;
    }
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
    free(loop->sigs);
    close(loop->epfd);
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

struct orch_timer *orch_loop_timer_add(struct orch_loop *loop, uint64_t delay_ms, orch_timer_fn fn, void *ud)
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

static uint32_t epoll_events(int events)
{
    return ((events & ORCH_LOOP_READ) ? EPOLLIN : 0u) | ((events & ORCH_LOOP_WRITE) ? EPOLLOUT : 0u);
}

/* Makes epoll's registration of fd match events (0: none). 0 or -1. */
static int watch_arm(struct orch_loop *loop, int fd, struct watch *w, int events)
{
    if (w->armed == events)
        return 0;
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.data.fd = fd;
    ev.events = epoll_events(events);
    if (events == 0) {
        /* the descriptor may be closed already; epoll dropped it then */
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, &ev);
    } else if (w->armed == 0) {
        if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            if (errno != EEXIST || epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) != 0)
                return -1;
        }
    } else if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) != 0) {
        /* closed and reopened under the same number: epoll forgot it */
        if (errno != ENOENT || epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
            return -1;
    }
    w->armed = events;
    return 0;
}

/* The watch slot of fd, growing the table; NULL when out of memory. */
static struct watch *watch_slot(struct orch_loop *loop, int fd)
{
    if ((size_t)fd >= loop->capwatches) {
        size_t cap = loop->capwatches ? loop->capwatches : 64;
        while (cap <= (size_t)fd)
            cap *= 2;
        struct watch *ws = realloc(loop->watches, cap * sizeof *ws);
        if (ws == NULL)
            return NULL;
        memset(ws + loop->capwatches, 0, (cap - loop->capwatches) * sizeof *ws);
        loop->watches = ws;
        loop->capwatches = cap;
    }
    return &loop->watches[fd];
}

int orch_loop_watch(struct orch_loop *loop, int fd, int events, orch_watch_fn fn, void *ud)
{
    if (fd < 0)
        return -1;
    if ((size_t)fd >= loop->capwatches && events == 0)
        return 0;
    struct watch *w = watch_slot(loop, fd);
    if (w == NULL || watch_arm(loop, fd, w, events) != 0)
        return -1;
    if (w->events == 0 && events != 0)
        loop->nwatches++;
    else if (w->events != 0 && events == 0)
        loop->nwatches--;
    w->events = events;
    w->fn = fn;
    w->ud = ud;
    return 0;
}

void orch_loop_park(struct orch_loop *loop, int fd)
{
    if (fd < 0 || (size_t)fd >= loop->capwatches)
        return;
    struct watch *w = &loop->watches[fd];
    if (w->events != 0)
        loop->nwatches--;
    w->events = 0;
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

/* ---- prepare hooks ---- */

int orch_loop_on_prepare(struct orch_loop *loop, orch_prepare_fn fn, void *ud)
{
    if (loop->nprepares == sizeof loop->prepares / sizeof loop->prepares[0])
        return -1;
    loop->prepares[loop->nprepares].fn = fn;
    loop->prepares[loop->nprepares].ud = ud;
    loop->nprepares++;
    return 0;
}

void orch_loop_remove_prepare(struct orch_loop *loop, orch_prepare_fn fn, void *ud)
{
    for (size_t i = 0; i < loop->nprepares; i++) {
        if (loop->prepares[i].fn == fn && loop->prepares[i].ud == ud) {
            loop->prepares[i] = loop->prepares[--loop->nprepares];
            return;
        }
    }
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
    int ran = 0;
    for (size_t i = 0; i < loop->nprepares; i++)
        ran += loop->prepares[i].fn(loop->prepares[i].ud);
    if (ran > 0)
        timeout_ms = 0;
    else if (timeout_ms < 0 && loop->nwatches == 0 && loop->nheap == 0 && loop->nsigs == 0)
        return -1;
    if (loop->nsigs > 0 && !loop->sigpipe_added) {
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.fd = sigpipe_fds[0];
        if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, sigpipe_fds[0], &ev) == 0 || errno == EEXIST)
            loop->sigpipe_added = 1;
    }
    struct epoll_event evs[256];
    int n = epoll_wait(loop->epfd, evs, 256, poll_timeout(loop, timeout_ms));
    orch_loop_update_time(loop);
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        uint32_t re = evs[i].events;
        if (fd == sigpipe_fds[0]) {
            ran += signals_dispatch(loop);
            continue;
        }
        if ((size_t)fd >= loop->capwatches)
            continue;
        struct watch *w = &loop->watches[fd];
        if (w->events == 0) {
            /* removed by an earlier callback, or parked and now readable
             * (a peer closing an idle connection): stop hearing of it */
            watch_arm(loop, fd, w, 0);
            continue;
        }
        int ev = ((re & EPOLLIN) ? ORCH_LOOP_READ : 0) | ((re & EPOLLOUT) ? ORCH_LOOP_WRITE : 0) |
                 ((re & (EPOLLERR | EPOLLHUP)) ? ORCH_LOOP_ERROR : 0);
        w->fn(fd, ev, w->ud);
        ran++;
    }
    ran += timers_dispatch(loop);
    return ran;
}
