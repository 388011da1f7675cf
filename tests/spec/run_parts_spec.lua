-- run_parts_spec.lua -- the parts of the row driver (lua/orch/run.lua and
-- lua/orch/run/*.lua): how on_error is read, for rows and steps alike, and
-- that each part stays small enough to read. The behaviour of a whole run
-- is the e2e scenarios' (on_error.sh, durable.sh, steps.sh, ...).
local orch = require("orch")
local outcome = require("orch.run.outcome")

-- The driver's files, as the build embeds them (core/embed.cmake).
local PARTS = { "run.lua", "run/files.lua", "run/services.lua", "run/outcome.lua", "run/checkpoint.lua",
  "run/driver.lua", "run/progress.lua", "steps.lua" }

-- { "file:line: n lines" } for each function of path longer than max lines.
-- A function runs from the line that opens it to the next line with its
-- indentation that starts with `end` (the code is formatted: stylua).
local function long_functions(path, max)
  local lines = {}
  for line in io.lines(path) do
    lines[#lines + 1] = line
  end
  local long = {}
  for i, line in ipairs(lines) do
    local code = line:gsub('"[^"]*"', ""):gsub("'[^']*'", ""):gsub("%-%-.*$", "")
    local after = code:match("%f[%w_]function%f[^%w_](.*)$")
    if after and not after:find("%f[%w_]end%f[^%w_]") then
      local indent = #line:match("^%s*")
      local last
      for j = i + 1, #lines do
        if #lines[j]:match("^%s*") == indent and lines[j]:find("^%s*end%f[^%w_]") then
          last = j
          break
        end
      end
      assert(last, path .. ":" .. i .. ": a function with no end at its indentation")
      if last - i + 1 > max then
        long[#long + 1] = string.format("%s:%d: %d lines", path, i, last - i + 1)
      end
    end
  end
  return long
end

describe("orch.run.outcome.parse", function()
  it("reads a plain policy: no retry, no fallback, the input not kept", function()
    for _, p in ipairs({ "skip", "fail" }) do
      local oe = outcome.parse(p)
      assert.are.same({ retries = 0, after = p, keep_input = false }, oe)
    end
    assert.are.same({ retries = 0, after = "skip", keep_input = false }, outcome.parse(nil))
  end)

  it("reads orch.retry(n [, after]): n tries more, then after; the input kept for them", function()
    local oe = outcome.parse(orch.retry(3, "fail"))
    assert.are.equal(3, oe.retries)
    assert.are.equal("fail", oe.after)
    assert.is_nil(oe.fallback)
    assert.is_true(oe.keep_input)
    assert.are.equal("skip", outcome.parse(orch.retry(1)).after)
  end)

  it("reads orch.default, alone or after the retries: its value is the fallback", function()
    local fn = function(row)
      return row
    end
    local d = outcome.parse(orch.default(fn))
    assert.are.equal(0, d.retries)
    assert.are.equal(fn, d.fallback)
    assert.is_true(d.keep_input)
    local r = outcome.parse(orch.retry(2, orch.default({ label = "?" })))
    assert.are.equal(2, r.retries)
    assert.are.same({ label = "?" }, r.fallback)
    assert.are.equal("default", r.after.policy)
  end)

  it("is what a step's retries are counted against (steps.lua reads on_error through it)", function()
    local src = assert(io.open("lua/orch/steps.lua")):read("a")
    assert.is_truthy(src:find("outcome.parse(spec.on_error).retries", 1, true))
    assert.is_nil(src:find("p.policy == \"retry\"", 1, true))
  end)
end)

describe("the row driver's parts", function()
  it("have no function longer than 80 lines", function()
    local long = {}
    for _, f in ipairs(PARTS) do
      for _, l in ipairs(long_functions("lua/orch/" .. f, 80)) do
        long[#long + 1] = l
      end
    end
    assert.are.same({}, long)
  end)

  it("are all embedded: each loads by its module name", function()
    for _, f in ipairs(PARTS) do
      local name = "orch." .. f:gsub("%.lua$", ""):gsub("/", ".")
      assert.are.equal("table", type(require(name)), name)
    end
  end)
end)
