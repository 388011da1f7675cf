/* test_journal_group.c — unit tests of the pure-C loop callbacks of a
 * store: the group commit of LLM replies (journal_group.c) answering
 * waiting lookups from the loop's prepare hook, and the heartbeat timer
 * (heartbeat.c) refreshing a run's heartbeat. */
#include "check.h"
#include "fixtures.h"
#include "heartbeat.h"
#include "journal_group.h"
#include "loop.h"
#include "store.h"

static int woken[8];

static void wake(void *ud)
{
    woken[(long)ud]++;
}

static struct orch_journal_entry reply(const char *key, const char *response)
{
    size_t n = strlen(response);
    struct orch_journal_entry e = {.key = key, .run_id = "r1", .model = "m", .response = response};
    e.provider = "mock";
    e.response_len = n;
    e.tokens_in = 3;
    return e;
}

static void test_group_commit(struct orch_loop *loop, struct orch_store *st)
{
    struct orch_journal_group g;
    orch_journal_group_init(&g, loop, st);
    char buf[16] = "hello";
    struct orch_journal_entry e = reply("a", buf);
    CHECK(orch_journal_group_put(&g, &e) == 0);
    buf[0] = 'j'; /* the group keeps its own copy */
    const struct orch_journal_entry *p = orch_journal_group_pending(&g, "a");
    CHECK(p != NULL && p->response_len == 5 && memcmp(p->response, "hello", 5) == 0);
    CHECK(p != NULL && p->created_ms > 0);
    CHECK(orch_journal_group_pending(&g, "b") == NULL);
    CHECK(g.hooked == 1);

    struct orch_journal_wait found = {0}, missing = {0}, cancelled = {0};
    CHECK(orch_journal_group_wait(&g, &found, "a", wake, (void *)1L) == 0);
    CHECK(orch_journal_group_wait(&g, &missing, "zz", wake, (void *)2L) == 0);
    CHECK(orch_journal_group_wait(&g, &cancelled, "a", wake, (void *)3L) == 0);
    CHECK(found.state == ORCH_JWAIT_QUEUED && g.nwaiting == 3);
    orch_journal_wait_unqueue(&cancelled); /* its task was cancelled */
    CHECK(cancelled.state == ORCH_JWAIT_DONE && g.nwaiting == 2);

    /* nothing is committed until the loop's next round: then all at once */
    CHECK(orch_loop_run_once(loop, 0) == 2);
    CHECK(woken[1] == 1 && woken[2] == 1 && woken[3] == 0);
    CHECK(found.state == ORCH_JWAIT_FOUND);
    CHECK(found.out.response != NULL && strcmp(found.out.response, "hello") == 0);
    CHECK(found.out.tokens_in == 3);
    CHECK(missing.state == ORCH_JWAIT_MISSING);
    CHECK(g.npending == 0 && g.nwaiting == 0);
    CHECK(orch_journal_group_pending(&g, "a") == NULL);
    CHECK_STR(g.err, "");
    orch_journal_wait_clear(&found);
    orch_journal_wait_clear(&missing);
    orch_journal_wait_clear(&cancelled);
    orch_journal_wait_clear(&cancelled); /* idempotent */

    /* after release, a flush answers lookups with the store closed */
    orch_journal_group_release(&g);
    CHECK(g.st == NULL && g.hooked == 0);
    struct orch_journal_wait late = {0};
    CHECK(orch_journal_group_wait(&g, &late, "a", wake, (void *)4L) == 0);
    CHECK(orch_journal_group_flush(&g) == 1);
    CHECK(late.state == ORCH_JWAIT_FAILED && woken[4] == 1);
    CHECK_STR(late.err, "the store is closed");
    orch_journal_wait_clear(&late);
    orch_journal_group_release(&g);
}

static void test_heartbeat(struct orch_loop *loop, struct orch_store *st)
{
    struct orch_run r = make_run("hb", "wf", "id", ORCH_RUN_RUNNING, 1);
    r.heartbeat_ms = 1;
    CHECK(orch_store_run_create(st, &r) == 0);
    struct orch_heartbeat h = {0};
    CHECK(orch_heartbeat_start(&h, loop, st, "hb", 1) == 0);
    CHECK(orch_loop_timers_pending(loop) == 1);
    struct orch_run got = {0};
    int64_t before = 0;
    CHECK(orch_store_run_get(st, "hb", &got) == 1);
    before = got.heartbeat_ms;
    orch_run_clear(&got);
    CHECK(orch_loop_run_once(loop, -1) >= 1); /* the beat fires and re-arms */
    CHECK(orch_loop_timers_pending(loop) == 1);
    CHECK(orch_store_run_get(st, "hb", &got) == 1);
    CHECK(before == 1 && got.heartbeat_ms > 1);
    orch_run_clear(&got);
    orch_heartbeat_stop(&h);
    CHECK(orch_loop_timers_pending(loop) == 0 && h.run_id == NULL);
    orch_heartbeat_stop(&h); /* idempotent */
}

int main(void)
{
    char err[512];
    struct orch_loop *loop = orch_loop_new();
    struct orch_store *st = orch_store_open(":memory:", err, sizeof err);
    CHECK(st != NULL);
    if (st == NULL) {
        fprintf(stderr, "open: %s\n", err);
        return check_report();
    }
    test_group_commit(loop, st);
    test_heartbeat(loop, st);
    orch_store_close(st);
    orch_loop_free(loop);
    return check_report();
}
