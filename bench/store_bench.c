/* store_bench.c — what one checkpoint and one journal group commit cost on
 * a state store, whatever its backend: argv[1] is the store (a file path,
 * :memory: or a postgres:// URL), argv[2] a label. Prints one line per
 * figure: median and mean of ROUNDS operations, in milliseconds.
 *   checkpoint: 500 results + 2 state entries + the run row + a 2 KiB
 *               memento, one transaction (as run.lua writes every 500 rows)
 *   journal:    50 replies of 1.5 KiB put and 50 lookups, one group commit
 *               (what a scheduler round at concurrency 200 sends) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"

enum { ROUNDS = 40, NRES = 500, NJ = 50 };

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *label, const char *what, double *ms)
{
    double sum = 0;
    for (int i = 0; i < ROUNDS; i++)
        sum += ms[i];
    qsort(ms, ROUNDS, sizeof ms[0], cmp_double);
    printf("%-28s %-10s median %7.3f ms  mean %7.3f ms\n", label, what, ms[ROUNDS / 2], sum / ROUNDS);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: store_bench STORE LABEL\n");
        return 2;
    }
    char err[512];
    struct orch_store *st = orch_store_open(argv[1], err, sizeof err);
    if (st == NULL) {
        fprintf(stderr, "store_bench: %s\n", err);
        return 1;
    }
    char run_id[64];
    snprintf(run_id, sizeof run_id, "bench-%ld", (long)time(NULL));
    struct orch_run run = {0};
    run.id = run_id;
    run.name = (char *)"bench";
    run.identity = run_id;
    run.status = ORCH_RUN_RUNNING;
    if (orch_store_run_create(st, &run) != 0) {
        fprintf(stderr, "store_bench: %s\n", st->err);
        return 1;
    }
    static struct orch_result res[NRES];
    static char keys[NRES][16];
    char memento[2048];
    memset(memento, 'm', sizeof memento);
    struct orch_kv kv[2] = {{"seen", "1234", 4}, {"labels", "{\"a\":1,\"b\":2}", 13}};
    double ms[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < NRES; i++) {
            snprintf(keys[i], sizeof keys[i], "%d", r * NRES + i + 1);
            res[i] = (struct orch_result){r * NRES + i + 1, keys[i], "ok", NULL, NULL, 0};
        }
        struct orch_checkpoint c = {0};
        c.reason = (char *)"rows";
        c.input_index = (r + 1) * NRES;
        c.memento = memento;
        c.memento_len = sizeof memento;
        run.rows_done = (r + 1) * NRES;
        double t0 = now_ms();
        if (orch_store_checkpoint_write(st, &run, &c, res, NRES, kv, 2) != 0) {
            fprintf(stderr, "store_bench: %s\n", st->err);
            return 1;
        }
        ms[r] = now_ms() - t0;
        free(c.checksum);
    }
    report(argv[2], "checkpoint", ms);

    char reply[1536];
    memset(reply, 'r', sizeof reply);
    static char jkeys[ROUNDS][NJ][96];
    struct orch_journal_entry e[NJ];
    struct orch_journal_lookup g[NJ];
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < NJ; i++) {
            snprintf(jkeys[r][i], sizeof jkeys[r][i], "%s-%d-%d", run_id, r, i);
            e[i] = (struct orch_journal_entry){.key = jkeys[r][i],
                                               .run_id = run_id,
                                               .provider = "openai",
                                               .model = "m",
                                               .response = reply,
                                               .response_len = sizeof reply};
            /* half the lookups find a reply of the round before, half miss */
            g[i] = (struct orch_journal_lookup){.key = r > 0 && i % 2 ? jkeys[r - 1][i] : "missing"};
        }
        double t0 = now_ms();
        if (orch_store_journal_batch(st, e, NJ, g, NJ) != 0) {
            fprintf(stderr, "store_bench: %s\n", st->err);
            return 1;
        }
        ms[r] = now_ms() - t0;
        for (int i = 0; i < NJ; i++)
            orch_journal_clear(&g[i].out);
    }
    report(argv[2], "journal", ms);
    orch_store_close(st);
    return 0;
}
