-- store_spec.lua -- the LLM response journal as tasks see it
-- (core/store_lua.c over storage/store_sqlite.c): lookups made by tasks in
-- one scheduler round are answered by one group transaction, together with
-- the replies waiting for their commit.
local sched = require "orch.sched"
local store = require "orch.store"

local function entry(text)
  return { provider = "openai", model = "m", response = text, tokens_in = 3, tokens_out = 2, cost_usd = 0.5,
    latency_ms = 10 }
end

local function fresh()
  local path = os.tmpname()
  os.remove(path)
  local st = assert(store.open(path))
  return st, path
end

local function cleanup(st, path)
  st:close()
  for _, suffix in ipairs({ "", "-wal", "-shm" }) do
    os.remove(path .. suffix)
  end
end

describe("orch.store journal", function()
  after_each(function()
    assert.are.equal(0, sched.live())
  end)

  it("answers lookups outside tasks at once", function()
    local st, path = fresh()
    assert.is_nil(st:journal_get("k-missing"))
    assert.is_true(st:journal_put(setmetatable({ key = "k1" }, { __index = entry("one") })))
    assert.is_true(st:journal_flush())
    local e = assert(st:journal_get("k1"))
    assert.are.equal("one", e.response)
    assert.are.equal(1, e.hits)
    cleanup(st, path)
  end)

  it("answers the lookups of many tasks in one round, misses and hits alike", function()
    local st, path = fresh()
    for i = 1, 10 do
      local e = entry("reply " .. i)
      e.key = "k" .. i
      assert.is_true(st:journal_put(e))
    end
    assert.is_true(st:journal_flush())
    local got = sched.run(function()
      local ids = {}
      for i = 1, 20 do
        ids[#ids + 1] = sched.spawn(function()
          local e, err = st:journal_get("k" .. i)
          assert.is_nil(err)
          return e and e.response or false
        end)
      end
      local out = {}
      while #out < 20 do
        for _, rec in ipairs(sched.wait()) do
          assert.is_true(rec.ok, tostring(rec.err))
          out[#out + 1] = rec[1]
        end
      end
      return out
    end)
    local hits, misses = 0, 0
    for _, v in ipairs(got) do
      if v then
        assert.is_truthy(v:match("^reply %d+$"))
        hits = hits + 1
      else
        misses = misses + 1
      end
    end
    assert.are.equal(10, hits)
    assert.are.equal(10, misses)
    assert.are.equal(10, st:stats().journal_hits)
    cleanup(st, path)
  end)

  it("lets a task find a reply another task put in the same round", function()
    local st, path = fresh()
    local text = sched.run(function()
      local e = entry("fresh")
      e.key = "k-same-round"
      assert.is_true(st:journal_put(e))
      local got = assert(st:journal_get("k-same-round"))
      return got.response
    end)
    assert.are.equal("fresh", text)
    local e = assert(st:journal_get("k-same-round"))
    assert.are.equal("fresh", e.response)
    cleanup(st, path)
  end)

  it("drops the lookup of a task cancelled while it waits", function()
    local st, path = fresh()
    local r1, r2 = sched.run(function()
      -- the child's lookup is still queued when the root returns: it is cancelled
      sched.spawn(function()
        st:journal_get("k-cancelled")
        error("not reached")
      end)
      coroutine.yield() -- a round in which the child queues its lookup
      return "root done", true
    end)
    assert.are.equal("root done", r1)
    assert.is_true(r2)
    -- a later round still works: the cancelled lookup left the queue
    assert.is_nil(sched.run(function()
      return st:journal_get("k-cancelled")
    end))
    cleanup(st, path)
  end)
end)
