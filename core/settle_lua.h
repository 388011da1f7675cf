/* settle_lua.h — the driver's flush of the rows that got through, in C:
 * `results:settle_run(...)`, a method of the results object
 * (results_lua.h), which packs each row it settles. Depends on Lua,
 * results_lua.h, sink_lua.h and the scheduler's loop clock. */
#ifndef ORCH_SETTLE_LUA_H
#define ORCH_SETTLE_LUA_H

#include <lua.h>

/* Pushes the function results:settle_run:
 *
 * results:settle_run(done, lines, keys, offsets, line_nos, seq, limit,
 * window, sink, last_t, bound_s, model, stage, calls, tin, tout, cost,
 * cached, saved, m_calls, m_tokens, m_cost, s_calls, s_tokens, s_cost)
 *   -> seq, n, bytes, offset, line, err, and the twelve sums
 *
 * Settles rows seq, seq + 1, ... of the reorder window (driver.lua's
 * rings done, lines, keys, offsets and line_nos, indexed by
 * seq % window + 1) as flush settles a row that got through: its line
 * written to sink (a jsonl sink's orch.sink object; nil when the run
 * has no output), its result packed as "ok", its slots cleared, its LLM
 * figures (a usage record of the open model and stage: model, stage and
 * the twelve sums flush keeps in locals; model nil when none is open)
 * added to the sums. Stops before a row that is not settled, has a
 * record, another kind of usage, or a line without a sink, before seq
 * reaches limit (the row at limit is the one after which flush asks for
 * a checkpoint), and after a row at which the clock passed last_t +
 * bound_s (the policy's clock bound; last_t nil: none). -> the next seq;
 * the rows settled and their output bytes, for the counts; the input
 * offset and line the last of them ended at (nil when none says); err
 * when the sink failed (the row it failed on is not settled) or a
 * result could not be packed (that row is counted, not moved past); the
 * sums as they now stand. Raises for arguments of the wrong type. */
void orch_settle_lua_push(lua_State *L);

#endif
