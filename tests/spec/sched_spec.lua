-- sched_spec.lua -- orch.sched: tasks as coroutines over the event loop
-- (core/sched.c, core/sched_lua.c).
--
-- Tests named "regression: ..." guard a fixed bug: when one fails, its
-- message starts with what used to go wrong.
local sched = require("orch.sched")

local h = require("helpers")
local here, fails_with, regression = h.here, h.fails_with, h.regression

-- Waits in the current task until n children have completed; returns their
-- records in completion order.
local function wait_for(n)
  local all = {}
  while #all < n do
    local batch = sched.wait()
    assert(#batch > 0, "wait() returned no completion while children were running")
    for _, rec in ipairs(batch) do
      all[#all + 1] = rec
    end
  end
  return all
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = tostring(k)
  end
  table.sort(keys)
  return table.concat(keys, ",")
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs a Lua script in a separate orch process (same binary: a sanitizer
-- build checks the child too), for behaviour that may crash the process.
-- Returns its combined output and exit code.
local BIN = assert(require("orch.sys").realpath("/proc/self/exe"))
local function run_child(src)
  local path = os.tmpname()
  local fh = assert(io.open(path, "w"))
  fh:write(src)
  fh:close()
  local p = assert(io.popen(shell_quote(BIN) .. " lua " .. shell_quote(path) .. " 2>&1"))
  local out = p:read("a")
  local _, _, code = p:close()
  os.remove(path)
  return out, code
end

describe("orch.sched", function()
  after_each(function()
    assert.are.equal(0, sched.live())
  end)

  describe("run", function()
    it("returns the root's results and passes it the arguments", function()
      local a, b, c, d = sched.run(function(x, y, s)
        return x + y, s:upper(), nil, "end"
      end, 40, 2, "ok")
      assert.are.equal(42, a)
      assert.are.equal("OK", b)
      assert.is_nil(c)
      assert.are.equal("end", d)
    end)

    it("keeps nil arguments and counts results exactly", function()
      local r = table.pack(sched.run(function(...)
        return select("#", ...), nil, nil
      end, nil, 1, nil))
      assert.are.equal(3, r.n)
      assert.are.equal(3, r[1])
      assert.is_nil(r[2])
      assert.is_nil(r[3])
      assert.are.equal(0, select("#", sched.run(function() end)))
    end)

    it("returns many results", function()
      local r = table.pack(sched.run(function()
        local t = {}
        for i = 1, 300 do
          t[i] = i * 2
        end
        return table.unpack(t)
      end))
      assert.are.equal(300, r.n)
      assert.are.equal(2, r[1])
      assert.are.equal(600, r[300])
    end)

    it("raises the root's error with a traceback naming this file's line", function()
      local where = here(); local ok, err = pcall(sched.run, function() error("root failed") end)
      assert.is_false(ok)
      assert.are.equal(where .. ": root failed\nstack traceback:\n\t[C]: in function 'error'\n\t"
        .. where .. ": in function <" .. where .. ">", err)
    end)

    it("raises a root's error from deeper frames with every frame in the traceback", function()
      local function inner()
        error("deep")
      end
      local inner_line = debug.getinfo(inner, "S").linedefined + 1
      local ok, err = pcall(sched.run, function()
        sched.sleep(0)
        inner()
      end)
      assert.is_false(ok)
      local src = debug.getinfo(1, "S").short_src
      assert.are.equal(src .. ":" .. inner_line .. ": deep\n", err:match("^[^\n]*\n"))
      assert.is_truthy(err:find("\n\t" .. src .. ":" .. inner_line .. ": in ", 1, true), err)
      assert.is_truthy(err:find("in upvalue 'inner'", 1, true), err)
    end)

    it("raises a non-string error value unchanged", function()
      local e = { code = 7 }
      local ok, err = pcall(sched.run, function()
        error(e)
      end)
      assert.is_false(ok)
      assert.are.equal(e, err)
    end)

    it("checks its argument", function()
      fails_with("bad argument #1 to 'orch.sched.run' (function expected, got number)", sched.run, 42)
      fails_with("bad argument #1 to 'orch.sched.run' (function expected, got no value)", sched.run)
    end)

    it("refuses to run nested inside a task", function()
      local msg = sched.run(function()
        local ok, err = pcall(sched.run, function() end)
        assert.is_false(ok)
        return err
      end)
      assert.are.equal("orch.sched.run cannot be called from inside a task (one run at a time)", msg)
    end)

    it("regression: refuses to run nested inside a coroutine.wrap of a task (crashes the process)", function()
      regression("sched.run from a coroutine.wrap inside a task is not refused: the nested run "
        .. "resumes and then cancels the outer run's tasks, including the one still running it; "
        .. "the process crashes (SIGSEGV) or its state is corrupted", function()
        local out, code = run_child([[
          local sched = require("orch.sched")
          local ok, res = pcall(sched.run, function()
            local f = coroutine.wrap(function()
              return sched.run(function() return "inner" end)
            end)
            local ok, err = pcall(f)
            return tostring(ok) .. " " .. tostring(err)
          end)
          io.write(tostring(ok), " | ", tostring(res), "\n")
        ]])
        assert.are.equal(0, code, out)
        assert.is_truthy(out:find("cannot be called from inside a task", 1, true), out)
      end)
    end)
  end)

  describe("spawn and wait", function()
    it("returns one completion record per child, with its values", function()
      local id, recs, root = sched.run(function()
        local id = sched.spawn(function(a, b)
          return a, nil, b
        end, "x", 3)
        return id, wait_for(1), sched.current()
      end)
      assert.are.equal("integer", math.type(id))
      assert.are.equal(1, #recs)
      local r = recs[1]
      assert.are.equal("1,3,id,n,ok", sorted_keys(r))
      assert.are.equal(id, r.id)
      assert.is_true(r.ok)
      assert.are.equal(3, r.n)
      assert.are.equal("x", r[1])
      assert.is_nil(r[2])
      assert.are.equal(3, r[3])
      assert.are_not.equal(root, id)
    end)

    it("records a child that returns nothing with n = 0", function()
      local recs = sched.run(function()
        sched.spawn(function() end)
        return wait_for(1)
      end)
      assert.are.equal("id,n,ok", sorted_keys(recs[1]))
      assert.are.equal(0, recs[1].n)
    end)

    it("records a failed child with its message and traceback", function()
      local where, id
      local recs = sched.run(function()
        where = here(); id = sched.spawn(function() error("child failed") end)
        return wait_for(1)
      end)
      local r = recs[1]
      assert.are.equal("err,id,ok", sorted_keys(r))
      assert.are.equal(id, r.id)
      assert.is_false(r.ok)
      assert.are.equal(where .. ": child failed\nstack traceback:\n\t[C]: in function 'error'\n\t"
        .. where .. ": in function <" .. where .. ">", r.err)
    end)

    it("keeps a child's non-string error value as it is", function()
      local e = { reason = "x" }
      local recs = sched.run(function()
        sched.spawn(function()
          error(e)
        end)
        return wait_for(1)
      end)
      assert.is_false(recs[1].ok)
      assert.are.equal(e, recs[1].err)
    end)

    it("a failing child does not disturb its parent or siblings", function()
      local got = sched.run(function()
        local a = sched.spawn(function() error("a") end)
        local b = sched.spawn(function()
          sched.sleep(0.01)
          return "b"
        end)
        local byid = {}
        for _, r in ipairs(wait_for(2)) do
          byid[r.id] = r
        end
        return { byid[a].ok, byid[b].ok, byid[b][1] }
      end)
      assert.are.same({ false, true, "b" }, got)
    end)

    it("wait() with no children returns an empty table at once", function()
      local t0 = sched.now()
      local first, second = sched.run(function()
        return sched.wait(), sched.wait()
      end)
      assert.are.same({}, first)
      assert.are.same({}, second)
      assert.is_true(sched.now() - t0 < 0.5)
    end)

    it("wait() hands over every completion since the last call, in completion order, once", function()
      local ids, batch, after = sched.run(function()
        local ids = {}
        for i = 1, 3 do
          ids[i] = sched.spawn(function()
            return i
          end)
        end
        sched.sleep(0.01) -- all three finish meanwhile
        return ids, sched.wait(), sched.wait()
      end)
      assert.are.equal(3, #batch)
      for i = 1, 3 do
        assert.are.equal(ids[i], batch[i].id)
        assert.are.equal(i, batch[i][1])
      end
      assert.are.same({}, after)
    end)

    it("passes spawn's extra arguments to the task", function()
      local recs = sched.run(function()
        sched.spawn(function(...)
          return select("#", ...), ...
        end, 1, nil, "three")
        return wait_for(1)
      end)
      assert.are.equal(4, recs[1].n)
      assert.are.equal(3, recs[1][1])
      assert.are.equal(1, recs[1][2])
      assert.is_nil(recs[1][3])
      assert.are.equal("three", recs[1][4])
    end)

    it("gives increasing ids; current() names the running task", function()
      local root, ids, recs = sched.run(function()
        local ids = {}
        for i = 1, 3 do
          ids[i] = sched.spawn(function()
            return sched.current()
          end)
        end
        return sched.current(), ids, wait_for(3)
      end)
      assert.is_true(ids[1] > root and ids[2] > ids[1] and ids[3] > ids[2])
      for i, r in ipairs(recs) do
        assert.are.equal(ids[i], r.id)
        assert.are.equal(r.id, r[1])
      end
      assert.is_nil(sched.current())
    end)

    it("reports grandchildren to their own parent, not to the root", function()
      local recs = sched.run(function()
        sched.spawn(function()
          sched.spawn(function()
            sched.sleep(0.01)
            return "grandchild"
          end)
          local inner = wait_for(1)
          return "child saw " .. inner[1][1]
        end)
        local recs = wait_for(1)
        sched.sleep(0.02)
        assert.are.same({}, sched.wait())
        return recs
      end)
      assert.are.equal(1, #recs)
      assert.are.equal("child saw grandchild", recs[1][1])
    end)

    it("lets an orphan run on after its parent returned; its result goes nowhere", function()
      local done = false
      local recs = sched.run(function()
        sched.spawn(function()
          sched.spawn(function()
            sched.sleep(0.02)
            done = true
          end)
          return "parent"
        end)
        local recs = wait_for(1)
        sched.sleep(0.05)
        assert.are.same({}, sched.wait())
        return recs
      end)
      assert.are.equal("parent", recs[1][1])
      assert.is_true(done)
    end)

    it("checks its argument", function()
      sched.run(function()
        fails_with("bad argument #1 to 'orch.sched.spawn' (function expected, got number)", sched.spawn, 42)
        fails_with("bad argument #1 to 'orch.sched.spawn' (function expected, got no value)", sched.spawn)
      end)
    end)

    it("spawn and wait refuse to run outside a task", function()
      local err = fails_with("orch.sched.spawn must be called from a row, step or task", sched.spawn, function() end)
      assert.are.equal("orch.sched.spawn must be called from a row, step or task, not from a coroutine "
        .. "of your own or at load time", err)
      fails_with("orch.sched.wait must be called from a row, step or task", sched.wait)
    end)
  end)

  describe("sleep", function()
    it("suspends only the caller: 200 tasks sleeping 0.1 s overlap", function()
      local t0 = sched.now()
      local recs = sched.run(function()
        for i = 1, 200 do
          sched.spawn(function()
            sched.sleep(0.1)
            return i
          end)
        end
        return wait_for(200)
      end)
      local elapsed = sched.now() - t0
      assert.are.equal(200, #recs)
      local seen = {}
      for _, r in ipairs(recs) do
        assert.is_true(r.ok)
        seen[r[1]] = true
      end
      for i = 1, 200 do
        assert.is_true(seen[i])
      end
      assert.is_true(elapsed >= 0.099, "elapsed " .. elapsed)
      assert.is_true(elapsed < 5, "elapsed " .. elapsed)
    end)

    it("wakes shorter sleeps first", function()
      local order = sched.run(function()
        local order = {}
        for _, d in ipairs({ 0.03, 0.01, 0.02 }) do
          sched.spawn(function()
            sched.sleep(d)
            order[#order + 1] = d
          end)
        end
        wait_for(3)
        return order
      end)
      assert.are.same({ 0.01, 0.02, 0.03 }, order)
    end)

    it("advances now() by about the time slept", function()
      local before, after = sched.run(function()
        local t = sched.now()
        sched.sleep(0.05)
        return t, sched.now()
      end)
      assert.are.equal("number", type(before))
      local d = after - before
      assert.is_true(d >= 0.049, "slept " .. d)
      assert.is_true(d < 1, "slept " .. d)
    end)

    it("sleep(0) gives way to the other ready tasks", function()
      local log = sched.run(function()
        local log = {}
        sched.spawn(function()
          log[#log + 1] = "a1"
          sched.sleep(0)
          log[#log + 1] = "a2"
        end)
        sched.spawn(function()
          log[#log + 1] = "b"
        end)
        wait_for(2)
        return table.concat(log, " ")
      end)
      assert.are.equal("a1 b a2", log)
    end)

    it("works inside pcall within a task and returns nothing", function()
      local r = table.pack(sched.run(function()
        return pcall(sched.sleep, 0.01)
      end))
      assert.are.equal(1, r.n)
      assert.is_true(r[1])
    end)

    it("accepts a numeric string and integers", function()
      local t0 = sched.now()
      sched.run(function()
        sched.sleep("0.01")
        sched.sleep(0)
      end)
      assert.is_true(sched.now() - t0 >= 0.009)
    end)

    it("checks its argument", function()
      sched.run(function()
        local range = "bad argument #1 to 'orch.sched.sleep' (expected seconds between 0 and 1e9)"
        fails_with(range, sched.sleep, -1)
        fails_with(range, sched.sleep, -0.001)
        fails_with(range, sched.sleep, 0 / 0)
        fails_with(range, sched.sleep, math.huge)
        fails_with(range, sched.sleep, 1e9)
        fails_with("bad argument #1 to 'orch.sched.sleep' (number expected, got string)", sched.sleep, "soon")
        fails_with("bad argument #1 to 'orch.sched.sleep' (number expected, got no value)", sched.sleep)
        fails_with("bad argument #1 to 'orch.sched.sleep' (number expected, got table)", sched.sleep, {})
      end)
    end)

    it("refuses to run outside a task", function()
      local ok, err = pcall(sched.sleep, 0.01)
      assert.is_false(ok)
      assert.are.equal("sleep must be called from a row, step or task, not from a coroutine of your "
        .. "own or at load time", err)
    end)

    it("refuses to run in a coroutine.wrap made by a task; the task goes on", function()
      local where
      local msg, after = sched.run(function()
        local f = coroutine.wrap(function()
          where = here(); sched.sleep(0.01)
        end)
        local ok, err = pcall(f)
        assert.is_false(ok)
        sched.sleep(0.001) -- the task itself can still sleep
        return err, "went on"
      end)
      assert.are.equal("went on", after)
      -- coroutine.wrap adds the position of the failed call
      assert.are.equal(where .. ": sleep must be called from a row, step or task, not from a coroutine "
        .. "of your own or at load time", msg:match("^[^\n]*"))
    end)

    it("spawn and wait refuse to run in a coroutine.create'd coroutine of a task", function()
      local r = sched.run(function()
        local co = coroutine.create(function()
          local ok1, e1 = pcall(sched.spawn, function() end)
          local ok2, e2 = pcall(sched.wait)
          return ok1, e1, ok2, e2
        end)
        return table.pack(coroutine.resume(co))
      end)
      assert.is_true(r[1])
      assert.is_false(r[2])
      assert.are.equal("orch.sched.spawn must be called from a row, step or task, not from a coroutine "
        .. "of your own or at load time", r[3])
      assert.is_false(r[4])
      assert.are.equal("orch.sched.wait must be called from a row, step or task, not from a coroutine "
        .. "of your own or at load time", r[5])
    end)

    it("regression: a sleep that cannot yield (inside table.sort) leaves no timer behind", function()
      regression("sched.sleep marks the task waiting and arms its timer before lua_yield checks "
        .. "yieldability; when the yield fails (C-call boundary) the timer stays armed: it wakes the "
        .. "task early out of its next sleep, and after the task is gone it wakes whatever task "
        .. "reuses the pooled task struct (here the next run's root), or reads freed memory",
        function()
          local out, code = run_child([[
            local sched = require("orch.sched")
            local function bad_sleep()
              return pcall(table.sort, { 3, 2, 1 }, function(a, b)
                sched.sleep(0.05)
                return a < b
              end)
            end
            -- 1. the task's own next sleep
            local ok, e, slept = sched.run(function()
              local ok, e = bad_sleep()
              local t0 = sched.now()
              sched.sleep(0.3)
              return ok, e, sched.now() - t0
            end)
            io.write(tostring(ok), " ", tostring(e), "\n")
            io.write(string.format("own sleep %.2f\n", slept))
            -- 2. a later run, after the task is gone
            sched.run(bad_sleep)
            local t0 = sched.now()
            sched.run(function() sched.sleep(0.3) end)
            io.write(string.format("next run %.2f\n", sched.now() - t0))
          ]])
          assert.are.equal(0, code, out)
          assert.is_falsy(out:find("AddressSanitizer", 1, true), out)
          assert.are.equal("cannot wait here: it is inside a callback of a C function", out:match("cannot wait here: it is inside a callback of a C function"))
          local own = tonumber(out:match("own sleep ([%d.]+)"))
          local nextrun = tonumber(out:match("next run ([%d.]+)"))
          assert.is_true(own ~= nil and own >= 0.28, out)
          assert.is_true(nextrun ~= nil and nextrun >= 0.28, out)
        end)
    end)

    it("regression: a wait() that cannot yield (inside table.sort) does not wake the task later", function()
      regression("sched.wait marks the task waiting for children before lua_yield checks "
        .. "yieldability; when the yield fails, the next child completion wakes the task out of an "
        .. "unrelated sleep", function()
          local out, code = run_child([[
            local sched = require("orch.sched")
            local slept
            sched.run(function()
              sched.spawn(function() sched.sleep(0.05) end)
              local ok, e = pcall(table.sort, { 3, 2, 1 }, function(a, b)
                sched.wait()
                return a < b
              end)
              io.write(tostring(ok), " ", tostring(e), "\n")
              local t0 = sched.now()
              sched.sleep(0.3)
              slept = sched.now() - t0
            end)
            io.write(string.format("slept %.2f\n", slept))
          ]])
          assert.are.equal(0, code, out)
          assert.are.equal("cannot wait here: it is inside a callback of a C function", out:match("cannot wait here: it is inside a callback of a C function"))
          local slept = tonumber(out:match("slept ([%d.]+)"))
          assert.is_true(slept ~= nil and slept >= 0.28, out)
        end)
    end)
  end)

  describe("plain coroutine.yield in a task", function()
    it("gives way to the other tasks and resumes the task later", function()
      local log, nvals = sched.run(function()
        local log, nvals = {}, nil
        sched.spawn(function()
          log[#log + 1] = "a1"
          nvals = select("#", coroutine.yield("dropped", 2))
          log[#log + 1] = "a2"
          coroutine.yield()
          log[#log + 1] = "a3"
        end)
        sched.spawn(function()
          log[#log + 1] = "b1"
          coroutine.yield()
          log[#log + 1] = "b2"
        end)
        wait_for(2)
        return table.concat(log, " "), nvals
      end)
      assert.are.equal("a1 b1 a2 b2 a3", log)
      assert.are.equal(0, nvals)
    end)

    it("works in the root task too", function()
      assert.are.equal("done", sched.run(function()
        for _ = 1, 3 do
          coroutine.yield()
        end
        return "done"
      end))
    end)

    it("inside the task's own coroutine.wrap goes to the wrap, not to the scheduler", function()
      local got = sched.run(function()
        local gen = coroutine.wrap(function()
          for i = 1, 3 do
            coroutine.yield(i)
          end
        end)
        local got = {}
        for _ = 1, 3 do
          got[#got + 1] = gen()
          sched.sleep(0.001) -- the task may suspend between resumes of its wrap
        end
        return got
      end)
      assert.are.same({ 1, 2, 3 }, got)
    end)
  end)

  describe("cancellation", function()
    it("cancels the tasks left when the root returns", function()
      local fired = 0
      sched.run(function()
        for _ = 1, 5 do
          sched.spawn(function()
            sched.sleep(0.05)
            fired = fired + 1
          end)
        end
        sched.spawn(function() -- still on the ready queue, never started
          fired = fired + 100
        end)
        sched.sleep(0) -- the five are asleep now; the sixth runs
        assert.are.equal(100, fired)
        fired = 0
        sched.spawn(function()
          fired = fired + 1000 -- queued when the root returns: never runs
        end)
        assert.are.equal(7, sched.live()) -- root, five asleep, one queued
      end)
      assert.are.equal(0, sched.live())
      -- the cancelled sleeps do not fire during a later run
      local t0 = sched.now()
      local stray = sched.run(function()
        sched.sleep(0.1)
        return sched.wait()
      end)
      assert.are.same({}, stray)
      assert.are.equal(0, fired)
      assert.is_true(sched.now() - t0 < 1)
      -- and a later run that sleeps not at all finishes at once
      t0 = sched.now()
      assert.are.equal("quick", sched.run(function()
        return "quick"
      end))
      assert.is_true(sched.now() - t0 < 0.5)
    end)

    it("runs the to-be-closed variables of a cancelled task", function()
      local closed = false
      sched.run(function()
        sched.spawn(function()
          local guard <close> = setmetatable({}, {
            __close = function()
              closed = true
            end,
          })
          sched.sleep(10)
        end)
        sched.sleep(0)
      end)
      assert.is_true(closed)
    end)

    it("cancels the children of a failed root", function()
      local fired = false
      local ok, err = pcall(sched.run, function()
        sched.spawn(function()
          sched.sleep(0.02)
          fired = true
        end)
        sched.sleep(0)
        error("root gives up", 0)
      end)
      assert.is_false(ok)
      assert.are.equal("root gives up\nstack traceback:", err:match("^[^\n]*\n[^\n]*"))
      assert.are.equal(0, sched.live())
      sched.run(function()
        sched.sleep(0.04)
      end)
      assert.is_false(fired)
    end)

    it("cancels a sleeping task that waits for its own children", function()
      sched.run(function()
        sched.spawn(function()
          sched.spawn(function()
            sched.sleep(10)
          end)
          sched.wait()
        end)
        sched.sleep(0.01)
        assert.are.equal(3, sched.live())
      end)
      assert.are.equal(0, sched.live())
    end)
  end)

  describe("reused coroutines", function()
    it("start every task clean after tasks that returned, failed or were cancelled", function()
      for round = 1, 3 do
        local recs = sched.run(function()
          for i = 1, 20 do
            sched.spawn(function(...)
              local n = select("#", ...)
              if i % 3 == 0 then
                error("fail " .. i, 0)
              elseif i % 3 == 1 then
                sched.sleep(0.001)
              end
              return n, i, ...
            end, table.unpack({ round, nil, "x" }, 1, i % 4))
          end
          sched.spawn(function() -- left asleep: cancelled, its coroutine reset
            local guard <close> = setmetatable({}, { __close = function() end })
            sched.sleep(10)
          end)
          local recs = wait_for(20)
          table.sort(recs, function(a, b) return a.id < b.id end)
          return recs
        end)
        assert.are.equal(20, #recs)
        for i, r in ipairs(recs) do
          if i % 3 == 0 then
            assert.are.same({ id = r.id, ok = false, err = "fail " .. i .. "\nstack traceback:\n\t[C]: in function 'error'" },
              { id = r.id, ok = r.ok, err = r.err:match("^[^\n]*\n[^\n]*\n[^\n]*") })
          else
            local nargs = i % 4
            assert.is_true(r.ok)
            assert.are.equal(2 + nargs, r.n)
            assert.are.equal(nargs, r[1])
            assert.are.equal(i, r[2])
            local want = { round, nil, "x" }
            for j = 1, nargs do
              assert.are.equal(want[j], r[2 + j])
            end
          end
        end
      end
    end)
  end)

  describe("scale", function()
    it("runs 10,000 no-op tasks to completion", function()
      local t0 = os.clock()
      local n, ok = sched.run(function()
        for _ = 1, 10000 do
          sched.spawn(function()
            return true
          end)
        end
        local recs = wait_for(10000)
        local ok = 0
        for _, r in ipairs(recs) do
          if r.ok and r[1] == true then
            ok = ok + 1
          end
        end
        return #recs, ok
      end)
      assert.are.equal(10000, n)
      assert.are.equal(10000, ok)
      assert.are.equal(0, sched.live())
      assert.is_true(os.clock() - t0 < 5, "took " .. (os.clock() - t0) .. " s of CPU")
    end)
  end)
end)

describe("orch.sched rounds", function()
  it("a task that keeps yielding does not keep timers and I/O out", function()
    local spins = sched.run(function()
      local done, spins = false, 0
      sched.spawn(function()
        while not done do
          spins = spins + 1
          coroutine.yield()
        end
      end)
      sched.spawn(function()
        sched.sleep(0.05) -- fires only if the loop gets its turn between rounds
        done = true
      end)
      local n = 0
      while n < 2 do
        n = n + #sched.wait()
      end
      return spins
    end)
    assert.is_true(spins > 1, "the spinning task ran " .. spins .. " times")
  end)
end)

describe("orch.sched runaway Lua", function()
  after_each(function()
    assert.are.equal(0, sched.live())
  end)

  it("raises in a task that runs past burst_timeout without waiting, and the others go on", function()
    local prev = sched.burst_timeout(0.3)
    local where
    local outcomes, ticks = sched.run(function()
      local n = 0
      sched.spawn(function()
        for _ = 1, 5 do
          sched.sleep(0.02)
          n = n + 1
        end
        return "sleeper done"
      end)
      sched.spawn(function()
        local x = 0
        where = here(); while true do x = x + 1 end
      end)
      local out = {}
      while #out < 2 do
        for _, r in ipairs(sched.wait()) do
          -- the sleeper first, then the runaway's error
          table.insert(out, r.ok and 1 or #out + 1, r.ok and r[1] or tostring(r.err))
        end
      end
      return out, n
    end)
    sched.burst_timeout(prev)
    assert.are.equal(5, ticks)
    assert.are.equal("sleeper done", outcomes[1])
    assert.is_truthy(outcomes[2]:find(where .. ": ran ", 1, true), outcomes[2])
    assert.is_truthy(outcomes[2]:find("without waiting (an endless loop?); burst_timeout = 0.3 s", 1, true),
      outcomes[2])
  end)

  it("leaves a task alone that waits in time", function()
    local prev = sched.burst_timeout(0.3)
    local rec = sched.run(function()
      sched.spawn(function()
        local t0 = sched.now()
        while sched.now() - t0 < 0.8 do
          local x = 0
          for i = 1, 1e5 do
            x = x + i
          end
          sched.sleep(0) -- a short burst, then a wait: never too long
        end
        return "done"
      end)
      return sched.wait()[1]
    end)
    sched.burst_timeout(prev)
    assert.is_true(rec.ok, tostring(rec.err))
    assert.are.equal("done", rec[1])
  end)

  it("never stops the root task (a run's driver): only its children", function()
    local prev = sched.burst_timeout(0.2)
    local n = sched.run(function()
      local t0, x = sched.now(), 0
      while sched.now() - t0 < 0.5 do
        x = x + 1 -- 0.5 s without waiting, in the root
      end
      return x
    end)
    sched.burst_timeout(prev)
    assert.is_true(n > 0)
  end)

  it("lets the others run while looping tasks use up their burst, then stops each with its line", function()
    local prev = sched.burst_timeout(1.5)
    local where = {}
    local order = sched.run(function()
      for i = 1, 2 do
        sched.spawn(function()
          local x = 0
          where[i] = here(); while true do x = x + 1 end
        end)
      end
      sched.spawn(function()
        sched.sleep(0.001) -- its timer fires while the loops run
        return "sleeper done"
      end)
      local out = {}
      for _, r in ipairs(wait_for(3)) do
        out[#out + 1] = r.ok and r[1] or tostring(r.err)
      end
      return out
    end)
    sched.burst_timeout(prev)
    assert.are.equal("sleeper done", order[1]) -- not stalled behind two seconds of loops
    assert.is_truthy(order[2]:find(where[1] .. ": ran ", 1, true), order[2])
    assert.is_truthy(order[3]:find(where[2] .. ": ran ", 1, true), order[3])
    assert.is_truthy(order[2]:find("burst_timeout = 1.5 s", 1, true), order[2])
  end)

  it("makes a loop give way that spends its time in C functions", function()
    local prev = sched.burst_timeout(1.5)
    local where
    local order = sched.run(function()
      sched.spawn(function()
        local n = 0
        where = here(); while true do n = n + #string.rep("x", 1e6) end -- the ticks land in string.rep
      end)
      sched.spawn(function()
        sched.sleep(0.001)
        return "sleeper done"
      end)
      local out = {}
      for _, r in ipairs(wait_for(2)) do
        out[#out + 1] = r.ok and r[1] or tostring(r.err)
      end
      return out
    end)
    sched.burst_timeout(prev)
    assert.are.equal("sleeper done", order[1])
    assert.is_truthy(order[2]:find(where .. ": ran ", 1, true), order[2])
  end)

  it("never makes library code give way: it runs to its next wait, or to its error", function()
    local prev = sched.burst_timeout(0.5)
    local spin = assert(load("local x = 0; while true do x = x + 1 end", "@lua/orch/spin.lua"))
    local order = sched.run(function()
      sched.spawn(spin)
      sched.spawn(function()
        sched.sleep(0.01)
        return "sleeper done"
      end)
      local out = {}
      for _, r in ipairs(wait_for(2)) do
        out[#out + 1] = r.ok and r[1] or tostring(r.err)
      end
      return out
    end)
    sched.burst_timeout(prev)
    assert.is_truthy(order[1]:find("lua/orch/spin.lua:1: ran ", 1, true), order[1])
    assert.are.equal("sleeper done", order[2])
  end)

  it("stops a stuck task after 10 s by default (what README says)", function()
    assert.are.equal(10, sched.BURST_TIMEOUT)
    local out, code = run_child('print(require("orch.sched").burst_timeout())')
    assert.are.equal(0, code, out)
    assert.are.equal("10.0\n", out)
  end)

  it("reads and sets the limit, and checks it", function()
    local prev = sched.burst_timeout(2.5)
    assert.are.equal(2.5, sched.burst_timeout(prev))
    assert.are.equal(prev, sched.burst_timeout())
    fails_with("seconds must be positive", sched.burst_timeout, 0)
    assert.is_table(sched.Interrupted)
  end)
end)

describe("orch.sched.poke", function()
  it("wakes a task waiting for its children, whose wait then returns early", function()
    local got = sched.run(function()
      local me = sched.current()
      sched.spawn(function()
        assert.is_true(sched.poke(me))
        sched.sleep(0.2)
      end)
      local batch = sched.wait() -- no timeout: without the poke it would return the child's completion
      local rest = sched.wait()
      return { #batch, #rest, rest[1] and rest[1].ok, rest[1] and rest[1].err }
    end)
    assert.are.same({ 0, 1, true }, got) -- the child's own assertion held
  end)

  it("says no when the task does not wait for children", function()
    local r = sched.run(function()
      local id = sched.spawn(function() sched.sleep(0.05) end)
      local poked = sched.poke(id) -- it sleeps; it does not wait for children
      sched.wait()
      return poked
    end)
    assert.is_false(r)
    assert.is_false(sched.run(function() return sched.poke(123456789) end))
  end)
end)

describe("orch.sched out of memory", function()
  local sys = require("orch.sys")

  it("fails the task that passes the heap limit, without a traceback, and the others go on", function()
    local limit = sys.memory_limit()
    assert.is_true(limit > 0 and limit <= 4 * 1024 ^ 3, "default limit " .. limit)
    local prev = sys.memory_limit(sys.memory_used() + 32 * 1024 * 1024)
    assert.are.equal(limit, prev)
    local recs = sched.run(function()
      sched.spawn(function()
        local s = "x"
        while true do
          s = s .. s -- no pcall of its own: the error ends the task
        end
      end)
      sched.spawn(function()
        sched.sleep(0.01)
        return #string.rep("y", 8 * 1024 * 1024) -- the hog's memory is garbage by now
      end)
      return wait_for(2)
    end)
    sys.memory_limit(prev)
    assert.are.equal(limit, sys.memory_limit())
    table.sort(recs, function(a, b) return a.id < b.id end)
    assert.is_false(recs[1].ok)
    assert.are.equal("not enough memory", recs[1].err) -- as Lua made it: no traceback appended
    assert.is_true(recs[2].ok, tostring(recs[2].err))
    assert.are.equal(8 * 1024 * 1024, recs[2][1])
    fails_with("the memory limit must be a positive number of bytes", sys.memory_limit, 0)
  end)
end)
