/* fsync_job.h — fsync(2) of a descriptor on a thread of its own, so the
 * caller goes on while the disk catches up (the output sink's checkpoint
 * fsync, bench/changes.md). A job is started, polled, and joined by the
 * poll that sees it ended, which frees it.
 *
 * In common/ because core/sched.h would stand in for the system's
 * <sched.h> that <pthread.h> includes. Pure C, libc and pthreads only. */
#ifndef ORCH_FSYNC_JOB_H
#define ORCH_FSYNC_JOB_H

struct orch_fsync_job;

/* Starts fsync(fd) on a new thread; fd must stay open until the job is
 * joined. Returns the job, or NULL when no thread could be started (the
 * caller then fsyncs itself). */
struct orch_fsync_job *orch_fsync_start(int fd);

/* Whether job has ended: 0 still going (only without wait); otherwise
 * the thread is joined, job freed, and the result is 1 when the fsync
 * succeeded, -1 (errno set to its error) when it failed. With wait,
 * blocks until it ends. */
int orch_fsync_poll(struct orch_fsync_job *job, int wait);

#endif
