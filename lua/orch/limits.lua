-- orch.limits: the run's spending budget and the provider's rate limits.
--
-- Budget admission (durability guarantee 4): a request starts only if what
-- is spent, plus the estimates of the requests in flight, plus its own
-- estimate stays within max_usd. Rate limits: token buckets for requests
-- per minute and tokens per minute; a request that does not fit waits on
-- its own row's coroutine. Under orch worker the buckets can be the
-- store's, shared by the run's workers (shared_limiter).
local sched = require("orch.sched")

local M = {}

--- budget(max_usd, warn_at, totals, on_warn) -> { acquire, admit, release, after_spend }
---
--- A request reserves its worst case (its estimate) while in flight; the
--- real cost replaces the reservation when it settles. acquire waits (on
--- the calling row's coroutine) while its worst case fits the budget on
--- its own but not beside the reservations in flight, so the budget lowers
--- the number of requests in flight before it pauses anything; it refuses
--- only when spent + its own worst case would pass max_usd.
function M.budget(max_usd, warn_at, totals, on_warn)
  local inflight, count = 0, 0
  local warned = {}
  local waiting, head, tail = {}, 1, 0
  local b = { max_usd = max_usd, waited = 0, largest = 0 } -- largest: the biggest worst case asked for
  local function refusal(estimate)
    return string.format("budget of $%.4f reached: $%.4f spent, next request up to $%.4f", max_usd, totals.cost,
      estimate)
  end
  --- admit(estimate) -> true | false, why, "wait" | "stop": never waits.
  function b.admit(estimate)
    b.largest = math.max(b.largest, estimate)
    if totals.cost + estimate > max_usd then
      return false, refusal(estimate), "stop"
    end
    if totals.cost + inflight + estimate > max_usd then
      return false, string.format("budget of $%.4f: $%.4f spent, $%.4f in flight, next request up to $%.4f",
        max_usd, totals.cost, inflight, estimate), "wait"
    end
    inflight = inflight + estimate
    count = count + 1
    return true
  end
  --- acquire(estimate) -> true | false, why: waits while requests in flight
  --- hold the room this one needs; false only when it can never fit.
  function b.acquire(estimate)
    while true do
      local ok, why, kind = b.admit(estimate)
      if ok or kind == "stop" or count == 0 then
        return ok, why
      end
      b.waited = b.waited + 1
      tail = tail + 1
      waiting[tail] = sched.current()
      sched.park()
    end
  end
  function b.release(estimate)
    count = math.max(count - 1, 0)
    -- nothing in flight holds nothing: no float residue may refuse a request that fits
    inflight = count == 0 and 0 or math.max(inflight - estimate, 0)
    while head <= tail do -- all of them look again: what was freed may fit several
      local id = waiting[head]
      waiting[head] = nil
      head = head + 1
      sched.unpark(id)
    end
  end
  --- in_flight() -> dollars reserved, requests holding them
  function b.in_flight()
    return inflight, count
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

--- suggest_budget(spent, rows_done, rows_left [, headroom]) -> dollars
--- enough to finish: what is spent plus the rows left at the cost per row
--- seen so far, with a quarter more as margin (rows differ), plus headroom
--- (the worst case of one request: the last one must fit beside what is
--- spent), never below spent + a cent. rows_left nil (not known) -> nil.
function M.suggest_budget(spent, rows_done, rows_left, headroom)
  if rows_left == nil then
    return nil
  end
  local per_row = rows_done > 0 and spent / rows_done or 0
  local need = spent + rows_left * per_row * 1.25 + (headroom or 0)
  return math.max(math.ceil(need * 100) / 100, math.ceil((spent + 0.01) * 100) / 100)
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

--- shared_limiter(take, rpm, tpm) -> { acquire(ctx, tokens), takes, waits } or nil when unlimited:
--- rpm/tpm drawn from token buckets kept elsewhere (the store's, one per run and kind, shared by every
--- worker of the run). take(kind, amount, limit_per_min) -> 0 (taken) | ms to wait before asking again
--- (nothing taken) | nil, err. One row of this process asks at a time and the others queue behind it in
--- order, so a process sends one take per grant or per wait however many of its rows wait. rpm is taken
--- before tpm: a request holding its request token while it waits for tokens only ever sends less. A
--- take that fails raises "rate limit: ..." on the row (its on_error decides): sending anyway could pass
--- the run's limit.
function M.shared_limiter(take, rpm, tpm)
  if rpm == nil and tpm == nil then
    return nil
  end
  local lim = { takes = 0, waits = 0 }
  local busy = false
  local waiting, head, tail = {}, 1, 0
  local function draw(ctx, kind, amount, limit)
    while true do
      local wait, err = take(kind, amount, limit)
      lim.takes = lim.takes + 1
      if wait == nil then
        error(string.format("rate limit: cannot take from the run's shared %s (%s per minute): %s", kind,
          tostring(limit), tostring(err)), 0)
      elseif wait == 0 then
        return
      end
      lim.waits = lim.waits + 1
      ctx:sleep(wait / 1000)
    end
  end
  local function draw_both(ctx, tokens)
    if rpm then
      draw(ctx, "rpm", 1, rpm)
    end
    if tpm then
      draw(ctx, "tpm", tokens, tpm)
    end
  end
  function lim.acquire(ctx, tokens)
    while busy do
      tail = tail + 1
      waiting[tail] = sched.current()
      sched.park()
    end
    busy = true
    local ok, err = pcall(draw_both, ctx, tokens)
    busy = false
    while head <= tail do -- the next row in line asks (one whose task is gone is passed over)
      local id = waiting[head]
      waiting[head] = nil
      head = head + 1
      if sched.unpark(id) then
        break
      end
    end
    if not ok then
      error(err, 0)
    end
  end
  return lim
end

--- gate(limit, adaptive, on_change) -> { enter(), leave(outcome) }:
--- at most `limit` LLM requests in flight. With adaptive, the limit is cut
--- by half on an overload (429, 503, a latency four times the best seen;
--- at most once a second) and grows back by one per `limit` successes
--- (AIMD); on_change(from, to, why) hears of each whole-number change.
function M.gate(limit, adaptive, on_change)
  local g = { limit = limit, inflight = 0 }
  local max_limit = limit
  local waiting, head, tail = {}, 1, 0
  local last_cut, best = -math.huge, math.huge
  -- limit // 1 is math.floor(limit) for the comparisons here, without a
  -- C call for every request
  function g.enter()
    while g.inflight >= g.limit // 1 do
      tail = tail + 1
      waiting[tail] = sched.current()
      sched.park()
    end
    g.inflight = g.inflight + 1
  end
  local function wake_one()
    while head <= tail do
      local id = waiting[head]
      waiting[head] = nil
      head = head + 1
      if sched.unpark(id) then -- false when that task is gone
        return true
      end
    end
    return false
  end
  --- outcome: "ok", "overload" or "error"; latency in seconds
  function g.leave(outcome, latency)
    g.inflight = g.inflight - 1
    if adaptive then
      local old = math.floor(g.limit)
      if outcome == "ok" and latency then
        if latency < best then
          best = latency
        elseif latency > 4 * best and best > 0.001 then
          outcome = "overload"
        end
      end
      local why = outcome
      if outcome == "overload" then
        local now = sched.now()
        if now - last_cut >= 1 then
          g.limit = math.max(1, g.limit / 2)
          last_cut = now
        end
      elseif outcome == "ok" and g.limit < max_limit then
        g.limit = math.min(max_limit, g.limit + 1 / g.limit)
        why = "recovered"
      end
      if math.floor(g.limit) ~= old then
        on_change(old, math.floor(g.limit), why)
      end
    end
    if head > tail then
      return -- no one waits
    end
    for _ = 1, math.floor(g.limit) - g.inflight do
      if not wake_one() then
        break
      end
    end
  end
  return g
end

return M
