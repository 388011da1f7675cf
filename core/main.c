/* main.c — the command line. One table (commands[], each with its
 * options and a line of help for each) both parses argv into an options
 * table and prints `orch help`, `orch help CMD` and `orch CMD --help`, so
 * what help says and what the parser accepts cannot drift apart (curl's
 * src/tool_getparam.c aliases[]). The command then runs inside one
 * protected call (lua.c's main -> pmain). Exit codes: 0 done, 1 failed,
 * 2 usage or workflow error, 3 paused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <lauxlib.h>
#include <lua.h>

#include "runtime.h"

#define EXIT_USAGE 2

/* How an option's value is checked and stored in the options table. */
enum opt_kind {
    OPT_FLAG,    /* no value: <key> = true */
    OPT_STRING,  /* <key> = "value" */
    OPT_SET,     /* k=v: set[k] = "v", repeatable */
    OPT_COUNT,   /* a whole number from 1 to 100000 */
    OPT_USD,     /* a positive number of dollars */
    OPT_MB,      /* a whole number of MB: the Lua memory limit, set here */
    OPT_QUIET,   /* verbosity = -1 */
    OPT_VERBOSE, /* verbosity = 1 */
    OPT_HELP,    /* prints the command's help */
};

struct option {
    const char *name;  /* "--db"; the table key is the name without dashes, '-' -> '_' */
    const char *alias; /* "-q" for "--quiet", or NULL */
    const char *value; /* what the value is called in help ("PATH"), NULL for a flag */
    enum opt_kind kind;
    const char *help; /* one line */
};

/* Options shared by several commands, spelled once. Tables stay one
 * entry a line, as they read best. */
/* clang-format off */
#define O_DB {"--db", NULL, "PATH", OPT_STRING, "the state store (default: $ORCH_DB, else .orch/state.db)"}
#define O_SET {"--set", NULL, "K=V", OPT_SET, "set the workflow parameter K (repeatable; see orch params)"}
#define O_CONC {"--concurrency", NULL, "N", OPT_COUNT, "rows or steps in flight at once (default: the workflow's)"}
#define O_JSON {"--json", NULL, NULL, OPT_FLAG, "print JSON for scripts"}
#define O_QUIET {"--quiet", "-q", NULL, OPT_QUIET, "print warnings and errors only"}
#define O_VERBOSE {"--verbose", "-v", NULL, OPT_VERBOSE, "print every failure with its traceback"}
#define O_NOCACHE {"--no-cache", NULL, NULL, OPT_FLAG, "skip the LLM response journal (pay again)"}
#define O_LOGJSON {"--log-json", NULL, NULL, OPT_FLAG, "write the log as one JSON object a line"}
#define O_HELP {"--help", "-h", NULL, OPT_HELP, "show this help"}
#define O_MAXMEM {"--max-memory", NULL, "MB", OPT_MB, "cap the Lua heap; a row past it fails (default: max_memory)"}
#define O_DURABLE {"--require-durable", NULL, NULL, OPT_FLAG, "refuse a store server that a crash could make lose checkpoints"}
#define O_METRICS {"--metrics", NULL, "FILE", OPT_STRING, "keep FILE the run's Prometheus text (node_exporter textfile)"}
#define O_SAMPLE {"--sample", NULL, "N", OPT_COUNT, "estimate: run N rows for real (journaled) for the expected cost"}
#define O_SPREAD {"--spread", NULL, NULL, OPT_FLAG, "with --sample: N rows drawn through the input, not the first N"}
#define O_SEED {"--seed", NULL, "S", OPT_COUNT, "with --spread: the draw's seed (default: 1)"}
#define O_END {NULL, NULL, NULL, OPT_FLAG, NULL}

static const struct option run_options[] = {
    O_DB, O_SET, O_CONC,
    {"--budget", NULL, "USD", OPT_USD, "stop (paused, resumable) before spending more than USD"},
    {"--fresh", NULL, NULL, OPT_FLAG, "start a new run even if an unfinished one matches"},
    O_NOCACHE,
    {"--dry-run", NULL, NULL, OPT_FLAG, "estimate tokens and dollars instead (orch estimate)"},
    O_SAMPLE, O_SPREAD, O_SEED,
    O_MAXMEM, O_METRICS, O_LOGJSON, O_DURABLE, O_QUIET, O_VERBOSE, O_HELP, O_END,
};
static const struct option estimate_options[] = {
    O_SET, O_CONC,
    {"--db", NULL, "PATH", OPT_STRING, "with --sample: the store the sample is journaled in (as run's)"},
    {"--budget", NULL, "USD", OPT_USD, "with --sample: the budget to check the expected cost against"},
    O_SAMPLE, O_SPREAD, O_SEED,
    O_QUIET, O_VERBOSE, O_HELP, O_END,
};
static const struct option params_options[] = {O_SET, O_JSON, O_HELP, O_END};
static const struct option resume_options[] = {
    {"--all", NULL, NULL, OPT_FLAG, "every interrupted run in the store (budget-paused ones need --budget)"},
    O_DB, O_CONC,
    {"--budget", NULL, "USD", OPT_USD, "a new budget (needed to resume a run paused by its budget)"},
    O_NOCACHE, O_MAXMEM, O_METRICS, O_LOGJSON, O_DURABLE, O_QUIET, O_VERBOSE, O_HELP, O_END,
};
static const struct option status_options[] = {O_DB, O_JSON, O_HELP, O_END};
static const struct option ls_options[] = {
    O_DB,
    {"--status", NULL, "S", OPT_STRING, "only runs in status S (pending, running, paused, completed, failed)"},
    {"--name", NULL, "N", OPT_STRING, "only runs of the workflow named N"},
    {"--since", NULL, "T", OPT_STRING, "created at or after T (2026-11-25, 2026-11-25T10:00:00, 3d, 12h, 30m)"},
    {"--until", NULL, "T", OPT_STRING, "created before T"},
    O_JSON, O_HELP, O_END,
};
static const struct option export_options[] = {
    O_DB,
    {"--format", NULL, "jsonl|csv", OPT_STRING, "output format (default: jsonl)"},
    {"-o", NULL, "FILE", OPT_STRING, "write to FILE instead of standard output"},
    O_HELP, O_END,
};
static const struct option restore_options[] = {O_DB, O_HELP, O_END};
static const struct option gc_options[] = {
    O_DB,
    {"--older-than", NULL, "AGE", OPT_STRING, "finished before AGE ago or time T (default: 30d)"},
    {"--status", NULL, "S,...", OPT_STRING, "statuses to remove (default: completed,failed)"},
    {"--keep-last", NULL, "N", OPT_STRING, "keep the newest N runs of each workflow"},
    {"--journal", NULL, NULL, OPT_FLAG, "also drop LLM journal entries older than AGE"},
    {"--vacuum", NULL, NULL, OPT_FLAG, "give the freed space back to the file system"},
    {"--dry-run", NULL, NULL, OPT_FLAG, "list what would be removed, remove nothing"},
    O_HELP, O_END,
};
static const struct option serve_options[] = {
    {"--db", NULL, "URL", OPT_STRING, "the state store (default: $ORCH_DB, else .orch/state.db)"},
    {"--listen", NULL, "ADDR:PORT", OPT_STRING, "where to listen (default: 127.0.0.1:8377; port 0: any free one)"},
    {"--token", NULL, "T", OPT_STRING, "require \"Authorization: Bearer T\" (or /?token=T once, for a browser)"},
    {"--insecure", NULL, NULL, OPT_FLAG, "allow a non-loopback --listen without a token"},
    O_HELP, O_END,
};
static const struct option worker_options[] = {
    {"--db", NULL, "URL", OPT_STRING, "the shared store: postgres://... (default: $ORCH_DB)"},
    O_SET, O_CONC,
    {"--budget", NULL, "USD", OPT_USD, "the run's budget, shared by every worker (raises a paused one)"},
    {"--lease-rows", NULL, "N", OPT_COUNT, "rows in a lease, when this worker plans the run (default: 1000)"},
    {"--lease-timeout", NULL, "S", OPT_STRING, "seconds without a heartbeat before a lease is taken back (default: 30)"},
    O_NOCACHE, O_MAXMEM, O_LOGJSON, O_QUIET, O_VERBOSE, O_HELP, O_END,
};
static const struct option no_options[] = {O_HELP, O_END};
/* clang-format on */

/* A command: its arguments, options and help. The one table behind both
 * parsing and `orch help`, so they cannot disagree. */
struct command {
    const char *name;
    const char *args; /* synopsis of the arguments ("RUN_ID | --all") */
    int min_args, max_args;
    const struct option *options;
    const char *summary; /* what it does, one or two lines for `orch help CMD` */
    int raw;             /* 1: argv after the command is passed as it is (lua) */
};

static const struct command commands[] = {
    {"run", "WORKFLOW.lua", 1, 1, run_options,
     "run a workflow; an unfinished run of the same workflow, input and\n"
     "parameters is resumed (--fresh starts a new one); WORKFLOW.lua --help\n"
     "lists the workflow's parameters",
     0},
    {"estimate", "WORKFLOW.lua", 1, 1, estimate_options,
     "tokens and dollars of the workflow's LLM calls (= run --dry-run): offline,\n"
     "an upper bound, storing nothing; with --sample N, N rows run for real\n"
     "(journaled: the run does not pay for them again) for the expected cost",
     0},
    {"params", "WORKFLOW.lua", 1, 1, params_options,
     "the parameters the workflow reads (orch.param): name, default, meaning", 0},
    {"worker", "WORKFLOW.lua", 1, 1, worker_options,
     "join (or start) the run of this workflow, input and parameters as one of\n"
     "many workers sharing a PostgreSQL or Redis store; each claims leases of rows",
     0},
    {"resume", "RUN_ID | --all", 0, 1, resume_options,
     "resume one run, or every interrupted run in the store", 0},
    {"status", "[RUN_ID]", 0, 1, status_options,
     "a run's state, counters and last checkpoint (default: the newest run)", 0},
    {"ls", "", 0, 0, ls_options, "list runs, newest first", 0},
    {"history", "RUN_ID", 1, 1, status_options, "the run's events", 0},
    {"checkpoints", "RUN_ID", 1, 1, status_options, "the run's checkpoints", 0},
    {"export", "RUN_ID", 1, 1, export_options, "the run's output rows, as committed by its last checkpoint",
     0},
    {"stats", "", 0, 0, status_options, "figures of the store: runs, checkpoints, bytes, checkpoint ms", 0},
    {"restore", "RUN_ID CHECKPOINT", 2, 2, restore_options,
     "roll a run back to one of its checkpoints (then orch resume it)", 0},
    {"serve", "", 0, 0, serve_options,
     "a read-only web dashboard of the store's runs, its JSON API and\n"
     "Prometheus /metrics (ends on Ctrl-C)",
     0},
    {"gc", "", 0, 0, gc_options, "remove old finished runs with their checkpoints, results and events", 0},
    {"lua", "SCRIPT.lua [ARG]...", 1, -1, no_options, "run a Lua script with the orch modules available", 1},
    {"version", "", 0, 0, no_options, "print the versions of orch, Lua, libcurl and the store libraries", 0},
    {"help", "[COMMAND]", 0, 1, no_options, "this text, or a command's options", 0},
    {NULL, NULL, 0, 0, NULL, NULL, 0},
};

static const char help_footer[] =
    "status, ls, history, checkpoints, export and stats open the store read-only.\n"
    "exit codes: 0 done, 1 failed, 2 usage or workflow error, 3 paused\n";

static const struct command *find_command(const char *name)
{
    for (const struct command *c = commands; c->name != NULL; c++) {
        if (strcmp(c->name, name) == 0)
            return c;
    }
    return NULL;
}

/* A line of help text being written, wrapped at WRAP columns; lines after
 * the first start at column indent. */
#define WRAP 80
struct wrapped {
    FILE *out;
    int col;
    int indent;
};

static void wrap_word(struct wrapped *w, const char *word)
{
    int len = (int)strlen(word);
    if (w->col + 1 + len > WRAP && w->col > w->indent) {
        fprintf(w->out, "\n%*s", w->indent, "");
        w->col = w->indent;
    } else if (w->col > 0) {
        fputc(' ', w->out);
        w->col++;
    }
    fputs(word, w->out);
    w->col += len;
}

/* "[--db PATH]", "[--set K=V]...", "[-q|--quiet]" into buf. */
static void option_synopsis(const struct option *o, char *buf, size_t n)
{
    snprintf(buf, n, "[%s%s%s%s%s]%s", o->alias != NULL ? o->alias : "", o->alias != NULL ? "|" : "", o->name,
             o->value != NULL ? " " : "", o->value != NULL ? o->value : "", o->kind == OPT_SET ? "..." : "");
}

/* Prints "  NAME ARGS [OPTION]..." wrapped, then its summary indented. */
static void print_command_line(FILE *out, const struct command *c, int with_summary)
{
    struct wrapped w = {out, 0, 8};
    fprintf(out, "  %s", c->name);
    w.col = 2 + (int)strlen(c->name);
    char word[128];
    snprintf(word, sizeof word, "%s", c->args);
    /* arguments as one unit, so "RUN_ID | --all" does not break */
    if (c->args[0] != '\0')
        wrap_word(&w, word);
    for (const struct option *o = c->options; o->name != NULL; o++) {
        if (o->kind == OPT_HELP || strstr(c->args, o->name) != NULL)
            continue; /* every command has --help; "RUN_ID | --all" shows --all already */
        option_synopsis(o, word, sizeof word);
        wrap_word(&w, word);
    }
    fputc('\n', out);
    if (!with_summary)
        return;
    const char *p = c->summary;
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
        fprintf(out, "      %.*s\n", (int)len, p);
        p += len + (nl != NULL);
    }
}

static void print_usage(FILE *out)
{
    fputs("usage: orch <command> [options]     (orch help COMMAND: a command's options)\n\ncommands:\n", out);
    for (const struct command *c = commands; c->name != NULL; c++)
        print_command_line(out, c, 1);
    fputc('\n', out);
    fputs(help_footer, out);
}

static void print_command_help(FILE *out, const struct command *c)
{
    fprintf(out, "usage: orch %s%s%s%s\n\n", c->name, c->args[0] != '\0' ? " " : "", c->args,
            c->options[0].kind == OPT_HELP && c->options[1].name == NULL ? "" : " [options]");
    const char *p = c->summary;
    fprintf(out, "%s\n\noptions:\n", p);
    for (const struct option *o = c->options; o->name != NULL; o++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s%s%s", o->alias != NULL ? o->alias : "",
                 o->alias != NULL ? ", " : "", o->name, o->value != NULL ? " " : "",
                 o->value != NULL ? o->value : "");
        fprintf(out, "  %-22s %s\n", left, o->help);
    }
    fputc('\n', out);
    fputs(help_footer, out);
}

static int usage_error(lua_State *L, const char *fmt, const char *arg)
{
    fprintf(stderr, "orch: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nrun 'orch help' for usage\n");
    lua_pushinteger(L, EXIT_USAGE);
    return 1;
}

/* An option's value that is not what it expects (e.g. "a number from 1 to
 * 100000"): says so, then pushes the exit code of a usage error. */
static int bad_value(lua_State *L, const struct option *o, const char *expects, const char *v)
{
    fprintf(stderr, "orch: %s expects %s, got '%s'\nrun 'orch help' for usage\n", o->name, expects, v);
    lua_pushinteger(L, EXIT_USAGE);
    return 1;
}

/* v as a whole number from lo to hi in *n: 0, or -1 when it is not one. */
static int parse_whole(const char *v, long long lo, long long hi, long long *n)
{
    char *end;
    *n = strtoll(v, &end, 10);
    return *v != '\0' && *end == '\0' && *n >= lo && *n <= hi ? 0 : -1;
}

/* The option of c spelled word[0..len), or NULL. */
static const struct option *find_option(const struct command *c, const char *word, size_t len)
{
    for (const struct option *o = c->options; o->name != NULL; o++) {
        if ((strlen(o->name) == len && strncmp(o->name, word, len) == 0) ||
            (o->alias != NULL && strlen(o->alias) == len && strncmp(o->alias, word, len) == 0))
            return o;
    }
    return NULL;
}

/* Stores one option's value in the options table at opts. Returns 0, or 1
 * after pushing the exit code of a usage error. */
static int store_option(lua_State *L, int opts, const struct option *o, const char *v)
{
    switch (o->kind) {
    case OPT_SET: {
        const char *kv = strchr(v, '=');
        if (kv == NULL || kv == v)
            return usage_error(L, "--set expects key=value, got '%s'", v);
        lua_getfield(L, opts, "set");
        lua_pushlstring(L, v, (size_t)(kv - v));
        lua_pushstring(L, kv + 1);
        lua_settable(L, -3);
        lua_pop(L, 1);
        return 0;
    }
    case OPT_COUNT: {
        long long n;
        if (parse_whole(v, 1, 100000, &n) != 0)
            return bad_value(L, o, "a number from 1 to 100000", v);
        lua_pushinteger(L, (lua_Integer)n);
        break;
    }
    case OPT_USD: {
        char *end;
        double usd = strtod(v, &end);
        if (*v == '\0' || *end != '\0' || !(usd > 0))
            return bad_value(L, o, "a positive number of dollars", v);
        lua_pushnumber(L, usd);
        break;
    }
    case OPT_MB: {
        long long mb;
        if (parse_whole(v, 1, 1LL << 30, &mb) != 0)
            return bad_value(L, o, "a number of MB from 1 up", v);
        /* fixed here, for the whole process: it beats a workflow's max_memory */
        orch_runtime_set_memory_limit(L, (size_t)mb << 20, 1);
        lua_pushinteger(L, (lua_Integer)mb);
        break;
    }
    case OPT_QUIET:
    case OPT_VERBOSE:
        lua_pushinteger(L, o->kind == OPT_QUIET ? -1 : 1);
        lua_setfield(L, opts, "verbosity");
        return 0;
    case OPT_FLAG:
    case OPT_HELP:
        lua_pushboolean(L, 1);
        break;
    case OPT_STRING:
        lua_pushstring(L, v);
        break;
    }
    const char *name = o->name[1] == '-' ? o->name + 2 : o->name + 1;
    luaL_gsub(L, name, "-", "_"); /* "--keep-last" -> keep_last */
    lua_insert(L, -2);
    lua_settable(L, opts);
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
        const struct option *o = find_option(c, a, len);
        if (o == NULL) {
            fprintf(stderr, "orch: %s: unknown option '%s'\nrun 'orch help %s' for its options\n", c->name, a,
                    c->name);
            lua_pushinteger(L, EXIT_USAGE);
            return 1;
        }
        const char *v = NULL;
        if (o->value == NULL) {
            if (eq != NULL) {
                fprintf(stderr, "orch: %s takes no value, got '%s'\nrun 'orch help %s' for its options\n",
                        o->name, a, c->name);
                lua_pushinteger(L, EXIT_USAGE);
                return 1;
            }
        } else if (eq != NULL) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            return usage_error(L, "option '%s' needs a value", a);
        }
        if (store_option(L, opts, o, v) != 0)
            return 1;
    }
    lua_getfield(L, opts, "help");
    int help = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (nargs < c->min_args && !help) {
        fprintf(stderr, "orch: missing argument: orch %s %s\nrun 'orch help %s' for its options\n", c->name,
                c->args, c->name);
        lua_pushinteger(L, EXIT_USAGE);
        return 1;
    }
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

/* orch help [COMMAND]. Leaves an exit code. */
static int help_command(lua_State *L, int argc, char **argv)
{
    if (argc < 3) {
        print_usage(stdout);
        lua_pushinteger(L, 0);
        return 1;
    }
    const struct command *c = find_command(argv[2]);
    if (c == NULL || argc > 3)
        return usage_error(L, "help: no command '%s'", argv[2]);
    print_command_help(stdout, c);
    lua_pushinteger(L, 0);
    return 1;
}

/* Everything runs in here, under one protected call. Leaves an exit code. */
static int pmain(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
    lua_settop(L, 0);
    if (argc < 2) {
        print_usage(stderr);
        lua_pushinteger(L, EXIT_USAGE);
        return 1;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)
        cmd = "help";
    if (strcmp(cmd, "--version") == 0)
        cmd = "version";
    const struct command *c = find_command(cmd);
    if (c == NULL)
        return usage_error(L, "unknown command '%s'", cmd);
    if (strcmp(c->name, "help") == 0)
        return help_command(L, argc, argv);
    if (c->raw) {
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
    if (parse_command(L, c, argc, argv) != 0)
        return 1;
    lua_getfield(L, -1, "help");
    int help = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (help) {
        /* orch run WORKFLOW.lua --help: the workflow's own parameters */
        lua_getfield(L, -1, "args");
        int has_workflow = strcmp(c->name, "run") == 0 && lua_rawlen(L, -1) > 0;
        lua_pop(L, 1);
        if (!has_workflow) {
            print_command_help(stdout, c);
            lua_pushinteger(L, 0);
            return 1;
        }
        call_cli(L, "params");
        return 1;
    }
    call_cli(L, c->name);
    return 1;
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
        fprintf(stderr,
                "orch: warning: only %llu open files allowed (ulimit -n); concurrency above about %llu "
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
