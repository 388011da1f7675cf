-- orch.observe: observers, the run's event bus.
--
-- An observer is a function(ev) or a table of handlers on_start, on_row,
-- on_checkpoint, on_event, on_finish (each function(ev)); ev.type says which:
--
--   start       run_id, name, resumed, rows_done
--   row         seq, key, status ("ok", "failed", "dropped", "defaulted"), error,
--               usage (the row's LLM calls, tokens, cost, by model and stage; nil: none)
--   checkpoint  seq, reason, rows, output_bytes, ms
--   event       name, data, row (ctx:emit, budget_warning, concurrency)
--   finish      run_id, status, rows, ok, failed, dropped, cost_usd, tokens, llm_calls, seconds,
--               cost_by_model, cost_by_stage
--
-- Observers run in the row driver, in the order given; they see rows in
-- input order, as they settle. One that raises is reported (with its
-- traceback) and switched off; the run goes on.
local check = require("orch.check")
local json = require("orch.json")
local sched = require("orch.sched")

local M = {}

local Observer = { __name = "orch.Observer" }
M.Observer = Observer

local types = { "start", "row", "checkpoint", "event", "finish" }

-- The handler of `t` in observer o, or nil.
local function handler(o, t)
  if type(o) == "function" then
    return o
  end
  return o["on_" .. t]
end

--- bus(list, log) -> { notify = function(ev), wants = { [type] = bool } }
--- list: the workflow's observers (checked by M.check); log(rank, msg).
function M.bus(list, log)
  local live = {}
  for i, o in ipairs(list or {}) do
    live[i] = { o = o, name = type(o) == "table" and o.name or ("observer " .. i) }
    if getmetatable(o) == Observer and o.use_log then
      o.use_log(log) -- the built-ins write through the run's log (text or --log-json)
    end
  end
  local wants = {}
  for _, t in ipairs(types) do
    for _, l in ipairs(live) do
      if handler(l.o, t) then
        wants[t] = true
      end
    end
  end
  local bus = { wants = wants }
  function bus.notify(ev)
    for _, l in ipairs(live) do
      local h = not l.off and handler(l.o, ev.type)
      if h then
        local ok, err = xpcall(h, debug.traceback, ev)
        if not ok then
          l.off = true
          log(0, string.format("%s failed on a %s event and is switched off: %s", l.name, ev.type, tostring(err)),
            "warn")
        end
      end
    end
  end
  return bus
end

--- check(list): raises a WorkflowError unless list is a list of observers.
function M.check(list)
  if type(list) ~= "table" then
    check.fail_key("observers", "orch.workflow: 'observers' must be a list of observers, got %s", type(list))
  end
  for i, o in ipairs(list) do
    local ok = type(o) == "function"
    if type(o) == "table" then
      ok = false
      for k, v in pairs(o) do
        if type(k) == "string" and k:match("^on_") then
          local known = false
          for _, t in ipairs(types) do
            known = known or k == "on_" .. t
          end
          if not known then
            check.fail_key("observers", "orch.workflow: observers[%d] has an unknown handler '%s' (handlers: "
              .. "on_start, on_row, on_checkpoint, on_event, on_finish)", i, k)
          end
          if type(v) ~= "function" then
            check.fail_key("observers", "orch.workflow: observers[%d].%s must be a function, got %s", i, k, type(v))
          end
          ok = true
        end
      end
    end
    if not ok then
      check.fail_key("observers", "orch.workflow: observers[%d] must be a function(ev) or a table of on_start, "
        .. "on_row, on_checkpoint, on_event, on_finish handlers, got %s", i, type(o))
    end
  end
end

-- Built-in observers ----------------------------------------------------

-- The options table of a built-in (argument n), {} when none was given.
local function options(fname, n, opts)
  if opts == nil then
    return {}
  end
  check.arg_type(fname, n, opts, "table")
  return opts
end

-- say(msg) for a built-in, and use_log(log) that the bus calls: a plain
-- text log until then, the run's log (text or --log-json) after.
local function sayer()
  local log = require("orch.log").new(0)
  local function say(msg)
    log(0, msg)
  end
  return say, function(l)
    log = l
  end
end

--- progress{ every = 10 }: a line on stderr every `every` seconds (for logs
--- and pipes; a TTY also gets the live progress bar).
function M.progress(opts)
  opts = options("orch.observe.progress", 1, opts)
  check.known_keys("orch.observe.progress", opts, { every = "number" })
  local every = opts.every or 10
  local rows, failed, last, t0 = 0, 0, nil, nil
  local say, use_log = sayer()
  return setmetatable({
    name = "orch.observe.progress",
    use_log = use_log,
    on_start = function(ev)
      rows, t0, last = ev.rows_done, sched.now(), sched.now()
    end,
    on_row = function(ev)
      rows = rows + 1
      if ev.status == "failed" then
        failed = failed + 1
      end
      local now = sched.now()
      if now - last >= every then
        last = now
        say(string.format("progress: %d rows, %d failed, %.0f rows/s", rows, failed, rows / math.max(now - t0, 1e-3)))
      end
    end,
  }, Observer)
end

--- cost(): at the end, the cost and tokens per model and per stage.
function M.cost(opts)
  check.known_keys("orch.observe.cost", options("orch.observe.cost", 1, opts), {})
  local say, use_log = sayer()
  return setmetatable({
    name = "orch.observe.cost",
    use_log = use_log,
    on_finish = function(ev)
      for _, group in ipairs({ { "model", ev.cost_by_model }, { "stage", ev.cost_by_stage } }) do
        local names = {}
        for n in pairs(group[2] or {}) do
          names[#names + 1] = n
        end
        table.sort(names)
        for _, n in ipairs(names) do
          local g = group[2][n]
          say(string.format("cost by %s: %s: %d calls, %d tokens, $%.4f", group[1], n, g.calls, g.tokens, g.cost))
        end
      end
    end,
  }, Observer)
end

--- jsonl(path [, { rows = false }]): every event as one JSON line, appended
--- to path (rows too when rows = true).
function M.jsonl(path, opts)
  check.arg_type("orch.observe.jsonl", 1, path, "string")
  opts = options("orch.observe.jsonl", 2, opts)
  check.known_keys("orch.observe.jsonl", opts, { rows = "boolean" })
  local f
  local function write(ev)
    if f == nil then
      f = assert(io.open(path, "a"))
    end
    f:write(json.encode(ev), "\n")
    if ev.type == "finish" or ev.type == "checkpoint" then
      f:flush()
    end
  end
  local o = {
    name = "orch.observe.jsonl",
    path = path, -- for orch.paths: a file of its own
    defined_at = check.where(),
    on_start = write,
    on_checkpoint = write,
    on_event = write,
    on_finish = function(ev)
      write(ev)
      f:close()
      f = nil
    end,
  }
  if opts.rows then
    o.on_row = write
  end
  return setmetatable(o, Observer)
end

return M
