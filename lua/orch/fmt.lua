-- orch.fmt: how figures read in messages, shared by the run's log and the
-- CLI so a budget, a cost and a suggestion print the same everywhere.
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

return M
