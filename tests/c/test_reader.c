/* test_reader.c — unit tests for core/reader.c: CSV and line records, offsets and seek,
 * error messages and recovery, long records, a 200,000-row file.
 * Usage: test_reader [tmpdir] (default: a fresh mkdtemp directory in /tmp, removed at
 * the end). Prints one line per group and "N passed, M failed"; exits nonzero on failure.
 * Depends on: core/reader.h, check.h, libc. */
#include "check.h"
#include "reader.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_FILES 64
#define MAX_SNAPS 64

static char tmpdir[1024]; /* short enough for tmpdir/name to fit PATH_MAX */
static char files[MAX_FILES][PATH_MAX];
static int nfiles;

/* Writes data to tmpdir/name; returns the path (static storage, removed at exit). */
static const char *write_file(const char *name, const char *data, size_t len)
{
    char *path = files[nfiles];
    FILE *f;

    if (nfiles == MAX_FILES) {
        fprintf(stderr, "too many test files\n");
        exit(2);
    }
    snprintf(path, PATH_MAX, "%s/%s", tmpdir, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
    nfiles++;
    return path;
}

static const char *write_str(const char *name, const char *data)
{
    return write_file(name, data, strlen(data));
}

/* One orch_reader_next result, fields joined with '|'. */
struct snap {
    int rc;
    char text[256];
    char err[256];
    size_t nfields;
    uint64_t line;
    uint64_t offset;
    uint64_t end;
    uint64_t index;
    uint64_t end_line;
};

static void take(struct orch_reader *r, struct snap *s)
{
    struct orch_record rec;
    size_t n = 0;

    memset(s, 0, sizeof *s);
    s->rc = orch_reader_next(r, &rec);
    for (size_t i = 0; i < rec.nfields; i++) {
        CHECK(rec.fields[i].ptr[rec.fields[i].len] == '\0'); /* each field is NUL-terminated */
        n += (size_t)snprintf(s->text + n, sizeof s->text - n, "%s%.*s", i > 0 ? "|" : "",
                              (int)rec.fields[i].len, rec.fields[i].ptr);
        if (n >= sizeof s->text) {
            n = sizeof s->text - 1;
        }
    }
    if (s->rc < 0) {
        snprintf(s->err, sizeof s->err, "%s", orch_reader_error(r));
    }
    s->nfields = rec.nfields;
    s->line = rec.line;
    s->offset = rec.offset;
    s->end = rec.end;
    s->index = rec.index;
    s->end_line = rec.end_line;
}

/* Reads every result up to and including the first 0; returns how many. */
static size_t take_all(struct orch_reader *r, struct snap *out)
{
    size_t n = 0;

    do {
        take(r, &out[n]);
        n++;
    } while (out[n - 1].rc != 0 && n < MAX_SNAPS);
    return n;
}

static int same(const struct snap *a, const struct snap *b)
{
    return a->rc == b->rc && strcmp(a->text, b->text) == 0 && strcmp(a->err, b->err) == 0 &&
           a->line == b->line && a->offset == b->offset && a->end == b->end && a->index == b->index &&
           a->end_line == b->end_line;
}

/* Reads path fully, then for each record seeks to its offset and to its end and checks
 * that the same record (resp. the following one) comes back. */
static void check_roundtrip(const char *path, enum orch_reader_kind kind)
{
    char err[256];
    struct orch_reader *r = orch_reader_open(path, kind, 1, err, sizeof err);
    struct snap all[MAX_SNAPS];
    struct snap s;
    size_t n;

    CHECK(r != NULL);
    if (r == NULL) {
        return;
    }
    n = take_all(r, all);
    for (size_t i = 0; i + 1 < n; i++) {
        CHECK(orch_reader_seek(r, all[i].offset, all[i].index, all[i].line) == 0);
        take(r, &s);
        CHECK(same(&s, &all[i]));
        CHECK(orch_reader_seek(r, all[i].end, all[i].index + 1, all[i].end_line) == 0);
        take(r, &s);
        CHECK(same(&s, &all[i + 1]));
    }
    orch_reader_close(r);
}

/* The record's bytes in the file are exactly want. */
static void check_bytes(const char *path, const struct snap *s, const char *want)
{
    char buf[256];
    FILE *f = fopen(path, "rb");
    size_t n = (size_t)(s->end - s->offset);

    CHECK(f != NULL && n < sizeof buf);
    if (f == NULL || n >= sizeof buf) {
        return;
    }
    fseek(f, (long)s->offset, SEEK_SET);
    buf[fread(buf, 1, n, f)] = '\0';
    fclose(f);
    CHECK_STR(buf, want);
}

static struct orch_reader *open_ok(const char *path, enum orch_reader_kind kind)
{
    char err[256] = "";
    struct orch_reader *r = orch_reader_open(path, kind, 1, err, sizeof err);

    if (r == NULL) {
        fprintf(stderr, "open %s: %s\n", path, err);
        exit(1);
    }
    return r;
}

static void test_csv_basics(void)
{
    const char *data = "id,name,note\n"
                       "1,alice,plain\n"
                       "2,\"bob, jr\",\"say \"\"hi\"\"\"\n"
                       "\n"
                       "3,carol,\"two\nlines\"\n"
                       "4, spaced ,\"\"\n"
                       "5,,last";
    const char *path = write_str("basics.csv", data);
    struct orch_reader *r = open_ok(path, ORCH_READER_CSV);
    const struct orch_field *hdr;
    struct snap s[MAX_SNAPS];
    size_t n;

    CHECK(orch_reader_header(r, &hdr) == 3);
    CHECK_STR(hdr[0].ptr, "id");
    CHECK_STR(hdr[2].ptr, "note");
    CHECK(orch_reader_size(r) == strlen(data));
    n = take_all(r, s);
    CHECK(n == 6);
    CHECK_STR(s[0].text, "1|alice|plain");
    CHECK_STR(s[1].text, "2|bob, jr|say \"hi\"");
    CHECK_STR(s[2].text, "3|carol|two\nlines");
    CHECK_STR(s[3].text, "4| spaced |");
    CHECK_STR(s[4].text, "5||last");
    CHECK(s[5].rc == 0);
    for (size_t i = 0; i < 5; i++) {
        CHECK(s[i].rc == 1 && s[i].nfields == 3 && s[i].index == i);
    }
    CHECK(s[0].line == 2 && s[1].line == 3 && s[2].line == 5 && s[3].line == 7);
    CHECK(s[4].line == 8);
    CHECK(s[0].offset == 13);
    CHECK(s[0].end == s[1].offset);
    CHECK(s[1].end + 1 == s[2].offset); /* the blank line */
    CHECK(s[2].end == s[3].offset && s[3].end == s[4].offset);
    CHECK(s[4].end == strlen(data));
    check_bytes(path, &s[0], "1,alice,plain\n");
    check_bytes(path, &s[2], "3,carol,\"two\nlines\"\n");
    check_bytes(path, &s[4], "5,,last");
    take(r, &s[0]);
    CHECK(s[0].rc == 0); /* stays at end */
    orch_reader_close(r);
    check_roundtrip(path, ORCH_READER_CSV);
}

static void test_csv_crlf_bom(void)
{
    const char *data = "\xEF\xBB\xBFid,name\r\n"
                       "1,a\r\n"
                       "\r\n"
                       "2,\"x\r\ny\"\r\n"
                       "3,\"q\"\r\n"
                       "4,b";
    const char *path = write_str("crlf.csv", data);
    struct orch_reader *r = open_ok(path, ORCH_READER_CSV);
    const struct orch_field *hdr;
    struct snap s[MAX_SNAPS];
    size_t n;

    CHECK(orch_reader_header(r, &hdr) == 2);
    CHECK_STR(hdr[0].ptr, "id");
    CHECK(hdr[0].len == 2);
    CHECK_STR(hdr[1].ptr, "name");
    n = take_all(r, s);
    CHECK(n == 5);
    CHECK_STR(s[0].text, "1|a");
    CHECK_STR(s[1].text, "2|x\r\ny");
    CHECK_STR(s[2].text, "3|q");
    CHECK_STR(s[3].text, "4|b");
    CHECK(s[0].offset == 12 && s[0].line == 2);
    CHECK(s[1].line == 4 && s[2].line == 6 && s[3].line == 7);
    CHECK(s[1].index == 1 && s[3].index == 3);
    CHECK(s[3].end == strlen(data));
    check_bytes(path, &s[1], "2,\"x\r\ny\"\r\n");
    orch_reader_close(r);
    check_roundtrip(path, ORCH_READER_CSV);
}

static void test_csv_field_count(void)
{
    const char *path = write_str("count.csv", "id,name\n1,a\n2\n3,c,x\n4,d\n");
    struct orch_reader *r = open_ok(path, ORCH_READER_CSV);
    struct snap s[MAX_SNAPS];
    char want[PATH_MAX + 64];
    size_t n = take_all(r, s);

    CHECK(n == 5);
    CHECK(s[0].rc == 1 && s[0].index == 0);
    snprintf(want, sizeof want, "%s:3: expected 2 fields, found 1", path);
    CHECK(s[1].rc == -1 && s[1].index == 1 && s[1].line == 3);
    CHECK_STR(s[1].err, want);
    CHECK_STR(s[1].text, "2"); /* the fields come with a count mismatch */
    snprintf(want, sizeof want, "%s:4: expected 2 fields, found 3", path);
    CHECK(s[2].rc == -1 && s[2].index == 2);
    CHECK_STR(s[2].err, want);
    CHECK(s[3].rc == 1 && s[3].index == 3 && s[3].line == 5);
    CHECK_STR(s[3].text, "4|d");
    CHECK(s[1].end == s[2].offset && s[2].end == s[3].offset);
    CHECK(s[4].rc == 0);
    orch_reader_close(r);
    check_roundtrip(path, ORCH_READER_CSV);
}

static void test_csv_malformed(void)
{
    const char *path = write_str("bad.csv", "id,name,x\n"
                                            "1,\"b\"c,d\n"
                                            "2,e\"f,g\n"
                                            "3,h,i\n"
                                            "\"4\" ,j,k\n"
                                            "5,\"ab\ncd\"x,e\n"
                                            "6,l,m\n");
    struct orch_reader *r = open_ok(path, ORCH_READER_CSV);
    struct snap s[MAX_SNAPS];
    char want[PATH_MAX + 128];
    size_t n = take_all(r, s);
    const char *why = "malformed CSV (error parsing data while strict checking enabled)";

    CHECK(n == 7);
    snprintf(want, sizeof want, "%s:2: %s", path, why);
    CHECK(s[0].rc == -1 && s[0].index == 0 && s[0].nfields == 0);
    CHECK_STR(s[0].err, want);
    snprintf(want, sizeof want, "%s:3: %s", path, why);
    CHECK(s[1].rc == -1 && s[1].index == 1);
    CHECK_STR(s[1].err, want);
    CHECK(s[2].rc == 1 && s[2].index == 2 && s[2].line == 4);
    CHECK_STR(s[2].text, "3|h|i");
    snprintf(want, sizeof want, "%s:5: %s", path, why);
    CHECK(s[3].rc == -1 && s[3].index == 3);
    CHECK_STR(s[3].err, want);
    snprintf(want, sizeof want, "%s:6: %s", path, why); /* named at its first line */
    CHECK(s[4].rc == -1 && s[4].index == 4 && s[4].line == 6);
    CHECK_STR(s[4].err, want);
    CHECK(s[5].rc == 1 && s[5].index == 5 && s[5].line == 8);
    CHECK_STR(s[5].text, "6|l|m");
    CHECK(s[4].end == s[5].offset && s[4].end_line == 8);
    CHECK(s[6].rc == 0);
    orch_reader_close(r);
    check_roundtrip(path, ORCH_READER_CSV);
}

static void test_csv_unterminated(void)
{
    const char *data = "id,name\n1,a\n2,\"open\nmore\n";
    const char *path = write_str("open.csv", data);
    struct orch_reader *r = open_ok(path, ORCH_READER_CSV);
    struct snap s[MAX_SNAPS];
    char want[PATH_MAX + 128];
    size_t n = take_all(r, s);

    CHECK(n == 3);
    CHECK(s[0].rc == 1);
    snprintf(want, sizeof want, "%s:3: malformed CSV (error parsing data while strict checking enabled)",
             path);
    CHECK(s[1].rc == -1 && s[1].index == 1 && s[1].line == 3 && s[1].end == strlen(data));
    CHECK_STR(s[1].err, want);
    CHECK(s[2].rc == 0);
    take(r, &s[0]);
    CHECK(s[0].rc == 0);
    orch_reader_close(r);

    path = write_str("open2.csv", "id,name\n1,\"x");
    r = open_ok(path, ORCH_READER_CSV);
    n = take_all(r, s);
    CHECK(n == 2 && s[0].rc == -1 && s[0].line == 2 && s[1].rc == 0);
    orch_reader_close(r);
}

static void check_open_error(const char *path, enum orch_reader_kind kind, const char *suffix)
{
    char err[PATH_MAX + 128];
    char want[PATH_MAX + 128];
    struct orch_reader *r = orch_reader_open(path, kind, 1, err, sizeof err);

    snprintf(want, sizeof want, "%s%s", path, suffix);
    CHECK(r == NULL);
    CHECK_STR(err, want);
    orch_reader_close(r);
}

static void test_csv_open(void)
{
    char missing[PATH_MAX + 16];
    char tiny[8];
    struct orch_reader *r;
    const struct orch_field *hdr;
    struct orch_record rec;
    const char *path;

    check_open_error(write_str("empty.csv", ""), ORCH_READER_CSV, ": empty file, expected a header row");
    check_open_error(write_str("blank.csv", "\xEF\xBB\xBF\n\r\n\n"), ORCH_READER_CSV,
                     ": empty file, expected a header row");
    snprintf(missing, sizeof missing, "%s/missing.csv", tmpdir);
    check_open_error(missing, ORCH_READER_CSV, ": No such file or directory");
    check_open_error(missing, ORCH_READER_LINES, ": No such file or directory");
    check_open_error(tmpdir, ORCH_READER_LINES, ": Is a directory");
    check_open_error(write_str("dup.csv", "id,name,id\n1,2,3\n"), ORCH_READER_CSV,
                     ":1: duplicate column 'id'");
    check_open_error(write_str("dup3.csv", "\n\nid,\"id\"\n"), ORCH_READER_CSV, ":3: duplicate column 'id'");
    check_open_error(write_str("noname.csv", "a,b,,c\n"), ORCH_READER_CSV,
                     ":1: empty column name (column 3)");
    check_open_error(write_str("badhdr.csv", "a,\"b\n"), ORCH_READER_CSV,
                     ":1: malformed CSV (error parsing data while strict checking enabled)");

    r = orch_reader_open(missing, ORCH_READER_CSV, 1, tiny, sizeof tiny);
    CHECK(r == NULL && strlen(tiny) == sizeof tiny - 1);

    path = write_str("hdronly.csv", "id,name");
    r = open_ok(path, ORCH_READER_CSV);
    CHECK(orch_reader_header(r, &hdr) == 2);
    CHECK_STR(hdr[1].ptr, "name");
    CHECK(orch_reader_next(r, &rec) == 0);
    CHECK(orch_reader_seek(r, 3, 0, 1) == -1);
    CHECK(strstr(orch_reader_error(r), ": Invalid argument") != NULL);
    CHECK(orch_reader_failed(r) == 0);
    orch_reader_close(r);
}

static void test_lines(void)
{
    const char *data = "{\"a\":1}\n\n   \r\n{\"b\":2}\r\n\t\n{\"c\":3}";
    const char *path = write_str("data.jsonl", data);
    struct orch_reader *r = open_ok(path, ORCH_READER_LINES);
    const struct orch_field *hdr;
    struct snap s[MAX_SNAPS];
    size_t n;

    CHECK(orch_reader_header(r, &hdr) == 0);
    n = take_all(r, s);
    CHECK(n == 4);
    CHECK_STR(s[0].text, "{\"a\":1}");
    CHECK_STR(s[1].text, "{\"b\":2}");
    CHECK_STR(s[2].text, "{\"c\":3}");
    CHECK(s[0].nfields == 1 && s[1].nfields == 1 && s[2].nfields == 1);
    CHECK(s[0].line == 1 && s[1].line == 4 && s[2].line == 6);
    CHECK(s[0].index == 0 && s[1].index == 1 && s[2].index == 2);
    CHECK(s[0].offset == 0 && s[0].end == 8);
    CHECK(s[2].end == strlen(data));
    check_bytes(path, &s[1], "{\"b\":2}\r\n");
    CHECK(s[3].rc == 0);
    orch_reader_close(r);
    check_roundtrip(path, ORCH_READER_LINES);

    path = write_str("bom.jsonl", "\xEF\xBB\xBFx\ny\n");
    r = open_ok(path, ORCH_READER_LINES);
    n = take_all(r, s);
    CHECK(n == 3 && s[0].offset == 3 && s[1].offset == 5);
    CHECK_STR(s[0].text, "x");
    CHECK(orch_reader_seek(r, 0, 0, 1) == 0);
    take(r, &s[2]);
    CHECK(same(&s[2], &s[0]));
    orch_reader_close(r);
}

static void test_long_records(void)
{
    size_t big = 200 * 1024;
    char *data = malloc(big + 64);
    char *blob;
    struct orch_reader *r;
    struct orch_record rec;
    const char *path;
    size_t n;
    int ok = 1;

    if (data == NULL) {
        perror("malloc");
        exit(2);
    }
    /* CSV: a 200 KB quoted field with commas, doubled quotes and a newline */
    n = (size_t)sprintf(data, "id,blob\n1,\"");
    for (size_t i = 0; i < big; i++) {
        data[n + i] = (char)('a' + i % 26);
    }
    memcpy(data + n + 1000, ",\"\"\n", 4);
    n += big;
    n += (size_t)sprintf(data + n, "\"\n2,end\n");
    path = write_file("long.csv", data, n);
    r = open_ok(path, ORCH_READER_CSV);
    CHECK(orch_reader_next(r, &rec) == 1);
    CHECK(rec.nfields == 2 && rec.fields[1].len == big - 1 && rec.line == 2);
    if (rec.nfields == 2 && rec.fields[1].len == big - 1) {
        blob = data + 11;
        ok = memcmp(rec.fields[1].ptr, blob, 1001) == 0 &&
             memcmp(rec.fields[1].ptr + 1001, blob + 1002, big - 1002) == 0;
    }
    CHECK(ok);
    CHECK(orch_reader_next(r, &rec) == 1);
    CHECK(rec.line == 4 && rec.index == 1 && rec.end == n);
    CHECK(rec.nfields == 2 && strcmp(rec.fields[1].ptr, "end") == 0);
    orch_reader_close(r);
    check_roundtrip(path, ORCH_READER_CSV);

    /* LINES: a 200 KB line between two short ones */
    memcpy(data, "a\n", 2);
    memset(data + 2, 'x', big);
    memcpy(data + 2 + big, "\r\nb", 3);
    path = write_file("long.jsonl", data, big + 5);
    r = open_ok(path, ORCH_READER_LINES);
    CHECK(orch_reader_next(r, &rec) == 1);
    CHECK(orch_reader_next(r, &rec) == 1);
    CHECK(rec.fields[0].len == big && rec.fields[0].ptr[big] == '\0' && rec.line == 2);
    CHECK(rec.fields[0].ptr[0] == 'x' && rec.fields[0].ptr[big - 1] == 'x');
    CHECK(orch_reader_next(r, &rec) == 1);
    CHECK(rec.fields[0].len == 1 && rec.line == 3 && rec.offset == big + 4);
    CHECK(orch_reader_next(r, &rec) == 0);
    orch_reader_close(r);
    check_roundtrip(path, ORCH_READER_LINES);
    free(data);
}

static void test_many_rows(void)
{
    const uint64_t rows = 200000;
    char path[PATH_MAX];
    char want[64];
    FILE *f;
    struct orch_reader *r;
    struct orch_record rec;
    uint64_t count = 0;
    uint64_t prev_end = 0;
    uint64_t mid_off = 0;
    int bad = 0;
    int rc;
    struct timespec t0;
    struct timespec t1;
    double secs;

    snprintf(path, sizeof path, "%s/many.csv", tmpdir);
    f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        exit(2);
    }
    fputs("id,name,value\n", f);
    for (uint64_t i = 0; i < rows; i++) {
        fprintf(f, "%" PRIu64 ",name_%" PRIu64 ",%" PRIu64 "\n", i, i, i * 7);
    }
    fclose(f);
    snprintf(files[nfiles++], PATH_MAX, "%s", path);

    r = open_ok(path, ORCH_READER_CSV);
    prev_end = 14;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = orch_reader_next(r, &rec);
    while (rc == 1) {
        snprintf(want, sizeof want, "name_%" PRIu64, count);
        if (rec.index != count || rec.line != count + 2 || rec.offset != prev_end || rec.nfields != 3 ||
            strtoull(rec.fields[0].ptr, NULL, 10) != count || strcmp(rec.fields[1].ptr, want) != 0 ||
            strtoull(rec.fields[2].ptr, NULL, 10) != count * 7) {
            bad++;
        }
        if (count == rows / 2) {
            mid_off = rec.offset;
        }
        prev_end = rec.end;
        count++;
        rc = orch_reader_next(r, &rec);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(rc == 0 && count == rows && bad == 0);
    CHECK(prev_end == orch_reader_size(r));
    printf("     (%" PRIu64 " rows in %.3f s, %.0f rows/s)\n", count, secs,
           secs > 0 ? (double)count / secs : 0.0);

    CHECK(orch_reader_seek(r, mid_off, rows / 2, rows / 2 + 2) == 0);
    count = 0;
    rc = orch_reader_next(r, &rec);
    CHECK(rc == 1 && rec.index == rows / 2 && strtoull(rec.fields[0].ptr, NULL, 10) == rows / 2);
    while (rc == 1) {
        count++;
        rc = orch_reader_next(r, &rec);
    }
    CHECK(rc == 0 && count == rows / 2);
    orch_reader_close(r);
}

static void run(const char *name, void (*fn)(void))
{
    int before = check_failed;
    int checks = check_passed + check_failed;

    fn();
    printf("%s %s (%d checks)\n", check_failed == before ? "ok  " : "FAIL", name,
           check_passed + check_failed - checks);
}

/* The records orch_reader_next gives path (malformed ones too: they take an index). */
static uint64_t reader_records(const char *path, enum orch_reader_kind kind)
{
    char err[512];
    struct orch_reader *r = orch_reader_open(path, kind, 1, err, sizeof err);
    struct orch_record rec;
    uint64_t n = 0;
    int rc;

    if (r == NULL)
        return 0; /* an empty CSV has no header: no records */
    while ((rc = orch_reader_next(r, &rec)) != 0) {
        if (rc == -1 && orch_reader_failed(r))
            break;
        n++;
    }
    orch_reader_close(r);
    return n;
}

/* orch_reader_count of path, checked to equal what the reader gives. */
static void check_count(const char *name, const char *data, size_t len, enum orch_reader_kind kind,
                        uint64_t want)
{
    const char *path = write_file(name, data, len);
    char err[512] = "";
    uint64_t n = 12345;

    CHECK(orch_reader_count(path, kind, &n, err, sizeof err) == 0);
    if (n != want || reader_records(path, kind) != want)
        fprintf(stderr, "  %s: counted %" PRIu64 ", the reader gives %" PRIu64 ", want %" PRIu64 "\n", name,
                n, reader_records(path, kind), want);
    CHECK(n == want);
    CHECK(reader_records(path, kind) == want);
}

static void test_count(void)
{
    static const char quoted[] =
        "id,text\n1,\"a, b\"\n\n2,\"line one\nline two\n\nstill two\"\n3,\"say \"\"hi\"\"\"\n4,x";
    static const char crlf[] = "\xEF\xBB\xBFid,v\r\n1,a\r\n\r\n2,b\r\n";
    static const char lines[] = "{\"a\":1}\n\n   \r\n{\"b\":2}\r\n\t\n{\"c\":3}";
    char err[512] = "";
    uint64_t n;

    check_count("count_quoted.csv", quoted, sizeof quoted - 1, ORCH_READER_CSV, 4);
    check_count("count_crlf.csv", crlf, sizeof crlf - 1, ORCH_READER_CSV, 2);
    check_count("count_header.csv", "id,v\n", 5, ORCH_READER_CSV, 0);
    check_count("count_empty.csv", "", 0, ORCH_READER_CSV, 0);
    check_count("count_lines.jsonl", lines, sizeof lines - 1, ORCH_READER_LINES, 3);
    check_count("count_bom.jsonl", "\xEF\xBB\xBFx\ny\n", 7, ORCH_READER_LINES, 2);

    /* quoted newlines across the 64 KiB chunks: 3 records of 100 KB, each with 1,000 newlines inside quotes
     */
    size_t rec = 100 * 1024, cap = 3 * (rec + 16) + 16;
    char *big = malloc(cap);
    size_t len = (size_t)snprintf(big, cap, "id,text\n");
    for (int r = 0; r < 3; r++) {
        len += (size_t)snprintf(big + len, cap - len, "%d,\"", r);
        for (size_t i = 0; i < rec; i++)
            big[len++] = i % 100 == 99 ? '\n' : 'x';
        big[len++] = '"';
        big[len++] = '\n';
    }
    check_count("count_big.csv", big, len, ORCH_READER_CSV, 3);
    free(big);

    CHECK(orch_reader_count("/nonexistent/rows.csv", ORCH_READER_CSV, &n, err, sizeof err) == -1);
    CHECK_STR(err, "/nonexistent/rows.csv: No such file or directory");
}

/* Plain lines (no quote, no CR but before the LF) are split without libcsv: the same
 * fields, trims and positions as libcsv gives, mixed with lines that need it. */
static void test_csv_plain_lines(void)
{
    const char *data = "a,b,c\r\n"
                       "1,x y ,z\r\r\n"
                       " 2 ,,\n"
                       "3,\"q,r\",s\n"
                       "4,t\ru,v\n"
                       "5,\"m\nn\",w\n"
                       "6,7\n"
                       ",,\r\n"
                       "8,9,10\r";
    const char *path = write_str("plain.csv", data);
    struct orch_reader *r = open_ok(path, ORCH_READER_CSV);
    struct snap s[MAX_SNAPS];
    size_t n = take_all(r, s);

    CHECK(n == 9);
    CHECK_STR(s[0].text, "1|x y |z");
    CHECK_STR(s[1].text, " 2 ||");
    CHECK_STR(s[2].text, "3|q,r|s");
    CHECK_STR(s[3].text, "4|t\ru|v");
    CHECK_STR(s[4].text, "5|m\nn|w");
    CHECK(s[5].rc == -1 && s[5].nfields == 2);
    CHECK(strstr(s[5].err, "/plain.csv:8: expected 3 fields, found 2") != NULL);
    CHECK_STR(s[6].text, "||");
    CHECK_STR(s[7].text, "8|9|10");
    CHECK(s[8].rc == 0);
    CHECK(s[4].line == 6 && s[5].line == 8 && s[7].line == 10);
    CHECK(s[0].offset == 7 && s[0].end == s[1].offset && s[7].end == strlen(data));
    check_bytes(path, &s[0], "1,x y ,z\r\r\n");
    check_bytes(path, &s[7], "8,9,10\r");
    orch_reader_close(r);
    check_roundtrip(path, ORCH_READER_CSV);
}

int main(int argc, char **argv)
{
    int made = 0;

    if (argc > 1) {
        if (strlen(argv[1]) >= sizeof tmpdir) {
            fprintf(stderr, "tmpdir too long\n");
            return 2;
        }
        snprintf(tmpdir, sizeof tmpdir, "%s", argv[1]);
    } else {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/test_reader.XXXXXX");
        if (mkdtemp(tmpdir) == NULL) {
            perror("mkdtemp");
            return 2;
        }
        made = 1;
    }
    run("csv basics: quotes, embedded commas/quotes/newlines, blank lines, no final newline",
        test_csv_basics);
    run("csv CRLF and BOM", test_csv_crlf_bom);
    run("csv plain lines split without libcsv, mixed with quoted ones", test_csv_plain_lines);
    run("csv field-count mismatch names the line and continues", test_csv_field_count);
    run("csv malformed quotes name the line and continue", test_csv_malformed);
    run("csv unterminated quote at EOF", test_csv_unterminated);
    run("csv open errors: empty, missing, directory, duplicate/empty column, header only", test_csv_open);
    run("lines: blank lines, CRLF, no final newline, BOM, seek", test_lines);
    run("records longer than the chunk size (200 KB)", test_long_records);
    run("200,000-row csv", test_many_rows);
    run("count: records as the reader gives them, quotes, blank lines, CRLF, BOM, chunks", test_count);
    for (int i = 0; i < nfiles; i++) {
        unlink(files[i]);
    }
    if (made) {
        rmdir(tmpdir);
    }
    return check_report();
}
