-- orch.stage: ready-made stages. A stage is a function(row, ctx) -> row
-- (nil drops the row) or a table { name =, run = function(row, ctx) }.
local check = require("orch.check")

local M = {}

-- Splits "Classify {{ review }} of {{product.name}}" into literal strings
-- and field paths ({ "product", "name" }).
local function compile(template)
  local parts = {}
  local pos = 1
  while true do
    local s, e, name = template:find("{{%s*([^{}]-)%s*}}", pos)
    if s == nil then
      break
    end
    if s > pos then
      parts[#parts + 1] = template:sub(pos, s - 1)
    end
    if not name:match("^[%a_][%w_]*[%w_%.]*$") then
      check.fail("orch.stage.prompt: template placeholder {{%s}} is not a field name", name)
    end
    local path = {}
    for seg in name:gmatch("[^%.]+") do
      path[#path + 1] = seg
    end
    parts[#parts + 1] = path
    pos = e + 1
  end
  if pos <= #template then
    parts[#parts + 1] = template:sub(pos)
  end
  return parts
end

local json = require("orch.json")

-- The text of one part of a compiled template for row: a literal as it
-- is, a field path's value (tables as JSON, whole floats without ".0").
local function piece(p, row)
  if type(p) == "string" then
    return p
  end
  local v = row
  if #p == 1 and type(v) == "table" then -- {{field}}: most placeholders
    v = v[p[1]]
  else
    for _, seg in ipairs(p) do
      if type(v) ~= "table" then
        v = nil
        break
      end
      v = v[seg]
    end
  end
  if v == nil then
    error(string.format("template field {{%s}} is missing from the row", table.concat(p, ".")), 0)
  end
  local t = type(v)
  if t == "string" then
    return v
  elseif t == "table" then
    return json.encode(v)
  elseif math.type(v) == "float" and v == math.floor(v) and math.abs(v) < 2 ^ 53 then
    return string.format("%d", v) -- JSON numbers decode as floats: 3, not 3.0
  end
  return tostring(v)
end

-- Templates of up to three parts (a field with text around it) are
-- joined without a table: one per row was most of the rendering.
local function render(parts, row)
  local n = #parts
  if n == 2 then
    return piece(parts[1], row) .. piece(parts[2], row)
  elseif n == 3 then
    return piece(parts[1], row) .. piece(parts[2], row) .. piece(parts[3], row)
  elseif n == 1 then
    return piece(parts[1], row)
  end
  local out = {}
  for i = 1, n do
    out[i] = piece(parts[i], row)
  end
  return table.concat(out)
end
M.render = render
M.compile = compile

-- renderer(parts) -> function(row) -> render(parts, row): the shapes a
-- prompt template nearly always has (one field, alone or with text before
-- and after it) made into a closure once per stage, so a row whose field
-- is a string costs one index and one concatenation (render walks the
-- parts and calls piece for each). Any other value, and any other shape,
-- goes through piece and render: the same text and the same errors.
local function renderer(parts)
  local n = #parts
  local a, b, c = parts[1], parts[2], parts[3]
  local function field(p)
    return type(p) == "table" and #p == 1 and p[1]
  end
  local fa, fb = field(a), field(b)
  if n == 1 and fa then
    return function(row)
      local v = type(row) == "table" and row[fa]
      return type(v) == "string" and v or piece(a, row)
    end
  elseif n == 2 and type(a) == "string" and fb then
    return function(row)
      local v = type(row) == "table" and row[fb]
      return a .. (type(v) == "string" and v or piece(b, row))
    end
  elseif n == 2 and fa and type(b) == "string" then
    return function(row)
      local v = type(row) == "table" and row[fa]
      return (type(v) == "string" and v or piece(a, row)) .. b
    end
  elseif n == 3 and type(a) == "string" and fb and type(c) == "string" then
    return function(row)
      local v = type(row) == "table" and row[fb]
      return a .. (type(v) == "string" and v or piece(b, row)) .. c
    end
  end
  return function(row)
    return render(parts, row)
  end
end
M.renderer = renderer

local prompt_keys = {
  -- the request
  template = "string", system = "string", model = "string", temperature = "number", max_tokens = "integer",
  -- the reply
  into = "string", json = "boolean", schema = "table",
  -- the stage
  name = "string", critical = "boolean",
}

--- orch.stage.prompt{ template = "... {{field}} ...", into = "field", json = false, ... }:
--- renders the template from the row, calls ctx:llm and stores the reply
--- (a decoded table when json or schema is set) in row[into].
function M.prompt(opts)
  check.options("orch.stage.prompt", opts, prompt_keys)
  if opts.template == nil then
    check.fail("orch.stage.prompt: 'template' is required")
  end
  local parts = compile(opts.template)
  local render_row = renderer(parts)
  local into = opts.into or "output"
  local req = {
    system = opts.system,
    json = opts.json,
    schema = opts.schema,
    model = opts.model,
    temperature = opts.temperature,
    max_tokens = opts.max_tokens,
  }
  local stage = {
    name = opts.name or ("prompt -> " .. into),
    needs_llm = true,
    critical = opts.critical,
  }
  local plain = next(req) == nil -- only a prompt: no copy of req a row
  -- The row's request when the stage sets request options: theirs and the prompt.
  local function request(row)
    local r = {}
    for k, v in pairs(req) do
      r[k] = v
    end
    r.prompt = render_row(row)
    return r
  end
  function stage.run(row, ctx)
    -- the request is built in the call's own argument, not kept in a local:
    -- the prompt is not held here while the row waits for its reply. A
    -- plain prompt goes through a Context's llm_text: the reply's text
    -- without the info table this stage would not read.
    local value, info
    local llm_text = plain and ctx.llm_text
    if llm_text then
      value, info = llm_text(ctx, render_row(row))
    else
      value, info = ctx:llm(plain and { prompt = render_row(row) } or request(row))
    end
    if value == nil then
      error(info, 0)
    end
    row[into] = value
    return row
  end
  return setmetatable(stage, check.Spec)
end

return M
