/* reader_lua.c — Lua bindings of reader.c (`require "orch.reader"`).
 * A reader userdata owns its struct orch_reader; its user value holds the
 * CSV header as a Lua array so each row reuses the same key strings. */
#include "reader_lua.h"

#include <string.h>

#include <lauxlib.h>

#include "reader.h"
#include "runtime.h"

#define READER_MT "orch.Reader"

struct lreader {
    struct orch_reader *r; /* NULL once closed */
    size_t ncols;
};

static struct lreader *check_open(lua_State *L)
{
    struct lreader *lr = orch_lua_self(L, READER_MT);
    if (lr->r == NULL)
        luaL_error(L, "attempt to use a closed reader");
    return lr;
}

/* open(path, "csv"|"lines") -> reader | nil, err */
static int l_reader_open(lua_State *L)
{
    static const char *const kinds[] = {"csv", "lines", NULL};
    const char *path = luaL_checkstring(L, 1);
    int kind = luaL_checkoption(L, 2, "csv", kinds);
    struct lreader *lr = lua_newuserdatauv(L, sizeof *lr, 1);
    lr->r = NULL; /* closed until the file is open, so __gc is safe */
    lr->ncols = 0;
    luaL_setmetatable(L, READER_MT);
    char err[512];
    lr->r = orch_reader_open(path, kind == 0 ? ORCH_READER_CSV : ORCH_READER_LINES, 1, err, sizeof err);
    if (lr->r == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    const struct orch_field *cols;
    lr->ncols = orch_reader_header(lr->r, &cols);
    lua_createtable(L, (int)lr->ncols, 0);
    for (size_t i = 0; i < lr->ncols; i++) {
        lua_pushlstring(L, cols[i].ptr, cols[i].len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* Pushes rec's record: for CSV a table { column = value, ... } keyed by the
 * header's strings (the user value of the reader at ud); for lines the
 * line as a string. The table has room for one field more than the
 * record's: a stage commonly adds one (a prompt's `into`, a computed
 * column), and a full table would be rehashed into a new node array for
 * it (about 575 instructions a row of two columns). */
static void push_record(lua_State *L, const struct lreader *lr, int ud, const struct orch_record *rec)
{
    if (lr->ncols == 0) {
        lua_pushlstring(L, rec->fields[0].ptr, rec->fields[0].len);
        return;
    }
    lua_getiuservalue(L, ud, 1);
    lua_createtable(L, 0, (int)rec->nfields + 1);
    for (size_t i = 0; i < rec->nfields && i < lr->ncols; i++) {
        lua_rawgeti(L, -2, (lua_Integer)i + 1);
        lua_pushlstring(L, rec->fields[i].ptr, rec->fields[i].len);
        lua_rawset(L, -3);
    }
    lua_remove(L, -2);
}

/* A record that could not be read: pushes false, the message and whether
 * the input ended on an I/O or memory error (next's and take's first three
 * results). */
static void push_failure(lua_State *L, struct lreader *lr)
{
    lua_pushboolean(L, 0);
    lua_pushstring(L, orch_reader_error(lr->r));
    lua_pushboolean(L, orch_reader_failed(lr->r));
}

/* Reads the next record of lr and pushes next's results (full) or take's
 * (see below); the reader is at stack index idx. -> the count pushed */
static int push_next(lua_State *L, struct lreader *lr, int idx, int full)
{
    struct orch_record rec;
    memset(&rec, 0, sizeof rec);
    int rc = orch_reader_next(lr->r, &rec);
    if (rc == 0) {
        lua_pushnil(L);
        return 1;
    }
    if (rc < 0) {
        push_failure(L, lr);
    } else {
        push_record(L, lr, idx, &rec);
        lua_pushinteger(L, (lua_Integer)rec.line);
        if (full)
            lua_pushinteger(L, (lua_Integer)rec.index);
    }
    if (full)
        lua_pushinteger(L, (lua_Integer)rec.offset);
    lua_pushinteger(L, (lua_Integer)rec.end);
    lua_pushinteger(L, (lua_Integer)rec.end_line);
    return full ? 6 : rc < 0 ? 5 : 4;
}

/* reader:next() -> record, line, index, offset, end, end_line
 *                | false, err, fatal, offset, end, end_line
 *                        (a malformed record, skipped; fatal when the input
 *                         ended on an I/O error)
 *                | nil                          (end of input)
 * record: CSV -> { column = value, ... }; lines -> the line as a string. */
static int l_reader_next(lua_State *L)
{
    return push_next(L, check_open(L), 1, 1);
}

/* The function reader:taker() returns, its reader the upvalue: take() ->
 *   record, line, end, end_line | false, err, fatal, end, end_line | nil:
 * next's results in the order a row source gives them (orch.io), so the
 * driver calls it with no Lua function between (one call a row fewer). */
static int l_reader_take(lua_State *L)
{
    struct lreader *lr = lua_touserdata(L, lua_upvalueindex(1));
    if (lr->r == NULL)
        return luaL_error(L, "attempt to use a closed reader");
    return push_next(L, lr, lua_upvalueindex(1), 0);
}

/* reader:taker() -> take (see l_reader_take), bound to this reader */
static int l_reader_taker(lua_State *L)
{
    check_open(L);
    lua_settop(L, 1);
    lua_pushcclosure(L, l_reader_take, 1);
    return 1;
}

/* reader:header() -> a new array { column, ... } (empty for line readers) */
static int l_reader_header(lua_State *L)
{
    check_open(L);
    lua_getiuservalue(L, 1, 1);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -2, i);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

/* reader:seek(offset, index, line) -> true | nil, err */
static int l_reader_seek(lua_State *L)
{
    struct lreader *lr = check_open(L);
    lua_Integer off = luaL_checkinteger(L, 2);
    lua_Integer idx = luaL_checkinteger(L, 3);
    lua_Integer line = luaL_checkinteger(L, 4);
    luaL_argcheck(L, off >= 0 && idx >= 0 && line >= 1, 2, "invalid cursor");
    if (orch_reader_seek(lr->r, (uint64_t)off, (uint64_t)idx, (uint64_t)line) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, orch_reader_error(lr->r));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* reader:size() -> bytes in the file when it was opened */
static int l_reader_size(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)orch_reader_size(check_open(L)->r));
    return 1;
}

static int l_reader_close(lua_State *L)
{
    struct lreader *lr = orch_lua_self(L, READER_MT);
    if (lr->r != NULL)
        orch_reader_close(lr->r);
    lr->r = NULL;
    return 0;
}

static const luaL_Reg reader_methods[] = {
    {"next", l_reader_next}, /* the methods in the order a reader is used */
    {"taker", l_reader_taker}, {"header", l_reader_header}, {"seek", l_reader_seek},
    {"size", l_reader_size},   {"close", l_reader_close},   {NULL, NULL},
};

static const luaL_Reg reader_meta[] = {
    {"__gc", l_reader_close},
    {"__close", l_reader_close},
    {"__index", NULL},
    {NULL, NULL},
};

/* count(path, "csv"|"lines") -> records | nil, err: the data records, by a scan
 * of the bytes that builds none (orch_reader_count) */
static int l_reader_count(lua_State *L)
{
    static const char *const kinds[] = {"csv", "lines", NULL};
    const char *path = luaL_checkstring(L, 1);
    int kind = luaL_checkoption(L, 2, "csv", kinds);
    char err[512];
    uint64_t n;
    if (orch_reader_count(path, kind == 0 ? ORCH_READER_CSV : ORCH_READER_LINES, &n, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static const luaL_Reg reader_funcs[] = {
    {"open", l_reader_open},
    {"count", l_reader_count},
    {NULL, NULL},
};

int luaopen_orch_reader(lua_State *L)
{
    orch_lua_class(L, READER_MT, reader_meta, reader_methods);
    luaL_newlib(L, reader_funcs);
    return 1;
}
