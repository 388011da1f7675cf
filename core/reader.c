/* reader.c — streaming CSV and line readers; see reader.h.
 *
 * Input is split into physical lines in one growable buffer. CSV lines are fed to libcsv
 * one at a time with only '\n' as row terminator and '\r' as the only "space" (trimmed
 * around fields, kept inside quotes), so a row can only complete at the end of the line
 * just fed: its end offset is exact, which is what makes resuming by offset possible. */
#include "reader.h"

#include <csv.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define READER_CHUNK (64 * 1024)
#define READER_CSV_OPTS (CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL)

/* A CSV row: fields copied into buf back to back, each NUL-terminated; their ptr is set
   when the row completes (buf may move before). */
struct reader_row {
    char *buf;
    size_t buf_len;
    size_t buf_cap;
    struct orch_field *fields;
    size_t nfields;
    size_t fields_cap;
};

struct orch_reader {
    char *path;
    int fd;
    enum orch_reader_kind kind;
    uint64_t size;
    int failed; /* I/O or memory error: input ended early */
    char err[512];

    /* Bytes [pos, len) of buf are unread; len < cap always, so a line ending at len
       can still be NUL-terminated in place. */
    char *buf;
    size_t cap;
    size_t pos;
    size_t len;
    int eof;
    uint64_t off;   /* file offset of buf[pos] */
    uint64_t line;  /* physical line number at off */
    uint64_t index; /* index the next record gets */

    uint64_t rec_off; /* where the record being read starts */
    uint64_t rec_line;
    struct orch_field line_field; /* LINES: the record's one field */

    /* CSV */
    struct csv_parser csv;
    int pending;  /* a row has started but not completed */
    int row_done; /* set by csv_on_row */
    int oom;      /* allocation failed in csv_on_field */
    struct reader_row row;
    struct reader_row hdr;
    uint64_t data_start; /* offset of the first byte after the header row */
};

__attribute__((format(printf, 3, 4))) static int reader_errorf(struct orch_reader *r, uint64_t line,
                                                               const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(r->err, sizeof r->err, "%s:%" PRIu64 ": ", r->path, line);

    if (n < 0 || (size_t)n >= sizeof r->err)
        return -1;
    va_start(ap, fmt);
    vsnprintf(r->err + n, sizeof r->err - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* An error that ends the input ("path: reason"). Returns -1. */
static int reader_fail(struct orch_reader *r, const char *reason)
{
    snprintf(r->err, sizeof r->err, "%s: %s", r->path, reason);
    r->failed = 1;
    return -1;
}

/* Returns ptr grown to hold at least need items of elem bytes (*cap updated), or NULL
 * with ptr and *cap unchanged. */
static void *reader_grow(void *ptr, size_t *cap, size_t need, size_t elem)
{
    size_t ncap = *cap > 0 ? *cap : 16;
    void *np;

    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / elem)
            return NULL;
        ncap *= 2;
    }
    np = realloc(ptr, ncap * elem);
    if (np != NULL)
        *cap = ncap;
    return np;
}

/* 1 when [p, p + n) holds only bytes from set. */
static int reader_only(const char *p, size_t n, const char *set)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\0' || strchr(set, p[i]) == NULL)
            return 0;
    }
    return 1;
}

/* Positions the file at offset (past a UTF-8 BOM when offset is 0) with an empty
 * buffer. 0 or -1 (reader failed). */
static int reader_rewind(struct orch_reader *r, uint64_t offset)
{
    if (offset == 0) {
        unsigned char bom[3];
        ssize_t got = pread(r->fd, bom, sizeof bom, 0);

        if (got < 0)
            return reader_fail(r, strerror(errno));
        if (got == 3 && memcmp(bom, "\xEF\xBB\xBF", 3) == 0)
            offset = 3;
    }
    if (lseek(r->fd, (off_t)offset, SEEK_SET) < 0)
        return reader_fail(r, strerror(errno));
    r->pos = 0;
    r->len = 0;
    r->eof = 0;
    r->off = offset;
    return 0;
}

/* Returns 1 with the next physical line, including its '\n' when it has one, in
 * [*line, *line + *n) inside r->buf (valid until the next call, writable up to and
 * including (*line)[*n]); 0 at end of file; -1 on a read error (reader failed). */
static int reader_line(struct orch_reader *r, char **line, size_t *n)
{
    size_t scan = r->pos;

    for (;;) {
        char *nl = memchr(r->buf + scan, '\n', r->len - scan);
        ssize_t got;

        if (nl != NULL || (r->eof && r->pos < r->len)) {
            *line = r->buf + r->pos;
            *n = nl != NULL ? (size_t)(nl + 1 - *line) : r->len - r->pos;
            r->pos += *n;
            r->off += *n;
            r->line += nl != NULL;
            return 1;
        }
        if (r->eof)
            return 0;
        /* keep the partial line at the front, growing only when it fills the buffer */
        scan = r->len - r->pos;
        memmove(r->buf, r->buf + r->pos, scan);
        r->pos = 0;
        r->len = scan;
        if (r->len + 1 == r->cap) {
            char *nb = reader_grow(r->buf, &r->cap, r->cap * 2, 1);

            if (nb == NULL)
                return reader_fail(r, strerror(ENOMEM));
            r->buf = nb;
        }
        got = read(r->fd, r->buf + r->len, r->cap - 1 - r->len);
        if (got < 0 && errno != EINTR)
            return reader_fail(r, strerror(errno));
        if (got == 0)
            r->eof = 1;
        if (got > 0)
            r->len += (size_t)got;
    }
}

static int csv_is_cr(unsigned char c)
{
    return c == '\r';
}

static int csv_is_lf(unsigned char c)
{
    return c == '\n';
}

/* libcsv field callback: s is libcsv's buffer, valid only during the call. */
static void csv_on_field(void *s, size_t len, void *data)
{
    struct reader_row *row = &((struct orch_reader *)data)->row;
    void *np;

    if (row->nfields == row->fields_cap) {
        np = reader_grow(row->fields, &row->fields_cap, row->nfields + 1, sizeof *row->fields);
        if (np == NULL)
            goto oom;
        row->fields = np;
    }
    if (row->buf_cap - row->buf_len <= len) {
        np = reader_grow(row->buf, &row->buf_cap, row->buf_len + len + 1, 1);
        if (np == NULL)
            goto oom;
        row->buf = np;
    }
    if (len > 0)
        memcpy(row->buf + row->buf_len, s, len);
    row->buf[row->buf_len + len] = '\0';
    row->buf_len += len + 1;
    row->fields[row->nfields].ptr = NULL;
    row->fields[row->nfields].len = len;
    row->nfields++;
    return;
oom:
    ((struct orch_reader *)data)->oom = 1;
}

static void csv_on_row(int c, void *data)
{
    struct orch_reader *r = data;

    (void)c;
    r->row_done = 1;
}

/* Drops the row in progress and gives libcsv a fresh state (it has no reset call). */
static void csv_reset(struct orch_reader *r)
{
    csv_free(&r->csv);
    csv_init(&r->csv, READER_CSV_OPTS);
    csv_set_space_func(&r->csv, csv_is_cr);
    csv_set_term_func(&r->csv, csv_is_lf);
    csv_set_blk_size(&r->csv, READER_CHUNK);
    r->pending = 0;
    r->row_done = 0;
    r->oom = 0;
    r->row.nfields = 0;
    r->row.buf_len = 0;
}

/* A row libcsv rejected: report it at its first line, resync at the next line. */
static int csv_malformed(struct orch_reader *r)
{
    int status = csv_error(&r->csv);

    csv_reset(r);
    if (status != CSV_EPARSE)
        return reader_fail(r, csv_strerror(status));
    return reader_errorf(r, r->rec_line, "malformed CSV (%s)", csv_strerror(status));
}

/* The common data row, a line with no quote and no CR but those before its LF: libcsv
 * (CR the only space, LF the only terminator) would split it at each comma and trim
 * those CRs, nothing else, so it is split
 * here in place, each comma and the LF becoming the fields' NULs; the fields point into
 * r->buf, valid until the next reader_line. About a tenth of libcsv's instructions a
 * row (libcsv copies every byte through a per-byte callback test). 1 = split, 0 = not a
 * plain line (libcsv parses it), -1 = out of memory (reader failed). */
static int csv_plain_row(struct orch_reader *r, char *p, size_t n)
{
    size_t body = n > 0 && p[n - 1] == '\n' ? n - 1 : n;

    while (body > 0 && p[body - 1] == '\r')
        body--; /* CRLF: libcsv trims the CRs ending the last field */
    if (memchr(p, '"', body) != NULL || memchr(p, '\r', body) != NULL)
        return 0;
    p[body] = '\0'; /* the LF, or the byte past a last line without one (writable) */
    size_t nf = 0;
    char *f = p;
    for (;;) {
        char *comma = memchr(f, ',', (size_t)(p + body - f));
        if (nf == r->row.fields_cap) {
            void *np = reader_grow(r->row.fields, &r->row.fields_cap, nf + 1, sizeof *r->row.fields);
            if (np == NULL)
                return reader_fail(r, strerror(ENOMEM));
            r->row.fields = np;
        }
        r->row.fields[nf].ptr = f;
        r->row.fields[nf].len = (size_t)((comma != NULL ? comma : p + body) - f);
        nf++;
        if (comma == NULL)
            break;
        *comma = '\0';
        f = comma + 1;
    }
    r->row.nfields = nf;
    return 1;
}

/* Parses the next non-blank row into r->row (valid until the next row); its
 * position is rec_off/rec_line to r->off/r->line. 1 = a row, 0 = end of input, -1 = a
 * malformed row (skipped) or, when r->failed, an I/O or memory error. */
static int csv_read_row(struct orch_reader *r)
{
    char *q;

    r->row.nfields = 0;
    r->row.buf_len = 0;
    for (;;) {
        char *p;
        size_t n;
        int rc;

        if (!r->pending) {
            r->rec_off = r->off;
            r->rec_line = r->line;
        }
        rc = reader_line(r, &p, &n);
        if (rc < 0)
            return -1;
        if (rc == 0) {
            if (csv_fini(&r->csv, csv_on_field, csv_on_row, r) != 0)
                return csv_malformed(r);
            if (!r->row_done)
                return 0;
            break;
        }
        if (!r->pending && reader_only(p, n, "\r\n"))
            continue;
        if (!r->pending && r->hdr.fields != NULL) {
            rc = csv_plain_row(r, p, n);
            if (rc != 0)
                return rc;
        }
        r->pending = 1;
        if (csv_parse(&r->csv, p, n, csv_on_field, csv_on_row, r) < n)
            return csv_malformed(r);
        if (r->row_done)
            break;
    }
    r->pending = 0;
    r->row_done = 0;
    if (r->oom) {
        csv_reset(r);
        return reader_fail(r, strerror(ENOMEM));
    }
    q = r->row.buf;
    for (size_t i = 0; i < r->row.nfields; i++) {
        r->row.fields[i].ptr = q;
        q += r->row.fields[i].len + 1;
    }
    return 1;
}

/* Reads and checks the header row; the header keeps the row's buffers. 0 or -1. */
static int csv_read_header(struct orch_reader *r)
{
    int rc = csv_read_row(r);

    if (rc == 0)
        return reader_fail(r, "empty file, expected a header row");
    if (rc < 0)
        return -1;
    for (size_t i = 0; i < r->row.nfields; i++) {
        const struct orch_field *f = &r->row.fields[i];

        if (f->len == 0)
            return reader_errorf(r, r->rec_line, "empty column name (column %zu)", i + 1);
        for (size_t j = 0; j < i; j++) {
            const struct orch_field *g = &r->row.fields[j];

            if (g->len == f->len && memcmp(g->ptr, f->ptr, f->len) == 0)
                return reader_errorf(r, r->rec_line, "duplicate column '%s'", f->ptr);
        }
    }
    /* ownership of the row's buffers moves to hdr */
    r->hdr = r->row;
    memset(&r->row, 0, sizeof r->row);
    r->data_start = r->off;
    return 0;
}

/* Gives rec the position of the record just read (rec_off/rec_line up to the current
 * position) and the next index. */
static void reader_place(struct orch_reader *r, struct orch_record *rec)
{
    rec->line = r->rec_line;
    rec->offset = r->rec_off;
    rec->end = r->off;
    rec->end_line = r->line;
    rec->index = r->index++;
}

static int reader_next_csv(struct orch_reader *r, struct orch_record *rec)
{
    int rc = csv_read_row(r);

    if (rc == 0 || r->failed)
        return rc;
    reader_place(r, rec);
    if (rc < 0)
        return -1;
    rec->fields = r->row.fields;
    rec->nfields = r->row.nfields;
    if (rec->nfields != r->hdr.nfields) {
        return reader_errorf(r, rec->line, "expected %zu fields, found %zu", r->hdr.nfields, rec->nfields);
    }
    return 1;
}

static int reader_next_line(struct orch_reader *r, struct orch_record *rec)
{
    for (;;) {
        char *p;
        size_t n;
        int rc;

        r->rec_off = r->off;
        r->rec_line = r->line;
        rc = reader_line(r, &p, &n);

        if (rc <= 0)
            return rc;
        if (n > 0 && p[n - 1] == '\n')
            n--;
        if (n > 0 && p[n - 1] == '\r')
            n--;
        if (reader_only(p, n, " \t\r\v\f"))
            continue;
        p[n] = '\0';
        r->line_field.ptr = p;
        r->line_field.len = n;
        rec->fields = &r->line_field;
        rec->nfields = 1;
        reader_place(r, rec);
        return 1;
    }
}

struct orch_reader *orch_reader_open(const char *path, enum orch_reader_kind kind, int has_header, char *err,
                                     size_t errlen)
{
    struct orch_reader *r = calloc(1, sizeof *r);
    struct stat st;

    (void)has_header;
    if (r != NULL) {
        r->fd = -1;
        r->path = strdup(path);
        r->cap = READER_CHUNK + 1;
        r->buf = malloc(r->cap);
    }
    if (r == NULL || r->path == NULL || r->buf == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
        orch_reader_close(r);
        return NULL;
    }
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    r->kind = kind;
    r->line = 1;
    csv_reset(r);
    if (r->fd < 0 || fstat(r->fd, &st) != 0) {
        reader_fail(r, strerror(errno));
    } else if (S_ISDIR(st.st_mode)) {
        reader_fail(r, strerror(EISDIR));
    } else {
        r->size = (uint64_t)st.st_size;
        if (reader_rewind(r, 0) == 0 && (kind != ORCH_READER_CSV || csv_read_header(r) == 0))
            return r;
    }
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", r->err);
    orch_reader_close(r);
    return NULL;
}

int orch_reader_next(struct orch_reader *r, struct orch_record *rec)
{
    int rc;

    memset(rec, 0, sizeof *rec);
    if (r->failed)
        return 0;
    rc = r->kind == ORCH_READER_CSV ? reader_next_csv(r, rec) : reader_next_line(r, rec);
    if (rc < 0 && r->failed)
        memset(rec, 0, sizeof *rec);
    return rc;
}

const char *orch_reader_error(const struct orch_reader *r)
{
    return r->err;
}

int orch_reader_failed(const struct orch_reader *r)
{
    return r->failed;
}

size_t orch_reader_header(const struct orch_reader *r, const struct orch_field **fields)
{
    *fields = r->hdr.fields;
    return r->hdr.nfields;
}

int orch_reader_seek(struct orch_reader *r, uint64_t offset, uint64_t index, uint64_t line)
{
    if (r->kind == ORCH_READER_CSV && offset < r->data_start) {
        snprintf(r->err, sizeof r->err, "%s: %s", r->path, strerror(EINVAL));
        return -1;
    }
    r->failed = 0;
    if (reader_rewind(r, offset) != 0)
        return -1;
    csv_reset(r);
    r->index = index;
    r->line = line;
    return 0;
}

uint64_t orch_reader_size(const struct orch_reader *r)
{
    return r->size;
}

void orch_reader_close(struct orch_reader *r)
{
    if (r == NULL)
        return;
    if (r->fd >= 0)
        close(r->fd);
    csv_free(&r->csv);
    free(r->path);
    free(r->buf);
    free(r->row.buf);
    free(r->row.fields);
    free(r->hdr.buf);
    free(r->hdr.fields);
    free(r);
}

/* The scan's state between chunks: inside a quoted CSV field, and whether the
 * record being read has anything in it (a blank line is no record). */
struct count_state {
    int quoted;
    int content;
    uint64_t records;
};

/* One chunk of the scan. CSV: a '"' toggles quoting (a doubled quote toggles
 * twice), a newline outside quotes ends a record, any byte but CR and LF is
 * content. LINES: a newline ends a line, any byte but space, tab, CR and LF is
 * content. */
static void count_chunk(struct count_state *s, const unsigned char *p, size_t n, int csv)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c == '\n' && !s->quoted) {
            s->records += (uint64_t)s->content;
            s->content = 0;
        } else if (csv && c == '"') {
            s->quoted = !s->quoted;
            s->content = 1;
        } else if (c != '\r' && c != '\n' && (csv || (c != ' ' && c != '\t'))) {
            s->content = 1;
        }
    }
}

int orch_reader_count(const char *path, enum orch_reader_kind kind, uint64_t *records, char *err,
                      size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    unsigned char *buf = malloc(READER_CHUNK);
    if (buf == NULL) {
        close(fd);
        snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
        return -1;
    }
    struct count_state s = {0, 0, 0};
    ssize_t got;
    size_t skip = 0;
    int first = 1;
    while ((got = read(fd, buf, READER_CHUNK)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            break;
        skip = first && got >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0; /* a BOM is no content */
        first = 0;
        count_chunk(&s, buf + skip, (size_t)got - skip, kind == ORCH_READER_CSV);
    }
    int saved = errno;
    free(buf);
    close(fd);
    if (got < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(saved));
        return -1;
    }
    s.records += (uint64_t)s.content; /* the last record, without a newline */
    if (kind == ORCH_READER_CSV && s.records > 0)
        s.records--; /* the header */
    *records = s.records;
    return 0;
}
