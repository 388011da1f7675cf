/* sys_lua.c — `require "orch.sys"`. */
#include "sys_lua.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <sqlite3.h>

#ifndef ORCH_VERSION
#define ORCH_VERSION "0.0.0"
#endif

/* versions() -> { orch =, lua =, curl =, sqlite = } */
static int l_sys_versions(lua_State *L)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, ORCH_VERSION);
    lua_setfield(L, -2, "orch");
    lua_pushstring(L, LUA_RELEASE);
    lua_setfield(L, -2, "lua");
    lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
    lua_setfield(L, -2, "curl");
    lua_pushstring(L, sqlite3_libversion());
    lua_setfield(L, -2, "sqlite");
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

static const luaL_Reg sys_funcs[] = {
    {"versions", l_sys_versions},
    {"isatty", l_sys_isatty},
    {"pid", l_sys_pid},
    {"hostname", l_sys_hostname},
    {"realpath", l_sys_realpath},
    {NULL, NULL},
};

int luaopen_orch_sys(lua_State *L)
{
    luaL_newlib(L, sys_funcs);
    return 1;
}
