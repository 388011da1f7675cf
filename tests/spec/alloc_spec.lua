-- alloc_spec.lua -- Lua's allocator (core/runtime.c): small blocks come
-- from a pool of size classes, larger ones and blocks resized across the
-- pool's limit (512 bytes) from malloc. Values must survive every move:
-- a table part or a string buffer growing from 8 bytes to kilobytes and
-- back, many times, with the collector reusing freed blocks in between.

describe("the allocator", function()
  it("keeps a table's contents while its parts grow across every size class and past the pool", function()
    local t = {}
    for i = 1, 3000 do
      t[i] = i * 3
      t["k" .. i] = i
      if i % 97 == 0 then
        collectgarbage()
      end
    end
    local sum, keys = 0, 0
    for i = 1, 3000 do
      assert.are.equal(i * 3, t[i])
      assert.are.equal(i, t["k" .. i])
      sum = sum + t[i]
    end
    for _ in pairs(t) do
      keys = keys + 1
    end
    assert.are.equal(6000, keys)
    assert.are.equal(3 * 3000 * 3001 // 2, sum)
  end)

  it("keeps a table's contents while its parts shrink back into the pool", function()
    local t = {}
    for i = 1, 2000 do
      t["k" .. i] = i
    end
    for i = 1, 1990 do
      t["k" .. i] = nil
    end
    collectgarbage() -- a rehash at the next insertion shrinks the hash part
    t.extra = true
    for i = 1991, 2000 do
      assert.are.equal(i, t["k" .. i])
    end
    assert.is_true(t.extra)
  end)

  it("builds strings of every length from 1 byte to 2 KiB and reads them back", function()
    local parts = {}
    for n = 1, 2048 do
      parts[n] = string.rep(string.char(65 + n % 26), n)
    end
    collectgarbage()
    for n = 1, 2048 do
      assert.are.equal(n, #parts[n])
      assert.are.equal(string.char(65 + n % 26), parts[n]:sub(n, n))
    end
    assert.are.equal(2048 * 2049 // 2, #table.concat(parts))
  end)

  it("reuses freed blocks: a loop of short-lived tables and strings keeps Lua's count steady", function()
    local function churn()
      for i = 1, 20000 do
        local x = { i, tostring(i), { i } }
        assert(x[3][1] == i)
      end
      collectgarbage()
      return collectgarbage("count")
    end
    local first = churn()
    local second = churn()
    assert.is_true(second <= first + 64, string.format("%.0f KiB after the second loop, %.0f after the first",
      second, first))
  end)
end)
