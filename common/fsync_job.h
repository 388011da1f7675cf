/* fsync_job.h — fsync(2) of a descriptor on a worker thread, so the
 * caller goes on while the disk catches up (the output sink's checkpoint
 * fsync, bench/changes.md). A job is started, polled, and freed by the
 * poll that sees it ended. One thread, started on the first job, serves
 * every job of the process in the order they were started.
 *
 * In common/ because core/sched.h would stand in for the system's
 * <sched.h> that <pthread.h> includes. Pure C, libc and pthreads only. */
#ifndef ORCH_FSYNC_JOB_H
#define ORCH_FSYNC_JOB_H

struct orch_fsync_job;

/* Queues fsync(fd) for the worker; fd must stay open until the job has
 * been polled ended. Returns the job, or NULL when memory or the thread
 * could not be had (the caller then fsyncs itself). */
struct orch_fsync_job *orch_fsync_start(int fd);

/* Whether job has ended: 0 still queued or going (only without wait);
 * otherwise job is freed, and the result is 1 when the fsync succeeded,
 * -1 (errno set to its error) when it failed. With wait, blocks until it
 * ends. */
int orch_fsync_poll(struct orch_fsync_job *job, int wait);

#endif
