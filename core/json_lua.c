/* json_lua.c -- the `orch.json` module: canonical JSON encoding of Lua values
 * and exact decoding back to them.
 *
 * Canonical: a given Lua value encodes to the same bytes in every process,
 * whatever the per-process table hash seed, so the output can be hashed into
 * cache keys.  Object keys are emitted in byte-wise (memcmp) order and every
 * number has exactly one spelling.
 *
 * Exact: decode builds Lua values directly, so what is read and written back
 * is the same value -- integers stay integers (64-bit), floats stay floats,
 * [] stays [] -- and, for text in this canonical form, the same bytes.
 * lua-cjson 2.1.0 (Debian's) decodes every number as a double and [] as {},
 * which is why it is not used (see bench/json_decode.lua for the speed).
 *
 * Encoding rules (the specs in tests/spec/json_spec.lua pin them down):
 *   nil                      error (a table cannot hold nil, so top level only)
 *   boolean                  true / false
 *   integer                  decimal, e.g. -42
 *   finite float             shortest of %.15g/%.16g/%.17g that reads back
 *                            exactly, with ".0" added when that has neither
 *                            '.' nor an exponent, so it reads back as a float:
 *                            0.1 -> 0.1, 3.0 -> 3.0, 1e300 -> 1e+300,
 *                            -0.0 -> 0.0 (-0.0 == 0.0 in Lua)
 *   NaN, +-inf               error
 *   string                   bytes as is, except '"' '\\' and bytes < 0x20
 *                            and 0x7f, which are escaped; must be UTF-8
 *                            (error "invalid UTF-8 at .path")
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
 * Nothing of lua-cjson's is looked up; __jsontype is the only array marker.
 * cjson.null is the same NULL lightuserdata as json.null.
 *
 * Decoding rules (decode(text [, want_order])):
 *   number without . or e    Lua integer (-0 is 0); beyond int64: error
 *                            "integer N at .path does not fit in 64 bits"
 *   other number             Lua float, correctly rounded (short decimals
 *                            directly, others by lua_stringtonumber);
 *                            overflow to infinity is an error
 *   string                   must be UTF-8 (error naming the path), \u
 *                            escapes become UTF-8, a lone surrogate is an error
 *   []                       an empty table with json.array_mt, so it encodes
 *                            back as []; other arrays are plain sequences
 *   {}                       a plain table; a repeated key: the last one wins
 *   null                     json.null
 *   syntax errors            "<what> at byte N" (1-based)
 *   more than 1000 nested    error "nested too deep at byte N"
 * With want_order, a second result lists the keys of a top-level object in
 * input order (nil for other values); callers use it as encode's order.
 *
 * Memory: the output is built in a char array on the C stack and moves to a
 * Lua userdata anchored in a fixed stack slot when it outgrows it; key arrays
 * for large objects are userdata too.  A Lua error therefore leaks nothing,
 * and no C allocation needs freeing.  The decoder's state is on the C stack
 * and each value goes straight onto the Lua stack: the same holds.
 *
 * Depends on: Lua 5.4 (lua.h, lauxlib.h); libc (snprintf, strtod, qsort).
 */
#include "json_lua.h"

#include <lauxlib.h>
#include <lua.h>

#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(lua_Number) == sizeof(double), "orch.json formats lua_Number as a double");

#define JSON_MAXDEPTH 64
#define JSON_SMALLKEYS 16
#define JSON_INITBUF 1024
#define JSON_DEC_MAXDEPTH 1000
#define JSON_DEC_MAXHINT 64            /* most slots pre-sized for a top-level object */
#define JSON_EXACT 9007199254740992ULL /* 2^53: integers up to it are exact doubles */

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

/* encoder()'s order, copied once into a userdata (the closure's upvalue):
 * n keys, key i the len[i] bytes at text + off[i]. A row's encoding then
 * reads no Lua table for it, and the order cannot change under it. */
struct json_order {
    size_t n;
    size_t *off;
    size_t *len;
    char *text;
};

struct json_enc {
    lua_State *L;
    char *b; /* output so far: init, or the userdata in slot bufidx */
    size_t n;
    size_t cap;
    int bufidx;                     /* stack slot anchoring b once it is a userdata */
    int orderidx;                   /* stack slot of the order argument, 0 if none */
    const struct json_order *order; /* encoder()'s copy of its order, or NULL */
    int depth;                      /* tables currently open */
    int pathlen;
    struct json_seg path[JSON_MAXDEPTH + 1];
    char init[JSON_INITBUF];
};

/* What follows a backslash for each byte; 0 means copy the byte as is.
 * Kept eight bytes a row, out of clang-format's reach. */
/* clang-format off */
static const char json_esc[256] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', /* 0x00 */
    'b', 't', 'n', 'u', 'f', 'r', 'u', 'u', /* 0x08 */
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', /* 0x10 */
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', /* 0x18 */
    ['"'] = '"',
    ['\\'] = '\\',
    [0x7f] = 'u',
};
/* clang-format on */

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

/* Pushes the text of path[0..n), like .stats.rows[3]["a b"], or "." for
 * the top-level value.  May raise a memory error. */
static void json_pushpath(lua_State *L, const struct json_seg *path, int n)
{
    luaL_Buffer b;

    luaL_checkstack(L, 4, NULL);
    luaL_buffinit(L, &b);
    if (n == 0) {
        luaL_addchar(&b, '.');
    }
    for (int i = 0; i < n; i++) {
        const struct json_seg *seg = &path[i];
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
}

/* Raises "<msg> at <path>".  Never returns. */
static _Noreturn void json_fail(struct json_enc *e, const char *msg)
{
    json_pushpath(e->L, e->path, e->pathlen);
    luaL_error(e->L, "%s at %s", msg, lua_tostring(e->L, -1));
    abort(); /* not reached: luaL_error longjmps, but is not declared noreturn */
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), 0 if there is none.  p[0]
 * is below end. */
static inline size_t json_utf8len(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    size_t avail = (size_t)(end - p);

    if (c < 0x80) {
        return 1;
    }
    if (c < 0xc2) {
        return 0;
    }
    if (c < 0xe0) {
        return avail >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
    }
    if (c < 0xf0) {
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80;
        unsigned char hi = c == 0xed ? 0x9f : 0xbf;
        if (avail < 3 || p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80) {
            return 0;
        }
        return 3;
    }
    if (c < 0xf5) {
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80;
        unsigned char hi = c == 0xf4 ? 0x8f : 0xbf;
        if (avail < 4 || p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80) {
            return 0;
        }
        return 4;
    }
    return 0;
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
    char num[48];
    int len = 0;
    int plain = 1; /* no '.' and no exponent yet: add ".0" */

    if (isnan(x) || isinf(x)) {
        json_fail(e, "cannot encode NaN/inf");
    }
    if (x == 0) {
        json_putmem(e, "0.0", 3); /* -0.0 too */
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
        if (num[i] == '.' || num[i] == ',' || num[i] == 'e') {
            plain = 0;
        }
    }
    if (plain) {
        num[len] = '.';
        num[len + 1] = '0';
        len += 2;
    }
    json_putmem(e, num, (size_t)len);
}

/* 1 when none of the 8 bytes at p needs a look: no byte below 0x20, no '"', '\\',
 * 0x7f, nor one of 0x80 and above (UTF-8 to check).  Tests the 8 at once
 * (the zero-byte test of "Bit Twiddling Hacks", exact for "is there any" on
 * 7-bit bytes): most text is plain, and a byte at a time cost most of the
 * encoding. */
static inline int json_plain8(const unsigned char *p)
{
    const uint64_t ones = 0x0101010101010101ULL;
    const uint64_t high = 0x8080808080808080ULL;
    uint64_t v;

    memcpy(&v, p, sizeof v);
    if ((v & high) != 0) {
        return 0;
    }
    uint64_t q = v ^ (ones * '"');
    uint64_t b = v ^ (ones * '\\');
    uint64_t d = v ^ (ones * 0x7f);
    uint64_t t = ((v - ones * 0x20) & ~v) | ((q - ones) & ~q) | ((b - ones) & ~b) | ((d - ones) & ~d);
    return (t & high) == 0;
}

/* Writes s as a JSON string.  iskey: s is an object key, for the message
 * when it is not UTF-8 (the path then names the object). */
static void json_putstr(struct json_enc *e, const char *s, size_t len, int iskey)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u8 = (const unsigned char *)s;
    size_t run = 0;

    json_putc(e, '"');
    for (size_t i = 0; i < len; i++) {
        while (i + 8 <= len && json_plain8(u8 + i)) {
            i += 8;
        }
        if (i >= len) {
            break;
        }
        unsigned char c = u8[i];
        char esc = json_esc[c];
        if (esc == 0) {
            if (c >= 0x80) {
                size_t n = json_utf8len(u8 + i, u8 + len);
                if (n == 0) {
                    json_fail(e, iskey ? "invalid UTF-8 in a key" : "invalid UTF-8");
                }
                i += n - 1;
            }
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
static struct json_key *json_findkey(struct json_key *keys, size_t n, const char *s, size_t len)
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
static void json_encode_child(struct json_enc *e, const char *key, size_t len, lua_Integer idx)
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

static void json_encode_member(struct json_enc *e, int idx, struct json_key *k, int first)
{
    lua_State *L = e->L;

    if (!first) {
        json_putc(e, ',');
    }
    json_putstr(e, json_keytext(k), k->len, 1);
    json_putc(e, ':');
    k->done = 1;
    if (k->vidx != 0) { /* encoded where it sits: no copy to push and pop */
        struct json_seg *seg = &e->path[e->pathlen];
        seg->key = json_keytext(k);
        seg->len = k->len;
        seg->idx = 0;
        e->pathlen++;
        json_encode_value(e, k->vidx);
        e->pathlen--;
        return;
    }
    if (k->isint) {
        lua_rawgeti(L, idx, k->ikey);
    } else {
        lua_pushlstring(L, k->s, k->len);
        lua_rawget(L, idx);
    }
    json_encode_child(e, json_keytext(k), k->len, 0);
}

/* Encodes the members of the top-level object at idx whose keys the order
 * names, in its order, marking them done. -> 1 when it wrote none. */
static int json_encode_ordered(struct json_enc *e, int idx, struct json_key *keys, size_t n)
{
    lua_State *L = e->L;
    lua_Integer on = (lua_Integer)lua_rawlen(L, e->orderidx);
    int first = 1;

    for (lua_Integer j = 1; j <= on; j++) {
        size_t len;
        if (lua_rawgeti(L, e->orderidx, j) != LUA_TSTRING) {
            luaL_error(L, "orch.json: the order must be an array of strings"); /* not reached: checked */
        }
        const char *s = lua_tolstring(L, -1, &len);
        lua_pop(L, 1); /* s stays alive: the order table holds it */
        struct json_key *k = json_findkey(keys, n, s, len);
        if (k != NULL && !k->done) {
            json_encode_member(e, idx, k, first);
            first = 0;
        }
    }
    return first;
}

/* json_encode_ordered with encoder()'s copy of the order: the members
 * whose keys it names, in its order, marked done. keys sorted. -> 1 when
 * it wrote none. */
static int json_encode_ordered_copy(struct json_enc *e, int idx, struct json_key *keys, size_t n)
{
    const struct json_order *o = e->order;
    int first = 1;

    for (size_t j = 0; j < o->n; j++) {
        struct json_key *k = json_findkey(keys, n, o->text + o->off[j], o->len[j]);
        if (k != NULL && !k->done) {
            json_encode_member(e, idx, k, first);
            first = 0;
        }
    }
    return first;
}

/* Fills k from the key at stack slot kidx; raises on a key JSON cannot
 * have (a float, a boolean, ...). */
static void json_takekey(struct json_enc *e, struct json_key *k, int kidx)
{
    lua_State *L = e->L;

    k->done = 0;
    if (lua_type(L, kidx) == LUA_TSTRING) {
        k->s = lua_tolstring(L, kidx, &k->len);
        k->isint = 0;
    } else if (lua_isinteger(L, kidx)) {
        k->ikey = lua_tointeger(L, kidx);
        k->len = json_fmtint(k->num, k->ikey);
        k->isint = 1;
    } else {
        const char *tn = lua_isnumber(L, kidx) ? "float" : luaL_typename(L, kidx);
        json_fail(e, lua_pushfstring(L, "cannot encode a table with a %s key", tn));
    }
}

/* json_emit_object for a top-level object with encoder()'s order and
 * string keys only (so no key can be both an integer and a string): the
 * order's keys found by a scan, and only the others sorted. The same
 * bytes as sorting them all first. -> 0 (nothing written) when the object
 * has an integer key. */
static int json_emit_top(struct json_enc *e, int idx, struct json_key *keys, size_t n)
{
    const struct json_order *o = e->order;
    int first = 1;

    for (size_t i = 0; i < n; i++) {
        if (keys[i].isint) {
            return 0;
        }
    }
    json_putc(e, '{');
    for (size_t j = 0; j < o->n; j++) {
        for (size_t i = 0; i < n; i++) {
            struct json_key *k = &keys[i];
            if (!k->done && k->len == o->len[j] && memcmp(k->s, o->text + o->off[j], k->len) == 0) {
                json_encode_member(e, idx, k, first);
                first = 0;
                break;
            }
        }
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!keys[i].done) {
            keys[m] = keys[i];
            m++;
        }
    }
    json_sortkeys(keys, m);
    for (size_t i = 0; i < m; i++) {
        json_encode_member(e, idx, &keys[i], first);
        first = 0;
    }
    json_putc(e, '}');
    return 1;
}

/* Writes the object at idx from its n collected keys: sorted, a key
 * that is both an integer and a string refused, the top-level order's
 * keys first. */
static void json_emit_object(struct json_enc *e, int idx, struct json_key *keys, size_t n)
{
    lua_State *L = e->L;
    int first = 1;

    if (e->order != NULL && e->depth == 1 && json_emit_top(e, idx, keys, n)) {
        return;
    }
    json_sortkeys(keys, n);
    for (size_t i = 1; i < n; i++) {
        if (json_keycmp(&keys[i - 1], &keys[i]) == 0) {
            lua_pushlstring(L, json_keytext(&keys[i]), keys[i].len);
            json_fail(e,
                      lua_pushfstring(L, "duplicate key \"%s\" (integer and string)", lua_tostring(L, -1)));
        }
    }
    json_putc(e, '{');
    if (e->order != NULL && e->depth == 1) {
        first = json_encode_ordered_copy(e, idx, keys, n);
    } else if (e->orderidx != 0 && e->depth == 1) {
        first = json_encode_ordered(e, idx, keys, n);
    }
    for (size_t i = 0; i < n; i++) {
        if (!keys[i].done) {
            json_encode_member(e, idx, &keys[i], first);
            first = 0;
        }
    }
    json_putc(e, '}');
}

/* Encodes the table at idx, known to have count keys (more than
 * JSON_SMALLKEYS), as an object: keys collected into a userdata, values
 * looked up again as each is written. */
static void json_encode_object(struct json_enc *e, int idx, lua_Integer count)
{
    lua_State *L = e->L;
    size_t n = 0;

    if ((lua_Unsigned)count > SIZE_MAX / sizeof(struct json_key)) {
        luaL_error(L, "orch.json: table too large");
    }
    struct json_key *keys = lua_newuserdatauv(L, (size_t)count * sizeof *keys, 0);
    int base = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (n == (size_t)count) {
            lua_pop(L, 1); /* cannot happen: no Lua code runs between passes */
            break;
        }
        keys[n].vidx = 0;
        json_takekey(e, &keys[n], -1);
        n++;
    }
    json_emit_object(e, idx, keys, n);
    lua_settop(L, base - 1);
}

/* Counts the keys of the table at idx into *count, *sequence set when they
 * are exactly 1..count. One pass that also keeps the first JSON_SMALLKEYS
 * keys and values on the stack, in keys (a small object, the common case,
 * needs no second pass). -> how many it kept, or -1 when the table has
 * more (nothing kept: the stack is as it was). */
static int json_collect(struct json_enc *e, int idx, struct json_key *keys, lua_Integer *count, int *sequence)
{
    lua_State *L = e->L;
    int base = lua_gettop(L);
    lua_Integer n = 0;
    lua_Integer maxi = 0;
    int positive = 1;

    luaL_checkstack(L, 2 * JSON_SMALLKEYS + 4, "orch.json: nested too deep");
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (n < JSON_SMALLKEYS) {
            lua_pushvalue(L, -2); /* leaves key, value on the stack */
            keys[n].vidx = lua_gettop(L) - 1;
        } else {
            lua_pop(L, 1);
        }
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
        n++;
    }
    *count = n;
    *sequence = positive && maxi == n; /* keys exactly 1..count */
    if (n > JSON_SMALLKEYS) {
        lua_settop(L, base);
        return -1;
    }
    return (int)n;
}

/* Encodes the table at idx as an array or an object (see the rules). */
static void json_encode_table(struct json_enc *e, int idx)
{
    lua_State *L = e->L;
    struct json_key small[JSON_SMALLKEYS];
    lua_Integer count = 0;
    int sequence = 0;

    if (e->depth >= JSON_MAXDEPTH) {
        json_fail(e, "nested too deep (cycle?)");
    }
    luaL_checkstack(L, 8, "orch.json: nested too deep");
    e->depth++;
    enum json_kind kind = json_kindof(e, idx);
    int base = lua_gettop(L);
    int n = json_collect(e, idx, small, &count, &sequence);
    if (kind == JSON_KIND_ARRAY) {
        if (!sequence) {
            json_fail(e, "cannot encode a table marked as array whose keys are not 1..n");
        }
        lua_settop(L, base);
        json_encode_array(e, idx, count);
    } else if (kind == JSON_KIND_AUTO && sequence && count > 0) {
        lua_settop(L, base);
        json_encode_array(e, idx, count);
    } else if (n >= 0) {
        for (int i = 0; i < n; i++) {
            json_takekey(e, &small[i], small[i].vidx - 1); /* each key sits below its value */
        }
        json_emit_object(e, idx, small, (size_t)n);
        lua_settop(L, base);
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
        json_putstr(e, s, len, 0);
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

/* Encodes prefix, then the value at vidx, the top-level object's keys in
 * the order at orderidx first (0: none), then suffix; pushes the text. The stack's top
 * must be above vidx and orderidx: the slot pushed here anchors the
 * output once it outgrows e.init. */
static int json_encode_top(lua_State *L, int vidx, int orderidx, const struct json_order *order,
                           const char *prefix, size_t prefixlen, const char *suffix, size_t suffixlen)
{
    struct json_enc e;

    lua_pushnil(L);
    e.order = order;
    e.L = L;
    e.b = e.init;
    e.n = 0;
    e.cap = sizeof e.init;
    e.bufidx = lua_gettop(L);
    e.orderidx = orderidx;
    e.depth = 0;
    e.pathlen = 0;
    json_putmem(&e, prefix, prefixlen);
    json_encode_value(&e, vidx);
    json_putmem(&e, suffix, suffixlen);
    lua_pushlstring(L, e.b, e.n);
    return 1;
}

/* encode(value [, order [, suffix]]) -> string.  order, an array of strings,
 * puts those keys of the top-level object first, in that order; suffix (a
 * string: a sink's "\n") is appended, which spares a line writer a second
 * string and copy per row.  Raises on values JSON cannot represent (see the
 * rules at the top). */
static int l_json_encode(lua_State *L)
{
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
    size_t suffixlen = 0;
    const char *suffix = luaL_optlstring(L, 3, "", &suffixlen);
    lua_settop(L, 3);
    return json_encode_top(L, 1, hasorder ? 2 : 0, NULL, "", 0, suffix, suffixlen);
}

/* 1 when the len bytes at s are UTF-8 as json_putstr takes them. */
static int json_utf8ok(const char *s, size_t len)
{
    const unsigned char *u8 = (const unsigned char *)s;
    const uint64_t high = 0x8080808080808080ULL;

    for (size_t i = 0; i < len;) {
        uint64_t v;
        if (i + 8 <= len && (memcpy(&v, u8 + i, sizeof v), (v & high) == 0)) {
            i += 8; /* eight ASCII bytes */
            continue;
        }
        size_t n = json_utf8len(u8 + i, u8 + len);
        if (n == 0) {
            return 0;
        }
        i += n;
    }
    return 1;
}

/* quote(v [, pre [, post]]) -> pre .. encode(v) .. post for a string or
 * a number, or nil where encode would raise (a string not UTF-8, NaN,
 * inf) or for any other type. For a caller that writes a known JSON shape
 * around a few values, and falls back to encode (for its message) when
 * one cannot be written; pre and post put the shape around one value in
 * the same string (one string a request body, not three). */
static int l_json_quote(lua_State *L)
{
    int t = lua_type(L, 1);
    if (t == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, 1, &len);
        if (!json_utf8ok(s, len)) {
            lua_pushnil(L);
            return 1;
        }
    } else if (t == LUA_TNUMBER) {
        lua_Number x = lua_tonumber(L, 1);
        if (!lua_isinteger(L, 1) && (isnan(x) || isinf(x))) {
            lua_pushnil(L);
            return 1;
        }
    } else {
        lua_pushnil(L);
        return 1;
    }
    size_t prelen = 0, postlen = 0;
    const char *pre = luaL_optlstring(L, 2, "", &prelen), *post = luaL_optlstring(L, 3, "", &postlen);
    return json_encode_top(L, 1, 0, NULL, pre, prelen, post, postlen);
}

/* The function encoder() returns: line(self, value) -> encode(value,
 * order, suffix) with the order and suffix it was made with (upvalues: a
 * struct json_order copied from the order, or nil; the suffix); self, a
 * sink, is not used. A sink's encode method: the row's line with no Lua
 * call between. */
static int l_json_line(lua_State *L)
{
    size_t suffixlen = 0;
    const char *suffix = lua_tolstring(L, lua_upvalueindex(2), &suffixlen);
    const struct json_order *order = lua_touserdata(L, lua_upvalueindex(1));

    luaL_checkany(L, 2);
    lua_settop(L, 2);
    return json_encode_top(L, 2, 0, order, "", 0, suffix, suffixlen);
}

/* Pushes a userdata holding a struct json_order copied from the array of
 * strings at idx (checked: raises an argument error naming arg). */
static void json_push_order(lua_State *L, int idx, int arg)
{
    size_t on = lua_rawlen(L, idx);
    size_t bytes = 0;
    for (size_t j = 1; j <= on; j++) {
        if (lua_rawgeti(L, idx, (lua_Integer)j) != LUA_TSTRING) {
            luaL_argerror(L, arg, "order must be an array of strings");
        }
        bytes += lua_rawlen(L, -1);
        lua_pop(L, 1);
    }
    struct json_order *o = lua_newuserdatauv(L, sizeof *o + 2 * on * sizeof(size_t) + bytes + 1, 0);
    o->n = on;
    o->off = (size_t *)(o + 1);
    o->len = o->off + on;
    o->text = (char *)(o->len + on);
    size_t at = 0;
    for (size_t j = 0; j < on; j++) {
        lua_rawgeti(L, idx, (lua_Integer)j + 1);
        const char *k = lua_tolstring(L, -1, &o->len[j]);
        memcpy(o->text + at, k, o->len[j]);
        o->off[j] = at;
        at += o->len[j];
        lua_pop(L, 1);
    }
}

/* encoder([order [, suffix]]) -> line(self, value), encode's order and
 * suffix checked and copied once: for a JSONL sink, whose order (the
 * input's columns) and suffix ("\n") stay the same for every row. A later
 * change to the order table changes nothing. */
static int l_json_encoder(lua_State *L)
{
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
    }
    luaL_optstring(L, 2, "");
    lua_settop(L, 2);
    if (lua_isnil(L, 1)) {
        lua_pushnil(L);
    } else {
        json_push_order(L, 1, 1);
    }
    if (lua_isnil(L, 2)) {
        lua_pushliteral(L, "");
    } else {
        lua_pushvalue(L, 2);
    }
    lua_pushcclosure(L, l_json_line, 2);
    return 1;
}

/* ---- decoding ---- */

struct json_dec {
    lua_State *L;
    const char *s; /* the text (a Lua string kept alive in slot 1) */
    const char *p; /* next byte to read */
    const char *end;
    int arraymt;  /* stack slot of json.array_mt */
    int orderidx; /* stack slot of the key-order table, 0 if not wanted */
    int depth;    /* arrays and objects currently open */
    int pathlen;
    int tophint;  /* slots to give a top-level object: the last one's size */
    int topcount; /* members of this text's top-level object */
    struct json_seg path[JSON_DEC_MAXDEPTH + 1];
};

static void json_decode_value(struct json_dec *d);

/* Decoding errors are about the text, not the code: raised with lua_error,
 * so no "file:line:" of the caller is prefixed. */

/* Raises "<what> at byte N", N the 1-based offset of at.  Never returns. */
static _Noreturn void json_syntax(struct json_dec *d, const char *at, const char *what)
{
    lua_pushfstring(d->L, "%s at byte %I", what, (lua_Integer)(at - d->s) + 1);
    lua_error(d->L);
    abort(); /* not reached */
}

/* Raises "<pre> at <path><post>".  Never returns. */
static _Noreturn void json_dec_fail(struct json_dec *d, const char *pre, const char *post)
{
    json_pushpath(d->L, d->path, d->pathlen);
    lua_pushfstring(d->L, "%s at %s%s", pre, lua_tostring(d->L, -1), post);
    lua_error(d->L);
    abort(); /* not reached */
}

/* Raises "unexpected ..." for the byte at d->p, or end of input. */
static _Noreturn void json_unexpected(struct json_dec *d)
{
    char what[40];

    if (d->p >= d->end) {
        json_syntax(d, d->p, "unexpected end of input");
    }
    unsigned char c = (unsigned char)*d->p;
    if (c > 0x20 && c < 0x7f) {
        snprintf(what, sizeof what, "unexpected '%c'", c);
    } else {
        snprintf(what, sizeof what, "unexpected byte 0x%02x", c);
    }
    json_syntax(d, d->p, what);
}

static inline void json_skipws(struct json_dec *d)
{
    const char *p = d->p;
    while (p < d->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) {
        p++;
    }
    d->p = p;
}

static int json_hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= c - '0';
        } else if (c >= 'a' && c <= 'f') {
            v |= c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            v |= c - 'A' + 10;
        } else {
            return -1;
        }
    }
    return v;
}

/* Reads \uXXXX (possibly a surrogate pair) at d->p (the backslash) into
 * out as UTF-8; returns its length and advances d->p. */
static size_t json_uescape(struct json_dec *d, char *out)
{
    const char *at = d->p;
    long cp;

    cp = d->end - d->p < 6 ? -1 : json_hex4(d->p + 2);
    if (cp < 0) {
        json_syntax(d, at, "invalid \\u escape");
    }
    d->p += 6;
    if (cp >= 0xdc00 && cp <= 0xdfff) {
        char what[48];
        snprintf(what, sizeof what, "lone surrogate \\u%04lx", cp);
        json_syntax(d, at, what);
    }
    if (cp >= 0xd800 && cp <= 0xdbff) {
        long lo = -1;
        if (d->end - d->p >= 6 && d->p[0] == '\\' && d->p[1] == 'u') {
            lo = json_hex4(d->p + 2);
        }
        if (lo < 0xdc00 || lo > 0xdfff) {
            char what[48];
            snprintf(what, sizeof what, "lone surrogate \\u%04lx", cp);
            json_syntax(d, at, what);
        }
        d->p += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Checks the UTF-8 sequence at p; returns its length or raises. */
static inline size_t json_dec_utf8(struct json_dec *d, const char *p, int iskey)
{
    size_t n = json_utf8len((const unsigned char *)p, (const unsigned char *)d->end);
    if (n == 0) {
        json_dec_fail(d, iskey ? "invalid UTF-8 in a key" : "invalid UTF-8", "");
    }
    return n;
}

/* The slow path of json_decode_string: text with escapes, from d->p (a
 * backslash) on; start..d->p is already known plain.  Pushes the string. */
static void json_decode_escaped(struct json_dec *d, const char *start, int iskey)
{
    luaL_Buffer b;
    const char *p = d->p;
    const char *run = start;

    luaL_buffinit(d->L, &b);
    for (;;) {
        if (p >= d->end) {
            d->p = p;
            json_unexpected(d);
        }
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            luaL_addlstring(&b, run, (size_t)(p - run));
            d->p = p + 1;
            luaL_pushresult(&b);
            return;
        }
        if (c == '\\') {
            char ch;
            luaL_addlstring(&b, run, (size_t)(p - run));
            if (p + 1 >= d->end) {
                d->p = p + 1;
                json_unexpected(d);
            }
            switch (p[1]) {
            case '"':
            case '\\':
            case '/':
                ch = p[1];
                break;
            case 'b':
                ch = '\b';
                break;
            case 'f':
                ch = '\f';
                break;
            case 'n':
                ch = '\n';
                break;
            case 'r':
                ch = '\r';
                break;
            case 't':
                ch = '\t';
                break;
            case 'u': {
                char u8[4];
                d->p = p;
                size_t n = json_uescape(d, u8);
                luaL_addlstring(&b, u8, n);
                p = d->p;
                run = p;
                continue;
            }
            default:
                json_syntax(d, p, "invalid escape");
            }
            luaL_addchar(&b, ch);
            p += 2;
            run = p;
        } else if (c < 0x20) {
            json_syntax(d, p, "control character in a string");
        } else if (c >= 0x80) {
            p += json_dec_utf8(d, p, iskey);
        } else {
            p++;
        }
    }
}

/* Reads the string at d->p (the opening quote) and pushes it. */
static void json_decode_string(struct json_dec *d, int iskey)
{
    const char *start = d->p + 1;
    const char *p = start;
    const char *end = d->end;

    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            lua_pushlstring(d->L, start, (size_t)(p - start));
            d->p = p + 1;
            return;
        }
        if (c == '\\') {
            d->p = p;
            json_decode_escaped(d, start, iskey);
            return;
        }
        if (c < 0x20) {
            json_syntax(d, p, "control character in a string");
        }
        if (c >= 0x80) {
            p += json_dec_utf8(d, p, iskey);
        } else {
            p++;
        }
    }
    d->p = p;
    json_unexpected(d);
}

/* A number as scanned: the value is u * 10^e10 while exact stays set. */
struct json_num {
    int neg;
    int isfloat;
    int overflow; /* the integer part does not fit in u */
    int exact;
    int e10;
    unsigned long long u;
};

/* Scans the number at d->p into n, raising on bad syntax; returns the
 * first byte after it.  See the rules at the top. */
static const char *json_scan_number(struct json_dec *d, struct json_num *n)
{
    const char *start = d->p;
    const char *p = start;
    const char *end = d->end;
    memset(n, 0, sizeof *n);

    if (p < end && *p == '-') {
        n->neg = 1;
        p++;
    }
    if (p >= end || *p < '0' || *p > '9') {
        json_syntax(d, start, "invalid number");
    }
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9') {
            json_syntax(d, start, "invalid number");
        }
    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            unsigned digit = (unsigned)(*p - '0');
            if (n->u > (ULLONG_MAX - digit) / 10) {
                n->overflow = 1;
            } else {
                n->u = n->u * 10 + digit;
            }
            p++;
        }
    }
    n->exact = !n->overflow;
    if (p < end && *p == '.') {
        n->isfloat = 1;
        p++;
        if (p >= end || *p < '0' || *p > '9') {
            json_syntax(d, start, "invalid number");
        }
        while (p < end && *p >= '0' && *p <= '9') {
            unsigned digit = (unsigned)(*p - '0');
            if (n->u > (JSON_EXACT - digit) / 10) {
                n->exact = 0;
            } else {
                n->u = n->u * 10 + digit;
                n->e10--;
            }
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        int eneg = 0;
        int ev = 0;
        n->isfloat = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        if (p >= end || *p < '0' || *p > '9') {
            json_syntax(d, start, "invalid number");
        }
        while (p < end && *p >= '0' && *p <= '9') {
            if (ev < 10000) {
                ev = ev * 10 + (*p - '0');
            }
            p++;
        }
        n->e10 += eneg ? -ev : ev;
    }
    return p;
}

/* Reads the number at d->p and pushes it: an integer when it has no
 * fraction or exponent, else a float.  See the rules at the top. */
static void json_decode_number(struct json_dec *d)
{
    const char *start = d->p;
    struct json_num num;
    const struct json_num *n = &num;
    const char *p = json_scan_number(d, &num);
    d->p = p;
    size_t len = (size_t)(p - start);
    if (n->isfloat && n->exact && n->u <= JSON_EXACT && n->e10 >= -22 && n->e10 <= 22) {
        /* Clinger's fast path: u and 10^|e10| are exact doubles, so one
         * correctly rounded multiply or divide gives strtod's answer. */
        static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
        double x = (double)n->u;
        x = n->e10 < 0 ? x / pow10[-n->e10] : x * pow10[n->e10];
        lua_pushnumber(d->L, n->neg ? -x : x);
        return;
    }
    if (!n->isfloat) {
        unsigned long long lim = n->neg ? (unsigned long long)LLONG_MAX + 1 : LLONG_MAX;
        if (n->overflow || n->u > lim) {
            lua_pushlstring(d->L, start, len);
            json_dec_fail(d, lua_pushfstring(d->L, "integer %s", lua_tostring(d->L, -1)),
                          " does not fit in 64 bits");
        }
        lua_pushinteger(d->L, n->neg ? (lua_Integer)(0ULL - n->u) : (lua_Integer)n->u);
        return;
    }
    char buf[64];
    const char *text = buf;
    if (len < sizeof buf) {
        memcpy(buf, start, len);
        buf[len] = '\0';
    } else {
        text = lua_pushlstring(d->L, start, len); /* popped below */
    }
    if (lua_stringtonumber(d->L, text) == 0) {
        json_syntax(d, start, "invalid number"); /* not reached: checked above */
    }
    if (text != buf) {
        lua_remove(d->L, -2);
    }
    lua_Number x = lua_tonumber(d->L, -1);
    if (isinf(x)) {
        lua_pushlstring(d->L, start, len);
        json_dec_fail(d, lua_pushfstring(d->L, "number %s", lua_tostring(d->L, -1)),
                      " does not fit in a double");
    }
}

/* Matches the literal word at d->p, else raises naming what is there. */
static void json_decode_word(struct json_dec *d, const char *word, size_t len)
{
    if ((size_t)(d->end - d->p) >= len && memcmp(d->p, word, len) == 0) {
        d->p += len;
        return;
    }
    size_t n = 0;
    while (d->p + n < d->end && n < 16 && d->p[n] >= 'a' && d->p[n] <= 'z') {
        n++;
    }
    if (n == 0) {
        json_unexpected(d);
    }
    lua_pushlstring(d->L, d->p, n);
    json_syntax(d, d->p, lua_pushfstring(d->L, "unexpected '%s'", lua_tostring(d->L, -1)));
}

static void json_enter(struct json_dec *d)
{
    if (d->depth >= JSON_DEC_MAXDEPTH) {
        json_syntax(d, d->p, "nested too deep");
    }
    luaL_checkstack(d->L, 6, "orch.json: nested too deep");
    d->depth++;
}

/* Enters the container at d->p (json_enter) past its opening byte. -> 0
 * when it is empty (its close read, left again), 1 when a member follows. */
static int json_open(struct json_dec *d, char close)
{
    json_enter(d);
    d->p++;
    json_skipws(d);
    if (d->p < d->end && *d->p == close) {
        d->p++;
        d->depth--;
        return 0;
    }
    return 1;
}

/* Skips white space up to the byte c, where d->p is left; a syntax error
 * (msg) at any other byte, an unexpected end at the end. */
static void json_expect(struct json_dec *d, char c, const char *msg)
{
    json_skipws(d);
    if (d->p >= d->end) {
        json_unexpected(d);
    }
    if (*d->p != c) {
        json_syntax(d, d->p, msg);
    }
}

/* After a member of an object or an element of an array: -> 1 when
 * another follows (its ',' read), 0 at the container's close (read); a
 * syntax error otherwise. */
static int json_more(struct json_dec *d, char close)
{
    json_skipws(d);
    if (d->p < d->end && *d->p == ',') {
        d->p++;
        return 1;
    }
    if (d->p < d->end && *d->p == close) {
        d->p++;
        return 0;
    }
    if (d->p >= d->end) {
        json_unexpected(d);
    }
    json_syntax(d, d->p, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    return 0;
}

static void json_decode_array(struct json_dec *d)
{
    lua_State *L = d->L;
    lua_Integer i = 0;

    int more = json_open(d, ']');
    lua_newtable(L);
    if (!more) {
        lua_pushvalue(L, d->arraymt);
        lua_setmetatable(L, -2);
        return;
    }
    for (;;) {
        struct json_seg *seg = &d->path[d->pathlen];
        i++;
        seg->key = NULL;
        seg->idx = i;
        d->pathlen++;
        json_decode_value(d);
        d->pathlen--;
        lua_rawseti(L, -2, i);
        if (!json_more(d, ']')) {
            break;
        }
    }
    d->depth--;
}

static void json_decode_object(struct json_dec *d)
{
    lua_State *L = d->L;
    int toplevel = d->depth == 0;

    int more = json_open(d, '}');
    /* JSONL rows share a shape: sizing a row's table like the last one
     * saves its rehashes (a third of the time on rows of ten numbers) */
    lua_createtable(L, 0, toplevel ? d->tophint : 0);
    if (!more) {
        return;
    }
    for (;;) {
        size_t klen;
        json_expect(d, '"', "expected a string key");
        json_decode_string(d, 1);
        json_expect(d, ':', "expected ':'");
        d->p++;
        struct json_seg *seg = &d->path[d->pathlen];
        seg->key = lua_tolstring(L, -1, &klen); /* anchored: the key is on the stack */
        seg->len = klen;
        d->pathlen++;
        json_decode_value(d);
        d->pathlen--;
        d->topcount += toplevel;
        if (toplevel && d->orderidx != 0) {
            lua_pushvalue(L, -2);
            if (lua_rawget(L, -4) == LUA_TNIL) {
                lua_pushvalue(L, -3);
                lua_rawseti(L, d->orderidx, (lua_Integer)lua_rawlen(L, d->orderidx) + 1);
            }
            lua_pop(L, 1);
        }
        lua_rawset(L, -3);
        if (!json_more(d, '}')) {
            break;
        }
    }
    d->depth--;
}

/* Reads one value at d->p (after white space) and pushes it. */
static void json_decode_value(struct json_dec *d)
{
    json_skipws(d);
    if (d->p >= d->end) {
        json_unexpected(d);
    }
    switch (*d->p) {
    case '{':
        json_decode_object(d);
        break;
    case '[':
        json_decode_array(d);
        break;
    case '"':
        json_decode_string(d, 0);
        break;
    case 't':
        json_decode_word(d, "true", 4);
        lua_pushboolean(d->L, 1);
        break;
    case 'f':
        json_decode_word(d, "false", 5);
        lua_pushboolean(d->L, 0);
        break;
    case 'n':
        json_decode_word(d, "null", 4);
        lua_pushlightuserdata(d->L, NULL);
        break;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        json_decode_number(d);
        break;
    default:
        json_unexpected(d);
    }
}

/* decode(text [, want_order]) -> value [, keys].  Raises on malformed JSON,
 * integers beyond 64 bits and text that is not UTF-8 (see the rules at the
 * top; use pcall for untrusted input).  Upvalue 1: json.array_mt; upvalue
 * 2: the size of the last top-level object decoded (a hint only).  The
 * decoder state lives on the C stack and every value goes straight onto the
 * Lua stack, so an error leaks nothing. */
static int l_json_decode(lua_State *L)
{
    struct json_dec d;
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    int want_order = lua_toboolean(L, 2);

    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1)); /* slot 2: array_mt */
    d.L = L;
    d.s = s;
    d.p = s;
    d.end = s + len;
    d.arraymt = 2;
    d.orderidx = 0;
    d.depth = 0;
    d.pathlen = 0;
    d.tophint = (int)lua_tointeger(L, lua_upvalueindex(2));
    d.topcount = 0;
    if (want_order) {
        lua_newtable(L); /* slot 3 */
        d.orderidx = 3;
    }
    json_decode_value(&d);
    json_skipws(&d);
    if (d.p < d.end) {
        json_syntax(&d, d.p, "unexpected data after the value");
    }
    if (d.topcount != d.tophint && lua_type(L, -1) == LUA_TTABLE) {
        lua_pushinteger(L, d.topcount < JSON_DEC_MAXHINT ? d.topcount : JSON_DEC_MAXHINT);
        lua_replace(L, lua_upvalueindex(2));
    }
    if (!want_order) {
        return 1;
    }
    if (s[strspn(s, " \t\r\n")] != '{') { /* not an object: no key order */
        lua_pushnil(L);
        return 2;
    }
    lua_pushvalue(L, 3);
    return 2;
}

/* ---- picking: a few values out of a text, the rest only checked ---- */

/* pick(text, path...) reads a text as decode would -- the same errors for
 * the same bytes -- but builds only the values the paths lead to: an LLM
 * reply is read for two or three fields, and building its other tables
 * and strings cost four fifths of its decode.  A path is a list of steps,
 * a string (an object's key) or an integer (an array's 1-based index); a
 * path leads where indexing the decoded value would, so a step into a
 * value of the other kind, or into a scalar, gives nil, and of repeated
 * keys the last one wins. */
#define JSON_PICK_MAX 16   /* paths of one call */
#define JSON_PICK_STEPS 16 /* steps of one path */

struct json_step {
    const char *key; /* NULL: an array index; else anchored by its path argument */
    size_t len;
    lua_Integer idx;
};

/* The paths of one pick, read from its arguments (pick) or once for
 * every text (picker). */
struct json_paths {
    int npaths;
    int len[JSON_PICK_MAX];
    struct json_step step[JSON_PICK_MAX][JSON_PICK_STEPS];
};

struct json_pick {
    struct json_dec *d;
    const struct json_paths *paths;
    int npaths;
    int base;        /* stack slot of path 0's value; path i's is base + i */
    unsigned filled; /* paths whose slot a walk has set (the others hold nil) */
};

static void json_pick_value(struct json_pick *k, unsigned active, int level);

/* The bytes a string's text holds as they are: printable ASCII but for
 * '"' and '\\'. */
/* clang-format off */
static const unsigned char json_plain[256] = {
    [0x20 ... 0x21] = 1, [0x23 ... 0x5b] = 1, [0x5d ... 0x7f] = 1,
};
/* clang-format on */

/* Checks the string at d->p (the opening quote) and moves past it.  Plain
 * text: 1, its bytes in *s, *len.  With escapes: 0, and its decoded text
 * pushed (json_decode_escaped reads them: one set of rules). */
static int json_skip_string(struct json_dec *d, int iskey, const char **s, size_t *len)
{
    const char *start = d->p + 1;
    const char *p = start;
    const char *end = d->end;

    while (p < end) {
        while (p < end && json_plain[(unsigned char)*p]) {
            p++;
        }
        if (p >= end) {
            break;
        }
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            *s = start;
            *len = (size_t)(p - start);
            d->p = p + 1;
            return 1;
        }
        if (c == '\\') {
            d->p = p;
            json_decode_escaped(d, start, iskey);
            *s = lua_tolstring(d->L, -1, len);
            return 0;
        }
        if (c < 0x20) {
            json_syntax(d, p, "control character in a string");
        }
        p += c >= 0x80 ? json_dec_utf8(d, p, iskey) : 1;
    }
    d->p = p;
    json_unexpected(d);
}

/* Checks the number at d->p and moves past it.  An integer in range or a
 * float Clinger's path reads (finite) is known good here; the others go
 * through json_decode_number for its range checks and errors. */
static void json_skip_number(struct json_dec *d)
{
    struct json_num n;
    const char *start = d->p;
    const char *p = json_scan_number(d, &n);

    if (!n.isfloat && !n.overflow && n.u <= (unsigned long long)LLONG_MAX) {
        d->p = p;
    } else if (n.isfloat && n.exact && n.u <= JSON_EXACT && n.e10 >= -22 && n.e10 <= 22) {
        d->p = p;
    } else {
        d->p = start;
        json_decode_number(d);
        lua_pop(d->L, 1);
    }
}

/* Checks the scalar at d->p and moves past it, pushing nothing. */
static void json_skip_scalar(struct json_dec *d)
{
    const char *s;
    size_t len;

    switch (*d->p) {
    case '"':
        if (!json_skip_string(d, 0, &s, &len)) {
            lua_pop(d->L, 1);
        }
        break;
    case 't':
        json_decode_word(d, "true", 4);
        break;
    case 'f':
        json_decode_word(d, "false", 5);
        break;
    case 'n':
        json_decode_word(d, "null", 4);
        break;
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9')) {
            json_skip_number(d);
        } else {
            json_unexpected(d);
        }
    }
}

/* Reads the object at d->p; a member whose key is the next step of
 * active paths is picked from, the others are only checked. */
static void json_pick_object(struct json_pick *k, unsigned active, int level)
{
    struct json_dec *d = k->d;

    if (!json_open(d, '}')) {
        return;
    }
    for (;;) {
        const char *key;
        size_t klen;
        json_expect(d, '"', "expected a string key");
        int pushed = !json_skip_string(d, 1, &key, &klen);
        json_expect(d, ':', "expected ':'");
        d->p++;
        unsigned sub = 0;
        for (int i = 0; active != 0 && i < k->npaths; i++) {
            const struct json_step *st = &k->paths->step[i][level];
            if ((active >> i & 1u) && st->key != NULL && st->len == klen && memcmp(st->key, key, klen) == 0) {
                sub |= 1u << i;
            }
        }
        struct json_seg *seg = &d->path[d->pathlen++];
        seg->key = key;
        seg->len = klen;
        json_pick_value(k, sub, level + 1);
        d->pathlen--;
        if (pushed) {
            lua_pop(d->L, 1);
        }
        if (!json_more(d, '}')) {
            break;
        }
    }
    d->depth--;
}

/* Reads the array at d->p, as json_pick_object reads an object. */
static void json_pick_array(struct json_pick *k, unsigned active, int level)
{
    struct json_dec *d = k->d;
    lua_Integer n = 0;

    if (!json_open(d, ']')) {
        return;
    }
    for (;;) {
        unsigned sub = 0;
        n++;
        for (int i = 0; active != 0 && i < k->npaths; i++) {
            const struct json_step *st = &k->paths->step[i][level];
            if ((active >> i & 1u) && st->key == NULL && st->idx == n) {
                sub |= 1u << i;
            }
        }
        struct json_seg *seg = &d->path[d->pathlen++];
        seg->key = NULL;
        seg->idx = n;
        json_pick_value(k, sub, level + 1);
        d->pathlen--;
        if (!json_more(d, ']')) {
            break;
        }
    }
    d->depth--;
}

/* The rest of path i from the decoded value on top of the stack (a path
 * that also ends higher up made it decoded), into the path's slot. */
static void json_pick_walk(struct json_pick *k, int i, int level)
{
    lua_State *L = k->d->L;

    lua_pushvalue(L, -1);
    for (int j = level; j < k->paths->len[i]; j++) {
        const struct json_step *st = &k->paths->step[i][j];
        if (lua_type(L, -1) != LUA_TTABLE) {
            lua_pushnil(L);
        } else if (st->key != NULL) {
            lua_pushlstring(L, st->key, st->len);
            lua_rawget(L, -2);
        } else {
            lua_rawgeti(L, -1, st->idx);
        }
        lua_remove(L, -2);
    }
    lua_replace(L, k->base + i);
    k->filled |= 1u << i;
}

/* Reads the value at d->p, which the active paths lead to (level steps
 * each): decoded when one of them ends here, else picked from or only
 * checked.  Each active path's slot is set anew: the last of repeated
 * keys wins. */
static void json_pick_value(struct json_pick *k, unsigned active, int level)
{
    struct json_dec *d = k->d;
    unsigned ends = 0;

    json_skipws(d);
    if (active == 0 && d->p < d->end) { /* most values: only checked */
        if (*d->p == '{') {
            json_pick_object(k, 0, level);
        } else if (*d->p == '[') {
            json_pick_array(k, 0, level);
        } else {
            json_skip_scalar(d);
        }
        return;
    }
    for (int i = 0; i < k->npaths; i++) {
        if (active >> i & 1u) {
            if (k->filled >> i & 1u) { /* a repeated key: its earlier value goes */
                lua_pushnil(d->L);
                lua_replace(d->L, k->base + i);
                k->filled &= ~(1u << i);
            }
            ends |= (unsigned)(k->paths->len[i] == level) << i;
        }
    }
    json_skipws(d);
    if (d->p >= d->end) {
        json_unexpected(d);
    }
    if (ends != 0) {
        json_decode_value(d);
        for (int i = 0; i < k->npaths; i++) {
            if (active >> i & 1u) {
                json_pick_walk(k, i, level);
            }
        }
        lua_pop(d->L, 1);
    } else if (*d->p == '{') {
        json_pick_object(k, active, level);
    } else if (*d->p == '[') {
        json_pick_array(k, active, level);
    } else {
        json_skip_scalar(d);
    }
}

/* Reads path argument arg into ps's path i, raising on a bad one.  Keys
 * point into the path's strings: the caller keeps them anchored. */
static void json_pick_path(lua_State *L, struct json_paths *ps, int i, int arg)
{
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_Integer n = (lua_Integer)lua_rawlen(L, arg);
    luaL_argcheck(L, n <= JSON_PICK_STEPS, arg, "a path has at most 16 steps");
    ps->len[i] = (int)n;
    for (int j = 0; j < n; j++) {
        struct json_step *st = &ps->step[i][j];
        int isint = 0;
        int t = lua_rawgeti(L, arg, j + 1);
        st->key = NULL;
        if (t == LUA_TSTRING) {
            st->key = lua_tolstring(L, -1, &st->len); /* anchored: the path table holds it */
        } else if (t == LUA_TNUMBER) {
            st->idx = lua_tointegerx(L, -1, &isint);
        }
        if (st->key == NULL && !isint) {
            luaL_argerror(L, arg, "a path's steps are strings (keys) and integers (indexes)");
        }
        lua_pop(L, 1);
    }
}

/* Reads paths 0..n-1 from arguments first..first+n-1. */
static void json_pick_paths(lua_State *L, struct json_paths *ps, int first, int n)
{
    luaL_argcheck(L, n <= JSON_PICK_MAX, JSON_PICK_MAX + first, "at most 16 paths");
    ps->npaths = n;
    for (int i = 0; i < n; i++) {
        json_pick_path(L, ps, i, first + i);
    }
}

/* Picks ps's paths from text s (len bytes), the text at stack slot 1 and
 * nothing above it: -> container, value... as pick returns them.
 * arraymt: the stack slot of json.array_mt's copy pushed here. */
static int json_pick_run(lua_State *L, const char *s, size_t len, const struct json_paths *ps, int arraymt)
{
    struct json_dec d;
    struct json_pick k;
    int n = ps->npaths;
    int top = lua_gettop(L);

    k.d = &d;
    k.paths = ps;
    k.npaths = n;
    k.filled = 0;
    luaL_checkstack(L, n + 8, "orch.json.pick: too many paths");
    lua_pushvalue(L, arraymt); /* slot top + 1: array_mt */
    lua_pushboolean(L, 0);     /* slot top + 2: container */
    k.base = top + 3;
    for (int i = 0; i < n; i++) {
        lua_pushnil(L);
    }
    memset(&d, 0, offsetof(struct json_dec, path));
    d.L = L;
    d.s = s;
    d.p = s;
    d.end = s + len;
    d.arraymt = top + 1;
    json_skipws(&d);
    lua_pushboolean(L, d.p < d.end && (*d.p == '{' || *d.p == '['));
    lua_replace(L, top + 2);
    json_pick_value(&k, (1u << n) - 1u, 0);
    json_skipws(&d);
    if (d.p < d.end) {
        json_syntax(&d, d.p, "unexpected data after the value");
    }
    return n + 1;
}

/* pick(text, path...) -> container, value... : container is true when the
 * text is an object or an array; then each path's value, as indexing the
 * decoded text would give it (nil where the path leads nowhere).  Raises
 * what decode raises for the same text.  Upvalue 1: json.array_mt. */
static int l_json_pick(lua_State *L)
{
    struct json_paths ps;
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);

    json_pick_paths(L, &ps, 2, lua_gettop(L) - 1);
    return json_pick_run(L, s, len, &ps, lua_upvalueindex(1));
}

/* The function picker returns: pick(text) -> what json.pick(text, path...)
 * gives for the picker's paths.  Upvalues: json.array_mt, the paths (a
 * userdata), a table anchoring the paths' key strings. */
static int l_json_picked(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const struct json_paths *ps = lua_touserdata(L, lua_upvalueindex(2));

    lua_settop(L, 1);
    return json_pick_run(L, s, len, ps, lua_upvalueindex(1));
}

/* What orch_json_pick_reply's protected call reads. */
struct json_reply_pick {
    const char *s;
    size_t len;
    const struct json_paths *ps;
};

/* orch_json_pick_reply's protected part: the pick of a text that is not a
 * Lua string (an HTTP response's buffer). Stack: the json_reply_pick, then
 * json.array_mt. */
static int json_pick_protected(lua_State *L)
{
    const struct json_reply_pick *c = lua_touserdata(L, 1);

    return json_pick_run(L, c->s, c->len, c->ps, 2);
}

/* Replaces the value at idx by the whole number of tokens it holds, as
 * an integer: 0 when it holds none (see orch_json_pick_reply). */
static int json_whole_tokens(lua_State *L, int idx)
{
    int isint = 0;
    lua_Integer i = lua_tointegerx(L, idx, &isint);

    if (!isint) { /* a float with an integral value, or a string of one */
        lua_Number f = lua_tonumberx(L, idx, &isint);
        if (!isint || !(f >= 0) || f != floor(f) || !lua_numbertointeger(f, &i))
            return 0;
    }
    if (i < 0)
        return 0;
    lua_pushinteger(L, i);
    lua_replace(L, idx);
    return 1;
}

/* The paths of the picker at idx when it is a reply's (three paths), or NULL. */
static const struct json_paths *json_reply_paths(lua_State *L, int idx)
{
    const struct json_paths *ps;

    if (lua_tocfunction(L, idx) != l_json_picked || lua_getupvalue(L, idx, 2) == NULL)
        return NULL;
    ps = lua_touserdata(L, -1); /* anchored by the picker */
    lua_pop(L, 1);
    return ps != NULL && ps->npaths == 3 ? ps : NULL;
}

int orch_json_reply_picker(lua_State *L, int idx)
{
    return json_reply_paths(L, idx) != NULL;
}

int orch_json_pick_reply(lua_State *L, int picker, const char *s, size_t len)
{
    struct json_reply_pick c = {s, len, NULL};
    int top;

    picker = lua_absindex(L, picker);
    c.ps = json_reply_paths(L, picker);
    if (c.ps == NULL)
        return -1;
    top = lua_gettop(L);
    lua_pushcfunction(L, json_pick_protected);
    lua_pushlightuserdata(L, &c);
    lua_getupvalue(L, picker, 1); /* json.array_mt */
    /* top + 1: container, + 2: the text, + 3 and + 4: its tokens */
    if (lua_pcall(L, 2, 4, 0) != LUA_OK || !lua_toboolean(L, top + 1) ||
        lua_type(L, top + 2) != LUA_TSTRING || !json_whole_tokens(L, top + 3) ||
        !json_whole_tokens(L, top + 4)) {
        lua_settop(L, top);
        return 0;
    }
    lua_remove(L, top + 1);
    return 1;
}

/* picker(path...) -> pick(text): the paths read and checked once (the
 * errors pick raises for them), for a provider that reads every reply
 * the same way.  The keys are anchored in a table of the closure's own,
 * so a path table changed later changes nothing. */
static int l_json_picker(lua_State *L)
{
    int n = lua_gettop(L);
    struct json_paths *ps;

    json_pick_paths(L, &(struct json_paths){0}, 1, n); /* checks before allocating */
    lua_pushvalue(L, lua_upvalueindex(1));
    ps = lua_newuserdatauv(L, sizeof *ps, 0);
    lua_createtable(L, n * 4, 0);
    for (int i = 1; i <= n; i++) {
        lua_Integer len = (lua_Integer)lua_rawlen(L, i);
        for (lua_Integer j = 1; j <= len; j++) {
            lua_rawgeti(L, i, j);
            lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
        }
    }
    json_pick_paths(L, ps, 1, n); /* keys: strings the anchor table holds too */
    lua_pushcclosure(L, l_json_picked, 3);
    return 1;
}

static const luaL_Reg json_funcs[] = {
    {"encode", l_json_encode},
    {"encoder", l_json_encoder},
    {"quote", l_json_quote},
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
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    json_newmarker(L, "array_mt", "array");
    json_newmarker(L, "object_mt", "object");
    lua_getfield(L, -1, "array_mt"); /* upvalue: [] decodes with this metatable */
    lua_pushinteger(L, 0);           /* upvalue: the last top-level object's size */
    lua_pushcclosure(L, l_json_decode, 2);
    lua_setfield(L, -2, "decode");
    lua_getfield(L, -1, "array_mt"); /* upvalue: as decode's */
    lua_pushcclosure(L, l_json_pick, 1);
    lua_setfield(L, -2, "pick");
    lua_getfield(L, -1, "array_mt"); /* upvalue: as pick's */
    lua_pushcclosure(L, l_json_picker, 1);
    lua_setfield(L, -2, "picker");
    return 1;
}
