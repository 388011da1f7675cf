-- orch.fmt: how figures, times and tables read, shared by the run's log
-- and the CLI so a budget, a cost, a count and a suggestion print the same
-- everywhere.
local store = require("orch.store")

local M = {}

--- usd(x) -> "$1.25", "$0.50", "$0.001", "$0.00012": two decimals from a
--- dollar up, and below that enough digits for two significant ones, so a
--- $0.001 budget never prints as "$0.00".
function M.usd(x)
  x = tonumber(x) or 0
  local a = math.abs(x)
  if a == 0 or a >= 1 then
    return string.format("$%.2f", x)
  end
  local digits = math.max(2, math.ceil(-math.log(a, 10)) + 1)
  local s = string.format("%." .. math.min(digits, 12) .. "f", x)
  s = s:gsub("(%.%d%d%d-)0+$", "%1")
  return "$" .. s
end

--- count(n) -> "1,234,567": a whole number with thousands separators
--- (fractions are dropped).
function M.count(n)
  local s = tostring(math.floor(n))
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

--- when(ms) -> "2026-11-25 10:00:00" in local time, "-" for none (nil or 0).
function M.when(ms)
  if ms == nil or ms == 0 then
    return "-"
  end
  return os.date("%Y-%m-%d %H:%M:%S", ms // 1000)
end

--- ago(ms) -> "42 s ago", "12 min ago", "3.5 h ago": how long before now.
function M.ago(ms)
  local s = (store.now_ms() - ms) / 1000
  if s < 120 then
    return string.format("%.0f s ago", s)
  elseif s < 7200 then
    return string.format("%.0f min ago", s / 60)
  end
  return string.format("%.1f h ago", s / 3600)
end

--- columns(out, header, rows): writes header and rows (lists of values)
--- to out as columns two spaces apart, each as wide as its widest value;
--- the last column is not padded.
function M.columns(out, header, rows)
  local widths = {}
  for i, h in ipairs(header) do
    widths[i] = #h
  end
  for _, r in ipairs(rows) do
    for i, v in ipairs(r) do
      widths[i] = math.max(widths[i] or 0, #tostring(v))
    end
  end
  local function line(r)
    local parts = {}
    for i, v in ipairs(r) do
      parts[i] = i == #r and tostring(v) or string.format("%-" .. widths[i] .. "s", tostring(v))
    end
    out:write(table.concat(parts, "  "), "\n")
  end
  line(header)
  for _, r in ipairs(rows) do
    line(r)
  end
end

--- fields(out, lines): writes { label, value } pairs to out, one a line,
--- the labels padded to 12 columns ("run          r-1").
function M.fields(out, lines)
  for _, l in ipairs(lines) do
    out:write(string.format("%-12s %s\n", l[1], l[2]))
  end
end

return M
