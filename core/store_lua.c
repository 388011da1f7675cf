/* store_lua.c — Lua bindings of the state store (`require("orch.store")`).
 *
 * A store userdata owns its struct orch_store; __gc and __close share one
 * idempotent release. Runs, checkpoints and results cross as plain tables.
 * Expected failures (the store refusing a file, a write failing) return
 * nil, message; wrong arguments raise. Lua callbacks given to the list
 * functions run under lua_pcall inside the store's row loop, so an error
 * stops the loop cleanly and is raised only after the store is back in a
 * clean state. Bindings only: the loop callbacks a store drives, the group
 * commit of LLM replies and the heartbeat timer, are pure C
 * (journal_group.c, heartbeat.c). */
#include "store_lua.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "heartbeat.h"
#include "journal_group.h"
#include "loop.h"
#include "results_lua.h"
#include "sched.h"
#include "store.h"
#include "runtime.h"

#define STORE_MT "orch.Store"
#define LOOKUP_MT "orch.JournalLookup" /* a task's waiting lookup: __close frees it */

/* LLM replies are journaled in groups (journal_group.h); a task's lookup
 * waits for the group transaction in a to-be-closed userdata on its stack,
 * so whatever ends the call frees it. */
struct jlookup {
    struct orch_journal_wait w;
    struct orch_task *t;
};

struct lstore {
    struct orch_store *st; /* NULL once closed */
    struct orch_loop *loop;
    struct orch_heartbeat beat;   /* keepalive timer */
    struct orch_journal_group jg; /* replies and lookups waiting for their group commit */
};

/* The open store at argument 1 (raises for another value, or a closed
 * store): one orch_lua_self, which compares the metatable with the one
 * a method holds (luaL_checkudata's lookup by name was most of a cheap
 * call's binding). */
static struct lstore *check_open_lstore(lua_State *L)
{
    struct lstore *s = orch_lua_self(L, STORE_MT);
    if (s->st == NULL)
        luaL_error(L, "attempt to use a closed store");
    return s;
}

static struct orch_store *check_open(lua_State *L)
{
    return check_open_lstore(L)->st;
}

static int push_failure(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* The shape of every binding that only acts: true, or nil and the store's message. */
static int push_done(lua_State *L, struct orch_store *st, int rc)
{
    if (rc != 0)
        return push_failure(L, st->err);
    lua_pushboolean(L, 1);
    return 1;
}

/* The shape of every listing: the table the collector filled (already on the stack),
 * or nil and the store's message. */
static int push_listed(lua_State *L, struct orch_store *st, int rc)
{
    if (rc != 0)
        return push_failure(L, st->err);
    return 1;
}

/* A yes/no answer from the store: rc 1 or 0, or below 0 for nil and the store's message. */
static int push_flag(lua_State *L, struct orch_store *st, int rc)
{
    if (rc < 0)
        return push_failure(L, st->err);
    lua_pushboolean(L, rc);
    return 1;
}

/* A count from the store, or below 0 for nil and the store's message. */
static int push_count(lua_State *L, struct orch_store *st, int64_t rc)
{
    if (rc < 0)
        return push_failure(L, st->err);
    lua_pushinteger(L, (lua_Integer)rc);
    return 1;
}

enum { NONE_NIL, NONE_FALSE };

/* The answer of a lookup that found nothing: nil and the store's message
 * (rc below 0; returns 2) or `none`, nil or false (rc 0; returns 1).
 * Returns 0, pushing nothing, when it found something (rc above 0): the
 * caller pushes it. */
static int push_not_found(lua_State *L, struct orch_store *st, int rc, int none)
{
    if (rc < 0)
        return push_failure(L, st->err);
    if (rc > 0)
        return 0;
    if (none == NONE_FALSE)
        lua_pushboolean(L, 0);
    else
        lua_pushnil(L);
    return 1;
}

/* A collector's last step: the value on top goes to the end of the list under it. */
static int append_to_list(lua_State *L)
{
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

/* ---- struct <-> table ---- */

static void set_str(lua_State *L, const char *k, const char *v)
{
    if (v == NULL)
        return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, int64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

/* Field k of the table at idx as a string borrowed from the table (valid
 * while the table is on the stack), or NULL. */
static const char *get_str(lua_State *L, int idx, const char *k)
{
    lua_getfield(L, idx, k);
    const char *v = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
    lua_pop(L, 1);
    return v;
}

/* get_str with the field's name at stack index kname */
static const char *get_str_at(lua_State *L, int idx, int kname)
{
    lua_pushvalue(L, kname);
    lua_gettable(L, idx);
    const char *v = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
    lua_pop(L, 1);
    return v;
}

static int64_t get_int(lua_State *L, int idx, const char *k)
{
    lua_getfield(L, idx, k);
    int64_t v = (int64_t)luaL_optinteger(L, -1, 0);
    lua_pop(L, 1);
    return v;
}

static double get_num(lua_State *L, int idx, const char *k)
{
    lua_getfield(L, idx, k);
    double v = luaL_optnumber(L, -1, 0);
    lua_pop(L, 1);
    return v;
}

/* A struct's fields as a table's, one list per group of fields that
 * bindings read or write together: push_fields and get_fields walk a list,
 * so a field is named once. */
enum field_kind { F_STR, F_INT, F_NUM };

struct field {
    const char *name;
    enum field_kind kind; /* F_STR: a char *, F_INT: an int64_t, F_NUM: a double */
    size_t off;
};

#define FIELD(type, kind, f)                                                                                 \
    {                                                                                                        \
#f, kind, offsetof(type, f)                                                                          \
    }
#define FIELDS_END                                                                                           \
    {                                                                                                        \
        NULL, F_INT, 0                                                                                       \
    }

/* Sets the fields of the struct at base into the table on top. */
static void push_fields(lua_State *L, const void *base, const struct field *f)
{
    for (; f->name != NULL; f++) {
        const char *p = (const char *)base + f->off;
        const char *str;
        int64_t i;
        double n;
        switch (f->kind) {
        case F_STR:
            memcpy(&str, p, sizeof str);
            set_str(L, f->name, str);
            break;
        case F_INT:
            memcpy(&i, p, sizeof i);
            set_int(L, f->name, i);
            break;
        case F_NUM:
            memcpy(&n, p, sizeof n);
            set_num(L, f->name, n);
            break;
        }
    }
}

/* Fills the fields of the struct at base from the table at idx (missing:
 * NULL or 0); strings are borrowed from the table. Raises on a wrong type. */
static void get_fields(lua_State *L, int idx, void *base, const struct field *f)
{
    for (; f->name != NULL; f++) {
        char *p = (char *)base + f->off;
        const char *str;
        int64_t i;
        double n;
        switch (f->kind) {
        case F_STR:
            str = get_str(L, idx, f->name);
            memcpy(p, &str, sizeof str);
            break;
        case F_INT:
            i = get_int(L, idx, f->name);
            memcpy(p, &i, sizeof i);
            break;
        case F_NUM:
            n = get_num(L, idx, f->name);
            memcpy(p, &n, sizeof n);
            break;
        }
    }
}

/* A run: its text, then status, then its clock, then its counters (which
 * lease_commit adds to the run's), then recoveries. */
static const struct field run_text[] = {
    FIELD(struct orch_run, F_STR, id),
    FIELD(struct orch_run, F_STR, name),
    FIELD(struct orch_run, F_STR, identity),
    FIELD(struct orch_run, F_STR, workflow_path),
    FIELD(struct orch_run, F_STR, workflow_hash),
    FIELD(struct orch_run, F_STR, input),
    FIELD(struct orch_run, F_STR, input_fp),
    FIELD(struct orch_run, F_STR, params),
    FIELD(struct orch_run, F_STR, output),
    FIELD(struct orch_run, F_STR, error),
    FIELD(struct orch_run, F_STR, owner_host),
    FIELDS_END,
};

static const struct field run_clock[] = {
    FIELD(struct orch_run, F_INT, owner_pid),   FIELD(struct orch_run, F_INT, heartbeat_ms),
    FIELD(struct orch_run, F_INT, created_ms),  FIELD(struct orch_run, F_INT, updated_ms),
    FIELD(struct orch_run, F_INT, finished_ms), FIELDS_END,
};

static const struct field run_counters[] = {
    FIELD(struct orch_run, F_INT, rows_done),      FIELD(struct orch_run, F_INT, rows_ok),
    FIELD(struct orch_run, F_INT, rows_failed),    FIELD(struct orch_run, F_INT, rows_dropped),
    FIELD(struct orch_run, F_INT, rows_defaulted), FIELD(struct orch_run, F_INT, llm_calls),
    FIELD(struct orch_run, F_INT, tokens_in),      FIELD(struct orch_run, F_INT, tokens_out),
    FIELD(struct orch_run, F_NUM, cost_usd),       FIELDS_END,
};

static void push_run(lua_State *L, const struct orch_run *r)
{
    lua_createtable(L, 0, 32);
    push_fields(L, r, run_text);
    set_str(L, "status", orch_run_status_name(r->status));
    push_fields(L, r, run_clock);
    push_fields(L, r, run_counters);
    set_int(L, "recoveries", r->recoveries);
    set_int(L, "checkpoints", r->checkpoints);
}

/* Fills r from the table at idx. Strings are borrowed from the table. */
static void to_run(lua_State *L, int idx, struct orch_run *r)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    memset(r, 0, sizeof *r);
    if (get_str(L, idx, "id") == NULL)
        luaL_error(L, "run.id is required");
    get_fields(L, idx, r, run_text);
    const char *status = get_str(L, idx, "status");
    int st = status == NULL ? ORCH_RUN_PENDING : orch_run_status_parse(status);
    if (st < 0)
        luaL_error(L, "unknown run status '%s'", status);
    r->status = (enum orch_run_status)st;
    get_fields(L, idx, r, run_clock);
    get_fields(L, idx, r, run_counters);
    r->recoveries = get_int(L, idx, "recoveries");
}

/* A checkpoint: where the input and outputs stood (checkpoint_write reads
 * it), and what the write made of it (checkpoint_write returns it). */
static const struct field checkpoint_cursor[] = {
    FIELD(struct orch_checkpoint, F_INT, input_offset),  FIELD(struct orch_checkpoint, F_INT, input_line),
    FIELD(struct orch_checkpoint, F_INT, input_index),   FIELD(struct orch_checkpoint, F_INT, output_offset),
    FIELD(struct orch_checkpoint, F_INT, errors_offset), FIELDS_END,
};

static const struct field checkpoint_written[] = {
    FIELD(struct orch_checkpoint, F_STR, checksum),
    FIELD(struct orch_checkpoint, F_INT, bytes),
    FIELD(struct orch_checkpoint, F_NUM, duration_ms),
    FIELDS_END,
};

static void push_checkpoint(lua_State *L, const struct orch_checkpoint *c)
{
    lua_createtable(L, 0, 16);
    set_int(L, "seq", c->seq);
    set_str(L, "name", c->name);
    set_str(L, "reason", c->reason);
    set_int(L, "created_ms", c->created_ms);
    push_fields(L, c, checkpoint_cursor);
    if (c->memento != NULL) {
        lua_pushlstring(L, c->memento, c->memento_len);
        lua_setfield(L, -2, "memento");
    }
    set_int(L, "memento_len", (int64_t)c->memento_len);
    push_fields(L, c, checkpoint_written);
    lua_pushboolean(L, c->valid);
    lua_setfield(L, -2, "valid");
}

/* ---- open / close ---- */

/* open(target [, mode]) -> store | nil, err. target: a path, ":memory:"
 * or a URL; mode "rw" (default: created when missing), "r" (inspection:
 * never created or written, readable when the file or its directory is
 * not writable) or "durable" ("rw", refusing a server that a crash of its
 * own could make lose acknowledged writes). */
static int l_store_open(lua_State *L)
{
    static const char *const modes[] = {"rw", "r", "durable", NULL};
    static const int mode_flags[] = {0, ORCH_STORE_READONLY, ORCH_STORE_REQUIRE_DURABLE};
    const char *target = luaL_checkstring(L, 1);
    int flags = mode_flags[luaL_checkoption(L, 2, "rw", modes)];
    struct lstore *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s); /* closed until opened, so __gc is safe */
    luaL_setmetatable(L, STORE_MT);
    s->loop = orch_sched_loop(orch_sched_get(L));
    char err[512];
    s->st = orch_store_open_flags(target, flags, err, sizeof err);
    if (s->st == NULL)
        return push_failure(L, err);
    orch_journal_group_init(&s->jg, s->loop, s->st);
    return 1;
}

/* Stops the heartbeat, commits the waiting replies and closes the store;
 * idempotent: __gc, __close and close() share it. */
static void store_release(struct lstore *s)
{
    orch_heartbeat_stop(&s->beat);
    orch_journal_group_release(&s->jg);
    if (s->st != NULL)
        orch_store_close(s->st);
    s->st = NULL;
}

static int l_store_close(lua_State *L)
{
    store_release(orch_lua_self(L, STORE_MT));
    return 0;
}

/* ---- runs ---- */

static int l_store_run_create(lua_State *L)
{
    struct orch_store *st = check_open(L);
    struct orch_run r;
    to_run(L, 2, &r);
    return push_done(L, st, orch_store_run_create(st, &r));
}

/* The shape of run_get(id) and run_find_unfinished(identity): the run,
 * nil (none) or nil, err. */
static int push_run_lookup(lua_State *L, int (*find)(struct orch_store *, const char *, struct orch_run *))
{
    struct orch_store *st = check_open(L);
    const char *what = luaL_checkstring(L, 2);
    struct orch_run r;
    memset(&r, 0, sizeof r);
    int pushed = push_not_found(L, st, find(st, what, &r), NONE_NIL);
    if (pushed != 0)
        return pushed;
    push_run(L, &r);
    orch_run_clear(&r);
    return 1;
}

static int l_store_run_get(lua_State *L)
{
    return push_run_lookup(L, orch_store_run_get);
}

static int l_store_run_find_unfinished(lua_State *L)
{
    return push_run_lookup(L, orch_store_run_find_unfinished);
}

static int l_store_run_update(lua_State *L)
{
    struct orch_store *st = check_open(L);
    struct orch_run r;
    to_run(L, 2, &r);
    return push_done(L, st, orch_store_run_update(st, &r));
}

/* run_claim(id, pid, host, now_ms, expect_pid, expect_heartbeat_ms) -> bool | nil, err */
static int l_store_run_claim(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    int64_t pid = (int64_t)luaL_checkinteger(L, 3);
    const char *host = luaL_checkstring(L, 4);
    int64_t now = (int64_t)luaL_checkinteger(L, 5);
    int64_t expect_pid = (int64_t)luaL_checkinteger(L, 6);
    int64_t expect_hb = (int64_t)luaL_checkinteger(L, 7);
    int rc = orch_store_run_claim(st, id, pid, host, now, expect_pid, expect_hb);
    if (rc < 0)
        return push_failure(L, st->err);
    lua_pushboolean(L, rc == 1);
    return 1;
}

/* Collects run_list results into the array on top of the stack. */
static int collect_run(void *ud, const struct orch_run *r)
{
    lua_State *L = ud;
    push_run(L, r);
    return append_to_list(L);
}

/* run_list([{ status =, name =, since_ms =, until_ms = }]) -> { run, ... } | nil, err */
static int l_store_run_list(lua_State *L)
{
    struct orch_store *st = check_open(L);
    struct orch_run_filter f;
    memset(&f, 0, sizeof f);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        f.status = get_str(L, 2, "status");
        f.name = get_str(L, 2, "name");
        f.since_ms = get_int(L, 2, "since_ms");
        f.until_ms = get_int(L, 2, "until_ms");
    }
    lua_newtable(L);
    return push_listed(L, st, orch_store_run_list(st, &f, collect_run, L));
}

/* ---- checkpoints ---- */

/* The result's key as text, borrowed from the result table: a string key
 * as it is, a number in its integer form (lua_numbertointeger, which
 * truncates: 7.5 gives "7"; JSON numbers decode as floats), anything else
 * by tostring. Cached back into the table so the string stays anchored.
 * results_lua.c makes the same text of a key packed as its row settles. */
static const char *key_text(lua_State *L, int t, int kname)
{
    lua_pushvalue(L, kname); /* "key", pushed once by to_results */
    lua_gettable(L, t);
    int type = lua_type(L, -1);
    if (type == LUA_TNIL || type == LUA_TSTRING) {
        const char *k = lua_tostring(L, -1);
        lua_pop(L, 1);
        return k;
    }
    if (type == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, -1);
        lua_Integer i;
        if (lua_isinteger(L, -1))
            lua_pushfstring(L, "%I", lua_tointeger(L, -1));
        else if (lua_numbertointeger(n, &i))
            lua_pushfstring(L, "%I", i);
        else
            lua_pushfstring(L, "%s", lua_tostring(L, -1));
    } else {
        luaL_tolstring(L, -1, NULL);
    }
    lua_remove(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, t, "key");
    const char *k = lua_tostring(L, -1);
    lua_pop(L, 1);
    return k;
}

/* Fills res[0..n) from the list of result tables at idx ({ seq, key,
 * status, error [, data] }), with each row's data when with_data. The
 * strings are borrowed from the tables, which stay alive in the list.
 * Raises on a result without status. */
static void to_results(lua_State *L, int idx, struct orch_result *res, size_t n, int with_data)
{
    /* the field names pushed once: lua_getfield would look each C string
     * up among Lua's strings again, four times a result */
    lua_pushliteral(L, "seq");
    int kseq = lua_gettop(L);
    lua_pushliteral(L, "key");
    lua_pushliteral(L, "status");
    lua_pushliteral(L, "error");
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        int t = lua_gettop(L);
        luaL_checktype(L, t, LUA_TTABLE);
        memset(&res[i], 0, sizeof res[i]);
        lua_pushvalue(L, kseq);
        lua_gettable(L, t);
        res[i].seq = (int64_t)luaL_optinteger(L, -1, 0);
        lua_pop(L, 1);
        res[i].key = key_text(L, t, kseq + 1);
        res[i].status = get_str_at(L, t, kseq + 2);
        res[i].error = get_str_at(L, t, kseq + 3);
        if (with_data) {
            lua_getfield(L, t, "data");
            if (!lua_isnil(L, -1))
                res[i].data = luaL_checklstring(L, -1, &res[i].data_len);
            lua_pop(L, 1);
        }
        if (res[i].status == NULL)
            luaL_error(L, "results[%d].status is required", (int)i + 1);
        lua_pop(L, 1);
    }
    lua_pop(L, 4);
}

/* The results argument of checkpoint_write (idx): a list of result
 * tables (checked by the caller), read into res, or a results object (results_lua.h), whose
 * chunk is handed over as it is and whose few results with an error are
 * read back into res. res: n result slots in a Lua-owned block (so an
 * error frees it), pushed on the stack. -> how many of res are filled. */
static size_t to_result_parts(lua_State *L, int idx, struct orch_results_chunk *chunk,
                              struct orch_result **res, size_t *n)
{
    struct orch_results_packer *pk = orch_results_lua_test(L, idx);
    memset(chunk, 0, sizeof *chunk);
    *n = pk == NULL ? lua_rawlen(L, idx) : (size_t)pk->failed.n;
    *res = lua_newuserdatauv(L, *n * sizeof **res + 1, 0);
    if (pk == NULL) {
        to_results(L, idx, *res, *n, 0);
        return *n;
    }
    *chunk = (struct orch_results_chunk){ORCH_PACK_COMPACT, pk->ok.p,     pk->ok.len,
                                         pk->ok.n,          pk->ok.first, pk->ok.last};
    /* the failed part's keys point into its blob: only a plain "ok" row's
     * key is ever counted (result_pack.c), and those are in the ok part */
    struct orch_results_cursor c;
    if (*n > 0 && orch_results_open(&c, ORCH_PACK_COMPACT, pk->failed.p, pk->failed.len, (int64_t)*n) != 0)
        luaL_error(L, "the packed results are damaged");
    for (size_t i = 0; i < *n; i++)
        if (orch_results_next(&c, &(*res)[i]) != 0)
            luaL_error(L, "the packed results are damaged");
    return *n;
}

/* checkpoint_write(run, ckpt, results, state) -> { seq, checksum, bytes, duration_ms } | nil, err
 * ckpt: { reason, name, input_offset, input_line, input_index, output_offset, errors_offset, memento }
 * results: { { seq, key, status, error }, ... }, or a results object
 * (orch.store.results(), packed as rows settled); state: { key = json_text }. */
static int l_store_checkpoint_write(lua_State *L)
{
    struct lstore *s = check_open_lstore(L);
    struct orch_store *st = s->st;
    orch_journal_group_flush(&s->jg); /* replies before the rows that used them */
    struct orch_run run;
    to_run(L, 2, &run);
    luaL_checktype(L, 3, LUA_TTABLE);
    if (orch_results_lua_test(L, 4) == NULL)
        luaL_checktype(L, 4, LUA_TTABLE);
    luaL_checktype(L, 5, LUA_TTABLE);
    struct orch_checkpoint c;
    memset(&c, 0, sizeof c);
    c.reason = (char *)get_str(L, 3, "reason");
    c.name = (char *)get_str(L, 3, "name");
    get_fields(L, 3, &c, checkpoint_cursor);
    lua_getfield(L, 3, "memento");
    size_t mlen = 0;
    const char *m = luaL_optlstring(L, -1, "", &mlen);
    lua_pop(L, 1); /* the string stays alive in the table */
    c.memento = (void *)m;
    c.memento_len = mlen;

    struct orch_results_chunk chunk;
    struct orch_result *res;
    size_t nres;
    to_result_parts(L, 4, &chunk, &res, &nres);
    size_t nstate = 0;
    lua_pushnil(L);
    while (lua_next(L, 5) != 0) {
        nstate++;
        lua_pop(L, 1);
    }
    struct orch_kv *kv = lua_newuserdatauv(L, nstate * sizeof *kv + 1, 0); /* Lua-owned: an error frees it */
    size_t k = 0;
    lua_pushnil(L);
    while (lua_next(L, 5) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "state entries must map strings to JSON text");
        kv[k].key = lua_tostring(L, -2);
        kv[k].value = lua_tolstring(L, -1, &kv[k].value_len);
        k++;
        lua_pop(L, 1);
    }
    if (orch_store_checkpoint_write_chunk(st, &run, &c, &chunk, res, nres, kv, nstate) != 0)
        return push_failure(L, st->err);
    lua_createtable(L, 0, 4);
    set_int(L, "seq", c.seq);
    push_fields(L, &c, checkpoint_written);
    free(c.checksum); /* written by the store, ours now */
    return 1;
}

/* Pushes the checkpoint found by a lookup (rc 1, and frees it), nil (rc 0)
 * or nil, err; returns how many values it pushed. */
static int push_found_checkpoint(lua_State *L, struct orch_store *st, int rc, struct orch_checkpoint *c)
{
    if (rc < 0)
        return push_failure(L, st->err);
    if (push_not_found(L, st, rc, NONE_NIL) == 0)
        push_checkpoint(L, c);
    orch_checkpoint_clear(c);
    return 1;
}

/* checkpoint_latest(run_id) -> ckpt | nil, skipped | nil, err */
static int l_store_checkpoint_latest(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    struct orch_checkpoint c;
    memset(&c, 0, sizeof c);
    int skipped = 0;
    int rc = orch_store_checkpoint_latest(st, id, &c, &skipped);
    if (push_found_checkpoint(L, st, rc, &c) == 2)
        return 2;
    lua_pushinteger(L, skipped);
    return 2;
}

static int l_store_checkpoint_get(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    int64_t seq = (int64_t)luaL_checkinteger(L, 3);
    struct orch_checkpoint c;
    memset(&c, 0, sizeof c);
    return push_found_checkpoint(L, st, orch_store_checkpoint_get(st, id, seq, &c), &c);
}

static int collect_checkpoint(void *ud, const struct orch_checkpoint *c)
{
    lua_State *L = ud;
    push_checkpoint(L, c);
    return append_to_list(L);
}

static int l_store_checkpoint_list(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    lua_newtable(L);
    return push_listed(L, st, orch_store_checkpoint_list(st, id, collect_checkpoint, L));
}

static int l_store_checkpoint_rollback(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    int64_t seq = (int64_t)luaL_checkinteger(L, 3);
    return push_done(L, st, orch_store_checkpoint_rollback(st, id, seq));
}

/* ---- results, events, state ---- */

struct each_ctx {
    lua_State *L;
    int fn;     /* stack index of the Lua callback */
    int failed; /* the callback raised; its error is on the stack */
};

/* A stored result as a table, sized for `fields` fields. */
static void push_result(lua_State *L, const struct orch_result *r, int fields)
{
    lua_createtable(L, 0, fields);
    set_int(L, "seq", r->seq);
    set_str(L, "key", r->key);
    set_str(L, "status", r->status);
    set_str(L, "error", r->error);
}

static int each_result(void *ud, const struct orch_result *r)
{
    struct each_ctx *e = ud;
    lua_State *L = e->L;
    lua_pushvalue(L, e->fn);
    push_result(L, r, 5); /* and its data */
    if (r->data != NULL) {
        lua_pushlstring(L, r->data, r->data_len);
        lua_setfield(L, -2, "data");
    }
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        e->failed = 1;
        return 1; /* stop; the error stays on the stack */
    }
    int stop = lua_toboolean(L, -1) && lua_type(L, -1) == LUA_TBOOLEAN;
    lua_pop(L, 1);
    return stop;
}

/* each_result(run_id, fn(result) [-> true to stop]) -> true | nil, err */
static int l_store_each_result(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    struct each_ctx e = {L, 3, 0};
    int rc = orch_store_result_list(st, id, each_result, &e);
    if (e.failed)
        return lua_error(L); /* raised only now, with the store's loop finished */
    return push_done(L, st, rc);
}

static int l_store_event_add(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    const char *type = luaL_checkstring(L, 3);
    const char *data = luaL_optstring(L, 4, NULL);
    return push_done(L, st, orch_store_event_add(st, id, type, data));
}

static int collect_event(void *ud, const struct orch_event *ev)
{
    lua_State *L = ud;
    lua_createtable(L, 0, 4);
    set_int(L, "id", ev->id);
    set_int(L, "ts_ms", ev->ts_ms);
    set_str(L, "type", ev->type);
    set_str(L, "data", ev->data);
    return append_to_list(L);
}

static int l_store_event_list(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    lua_newtable(L);
    return push_listed(L, st, orch_store_event_list(st, id, collect_event, L));
}

static int collect_state(void *ud, const char *key, const char *value, size_t len)
{
    lua_State *L = ud;
    lua_pushlstring(L, value, len);
    lua_setfield(L, -2, key);
    return 0;
}

/* state_list(run_id) -> { key = json_text } | nil, err */
static int l_store_state_list(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    lua_newtable(L);
    return push_listed(L, st, orch_store_state_list(st, id, collect_state, L));
}

static const struct field stats_fields[] = {
    FIELD(struct orch_store_stats, F_INT, runs),
    FIELD(struct orch_store_stats, F_INT, active),
    FIELD(struct orch_store_stats, F_INT, paused),
    FIELD(struct orch_store_stats, F_INT, failed),
    FIELD(struct orch_store_stats, F_INT, completed),
    FIELD(struct orch_store_stats, F_INT, checkpoints),
    FIELD(struct orch_store_stats, F_INT, recoveries),
    FIELD(struct orch_store_stats, F_INT, bytes),
    FIELD(struct orch_store_stats, F_NUM, checkpoint_mean_ms),
    FIELD(struct orch_store_stats, F_NUM, checkpoint_max_ms),
    FIELD(struct orch_store_stats, F_INT, journal_entries),
    FIELD(struct orch_store_stats, F_INT, journal_hits),
    FIELD(struct orch_store_stats, F_NUM, journal_saved_usd),
    FIELDS_END,
};

static int l_store_stats(lua_State *L)
{
    struct orch_store *st = check_open(L);
    struct orch_store_stats s;
    memset(&s, 0, sizeof s);
    if (orch_store_stats(st, &s) != 0)
        return push_failure(L, st->err);
    lua_createtable(L, 0, 10);
    push_fields(L, &s, stats_fields);
    return 1;
}

/* ---- LLM response journal ---- */

/* Returns nil, the group's failed commit (and forgets it), or 0 when
 * there is none. */
static int push_group_error(lua_State *L, struct lstore *s)
{
    if (s->jg.err[0] == '\0')
        return 0;
    lua_pushnil(L);
    lua_pushstring(L, s->jg.err);
    s->jg.err[0] = '\0';
    return 2;
}

/* A journal entry: who asked (strings), and what it cost; the response
 * bytes go apart. */
static const struct field journal_text[] = {
    FIELD(struct orch_journal_entry, F_STR, key),
    FIELD(struct orch_journal_entry, F_STR, run_id),
    FIELD(struct orch_journal_entry, F_STR, provider),
    FIELD(struct orch_journal_entry, F_STR, model),
    FIELDS_END,
};

static const struct field journal_figures[] = {
    FIELD(struct orch_journal_entry, F_INT, tokens_in),
    FIELD(struct orch_journal_entry, F_INT, tokens_out),
    FIELD(struct orch_journal_entry, F_NUM, cost_usd),
    FIELD(struct orch_journal_entry, F_NUM, latency_ms),
    FIELDS_END,
};

/* The entry of journal_put's positional form, from arguments 2..10:
 * what an LLM call journals for every reply, read without a table. */
static void journal_args(lua_State *L, struct orch_journal_entry *e)
{
    e->key = luaL_checkstring(L, 2);
    e->run_id = luaL_optstring(L, 3, NULL);
    e->provider = luaL_optstring(L, 4, NULL);
    e->model = luaL_optstring(L, 5, NULL);
    e->response = luaL_checklstring(L, 6, &e->response_len);
    e->tokens_in = (int64_t)luaL_optinteger(L, 7, 0);
    e->tokens_out = (int64_t)luaL_optinteger(L, 8, 0);
    e->cost_usd = luaL_optnumber(L, 9, 0);
    e->latency_ms = luaL_optnumber(L, 10, 0);
}

/* journal_put{ key =, run_id =, provider =, model =, response =, tokens_in =,
 *              tokens_out =, cost_usd =, latency_ms = } -> true | nil, err
 * or journal_put(key, run_id, provider, model, response, tokens_in,
 *                tokens_out, cost_usd, latency_ms), the same entry
 * The reply joins the group that commits before the loop's next round. */
static int l_store_journal_put(lua_State *L)
{
    struct lstore *s = check_open_lstore(L);
    struct orch_journal_entry e = {0};
    if (lua_type(L, 2) != LUA_TTABLE) {
        journal_args(L, &e);
        if (push_group_error(L, s) != 0)
            return 2;
    } else {
        if (get_str(L, 2, "key") == NULL)
            return luaL_error(L, "journal entry needs a key");
        lua_getfield(L, 2, "response");
        e.response = luaL_checklstring(L, -1, &e.response_len);
        if (push_group_error(L, s) != 0)
            return 2;
        get_fields(L, 2, &e, journal_text);
        get_fields(L, 2, &e, journal_figures);
    }
    if (orch_journal_group_put(&s->jg, &e) != 0) /* copies e's strings */
        return luaL_error(L, "out of memory");
    lua_pushboolean(L, 1);
    return 1;
}

/* journal_flush() -> true | nil, err: commits the waiting replies now. */
static int l_store_journal_flush(lua_State *L)
{
    struct lstore *s = check_open_lstore(L);
    orch_journal_group_flush(&s->jg);
    if (push_group_error(L, s) != 0)
        return 2;
    lua_pushboolean(L, 1);
    return 1;
}

/* Pushes a journal entry as a table; returns 1. */
static int push_journal(lua_State *L, const struct orch_journal_entry *w, int64_t hits)
{
    lua_createtable(L, 0, 12);
    push_fields(L, w, journal_text);
    lua_pushlstring(L, w->response, w->response_len);
    lua_setfield(L, -2, "response");
    push_fields(L, w, journal_figures);
    set_int(L, "created_ms", w->created_ms);
    set_int(L, "hits", hits);
    return 1;
}

/* The task was cancelled while its lookup waited. */
static void lookup_cancel(struct orch_task *t, void *ud)
{
    (void)t;
    orch_journal_wait_unqueue(ud);
}

/* The group commit answered the lookup: the task may run again. */
static void lookup_wake(void *ud)
{
    orch_task_wake(ud, NULL, NULL);
}

static int l_lookup_close(lua_State *L)
{
    struct jlookup *q = lua_touserdata(L, 1);
    orch_journal_wait_clear(&q->w);
    return 0;
}

static const luaL_Reg lookup_meta[] = {
    {"__close", l_lookup_close},
    {NULL, NULL},
};

static int push_owned(lua_State *L, const struct orch_journal_owned *e)
{
    struct orch_journal_entry view = {.key = e->key,
                                      .run_id = e->run_id,
                                      .provider = e->provider,
                                      .model = e->model,
                                      .response = e->response,
                                      .response_len = e->response_len,
                                      .tokens_in = e->tokens_in,
                                      .tokens_out = e->tokens_out,
                                      .cost_usd = e->cost_usd,
                                      .latency_ms = e->latency_ms,
                                      .created_ms = e->created_ms};
    return push_journal(L, &view, e->hits);
}

/* What a replayed call reads of an entry: the reply and its figures, as
 * four values. No table and no copies of the key, run, provider and model
 * as Lua strings: a journal replay makes one lookup a row. Returns 4. */
static int push_reply(lua_State *L, const struct orch_journal_entry *w)
{
    lua_pushlstring(L, w->response, w->response_len);
    lua_pushinteger(L, (lua_Integer)w->tokens_in);
    lua_pushinteger(L, (lua_Integer)w->tokens_out);
    lua_pushnumber(L, (lua_Number)w->cost_usd);
    return 4;
}

/* An entry found: the table of journal_get, or journal_reply's values. */
static int push_found(lua_State *L, const struct orch_journal_owned *e, int reply)
{
    if (!reply)
        return push_owned(L, e);
    struct orch_journal_entry view = {.response = e->response,
                                      .response_len = e->response_len,
                                      .tokens_in = e->tokens_in,
                                      .tokens_out = e->tokens_out,
                                      .cost_usd = e->cost_usd};
    return push_reply(L, &view);
}

/* Slot of the lookup record in journal_lookup: after self and key. */
#define LOOKUP_SLOT 3

/* ctx: 1 for journal_reply, 0 for journal_get. */
static int journal_lookup_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    struct jlookup *q = lua_touserdata(L, LOOKUP_SLOT);
    if (q->w.state == ORCH_JWAIT_FOUND)
        return push_found(L, &q->w.out, (int)ctx);
    if (q->w.state == ORCH_JWAIT_FAILED)
        return push_failure(L, q->w.err);
    lua_pushnil(L);
    return 1;
}

/* A lookup peeked at (orch_journal_group_peek): the entry, or nil. */
static int push_peeked(lua_State *L, struct orch_journal_owned *e, int found, int reply)
{
    if (!found) {
        lua_pushnil(L);
        return 1;
    }
    int pushed = push_found(L, e, reply);
    orch_journal_clear(e);
    return pushed;
}

/* journal_get and journal_reply: from a task, the lookup reads the round's
 * snapshot at once where the store keeps one (SQLite), or else joins the
 * round's group transaction and the task waits for it; elsewhere it reads
 * at once. Either way the store counts the hit. May yield. */
static int journal_lookup(lua_State *L, int reply)
{
    struct lstore *s = check_open_lstore(L);
    struct orch_store *st = s->st;
    const char *key = luaL_checkstring(L, 2);
    lua_settop(L, 2);
    const struct orch_journal_entry *waiting = orch_journal_group_pending(&s->jg, key);
    if (waiting != NULL) /* still waiting for its commit */
        return reply ? push_reply(L, waiting) : push_journal(L, waiting, 0);
    struct orch_task *t = orch_task_current(L);
    struct orch_journal_owned e;
    int found = t != NULL ? orch_journal_group_peek(&s->jg, key, reply, &e) : -1;
    if (found >= 0) /* answered at once from the round's read snapshot: no wait */
        return push_peeked(L, &e, found, reply);
    if (t != NULL && lua_isyieldable(L) && orch_journal_group_hook(&s->jg) == 0) {
        struct jlookup *q = lua_newuserdatauv(L, sizeof *q, 0);
        memset(q, 0, sizeof *q); /* not queued until it is */
        luaL_setmetatable(L, LOOKUP_MT);
        lua_toclose(L, LOOKUP_SLOT);
        q->t = t;
        q->w.reply = reply;
        if (orch_journal_group_wait(&s->jg, &q->w, key, lookup_wake, t) != 0)
            return luaL_error(L, "out of memory");
        orch_task_suspend(t, lookup_cancel, &q->w);
        return lua_yieldk(L, 0, (lua_KContext)reply, journal_lookup_k);
    }
    memset(&e, 0, sizeof e);
    int pushed = push_not_found(L, st, orch_store_journal_get(st, key, &e), NONE_NIL);
    if (pushed != 0)
        return pushed;
    pushed = push_found(L, &e, reply);
    orch_journal_clear(&e);
    return pushed;
}

/* journal_get(key) -> entry | nil | nil, err */
static int l_store_journal_get(lua_State *L)
{
    return journal_lookup(L, 0);
}

/* journal_reply(key) -> response, tokens_in, tokens_out, cost_usd | nil |
 * nil, err: what a replayed call reads of an entry, found as journal_get
 * finds it, its hit counted the same. */
static int l_store_journal_reply(lua_State *L)
{
    return journal_lookup(L, 1);
}

/* journal_reply with its store bound: key -> what journal_reply gives. The
 * store is upvalue 2 (1 is its class's metatable, as for a method). */
static int l_store_reply_bound(lua_State *L)
{
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_insert(L, 1);
    return journal_lookup(L, 1);
}

/* journal_replier() -> function(key): st:journal_reply(key) without the
 * method's lookup on the store and without a Lua function around it (the
 * call every replayed row makes). */
static int l_store_journal_replier(lua_State *L)
{
    check_open_lstore(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushcclosure(L, l_store_reply_bound, 2);
    return 1;
}

/* ---- retention ---- */

/* run_delete(id) -> true (deleted) | false (no such run) | nil, err */
static int l_store_run_delete(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    int rc = orch_store_run_delete(st, id);
    return push_flag(L, st, rc);
}

/* journal_prune(before_ms) -> entries removed | nil, err */
static int l_store_journal_prune(lua_State *L)
{
    struct lstore *s = check_open_lstore(L);
    struct orch_store *st = s->st;
    int64_t before = (int64_t)luaL_checkinteger(L, 2);
    orch_journal_group_flush(&s->jg); /* waiting replies first: they may be among the old ones */
    int64_t n = 0;
    if (orch_store_journal_prune(st, before, &n) != 0)
        return push_failure(L, st->err);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

/* vacuum() -> true | nil, err */
static int l_store_vacuum(lua_State *L)
{
    struct orch_store *st = check_open(L);
    return push_done(L, st, orch_store_vacuum(st));
}

/* ---- heartbeat ---- */

/* keepalive(run_id, seconds) refreshes the run's heartbeat every `seconds`
 * from the event loop (heartbeat.h); keepalive(nil) stops. */
static int l_store_keepalive(lua_State *L)
{
    struct lstore *s = check_open_lstore(L);
    struct orch_store *st = s->st;
    orch_heartbeat_stop(&s->beat);
    if (lua_isnoneornil(L, 2))
        return 0;
    const char *id = luaL_checkstring(L, 2);
    lua_Number secs = luaL_checknumber(L, 3);
    luaL_argcheck(L, secs > 0, 3, "expected a positive interval");
    const char *worker = luaL_optstring(L, 5, NULL); /* orch worker: the lease held, heartbeated too */
    lua_Integer lease_no = luaL_optinteger(L, 4, 0);
    if (orch_heartbeat_start(&s->beat, s->loop, st, id, (int64_t)(secs * 1000.0)) != 0)
        return luaL_error(L, "out of memory");
    if (worker != NULL && orch_heartbeat_lease(&s->beat, (int64_t)lease_no, worker) != 0) {
        orch_heartbeat_stop(&s->beat);
        return luaL_error(L, "out of memory");
    }
    return 0;
}

/* ---- live figures ---- */

/* live_put(run_id, updated_ms, figures_json) -> true | nil, err */
static int l_store_live_put(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    int64_t ms = (int64_t)luaL_checkinteger(L, 3);
    const char *fig = luaL_checkstring(L, 4);
    return push_done(L, st, orch_store_live_put(st, id, ms, fig));
}

/* live_get(run_id) -> figures_json, updated_ms | false (none yet) | nil, err */
static int l_store_live_get(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    char *fig = NULL;
    int64_t ms = 0;
    int pushed = push_not_found(L, st, orch_store_live_get(st, id, &fig, &ms), NONE_FALSE);
    if (pushed != 0)
        return pushed;
    lua_pushstring(L, fig); /* may raise on memory: free first */
    free(fig);
    lua_pushinteger(L, (lua_Integer)ms);
    return 2;
}

/* event_page(run_id, after_id, before_id, limit, newest_first) -> { event, ... } | nil, err:
 * after_id < id < before_id (0: no bound), at most limit. */
static int l_store_event_page(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    int64_t after = (int64_t)luaL_checkinteger(L, 3);
    int64_t before = (int64_t)luaL_checkinteger(L, 4);
    int64_t limit = (int64_t)luaL_checkinteger(L, 5);
    int newest = lua_toboolean(L, 6);
    luaL_argcheck(L, limit > 0, 5, "expected a positive page size");
    lua_newtable(L);
    return push_listed(L, st, orch_store_event_page(st, id, after, before, limit, newest, collect_event, L));
}

static int collect_error(void *ud, const struct orch_result *r)
{
    lua_State *L = ud;
    push_result(L, r, 4);
    return append_to_list(L);
}

/* error_page(run_id, after_seq, limit) -> { {seq, key, status, error}, ... } | nil, err */
static int l_store_error_page(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    int64_t after = (int64_t)luaL_checkinteger(L, 3);
    int64_t limit = (int64_t)luaL_checkinteger(L, 4);
    luaL_argcheck(L, limit > 0, 4, "expected a positive page size");
    lua_newtable(L);
    return push_listed(L, st, orch_store_error_page(st, id, after, limit, collect_error, L));
}

static int l_store_gc(lua_State *L)
{
    store_release(orch_lua_self(L, STORE_MT));
    return 0;
}

/* warning() -> what the store cannot guarantee (set at open, e.g. a Redis
 * server that does not fsync every write), or nil. */
static int l_store_warning(lua_State *L)
{
    struct orch_store *st = check_open(L);
    if (st->warning == NULL)
        return 0;
    lua_pushstring(L, st->warning);
    return 1;
}

/* ---- many workers, one run: leases and the shared budget ---- */

/* A lease: its plan (lease_plan reads it), then where it stands. */
static const struct field lease_planned[] = {
    FIELD(struct orch_lease, F_INT, no),   FIELD(struct orch_lease, F_INT, first_index),
    FIELD(struct orch_lease, F_INT, rows), FIELD(struct orch_lease, F_INT, offset),
    FIELD(struct orch_lease, F_INT, line), FIELDS_END,
};

static const struct field lease_state[] = {
    FIELD(struct orch_lease, F_INT, index),
    FIELD(struct orch_lease, F_STR, status),
    FIELD(struct orch_lease, F_STR, owner),
    FIELD(struct orch_lease, F_INT, claims),
    FIELD(struct orch_lease, F_INT, claimed_ms),
    FIELD(struct orch_lease, F_INT, heartbeat_ms),
    FIELD(struct orch_lease, F_INT, done_ms),
    FIELD(struct orch_lease, F_INT, age_ms),
    FIELDS_END,
};

/* The cursor lease_commit moves the lease to. */
static const struct field commit_cursor[] = {
    FIELD(struct orch_lease_commit, F_INT, offset),
    FIELD(struct orch_lease_commit, F_INT, line),
    FIELD(struct orch_lease_commit, F_INT, index),
    FIELDS_END,
};

static void push_lease(lua_State *L, const struct orch_lease *l)
{
    lua_createtable(L, 0, 13);
    push_fields(L, l, lease_planned);
    push_fields(L, l, lease_state);
}

/* lease_plan(run_id, { { no =, first_index =, rows =, offset =, line = }, ... }) -> true | nil, err */
static int l_store_lease_plan(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    size_t n = lua_rawlen(L, 3);
    struct orch_lease *l = lua_newuserdatauv(L, n * sizeof *l + 1, 0); /* Lua-owned: an error frees it */
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 3, (lua_Integer)i + 1);
        int t = lua_gettop(L);
        luaL_checktype(L, t, LUA_TTABLE);
        memset(&l[i], 0, sizeof l[i]);
        get_fields(L, t, &l[i], lease_planned);
        lua_pop(L, 1);
    }
    return push_done(L, st, orch_store_lease_plan(st, id, l, n));
}

/* lease_claim(run_id, worker, stale_ms) -> lease | false (none left) | nil, err */
static int l_store_lease_claim(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    const char *worker = luaL_checkstring(L, 3);
    lua_Integer stale = luaL_checkinteger(L, 4);
    struct orch_lease l;
    int pushed =
        push_not_found(L, st, orch_store_lease_claim(st, id, worker, (int64_t)stale, &l), NONE_FALSE);
    if (pushed != 0)
        return pushed;
    push_lease(L, &l);
    orch_lease_clear(&l);
    return 1;
}

/* lease_heartbeat(run_id, no, worker) -> true (held) | false (lost) | nil, err */
static int l_store_lease_heartbeat(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    lua_Integer no = luaL_checkinteger(L, 3);
    const char *worker = luaL_checkstring(L, 4);
    int rc = orch_store_lease_heartbeat(st, id, (int64_t)no, worker);
    return push_flag(L, st, rc);
}

/* lease_commit(run_id, { no =, worker =, offset =, line =, index =, ["end"] = 0|1|2,
 *   add = { rows_done =, rows_ok =, ..., cost_usd = } }, results) -> 1 | 2 (run completed) | 0 (lost) | nil,
 * err results: { { seq, key, status, error, data }, ... } */
static int l_store_lease_commit(lua_State *L)
{
    struct lstore *s = check_open_lstore(L);
    struct orch_store *st = s->st;
    const char *id = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TTABLE);
    orch_journal_group_flush(&s->jg); /* replies before the rows that used them */
    struct orch_lease_commit c;
    memset(&c, 0, sizeof c);
    c.no = get_int(L, 3, "no");
    c.worker = get_str(L, 3, "worker");
    if (c.worker == NULL)
        return luaL_error(L, "lease_commit: worker is required");
    get_fields(L, 3, &c, commit_cursor);
    c.end = (int)get_int(L, 3, "end");
    struct orch_run add;
    memset(&add, 0, sizeof add);
    lua_getfield(L, 3, "add");
    if (lua_istable(L, -1)) {
        get_fields(L, lua_gettop(L), &add, run_counters);
        c.add = &add;
    }
    lua_pop(L, 1);
    size_t nres = lua_rawlen(L, 4);
    struct orch_result *res = lua_newuserdatauv(L, nres * sizeof *res + 1, 0);
    to_results(L, 4, res, nres, 1);
    int rc = orch_store_lease_commit(st, id, &c, res, nres);
    return push_count(L, st, rc);
}

static int collect_lease(void *ud, const struct orch_lease *l)
{
    lua_State *L = ud;
    push_lease(L, l);
    return append_to_list(L);
}

/* lease_list(run_id) -> { lease, ... } (in order) | nil, err */
static int l_store_lease_list(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    lua_newtable(L);
    return push_listed(L, st, orch_store_lease_list(st, id, collect_lease, L));
}

/* budget_reserve(run_id, est_usd, max_usd) -> true | false (would pass the max) | nil, err */
static int l_store_budget_reserve(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    double est = luaL_checknumber(L, 3);
    double max = luaL_checknumber(L, 4);
    int rc = orch_store_budget_reserve(st, id, est, max);
    return push_flag(L, st, rc);
}

/* budget_settle(run_id, released_usd, spent_usd) -> true | nil, err */
static int l_store_budget_settle(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    double released = luaL_checknumber(L, 3);
    double spent = luaL_checknumber(L, 4);
    return push_done(L, st, orch_store_budget_settle(st, id, released, spent));
}

/* budget_set(run_id, max_usd) -> true | nil, err */
static int l_store_budget_set(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    double max = luaL_checknumber(L, 3);
    return push_done(L, st, orch_store_budget_set(st, id, max));
}

/* budget_get(run_id) -> { max_usd =, spent_usd =, reserved_usd = } | false (none) | nil, err */
static int l_store_budget_get(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    double max = 0, spent = 0, reserved = 0;
    int pushed = push_not_found(L, st, orch_store_budget_get(st, id, &max, &spent, &reserved), NONE_FALSE);
    if (pushed != 0)
        return pushed;
    lua_createtable(L, 0, 3);
    set_num(L, "max_usd", max);
    set_num(L, "spent_usd", spent);
    set_num(L, "reserved_usd", reserved);
    return 1;
}

/* journal_pend(key, owner, ttl_ms) -> true (the key is this owner's to send) | false (another's
 * live marker holds it) | nil, err */
static int l_store_journal_pend(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *key = luaL_checkstring(L, 2);
    const char *owner = luaL_checkstring(L, 3);
    lua_Integer ttl = luaL_checkinteger(L, 4);
    int rc = orch_store_journal_pend(st, key, owner, (int64_t)ttl);
    return push_flag(L, st, rc);
}

/* run_set_status(run_id, status [, error]) -> true | false (no such run) | nil, err */
static int l_store_run_set_status(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    const char *name = luaL_checkstring(L, 3);
    const char *error = luaL_optstring(L, 4, NULL);
    int status = orch_run_status_parse(name);
    if (status < 0)
        return luaL_error(L, "unknown run status '%s'", name);
    int rc = orch_store_run_set_status(st, id, (enum orch_run_status)status, error);
    return push_flag(L, st, rc);
}

/* rate_take(run_id, kind, amount, limit_per_min) -> 0 (taken) | ms to wait before asking again (nothing
 * taken) | nil, err: the run's shared token bucket of that kind (store.h: orch_store_rate_take). */
static int l_store_rate_take(lua_State *L)
{
    struct orch_store *st = check_open(L);
    const char *id = luaL_checkstring(L, 2);
    const char *kind = luaL_checkstring(L, 3);
    double amount = luaL_checknumber(L, 4);
    double limit = luaL_checknumber(L, 5);
    return push_count(L, st, orch_store_rate_take(st, id, kind, amount, limit));
}

static const luaL_Reg store_methods[] = {
    {"close", l_store_close},
    {"warning", l_store_warning},
    {"run_create", l_store_run_create},
    {"run_get", l_store_run_get},
    {"run_find_unfinished", l_store_run_find_unfinished},
    {"run_update", l_store_run_update},
    {"run_claim", l_store_run_claim},
    {"run_list", l_store_run_list},
    {"checkpoint_write", l_store_checkpoint_write},
    {"checkpoint_latest", l_store_checkpoint_latest},
    {"checkpoint_get", l_store_checkpoint_get},
    {"checkpoint_list", l_store_checkpoint_list},
    {"checkpoint_rollback", l_store_checkpoint_rollback},
    {"each_result", l_store_each_result},
    {"event_add", l_store_event_add},
    {"event_list", l_store_event_list},
    {"state_list", l_store_state_list},
    {"stats", l_store_stats},
    {"keepalive", l_store_keepalive},
    {"journal_put", l_store_journal_put},
    {"journal_get", l_store_journal_get},
    {"journal_reply", l_store_journal_reply},
    {"journal_replier", l_store_journal_replier},
    {"journal_flush", l_store_journal_flush},
    {"run_delete", l_store_run_delete},
    {"journal_prune", l_store_journal_prune},
    {"vacuum", l_store_vacuum},
    {"live_put", l_store_live_put},
    {"live_get", l_store_live_get},
    {"event_page", l_store_event_page},
    {"error_page", l_store_error_page},
    {"lease_plan", l_store_lease_plan},
    {"lease_claim", l_store_lease_claim},
    {"lease_heartbeat", l_store_lease_heartbeat},
    {"lease_commit", l_store_lease_commit},
    {"lease_list", l_store_lease_list},
    {"budget_reserve", l_store_budget_reserve},
    {"budget_settle", l_store_budget_settle},
    {"budget_set", l_store_budget_set},
    {"budget_get", l_store_budget_get},
    {"run_set_status", l_store_run_set_status},
    {"journal_pend", l_store_journal_pend},
    {"rate_take", l_store_rate_take},
    {NULL, NULL},
};

static const luaL_Reg store_meta[] = {
    {"__gc", l_store_gc},
    {"__close", l_store_gc},
    {"__index", NULL},
    {NULL, NULL},
};

/* now_ms() -> wall-clock milliseconds (the store's timestamps) */
static int l_store_now_ms(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)orch_wall_ms());
    return 1;
}

static const luaL_Reg store_funcs[] = {
    {"open", l_store_open},
    {"now_ms", l_store_now_ms},
    {NULL, NULL},
};

int luaopen_orch_store(lua_State *L)
{
    orch_lua_class(L, LOOKUP_MT, lookup_meta, NULL);
    orch_lua_class(L, STORE_MT, store_meta, store_methods);
    luaL_newlib(L, store_funcs);
    orch_results_lua_open(L);
    return 1;
}
