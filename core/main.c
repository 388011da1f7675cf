/* main.c — the command line. Parses argv into an options table and runs the
 * command inside one protected call (lua.c's main -> pmain). Exit codes:
 * 0 done, 1 failed, 2 usage or workflow error, 3 paused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <lauxlib.h>
#include <lua.h>

#include "runtime.h"

#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: orch <command> [options]\n"
    "\n"
    "commands:\n"
    "  run WORKFLOW.lua [--set k=v]... [--concurrency N] [--budget USD] [--fresh] [--no-cache]\n"
    "                   [--db PATH] [-q|-v] [--log-json] [--max-memory MB]\n"
    "                      run a workflow; an unfinished run of the same workflow, input\n"
    "                      and parameters is resumed (--fresh starts a new one); --no-cache\n"
    "                      skips the LLM response journal; --dry-run is orch estimate;\n"
    "                      --log-json writes the run's log as one JSON object a line;\n"
    "                      --max-memory caps the Lua heap (a row past it fails)\n"
    "  estimate WORKFLOW.lua [--set k=v]...\n"
    "                      tokens and dollars of the workflow's LLM calls, before spending\n"
    "                      any: it runs offline, writing and storing nothing\n"
    "  resume RUN_ID | --all [--budget USD] [--db PATH] [-q|-v] [--max-memory MB]\n"
    "                      resume one run, or every interrupted run in the store\n"
    "  status [RUN_ID]     a run's state, counters and last checkpoint (default: newest run)\n"
    "  ls [--status S] [--name N] [--since T] [--until T]\n"
    "                      list runs (T: 2026-11-25, 2026-11-25T10:00:00 or 3d/12h/30m ago)\n"
    "  history RUN_ID      the run's events\n"
    "  checkpoints RUN_ID  the run's checkpoints\n"
    "  export RUN_ID [--format jsonl|csv] [-o FILE]\n"
    "                      the run's output rows, as committed by its last checkpoint\n"
    "  stats               figures of the store: runs, checkpoints, bytes, checkpoint ms\n"
    "  gc [--older-than 30d] [--status completed,failed] [--keep-last N] [--journal]\n"
    "     [--vacuum] [--dry-run]\n"
    "                      remove old finished runs with their checkpoints, results and\n"
    "                      events (--journal: old journal entries too; --vacuum: shrink)\n"
    "  restore RUN_ID CHECKPOINT\n"
    "                      roll a run back to one of its checkpoints (then orch resume it)\n"
    "  lua SCRIPT.lua [ARG]...\n"
    "                      run a Lua script with the orch modules available\n"
    "  version             print the versions of orch, Lua, libcurl and SQLite\n"
    "  help                show this text\n"
    "\n"
    "options: --db PATH (or ORCH_DB; default .orch/state.db, ':memory:' for none), --json\n"
    "(status, ls, history, checkpoints, stats) prints JSON for scripts.\n"
    "exit codes: 0 done, 1 failed, 2 usage or workflow error, 3 paused\n";

/* What each command accepts. Options that take a value are listed in
 * `values`, flags in `flags` (space-separated, with a trailing space). */
struct command {
    const char *name;
    const char *values;
    const char *flags;
    int min_args, max_args;
    const char *synopsis;
};

static const struct command commands[] = {
    {"run", "--db --set --concurrency --budget --max-memory ", "--fresh --no-cache --dry-run --log-json -q -v --quiet --verbose ", 1, 1,
     "orch run WORKFLOW.lua"},
    {"estimate", "--set --concurrency ", "", 1, 1, "orch estimate WORKFLOW.lua"},
    {"resume", "--db --concurrency --budget --max-memory ", "--all --no-cache --log-json -q -v --quiet --verbose ", 0, 1,
     "orch resume RUN_ID | --all"},
    {"status", "--db ", "--json ", 0, 1, "orch status [RUN_ID]"},
    {"ls", "--db --status --name --since --until ", "--json ", 0, 0, "orch ls"},
    {"history", "--db ", "--json ", 1, 1, "orch history RUN_ID"},
    {"checkpoints", "--db ", "--json ", 1, 1, "orch checkpoints RUN_ID"},
    {"export", "--db --format -o ", "", 1, 1, "orch export RUN_ID"},
    {"stats", "--db ", "--json ", 0, 0, "orch stats"},
    {"restore", "--db ", "", 2, 2, "orch restore RUN_ID CHECKPOINT"},
    {"gc", "--db --older-than --status --keep-last ", "--journal --vacuum --dry-run ", 0, 0, "orch gc"},
    {NULL, NULL, NULL, 0, 0, NULL},
};

static int usage_error(lua_State *L, const char *fmt, const char *arg)
{
    fprintf(stderr, "orch: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nrun 'orch help' for usage\n");
    lua_pushinteger(L, EXIT_USAGE);
    return 1;
}

/* Whether word (up to '=' if any) is one of the space-separated names. */
static int listed(const char *names, const char *word, size_t len)
{
    const char *p = names;
    while (*p != '\0') {
        const char *end = strchr(p, ' ');
        if ((size_t)(end - p) == len && strncmp(p, word, len) == 0)
            return 1;
        p = end + 1;
    }
    return 0;
}

/* Builds { command =, args = {...}, set = {...}, verbosity =, <option> = value,
 * <flag> = true } on L's top from argv (options keyed without dashes).
 * Returns 0, or 1 after pushing the exit code of a usage error. */
static int parse_command(lua_State *L, const struct command *c, int argc, char **argv)
{
    lua_newtable(L);
    int opts = lua_gettop(L);
    lua_pushstring(L, c->name);
    lua_setfield(L, opts, "command");
    lua_newtable(L);
    lua_setfield(L, opts, "set");
    lua_pushinteger(L, 0);
    lua_setfield(L, opts, "verbosity");
    lua_newtable(L);
    int args = lua_gettop(L);
    int nargs = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == '\0') {
            if (nargs >= c->max_args)
                return usage_error(L, "unexpected argument '%s'", a);
            lua_pushstring(L, a);
            lua_rawseti(L, args, ++nargs);
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq != NULL ? (size_t)(eq - a) : strlen(a);
        if (listed(c->flags, a, len) && eq == NULL) {
            if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
                lua_pushinteger(L, -1);
                lua_setfield(L, opts, "verbosity");
            } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
                lua_pushinteger(L, 1);
                lua_setfield(L, opts, "verbosity");
            } else {
                luaL_gsub(L, a + 2, "-", "_"); /* "--no-cache" -> no_cache */
                lua_pushboolean(L, 1);
                lua_settable(L, opts);
            }
            continue;
        }
        if (!listed(c->values, a, len))
            return usage_error(L, "unknown option '%s'", a);
        const char *v;
        if (eq != NULL) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            return usage_error(L, "option '%s' needs a value", a);
        }
        lua_pushlstring(L, a, len);
        const char *name = lua_tostring(L, -1);
        if (strcmp(name, "--set") == 0) {
            const char *kv = strchr(v, '=');
            if (kv == NULL || kv == v)
                return usage_error(L, "--set expects key=value, got '%s'", v);
            lua_getfield(L, opts, "set");
            lua_pushlstring(L, v, (size_t)(kv - v));
            lua_pushstring(L, kv + 1);
            lua_settable(L, -3);
            lua_pop(L, 2);
        } else if (strcmp(name, "--concurrency") == 0) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*v == '\0' || *end != '\0' || n < 1 || n > 100000)
                return usage_error(L, "--concurrency expects a number from 1 to 100000, got '%s'", v);
            lua_pushinteger(L, n);
            lua_setfield(L, opts, "concurrency");
            lua_pop(L, 1);
        } else if (strcmp(name, "--max-memory") == 0) {
            char *end;
            long long mb = strtoll(v, &end, 10);
            if (*v == '\0' || *end != '\0' || mb < 1 || mb > (1LL << 30))
                return usage_error(L, "--max-memory expects a number of MB from 1 up, got '%s'", v);
            /* fixed here, for the whole process: it beats a workflow's max_memory */
            orch_runtime_set_memory_limit(L, (size_t)mb << 20, 1);
            lua_pushinteger(L, (lua_Integer)mb);
            lua_setfield(L, opts, "max_memory");
            lua_pop(L, 1);
        } else if (strcmp(name, "--budget") == 0) {
            char *end;
            double usd = strtod(v, &end);
            if (*v == '\0' || *end != '\0' || !(usd > 0))
                return usage_error(L, "--budget expects a positive number of dollars, got '%s'", v);
            lua_pushnumber(L, usd);
            lua_setfield(L, opts, "budget");
            lua_pop(L, 1);
        } else {
            luaL_gsub(L, name[1] == '-' ? name + 2 : name + 1, "-", "_"); /* "--keep-last" -> keep_last */
            lua_pushstring(L, v);
            lua_settable(L, opts);
            lua_pop(L, 1);
        }
    }
    if (nargs < c->min_args)
        return usage_error(L, "missing argument: %s", c->synopsis);
    lua_setfield(L, opts, "args");
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
    int argc = (int)lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
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
    for (const struct command *c = commands; c->name != NULL; c++) {
        if (strcmp(cmd, c->name) != 0)
            continue;
        if (parse_command(L, c, argc, argv) != 0)
            return 1;
        call_cli(L, c->name);
        return 1;
    }
    return usage_error(L, "unknown command '%s'", cmd);
}

/* Thousands of concurrent requests need thousands of descriptors: raise
 * the soft limit to the hard one, and say so when even that is low. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < 1024 && getenv("ORCH_QUIET_NOFILE") == NULL)
        fprintf(stderr, "orch: warning: only %llu open files allowed (ulimit -n); concurrency above about %llu "
                        "will fail to connect. Raise the hard limit (ulimit -Hn, limits.conf) to run more.\n",
                (unsigned long long)rl.rlim_cur, (unsigned long long)(rl.rlim_cur / 2));
}

int main(int argc, char **argv)
{
    raise_nofile();
    struct orch_runtime rt;
    if (orch_runtime_open(&rt) != 0) {
        fprintf(stderr, "orch: cannot create the Lua state (out of memory)\n");
        return 1;
    }
    lua_pushcfunction(rt.L, pmain);
    lua_pushinteger(rt.L, argc);
    lua_pushlightuserdata(rt.L, argv);
    int status = orch_runtime_pcall(rt.L, 2, 1);
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
