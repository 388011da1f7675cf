/* journal_group.h — the group commit of LLM replies for one open store.
 *
 * The replies the tasks received in one round of the scheduler commit in
 * one transaction at the start of the loop's next iteration (a prepare
 * hook), before any request queued in that round goes out: so a crash can
 * only re-send requests that were in flight. A task's lookup waits for that
 * same transaction (one set of locks for the whole round instead of one per
 * lookup) and sees the waiting replies.
 *
 * Pure C (no lua.h): depends on loop.h and store.h. Runs from the loop, so
 * it never calls Lua: a waiter is woken through its wake callback, which
 * the binding (store_lua.c) points at the scheduler. */
#ifndef ORCH_JOURNAL_GROUP_H
#define ORCH_JOURNAL_GROUP_H

#include <stddef.h>

#include "loop.h"
#include "store.h"

/* A waiter's state: queued, then found, missing or failed; done (zero, so a
 * zeroed waiter is not queued) while off the queue without an answer. */
enum { ORCH_JWAIT_DONE, ORCH_JWAIT_QUEUED, ORCH_JWAIT_FOUND, ORCH_JWAIT_MISSING, ORCH_JWAIT_FAILED };

struct orch_journal_group;

/* A lookup waiting for the group transaction. The owner (a to-be-closed
 * userdata on the task's stack) zeroes it, and frees it with
 * orch_journal_wait_clear whatever ends the wait. */
struct orch_journal_wait {
    struct orch_journal_group *g;
    char *key;                     /* owned */
    size_t qi;                     /* index in g->waiting while queued */
    int state;                     /* ORCH_JWAIT_* */
    int reply;                     /* set by the owner: only the reply is read (orch_journal_lookup) */
    struct orch_journal_owned out; /* the entry when found, owned */
    char err[512];                 /* why, when failed (as long as the store's) */
    void (*wake)(void *ud);        /* called once, when answered */
    void *ud;
};

/* A reply waiting for its commit: e's strings are copies in one block,
 * mem (owned): one allocation a reply rather than one a string. */
struct orch_journal_pending {
    struct orch_journal_entry e;
    char *mem;
};

struct orch_journal_group {
    struct orch_store *st; /* borrowed from the binding; NULL once closed */
    struct orch_loop *loop;
    struct orch_journal_pending *pending; /* replies waiting for their commit */
    size_t npending, cappending;
    struct orch_journal_wait **waiting; /* lookups waiting for the transaction */
    size_t nwaiting, capwaiting;
    int hooked;    /* the prepare hook is registered */
    int peeking;   /* the store holds a read snapshot for this round's lookups */
    char err[512]; /* a failed group commit, for the next caller to report */
};

/* Starts an empty group for st on loop (neither owned). */
void orch_journal_group_init(struct orch_journal_group *g, struct orch_loop *loop, struct orch_store *st);

/* Copies e into the group (created_ms set to now). It commits before the
 * loop's next round, or at once when the loop has no room for the hook.
 * 0, or -1 when memory runs out (nothing queued). */
int orch_journal_group_put(struct orch_journal_group *g, const struct orch_journal_entry *e);

/* The reply for key still waiting for its commit, or NULL. Valid until the
 * next flush. */
const struct orch_journal_entry *orch_journal_group_pending(const struct orch_journal_group *g,
                                                            const char *key);

/* Answers a lookup at once from the store's read snapshot of this round
 * (orch_store_journal_peek), which the next flush ends before it commits:
 * 1 found (*out the caller's to clear), 0 missing (both with the hit
 * counted as a group's lookup counts it), or -1: no answer now (a store
 * without a snapshot, no hook to end it, a failed read); then wait. Does
 * not look at the replies waiting for their commit (check those first). */
int orch_journal_group_peek(struct orch_journal_group *g, const char *key, int reply,
                            struct orch_journal_owned *out);

/* Registers the prepare hook that flushes the group; 0, or -1 when the
 * loop has no room. */
int orch_journal_group_hook(struct orch_journal_group *g);

/* Commits the waiting replies and answers the waiting lookups in one
 * transaction; returns how many waiters it woke. A failed commit of
 * replies is kept in g->err, and fails the lookups. */
int orch_journal_group_flush(struct orch_journal_group *g);

/* Queues w (zeroed by the caller) for key, to be answered by the next
 * flush through wake(ud). 0, or -1 when memory runs out (w not queued;
 * orch_journal_wait_clear still frees what it holds). */
int orch_journal_group_wait(struct orch_journal_group *g, struct orch_journal_wait *w, const char *key,
                            void (*wake)(void *ud), void *ud);

/* Takes w off the queue if it is still there (a cancelled task). */
void orch_journal_wait_unqueue(struct orch_journal_wait *w);

/* Unqueues w and frees what it owns; idempotent. */
void orch_journal_wait_clear(struct orch_journal_wait *w);

/* Flushes, unhooks and frees the queues; g->st stays the caller's to
 * close, and is forgotten. Idempotent. */
void orch_journal_group_release(struct orch_journal_group *g);

#endif
