/* heartbeat.c — a run's heartbeat timer (heartbeat.h). */
#include "heartbeat.h"

#include <stdlib.h>
#include <string.h>

/* Refreshes the heartbeat and re-arms, from the loop. */
static void heartbeat_fire(void *ud)
{
    struct orch_heartbeat *h = ud;
    h->timer = NULL;
    if (h->st == NULL || h->run_id == NULL)
        return;
    orch_store_run_heartbeat(h->st, h->run_id, (int64_t)orch_wall_ms());
    if (h->worker != NULL) /* a lease taken back shows at its commit, which then writes nothing */
        orch_store_lease_heartbeat(h->st, h->run_id, h->lease_no, h->worker);
    h->timer = orch_loop_timer_add(h->loop, (uint64_t)h->every_ms, heartbeat_fire, h);
}

int orch_heartbeat_start(struct orch_heartbeat *h, struct orch_loop *loop, struct orch_store *st,
                         const char *run_id, int64_t every_ms)
{
    orch_heartbeat_stop(h);
    h->run_id = strdup(run_id);
    if (h->run_id == NULL)
        return -1;
    h->loop = loop;
    h->st = st;
    h->every_ms = every_ms;
    h->timer = orch_loop_timer_add(loop, (uint64_t)every_ms, heartbeat_fire, h);
    return 0;
}

void orch_heartbeat_stop(struct orch_heartbeat *h)
{
    if (h->timer != NULL)
        orch_loop_timer_cancel(h->loop, h->timer);
    h->timer = NULL;
    free(h->run_id);
    h->run_id = NULL;
    free(h->worker);
    h->worker = NULL;
}

int orch_heartbeat_lease(struct orch_heartbeat *h, int64_t no, const char *worker)
{
    free(h->worker);
    h->worker = strdup(worker);
    h->lease_no = no;
    return h->worker != NULL ? 0 : -1;
}
