-- serve_spec.lua -- orch serve's answers without a socket: the handler
-- over a store (routes, paging, 404), what never leaves the process
-- (secrets), the exposition text's escaping and live figures' shares.
-- The server itself, the page in a browser and the token rules are
-- tests/e2e/serve*.sh.
local json = require("orch.json")
local metrics = require("orch.metrics")
local serve = require("orch.serve")
local store = require("orch.store")

local function run(id, status, extra)
  local r = { id = id, name = "wf <" .. id .. ">", identity = "i", status = status, created_ms = 1000 }
  for k, v in pairs(extra or {}) do
    r[k] = v
  end
  return r
end

describe("orch.serve handler", function()
  local st, h
  before_each(function()
    st = assert(store.open(":memory:"))
    assert(st:run_create(run("a", "completed", { rows_done = 5, finished_ms = 3000 })))
    assert(st:run_create(run("b", "running", { rows_done = 2 })))
    for i = 1, 5 do
      assert(st:event_add("a", "e" .. i, '{"n":' .. i .. "}"))
    end
    assert(st:live_put("b", 2000, json.encode({ rows_done = 7, rows_total = 10, share = 0.7, rows_per_s = 3.5,
      error = "key sk-abcdefghijklmnop and Bearer tok123" })))
    h = serve.handler(st, serve.secrets({ "hunter2-secret" }))
  end)
  after_each(function()
    st:close()
  end)

  it("lists runs with live figures folded in, and pages them", function()
    local code, ctype, body = h("GET", "/api/runs", { limit = "1" })
    assert.equal(200, code)
    assert.equal("application/json", ctype)
    local d = json.decode(body)
    assert.equal(2, d.total)
    assert.equal(1, #d.runs)
    local _, _, body2 = h("GET", "/api/runs", { limit = "1", offset = "1" })
    local d2 = json.decode(body2)
    local by = {}
    for _, r in ipairs({ d.runs[1], d2.runs[1] }) do
      by[r.id] = r
    end
    assert.equal(7, by.b.rows_done) -- the live figure, ahead of the record's 2
    assert.equal(0.7, by.b.share)
    assert.equal(5, by.a.rows_done)
    assert.equal(1, by.a.share)
    local _, _, body3 = h("GET", "/api/runs", { status = "running" })
    assert.equal(1, json.decode(body3).total)
  end)

  it("pages events by id", function()
    local _, _, body = h("GET", "/api/runs/a/events", { after = "2", limit = "2" })
    local d = json.decode(body)
    assert.equal(2, #d.events)
    assert.equal("e3", d.events[1].type)
    assert.equal("e4", d.events[2].type)
    assert.equal(d.events[2].id, d.next)
    local _, _, newest = h("GET", "/api/runs/a/events", { order = "desc", limit = "2" })
    local n = json.decode(newest)
    assert.same({ "e5", "e4" }, { n.events[1].type, n.events[2].type })
    local _, _, older = h("GET", "/api/runs/a/events", { order = "desc", before = tostring(n.next), limit = "10" })
    local o = json.decode(older)
    assert.same({ "e3", "e2", "e1" }, { o.events[1].type, o.events[2].type, o.events[3].type })
  end)

  it("never answers with a secret", function()
    local _, _, body = h("GET", "/api/runs/b", {})
    assert.falsy(body:find("sk-abcdefghijklmnop", 1, true))
    assert.falsy(body:find("tok123", 1, true))
    assert.truthy(body:find("sk-*** and Bearer ***", 1, true))
    assert.equal("x *** y", serve.redact("x hunter2-secret y", serve.secrets({ "hunter2-secret" })))
    assert.equal("postgres://u:***@h/db", serve.redact("postgres://u:pw@h/db", {}))
  end)

  it("says 404 for an unknown run or page, and serves the page's files", function()
    local code, _, body = h("GET", "/api/runs/nope", {})
    assert.equal(404, code)
    assert.equal("no run 'nope' in this store", json.decode(body).error)
    assert.equal(404, (h("GET", "/etc/passwd", {})))
    assert.equal(404, (h("GET", "/../app.js", {})))
    local c2, t2, page = h("GET", "/", {})
    assert.equal(200, c2)
    assert.equal("text/html; charset=utf-8", t2)
    assert.truthy(page:find('<script src="/app.js"></script>', 1, true))
    local c3, t3 = h("GET", "/app.js", {})
    assert.equal(200, c3)
    assert.equal("text/javascript; charset=utf-8", t3)
  end)

  it("answers /metrics with both runs", function()
    local code, ctype, text = h("GET", "/metrics", {})
    assert.equal(200, code)
    assert.equal("text/plain; version=0.0.4; charset=utf-8", ctype)
    assert.truthy(text:find('\norch_rows_done_total 12\n', 1, true)) -- 5 + the live 7
    assert.truthy(text:find('\norch_run_rows_done_total{run_id="b",workflow="wf <b>"} 7\n', 1, true))
    assert.truthy(text:find('\norch_runs{status="running"} 1\n', 1, true))
  end)
end)

describe("orch.metrics", function()
  it("escapes label values as the exposition format asks", function()
    local text = metrics.exposition({ { run = { id = 'x"y', name = "a\\b\nc", status = "failed" } } })
    assert.truthy(text:find('orch_run_rows_done_total{run_id="x\\"y",workflow="a\\\\b\\nc"} 0\n', 1, true))
    assert.truthy(text:find('orch_run_status{run_id="x\\"y",workflow="a\\\\b\\nc",status="failed"} 1\n', 1, true))
  end)

  it("knows the share done from rows of a known total, else from a file's bytes", function()
    assert.equal(0.25, metrics.share({ rows_done = 1, rows_total = 4 }))
    assert.equal(0.5, metrics.share({ rows_done = 1, input_offset = 50, input_size = 100 }))
    assert.is_nil(metrics.share({ rows_done = 1 }))
  end)
end)
