-- store_sqlite_messages_spec.lua -- the SQLite backend's answers and the
-- exact wording of its failures, operation by operation
-- (storage/store_sqlite.c): a run that is not there, and every write on a
-- store opened read-only, where SQLite refuses the statement itself. Each
-- operation words a failed step in its own way (some name the run, some
-- do not), and the messages must stay as they are when the statements'
-- plumbing changes.
local store = require "orch.store"

local tmpdb = require("helpers").tmp_path

local function remove_db(path)
  for _, suffix in ipairs({ "", "-wal", "-shm" }) do
    os.remove(path .. suffix)
  end
end

local function run(id, extra)
  local r = { id = id, name = "wf", identity = "ident-" .. id, workflow_path = "/w.lua", workflow_hash = "h",
    input = "/in.jsonl", input_fp = "fp", params = "{}", output = "/out", owner_host = "host", status = "running",
    owner_pid = 7, heartbeat_ms = 5, created_ms = 1000, updated_ms = 1001, rows_done = 3, rows_ok = 2,
    rows_failed = 1, llm_calls = 4, tokens_in = 10, tokens_out = 20, cost_usd = 0.25, recoveries = 1 }
  for k, v in pairs(extra or {}) do
    r[k] = v
  end
  return r
end

local ckpt = { reason = "rows", name = "n", input_offset = 10, input_line = 2, input_index = 2, output_offset = 30,
  errors_offset = 0, memento = '{"a":1}' }

-- A store holding run r1 (a checkpoint with two results and state, two
-- events, live figures, a journaled reply, two leases, a budget) and run
-- r2, paused.
local function filled(path)
  local st = assert(store.open(path))
  assert(st:run_create(run("r1")))
  assert(st:run_create(run("r2", { status = "paused", created_ms = 2000 })))
  assert(st:checkpoint_write(run("r1"), ckpt,
    { { seq = 1, key = "k1", status = "ok" }, { seq = 2, key = "k2", status = "failed", error = "bad" } },
    { s1 = '"v1"' }))
  assert(st:event_add("r1", "started", '{"x":1}'))
  assert(st:event_add("r1", "row", nil))
  assert(st:live_put("r1", 77, '{"f":1}'))
  assert(st:journal_put({ key = "jk", run_id = "r1", provider = "p", model = "m", response = "resp", tokens_in = 1,
    tokens_out = 2, cost_usd = 0.5, latency_ms = 3 }))
  assert(st:journal_flush())
  assert(st:lease_plan("r1", { { no = 1, first_index = 0, rows = 2, offset = 0, line = 1 },
    { no = 2, first_index = 2, rows = 2, offset = 50, line = 3 } }))
  assert(st:budget_set("r1", 1.0))
  return st
end

-- The message of a call that must fail, with the store's path as DB.
local function failure(path, ok, err)
  assert.is_nil(ok)
  return (err:gsub(path:gsub("%p", "%%%0"), "DB", 1))
end

describe("the SQLite store", function()
  it("reads back every field of a run, checkpoint, result, event, lease and journaled reply", function()
    local path = tmpdb()
    local st = filled(path)
    local r = st:run_get("r1")
    for k, v in pairs(run("r1", { updated_ms = r.updated_ms })) do
      assert.are.equal(v, r[k], k)
    end
    assert.is_true(r.updated_ms > 1001) -- the checkpoint's update stamped it
    assert.are.equal(1, r.checkpoints)
    assert.are.same({ "r2", "r1" }, { st:run_list()[1].id, st:run_list()[2].id })
    assert.are.equal("r2", st:run_list({ status = "paused" })[1].id)
    assert.are.equal("r1", st:run_find_unfinished("ident-r1").id)
    assert.is_nil(st:run_get("zz"))
    local c = st:checkpoint_get("r1", 1)
    assert.are.same({ 1, "n", "rows", 10, 2, 2, 30, 0, '{"a":1}', 7 }, { c.seq, c.name, c.reason, c.input_offset,
      c.input_line, c.input_index, c.output_offset, c.errors_offset, c.memento, c.memento_len })
    local got = {}
    assert(st:each_result("r1", function(x)
      got[#got + 1] = { x.seq, x.key, x.status, x.error or false }
    end))
    assert.are.same({ { 1, "k1", "ok", false }, { 2, "k2", "failed", "bad" } }, got)
    local errs = st:error_page("r1", 0, 10)
    assert.are.same({ 2, "k2", "failed", "bad" }, { errs[1].seq, errs[1].key, errs[1].status, errs[1].error })
    assert.are.same({ s1 = '"v1"' }, st:state_list("r1"))
    local ev = st:event_list("r1")
    assert.are.same({ 1, "started", '{"x":1}', 2, "row" }, { ev[1].id, ev[1].type, ev[1].data, ev[2].id, ev[2].type })
    assert.is_nil(ev[2].data)
    local page = st:event_page("r1", 0, 1000000, 10, true)
    assert.are.same({ 2, 1 }, { page[1].id, page[2].id })
    local j = st:journal_get("jk")
    assert.are.same({ "jk", "r1", "p", "m", "resp", 1, 2, 0.5, 3.0, 1 }, { j.key, j.run_id, j.provider, j.model,
      j.response, j.tokens_in, j.tokens_out, j.cost_usd, j.latency_ms, j.hits })
    assert.is_true(j.created_ms > 0)
    local l = st:lease_claim("r1", "w1", 60000)
    assert.are.same({ 1, 0, 2, 0, 1, 0, "taken", "w1", 1 }, { l.no, l.first_index, l.rows, l.offset, l.line, l.index,
      l.status, l.owner, l.claims })
    local leases = st:lease_list("r1")
    assert.are.same({ "taken", "free" }, { leases[1].status, leases[2].status })
    assert.is_nil(leases[2].owner)
    assert.are.same({ max_usd = 1.0, spent_usd = 0.0, reserved_usd = 0.0 }, st:budget_get("r1"))
    st:close()
    remove_db(path)
  end)

  it("names the run that is not there", function()
    local path = tmpdb()
    local st = filled(path)
    assert.are.equal("DB: cannot update run ghost: no such run", failure(path, st:run_update(run("ghost"))))
    assert.are.equal("DB: cannot update run ghost: no such run",
      failure(path, st:checkpoint_write(run("ghost"), ckpt, {}, {})))
    assert.are.equal("DB: cannot record the live figures of run ghost: no such run",
      failure(path, st:live_put("ghost", 1, "{}")))
    assert.is_false(st:run_set_status("ghost", "failed", "x"))
    assert.is_false(st:run_delete("ghost"))
    assert.is_false(st:live_get("r2"))
    assert.is_false(st:budget_get("r2"))
    st:close()
    remove_db(path)
  end)

  it("refuses at open what cannot hold a store, in both modes", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    for _, mode in ipairs({ "rw", "r" }) do
      local st, err = store.open(dir, mode)
      assert.is_nil(st)
      assert.are.equal(dir .. ": is a directory, not a state database file", err)
      st, err = store.open("/dev/null", mode)
      assert.is_nil(st)
      assert.are.equal("/dev/null: not a regular file, cannot hold a state database", err)
    end
    os.remove(dir)
    -- an SQLite database without tables, a store's or anyone's
    local path = tmpdb()
    assert(os.execute("sqlite3 " .. path .. " 'PRAGMA page_size = 4096; VACUUM' >/dev/null"))
    local st, err = store.open(path, "r")
    assert.is_nil(st)
    assert.are.equal("no state store at " .. path .. " (the file is an empty database)", err)
    -- another program's: tables, but no application id
    assert(os.execute("sqlite3 " .. path .. " 'CREATE TABLE t (x)' >/dev/null"))
    for _, mode in ipairs({ "rw", "r" }) do
      st, err = store.open(path, mode)
      assert.is_nil(st)
      assert.are.equal(path .. ": is an SQLite database of another program", err)
    end
    remove_db(path)
  end)

  it("words each refused write as before, on a store opened read-only", function()
    local path = tmpdb()
    filled(path):close()
    local st = assert(store.open(path, "r"))
    local ro = ": attempt to write a readonly database"
    local cases = {
      { "DB: cannot create run r3", st:run_create(run("r3")) },
      { "DB: cannot update run", st:run_update(run("r1")) },
      { "DB: cannot claim run", st:run_claim("r1", 9, "h", 6000, 7, 5) },
      { "DB: cannot store result 1 of run r1", st:checkpoint_write(run("r1"), ckpt, { { seq = 1, status = "ok" } }, {}) },
      { "DB: cannot update run", st:checkpoint_write(run("r1"), ckpt, {}, {}) },
      { "DB: cannot record an event", st:event_add("r1", "x", nil) },
      { "DB: cannot record live figures", st:live_put("r1", 1, "{}") },
      { "DB: cannot claim a lease of run r1", st:lease_claim("r1", "w1", 60000) },
      { "DB: cannot heartbeat lease 1 of run r1", st:lease_heartbeat("r1", 1, "w1") },
      { "DB: cannot commit lease 1 of run r1", st:lease_commit("r1", { no = 1, worker = "w1", offset = 0, line = 1,
        index = 0 }, {}) },
      { "DB: cannot set the budget of run r1", st:budget_set("r1", 2.0) },
      { "DB: cannot reserve budget for run r1", st:budget_reserve("r1", 0.1, 1.0) },
      { "DB: cannot settle the budget of run r1", st:budget_settle("r1", 0.1, 0.1) },
      { "DB: cannot mark LLM request pk as being sent", st:journal_pend("pk", "w1", 60000) },
      { "DB: cannot take from the requests limit of run r1", st:rate_take("r1", "requests", 1, 60) },
      { "DB: cannot update run r1", st:run_set_status("r1", "failed", "boom") },
      { "DB: cannot roll run r1 back to checkpoint 1", st:checkpoint_rollback("r1", 1) },
      { "DB: cannot prune the journal", st:journal_prune(2000) },
      { "DB: cannot delete a run", st:run_delete("r2") },
    }
    for _, c in ipairs(cases) do
      assert.are.equal(c[1] .. ro, failure(path, c[2], c[3]))
    end
    assert(st:journal_put({ key = "k2", provider = "p", model = "m", response = "r" }))
    assert.are.equal("DB: cannot journal an LLM response" .. ro, failure(path, st:journal_flush()))
    -- reads still answer, and a journal hit that cannot be counted is no failure
    assert.are.equal(0, st:journal_get("jk").hits)
    assert.are.equal("r1", st:run_get("r1").id)
    st:close()
    remove_db(path)
  end)
end)

describe("a method called on something else", function()
  it("raises the usual message, and an open store answers", function()
    local path = tmpdb()
    local st = assert(store.open(path))
    local sink = require("orch.sink")
    local other = assert(sink.open(path .. ".out"))
    for _, self in ipairs({ {}, "x", 5, io.stdout, other }) do
      local ok, err = pcall(st.journal_reply, self, "k")
      assert.is_false(ok)
      assert.matches("bad argument #1 to '%?' %(orch.Store expected, got " .. (type(self) == "userdata"
        and "[^)]+" or type(self)) .. "%)", err)
    end
    -- a sink's method given the store: the sink's own check
    local ok, err = pcall(other.write, st, "x")
    assert.is_false(ok)
    assert.matches("orch.Sink expected, got orch.Store", err)
    assert.is_nil(st:journal_reply("k"))
    st:close()
    local ok2, err2 = pcall(st.journal_reply, st, "k")
    assert.are.same({ false, true }, { ok2, err2:find("attempt to use a closed store", 1, true) ~= nil })
    other:close()
    os.remove(path .. ".out")
    remove_db(path)
  end)
end)
