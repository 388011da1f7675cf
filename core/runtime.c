/* runtime.c — Lua state set-up, embedded modules, protected calls. */
#include "runtime.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "embed.h"
#include "hash_lua.h"
#include "http.h"
#include "http_lua.h"
#include "json_lua.h"
#include "reader_lua.h"
#include "sched_lua.h"
#include "sink_lua.h"
#include "store_lua.h"
#include "serve_lua.h"
#include "sys_lua.h"

static const luaL_Reg c_modules[] = {
    {"orch.sched", luaopen_orch_sched},   {"orch.json", luaopen_orch_json},
    {"orch.hash", luaopen_orch_hash},     {"orch.http", luaopen_orch_http},
    {"orch.reader", luaopen_orch_reader}, {"orch.sink", luaopen_orch_sink},
    {"orch.store", luaopen_orch_store},   {"orch.sys", luaopen_orch_sys},
    {"orch.httpd", luaopen_orch_httpd},   {NULL, NULL},
};

/* Message handler: string errors get a traceback; other values are kept
 * unless they have __tostring (lua.c msghandler). */
static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        /* what __tostring gives, if there is one; else the error object
         * itself, kept for the caller to inspect */
        luaL_callmeta(L, 1, "__tostring");
        return 1;
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int orch_runtime_pcall(lua_State *L, int nargs, int nresults)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    return status;
}

/* package.preload loader of an embedded Lua module; upvalue 1 is its index. */
static int load_embedded(lua_State *L)
{
    const struct orch_embedded *e = &orch_embedded_lua[lua_tointeger(L, lua_upvalueindex(1))];
    if (luaL_loadbuffer(L, (const char *)e->src, e->len, e->chunkname) != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, e->module);
    lua_pushstring(L, e->chunkname + 1);
    lua_call(L, 2, 1);
    return 1;
}

void orch_lua_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods)
{
    luaL_newmetatable(L, name);
    lua_pushvalue(L, -1);
    luaL_setfuncs(L, meta, 1);
    if (methods != NULL) {
        lua_newtable(L);
        lua_pushvalue(L, -2);
        luaL_setfuncs(L, methods, 1);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}

void *orch_lua_self(lua_State *L, const char *name)
{
    void *p = lua_touserdata(L, 1);
    if (p != NULL && lua_getmetatable(L, 1)) {
        /* upvalue 1 of a function without one is no valid value: unequal */
        int same = lua_rawequal(L, -1, lua_upvalueindex(1));
        lua_pop(L, 1);
        if (same)
            return p;
    }
    return luaL_checkudata(L, 1, name);
}

void orch_runtime_preload(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const luaL_Reg *m = c_modules; m->name != NULL; m++) {
        lua_pushcfunction(L, m->func);
        lua_setfield(L, -2, m->name);
    }
    for (size_t i = 0; orch_embedded_lua[i].module != NULL; i++) {
        lua_pushinteger(L, (lua_Integer)i);
        lua_pushcclosure(L, load_embedded, 1);
        lua_setfield(L, -2, orch_embedded_lua[i].module);
    }
    lua_pop(L, 1);
}

/* ---- the counting allocator ---- */

/* Lua's small blocks (tables, strings, closures, table parts up to
 * POOL_MAX bytes: nearly all of its allocations) come from a pool: one
 * reserved range of address space, carved in order and touched only as
 * it is used, with a list of freed blocks per size class (POOL_STEP
 * apart). Lua passes a block's size when it frees or resizes it, so a
 * block needs no header and its class is found from the size alone; a
 * block is the pool's when its address is in the range. glibc's malloc
 * spent about 60,000 instructions an LLM call on Lua's blocks (a quarter
 * of orch's own share of a call). Larger blocks, the blocks Lua made
 * before the allocator was set, and any block once the range is used up
 * stay with malloc. Freed blocks are kept for Lua's next ones, never
 * given back: its garbage collector keeps the live size steady. */
#define POOL_STEP 8
#define POOL_MAX 512
#define POOL_CLASSES (POOL_MAX / POOL_STEP)
#define POOL_RESERVE ((size_t)1 << 30)
#define POOL_ROOT_STEP ((size_t)1 << 20)

/* Under AddressSanitizer a block in the pool is poisoned while free, and
 * the range is a root for the leak checker: the malloc blocks that only
 * Lua's objects point to are reachable through it. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#define POOL_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define POOL_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#define POOL_ROOT(p, n) __lsan_register_root_region((p), (n))
#define POOL_UNROOT(p, n) __lsan_unregister_root_region((p), (n))
#else
static inline void pool_nop(const void *p, size_t n)
{
    (void)p;
    (void)n;
}
#define POOL_POISON pool_nop
#define POOL_UNPOISON pool_nop
#define POOL_ROOT pool_nop
#define POOL_UNROOT pool_nop
#endif

struct orch_mem {
    size_t used;               /* bytes Lua holds (its own count: the sizes it passes) */
    size_t limit;              /* growth past it is refused */
    int fixed;                 /* set by the command line: a workflow cannot change it */
    char *base, *top, *end;    /* the pool's range, carved up to top; NULL when not reserved */
    char *rooted;              /* under AddressSanitizer: the leak checker scans base..rooted */
    void *freed[POOL_CLASSES]; /* per class, blocks freed, linked through their first word */
};

static size_t pool_class(size_t n)
{
    return (n - 1) / POOL_STEP;
}

static int pool_owns(const struct orch_mem *m, const void *p)
{
    return (uintptr_t)p - (uintptr_t)m->base < (uintptr_t)(m->top - m->base);
}

/* A block of n bytes (1..POOL_MAX): a freed one of its class, else carved,
 * else malloc's. */
static void *pool_get(struct orch_mem *m, size_t n)
{
    size_t c = pool_class(n), size = (c + 1) * POOL_STEP;
    void *p = m->freed[c];
    if (p != NULL) {
        POOL_UNPOISON(p, size);
        void *next = *(void **)p;
        m->freed[c] = next;
        if (next != NULL)
            __builtin_prefetch(next, 1);
        return p;
    }
    if ((size_t)(m->end - m->top) >= size) {
        p = m->top;
        m->top += size;
        POOL_UNPOISON(p, size);
        if (m->top > m->rooted) { /* a step more for the leak checker (not all of the 1 GiB) */
            POOL_ROOT(m->rooted, POOL_ROOT_STEP);
            m->rooted += POOL_ROOT_STEP;
        }
        return p;
    }
    return malloc(n);
}

static void pool_put(struct orch_mem *m, void *p, size_t n)
{
    size_t c = pool_class(n);
    *(void **)p = m->freed[c];
    m->freed[c] = p;
    POOL_POISON(p, (c + 1) * POOL_STEP);
}

static void pool_reserve(struct orch_mem *m)
{
    void *p =
        mmap(NULL, POOL_RESERVE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return; /* every block from malloc, as before */
    m->base = m->top = m->rooted = p;
    m->end = m->base + POOL_RESERVE;
    POOL_POISON(p, POOL_RESERVE);
}

/* ptr (osize bytes, a block of the pool) resized to nsize. Shrinking
 * never fails: without room for a smaller block ptr stays, and is filed
 * later under its new, smaller size (a block at least that large). */
static void *pool_resize(struct orch_mem *m, void *ptr, size_t osize, size_t nsize)
{
    if (nsize <= POOL_MAX && pool_class(nsize) == pool_class(osize))
        return ptr;
    void *q = nsize <= POOL_MAX ? pool_get(m, nsize) : malloc(nsize);
    if (q == NULL)
        return nsize < osize ? ptr : NULL;
    memcpy(q, ptr, osize < nsize ? osize : nsize);
    pool_put(m, ptr, osize);
    return q;
}

size_t orch_runtime_default_memory_limit(void)
{
    const size_t cap = (size_t)4 << 30;
    long pages = sysconf(_SC_PHYS_PAGES);
    long psize = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psize <= 0)
        return cap;
    size_t half = (size_t)pages / 2 * (size_t)psize;
    return half < cap ? half : cap;
}

/* lua_Alloc over the pool and realloc/free that keeps a byte count and refuses to grow
 * past the limit. Shrinking and freeing never fail (Lua relies on it).
 * A refusal makes Lua collect in full and retry once before it raises
 * LUA_ERRMEM, so garbage never counts against a row. One branch and an
 * add per call: it is on every allocation's path. */
static void *mem_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct orch_mem *m = ud;
    if (ptr == NULL)
        osize = 0; /* then osize is the kind of object, not a size */
    if (nsize == 0) {
        if (pool_owns(m, ptr))
            pool_put(m, ptr, osize);
        else
            free(ptr);
        m->used -= osize;
        return NULL;
    }
    if (nsize > osize && m->used + (nsize - osize) > m->limit)
        return NULL;
    void *p;
    if (ptr == NULL)
        p = nsize <= POOL_MAX ? pool_get(m, nsize) : malloc(nsize);
    else if (pool_owns(m, ptr))
        p = pool_resize(m, ptr, osize, nsize);
    else
        p = realloc(ptr, nsize);
    if (p == NULL)
        return NULL;
    m->used = m->used - osize + nsize;
    return p;
}

static struct orch_mem *mem_of(lua_State *L)
{
    void *ud;
    if (lua_getallocf(L, &ud) != mem_alloc)
        return NULL;
    return ud;
}

size_t orch_runtime_memory_limit(lua_State *L)
{
    struct orch_mem *m = mem_of(L);
    return m != NULL ? m->limit : 0;
}

size_t orch_runtime_memory_used(lua_State *L)
{
    struct orch_mem *m = mem_of(L);
    return m != NULL ? m->used : 0;
}

size_t orch_runtime_set_memory_limit(lua_State *L, size_t bytes, int fixed)
{
    struct orch_mem *m = mem_of(L);
    if (m == NULL)
        return 0;
    size_t prev = m->limit;
    if (fixed || !m->fixed)
        m->limit = bytes;
    if (fixed)
        m->fixed = 1;
    return prev;
}

/* the collector's pause, in percent (see orch_runtime_open); Lua keeps it
 * in steps of 4 */
#define ORCH_GC_PAUSE 148

static int pinit(lua_State *L)
{
    luaL_openlibs(L);
    orch_runtime_preload(L);
    return 0;
}

int orch_runtime_open(struct orch_runtime *rt)
{
    memset(rt, 0, sizeof *rt);
    rt->mem = calloc(1, sizeof *rt->mem);
    rt->L = luaL_newstate(); /* its panic and warning functions, then our allocator */
    rt->loop = orch_loop_new();
    if (rt->mem == NULL || rt->L == NULL || rt->loop == NULL)
        goto fail;
    /* the blocks made so far came from realloc too: counting starts from
     * Lua's own figure, and mem_alloc frees them like any other */
    rt->mem->used = (size_t)lua_gc(rt->L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(rt->L, LUA_GCCOUNTB, 0);
    rt->mem->limit = orch_runtime_default_memory_limit();
    pool_reserve(rt->mem);
    lua_setallocf(rt->L, mem_alloc, rt->mem);
    /* A collection starts when the heap reaches about 1.5 x what the last one
     * kept (Lua's default: 2 x). Rows in flight are most of what a run
     * keeps, so the garbage allowed grows with them: at 2,000 in flight
     * this holds max RSS 4.5 MB lower, at 200 1 MB, for 2.4 % more
     * instructions a call (more cycles over the same live rows). */
    lua_gc(rt->L, LUA_GCINC, ORCH_GC_PAUSE, 0, 0);
    rt->sched = orch_sched_new(rt->L, rt->loop);
    if (rt->sched == NULL)
        goto fail;
    lua_pushcfunction(rt->L, pinit);
    if (lua_pcall(rt->L, 0, 0, 0) != LUA_OK)
        goto fail;
    return 0;
fail:
    orch_runtime_close(rt);
    return -1;
}

void orch_runtime_close(struct orch_runtime *rt)
{
    orch_sched_free(rt->sched);
    if (rt->L != NULL)
        lua_close(rt->L);
    if (rt->mem != NULL && rt->mem->base != NULL) {
        for (char *p = rt->mem->base; p < rt->mem->rooted; p += POOL_ROOT_STEP)
            POOL_UNROOT(p, POOL_ROOT_STEP);
        munmap(rt->mem->base, POOL_RESERVE); /* after lua_close, which frees into it */
    }
    free(rt->mem); /* after lua_close: its frees still count */
    orch_loop_free(rt->loop);
    memset(rt, 0, sizeof *rt);
    orch_http_global_cleanup();
}
