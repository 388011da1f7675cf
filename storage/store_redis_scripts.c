/* store_redis_scripts.c — the Lua source of the Redis backend's
 * server-side scripts (store_redis_impl.h lists them). Each runs
 * atomically on the server: a crash of orch at any moment leaves all of
 * one or none of it. Every check that can refuse comes before the first
 * write, since Redis does not undo the writes of a script that fails
 * half-way. Keys (ARGV[1] is the prefix, "orch:" by default):
 *   meta               hash: app "orch", schema N
 *   runs               sorted set: run ids by creation order
 *   run_ord, ev_id     counters
 *   run:ID             hash: the run's fields (absent = NULL), ord
 *   cps:ID             sorted set: the run's checkpoint seqs
 *   cp:ID:SEQ          hash: one checkpoint (memento = the zstd frame)
 *   res:ID             hash: seq -> "CPSEQ|STATUS|KLEN|ELEN|DLEN|" key error data
 *   state:ID           hash: key -> JSON value
 *   ev:ID              sorted set: the run's events, "EVID|TS|TLEN|DLEN|" type
 *                      data scored by EVID (a page is one range, however long)
 *   ev                 list: events of no run, in the same layout
 *   err:ID             sorted set: the seqs of the run's results that carry an
 *                      error (the failed-rows page reads it, then those of res:ID)
 *   live:ID            hash: the run's live figures (figures, updated_ms)
 *   jr:KEY             hash: one journaled LLM response
 *   jrz                sorted set: journal keys by created_ms
 * Many workers, one run (orch worker); every lease time is the server's
 * clock (TIME inside the script), never a worker's:
 *   leases:ID          string: the number of leases planned (absent: no plan)
 *   lease:ID:NO        hash: lease NO (first_index, rows, offset, line, index,
 *                      status free/taken/done, owner, claims, claimed_ms,
 *                      heartbeat_ms, done_ms; commit and commit_rc: the
 *                      owner's last commit token and its reply)
 *   lfree:ID           sorted set: the free leases' numbers (a claim takes the
 *                      lowest)
 *   ltaken:ID          sorted set: the taken leases' numbers scored by their
 *                      heartbeat (the stale ones are one range)
 *   bud:ID             hash: the run's shared budget (max_usd, spent_usd,
 *                      reserved_usd)
 *   pend:KEY           string: the worker sending LLM request KEY, expiring
 *                      (PX) when its marker does
 *   pendo:WORKER       set: the keys that worker marked, for the lease commit
 *                      that drops the markers of journaled replies
 * Schema 1 kept a run's events in a list ev:ID and had no err:ID: the
 * migrate script turns such a store into schema 2 at the first writing open.
 * Arguments after the prefix are read in order with arg()/num(); a field
 * list is a count then that many name/value pairs (hset) or names (hdel).
 * Not for Redis Cluster: the scripts name their keys themselves.
 * Pure C: depends on nothing but the list of scripts (store_redis_impl.h). */
#include "store_redis_impl.h"

/* A script that writes declares so (#!lua): the server refuses it before
 * it starts when over maxmemory, rather than failing at a write inside it,
 * which would leave the writes before that one. */
#define WRITES "#!lua\n"
#define READS "#!lua flags=no-writes\n"

#define PRELUDE                                                                                              \
    "local P = ARGV[1]\n"                                                                                    \
    "local at = 1\n"                                                                                         \
    "local function arg() at = at + 1; return ARGV[at] end\n"                                                \
    "local function num() return tonumber(arg()) end\n"                                                      \
    "local function hset(k, n)\n"                                                                            \
    "  local t = {}\n"                                                                                       \
    "  for i = 1, n do t[#t + 1] = arg(); t[#t + 1] = arg() end\n"                                           \
    "  for i = 1, #t, 200 do redis.call('HSET', k, unpack(t, i, math.min(i + 199, #t))) end\n"               \
    "end\n"                                                                                                  \
    "local function hdel(k, n) for i = 1, n do redis.call('HDEL', k, arg()) end end\n"                       \
    "local function skip_pairs(n) at = at + 2 * n end\n"

static const char *const rd_scripts[RD_LEASE_PLAN] = {
    /* id, then the fields: fails when the id is taken */
    [RD_RUN_CREATE] = WRITES PRELUDE "local id = arg()\n"
                                     "local k = P .. 'run:' .. id\n"
                                     "if redis.call('EXISTS', k) == 1 then\n"
                                     "  return redis.error_reply('a run with this id exists')\n"
                                     "end\n"
                                     "local ord = redis.call('INCR', P .. 'run_ord')\n"
                                     "redis.call('HSET', k, 'ord', ord)\n"
                                     "hset(k, num())\n"
                                     "redis.call('ZADD', P .. 'runs', ord, id)\n"
                                     "return ord\n",
    /* id, fields to set, fields to delete: 1, or 0 when there is no such run */
    [RD_RUN_UPDATE] = WRITES PRELUDE "local k = P .. 'run:' .. arg()\n"
                                     "if redis.call('EXISTS', k) == 0 then return 0 end\n"
                                     "hset(k, num()); hdel(k, num())\n"
                                     "return 1\n",
    /* id, pid, host ('' = none), now, expected pid and heartbeat: 1 claimed */
    [RD_RUN_CLAIM] =
        WRITES PRELUDE "local k = P .. 'run:' .. arg()\n"
                       "local pid, host, now, epid, ehb = arg(), arg(), arg(), arg(), arg()\n"
                       "local cur = redis.call('HMGET', k, 'owner_pid', 'heartbeat_ms')\n"
                       "if not cur[1] or cur[1] ~= epid or cur[2] ~= ehb then return 0 end\n"
                       "redis.call('HSET', k, 'owner_pid', pid, 'heartbeat_ms', now, 'updated_ms', now,\n"
                       "  'status', 'running')\n"
                       "if host == '' then redis.call('HDEL', k, 'owner_host')\n"
                       "else redis.call('HSET', k, 'owner_host', host) end\n"
                       "return 1\n",
    [RD_RUN_HEARTBEAT] = WRITES PRELUDE "local k = P .. 'run:' .. arg()\n"
                                        "if redis.call('EXISTS', k) == 0 then return 0 end\n"
                                        "redis.call('HSET', k, 'heartbeat_ms', arg())\n"
                                        "return 1\n",
    /* the run and everything stored for it: 1, or 0 when there is none */
    [RD_RUN_DELETE] =
        WRITES PRELUDE "local id = arg()\n"
                       "local k = P .. 'run:' .. id\n"
                       "if redis.call('EXISTS', k) == 0 then return 0 end\n"
                       "for _, s in ipairs(redis.call('ZRANGE', P .. 'cps:' .. id, 0, -1)) do\n"
                       "  redis.call('DEL', P .. 'cp:' .. id .. ':' .. s)\n"
                       "end\n"
                       "redis.call('DEL', k, P .. 'cps:' .. id, P .. 'res:' .. id, P .. 'state:' .. id,\n"
                       "  P .. 'ev:' .. id, P .. 'err:' .. id, P .. 'live:' .. id)\n"
                       "for i = 1, tonumber(redis.call('GET', P .. 'leases:' .. id)) or 0 do\n"
                       "  redis.call('DEL', P .. 'lease:' .. id .. ':' .. i)\n"
                       "end\n"
                       "redis.call('DEL', P .. 'leases:' .. id, P .. 'lfree:' .. id, P .. 'ltaken:' .. id,\n"
                       "  P .. 'bud:' .. id)\n"
                       "for _, kind in ipairs(redis.call('SMEMBERS', P .. 'rates:' .. id)) do\n"
                       "  redis.call('DEL', P .. 'rate:' .. id .. ':' .. kind)\n"
                       "end\n"
                       "redis.call('DEL', P .. 'rates:' .. id)\n"
                       "redis.call('ZREM', P .. 'runs', id)\n"
                       "return 1\n",
    /* filters status, name, since, until, identity ('' = any), unfinished
     * (1: pending, running or paused only): {fields..., cps count} per run */
    [RD_RUN_SCAN] = READS PRELUDE
    "local status, name, since, till, ident, unf = arg(), arg(), num(), num(), arg(), arg()\n"
    "local out = {}\n"
    "for _, id in ipairs(redis.call('ZRANGE', P .. 'runs', 0, -1)) do\n"
    "  local k = P .. 'run:' .. id\n"
    "  local f = redis.call('HMGET', k, 'status', 'name', 'created_ms', 'identity')\n"
    "  local c = tonumber(f[3]) or 0\n"
    "  if (status == '' or f[1] == status) and (name == '' or f[2] == name)\n"
    "    and (since == 0 or c >= since) and (till == 0 or c < till)\n"
    "    and (ident == '' or f[4] == ident)\n"
    "    and (unf ~= '1' or f[1] == 'pending' or f[1] == 'running' or f[1] == 'paused') then\n"
    "    out[#out + 1] = redis.call('HGETALL', k)\n"
    "    out[#out + 1] = redis.call('ZCARD', P .. 'cps:' .. id)\n"
    "  end\n"
    "end\n"
    "return out\n",
    /* id, the seq the writer sealed, run fields set/deleted, checkpoint
     * fields, result pairs, state set/deleted. 0 written; -1 no such run;
     * N > 0: the next seq is N, not the one sealed (another writer came
     * first): nothing written, seal again with N. */
    [RD_CP_WRITE] = WRITES PRELUDE "local id = arg()\n"
                                   "local k = P .. 'run:' .. id\n"
                                   "if redis.call('EXISTS', k) == 0 then return -1 end\n"
                                   "local seq = arg()\n"
                                   "local last = redis.call('ZREVRANGE', P .. 'cps:' .. id, 0, 0)\n"
                                   "local nxt = (tonumber(last[1]) or 0) + 1\n"
                                   "if nxt ~= tonumber(seq) then return nxt end\n"
                                   "hset(k, num()); hdel(k, num())\n"
                                   "hset(P .. 'cp:' .. id .. ':' .. seq, num())\n"
                                   "redis.call('ZADD', P .. 'cps:' .. id, seq, seq)\n"
                                   "local rk, ek = P .. 'res:' .. id, P .. 'err:' .. id\n"
                                   "local t, errs, oks = {}, {}, {}\n"
                                   "for i = 1, num() do\n"
                                   "  local q, v = arg(), arg()\n"
                                   "  t[#t + 1] = q; t[#t + 1] = v\n"
                                   "  if string.match(v, '^%d+|%d+|%-?%d+|(%-?%d+)|') == '-1' then\n"
                                   "    oks[#oks + 1] = q\n"
                                   "  else errs[#errs + 1] = q; errs[#errs + 1] = q end\n"
                                   "end\n"
                                   "for i = 1, #t, 200 do\n"
                                   "  redis.call('HSET', rk, unpack(t, i, math.min(i + 199, #t)))\n"
                                   "end\n"
                                   "for i = 1, #errs, 200 do\n"
                                   "  redis.call('ZADD', ek, unpack(errs, i, math.min(i + 199, #errs)))\n"
                                   "end\n"
                                   "if #oks > 0 and redis.call('EXISTS', ek) == 1 then\n"
                                   "  for i = 1, #oks, 200 do\n"
                                   "    redis.call('ZREM', ek, unpack(oks, i, math.min(i + 199, #oks)))\n"
                                   "  end\n"
                                   "end\n"
                                   "local sk = P .. 'state:' .. id\n"
                                   "hset(sk, num()); hdel(sk, num())\n"
                                   "return 0\n",
    /* id, seq: checkpoints after seq go, with the results they wrote */
    [RD_CP_ROLLBACK] =
        WRITES PRELUDE "local id, s = arg(), num()\n"
                       "local ck = P .. 'cps:' .. id\n"
                       "for _, x in ipairs(redis.call('ZRANGEBYSCORE', ck, '(' .. s, '+inf')) do\n"
                       "  redis.call('DEL', P .. 'cp:' .. id .. ':' .. x)\n"
                       "end\n"
                       "redis.call('ZREMRANGEBYSCORE', ck, '(' .. s, '+inf')\n"
                       "local rk = P .. 'res:' .. id\n"
                       "local all = redis.call('HGETALL', rk)\n"
                       "for i = 1, #all, 2 do\n"
                       "  local cp = tonumber(string.match(all[i + 1], '^(%d+)|'))\n"
                       "  if cp and cp > s then\n"
                       "    redis.call('HDEL', rk, all[i]); redis.call('ZREM', P .. 'err:' .. id, all[i])\n"
                       "  end\n"
                       "end\n"
                       "return 0\n",
    /* has run (1/0), id, the packed event: its id, or -1 no such run */
    [RD_EV_ADD] = WRITES PRELUDE "local has, id, rest = arg(), arg(), arg()\n"
                                 "local lk = P .. 'ev'\n"
                                 "if has == '1' then\n"
                                 "  if redis.call('EXISTS', P .. 'run:' .. id) == 0 then return -1 end\n"
                                 "  lk = P .. 'ev:' .. id\n"
                                 "end\n"
                                 "local eid = redis.call('INCR', P .. 'ev_id')\n"
                                 "if has == '1' then redis.call('ZADD', lk, eid, eid .. '|' .. rest)\n"
                                 "else redis.call('RPUSH', lk, eid .. '|' .. rest) end\n"
                                 "return eid\n",
    /* count hits (1/0), n puts (key, created_ms, fields), m lookups (keys):
     * the first reply of a key wins; {fields} or 0 per lookup */
    [RD_JOURNAL] = WRITES PRELUDE "local count = arg()\n"
                                  "for i = 1, num() do\n"
                                  "  local key, created, n = arg(), arg(), num()\n"
                                  "  local k = P .. 'jr:' .. key\n"
                                  "  if redis.call('EXISTS', k) == 0 then\n"
                                  "    hset(k, n)\n"
                                  "    redis.call('HSET', k, 'created_ms', created, 'hits', 0)\n"
                                  "    redis.call('ZADD', P .. 'jrz', created, key)\n"
                                  "  else skip_pairs(n) end\n"
                                  "end\n"
                                  "local out = {}\n"
                                  "for i = 1, num() do\n"
                                  "  local k = P .. 'jr:' .. arg()\n"
                                  "  if redis.call('EXISTS', k) == 1 then\n"
                                  "    if count == '1' then redis.call('HINCRBY', k, 'hits', 1) end\n"
                                  "    out[i] = redis.call('HGETALL', k)\n"
                                  "  else out[i] = 0 end\n"
                                  "end\n"
                                  "return out\n",
    /* before_ms: the number of entries removed */
    [RD_JR_PRUNE] = WRITES PRELUDE "local z = P .. 'jrz'\n"
                                   "local before = '(' .. arg()\n"
                                   "local gone = redis.call('ZRANGEBYSCORE', z, '-inf', before)\n"
                                   "for _, key in ipairs(gone) do redis.call('DEL', P .. 'jr:' .. key) end\n"
                                   "redis.call('ZREMRANGEBYSCORE', z, '-inf', before)\n"
                                   "return #gone\n",
    /* store-wide figures, as strings: runs, running, paused, failed,
     * completed, recoveries, checkpoints, mean ms, max ms, journal entries,
     * hits, saved usd, bytes (MEMORY USAGE of every key of orch's) */
    [RD_STATS] = READS PRELUDE
    "local n = {runs = 0, running = 0, paused = 0, failed = 0, completed = 0}\n"
    "local rec, ncp, sum, max, bytes = 0, 0, 0, 0, 0\n"
    "local function mem(k) bytes = bytes + (redis.call('MEMORY', 'USAGE', k) or 0) end\n"
    "for _, k in ipairs({'meta', 'runs', 'run_ord', 'ev_id', 'ev', 'jrz'}) do mem(P .. k) end\n"
    "for _, id in ipairs(redis.call('ZRANGE', P .. 'runs', 0, -1)) do\n"
    "  local f = redis.call('HMGET', P .. 'run:' .. id, 'status', 'recoveries')\n"
    "  n.runs = n.runs + 1\n"
    "  if f[1] and n[f[1]] then n[f[1]] = n[f[1]] + 1 end\n"
    "  rec = rec + (tonumber(f[2]) or 0)\n"
    "  for _, s in ipairs(redis.call('ZRANGE', P .. 'cps:' .. id, 0, -1)) do\n"
    "    local ck = P .. 'cp:' .. id .. ':' .. s\n"
    "    local d = tonumber(redis.call('HGET', ck, 'duration_ms')) or 0\n"
    "    ncp = ncp + 1; sum = sum + d\n"
    "    if d > max then max = d end\n"
    "    mem(ck)\n"
    "  end\n"
    "  for _, t in ipairs({'run:', 'cps:', 'res:', 'state:', 'ev:', 'err:', 'live:', 'leases:', 'lfree:',\n"
    "    'ltaken:', 'bud:'}) do\n"
    "    mem(P .. t .. id)\n"
    "  end\n"
    "  for i = 1, tonumber(redis.call('GET', P .. 'leases:' .. id)) or 0 do\n"
    "    mem(P .. 'lease:' .. id .. ':' .. i)\n"
    "  end\n"
    "end\n"
    "local ne, hits, saved = 0, 0, 0\n"
    "for _, key in ipairs(redis.call('ZRANGE', P .. 'jrz', 0, -1)) do\n"
    "  local f = redis.call('HMGET', P .. 'jr:' .. key, 'cost_usd', 'hits')\n"
    "  local h = tonumber(f[2]) or 0\n"
    "  ne = ne + 1; hits = hits + h; saved = saved + (tonumber(f[1]) or 0) * h\n"
    "  mem(P .. 'jr:' .. key)\n"
    "end\n"
    "local function g(x) return string.format('%.17g', x) end\n"
    "return {g(n.runs), g(n.running), g(n.paused), g(n.failed), g(n.completed), g(rec),\n"
    "  g(ncp), g(ncp > 0 and sum / ncp or 0), g(max), g(ne), g(hits), g(saved), g(bytes)}\n",
    /* schema, a key the caller's SCAN found under the prefix ('' none;
     * SCAN runs outside a script, so a big database is not blocked while
     * it does): marks the prefix as orch's. 0 created, 1 already orch's
     * (another orch may have marked it since the caller looked: then what
     * it found is orch's), {name} of a key that is not orch's */
    [RD_SETUP] = WRITES PRELUDE "local schema, found = arg(), arg()\n"
                                "local k = P .. 'meta'\n"
                                "if redis.call('HGET', k, 'app') == 'orch' then return 1 end\n"
                                "if found ~= '' then return {found} end\n"
                                "if redis.call('EXISTS', k) == 1 then return {k} end\n"
                                "redis.call('HSET', k, 'app', 'orch', 'schema', schema)\n"
                                "return 0\n",
    /* id, updated_ms, figures: 1 written, 0 no such run (nothing written) */
    [RD_LIVE_PUT] =
        WRITES PRELUDE "local id, ms, fig = arg(), arg(), arg()\n"
                       "if redis.call('EXISTS', P .. 'run:' .. id) == 0 then return 0 end\n"
                       "redis.call('HSET', P .. 'live:' .. id, 'updated_ms', ms, 'figures', fig)\n"
                       "return 1\n",
    /* id, after_seq, limit: {seq, stored result}... of the results with an
     * error after after_seq, in seq order; one range of err:ID, so the page
     * costs the same however many rows the run has */
    [RD_ERR_PAGE] =
        READS PRELUDE "local id, after, limit = arg(), arg(), arg()\n"
                      "local seqs = redis.call('ZRANGEBYSCORE', P .. 'err:' .. id, '(' .. after, '+inf',\n"
                      "  'LIMIT', 0, limit)\n"
                      "if #seqs == 0 then return {} end\n"
                      "local vals = redis.call('HMGET', P .. 'res:' .. id, unpack(seqs))\n"
                      "local out = {}\n"
                      "for i = 1, #seqs do\n"
                      "  if vals[i] then out[#out + 1] = seqs[i]; out[#out + 1] = vals[i] end\n"
                      "end\n"
                      "return out\n",
    /* schema 1 -> 2 (once, at a writing open): each run's event list
     * becomes a sorted set scored by event id, and err:ID is built from
     * res:ID. Returns the schema the store now has. */
    [RD_MIGRATE] =
        WRITES PRELUDE "local k = P .. 'meta'\n"
                       "local v = tonumber(redis.call('HGET', k, 'schema')) or 0\n"
                       "if v ~= 1 then return v end\n"
                       "for _, id in ipairs(redis.call('ZRANGE', P .. 'runs', 0, -1)) do\n"
                       "  local ek = P .. 'ev:' .. id\n"
                       "  if redis.call('TYPE', ek).ok == 'list' then\n"
                       "    local evs = redis.call('LRANGE', ek, 0, -1)\n"
                       "    redis.call('DEL', ek)\n"
                       "    for _, e in ipairs(evs) do\n"
                       "      redis.call('ZADD', ek, tonumber(string.match(e, '^(%d+)|')) or 0, e)\n"
                       "    end\n"
                       "  end\n"
                       "  local all = redis.call('HGETALL', P .. 'res:' .. id)\n"
                       "  for i = 1, #all, 2 do\n"
                       "    if string.match(all[i + 1], '^%d+|%d+|%-?%d+|(%-?%d+)|') ~= '-1' then\n"
                       "      redis.call('ZADD', P .. 'err:' .. id, all[i], all[i])\n"
                       "    end\n"
                       "  end\n"
                       "end\n"
                       "redis.call('HSET', k, 'schema', 2)\n"
                       "return 2\n",
};

/* The lease scripts' helpers: the server's clock in ms, numbers written
 * in full (Redis would write a Lua number with 14 digits), and one lease
 * as lease_claim and lease_list return it: no, the fields, the age of its
 * heartbeat. */
#define LEASE                                                                                                \
    "local function now_ms()\n"                                                                              \
    "  local t = redis.call('TIME')\n"                                                                       \
    "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                                   \
    "end\n"                                                                                                  \
    "local function I(x) return string.format('%d', x) end\n"                                                \
    "local function F(x) return string.format('%.17g', x) end\n"                                             \
    "local LF = {'first_index', 'rows', 'offset', 'line', 'index', 'status', 'owner', 'claims',\n"           \
    "  'claimed_ms', 'heartbeat_ms', 'done_ms'}\n"                                                           \
    "local function lrow(k, no, now)\n"                                                                      \
    "  local v = redis.call('HMGET', k, unpack(LF))\n"                                                       \
    "  local out = {no}\n"                                                                                   \
    "  for i = 1, #LF do out[#out + 1] = v[i] end\n"                                                         \
    "  out[#out + 1] = I(now - (tonumber(v[10]) or 0))\n"                                                    \
    "  return out\n"                                                                                         \
    "end\n"

static const char *const rd_lease_scripts[RD_NSCRIPT - RD_LEASE_PLAN] = {
    /* id, n, then no, first_index, rows, offset, line per lease: 1 planned,
     * 0 the run has a plan already (nothing written), -1 no such run */
    [RD_LEASE_PLAN - RD_LEASE_PLAN] = WRITES PRELUDE
    "local id, n = arg(), num()\n"
    "if redis.call('EXISTS', P .. 'run:' .. id) == 0 then return -1 end\n"
    "local pk = P .. 'leases:' .. id\n"
    "if redis.call('EXISTS', pk) == 1 then return 0 end\n"
    "local fk = P .. 'lfree:' .. id\n"
    "for i = 1, n do\n"
    "  local no, fi, rows, off, line = arg(), arg(), arg(), arg(), arg()\n"
    "  redis.call('HSET', P .. 'lease:' .. id .. ':' .. no, 'first_index', fi, 'rows', rows,\n"
    "    'offset', off, 'line', line, 'index', fi, 'status', 'free', 'claims', 0,\n"
    "    'claimed_ms', 0, 'heartbeat_ms', 0, 'done_ms', 0)\n"
    "  redis.call('ZADD', fk, no, no)\n"
    "end\n"
    "redis.call('SET', pk, n)\n"
    "return 1\n",
    /* id, worker, stale_ms: the lowest-numbered lease that is free or
     * whose heartbeat is older than stale_ms, as lrow returns it, or 0 */
    [RD_LEASE_CLAIM - RD_LEASE_PLAN] = WRITES PRELUDE LEASE
    "local id, w, stale = arg(), arg(), num()\n"
    "local now = now_ms()\n"
    "local fk, tk = P .. 'lfree:' .. id, P .. 'ltaken:' .. id\n"
    "local best = tonumber(redis.call('ZRANGE', fk, 0, 0)[1])\n"
    "for _, s in ipairs(redis.call('ZRANGEBYSCORE', tk, '-inf', '(' .. I(now - stale))) do\n"
    "  local x = tonumber(s)\n"
    "  if best == nil or x < best then best = x end\n"
    "end\n"
    "if best == nil then return 0 end\n"
    "local no = I(best)\n"
    "local k = P .. 'lease:' .. id .. ':' .. no\n"
    "redis.call('HINCRBY', k, 'claims', 1)\n"
    "redis.call('HSET', k, 'status', 'taken', 'owner', w, 'claimed_ms', I(now),\n"
    "  'heartbeat_ms', I(now))\n"
    "redis.call('ZREM', fk, no)\n"
    "redis.call('ZADD', tk, I(now), no)\n"
    "return lrow(k, no, now)\n",
    /* id, no, worker: 1 held (heartbeat now), 0 not this worker's */
    [RD_LEASE_HEARTBEAT - RD_LEASE_PLAN] =
        WRITES PRELUDE LEASE "local id, no, w = arg(), arg(), arg()\n"
                             "local k = P .. 'lease:' .. id .. ':' .. no\n"
                             "local v = redis.call('HMGET', k, 'owner', 'status')\n"
                             "if v[1] ~= w or v[2] ~= 'taken' then return 0 end\n"
                             "local now = I(now_ms())\n"
                             "redis.call('HSET', k, 'heartbeat_ms', now)\n"
                             "redis.call('ZADD', P .. 'ltaken:' .. id, now, no)\n"
                             "return 1\n",
    /* id, no, worker, offset, line, index, end, the client's now (the
     * run's updated_ms, as every run write), the commit's token (unique in
     * the worker), 8 counters to add, cost, then n result pairs: 0 the
     * lease is not this worker's (nothing written), 1 committed, 2
     * committed and the run completed. The same commit sent again (its
     * reply was lost with the connection) writes nothing and replies as
     * the first time: the lease keeps the worker's last token and reply. */
    [RD_LEASE_COMMIT - RD_LEASE_PLAN] = WRITES PRELUDE LEASE
    "local id, no, w = arg(), arg(), arg()\n"
    "local off, line, idx, e, stamp, token = arg(), arg(), arg(), arg(), arg(), arg()\n"
    "local k = P .. 'lease:' .. id .. ':' .. no\n"
    "local v = redis.call('HMGET', k, 'owner', 'status', 'commit', 'commit_rc')\n"
    "if v[1] == w and v[3] == token then return tonumber(v[4]) end\n"
    "if v[1] ~= w or v[2] ~= 'taken' then return 0 end\n"
    "local add = {}\n"
    "for i = 1, 8 do add[i] = arg() end\n"
    "local cost = num()\n"
    "local now = I(now_ms())\n"
    "local rk, ek = P .. 'res:' .. id, P .. 'err:' .. id\n"
    "local t, errs, oks = {}, {}, {}\n"
    "for i = 1, num() do\n"
    "  local q, r = arg(), arg()\n"
    "  t[#t + 1] = q; t[#t + 1] = r\n"
    "  if string.match(r, '^%d+|%d+|%-?%d+|(%-?%d+)|') == '-1' then oks[#oks + 1] = q\n"
    "  else errs[#errs + 1] = q; errs[#errs + 1] = q end\n"
    "end\n"
    "for i = 1, #t, 200 do redis.call('HSET', rk, unpack(t, i, math.min(i + 199, #t))) end\n"
    "for i = 1, #errs, 200 do redis.call('ZADD', ek, unpack(errs, i, math.min(i + 199, #errs))) end\n"
    "if #oks > 0 and redis.call('EXISTS', ek) == 1 then\n"
    "  for i = 1, #oks, 200 do redis.call('ZREM', ek, unpack(oks, i, math.min(i + 199, #oks))) end\n"
    "end\n"
    "redis.call('HSET', k, 'offset', off, 'line', line, 'index', idx, 'heartbeat_ms', now)\n"
    "local fk, tk = P .. 'lfree:' .. id, P .. 'ltaken:' .. id\n"
    "if e == '1' then\n"
    "  redis.call('HSET', k, 'status', 'done', 'done_ms', now)\n"
    "  redis.call('ZREM', tk, no)\n"
    "elseif e == '2' then\n"
    "  redis.call('HSET', k, 'status', 'free')\n"
    "  redis.call('ZREM', tk, no)\n"
    "  redis.call('ZADD', fk, no, no)\n"
    "else redis.call('ZADD', tk, now, no) end\n"
    "local ok = P .. 'pendo:' .. w\n"
    "for _, key in ipairs(redis.call('SMEMBERS', ok)) do\n"
    "  local pk = P .. 'pend:' .. key\n"
    "  if redis.call('GET', pk) ~= w then redis.call('SREM', ok, key)\n"
    "  elseif redis.call('EXISTS', P .. 'jr:' .. key) == 1 then\n"
    "    redis.call('DEL', pk)\n"
    "    redis.call('SREM', ok, key)\n"
    "  end\n"
    "end\n"
    "local run = P .. 'run:' .. id\n"
    "local names = {'rows_done', 'rows_ok', 'rows_failed', 'rows_dropped', 'rows_defaulted', 'llm_calls',\n"
    "  'tokens_in', 'tokens_out'}\n"
    "for i = 1, 8 do\n"
    "  if add[i] ~= '0' then redis.call('HINCRBY', run, names[i], add[i]) end\n"
    "end\n"
    "if cost ~= 0 then\n"
    "  redis.call('HSET', run, 'cost_usd', F((tonumber(redis.call('HGET', run, 'cost_usd')) or 0) + cost))\n"
    "end\n"
    "redis.call('HSET', run, 'updated_ms', stamp, 'heartbeat_ms', stamp)\n"
    "local rc = 1\n"
    "if e == '1' and redis.call('ZCARD', fk) == 0 and redis.call('ZCARD', tk) == 0\n"
    "  and redis.call('HGET', run, 'status') ~= 'completed' then\n"
    "  redis.call('HSET', run, 'status', 'completed', 'finished_ms', stamp)\n"
    "  redis.call('HDEL', run, 'error')\n"
    "  rc = 2\n"
    "end\n"
    "redis.call('HSET', k, 'commit', token, 'commit_rc', rc)\n"
    "return rc\n",
    /* id: every lease in order, 13 values each (lrow) */
    [RD_LEASE_LIST - RD_LEASE_PLAN] =
        READS PRELUDE LEASE "local id = arg()\n"
                            "local now = now_ms()\n"
                            "local out = {}\n"
                            "for i = 1, tonumber(redis.call('GET', P .. 'leases:' .. id)) or 0 do\n"
                            "  local row = lrow(P .. 'lease:' .. id .. ':' .. i, I(i), now)\n"
                            "  for j = 1, #row do out[#out + 1] = row[j] end\n"
                            "end\n"
                            "return out\n",
    /* id, est, max (the max when the budget is new): 1 reserved, 0 it
     * would pass the max, -1 no such run */
    [RD_BUDGET_RESERVE - RD_LEASE_PLAN] =
        WRITES PRELUDE LEASE "local id, est, max = arg(), num(), arg()\n"
                             "if redis.call('EXISTS', P .. 'run:' .. id) == 0 then return -1 end\n"
                             "local k = P .. 'bud:' .. id\n"
                             "if redis.call('EXISTS', k) == 0 then\n"
                             "  redis.call('HSET', k, 'max_usd', max, 'spent_usd', 0, 'reserved_usd', 0)\n"
                             "end\n"
                             "local v = redis.call('HMGET', k, 'max_usd', 'spent_usd', 'reserved_usd')\n"
                             "local m, s, r = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0\n"
                             "if s + r + est > m + 1e-12 then return 0 end\n"
                             "redis.call('HSET', k, 'reserved_usd', F(r + est))\n"
                             "return 1\n",
    /* id, released, spent: 0 (a run without a budget is left alone) */
    [RD_BUDGET_SETTLE - RD_LEASE_PLAN] =
        WRITES PRELUDE LEASE "local id, rel, sp = arg(), num(), num()\n"
                             "local k = P .. 'bud:' .. id\n"
                             "local v = redis.call('HMGET', k, 'max_usd', 'spent_usd', 'reserved_usd')\n"
                             "if not v[1] then return 0 end\n"
                             "local s, r = tonumber(v[2]) or 0, tonumber(v[3]) or 0\n"
                             "redis.call('HSET', k, 'reserved_usd', F(math.max(r - rel, 0)), 'spent_usd',\n"
                             "  F(s + sp))\n"
                             "return 0\n",
    /* id, max: 1 set (reservations dropped: their workers stopped), -1 no
     * such run */
    [RD_BUDGET_SET - RD_LEASE_PLAN] =
        WRITES PRELUDE "local id, max = arg(), arg()\n"
                       "if redis.call('EXISTS', P .. 'run:' .. id) == 0 then return -1 end\n"
                       "local k = P .. 'bud:' .. id\n"
                       "if redis.call('EXISTS', k) == 0 then redis.call('HSET', k, 'spent_usd', 0) end\n"
                       "redis.call('HSET', k, 'max_usd', max, 'reserved_usd', 0)\n"
                       "return 1\n",
    /* key, owner, ttl_ms: 1 the key is now owner's for ttl_ms (it was
     * free, expired or owner's already), 0 another owner's marker holds it
     * or its reply is journaled already */
    [RD_JOURNAL_PEND - RD_LEASE_PLAN] =
        WRITES PRELUDE "local key, w, ttl = arg(), arg(), arg()\n"
                       "local pk = P .. 'pend:' .. key\n"
                       "if redis.call('EXISTS', P .. 'jr:' .. key) == 1 then return 0 end\n"
                       "local o = redis.call('GET', pk)\n"
                       "if o and o ~= w then return 0 end\n"
                       "redis.call('SET', pk, w, 'PX', ttl)\n"
                       "local ok = P .. 'pendo:' .. w\n"
                       "redis.call('SADD', ok, key)\n"
                       "if redis.call('PTTL', ok) < tonumber(ttl) then redis.call('PEXPIRE', ok, ttl) end\n"
                       "return 1\n",
    /* id, kind, amount, capacity, per_ms: the run's token bucket of that
     * kind (made full on the first take, refilled by the server's TIME
     * since its last take), taken from if it holds amount. {1, left} taken,
     * {0, left} not (nothing taken), -1 no such run. Its record (first_ms,
     * granted, takes) is what a test compares with the requests sent. */
    [RD_RATE_TAKE - RD_LEASE_PLAN] = WRITES PRELUDE LEASE
    "local id, kind, amount, cap, per = arg(), arg(), num(), num(), num()\n"
    "if redis.call('EXISTS', P .. 'run:' .. id) == 0 then return -1 end\n"
    "local k = P .. 'rate:' .. id .. ':' .. kind\n"
    "local now = now_ms()\n"
    "local v = redis.call('HMGET', k, 'tokens', 'updated_ms')\n"
    "local tokens, upd = cap, now\n"
    "if v[1] then\n"
    "  upd = math.max(tonumber(v[2]), now)\n"
    "  tokens = math.min(cap, tonumber(v[1]) + (upd - tonumber(v[2])) * per)\n"
    "else\n"
    "  redis.call('HSET', k, 'first_ms', I(now), 'granted', 0, 'takes', 0)\n"
    "  redis.call('SADD', P .. 'rates:' .. id, kind)\n"
    "end\n"
    "local ok = tokens >= amount - 1e-9\n"
    "if ok then\n"
    "  tokens = tokens - amount\n"
    "  redis.call('HINCRBYFLOAT', k, 'granted', F(amount))\n"
    "  redis.call('HINCRBY', k, 'takes', 1)\n"
    "end\n"
    "redis.call('HSET', k, 'tokens', F(tokens), 'updated_ms', I(upd), 'last_ok', ok and 1 or 0)\n"
    "return {ok and 1 or 0, F(tokens)}\n",
};

const char *orch_redis_script(enum rd_script i)
{
    return i >= RD_LEASE_PLAN ? rd_lease_scripts[i - RD_LEASE_PLAN] : rd_scripts[i];
}
