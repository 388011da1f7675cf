-- store_spec.lua -- the LLM response journal as tasks see it
-- (core/store_lua.c over storage/store_sqlite.c): lookups made by tasks in
-- one scheduler round are answered by one group transaction, together with
-- the replies waiting for their commit. Also orch.store.open read-only,
-- orch.hash.file, orch.runs, orch.fmt.usd and orch.param.
local sched = require("orch.sched")
local store = require("orch.store")

local function entry(text)
  return { provider = "openai", model = "m", response = text, tokens_in = 3, tokens_out = 2, cost_usd = 0.5,
    latency_ms = 10 }
end

-- The backend under test: ORCH_TEST_STORE=sqlite (default: a file),
-- memory, postgres (the server at ORCH_TEST_PG_URL; tests/with_pg.sh) or
-- redis (the server at ORCH_TEST_REDIS_URL; tests/with_redis.sh).
local backend = os.getenv("ORCH_TEST_STORE") or "sqlite"
assert(({ sqlite = 1, memory = 1, postgres = 1, redis = 1 })[backend], "ORCH_TEST_STORE=" .. backend .. ": not a backend")
local pg_url = os.getenv("ORCH_TEST_PG_URL")
assert(backend ~= "postgres" or pg_url, "ORCH_TEST_STORE=postgres needs ORCH_TEST_PG_URL (run through tests/with_pg.sh)")
local redis_url = os.getenv("ORCH_TEST_REDIS_URL")
assert(backend ~= "redis" or redis_url, "ORCH_TEST_STORE=redis needs ORCH_TEST_REDIS_URL (run through tests/with_redis.sh)")
local server_url = backend == "postgres" and pg_url or redis_url

-- A store with no journal entries and no runs of these tests.
local function fresh()
  if backend == "memory" then
    return assert(store.open(":memory:")), ":memory:"
  end
  if backend == "postgres" or backend == "redis" then
    local st = assert(store.open(server_url))
    assert(st:journal_prune(math.maxinteger))
    st:run_delete("r1")
    st:run_delete("r2")
    return st, server_url
  end
  local path = os.tmpname()
  os.remove(path)
  local st = assert(store.open(path))
  return st, path
end

local function cleanup(st, path)
  st:close()
  if backend == "sqlite" then
    for _, suffix in ipairs({ "", "-wal", "-shm" }) do
      os.remove(path .. suffix)
    end
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

  it("journal_put takes the entry's fields as arguments, and stores what the table form stores", function()
    local st, path = fresh()
    local e = entry("with \0 a nul")
    e.key, e.run_id = "k-table", "r1"
    assert.is_true(st:journal_put(e))
    assert.is_true(st:journal_put("k-args", "r1", "openai", "m", "with \0 a nul", 3, 2, 0.5, 10))
    assert.is_true(st:journal_put("k-bare", nil, nil, nil, ""))
    -- waiting for the commit, then committed: the same fields either way
    for _ = 1, 2 do
      local a, b = assert(st:journal_get("k-table")), assert(st:journal_get("k-args"))
      a.key, b.key, a.created_ms, b.created_ms, a.hits, b.hits = nil, nil, nil, nil, nil, nil
      assert.are.same(a, b)
      assert.are.same({ "", 0, 0, 0 }, { st:journal_reply("k-bare") })
      assert.is_true(st:journal_flush())
    end
    local ok, err = pcall(function() return st:journal_put("k", "r1", "openai", "m", nil) end)
    assert.is_false(ok)
    assert.is_truthy(err:find("bad argument #5 to 'journal_put' (string expected, got nil)", 1, true), err)
    ok, err = pcall(function() return st:journal_put(nil) end)
    assert.is_false(ok)
    assert.is_truthy(err:find("bad argument #1 to 'journal_put' (string expected, got nil)", 1, true), err)
    cleanup(st, path)
  end)

  it("a lookup names a value that is not a store, and a closed store, as every method does", function()
    local st = assert(store.open(":memory:"))
    for _, m in ipairs({ "journal_reply", "journal_get" }) do
      local ok, err = pcall(st[m], {}, "k")
      assert.is_false(ok)
      assert.is_truthy(err:find("bad argument #1 to '?' (orch.Store expected, got table)", 1, true), err)
    end
    st:close()
    for _, m in ipairs({ "journal_reply", "journal_get", "run_list" }) do
      local ok, err = pcall(st[m], st, m == "run_list" and {} or "k")
      assert.is_false(ok)
      assert.are.equal("attempt to use a closed store", err)
    end
  end)

  it("journal_replier gives journal_reply with its store bound, in and out of tasks", function()
    local st, path = fresh()
    local reply = st:journal_replier()
    assert.are.equal("function", type(reply))
    assert.is_nil(reply("k-missing"))
    assert.are.equal(1, select("#", reply("k-missing")))
    local e = entry("one")
    e.key, e.cost_usd = "k1", 0.125
    assert.is_true(st:journal_put(e))
    assert.is_true(st:journal_flush())
    assert.are.same({ "one", 3, 2, 0.125 }, { reply("k1", "ignored") })
    local got = sched.run(function()
      local w = entry("same round")
      w.key = "k2"
      assert.is_true(st:journal_put(w))
      return { { reply("k1") }, { reply("k2") }, { reply("k-missing") } }
    end)
    assert.are.same({ { "one", 3, 2, 0.125 }, { "same round", 3, 2, 0.5 }, { nil } }, got)
    assert.are.equal(3, assert(st:journal_get("k1")).hits) -- two replies read, and this lookup
    assert.has_error(function() reply({}) end)
    cleanup(st, path)
    assert.has_error(function() reply("k1") end, "attempt to use a closed store")
  end)

  it("journal_reply gives what a replayed call reads, as journal_get does, counting the hit the same", function()
    local st, path = fresh()
    assert.is_nil(st:journal_reply("k-missing"))
    assert.are.equal(1, select("#", st:journal_reply("k-missing")))
    local e = entry("one")
    e.key, e.cost_usd = "k1", 0.125
    assert.is_true(st:journal_put(e))
    assert.is_true(st:journal_flush())
    -- outside a task: read at once
    assert.are.same({ "one", 3, 2, 0.125 }, { st:journal_reply("k1") })
    assert.are.equal("integer", math.type((select(2, st:journal_reply("k1")))))
    -- from tasks: answered by the round's group transaction, the reply put
    -- in the same round included (still waiting for its commit)
    local got = sched.run(function()
      local out = {}
      local ids = {
        sched.spawn(function() return { st:journal_reply("k1") } end),
        sched.spawn(function() return { st:journal_reply("k-missing") } end),
        sched.spawn(function()
          local w = entry("same round")
          w.key = "k2"
          assert.is_true(st:journal_put(w))
          return { st:journal_reply("k2") }
        end),
      }
      while #out < #ids do
        for _, rec in ipairs(sched.wait()) do
          assert.is_true(rec.ok, tostring(rec.err))
          out[#out + 1] = rec[1]
        end
      end
      table.sort(out, function(a, b) return tostring(a[1]) < tostring(b[1]) end)
      return out
    end)
    assert.are.same({ {}, { "one", 3, 2, 0.125 }, { "same round", 3, 2, 0.5 } }, got)
    -- hits as journal_get counts them: three lookups of k1 found it (k2's was
    -- answered before its commit, as journal_get's is)
    assert.are.equal(4, assert(st:journal_get("k1")).hits)
    assert.are.equal(4, st:stats().journal_hits)
    cleanup(st, path)
  end)

  it("answers a task's lookup at once on SQLite (the round's snapshot), and after a wait elsewhere", function()
    local st, path = fresh()
    local e = entry("one")
    e.key = "k1"
    assert.is_true(st:journal_put(e))
    assert.is_true(st:journal_flush())
    local order = {}
    sched.run(function()
      sched.spawn(function()
        local text = st:journal_reply("k1")
        local miss = st:journal_get("k-missing")
        order[#order + 1] = "looked up " .. text .. " " .. tostring(miss)
      end)
      sched.spawn(function()
        order[#order + 1] = "other task"
      end)
      for _ = 1, 2 do
        sched.wait()
      end
    end)
    if backend == "sqlite" or backend == "memory" then
      assert.are.same({ "looked up one nil", "other task" }, order)
    else
      assert.are.same({ "other task", "looked up one nil" }, order)
    end
    assert.are.equal(2, assert(st:journal_get("k1")).hits)
    cleanup(st, path)
  end)

  it("finds a reply flushed in the same round as an earlier lookup that missed it", function()
    local st, path = fresh()
    local got = sched.run(function()
      local before = st:journal_reply("k-late") -- on a file: the round's snapshot, taken now
      local e = entry("late")
      e.key = "k-late"
      assert.is_true(st:journal_put(e))
      assert.is_true(st:journal_flush()) -- committed: no longer waiting in the group
      return { before, st:journal_reply("k-late"), assert(st:journal_get("k-late")).response }
    end)
    assert.are.same({ nil, "late", "late" }, got)
    cleanup(st, path)
  end)

  it("reads a task's lookup from the store's own file after the working directory changes", function()
    if backend ~= "sqlite" then
      return
    end
    local sys = require("orch.sys")
    local here = sys.realpath(".")
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. "/a " .. dir .. "/b"))
    local function put(st, text)
      local e = entry(text)
      e.key = "k1"
      assert.is_true(st:journal_put(e))
      assert.is_true(st:journal_flush())
    end
    assert(sys.chdir(dir .. "/a"))
    local st = assert(store.open("state.db")) -- relative, as orch resume opens it before changing directory
    put(st, "from a")
    assert(sys.chdir(dir .. "/b"))
    local other = assert(store.open("state.db"))
    put(other, "from b")
    other:close()
    local ok, got = pcall(sched.run, function()
      return st:journal_reply("k1")
    end)
    assert(sys.chdir(here))
    st:close()
    os.execute("rm -rf " .. dir)
    assert.is_true(ok, got)
    assert.are.equal("from a", got)
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
    if backend == "sqlite" or backend == "memory" then
      return -- SQLite answers a lookup at once from the round's snapshot: a task waits on PostgreSQL and Redis
    end
    local st, path = fresh()
    local queued, answered = false, false
    local r1, r2 = sched.run(function()
      -- the child's lookup is still queued when the root returns: it is cancelled
      sched.spawn(function()
        queued = true
        st:journal_get("k-cancelled")
        answered = true -- a record nobody waits for would hide an error here
      end)
      coroutine.yield() -- a round in which the child queues its lookup
      return "root done", true
    end)
    assert.are.equal("root done", r1)
    assert.is_true(r2)
    assert.is_true(queued, "the child never ran, so its lookup was never queued")
    assert.is_false(answered, "the lookup of a cancelled task was answered")
    -- a later round still works: the cancelled lookup left the queue
    assert.is_nil(sched.run(function()
      return st:journal_get("k-cancelled")
    end))
    cleanup(st, path)
  end)
end)

describe("orch.store live figures", function()
  it("keeps the newest figures of a run, says none before, and refuses an unknown run", function()
    local st, path = fresh()
    assert.is_true(st:run_create({ id = "r1", name = "n", identity = "i", status = "running", created_ms = 1 }))
    assert.is_false(st:live_get("r1"))
    assert.is_true(st:live_put("r1", 1000, '{"rows_done":1}'))
    assert.is_true(st:live_put("r1", 2000, '{"rows_done":7,"error":"<script>"}'))
    local text, ms = st:live_get("r1")
    assert.equal('{"rows_done":7,"error":"<script>"}', text)
    assert.equal(2000, ms)
    local ok, err = st:live_put("r2", 1, "{}")
    assert.is_nil(ok)
    assert.truthy(err:find("cannot record the live figures of run r2: no such run", 1, true))
    assert.has_error(function()
      st:live_put("r1", "soon", "{}")
    end)
    -- the figures go with their run
    assert.is_true(st:run_delete("r1"))
    assert.is_false(st:live_get("r1"))
    cleanup(st, path)
  end)
end)

describe("orch.store.results", function()
  -- settled rows as a run settles them: keys of every kind, every status
  local named = setmetatable({}, { __tostring = function() return "named key" end })
  local settled = {
    { 1, 5, "ok" }, { 2, 6.0, "ok" }, { 3, 7.5, "ok" }, { 4, "k4", "failed", "boom" }, { 5, nil, "dropped" },
    { 6, true, "ok" }, { 7, named, "defaulted", "fell back" }, { 9, -12, "ok" }, { 300, "k300", "ok" },
    { 301, 2 ^ 63, "failed", "far" },
  }
  local want = {
    { seq = 1, key = "5", status = "ok" }, { seq = 2, key = "6", status = "ok" },
    { seq = 3, key = "7", status = "ok" }, -- lua_numbertointeger truncates: as the store always stored it
    { seq = 4, key = "k4", status = "failed", error = "boom" },
    { seq = 5, status = "dropped" }, { seq = 6, key = "true", status = "ok" },
    { seq = 7, key = "named key", status = "defaulted", error = "fell back" },
    { seq = 9, key = "-12", status = "ok" }, { seq = 300, key = "k300", status = "ok" },
    { seq = 301, key = "9.2233720368548e+18", status = "failed", error = "far" },
  }

  local function results_of(st, id)
    local rows = {}
    assert.is_true(st:each_result(id, function(r)
      rows[#rows + 1] = r
    end))
    return rows
  end

  it("stores rows packed as they settle as checkpoint_write stores their records", function()
    local st, path = fresh()
    local ckpt = { reason = "rows", memento = "{}" }
    local packed, records = store.results(), {}
    local add = packed:adder()
    for i, s in ipairs(settled) do
      add(s[1], s[2], s[3], s[4])
      records[i] = { seq = s[1], key = s[2], status = s[3], error = s[4] }
    end
    assert.equal(#settled, #packed)
    for _, id in ipairs({ "r1", "r2" }) do
      assert.is_true(st:run_create({ id = id, name = "n", identity = "i", status = "running", created_ms = 1 }))
    end
    assert(st:checkpoint_write({ id = "r1", status = "running" }, ckpt, packed, {}))
    assert(st:checkpoint_write({ id = "r2", status = "running" }, ckpt, records, {}))
    assert.are.same(want, results_of(st, "r2"))
    assert.are.same(want, results_of(st, "r1"))
    assert.are.same(want, packed:list())
    -- the rows a checkpoint stored go; the next ones follow on
    packed:clear()
    assert.equal(0, #packed)
    assert.are.same({}, packed:list())
    add(302, "k302", "ok")
    assert(st:checkpoint_write({ id = "r1", status = "running" }, ckpt, packed, {}))
    local rows = results_of(st, "r1")
    assert.are.same({ seq = 302, key = "k302", status = "ok" }, rows[#rows])
    assert.equal(#want + 1, #rows)
    st:run_delete("r1")
    st:run_delete("r2")
    cleanup(st, path)
  end)

  it("hands what it holds to a new object with take, and goes on from the last seq", function()
    local st, path = fresh()
    local ckpt = { reason = "rows", memento = "{}" }
    local packed = store.results()
    local add = packed:adder()
    for _, s in ipairs(settled) do
      add(s[1], s[2], s[3], s[4])
    end
    local taken = packed:take()
    assert.equal(#settled, #taken)
    assert.equal(0, #packed)
    assert.are.same({}, packed:list())
    local ok, err = pcall(add, 301, "again", "ok")
    assert.is_false(ok)
    assert.equal("result 301: a result's seq must be past the last one added (301)", err)
    add(302, "k302", "ok")
    assert.is_true(st:run_create({ id = "r1", name = "n", identity = "i", status = "running", created_ms = 1 }))
    assert(st:checkpoint_write({ id = "r1", status = "running" }, ckpt, taken, {}))
    assert.are.same(want, results_of(st, "r1"))
    assert(st:checkpoint_write({ id = "r1", status = "running" }, ckpt, packed, {}))
    local rows = results_of(st, "r1")
    assert.equal(#want + 1, #rows)
    assert.are.same({ seq = 302, key = "k302", status = "ok" }, rows[#rows])
    st:run_delete("r1")
    cleanup(st, path)
  end)

  it("refuses a seq that does not follow the last one added, and a result without a status", function()
    local packed = store.results()
    local add = packed:adder()
    add(4, "a", "ok")
    local ok, err = pcall(add, 4, "b", "ok")
    assert.is_false(ok)
    assert.equal("result 4: a result's seq must be past the last one added (4)", err)
    ok, err = pcall(add, 5, "b")
    assert.is_false(ok)
    assert.truthy(err:find("bad argument #3 to '?' (string expected, got no value)", 1, true), err)
    assert.equal(1, #packed)
  end)
end)

describe("orch.store.open read-only", function()
  it("never creates a store, and names the path", function()
    local path = os.tmpname()
    os.remove(path)
    local st, err = store.open(path .. "/typo/x.db", "r")
    assert.is_nil(st)
    assert.are.equal("no state store at " .. path .. "/typo/x.db (no run has used it; check --db or ORCH_DB)", err)
    assert.is_nil(io.open(path, "r"))
  end)

  local reopens = backend ~= "memory" and it or pending
  reopens("reads what a read-write open wrote, and refuses to write", function()
    local st, path = fresh()
    assert.is_true(st:run_create({ id = "r1", name = "n", identity = "i", status = "completed", created_ms = 1 }))
    st:close()
    local ro = assert(store.open(path, "r"))
    local run = assert(ro:run_get("r1"))
    assert.are.equal("completed", run.status)
    local ok, err = ro:run_create({ id = "r2", name = "n", identity = "i", status = "running", created_ms = 2 })
    assert.is_nil(ok)
    assert.matches(": cannot create run r2: ", err, 1, true)
    cleanup(ro, path)
  end)

  it("checks its mode argument", function()
    assert.has_error(function()
      store.open(":memory:", "w")
    end, "bad argument #2 to 'open' (invalid option 'w')")
  end)
end)

describe("orch.log.mask", function()
  local mask = require("orch.log").mask
  it("hides the password of every store URL in a message, and nothing else", function()
    assert.are.equal("postgres://sam:***@db:5432/orch: cannot connect",
      mask("postgres://sam:s3cr3t@db:5432/orch: cannot connect"))
    assert.are.equal("start over with orch run wf.lua --db 'postgres:///orch?host=/run/pg&password=***&user=u' --fresh",
      mask("start over with orch run wf.lua --db 'postgres:///orch?host=/run/pg&password=pw&user=u' --fresh"))
    assert.are.equal("postgres:///orch?user=u&password=***: cannot connect",
      mask("postgres:///orch?user=u&password=pw: cannot connect"))
    assert.are.equal("no runs yet in postgres://sam@db/orch", mask("no runs yet in postgres://sam@db/orch"))
    assert.are.equal("redis://:***@cache:6379/0: cannot log in", mask("redis://:pw@cache:6379/0: cannot log in"))
    assert.are.equal("unix:///run/redis.sock?db=2&password=***: cannot connect",
      mask("unix:///run/redis.sock?db=2&password=pw: cannot connect"))
    assert.are.equal("no run 'x' in .orch/state.db", mask("no run 'x' in .orch/state.db"))
    assert.are.equal("row 3 (key a:b@c): failed", mask("row 3 (key a:b@c): failed"))
  end)
end)

describe("orch.hash.file", function()
  it("is the XXH3-128 of the whole file, read in blocks", function()
    local hash = require("orch.hash")
    local path = os.tmpname()
    local parts = {}
    for i = 1, 300000 do
      parts[i] = string.char(i % 251)
    end
    local bytes = table.concat(parts):rep(5) -- 1.5 MB: more than one block
    local fh = assert(io.open(path, "wb"))
    fh:write(bytes)
    fh:close()
    assert.are.equal(hash.xxh128(bytes), hash.file(path))
    fh = assert(io.open(path, "wb"))
    fh:close()
    assert.are.equal("99aa06d3014798d86001c324468d497f", hash.file(path)) -- the empty input
    os.remove(path)
    local none, err = hash.file(path)
    assert.is_nil(none)
    assert.are.equal(path .. ": No such file or directory", err)
  end)
end)

describe("orch.runs", function()
  local runs = require("orch.runs")

  it("fingerprints the whole input, and can still make the old format", function()
    local path = os.tmpname()
    local fh = assert(io.open(path, "wb"))
    fh:write(("x"):rep(70000))
    fh:close()
    local fp = runs.fingerprint(path)
    assert.are.equal("size=70000 xxh3=" .. require("orch.hash").xxh128(("x"):rep(70000)), fp)
    assert.matches("^size=70000 mtime_ns=%d+ head=%x+$", runs.fingerprint(path, true))
    fh = assert(io.open(path, "r+b"))
    fh:seek("set", 69999)
    fh:write("y") -- past the old 64 KiB head
    fh:close()
    assert.are_not.equal(fp, runs.fingerprint(path))
    os.remove(path)
  end)

  it("writes the whole command that starts a run again", function()
    local r = { workflow_arg = "wf.lua", params = '{"out":"a b.jsonl","input":"x.csv"}' }
    assert.are.equal("orch run wf.lua --db 'my store.db' --set input=x.csv --set 'out=a b.jsonl' --fresh",
      runs.rerun_command(r, "my store.db"))
    assert.are.equal("orch run /abs/wf.lua", runs.rerun_command({ workflow_path = "/abs/wf.lua" }, nil, false))
    assert.are.equal([['it'\''s']], runs.shell_quote("it's"))
  end)
end)

describe("orch.fmt.usd", function()
  local usd = require("orch.fmt").usd
  it("keeps two significant digits below a dollar", function()
    assert.are.equal("$0.001", usd(0.001))
    assert.are.equal("$0.0015", usd(0.0015))
    assert.are.equal("$0.00012", usd(0.00012))
    assert.are.equal("$0.50", usd(0.5))
    assert.are.equal("$0.12", usd(0.123))
    assert.are.equal("$0.00", usd(0))
    assert.are.equal("$12.35", usd(12.345))
  end)
end)

describe("orch.param", function()
  it("records each name read with its default and description, once, in order", function()
    local orch = require("orch")
    local saved_params, saved_read = orch.params, orch.params_read
    orch.params, orch.params_read = { n = "5" }, {}
    assert.are.equal(5, orch.param("n", 1, "how many"))
    assert.are.equal("a", orch.param("s", "a"))
    orch.param("n", 1)
    assert.are.same({ { name = "n", default = 1, description = "how many" }, { name = "s", default = "a" } },
      { orch.params_read[1], orch.params_read[2] })
    assert.are.equal(2, #orch.params_read)
    orch.params, orch.params_read = saved_params, saved_read
  end)
end)
