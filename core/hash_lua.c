/* hash_lua.c -- the `orch.hash` module: xxHash (XXH3) digests as hex text.
 *
 * Cache keys are xxh128(orch.json.encode(value)); 128 bits make accidental
 * collisions a non-issue for any realistic number of cached results.  The
 * hex is of the canonical (big-endian) digest, so it matches xxhsum and
 * other xxHash implementations byte for byte.
 *
 * A seed is a Lua integer, taken as the unsigned 64-bit XXH64_hash_t with
 * the same bits (-1 is 0xffffffffffffffff); seed 0 is the unseeded hash.
 *
 * xxh128_parts(a, b, ...) is xxh128(a .. b .. ...) without making the
 * joined string (the journal key of a large request body).
 *
 * file(path) hashes a whole file in a streaming XXH3-128 state, a buffer
 * at a time, so an input of any size is fingerprinted without ever being
 * held in memory (or in Lua).
 *
 * Depends on: Lua 5.4 (lua.h, lauxlib.h); libxxhash >= 0.8 (xxhash.h).
 */
#include "hash_lua.h"

#include <lauxlib.h>
#include <lua.h>

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* Pushes len bytes as lowercase hex. */
static void hash_pushhex(lua_State *L, const unsigned char *digest, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char out[64];

    for (size_t i = 0; i < len && 2 * i + 1 < sizeof out; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    lua_pushlstring(L, out, 2 * len);
}

/* Pushes the hex digest of XXH3 over argument 1 with seed argument 2
 * (default 0): 128 bits when wide, else 64. */
static int hash_xxh3(lua_State *L, int wide)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    XXH64_hash_t seed = (XXH64_hash_t)luaL_optinteger(L, 2, 0);
    if (wide) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_withSeed(s, len, seed));
        hash_pushhex(L, c.digest, sizeof c.digest);
    } else {
        XXH64_canonical_t c;
        XXH64_canonicalFromHash(&c, XXH3_64bits_withSeed(s, len, seed));
        hash_pushhex(L, c.digest, sizeof c.digest);
    }
    return 1;
}

/* xxh128(s [, seed]) -> 32 hex chars of XXH3_128bits_withSeed(s, seed). */
static int l_hash_xxh128(lua_State *L)
{
    return hash_xxh3(L, 1);
}

/* xxh64(s [, seed]) -> 16 hex chars of XXH3_64bits_withSeed(s, seed). */
static int l_hash_xxh64(lua_State *L)
{
    return hash_xxh3(L, 0);
}

/* xxh128_parts(s...) -> 32 hex chars of XXH3_128bits over the arguments'
 * bytes one after another: xxh128(a .. b .. c) without the joined string.
 * A journal key hashes provider, model and a request body of any size;
 * the join made a Lua string a call (a copy, an allocation, the
 * collector's work).  Up to PARTS_BUF bytes are joined on the C stack and
 * hashed in one shot; longer input streams through an XXH3 state, which
 * gives the same digest.  Every argument is checked before anything is
 * allocated; numbers are hashed as their text, as xxh128 does. */
static int l_hash_xxh128_parts(lua_State *L)
{
    enum { PARTS_BUF = 4096 };
    char buf[PARTS_BUF];
    int n = lua_gettop(L);
    size_t total = 0;

    for (int i = 1; i <= n; i++) {
        size_t len;
        luaL_checklstring(L, i, &len);
        total += len;
    }
    XXH128_hash_t h;
    if (total <= PARTS_BUF) {
        size_t at = 0;
        for (int i = 1; i <= n; i++) {
            size_t len;
            const char *s = lua_tolstring(L, i, &len);
            memcpy(buf + at, s, len);
            at += len;
        }
        h = XXH3_128bits(buf, total);
    } else {
        XXH3_state_t *state = XXH3_createState();
        if (state == NULL)
            return luaL_error(L, "hash.xxh128_parts: out of memory");
        XXH3_128bits_reset(state);
        for (int i = 1; i <= n; i++) {
            size_t len;
            const char *s = lua_tolstring(L, i, &len);
            XXH3_128bits_update(state, s, len);
        }
        h = XXH3_128bits_digest(state);
        XXH3_freeState(state);
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    hash_pushhex(L, c.digest, sizeof c.digest);
    return 1;
}

/* file(path) -> 32 hex chars of XXH3_128bits over the file's bytes
 * | nil, "path: reason" (luaL_fileresult style: a missing or unreadable
 * file is an expected failure). Reads in 1 MiB blocks. */
static int l_hash_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return luaL_fileresult(L, 0, path);
    enum { BLOCK = 1 << 20 };
    char *buf = malloc(BLOCK);
    XXH3_state_t *state = XXH3_createState();
    if (buf == NULL || state == NULL) {
        free(buf);
        XXH3_freeState(state);
        fclose(f);
        return luaL_error(L, "hash.file: out of memory");
    }
    XXH3_128bits_reset(state);
    size_t n;
    while ((n = fread(buf, 1, BLOCK, f)) > 0)
        XXH3_128bits_update(state, buf, n);
    int failed = ferror(f);
    int err = errno;
    XXH128_hash_t h = XXH3_128bits_digest(state);
    free(buf);
    XXH3_freeState(state);
    fclose(f);
    if (failed) {
        errno = err;
        return luaL_fileresult(L, 0, path);
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    hash_pushhex(L, c.digest, sizeof c.digest);
    return 1;
}

static const luaL_Reg hash_funcs[] = {
    {"file", l_hash_file},
    {"xxh128", l_hash_xxh128},
    {"xxh128_parts", l_hash_xxh128_parts},
    {"xxh64", l_hash_xxh64},
    {NULL, NULL},
};

int luaopen_orch_hash(lua_State *L)
{
    luaL_newlib(L, hash_funcs);
    return 1;
}
