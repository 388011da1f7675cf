/* test_sink.c — unit tests of sink.c: buffered offsets, truncation on
 * reopen at a recorded offset, large writes, and open errors. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
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
    struct orch_sink *k = orch_sink_open(path, ORCH_SINK_FRESH, err, sizeof err);
    CHECK(k != NULL);
    CHECK(orch_sink_write(k, "one\n", 4) == 0);
    CHECK(orch_sink_offset(k) == 4);
    CHECK(orch_sink_flush(k, 1) == 0);
    CHECK(orch_sink_write(k, "two\n", 4) == 0);
    CHECK(orch_sink_offset(k) == 8);
    CHECK(orch_sink_close(k) == 0);

    /* a crash left bytes past the checkpoint: reopening at 4 drops them */
    k = orch_sink_open(path, 4, err, sizeof err);
    CHECK(k != NULL);
    CHECK(orch_sink_offset(k) == 4);
    CHECK(orch_sink_write(k, "TWO\n", 4) == 0);
    CHECK(orch_sink_close(k) == 0);
    size_t len;
    char *got = slurp(path, &len);
    CHECK_STR(got, "one\nTWO\n");
    free(got);

    /* a write larger than the buffer goes straight through, in order */
    k = orch_sink_open(path, ORCH_SINK_FRESH, err, sizeof err);
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

    /* a file shorter than the recorded offset is refused, not padded */
    k = orch_sink_open(path, 1u << 30, err, sizeof err);
    CHECK(k == NULL);
    CHECK(strstr(err, "shorter than") != NULL);

    /* a directory is not an output file */
    k = orch_sink_open(dir, ORCH_SINK_FRESH, err, sizeof err);
    CHECK(k == NULL);
    CHECK(strstr(err, dir) != NULL);

    /* an unwritable location names the path and the reason */
    if (geteuid() != 0) {
        k = orch_sink_open("/proc/orch-test/x.jsonl", ORCH_SINK_FRESH, err, sizeof err);
        CHECK(k == NULL);
    }
    k = orch_sink_open("/proc/version/x.jsonl", ORCH_SINK_FRESH, err, sizeof err);
    CHECK(k == NULL);
    CHECK(strstr(err, "/proc/version/x.jsonl: ") == err);
    return check_report();
}
