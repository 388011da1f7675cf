/* luac.c — a build tool, not part of orch: compiles one Lua source file to
 * the binary chunk that core/embed.cmake embeds in place of the source, so
 * orch loads its own modules without running the Lua parser (about 45 % of
 * a start's instructions) on every start. The chunk keeps its debug
 * information (source name, lines, local names): tracebacks and error
 * messages name lua/orch/FILE.lua:LINE as the source would.
 *
 *   orch_luac SOURCE.lua OUT.luac @CHUNKNAME
 *
 * Exit 0 done; 1 (the message on stderr) when the source does not compile
 * or a file cannot be read or written, so a syntax error fails the build.
 * Depends on lua.h and lauxlib.h only. */
#include <stdio.h>

#include <lauxlib.h>
#include <lua.h>

static int write_chunk(lua_State *L, const void *p, size_t n, void *ud)
{
    (void)L;
    return fwrite(p, 1, n, ud) == n ? 0 : 1;
}

/* Compiles argv[1] under the name argv[3] and writes it to argv[2]. Runs
 * in a protected call: any error is left on the stack. */
static int compile(lua_State *L)
{
    const char *src = lua_touserdata(L, 1);
    const char *out = lua_touserdata(L, 2);
    const char *chunkname = lua_touserdata(L, 3);
    FILE *in = fopen(src, "rb");
    if (in == NULL)
        return luaL_error(L, "cannot read %s", src);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t n;
    do {
        char *p = luaL_prepbuffer(&b);
        n = fread(p, 1, LUAL_BUFFERSIZE, in);
        luaL_addsize(&b, n);
    } while (n == LUAL_BUFFERSIZE);
    int failed = ferror(in);
    fclose(in);
    if (failed)
        return luaL_error(L, "cannot read %s", src);
    luaL_pushresult(&b);
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    if (luaL_loadbufferx(L, text, len, chunkname, "t") != LUA_OK)
        return lua_error(L);
    FILE *f = fopen(out, "wb");
    if (f == NULL)
        return luaL_error(L, "cannot write %s", out);
    int bad = lua_dump(L, write_chunk, f, 0); /* 0: keep the debug information */
    if (fclose(f) != 0 || bad) {
        remove(out);
        return luaL_error(L, "cannot write %s", out);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4 || argv[3][0] != '@') {
        fprintf(stderr, "usage: orch_luac SOURCE.lua OUT.luac @CHUNKNAME\n");
        return 1;
    }
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "orch_luac: out of memory\n");
        return 1;
    }
    lua_pushcfunction(L, compile);
    lua_pushlightuserdata(L, argv[1]);
    lua_pushlightuserdata(L, argv[2]);
    lua_pushlightuserdata(L, argv[3]);
    int status = lua_pcall(L, 3, 0, 0);
    if (status != LUA_OK)
        fprintf(stderr, "orch_luac: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return status == LUA_OK ? 0 : 1;
}
