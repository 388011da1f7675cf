/* store.c — timings of the state store (storage/store_sqlite.c): a
 * checkpoint of 500 results and one of 100,000 (key and status only, the
 * size the adaptive policy writes on a fast run; given as a list, and
 * packed as the rows settled, as a run hands them over), and journal
 * writes and lookups, on a file
 * (WAL, synchronous=NORMAL) and in memory. Prints one line a measure; the
 * sanity checks on what was stored make it exit 1 if the store lost data.
 *   build/bench_store [scratch-dir]      (bench/run.sh runs it)
 * Depends on: storage/store.h, tests/c/check.h. */
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "check.h"
#include "result_pack.h"
#include "store.h"

static int count_result(void *ud, const struct orch_result *r)
{
    (void)r;
    (*(int *)ud)++;
    return 0;
}

static double mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

/* 1,000 journal writes (each its own commit, as when replies arrive one by
 * one), then as many lookups that hit and that miss; prints the means. */
static void bench_journal(struct orch_store *st, const char *label)
{
    enum { N = 1000 };
    char body[1500];
    int bl = snprintf(body, sizeof body, "{\"id\":\"chatcmpl-1\",\"choices\":[{\"message\":{\"content\":\"");
    while (bl < (int)sizeof body - 40)
        bl += snprintf(body + bl, sizeof body - (size_t)bl, "positive ");
    bl += snprintf(body + bl, sizeof body - (size_t)bl, "\"}}]}");
    static char keys[N][33];
    for (int i = 0; i < N; i++)
        snprintf(keys[i], sizeof keys[i], "%016llx%016llx", (unsigned long long)i * 2654435761ULL,
                 (unsigned long long)i);
    struct orch_journal_entry e = {0};
    e.run_id = "bench";
    e.provider = "openai";
    e.model = "gpt-4o-mini";
    e.response = body;
    e.response_len = (size_t)bl;
    e.tokens_in = 500;
    e.tokens_out = 20;
    e.cost_usd = 0.0001;
    e.latency_ms = 700;
    int failed = 0;
    static double took[N];
    double t0 = mono_us();
    for (int i = 0; i < N; i++) {
        e.key = keys[i];
        double t = mono_us();
        failed += orch_store_journal_put(st, &e) != 0;
        took[i] = mono_us() - t;
    }
    double put_us = (mono_us() - t0) / N;
    CHECK(failed == 0);
    qsort(took, N, sizeof took[0], cmp_double);

    struct orch_journal_owned got;
    int found = 0;
    t0 = mono_us();
    for (int i = 0; i < N; i++) {
        if (orch_store_journal_get(st, keys[i], &got) == 1) {
            found += got.response_len == (size_t)bl && got.hits == 1;
            orch_journal_clear(&got);
        }
    }
    double hit_us = (mono_us() - t0) / N;
    CHECK(found == N);
    int missed = 0;
    char miss[40];
    t0 = mono_us();
    for (int i = 0; i < N; i++) {
        snprintf(miss, sizeof miss, "ffffffff%024d", i);
        missed += orch_store_journal_get(st, miss, &got) == 0;
    }
    double miss_us = (mono_us() - t0) / N;
    CHECK(missed == N);
    struct orch_store_stats s;
    CHECK(orch_store_stats(st, &s) == 0);
    CHECK(s.journal_entries == N && s.journal_hits == N);
    CHECK(s.journal_saved_usd > 0.0001 * N - 1e-9 && s.journal_saved_usd < 0.0001 * N + 1e-9);
    /* the max is SQLite's automatic WAL checkpoint (an fsync of the database) landing on a put */
    printf("journal (%s, %d-byte replies): put mean %.1f us (median %.1f, max %.1f), get hit mean %.1f us, "
           "get miss mean %.1f us, over %d each\n",
           label, bl, put_us, took[N / 2], took[N - 1], hit_us, miss_us, N);
}

/* The size of the file at path, or -1 (no path, or no such file). */
static long long file_size(const char *path)
{
    struct stat sb;
    return path != NULL && stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* One checkpoint of res[0..n): as a list, or (packed) as a run hands
 * them over, packed as its rows settled (outside the checkpoint, so not
 * in c->duration_ms). 0 or -1. */
static int write_checkpoint(struct orch_store *st, struct orch_run *run, struct orch_checkpoint *c,
                            const struct orch_result *res, int n, int packed)
{
    if (!packed)
        return orch_store_checkpoint_write(st, run, c, res, (size_t)n, NULL, 0);
    struct orch_results_packer pk = {0};
    for (int i = 0; i < n; i++)
        if (orch_results_packer_add(&pk, &res[i]) != 0)
            return -1;
    struct orch_results_chunk chunk = {ORCH_PACK_COMPACT, pk.ok.p,     pk.ok.len,
                                       pk.ok.n,           pk.ok.first, pk.ok.last};
    int rc = orch_store_checkpoint_write_chunk(st, run, c, &chunk, NULL, 0, NULL, 0);
    orch_results_packer_free(&pk);
    return rc;
}

/* nres results + a checkpoint per transaction, repeated rounds times;
 * prints timings, and with wal (the store's -wal file) the pages each
 * checkpoint after the first logged, a figure the machine's load does not
 * change (the WAL must not wrap meanwhile: it restarts after 1,000
 * pages). with_data: each result carries its output line (as a steps run
 * stores); without, key and status only (as a rows run does). */
static void bench_checkpoint(struct orch_store *st, const char *label, int nres, int rounds, int with_data,
                             const char *wal, int packed)
{
    struct orch_run run = {0};
    char id[32];
    snprintf(id, sizeof id, "bench-%d-%d-%d", nres, with_data, packed);
    run.id = id;
    run.name = (char *)"bench";
    run.identity = (char *)"idZ";
    run.status = ORCH_RUN_RUNNING;
    run.created_ms = 5000;
    CHECK(orch_store_run_create(st, &run) == 0);
    const int NRES = nres, ROUNDS = rounds;
    struct orch_result *res = calloc((size_t)NRES, sizeof *res);
    char(*keys)[24] = calloc((size_t)NRES, sizeof *keys);
    char(*data)[200] = calloc((size_t)NRES, sizeof *data);
    CHECK(res != NULL && keys != NULL && data != NULL);
    char memento[4096];
    int ml = snprintf(memento, sizeof memento, "{\"state\":{");
    for (int i = 0; i < 100 && ml < 3900; i++)
        ml += snprintf(memento + ml, sizeof memento - (size_t)ml, "\"k%d\":%d,", i, i * 7);
    ml += snprintf(memento + ml, sizeof memento - (size_t)ml, "\"end\":1}}");
    double total = 0, best = 1e9, worst = 0;
    long long wal0 = -1;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < NRES; i++) {
            int64_t seq = (int64_t)round * NRES + i + 1;
            snprintf(keys[i], sizeof keys[i], "row-%lld", (long long)seq);
            int dl = snprintf(data[i], sizeof data[i],
                              "{\"id\":%lld,\"label\":\"positive\",\"confidence\":0.93,\"text\":\"a review "
                              "that is long enough to look like real output\"}",
                              (long long)seq);
            res[i] = (struct orch_result){
                seq, keys[i], "ok", NULL, with_data ? data[i] : NULL, with_data ? (size_t)dl : 0};
        }
        run.rows_done = (int64_t)(round + 1) * NRES;
        struct orch_checkpoint c = {0};
        c.reason = (char *)"rows";
        c.input_index = run.rows_done;
        c.memento = memento;
        c.memento_len = (size_t)ml;
        CHECK(write_checkpoint(st, &run, &c, res, NRES, packed && !with_data) == 0);
        free(c.checksum);
        if (round == 0)
            wal0 = file_size(wal);
        total += c.duration_ms;
        if (c.duration_ms < best)
            best = c.duration_ms;
        if (c.duration_ms > worst)
            worst = c.duration_ms;
    }
    int n = 0;
    CHECK(orch_store_result_list(st, id, count_result, &n) == 0);
    CHECK(n == NRES * ROUNDS);
    printf("checkpoint of %d results%s%s (%s): mean %.3f ms, min %.3f ms, max %.3f ms over %d writes\n", NRES,
           with_data ? "" : " without data", packed ? ", packed as they settled" : "", label, total / ROUNDS,
           best, worst, ROUNDS);
    long long wal1 = file_size(wal);
    if (wal0 >= 0 && wal1 > wal0 && ROUNDS > 1)
        printf("  WAL pages a checkpoint: %.1f\n", (double)(wal1 - wal0) / (4096 + 24) / (ROUNDS - 1));
    free(res);
    free(keys);
    free(data);
}

int main(int argc, char **argv)
{
    char dir[512], path[600], err[512];
    snprintf(dir, sizeof dir, "%s/bench_store.XXXXXX", argc > 1 ? argv[1] : "/tmp");
    if (argc > 1)
        mkdir(argv[1], 0777);
    if (mkdtemp(dir) == NULL) {
        perror(dir);
        return 2;
    }
    snprintf(path, sizeof path, "%s/bench.db", dir);
    struct orch_store *st = orch_store_open(path, err, sizeof err);
    if (st == NULL) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    char wal[620];
    snprintf(wal, sizeof wal, "%s-wal", path);
    bench_checkpoint(st, "file, WAL, synchronous=NORMAL", 500, 20, 1, wal, 0);
    /* what every_rows(500) writes on bench/passthrough.lua */
    bench_checkpoint(st, "file, WAL, synchronous=NORMAL", 500, 20, 0, wal, 0);
    bench_checkpoint(st, "file, WAL, synchronous=NORMAL", 500, 20, 0, wal, 1);
    /* the size the adaptive policy writes on a fast run (max_rows) */
    bench_checkpoint(st, "file, WAL, synchronous=NORMAL", 100000, 5, 0, NULL, 0);
    bench_checkpoint(st, "file, WAL, synchronous=NORMAL", 100000, 5, 0, NULL, 1);
    bench_journal(st, "file, WAL, synchronous=NORMAL");
    orch_store_close(st);
    st = orch_store_open(":memory:", err, sizeof err);
    if (st == NULL) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    bench_checkpoint(st, ":memory:", 500, 20, 1, NULL, 0);
    bench_checkpoint(st, ":memory:", 100000, 5, 0, NULL, 0);
    bench_checkpoint(st, ":memory:", 100000, 5, 0, NULL, 1);
    orch_store_close(st);
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char f[620];
        snprintf(f, sizeof f, "%s%s", path, suffixes[i]);
        remove(f);
    }
    remove(dir);
    return check_report();
}
