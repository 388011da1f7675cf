/* sink.c — buffered output file with a durable offset. See sink.h. */
#include "sink.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"

#define SINK_BUF (64 * 1024)

struct orch_sink {
    int fd;
    uint64_t written; /* bytes handed to the kernel */
    size_t used;
    char err[512];
    char *path;
    char buf[SINK_BUF];
};

struct orch_sink *orch_sink_open(const char *path, uint64_t offset, char *err, size_t errlen)
{
    orch_mkdir_parents(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (offset == ORCH_SINK_FRESH)
        offset = 0;
    else if ((uint64_t)st.st_size < offset) {
        snprintf(err, errlen, "%s: is %lld bytes, shorter than the %llu bytes recorded at the last checkpoint",
                 path, (long long)st.st_size, (unsigned long long)offset);
        close(fd);
        return NULL;
    }
    if (ftruncate(fd, (off_t)offset) != 0 || lseek(fd, (off_t)offset, SEEK_SET) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    struct orch_sink *k = malloc(sizeof *k);
    char *p = strdup(path);
    if (k == NULL || p == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        free(k);
        free(p);
        close(fd);
        return NULL;
    }
    k->fd = fd;
    k->written = offset;
    k->used = 0;
    k->err[0] = '\0';
    k->path = p;
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

int orch_sink_write(struct orch_sink *k, const void *data, size_t len)
{
    if (k->used + len > SINK_BUF) {
        if (orch_sink_flush(k, 0) != 0)
            return -1;
        if (len > SINK_BUF)
            return write_all(k, data, len);
    }
    memcpy(k->buf + k->used, data, len);
    k->used += len;
    return 0;
}

int orch_sink_flush(struct orch_sink *k, int sync)
{
    if (k->used > 0) {
        size_t used = k->used;
        k->used = 0;
        if (write_all(k, k->buf, used) != 0)
            return -1;
    }
    if (sync && fsync(k->fd) != 0)
        return sink_fail(k);
    return 0;
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
    int rc = orch_sink_flush(k, 0);
    if (close(k->fd) != 0 && rc == 0)
        rc = -1;
    free(k->path);
    free(k);
    return rc;
}
