-- orch.serve_fleet: what `orch serve` shows of a run's workers (orch
-- worker: leases in the store) and of its provider batches (llm.batch:
-- recorded as `batch_requests` / `batch` events), for /api/runs/ID and
-- /metrics. Depends on orch.worker and orch.batch for the figures, so the
-- dashboard and `orch status` say the same thing.
--
-- Batches live in the run's events, which may be millions long: serve
-- keeps, per run, the batch summaries folded so far and the event id it
-- has read up to, and reads only the events after that (a page at a time
-- through the indexed event_page), so a poll of a long run costs its new
-- events only, and memory holds summaries, not the requests' keys.
local batch = require("orch.batch")
local worker = require("orch.worker")

local M = {}

M.PAGE = 5000 -- events read a query while catching up with a run's batch records
M.MAX_RUNS = 1000 -- runs whose batch records are kept between requests (more than /metrics shows)

-- per store (weak: a closed store's go with it), run id -> { after = last event id read, acc = the batch
-- summaries folded so far (orch.batch.summaries) }; n: runs held
local caches = setmetatable({}, { __mode = "k" })

-- The run's batch summaries, the events read on from where the last request
-- stopped. -> list | nil, err
local function batch_list(st, id)
  local cache = caches[st]
  if cache == nil or cache.n >= M.MAX_RUNS and cache.runs[id] == nil then
    cache = { n = 0, runs = {} } -- bounded: start over rather than grow with every run ever shown
    caches[st] = cache
  end
  local c = cache.runs[id]
  if c == nil then
    c = { after = 0 }
    cache.runs[id], cache.n = c, cache.n + 1
  end
  while true do
    local page, err = st:event_page(id, c.after, 0, M.PAGE, false)
    if page == nil then
      return nil, err
    end
    c.list, c.acc = batch.summaries(page, c.acc) -- a batch_requests event's keys are counted, not kept
    if #page > 0 then
      c.after = page[#page].id
    end
    if #page < M.PAGE then
      return c.list
    end
  end
end

--- batches(st, run) -> list of { batch, id, provider, state, status, requests, counts, submitted_ms,
--- expected_ms, succeeded, failed, resent, error }, oldest first (empty when the run used no batch
--- API) | nil, err.
function M.batches(st, run)
  return batch_list(st, run.id)
end

--- workers(st, run) -> nil when the run is not a worker run, else { leases = { done, taken, free,
--- total }, workers = { { name, live, lease, rows, rows_per_s }, ... }, timeout_s } | nil, err.
function M.workers(st, run)
  if not worker.is_worker_run(run) then
    return nil
  end
  return worker.workers(st, run)
end

-- ---- /metrics: per-run gauges of workers, leases and batches ----

local function esc(s)
  return (tostring(s):gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub('"', '\\"'))
end

local FAMILIES = {
  { "orch_run_workers", "Workers of a worker run by liveness (live: holds a lease with a fresh heartbeat).",
    function(e)
      local live, all = 0, 0
      for _, w in ipairs(e.workers.workers) do
        all = all + 1
        live = live + (w.live and 1 or 0)
      end
      return { { 'state="live"', live }, { 'state="gone"', all - live } }
    end, "workers" },
  { "orch_run_leases", "Leases of a worker run by state.", function(e)
    local l = e.workers.leases
    return { { 'state="done"', l.done }, { 'state="taken"', l.taken }, { 'state="free"', l.free } }
  end, "workers" },
  { "orch_run_batches", "Provider batches of a run by state (ended or open).", function(e)
    local open = 0
    for _, b in ipairs(e.batches) do
      open = open + (b.state ~= "ended" and 1 or 0)
    end
    return { { 'state="open"', open }, { 'state="ended"', #e.batches - open } }
  end, "batches" },
  { "orch_run_batch_requests", "Requests in a run's provider batches by state (open: in batches not ended).",
    function(e)
      local open, ended = 0, 0
      for _, b in ipairs(e.batches) do
        if b.state == "ended" then
          ended = ended + (b.requests or 0)
        else
          open = open + (b.requests or 0)
        end
      end
      return { { 'state="open"', open }, { 'state="ended"', ended } }
    end, "batches" },
}

--- metrics(st, runs) -> the exposition text of the families above for those runs (gauges; a run
--- appears in the worker families only when it is a worker run, in the batch ones only when it
--- recorded a batch); "" when none has any.
function M.metrics(st, list)
  local entries = {}
  for _, r in ipairs(list) do
    local e = { run = r, workers = M.workers(st, r), batches = M.batches(st, r) or {} }
    e.batches = #e.batches > 0 and e.batches or nil
    if e.workers or e.batches then
      entries[#entries + 1] = e
    end
  end
  local out = {}
  for _, f in ipairs(FAMILIES) do
    local lines = {}
    for _, e in ipairs(entries) do
      if e[f[4]] then
        local labels = string.format('run_id="%s",workflow="%s",', esc(e.run.id), esc(e.run.name))
        for _, s in ipairs(f[3](e)) do
          lines[#lines + 1] = string.format("%s{%s%s} %d", f[1], labels, s[1], s[2])
        end
      end
    end
    if #lines > 0 then
      out[#out + 1] = string.format("# HELP %s %s\n# TYPE %s gauge\n%s\n", f[1], f[2], f[1], table.concat(lines, "\n"))
    end
  end
  return table.concat(out)
end

return M
