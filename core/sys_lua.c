/* sys_lua.c — `require "orch.sys"`. */
#include "sys_lua.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>

#include <curl/curl.h>
#include <lauxlib.h>

#include "runtime.h"
#include "store.h"

#ifndef ORCH_VERSION
#define ORCH_VERSION "0.0.0"
#endif

/* versions() -> { orch =, lua =, curl =, stores = { "SQLite 3.40.1",
 * "PostgreSQL 15.10 (libpq)" } }: the store libraries as the store names
 * them (orch_store_library). */
static int l_sys_versions(lua_State *L)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, ORCH_VERSION);
    lua_setfield(L, -2, "orch");
    lua_pushstring(L, LUA_RELEASE);
    lua_setfield(L, -2, "lua");
    lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
    lua_setfield(L, -2, "curl");
    lua_newtable(L);
    for (size_t i = 0; orch_store_library(i) != NULL; i++) {
        lua_pushstring(L, orch_store_library(i));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "stores");
    return 1;
}

/* isatty(fd) -> boolean */
static int l_sys_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

static int l_sys_pid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

static int l_sys_hostname(lua_State *L)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0)
        host[0] = '\0';
    host[sizeof host - 1] = '\0';
    lua_pushstring(L, host);
    return 1;
}

/* alive(pid) -> whether a process with that pid exists on this host */
static int l_sys_alive(lua_State *L)
{
    lua_Integer pid = luaL_checkinteger(L, 1);
    int alive = pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
    lua_pushboolean(L, alive);
    return 1;
}

/* stat(path) -> { size =, mtime_ns =, dev =, ino = } | nil, err
 * (symlinks followed). dev and ino together name the file itself, whatever
 * path reaches it: a hard link or a symlink gives the same pair. */
static int l_sys_stat(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0)
        return luaL_fileresult(L, 0, path);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)st.st_dev);
    lua_setfield(L, -2, "dev");
    lua_pushinteger(L, (lua_Integer)st.st_ino);
    lua_setfield(L, -2, "ino");
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
    lua_setfield(L, -2, "mtime_ns");
    return 1;
}

/* realpath(path) -> absolute path | nil, err */
static int l_sys_realpath(lua_State *L)
{
    char buf[PATH_MAX];
    const char *path = luaL_checkstring(L, 1);
    if (realpath(path, buf) == NULL)
        return luaL_fileresult(L, 0, path);
    lua_pushstring(L, buf);
    return 1;
}

/* chdir(path) -> true | nil, err */
static int l_sys_chdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    return luaL_fileresult(L, chdir(path) == 0, path);
}

/* memory_limit([bytes]) -> the Lua heap's limit in bytes before the call
 * (0: this state has none). With bytes, sets it, unless --max-memory
 * fixed it for the process. */
static int l_sys_memory_limit(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_pushinteger(L, (lua_Integer)orch_runtime_memory_limit(L));
        return 1;
    }
    lua_Integer bytes = luaL_checkinteger(L, 1);
    luaL_argcheck(L, bytes > 0, 1, "the memory limit must be a positive number of bytes");
    lua_pushinteger(L, (lua_Integer)orch_runtime_set_memory_limit(L, (size_t)bytes, 0));
    return 1;
}

/* memory_used() -> bytes the Lua heap holds now */
static int l_sys_memory_used(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)orch_runtime_memory_used(L));
    return 1;
}

static const luaL_Reg sys_funcs[] = {
    {"memory_limit", l_sys_memory_limit},
    {"memory_used", l_sys_memory_used},
    {"versions", l_sys_versions},
    {"isatty", l_sys_isatty},
    {"pid", l_sys_pid},
    {"hostname", l_sys_hostname},
    {"realpath", l_sys_realpath},
    {"alive", l_sys_alive},
    {"chdir", l_sys_chdir},
    {"stat", l_sys_stat},
    {NULL, NULL},
};

int luaopen_orch_sys(lua_State *L)
{
    luaL_newlib(L, sys_funcs);
    return 1;
}
