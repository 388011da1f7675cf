-- llm_spec.lua -- orch.stage.prompt templates, orch.llm reply decoding and
-- schema checks, the offline mock provider, and ctx:llm through the scheduler.
local orch = require("orch")
local check = require("orch.check")
local stage = require("orch.stage")
local llm = require("orch.llm")
local mock = require("orch.providers.mock")
local context = require("orch.context")
local sched = require("orch.sched")
local hash = require("orch.hash")
local cjson = require("cjson")

local SELF = debug.getinfo(1, "S").short_src

local h = require("helpers")
local here, catch = h.line, h.catch -- here(): the line it is called from

-- A fake context whose ctx:llm records the request and answers `reply`.
local function recording_ctx(reply)
  local ctx = { requests = {} }
  function ctx:llm(req)
    self.requests[#self.requests + 1] = req
    return reply or "ok", { tokens_in = 1, tokens_out = 1 }
  end
  return ctx
end

-- A run record as orch.run builds it, for context.new.
local function fake_run(llm_cfg)
  return {
    id = "r",
    state = {},
    llm = llm_cfg,
    totals = { llm_calls = 0, tokens_in = 0, tokens_out = 0, cost = 0 },
    log = function() end,
    emit = function() end,
  }
end

-- A fake run of the mock provider whose journal is a table: get finds
-- what put held.
local function journaled_run()
  local run = fake_run { provider = "mock", latency_ms = 0 }
  local held = {}
  run.journal = {
    get = function(key)
      return held[key]
    end,
    put = function(key, _, _, response, tin, tout, cost)
      held[key] = { response = response, tokens_in = tin, tokens_out = tout, cost_usd = cost }
    end,
  }
  return run
end

-- Mock usage: about four characters a token, plus 7 tokens of overhead in.
local function mock_tokens(prompt, text, system)
  return math.max(1, (#prompt + #(system or "") + 3) // 4 + 7), math.max(1, (#text + 3) // 4)
end

describe("orch.stage.prompt", function()
  describe("template compile", function()
    it("splits literals and field paths", function()
      assert.are.same({ "Classify ", { "review" }, " of ", { "product", "name" } },
        stage.compile("Classify {{review}} of {{product.name}}"))
    end)

    it("allows spaces inside the braces", function()
      assert.are.same({ "a ", { "x" }, " b ", { "y", "z" }, "!" }, stage.compile("a {{ x }} b {{  y.z  }}!"))
    end)

    it("keeps a template without placeholders (or with single braces) as one literal", function()
      assert.are.same({ "plain text" }, stage.compile("plain text"))
      assert.are.same({ "json {x} and {{ unclosed" }, stage.compile("json {x} and {{ unclosed"))
      assert.are.same({}, stage.compile(""))
    end)

    it("adjacent placeholders", function()
      assert.are.same({ { "a" }, { "b" } }, stage.compile("{{a}}{{b}}"))
    end)

    it("a placeholder that is not a field name is an error where the stage is built", function()
      local at = here() + 1
      local e = catch(function() local s = orch.stage.prompt { template = "Rate {{1st}} now" } return s end)
      assert.is_true(check.is_error(e))
      assert.are.equal(SELF .. ":" .. at .. ": orch.stage.prompt: template placeholder {{1st}} is not a field name",
        tostring(e))
      e = catch(function() local s = orch.stage.prompt { template = "{{ a b }}" } return s end)
      assert.truthy(tostring(e):find("template placeholder {{a b}} is not a field name", 1, true), tostring(e))
      e = catch(function() local s = orch.stage.prompt { template = "{{}}" } return s end)
      assert.truthy(tostring(e):find("template placeholder {{}} is not a field name", 1, true), tostring(e))
      e = catch(function() local s = orch.stage.prompt { template = "{{a-b}}" } return s end)
      assert.truthy(tostring(e):find("template placeholder {{a-b}} is not a field name", 1, true), tostring(e))
    end)
  end)

  describe("render", function()
    it("fills fields, nested fields, numbers, booleans and tables (as JSON)", function()
      local parts = stage.compile("{{ name }} ({{n}}, {{ok}}) from {{addr.city}}: {{tags}}")
      assert.are.equal('Ann (3, false) from Oslo: ["a","b"]',
        stage.render(parts, { name = "Ann", n = 3, ok = false, addr = { city = "Oslo" }, tags = { "a", "b" } }))
    end)

    it("writes numbers decoded from JSON (floats) as JSON does: 3, not 3.0", function()
      local row = cjson.decode('{"n": 3, "x": 2.5, "big": 1e3}')
      assert.are.equal("3 / 2.5 / 1000", stage.render(stage.compile("{{n}} / {{x}} / {{big}}"), row))
    end)

    it("templates of one, two, three and more parts render alike", function()
      local row = { text = "great", n = 4.0, t = { 1 } }
      assert.are.equal("great", stage.render(stage.compile("{{text}}"), row))
      assert.are.equal("4", stage.render(stage.compile("{{ n }}"), row))
      assert.are.equal("Classify: great", stage.render(stage.compile("Classify: {{text}}"), row))
      assert.are.equal("Classify: great!", stage.render(stage.compile("Classify: {{text}}!"), row))
      assert.are.equal("[1] great 4", stage.render(stage.compile("{{t}} {{text}} {{n}}"), row))
      assert.are.equal("template field {{b}} is missing from the row",
        catch(function() return stage.render(stage.compile("{{text}} {{b}}"), row) end))
    end)

    it("a stage's compiled renderer gives render's text and errors, whatever the shape and value", function()
      local templates = { "{{text}}", "Classify: {{text}}", "{{text}}!", "Classify: {{text}}!", "{{a.b}}",
        "x {{a.b}}", "{{t}} {{text}} {{n}}", "plain", "", "{{text}}{{n}}", "{{ n }} left" }
      local rows = { { text = "great", n = 4.0, t = { 1 }, a = { b = "deep" } }, { text = 3 }, { text = 2.5 },
        { text = true }, { text = { k = "v" } }, { n = 1 }, {}, { a = "flat" },
        setmetatable({}, { __index = function(_, k) return "via " .. k end }) }
      for _, tpl in ipairs(templates) do
        local parts = stage.compile(tpl)
        local fn = stage.renderer(parts)
        for i, row in ipairs(rows) do
          local ok1, v1 = pcall(stage.render, parts, row)
          local ok2, v2 = pcall(fn, row)
          assert.are.same({ ok1, v1 }, { ok2, v2 }, tpl .. " / row " .. i)
        end
      end
    end)

    it("a missing field is an error naming it", function()
      local parts = stage.compile("Classify {{review}}")
      local e = catch(function() return stage.render(parts, { text = "x" }) end)
      assert.are.equal("template field {{review}} is missing from the row", e)
    end)

    it("a missing nested field, or a path through a non-table, names the whole path", function()
      local parts = stage.compile("{{a.b}}")
      assert.are.equal("template field {{a.b}} is missing from the row",
        catch(function() return stage.render(parts, { a = {} }) end))
      assert.are.equal("template field {{a.b}} is missing from the row",
        catch(function() return stage.render(parts, { a = "str" }) end))
      assert.are.equal("template field {{a.b}} is missing from the row",
        catch(function() return stage.render(parts, {}) end))
    end)
  end)

  describe("the stage", function()
    it("is an orch.stage value that needs an llm, named after `into`", function()
      local s = orch.stage.prompt { template = "{{text}}", into = "label" }
      assert.are.equal(check.Spec, getmetatable(s))
      assert.is_true(s.needs_llm)
      assert.are.equal("prompt -> label", s.name)
      assert.are.equal("prompt -> output", orch.stage.prompt { template = "x" }.name)
      assert.are.equal("classify", orch.stage.prompt { template = "x", name = "classify" }.name)
    end)

    it("renders the row, calls ctx:llm with the stage's options and stores the reply in `into`", function()
      local s = orch.stage.prompt { template = "Classify {{ text }} by {{user.name}}", into = "label",
        system = "be terse", model = "m1", temperature = 0.5, max_tokens = 5, json = true,
        schema = { type = "object" } }
      local ctx = recording_ctx("positive")
      local row = { text = "great", user = { name = "bo" } }
      local out = s.run(row, ctx)
      assert.are.equal(row, out)
      assert.are.equal("positive", row.label)
      assert.are.same({ prompt = "Classify great by bo", system = "be terse", model = "m1", temperature = 0.5,
        max_tokens = 5, json = true, schema = { type = "object" } }, ctx.requests[1])
    end)

    it("stores into `output` by default", function()
      local s = orch.stage.prompt { template = "x" }
      local row = s.run({}, recording_ctx("r"))
      assert.are.equal("r", row.output)
    end)

    it("a row missing a field fails with the template message", function()
      local s = orch.stage.prompt { template = "Classify {{review}}", into = "label" }
      local ctx = recording_ctx()
      local e = catch(function() return s.run({ text = "x" }, ctx) end)
      assert.are.equal("template field {{review}} is missing from the row", e)
      assert.are.equal(0, #ctx.requests)
    end)

    it("an llm failure (nil, err) is raised as the row's error", function()
      local s = orch.stage.prompt { template = "x", json = true }
      local ctx = { llm = function() return nil, "the model's reply is not valid JSON (x)" end }
      assert.are.equal("the model's reply is not valid JSON (x)", catch(function() return s.run({}, ctx) end))
    end)

    it("refuses unknown options, wrong types and a missing template at the caller", function()
      local at = here() + 1
      local e = catch(function() local s = orch.stage.prompt { tempalte = "x" } return s end)
      assert.is_true(check.is_error(e))
      local prefix = SELF .. ":" .. at .. ": orch.stage.prompt: unknown key 'tempalte' (did you mean 'template'?)"
      assert.are.equal(prefix, tostring(e):sub(1, #prefix))
      at = here() + 1
      e = catch(function() local s = orch.stage.prompt { into = "x" } return s end)
      assert.are.equal(SELF .. ":" .. at .. ": orch.stage.prompt: 'template' is required", tostring(e))
      at = here() + 1
      e = catch(function() local s = orch.stage.prompt { template = "x", json = "yes" } return s end)
      assert.are.equal(SELF .. ":" .. at .. ": orch.stage.prompt: 'json' must be a boolean, got string", tostring(e))
      at = here() + 1
      e = catch(function() local s = orch.stage.prompt("x") return s end)
      assert.are.equal(SELF .. ":" .. at .. ": orch.stage.prompt expects a table {...}, got string", tostring(e))
    end)
  end)
end)

describe("orch.llm.decode_reply", function()
  it("decodes plain JSON, trimming whitespace", function()
    assert.are.same({ label = "x", n = 2 }, llm.decode_reply('  {"label": "x", "n": 2}\n'))
    assert.are.same({ 1, 2, 3 }, llm.decode_reply("[1,2,3]"))
    assert.are.equal("s", llm.decode_reply('"s"'))
  end)

  it("decodes a ```json fenced reply, with prose around the fence", function()
    assert.are.same({ a = 1 }, llm.decode_reply('```json\n{"a": 1}\n```'))
    assert.are.same({ a = 1 }, llm.decode_reply('Here it is:\n```json\n{"a": 1}\n```\nHope this helps.'))
    assert.are.same({ 1, 2 }, llm.decode_reply("```\n[1, 2]\n```"))
    assert.are.same({ a = 1 }, llm.decode_reply('```json\n{"a": 1}```'))
  end)

  it("reports invalid JSON without the decoder's file:line", function()
    local v, err = llm.decode_reply('{"a": 1')
    assert.is_nil(v)
    assert.are.equal("the model's reply is not valid JSON (unexpected end of input at byte 8)",
      err)
    v, err = llm.decode_reply("I think it is positive")
    assert.is_nil(v)
    assert.are.equal("the model's reply is not valid JSON (", err:sub(1, 37))
    v, err = llm.decode_reply("")
    assert.is_nil(v)
    assert.are.equal("the model's reply is not valid JSON (", err:sub(1, 37))
  end)

  describe("with a schema", function()
    local schema = {
      type = "object",
      required = { "label", "score" },
      properties = {
        label = { type = "string", enum = { "positive", "negative", "neutral" } },
        score = { type = "integer" },
        ok = { type = "boolean" },
        ratio = { type = "number" },
        tags = { type = "array", items = { type = "string" } },
        who = { type = "object", required = { "name" }, properties = { name = { type = "string" } } },
      },
    }
    local prefix = "the model's reply does not match the schema: "

    local function bad(text, msg)
      local v, err = llm.decode_reply(text, schema)
      assert.is_nil(v)
      assert.are.equal(prefix .. msg, err)
    end

    it("accepts a matching object", function()
      local v, err = llm.decode_reply(
        '{"label":"neutral","score":3,"ok":true,"ratio":0.5,"tags":["a","b"],"who":{"name":"x"}}', schema)
      assert.is_nil(err)
      assert.are.same({ label = "neutral", score = 3, ok = true, ratio = 0.5, tags = { "a", "b" }, who = { name = "x" } }, v)
      assert.are.same({ label = "positive", score = 0 }, llm.decode_reply('{"label":"positive","score":0}', schema))
    end)

    it("accepts 3.0 as an integer and ignores null optional fields", function()
      assert.are.same({ label = "positive", score = 3 }, llm.decode_reply('{"label":"positive","score":3.0}', schema))
      local v = llm.decode_reply('{"label":"positive","score":1,"ok":null}', schema)
      assert.are.equal(cjson.null, v.ok)
    end)

    it("checks the top-level type", function()
      bad('"positive"', "$: expected object, got string")
      bad("42", "$: expected object, got number")
    end)

    it("checks required fields", function()
      bad('{"label":"positive"}', "$: missing required field 'score'")
      bad('{"score":1}', "$: missing required field 'label'")
    end)

    it("checks property types", function()
      bad('{"label":"positive","score":1.5}', "$.score: expected integer, got number")
      bad('{"label":"positive","score":"1"}', "$.score: expected integer, got string")
      bad('{"label":"positive","score":1,"ok":"yes"}', "$.ok: expected boolean, got string")
      bad('{"label":"positive","score":1,"ratio":"0.5"}', "$.ratio: expected number, got string")
      bad('{"label":1,"score":1}', "$.label: expected string, got number")
      bad('{"label":["positive"],"score":1}', "$.label: expected string, got array")
    end)

    it("checks enums", function()
      bad('{"label":"Positive","score":1}', "$.label: Positive is not one of the allowed values")
    end)

    it("checks nested objects", function()
      bad('{"label":"positive","score":1,"who":{}}', "$.who: missing required field 'name'")
      bad('{"label":"positive","score":1,"who":{"name":5}}', "$.who.name: expected string, got number")
      bad('{"label":"positive","score":1,"who":"x"}', "$.who: expected object, got string")
    end)

    it("checks array items", function()
      bad('{"label":"positive","score":1,"tags":["a",2]}', "$.tags[2]: expected string, got number")
      bad('{"label":"positive","score":1,"tags":"a"}', "$.tags: expected array, got string")
    end)

    it("tells a JSON object from an array", function()
      local v, err = llm.decode_reply('{"a": 1}', { type = "array" })
      assert.is_nil(v, "an object was accepted where the schema asks for an array")
      assert.truthy(err and err:find("expected array", 1, true), err)
      v, err = llm.decode_reply("[1, 2]", { type = "object" })
      assert.is_nil(v, "an array was accepted where the schema asks for an object")
      assert.truthy(err and err:find("expected object", 1, true), err)
    end)

    it("works on a fenced reply", function()
      assert.are.same({ label = "negative", score = 9 },
        llm.decode_reply('```json\n{"label":"negative","score":9}\n```', schema))
    end)
  end)
end)

describe("orch.llm.schema_error", function()
  local se = llm.schema_error
  it("returns nil for a matching value", function()
    assert.is_nil(se({ type = "string" }, "x", "$"))
    assert.is_nil(se({ type = "integer" }, 3, "$"))
    assert.is_nil(se({ type = "number" }, 3, "$"))
    assert.is_nil(se({ enum = { "a", 1 } }, 1, "$"))
    assert.is_nil(se({}, { 1 }, "$"))
    assert.is_nil(se({ type = "object", properties = { a = { type = "string" } } }, { a = cjson.null }, "$"))
  end)

  it("names the path and what was expected", function()
    assert.are.equal("$: expected string, got number", se({ type = "string" }, 5, "$"))
    assert.are.equal("$: expected boolean, got string", se({ type = "boolean" }, "true", "$"))
    assert.are.equal("$: expected number, got boolean", se({ type = "number" }, true, "$"))
    assert.are.equal("$: expected string, got object", se({ type = "string" }, {}, "$"))
    assert.are.equal("$: expected object, got array", se({ type = "object" }, { 1, 2 }, "$"))
    assert.are.equal("$: expected array, got object", se({ type = "array" }, { a = 1 }, "$"))
    assert.are.equal("$: expected integer, got number", se({ type = "integer" }, 0.5, "$"))
    assert.are.equal("$: c is not one of the allowed values", se({ enum = { "a", "b" } }, "c", "$"))
    assert.are.equal("$: missing required field 'a'", se({ type = "object", required = { "a" } }, {}, "$"))
    assert.are.equal("root.a.b: expected integer, got number",
      se({ type = "object", properties = { a = { type = "object", properties = { b = { type = "integer" } } } } },
        { a = { b = 1.5 } }, "root"))
    assert.are.equal("$[3]: expected string, got number",
      se({ type = "array", items = { type = "string" } }, { "a", "b", 3 }, "$"))
    assert.are.equal("$[1].k: expected boolean, got string",
      se({ type = "array", items = { type = "object", properties = { k = { type = "boolean" } } } }, { { k = "no" } }, "$"))
  end)
end)

describe("the mock provider", function()
  local function reply(prompt, extra)
    local req = { prompt = prompt }
    for k, v in pairs(extra or {}) do
      req[k] = v
    end
    return (mock.reply(req))
  end

  it("is deterministic: the same request gives the same text", function()
    local reqs = {
      { prompt = "Classify as one of: a, b or c. Text: hello" },
      { prompt = "Tell me about cats" },
      { prompt = "Extract fields from: Ann, 34", json = true },
      { prompt = "x", json = true, schema = { type = "object", properties = { n = { type = "integer" } } } },
    }
    for _, r in ipairs(reqs) do
      local a = mock.reply(r)
      for _ = 1, 3 do
        assert.are.equal(a, (mock.reply(r)))
      end
    end
    assert.are.equal(reply("Tell me about cats", { model = "m" }), reply("Tell me about cats", { model = "m" }))
  end)

  it("a plain prompt gets a digest that names the prompt's subject", function()
    local text = reply("Tell me about cats")
    assert.truthy(text:match("^mock reply %x%x%x%x%x%x%x%x: Tell me about cats$"), text)
    assert.truthy(reply("Describe: a red bike with a basket"):match("^mock reply %x+: a red bike with a basket$"))
  end)

  it("a summarise prompt gets the first words of the text", function()
    assert.are.equal("the quick brown fox jumps over the lazy dog and more words",
      reply("Summarize: the quick brown fox jumps over the lazy dog and more words here today"))
  end)

  it("picks a label from a 'one of' list", function()
    local labels = { a = true, b = true, c = true }
    for i = 1, 20 do
      local text = reply("Classify as one of: a, b or c. Text: item " .. i)
      assert.is_true(labels[text] ~= nil, "not a label: " .. text)
    end
    local seen = {}
    for i = 1, 30 do
      seen[reply("Pick one of [red|green|blue]. Thing " .. i)] = true
    end
    assert.are.same({ red = true, green = true, blue = true }, seen)
    local sh = reply("Classify as one of [spam|ham].\nMessage: buy now")
    assert.is_true(sh == "spam" or sh == "ham", sh)
  end)

  it("a label list followed by ': text' on the same line yields only the listed labels", function()
    local allowed = { sports = true, politics = true, tech = true }
    for _, t in ipairs { "The match ended 2-1", "Parliament voted today", "New phone released", "x", "y", "z" } do
      local text = reply("Classify the topic as one of: sports, politics or tech: " .. t)
      assert.is_true(allowed[text] ~= nil, "not one of the offered labels: '" .. text .. "'")
    end
  end)

  it("sentiment labels follow the words of the text", function()
    local p = "Classify the sentiment as one of: positive, negative or neutral.\nReview: "
    assert.are.equal("positive", reply(p .. "I love it, excellent"))
    assert.are.equal("negative", reply(p .. "broke after a week, terrible"))
    assert.are.equal("neutral", reply(p .. "it is a chair"))
    local m = "Classify the sentiment as one of: positive, negative, mixed or neutral.\nReview: "
    assert.are.equal("mixed", reply(m .. "great color but it broke"))
  end)

  it("sentiment labels follow the text when it comes after a colon on the same line", function()
    local p = "Classify the sentiment as one of: positive, negative or neutral: "
    assert.are.equal("positive", reply(p .. "I love it, excellent"))
    assert.are.equal("negative", reply(p .. "broke after a week, terrible"))
    assert.are.equal("neutral", reply(p .. "it is a chair"))
    assert.are.equal("mixed", reply("Sentiment, one of: positive, negative or mixed: great color but it broke"))
  end)

  it("does not mistake 'tone of' for 'one of'", function()
    local text = reply("Classify the tone of: I love it, excellent")
    assert.truthy(text:match("^mock reply %x+: I love it, excellent$"), text)
    text = reply("Describe the tone of the review, positive or negative: fine")
    assert.truthy(text:match("^mock reply %x+: fine$"), text)
  end)

  it("reads labels from chat messages too", function()
    local text = mock.reply { messages = { { role = "system", content = "Answer with one of: yes, no." },
      { role = "user", content = "Is the sky blue?" } } }
    assert.is_true(text == "yes" or text == "no", text)
  end)

  it("json = true without a schema returns a valid JSON object", function()
    local text = reply("Tell me about cats", { json = true })
    local v = cjson.decode(text)
    assert.are.equal("table", type(v))
    assert.are.equal("string", type(v.answer))
    assert.are.equal("number", type(v.confidence))
  end)

  it("json = true with labels answers one of them, with a confidence in [0.5, 1)", function()
    local v = cjson.decode(reply("Answer with one of: yes, no.\nQuestion: is water wet", { json = true }))
    assert.is_true(v.answer == "yes" or v.answer == "no", v.answer)
    assert.is_true(v.confidence >= 0.5 and v.confidence < 1)
  end)

  it("a schema yields an object that satisfies it", function()
    local schema = {
      type = "object",
      required = { "label", "count", "flag", "tags", "score", "meta", "note" },
      properties = {
        label = { type = "string", enum = { "x", "y", "z" } },
        count = { type = "integer" },
        flag = { type = "boolean" },
        tags = { type = "array", items = { type = "string" } },
        nums = { type = "array", items = { type = "integer" } },
        score = { type = "number" },
        meta = { type = "object", required = { "id" }, properties = { id = { type = "integer" } } },
        note = { type = "string" },
      },
    }
    for i = 1, 10 do
      local text = reply("Extract the fields from: record " .. i, { json = true, schema = schema })
      local v, err = llm.decode_reply(text, schema)
      assert.is_nil(err, text)
      assert.is_table(v)
      -- cjson decodes every number as a float; the JSON text holds integers
      assert.are.equal(math.floor(v.count), v.count)
      assert.is_true(v.count >= 0 and v.count < 100)
      assert.are.equal(math.floor(v.meta.id), v.meta.id)
      assert.are.equal(math.floor(v.nums[1]), v.nums[1])
      assert.is_nil(text:find('"count":%d+%.'), text)
      assert.is_true(v.score >= 0 and v.score < 1)
      assert.are.equal(1, #v.tags)
      assert.are.equal(1, #v.nums)
    end
    -- the same request gives the same object
    local r = { prompt = "Extract: a", json = true, schema = schema }
    assert.are.equal(mock.reply(r), mock.reply(r))
  end)

  it("a schema's sentiment-like enum follows the words of the text", function()
    local schema = { type = "object", required = { "sentiment" },
      properties = { sentiment = { type = "string", enum = { "positive", "negative", "neutral" } } } }
    local v = cjson.decode(reply("Review: terrible, it broke", { json = true, schema = schema }))
    assert.are.equal("negative", v.sentiment)
    v = cjson.decode(reply("Review: I love it, excellent", { json = true, schema = schema }))
    assert.are.equal("positive", v.sentiment)
  end)

  it("call() counts about four characters a token and sleeps nothing with latency_ms = 0", function()
    local prompt = "Tell me about cats"
    local text, usage = mock.call({ prompt = prompt }, { latency_ms = 0 }, nil)
    local tin, tout = mock_tokens(prompt, text)
    assert.are.same({ input = tin, output = tout }, usage)
    assert.are.equal(12, usage.input) -- (18 + 3) // 4 + 7
    local _, u2 = mock.call({ prompt = prompt, system = "You are terse." }, { latency_ms = 0 }, nil)
    assert.are.equal(15, u2.input) -- (18 + 14 + 3) // 4 + 7
  end)
end)

describe("ctx:llm through the scheduler", function()
  it("returns the text and info, and adds the usage to the run's totals", function()
    local run = fake_run { provider = "mock", latency_ms = 20 }
    local text, info = sched.run(function()
      local ctx = context.new(run, 1, "k")
      return ctx:llm { prompt = "Say hi" }
    end)
    assert.are.equal(text, (mock.reply { prompt = "Say hi", model = "mock" }))
    assert.truthy(text:match("^mock reply %x+: Say hi$"), text)
    local tin, tout = mock_tokens("Say hi", text)
    assert.are.equal(9, tin)
    assert.are.equal(text, info.text)
    assert.are.equal("mock", info.model)
    assert.are.equal("mock", info.provider)
    assert.are.equal(tin, info.tokens_in)
    assert.are.equal(tout, info.tokens_out)
    assert.are.equal(tin + tout, info.tokens)
    assert.is_true(info.tokens_in > 0 and info.tokens_out > 0)
    assert.are.equal((tin * 0.15 + tout * 0.60) / 1e6, info.cost)
    assert.is_true(info.cost > 0)
    assert.is_true(info.latency >= 0.015 and info.latency < 1, "latency " .. info.latency)
    assert.are.equal(1, info.attempts)
    assert.is_false(info.cached)
    -- the live totals are sums; the groups by model and stage are the row's
    -- usage's, added to the checkpointed totals when the row settles
    assert.are.same({ llm_calls = 1, tokens_in = tin, tokens_out = tout, cost = info.cost }, run.totals)
  end)

  it("a row's usage after its first call and after more has the figures and shape of the run's totals", function()
    local run = fake_run { provider = "mock" }
    local ctx = context.new(run, 1, "k")
    ctx.stage = "classify"
    local hit = { text = "t", model = "m1", provider = "mock", tokens_in = 5, tokens_out = 2, tokens = 7, cost = 0,
      saved = 0.25, latency = 0, attempts = 0, cached = true }
    ctx:account(hit)
    local one = { llm_calls = 1, tokens_in = 5, tokens_out = 2, cost = 0, cached_calls = 1, saved = 0.25,
      by_model = { m1 = { calls = 1, tokens = 7, cost = 0 } }, by_stage = { classify = { calls = 1, tokens = 7,
      cost = 0 } } }
    assert.are.same(one, ctx.usage)
    local function sums(u) -- the live totals: u without its groups
      local t = {}
      for k, v in pairs(u) do
        t[k] = type(v) == "number" and v or nil
      end
      return t
    end
    assert.are.same(sums(one), run.totals)
    assert.are.equal("integer", math.type(ctx.usage.cost)) -- a hit's cost stays the integer 0
    local paid = { text = "u", model = "m2", provider = "mock", tokens_in = 3, tokens_out = 1, tokens = 4,
      cost = 0.5, latency = 1, attempts = 3, estimated = true }
    ctx:account(paid)
    local two = { llm_calls = 2, tokens_in = 8, tokens_out = 3, cost = 0.5, cached_calls = 1, saved = 0.25,
      estimated_calls = 1, retries = 2, by_model = { m1 = { calls = 1, tokens = 7, cost = 0 }, m2 = { calls = 1,
      tokens = 4, cost = 0.5 } }, by_stage = { classify = { calls = 2, tokens = 11, cost = 0.5 } } }
    assert.are.same(two, ctx.usage)
    assert.are.same(sums(two), run.totals)
    local ctx2 = context.new(run, 2, "k2") -- a first call that was paid, retried and estimated; no stage
    ctx2:account(paid)
    assert.are.same({ llm_calls = 1, tokens_in = 3, tokens_out = 1, cost = 0.5, estimated_calls = 1, retries = 2,
      by_model = { m2 = { calls = 1, tokens = 4, cost = 0.5 } } }, ctx2.usage)
  end)

  it("add_usage sums a row's usage into the run's totals as a walk of its numbers and tables does", function()
    local function walk(dst, src) -- the generic merge add_usage stands for
      for k, v in pairs(src) do
        if type(v) == "table" then
          dst[k] = dst[k] or {}
          walk(dst[k], v)
        else
          dst[k] = (dst[k] or 0) + v
        end
      end
    end
    local rows = {}
    for i, info in ipairs({
      { model = "m1", tokens_in = 5, tokens_out = 2, cost = 0, saved = 0.25, attempts = 0, cached = true },
      { model = "m2", tokens_in = 3, tokens_out = 1, cost = 0.5, attempts = 3, estimated = true },
      { model = "m1", tokens_in = 1, tokens_out = 1, cost = 0.125, attempts = 1 },
    }) do
      local ctx = context.new(fake_run { provider = "mock" }, i, i)
      ctx.stage = i < 3 and "classify" or nil
      ctx:account(info)
      ctx:account(info)
      rows[i] = ctx.usage
    end
    local fast, slow = { llm_calls = 0, tokens_in = 0, tokens_out = 0, cost = 0 }, {}
    walk(slow, fast)
    for _, u in ipairs(rows) do
      context.add_usage(fast, u)
      walk(slow, u)
      assert.are.same(slow, fast)
    end
    assert.are.equal(6, fast.llm_calls)
    assert.are.same({ calls = 4, tokens = 18, cost = 0.25 }, fast.by_model.m1)
    local restored = { llm_calls = 2, tokens_in = 1, tokens_out = 1, cost = 0 } -- a checkpoint's, no groups yet
    context.add_usage(restored, rows[2])
    assert.are.same({ llm_calls = 4, tokens_in = 7, tokens_out = 3, cost = 1.0, estimated_calls = 2, retries = 4,
      by_model = { m2 = { calls = 2, tokens = 8, cost = 1.0 } }, by_stage = { classify = { calls = 2, tokens = 8,
      cost = 1.0 } } }, restored)
  end)

  it("gives the same info fields for a reply sent and for one the journal holds", function()
    local run = journaled_run()
    local sent, again = sched.run(function()
      local ctx = context.new(run, 1, "k")
      local _, i1 = ctx:llm "journal me"
      local _, i2 = ctx:llm "journal me"
      return i1, i2
    end)
    local keys = require("orch.check").sorted_keys
    assert.are.same({ "attempts", "cached", "cost", "latency", "model", "provider", "text", "tokens", "tokens_in",
      "tokens_out" }, keys(sent))
    assert.are.same({ "attempts", "cached", "cost", "latency", "model", "provider", "saved", "text", "tokens",
      "tokens_in", "tokens_out" }, keys(again))
    assert.are.same({ sent.text, "mock", "mock", sent.tokens_in, sent.tokens_out, sent.tokens, 0, sent.cost, 0, 0,
      true }, { again.text, again.model, again.provider, again.tokens_in, again.tokens_out, again.tokens,
      again.cost, again.saved, again.latency, again.attempts, again.cached })
    assert.are.equal(2, run.totals.llm_calls)
    assert.are.equal(sent.cost, run.totals.cost)
  end)

  it("ctx:llm_text asks the journal for the key ctx:llm asks for (a provider's text_body)", function()
    for _, name in ipairs({ "openai", "anthropic" }) do
      for _, with_reply in ipairs({ false, true }) do
        local run = fake_run { provider = name, model = "m1", base_url = "http://127.0.0.1:9/v1", api_key = "k" }
        local asked = {}
        run.journal = { -- holds every reply: nothing is sent
          get = function(key)
            asked[#asked + 1] = key
            return { response = "held", tokens_in = 3, tokens_out = 2, cost_usd = 0.25 }
          end,
        }
        if with_reply then -- the run's journal: its reply gives the values alone
          run.journal.reply = function(key)
            asked[#asked + 1] = key
            return "held", 3, 2, 0.25
          end
        end
        local got = { sched.run(function()
          local ctx = context.new(run, 1, "k")
          local a = ctx:llm { prompt = 'q"é' }
          local b = ctx:llm_text 'q"é'
          local c = ctx:llm_text "other"
          return a, b, c, ctx.usage
        end) }
        assert.are.same({ "held", "held", "held" }, { got[1], got[2], got[3] })
        assert.are.equal(3, #asked)
        assert.are.equal(asked[1], asked[2], name) -- the same request: the same key
        assert.are_not.equal(asked[1], asked[3], name)
        assert.are.same({ 3, 3, 0.75, 9, 6 }, { got[4].llm_calls, got[4].cached_calls, got[4].saved,
          got[4].tokens_in, got[4].tokens_out })
      end
    end
  end)

  it("ctx:llm_text counts a call as ctx:llm does, sent or from the journal, and returns the text alone", function()
    local function twice(use_text) -- a call sent, then the same answered by the journal
      local run = journaled_run()
      return sched.run(function()
        local out, usages = {}, {}
        for i = 1, 2 do
          local ctx = context.new(run, i, "k" .. i)
          ctx.stage = "classify"
          local a, b
          if use_text then
            a, b = ctx:llm_text "journal me"
          else
            a, b = ctx:llm { prompt = "journal me" }
          end
          out[i] = { a, b == nil }
          usages[i] = ctx.usage
        end
        return out, usages, run.totals
      end)
    end
    local o1, u1, t1 = twice(false)
    local o2, u2, t2 = twice(true)
    assert.are.equal(o1[1][1], o2[1][1])
    assert.are.equal(o1[2][1], o2[2][1])
    assert.are.same({ false, false }, { o1[1][2], o1[2][2] }) -- ctx:llm gives its info
    assert.are.same({ true, true }, { o2[1][2], o2[2][2] }) -- llm_text none
    assert.are.same(u1, u2)
    assert.are.same(t1, t2)
    assert.are.equal(1, t2.cached_calls)
    assert.are.equal(2, t2.llm_calls)
    assert.is_true(u2[1].cost > 0 and u2[2].saved == u2[1].cost)
  end)

  it("reads a replayed reply through journal.reply when the journal has it, as through get", function()
    local run = fake_run { provider = "mock", latency_ms = 0 }
    local held = {}
    local function entry(key)
      local e = held[key]
      return e and { response = e.response, tokens_in = e.tokens_in, tokens_out = e.tokens_out,
        cost_usd = e.cost_usd }
    end
    local asked = {}
    run.journal = {
      get = function(key)
        asked[#asked + 1] = "get"
        return entry(key)
      end,
      put = function(key, _, _, response, tin, tout, cost)
        held[key] = { response = response, tokens_in = tin, tokens_out = tout, cost_usd = cost }
      end,
    }
    local function call()
      return sched.run(function()
        local _, info = context.new(run, 1, "k"):llm "journal me"
        return info
      end)
    end
    local sent = call()
    local by_get = call()
    run.journal.reply = function(key)
      asked[#asked + 1] = "reply"
      local e = entry(key)
      if e then
        return e.response, e.tokens_in, e.tokens_out, e.cost_usd
      end
    end
    local by_reply = call()
    assert.are.same({ "get", "get", "reply" }, asked)
    assert.are.same(by_get, by_reply)
    assert.is_true(by_reply.cached)
    assert.are.equal(sent.cost, by_reply.saved)
    assert.are.equal(3, run.totals.llm_calls)
    assert.are.equal(2, run.totals.cached_calls)
  end)

  it("keys the journal by provider, model and the body sent: the same digest as before", function()
    local run = fake_run { provider = "openai", model = "gpt-4o-mini", base_url = "http://127.0.0.1:9/v1",
      api_key = "k" }
    local keys = {}
    run.journal = {
      reply = function(key)
        keys[#keys + 1] = key
        return "held", 1, 1, 0
      end,
      put = function() end,
    }
    sched.run(function()
      local ctx = context.new(run, 1, "k")
      ctx:llm "Classify: review number 1"
      ctx:llm { prompt = string.rep("long prompt ", 500), system = "sys", temperature = 0.5 }
    end)
    -- the first digest is fixed (hash_spec pins its bytes); the second is the joined text's
    assert.are.same({ "3a58affab9bdd78a5d66cd1c43192d2b", hash.xxh128("openai\0gpt-4o-mini\0"
      .. '{"messages":[{"content":"sys","role":"system"},{"content":"' .. string.rep("long prompt ", 500)
      .. '","role":"user"}],"model":"gpt-4o-mini","temperature":0.5}') }, keys)
  end)

  it("keeps a provider's own reply pick, and drops one a derived provider inherits with its parse", function()
    local openai = llm.providers.openai
    assert.are.equal("function", type(openai.reply_pick))
    local derived = setmetatable({ parse_body = function() return "mine", { input = 1, output = 1 } end },
      { __index = openai })
    llm.register("spec-derived", derived)
    assert.is_false(derived.reply_pick)
    local own = setmetatable({ reply_pick = openai.reply_pick }, { __index = openai })
    llm.register("spec-own-pick", own)
    assert.are.equal(openai.reply_pick, own.reply_pick)
    llm.providers["spec-derived"], llm.providers["spec-own-pick"] = nil, nil
  end)

  it("asks a provider with body(req) for the body alone while the journal may answer, then builds with it", function()
    local run = fake_run { provider = "openai", model = "gpt-4o-mini", base_url = "http://127.0.0.1:9/v1",
      api_key = "k", max_attempts = 1, connect_timeout = 1 }
    local p = llm.providers.openai
    local body, build = p.body, p.build
    local seen = {}
    p.body = function(req, cfg)
      local b = body(req, cfg)
      seen[#seen + 1] = "body " .. b
      return b
    end
    p.build = function(req, cfg, b)
      seen[#seen + 1] = "build " .. tostring(b)
      return build(req, cfg, b)
    end
    local posted
    local http = require("orch.http")
    local post = http.post
    http.post = function(url, headers, b)
      posted = url .. " " .. b
      return nil, "refused"
    end
    local held = { [hash.xxh128_parts("openai", "\0", "gpt-4o-mini", "\0", body({ prompt = "held",
      model = "gpt-4o-mini", json = false }))] = true }
    run.journal = {
      reply = function(key)
        if held[key] then
          return "from the journal", 1, 2, 0.5
        end
      end,
      put = function() end,
    }
    local ok, a, b = pcall(sched.run, function()
      local ctx = context.new(run, 1, "k")
      local t1 = ctx:llm "held"
      local t2, err = ctx:llm "not held"
      return { t1, t2, err }, rawget(ctx, "_usage")
    end)
    p.body, p.build, http.post = body, build, post
    assert(ok, a)
    local sent = '{"messages":[{"content":"not held","role":"user"}],"model":"gpt-4o-mini"}'
    assert.are.same({ 'body {"messages":[{"content":"held","role":"user"}],"model":"gpt-4o-mini"}',
      "body " .. sent, "build " .. sent }, seen)
    assert.are.equal("http://127.0.0.1:9/v1/chat/completions " .. sent, posted)
    assert.are.equal("from the journal", a[1])
    assert.is_nil(a[2])
    assert.are.same({ llm_calls = 1, tokens_in = 1, tokens_out = 2, cost = 0, _model = "gpt-4o-mini",
      _stage = false, cached_calls = 1, saved = 0.5 }, b)
    assert.are.same({ llm_calls = 1, tokens_in = 1, tokens_out = 2, cost = 0, cached_calls = 1, saved = 0.5 },
      run.totals)
  end)

  it("accumulates totals over calls and accepts a string prompt", function()
    local run = fake_run { provider = "mock", latency_ms = 0 }
    local a, b = sched.run(function()
      local ctx = context.new(run, 1, "k")
      local _, i1 = ctx:llm "first prompt"
      local _, i2 = ctx:llm { prompt = "second prompt", system = "sys" }
      return i1, i2
    end)
    assert.are.equal(2, run.totals.llm_calls)
    assert.are.equal(a.tokens_in + b.tokens_in, run.totals.tokens_in)
    assert.are.equal(a.tokens_out + b.tokens_out, run.totals.tokens_out)
    assert.are.equal(a.cost + b.cost, run.totals.cost)
  end)

  it("uses the workflow's model and custom prices", function()
    local run = fake_run { provider = "mock", latency_ms = 0, model = "my-model", prices = { ["my-model"] = { 1e6, 0 } } }
    local text, info = sched.run(function()
      return context.new(run, 1, "k"):llm { prompt = "hello" }
    end)
    assert.are.equal("my-model", info.model)
    assert.are.equal(text, (mock.reply { prompt = "hello", model = "my-model" }))
    assert.are.equal(info.tokens_in * 1.0, info.cost)
    local _, info2 = sched.run(function()
      return context.new(fake_run { provider = "mock", latency_ms = 0, model = "unknown-model" }, 1, "k"):llm "hello"
    end)
    assert.are.equal(0, info2.cost)
  end)

  it("json = true returns a decoded table", function()
    local run = fake_run { provider = "mock", latency_ms = 0 }
    local v, info = sched.run(function()
      return context.new(run, 1, "k"):llm { prompt = "Answer with one of: yes, no.\nQ: ok?", json = true }
    end)
    assert.is_table(v)
    assert.is_true(v.answer == "yes" or v.answer == "no")
    assert.are.equal("string", type(info.text))
    assert.are.same(v, cjson.decode(info.text))
  end)

  it("a schema returns a decoded table that matches it", function()
    local schema = { type = "object", required = { "label", "n" },
      properties = { label = { enum = { "a", "b" } }, n = { type = "integer" } } }
    local v = sched.run(function()
      return context.new(fake_run { provider = "mock", latency_ms = 0 }, 1, "k"):llm { prompt = "x", schema = schema }
    end)
    assert.is_nil(llm.schema_error(schema, v, "$"))
  end)

  it("a reply that fails the schema returns nil and the reason", function()
    llm.register("spec-bad-json", { call = function() return "not json", { input = 1, output = 1 } end })
    local run = fake_run { provider = "spec-bad-json" }
    local v, err = sched.run(function()
      return context.new(run, 1, "k"):llm { prompt = "x", json = true }
    end)
    llm.providers["spec-bad-json"] = nil
    assert.is_nil(v)
    assert.are.equal("the model's reply is not valid JSON (", err:sub(1, 37))
    assert.are.equal(" (after one repair attempt)", err:sub(-27))
    assert.are.equal(2, run.totals.llm_calls) -- the call and its repair were still paid for
  end)

  it("a provider's usage is read under any of its usual names, or estimated when missing", function()
    local usage
    llm.register("spec-usage", { call = function() return "four", usage end })
    local function one()
      local run = fake_run { provider = "spec-usage", model = "x", prices = { x = { 1e6, 2e6 } } }
      local _, info = sched.run(function()
        return context.new(run, 1, "k"):llm { prompt = "abcdefgh", system = "sys" }
      end)
      return info, run
    end
    for _, u in ipairs({ { input = 3, output = 4 }, { input_tokens = 3, output_tokens = 4 },
      { prompt_tokens = 3, completion_tokens = 4 }, { tokens_in = 3, tokens_out = 4 } }) do
      usage = u
      local info = one()
      assert.are.same({ 3, 4, 11.0 }, { info.tokens_in, info.tokens_out, info.cost })
      assert.is_nil(info.estimated)
    end
    usage = nil
    local info, run = one()
    -- "sys" + "abcdefgh": 11 characters, 3 tokens; "four": 1 token
    assert.are.same({ 3, 1, true }, { info.tokens_in, info.tokens_out, info.estimated })
    assert.are.equal(1, run.totals.estimated_calls)
    usage = { input = 5 } -- half a usage: the rest is estimated
    info = one()
    assert.are.same({ 5, 1, true }, { info.tokens_in, info.tokens_out, info.estimated })
    llm.providers["spec-usage"] = nil
  end)

  -- The frames of orch.llm and the pcalls between a provider and the stage
  -- that called ctx:llm: what a row waiting on its reply holds in its stack.
  local function frames_below_provider()
    local llm_src = debug.getinfo(llm.call, "S").source
    local n_llm, n_pcall, level = 0, 0, 3
    while true do
      local f = debug.getinfo(level, "Sf")
      if f == nil or f.source == "@" .. SELF then
        break
      end
      n_llm = n_llm + (f.source == llm_src and 1 or 0)
      n_pcall = n_pcall + (f.func == pcall and 1 or 0)
      level = level + 1
    end
    return n_llm, n_pcall
  end

  it("a waiting call holds two frames of orch.llm, and a pcall only while a budget reservation is held", function()
    local seen
    llm.register("spec-frames", { call = function()
      seen = { frames_below_provider() }
      return "ok", { input = 1, output = 1 }
    end })
    local run = fake_run { provider = "spec-frames" }
    sched.run(function()
      return context.new(run, 1, "k"):llm { prompt = "x" }
    end)
    assert.are.same({ 2, 0 }, seen) -- the exchange and complete: no closure, llm.call returned by a tail call
    run.budget = require("orch.limits").budget(1, nil, run.totals, function() end)
    sched.run(function()
      return context.new(run, 1, "k"):llm { prompt = "x" }
    end)
    assert.are.same({ 2, 1 }, seen) -- the reservation is released however the exchange ends
    assert.are.same({ 0 }, { (run.budget.in_flight()) })
    local text = sched.run(function()
      return context.new(run, 1, "k"):llm { prompt = "x", json = true } -- a json call keeps llm.call for its repair
    end)
    llm.providers["spec-frames"] = nil
    assert.are.same({ 3, 1 }, seen)
    assert.is_nil(text)
  end)

  it("an HTTP provider's request (and its prompt) is not held while the row waits for the reply", function()
    local http = require("orch.providers.http")
    local exchange, weak, alive = http.exchange, setmetatable({}, { __mode = "v" }), nil
    llm.register("spec-built", {
      build = function(r)
        weak[1] = r
        return { url = "http://127.0.0.1:1/", headers = {}, body = cjson.encode({ prompt = r.prompt }) }
      end,
      parse = function() end,
    })
    http.exchange = function(p, built)
      assert.are.equal("spec-built", p.name)
      collectgarbage()
      collectgarbage()
      alive = weak[1] ~= nil
      return "reply of " .. built.body, { input = 1, output = 1 }, 1
    end
    local run = fake_run { provider = "spec-built" }
    local ok, text, info = pcall(sched.run, function()
      return context.new(run, 1, "k"):llm { prompt = string.rep("p", 100) }
    end)
    http.exchange = exchange
    llm.providers["spec-built"] = nil
    assert(ok, text)
    assert.is_false(alive)
    assert.are.equal('reply of {"prompt":"' .. string.rep("p", 100) .. '"}', text)
    assert.are.same({ 1, 1, "x" }, { info.tokens_in, info.tokens_out, info.model == "spec-built" and "x" })
  end)

  it("the journal gets the reply's key, provider, model, text and figures, without an entry table", function()
    local put = {}
    local run = fake_run { provider = "mock", latency_ms = 0 }
    run.journal = { get = function() end, put = function(...) put[#put + 1] = table.pack(...) end }
    local text, info = sched.run(function()
      return context.new(run, 1, "k"):llm { prompt = "Say hi" }
    end)
    assert.are.equal(1, #put)
    local p = put[1]
    assert.are.equal(8, p.n)
    assert.are.equal(32, #p[1])
    assert.are.same({ "mock", "mock", text, info.tokens_in, info.tokens_out, info.cost, "number" },
      { p[2], p[3], p[4], p[5], p[6], p[7], type(p[8]) })
  end)

  it("a provider's wrong return values are named, with the provider", function()
    local ret
    llm.register("spec-wrong", { call = function() return table.unpack(ret) end })
    local function err_of(r)
      ret = r
      local run = fake_run { provider = "spec-wrong" }
      return sched.run(function()
        local ok, e = pcall(function() return context.new(run, 1, "k"):llm "x" end)
        assert.is_false(ok)
        return e
      end)
    end
    assert.are.equal("orch.llm provider 'spec-wrong': call returned number as the reply; return the reply text "
      .. "(a string) and its usage, or nil and an error message", err_of({ 42 }))
    assert.are.equal("orch.llm provider 'spec-wrong': call returned string as usage; return { input = tokens, "
      .. "output = tokens } or nothing (then the tokens are estimated)", err_of({ "t", "lots" }))
    assert.are.equal("orch.llm provider 'spec-wrong': usage.output_tokens must be a whole number of tokens, got -1",
      err_of({ "t", { input_tokens = 1, output_tokens = -1 } }))
    ret = { nil, nil }
    local v, e = sched.run(function()
      return context.new(fake_run { provider = "spec-wrong" }, 1, "k"):llm "x"
    end)
    assert.is_nil(v)
    assert.are.equal("provider 'spec-wrong' failed without saying why (its call returned nil and no message)", e)
    llm.providers["spec-wrong"] = nil
  end)

  it("register checks the provider's shape", function()
    local e = catch(function() llm.register("x", { call = print, options = { 1 } }) end)
    assert.truthy(tostring(e):find("orch.llm.register: provider 'x': options must map names to type names", 1, true),
      tostring(e))
    e = catch(function() llm.register("x", {}) end)
    assert.truthy(tostring(e):find("orch.llm.register: provider 'x' needs call(req, cfg, ctx), or build(req, cfg) "
      .. "and parse(reply)", 1, true), tostring(e))
    assert.is_nil(llm.providers.x)
  end)

  it("unknown keys and wrong types raise at the caller", function()
    local run = fake_run { provider = "mock", latency_ms = 0 }
    local errs = sched.run(function()
      local ctx = context.new(run, 1, "k")
      local out = {}
      local ok, e = pcall(function() local r = ctx:llm { promt = "x" } return r end)
      out[1] = { ok, e, here() - 1 }
      ok, e = pcall(function() local r = ctx:llm { prompt = 5 } return r end)
      out[2] = { ok, e }
      ok, e = pcall(function() local r = ctx:llm {} return r end)
      out[3] = { ok, e }
      ok, e = pcall(function() local r = ctx:llm(5) return r end)
      out[4] = { ok, e }
      return out
    end)
    assert.is_false(errs[1][1])
    assert.are.equal(SELF .. ":" .. errs[1][3] .. ": ctx:llm: unknown key 'promt'", errs[1][2])
    assert.is_false(errs[2][1])
    assert.truthy(errs[2][2]:find("ctx:llm: 'prompt' must be a string, got number", 1, true), errs[2][2])
    assert.is_false(errs[3][1])
    assert.truthy(errs[3][2]:find("ctx:llm: give a prompt or messages", 1, true), errs[3][2])
    assert.is_false(errs[4][1])
    assert.truthy(errs[4][2]:find("ctx:llm expects a table {prompt = ...} or a string, got number", 1, true), errs[4][2])
    assert.are.equal(0, run.totals.llm_calls)
  end)

  it("raises when the workflow has no llm", function()
    local run = fake_run(nil)
    local ok, e = sched.run(function()
      return pcall(function() local r = context.new(run, 1, "k"):llm { prompt = "x" } return r end)
    end)
    assert.is_false(ok)
    assert.truthy(tostring(e):find("ctx:llm: the workflow has no llm = { provider = ... } table", 1, true), tostring(e))
  end)

  it("an orch.stage.prompt runs end to end on the mock", function()
    local s = orch.stage.prompt { template = "Classify the sentiment as one of: positive, negative or neutral.\n"
      .. "Review: {{review}}", into = "sentiment" }
    local run = fake_run { provider = "mock", latency_ms = 1 }
    local row = sched.run(function()
      return s.run({ review = "I love it, excellent" }, context.new(run, 1, "k"))
    end)
    assert.are.equal("positive", row.sentiment)
    assert.are.equal(1, run.totals.llm_calls)
  end)

  it("100 concurrent calls of 100 ms overlap instead of queueing", function()
    local run = fake_run { provider = "mock", latency_ms = 100 }
    local elapsed, results = sched.run(function()
      local start = sched.now()
      for i = 1, 100 do
        sched.spawn(function(n)
          local ctx = context.new(run, n, "k" .. n)
          local text = ctx:llm { prompt = "Classify as one of: a, b or c. Item " .. n }
          return text
        end, i)
      end
      local done = {}
      while #done < 100 do
        local batch = sched.wait()
        if #batch == 0 then
          break
        end
        for _, c in ipairs(batch) do
          done[#done + 1] = c
        end
      end
      return sched.now() - start, done
    end)
    assert.are.equal(100, #results)
    for _, c in ipairs(results) do
      assert.is_true(c.ok, tostring(c.err))
      assert.is_true(c[1] == "a" or c[1] == "b" or c[1] == "c", tostring(c[1]))
    end
    assert.is_true(elapsed >= 0.09, "elapsed " .. elapsed)
    assert.is_true(elapsed < 3, "100 concurrent 100 ms calls took " .. elapsed .. " s")
    assert.are.equal(100, run.totals.llm_calls)
  end)
end)
