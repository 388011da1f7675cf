-- orch.limits: the run's spending budget and the provider's rate limits.
--
-- Budget admission (durability guarantee 4): a request starts only if what
-- is spent, plus the estimates of the requests in flight, plus its own
-- estimate stays within max_usd. Rate limits: token buckets for requests
-- per minute and tokens per minute; a request that does not fit waits on
-- its own row's coroutine.
local sched = require "orch.sched"

local M = {}

--- budget(max_usd, warn_at, totals, on_warn) -> { admit, release, spent_check }
function M.budget(max_usd, warn_at, totals, on_warn)
  local inflight = 0
  local warned = {}
  local b = { max_usd = max_usd }
  function b.admit(estimate)
    if totals.cost + inflight + estimate > max_usd then
      return false, string.format("budget of $%.4f reached: $%.4f spent, $%.4f in flight, next request ~$%.4f",
        max_usd, totals.cost, inflight, estimate)
    end
    inflight = inflight + estimate
    return true
  end
  function b.release(estimate)
    inflight = math.max(inflight - estimate, 0)
  end
  -- warn_at fractions crossed by what is spent now
  function b.after_spend()
    for _, f in ipairs(warn_at or {}) do
      if not warned[f] and totals.cost >= f * max_usd then
        warned[f] = true
        on_warn(f, totals.cost)
      end
    end
  end
  return b
end

--- limiter(rpm, tpm) -> { acquire(ctx, tokens) } or nil when unlimited.
function M.limiter(rpm, tpm)
  if rpm == nil and tpm == nil then
    return nil
  end
  local rrate, trate = rpm and rpm / 60, tpm and tpm / 60
  local rcap, tcap = rrate and math.max(1, rrate), trate and math.max(1, trate)
  local rtok, ttok = rcap, tcap
  local last = sched.now()
  local lim = {}
  function lim.acquire(ctx, tokens)
    while true do
      local now = sched.now()
      local dt = now - last
      last = now
      if rrate then
        rtok = math.min(rcap, rtok + dt * rrate)
      end
      if trate then
        ttok = math.min(tcap, ttok + dt * trate)
      end
      local need_t = trate and math.min(tokens, tcap) or 0
      if (not rrate or rtok >= 1) and (not trate or ttok >= need_t) then
        if rrate then
          rtok = rtok - 1
        end
        if trate then
          ttok = ttok - need_t
        end
        return
      end
      local wait = 0
      if rrate and rtok < 1 then
        wait = (1 - rtok) / rrate
      end
      if trate and ttok < need_t then
        wait = math.max(wait, (need_t - ttok) / trate)
      end
      ctx:sleep(math.max(wait, 0.001))
    end
  end
  return lim
end

return M
