-- policy_spec.lua -- orch.policy: when a run checkpoints (lua/orch/policy.lua).
-- The row driver's use of them is tests/e2e/policies.sh.
local orch = require("orch")
local policy = require("orch.policy")

-- The counters the row driver hands a policy.
local function s(t)
  local base = { rows_since = 0, seconds_since = 0, cost_since_usd = 0, tokens_since = 0, last_checkpoint_ms = 0,
    mean_checkpoint_ms = 0, rows_done = 0 }
  for k, v in pairs(t or {}) do
    base[k] = v
  end
  return base
end

local fails_with = require("helpers").fails_with

describe("orch.policy", function()
  it("is orch.policy", function()
    assert.are.equal(policy, orch.policy)
  end)

  it("every_rows(n) fires at n rows since the last checkpoint", function()
    local p = orch.policy.every_rows(3)
    assert.are.equal("rows", p.name)
    assert.is_false(p.decide(s { rows_since = 2 }))
    assert.is_true(p.decide(s { rows_since = 3 }))
    fails_with("orch.policy.every_rows(n) expects a positive integer, got 1.5", orch.policy.every_rows, 1.5)
    fails_with("expects a positive integer, got 0", orch.policy.every_rows, 0)
  end)

  it("every_seconds(s) fires when s seconds passed and there is something to save", function()
    local p = orch.policy.every_seconds(2)
    assert.are.equal("time", p.name)
    assert.is_false(p.decide(s { seconds_since = 1.9, rows_since = 10 }))
    assert.is_true(p.decide(s { seconds_since = 2, rows_since = 1 }))
    assert.is_true(p.decide(s { seconds_since = 5, cost_since_usd = 0.01 }))
    assert.is_false(p.decide(s { seconds_since = 5 }))
    fails_with("expects a positive number, got -1", orch.policy.every_seconds, -1)
  end)

  it("on_events{...} fires on the named events only", function()
    local p = orch.policy.on_events { "budget_warning", "chapter" }
    assert.is_true(p.decide(s { event = "chapter" }))
    assert.is_true(p.decide(s { event = "budget_warning" }))
    assert.is_false(p.decide(s { event = "other" }))
    assert.is_false(p.decide(s { rows_since = 1000 }))
    fails_with("expects a list of event names", orch.policy.on_events, {})
    fails_with("event 2 must be a string, got number", orch.policy.on_events, { "a", 3 })
  end)

  it("any{...} fires when one of them does, functions included", function()
    local p = orch.policy.any { orch.policy.every_rows(100), function(c) return c.tokens_since > 5000 end }
    assert.is_false(p.decide(s { rows_since = 10, tokens_since = 10 }))
    assert.is_true(p.decide(s { rows_since = 100 }))
    assert.is_true(p.decide(s { tokens_since = 6000 }))
    fails_with("orch.policy.any: policy 2: expected orch.policy.every_rows(n)", orch.policy.any,
      { orch.policy.every_rows(1), "often" })
  end)

  describe("adaptive", function()
    it("waits the Young-Daly interval sqrt(2 C MTBF), clamped", function()
      local p = orch.policy.adaptive { mtbf = 3600, min_interval = 1, max_interval = 60 }
      -- C = 10 ms: sqrt(2 * 0.01 * 3600) = 8.49 s; C / 1% = 1 s is shorter
      assert.is_true(math.abs(p.interval(10) - math.sqrt(72)) < 1e-9)
      assert.are.equal(1, p.interval(0.01)) -- clamped up to min_interval
      assert.are.equal(60, p.interval(5000)) -- clamped down to max_interval
      assert.is_false(p.decide(s { rows_since = 50, seconds_since = 8, mean_checkpoint_ms = 10 }))
      assert.is_true(p.decide(s { rows_since = 50, seconds_since = 8.5, mean_checkpoint_ms = 10 }))
      assert.is_false(p.decide(s { seconds_since = 100, mean_checkpoint_ms = 10 })) -- nothing to save
    end)

    it("keeps checkpoints under `target` of the wall time", function()
      local p = orch.policy.adaptive { target = 0.01, mtbf = 1, max_interval = 1000 }
      -- C = 2 s: Young-Daly says 2 s, but 2 s every 2 s is half the time: 200 s
      assert.are.equal(200, p.interval(2000))
    end)

    it("checkpoints sooner when too many rows or dollars are at risk", function()
      local p = orch.policy.adaptive { max_rows = 1000, max_usd = 0.5 }
      assert.is_true(p.decide(s { rows_since = 1000, seconds_since = 0.1 }))
      assert.is_true(p.decide(s { cost_since_usd = 0.5, seconds_since = 0.1 }))
      assert.is_false(p.decide(s { rows_since = 999, cost_since_usd = 0.4, seconds_since = 0.1 }))
    end)

    it("checks its options", function()
      fails_with("orch.policy.adaptive: unknown key 'max_intervl' (did you mean 'max_interval'?)",
        orch.policy.adaptive, { max_intervl = 5 })
      fails_with("min_interval (10) is above max_interval (5)", orch.policy.adaptive,
        { min_interval = 10, max_interval = 5 })
      fails_with("orch.policy.adaptive: target expects a positive number, got 0", orch.policy.adaptive,
        { target = 0 })
    end)
  end)
  it("a built-in policy says no below its bounds, so the driver need not ask it every row", function()
    local cases = {
      orch.policy.every_rows(7),
      orch.policy.every_seconds(2),
      orch.policy.on_events { "chapter" },
      orch.policy.adaptive { max_rows = 50, max_usd = 0.5, min_interval = 1, max_interval = 9 },
      orch.policy.any { orch.policy.every_seconds(3), orch.policy.every_rows(40) },
    }
    local want = { { 7, math.huge, math.huge }, { math.huge, 2, math.huge }, { math.huge, math.huge, math.huge },
      { 50, 1, 0.5 }, { 40, 3, math.huge } }
    for i, p in ipairs(cases) do
      assert.are.same(want[i], { p.bounds(0) }, "bounds of policy " .. i)
      local rows, secs, usd = p.bounds(0)
      for _ = 1, 200 do -- counters anywhere below the bounds: no
        local c = s { rows_since = math.random(0, math.min(rows, 1000) - 1), seconds_since = math.random() * math.min(secs, 100),
          cost_since_usd = math.random() * math.min(usd, 10), tokens_since = math.random(0, 10 ^ 6) }
        if c.seconds_since < secs and c.cost_since_usd < usd then
          assert.is_false(p.decide(c), "policy " .. i)
        end
      end
      -- at a bound: yes (every_seconds and adaptive's interval need something to save)
      if rows < math.huge then assert.is_true(p.decide(s { rows_since = rows })) end
      if secs < math.huge then assert.is_true(p.decide(s { rows_since = 1, seconds_since = secs })) end
    end
    -- adaptive's interval follows the measured checkpoint cost
    local a = orch.policy.adaptive { target = 0.01, mtbf = 1, max_interval = 1000 }
    assert.are.equal(a.interval(500), select(2, a.bounds(500)))
    -- any{} with a plain function has no bounds: asked every row
    assert.are.same({ 0, 0, 0 }, { orch.policy.any { orch.policy.every_rows(3), function() return false end }.bounds(0) })
  end)
end)
