/* journal_group.c — the group commit of LLM replies (journal_group.h). */
#include "journal_group.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void orch_journal_group_init(struct orch_journal_group *g, struct orch_loop *loop, struct orch_store *st)
{
    memset(g, 0, sizeof *g);
    g->loop = loop;
    g->st = st;
}

static void pending_free(struct orch_journal_pending *p)
{
    free(p->mem);
    p->mem = NULL;
}

/* Copies s (n bytes and a NUL) to *at and moves *at past it; NULL stays
 * NULL. */
static const char *copy_into(char **at, const char *s, size_t n)
{
    if (s == NULL)
        return NULL;
    char *d = *at;
    memcpy(d, s, n);
    d[n] = '\0';
    *at = d + n + 1;
    return d;
}

int orch_journal_group_put(struct orch_journal_group *g, const struct orch_journal_entry *e)
{
    if (g->npending == g->cappending) {
        size_t cap = g->cappending ? g->cappending * 2 : 64;
        struct orch_journal_pending *q = realloc(g->pending, cap * sizeof *q);
        if (q == NULL)
            return -1;
        g->pending = q;
        g->cappending = cap;
    }
    size_t kn = e->key != NULL ? strlen(e->key) : 0;
    size_t rn = e->run_id != NULL ? strlen(e->run_id) : 0;
    size_t pn = e->provider != NULL ? strlen(e->provider) : 0;
    size_t mn = e->model != NULL ? strlen(e->model) : 0;
    struct orch_journal_pending *p = &g->pending[g->npending];
    p->mem = e->key != NULL ? malloc(kn + rn + pn + mn + e->response_len + 5) : NULL;
    if (p->mem == NULL)
        return -1;
    char *at = p->mem;
    p->e = *e;
    p->e.key = copy_into(&at, e->key, kn);
    p->e.run_id = copy_into(&at, e->run_id, rn);
    p->e.provider = copy_into(&at, e->provider, pn);
    p->e.model = copy_into(&at, e->model, mn);
    p->e.response = copy_into(&at, e->response, e->response_len); /* NULL: the store says what is wrong */
    p->e.created_ms = (int64_t)orch_wall_ms();
    g->npending++;
    if (orch_journal_group_hook(g) != 0)
        orch_journal_group_flush(g); /* no hook to be had: commit each reply at once */
    return 0;
}

const struct orch_journal_entry *orch_journal_group_pending(const struct orch_journal_group *g,
                                                            const char *key)
{
    for (size_t i = 0; i < g->npending; i++) {
        if (strcmp(g->pending[i].e.key, key) == 0)
            return &g->pending[i].e;
    }
    return NULL;
}

/* Answers a queued lookup and wakes its owner. */
static void wait_answer(struct orch_journal_wait *w, int state, const char *err)
{
    w->state = state;
    if (err != NULL)
        snprintf(w->err, sizeof w->err, "%s", err);
    w->wake(w->ud);
}

/* One journal_batch over the pending replies and the waiting lookups;
 * answers the lookups, and keeps a failed commit of replies in g->err. */
static void group_commit(struct orch_journal_group *g)
{
    struct orch_journal_entry *es = malloc((g->npending + 1) * sizeof *es);
    struct orch_journal_lookup *gs = calloc(g->nwaiting + 1, sizeof *gs);
    int rc = -1;
    if (es != NULL && gs != NULL) {
        for (size_t i = 0; i < g->npending; i++)
            es[i] = g->pending[i].e;
        for (size_t i = 0; i < g->nwaiting; i++) {
            gs[i].key = g->waiting[i]->key;
            gs[i].reply = g->waiting[i]->reply;
        }
        rc = orch_store_journal_batch(g->st, es, g->npending, gs, g->nwaiting);
    }
    const char *err = es == NULL || gs == NULL ? "out of memory" : g->st->err;
    if (rc != 0 && g->npending > 0)
        snprintf(g->err, sizeof g->err, "%s", err);
    for (size_t i = 0; i < g->nwaiting; i++) {
        struct orch_journal_wait *w = g->waiting[i];
        if (rc != 0) {
            wait_answer(w, ORCH_JWAIT_FAILED, err);
        } else {
            w->out = gs[i].out; /* ownership moves to the waiter */
            wait_answer(w, gs[i].found ? ORCH_JWAIT_FOUND : ORCH_JWAIT_MISSING, NULL);
        }
    }
    free(es);
    free(gs);
}

int orch_journal_group_peek(struct orch_journal_group *g, const char *key, int reply,
                            struct orch_journal_owned *out)
{
    memset(out, 0, sizeof *out);
    if (g->st == NULL || orch_journal_group_hook(g) != 0)
        return -1;
    struct orch_journal_lookup get = {.key = key, .reply = reply};
    if (orch_store_journal_peek(g->st, &get) != 0)
        return -1;
    g->peeking = 1;
    *out = get.out; /* ownership moves to the caller */
    return get.found;
}

int orch_journal_group_flush(struct orch_journal_group *g)
{
    int woken = (int)g->nwaiting;
    if (g->peeking && g->st != NULL) /* first: the snapshot must not outlive what commits now */
        orch_store_journal_peek_end(g->st);
    g->peeking = 0;
    if (g->npending == 0 && g->nwaiting == 0)
        return 0;
    if (g->st == NULL) {
        for (size_t i = 0; i < g->nwaiting; i++)
            wait_answer(g->waiting[i], ORCH_JWAIT_FAILED, "the store is closed");
        g->nwaiting = 0;
        return woken;
    }
    group_commit(g);
    g->nwaiting = 0;
    for (size_t i = 0; i < g->npending; i++)
        pending_free(&g->pending[i]);
    g->npending = 0;
    return woken;
}

static int group_prepare(void *ud)
{
    return orch_journal_group_flush(ud);
}

int orch_journal_group_hook(struct orch_journal_group *g)
{
    if (!g->hooked)
        g->hooked = orch_loop_on_prepare(g->loop, group_prepare, g) == 0;
    return g->hooked ? 0 : -1;
}

int orch_journal_group_wait(struct orch_journal_group *g, struct orch_journal_wait *w, const char *key,
                            void (*wake)(void *ud), void *ud)
{
    w->state = ORCH_JWAIT_DONE; /* not queued until it is */
    w->g = g;
    w->wake = wake;
    w->ud = ud;
    w->key = strdup(key);
    if (w->key == NULL)
        return -1;
    if (g->nwaiting == g->capwaiting) {
        size_t cap = g->capwaiting ? g->capwaiting * 2 : 64;
        struct orch_journal_wait **q = realloc(g->waiting, cap * sizeof *q);
        if (q == NULL)
            return -1;
        g->waiting = q;
        g->capwaiting = cap;
    }
    w->qi = g->nwaiting;
    g->waiting[g->nwaiting++] = w;
    w->state = ORCH_JWAIT_QUEUED;
    return 0;
}

void orch_journal_wait_unqueue(struct orch_journal_wait *w)
{
    struct orch_journal_group *g = w->g;
    if (w->state != ORCH_JWAIT_QUEUED)
        return;
    g->waiting[w->qi] = g->waiting[--g->nwaiting];
    g->waiting[w->qi]->qi = w->qi;
    w->state = ORCH_JWAIT_DONE;
}

void orch_journal_wait_clear(struct orch_journal_wait *w)
{
    orch_journal_wait_unqueue(w);
    free(w->key);
    w->key = NULL;
    orch_journal_clear(&w->out);
}

void orch_journal_group_release(struct orch_journal_group *g)
{
    orch_journal_group_flush(g);
    if (g->hooked)
        orch_loop_remove_prepare(g->loop, group_prepare, g);
    g->hooked = 0;
    free(g->pending);
    g->pending = NULL;
    g->cappending = 0;
    free(g->waiting);
    g->waiting = NULL;
    g->capwaiting = 0;
    g->st = NULL;
}
