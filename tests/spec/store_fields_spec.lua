-- store_fields_spec.lua -- every field of the store's tables crosses the
-- Lua bindings (core/store_lua.c) both ways, by name and value: runs,
-- checkpoints, results, events, journal entries, stats, leases and the
-- budget, and the answers of lookups that find nothing. On :memory:, as
-- the bindings are the same for every backend.
local store = require("orch.store")
local keys = require("orch.check").sorted_keys
local h = require("helpers")

local RUN = {
  id = "f1", name = "n", identity = "ident", workflow_path = "/w.lua", workflow_hash = "wh", input = "/in.csv",
  input_fp = "fp", params = "{}", output = "/out.jsonl", error = "why", owner_host = "host", status = "paused",
  owner_pid = 7, heartbeat_ms = 11, created_ms = 12, updated_ms = 13, finished_ms = 14, rows_done = 21,
  rows_ok = 22, rows_failed = 23, rows_dropped = 24, rows_defaulted = 25, llm_calls = 26, tokens_in = 27,
  tokens_out = 28, cost_usd = 0.5, recoveries = 3,
}

local function open_with_run()
  local st = assert(store.open(":memory:"))
  assert.is_true(st:run_create(RUN))
  return st
end

describe("orch.store tables", function()
  it("carry every field of a run, from run_create to run_get and run_list", function()
    local st = open_with_run()
    local want = {}
    for k, v in pairs(RUN) do
      want[k] = v
    end
    want.checkpoints = 0
    assert.are.same(want, assert(st:run_get("f1")))
    assert.are.same({ want }, assert(st:run_list({ name = "n" })))
    assert.is_nil(st:run_get("nope"))
    assert.is_nil(st:run_find_unfinished("no-such-identity"))
    assert.are.equal("f1", assert(st:run_find_unfinished("ident")).id)
    h.fails_with("run.id is required", st.run_create, st, { name = "x" })
    st:close()
  end)

  it("carry every field of a checkpoint and of its results", function()
    local st = open_with_run()
    local w = assert(st:checkpoint_write(RUN, { reason = "rows", name = "cp", input_offset = 100, input_line = 5,
      input_index = 4, output_offset = 200, errors_offset = 30, memento = "{}" },
      { { seq = 1, key = 10, status = "ok" }, { seq = 2, key = "k2", status = "failed", error = "boom" } }, {}))
    assert.are.same({ "bytes", "checksum", "duration_ms", "seq" }, keys(w))
    local c = assert(st:checkpoint_get("f1", w.seq))
    assert.are.same({ "bytes", "checksum", "created_ms", "duration_ms", "errors_offset", "input_index",
      "input_line", "input_offset", "memento", "memento_len", "name", "output_offset", "reason", "seq", "valid" },
      keys(c))
    assert.are.same({ w.seq, "cp", "rows", 100, 5, 4, 200, 30, "{}", 2, w.checksum, true },
      { c.seq, c.name, c.reason, c.input_offset, c.input_line, c.input_index, c.output_offset, c.errors_offset,
        c.memento, c.memento_len, c.checksum, c.valid })
    assert.is_nil(st:checkpoint_get("f1", w.seq + 1))
    local rows = {}
    assert.is_true(st:each_result("f1", function(r)
      rows[#rows + 1] = r
    end))
    assert.are.same({ { seq = 1, key = "10", status = "ok" }, { seq = 2, key = "k2", status = "failed",
      error = "boom" } }, rows)
    assert.are.same({ { seq = 2, key = "k2", status = "failed", error = "boom" } }, assert(st:error_page("f1", 0, 10)))
    h.fails_with("results[1].status is required", st.checkpoint_write, st, RUN, { reason = "rows" },
      { { seq = 1 } }, {})
    st:close()
  end)

  it("carry every field of an event and of a journal entry, and the store's stats", function()
    local st = open_with_run()
    assert.is_true(st:event_add("f1", "started", '{"a":1}'))
    local ev = assert(st:event_list("f1"))[1]
    assert.are.same({ "data", "id", "ts_ms", "type" }, keys(ev))
    assert.are.same({ "started", '{"a":1}' }, { ev.type, ev.data })
    assert.is_nil(st:journal_get("k"))
    assert.is_true(st:journal_put({ key = "k", run_id = "f1", provider = "p", model = "m", response = "r\0x",
      tokens_in = 3, tokens_out = 4, cost_usd = 0.25, latency_ms = 9.5 }))
    assert.is_true(st:journal_flush())
    local e = assert(st:journal_get("k"))
    assert.are.same({ "cost_usd", "created_ms", "hits", "key", "latency_ms", "model", "provider", "response",
      "run_id", "tokens_in", "tokens_out" }, keys(e))
    assert.are.same({ "k", "f1", "p", "m", "r\0x", 3, 4, 0.25, 9.5, 1 }, { e.key, e.run_id, e.provider, e.model,
      e.response, e.tokens_in, e.tokens_out, e.cost_usd, e.latency_ms, e.hits })
    local s = assert(st:stats())
    assert.are.same({ "active", "bytes", "checkpoint_max_ms", "checkpoint_mean_ms", "checkpoints", "completed",
      "failed", "journal_entries", "journal_hits", "journal_saved_usd", "paused", "recoveries", "runs" }, keys(s))
    assert.are.same({ 1, 1, 1, 3 }, { s.runs, s.paused, s.journal_entries, s.recoveries })
    assert.are.equal(false, st:live_get("f1"))
    st:close()
  end)

  it("carry every field of a lease, its commit's cursor, counters and data, and the budget", function()
    local st = open_with_run()
    assert.is_true(st:lease_plan("f1", { { no = 1, first_index = 0, rows = 2, offset = 0, line = 1 } }))
    local l = assert(st:lease_claim("f1", "w", 60000))
    assert.are.same({ "age_ms", "claimed_ms", "claims", "done_ms", "first_index", "heartbeat_ms", "index", "line",
      "no", "offset", "owner", "rows", "status" }, keys(l))
    assert.are.same({ 1, 0, 2, 0, 1, 0, "taken", "w", 1, 0 },
      { l.no, l.first_index, l.rows, l.offset, l.line, l.index, l.status, l.owner, l.claims, l.done_ms })
    assert.are.equal(false, st:lease_claim("f1", "w2", 60000))
    assert.are.equal(1, st:lease_commit("f1", { no = 1, worker = "w", offset = 10, line = 2, index = 1, ["end"] = 0,
      add = { rows_done = 1, rows_ok = 1, rows_failed = 1, rows_dropped = 1, rows_defaulted = 1, llm_calls = 1,
        tokens_in = 1, tokens_out = 1, cost_usd = 0.25 } }, { { seq = 1, key = "a", status = "ok", data = "A\n" } }))
    local listed = assert(st:lease_list("f1"))[1]
    assert.are.same({ 10, 2, 1 }, { listed.offset, listed.line, listed.index })
    local run = assert(st:run_get("f1"))
    assert.are.same({ 22, 23, 24, 25, 26, 27, 28, 29, 0.75 }, { run.rows_done, run.rows_ok, run.rows_failed,
      run.rows_dropped, run.rows_defaulted, run.llm_calls, run.tokens_in, run.tokens_out, run.cost_usd })
    local data = {}
    st:each_result("f1", function(r)
      data[#data + 1] = r.data
    end)
    assert.are.same({ "A\n" }, data)
    h.fails_with("lease_commit: worker is required", st.lease_commit, st, "f1", { no = 1 }, {})
    assert.are.equal(false, st:budget_get("f1"))
    assert.is_true(st:budget_set("f1", 2))
    assert.is_true(st:budget_reserve("f1", 0.5, 2))
    assert.are.same({ max_usd = 2, spent_usd = 0, reserved_usd = 0.5 }, assert(st:budget_get("f1")))
    st:close()
  end)
end)
