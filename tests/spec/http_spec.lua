-- orch.http and the retry rules of HTTP providers (orch.providers.http).
-- The full exchange against a real server is tests/e2e/llm_http.sh.
local http = require("orch.http")
local sched = require("orch.sched")
local ph = require("orch.providers.http")
local json = require("orch.json")

describe("orch.http.request", function()
  it("returns nil and curl's message when nothing listens", function()
    local resp, err = sched.run(function()
      return http.request { url = "http://127.0.0.1:1/", timeout = 2 }
    end)
    assert.is_nil(resp)
    assert.is_truthy(err:find("127.0.0.1", 1, true), err)
  end)

  it("must be called from a task", function()
    local ok, err = pcall(http.request, { url = "http://127.0.0.1:1/" })
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("must be called from a row, step or task", 1, true))
  end)

  it("checks its arguments before doing anything", function()
    local ok, err = pcall(sched.run, function()
      return http.request { url = "http://127.0.0.1:1/", timeout = -1 }
    end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("timeouts and max_body must be positive", 1, true))
  end)

  it("offline, sends nothing: answers with an error, or the on_estimate reply, and counts", function()
    http.offline(true)
    local resp, err = sched.run(function()
      return http.request { method = "POST", url = "http://127.0.0.1:1/x" }
    end)
    assert.is_nil(resp)
    assert.are.equal("orch.http.request: POST http://127.0.0.1:1/x was not sent: an estimate (orch estimate, orch run "
      .. "--dry-run) sends nothing; to give the workflow a reply meanwhile, set orch.http.on_estimate(function(req) "
      .. "return { status = 200, body = \"...\", headers = {} } end)", err)
    http.on_estimate(function(req)
      sched.sleep(0.001) -- the stand-in may suspend like a request
      return { status = 200, body = "for " .. req.url }
    end)
    resp = sched.run(function()
      return http.request { url = "http://127.0.0.1:1/y" }
    end)
    assert.are.same({ status = 200, body = "for http://127.0.0.1:1/y" }, resp)
    assert.are.same({ 2, true }, { http.offline(false) })
    http.on_estimate(nil)
    assert.are.same({ 0, false }, { http.offline(false) })
    local ok, e = pcall(http.on_estimate, 5)
    assert.is_false(ok)
    assert.truthy(tostring(e):find("function expected, got number", 1, true), tostring(e))
  end)

  it("runs many requests concurrently, each suspending only its task", function()
    local n = sched.run(function()
      for _ = 1, 50 do
        sched.spawn(function()
          return http.request { url = "http://127.0.0.1:1/", timeout = 2 }
        end)
      end
      local got = 0
      while got < 50 do
        got = got + #sched.wait()
      end
      return got
    end)
    assert.are.equal(50, n)
  end)
end)

describe("orch.http.post", function()
  it("checks its arguments and must be called from a task", function()
    local fails_with = require("helpers").fails_with
    local set = http.headers({ a = "b" })
    fails_with("orch.http.post must be called from a row, step or task", http.post, "http://127.0.0.1:1/", set, "{}",
      1, 1)
    fails_with("bad argument #2 to 'orch.http.post' (orch.HttpHeaders expected, got string)", http.post, "http://x/", "h", "{}",
      1, 1)
    fails_with("bad argument #4 to 'orch.http.post' (timeouts must be positive)", http.post, "http://x/", set, "{}", -1, 1)
    fails_with("bad argument #3 to 'orch.http.post' (string expected, got nil)", http.post, "http://x/", set, nil, 1, 1)
    fails_with("bad argument #1 to 'orch.http.headers' (table expected, got string)", http.headers, "a: b")
  end)

  it("offline, sends nothing and counts nothing: it answers false, for the caller to ask request", function()
    http.offline(true)
    local r = table.pack(sched.run(function()
      return http.post("http://127.0.0.1:1/x", http.headers({}), "{}", 1, 1)
    end))
    assert.are.same({ false, n = 1 }, r)
    assert.are.same({ 0, false }, { http.offline(false) })
  end)
end)

describe("Retry-After", function()
  it("reads seconds", function()
    assert.are.equal(3, ph.retry_after("3"))
    assert.are.equal(1.5, ph.retry_after("1.5"))
    assert.are.equal(0, ph.retry_after("-2"))
  end)

  it("reads an HTTP date as seconds from now", function()
    local future = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 30)
    local s = ph.retry_after(future)
    assert.is_true(s >= 28 and s <= 31, "got " .. tostring(s))
    assert.are.equal(0, ph.retry_after("Wed, 21 Oct 2015 07:28:00 GMT"))
  end)

  it("ignores what it cannot read", function()
    assert.is_nil(ph.retry_after(nil))
    assert.is_nil(ph.retry_after("soon"))
  end)
end)

describe("orch.http.request arguments", function()
  it("takes a number body and method-like values without losing them", function()
    -- a number converted to a string lives only on the stack: it must stay anchored
    local resp, err = sched.run(function()
      return http.request { url = "http://127.0.0.1:1/", method = "POST", body = 12345, timeout = 1,
        headers = { ["x-n"] = 7, "X-Raw: yes" } }
    end)
    assert.is_nil(resp)
    assert.is_string(err)
  end)
end)

describe("orch.http.request against a real server", function()
  local pid, base, dir

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local p = assert(io.popen("python3 tests/llm_server.py --port 0 --port-file " .. dir
      .. "/port >" .. dir .. "/server.log 2>&1 & echo $!"))
    pid = p:read("l")
    p:close()
    local port
    for _ = 1, 200 do
      local f = io.open(dir .. "/port")
      port = f and f:read("l")
      if f then
        f:close()
      end
      if port and port ~= "" then
        break
      end
      os.execute("sleep 0.05")
    end
    assert(port and port ~= "", "the test server did not start")
    base = "http://127.0.0.1:" .. port
  end)

  teardown(function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    os.execute("rm -rf " .. dir)
  end)

  it("sends each request's own method and body on a reused handle", function()
    local got = sched.run(function()
      local out = {}
      local function call(method, path, body)
        local r, err = http.request { method = method, url = base .. path, body = body, timeout = 10 }
        assert(r, err)
        out[#out + 1] = string.format("%s %s %d %s", method, path, r.status, r.body:sub(1, 2))
      end
      call("POST", "/admin/config", "{}")
      call("GET", "/health")
      call("HEAD", "/health")
      call("GET", "/health")
      call("DELETE", "/health")
      call("POST", "/health", "x")
      call("GET", "/health")
      return table.concat(out, "\n")
    end)
    assert.are.equal(table.concat({
      "POST /admin/config 200 {\"",
      "GET /health 200 ok",
      "HEAD /health 200 ",
      "GET /health 200 ok",
      "DELETE /health 405 {\"",
      "POST /health 405 {\"",
      "GET /health 200 ok",
    }, "\n"), got)
  end)

  it("post sends a header set built once, and gives status, body, time and Retry-After as request does", function()
    local set = http.headers({ authorization = "Bearer k", ["content-type"] = "application/json" })
    local hdrs = { authorization = "Bearer k", ["content-type"] = "application/json" }
    local function body(text)
      return '{"model":"m","messages":[{"role":"user","content":"' .. text .. '"}]}'
    end
    local got = sched.run(function()
      local out = {}
      for i, h in ipairs({ set, hdrs, set }) do -- the set again: a request left it as it was
        local status, b, time, ra = http.post(base .. "/v1/chat/completions", h, body("hi " .. i), 10, 5)
        out[#out + 1] = { status, json.decode(b).choices[1].message.content, math.type(time), ra }
      end
      local status, b, _, ra = http.post(base .. "/v1/chat/completions", set, body("[[fault:429]] x"), 10, 5)
      local resp = http.request({ method = "POST", url = base .. "/v1/chat/completions", headers = hdrs,
        body = body("[[fault:429]] x"), timeout = 10 })
      out[#out + 1] = { status, ra, resp.status, resp.headers["retry-after"], b == resp.body }
      out[#out + 1] = { http.post(base .. "/v1/chat/completions", {}, body("no key"), 10, 5) }
      out[#out + 1] = { http.post("http://127.0.0.1:1/", set, "{}", 2, 2) }
      return out
    end)
    assert.are.same({ 200, "echo: hi 1", "float" }, got[1])
    assert.are.same({ 200, "echo: hi 2", "float" }, got[2])
    assert.are.same({ 200, "echo: hi 3", "float" }, got[3])
    assert.are.same({ 429, "1", 429, "1", true }, got[4])
    assert.are.equal(401, got[5][1])
    assert.is_nil(got[6][1])
    assert.is_truthy(got[6][2]:find("127.0.0.1", 1, true), got[6][2])
  end)

  it("exchange sends a provider's request built without headers, as before", function()
    local p = {
      parse = function(d) return d.choices[1].message.content, {} end,
      error_message = function(d) return d.error and d.error.message end,
    }
    local r = { url = base .. "/v1/chat/completions", body = '{"model":"m","messages":[{"role":"user","content":"x"}]}' }
    local text, err, attempts = sched.run(function()
      return ph.exchange(p, r, { timeout = 10 }, {})
    end)
    assert.is_nil(text)
    assert.are.equal("HTTP 401: Missing bearer token", err)
    assert.are.equal(1, attempts)
    local ok, e = pcall(sched.run, function()
      return ph.exchange(p, r, { timeout = -1 }, {})
    end)
    assert.is_false(ok)
    assert.is_truthy(tostring(e):find("bad argument #1 to 'request' (timeouts and max_body must be positive)",
      1, true), tostring(e))
    r.headers = { authorization = "Bearer k" } -- a plain table, built by the provider for each request
    assert.are.equal("echo: x", (sched.run(function()
      return ph.exchange(p, r, { timeout = 10 }, {})
    end)))
  end)

  it("gives each failure on a reused handle its own message, and a success none", function()
    local function body(text)
      return '{"model":"m","messages":[{"role":"user","content":"' .. text .. '"}]}'
    end
    local got = sched.run(function()
      local out = {}
      local function call(url, text, timeout, max_body)
        local r, err = http.request { method = "POST", url = url, body = body(text), timeout = timeout,
          max_body = max_body, headers = { authorization = "Bearer k" } }
        out[#out + 1] = r and r.status or (err:gsub("%d+ milliseconds", "N milliseconds")
          :gsub("after %d+ ms", "after N ms"):gsub("%d+ bytes", "N bytes"))
      end
      local chat = base .. "/v1/chat/completions"
      for _ = 1, 2 do -- one at a time: each takes the handle the one before left
        call(chat, "[[fault:hang]] x", 0.3)
        call(chat, "a reply longer than ten bytes", 10, 10)
        call(chat, "fine", 10)
        call("http://127.0.0.1:1/", "x", 2)
        call(chat, "fine", 10)
      end
      return out
    end)
    local once = { "Operation timed out after N milliseconds with N bytes received",
      "response body larger than the limit", 200,
      "Failed to connect to 127.0.0.1 port 1 after N ms: Couldn't connect to server", 200 }
    assert.are.same({ once[1], once[2], once[3], once[4], once[5], once[1], once[2], once[3], once[4], once[5] }, got)
  end)

  it("gives the response headers in lower case", function()
    local r = sched.run(function()
      return http.request { url = base .. "/health", timeout = 10 }
    end)
    assert.are.equal("text/plain", r.headers["content-type"])
    assert.are.equal("2", r.headers["content-length"])
  end)
end)

describe("what orch.http sends", function()
  local pid, base, dir

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local p = assert(io.popen("python3 tests/echo_server.py " .. dir .. "/port >" .. dir .. "/server.log 2>&1 & echo $!"))
    pid = p:read("l")
    p:close()
    local port
    for _ = 1, 200 do
      local f = io.open(dir .. "/port")
      port = f and f:read("l")
      if f then
        f:close()
      end
      if port and port ~= "" then
        break
      end
      os.execute("sleep 0.05")
    end
    assert(port and port ~= "", "the echo server did not start")
    base = "http://127.0.0.1:" .. port
  end)

  teardown(function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    os.execute("rm -rf " .. dir)
  end)

  -- the request's header lines, names in lower case -> { name = { values } }
  local function sent(body)
    local got = {}
    for _, kv in ipairs(json.decode(body).headers) do
      local k = kv[1]:lower()
      got[k] = got[k] or {}
      table.insert(got[k], kv[2])
    end
    return got
  end

  -- replies of many shapes: what openai's reply_pick reads in C, and what it leaves to parse_body
  local openai = require("orch.providers.openai")
  local function reply(content, tin, tout)
    return '{"choices":[{"message":{"role":"assistant","content":' .. content .. '}}],"usage":{"prompt_tokens":'
      .. tin .. ',"completion_tokens":' .. tout .. "}}"
  end
  local replies = {
    reply('"caf\\u00e9 \\"q\\""', 12, 8), reply('""', 0, 0), reply('"x"', "12.0", "3e1"), reply('"x"', '"12"', '" 7 "'),
    reply('"x"', "1.5", 2), reply('"x"', -1, 2), reply('"x"', 1, "null"), reply('"x"', "1e300", 1), reply('"x"', 1, '"a"'),
    reply('"x"', 1, "[1]"), reply('"x"', "9223372036854775807", 1), reply("7", 1, 2), reply("null", 1, 2),
    '{"choices":[{"message":{"content":"x"}}]}', '{"choices":[]}', "[1,2]", "{}", '"text"', "<html>bad gateway</html>",
    reply('"x"', 1, 2) .. " trailing", reply('"x\\ud800"', 1, 2), "",
  }

  it("post with a reply pick reads a usual reply in C, and gives any other as post alone does", function()
    local set = http.headers({ ["content-type"] = "application/json" })
    local got = sched.run(function()
      local out = {}
      for i, t in ipairs(replies) do
        out[i] = table.pack(http.post(base .. "/body", set, t, 10, 5, openai.reply_pick))
      end
      return out
    end)
    local picked = 0
    for i, t in ipairs(replies) do
      local g = got[i]
      local text, usage = openai.parse_body(t)
      local whole_in = math.tointeger(usage and usage.input)
      local whole_out = math.tointeger(usage and usage.output)
      if type(text) == "string" and whole_in and whole_in >= 0 and whole_out and whole_out >= 0 then
        -- read in C: the text and its tokens as integers, the body never made a string
        assert.are.same({ 200, true, "float", text, whole_in, whole_out },
          { g[1], g[2], math.type(g[3]), g[4], g[5], g[6] }, t)
        assert.are.equal("integer", math.type(g[5]), t)
        picked = picked + 1
      else
        assert.are.same({ 200, t, "float", nil, n = 4 }, { g[1], g[2], math.type(g[3]), g[4], n = g.n }, t)
      end
    end
    assert.are.equal(5, picked)
    local ok, err = pcall(sched.run, function()
      return http.post(base .. "/body", set, "{}", 10, 5, json.picker({ "a" }, { "b" }))
    end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("bad argument #6 to '[%w.]*post' %(a json.picker of three paths %(the "
      .. "text, tokens in, tokens out%) expected%)"), tostring(err))
  end)

  it("exchange reads each reply as it did without the reply pick", function()
    local plain = setmetatable({}, { __index = openai })
    plain.reply_pick = false -- parse_body reads every reply
    local run = { gate = nil }
    local got = sched.run(function()
      local out = {}
      for i, t in ipairs(replies) do
        local r = { url = base .. "/body", headers = { ["content-type"] = "application/json" }, body = t }
        local cfg = { timeout = 10, max_attempts = 1 }
        local a = table.pack(pcall(ph.exchange, openai, r, cfg, { _run = run }))
        local b = table.pack(pcall(ph.exchange, plain, r, cfg, { _run = run }))
        out[i] = { a, b }
      end
      return out
    end)
    for i, t in ipairs(replies) do
      local a, b = got[i][1], got[i][2]
      if a[5] ~= nil then -- picked: the usage a provider's parse_body gives, as whole numbers
        assert.are.same({ true, b[2], nil, 1 }, { a[1], a[2], a[3], a[4] }, t)
        assert.are.same({ a[5], a[6] }, { math.tointeger(b[3].input), math.tointeger(b[3].output) }, t)
      else
        assert.are.same(b, a, t)
      end
    end
  end)

  it("names orch as the User-Agent and accepts compressed replies, once each, on every path", function()
    local set = http.headers({ authorization = "Bearer k", ["content-type"] = "application/json" })
    local got = sched.run(function()
      local out = {}
      for _, h in ipairs({ set, { authorization = "Bearer k" }, set }) do
        local status, b = http.post(base .. "/x", h, "{}", 10, 5)
        out[#out + 1] = { status, sent(b) }
      end
      local r = assert(http.request { url = base .. "/y", timeout = 10 })
      out[#out + 1] = { r.status, sent(r.body) }
      r = assert(http.request { url = base .. "/y", headers = { ["x-a"] = "1" }, timeout = 10 })
      out[#out + 1] = { r.status, sent(r.body) }
      return out
    end)
    for i, g in ipairs(got) do
      assert.are.equal(200, g[1])
      local h = g[2]
      assert.are.equal(1, #h["user-agent"], i)
      assert.is_truthy(h["user-agent"][1]:match("^orch/%d+%.%d+%.%d+$"), h["user-agent"][1])
      assert.are.equal(1, #h["accept-encoding"], i)
      assert.is_truthy(h["accept-encoding"][1]:find("gzip", 1, true), h["accept-encoding"][1])
    end
    assert.are.same({ "Bearer k" }, got[1][2].authorization)
    assert.are.same({ "application/json" }, got[1][2]["content-type"])
    assert.are.same({ "1" }, got[5][2]["x-a"])
  end)

  it("sends each request to its own URL on a reused handle, and fails a bad one with curl's message", function()
    local port = base:match(":(%d+)$")
    local urls = { base .. "/a", base .. "/a?q=1", "http://[::1", base .. "/b", "", "ftp2://x/y",
      "127.0.0.1:" .. port .. "/noscheme", base .. "/c d", base .. "/b", "http://127.0.0.1:1/", base .. "/e" }
    local got = {}
    for _, u in ipairs(urls) do -- one at a time: each takes the handle the one before left
      got[#got + 1] = sched.run(function()
        local r, err = http.request { url = u, timeout = 10 }
        return r and json.decode(r.body).path or (err:gsub(" after %d+ ms", "")) -- the time varies
      end)
    end
    assert.are.same({ "/a", "/a?q=1", "URL using bad/illegal format or missing URL", "/b",
      "URL using bad/illegal format or missing URL", 'Protocol "ftp2" not supported or disabled in libcurl',
      "/noscheme", "URL using bad/illegal format or missing URL", "/b",
      "Failed to connect to 127.0.0.1 port 1: Couldn't connect to server", "/e" }, got)
  end)

  it("sends each of many concurrent requests to its own URL while the URLs alternate", function()
    local got = sched.run(function()
      local out = {}
      for round = 1, 3 do
        for i = 1, 12 do
          sched.spawn(function()
            local path = "/u" .. (i % 3) .. "?r=" .. round
            local r, err = http.request { url = base .. path, timeout = 10 }
            out[#out + 1] = (r and json.decode(r.body).path or err) == path
          end)
        end
        for _ = 1, 12 do
          sched.wait()
        end
      end
      return out
    end)
    assert.are.equal(36, #got)
    for i, ok in ipairs(got) do
      assert.is_true(ok, i)
    end
  end)

  it("sends a workflow's own User-Agent and Accept-Encoding in place of orch's", function()
    local own = { ["User-Agent"] = "mine/1", ["accept-encoding"] = "identity", authorization = "Bearer k" }
    local set = http.headers(own)
    local got = sched.run(function()
      local out = {}
      for _, h in ipairs({ set, own }) do
        local _, b = http.post(base .. "/x", h, "{}", 10, 5)
        out[#out + 1] = sent(b)
      end
      out[#out + 1] = sent(assert(http.request { url = base .. "/y", headers = own, timeout = 10 }).body)
      return out
    end)
    for _, h in ipairs(got) do
      assert.are.same({ "mine/1" }, h["user-agent"])
      assert.are.same({ "identity" }, h["accept-encoding"])
    end
  end)

  it("decodes a gzip-compressed reply", function()
    local set = http.headers({ authorization = "Bearer k" })
    local status, body = sched.run(function()
      return http.post(base .. "/gzip", set, "{}", 10, 5)
    end)
    assert.are.equal(200, status)
    assert.are.same({ "Bearer k" }, sent(body).authorization)
    local r = sched.run(function()
      return http.request { url = base .. "/gzip", timeout = 10 }
    end)
    assert.are.equal("gzip", r.headers["content-encoding"])
    assert.are.same({ "orch" }, { sent(r.body)["user-agent"][1]:match("^orch") })
  end)
end)
