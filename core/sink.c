/* sink.c — buffered output file with a durable offset. See sink.h. */
#include "sink.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "fsutil.h"
#include "fsync_job.h"

#define SINK_BUF (64 * 1024)

struct orch_sink {
    int fd;
    XXH3_state_t *hash; /* of every byte written but buf[hashed..used) */
    uint64_t written;   /* bytes handed to the kernel */
    size_t used;
    size_t hashed; /* bytes of buf already in hash: a buffer is hashed whole
                    * when flushed (or asked for the hash), not line by line */
    char err[512];
    char *path;
    struct orch_fsync_job *sync; /* the fsync orch_sink_sync_begin started, until polled done */
    char buf[SINK_BUF];
};

static struct orch_sink *open_fail(int fd, XXH3_state_t *h, enum orch_sink_why *why, enum orch_sink_why w)
{
    if (fd >= 0)
        close(fd); /* drops the lock too */
    XXH3_freeState(h);
    if (why != NULL)
        *why = w;
    return NULL;
}

/* Feeds the file's first len bytes to h. Returns 0, or -1 with errno. */
static int hash_prefix(int fd, uint64_t len, XXH3_state_t *h)
{
    char buf[64 * 1024];
    uint64_t at = 0;
    while (at < len) {
        size_t want = len - at < sizeof buf ? (size_t)(len - at) : sizeof buf;
        ssize_t n = pread(fd, buf, want, (off_t)at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO; /* shorter than fstat said: changed under us */
            return -1;
        }
        XXH3_64bits_update(h, buf, (size_t)n);
        at += (uint64_t)n;
    }
    return 0;
}

struct orch_sink *orch_sink_open(const char *path, uint64_t offset, const uint64_t *prefix, char *err,
                                 size_t errlen, enum orch_sink_why *why)
{
    orch_mkdir_parents(path);
    XXH3_state_t *h = XXH3_createState();
    if (h == NULL || XXH3_64bits_reset(h) != XXH_OK) {
        snprintf(err, errlen, "%s: out of memory", path);
        return open_fail(-1, h, why, ORCH_SINK_ERROR);
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return open_fail(-1, h, why, ORCH_SINK_ERROR);
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        return open_fail(fd, h, why, ORCH_SINK_ERROR);
    }
    /* before anything is truncated: one writer per file */
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            snprintf(err, errlen, "%s: another orch process is writing this file", path);
            return open_fail(fd, h, why, ORCH_SINK_BUSY);
        }
        snprintf(err, errlen, "%s: cannot lock: %s", path, strerror(errno));
        return open_fail(fd, h, why, ORCH_SINK_ERROR);
    }
    if (offset == ORCH_SINK_FRESH)
        offset = 0;
    else if ((uint64_t)st.st_size < offset) {
        snprintf(err, errlen,
                 "%s: is %lld bytes, shorter than the %llu bytes recorded at the last checkpoint", path,
                 (long long)st.st_size, (unsigned long long)offset);
        return open_fail(fd, h, why, ORCH_SINK_CHANGED);
    } else if (offset > 0) {
        if (hash_prefix(fd, offset, h) != 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return open_fail(fd, h, why, ORCH_SINK_ERROR);
        }
        if (prefix != NULL && XXH3_64bits_digest(h) != *prefix) {
            snprintf(err, errlen, "%s: its first %llu bytes are not the ones the last checkpoint recorded",
                     path, (unsigned long long)offset);
            return open_fail(fd, h, why, ORCH_SINK_CHANGED);
        }
    }
    if (ftruncate(fd, (off_t)offset) != 0 || lseek(fd, (off_t)offset, SEEK_SET) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return open_fail(fd, h, why, ORCH_SINK_ERROR);
    }
    struct orch_sink *k = malloc(sizeof *k);
    char *p = strdup(path);
    if (k == NULL || p == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        free(k);
        free(p);
        return open_fail(fd, h, why, ORCH_SINK_ERROR);
    }
    k->fd = fd;
    k->hash = h;
    k->written = offset;
    k->used = 0;
    k->hashed = 0;
    k->err[0] = '\0';
    k->path = p;
    k->sync = NULL;
    return k;
}

static int sink_fail(struct orch_sink *k)
{
    snprintf(k->err, sizeof k->err, "%s: %s", k->path, strerror(errno));
    return -1;
}

static int write_all(struct orch_sink *k, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(k->fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return sink_fail(k);
        }
        p += n;
        len -= (size_t)n;
        k->written += (uint64_t)n;
    }
    return 0;
}

/* Adds the buffer's bytes not hashed yet to the hash. */
static void hash_buffer(struct orch_sink *k)
{
    XXH3_64bits_update(k->hash, k->buf + k->hashed, k->used - k->hashed);
    k->hashed = k->used;
}

int orch_sink_write(struct orch_sink *k, const void *data, size_t len)
{
    if (k->used + len > SINK_BUF) {
        if (orch_sink_flush(k, 0) != 0)
            return -1;
        if (len > SINK_BUF) {
            XXH3_64bits_update(k->hash, data, len);
            return write_all(k, data, len);
        }
    }
    memcpy(k->buf + k->used, data, len);
    k->used += len;
    return 0;
}

int orch_sink_flush(struct orch_sink *k, int sync)
{
    if (k->used > 0) {
        size_t used = k->used;
        hash_buffer(k);
        k->used = 0;
        k->hashed = 0;
        if (write_all(k, k->buf, used) != 0)
            return -1;
    }
    if (sync && fsync(k->fd) != 0)
        return sink_fail(k);
    return 0;
}

int orch_sink_sync_poll(struct orch_sink *k, int wait)
{
    if (k->sync == NULL)
        return 1;
    int rc = orch_fsync_poll(k->sync, wait);
    if (rc == 0)
        return 0;
    k->sync = NULL;
    return rc < 0 ? sink_fail(k) : 1;
}

int64_t orch_sink_sync_begin(struct orch_sink *k)
{
    if (orch_sink_sync_poll(k, 1) < 0 || orch_sink_flush(k, 0) != 0)
        return -1;
    k->sync = orch_fsync_start(k->fd);
    if (k->sync == NULL && orch_sink_flush(k, 1) != 0) /* no thread to spare: the fsync is done here */
        return -1;
    return (int64_t)k->written;
}

uint64_t orch_sink_hash(struct orch_sink *k)
{
    hash_buffer(k);
    return XXH3_64bits_digest(k->hash);
}

uint64_t orch_sink_offset(const struct orch_sink *k)
{
    return k->written + k->used;
}

const char *orch_sink_error(const struct orch_sink *k)
{
    return k->err;
}

const char *orch_sink_path(const struct orch_sink *k)
{
    return k->path;
}

int orch_sink_close(struct orch_sink *k)
{
    int rc = orch_sink_sync_poll(k, 1) < 0 ? -1 : 0;
    if (orch_sink_flush(k, 0) != 0)
        rc = -1;
    if (close(k->fd) != 0 && rc == 0)
        rc = -1;
    XXH3_freeState(k->hash);
    free(k->path);
    free(k);
    return rc;
}
