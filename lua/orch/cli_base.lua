-- orch.cli_base: what every command of orch.cli shares: the CLI's log
-- (say, note, warn: every message a command writes on stderr goes through
-- it, so --log-json covers them), opening the store for a command, finding
-- the run it names, and reading times and lists the same way everywhere.
local fmt = require("orch.fmt")
local json = require("orch.json")
local now_ms = require("orch.store").now_ms
local log = require("orch.log")
local runs = require("orch.runs")
local sys = require("orch.sys")

local M = {}

local current = log.new(0, false)

--- use(opts): the log of the command about to run, from its options:
--- --log-json makes it JSON lines. The CLI's own messages (refusals,
--- notes, summaries) are what a command is for, so -q does not silence
--- them; -v lets debug ones through.
function M.use(opts)
  current = log.new(math.max(opts.verbosity or 0, 0), opts.log_json == true)
end

--- say(msg): a problem (level error); note(msg): a plain message (info);
--- warn(msg): a warning.
function M.say(msg)
  current(-1, msg, "error")
end
function M.note(msg)
  current(0, msg, "info")
end
function M.warn(msg)
  current(-1, msg, "warn")
end

-- Opens the store (its error said, and what it warns about at open). ->
-- store | nil
local function open_store(opts, mode)
  local st, err = runs.open(opts, mode)
  if st == nil then
    M.say(err)
  elseif st:warning() then
    M.warn("warning: " .. st:warning())
  end
  return st
end

--- with_store(opts, fn [, mode]) -> fn's exit code, or 2 when the store
--- cannot be opened (said). mode "r": inspection, read-only, never
--- creating the store; "w": an existing store only; nil: created when
--- missing. The store is a to-be-closed variable: closed however fn ends,
--- and an error in fn goes on up untouched, its traceback taken where it
--- was raised (no pcall here to cut it short).
function M.with_store(opts, fn, mode)
  local path = runs.db_path(opts)
  if mode == "w" and path ~= ":memory:" and not path:find("://", 1, true) and sys.stat(path) == nil then
    -- resume, restore and gc change a store, but only one that is there
    M.say(string.format("no state store at %s (no run has used it; check --db or ORCH_DB)", path))
    return 2
  end
  local st <close> = open_store(opts, mode == "r" and "r" or nil)
  if st == nil then
    return 2
  end
  return (fn(st))
end

--- get_run(st, opts, id) -> the run | nil (said: no such run).
function M.get_run(st, opts, id)
  local run, err = st:run_get(id)
  if run == nil then
    M.say(err or string.format("no run '%s' in %s", id, runs.db_path(opts)))
  end
  return run
end

--- run_command(opts, fn, mode): a command about the run named by its first
--- argument: fn(st, run), or exit 2 when there is no such run.
function M.run_command(opts, fn, mode)
  return M.with_store(opts, function(st)
    local run = M.get_run(st, opts, opts.args[1])
    if run == nil then
      return 2
    end
    return fn(st, run)
  end, mode)
end

--- print_json(v): v as one line of JSON on stdout.
function M.print_json(v)
  io.stdout:write(json.encode(v), "\n")
end

--- print_list(opts, list, header, row_of) -> 0: list as a JSON array
--- (--json) or as aligned columns, row_of(item) giving each row's values.
function M.print_list(opts, list, header, row_of)
  if opts.json then
    M.print_json(setmetatable(list, { __jsontype = "array" }))
    return 0
  end
  local rows = {}
  for i, x in ipairs(list) do
    rows[i] = row_of(x)
  end
  fmt.columns(io.stdout, header, rows)
  return 0
end

--- count(n) -> "1,234": fmt.count, nil read as 0.
function M.count(n)
  return fmt.count(n or 0)
end

--- The statuses a run can have, for checking --status.
M.STATUSES = { pending = 1, running = 1, paused = 1, completed = 1, failed = 1 }

--- parse_time(s) -> ms | nil: "2026-11-25", "2026-11-25T10:00:00" (local
--- time), or "3d" / "12h" / "30m" ago. Dates that do not exist are nil.
function M.parse_time(s)
  local n, unit = s:match("^(%d+)([dhm])$")
  if n then
    local mult = ({ d = 86400, h = 3600, m = 60 })[unit]
    return now_ms() - tonumber(n) * mult * 1000
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

return M
