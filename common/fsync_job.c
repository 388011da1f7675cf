/* fsync_job.c — fsync on a thread. See fsync_job.h. */
#include "fsync_job.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

enum { JOB_STACK = 64 * 1024 };

struct orch_fsync_job {
    pthread_t thread;
    int fd;
    int err;          /* the fsync's errno, set before state */
    atomic_int state; /* 0 going, then 1 done or -1 failed */
};

static void *job_main(void *ud)
{
    struct orch_fsync_job *j = ud;
    int rc;
    do
        rc = fsync(j->fd);
    while (rc != 0 && errno == EINTR);
    j->err = rc != 0 ? errno : 0;
    atomic_store_explicit(&j->state, rc != 0 ? -1 : 1, memory_order_release);
    return NULL;
}

struct orch_fsync_job *orch_fsync_start(int fd)
{
    struct orch_fsync_job *j = malloc(sizeof *j);
    if (j == NULL)
        return NULL;
    j->fd = fd;
    j->err = 0;
    atomic_init(&j->state, 0);
    /* a small stack: the thread only calls fsync, and a default 8 MiB
     * mapping a checkpoint is system time for nothing */
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        pthread_attr_setstacksize(&attr, JOB_STACK);
        /* the thread starts with every signal blocked, so SIGINT, SIGTERM
         * and the scheduler's CPU tick (SIGVTALRM, whose handler arms a
         * hook on the running coroutine) reach the thread running Lua */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = pthread_create(&j->thread, &attr, job_main, j);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        free(j);
        return NULL;
    }
    return j;
}

int orch_fsync_poll(struct orch_fsync_job *j, int wait)
{
    if (!wait && atomic_load_explicit(&j->state, memory_order_acquire) == 0)
        return 0;
    pthread_join(j->thread, NULL);
    int ok = atomic_load_explicit(&j->state, memory_order_acquire) > 0;
    int err = j->err;
    free(j);
    if (!ok) {
        errno = err;
        return -1;
    }
    return 1;
}
