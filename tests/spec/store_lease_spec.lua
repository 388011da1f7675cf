-- store_lease_spec.lua -- the store operations behind `orch worker`:
-- leases (plan, claim, heartbeat, commit, list) and the shared budget,
-- per backend like store_spec.lua (ORCH_TEST_STORE=sqlite|memory|postgres|redis).
local store = require("orch.store")

local backend = os.getenv("ORCH_TEST_STORE") or "sqlite"
local pg_url = os.getenv("ORCH_TEST_PG_URL")
assert(backend ~= "postgres" or pg_url, "ORCH_TEST_STORE=postgres needs ORCH_TEST_PG_URL (run through tests/with_pg.sh)")
local redis_url = os.getenv("ORCH_TEST_REDIS_URL")
assert(backend ~= "redis" or redis_url, "ORCH_TEST_STORE=redis needs ORCH_TEST_REDIS_URL (run through tests/with_redis.sh)")

local function fresh()
  local st, path
  if backend == "memory" then
    st, path = assert(store.open(":memory:")), ":memory:"
  elseif backend == "postgres" then
    st, path = assert(store.open(pg_url)), pg_url
    st:run_delete("wl1")
  elseif backend == "redis" then
    st, path = assert(store.open(redis_url)), redis_url
    st:run_delete("wl1")
  else
    path = os.tmpname()
    os.remove(path)
    st = assert(store.open(path))
  end
  assert(st:run_create({ id = "wl1", name = "n", identity = "i", status = "running", created_ms = 1 }))
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

-- three leases of 2, 2 and 1 rows over a 5-row input of 10-byte lines
local plan = {
  { no = 1, first_index = 0, rows = 2, offset = 0, line = 1 },
  { no = 2, first_index = 2, rows = 2, offset = 20, line = 3 },
  { no = 3, first_index = 4, rows = 1, offset = 40, line = 5 },
}

local function busy_wait_ms(ms)
  local t = store.now_ms() + ms
  while store.now_ms() < t do
  end
end

describe("orch.store leases", function()
  it("plans once and hands leases out in order, each to one worker", function()
    local st, path = fresh()
    assert.is_true(st:lease_plan("wl1", plan))
    -- a second plan (another worker indexing at once, other lease sizes) changes nothing
    assert.is_true(st:lease_plan("wl1", { { no = 1, first_index = 0, rows = 5, offset = 0, line = 1 } }))
    local a = assert(st:lease_claim("wl1", "w-a", 60000))
    local b = assert(st:lease_claim("wl1", "w-b", 60000))
    local c = assert(st:lease_claim("wl1", "w-a", 60000))
    assert.are.same({ 1, 2, 3 }, { a.no, b.no, c.no })
    assert.are.same({ 2, 20, 3, 2, "taken", "w-b", 1 }, { b.first_index, b.offset, b.line, b.index, b.status,
      b.owner, b.claims })
    assert.is_false(st:lease_claim("wl1", "w-c", 60000)) -- none left: all fresh
    local list = assert(st:lease_list("wl1"))
    assert.are.equal(3, #list)
    assert.are.same({ "w-a", "w-b", "w-a" }, { list[1].owner, list[2].owner, list[3].owner })
    cleanup(st, path)
  end)

  it("takes a stale lease back, and the old holder's commit then writes nothing", function()
    local st, path = fresh()
    assert(st:lease_plan("wl1", plan))
    local a = assert(st:lease_claim("wl1", "w-a", 60000))
    assert.is_true(st:lease_heartbeat("wl1", a.no, "w-a"))
    assert.is_false(st:lease_heartbeat("wl1", a.no, "w-b")) -- not w-b's
    busy_wait_ms(20)
    -- w-b counts a heartbeat older than 5 ms as stale: lease 1 comes back to it
    local again = assert(st:lease_claim("wl1", "w-b", 5))
    assert.are.same({ 1, "w-b", 2 }, { again.no, again.owner, again.claims })
    assert.is_false(st:lease_heartbeat("wl1", 1, "w-a"))
    local rc = assert(st:lease_commit("wl1", { no = 1, worker = "w-a", offset = 20, line = 3, index = 2, ["end"] = 1,
      add = { rows_done = 2, rows_ok = 2 } }, { { seq = 1, status = "ok", data = "A\n" } }))
    assert.are.equal(0, rc)
    local n = 0
    st:each_result("wl1", function()
      n = n + 1
    end)
    assert.are.equal(0, n)
    assert.are.equal(0, assert(st:run_get("wl1")).rows_done)
    cleanup(st, path)
  end)

  it("commits a lease's results, cursor and counters at once; the last lease completes the run", function()
    local st, path = fresh()
    assert(st:lease_plan("wl1", plan))
    local l1 = assert(st:lease_claim("wl1", "w-a", 60000))
    -- progress: one row settled, the lease stays taken
    assert.are.equal(1, st:lease_commit("wl1", { no = l1.no, worker = "w-a", offset = 10, line = 2, index = 1,
      ["end"] = 0, add = { rows_done = 1, rows_ok = 1, cost_usd = 0.25, llm_calls = 1 } },
      { { seq = 1, key = "k1", status = "ok", data = "{\"a\":1}\n" } }))
    -- given back: free again, claimed next from its cursor
    assert.are.equal(1, st:lease_commit("wl1", { no = 1, worker = "w-a", offset = 10, line = 2, index = 1,
      ["end"] = 2 }, {}))
    local again = assert(st:lease_claim("wl1", "w-b", 60000))
    assert.are.same({ 1, 10, 2, 1 }, { again.no, again.offset, again.line, again.index })
    assert.are.equal(1, st:lease_commit("wl1", { no = 1, worker = "w-b", offset = 20, line = 3, index = 2,
      ["end"] = 1, add = { rows_done = 1, rows_failed = 1 } }, { { seq = 2, key = "k2", status = "failed",
      error = "boom" } }))
    local l2 = assert(st:lease_claim("wl1", "w-b", 60000))
    local l3 = assert(st:lease_claim("wl1", "w-a", 60000))
    assert.are.equal(1, st:lease_commit("wl1", { no = l3.no, worker = "w-a", offset = 50, line = 6, index = 5,
      ["end"] = 1, add = { rows_done = 1, rows_ok = 1 } }, { { seq = 5, status = "ok", data = "e\n" } }))
    assert.are.equal("running", assert(st:run_get("wl1")).status)
    assert.are.equal(2, st:lease_commit("wl1", { no = l2.no, worker = "w-b", offset = 40, line = 5, index = 4,
      ["end"] = 1, add = { rows_done = 2, rows_dropped = 2 } }, { { seq = 3, status = "dropped" },
      { seq = 4, status = "dropped" } }))
    local run = assert(st:run_get("wl1"))
    assert.are.same({ "completed", 5, 2, 1, 2, 1 }, { run.status, run.rows_done, run.rows_ok, run.rows_failed,
      run.rows_dropped, run.llm_calls })
    assert.is_true(math.abs(run.cost_usd - 0.25) < 1e-12)
    local seen = {}
    st:each_result("wl1", function(r)
      seen[#seen + 1] = string.format("%d %s %s", r.seq, r.status, r.data or "-")
    end)
    assert.are.same({ "1 ok {\"a\":1}\n", "2 failed -", "3 dropped -", "4 dropped -", "5 ok e\n" }, seen)
    local list = assert(st:lease_list("wl1"))
    assert.are.same({ "done", "done", "done" }, { list[1].status, list[2].status, list[3].status })
    assert.are.equal(2, list[1].claims)
    assert.is_false(st:lease_claim("wl1", "w-c", 0))
    cleanup(st, path)
  end)

  it("refuses an unnumbered plan with the lease named", function()
    local st, path = fresh()
    local ok, err = st:lease_plan("wl1", { { no = 2, first_index = 0, rows = 1 } })
    assert.is_nil(ok)
    assert.matches("lease_plan: lease 1 of run wl1 is numbered 2 with 1 rows", err, 1, true)
    cleanup(st, path)
  end)
end)

describe("orch.store shared budget", function()
  it("reserves only while spent + reserved + the estimate fit the max", function()
    local st, path = fresh()
    assert.is_false(st:budget_get("wl1"))
    assert.is_true(st:budget_reserve("wl1", 0.4, 1.0)) -- the first reservation sets the max
    assert.is_true(st:budget_reserve("wl1", 0.4, 99)) -- the max stays 1.0
    assert.is_false(st:budget_reserve("wl1", 0.4, 99)) -- 0.8 + 0.4 > 1.0
    assert.is_true(st:budget_settle("wl1", 0.4, 0.1)) -- a reply that cost less than its estimate
    local b = assert(st:budget_get("wl1"))
    assert.are.same({ 1.0, 0.1 }, { b.max_usd, b.spent_usd })
    assert.is_true(math.abs(b.reserved_usd - 0.4) < 1e-12)
    assert.is_true(st:budget_reserve("wl1", 0.5, 99)) -- 0.1 + 0.4 + 0.5 = 1.0 fits
    assert.is_false(st:budget_reserve("wl1", 0.01, 99))
    assert.is_true(st:budget_set("wl1", 2.0)) -- orch resume --budget: stale reservations dropped
    b = assert(st:budget_get("wl1"))
    assert.are.same({ 2.0, 0.1, 0 }, { b.max_usd, b.spent_usd, b.reserved_usd })
    assert.is_true(st:budget_reserve("wl1", 1.9, 99))
    cleanup(st, path)
  end)
end)

describe("orch.store run_set_status", function()
  it("sets the status and error only, leaving the counters the commits add to", function()
    local st, path = fresh()
    assert(st:lease_plan("wl1", plan))
    local l = assert(st:lease_claim("wl1", "w-a", 60000))
    local before = assert(st:run_get("wl1")) -- a worker's stale copy
    assert.are.equal(1, st:lease_commit("wl1", { no = l.no, worker = "w-a", offset = 20, line = 3, index = 2,
      ["end"] = 1, add = { rows_done = 2, rows_ok = 2 } }, {}))
    assert.are.equal(0, before.rows_done)
    assert.is_true(st:run_set_status("wl1", "paused", "budget: reached"))
    local run = assert(st:run_get("wl1"))
    assert.are.same({ "paused", "budget: reached", 2, 2, 0 }, { run.status, run.error, run.rows_done, run.rows_ok,
      run.finished_ms })
    assert.is_true(st:run_set_status("wl1", "failed", "boom"))
    assert.is_true(assert(st:run_get("wl1")).finished_ms > 0)
    assert.is_false(st:run_set_status("nope", "running"))
    assert.has_error(function()
      st:run_set_status("wl1", "sleeping")
    end, "unknown run status 'sleeping'")
    cleanup(st, path)
  end)
end)

describe("orch.store journal_pend", function()
  it("lets one owner send a request at a time; a commit drops the markers of journaled replies", function()
    local st, path = fresh()
    if backend == "postgres" or backend == "redis" then
      assert(st:journal_prune(math.maxinteger))
    end
    local k1, k2, k3 = "pend-k1-" .. store.now_ms(), "pend-k2-" .. store.now_ms(), "pend-k3-" .. store.now_ms()
    assert.is_true(st:journal_pend(k1, "w-a", 60000))
    assert.is_false(st:journal_pend(k1, "w-b", 60000)) -- w-a is sending it: w-b waits
    assert.is_true(st:journal_pend(k1, "w-a", 60000)) -- w-a again (a retry): still its own
    assert.is_true(st:journal_pend(k2, "w-a", 60000))
    assert.is_true(st:journal_pend(k3, "w-a", 5))
    busy_wait_ms(20)
    assert.is_true(st:journal_pend(k3, "w-b", 60000)) -- w-a's marker expired: w-b may send
    -- w-a's reply for k1 is journaled; its next lease commit drops that marker, not k2's
    assert.is_true(st:journal_put({ key = k1, provider = "openai", model = "m", response = "r", tokens_in = 1,
      tokens_out = 1, cost_usd = 0.1, latency_ms = 1 }))
    assert(st:journal_flush())
    assert(st:lease_plan("wl1", plan))
    local l = assert(st:lease_claim("wl1", "w-a", 60000))
    assert.are.equal(1, st:lease_commit("wl1", { no = l.no, worker = "w-a", offset = 0, line = 1, index = 0,
      ["end"] = 0 }, {}))
    -- k1's reply is journaled: no one marks it to send it again, though its
    -- marker is gone (a lookup that missed the reply raced that commit)
    assert.is_false(st:journal_pend(k1, "w-b", 60000))
    assert.is_false(st:journal_pend(k1, "w-a", 60000))
    assert.is_false(st:journal_pend(k2, "w-b", 60000))
    local ok, err = st:journal_pend(k1, "w-b", 0)
    assert.is_nil(ok)
    assert.matches("journal_pend: needs a key, an owner and a time to live above 0 ms", err, 1, true)
    cleanup(st, path)
  end)
end)

describe("orch.store rate_take", function()
  it("keeps one token bucket per run and kind, shared by every handle on the store", function()
    local st, path = fresh()
    -- 1 a minute: a bucket of 1 token (the floor), refilled in 60 s
    assert.are.equal(0, st:rate_take("wl1", "rpm", 1, 1))
    local wait = assert(st:rate_take("wl1", "rpm", 1, 1))
    assert.is_true(wait > 50000 and wait <= 60001, "waits about a minute for the next token: " .. wait)
    assert.are.equal(0, st:rate_take("wl1", "tpm", 1, 1)) -- another kind, another bucket
    if backend ~= "memory" then -- another worker's connection draws on the same bucket
      local other = assert(store.open(path))
      local w2 = assert(other:rate_take("wl1", "rpm", 1, 1))
      assert.is_true(w2 > 50000 and w2 <= 60001, "the other handle waits too: " .. w2)
      other:close()
    end
    cleanup(st, path)
  end)

  it("grants at most a second's worth at once plus the refill, and grants after the wait it names", function()
    local st, path = fresh()
    -- 600 a minute: 10 a second, a bucket of 10
    local t0 = store.now_ms()
    local granted, refused = 0, 0
    for _ = 1, 60 do
      local w = assert(st:rate_take("wl1", "rpm", 1, 600))
      if w == 0 then
        granted = granted + 1
      else
        refused = refused + 1
        assert.is_true(w >= 1 and w <= 101, "one token is at most 100 ms away: " .. w)
      end
    end
    local elapsed_s = (store.now_ms() - t0) / 1000
    assert.is_true(granted >= 10, "a full bucket to start with: " .. granted)
    assert.is_true(granted <= 10 + 10 * elapsed_s + 1, string.format("%d granted in %.3f s", granted, elapsed_s))
    assert.are.equal(60, granted + refused)
    -- the wait it names is enough (this handle alone draws on the bucket)
    local w = st:rate_take("wl1", "rpm", 1, 600)
    while w == 0 do
      w = st:rate_take("wl1", "rpm", 1, 600)
    end
    busy_wait_ms(w)
    assert.are.equal(0, st:rate_take("wl1", "rpm", 1, 600))
    cleanup(st, path)
  end)

  it("takes a full bucket for an amount above it, and checks its arguments", function()
    local st, path = fresh()
    -- 6 tokens a minute: a bucket of 1; 5 tokens asked of a full bucket take it all
    assert.are.equal(0, st:rate_take("wl1", "tpm", 5, 6))
    local wait = assert(st:rate_take("wl1", "tpm", 0.5, 6))
    assert.is_true(wait > 0 and wait <= 5001, "half a token at 0.1 a second: " .. wait)
    local ok, err = st:rate_take("wl1", "rpm", 1, 0)
    assert.is_nil(ok)
    assert.matches("rate_take: needs a run id, a kind, an amount of 0 or more and a limit per minute above 0", err,
      1, true)
    ok, err = st:rate_take("wl1", "", 1, 60)
    assert.is_nil(ok)
    assert.matches("rate_take: needs a run id", err, 1, true)
    cleanup(st, path)
  end)
end)
