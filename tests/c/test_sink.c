/* test_sink.c — unit tests of sink.c: buffered offsets, truncation on
 * reopen at a recorded offset, large writes, and open errors; and of the
 * fsync worker (fsync_job.c) under it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "check.h"
#include "fsync_job.h"
#include "sink.h"

int main(int argc, char **argv)
{
    char dir[512];
    if (argc > 1) {
        mkdir(argv[1], 0777);
        snprintf(dir, sizeof dir, "%s/sink.XXXXXX", argv[1]);
    } else {
        snprintf(dir, sizeof dir, "/tmp/sink.XXXXXX");
    }
    CHECK(mkdtemp(dir) != NULL);
    char path[600], err[512];
    snprintf(path, sizeof path, "%s/out/nested/rows.jsonl", dir);

    /* parents are created; offsets count buffered bytes */
    struct orch_sink *k = orch_sink_open(path, ORCH_SINK_FRESH, NULL, err, sizeof err, NULL);
    CHECK(k != NULL);
    CHECK(orch_sink_write(k, "one\n", 4) == 0);
    CHECK(orch_sink_offset(k) == 4);
    CHECK(orch_sink_flush(k, 1) == 0);
    CHECK(orch_sink_write(k, "two\n", 4) == 0);
    CHECK(orch_sink_offset(k) == 8);
    CHECK(orch_sink_close(k) == 0);

    /* a background fsync: the offset it makes durable is the bytes
     * written when it began; writes go on while it runs; polling after
     * it ended (or when none began) says done; closing waits for it */
    k = orch_sink_open(path, ORCH_SINK_FRESH, NULL, err, sizeof err, NULL);
    CHECK(k != NULL);
    CHECK(orch_sink_sync_poll(k, 0) == 1);
    CHECK(orch_sink_write(k, "one\n", 4) == 0);
    CHECK(orch_sink_sync_begin(k) == 4);
    CHECK(orch_sink_write(k, "two\n", 4) == 0);
    CHECK(orch_sink_sync_poll(k, 1) == 1);
    CHECK(orch_sink_sync_poll(k, 0) == 1);
    CHECK(orch_sink_sync_begin(k) == 8);
    CHECK(orch_sink_sync_begin(k) == 8); /* waits for the one going */
    CHECK(orch_sink_write(k, "six\n", 4) == 0);
    CHECK(orch_sink_close(k) == 0);
    {
        size_t n;
        char *all = slurp(path, &n);
        CHECK_STR(all, "one\ntwo\nsix\n");
        free(all);
    }

    /* the fsync worker: jobs of several descriptors, queued at once,
     * each ended with its own result (a bad descriptor's error); polled
     * in any order, without a wait until the worker has reached them */
    {
        int fd = open(path, O_RDONLY);
        CHECK(fd >= 0);
        struct orch_fsync_job *jobs[64];
        for (int i = 0; i < 64; i++)
            jobs[i] = orch_fsync_start(i == 7 ? -1 : fd);
        for (int i = 0; i < 64; i++)
            CHECK(jobs[i] != NULL);
        int rc;
        while ((rc = orch_fsync_poll(jobs[63], 0)) == 0)
            usleep(1000);
        CHECK(rc == 1);
        errno = 0;
        CHECK(orch_fsync_poll(jobs[7], 1) == -1);
        CHECK(errno == EBADF);
        for (int i = 62; i >= 0; i--)
            if (i != 7)
                CHECK(orch_fsync_poll(jobs[i], i % 2) == 1); /* ended before 63: no wait needed */
        struct orch_fsync_job *j = orch_fsync_start(fd);     /* the worker waits for the next */
        CHECK(j != NULL);
        CHECK(orch_fsync_poll(j, 1) == 1);
        close(fd);
    }

    /* a crash left bytes past the checkpoint: reopening at 4 drops them */
    k = orch_sink_open(path, ORCH_SINK_FRESH, NULL, err, sizeof err, NULL);
    CHECK(k != NULL);
    CHECK(orch_sink_write(k, "one\ntwo\n", 8) == 0);
    CHECK(orch_sink_close(k) == 0);
    k = orch_sink_open(path, 4, NULL, err, sizeof err, NULL);
    CHECK(k != NULL);
    CHECK(orch_sink_offset(k) == 4);
    CHECK(orch_sink_write(k, "TWO\n", 4) == 0);
    CHECK(orch_sink_close(k) == 0);
    size_t len;
    char *got = slurp(path, &len);
    CHECK_STR(got, "one\nTWO\n");
    free(got);

    /* a write larger than the buffer goes straight through, in order */
    k = orch_sink_open(path, ORCH_SINK_FRESH, NULL, err, sizeof err, NULL);
    CHECK(k != NULL);
    size_t big = 200 * 1024;
    char *blob = malloc(big);
    memset(blob, 'x', big);
    CHECK(orch_sink_write(k, "head", 4) == 0);
    CHECK(orch_sink_write(k, blob, big) == 0);
    CHECK(orch_sink_offset(k) == 4 + big);
    CHECK(orch_sink_close(k) == 0);
    got = slurp(path, &len);
    CHECK(len == 4 + big);
    CHECK(got != NULL && memcmp(got, "head", 4) == 0 && got[4 + big - 1] == 'x');
    free(got);
    free(blob);

    /* the hash covers every byte written, buffered ones included, and a
     * reopen at an offset checks the prefix against it */
    k = orch_sink_open(path, ORCH_SINK_FRESH, NULL, err, sizeof err, NULL);
    CHECK(k != NULL);
    CHECK(orch_sink_write(k, "alpha\n", 6) == 0);
    uint64_t h6 = orch_sink_hash(k);
    CHECK(orch_sink_write(k, "beta\n", 5) == 0);
    CHECK(orch_sink_hash(k) != h6);
    /* a second writer of the same file is refused while the first holds it */
    enum orch_sink_why why = 0;
    struct orch_sink *k2 = orch_sink_open(path, ORCH_SINK_FRESH, NULL, err, sizeof err, &why);
    CHECK(k2 == NULL);
    CHECK(why == ORCH_SINK_BUSY);
    CHECK(strstr(err, "another orch process is writing this file") != NULL);
    CHECK(orch_sink_close(k) == 0);
    k = orch_sink_open(path, 6, &h6, err, sizeof err, NULL);
    CHECK(k != NULL);
    CHECK(orch_sink_hash(k) == h6); /* goes on from the verified prefix */
    CHECK(orch_sink_close(k) == 0);
    /* someone rewrote the committed prefix: refused, the file is untouched */
    FILE *fh = fopen(path, "w");
    CHECK(fh != NULL);
    fputs("ALPHA\nmore\n", fh);
    fclose(fh);
    why = 0;
    k = orch_sink_open(path, 6, &h6, err, sizeof err, &why);
    CHECK(k == NULL);
    CHECK(why == ORCH_SINK_CHANGED);
    CHECK(strstr(err, "its first 6 bytes are not the ones the last checkpoint recorded") != NULL);
    got = slurp(path, &len);
    CHECK_STR(got, "ALPHA\nmore\n");
    free(got);

    /* a file shorter than the recorded offset is refused, not padded */
    k = orch_sink_open(path, 1u << 30, NULL, err, sizeof err, NULL);
    CHECK(k == NULL);
    CHECK(strstr(err, "shorter than") != NULL);

    /* the hash is XXH3 of the bytes written, however they were buffered:
     * lines past a buffer's flush, a hash asked mid-buffer, a write larger
     * than the buffer */
    k = orch_sink_open(path, ORCH_SINK_FRESH, NULL, err, sizeof err, NULL);
    CHECK(k != NULL);
    size_t total = 200000 + 100000;
    char *all = malloc(total);
    CHECK(all != NULL);
    for (size_t i = 0; i < total; i++)
        all[i] = (char)('a' + i % 23);
    for (size_t off = 0; off < 200000; off += 100) {
        CHECK(orch_sink_write(k, all + off, 100) == 0);
        if (off == 70000)
            CHECK(orch_sink_hash(k) == XXH3_64bits(all, off + 100));
    }
    CHECK(orch_sink_write(k, all + 200000, 100000) == 0);
    CHECK(orch_sink_hash(k) == XXH3_64bits(all, total));
    CHECK(orch_sink_flush(k, 0) == 0);
    CHECK(orch_sink_hash(k) == XXH3_64bits(all, total));
    CHECK(orch_sink_close(k) == 0);
    free(all);

    /* a directory is not an output file */
    k = orch_sink_open(dir, ORCH_SINK_FRESH, NULL, err, sizeof err, NULL);
    CHECK(k == NULL);
    CHECK(strstr(err, dir) != NULL);

    /* an unwritable location names the path and the reason */
    if (geteuid() != 0) {
        k = orch_sink_open("/proc/orch-test/x.jsonl", ORCH_SINK_FRESH, NULL, err, sizeof err, NULL);
        CHECK(k == NULL);
    }
    k = orch_sink_open("/proc/version/x.jsonl", ORCH_SINK_FRESH, NULL, err, sizeof err, NULL);
    CHECK(k == NULL);
    CHECK(strstr(err, "/proc/version/x.jsonl: ") == err);
    return check_report();
}
