-- providers_spec.lua -- the HTTP providers' fast paths give what their
-- plain paths give: parse_body(text) as parse(json.decode(text)).
local json = require("orch.json")

local providers = {
  openai = {
    p = require("orch.providers.openai"),
    reply = '{"id":"c1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant",'
      .. '"content":"caf\\u00e9"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":8,'
      .. '"total_tokens":20}}',
    odd = { '{"choices":[]}', '{"choices":{"1":{"message":{"content":"x"}}}}', '{"choices":[{"message":{"content":7}}]}',
      '{"choices":[{"message":{"content":"x"}}],"usage":[1,2]}', '{"choices":[{"message":{"content":"x"}}],"usage":'
      .. '{"prompt_tokens":"12","completion_tokens":null}}', '{"choices":[{"message":{"content":"a"}}],"choices":[{}]}',
      '{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":1.5e1,"completion_tokens":{"n":1}}}',
      "[1,2]", "[]", '"text"', "12", "null", "{}" },
  },
  anthropic = {
    p = require("orch.providers.anthropic"),
    reply = '{"id":"m1","type":"message","role":"assistant","content":[{"type":"text","text":"Hello, "},'
      .. '{"type":"tool_use","id":"t"},{"type":"text","text":"world"}],"stop_reason":"end_turn",'
      .. '"usage":{"input_tokens":10,"output_tokens":3}}',
    odd = { '{"content":[]}', '{"content":"text"}', '{"content":[{"type":"image"}]}', '{"content":[{"type":"text",'
      .. '"text":"x"}],"usage":{"input_tokens":"4"}}', '{"content":[{"type":"text","text":"x"}],"usage":7}',
      '{"content":{"1":{"type":"text","text":"x"}}}', "[]", "true", "{}" },
  },
}

-- what the plain path gives: false when the text is not a JSON object or array
local function plain(p, text)
  local ok, d = pcall(json.decode, text)
  if not ok or type(d) ~= "table" then
    return { false, n = 1 }
  end
  return table.pack(p.parse(d))
end

for name, c in pairs(providers) do
  describe("orch.providers." .. name .. ".parse_body", function()
    it("reads a reply as parse reads the decoded reply", function()
      local text, usage = c.p.parse_body(c.reply)
      assert.are.same({ text, usage }, { c.p.parse(json.decode(c.reply)) })
      assert.is_string(text)
      assert.is_number(usage.input)
    end)

    it("agrees with parse on replies of other shapes, and says false where decode fails", function()
      for _, text in ipairs(c.odd) do
        assert.are.same(plain(c.p, text), table.pack(c.p.parse_body(text)), text)
      end
      assert.are.same({ false, n = 1 }, table.pack(c.p.parse_body("<html>bad gateway</html>")))
    end)

    it("agrees with parse on damaged replies", function()
      local state = 99
      local function rnd(n)
        state = (state * 1103515245 + 12345) % 2147483648
        return state % n
      end
      local bytes = { "{", "}", "[", "]", '"', "\\", ",", ":", "1", "e", "\200", " " }
      local seen = { [true] = 0, [false] = 0 }
      for _ = 1, 2000 do
        local t = c.reply
        for _ = 1, rnd(2) + 1 do
          local at = rnd(#t) + 1
          local b = bytes[rnd(#bytes) + 1]
          t = rnd(2) == 0 and (t:sub(1, at - 1) .. b .. t:sub(at + 1)) or (t:sub(1, at - 1) .. t:sub(at + 1))
        end
        local want = plain(c.p, t)
        seen[want[1] ~= false] = seen[want[1] ~= false] + 1
        assert.are.same(want, table.pack(c.p.parse_body(t)), t)
      end
      assert.is_true(seen[true] > 100 and seen[false] > 100)
    end)
  end)
end

describe("an HTTP provider's build", function()
  local openai = require("orch.providers.openai")
  local anthropic = require("orch.providers.anthropic")

  it("gives each request of one llm table the same URL and headers, built once", function()
    local cfg = { provider = "openai", model = "m", base_url = "http://h:1/v1//", api_key = "k1", headers = { ["x-a"] = "1" } }
    local a = openai.build({ prompt = "hi", model = "m" }, cfg)
    local b = openai.build({ prompt = "ho", model = "m", temperature = 0.5 }, cfg)
    assert.are.equal("http://h:1/v1/chat/completions", a.url)
    assert.are.same({ ["content-type"] = "application/json", authorization = "Bearer k1", ["x-a"] = "1" }, a.headers)
    assert.are.equal(a.header_set, b.header_set)
    assert.are.equal("userdata", type(a.header_set))
    assert.are.equal('{"messages":[{"content":"hi","role":"user"}],"model":"m"}', a.body)
    assert.are.equal('{"messages":[{"content":"ho","role":"user"}],"model":"m","temperature":0.5}', b.body)
    cfg.api_key = "k2" -- a new key, a new base or new headers: built anew
    local c = openai.build({ prompt = "hi", model = "m" }, cfg)
    assert.are.equal("Bearer k2", c.headers.authorization)
    assert.are_not.equal(a.header_set, c.header_set)
    cfg.headers = { ["x-b"] = "2" }
    local d = openai.build({ prompt = "hi", model = "m" }, cfg)
    assert.are.same({ ["content-type"] = "application/json", authorization = "Bearer k2", ["x-b"] = "2" }, d.headers)
    local cfg2 = { provider = "anthropic", model = "m", base_url = "http://h:1/v1", api_key = "k", version = "v9" }
    local e = anthropic.build({ prompt = "hi", model = "m", system = "s" }, cfg2)
    assert.are.equal("http://h:1/v1/messages", e.url)
    assert.are.same({ ["content-type"] = "application/json", ["anthropic-version"] = "v9", ["x-api-key"] = "k" }, e.headers)
    assert.are.equal('{"max_tokens":1024,"messages":[{"content":"hi","role":"user"}],"model":"m","system":"s"}', e.body)
    assert.are.equal(e.header_set, anthropic.build({ prompt = "x", model = "m" }, cfg2).header_set)
  end)

  it("anthropic: body(req) is build's body, and a build given it sends it", function()
    local anthropic = require("orch.providers.anthropic")
    local cfg = { provider = "anthropic", model = "m", base_url = "http://h:1/v1", api_key = "k" }
    for i, req in ipairs({ { prompt = "hi", model = "m" }, { prompt = "p", model = "m", system = "s", json = true,
      temperature = 0.5, max_tokens = 9 }, { model = "m", messages = { { role = "system", content = "x" },
      { role = "user", content = "a" } } } }) do
      local body = anthropic.build(req, cfg).body
      assert.are.equal(body, anthropic.body(req), i)
      assert.are.equal(body, anthropic.build(req, cfg, anthropic.body(req)).body, i)
    end
    assert.are.equal('{"max_tokens":1024,"messages":[{"content":"hi","role":"user"}],"model":"m"}',
      anthropic.body({ prompt = "hi", model = "m" }))
  end)
  it("openai: the body is json.encode of the request's table, byte for byte, and fails as it does", function()
    local json = require("orch.json")
    local openai = require("orch.providers.openai")
    local cfg = { provider = "openai", model = "m", base_url = "http://h:1/v1", api_key = "k" }
    -- the body as the provider built it before writing the common one directly
    local function table_body(req)
      local msgs = {}
      if req.system then
        msgs[1] = { role = "system", content = req.system }
      end
      if req.messages then
        for _, m in ipairs(req.messages) do
          msgs[#msgs + 1] = { role = m.role, content = m.content }
        end
      else
        msgs[#msgs + 1] = { role = "user", content = req.prompt }
      end
      local body = { model = req.model, messages = setmetatable(msgs, json.array_mt), temperature = req.temperature,
        max_tokens = req.max_tokens }
      if req.json then
        body.response_format = { type = "json_object" }
      end
      return json.encode(body)
    end
    local reqs = {
      { prompt = "hi", model = "m" },
      { prompt = "", model = "gpt-4o-mini" },
      { prompt = 'q"u\\o\n\t\1 é 😀 </script>', model = "m2" },
      { prompt = "p", model = "m", system = "be brief" },
      { prompt = "p", model = "m", system = "" },
      { prompt = "p", model = "m", max_tokens = 64 },
      { prompt = "p", model = "m", max_tokens = 64.0 },
      { prompt = "p", model = "m", temperature = 0 },
      { prompt = "p", model = "m", temperature = 0.7 },
      { prompt = "p", model = "m", temperature = 1e-7 },
      { prompt = "p", model = "m", json = true },
      { prompt = "p", model = "m", system = "s", json = true, temperature = 0.2, max_tokens = 10 },
      { prompt = "p", model = "m", json = false },
      { model = "m", messages = { { role = "user", content = "a" }, { role = "assistant", content = "b" } } },
      { model = "m", system = "s", messages = { { role = "user", content = "a" } } },
      { prompt = 5, model = "m" },
      { prompt = "p", model = "m", system = { "x" } },
      { prompt = { { type = "text", text = "t" } }, model = "m" },
      { prompt = "p" },
      { prompt = "p", model = "m" }, -- the model before again
    }
    for i, req in ipairs(reqs) do
      assert.are.equal(table_body(req), openai.build(req, cfg).body, i)
      -- body alone (what a journal lookup hashes) and a build given it: the same bytes
      assert.are.equal(table_body(req), openai.body(req), i)
      local built = openai.build(req, cfg, openai.body(req))
      assert.are.same({ table_body(req), "http://h:1/v1/chat/completions" }, { built.body, built.url }, i)
    end
    local bad = {
      { prompt = "bad \255 byte", model = "m" },
      { prompt = "p", model = "m", system = "\192" },
      { prompt = "p", model = "m", temperature = 0 / 0 },
      { prompt = "p", model = "m", max_tokens = math.huge },
      { prompt = "p", model = "\255" },
    }
    for i, req in ipairs(bad) do
      local ok1, e1 = pcall(table_body, req)
      local ok2, e2 = pcall(openai.build, req, cfg)
      local ok3, e3 = pcall(openai.body, req)
      assert.is_false(ok1, i)
      assert.is_false(ok2, i)
      assert.are.same({ false, e2 }, { ok3, e3 }, i)
      -- the same message; the position is the line that called json.encode
      assert.are.equal(e1:gsub("^[^:]+:%d+: ", ""), e2:gsub("^lua/orch/providers/openai%.lua:%d+: ", ""), i)
    end
  end)

  it("text_body(prompt, model) is body's for the prompt alone, byte for byte, and fails as it does", function()
    local prompts = { "", "hi", 'q"u\\o\n\t\0\31 é 😀', string.rep("long ", 2000), 5, 2.5 }
    local models = { "m", "gpt-4o-mini", "m", 'm"odel', "é" } -- one model again, then others
    for _, name in ipairs({ "openai", "anthropic" }) do
      local p = require("orch.providers." .. name)
      for _, model in ipairs(models) do
        for i, prompt in ipairs(prompts) do
          local req = { prompt = prompt, model = model, json = false }
          assert.are.equal(p.body(req), p.text_body(prompt, model), name .. " " .. model .. " " .. i)
        end
      end
      for i, bad in ipairs({ { "bad \255", "m" }, { "p", "\255" }, { {}, "m" }, { "p", 5 } }) do
        local ok1, e1 = pcall(p.body, { prompt = bad[1], model = bad[2], json = false })
        local ok2, e2 = pcall(p.text_body, bad[1], bad[2])
        if ok1 then -- a number for a model: body writes it, and so does text_body
          assert.are.same({ true, e1 }, { ok2, e2 }, name .. " " .. i)
        else
          assert.are.same({ false, e1 }, { ok2, e2 }, name .. " " .. i)
        end
      end
      assert.are.equal(p.body({ prompt = "hi", model = "m", json = false }), p.text_body("hi", "m")) -- after them
    end
  end)

  it("orch.llm.register: text_body goes with build and body", function()
    local llm = require("orch.llm")
    local function parse() end
    local function fails(provider)
      local ok, err = pcall(llm.register, "tb", provider)
      assert.is_false(ok)
      assert.matches("provider 'tb': text_body%(prompt, model%) goes with build%(req, cfg, body%) and body%(req, cfg%)",
        err)
    end
    fails({ call = function() end, text_body = function() end })
    fails({ build = function() end, parse = parse, text_body = function() end })
    fails({ build = function() end, parse = parse, body = function() end, text_body = "x" })
    llm.register("tb", { build = function() end, parse = parse, body = function() end, text_body = function() end })
    llm.providers.tb = nil
  end)

  it("orch.llm.register: a text_body that does not write body's bytes is not used", function()
    local llm = require("orch.llm")
    local openai = require("orch.providers.openai")
    -- made from openai with its body changed: the inherited text_body would write openai's
    local quote = require("orch.json").quote
    local custom = setmetatable({ body = function(req) return '{"q":' .. quote(req.prompt) .. "}" end },
      { __index = openai })
    llm.register("custom_tb", custom)
    assert.is_false(llm.providers.custom_tb.text_body)
    llm.register("custom_tb", custom) -- registered again: text_body false is none
    assert.is_false(llm.providers.custom_tb.text_body)
    llm.register("same_tb", openai) -- openai's own writes body's bytes: kept
    assert.are.equal("function", type(llm.providers.same_tb.text_body))
    local throws = setmetatable({ body = function(_, cfg) return cfg.x.y end }, { __index = openai })
    llm.register("throws_tb", throws) -- a body that cannot be asked without its cfg: not used either
    assert.is_false(llm.providers.throws_tb.text_body)
    llm.providers.custom_tb, llm.providers.same_tb, llm.providers.throws_tb = nil, nil, nil
    openai.name = "openai"
  end)
end)
