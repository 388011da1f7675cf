/* json_lua.c -- the `orch.json` module: canonical JSON encoding of Lua values.
 *
 * Canonical: a given Lua value encodes to the same bytes in every process,
 * whatever the per-process table hash seed, so the output can be hashed into
 * cache keys.  Object keys are emitted in byte-wise (memcmp) order and every
 * number has exactly one spelling.  Decoding is lua-cjson's (see
 * l_json_decode).
 *
 * Encoding rules (the specs in tests/spec/json_spec.lua pin them down):
 *   nil                      error (a table cannot hold nil, so top level only)
 *   boolean                  true / false
 *   integer                  decimal, e.g. -42
 *   float, integral, |x|<2^53  written like the integer: 3.0 -> 3, -0.0 -> 0
 *   other finite float       shortest of %.15g/%.16g/%.17g that reads back
 *                            exactly: 0.1 -> 0.1, 1e300 -> 1e+300
 *   NaN, +-inf               error
 *   string                   bytes as is, except '"' '\\' and bytes < 0x20
 *                            and 0x7f, which are escaped; no UTF-8 checking
 *   lightuserdata NULL       null (this is cjson.null and json.null)
 *   table with keys 1..n     array, n >= 1
 *   other table              object; string keys, integer keys written in
 *                            decimal; keys sorted; empty table -> {}
 *   metatable __jsontype     "array" or "object" forces the kind (so an empty
 *                            table can be []); json.array_mt / json.object_mt
 *   function, userdata,      error naming the path: "... at .stats.fn",
 *   thread, other key types  "... at [3]" (Lua's 1-based index)
 *   more than 64 nested tables  error "nested too deep (cycle?)"
 *
 * lua-cjson 2.1.0 (Debian's) has no empty_array / array_mt, so nothing of
 * cjson's is looked up by the encoder; __jsontype is the only marker.
 *
 * Memory: the output is built in a char array on the C stack and moves to a
 * Lua userdata anchored in a fixed stack slot when it outgrows it; key arrays
 * for large objects are userdata too.  A Lua error therefore leaks nothing,
 * and no C allocation needs freeing.
 *
 * Depends on: Lua 5.4 (lua.h, lauxlib.h); libc (snprintf, strtod, qsort);
 * lua-cjson at run time for decode only.
 */
#include "json_lua.h"

#include <lauxlib.h>
#include <lua.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(lua_Number) == sizeof(double),
               "orch.json formats lua_Number as a double");

#define JSON_MAXDEPTH 64
#define JSON_SMALLKEYS 16
#define JSON_INITBUF 1024
#define JSON_MAXSAFE 9007199254740992.0 /* 2^53 */

enum json_kind { JSON_KIND_AUTO, JSON_KIND_ARRAY, JSON_KIND_OBJECT };

/* One step of the path to the value being encoded, for error messages. */
struct json_seg {
    const char *key; /* NULL: an array element; else not NUL-terminated */
    size_t len;
    lua_Integer idx;
};

/* One key of an object being encoded.  A string key points into the Lua
 * string, which stays alive because the table holding it is on the stack and
 * no Lua code runs while we encode.  An integer key's text lives in num;
 * qsort moves entries, so always go through json_keytext. */
struct json_key {
    const char *s;
    size_t len;
    lua_Integer ikey;
    int vidx; /* stack slot of the value, 0: look it up in the table */
    int isint;
    int done;
    char num[24];
};

struct json_enc {
    lua_State *L;
    char *b;       /* output so far: init, or the userdata in slot bufidx */
    size_t n;
    size_t cap;
    int bufidx;    /* stack slot anchoring b once it is a userdata */
    int orderidx;  /* stack slot of the order argument, 0 if none */
    int depth;     /* tables currently open */
    int pathlen;
    struct json_seg path[JSON_MAXDEPTH + 1];
    char init[JSON_INITBUF];
};

/* What follows a backslash for each byte; 0 means copy the byte as is. */
static const char json_esc[256] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', /* 0x00 */
    'b', 't', 'n', 'u', 'f', 'r', 'u', 'u', /* 0x08 */
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', /* 0x10 */
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', /* 0x18 */
    ['"'] = '"',
    ['\\'] = '\\',
    [0x7f] = 'u',
};

static void json_encode_value(struct json_enc *e, int idx);

static int json_is_ident(const char *s, size_t len)
{
    if (len == 0) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        int digit = c >= '0' && c <= '9';
        if (!alpha && !(digit && i > 0)) {
            return 0;
        }
    }
    return 1;
}

/* Raises "<msg> at <path>", path like .stats.rows[3]["a b"] or "." for the
 * top-level value.  Never returns. */
static _Noreturn void json_fail(struct json_enc *e, const char *msg)
{
    lua_State *L = e->L;
    luaL_Buffer b;

    luaL_checkstack(L, 4, NULL);
    luaL_buffinit(L, &b);
    if (e->pathlen == 0) {
        luaL_addchar(&b, '.');
    }
    for (int i = 0; i < e->pathlen; i++) {
        const struct json_seg *seg = &e->path[i];
        if (seg->key == NULL) {
            char num[40];
            snprintf(num, sizeof num, "[%lld]", (long long)seg->idx);
            luaL_addstring(&b, num);
        } else if (json_is_ident(seg->key, seg->len)) {
            luaL_addchar(&b, '.');
            luaL_addlstring(&b, seg->key, seg->len);
        } else {
            luaL_addstring(&b, "[\"");
            luaL_addlstring(&b, seg->key, seg->len);
            luaL_addstring(&b, "\"]");
        }
    }
    luaL_pushresult(&b);
    luaL_error(L, "%s at %s", msg, lua_tostring(L, -1));
    abort(); /* not reached: luaL_error longjmps, but is not declared noreturn */
}

/* Makes room for need more bytes by moving the output into a bigger
 * userdata, which replaces the previous one in slot bufidx.  May raise a
 * memory error; the old buffer is then still anchored. */
static void json_grow(struct json_enc *e, size_t need)
{
    size_t cap = e->cap;

    if (need > SIZE_MAX / 4 - e->n) {
        luaL_error(e->L, "orch.json: output too large");
    }
    while (cap - e->n < need) {
        cap *= 2;
    }
    char *nb = lua_newuserdatauv(e->L, cap, 0);
    memcpy(nb, e->b, e->n);
    lua_replace(e->L, e->bufidx);
    e->b = nb;
    e->cap = cap;
}

static inline void json_putmem(struct json_enc *e, const char *p, size_t len)
{
    if (e->cap - e->n < len) {
        json_grow(e, len);
    }
    memcpy(e->b + e->n, p, len);
    e->n += len;
}

static inline void json_putc(struct json_enc *e, char c)
{
    if (e->cap == e->n) {
        json_grow(e, 1);
    }
    e->b[e->n] = c;
    e->n++;
}

/* Writes v in decimal to out (at least 21 bytes), NUL-terminated; returns the
 * length.  Handles LLONG_MIN by working on the unsigned magnitude. */
static size_t json_fmtint(char *out, lua_Integer v)
{
    unsigned long long u = (unsigned long long)v;
    char tmp[24];
    size_t n = 0;
    size_t k = 0;

    if (v < 0) {
        u = 0ULL - u;
        out[k] = '-';
        k++;
    }
    do {
        tmp[n] = (char)('0' + (int)(u % 10));
        n++;
        u /= 10;
    } while (u != 0);
    while (n > 0) {
        n--;
        out[k] = tmp[n];
        k++;
    }
    out[k] = '\0';
    return k;
}

static void json_putint(struct json_enc *e, lua_Integer v)
{
    char num[24];
    size_t len = json_fmtint(num, v);
    json_putmem(e, num, len);
}

/* See the rules at the top of the file.  Raises on NaN and infinities. */
static void json_putfloat(struct json_enc *e, lua_Number x)
{
    char num[40];
    int len = 0;

    if (isnan(x) || isinf(x)) {
        json_fail(e, "cannot encode NaN/inf");
    }
    if (x == floor(x) && fabs(x) < JSON_MAXSAFE) {
        json_putint(e, (lua_Integer)x); /* -0.0 becomes 0 here */
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        len = snprintf(num, sizeof num, "%.*g", prec, x);
        if (strtod(num, NULL) == x) {
            break;
        }
    }
    for (int i = 0; i < len; i++) {
        if (num[i] == ',') {
            num[i] = '.'; /* a locale with a decimal comma */
        }
    }
    json_putmem(e, num, (size_t)len);
}

static void json_putstr(struct json_enc *e, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    json_putc(e, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc = json_esc[c];
        if (esc == 0) {
            continue;
        }
        json_putmem(e, s + run, i - run);
        run = i + 1;
        if (esc == 'u') {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            json_putmem(e, u, sizeof u);
        } else {
            char two[2] = {'\\', esc};
            json_putmem(e, two, sizeof two);
        }
    }
    json_putmem(e, s + run, len - run);
    json_putc(e, '"');
}

static const char *json_keytext(const struct json_key *k)
{
    return k->isint ? k->num : k->s;
}

static int json_keycmp_mem(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0) {
        return c;
    }
    return (alen > blen) - (alen < blen);
}

static int json_keycmp(const void *pa, const void *pb)
{
    const struct json_key *a = pa;
    const struct json_key *b = pb;
    return json_keycmp_mem(json_keytext(a), a->len, json_keytext(b), b->len);
}

/* Sorts keys byte-wise; insertion sort for the common small object, where
 * it beats qsort's indirect calls. */
static void json_sortkeys(struct json_key *keys, size_t n)
{
    if (n > JSON_SMALLKEYS) {
        qsort(keys, n, sizeof *keys, json_keycmp);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        struct json_key k = keys[i];
        size_t j = i;
        while (j > 0 && json_keycmp(&keys[j - 1], &k) > 0) {
            keys[j] = keys[j - 1];
            j--;
        }
        keys[j] = k;
    }
}

/* Binary search in keys sorted by json_keycmp; NULL if absent. */
static struct json_key *json_findkey(struct json_key *keys, size_t n,
                                     const char *s, size_t len)
{
    size_t lo = 0;
    size_t hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = json_keycmp_mem(s, len, json_keytext(&keys[mid]), keys[mid].len);
        if (c == 0) {
            return &keys[mid];
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

/* Reads the __jsontype field of the metatable of the table at idx. */
static enum json_kind json_kindof(struct json_enc *e, int idx)
{
    lua_State *L = e->L;
    enum json_kind kind = JSON_KIND_AUTO;

    if (!lua_getmetatable(L, idx)) {
        return kind;
    }
    lua_pushliteral(L, "__jsontype");
    lua_rawget(L, -2);
    if (lua_type(L, -1) == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);
        if (strcmp(s, "array") == 0) {
            kind = JSON_KIND_ARRAY;
        } else if (strcmp(s, "object") == 0) {
            kind = JSON_KIND_OBJECT;
        } else {
            json_fail(e, "__jsontype must be \"array\" or \"object\"");
        }
    } else if (!lua_isnil(L, -1)) {
        json_fail(e, "__jsontype must be \"array\" or \"object\"");
    }
    lua_pop(L, 2);
    return kind;
}

/* Encodes the element at the top of the stack as child seg, then pops it. */
static void json_encode_child(struct json_enc *e, const char *key, size_t len,
                              lua_Integer idx)
{
    struct json_seg *seg = &e->path[e->pathlen];
    seg->key = key;
    seg->len = len;
    seg->idx = idx;
    e->pathlen++;
    json_encode_value(e, lua_gettop(e->L));
    e->pathlen--;
    lua_pop(e->L, 1);
}

static void json_encode_array(struct json_enc *e, int idx, lua_Integer n)
{
    json_putc(e, '[');
    for (lua_Integer i = 1; i <= n; i++) {
        if (i > 1) {
            json_putc(e, ',');
        }
        lua_rawgeti(e->L, idx, i);
        json_encode_child(e, NULL, 0, i);
    }
    json_putc(e, ']');
}

static void json_encode_member(struct json_enc *e, int idx, struct json_key *k,
                               int first)
{
    lua_State *L = e->L;

    if (!first) {
        json_putc(e, ',');
    }
    json_putstr(e, json_keytext(k), k->len);
    json_putc(e, ':');
    if (k->vidx != 0) {
        lua_pushvalue(L, k->vidx);
    } else if (k->isint) {
        lua_rawgeti(L, idx, k->ikey);
    } else {
        lua_pushlstring(L, k->s, k->len);
        lua_rawget(L, idx);
    }
    k->done = 1;
    json_encode_child(e, json_keytext(k), k->len, 0);
}

/* Encodes the table at idx, known to have count keys, as an object: keys
 * collected, sorted, and the top-level order argument applied. */
static void json_encode_object(struct json_enc *e, int idx, lua_Integer count)
{
    lua_State *L = e->L;
    struct json_key small[JSON_SMALLKEYS];
    struct json_key *keys = small;
    size_t n = 0;
    int first = 1;

    if (count > JSON_SMALLKEYS) {
        if ((lua_Unsigned)count > SIZE_MAX / sizeof *keys) {
            luaL_error(L, "orch.json: table too large");
        }
        keys = lua_newuserdatauv(L, (size_t)count * sizeof *keys, 0);
    }
    int base = lua_gettop(L);
    int keep = keys == small; /* keep small objects' values on the stack */
    if (keep) {
        luaL_checkstack(L, 2 * JSON_SMALLKEYS + 4, "orch.json: nested too deep");
    }
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (keep) {
            lua_pushvalue(L, -2); /* leaves key, value on the stack */
        } else {
            lua_pop(L, 1);
        }
        if (n == (size_t)count) {
            lua_pop(L, 1); /* cannot happen: no Lua code runs between passes */
            break;
        }
        struct json_key *k = &keys[n];
        k->done = 0;
        k->vidx = keep ? lua_gettop(L) - 1 : 0;
        if (lua_type(L, -1) == LUA_TSTRING) {
            k->s = lua_tolstring(L, -1, &k->len);
            k->isint = 0;
        } else if (lua_isinteger(L, -1)) {
            k->ikey = lua_tointeger(L, -1);
            k->len = json_fmtint(k->num, k->ikey);
            k->isint = 1;
        } else {
            const char *tn = lua_isnumber(L, -1) ? "float" : luaL_typename(L, -1);
            json_fail(e, lua_pushfstring(L, "cannot encode a table with a %s key", tn));
        }
        n++;
    }
    json_sortkeys(keys, n);
    for (size_t i = 1; i < n; i++) {
        if (json_keycmp(&keys[i - 1], &keys[i]) == 0) {
            lua_pushlstring(L, json_keytext(&keys[i]), keys[i].len);
            json_fail(e, lua_pushfstring(L, "duplicate key \"%s\" (integer and string)",
                                         lua_tostring(L, -1)));
        }
    }

    json_putc(e, '{');
    if (e->orderidx != 0 && e->depth == 1) {
        lua_Integer on = (lua_Integer)lua_rawlen(L, e->orderidx);
        for (lua_Integer j = 1; j <= on; j++) {
            size_t len;
            lua_rawgeti(L, e->orderidx, j);
            const char *s = lua_tolstring(L, -1, &len);
            lua_pop(L, 1); /* s stays alive: the order table holds it */
            struct json_key *k = json_findkey(keys, n, s, len);
            if (k != NULL && !k->done) {
                json_encode_member(e, idx, k, first);
                first = 0;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!keys[i].done) {
            json_encode_member(e, idx, &keys[i], first);
            first = 0;
        }
    }
    json_putc(e, '}');
    lua_settop(L, keys == small ? base : base - 1);
}

/* Encodes the table at idx as an array or an object (see the rules). */
static void json_encode_table(struct json_enc *e, int idx)
{
    lua_State *L = e->L;
    lua_Integer count = 0;
    lua_Integer maxi = 0;
    int positive = 1;

    if (e->depth >= JSON_MAXDEPTH) {
        json_fail(e, "nested too deep (cycle?)");
    }
    luaL_checkstack(L, 8, "orch.json: nested too deep");
    e->depth++;
    enum json_kind kind = json_kindof(e, idx);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        count++;
        if (positive && lua_isinteger(L, -1)) {
            lua_Integer k = lua_tointeger(L, -1);
            if (k < 1) {
                positive = 0;
            } else if (k > maxi) {
                maxi = k;
            }
        } else {
            positive = 0;
        }
    }
    int sequence = positive && maxi == count; /* keys exactly 1..count */
    if (kind == JSON_KIND_ARRAY) {
        if (!sequence) {
            json_fail(e, "cannot encode a table marked as array whose keys are not 1..n");
        }
        json_encode_array(e, idx, count);
    } else if (kind == JSON_KIND_AUTO && sequence && count > 0) {
        json_encode_array(e, idx, count);
    } else {
        json_encode_object(e, idx, count);
    }
    e->depth--;
}

static void json_encode_value(struct json_enc *e, int idx)
{
    lua_State *L = e->L;

    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx)) {
            json_putmem(e, "true", 4);
        } else {
            json_putmem(e, "false", 5);
        }
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            json_putint(e, lua_tointeger(L, idx));
        } else {
            json_putfloat(e, lua_tonumber(L, idx));
        }
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        json_putstr(e, s, len);
        break;
    }
    case LUA_TTABLE:
        json_encode_table(e, idx);
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            json_putmem(e, "null", 4);
            break;
        }
        json_fail(e, "cannot encode a lightuserdata other than null");
        break;
    case LUA_TNIL:
        json_fail(e, "cannot encode nil");
        break;
    default:
        json_fail(e, lua_pushfstring(L, "cannot encode a %s", luaL_typename(L, idx)));
        break;
    }
}

/* encode(value [, order]) -> string.  order, an array of strings, puts those
 * keys of the top-level object first, in that order.  Raises on values JSON
 * cannot represent (see the rules at the top). */
static int l_json_encode(lua_State *L)
{
    struct json_enc e;
    int hasorder = !lua_isnoneornil(L, 2);

    luaL_checkany(L, 1);
    if (hasorder) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_Integer on = (lua_Integer)lua_rawlen(L, 2);
        for (lua_Integer j = 1; j <= on; j++) {
            int t = lua_rawgeti(L, 2, j);
            lua_pop(L, 1);
            if (t != LUA_TSTRING) {
                return luaL_argerror(L, 2, "order must be an array of strings");
            }
        }
    }
    lua_settop(L, 2);
    lua_pushnil(L); /* slot 3 anchors the output once it outgrows e.init */
    e.L = L;
    e.b = e.init;
    e.n = 0;
    e.cap = sizeof e.init;
    e.bufidx = 3;
    e.orderidx = hasorder ? 2 : 0;
    e.depth = 0;
    e.pathlen = 0;
    json_encode_value(&e, 1);
    lua_pushlstring(L, e.b, e.n);
    return 1;
}

/* Puts a private cjson decoder (cjson.new().decode, so settings changed on
 * the shared cjson module do not leak in) into upvalue 1.  Raises if
 * lua-cjson cannot be loaded. */
static void json_load_decoder(lua_State *L)
{
    int top = lua_gettop(L);

    if (lua_getglobal(L, "require") != LUA_TFUNCTION) {
        luaL_error(L, "orch.json.decode needs lua-cjson, and require is unavailable");
    }
    lua_pushliteral(L, "cjson");
    lua_call(L, 1, 1);
    if (lua_getfield(L, -1, "new") == LUA_TFUNCTION) {
        lua_call(L, 0, 1);
    } else {
        lua_pop(L, 1);
    }
    if (lua_getfield(L, -1, "decode") != LUA_TFUNCTION) {
        luaL_error(L, "orch.json.decode: cjson has no decode function");
    }
    lua_replace(L, lua_upvalueindex(1));
    lua_settop(L, top);
}

/* decode(s) -> value: lua-cjson's decode.  Raises on malformed JSON (use
 * pcall, or cjson.safe, for untrusted input).  null decodes to json.null;
 * numbers decode to floats (1 -> 1.0), which encode back to the same text. */
static int l_json_decode(lua_State *L)
{
    luaL_checklstring(L, 1, NULL);
    lua_settop(L, 1);
    if (lua_isnil(L, lua_upvalueindex(1))) {
        json_load_decoder(L);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

static const luaL_Reg json_funcs[] = {
    {"encode", l_json_encode},
    {NULL, NULL},
};

static void json_newmarker(lua_State *L, const char *field, const char *kind)
{
    lua_createtable(L, 0, 1);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "__jsontype");
    lua_setfield(L, -2, field);
}

int luaopen_orch_json(lua_State *L)
{
    luaL_newlib(L, json_funcs);
    lua_pushnil(L); /* upvalue: cjson's decode, loaded on first use */
    lua_pushcclosure(L, l_json_decode, 1);
    lua_setfield(L, -2, "decode");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    json_newmarker(L, "array_mt", "array");
    json_newmarker(L, "object_mt", "object");
    return 1;
}
