/* test_journal_ahead.c — unit tests of the window of journal entries a
 * store reads ahead (journal_ahead.c): entries found by key with their
 * reply and figures, the bounds on entries and bytes, reuse after a
 * clear, and when lookups follow each other closely enough for a scan. */
#include "check.h"
#include "journal_ahead.h"

static int add(struct orch_jahead *a, const char *key, const char *reply, int64_t row)
{
    return orch_jahead_add(a, key, reply, strlen(reply), row * 10, row * 20, 0.25 * (double)row, row);
}

static void test_find(void)
{
    struct orch_jahead a = {0};
    CHECK(orch_jahead_find(&a, "k1") == NULL); /* nothing allocated yet */
    CHECK(add(&a, "k1", "one", 7) == 0);
    CHECK(add(&a, "k2", "", 8) == 0);
    CHECK(add(&a, "k1", "again", 9) == 0); /* a key is one entry: the first stays */
    CHECK(a.n == 2);
    const struct orch_jahead_entry *e = orch_jahead_find(&a, "k1");
    CHECK(e != NULL && e->resplen == 3 && strcmp(orch_jahead_at(&a, e->resp), "one") == 0);
    CHECK(e != NULL && e->tokens_in == 70 && e->tokens_out == 140 && e->cost_usd == 1.75 && e->row == 7);
    CHECK(e != NULL && strcmp(orch_jahead_at(&a, e->key), "k1") == 0);
    e = orch_jahead_find(&a, "k2");
    CHECK(e != NULL && e->resplen == 0 && orch_jahead_at(&a, e->resp)[0] == '\0' && e->row == 8);
    CHECK(orch_jahead_find(&a, "k3") == NULL && orch_jahead_find(&a, "k") == NULL);

    /* a reply with NUL bytes is kept whole */
    CHECK(orch_jahead_add(&a, "bin", "a\0b", 3, 1, 2, 0.5, 10) == 0);
    e = orch_jahead_find(&a, "bin");
    CHECK(e != NULL && e->resplen == 3 && memcmp(orch_jahead_at(&a, e->resp), "a\0b", 4) == 0);

    orch_jahead_clear(&a);
    CHECK(a.n == 0 && orch_jahead_find(&a, "k1") == NULL && orch_jahead_find(&a, "bin") == NULL);
    CHECK(add(&a, "k2", "two", 3) == 0); /* reused */
    e = orch_jahead_find(&a, "k2");
    CHECK(e != NULL && strcmp(orch_jahead_at(&a, e->resp), "two") == 0 && e->row == 3);
    orch_jahead_free(&a);
    orch_jahead_free(&a); /* idempotent */
    CHECK(a.e == NULL && a.mem == NULL && a.n == 0);
}

/* ORCH_JAHEAD_ROWS entries, then the window is full; every one is found
 * by its key however the keys collide in the table. */
static void test_full(void)
{
    struct orch_jahead a = {0};
    char key[40];
    int ok = 1;
    for (int i = 0; i < ORCH_JAHEAD_ROWS; i++) {
        snprintf(key, sizeof key, "%032x", (unsigned)(i * 2654435761u));
        ok = ok && add(&a, key, key + 20, i + 1) == 0;
    }
    CHECK(ok && a.n == ORCH_JAHEAD_ROWS);
    CHECK(add(&a, "one too many", "x", 1000) == -1 && orch_jahead_find(&a, "one too many") == NULL);
    for (int i = 0; i < ORCH_JAHEAD_ROWS; i++) {
        snprintf(key, sizeof key, "%032x", (unsigned)(i * 2654435761u));
        const struct orch_jahead_entry *e = orch_jahead_find(&a, key);
        ok = ok && e != NULL && e->row == i + 1 && strcmp(orch_jahead_at(&a, e->resp), key + 20) == 0;
    }
    CHECK(ok);
    orch_jahead_free(&a);
}

/* Replies of more than ORCH_JAHEAD_BYTES in all: the window stops short,
 * and a reply larger than the bound alone is never taken. */
static void test_bytes(void)
{
    struct orch_jahead a = {0};
    size_t big = ORCH_JAHEAD_BYTES / 4;
    char *reply = malloc(ORCH_JAHEAD_BYTES + 1);
    CHECK(reply != NULL);
    if (reply == NULL)
        return;
    memset(reply, 'r', ORCH_JAHEAD_BYTES + 1);
    CHECK(orch_jahead_add(&a, "huge", reply, ORCH_JAHEAD_BYTES + 1, 0, 0, 0, 1) == -1);
    CHECK(orch_jahead_add(&a, "a", reply, big, 0, 0, 0, 1) == 0);
    CHECK(orch_jahead_add(&a, "b", reply, big, 0, 0, 0, 2) == 0);
    CHECK(orch_jahead_add(&a, "c", reply, big, 0, 0, 0, 3) == 0);
    CHECK(orch_jahead_add(&a, "d", reply, big, 0, 0, 0, 4) == -1); /* its key and NULs do not fit */
    CHECK(a.n == 3 && a.used <= ORCH_JAHEAD_BYTES);
    const struct orch_jahead_entry *e = orch_jahead_find(&a, "c");
    CHECK(e != NULL && e->resplen == big && orch_jahead_at(&a, e->resp)[big - 1] == 'r');
    CHECK(orch_jahead_find(&a, "d") == NULL);
    orch_jahead_clear(&a);
    CHECK(orch_jahead_add(&a, "d", reply, big, 0, 0, 0, 4) == 0); /* room again */
    free(reply);
    orch_jahead_free(&a);
}

/* A lookup follows the one before when it found an entry after the
 * other's, at most ORCH_JAHEAD_ROWS on; a scan is worth it once two
 * lookups in a row follow. A clear keeps the count. */
static void test_follows(void)
{
    struct orch_jahead a = {0};
    CHECK(orch_jahead_follows(&a, 100) == 0); /* the first: none before */
    CHECK(orch_jahead_follows(&a, 101) == 0); /* one step */
    CHECK(orch_jahead_follows(&a, 101 + ORCH_JAHEAD_ROWS) == 1);
    CHECK(orch_jahead_follows(&a, 102 + ORCH_JAHEAD_ROWS) == 1);
    CHECK(orch_jahead_follows(&a, 103 + 2 * ORCH_JAHEAD_ROWS) == 0); /* too far on */
    CHECK(orch_jahead_follows(&a, 104 + 2 * ORCH_JAHEAD_ROWS) == 0);
    CHECK(orch_jahead_follows(&a, 50) == 0); /* behind */
    CHECK(orch_jahead_follows(&a, 51) == 0);
    CHECK(orch_jahead_follows(&a, 51) == 0); /* the same row */
    CHECK(orch_jahead_follows(&a, 52) == 0);
    orch_jahead_clear(&a);
    CHECK(orch_jahead_follows(&a, 53) == 1);
    orch_jahead_free(&a);
}

int main(void)
{
    test_find();
    test_full();
    test_bytes();
    test_follows();
    return check_report();
}
