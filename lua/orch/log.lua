-- orch.log: the one logger. Every message orch writes on stderr (the
-- CLI's own, the run's, the built-in observers') goes through a log made
-- here, so -q/-v and --log-json treat them all alike.
--
-- A message has a level; its rank says how chatty it is: -q (verbosity
-- -1) keeps warn and error, the default (0) adds info, -v (1) adds debug.
-- Text is "orch: msg"; --log-json writes one JSON object a line instead:
-- ts_ms, level, run_id when known, msg.
local json = require("orch.json")
local store = require("orch.store")

local M = {}

M.LEVEL_RANK = { error = -1, warn = -1, info = 0, debug = 1 }
local LEVEL_RANK = M.LEVEL_RANK

local KEYS = { "ts_ms", "level", "run_id", "msg" }

--- mask(text) -> text with the password of every URL in it ("scheme://
--- user:PASSWORD@host", "?password=..." / "&password=...") replaced by
--- "***": a store URL given with --db or ORCH_DB may carry one, and no
--- message, log line or printed command may show it.
function M.mask(text)
  text = text:gsub("(%a[%w+.-]*://[^%s/?#@:]*:)[^%s@/]*@", "%1***@")
  -- a message goes on after the URL with ": ": that colon is not the password's
  return (text:gsub("([?&]password=)([^&%s'\"]*)", function(key, value)
    return key .. "***" .. (value:match(":$") and ":" or "")
  end))
end
local mask = M.mask

--- new(verbosity [, as_json [, run_id]]) -> log(rank, msg [, level]):
--- writes msg when its rank <= verbosity (-1 quiet, 0 normal, 1 verbose).
--- A level ("error", "warn", "info", "debug") decides the rank; without
--- one, rank 1 and above is debug and the rest info.
function M.new(verbosity, as_json, run_id)
  return function(rank, msg, level)
    if level then
      rank = LEVEL_RANK[level] or rank
    else
      level = rank >= 1 and "debug" or "info"
    end
    if rank > verbosity then
      return
    end
    msg = mask(tostring(msg))
    if as_json then
      io.stderr:write(json.encode({ ts_ms = store.now_ms(), level = level, msg = msg, run_id = run_id }, KEYS), "\n")
    else
      io.stderr:write("orch: ", msg, "\n")
    end
  end
end

return M
