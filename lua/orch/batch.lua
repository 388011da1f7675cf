-- orch.batch: ctx:llm through a provider's batch API (llm = { batch = true }).
--
-- Rows' ctx:llm calls suspend as usual; their requests queue here and one
-- batcher task per run groups them into batches (batch_size, or when the
-- oldest has waited batch_window seconds), submits, polls and downloads
-- them, writes each reply to the journal as it arrives and wakes the rows
-- waiting on it. A request's custom_id is "orch-" .. its journal key, so a
-- rerun or resume answers it from the journal like any other reply.
--
-- Durability: a batch's request keys are recorded in the store (event
-- batch_requests) before anything is sent, "creating" before the create
-- call, and its id as soon as it is known (events batch; `orch status`
-- reads them back). A resumed run replays those records: it re-attaches to
-- submitted batches, and a request whose batch may exist (created state
-- unknown) is never sent again until that batch is found (OpenAI: by its
-- metadata) or every batch created since that moment has ended and its
-- results are claimed by custom_id (Anthropic, whose batches carry no
-- metadata). The create call is made once (a call lost on the way may
-- still land), and a batch not found is taken as never created only when
-- no create call can land any more: the call's timeout after "creating",
-- then the provider's lag (SETTLE_S). Rows waiting on a batch when the run
-- is stopped are left for the resume: the batch stays with the provider.
local sched = require("orch.sched")
local json = require("orch.json")
local store = require("orch.store")
local pricing = require("orch.pricing")
local batch_api = require("orch.batch_api")

local M = { TICK = 0.2, MAX_CONCURRENCY = 10000, DEFAULT_ATTEMPTS = 3, MAX_POLL_S = 300, SETTLE_S = 30 }

--- concurrency() -> rows in flight by default in batch mode: a row waiting
--- on a batch costs a suspended coroutine and nothing else, and only rows
--- in flight can fill batches (llm.concurrency or --concurrency overrides).
function M.concurrency()
  return M.MAX_CONCURRENCY
end

local function now_ms()
  return store.now_ms()
end

-- Records one batch event in the store; the batcher goes on only once it
-- is durable. -> true | nil, err
local function record(B, kind, data)
  local ok, err = B.st:event_add(B.run.id, kind, json.encode(data))
  if not ok then
    return nil, string.format("cannot record batch %d in the store: %s", data.batch, tostring(err))
  end
  local notify = kind == "batch" and B.run.notify_batch
  if notify then
    notify(data)
  end
  return true
end

-- Hands res to every row waiting on key.
local function deliver(B, key, res)
  local list = B.waiters[key]
  B.waiters[key], B.req[key], B.live[key], B.attempts[key] = nil, nil, nil, nil
  for _, w in ipairs(list or {}) do
    w.res = res
    sched.unpark(w.task)
  end
end

local function queue(B, key)
  if #B.pending == 0 then
    B.pending_since = sched.now()
  end
  B.pending[#B.pending + 1] = key
end

-- A reply from a batch: into the journal, then to the rows.
local function succeeded(B, key, res, rec)
  local u = res.usage or {}
  local model = res.model or B.cfg.model or B.cfg.provider
  if B.run.journal then
    B.run.journal.put(key, { provider = B.cfg.provider, model = model, response = res.text,
      tokens_in = u.input or 0, tokens_out = u.output or 0,
      cost_usd = pricing.batch_cost(model, u.input or 0, u.output or 0, B.cfg.prices, B.cfg.batch_prices),
      latency_ms = (now_ms() - (rec.submitted_ms or now_ms())) })
  end
  deliver(B, key, { text = res.text, usage = res.usage, batch = rec.id, attempts = (B.attempts[key] or 0) + 1 })
end

-- An entry that came back without a reply: sent again in a later batch
-- while attempts remain, else synchronously (batch_fallback = "sync") or
-- the row gets the provider's error. -> true when it is sent again.
local function failed(B, key, err, resend)
  B.live[key] = nil
  if not B.waiters[key] then
    return false -- its row is not running (a resumed batch): it asks again when it does
  end
  local n = (B.attempts[key] or 0) + 1
  B.attempts[key] = n
  if resend and n < B.max_attempts then
    queue(B, key)
    return true
  end
  if B.cfg.batch_fallback == "sync" then
    deliver(B, key, { sync = true })
  else
    deliver(B, key, { err = string.format("%s (after %d batch attempt%s)", err, n, n == 1 and "" or "s") })
  end
  return false
end

-- A request that was never sent (no batch holds it): queued again as is.
local function unsent(B, key)
  B.live[key] = nil
  if B.waiters[key] then
    queue(B, key)
  end
end

-- The keys of batch rec that are still its own.
local function own_keys(B, rec)
  local keys = {}
  for _, k in ipairs(rec.keys) do
    if B.live[k] == rec then
      keys[#keys + 1] = k
    end
  end
  return keys
end

-- A batch is over: its reservation goes back, the store says so once
-- the replies it brought are committed to the journal (else a crash in
-- between would leave a batch marked ended whose replies are lost: a
-- resume re-attaches to it instead).
local function close(B, rec, status, figures)
  B.open[rec.seq], B.unknown[rec.seq] = nil, nil
  if rec.est and B.run.budget then
    B.run.budget.release(rec.est)
  end
  local d = { batch = rec.seq, state = "ended", id = rec.id, status = status }
  for k, v in pairs(figures or {}) do
    d[k] = v
  end
  local ok, err = B.st:journal_flush()
  if not ok then
    B.log(0, string.format("warning: batch %d: cannot commit its replies to the journal (%s); a resume "
      .. "downloads them again", rec.seq, tostring(err)), "warn")
    return
  end
  record(B, "batch", d)
end

-- Hands a batch's results to their rows; entries with no result are sent again.
local function finish(B, rec, status, results)
  local seen, n = {}, { succeeded = 0, failed = 0, resent = 0 }
  for _, res in ipairs(results) do
    local key = type(res.custom_id) == "string" and res.custom_id:match("^orch%-(%x+)$")
    if key and B.live[key] == rec and not seen[key] then
      seen[key] = true
      if res.text then
        n.succeeded = n.succeeded + 1
        succeeded(B, key, res, rec)
      else
        n.failed = n.failed + 1
        n.resent = n.resent + (failed(B, key, res.err, res.resend) and 1 or 0)
      end
    end
  end
  for _, key in ipairs(own_keys(B, rec)) do
    n.failed = n.failed + 1
    n.resent = n.resent + (failed(B, key, "not finished when the batch ended (" .. status .. ")", true) and 1 or 0)
  end
  close(B, rec, status, n)
  B.log(0, string.format("batch %d (%s) %s: %d ok, %d without a reply, %d sent again", rec.seq, rec.id or "?",
    status, n.succeeded, n.failed, n.resent))
end

-- The batch is known to the provider: wait for it.
local function attach(B, rec, id, view)
  rec.id, rec.state = id, "submitted"
  rec.submitted_ms = rec.submitted_ms or now_ms()
  rec.expected_ms = view and view.expected_ms or rec.expected_ms or (rec.submitted_ms + 86400000)
  rec.interval, rec.next_poll = B.interval, sched.now() + B.interval
  B.unknown[rec.seq], B.open[rec.seq] = nil, rec
  local ok, err = record(B, "batch", { batch = rec.seq, state = "submitted", id = id,
    status = view and view.status or "submitted", requests = #rec.keys, submitted_ms = rec.submitted_ms,
    expected_ms = rec.expected_ms })
  if not ok then
    B.log(0, "warning: " .. err .. "; a resume finds the batch by its metadata", "warn")
  end
  B.log(0, string.format("batch %d: %d requests submitted as %s, expected by %s", rec.seq, #rec.keys, id,
    os.date("!%Y-%m-%d %H:%M:%SZ", rec.expected_ms // 1000)))
end

-- Takes the next batch's requests off the queue, within the provider's
-- limits. -> keys, lines, estimated cost
local function take(B)
  local keys, lines, bytes, est = {}, {}, 0, 0
  local pending, left = B.pending, {}
  local i = 1
  while i <= #pending and #keys < B.size do
    local key = pending[i]
    local q = B.req[key]
    if q and B.waiters[key] and not B.live[key] then
      local line = B.p.batch.line("orch-" .. key, q.built)
      if bytes + #line > B.bytes and #keys > 0 then
        break
      end
      keys[#keys + 1], lines[#lines + 1] = key, line
      bytes, est = bytes + #line, est + q.est
      B.live[key] = true -- taken: not queued twice
    end
    i = i + 1
  end
  for j = i, #pending do
    left[#left + 1] = pending[j]
  end
  B.pending = left
  if #left > 0 then
    B.pending_since = sched.now()
  end
  return keys, lines, est
end

-- The budget's word on a batch before it is sent. -> true | false (the
-- keys are queued again, or their rows stopped when the budget is spent)
local function admitted(B, keys, est)
  local budget = B.run.budget
  if not budget then
    return true
  end
  local ok, why, kind = budget.admit(est)
  if ok then
    return true
  end
  for _, key in ipairs(keys) do
    B.live[key] = nil
    if kind == "stop" then
      deliver(B, key, { budget = why })
    else
      queue(B, key) -- batches in flight hold the room: wait for one to end
    end
  end
  return false
end

-- Sends the next batch: its keys recorded first, then "creating", then
-- the create call, then its id.
local function submit(B)
  local keys, lines, est = take(B)
  if #keys == 0 or not admitted(B, keys, est) then
    return
  end
  local seq = B.next_seq
  B.next_seq = seq + 1
  local rec = { seq = seq, keys = keys, est = est, state = "prepared" }
  for _, k in ipairs(keys) do
    B.live[k] = rec
  end
  local ok, err = record(B, "batch_requests", { batch = seq, provider = B.cfg.provider, keys = keys })
  if not ok then
    if B.run.budget then
      B.run.budget.release(est)
    end
    for _, k in ipairs(keys) do
      deliver(B, k, { err = err })
    end
    return
  end
  local meta = { orch_run = B.run.id, orch_batch = tostring(seq) }
  local id, view_or_err, definite = B.p.batch.submit(B.api, lines, meta, function(file_id)
    rec.state, rec.at_ms = "creating", now_ms()
    B.api.once = true -- the create call: never sent twice
    return record(B, "batch", { batch = seq, state = "creating", file_id = file_id, at_ms = rec.at_ms })
  end)
  B.api.once = nil
  if id then
    return attach(B, rec, id, view_or_err)
  elseif definite then -- refused: nothing was created
    close(B, rec, "not_submitted", { error = view_or_err })
    for _, k in ipairs(keys) do
      failed(B, k, view_or_err, true)
    end
  else
    rec.sent_ms = now_ms() -- the create call is over: nothing more of it leaves this process
    rec.next_try = sched.now() + B.interval
    B.unknown[seq] = rec
    B.log(0, string.format("batch %d: cannot tell whether it was created (%s); looking for it before sending "
      .. "its requests again", seq, tostring(view_or_err)), "warn")
  end
end

-- One look at a submitted batch; its results once it has ended.
local function poll(B, rec)
  local p = B.p
  local view, err = p.batch.poll(B.api, rec.id)
  local t = sched.now()
  if view and view.status ~= rec.status then
    rec.status = view.status
    record(B, "batch", { batch = rec.seq, state = "polled", id = rec.id, status = view.status, counts = view.counts })
  end
  if view and view.ended then
    local results, rerr = p.batch.results(B.api, view)
    if results then
      return finish(B, rec, view.status, results)
    end
    err = rerr
  end
  if err then
    B.log(1, string.format("batch %d (%s): %s; asking again", rec.seq, rec.id, err))
  end
  rec.interval = math.min(rec.interval * 1.5, B.max_poll)
  rec.next_poll = t + rec.interval
end

-- Whether a create call whose answer was lost can no longer create its
-- batch: the provider has had its lag since the call's last byte could
-- leave (the call's end in this process; after a restart, the moment the
-- earlier process's call would have timed out).
local function settled(B, rec)
  return now_ms() >= (rec.sent_ms or (rec.at_ms + B.call_ms)) + B.lag_ms
end

-- A batch that may or may not exist (the create call's answer was lost):
-- found by its metadata (OpenAI), or every batch created since then is
-- waited for and its results claimed by custom_id (Anthropic).
local function resolve(B, rec)
  local p = B.p
  if p.batch.find then
    local id, err = p.batch.find(B.api, { orch_run = B.run.id, orch_batch = tostring(rec.seq) }, rec.at_ms)
    if id then
      B.log(0, string.format("batch %d: found as %s", rec.seq, id))
      return attach(B, rec, id, nil)
    elseif id == false and settled(B, rec) then
      close(B, rec, "not_submitted")
      for _, k in ipairs(own_keys(B, rec)) do
        unsent(B, k)
      end
      return
    end
    B.log(1, string.format("batch %d: %s", rec.seq, err and ("cannot list batches yet: " .. err)
      or "not found yet; a create call sent just before a crash may still be on its way"))
  else
    local views, err = p.batch.since(B.api, rec.at_ms)
    local waiting = views == nil
    for _, v in ipairs(views or {}) do
      waiting = waiting or not v.ended
    end
    if not waiting and settled(B, rec) then -- no create call still on its way
      local all, n = {}, 0
      for _, v in ipairs(views) do
        local results, rerr = p.batch.results(B.api, v)
        if not results then
          err, all = rerr, nil
          break
        end
        for _, r in ipairs(results) do
          all[#all + 1] = r
        end
        n = n + 1
      end
      if all then
        B.log(0, string.format("batch %d: claiming its requests from the %d batch(es) created since", rec.seq, n))
        rec.state = "claimed"
        return finish(B, rec, "claimed", all)
      end
    end
    B.log(1, string.format("batch %d: waiting for the batches created since %s to end%s", rec.seq,
      os.date("!%H:%M:%S", rec.at_ms // 1000), err and (": " .. err) or ""))
  end
  rec.next_try = sched.now() + B.interval
end

-- The batches of an earlier process of this run, from the store's events.
local function replay(B)
  local evs = B.st:event_list(B.run.id) or {}
  local recs, maxseq = {}, 0
  for _, ev in ipairs(evs) do
    if ev.type == "batch_requests" or ev.type == "batch" then
      local ok, d = pcall(json.decode, ev.data or "")
      if ok and type(d) == "table" and math.tointeger(d.batch) then
        local rec = recs[d.batch] or { seq = d.batch, keys = {} }
        recs[d.batch] = rec
        maxseq = math.max(maxseq, d.batch)
        if ev.type == "batch_requests" then
          rec.keys, rec.state = d.keys, "prepared"
        else
          rec.state, rec.id = d.state, d.id or rec.id
          rec.status, rec.at_ms = d.status or rec.status, d.at_ms or rec.at_ms
          rec.submitted_ms, rec.expected_ms = d.submitted_ms or rec.submitted_ms, d.expected_ms or rec.expected_ms
        end
      end
    end
  end
  B.next_seq = maxseq + 1
  return recs
end

-- Re-attaches to the run's batches that had not ended.
local function reattach(B)
  local n = 0
  for seq, rec in pairs(replay(B)) do
    if rec.state ~= "ended" then
      for _, k in ipairs(rec.keys) do
        B.live[k] = rec
      end
      if rec.id then
        rec.interval, rec.next_poll = B.interval, 0
        B.open[seq] = rec
        n = n + 1
      elseif rec.state == "creating" then
        rec.next_try = 0
        B.unknown[seq] = rec
        n = n + 1
      else
        close(B, rec, "not_submitted") -- recorded, never sent: its rows queue their requests again
        for _, k in ipairs(rec.keys) do
          B.live[k] = nil
        end
      end
    end
  end
  if n > 0 then
    B.log(0, string.format("re-attaching to %d batch(es) of run %s", n, B.run.id))
  end
end

-- A stop (SIGINT/SIGTERM): the rows waiting on batches end now and run
-- again on resume; the batches stay with the provider.
local function stop_all(B)
  local rows, batches = 0, 0
  for _ in pairs(B.open) do
    batches = batches + 1
  end
  B.stopped = "stopped while its request waits for a provider batch; a resume re-attaches to the batch"
  for key, list in pairs(B.waiters) do
    rows = rows + #list
    deliver(B, key, { stop = B.stopped })
  end
  B.run.batch_stop = true
  B.log(0, string.format("%d row(s) waiting on %d batch(es) stop here; the batches stay with the provider and "
    .. "`orch resume %s` re-attaches to them", rows, batches, B.run.id))
end

-- One turn of the batcher: batches to find, to send, to poll.
local function turn(B)
  local t = sched.now()
  for _, rec in pairs(B.unknown) do
    if rec.next_try <= t then
      resolve(B, rec)
    end
  end
  if #B.pending > 0 and (#B.pending >= B.size or t - B.pending_since >= B.window) then
    submit(B)
  end
  for _, rec in pairs(B.open) do
    if rec.next_poll <= sched.now() then
      poll(B, rec)
    end
  end
end

-- The batcher task's body.
local function loop(B)
  while true do
    if sched.signals() > 0 then
      return stop_all(B)
    end
    local ok, err = pcall(turn, B)
    if not ok then
      B.stopped = "the batcher failed: " .. tostring(err)
      B.log(-1, B.stopped, "error")
      for key in pairs(B.waiters) do
        deliver(B, key, { err = B.stopped })
      end
      return
    end
    sched.sleep(M.TICK)
  end
end

-- The run's batcher, made (and the batches of an earlier process
-- re-attached) by the first batched call. run: the rows' rt.
local function batcher(run, cfg, p, built)
  local B = run.batcher
  if B then
    return B
  end
  B = { run = run, cfg = cfg, p = p, st = run.store, log = run.log or function() end,
    api = batch_api.new(p, cfg, built), size = math.min(cfg.batch_size or p.batch.max_requests, p.batch.max_requests),
    bytes = p.batch.max_bytes, window = cfg.batch_window or 10, interval = cfg.poll_interval or 30,
    max_attempts = cfg.max_attempts or M.DEFAULT_ATTEMPTS, pending = {}, pending_since = 0, req = {},
    waiters = {}, live = {}, attempts = {}, open = {}, unknown = {}, next_seq = 1 }
  B.max_poll = math.max(B.interval, M.MAX_POLL_S)
  -- a create call whose answer was lost (or sent just before a crash) may
  -- still create its batch: until the call's own timeout has passed (one
  -- attempt: batch_api does not send it again), then the provider's lag
  -- (SETTLE_S) in acting on a request it has received. Only then is a
  -- batch not found taken as never created and its requests sent again.
  B.call_ms, B.lag_ms = (cfg.timeout or 300) * 1000, M.SETTLE_S * 1000
  run.batcher = B
  reattach(B)
  sched.spawn(loop, B)
  return B
end

--- await(ctx, cfg, p, key, built, est) -> res: waits (the row's coroutine
--- only) for the reply to the request built whose journal key is key. res
--- is { text, usage, batch, attempts } | { err } | { sync = true } (send it
--- synchronously) | { budget = why } | { stop = why }.
function M.await(ctx, cfg, p, key, built, est)
  local run = ctx._run
  if not run.store then
    error("ctx:llm: llm.batch needs a run with a store (orch run)", 0)
  end
  local B = batcher(run, cfg, p, built)
  if B.stopped then
    return { stop = B.stopped }
  end
  local w = { task = sched.current() }
  local list = B.waiters[key]
  if list then
    list[#list + 1] = w
  else
    B.waiters[key] = { w }
    B.req[key] = { built = built, est = est }
    if not B.live[key] then
      queue(B, key)
    end
  end
  repeat
    sched.park()
  until w.res
  return w.res
end

M.take, M.submit, M.poll = take, submit, poll

--- summaries(events) -> the run's batches, oldest first, as its events
--- record them: { batch, id, state, status, requests, counts,
--- submitted_ms, expected_ms, succeeded, failed, resent } (for `orch status`).
--- acc (optional, as returned last time): carries on from earlier events, so
--- a reader that polls (orch serve) folds in only the events since.
--- -> list, acc
function M.summaries(events, acc)
  acc = acc or { by = {}, list = {} }
  local by, list = acc.by, acc.list
  for _, ev in ipairs(events or {}) do
    if ev.type == "batch_requests" or ev.type == "batch" then
      local ok, d = pcall(json.decode, ev.data or "")
      if ok and type(d) == "table" and math.tointeger(d.batch) then
        local b = by[d.batch]
        if not b then
          b = { batch = d.batch, state = "prepared" }
          by[d.batch], list[#list + 1] = b, b
        end
        if ev.type == "batch_requests" then
          b.requests, b.provider = type(d.keys) == "table" and #d.keys or 0, d.provider
        else
          for _, k in ipairs({ "state", "id", "status", "counts", "submitted_ms", "expected_ms", "succeeded", "failed",
            "resent", "error" }) do
            if d[k] ~= nil then
              b[k] = d[k]
            end
          end
        end
      end
    end
  end
  return list, acc
end

local function counts_text(c)
  local parts = {}
  for _, k in ipairs({ "completed", "succeeded", "failed", "errored", "expired", "canceled", "processing" }) do
    if type(c) == "table" and tonumber(c[k]) and c[k] > 0 then
      parts[#parts + 1] = string.format("%d %s", c[k], k)
    end
  end
  return #parts > 0 and (", " .. table.concat(parts, ", ")) or ""
end

--- status_lines(summaries) -> { label, value } pairs for `orch status`:
--- a total, then each batch not yet ended and the last few that have.
function M.status_lines(list)
  if #list == 0 then
    return {}
  end
  local open = 0
  for _, b in ipairs(list) do
    open = open + (b.state ~= "ended" and 1 or 0)
  end
  local lines = { { "batches", string.format("%d, %d not ended", #list, open) } }
  for i, b in ipairs(list) do
    if b.state ~= "ended" or i > #list - 3 then
      local t = function(ms)
        return ms and os.date("!%Y-%m-%d %H:%M:%SZ", ms // 1000) or "?"
      end
      local v = string.format("%s %s, %d requests%s", b.id or "(no id yet)", b.status or b.state, b.requests or 0,
        b.state == "ended" and b.succeeded and string.format(", %d ok, %d without a reply, %d sent again",
          b.succeeded, b.failed or 0, b.resent or 0) or counts_text(b.counts))
      if b.submitted_ms then
        v = v .. string.format("; submitted %s, expected by %s", t(b.submitted_ms), t(b.expected_ms))
      end
      lines[#lines + 1] = { "batch " .. b.batch, v }
    end
  end
  return lines
end

M.record, M.deliver, M.queue, M.finish, M.attach, M.failed, M.unsent, M.own_keys, M.close =
  record, deliver, queue, finish, attach, failed, unsent, own_keys, close

return M
