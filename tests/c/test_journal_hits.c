/* test_journal_hits.c — unit tests of the journal hits a store counts in
 * memory before writing them (journal_hits.c): counts per key, the bound
 * on keys, the sorted listing the store writes from (by row, then key),
 * reuse, and the packed form the store logs them in. */
#include "check.h"
#include "journal_hits.h"

static void test_counts(void)
{
    struct orch_jhits h = {0};
    CHECK(orch_jhits_get(&h, "a") == 0); /* nothing allocated yet */
    CHECK(orch_jhits_add(&h, "b", 0) == 1);
    CHECK(orch_jhits_add(&h, "a", 0) == 1);
    CHECK(orch_jhits_add(&h, "b", 0) == 2);
    CHECK(orch_jhits_get(&h, "b") == 2 && orch_jhits_get(&h, "a") == 1 && orch_jhits_get(&h, "c") == 0);
    CHECK(h.n == 2);
    struct orch_jhit **s = orch_jhits_sorted(&h);
    CHECK(s != NULL && strcmp(s[0]->key, "a") == 0 && s[0]->n == 1);
    CHECK(s != NULL && strcmp(s[1]->key, "b") == 0 && s[1]->n == 2);
    free(s);
    orch_jhits_clear(&h);
    CHECK(h.n == 0 && orch_jhits_get(&h, "b") == 0 && orch_jhits_sorted(&h) == NULL);
    CHECK(orch_jhits_add(&h, "b", 0) == 1); /* the table is reused */
    orch_jhits_free(&h);
    orch_jhits_free(&h); /* idempotent */
    CHECK(h.slots == NULL && h.n == 0);
}

/* ORCH_JHITS_MAX keys, then a new key is refused (the store writes the
 * counts first) while the keys already there still count. */
static void test_full(void)
{
    struct orch_jhits h = {0};
    char key[40];
    int ok = 1;
    for (int i = 0; i < ORCH_JHITS_MAX; i++) {
        snprintf(key, sizeof key, "%032x", (unsigned)(i * 2654435761u));
        ok = ok && orch_jhits_add(&h, key, 0) == 1;
    }
    CHECK(ok && h.n == ORCH_JHITS_MAX);
    CHECK(orch_jhits_add(&h, "not there", 0) == -1 && h.n == ORCH_JHITS_MAX);
    snprintf(key, sizeof key, "%032x", (unsigned)(7 * 2654435761u));
    CHECK(orch_jhits_add(&h, key, 0) == 2);
    struct orch_jhit **s = orch_jhits_sorted(&h);
    int sorted = s != NULL;
    for (int i = 1; sorted && i < ORCH_JHITS_MAX; i++)
        sorted = strcmp(s[i - 1]->key, s[i]->key) < 0;
    CHECK(sorted);
    free(s);
    orch_jhits_free(&h);
}

/* Sorted by the row each key was found at, the table's order; keys of an
 * unknown row (0) first, by key; a key's row is its latest lookup's. */
static void test_rows(void)
{
    struct orch_jhits h = {0};
    CHECK(orch_jhits_add(&h, "a", 30) == 1);
    CHECK(orch_jhits_add(&h, "b", 10) == 1);
    CHECK(orch_jhits_add(&h, "c", 20) == 1);
    CHECK(orch_jhits_add(&h, "e", 0) == 1);
    CHECK(orch_jhits_add(&h, "d", 0) == 1);
    CHECK(orch_jhits_add(&h, "c", 40) == 2); /* found elsewhere by now */
    struct orch_jhit **s = orch_jhits_sorted(&h);
    CHECK(s != NULL);
    if (s != NULL) {
        const char *want[] = {"d", "e", "b", "a", "c"};
        const int64_t rows[] = {0, 0, 10, 30, 40};
        for (int i = 0; i < 5; i++)
            CHECK(strcmp(s[i]->key, want[i]) == 0 && s[i]->row == rows[i]);
    }
    free(s);
    orch_jhits_clear(&h);
    CHECK(orch_jhits_add(&h, "a", 0) == 1);
    s = orch_jhits_sorted(&h);
    CHECK(s != NULL && s[0]->row == 0); /* cleared with its count */
    free(s);
    orch_jhits_free(&h);
}

/* Counts of several hits at once with their entry's cost, summed; packed
 * and read back entry by entry; a truncated buffer or a key too long for
 * the reader's buffer is refused. */
static void test_pack(void)
{
    struct orch_jhits h = {0};
    CHECK(orch_jhits_addn(&h, "3f9a2c1b00000000000000000000000a", 7, 3, 0.25) == 3);
    CHECK(orch_jhits_addn(&h, "k", 2, 1, 2.0) == 1);
    CHECK(orch_jhits_addn(&h, "k", 2, 1, 2.0) == 2);
    int64_t hits = -1;
    double saved = -1;
    orch_jhits_sums(&h, &hits, &saved);
    CHECK(hits == 5 && saved == 3 * 0.25 + 2 * 2.0);
    struct orch_jhit **s = orch_jhits_sorted(&h);
    size_t len = 0;
    unsigned char *b = s != NULL ? orch_jhits_pack(s, h.n, &len, &hits, &saved) : NULL;
    free(s);
    CHECK(b != NULL && len == 2 * 18 + 32 + 1 && hits == 5 && saved == 0.75 + 4.0);
    if (b != NULL) {
        size_t off = 0;
        int64_t row, n;
        char key[64];
        CHECK(orch_jhits_unpack(b, len, &off, &row, &n, key, sizeof key) == 1);
        CHECK(row == 2 && n == 2 && strcmp(key, "k") == 0); /* by row */
        CHECK(orch_jhits_unpack(b, len, &off, &row, &n, key, sizeof key) == 1);
        CHECK(row == 7 && n == 3 && strcmp(key, "3f9a2c1b00000000000000000000000a") == 0);
        CHECK(orch_jhits_unpack(b, len, &off, &row, &n, key, sizeof key) == 0 && off == len);
        off = 0;
        CHECK(orch_jhits_unpack(b, len - 1, &off, &row, &n, key, sizeof key) == 1);
        CHECK(orch_jhits_unpack(b, len - 1, &off, &row, &n, key, sizeof key) == -1);
        off = 20;
        CHECK(orch_jhits_unpack(b, len, &off, &row, &n, key, sizeof key) == -1); /* not at an entry */
        off = 19;
        CHECK(orch_jhits_unpack(b, len, &off, &row, &n, key, 32) == -1); /* its key does not fit */
        free(b);
    }
    orch_jhits_free(&h);
    orch_jhits_sums(&h, &hits, &saved);
    CHECK(hits == 0 && saved == 0.0);
}

/* A table with a cap of its own takes that many keys (a fold's table,
 * which adds up the log's counts of a whole journal at once). */
static void test_cap(void)
{
    struct orch_jhits h = {.cap = 2 * ORCH_JHITS_MAX};
    char key[40];
    int ok = 1;
    for (int i = 0; i < 2 * ORCH_JHITS_MAX; i++) {
        snprintf(key, sizeof key, "%032x", (unsigned)(i * 2654435761u));
        ok = ok && orch_jhits_addn(&h, key, i + 1, 2, 0.0) == 2;
    }
    CHECK(ok && h.n == 2 * ORCH_JHITS_MAX);
    CHECK(orch_jhits_add(&h, "one too many", 0) == -1);
    snprintf(key, sizeof key, "%032x", (unsigned)(5 * 2654435761u));
    CHECK(orch_jhits_addn(&h, key, 6, 3, 0.0) == 5);
    int64_t hits = 0;
    double saved = 0;
    orch_jhits_sums(&h, &hits, &saved);
    CHECK(hits == 4 * ORCH_JHITS_MAX + 3);
    orch_jhits_free(&h);
}

int main(void)
{
    test_cap();
    test_counts();
    test_pack();
    test_rows();
    test_full();
    return check_report();
}
