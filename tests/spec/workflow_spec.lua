-- workflow_spec.lua -- orch.workflow validation (orch.check), orch.param/env,
-- and orch.cli.load_workflow error reporting.
local orch = require("orch")
local check = require("orch.check")
local cli = require("orch.cli")

-- This file's name as Lua reports it in messages ("tests/spec/workflow_spec.lua").
local SELF = debug.getinfo(1, "S").short_src

local h = require("helpers")
local here = h.line -- the line it is called from

local function noop(row)
  return row
end

local ROWS = { { id = 1, text = "a" } }

-- A valid workflow description; `over` replaces keys (orch.NIL-free: use
-- the string "nil" to delete a key).
local function base(over)
  local t = { name = "t", input = ROWS, stages = { noop } }
  for k, v in pairs(over or {}) do
    if v == "nil" then
      t[k] = nil
    else
      t[k] = v
    end
  end
  return t
end

-- Runs f, which must raise a WorkflowError; returns it.
local function catch(f)
  local e = h.catch(f)
  assert.is_true(check.is_error(e), "expected a WorkflowError, got " .. type(e) .. ": " .. tostring(e))
  return e
end

-- Asserts that e is a WorkflowError whose message is exactly SELF:line: msg.
local function assert_error_at(line, msg, e)
  assert.is_true(check.is_error(e))
  assert.are.equal(SELF .. ":" .. line .. ": " .. msg, tostring(e))
end

local KEYS = "budget, burst_timeout, checkpoint, concurrency, description, errors, input, key, llm, max_memory, name, observers, on_error, "
  .. "output, stages, steps"

describe("orch.workflow", function()
  describe("accepts", function()
    it("a minimal workflow and returns the same table, marked as a workflow", function()
      local spec = base()
      local wf = orch.workflow(spec)
      assert.are.equal(spec, wf)
      assert.are.equal(check.Workflow, getmetatable(wf))
    end)

    it("every supported key with a valid value", function()
      local wf = orch.workflow {
        name = "full",
        description = "all keys",
        input = orch.read.csv("in.csv"),
        output = orch.write.jsonl("out.jsonl"),
        errors = orch.write.jsonl("errors.jsonl"),
        key = "id",
        llm = { provider = "mock", model = "mock", latency_ms = 0, jitter_ms = 0, concurrency = 4,
          temperature = 0, max_tokens = 10, system = "be brief", prices = { mock = { 1, 2 } } },
        concurrency = 8,
        on_error = orch.retry(2, orch.default { label = "unknown" }),
        stages = { orch.stage.prompt { template = "{{text}}", into = "label" }, noop },
      }
      assert.are.equal("full", wf.name)
      assert.are.equal("in.csv", wf.input.path)
      assert.are.equal("read", wf.input.io)
      assert.are.equal("csv", wf.input.kind)
      assert.are.equal("write", wf.output.io)
      assert.are.equal("jsonl", wf.output.kind)
    end)

    it("input as an iterator function, key as a function, on_error skip/fail/default", function()
      assert.has_no.errors(function()
        orch.workflow(base { input = function() return nil end, key = function(r) return r.id end })
        orch.workflow(base { on_error = "skip" })
        orch.workflow(base { on_error = "fail" })
        orch.workflow(base { on_error = orch.default(function(row) return row end) })
        orch.workflow(base { on_error = orch.retry(100, "fail") })
      end)
    end)

    it("a plain { name =, run = function } table as a stage, as orch.stage documents", function()
      -- lua/orch/stage.lua: "A stage is a function(row, ctx) -> row ... or a
      -- table { name =, run = function(row, ctx) }", and orch.run executes such
      -- a table; orch.workflow should not refuse it.
      local ok, e = pcall(orch.workflow, base { stages = { { name = "upper", run = noop } } })
      assert.is_true(ok, tostring(e))
    end)
  end)

  describe("unknown keys", function()
    it("are a WorkflowError at the caller's line, naming the key, with a suggestion", function()
      local at = here() + 2
      local e = catch(function()
        local wf = orch.workflow {
          name = "t",
          inptu = ROWS,
          stages = { noop },
        }
        return wf
      end)
      assert_error_at(at, "orch.workflow: unknown key 'inptu' (did you mean 'input'?); expected one of: " .. KEYS, e)
      assert.are.equal("inptu", e.key)
      assert.is_true(e.located)
    end)

    it("suggest by edit distance, case-insensitively", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { Stages = {} }) return wf end)
      assert_error_at(at, "orch.workflow: unknown key 'Stages' (did you mean 'stages'?); expected one of: " .. KEYS, e)
      e = catch(function() local wf = orch.workflow(base { on_eror = "skip" }) return wf end)
      assert.truthy(tostring(e):find("unknown key 'on_eror' (did you mean 'on_error'?)", 1, true))
      e = catch(function() local wf = orch.workflow(base { concurency = 3 }) return wf end)
      assert.truthy(tostring(e):find("(did you mean 'concurrency'?)", 1, true))
    end)

    it("without a plausible suggestion just list the keys", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { zzzzzzzz = 1 }) return wf end)
      assert_error_at(at, "orch.workflow: unknown key 'zzzzzzzz'; expected one of: " .. KEYS, e)
    end)

    it("include non-string keys (a positional entry)", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { [1] = "oops" }) return wf end)
      assert_error_at(at, "orch.workflow: unexpected entry [1]; expected named keys (" .. KEYS .. ")", e)
    end)

    it("check.suggest picks the closest name and rejects far ones", function()
      assert.are.equal("input", check.suggest("inptu", { "input", "name" }))
      assert.are.equal("mock", check.suggest("mok", { "anthropic", "mock", "openai" }))
      assert.are.equal("name", check.suggest("nmae", { "name", "stages" }))
      assert.is_nil(check.suggest("xyz", { "input", "stages" }))
    end)
  end)

  -- A misspelled key in any table a workflow is made of is refused at the
  -- line that wrote it, with a suggestion: one case per kind of table.
  describe("misspelled keys in nested tables", function()
    it("a stage table { name =, run =, critical = }", function()
      local at = here() + 2
      local e = catch(function()
        local wf = orch.workflow(base { stages = { noop, { name = "s", run = noop, critcal = true } } })
        return wf
      end)
      assert_error_at(at, "orch.workflow: stages[2]: unknown key 'critcal' (did you mean 'critical'?); expected one "
        .. "of: critical, name, run", e)
      assert.are.equal("critcal", e.key)
    end)

    it("a stage table's types are checked too", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { stages = { { run = noop, critical = "yes" } } }) return wf end)
      assert_error_at(at, "orch.workflow: stages[1]: 'critical' must be a boolean, got string", e)
    end)

    it("orch.stage.prompt{...}", function()
      local at = here() + 1
      local e = catch(function() local st = orch.stage.prompt { template = "{{text}}", critcal = true } return st end)
      assert_error_at(at, "orch.stage.prompt: unknown key 'critcal' (did you mean 'critical'?); expected one of: "
        .. "critical, into, json, max_tokens, model, name, schema, system, temperature, template", e)
    end)

    it("a step", function()
      local at = here() + 2
      local e = catch(function()
        local wf = orch.workflow { name = "d", steps = { { name = "a", run = noop, critcal = true } } }
        return wf
      end)
      assert_error_at(at, "orch.workflow: steps[1]: unknown key 'critcal' (did you mean 'critical'?); expected one of: "
        .. "after, critical, name, run", e)
    end)

    it("llm (orch.llm.check_config)", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { llm = { provider = "mock", modle = "m" } }) return wf end)
      assert_error_at(at, "orch.workflow: llm: unknown key 'modle' (did you mean 'model'?); expected one of: "
        .. "concurrency, jitter_ms, latency_ms, max_tokens, model, prices, provider, system, temperature", e)
    end)

    it("budget", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { budget = { max_usd = 1, warn = { 0.5 } } }) return wf end)
      assert_error_at(at, "orch.workflow: budget: unknown key 'warn' (did you mean 'warn_at'?); expected one of: "
        .. "max_usd, warn_at", e)
    end)

    it("orch.policy.adaptive{...}", function()
      local at = here() + 1
      local e = catch(function() local p = orch.policy.adaptive { max_intervl = 60 } return p end)
      assert_error_at(at, "orch.policy.adaptive: unknown key 'max_intervl' (did you mean 'max_interval'?); expected "
        .. "one of: max_interval, max_rows, max_usd, min_interval, mtbf, target", e)
    end)

    it("orch.policy.on_events{...} and any{...} take lists, not named keys", function()
      local at = here() + 1
      local e = catch(function() local p = orch.policy.on_events { "a", evnts = "b" } return p end)
      assert_error_at(at, "orch.policy.on_events{...}: unexpected key 'evnts'; it takes a list of event names", e)
      at = here() + 1
      e = catch(function() local p = orch.policy.any { orch.policy.every_rows(1), every = 2 } return p end)
      assert_error_at(at, "orch.policy.any{...}: unexpected key 'every'; it takes a list of policies", e)
    end)

    it("orch.policy.every_rows and every_seconds take a number, not a table", function()
      local at = here() + 1
      local e = catch(function() local p = orch.policy.every_rows { n = 5 } return p end)
      assert_error_at(at, "orch.policy.every_rows(n) expects a positive integer, got table", e)
      at = here() + 1
      e = catch(function() local p = orch.policy.every_seconds { seconds = 5 } return p end)
      assert_error_at(at, "orch.policy.every_seconds(seconds) expects a positive number, got table", e)
    end)

    it("orch.observe.progress, jsonl and cost options", function()
      local at = here() + 1
      local e = catch(function() local o = orch.observe.progress { evry = 5 } return o end)
      assert_error_at(at, "orch.observe.progress: unknown key 'evry' (did you mean 'every'?); expected one of: every", e)
      at = here() + 1
      e = catch(function() local o = orch.observe.jsonl("ev.jsonl", { row = true }) return o end)
      assert_error_at(at, "orch.observe.jsonl: unknown key 'row' (did you mean 'rows'?); expected one of: rows", e)
      at = here() + 1
      e = catch(function() local o = orch.observe.cost { by_stage = true } return o end)
      assert_error_at(at, "orch.observe.cost: unknown key 'by_stage'; it takes no options", e)
      at = here() + 1
      e = catch(function() local o = orch.observe.progress(10) return o end)
      assert_error_at(at, "orch.observe.progress: argument 1 must be a table, got number", e)
    end)

    it("orch.read.* and orch.write.* options", function()
      local at = here() + 1
      local e = catch(function() local w = orch.write.csv("o.csv", { colums = { "a" } }) return w end)
      assert_error_at(at, "orch.write.csv: unknown key 'colums' (did you mean 'columns'?); expected one of: columns", e)
      at = here() + 1
      e = catch(function() local r = orch.read.jsonl("i.jsonl", { strict = true }) return r end)
      assert_error_at(at, "orch.read.jsonl: unknown key 'strict'; it takes no options", e)
    end)
  end)

  describe("wrong types", function()
    it("name must be a string", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { name = 42 }) return wf end)
      assert_error_at(at, "orch.workflow: 'name' must be a string, got number 42", e)
      assert.are.equal("name", e.key)
    end)

    it("input must be a table or a function", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { input = "in.csv" }) return wf end)
      assert_error_at(at, "orch.workflow: 'input' must be a table or function, got string", e)
    end)

    it("input rows must be tables", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { input = { { a = 1 }, "b" } }) return wf end)
      assert_error_at(at, "orch.workflow: input[2] must be a table (a row), got string", e)
      assert.are.equal("input", e.key)
    end)

    it("stages must be a table", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { stages = noop }) return wf end)
      assert_error_at(at, "orch.workflow: 'stages' must be a table, got function", e)
    end)

    it("key must be a string or a function", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { key = 1 }) return wf end)
      assert_error_at(at, "orch.workflow: 'key' must be a string or function, got number 1", e)
    end)

    it("llm must be a table", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { llm = "mock" }) return wf end)
      assert_error_at(at, "orch.workflow: 'llm' must be a table, got string", e)
    end)

    it("concurrency must be an integer of at least 1", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { concurrency = 0 }) return wf end)
      assert_error_at(at, "orch.workflow: 'concurrency' must be at least 1, got 0", e)
    end)

    it("burst_timeout must be a positive number of seconds", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { burst_timeout = -1 }) return wf end)
      assert_error_at(at, "orch.workflow: 'burst_timeout' must be a positive number of seconds, got -1", e)
      at = here() + 1
      e = catch(function() local wf = orch.workflow(base { burst_timeout = "10" }) return wf end)
      assert_error_at(at, "orch.workflow: 'burst_timeout' must be a number, got string", e)
    end)

    it("a fractional concurrency is refused in plain English", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { concurrency = 2.5 }) return wf end)
      assert_error_at(at, "orch.workflow: 'concurrency' must be an integer, got number 2.5", e)
    end)

    it("the argument must be a table", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow("name") return wf end)
      assert_error_at(at, "orch.workflow expects a table {...}, got string", e)
    end)

    it("output must be an orch.write.* value, located at the orch.workflow call", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { output = orch.read.csv("x.csv") }) return wf end)
      assert_error_at(at, "orch.workflow: 'output': expected orch.write.jsonl(path) or orch.write.csv(path), got table", e)
      assert.are.equal("output", e.key)
    end)

    it("input given as an orch.write.* value is refused, located at the orch.workflow call", function()
      local at = here() + 2
      local e = catch(function()
        local wf = orch.workflow(base { input = orch.write.jsonl("x.jsonl") })
        return wf
      end)
      assert_error_at(at, "orch.workflow: 'input': expected orch.read.csv(path) or orch.read.jsonl(path), got table", e)
    end)

    it("output given as a plain string names the type", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { output = "out.jsonl" }) return wf end)
      assert_error_at(at, "orch.workflow: 'output' must be a table, got string", e)
    end)
  end)

  describe("required keys", function()
    it("name is required", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { name = "nil" }) return wf end)
      assert_error_at(at, "orch.workflow: 'name' is required (a string that identifies the workflow)", e)
      e = catch(function() local wf = orch.workflow(base { name = "" }) return wf end)
      assert.truthy(tostring(e):find("'name' is required", 1, true))
    end)

    it("input is required", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { input = "nil" }) return wf end)
      assert_error_at(at, "orch.workflow: 'input' is required: orch.read.csv(path), orch.read.jsonl(path), a table of "
        .. "rows or an iterator function", e)
    end)

    it("stages is required and must not be empty", function()
      local msg = "orch.workflow: 'stages' is required: a list of functions(row, ctx) or orch.stage.* values"
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { stages = "nil" }) return wf end)
      assert_error_at(at, msg, e)
      at = here() + 1
      e = catch(function() local wf = orch.workflow(base { stages = {} }) return wf end)
      assert_error_at(at, msg, e)
    end)
  end)

  describe("stages", function()
    it("stages[2] must be a function or an orch.stage value", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { stages = { noop, "upper" } }) return wf end)
      assert_error_at(at, "orch.workflow: stages[2] must be a function(row, ctx), an orch.stage.* value or a table { name =, run = function(row, ctx) }, got string", e)
      assert.are.equal("stages", e.key)
    end)

    it("stages must be a list", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { stages = { noop, extra = noop } }) return wf end)
      assert_error_at(at, "orch.workflow: 'stages' must be a list, found key extra", e)
    end)

    it("a stage.prompt needs an llm", function()
      local at = here() + 2
      local e = catch(function()
        local wf = orch.workflow(base { stages = { noop, orch.stage.prompt { template = "{{text}}", into = "label" } } })
        return wf
      end)
      assert_error_at(at, "orch.workflow: stages[2] (prompt -> label) calls an LLM but the workflow has no "
        .. "llm = { provider = ... }", e)
    end)

    it("a named stage.prompt is named in the message", function()
      local e = catch(function()
        local wf = orch.workflow(base { stages = { orch.stage.prompt { template = "x", name = "classify" } } })
        return wf
      end)
      assert.truthy(tostring(e):find("stages[1] (classify) calls an LLM", 1, true))
    end)
  end)

  describe("llm", function()
    it("an unknown provider suggests the closest one", function()
      local at = here() + 2
      local e = catch(function()
        local wf = orch.workflow(base { llm = { provider = "mok" } })
        return wf
      end)
      assert.is_true(check.is_error(e))
      local prefix = SELF .. ":" .. at .. ": orch.workflow: llm.provider 'mok' is not available (did you mean 'mock'?); available: "
      assert.are.equal(prefix, tostring(e):sub(1, #prefix))
      assert.truthy(tostring(e):find("mock", #prefix + 1, true))
      assert.are.equal("provider", e.key)
    end)

    it("a provider far from any name gets no suggestion", function()
      local e = catch(function() local wf = orch.workflow(base { llm = { provider = "zzzzzzzzzzzz" } }) return wf end)
      assert.truthy(tostring(e):find("llm.provider 'zzzzzzzzzzzz' is not available; available: ", 1, true))
    end)

    it("provider is required", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { llm = { model = "mock" } }) return wf end)
      local prefix = SELF .. ":" .. at .. ": orch.workflow: llm.provider is required (one of: "
      assert.are.equal(prefix, tostring(e):sub(1, #prefix))
      assert.are.equal("llm", e.key)
    end)

    it("an unknown llm option is refused with a suggestion, listing the provider's options", function()
      local at = here() + 2
      local e = catch(function()
        local wf = orch.workflow(base { llm = { provider = "mock", latency = 5 } })
        return wf
      end)
      assert_error_at(at, "orch.workflow: llm: unknown key 'latency' (did you mean 'latency_ms'?); expected one of: "
        .. "concurrency, jitter_ms, latency_ms, max_tokens, model, prices, provider, system, temperature", e)
      assert.are.equal("latency", e.key)
    end)

    it("llm option types are checked", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { llm = { provider = "mock", latency_ms = "5" } }) return wf end)
      assert_error_at(at, "orch.workflow: llm: 'latency_ms' must be a number, got string", e)
    end)
  end)

  describe("budget", function()
    it("takes max_usd and warn_at fractions", function()
      local wf = orch.workflow(base { budget = { max_usd = 5, warn_at = { 0.5, 0.8 } } })
      assert.are.equal(5, wf.budget.max_usd)
    end)

    it("refuses a missing or non-positive max_usd", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { budget = { max_usd = 0 } }) return wf end)
      assert_error_at(at, "orch.workflow: budget.max_usd must be a positive number of dollars", e)
    end)

    it("refuses warn_at values outside (0, 1]", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { budget = { max_usd = 1, warn_at = { 1.5 } } }) return wf end)
      assert_error_at(at, "orch.workflow: budget.warn_at[1] must be a fraction in (0, 1], got 1.5", e)
    end)

    it("refuses unknown budget keys", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { budget = { max_use = 1 } }) return wf end)
      assert_error_at(at, "orch.workflow: budget: unknown key 'max_use' (did you mean 'max_usd'?); expected one of: max_usd, warn_at", e)
    end)
  end)

  describe("steps", function()
    it("turn into rows of the row engine, in a topological order", function()
      local wf = orch.workflow { name = "dag", steps = {
        { name = "b", after = { "a" }, run = function() end },
        { name = "a", run = function() end },
        { name = "c", after = { "a" }, run = function() end },
      } }
      assert.are.equal("step", wf.key)
      assert.are.same({ { step = "a" }, { step = "b" }, { step = "c" } }, wf.input)
      assert.are.equal("fail", wf.on_error)
    end)

    it("do not go with an input, at its line", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { steps = {} }) return wf end)
      assert_error_at(at, "orch.workflow: 'input' cannot be given with 'steps' (the steps are the rows; a step "
        .. "can read files and call ctx:llm itself)", e)
    end)

    it("refuse a misspelled step key", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow { name = "d", steps = { { name = "a", rnu = print } } } return wf end)
      assert_error_at(at, "orch.workflow: steps[1]: unknown key 'rnu' (did you mean 'run'?); expected one of: after, "
        .. "critical, name, run", e)
    end)
  end)

  describe("checkpoint", function()
    it("takes a policy or a function", function()
      assert.is_table(orch.workflow(base { checkpoint = orch.policy.every_seconds(30) }))
      assert.is_table(orch.workflow(base { checkpoint = function(s) return s.rows_since > 10 end }))
    end)

    it("refuses anything else, at its line", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { checkpoint = {} }) return wf end)
      assert_error_at(at, "orch.workflow: 'checkpoint' must be orch.policy.every_rows(n), every_seconds(s), "
        .. "on_events{...}, adaptive{...}, any{...} or a function(s) -> boolean, got table", e)
    end)
  end)

  describe("on_error", function()
    it("refuses an unknown string", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { on_error = "ignore" }) return wf end)
      assert_error_at(at, 'orch.workflow: on_error must be "skip", "fail", orch.retry(n), orch.default(value), got "ignore"', e)
      assert.are.equal("on_error", e.key)
    end)

    it("refuses other types, naming the type", function()
      local at = here() + 1
      local e = catch(function() local wf = orch.workflow(base { on_error = 3 }) return wf end)
      assert_error_at(at, 'orch.workflow: on_error must be "skip", "fail", orch.retry(n), orch.default(value), got number', e)
      e = catch(function() local wf = orch.workflow(base { on_error = { policy = "retry", times = 2 } }) return wf end)
      assert.truthy(tostring(e):find("got table", 1, true))
    end)
  end)
end)

describe("orch.retry", function()
  it("builds a retry policy, skipping afterwards by default", function()
    local r = orch.retry(3)
    assert.are.equal("retry", r.policy)
    assert.are.equal(3, r.times)
    assert.are.equal("skip", r.after)
    assert.are.equal(check.Spec, getmetatable(r))
    assert.are.equal("fail", orch.retry(1, "fail").after)
  end)

  it("refuses 0, fractions, more than 100 and non-numbers", function()
    local at = here() + 1
    local e = catch(function() local r = orch.retry(0) return r end)
    assert_error_at(at, "orch.retry(n): n must be an integer from 1 to 100, got 0", e)
    at = here() + 1
    e = catch(function() local r = orch.retry(1.5) return r end)
    assert_error_at(at, "orch.retry(n): n must be an integer from 1 to 100, got 1.5", e)
    e = catch(function() local r = orch.retry(101) return r end)
    assert.truthy(tostring(e):find("got 101", 1, true))
    e = catch(function() local r = orch.retry("3") return r end)
    assert.truthy(tostring(e):find("got 3", 1, true))
    e = catch(function() local r = orch.retry() return r end)
    assert.truthy(tostring(e):find("got nil", 1, true))
  end)

  it("refuses a bad `after` policy, and a retry after a retry", function()
    local at = here() + 1
    local e = catch(function() local r = orch.retry(2, "ignore") return r end)
    assert_error_at(at, 'orch.retry: on_error must be "skip", "fail", orch.default(value), got "ignore"', e)
    at = here() + 1
    e = catch(function() local r = orch.retry(2, orch.retry(1)) return r end)
    assert_error_at(at, 'orch.retry: on_error must be "skip", "fail", orch.default(value), got table', e)
  end)
end)

describe("orch.default", function()
  it("accepts a table or a function", function()
    local d = orch.default { label = "x" }
    assert.are.equal("default", d.policy)
    assert.are.same({ label = "x" }, d.value)
    assert.are.equal("function", type(orch.default(noop).value))
  end)

  it("refuses anything else", function()
    local at = here() + 1
    local e = catch(function() local d = orch.default("x") return d end)
    assert_error_at(at, "orch.default(value): value must be a table or a function(row, err), got string", e)
    e = catch(function() local d = orch.default() return d end)
    assert.truthy(tostring(e):find("got nil", 1, true))
  end)
end)

describe("orch.read / orch.write", function()
  it("describe files, and where they were named (for orch.paths to point at)", function()
    local at = SELF .. ":" .. here() + 1
    assert.are.same({ io = "read", kind = "csv", path = "a.csv", defined_at = at }, orch.read.csv("a.csv"))
    at = SELF .. ":" .. here() + 1
    assert.are.same({ io = "read", kind = "jsonl", path = "a.jsonl", defined_at = at }, orch.read.jsonl("a.jsonl"))
    at = SELF .. ":" .. here() + 1
    assert.are.same({ io = "write", kind = "jsonl", path = "o.jsonl", defined_at = at }, orch.write.jsonl("o.jsonl"))
    at = SELF .. ":" .. here() + 2
    assert.are.same({ io = "write", kind = "csv", path = "o.csv", columns = { "id", "label" }, defined_at = at },
      orch.write.csv("o.csv", { columns = { "id", "label" } }))
  end)

  it("orch.read.csv(42) is an error at the caller", function()
    local at = here() + 1
    local e = catch(function() local s = orch.read.csv(42) return s end)
    assert_error_at(at, "orch.read.csv: argument 1 must be a string, got number", e)
    at = here() + 1
    e = catch(function() local s = orch.read.jsonl(nil) return s end)
    assert_error_at(at, "orch.read.jsonl: argument 1 must be a string, got nil", e)
    at = here() + 1
    e = catch(function() local s = orch.write.jsonl(true) return s end)
    assert_error_at(at, "orch.write.jsonl: argument 1 must be a string, got boolean", e)
  end)

  it("options must be a table", function()
    local at = here() + 1
    local e = catch(function() local s = orch.write.csv("o.csv", "id,label") return s end)
    assert_error_at(at, "orch.write.csv: argument 2 must be a table, got string", e)
  end)

  it("orch.write.csv columns must be strings", function()
    local at = here() + 1
    local e = catch(function() local s = orch.write.csv("o.csv", { columns = { "id", 2 } }) return s end)
    assert_error_at(at, "orch.write.csv: columns[2] must be a string, got number", e)
    at = here() + 1
    e = catch(function() local s = orch.write.csv("o.csv", { columns = "id" }) return s end)
    assert_error_at(at, "orch.write.csv: 'columns' must be a table, got string", e)
  end)

  it("unknown options are refused at the caller", function()
    local at = here() + 1
    local e = catch(function() local s = orch.write.csv("o.csv", { colums = { "id" } }) return s end)
    assert_error_at(at, "orch.write.csv: unknown key 'colums' (did you mean 'columns'?); expected one of: columns", e)
  end)

  it("unknown options of orch.read.csv are refused at the caller", function()
    local at = here() + 1
    local e = catch(function() local s = orch.read.csv("a.csv", { sep = ";" }) return s end)
    local prefix = SELF .. ":" .. at .. ": orch.read.csv: unknown key 'sep'"
    assert.are.equal(prefix, tostring(e):sub(1, #prefix))
  end)
end)

describe("orch.paths", function()
  local paths = require("orch.paths")
  local sys = require("orch.sys")
  local dir
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. "/data && printf 'x\\n' >" .. dir .. "/data/a.jsonl"))
    dir = sys.realpath(dir)
  end)
  after_each(function()
    os.execute("rm -rf " .. dir)
  end)

  it("canonical resolves the existing part and applies . and .. to the rest", function()
    assert.are.equal(dir .. "/data/a.jsonl", paths.canonical(dir .. "/./data//a.jsonl"))
    assert.are.equal(dir .. "/data/a.jsonl", paths.canonical(dir .. "/no/such/../../data/a.jsonl"))
    assert.are.equal(dir .. "/new/b.jsonl", paths.canonical(dir .. "/new/./b.jsonl"))
    assert.are.equal(dir .. "/data", paths.canonical(dir .. "/data/"))
    assert.are.equal("/", paths.canonical("/no-such-dir/.."))
  end)

  it("identity is the same for a hard link and a symlink, not for a copy", function()
    local a = dir .. "/data/a.jsonl"
    assert(os.execute(string.format("ln %s %s/hard && ln -s %s %s/soft && cp %s %s/copy", a, dir, a, dir, a, dir)))
    local id = paths.identity(a)
    assert.truthy(id:find("^inode %d+:%d+$"))
    assert.are.equal(id, paths.identity(dir .. "/hard"))
    assert.are.equal(id, paths.identity(dir .. "/soft"))
    assert.are_not.equal(id, paths.identity(dir .. "/copy"))
    assert.are.equal("path " .. dir .. "/out/x.jsonl", paths.identity(dir .. "/out/../out/x.jsonl"))
  end)

  it("a sink on the input is refused at the line that named the sink", function()
    local input = orch.read.jsonl(dir .. "/data/a.jsonl")
    local at = here() + 1
    local out = orch.write.jsonl(dir .. "/data/../data/a.jsonl")
    local e = catch(function() local wf = orch.workflow(base { input = input, output = out }) return wf end)
    assert_error_at(at, string.format("output %s/data/../data/a.jsonl is the same file as input %s/data/a.jsonl "
      .. "(refusing to overwrite the input)", dir, dir), e)
    assert.are.equal("output", e.key)
  end)

  it("two sinks on one file are refused at the later one", function()
    local out = orch.write.jsonl(dir .. "/out/a.jsonl")
    local at = here() + 1
    local obs = orch.observe.jsonl(dir .. "/out/a.jsonl")
    local e = catch(function() local wf = orch.workflow(base { output = out, observers = { obs } }) return wf end)
    assert_error_at(at, string.format("observers[1] (orch.observe.jsonl) %s/out/a.jsonl is the same file as output "
      .. "%s/out/a.jsonl (each needs a file of its own)", dir, dir), e)
  end)

  it("check_run names the store's files, and leaves :memory: and URLs alone", function()
    local wf = orch.workflow(base { output = orch.write.jsonl(dir .. "/s.db-wal") })
    local msg = paths.check_run(wf, SELF, dir .. "/s.db")
    assert.are.equal(string.format("%s:%d: output %s/s.db-wal is the same file as the state store's %s/s.db-wal "
      .. "(--db; each needs a file of its own)", SELF, here() - 3, dir, dir), msg)
    assert.is_nil(paths.check_run(wf, SELF, dir .. "/other.db"))
    assert.is_nil(paths.check_run(wf, SELF, ":memory:"))
    assert.is_nil(paths.check_run(wf, SELF, "postgres://localhost/x"))
  end)

  it("check_run refuses a sink on the workflow file itself", function()
    local other = SELF:gsub("/([^/]*)$", "/./%1") -- this file by another name
    local wf = orch.workflow(base { errors = orch.write.jsonl(other) })
    assert.are.equal(string.format("%s:%d: errors %s is the same file as the workflow %s (refusing to overwrite "
      .. "the workflow)", SELF, here() - 2, other, SELF), paths.check_run(wf, SELF, ":memory:"))
  end)
end)

describe("orch.param", function()
  local saved
  before_each(function()
    saved = orch.params
    orch.params = { n = "42", f = "2.5", b = "true", b0 = "0", byes = "yes", bno = "no", bf = "false",
      s = "hello", bad = "forty", maybe = "perhaps" }
  end)
  after_each(function()
    orch.params = saved
  end)

  it("converts to the default's type", function()
    assert.are.equal(42, orch.param("n", 1))
    assert.are.equal("integer", math.type(orch.param("n", 1)))
    assert.are.equal(2.5, orch.param("f", 1))
    assert.are.equal(true, orch.param("b", false))
    assert.are.equal(false, orch.param("b0", true))
    assert.are.equal(true, orch.param("byes", false))
    assert.are.equal(false, orch.param("bno", true))
    assert.are.equal(false, orch.param("bf", true))
    assert.are.equal("hello", orch.param("s", "default"))
    assert.are.equal("42", orch.param("n", "default"))
    assert.are.equal("hello", orch.param("s"))
  end)

  it("returns the default when the parameter is not set", function()
    assert.are.equal(7, orch.param("missing", 7))
    assert.are.equal(false, orch.param("missing", false))
    assert.are.equal("d", orch.param("missing", "d"))
    assert.is_nil(orch.param("missing"))
  end)

  it("a value that is not a number is an error at the caller", function()
    local at = here() + 1
    local e = catch(function() local v = orch.param("bad", 10) return v end)
    assert_error_at(at, "--set bad=forty: expected a number", e)
  end)

  it("a value that is not a boolean is an error at the caller", function()
    local at = here() + 1
    local e = catch(function() local v = orch.param("maybe", true) return v end)
    assert_error_at(at, "--set maybe=perhaps: expected true or false", e)
  end)

  it("the name must be a string", function()
    local at = here() + 1
    local e = catch(function() local v = orch.param(1, 2) return v end)
    assert_error_at(at, "orch.param: argument 1 must be a string, got number", e)
  end)
end)

describe("orch.env", function()
  it("returns the variable, or the default when unset", function()
    assert.are.equal(os.getenv("PATH"), orch.env("PATH"))
    assert.are.equal(os.getenv("PATH"), orch.env("PATH", "x"))
    assert.are.equal("fallback", orch.env("ORCH_SPEC_SURELY_UNSET_VARIABLE", "fallback"))
    assert.is_nil(orch.env("ORCH_SPEC_SURELY_UNSET_VARIABLE"))
  end)

  it("treats an empty variable as unset", function()
    local exe = require("orch.sys").realpath("/proc/self/exe")
    local script = os.tmpname()
    local fh = assert(io.open(script, "w"))
    fh:write('io.write(tostring(require("orch").env("ORCH_SPEC_EMPTY", "dflt")))\n')
    fh:close()
    local p = assert(io.popen("ORCH_SPEC_EMPTY= '" .. exe .. "' lua " .. script))
    local out = p:read("a")
    p:close()
    os.remove(script)
    assert.are.equal("dflt", out)
  end)

  it("the name must be a string", function()
    local at = here() + 1
    local e = catch(function() local v = orch.env(nil) return v end)
    assert_error_at(at, "orch.env: argument 1 must be a string, got nil", e)
  end)
end)

describe("orch.cli.load_workflow", function()
  local files = {}
  local saved_params
  before_each(function()
    saved_params = orch.params
  end)
  after_each(function()
    orch.params = saved_params
    for _, f in ipairs(files) do
      os.remove(f)
    end
    files = {}
  end)

  local function write(text)
    local path = os.tmpname()
    files[#files + 1] = path
    local fh = assert(io.open(path, "w"))
    fh:write(text)
    fh:close()
    return path
  end

  -- Calls load_workflow with no Lua frame of ours on the stack above it,
  -- as `orch run` does (main.c is its only caller).
  local function load_alone(path, params)
    return coroutine.wrap(function()
      return cli.load_workflow(path, params)
    end)()
  end

  local GOOD = [[
local orch = require("orch")
return orch.workflow {
  name = "good",
  input = { { id = 1 } },
  stages = { function(row) return row end },
}
]]

  it("loads a valid workflow", function()
    local path = write(GOOD)
    local wf, err = cli.load_workflow(path)
    assert.is_nil(err)
    assert.are.equal("good", wf.name)
    assert.are.equal(check.Workflow, getmetatable(wf))
  end)

  it("passes --set parameters to orch.param", function()
    local path = write([[
local orch = require("orch")
return orch.workflow {
  name = "p" .. orch.param("suffix", "x"),
  concurrency = orch.param("conc", 4),
  input = { { id = 1 } },
  stages = { function(row) return row end },
}
]])
    local wf, err = cli.load_workflow(path, { suffix = "42", conc = "7" })
    assert.is_nil(err)
    assert.are.equal("p42", wf.name)
    assert.are.equal(7, wf.concurrency)
  end)

  it("a syntax error returns nil and path:LINE: message", function()
    local path = write('local orch = require("orch")\nreturn orch.workflow {\n  name = = "x",\n}\n')
    local wf, err = cli.load_workflow(path)
    assert.is_nil(wf)
    assert.are.equal(path .. ":3: unexpected symbol near '='", err)
  end)

  it("a file that returns nothing is refused", function()
    local path = write('local orch = require("orch")\nlocal wf = orch.workflow { name = "x", input = {}, stages = { print } }\n')
    local wf, err = cli.load_workflow(path)
    assert.is_nil(wf)
    assert.are.equal(path .. ": the file must return orch.workflow{...}, but it returned nothing", err)
  end)

  it("a file that returns a plain table is refused", function()
    local path = write('return { name = "x" }\n')
    local wf, err = cli.load_workflow(path)
    assert.is_nil(wf)
    assert.are.equal(path .. ": the file must return orch.workflow{...}, but it returned table", err)
  end)

  it("a missing file is reported", function()
    local wf, err = cli.load_workflow("/nonexistent/dir/workflow.lua")
    assert.is_nil(wf)
    assert.are.equal("cannot open workflow: /nonexistent/dir/workflow.lua: No such file or directory", err)
  end)

  local TYPO = [[
local orch = require("orch")

return orch.workflow {
  name = "typo",
  inptu = { { id = 1 } },
  stages = { function(row) return row end },
}
]]

  it("`return orch.workflow{...}` with an unknown key is located at the key's line", function()
    local path = write(TYPO)
    local wf, err = cli.load_workflow(path)
    assert.is_nil(wf)
    assert.are.equal(path .. ":5: orch.workflow: unknown key 'inptu' (did you mean 'input'?); expected one of: "
      .. KEYS, err)
  end)

  it("same, when load_workflow has no Lua caller (as under `orch run`)", function()
    local path = write(TYPO)
    local wf, err = load_alone(path)
    assert.is_nil(wf)
    assert.are.equal(path .. ":5: orch.workflow: unknown key 'inptu' (did you mean 'input'?); expected one of: "
      .. KEYS, err)
  end)

  it("a tail-called error without a key is located at the orch.workflow line", function()
    local path = write('local orch = require("orch")\n\n\nreturn orch.workflow {\n  input = {},\n  stages = { print },\n}\n')
    local wf, err = load_alone(path)
    assert.is_nil(wf)
    assert.are.equal(path .. ":4: orch.workflow: 'name' is required (a string that identifies the workflow)", err)
  end)

  it("a tail-called llm provider typo is located at the provider line", function()
    local path = write([[
local orch = require("orch")
return orch.workflow {
  name = "x",
  input = {},
  llm = {
    provider = "mok",
  },
  stages = { function(r) return r end },
}
]])
    local wf, err = load_alone(path)
    assert.is_nil(wf)
    local prefix = path .. ":6: orch.workflow: llm.provider 'mok' is not available (did you mean 'mock'?)"
    assert.are.equal(prefix, err:sub(1, #prefix))
  end)

  it("an error from a non-tail orch.workflow call is located at that call", function()
    local path = write('local orch = require("orch")\nlocal wf = orch.workflow {\n  name = 1,\n}\nreturn wf\n')
    local wf, err = cli.load_workflow(path)
    assert.is_nil(wf)
    assert.are.equal(path .. ":2: orch.workflow: 'name' must be a string, got number 1", err)
  end)

  it("an orch.* error while loading is located in the file", function()
    local path = write('local orch = require("orch")\nlocal p = orch.param("n", 1)\n\nlocal r = orch.retry(0)\nreturn r\n')
    local wf, err = cli.load_workflow(path, { n = "3" })
    assert.is_nil(wf)
    assert.are.equal(path .. ":4: orch.retry(n): n must be an integer from 1 to 100, got 0", err)
  end)

  it("a runtime error while loading carries a stack traceback", function()
    local path = write('local orch = require("orch")\nlocal t = nil\nlocal x = t.field\nreturn x\n')
    local wf, err = cli.load_workflow(path)
    assert.is_nil(wf)
    local prefix = path .. ":3: attempt to index a nil value (local 't')"
    assert.are.equal(prefix, err:sub(1, #prefix))
    assert.truthy(err:find("\nstack traceback:\n", 1, true), err)
    assert.truthy(err:find(path .. ":3: in main chunk", 1, true), err)
  end)

  it("an error() with a non-string value is still reported", function()
    local path = write('error({ code = 1 })\n')
    local wf, err = cli.load_workflow(path)
    assert.is_nil(wf)
    assert.are.equal("string", type(err))
    assert.truthy(err:find("stack traceback:", 1, true), err)
  end)
end)

describe("check.locate", function()
  it("finds the key's line, else the orch.workflow line, and leaves located errors alone", function()
    local path = os.tmpname()
    local fh = assert(io.open(path, "w"))
    fh:write('local orch = require("orch")\nreturn orch.workflow {\n  name = "x",\n  bad_key = 1,\n}\n')
    fh:close()
    local e = check.locate(setmetatable({ msg = "m1", located = false, key = "bad_key" }, check.WorkflowError), path)
    assert.are.equal(path .. ":4: m1", tostring(e))
    assert.is_true(e.located)
    e = check.locate(setmetatable({ msg = "m2", located = false }, check.WorkflowError), path)
    assert.are.equal(path .. ":2: m2", tostring(e))
    e = check.locate(setmetatable({ msg = "m3", located = false, key = "absent" }, check.WorkflowError), path)
    assert.are.equal(path .. ":2: m3", tostring(e))
    e = check.locate(setmetatable({ msg = "here:1: m4", located = true, key = "name" }, check.WorkflowError), path)
    assert.are.equal("here:1: m4", tostring(e))
    os.remove(path)
  end)
end)
