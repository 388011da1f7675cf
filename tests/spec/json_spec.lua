-- json_spec.lua -- orch.json: canonical encoder (exact bytes) and exact decoder.
local json = require("orch.json")
local cjson = require("cjson")

local enc = json.encode

local fails_with = require("helpers").fails_with

describe("orch.json.encode", function()
  describe("suffix", function()
    it("appends the third argument to the text, after the order's keys", function()
      assert.equal('{"b":2,"a":1}\n', json.encode({ a = 1, b = 2 }, { "b" }, "\n"))
      assert.equal('[1,2]\r\n', json.encode({ 1, 2 }, nil, "\r\n"))
      assert.equal('{"a":1}', json.encode({ a = 1 }, nil, ""))
    end)
    it("raises on a suffix that is not a string, naming the argument", function()
      local ok, err = pcall(json.encode, { a = 1 }, nil, {})
      assert.is_false(ok)
      assert.matches("bad argument #3 to 'orch.json.encode' %(string expected, got table%)", err)
    end)
  end)
  describe("encoder", function()
    it("makes a sink's encode method: encode(value, order, suffix), self not used", function()
      local line = json.encoder({ "id", "b" }, "\n")
      assert.are.equal('{"id":1,"b":2,"a":0}\n', line(nil, { a = 0, b = 2, id = 1 }))
      assert.are.equal(json.encode({ z = { 1, 2 }, id = "x" }, { "id" }, "\n"), line({}, { z = { 1, 2 }, id = "x" }))
      assert.are.equal('{"a":1}', json.encoder()(nil, { a = 1 }))
      assert.are.equal("[1]", json.encoder(nil, nil)(nil, { 1 }))
      fails_with("cannot encode a function at .f", line, nil, { f = print })
    end)
    it("gives encode's bytes: order keys missing or repeated, the other keys sorted, many keys", function()
      local order = { "id", "zz", "b", "id", "a b" }
      local line = json.encoder(order, "\n")
      local many = { id = 1 }
      for i = 1, 40 do many["k" .. (41 - i)] = i end
      local cases = {
        { id = 1 }, { q = 1, b = 2, ["a b"] = 3, a = { z = 1, id = 2 } }, { x = true, ["é"] = "ü", [""] = 0 },
        many, { [1] = "a", id = 2, b = 3 }, { 1, 2 }, {},
      }
      for _, v in ipairs(cases) do
        assert.are.equal(json.encode(v, order, "\n"), line(nil, v))
      end
      assert.are.equal('{"b":2,"a b":3,"a":{"id":2,"z":1},"q":1}\n', line(nil, cases[2]))
    end)

    it("checks and copies the order and suffix once, when made", function()
      local ok, err = pcall(json.encoder, { "a", 2 })
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'orch.json.encoder' %(order must be an array of strings%)", err)
      ok, err = pcall(json.encoder, nil, {})
      assert.is_false(ok)
      assert.matches("bad argument #2 to 'orch.json.encoder' %(string expected, got table%)", err)
      local order = { "b" }
      local line = json.encoder(order)
      order[1], order[2] = "a", true -- changed after: the copy made then stands
      assert.are.equal('{"b":2,"a":1}', line(nil, { a = 1, b = 2 }))
      assert.are.equal('{"b":2,"1":0,"a":1}', line(nil, { a = 1, b = 2, [1] = 0 }))
      fails_with('duplicate key "1" (integer and string)', line, nil, { b = 1, [1] = 0, ["1"] = 2 })
    end)
  end)
  describe("scalars", function()
    it("encodes booleans and null", function()
      assert.are.equal("true", enc(true))
      assert.are.equal("false", enc(false))
      assert.are.equal("null", enc(json.null))
      assert.are.equal("null", enc(cjson.null))
      assert.are.equal('{"a":null}', enc({ a = cjson.null }))
    end)

    it("encodes integers in decimal", function()
      assert.are.equal("0", enc(0))
      assert.are.equal("1", enc(1))
      assert.are.equal("-42", enc(-42))
      assert.are.equal("9223372036854775807", enc(math.maxinteger))
      assert.are.equal("-9223372036854775808", enc(math.mininteger))
    end)

    it("writes integral floats with a fraction, so they read back as floats", function()
      assert.are.equal("3.0", enc(3.0))
      assert.are.equal("-7.0", enc(-7.0))
      assert.are.equal("1.0", enc(1.0))
      assert.are_not.equal(enc(1), enc(1.0))
      assert.are.equal("9007199254740991.0", enc(2.0 ^ 53 - 1))
      assert.are.equal("-9007199254740991.0", enc(-(2.0 ^ 53) + 1))
      assert.are.equal("9007199254740992.0", enc(2.0 ^ 53))
      assert.are.equal("1e+16", enc(1e16))
    end)

    it("writes -0.0 as 0.0, since -0.0 == 0.0 in Lua", function()
      assert.are.equal("0.0", enc(-0.0))
      assert.are.equal("0.0", enc(0.0))
      assert.are.equal('[0.0,0]', enc({ -0.0, 0 }))
    end)

    it("writes other floats with the shortest of %.15g/%.16g/%.17g that round-trips", function()
      assert.are.equal("1.5", enc(1.5))
      assert.are.equal("0.1", enc(0.1))
      assert.are.equal("-0.25", enc(-0.25))
      assert.are.equal("0.30000000000000004", enc(0.1 + 0.2))
      assert.are.equal("0.3333333333333333", enc(1 / 3))
      assert.are.equal("123456.789", enc(123456.789))
      assert.are.equal("129.99", enc(129.99))
      assert.are.equal("-1.5e-07", enc(-1.5e-7))
      assert.are.equal("1e+300", enc(1e300))
      assert.are.equal("-1e+300", enc(-1e300))
      assert.are.equal("1e+21", enc(1e21))
      assert.are.equal("9.223372036854776e+18", enc(2.0 ^ 63))
      assert.are.equal("1.7976931348623157e+308", enc(1.7976931348623157e308))
    end)

    it("reads every float back exactly", function()
      for _, x in ipairs({ 0.1, 1 / 3, 2 / 3, 1e-300, 5e-324, 1.7976931348623157e308,
                           3.141592653589793, 2.0 ^ 60 + 2.0 ^ 8, -123.456e-10 }) do
        assert.are.equal(x, tonumber(enc(x)))
      end
    end)

    it("refuses NaN and infinities", function()
      fails_with("cannot encode NaN/inf at .", enc, 0 / 0)
      fails_with("cannot encode NaN/inf at .", enc, math.huge)
      fails_with("cannot encode NaN/inf at .", enc, -math.huge)
      fails_with("cannot encode NaN/inf at .x[2]", enc, { x = { 1, 0 / 0 } })
    end)

    it("refuses nil and a missing argument", function()
      fails_with("cannot encode nil at .", enc, nil)
      -- the function name in the message depends on how the module was loaded
      fails_with("bad argument #1 to '", enc)
      fails_with("encode' (value expected)", enc)
    end)
  end)

  describe("strings", function()
    it("passes plain text and UTF-8 through", function()
      assert.are.equal('"hello"', enc("hello"))
      assert.are.equal('""', enc(""))
      assert.are.equal('"caf\195\169 \226\130\172 \240\159\152\128"', enc("café € 😀"))
      assert.are.equal('"a/b"', enc("a/b"))
    end)

    it("escapes quotes, backslashes and control characters", function()
      assert.are.equal([["say \"hi\""]], enc('say "hi"'))
      assert.are.equal([["C:\\tmp\\x"]], enc([[C:\tmp\x]]))
      assert.are.equal([["\b\f\n\r\t"]], enc("\b\f\n\r\t"))
      assert.are.equal([["\u0000\u0001\u001f\u000b"]], enc("\0\1\31\11"))
      assert.are.equal([["a\u007fb"]], enc("a\127b"))
      assert.are.equal([[" ~"]], enc(" ~"))
    end)

    it("escapes a special byte wherever it falls in a long plain run", function()
      -- plain text is skipped eight bytes at a time: each special byte at
      -- each offset of a 19-byte string, and the byte just past each block
      local specials = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\31"] = "\\u001f",
        ["\0"] = "\\u0000", ["\127"] = "\\u007f", [" "] = " ", ["~"] = "~", ["\195\169"] = "\195\169" }
      for c, escaped in pairs(specials) do
        for at = 0, 18 do
          local s = string.rep("a", at) .. c .. string.rep("b", 18 - at)
          assert.are.equal('"' .. string.rep("a", at) .. escaped .. string.rep("b", 18 - at) .. '"', enc(s))
        end
      end
      fails_with("invalid UTF-8 at .", enc, string.rep("a", 15) .. "\233" .. "bb")
      fails_with("invalid UTF-8 at .", enc, string.rep("a", 16) .. "\195")
    end)

    it("refuses strings that are not UTF-8, naming the path", function()
      fails_with("invalid UTF-8 at .", enc, "\255\254")
      fails_with("invalid UTF-8 at .review", enc, { id = 1, review = "caf\233" })
      fails_with("invalid UTF-8 at .a[2]", enc, { a = { "ok", "x\195" } })
      fails_with("invalid UTF-8 in a key at .a", enc, { a = { ["k\128"] = 1 } })
      fails_with("invalid UTF-8 at .", enc, "\192\128")         -- overlong NUL
      fails_with("invalid UTF-8 at .", enc, "\237\160\128")     -- surrogate U+D800
      fails_with("invalid UTF-8 at .", enc, "\244\144\128\128") -- above U+10FFFF
      assert.are.equal('"\244\143\191\191"', enc("\244\143\191\191")) -- U+10FFFF
      assert.are.equal('"\239\187\191x"', enc("\239\187\191x"))       -- BOM
    end)

    it("escapes keys the same way", function()
      assert.are.equal([[{"a\"b":1,"line\nbreak":2,"nul\u0000":3}]],
        enc({ ['a"b'] = 1, ["line\nbreak"] = 2, ["nul\0"] = 3 }))
    end)

    it("handles output larger than the initial buffer", function()
      local long = string.rep("x", 100000)
      assert.are.equal('"' .. long .. '"', enc(long))
      local quotes = string.rep('"', 5000)
      assert.are.equal('"' .. string.rep('\\"', 5000) .. '"', enc(quotes))
      local arr = {}
      for i = 1, 10000 do arr[i] = i end
      assert.are.equal("[" .. table.concat(arr, ",") .. "]", enc(arr))
    end)
  end)

  describe("tables", function()
    it("encodes sequences 1..n as arrays", function()
      assert.are.equal("[1,2,3]", enc({ 1, 2, 3 }))
      assert.are.equal('["a",true,null,1.5]', enc({ "a", true, json.null, 1.5 }))
      assert.are.equal("[[1,[2,[3]]],[]]", enc({ { 1, { 2, { 3 } } }, setmetatable({}, json.array_mt) }))
    end)

    it("encodes an empty table as an object", function()
      assert.are.equal("{}", enc({}))
      assert.are.equal('{"a":{},"b":[{}]}', enc({ a = {}, b = { {} } }))
    end)

    it("sorts object keys byte-wise", function()
      assert.are.equal('{"a":1,"b":2,"c":3}', enc({ c = 3, a = 1, b = 2 }))
      assert.are.equal('{"B":1,"Z":2,"_":3,"a":4,"a_b":5,"ab":6,"b":7,"\195\169":8}',
        enc({ ["\195\169"] = 8, b = 7, ab = 6, a_b = 5, a = 4, _ = 3, Z = 2, B = 1 }))
      assert.are.equal('{"":0,"a":1,"a\\u0000":2,"aa":3}', enc({ aa = 3, ["a\0"] = 2, a = 1, [""] = 0 }))
      assert.are.equal('{"10":1,"2":2,"x":3}', enc({ ["2"] = 2, ["10"] = 1, x = 3 }))
    end)

    it("sorts objects larger than the small-key fast path", function()
      local t, keys = {}, {}
      for i = 1, 200 do
        local k = string.format("k%03d", (i * 37) % 200)
        t[k] = i
        keys[#keys + 1] = k
      end
      table.sort(keys)
      local parts = {}
      for _, k in ipairs(keys) do parts[#parts + 1] = string.format('"%s":%d', k, t[k]) end
      assert.are.equal("{" .. table.concat(parts, ",") .. "}", enc(t))
    end)

    it("encodes nested objects and arrays", function()
      local v = {
        name = "run",
        stats = { ok = 3, failed = 0, ratio = 0.75, tags = { "x", "y" } },
        rows = { { id = 1, text = "a" }, { id = 2, text = "b" } },
      }
      assert.are.equal(
        '{"name":"run","rows":[{"id":1,"text":"a"},{"id":2,"text":"b"}],'
          .. '"stats":{"failed":0,"ok":3,"ratio":0.75,"tags":["x","y"]}}',
        enc(v))
    end)

    it("turns tables that are not sequences into objects with decimal keys", function()
      assert.are.equal('{"1":"a","3":"c"}', enc({ [1] = "a", [3] = "c" }))
      assert.are.equal('{"0":"z","1":"a"}', enc({ [0] = "z", [1] = "a" }))
      assert.are.equal('{"-5":1}', enc({ [-5] = 1 }))
      assert.are.equal('{"1":"a","2":"b","n":2}', enc({ "a", "b", n = 2 }))
      assert.are.equal('{"10":10,"9":9}', enc({ [9] = 9, [10] = 10 }))
    end)

    it("refuses an integer key and a string key with the same text", function()
      fails_with('duplicate key "1" (integer and string) at .t', enc, { t = { [1] = "a", ["1"] = "b" } })
    end)

    it("refuses keys that are neither strings nor integers", function()
      fails_with("cannot encode a table with a boolean key at .", enc, { [true] = 1 })
      fails_with("cannot encode a table with a float key at .x", enc, { x = { [1.5] = 1 } })
      fails_with("cannot encode a table with a table key at [1]", enc, { { [{}] = 1 } })
    end)

    it("honours __jsontype in the metatable", function()
      assert.are.equal("[]", enc(setmetatable({}, json.array_mt)))
      assert.are.equal("[]", enc(setmetatable({}, { __jsontype = "array" })))
      assert.are.equal('{"x":[]}', enc({ x = setmetatable({}, { __jsontype = "array" }) }))
      assert.are.equal("[1,2]", enc(setmetatable({ 1, 2 }, json.array_mt)))
      assert.are.equal('{"1":"a","2":"b"}', enc(setmetatable({ "a", "b" }, json.object_mt)))
      assert.are.equal("{}", enc(setmetatable({}, json.object_mt)))
      assert.are.equal("[1]", enc(setmetatable({ 1 }, { __index = function() return 0 end })))
    end)

    it("rejects a bad __jsontype and an array marker on a non-sequence", function()
      fails_with('__jsontype must be "array" or "object" at .a',
        enc, { a = setmetatable({}, { __jsontype = "list" }) })
      fails_with('__jsontype must be "array" or "object" at .',
        enc, setmetatable({}, { __jsontype = true }))
      fails_with("cannot encode a table marked as array whose keys are not 1..n at .",
        enc, setmetatable({ 1, 2, x = 3 }, json.array_mt))
    end)

    it("gives the same bytes whatever the insertion order", function()
      local a, b = {}, {}
      local keys = {}
      for i = 1, 60 do keys[i] = "key" .. i end
      for i = 1, 60 do a[keys[i]] = i end
      for i = 60, 1, -1 do b[keys[i]] = i end
      -- churn b's hash part so its internal layout differs from a's
      for i = 1, 500 do b["tmp" .. i] = true end
      for i = 1, 500 do b["tmp" .. i] = nil end
      assert.are.equal(enc(a), enc(b))
    end)
  end)

  describe("the order argument", function()
    local row = { id = 7, product = "AeroPress", rating = 5, review = "good", extra = true }

    it("puts the listed keys first, then the rest sorted", function()
      assert.are.equal('{"id":7,"product":"AeroPress","rating":5,"extra":true,"review":"good"}',
        enc(row, { "id", "product", "rating" }))
      assert.are.equal('{"review":"good","id":7,"extra":true,"product":"AeroPress","rating":5}',
        enc(row, { "review", "id" }))
    end)

    it("skips missing and repeated names", function()
      assert.are.equal('{"rating":5,"extra":true,"id":7,"product":"AeroPress","review":"good"}',
        enc(row, { "nope", "rating", "rating", "extra" }))
      assert.are.equal(enc(row), enc(row, {}))
    end)

    it("applies to the top-level object only", function()
      local v = { b = { b = 1, a = 2 }, a = { b = 1, a = 2 } }
      assert.are.equal('{"b":{"a":2,"b":1},"a":{"a":2,"b":1}}', enc(v, { "b" }))
      assert.are.equal('[{"a":2,"b":1}]', enc({ { b = 1, a = 2 } }, { "b" }))
      assert.are.equal('"x"', enc("x", { "b" }))
    end)

    it("matches integer keys by their decimal text", function()
      assert.are.equal('{"2":"b","1":"a","x":1}', enc({ [1] = "a", [2] = "b", x = 1 }, { "2" }))
    end)

    it("must be an array of strings", function()
      fails_with("bad argument #2 to '", enc, row, "id")
      fails_with("encode' (table expected, got string)", enc, row, "id")
      fails_with("order must be an array of strings", enc, row, { "id", 3 })
      assert.are.equal(enc(row), enc(row, nil))
    end)
  end)

  describe("values JSON cannot hold", function()
    it("names the path of a function", function()
      fails_with("cannot encode a function at .stats.fn", enc, { stats = { fn = print } })
      fails_with("cannot encode a function at [3]", enc, { 1, 2, print })
      fails_with("cannot encode a function at .rows[2].f", enc, { rows = { {}, { f = print } } })
      fails_with('cannot encode a function at ["a b"]', enc, { ["a b"] = print })
      fails_with("cannot encode a function at .", enc, print)
    end)

    it("refuses threads and userdata", function()
      fails_with("cannot encode a thread at .co", enc, { co = coroutine.create(print) })
      fails_with("cannot encode a userdata at .f", enc, { f = io.stdout })
    end)

    it("allows 64 levels of nesting and refuses 65", function()
      local function nest(n)
        local v = "leaf"
        for _ = 1, n do v = { v } end
        return v
      end
      assert.are.equal(string.rep("[", 64) .. '"leaf"' .. string.rep("]", 64), enc(nest(64)))
      fails_with("nested too deep (cycle?) at " .. string.rep("[1]", 64), enc, nest(65))
    end)

    it("reports cycles as too deep", function()
      local t = { name = "loop" }
      t.self = t
      fails_with("nested too deep (cycle?) at .self.self.self", enc, t)
      local a = {}
      a[1] = { a }
      fails_with("nested too deep (cycle?) at [1][1][1]", enc, a)
    end)

    it("leaves a usable module after errors", function()
      for _ = 1, 100 do pcall(enc, { x = string.rep("y", 5000), f = print }) end
      assert.are.equal('{"ok":true}', enc({ ok = true }))
    end)
  end)

  describe("round trips through json.decode", function()
    -- deterministic pseudo-random values (not math.random: its seed may be shared)
    local state = 12345
    local function rnd(n)
      state = (state * 1103515245 + 12345) % 2147483648
      return state % n
    end
    local alphabet = { "a", "b", "Z", "0", " ", "_", "\"", "\\", "\n", "\t", "\1", "\127", "é", "€", "/" }
    local function rstring()
      local parts = {}
      for i = 1, rnd(9) do parts[i] = alphabet[rnd(#alphabet) + 1] end
      return table.concat(parts)
    end
    local function rvalue(depth)
      local kind = rnd(depth > 3 and 5 or 7)
      if kind == 0 then return rnd(2) == 1
      elseif kind == 1 then return rnd(2000001) - 1000000
      elseif kind == 2 then return (rnd(2000001) - 1000000) / (rnd(999) + 1)
      elseif kind == 3 then return rstring()
      elseif kind == 4 then return cjson.null
      elseif kind == 5 then
        local t = {}
        for i = 1, rnd(5) + 1 do t[i] = rvalue(depth + 1) end
        return t
      else
        local t = {}
        for _ = 1, rnd(6) do t["k" .. rstring()] = rvalue(depth + 1) end
        return t
      end
    end
    local function same(a, b)
      if type(a) ~= "table" or type(b) ~= "table" then return a == b and math.type(a) == math.type(b) end
      for k, v in pairs(a) do if not same(v, b[k]) then return false end end
      for k in pairs(b) do if a[k] == nil then return false end end
      return true
    end

    it("decodes to an equal value that re-encodes to the same bytes", function()
      for _ = 1, 200 do
        local v = { data = rvalue(0), list = { rvalue(1), rvalue(1) } }
        local s = enc(v)
        local back = json.decode(s)
        assert.is_true(same(v, back), s)
        assert.are.equal(s, enc(back))
      end
    end)

    it("survives a fixed document", function()
      local s = '{"a":[1,2.5,"x",null,true,{},[]],"b":{"c":"\\u00e9\\n","d":-0.001,"e":[[],{}]}}'
      assert.are.equal('{"a":[1,2.5,"x",null,true,{},[]],"b":{"c":"\195\169\\n","d":-0.001,"e":[[],{}]}}',
        enc(json.decode(s)))
    end)
  end)
end)

describe("orch.json.quote", function()
  it("gives encode's text for a string or a number", function()
    local vals = { "", "plain", 'q"u\\o\n\t\0\31\127 é 😀 \u{10FFFF}', string.rep("abcdefgh", 9) .. "é", 0, -42,
      math.maxinteger, 0.1, 3.0, -0.0, 1e300, 1 / 3 }
    for i, v in ipairs(vals) do
      assert.are.equal(json.encode(v), json.quote(v), i)
    end
  end)

  it("gives nil where encode raises, and for other types", function()
    local vals = { "bad \255", "\192\128", "\237\160\128", "\244\144\128\128", "abcdefg\255", "abcdefgh\226\130",
      0 / 0, math.huge, -math.huge, true, {}, json.null, print }
    for i, v in ipairs(vals) do
      assert.is_nil(json.quote(v), i)
      if type(v) == "string" or type(v) == "number" then
        assert.is_false(pcall(json.encode, v), i)
      end
    end
    assert.is_nil(json.quote())
    assert.is_nil(json.quote("bad \255", "[", "]"))
  end)

  it("writes pre and post around the value in one string", function()
    local long = string.rep("x", 5000) -- past the encoder's first buffer
    assert.are.equal('{"a":"q\\"","b":1}', json.quote('q"', '{"a":', ',"b":1}'))
    assert.are.equal("[7", json.quote(7, "["))
    assert.are.equal('"v"]', json.quote("v", nil, "]"))
    assert.are.equal('"v"', json.quote("v", "", ""))
    assert.are.equal(long .. '"' .. long .. '"' .. long, json.quote(long, long, long))
    assert.are.equal('{"a":' .. json.encode("\0\n") .. "}", json.quote("\0\n", '{"a":', "}"))
    assert.is_false(pcall(json.quote, "v", {}))
  end)
end)

describe("orch.json.decode", function()
  local dec = json.decode

  -- decode then encode gives the input back, byte for byte
  local function same_bytes(text)
    assert.are.equal(text, enc(dec(text)))
  end

  it("decodes integers as Lua integers, exactly", function()
    assert.are.equal("integer", math.type(dec("5")))
    assert.are.equal(5, dec("5"))
    assert.are.equal("x5", "x" .. dec('{"id":5}').id)
    assert.are.equal(0, dec("0"))
    assert.are.equal(-1, dec("-1"))
    assert.are.equal(9007199254740993, dec("9007199254740993")) -- 2^53 + 1
    assert.are.equal(math.maxinteger, dec("9223372036854775807"))
    assert.are.equal(math.mininteger, dec("-9223372036854775808"))
    assert.are.equal("integer", math.type(dec("-9223372036854775808")))
    for _, t in ipairs({ "0", "-1", "9007199254740993", "9223372036854775807", "-9223372036854775808",
                         "[1,-2,3]", '{"id":1234567890123456789}' }) do
      same_bytes(t)
    end
  end)

  it("refuses integers beyond 64 bits, naming the path", function()
    fails_with("integer 9223372036854775808 at . does not fit in 64 bits", dec, "9223372036854775808")
    fails_with("integer -9223372036854775809 at . does not fit in 64 bits", dec, "-9223372036854775809")
    fails_with("integer 123456789012345678901 at .id does not fit in 64 bits", dec,
      '{"a":1,"id":123456789012345678901}')
    fails_with("integer 99999999999999999999 at .x[2] does not fit in 64 bits", dec, '{"x":[0,99999999999999999999]}')
  end)

  it("decodes numbers with a fraction or exponent as floats", function()
    assert.are.equal("float", math.type(dec("3.0")))
    assert.are.equal(1.5, dec("1.5"))
    assert.are.equal(1e300, dec("1e300"))
    assert.are.equal(-2.5e-3, dec("-2.5E-3"))
    assert.are.equal(100.0, dec("1e2"))
    assert.are.equal("float", math.type(dec("1e2")))
    for _, t in ipairs({ "3.0", "1.5", "-0.25", "1e+300", "0.1", "0.30000000000000004", "9007199254740992.0",
                         "1.7976931348623157e+308", "[1.0,2,-3.5]" }) do
      same_bytes(t)
    end
    fails_with("number 1e400 at .x does not fit in a double", dec, '{"x":1e400}')
  end)

  it("reads every float as tonumber does (fast path and strtod alike)", function()
    local texts = { "0.1", "4.35", "-0.0", "1e22", "1e23", "1e-22", "1.5e-23", "123456789012345.6",
                    "9007199254740993.0", "9007199254740992.5", "0.30000000000000004", "2.2250738585072014e-308",
                    "5e-324", "1.7976931348623157e308", "3.14159265358979323846264338327950288", "1E+2", "12e-0",
                    "0.000000000000000000000000000001", "100000000000000000000000.0" }
    local state = 99
    for _ = 1, 2000 do
      state = (state * 1103515245 + 12345) % 2147483648
      local digits = tostring(state % 100000000)
      local cut = state % (#digits + 1)
      texts[#texts + 1] = digits:sub(1, cut) .. (cut == 0 and "0" or "") .. "." .. digits:sub(cut + 1) .. "0"
        .. "e" .. (state % 61 - 30)
    end
    for _, t in ipairs(texts) do
      local x = dec(t)
      assert.are.equal("float", math.type(x), t)
      assert.is_true(x == tonumber(t) and 1 / x == 1 / tonumber(t), t)
    end
  end)

  it("keeps strings, escapes and unicode", function()
    assert.are.equal("", dec('""'))
    assert.are.equal("x\ty\n\"\\/\b\f\r", dec([["x\ty\n\"\\\/\b\f\r"]]))
    assert.are.equal("caf\195\169 \226\130\172 \240\159\152\128", dec('"café € 😀"'))
    assert.are.equal("\195\169\240\159\152\128", dec([["\u00e9\ud83d\ude00"]]))
    assert.are.equal("a\0b", dec([["a\u0000b"]]))
    for _, t in ipairs({ '""', '"café € 😀"', [["say \"hi\" \\ \n\t\u0001"]], '{"k\\u0000":"v"}' }) do
      same_bytes(t)
    end
  end)

  it("keeps [] and {} apart, at any depth", function()
    local a = dec("[]")
    assert.are.equal(json.array_mt, getmetatable(a))
    assert.are.equal(nil, next(a))
    assert.are.equal(nil, getmetatable(dec("{}")))
    for _, t in ipairs({ "[]", "{}", '{"a":[],"b":{},"c":[[],{},[[]]],"d":{"e":[]}}', "[[],{}]" }) do
      same_bytes(t)
    end
  end)

  it("decodes null, booleans and nested values", function()
    local v = dec(' { "a" : [ 1 , 2 , { "b" : null } ] , "t" : true , "f" : false } ')
    assert.are.equal(2, v.a[2])
    assert.are.equal(json.null, v.a[3].b)
    assert.are.equal(cjson.null, v.a[3].b)
    assert.is_true(v.t)
    assert.is_false(v.f)
    assert.are.equal(json.null, dec("null"))
  end)

  it("refuses invalid UTF-8, naming the path", function()
    fails_with("invalid UTF-8 at .review", dec, '{"id":1,"review":"caf\233"}')
    fails_with("invalid UTF-8 at .a[2]", dec, '{"a":["ok","\192\128"]}')
    fails_with("invalid UTF-8 at .", dec, '"\237\160\128"')
    fails_with("invalid UTF-8 in a key at .a", dec, '{"a":{"k\255":1}}')
    fails_with("lone surrogate \\ud800 at byte 2", dec, [["\ud800x"]])
    fails_with("lone surrogate \\udc00 at byte 2", dec, [["\udc00"]])
  end)

  it("reports malformed JSON with its byte position", function()
    fails_with("unexpected end of input at byte 6", dec, '{"a":')
    fails_with("unexpected ']' at byte 4", dec, "[1,]")
    fails_with("expected ',' or '}' at byte 8", dec, '{"a":1 "b":2}')
    fails_with("expected ':' at byte 6", dec, '{"a" 1}')
    fails_with("expected a string key at byte 2", dec, "{1:2}")
    fails_with("expected ',' or ']' at byte 4", dec, "[1 2]")
    fails_with("unexpected data after the value at byte 3", dec, "1 x")
    fails_with("unexpected end of input at byte 1", dec, "")
    fails_with("unexpected 'x' at byte 1", dec, "x")
    fails_with("invalid number at byte 1", dec, "01")
    fails_with("invalid number at byte 1", dec, "-")
    fails_with("invalid number at byte 1", dec, "1.")
    fails_with("invalid number at byte 1", dec, "1e")
    fails_with("control character in a string at byte 3", dec, '"a\nb"')
    fails_with("invalid escape at byte 3", dec, [["a\qb"]])
    fails_with("invalid \\u escape at byte 2", dec, [["\u12g4"]])
    fails_with("unexpected end of input at byte 4", dec, '"ab')
    fails_with("unexpected 'tru' at byte 1", dec, "tru")
  end)

  it("returns the top-level object's keys in input order when asked", function()
    local v, order = dec('{"zeta":1,"id":2,"a":{"y":1,"x":2},"m":[],"id":3}', true)
    assert.are.same({ "zeta", "id", "a", "m" }, order)
    assert.are.equal(3, v.id)
    local _, none = dec("[1,2]", true)
    assert.are.equal(nil, none)
    assert.are.same({}, select(2, dec("{}", true)))
    assert.are.equal(1, select("#", dec("{}")))
  end)

  it("allows 1000 levels of nesting and refuses 1001", function()
    local ok = dec(string.rep("[", 1000) .. string.rep("]", 1000))
    assert.are.equal("table", type(ok))
    fails_with("nested too deep at byte 1001", dec, string.rep("[", 1001) .. string.rep("]", 1001))
  end)

  it("raises errors about the text without a file:line prefix", function()
    local ok, err = pcall(function() return dec('{"a":') end)
    assert.is_false(ok)
    assert.are.equal("unexpected end of input at byte 6", err)
    ok, err = pcall(function() return dec('{"id":99999999999999999999}') end)
    assert.is_false(ok)
    assert.are.equal("integer 99999999999999999999 at .id does not fit in 64 bits", err)
  end)

  it("checks its argument", function()
    fails_with("bad argument #1 to '", dec, {})
    fails_with("decode' (string expected, got table)", dec, {})
    fails_with("decode' (string expected, got no value)", dec)
  end)

  it("survives damaged text: each result is a value that encodes back, or an error at a byte or path", function()
    local docs = {
      '{"id":9223372036854775807,"s":"caf\195\169 \\u00e9\\n","a":[1,2.5e-3,[],{}],"o":{"k":null,"t":true}}',
      '[{"a":[[[]]]},-0.0,1e300,"\\ud83d\\ude00",false]',
    }
    local state = 4242
    local function rnd(n)
      state = (state * 1103515245 + 12345) % 2147483648
      return state % n
    end
    local bytes = { "{", "}", "[", "]", '"', "\\", ",", ":", "-", ".", "e", "0", "9", "u", "\128", "\255", " ", "\0" }
    for i = 1, 5000 do
      local t = docs[i % #docs + 1]
      for _ = 1, rnd(3) + 1 do
        local at = rnd(#t) + 1
        local op = rnd(3)
        local b = bytes[rnd(#bytes) + 1]
        if op == 0 then
          t = t:sub(1, at - 1) .. b .. t:sub(at + 1)
        elseif op == 1 then
          t = t:sub(1, at - 1) .. b .. t:sub(at)
        else
          t = t:sub(1, at - 1) .. t:sub(at + 1)
        end
      end
      local ok, v = pcall(dec, t)
      if ok then
        local eok, text = pcall(enc, v)
        assert.is_true(eok, t .. " -> " .. tostring(text))
        assert.are.equal(text, enc(dec(text)))
      else
        assert.is_truthy(v:find(" at byte %d+$") or v:find(" at [%.%[]"), v)
      end
    end
  end)

  it("leaves a usable module after errors", function()
    for _ = 1, 100 do pcall(dec, '{"x":"' .. string.rep("y", 5000) .. '\\q"}') end
    assert.are.equal(1, dec('{"ok":1}').ok)
  end)
end)

describe("orch.json.pick", function()
  local dec, pick = json.decode, json.pick
  local fails_with = require("helpers").fails_with

  -- what indexing the decoded text gives for a path (nil where it leads nowhere)
  local function walk(v, path)
    for _, step in ipairs(path) do
      if type(v) ~= "table" then
        return nil
      end
      v = v[step]
    end
    return v
  end

  local reply = '{"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "message": '
    .. '{"role": "assistant", "content": "caf\\u00e9 \\"ok\\""}, "finish_reason": "stop"}], '
    .. '"usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}}'

  it("gives the values the paths lead to, as indexing the decoded text would", function()
    local container, content, tin, tout = pick(reply, { "choices", 1, "message", "content" },
      { "usage", "prompt_tokens" }, { "usage", "completion_tokens" })
    assert.is_true(container)
    assert.are.equal('café "ok"', content)
    assert.are.equal(12, tin)
    assert.are.equal(8, tout)
    assert.are.equal("integer", math.type(tin))
  end)

  it("decodes a picked object or array whole, and paths may end inside it", function()
    local _, usage, tin, choice = pick(reply, { "usage" }, { "usage", "prompt_tokens" }, { "choices", 1 })
    assert.are.same({ prompt_tokens = 12, completion_tokens = 8, total_tokens = 20 }, usage)
    assert.are.equal(12, tin)
    assert.are.same(dec(reply).choices[1], choice)
    local _, empty = pick('{"a":[]}', { "a" })
    assert.are.equal("[]", json.encode(empty))
    local _, whole = pick('{"a":[1,{"b":null}]}', {})
    assert.are.same(dec('{"a":[1,{"b":null}]}'), whole)
  end)

  it("agrees with decode on every path of many texts, repeated keys and kinds that do not match included", function()
    local docs = {
      reply,
      '{"a":{"b":1},"a":{"c":2}}',
      '{"a":{"b":1},"a":3}',
      '{"a":[10,20,{"b":"x"}],"1":"one","b":{"1":"str"}}',
      '[{"a":1},[2,3],"s",null,true]',
      '{"a":{"b":{"c":{"d":[1.5,-0,1e2,"\\ud83d\\ude00"]}}},"e":[]}',
      '"just a string"',
      "42",
      "null",
      '{"k\\u0041y":{"x":1},"kAy":{"x":2},"x":{"kAy":3}}',
    }
    local paths = { {}, { "a" }, { "a", "b" }, { "a", "c" }, { "a", 1 }, { "a", 3, "b" }, { 1 }, { 1, "a" }, { 2, 2 },
      { "1" }, { 1, 1 }, { "b", "1" }, { "b", 1 }, { "a", "b", "c", "d", 4 }, { "a", "b", "c", "d", 2 }, { "e" },
      { "e", 1 }, { "kAy", "x" }, { "x", "kAy" }, { "choices", 1, "message", "role" }, { "usage", "nope" } }
    for _, text in ipairs(docs) do
      local v = dec(text)
      for first = 1, #paths, 8 do -- eight paths a call
        local some = table.move(paths, first, math.min(first + 7, #paths), 1, {})
        local got = table.pack(pick(text, table.unpack(some)))
        assert.are.equal(type(v) == "table", got[1], text)
        for i, path in ipairs(some) do
          local want = walk(v, path)
          assert.are.same(want, got[i + 1], text .. " at path " .. (first + i - 1))
          assert.are.equal(math.type(want), math.type(got[i + 1]), text .. " at path " .. (first + i - 1))
        end
      end
    end
  end)

  it("raises what decode raises for the same text, at the same byte or path", function()
    local bad = { '{"a":', '{"a" 1}', '{"a":1,}', '[1 2]', '{"a":"\1"}', '{"a":"\255"}', '{"\255":1}', '{"a":tru}',
      '{"a":01}', '{"a":99999999999999999999}', '{"b":[1e999]}', '{"a":"\\q"}', '{"a":"\\ud800"}', '{} x', "",
      '{"a":{"b":[1,{"c":"\\u12"}]}}', string.rep("[", 1001) .. string.rep("]", 1001) }
    for _, text in ipairs(bad) do
      local ok, want = pcall(dec, text)
      assert.is_false(ok, text)
      for _, path in ipairs({ { "a" }, { "a", "b" }, { "b", 1 } }) do
        local pok, err = pcall(pick, text, path)
        assert.is_false(pok, text)
        assert.are.equal(want, err)
      end
    end
  end)

  it("agrees with decode on damaged replies: the same value at each path, or the same error", function()
    local paths = { { "choices", 1, "message", "content" }, { "usage", "prompt_tokens" }, { "usage" } }
    local state = 77
    local function rnd(n)
      state = (state * 1103515245 + 12345) % 2147483648
      return state % n
    end
    local bytes = { "{", "}", "[", "]", '"', "\\", ",", ":", "1", "e", "u", "\200", " ", "n" }
    for _ = 1, 3000 do
      local t = reply
      for _ = 1, rnd(3) + 1 do
        local at = rnd(#t) + 1
        local b = bytes[rnd(#bytes) + 1]
        t = rnd(2) == 0 and (t:sub(1, at - 1) .. b .. t:sub(at + 1)) or (t:sub(1, at - 1) .. t:sub(at + 1))
      end
      local ok, v = pcall(dec, t)
      local got = table.pack(pcall(pick, t, table.unpack(paths)))
      assert.are.equal(ok, got[1], t)
      if ok then
        for i, path in ipairs(paths) do
          assert.are.same(walk(v, path), got[i + 2], t)
        end
      else
        assert.are.equal(v, got[2], t)
      end
    end
  end)

  it("checks its arguments", function()
    fails_with("string expected, got table", pick, {}, { "a" })
    fails_with("table expected, got string", pick, "{}", "a")
    fails_with("a path's steps are strings (keys) and integers (indexes)", pick, "{}", { 1.5 })
    fails_with("a path has at most 16 steps", pick, "{}", { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17 })
    local many = {}
    for i = 1, 17 do
      many[i] = { "a" }
    end
    fails_with("at most 16 paths", pick, "{}", table.unpack(many))
  end)
end)

describe("orch.json.picker", function()
  local dec, pick, picker = json.decode, json.pick, json.picker
  local fails_with = require("helpers").fails_with
  local reply = '{"id": "chatcmpl-1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}], '
    .. '"usage": {"prompt_tokens": 12, "completion_tokens": 8}, "usage": {"prompt_tokens": 3}}'

  it("gives what pick gives for its paths, text after text, errors included", function()
    local paths = { { "choices", 1, "message", "content" }, { "usage", "prompt_tokens" },
      { "usage", "completion_tokens" }, { "usage" }, {} }
    local p = picker(table.unpack(paths))
    local texts = { reply, '{"usage":{"prompt_tokens":1.5}}', "[1,2]", '"s"', "null", '{"a":', '{"usage":[1] x',
      '{"choices":[{"message":{"content":"\\ud800"}}]}', "" }
    for _ = 1, 2 do
      for _, text in ipairs(texts) do
        assert.are.same(table.pack(pcall(pick, text, table.unpack(paths))), table.pack(pcall(p, text)), text)
      end
    end
    local _, content, tin, tout = p(reply)
    assert.are.same({ "hi", 3 }, { content, tin }) -- the last of repeated keys
    assert.is_nil(tout)
    assert.are.same(dec(reply), select(6, p(reply)))
  end)

  it("keeps its paths as they were given: a path table changed later changes nothing", function()
    local path = { "usage", "prompt_tokens" }
    local p = picker(path)
    path[2] = "completion_tokens"
    path[3] = "more"
    collectgarbage()
    collectgarbage()
    assert.are.same({ true, 12 }, { p('{"usage":{"prompt_tokens":12,"completion_tokens":8}}') })
  end)

  it("checks its paths when made, and its text when called", function()
    fails_with("bad argument #1 to 'orch.json.picker' (table expected, got string)", picker, "a")
    fails_with("bad argument #2 to 'orch.json.picker' (a path's steps are strings (keys) and integers (indexes))",
      picker, { "a" }, { 1.5 })
    fails_with("a path has at most 16 steps", picker, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17 })
    local many = {}
    for i = 1, 17 do
      many[i] = { "a" }
    end
    fails_with("at most 16 paths", picker, table.unpack(many))
    fails_with("string expected, got table", picker({ "a" }), {})
    assert.are.same({ false }, { picker()("1") })
  end)
end)
