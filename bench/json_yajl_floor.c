/* json_yajl_floor.c -- the least a yajl-based orch.json.decode could cost:
 * yajl 2.1 (libyajl-dev) parses every line of a JSONL file with callbacks
 * that only count values (numbers as raw text, so 64-bit ids would stay
 * exact, strings UTF-8 checked).  A real decoder would also build Lua values
 * in those callbacks -- and could not raise Lua errors from them -- so its
 * time is this one plus the Lua work; bench/json_decode.sh compares it with
 * orch.json.decode, which does both.
 *
 *   json_yajl_floor FILE ROUNDS  -> best round's CPU seconds */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <yajl/yajl_parse.h>

static long nvalues;

static int on_null(void *ctx)
{
    (void)ctx;
    nvalues++;
    return 1;
}
static int on_bool(void *ctx, int b)
{
    (void)ctx;
    (void)b;
    nvalues++;
    return 1;
}
static int on_number(void *ctx, const char *s, size_t n)
{
    (void)ctx;
    (void)s;
    (void)n;
    nvalues++;
    return 1;
}
static int on_string(void *ctx, const unsigned char *s, size_t n)
{
    (void)ctx;
    (void)s;
    (void)n;
    nvalues++;
    return 1;
}
static int on_start_map(void *ctx)
{
    (void)ctx;
    return 1;
}
static int on_map_key(void *ctx, const unsigned char *s, size_t n)
{
    (void)ctx;
    (void)s;
    (void)n;
    return 1;
}
static int on_end_map(void *ctx)
{
    (void)ctx;
    nvalues++;
    return 1;
}
static int on_start_array(void *ctx)
{
    (void)ctx;
    return 1;
}
static int on_end_array(void *ctx)
{
    (void)ctx;
    nvalues++;
    return 1;
}

static const yajl_callbacks callbacks = {
    on_null,      on_bool,    NULL,       NULL,           on_number,    on_string,
    on_start_map, on_map_key, on_end_map, on_start_array, on_end_array,
};

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: json_yajl_floor FILE ROUNDS\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (f == NULL) {
        perror(argv[1]);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)size + 1);
    if (buf == NULL || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 1;
    }
    fclose(f);
    buf[size] = '\0';
    double best = 1e9;
    for (int r = 0; r < atoi(argv[2]); r++) {
        clock_t t0 = clock();
        char *p = buf;
        while (*p) {
            char *nl = strchr(p, '\n');
            size_t len = nl ? (size_t)(nl - p) : strlen(p);
            yajl_handle h = yajl_alloc(&callbacks, NULL, NULL);
            if (yajl_parse(h, (const unsigned char *)p, len) != yajl_status_ok ||
                yajl_complete_parse(h) != yajl_status_ok) {
                fprintf(stderr, "parse error\n");
                return 1;
            }
            yajl_free(h);
            p += len + (nl != NULL);
        }
        double t = (double)(clock() - t0) / CLOCKS_PER_SEC;
        if (t < best) {
            best = t;
        }
    }
    printf("%.3f %ld\n", best, nvalues);
    free(buf);
    return 0;
}
