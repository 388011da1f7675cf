/* slow_fsync.c — an LD_PRELOAD library for tests/e2e/checkpoint_fsync.sh,
 * a disk slower than the run: fsync(2) of a file whose path ends in
 * $SLOW_FSYNC_SUFFIX takes $SLOW_FSYNC_MS milliseconds more, and once it
 * returns appends "sync SIZE" to $SLOW_FSYNC_LOG, SIZE being the file's
 * size when the fsync began (what it made durable). With
 * $SLOW_FSYNC_FAIL_AFTER = N, the slowed fsyncs after the first N fail
 * with EIO and log "fail SIZE". Other descriptors' fsyncs go straight
 * through. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int slowed(int fd)
{
    const char *suffix = getenv("SLOW_FSYNC_SUFFIX");
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (suffix == NULL || n < 0)
        return 0;
    path[n] = '\0';
    size_t sl = strlen(suffix);
    return (size_t)n >= sl && strcmp(path + n - sl, suffix) == 0;
}

int fsync(int fd)
{
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (!slowed(fd))
        return real(fd);
    struct stat st;
    long long size = fstat(fd, &st) == 0 ? (long long)st.st_size : -1;
    const char *ms = getenv("SLOW_FSYNC_MS");
    long wait_ms = ms != NULL ? atol(ms) : 100;
    struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    static int calls; /* the slowed ones so far */
    const char *after = getenv("SLOW_FSYNC_FAIL_AFTER");
    int fail = after != NULL && __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST) > atoi(after);
    int rc = fail ? -1 : real(fd);
    const char *log = getenv("SLOW_FSYNC_LOG");
    if (log != NULL) {
        char line[64];
        int len = snprintf(line, sizeof line, "%s %lld\n", fail ? "fail" : "sync", size);
        int lfd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
        if (lfd >= 0) {
            if (write(lfd, line, (size_t)len) != len) {
                /* the test sees the line missing */
            }
            close(lfd);
        }
    }
    if (fail)
        errno = EIO;
    return rc;
}
