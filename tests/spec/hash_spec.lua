-- hash_spec.lua -- orch.hash: XXH3 digests as canonical (big-endian) lowercase hex.
--
-- Expected values come from a small C program calling libxxhash 0.8
-- (XXH3_128bits_withSeed / XXH3_64bits_withSeed + *_canonicalFromHash), the
-- form `xxhsum -H2` / `xxhsum -H3` print.  The empty-input values are also
-- xxHash's published test vectors.
local hash = require("orch.hash")
local fails_with = require("helpers").fails_with

local fox = "The quick brown fox jumps over the lazy dog"

local function alphabet1000()
  local t = {}
  for i = 0, 999 do t[#t + 1] = string.char(97 + i % 26) end
  return table.concat(t)
end

describe("orch.hash.xxh128", function()
  it("matches known XXH3_128bits values", function()
    assert.are.equal("99aa06d3014798d86001c324468d497f", hash.xxh128(""))
    assert.are.equal("a96faf705af16834e6c632b61e964e1f", hash.xxh128("a"))
    assert.are.equal("06b05ab6733a618578af5f94892f3950", hash.xxh128("abc"))
    assert.are.equal("ddd650205ca3e7fa24a1cc2e3a8a7651", hash.xxh128(fox))
    assert.are.equal("39797789ed4c7ea0d5a06cd078125351", hash.xxh128("a\0b"))
    assert.are.equal("b68384db4f7b6231e153425558d7da5d", hash.xxh128(alphabet1000()))
    assert.are.equal("c7ad5c57d93ae8eccb6d6577c70387e1", hash.xxh128('{"a":1,"b":[true,null]}'))
  end)

  it("takes an optional 64-bit seed", function()
    assert.are.equal("97fdbc584d4c698472c665da6e6d93b8", hash.xxh128(fox, 42))
    assert.are.equal("4a2380300a52c818f7ce617a17f07414", hash.xxh128(fox, -1)) -- 0xffff...ff
    assert.are.equal(hash.xxh128(fox), hash.xxh128(fox, 0))
    assert.are.equal(hash.xxh128(fox), hash.xxh128(fox, nil))
  end)

  it("returns 32 lowercase hex digits", function()
    for _, s in ipairs({ "", "x", fox, string.rep("z", 5000) }) do
      local h = hash.xxh128(s)
      assert.are.equal(32, #h)
      assert.is_truthy(h:match("^[0-9a-f]+$"))
    end
  end)

  it("checks its arguments", function()
    fails_with("bad argument #1 to 'xxh128' (string expected, got no value)", function() hash.xxh128() end)
    fails_with("bad argument #1 to 'xxh128' (string expected, got table)", function() hash.xxh128({}) end)
    fails_with("bad argument #2 to 'xxh128' (number expected, got string)", function() hash.xxh128("a", "seed") end)
    fails_with("bad argument #2 to 'xxh128' (number has no integer representation)",
      function() hash.xxh128("a", 1.5) end)
    -- numbers are hashed as their string form, like other string arguments
    assert.are.equal(hash.xxh128("123"), hash.xxh128(123))
  end)
end)

describe("orch.hash.xxh128_parts", function()
  it("is xxh128 of its arguments joined, byte for byte, at every length", function()
    local body = '{"messages":[{"content":"Classify: review number 1","role":"user"}],"model":"gpt-4o-mini"}'
    -- a journal key: provider, model and the request's body, NUL between
    assert.are.equal("3a58affab9bdd78a5d66cd1c43192d2b", hash.xxh128_parts("openai", "\0", "gpt-4o-mini", "\0", body))
    assert.are.equal("99aa06d3014798d86001c324468d497f", hash.xxh128_parts())
    assert.are.equal("99aa06d3014798d86001c324468d497f", hash.xxh128_parts("", ""))
    assert.are.equal("39797789ed4c7ea0d5a06cd078125351", hash.xxh128_parts("a", "\0", "b"))
    assert.are.equal(hash.xxh128(fox), hash.xxh128_parts(fox))
    -- across the buffer a short key is joined in (4 KiB), and far past it
    local big = alphabet1000()
    for _, n in ipairs({ 0, 1, 3071, 3072, 3073, 4095, 4096, 4097, 20000 }) do
      local tail = string.rep(big, n // 1000 + 1):sub(1, n)
      assert.are.equal(hash.xxh128("p\0m\0" .. big .. tail), hash.xxh128_parts("p", "\0m\0", big, tail), n)
      assert.are.equal(hash.xxh128(tail .. "x"), hash.xxh128_parts(tail, "x"), n)
    end
    assert.are.equal(hash.xxh128("123x"), hash.xxh128_parts(123, "x")) -- numbers as their text
  end)

  it("checks its arguments", function()
    fails_with("bad argument #2 to 'xxh128_parts' (string expected, got nil)",
      function() hash.xxh128_parts("a", nil, "b") end)
    fails_with("bad argument #1 to 'xxh128_parts' (string expected, got table)", function() hash.xxh128_parts({}) end)
  end)
end)

describe("orch.hash.xxh64", function()
  it("matches known XXH3_64bits values (not the older XXH64)", function()
    assert.are.equal("2d06800538d394c2", hash.xxh64(""))
    assert.are.equal("e6c632b61e964e1f", hash.xxh64("a"))
    assert.are.equal("78af5f94892f3950", hash.xxh64("abc"))
    assert.are.equal("ce7d19a5418fb365", hash.xxh64(fox))
    assert.are.equal("d5a06cd078125351", hash.xxh64("a\0b"))
    assert.are.equal("e153425558d7da5d", hash.xxh64(alphabet1000()))
    assert.are.equal("351633935cf22cd5", hash.xxh64('{"a":1,"b":[true,null]}'))
  end)

  it("takes an optional 64-bit seed", function()
    assert.are.equal("b4a3f3c36b3c7d26", hash.xxh64(fox, 42))
    assert.are.equal("bce97e3bb51bbd73", hash.xxh64(fox, -1))
    assert.are.equal(hash.xxh64(fox), hash.xxh64(fox, 0))
  end)

  it("returns 16 lowercase hex digits", function()
    local h = hash.xxh64(fox)
    assert.are.equal(16, #h)
    assert.is_truthy(h:match("^[0-9a-f]+$"))
  end)

  it("checks its arguments", function()
    fails_with("bad argument #1 to 'xxh64' (string expected, got no value)", function() hash.xxh64() end)
    fails_with("bad argument #1 to 'xxh64' (string expected, got boolean)", function() hash.xxh64(false) end)
  end)
end)
