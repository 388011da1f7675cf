-- orch.serve_live: reading a running run's live figures back (see
-- orch.metrics for what the run writes), for `orch status` and the
-- dashboard.
local fmt = require("orch.fmt")
local json = require("orch.json")

local M = {}

-- the figures a run's record also holds, as of its last checkpoint
local COUNTERS = { "rows_done", "rows_ok", "rows_failed", "rows_dropped", "rows_defaulted", "llm_calls", "tokens_in",
  "tokens_out", "cost_usd" }

--- read(st, run) -> the run's live figures (with updated_ms) while it is
--- running, else nil. Counters behind the run's record (a checkpoint
--- written since) are taken from the record.
function M.read(st, run)
  if run.status ~= "running" then
    return nil
  end
  local text, ms = st:live_get(run.id)
  if not text then
    return nil
  end
  local ok, f = pcall(json.decode, text)
  if not ok or type(f) ~= "table" then
    return nil
  end
  f.updated_ms = ms
  if (f.rows_done or 0) < (run.rows_done or 0) then
    -- written before the last checkpoint: its counters are the record's
    for _, k in ipairs(COUNTERS) do
      f[k] = run[k == "cost_usd" and "cost_usd" or k] or f[k]
    end
    if f.rows_total and f.rows_total > 0 then
      f.share = math.min(f.rows_done / f.rows_total, 1)
    end
  end
  return f
end

local function eta(s)
  s = math.floor(s)
  if s >= 3600 then
    return string.format("%dh%02dm", s // 3600, s % 3600 // 60)
  end
  return string.format("%dm%02ds", s // 60, s % 60)
end

--- text(f) -> "2,831 of 4,000 rows (71%), 930 rows/s, 20 in flight, ..."
function M.text(f)
  local unit = f.unit or "rows"
  local parts = {
    string.format("%s%s %s%s", fmt.count(f.rows_done or 0), f.rows_total and (" of " .. fmt.count(f.rows_total)) or "",
      unit, f.share and string.format(" (%.0f%%)", f.share * 100) or ""),
    string.format("%s %s/s", fmt.count(f.rows_per_s or 0), unit),
    string.format("%d in flight", f.rows_in_flight or 0),
    string.format("%s failed", fmt.count(f.rows_failed or 0)),
    string.format("%s calls, %s", fmt.count(f.llm_calls or 0), fmt.usd(f.cost_usd or 0)),
  }
  if (f.retries or 0) > 0 then
    parts[#parts + 1] = string.format("%d retries (%d on 429)", f.retries, f.http_429 or 0)
  end
  if (f.journal_hits or 0) > 0 then
    parts[#parts + 1] = string.format("%d from the journal", f.journal_hits)
  end
  if f.eta_s then
    parts[#parts + 1] = "ETA " .. eta(f.eta_s)
  end
  parts[#parts + 1] = "as of " .. fmt.ago(f.updated_ms)
  return table.concat(parts, ", ")
end

return M
