-- Runs busted inside the orch binary, so specs exercise the embedded
-- modules and C bindings exactly as workflows see them:
--   orch lua tests/busted_runner.lua tests/spec/sched_spec.lua
-- Specs share tests/spec/helpers.lua through require("helpers").
local dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = dir .. "/spec/?.lua;" .. package.path
require("busted.runner") { standalone = false }
