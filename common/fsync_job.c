/* fsync_job.c — fsyncs on one worker thread. See fsync_job.h. */
#include "fsync_job.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

enum { WORKER_STACK = 64 * 1024 };

struct orch_fsync_job {
    struct orch_fsync_job *next; /* in the worker's queue */
    int fd;
    int err;          /* the fsync's errno, set before state */
    atomic_int state; /* 0 queued or going, then 1 done or -1 failed */
};

/* The worker and its queue, under mu. The thread is started on the first
 * job and then waits for the next: a run checkpoints every few hundred
 * rows, and a thread a checkpoint cost its creation, its signal masks and
 * its stack's release each time. It never ends; a process exits past it. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t queued; /* a job was queued */
    pthread_cond_t ended;  /* a job ended */
    struct orch_fsync_job *head, *tail;
    int running;
    int idle;    /* the worker waits on queued (else it looks at the queue before it waits) */
    int waiters; /* pollers waiting on ended */
} W = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0, 0};

static void *worker_main(void *ud)
{
    (void)ud;
    pthread_mutex_lock(&W.mu);
    for (;;) {
        while (W.head == NULL) {
            W.idle = 1;
            pthread_cond_wait(&W.queued, &W.mu);
            W.idle = 0;
        }
        struct orch_fsync_job *j = W.head;
        W.head = j->next;
        if (W.head == NULL)
            W.tail = NULL;
        pthread_mutex_unlock(&W.mu);
        int rc;
        do
            rc = fsync(j->fd);
        while (rc != 0 && errno == EINTR);
        j->err = rc != 0 ? errno : 0;
        pthread_mutex_lock(&W.mu);
        /* set under the lock, and j not touched after: its poller may
         * free it as soon as it sees the state */
        atomic_store_explicit(&j->state, rc != 0 ? -1 : 1, memory_order_release);
        if (W.waiters > 0)
            pthread_cond_broadcast(&W.ended);
    }
    return NULL;
}

/* Starts the worker unless it runs; under W.mu. 0, or -1. */
static int worker_start(void)
{
    if (W.running)
        return 0;
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0)
        return -1;
    /* a small stack: the thread only calls fsync */
    pthread_attr_setstacksize(&attr, WORKER_STACK);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* the thread starts with every signal blocked, so SIGINT, SIGTERM and
     * the scheduler's CPU tick (SIGVTALRM, whose handler arms a hook on
     * the running coroutine) reach the thread running Lua */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int rc = pthread_create(&t, &attr, worker_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        return -1;
    W.running = 1;
    return 0;
}

struct orch_fsync_job *orch_fsync_start(int fd)
{
    struct orch_fsync_job *j = malloc(sizeof *j);
    if (j == NULL)
        return NULL;
    j->next = NULL;
    j->fd = fd;
    j->err = 0;
    atomic_init(&j->state, 0);
    pthread_mutex_lock(&W.mu);
    if (worker_start() != 0) {
        pthread_mutex_unlock(&W.mu);
        free(j);
        return NULL;
    }
    if (W.tail != NULL)
        W.tail->next = j;
    else
        W.head = j;
    W.tail = j;
    if (W.idle)
        pthread_cond_signal(&W.queued);
    pthread_mutex_unlock(&W.mu);
    return j;
}

int orch_fsync_poll(struct orch_fsync_job *j, int wait)
{
    if (atomic_load_explicit(&j->state, memory_order_acquire) == 0) {
        if (!wait)
            return 0;
        pthread_mutex_lock(&W.mu);
        W.waiters++;
        while (atomic_load_explicit(&j->state, memory_order_acquire) == 0)
            pthread_cond_wait(&W.ended, &W.mu);
        W.waiters--;
        pthread_mutex_unlock(&W.mu);
    }
    int ok = atomic_load_explicit(&j->state, memory_order_acquire) > 0;
    int err = j->err;
    free(j);
    if (!ok) {
        errno = err;
        return -1;
    }
    return 1;
}
