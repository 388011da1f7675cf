-- serve_fleet_spec.lua -- what orch serve shows of a run's provider
-- batches and workers (lua/orch/serve_fleet.lua) without a socket: the
-- batch summaries folded from the run's events, read on from the last
-- event seen (a page at a time), per store; /api/runs/ID's fields; the
-- per-run gauges. Real runs: tests/e2e/serve_batches.sh, serve_workers.sh.
local json = require("orch.json")
local serve = require("orch.serve")
local fleet = require("orch.serve_fleet")
local store = require("orch.store")

local function batch_ev(st, id, kind, d)
  assert(st:event_add(id, kind, json.encode(d)))
end

describe("orch.serve_fleet batches", function()
  local st, page
  before_each(function()
    st = assert(store.open(":memory:"))
    assert(st:run_create({ id = "r", name = "wf", identity = "i", status = "running", created_ms = 1000 }))
    page = fleet.PAGE
    fleet.PAGE = 3 -- several pages per read
  end)
  after_each(function()
    fleet.PAGE = page
    st:close()
  end)

  it("folds the batch events among the others, and later only the new ones", function()
    assert(st:event_add("r", "started", "{}"))
    batch_ev(st, "r", "batch_requests", { batch = 1, provider = "openai", keys = { "a", "b", "c" } })
    for i = 1, 4 do
      assert(st:event_add("r", "note", '{"n":' .. i .. "}"))
    end
    batch_ev(st, "r", "batch", { batch = 1, state = "submitted", id = "batch_7", submitted_ms = 5000, expected_ms = 9000 })
    local list = assert(fleet.batches(st, { id = "r" }))
    assert.equal(1, #list)
    assert.same({ batch = 1, provider = "openai", requests = 3, state = "submitted", id = "batch_7",
      submitted_ms = 5000, expected_ms = 9000 }, list[1])

    batch_ev(st, "r", "batch", { batch = 1, state = "polled", status = "in_progress", counts = { total = 3, completed = 1 } })
    batch_ev(st, "r", "batch_requests", { batch = 2, provider = "openai", keys = { "d" } })
    list = assert(fleet.batches(st, { id = "r" }))
    assert.equal(2, #list)
    assert.equal("in_progress", list[1].status)
    assert.same({ total = 3, completed = 1 }, list[1].counts)
    assert.same({ batch = 2, provider = "openai", requests = 1, state = "prepared" }, list[2])

    batch_ev(st, "r", "batch", { batch = 1, state = "ended", status = "completed", succeeded = 3, failed = 0, resent = 0 })
    list = assert(fleet.batches(st, { id = "r" }))
    assert.equal("ended", list[1].state)
    assert.equal(3, list[1].succeeded)
  end)

  it("a run without batches: none; another store's run of the same id is its own", function()
    assert(st:event_add("r", "started", "{}"))
    assert.same({}, fleet.batches(st, { id = "r" }))
    local other = assert(store.open(":memory:"))
    assert(other:run_create({ id = "r", name = "wf", identity = "i", status = "running", created_ms = 1000 }))
    batch_ev(other, "r", "batch_requests", { batch = 1, provider = "anthropic", keys = { "x" } })
    assert.equal(1, #fleet.batches(other, { id = "r" }))
    assert.same({}, fleet.batches(st, { id = "r" }))
    other:close()
  end)

  it("/api/runs/ID carries the batches; a run that is not a worker run has no workers", function()
    batch_ev(st, "r", "batch_requests", { batch = 1, provider = "openai", keys = { "a" } })
    local code, _, body = serve.handler(st, {})("GET", "/api/runs/r", {})
    assert.equal(200, code)
    local d = json.decode(body)
    assert.equal("openai", d.batches[1].provider)
    assert.is_nil(d.workers)
  end)

  it("/metrics: per-run batch gauges, with HELP and TYPE, escaped labels", function()
    assert(st:run_create({ id = "q", name = 'a "b"\\', identity = "j", status = "running", created_ms = 1000 }))
    batch_ev(st, "q", "batch_requests", { batch = 1, provider = "openai", keys = { "a", "b" } })
    batch_ev(st, "q", "batch_requests", { batch = 2, provider = "openai", keys = { "c" } })
    batch_ev(st, "q", "batch", { batch = 1, state = "ended", status = "completed", succeeded = 2 })
    local text = fleet.metrics(st, { st:run_get("q"), st:run_get("r") })
    assert.equal(table.concat({
      "# HELP orch_run_batches Provider batches of a run by state (ended or open).",
      "# TYPE orch_run_batches gauge",
      'orch_run_batches{run_id="q",workflow="a \\"b\\"\\\\",state="open"} 1',
      'orch_run_batches{run_id="q",workflow="a \\"b\\"\\\\",state="ended"} 1',
      "# HELP orch_run_batch_requests Requests in a run's provider batches by state (open: in batches not ended).",
      "# TYPE orch_run_batch_requests gauge",
      'orch_run_batch_requests{run_id="q",workflow="a \\"b\\"\\\\",state="open"} 1',
      'orch_run_batch_requests{run_id="q",workflow="a \\"b\\"\\\\",state="ended"} 2',
      "" }, "\n"), text)
    assert.equal("", fleet.metrics(st, { st:run_get("r") }))
  end)
end)
