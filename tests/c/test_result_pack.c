/* test_result_pack.c — unit tests of packed results (result_pack.c):
 * the three formats give back what was packed, field by field; a damaged
 * or cut blob is refused, never read past its end; the keyed form is
 * smaller than the fixed one, and the compact form counts keys on. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "result_pack.h"

static const char data_with_nul[] = {'{', '"', 'a', '"', ':', 0, '1', '}'};

/* Results with every kind of field: known and other statuses, NULL key,
 * error and data, data holding a NUL, steps of 1 and large ones. */
static const struct orch_result sample[] = {
    {1, "k1", "ok", NULL, NULL, 0},
    {2, "k2", "failed", "boom: the provider said no", NULL, 0},
    {3, NULL, "dropped", NULL, NULL, 0},
    {7, "", "defaulted", "fell back", "{\"x\":1}", 7},
    {8, "k8", "retrying", NULL, data_with_nul, sizeof data_with_nul},
    {300, "k300", "ok", NULL, "", 0},
    {(int64_t)1 << 40, "far", "ok", NULL, NULL, 0},
    {INT64_MAX, "last", "ok", NULL, NULL, 0},
};
enum { NSAMPLE = sizeof sample / sizeof sample[0] };

static int same_text(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int same_result(const struct orch_result *a, const struct orch_result *b)
{
    return a->seq == b->seq && same_text(a->key, b->key) && same_text(a->status, b->status) &&
           same_text(a->error, b->error) && (a->data == NULL) == (b->data == NULL) &&
           a->data_len == b->data_len && (a->data == NULL || memcmp(a->data, b->data, a->data_len) == 0);
}

static void test_round_trip(int format)
{
    CHECK(orch_results_packable(sample, NSAMPLE) == 1);
    size_t len = 0;
    unsigned char *blob = orch_results_pack(format, sample, NSAMPLE, &len);
    CHECK(blob != NULL && len > 0);
    struct orch_results_cursor c;
    CHECK(orch_results_open(&c, format, blob, len, NSAMPLE) == 0);
    for (int i = 0; i < NSAMPLE; i++) {
        struct orch_result r;
        CHECK(orch_results_next(&c, &r) == 0);
        CHECK(same_result(&r, &sample[i]));
    }
    struct orch_result r;
    CHECK(orch_results_next(&c, &r) == -1); /* all read */
    CHECK(c.p == c.end);

    /* every cut of the blob is refused at some result, never read past */
    int refused = 0;
    for (size_t cut = 0; cut < len; cut++) {
        unsigned char *part = malloc(cut > 0 ? cut : 1);
        memcpy(part, blob, cut);
        int got = 0, rc = orch_results_open(&c, format, cut > 0 ? part : NULL, cut, NSAMPLE);
        while (rc == 0 && got < NSAMPLE && (rc = orch_results_next(&c, &r)) == 0)
            got++;
        refused += rc != 0;
        free(part);
    }
    CHECK(refused == (int)len);
    free(blob);
}

static void test_refused(void)
{
    /* seqs that do not increase, a seq below 1, no status */
    struct orch_result two[2] = {{5, "a", "ok", NULL, NULL, 0}, {5, "b", "ok", NULL, NULL, 0}};
    CHECK(orch_results_packable(two, 2) == 0);
    two[1].seq = 4;
    CHECK(orch_results_packable(two, 2) == 0);
    two[1].seq = 6;
    CHECK(orch_results_packable(two, 2) == 1);
    two[0].seq = 0;
    CHECK(orch_results_packable(two, 2) == 0);
    two[0].seq = 5;
    two[1].status = NULL;
    CHECK(orch_results_packable(two, 2) == 0);

    /* an unknown format, a count the blob cannot hold */
    size_t len = 0;
    unsigned char *blob = orch_results_pack(ORCH_PACK_COMPACT, sample, 2, &len);
    struct orch_results_cursor c;
    CHECK(orch_results_open(&c, 4, blob, len, 2) == -1);
    CHECK(orch_results_open(&c, ORCH_PACK_COMPACT, blob, len, 0) == -1);
    CHECK(orch_results_open(&c, ORCH_PACK_COMPACT, blob, len, (int64_t)len) == -1);
    /* a status code past the known ones, a step of 0 */
    struct orch_result r;
    unsigned char bad_code[] = {1, 0x07};
    CHECK(orch_results_open(&c, ORCH_PACK_COMPACT, bad_code, sizeof bad_code, 1) == 0);
    CHECK(orch_results_next(&c, &r) == -1);
    unsigned char zero_step[] = {0, 0x01};
    CHECK(orch_results_open(&c, ORCH_PACK_COMPACT, zero_step, sizeof zero_step, 1) == 0);
    CHECK(orch_results_next(&c, &r) == -1);
    /* a text without its NUL */
    unsigned char no_nul[] = {1, 0x01 | 0x08, 2, 'a', 'b', 'c'};
    CHECK(orch_results_open(&c, ORCH_PACK_COMPACT, no_nul, sizeof no_nul, 1) == 0);
    CHECK(orch_results_next(&c, &r) == -1);
    no_nul[5] = '\0';
    CHECK(orch_results_open(&c, ORCH_PACK_COMPACT, no_nul, sizeof no_nul, 1) == 0);
    CHECK(orch_results_next(&c, &r) == 0 && r.seq == 1 && strcmp(r.key, "ab") == 0 &&
          strcmp(r.status, "ok") == 0);
    free(blob);
}

/* A checkpoint of plain rows ("ok", a short key, nothing else) packs in
 * under a third of the fixed form's bytes (10 bytes a row against 34) in
 * the keyed form; the compact form takes as many when the keys do not
 * count on, and 2 bytes a row when they do (an id column). */
static void test_compact_is_small(void)
{
    enum { N = 1000 };
    static struct orch_result rows[N];
    static char keys[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "%d", 100000 + 2 * i); /* every other number */
        rows[i] = (struct orch_result){100000 + i, keys[i], "ok", NULL, NULL, 0};
    }
    size_t fixed = 0, keyed = 0, compact = 0, counted = 0;
    unsigned char *a = orch_results_pack(ORCH_PACK_FIXED, rows, N, &fixed);
    unsigned char *b = orch_results_pack(ORCH_PACK_KEYED, rows, N, &keyed);
    unsigned char *d = orch_results_pack(ORCH_PACK_COMPACT, rows, N, &compact);
    CHECK(a != NULL && b != NULL && d != NULL);
    CHECK(fixed == (size_t)N * (24 + 7 + 3));
    CHECK(keyed == (size_t)N * 10 + 2); /* the first step, 100000, takes 3 bytes */
    CHECK(compact == keyed && memcmp(b, d, keyed) == 0);
    for (int i = 0; i < N; i++)
        snprintf(keys[i], sizeof keys[i], "%d", 100000 + i);
    unsigned char *e = orch_results_pack(ORCH_PACK_COMPACT, rows, N, &counted);
    CHECK(e != NULL && counted == 12 + (size_t)(N - 1) * 2); /* the first row's key, then steps and flags */
    free(a);
    free(b);
    free(d);
    free(e);
}

/* Keys counted on: what each key is after the one before, the bytes of a
 * counted row, the keys back from the cursor and from a merge (copies
 * that outlive it), and the packer's bytes the same as a list's. */
static void test_counted_keys(void)
{
    static char k127[128], k126[128];
    memset(k127, '9', 127); /* counted on, it would pass the 127 bytes */
    memset(k126, '9', 126);
    const char *keys[] = {"8",      "9",
                          "10",     "11",
                          "a9",     "a10",
                          "0099",   "0100",
                          "x",      "y",
                          "",       "1",
                          "row-41", "row-42",
                          k126,     "1" /* k126 counted on, spelled out: not the same */,
                          k127,     "1000000000000000000000000"};
    enum { N = sizeof keys / sizeof keys[0] };
    const int counted[N] = {0, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0};
    struct orch_result rows[N + 3];
    for (int i = 0; i < N; i++)
        rows[i] = (struct orch_result){i + 1, keys[i], "ok", NULL, NULL, 0};
    /* after a row that is not plain, and after one without a key */
    rows[N] = (struct orch_result){N + 1, "7", "failed", "e", NULL, 0};
    rows[N + 1] = (struct orch_result){N + 2, "8", "ok", NULL, NULL, 0};
    rows[N + 2] = (struct orch_result){N + 3, NULL, "ok", NULL, NULL, 0};
    size_t len = 0;
    unsigned char *blob = orch_results_pack(ORCH_PACK_COMPACT, rows, N + 3, &len);
    CHECK(blob != NULL);
    struct orch_results_cursor c;
    CHECK(blob != NULL && orch_results_open(&c, ORCH_PACK_COMPACT, blob, len, N + 3) == 0);
    const unsigned char *at = blob;
    int same = 0;
    for (int i = 0; blob != NULL && i < N + 3; i++) {
        struct orch_result r;
        const unsigned char *before = c.p;
        CHECK(orch_results_next(&c, &r) == 0);
        same += same_result(&r, &rows[i]);
        int is_counted = i < N ? counted[i] : i == N + 1;
        /* a counted row is a step and a flags byte, its key made in the cursor */
        CHECK(!is_counted || (c.p - before == 2 && before[1] == (0x01 | 0x08 | 0x40) && r.key == c.key));
        CHECK(is_counted || r.key == NULL ||
              (r.key > (const char *)blob && r.key < (const char *)blob + len));
        at = c.p;
    }
    CHECK(same == N + 3 && at == blob + len);
    /* merged, the counted keys are copies: the same after the cursor is gone */
    struct orch_results_chunk chunk = {ORCH_PACK_COMPACT, blob, len, N + 3, 1, N + 3};
    struct orch_result *all = NULL;
    CHECK(orch_results_merge(&chunk, NULL, 0, &all) == 0);
    same = 0;
    for (int i = 0; all != NULL && i < N + 3; i++)
        same += same_result(&all[i], &rows[i]);
    CHECK(same == N + 3);
    free(all);

    /* the packer makes the same bytes, a cleared one counts nothing on
     * from the rows before */
    struct orch_results_packer pk = {0};
    for (int i = 0; i < N + 3; i++)
        CHECK(orch_results_packer_add(&pk, &rows[i]) == 0);
    size_t want = 0;
    struct orch_result ok[N + 3];
    int nok = 0;
    for (int i = 0; i < N + 3; i++)
        if (rows[i].error == NULL)
            ok[nok++] = rows[i];
    unsigned char *w = orch_results_pack(ORCH_PACK_COMPACT, ok, (size_t)nok, &want);
    CHECK(w != NULL && pk.ok.len == want && memcmp(pk.ok.p, w, want) == 0);
    free(w);
    orch_results_packer_clear(&pk, 1 << 20);
    struct orch_result r9 = {100, "9", "ok", NULL, NULL, 0};
    CHECK(orch_results_packer_add(&pk, &r9) == 0 && pk.ok.len == 5); /* step, flags, length, "9", NUL */
    r9.seq = 101, r9.key = "10";
    CHECK(orch_results_packer_add(&pk, &r9) == 0 && pk.ok.len == 7);
    orch_results_packer_free(&pk);
    free(blob);

    /* refused: a counted key first, after a key without a number at its
     * end, without HAS_KEY, in the keyed form */
    struct orch_result r;
    unsigned char first[] = {1, 0x49};
    CHECK(orch_results_open(&c, ORCH_PACK_COMPACT, first, sizeof first, 1) == 0);
    CHECK(orch_results_next(&c, &r) == -1);
    unsigned char after_x[] = {1, 0x09, 1, 'x', 0, 1, 0x49};
    CHECK(orch_results_open(&c, ORCH_PACK_COMPACT, after_x, sizeof after_x, 2) == 0);
    CHECK(orch_results_next(&c, &r) == 0 && orch_results_next(&c, &r) == -1);
    unsigned char no_key[] = {1, 0x09, 1, '1', 0, 1, 0x41};
    CHECK(orch_results_open(&c, ORCH_PACK_COMPACT, no_key, sizeof no_key, 2) == 0);
    CHECK(orch_results_next(&c, &r) == 0 && orch_results_next(&c, &r) == -1);
    unsigned char keyed[] = {1, 0x09, 1, '1', 0, 1, 0x49};
    CHECK(orch_results_open(&c, ORCH_PACK_KEYED, keyed, sizeof keyed, 2) == 0);
    CHECK(orch_results_next(&c, &r) == 0 && orch_results_next(&c, &r) == -1);
    CHECK(orch_results_open(&c, ORCH_PACK_COMPACT, keyed, sizeof keyed, 2) == 0);
    CHECK(orch_results_next(&c, &r) == 0 && orch_results_next(&c, &r) == 0 && strcmp(r.key, "2") == 0);
}

/* The compact form's bytes, written out by hand for the plain rows at
 * the edges of the one-byte lengths (a key of 0, 127 and 128 bytes; a
 * step of 127 and 128) and for rows beside them that are not plain. */
static void test_compact_bytes(void)
{
    static char k127[128], k128[129];
    memset(k127, 'a', 127);
    memset(k128, 'b', 128);
    struct orch_result rows[] = {
        {1, "", "ok", NULL, NULL, 0},     {128, k127, "ok", NULL, NULL, 0},
        {256, k128, "ok", NULL, NULL, 0}, {257, "x", "failed", "e", NULL, 0},
        {258, "y", "ok", NULL, "d", 1},   {259, "z", "okay", NULL, NULL, 0},
        {260, NULL, "ok", NULL, NULL, 0},
    };
    enum { N = sizeof rows / sizeof rows[0] };
    unsigned char want[600];
    size_t w = 0;
    want[w++] = 1, want[w++] = 0x09, want[w++] = 0, want[w++] = 0;
    want[w++] = 127, want[w++] = 0x09, want[w++] = 127;
    memcpy(want + w, k127, 128), w += 128;
    want[w++] = 0x80, want[w++] = 1, want[w++] = 0x09, want[w++] = 0x80, want[w++] = 1;
    memcpy(want + w, k128, 129), w += 129;
    const unsigned char tail[] = {1, 0x1a, 1, 'x', 0, 1, 'e', 0,                /* failed, an error */
                                  1, 0x29, 1, 'y', 0, 1, 'd',                   /* ok with data */
                                  1, 0x08, 1, 'z', 0, 4, 'o', 'k', 'a', 'y', 0, /* a status as text */
                                  1, 0x01};                                     /* no key */
    memcpy(want + w, tail, sizeof tail), w += sizeof tail;
    size_t len = 0;
    unsigned char *got = orch_results_pack(ORCH_PACK_COMPACT, rows, N, &len);
    CHECK(got != NULL && len == w);
    CHECK(got != NULL && len == w && memcmp(got, want, w) == 0);
    free(got);
}

/* Results packed one at a time as rows settle: the rows without an
 * error give the bytes orch_results_pack makes of them as one list, the
 * rows with one the same of theirs; merged back they are the list again,
 * in seq order. */
static void test_packer(void)
{
    enum { N = 700 };
    static struct orch_result rows[N], ok[N], bad[N];
    static char keys[N][200];
    struct orch_results_packer pk = {0};
    size_t nok = 0, nbad = 0;
    for (int i = 0; i < N; i++) {
        int64_t seq = 3 + (int64_t)i * (i % 50 == 0 ? 200 : 1); /* some steps past one varint byte */
        seq = i > 0 && seq <= rows[i - 1].seq ? rows[i - 1].seq + 1 : seq;
        /* keys of 1 to 199 bytes: some past the plain path's 127 */
        memset(keys[i], 'k', (size_t)(i % 199) + 1);
        keys[i][i % 199 + 1] = '\0';
        const char *status = i % 9 == 0    ? "failed"
                             : i % 10 == 0 ? "dropped"
                             : i % 11 == 0 ? "defaulted"
                                           : "ok";
        const char *error = i % 9 == 0 ? "it failed" : i % 11 == 0 ? "fell back" : NULL;
        rows[i] = (struct orch_result){seq, i % 13 == 0 ? NULL : keys[i], status, error, NULL, 0};
        if (error != NULL)
            bad[nbad++] = rows[i];
        else
            ok[nok++] = rows[i];
        CHECK(orch_results_packer_add(&pk, &rows[i]) == 0);
    }
    CHECK(pk.ok.n == (int64_t)nok && pk.failed.n == (int64_t)nbad && pk.last == rows[N - 1].seq);
    CHECK(pk.ok.first == ok[0].seq && pk.ok.last == ok[nok - 1].seq);
    CHECK(pk.failed.first == bad[0].seq && pk.failed.last == bad[nbad - 1].seq);
    size_t len = 0;
    unsigned char *want = orch_results_pack(ORCH_PACK_COMPACT, ok, nok, &len);
    CHECK(want != NULL && pk.ok.len == len && memcmp(pk.ok.p, want, len) == 0);
    free(want);
    want = orch_results_pack(ORCH_PACK_COMPACT, bad, nbad, &len);
    CHECK(want != NULL && pk.failed.len == len && memcmp(pk.failed.p, want, len) == 0);
    free(want);

    /* merged: the chunk of the ok rows and the list of the others */
    struct orch_results_chunk chunk = {ORCH_PACK_COMPACT, pk.ok.p,     pk.ok.len,
                                       pk.ok.n,           pk.ok.first, pk.ok.last};
    struct orch_result *all = NULL;
    CHECK(orch_results_merge(&chunk, bad, nbad, &all) == 0);
    int same = 0;
    for (int i = 0; all != NULL && i < N; i++)
        same += same_result(&all[i], &rows[i]);
    CHECK(same == N);
    free(all);
    /* a chunk that holds fewer results than it says, or is cut, is refused */
    chunk.n++;
    CHECK(orch_results_merge(&chunk, bad, nbad, &all) == -2);
    chunk.n--;
    chunk.len -= 1;
    CHECK(orch_results_merge(&chunk, NULL, 0, &all) == -2);

    /* refused, nothing appended: a seq not past the last, no status, data */
    struct orch_result r = {rows[N - 1].seq, "x", "ok", NULL, NULL, 0};
    size_t before = pk.ok.len;
    CHECK(orch_results_packer_add(&pk, &r) == -2);
    r.seq++;
    r.status = NULL;
    CHECK(orch_results_packer_add(&pk, &r) == -2);
    r.status = "ok";
    r.data = "d";
    r.data_len = 1;
    CHECK(orch_results_packer_add(&pk, &r) == -2);
    CHECK(pk.ok.len == before && pk.ok.n == (int64_t)nok);

    /* cleared: empty, a large buffer given back, a small one kept; the
     * seqs still go on from the last one added */
    size_t cap = pk.ok.cap;
    orch_results_packer_clear(&pk, cap);
    CHECK(pk.ok.n == 0 && pk.ok.len == 0 && pk.ok.p != NULL && pk.ok.cap == cap && pk.failed.n == 0);
    orch_results_packer_clear(&pk, cap - 1);
    CHECK(pk.ok.p == NULL && pk.ok.cap == 0);
    r.data = NULL;
    r.data_len = 0;
    CHECK(orch_results_packer_add(&pk, &r) == 0 && pk.ok.n == 1 && pk.ok.first == r.seq);
    r.seq = 1;
    CHECK(orch_results_packer_add(&pk, &r) == -2);
    orch_results_packer_free(&pk);
    CHECK(pk.ok.p == NULL && pk.failed.p == NULL && pk.last == 0);
}

int main(void)
{
    test_round_trip(ORCH_PACK_FIXED);
    test_round_trip(ORCH_PACK_KEYED);
    test_round_trip(ORCH_PACK_COMPACT);
    test_refused();
    test_compact_is_small();
    test_counted_keys();
    test_compact_bytes();
    test_packer();
    return check_report();
}
