-- Runs busted inside the orch binary, so specs exercise the embedded
-- modules and C bindings exactly as workflows see them:
--   orch lua tests/busted_runner.lua tests/spec/sched_spec.lua
require "busted.runner" { standalone = false }
