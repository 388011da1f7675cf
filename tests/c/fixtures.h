/* fixtures.h — data the C unit tests share: a run row with every field a
 * store requires. Include after store.h. */
#ifndef ORCH_TEST_FIXTURES_H
#define ORCH_TEST_FIXTURES_H

#include "store.h"

static inline struct orch_run make_run(const char *id, const char *name, const char *identity,
                                       enum orch_run_status status, int64_t created)
{
    struct orch_run r = {0};
    r.id = (char *)id;
    r.name = (char *)name;
    r.identity = (char *)identity;
    r.workflow_path = (char *)"/work/wf.lua";
    r.workflow_hash = (char *)"abc123";
    r.input = (char *)"/data/in.jsonl";
    r.input_fp = (char *)"size=10;mtime=1";
    r.params = (char *)"{}";
    r.output = (char *)"/data/out.jsonl";
    r.status = status;
    r.created_ms = created;
    return r;
}

#endif
