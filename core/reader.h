/* reader.h — streaming input readers: RFC 4180 CSV (through libcsv) and newline-delimited
 * records (JSONL), each record carrying its byte offset so a run can resume mid-file.
 *
 * The file is read in 64 KiB chunks; memory is bounded by the longest record. A UTF-8 BOM
 * at the start of the file is skipped (offsets still count it). CSV: the first non-blank
 * row is the header; fields may be quoted (embedded commas, doubled quotes, newlines);
 * LF or CRLF line endings (a lone CR is not a line break; around a field it is trimmed);
 * blank lines are skipped; spaces are part of a field. LINES: one record per physical
 * line, blank and whitespace-only lines skipped.
 *
 * Depends on: libc (POSIX read/lseek), libcsv (-lcsv). No Lua. */
#ifndef ORCH_READER_H
#define ORCH_READER_H

#include <stddef.h>
#include <stdint.h>

enum orch_reader_kind { ORCH_READER_CSV, ORCH_READER_LINES };

struct orch_field {
    const char *ptr; /* NUL-terminated too */
    size_t len;
};

struct orch_record {
    /* CSV: the fields; LINES: exactly 1 field = the line without its "\n" or "\r\n" */
    const struct orch_field *fields;
    size_t nfields;
    uint64_t line;     /* 1-based physical line where the record starts */
    uint64_t offset;   /* byte offset where the record starts */
    uint64_t end;      /* byte offset just past the record, i.e. where the next one starts */
    uint64_t index;    /* 0-based data record number (CSV header not counted) */
    uint64_t end_line; /* physical line number at `end`: resume with
                          orch_reader_seek(r, rec.end, rec.index + 1, rec.end_line) */
};

struct orch_reader;

/* Opens path. For CSV reads the header row at once (has_header is always 1 for now; keep
 * the param). Returns NULL with a message "path: reason" in err (e.g. "data.csv: No such
 * file or directory", "data.csv: empty file, expected a header row", "data.csv:1:
 * duplicate column 'id'", "data.csv:1: empty column name (column 3)"). The caller owns
 * the reader and frees it with orch_reader_close. */
struct orch_reader *orch_reader_open(const char *path, enum orch_reader_kind kind, int has_header, char *err,
                                     size_t errlen);

/* 1 = a record in *rec (valid until the next call), 0 = end of input, -1 = an error:
 * orch_reader_error() gives the message.
 * A malformed record gives "path:LINE: message" (LINE = where the record starts), *rec
 * holds its line/offset/end/index (fields only for a field-count mismatch, else none),
 * and the reader has skipped past it (to the end of the physical line where the error is
 * detected, resynchronising the CSV parser) so the caller may continue with the next
 * call. A bad record still consumes an index number.
 * An I/O error gives "path: strerror", zeroes *rec and ends the input: later calls
 * return 0 and orch_reader_failed() returns 1. */
int orch_reader_next(struct orch_reader *r, struct orch_record *rec);

const char *orch_reader_error(const struct orch_reader *r);

/* 1 when input ended early on an I/O or memory error (the run is not complete). */
int orch_reader_failed(const struct orch_reader *r);

/* CSV only: the header names, owned by the reader; 0 for LINES. */
size_t orch_reader_header(const struct orch_reader *r, const struct orch_field **fields);

/* Continue reading at a byte offset previously reported as rec.end or rec.offset (a record
 * boundary), with the index the next record there has and the physical line number at
 * offset (rec.end_line for rec.end, rec.line for rec.offset). Clears a previous end of
 * input or failure. Returns 0 or -1 (errno-style message in error();
 * for CSV an offset inside the header is EINVAL). */
int orch_reader_seek(struct orch_reader *r, uint64_t offset, uint64_t index, uint64_t line);

/* File size in bytes at open (for progress). */
uint64_t orch_reader_size(const struct orch_reader *r);

void orch_reader_close(struct orch_reader *r);

/* Counts the data records of path (CSV: not the header) without parsing them: one pass
 * over the bytes, minding only CSV quotes (a newline inside a quoted field is no record
 * end) and blank lines (skipped, as the reader skips them). A malformed record counts
 * as the reader's index does. Returns 0 with *records, or -1 with "path: reason" in
 * err. */
int orch_reader_count(const char *path, enum orch_reader_kind kind, uint64_t *records, char *err,
                      size_t errlen);

#endif
