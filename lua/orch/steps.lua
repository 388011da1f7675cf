-- orch.steps: multi-step workflows (a DAG of steps) on the row engine.
--
--   steps = {
--     { name = "search",  run = function(ctx) ... end },
--     { name = "analyse", after = { "search" }, run = function(ctx, inputs) ... inputs.search ... end },
--   }
--
-- Each step becomes a row of the row engine, in a topological order, with
-- one stage that waits for the step's `after` steps, then calls
-- run(ctx, inputs) (inputs: their outputs by name) and stores the result.
-- So steps get everything rows have: concurrency (independent steps run
-- at once), checkpoints and policies, resume, budgets, the LLM journal,
-- on_error (default "fail": the first failing step stops the run; the
-- steps already running finish), observers; a checkpoint follows each
-- step unless `checkpoint` says otherwise. A step's output must be JSON (strings, numbers,
-- booleans, tables): it is kept in ctx.state.steps[name], saved with each
-- checkpoint, so a resumed run gives later steps the outputs of the steps
-- that completed and runs only the others. The output file, when given,
-- gets one line per step: { step = name, output = ... }.
local check = require("orch.check")
local sched = require("orch.sched")

local json = require("orch.json")
local outcome = require("orch.run.outcome")

local M = {}

-- Raises unless out, what step s returned, can be saved as JSON (it goes
-- into ctx.state), naming the step at the line of its run function and,
-- inside a table, where the value JSON cannot hold is.
local function check_output(s, out)
  local t = type(out)
  local what
  if t == "function" or t == "thread" or (t == "userdata" and out ~= json.null) then
    what = "a " .. t
  else
    local ok, err = pcall(json.encode, out)
    if ok then
      return
    end
    local bad, path = tostring(err):match("^cannot encode (.-) at (%S+)$")
    if t == "table" and bad then
      what = string.format("a table holding %s at %s", bad, path)
    else
      what = string.format("a %s that JSON cannot hold (%s)", t, tostring(err))
    end
  end
  local info = debug.getinfo(s.run, "S")
  local at = info.linedefined > 0 and (info.short_src .. ":" .. info.linedefined .. ": ") or ""
  error(string.format("%sstep '%s' returned %s; a step returns JSON values (string, number, boolean, table) or nil",
    at, s.name, what), 0)
end

local step_keys = { name = "string", run = "function", after = "table", critical = "boolean" }

-- Topological order (Kahn, stable in declaration order); raises on a cycle.
local function order(steps, index)
  local indegree, users = {}, {}
  for _, s in ipairs(steps) do
    indegree[s.name] = #(s.after or {})
    for _, dep in ipairs(s.after or {}) do
      users[dep] = users[dep] or {}
      table.insert(users[dep], s.name)
    end
  end
  local out, ready = {}, {}
  for _, s in ipairs(steps) do
    if indegree[s.name] == 0 then
      ready[#ready + 1] = s.name
    end
  end
  while #ready > 0 do
    table.sort(ready, function(a, b)
      return index[a] < index[b]
    end)
    local name = table.remove(ready, 1)
    out[#out + 1] = name
    for _, u in ipairs(users[name] or {}) do
      indegree[u] = indegree[u] - 1
      if indegree[u] == 0 then
        ready[#ready + 1] = u
      end
    end
  end
  if #out < #steps then
    local stuck = {}
    for _, s in ipairs(steps) do
      if indegree[s.name] > 0 then
        stuck[#stuck + 1] = s.name
      end
    end
    check.fail_key("steps", "orch.workflow: steps form a cycle: %s wait for each other", table.concat(stuck, ", "))
  end
  return out
end

--- check(steps) -> the step names in the order they will run; raises a
--- WorkflowError on a malformed list, an unknown `after` or a cycle.
function M.check(steps)
  if type(steps) ~= "table" or #steps == 0 then
    check.fail_key("steps", "orch.workflow: 'steps' must be a list of { name =, run = function(ctx, inputs) }, got %s",
      type(steps) == "table" and "an empty table" or type(steps))
  end
  local index = {}
  for i, s in ipairs(steps) do
    if type(s) ~= "table" then
      check.fail_key("steps", "orch.workflow: steps[%d] must be a table { name =, run = function(ctx, inputs) }, got %s",
        i, type(s))
    end
    check.known_keys("orch.workflow: steps[" .. i .. "]", s, step_keys)
    if type(s.name) ~= "string" or s.name == "" then
      check.fail_key("steps", "orch.workflow: steps[%d] needs a name", i)
    end
    if index[s.name] then
      check.fail_key("steps", "orch.workflow: two steps are named '%s' (steps[%d] and steps[%d])", s.name,
        index[s.name], i)
    end
    if type(s.run) ~= "function" then
      check.fail_key("steps", "orch.workflow: step '%s' needs run = function(ctx, inputs)", s.name)
    end
    index[s.name] = i
  end
  local names = {}
  for _, s in ipairs(steps) do
    names[#names + 1] = s.name
  end
  for _, s in ipairs(steps) do
    for j, dep in ipairs(s.after or {}) do
      if index[dep] == nil then
        local hint = check.suggest(tostring(dep), names)
        check.fail_key("steps", "orch.workflow: step '%s' runs after '%s' (after[%d]), which is not a step%s", s.name,
          tostring(dep), j, hint and (" (did you mean '" .. hint .. "'?)") or "")
      end
      if dep == s.name then
        check.fail_key("steps", "orch.workflow: step '%s' runs after itself", s.name)
      end
    end
  end
  return order(steps, index)
end

--- plan(spec, topo) -> input rows and the one stage that runs a step
--- (see the header). spec: the workflow's table; topo: from check.
function M.plan(spec, topo)
  local by_name = {}
  for _, s in ipairs(spec.steps) do
    by_name[s.name] = s
  end
  local input = {}
  for i, name in ipairs(topo) do
    input[i] = { step = name }
  end
  -- the steps this run has finished, and who waits for what
  local finished, failed, waiters, attempts = {}, {}, {}, {}
  -- why: the error as the row's handler left it ({ msg =, budget | interrupted | tb }).
  local function settle(name, ok, why)
    if ok then
      finished[name] = true
    else
      failed[name] = type(why) == "table" and why or { msg = tostring(why) }
    end
    for _, id in ipairs(waiters[name] or {}) do
      sched.unpark(id)
    end
    waiters[name] = nil
  end
  local function await(name, outputs)
    while not finished[name] and outputs[name] == nil do
      local why = failed[name]
      if why and why.budget then -- not at fault either: stopped the same way, to run on resume
        error(setmetatable({ msg = why.msg }, require("orch.llm").BudgetStop), 0)
      elseif why and why.interrupted then
        error(setmetatable({ msg = why.msg }, sched.Interrupted), 0)
      elseif why then
        error(string.format("step '%s' did not complete: %s", name, tostring(why.msg)), 0)
      end
      waiters[name] = waiters[name] or {}
      table.insert(waiters[name], sched.current())
      sched.park()
    end
  end
  local function run_step(row, ctx)
    local s = by_name[row.step]
    ctx.state.steps = ctx.state.steps or {}
    local outputs = ctx.state.steps
    -- however the step ends, its waiters hear of it; an error keeps its
    -- traceback (the row's handler runs before this closes)
    attempts[s.name] = (attempts[s.name] or 0) + 1
    local guard <close> = setmetatable({}, { __close = function(_, err)
      -- a failure that will be retried leaves the waiters waiting (a step's
      -- failure is final when on_error = orch.retry(n) has no try left, as
      -- the row engine reads on_error); a budget stop or an interrupt is
      -- never retried
      local stopped = type(err) == "table" and (err.budget or err.interrupted)
      if err == nil or stopped or attempts[s.name] > outcome.parse(spec.on_error).retries then
        settle(s.name, err == nil, err)
      end
    end })
    if outputs[s.name] == nil then -- else it completed before a crash: its output was saved
      local inputs = {}
      for _, dep in ipairs(s.after or {}) do
        await(dep, outputs)
        inputs[dep] = outputs[dep]
      end
      if s.critical then
        ctx:checkpoint("before " .. s.name) -- all that is done is durable before it starts
      end
      local out = s.run(ctx, inputs)
      if out == nil then
        out = json.null
      end
      check_output(s, out)
      outputs[s.name] = out
      -- save it now: rows settle in order, and this one may wait behind a
      -- slower step that started before it
      ctx:checkpoint("step " .. s.name)
    end
    row.output = outputs[s.name]
    return row
  end
  return input, { name = "step", run = run_step }
end

return M
