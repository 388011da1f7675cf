-- orch.limits: budget admission, rate buckets and the LLM concurrency gate.
local limits = require("orch.limits")
local sched = require("orch.sched")

describe("orch.limits.budget", function()
  it("admits while spent + in flight + the estimate fits; says wait or stop when not", function()
    local totals = { cost = 0.5 }
    local warned = {}
    local b = limits.budget(1.0, { 0.5, 0.9 }, totals, function(f, spent)
      warned[#warned + 1] = { f, spent }
    end)
    assert.is_true(b.admit(0.3)) -- 0.5 + 0 + 0.3
    local ok, why, kind = b.admit(0.3) -- 0.5 + 0.3 in flight + 0.3 > 1, but 0.5 + 0.3 fits
    assert.is_false(ok)
    assert.are.equal("wait", kind)
    assert.are.equal("budget of $1.0000: $0.5000 spent, $0.3000 in flight, next request up to $0.3000", why)
    ok, why, kind = b.admit(0.6) -- 0.5 + 0.6 > 1 on its own
    assert.is_false(ok)
    assert.are.equal("stop", kind)
    assert.are.equal("budget of $1.0000 reached: $0.5000 spent, next request up to $0.6000", why)
    b.release(0.3)
    assert.is_true(b.admit(0.3))
    b.release(0.3)
    assert.are.same({ 0, 0 }, { b.in_flight() })
    totals.cost = 0.95
    b.after_spend()
    b.after_spend()
    assert.are.same({ { 0.5, 0.95 }, { 0.9, 0.95 } }, warned) -- each fraction once
  end)

  it("a request that fits alone waits for those in flight to settle instead of pausing", function()
    -- max 0.010, worst case 0.004 a request, real cost 0.001: three fit at once
    -- by worst case; the fourth and later wait for a settled one, and all
    -- ten run, because real costs replace the reservations
    local totals = { cost = 0 }
    local b = limits.budget(0.010, nil, totals, function() end)
    local order, peak, refused = {}, 0, {}
    sched.run(function()
      for i = 1, 10 do
        sched.spawn(function()
          local ok, why = b.acquire(0.004)
          if not ok then
            refused[#refused + 1] = why
            return
          end
          local _, n = b.in_flight()
          peak = math.max(peak, n)
          order[#order + 1] = i
          sched.sleep(0.01)
          totals.cost = totals.cost + 0.001
          b.release(0.004)
        end)
      end
      local n = 0
      while n < 10 do
        n = n + #sched.wait()
      end
    end)
    -- at 0.006 spent, 0.006 + 0.004 = 0.010 fits; at 0.007 no request fits alone
    assert.are.equal(7, #order)
    assert.are.equal(2, peak) -- 0.004 * 3 > 0.010 from the start
    assert.are.equal(3, #refused)
    assert.are.equal("budget of $0.0100 reached: $0.0070 spent, next request up to $0.0040", refused[1])
    assert.is_true(totals.cost <= 0.010 + 1e-12)
    assert.is_true(b.waited > 0)
    assert.are.same({ 0, 0 }, { b.in_flight() })
  end)

  it("suggests spent + the rows left at the cost per row seen, with a margin; nil when unknown", function()
    assert.are.equal(2.25, limits.suggest_budget(1.0, 100, 100)) -- 1 + 100 * 0.01 * 1.25
    assert.are.equal(0.02, limits.suggest_budget(0.004, 10, 0)) -- never below spent + a cent
    assert.is_nil(limits.suggest_budget(1.0, 100, nil))
    assert.are.equal(2.75, limits.suggest_budget(1.0, 100, 100, 0.5)) -- room for one worst case
  end)
end)

describe("orch.limits.limiter", function()
  it("is nil without limits", function()
    assert.is_nil(limits.limiter(nil, nil))
  end)

  it("paces requests per minute: a burst of one second's worth, then the rate", function()
    local lim = limits.limiter(1200, nil) -- 20 a second
    local ctx = { sleep = function(_, s) sched.sleep(s) end }
    local took = sched.run(function()
      local t0 = sched.now()
      for _ = 1, 30 do
        lim.acquire(ctx, 10)
      end
      return sched.now() - t0
    end)
    -- 20 at once, 10 more at 20/s: about 0.5 s
    assert.is_true(took >= 0.4 and took < 2, "took " .. took)
  end)

  it("paces tokens per minute", function()
    local lim = limits.limiter(nil, 6000) -- 100 tokens a second
    local ctx = { sleep = function(_, s) sched.sleep(s) end }
    local took = sched.run(function()
      local t0 = sched.now()
      for _ = 1, 3 do
        lim.acquire(ctx, 100)
      end
      return sched.now() - t0
    end)
    assert.is_true(took >= 1.5 and took < 4, "took " .. took)
  end)
end)

describe("orch.limits.shared_limiter", function()
  it("is nil without limits", function()
    assert.is_nil(limits.shared_limiter(function() return 0 end, nil, nil))
  end)

  it("draws rpm then tpm from the shared buckets, one row asking at a time, waiting as told", function()
    local calls, sleeping, overlapped = {}, 0, 0
    local credit = 2 -- the fake store's bucket: two grants, then one more after each wait
    local function take(kind, amount, limit)
      if sleeping > 0 then
        overlapped = overlapped + 1 -- a row asked while another waited its turn
      end
      calls[#calls + 1] = string.format("%s:%g:%g", kind, amount, limit)
      if kind == "tpm" then
        return 0
      end
      if credit > 0 then
        credit = credit - 1
        return 0
      end
      credit = 1
      return 5
    end
    local ctx = { sleep = function(_, s)
      sleeping = sleeping + 1
      sched.sleep(s)
      sleeping = sleeping - 1
    end }
    local lim = limits.shared_limiter(take, 60, 6000)
    sched.run(function()
      for i = 1, 4 do
        sched.spawn(function()
          lim.acquire(ctx, 10 * i)
        end)
      end
      local n = 0
      while n < 4 do
        n = n + #sched.wait()
      end
    end)
    assert.are.equal(0, overlapped)
    -- rows 1 and 2 granted at once; 3 and 4 each told to wait 5 ms once; tpm after each rpm grant
    assert.are.same({ "rpm:1:60", "tpm:10:6000", "rpm:1:60", "tpm:20:6000", "rpm:1:60", "rpm:1:60", "tpm:30:6000",
      "rpm:1:60", "rpm:1:60", "tpm:40:6000" }, calls)
    assert.are.same({ 10, 2 }, { lim.takes, lim.waits })
  end)

  it("raises on a take that fails, and lets the next row ask", function()
    local fail = true
    local lim = limits.shared_limiter(function()
      if fail then
        fail = false
        return nil, "the store is gone"
      end
      return 0
    end, 60, nil)
    local ctx = { sleep = function(_, s) sched.sleep(s) end }
    local first, second = sched.run(function()
      local ok, err = pcall(lim.acquire, ctx, 1)
      return { ok, err }, { pcall(lim.acquire, ctx, 1) }
    end)
    assert.are.same({ false, "rate limit: cannot take from the run's shared rpm (60 per minute): the store is gone" },
      first)
    assert.are.same({ true }, second)
  end)
end)

describe("orch.limits.gate", function()
  it("caps requests in flight and wakes waiters in turn", function()
    local g = limits.gate(3, false, function() end)
    local peak = sched.run(function()
      local peak = 0
      for _ = 1, 10 do
        sched.spawn(function()
          g.enter()
          peak = math.max(peak, g.inflight)
          sched.sleep(0.01)
          g.leave("ok", 0.01)
        end)
      end
      local n = 0
      while n < 10 do
        n = n + #sched.wait()
      end
      return peak
    end)
    assert.are.equal(3, peak)
    assert.are.equal(0, g.inflight)
  end)

  it("halves on overload at most once a second and grows back one per window", function()
    local changes = {}
    local g = limits.gate(8, true, function(from, to, why)
      changes[#changes + 1] = string.format("%d->%d %s", from, to, why)
    end)
    sched.run(function()
      g.enter()
      g.leave("overload")
      g.enter()
      g.leave("overload") -- within the same second: no second cut
      for _ = 1, 5 do -- +1/limit each: 4.25, 4.49, 4.71, 4.92, 5.12
        g.enter()
        g.leave("ok", 0.01)
      end
    end)
    assert.are.same({ "8->4 overload", "4->5 recovered" }, changes)
  end)

  it("treats a latency four times the best as an overload", function()
    local changes = {}
    local g = limits.gate(4, true, function(from, to, why)
      changes[#changes + 1] = string.format("%d->%d %s", from, to, why)
    end)
    sched.run(function()
      g.enter()
      g.leave("ok", 0.01)
      g.enter()
      g.leave("ok", 0.05)
    end)
    assert.are.same({ "4->2 overload" }, changes)
  end)
end)
