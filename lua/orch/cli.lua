-- orch.cli: the commands behind main.c. Each takes the options table that
-- main.c parsed ({ command =, args = {...}, set = {...}, verbosity =,
-- <option> = value }) and returns the process exit code:
-- 0 done, 1 failed, 2 usage or workflow error, 3 paused.
--
-- This file holds the commands that run workflows (run, estimate, params,
-- resume) and the dispatch: main.c's commands[] names the commands, the
-- table at the end maps each to its handler (tests/spec/cli_spec.lua holds
-- the two to each other). Inspection commands are in orch.cli_inspect,
-- maintenance ones in orch.cli_maint, what they share in orch.cli_base.
local base = require("orch.cli_base")
local check = require("orch.check")
local fmt = require("orch.fmt")
local json = require("orch.json")
local log = require("orch.log")
local runs = require("orch.runs")
local sys = require("orch.sys")

local say, note = base.say, base.note

local M = {}

local function version()
  local v = sys.versions()
  io.stdout:write(string.format("orch %s\nLua %s\nlibcurl %s\n", v.orch, v.lua:gsub("^Lua ", ""), v.curl))
  for _, store in ipairs(v.stores) do
    io.stdout:write(store, "\n")
  end
  return 0
end

-- Message handler for loading a workflow: WorkflowErrors stay as they are
-- (their message already names file:line); anything else gets a traceback.
local function load_handler(e)
  if check.is_error(e) then
    return e
  end
  return debug.traceback(tostring(e), 2)
end

--- Loads and evaluates a workflow file -> workflow | nil, message.
function M.load_workflow(path, params)
  local orch = require("orch")
  orch.params = params or {}
  orch.params_read = {}
  local fh, oerr = io.open(path, "r")
  if fh == nil then
    return nil, "cannot open workflow: " .. tostring(oerr)
  end
  fh:close()
  local chunk, err = loadfile(path, "t")
  if chunk == nil then
    return nil, err
  end
  local ok, wf = xpcall(chunk, load_handler)
  if not ok then
    if check.is_error(wf) then
      check.locate(wf, path)
    end
    return nil, tostring(wf)
  end
  if getmetatable(wf) ~= check.Workflow then
    return nil, string.format("%s: the file must return orch.workflow{...}, but it returned %s", path,
      wf == nil and "nothing" or type(wf))
  end
  return wf
end

-- A command on the workflow named by its first argument: fn(opts, wf,
-- path) once the workflow has loaded with the --set parameters, exit 2
-- (its error said) when it does not.
local function on_workflow(fn)
  return function(opts)
    local path = opts.args[1]
    local wf, err = M.load_workflow(path, opts.set)
    if wf == nil then
      say(err)
      return 2
    end
    return fn(opts, wf, path)
  end
end

-- The --set keys the workflow just loaded never read with orch.param,
-- each warned about with the names it does read. -> the number warned
local function warn_unread_params(set)
  local read = require("orch").params_read or {}
  local names = {}
  for _, p in ipairs(read) do
    names[#names + 1] = p.name
  end
  table.sort(names)
  local keys = {}
  for k in pairs(set or {}) do
    if read[k] == nil then
      keys[#keys + 1] = k
    end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local guess = check.suggest(k, names)
    base.warn(string.format("warning: --set %s=%s: the workflow reads no parameter '%s' (it reads: %s)%s", k,
      set[k], k, #names > 0 and table.concat(names, ", ") or "none",
      guess and string.format("; did you mean --set %s=%s?", guess, set[k]) or ""))
  end
  return #keys
end
M.warn_unread_params = warn_unread_params

-- The estimate `orch estimate --sample` stored for the run, or nil. The
-- estimate module (the largest a run would otherwise load) is loaded only
-- when the run's events hold one.
local function stored_estimate(st, run_id)
  for _, ev in ipairs(st:event_list(run_id) or {}) do
    if ev.type == "estimate" then
      return require("orch.estimate").stored(st, run_id)
    end
  end
  return nil
end

-- Runs a loaded workflow as a new or resumed run. -> exit code
local function execute(st, wf, path, params, opts, resume_id)
  local rlog = log.new(opts.verbosity or 0, opts.log_json)
  local ident = runs.identify(wf, path, params)
  local run, ckpt_or_err, code = runs.begin(st, ident, { resume_id = resume_id, fresh = opts.fresh, db = opts.db },
    rlog)
  if run == nil then
    say(ckpt_or_err)
    return code or 2
  end
  rlog = log.new(opts.verbosity or 0, opts.log_json, run.id)
  local est = stored_estimate(st, run.id)
  local warning = est and require("orch.estimate").budget_warning(est, opts.budget or (wf.budget and wf.budget.max_usd))
  if warning then -- before any spending
    rlog(-1, "warning: by the estimate of this run: " .. warning, "warn")
  end
  if ckpt_or_err ~= nil or run.recoveries and run.recoveries > 0 then
    rlog(0, string.format("resuming run %s from checkpoint %d (%s rows done)", run.id,
      ckpt_or_err and ckpt_or_err.seq or 0, fmt.count(ckpt_or_err and ckpt_or_err.input_index or 0)))
  else
    rlog(1, "started run " .. run.id)
  end
  return require("orch.run").rows(wf, {
    budget = opts.budget,
    no_cache = opts.no_cache,
    fresh = opts.fresh,
    concurrency = opts.concurrency,
    db = opts.db, -- named when a full disk pauses the run
    verbosity = opts.verbosity,
    log_json = opts.log_json,
    metrics = opts.metrics, -- a file for node_exporter (orch.metrics)
    store = st,
    run = run,
    checkpoint = ckpt_or_err,
    estimate = est, -- read now: the summary shows it beside the actual without reading every event
  })
end

-- The offline pass of an estimate (see orch.estimate.prepare): the
-- workflow runs in memory, its LLM offline, and the report is printed.
-- -> exit code, the run's finish event (nil when it did not run: said)
local function offline_pass(opts, wf, path)
  local dir = os.tmpname() -- a unique name; the sinks create the directory
  os.remove(dir)
  local e, report = require("orch.estimate").prepare(wf, dir, opts.sample ~= nil)
  local code = base.with_store({ db = ":memory:" }, function(st)
    return execute(st, e, path, opts.set, { verbosity = -1, concurrency = opts.concurrency })
  end)
  for _, name in ipairs({ "output", "errors" }) do
    os.remove(dir .. "/" .. name)
  end
  os.remove(dir)
  local ran, finish = report(note)
  if not ran then
    say("the estimate could not run the workflow (exit " .. tostring(code) .. ")")
  end
  return code, ran and finish or nil
end

--- estimate: runs the workflow offline, in memory, and prints what its LLM
--- calls would cost at most; with --sample N, then runs N rows for real
--- for the expected cost (see orch.estimate). An input of more rows than
--- orch.estimate.FULL_PASS_ROWS (counted by a scan) runs offline only
--- for its sampled rows. -> exit code
local function estimate(opts, wf, path)
  if (opts.spread and not opts.sample) or (opts.seed and not opts.spread) then
    say("--spread goes with --sample N (N rows drawn through the input), and --seed S with --spread")
    return 2
  elseif opts.sample and wf.steps then
    say(string.format("--sample runs N rows of a workflow's input; %s has steps (a DAG), which run whole: "
      .. "orch estimate %s without --sample gives their upper bound", path, path))
    return 2
  end
  warn_unread_params(opts.set)
  local est = require("orch.estimate")
  local total = opts.sample and est.row_count(wf)
  local big = total and total > est.FULL_PASS_ROWS
  if big then
    note(string.format("%s: %s rows (counted by a scan of the input), more than %s: the offline pass runs the "
      .. "sampled rows only", wf.name, fmt.count(total), fmt.count(est.FULL_PASS_ROWS)))
    local err
    wf, err = est.sampled(wf, total, opts)
    if wf == nil then
      say(err)
      return 2
    end
  end
  local code, finish = offline_pass(opts, wf, path)
  if finish == nil then
    return code
  elseif not opts.sample then
    local max_usd = opts.budget or (wf.budget and wf.budget.max_usd)
    if max_usd and finish.cost_usd > max_usd then
      base.warn(string.format("warning: the upper bound %s passes the budget %s; --sample N gives the expected cost",
        fmt.usd(finish.cost_usd), fmt.usd(max_usd)))
    end
    return code
  elseif code ~= 0 then
    say("the offline pass ended with exit " .. tostring(code) .. "; no sample was run")
    return code
  end
  if big then -- the sampled rows' bound, scaled to the input
    finish = { rows = total, cost_usd = finish.cost_usd * total / math.max(finish.rows, 1), scaled = true }
  end
  -- loaded afresh: the offline pass has read the input (an iterator is spent)
  local fresh, err = M.load_workflow(path, opts.set)
  if fresh == nil then
    say(err)
    return 2
  end
  local clash = require("orch.paths").check_run(fresh, path, runs.db_path(opts))
  if clash then
    say(clash)
    return 2
  end
  return est.sample(opts, fresh, path, finish, note, base.warn)
end

-- orch worker (orch.worker): many workers, one run.
local function worker(opts, wf, path)
  return require("orch.worker").command(opts, wf, path)
end

local function run(opts, wf, path)
  if opts.dry_run then
    return estimate(opts, wf, path)
  elseif opts.sample or opts.spread or opts.seed then
    say("--sample, --spread and --seed go with --dry-run (or orch estimate): the sample runs before the run")
    return 2
  end
  local clash = require("orch.paths").check_run(wf, path, runs.db_path(opts))
  if clash then -- before the store is opened, which would write to the file
    say(clash)
    return 2
  end
  warn_unread_params(opts.set)
  return base.with_store(opts, function(st)
    return execute(st, wf, path, opts.set, opts)
  end)
end

-- A parameter's default or --set value as params shows it: "-" for none,
-- strings quoted.
local function shown(v)
  if v == nil then
    return "-"
  end
  return type(v) == "string" and string.format("%q", v) or tostring(v)
end

--- params: loads the workflow offline (evaluating the file, running
--- nothing) and lists the parameters it reads with orch.param. -> exit code
local function params(opts, wf, path)
  local list = {}
  for i, p in ipairs(require("orch").params_read) do
    list[i] = { name = p.name, default = p.default, description = p.description, value = opts.set[p.name] }
  end
  if opts.json then
    base.print_json(setmetatable(list, { __jsontype = "array" }))
  elseif #list == 0 then
    io.stdout:write(string.format("%s (workflow %s) reads no parameters\n", path, wf.name))
  else
    io.stdout:write(string.format("%s (workflow %s) reads these parameters; set them with --set NAME=VALUE\n", path,
      wf.name))
    local any_set = next(opts.set) ~= nil
    local header = any_set and { "NAME", "DEFAULT", "SET TO", "DESCRIPTION" } or { "NAME", "DEFAULT", "DESCRIPTION" }
    local rows = {}
    for i, p in ipairs(list) do
      rows[i] = { p.name, shown(p.default) }
      if any_set then
        rows[i][3] = shown(p.value)
      end
      rows[i][#rows[i] + 1] = p.description or "-"
    end
    fmt.columns(io.stdout, header, rows)
  end
  warn_unread_params(opts.set)
  return 0
end

-- How a run started: the directory its workflow's relative paths are
-- relative to, and the workflow path as it was given.
local function run_origin(st, r)
  for _, ev in ipairs(st:event_list(r.id) or {}) do
    if ev.type == "started" and ev.data then
      local ok, d = pcall(json.decode, ev.data)
      if ok and type(d) == "table" then
        return d.cwd, d.workflow
      end
    end
  end
end

local function resume_one(st, r, opts)
  local cwd, given = run_origin(st, r)
  local workers = require("orch.worker").is_worker_run(r)
  if cwd and cwd ~= sys.realpath(".") then
    local ok, err = sys.chdir(cwd)
    if not ok then
      say(string.format("run %s started in %s, which is gone: %s", r.id, cwd, err))
      return 2
    end
  end
  local ok, p = pcall(json.decode, r.params or "{}")
  p = ok and type(p) == "table" and p or {}
  local path = r.workflow_path
  if given and sys.realpath(given) == r.workflow_path then
    path = given
  end
  local wf, err = M.load_workflow(path, p)
  if wf == nil then
    say(string.format("cannot resume run %s: %s", r.id, err))
    return 2
  end
  local clash = require("orch.paths").check_run(wf, path, runs.db_path(opts))
  if clash then
    say(string.format("cannot resume run %s: %s", r.id, clash))
    return 2
  end
  if workers then -- a worker run is resumed by joining it as a worker (a new --budget holds for all)
    local wopts = setmetatable({ set = p, resume_run = r.id }, { __index = opts })
    return require("orch.worker").command(wopts, wf, path)
  end
  return execute(st, wf, path, p, opts, r.id)
end

-- Every interrupted run in the store, one after another. -> the worst exit code
local function resume_all(st, opts)
  local list, err, left = runs.interrupted(st, opts.budget ~= nil)
  if list == nil then
    say(err)
    return 1
  end
  for _, r in ipairs(left) do
    note(string.format("left alone: %s (%s, %s rows done) is paused by its budget (%s); give it a higher one: "
      .. "orch resume %s%s --budget USD", r.id, r.name, fmt.count(r.rows_done), r.error or "budget", r.id,
      opts.db and (" --db " .. runs.shell_quote(opts.db)) or ""))
  end
  if #list == 0 then
    note("no interrupted runs in " .. runs.db_path(opts)
      .. (#left > 0 and string.format(" to resume without --budget (%d paused by their budget)", #left) or ""))
  end
  local here = sys.realpath(".")
  local code = 0
  for i, r in ipairs(list) do
    note(string.format("resuming %d/%d: %s (%s, %s rows done)", i, #list, r.id, r.status, fmt.count(r.rows_done)))
    local c = resume_one(st, r, opts)
    sys.chdir(here)
    if c > code then
      code = c
    end
  end
  return code
end

local function resume(opts)
  if (opts.args[1] == nil) == (not opts.all) then
    say("resume takes a run id or --all")
    return 2
  end
  return base.with_store(opts, function(st)
    if opts.all then
      return resume_all(st, opts)
    end
    local r, err = st:run_get(opts.args[1])
    if r == nil then
      say(err or string.format("no run '%s' in %s", opts.args[1], runs.db_path(opts)))
      return 2
    end
    return resume_one(st, r, opts)
  end, "w")
end

--- orch lua SCRIPT [ARG]...: runs a script with `arg` set as lua.c does.
local function script(args)
  _G.arg = args
  local chunk, err = loadfile(args[0])
  if chunk == nil then
    say(err)
    return 2
  end
  local ok, res = xpcall(chunk, function(e)
    return debug.traceback(tostring(e), 2)
  end, table.unpack(args, 1, #args))
  if not ok then
    say(res)
    return 1
  end
  return math.type(res) == "integer" and res or 0
end

-- The handler of each command in main.c's commands[] ("lua" runs script;
-- "help" is main.c's own). Each first sets up the command's log.
-- The inspection and maintenance commands load their module when run, so
-- `orch run` carries neither.
local function from(module, name)
  return function(opts)
    return require(module)[name](opts)
  end
end
local inspect, maint = "orch.cli_inspect", "orch.cli_maint"
local handlers = {
  run = on_workflow(run), worker = on_workflow(worker), estimate = on_workflow(estimate), params = on_workflow(params), resume = resume, version = version, script = script,
  status = from(inspect, "status"), ls = from(inspect, "ls"), history = from(inspect, "history"),
  checkpoints = from(inspect, "checkpoints"), export = from(inspect, "export"), stats = from(inspect, "stats"),
  gc = from(maint, "gc"), restore = from(maint, "restore"),
  serve = function(opts)
    return require("orch.serve").command(opts)
  end,
}
for name, fn in pairs(handlers) do
  M[name] = function(opts)
    base.use(opts)
    return fn(opts)
  end
end

return M
