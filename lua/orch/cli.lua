-- orch.cli: the commands behind main.c. Each takes the options table that
-- main.c parsed ({ command =, args = {...}, set = {...}, verbosity =,
-- <option> = value }) and returns the process exit code:
-- 0 done, 1 failed, 2 usage or workflow error, 3 paused.
local check = require "orch.check"
local json = require "orch.json"
local runs = require "orch.runs"
local sys = require "orch.sys"
local store = require "orch.store"
local fmt_usd = require("orch.fmt").usd

local M = {}

local log_json = false -- --log-json of run, resume: messages as JSON lines too

local function emit(level, ...)
  if log_json then
    io.stderr:write(require("orch.json").encode({ ts_ms = store.now_ms(), level = level, msg = table.concat({ ... }) },
      { "ts_ms", "level", "msg" }), "\n")
  else
    io.stderr:write("orch: ", ...)
    io.stderr:write("\n")
  end
end

-- A problem to report; note: a plain message.
local function say(...)
  emit("error", ...)
end
local function note(...)
  emit("info", ...)
end

function M.version()
  local v = sys.versions()
  io.stdout:write(string.format("orch %s\nLua %s\nlibcurl %s\nSQLite %s\n", v.orch, v.lua:gsub("^Lua ", ""),
    v.curl, v.sqlite))
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
  local orch = require "orch"
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
    emit("warn", string.format("warning: --set %s=%s: the workflow reads no parameter '%s' (it reads: %s)%s", k,
      set[k], k, #names > 0 and table.concat(names, ", ") or "none",
      guess and string.format("; did you mean --set %s=%s?", guess, set[k]) or ""))
  end
  return #keys
end
M.warn_unread_params = warn_unread_params

local function open_store(opts, mode)
  local st, err = runs.open(opts, mode)
  if st == nil then
    say(err)
  end
  return st
end

-- Opens the store (its error said, exit 2), runs fn(st) and closes the
-- store however fn ends. mode "r": inspection, read-only, never creating
-- the store; "w": an existing store only; nil: created when missing.
-- -> fn's exit code
local function with_store(opts, fn, mode)
  local path = runs.db_path(opts)
  if mode == "w" and path ~= ":memory:" and not path:find("://", 1, true) and sys.stat(path) == nil then
    -- resume, restore and gc change a store, but only one that is there
    say(string.format("no state store at %s (no run has used it; check --db or ORCH_DB)", path))
    return 2
  end
  local st = open_store(opts, mode == "r" and "r" or nil)
  if st == nil then
    return 2
  end
  local ok, code = pcall(fn, st)
  st:close()
  if not ok then
    error(code, 0)
  end
  return code
end

-- Runs a loaded workflow as a new or resumed run. -> exit code
local function execute(st, wf, path, params, opts, resume_id)
  local log = require("orch.run").logger(opts.verbosity or 0, opts.log_json)
  local ident = runs.identify(wf, path, params)
  local run, ckpt_or_err, code = runs.begin(st, ident, { resume_id = resume_id, fresh = opts.fresh, db = opts.db },
    log)
  if run == nil then
    say(ckpt_or_err)
    return code or 2
  end
  log = require("orch.run").logger(opts.verbosity or 0, opts.log_json, run.id)
  if ckpt_or_err ~= nil or run.recoveries and run.recoveries > 0 then
    log(0, string.format("resuming run %s from checkpoint %d (%s rows done)", run.id,
      ckpt_or_err and ckpt_or_err.seq or 0, require("orch.run").fmt_count(ckpt_or_err and ckpt_or_err.input_index or 0)))
  else
    log(1, "started run " .. run.id)
  end
  return require("orch.run").rows(wf, {
    budget = opts.budget,
    no_cache = opts.no_cache,
    fresh = opts.fresh,
    concurrency = opts.concurrency,
    db = opts.db, -- named when a full disk pauses the run
    verbosity = opts.verbosity,
    log_json = opts.log_json,
    store = st,
    run = run,
    checkpoint = ckpt_or_err,
  })
end

--- estimate: runs the workflow offline, in memory, and prints what its LLM
--- calls would cost (see orch.estimate). -> exit code
function M.estimate(opts)
  local path = opts.args[1]
  local wf, err = M.load_workflow(path, opts.set)
  if wf == nil then
    say(err)
    return 2
  end
  warn_unread_params(opts.set)
  local dir = os.tmpname() -- a unique name; the sinks create the directory
  os.remove(dir)
  local e, report = require("orch.estimate").prepare(wf, dir)
  local code = with_store({ db = ":memory:" }, function(st)
    return execute(st, e, path, opts.set, { verbosity = -1, concurrency = opts.concurrency })
  end)
  for _, name in ipairs({ "output", "errors" }) do
    os.remove(dir .. "/" .. name)
  end
  os.remove(dir)
  local printed = report(function(msg)
    io.stderr:write("orch: ", msg, "\n")
  end)
  if not printed then
    say("the estimate could not run the workflow (exit " .. tostring(code) .. ")")
  end
  return code
end

function M.run(opts)
  log_json = opts.log_json
  local path = opts.args[1]
  if opts.dry_run then
    return M.estimate(opts)
  end
  local wf, err = M.load_workflow(path, opts.set)
  if wf == nil then
    say(err)
    return 2
  end
  local clash = require("orch.paths").check_run(wf, path, runs.db_path(opts))
  if clash then -- before the store is opened, which would write to the file
    say(clash)
    return 2
  end
  warn_unread_params(opts.set)
  return with_store(opts, function(st)
    return execute(st, wf, path, opts.set, opts)
  end)
end

--- params: loads the workflow offline (evaluating the file, running
--- nothing) and lists the parameters it reads with orch.param. -> exit code
function M.params(opts)
  local path = opts.args[1]
  local wf, err = M.load_workflow(path, opts.set)
  if wf == nil then
    say(err)
    return 2
  end
  local read = require("orch").params_read
  local list = {}
  for i, p in ipairs(read) do
    local value = opts.set[p.name]
    list[i] = { name = p.name, default = p.default, description = p.description, value = value }
  end
  if opts.json then
    io.stdout:write(json.encode(setmetatable(list, { __jsontype = "array" })), "\n")
  elseif #list == 0 then
    io.stdout:write(string.format("%s (workflow %s) reads no parameters\n", path, wf.name))
  else
    io.stdout:write(string.format("%s (workflow %s) reads these parameters; set them with --set NAME=VALUE\n", path,
      wf.name))
    local any_set = next(opts.set) ~= nil
    local rows = { any_set and { "NAME", "DEFAULT", "SET TO", "DESCRIPTION" } or { "NAME", "DEFAULT", "DESCRIPTION" } }
    for _, p in ipairs(list) do
      local d = p.default == nil and "-" or type(p.default) == "string" and string.format("%q", p.default)
        or tostring(p.default)
      local r = { p.name, d }
      if any_set then
        r[#r + 1] = p.value and string.format("%q", p.value) or "-"
      end
      r[#r + 1] = p.description or "-"
      rows[#rows + 1] = r
    end
    local n = #rows[1]
    local widths = {}
    for _, r in ipairs(rows) do
      for i = 1, n do
        widths[i] = math.max(widths[i] or 0, #r[i])
      end
    end
    for _, r in ipairs(rows) do
      local parts = {}
      for i = 1, n do
        parts[i] = i == n and r[i] or string.format("%-" .. widths[i] .. "s", r[i])
      end
      io.stdout:write(table.concat(parts, "  "), "\n")
    end
  end
  warn_unread_params(opts.set)
  return 0
end

-- How a run started: the directory its workflow's relative paths are
-- relative to, and the workflow path as it was given.
local function run_origin(st, run)
  for _, ev in ipairs(st:event_list(run.id) or {}) do
    if ev.type == "started" and ev.data then
      local ok, d = pcall(json.decode, ev.data)
      if ok and type(d) == "table" then
        return d.cwd, d.workflow
      end
    end
  end
end

local function resume_one(st, run, opts)
  local cwd, given = run_origin(st, run)
  if cwd and cwd ~= sys.realpath(".") then
    local ok, err = sys.chdir(cwd)
    if not ok then
      say(string.format("run %s started in %s, which is gone: %s", run.id, cwd, err))
      return 2
    end
  end
  local ok, params = pcall(json.decode, run.params or "{}")
  params = ok and type(params) == "table" and params or {}
  local path = run.workflow_path
  if given and sys.realpath(given) == run.workflow_path then
    path = given
  end
  local wf, err = M.load_workflow(path, params)
  if wf == nil then
    say(string.format("cannot resume run %s: %s", run.id, err))
    return 2
  end
  local clash = require("orch.paths").check_run(wf, path, runs.db_path(opts))
  if clash then
    say(string.format("cannot resume run %s: %s", run.id, clash))
    return 2
  end
  return execute(st, wf, path, params, opts, run.id)
end

-- Every interrupted run in the store, one after another. -> the worst exit code
local function resume_all(st, opts)
  local list, err, left = runs.interrupted(st, opts.budget ~= nil)
  if list == nil then
    say(err)
    return 1
  end
  for _, run in ipairs(left) do
    note(string.format("left alone: %s (%s, %s rows done) is paused by its budget (%s); give it a higher one: "
      .. "orch resume %s%s --budget USD", run.id, run.name, require("orch.run").fmt_count(run.rows_done),
      run.error or "budget", run.id, opts.db and (" --db " .. runs.shell_quote(opts.db)) or ""))
  end
  if #list == 0 then
    note("no interrupted runs in " .. runs.db_path(opts)
      .. (#left > 0 and string.format(" to resume without --budget (%d paused by their budget)", #left) or ""))
  end
  local here = sys.realpath(".")
  local code = 0
  for i, run in ipairs(list) do
    note(string.format("resuming %d/%d: %s (%s, %s rows done)", i, #list, run.id, run.status,
      require("orch.run").fmt_count(run.rows_done)))
    local c = resume_one(st, run, opts)
    sys.chdir(here)
    if c > code then
      code = c
    end
  end
  return code
end

function M.resume(opts)
  log_json = opts.log_json
  if (opts.args[1] == nil) == (not opts.all) then
    say("resume takes a run id or --all")
    return 2
  end
  return with_store(opts, function(st)
    if opts.all then
      return resume_all(st, opts)
    end
    local run, err = st:run_get(opts.args[1])
    if run == nil then
      say(err or string.format("no run '%s' in %s", opts.args[1], runs.db_path(opts)))
      return 2
    end
    return resume_one(st, run, opts)
  end, "w")
end

-- Inspection -----------------------------------------------------------

local function when(ms)
  if ms == nil or ms == 0 then
    return "-"
  end
  return os.date("%Y-%m-%d %H:%M:%S", ms // 1000)
end

local function ago(ms)
  local s = (store.now_ms() - ms) / 1000
  if s < 120 then
    return string.format("%.0f s ago", s)
  elseif s < 7200 then
    return string.format("%.0f min ago", s / 60)
  end
  return string.format("%.1f h ago", s / 3600)
end

-- Prints rows as aligned columns.
local function table_print(header, rows)
  local widths = {}
  for i, h in ipairs(header) do
    widths[i] = #h
  end
  for _, r in ipairs(rows) do
    for i, v in ipairs(r) do
      widths[i] = math.max(widths[i], #tostring(v))
    end
  end
  local function line(r)
    local parts = {}
    for i, v in ipairs(r) do
      parts[i] = i == #r and tostring(v) or string.format("%-" .. widths[i] .. "s", tostring(v))
    end
    io.stdout:write(table.concat(parts, "  "), "\n")
  end
  line(header)
  for _, r in ipairs(rows) do
    line(r)
  end
end

local function print_json(v)
  io.stdout:write(json.encode(v), "\n")
end


local function get_run(st, opts, id)
  local run, err = st:run_get(id)
  if run == nil then
    say(err or string.format("no run '%s' in %s", id, runs.db_path(opts)))
  end
  return run
end

local fmt = function(n)
  return require("orch.run").fmt_count(n or 0)
end

-- Prints a list as JSON (--json) or as aligned columns. -> 0
local function print_list(opts, list, header, row_of)
  if opts.json then
    print_json(setmetatable(list, { __jsontype = "array" }))
    return 0
  end
  local rows = {}
  for i, x in ipairs(list) do
    rows[i] = row_of(x)
  end
  table_print(header, rows)
  return 0
end

-- A command about the run named by the first argument: fn(st, run), or
-- exit 2 when there is no such run.
local function run_command(opts, fn, mode)
  return with_store(opts, function(st)
    local run = get_run(st, opts, opts.args[1])
    if run == nil then
      return 2
    end
    return fn(st, run)
  end, mode)
end

function M.status(opts)
  return with_store(opts, function(st)
    local run
    if opts.args[1] then
      run = get_run(st, opts, opts.args[1])
    else
      local list, lerr = st:run_list({})
      if list == nil then
        say(lerr)
        return 1
      end
      run = list[1]
      if run == nil then
        if opts.json then
          io.stdout:write("null\n")
        else
          io.stdout:write("no runs yet in " .. runs.db_path(opts) .. "\n")
        end
        return 0
      end
    end
    if run == nil then
      return 2
    end
    local cps = st:checkpoint_list(run.id) or {}
    local last = cps[#cps]
    if opts.json then
      run.last_checkpoint = last
      print_json(run)
      return 0
    end
    local live = (run.status == "running") and runs.owner_alive(run, store.now_ms())
    local lines = {
      { "run", run.id },
      { "workflow", string.format("%s (%s)", run.name, run.workflow_path) },
      { "status", run.status .. (run.status == "running" and not live and " (owner gone: resume it)" or "")
        .. (run.error and (" — " .. run.error) or "") },
      { "rows", string.format("%s settled: %s ok, %s failed, %s dropped%s", fmt(run.rows_done), fmt(run.rows_ok),
        fmt(run.rows_failed), fmt(run.rows_dropped),
        run.rows_defaulted > 0 and (", " .. fmt(run.rows_defaulted) .. " defaulted") or "") },
      { "llm", string.format("%s calls, %s tokens, %s", fmt(run.llm_calls), fmt(run.tokens_in + run.tokens_out),
        fmt_usd(run.cost_usd)) },
      { "input", run.input },
      { "output", run.output or "-" },
      { "owner", string.format("pid %d on %s, heartbeat %s", run.owner_pid, run.owner_host or "?",
        ago(run.heartbeat_ms)) },
      { "created", when(run.created_ms) },
      { "finished", when(run.finished_ms) },
      { "recoveries", tostring(run.recoveries) },
      { "checkpoints", last and string.format("%d, last #%d (%s) at row %s, %.2f ms", #cps, last.seq, last.reason,
        fmt(last.input_index), last.duration_ms) or "none" },
    }
    if run.status == "paused" or (run.status == "running" and not live) then
      local budget = run.status == "paused" and (run.error or ""):find("^budget") and " --budget USD" or ""
      lines[#lines + 1] = { "resume", "orch resume " .. run.id .. (opts.db and (" --db " .. runs.shell_quote(opts.db))
        or "") .. budget }
    end
    for _, l in ipairs(lines) do
      io.stdout:write(string.format("%-12s %s\n", l[1], l[2]))
    end
    return 0
  end, "r")
end

-- "2026-11-25", "2026-11-25T10:00:00", "3d" / "12h" / "30m" (ago) -> ms
local function parse_time(s)
  local n, unit = s:match("^(%d+)([dhm])$")
  if n then
    local mult = ({ d = 86400, h = 3600, m = 60 })[unit]
    return store.now_ms() - tonumber(n) * mult * 1000
  end
  local y, mo, d, rest = s:match("^(%d%d%d%d)-(%d%d)-(%d%d)(.*)$")
  if y == nil then
    return nil
  end
  local H, Mi, S = rest:match("^[T ](%d%d):(%d%d):?(%d*)$")
  if rest ~= "" and (H == nil or (S ~= "" and #S ~= 2)) then
    return nil
  end
  local fields = { year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = tonumber(H or 0),
    min = tonumber(Mi or 0), sec = tonumber(S ~= "" and S or 0) or 0 }
  if fields.hour > 23 or fields.min > 59 or fields.sec > 59 then
    return nil
  end
  local year, month, day = fields.year, fields.month, fields.day
  -- os.time normalises 2026-13-45 into a later date (in the table too):
  -- a real date survives the round trip
  local t = os.time(fields)
  local back = t and os.date("*t", t)
  if back == nil or back.year ~= year or back.month ~= month or back.day ~= day then
    return nil
  end
  return t * 1000
end

function M.ls(opts)
  local filter = { status = opts.status, name = opts.name }
  for _, k in ipairs({ "since", "until" }) do
    if opts[k] then
      local ms = parse_time(opts[k])
      if ms == nil then
        say(string.format("--%s: '%s' is not a date or time (2026-11-25, 2026-11-25T10:00:00, 3d, 12h or 30m)", k,
        opts[k]))
        return 2
      end
      filter[k .. "_ms"] = ms
    end
  end
  if opts.status and not ({ pending = 1, running = 1, paused = 1, completed = 1, failed = 1 })[opts.status] then
    say("--status must be pending, running, paused, completed or failed, got '" .. opts.status .. "'")
    return 2
  end
  return with_store(opts, function(st)
    local list, err = st:run_list(filter)
    if list == nil then
      say(err)
      return 1
    end
    return print_list(opts, list, { "ID", "NAME", "STATUS", "ROWS", "COST", "CREATED" }, function(r)
      return { r.id, r.name, r.status, fmt(r.rows_done), fmt_usd(r.cost_usd), when(r.created_ms) }
    end)
  end, "r")
end

--- gc: removes finished runs (with their checkpoints, results, events and
--- state) older than --older-than (30d), of the statuses --status
--- (completed,failed), keeping the newest --keep-last of each workflow;
--- --journal also drops journal entries older than that, --vacuum shrinks
--- the file, --dry-run only lists. Running and paused runs are kept unless
--- --status names them (running only when its owner is gone).
function M.gc(opts)
  local cutoff = parse_time(opts.older_than or "30d")
  if cutoff == nil then
    say(string.format("--older-than: '%s' is not an age or a time (30d, 12h, 30m, 2026-11-25)", opts.older_than))
    return 2
  end
  local statuses = {}
  for name in (opts.status or "completed,failed"):gmatch("[^,]+") do
    if not ({ pending = 1, running = 1, paused = 1, completed = 1, failed = 1 })[name] then
      say("--status must list pending, running, paused, completed or failed, got '" .. name .. "'")
      return 2
    end
    statuses[name] = true
  end
  local keep = tonumber(opts.keep_last or 0)
  if keep == nil or keep < 0 or math.type(keep) == "float" and keep ~= math.floor(keep) then
    say("--keep-last must be a whole number, got '" .. tostring(opts.keep_last) .. "'")
    return 2
  end
  return with_store(opts, function(st)
    local list, err = st:run_list({})
    if list == nil then
      say(err)
      return 1
    end
    local kept_per_name, doomed = {}, {}
    for _, r in ipairs(list) do -- newest first
      kept_per_name[r.name] = (kept_per_name[r.name] or 0)
      local last = r.finished_ms and r.finished_ms > 0 and r.finished_ms or r.updated_ms or r.created_ms
      local live = r.status == "running" and r.owner_host == sys.hostname() and sys.alive(r.owner_pid or 0)
      if kept_per_name[r.name] < keep then
        kept_per_name[r.name] = kept_per_name[r.name] + 1
      elseif statuses[r.status] and last < cutoff and not live then
        doomed[#doomed + 1] = r
      end
    end
    local before = st:stats().bytes
    local removed, by_status = 0, {}
    for _, r in ipairs(doomed) do
      if opts.dry_run then
        print(string.format("would remove %s  %s  %s  %s rows  %s", r.id, r.name, r.status, fmt(r.rows_done),
          when(r.created_ms)))
      else
        local ok, derr = st:run_delete(r.id)
        if ok == nil then
          say(derr)
          return 1
        end
      end
      removed = removed + 1
      by_status[r.status] = (by_status[r.status] or 0) + 1
    end
    local pruned = 0
    if opts.journal and not opts.dry_run then
      local n, jerr = st:journal_prune(cutoff)
      if n == nil then
        say(jerr)
        return 1
      end
      pruned = n
    end
    if opts.vacuum and not opts.dry_run then
      local ok, verr = st:vacuum()
      if not ok then
        say(verr)
        return 1
      end
    end
    local parts = {}
    for _, name in ipairs({ "completed", "failed", "paused", "running", "pending" }) do
      if by_status[name] then
        parts[#parts + 1] = by_status[name] .. " " .. name
      end
    end
    io.stderr:write(string.format("orch: gc: %s %d run(s)%s%s; store %s -> %s bytes\n",
      opts.dry_run and "would remove" or "removed", removed,
      #parts > 0 and (" (" .. table.concat(parts, ", ") .. ")") or "",
      opts.journal and string.format(", %d journal entr%s", pruned, pruned == 1 and "y" or "ies") or "",
      fmt(before), fmt(st:stats().bytes)))
    return 0
  end, "w")
end

function M.history(opts)
  return run_command(opts, function(st, run)
    return print_list(opts, st:event_list(run.id) or {}, { "TIME", "EVENT", "DATA" }, function(e)
      return { when(e.ts_ms), e.type, e.data or "" }
    end)
  end, "r")
end

function M.checkpoints(opts)
  return run_command(opts, function(st, run)
    return print_list(opts, st:checkpoint_list(run.id) or {},
      { "SEQ", "CREATED", "REASON", "ROWS", "OUTPUT BYTES", "STORED BYTES", "MS", "CHECKSUM" }, function(c)
        return { c.seq, when(c.created_ms), c.reason, fmt(c.input_index), fmt(c.output_offset), fmt(c.bytes),
          string.format("%.2f", c.duration_ms), c.valid and "ok" or "CORRUPT" }
      end)
  end, "r")
end

-- Export ---------------------------------------------------------------

-- order: the columns, when known; else the first row's keys, sorted.
local function csv_writer(fh, order)
  local oio = require "orch.io"
  local cols = order
  return function(row)
    if cols == nil then
      cols = {}
      for k in pairs(row) do
        cols[#cols + 1] = k
      end
      table.sort(cols)
    end
    if order ~= false then
      order = false
      fh:write(oio.csv_line(cols, #cols))
    end
    local vals = {}
    for i, c in ipairs(cols) do
      vals[i] = row[c]
    end
    fh:write(oio.csv_line(vals, #cols))
  end
end

function M.export(opts)
  local format = opts.format or "jsonl"
  if format ~= "jsonl" and format ~= "csv" then
    say("--format must be jsonl or csv, got '" .. format .. "'")
    return 2
  end
  return run_command(opts, function(st, run)
    local cps = st:checkpoint_list(run.id) or {}
    local last = cps[#cps]
    -- The committed output must still be there, whole, before -o is written:
    -- the rows themselves are not kept in the store to rebuild it from.
    if run.output ~= nil then
      local want = last and last.output_offset or 0
      local fst = sys.stat(run.output)
      local redo = runs.rerun_command(run, opts.db)
      if fst == nil then
        say(string.format("cannot export run %s: its output %s is gone (deleted or moved), and the store keeps "
          .. "only the rows' status, not the rows; put the file back, or run the workflow again: %s", run.id,
          run.output, redo))
        return 1
      elseif fst.size < want then
        say(string.format("cannot export run %s: its output %s has %s bytes, fewer than the %s its last checkpoint "
          .. "committed (truncated or overwritten since); put the file back, or run the workflow again: %s",
          run.id, run.output, fmt(fst.size), fmt(want), redo))
        return 1
      end
    end
    local fh = io.stdout
    if opts.o then
      local ferr
      fh, ferr = io.open(opts.o, "w")
      if fh == nil then
        say("cannot write " .. tostring(ferr))
        return 2
      end
    end
    -- the columns of a CSV export of a JSONL output: its first line's keys,
    -- in its order (the input's columns, then new fields)
    local order
    if format == "csv" and run.output ~= nil and not run.output:match("%.csv$") then
      local f = io.open(run.output, "rb")
      local first = f and f:read("l")
      if f then
        f:close()
      end
      local ok, _, keys = pcall(json.decode, first or "", true)
      order = ok and keys or nil
    end
    local emit = format == "csv" and csv_writer(fh, order) or function(row, keys)
      fh:write(json.encode(row, keys), "\n")
    end
    if run.output == nil then
      -- no output file: export the per-row results
      st:each_result(run.id, function(r)
        emit({ row = r.seq, key = r.key, status = r.status, error = r.error })
      end)
    else
      local limit = last and last.output_offset or 0
      local src = io.open(run.output, "rb")
      if src == nil then
        say(string.format("the output of run %s, %s, is gone", run.id, run.output))
        return 1
      end
      local is_csv = run.output:match("%.csv$") ~= nil
      if (format == "csv") == is_csv then
        local left = limit
        while left > 0 do
          local chunk = src:read(math.min(left, 65536))
          if chunk == nil then
            break
          end
          fh:write(chunk)
          left = left - #chunk
        end
      elseif is_csv then
        src:close()
        local r = require("orch.reader").open(run.output, "csv")
        local header = r:header()
        while true do
          local row, _, _, _, e = r:next()
          if row == nil or (e and e > limit) then
            break
          end
          if row then
            emit(row, header)
          end
        end
        r:close()
        src = nil
      else
        local used = 0
        for line in src:lines() do
          used = used + #line + 1
          if used > limit then
            break
          end
          emit(json.decode(line))
        end
      end
      if src then
        src:close()
      end
    end
    if fh ~= io.stdout then
      fh:close()
    end
    return 0
  end, "r")
end

function M.stats(opts)
  return with_store(opts, function(st)
    local s, err = st:stats()
    if s == nil then
      say(err)
      return 1
    end
    if opts.json then
      print_json(s)
      return 0
    end
    local lines = {
      { "store", runs.db_path(opts) },
      { "runs", string.format("%s total: %s active, %s paused, %s failed, %s completed", fmt(s.runs), fmt(s.active),
        fmt(s.paused), fmt(s.failed), fmt(s.completed)) },
      { "checkpoints", fmt(s.checkpoints) },
      { "checkpoint", string.format("%.2f ms mean, %.2f ms max", s.checkpoint_mean_ms, s.checkpoint_max_ms) },
      { "recoveries", fmt(s.recoveries) },
      { "journal", string.format("%s LLM responses, %s answered again from it, %s saved", fmt(s.journal_entries),
        fmt(s.journal_hits), fmt_usd(s.journal_saved_usd)) },
      { "bytes", fmt(s.bytes) },
    }
    for _, l in ipairs(lines) do
      io.stdout:write(string.format("%-12s %s\n", l[1], l[2]))
    end
    return 0
  end, "r")
end

--- orch restore RUN CHECKPOINT: drops the checkpoints after CHECKPOINT
--- (and the results written with them) and leaves the run paused; the
--- next resume truncates the output and seeks the input back to it.
function M.restore(opts)
  local seq = math.tointeger(tonumber(opts.args[2]))
  if seq == nil or seq < 1 then
    say("restore: CHECKPOINT must be a checkpoint number (see orch checkpoints RUN), got '" .. opts.args[2] .. "'")
    return 2
  end
  return run_command(opts, function(st, run)
    if runs.owner_alive(run, store.now_ms()) and run.status == "running" then
      say(string.format("run %s is in progress in process %d on %s; stop it before restoring", run.id,
        run.owner_pid, run.owner_host or "?"))
      return 2
    end
    local c, err = st:checkpoint_get(run.id, seq)
    if c == nil then
      say(err or string.format("run %s has no checkpoint %d (see orch checkpoints %s)", run.id, seq, run.id))
      return 2
    end
    if not c.valid then
      say(string.format("checkpoint %d of run %s fails its checksum; pick an earlier one", seq, run.id))
      return 2
    end
    local ok, rerr = st:checkpoint_rollback(run.id, seq)
    if not ok then
      say(rerr)
      return 1
    end
    run.status, run.error, run.finished_ms = "paused", "restored to checkpoint " .. seq, 0
    run.rows_done = c.input_index
    -- the figures as of that checkpoint, as the resume will count them
    local mok, m = pcall(json.decode, c.memento or "")
    if mok and type(m) == "table" and type(m.counts) == "table" then
      local counts, totals = m.counts or {}, m.totals or {}
      run.rows_ok, run.rows_failed = counts.ok or 0, counts.failed or 0
      run.rows_dropped, run.rows_defaulted = counts.dropped or 0, counts.defaulted or 0
      run.llm_calls, run.tokens_in, run.tokens_out = totals.llm_calls or 0, totals.tokens_in or 0, totals.tokens_out or 0
      run.cost_usd = totals.cost or run.cost_usd
    end
    st:run_update(run)
    st:event_add(run.id, "restored", json.encode({ checkpoint = seq, rows_done = c.input_index }))
    say(string.format("run %s restored to checkpoint %d (%s rows done); resume with: orch resume %s", run.id, seq,
      fmt(c.input_index), run.id))
    return 0
  end, "w")
end

--- orch lua SCRIPT [ARG]...: runs a script with `arg` set as lua.c does.
function M.script(args)
  _G.arg = args
  local chunk, err = loadfile(args[0])
  if chunk == nil then
    io.stderr:write("orch: ", err, "\n")
    return 2
  end
  local ok, res = xpcall(chunk, function(e)
    return debug.traceback(tostring(e), 2)
  end, table.unpack(args, 1, #args))
  if not ok then
    io.stderr:write("orch: ", res, "\n")
    return 1
  end
  return math.type(res) == "integer" and res or 0
end

return M
