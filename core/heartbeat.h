/* heartbeat.h — a loop timer that keeps a run's heartbeat fresh in the
 * store, so other processes can tell a live run from a crashed one.
 *
 * Pure C (no lua.h): depends on loop.h and store.h. A failed heartbeat
 * write is not fatal here; the run's next checkpoint reports it. */
#ifndef ORCH_HEARTBEAT_H
#define ORCH_HEARTBEAT_H

#include <stdint.h>

#include "loop.h"
#include "store.h"

/* Zeroed means stopped. */
struct orch_heartbeat {
    struct orch_loop *loop;
    struct orch_store *st; /* borrowed */
    struct orch_timer *timer;
    char *run_id; /* owned */
    int64_t every_ms;
    /* orch worker: the lease this process holds, heartbeated with the run
     * (orch_heartbeat_lease); worker NULL when none */
    char *worker; /* owned */
    int64_t lease_no;
};

/* Refreshes run_id's heartbeat every every_ms from loop (stopping any beat
 * h had). 0, or -1 when memory runs out (h stopped). */
int orch_heartbeat_start(struct orch_heartbeat *h, struct orch_loop *loop, struct orch_store *st,
                         const char *run_id, int64_t every_ms);

/* Also heartbeats lease no of the run for worker, by the store's clock,
 * until orch_heartbeat_stop (call after orch_heartbeat_start). 0, or -1
 * when memory runs out. */
int orch_heartbeat_lease(struct orch_heartbeat *h, int64_t no, const char *worker);

/* Cancels the timer and frees the run id; idempotent. */
void orch_heartbeat_stop(struct orch_heartbeat *h);

#endif
