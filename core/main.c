/* main.c — the command line. Parses argv into an options table and runs the
 * command inside one protected call (lua.c's main -> pmain). Exit codes:
 * 0 done, 1 failed, 2 usage or workflow error, 3 paused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "runtime.h"

#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: orch <command> [options]\n"
    "\n"
    "commands:\n"
    "  run WORKFLOW.lua [--set k=v]... [--concurrency N] [-q|-v]\n"
    "                      run a workflow (rows or steps) to completion\n"
    "  lua SCRIPT.lua [ARG]...\n"
    "                      run a Lua script with the orch modules available\n"
    "  version             print the versions of orch, Lua, libcurl and SQLite\n"
    "  help                show this text\n"
    "\n"
    "exit codes: 0 done, 1 failed, 2 usage or workflow error, 3 paused\n";

struct cli {
    int argc;
    char **argv;
    int status;
};

static int usage_error(lua_State *L, const char *fmt, const char *arg)
{
    fprintf(stderr, "orch: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nrun 'orch help' for usage\n");
    lua_pushinteger(L, EXIT_USAGE);
    return 1;
}

/* Value of an option that takes one: "--opt v" or "--opt=v". Advances *i. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) == 0 && argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (strcmp(argv[*i], name) != 0)
        return NULL;
    if (*i + 1 >= argc)
        return "";
    (*i)++;
    return argv[*i];
}

/* Builds the options of `orch run` on L's top; returns 0 or 1 after
 * pushing an exit code for a usage error. */
static int parse_run(lua_State *L, int argc, char **argv)
{
    lua_newtable(L);
    lua_newtable(L);
    lua_setfield(L, -2, "set");
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "verbosity");
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v;
        if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            lua_pushinteger(L, -1);
            lua_setfield(L, -2, "verbosity");
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            lua_pushinteger(L, 1);
            lua_setfield(L, -2, "verbosity");
        } else if ((v = opt_value(argc, argv, &i, "--set")) != NULL) {
            const char *eq = strchr(v, '=');
            if (eq == NULL || eq == v)
                return usage_error(L, "--set expects key=value, got '%s'", v);
            lua_getfield(L, -1, "set");
            lua_pushlstring(L, v, (size_t)(eq - v));
            lua_pushstring(L, eq + 1);
            lua_settable(L, -3);
            lua_pop(L, 1);
        } else if ((v = opt_value(argc, argv, &i, "--concurrency")) != NULL) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*v == '\0' || *end != '\0' || n < 1 || n > 100000)
                return usage_error(L, "--concurrency expects a number from 1 to 100000, got '%s'", v);
            lua_pushinteger(L, n);
            lua_setfield(L, -2, "concurrency");
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage_error(L, "unknown option '%s' for run", a);
        } else {
            lua_getfield(L, -1, "file");
            int have = !lua_isnil(L, -1);
            lua_pop(L, 1);
            if (have)
                return usage_error(L, "run takes one workflow file, got another: '%s'", a);
            lua_pushstring(L, a);
            lua_setfield(L, -2, "file");
        }
    }
    lua_getfield(L, -1, "file");
    int have = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!have)
        return usage_error(L, "%s", "run needs a workflow file: orch run WORKFLOW.lua");
    return 0;
}

/* Calls require("orch.cli")[name](opts on top) and leaves its exit code. */
static void call_cli(lua_State *L, const char *name)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, "orch.cli");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
    lua_insert(L, -2);
    lua_call(L, 1, 1);
}

/* Everything runs in here, under one protected call. Leaves an exit code. */
static int pmain(lua_State *L)
{
    struct cli *c = lua_touserdata(L, 1);
    int argc = c->argc;
    char **argv = c->argv;
    lua_settop(L, 0);
    const char *cmd = argc > 1 ? argv[1] : "help";
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(usage_text, argc > 1 ? stdout : stderr);
        lua_pushinteger(L, argc > 1 ? 0 : EXIT_USAGE);
        return 1;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        lua_newtable(L);
        call_cli(L, "version");
        return 1;
    }
    if (strcmp(cmd, "run") == 0) {
        if (parse_run(L, argc, argv) != 0)
            return 1;
        call_cli(L, "run");
        return 1;
    }
    if (strcmp(cmd, "lua") == 0) {
        if (argc < 3)
            return usage_error(L, "%s", "lua needs a script: orch lua SCRIPT.lua [ARG]...");
        lua_createtable(L, argc - 3, 1);
        for (int i = 2; i < argc; i++) {
            lua_pushstring(L, argv[i]);
            lua_rawseti(L, -2, i - 2);
        }
        call_cli(L, "script");
        return 1;
    }
    return usage_error(L, "unknown command '%s'", cmd);
}

int main(int argc, char **argv)
{
    struct orch_runtime rt;
    if (orch_runtime_open(&rt) != 0) {
        fprintf(stderr, "orch: cannot create the Lua state (out of memory)\n");
        return 1;
    }
    struct cli c = {argc, argv, 0};
    lua_pushcfunction(rt.L, pmain);
    lua_pushlightuserdata(rt.L, &c);
    int status = orch_runtime_pcall(rt.L, 1, 1);
    int code;
    if (status != LUA_OK) {
        const char *msg = lua_tostring(rt.L, -1);
        fprintf(stderr, "orch: internal error: %s\n", msg != NULL ? msg : "(error object is not a string)");
        code = 1;
    } else {
        code = (int)lua_tointeger(rt.L, -1);
    }
    fflush(stdout);
    orch_runtime_close(&rt);
    return code;
}
