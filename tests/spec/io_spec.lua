-- io_spec.lua -- streaming input and durable output: orch.reader
-- (core/reader.c, core/reader_lua.c), orch.sink (core/sink.c,
-- core/sink_lua.c) and orch.io (lua/orch/io.lua) on top of them.
--
-- Tests named "regression: ..." guard a fixed bug: when one fails, its
-- message starts with what used to go wrong.
local reader = require("orch.reader")
local sink = require("orch.sink")
local oio = require("orch.io")
local orch = require("orch")
local check = require("orch.check")
local cjson = require("cjson")

local regression = require("helpers").regression

local dir -- a fresh directory per test, removed afterwards

local function path(name)
  return dir .. "/" .. name
end

local function write_file(name, data)
  local fh = assert(io.open(path(name), "wb"))
  fh:write(data)
  fh:close()
  return path(name)
end

local read_file = require("helpers").read_file

-- All of a reader's next() results until the end, each packed.
local function drain(r)
  local out = {}
  while true do
    local res = table.pack(r:next())
    if res[1] == nil then
      return out
    end
    out[#out + 1] = res
  end
end

before_each(function()
  dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p '" .. dir .. "'"))
end)

after_each(function()
  assert(dir:match("^/tmp/lua_"), dir)
  os.execute("rm -rf '" .. dir .. "'")
end)

describe("orch.reader", function()
  describe("csv", function()
    it("reads the header and records with their positions", function()
      local p = write_file("a.csv", "id,text\n1,hello\n2,world\n")
      local r = assert(reader.open(p, "csv"))
      assert.are.same({ "id", "text" }, r:header())
      assert.are.equal(24, r:size())
      local res = table.pack(r:next())
      assert.are.equal(6, res.n)
      assert.are.same({ id = "1", text = "hello" }, res[1])
      assert.are.same({ 2, 0, 8, 16, 3 }, { table.unpack(res, 2, 6) }) -- line, index, offset, end, end_line
      res = table.pack(r:next())
      assert.are.same({ id = "2", text = "world" }, res[1])
      assert.are.same({ 3, 1, 16, 24, 4 }, { table.unpack(res, 2, 6) })
      assert.is_nil(r:next())
      assert.is_nil(r:next()) -- stays at the end
      r:close()
    end)

    it("gives a record room for one field more: a stage adding one allocates nothing", function()
      local p = write_file("room.csv", "id,text\n1,hello\n")
      local r = assert(reader.open(p, "csv"))
      local row = r:next()
      collectgarbage("stop")
      local before = collectgarbage("count")
      row.n = 5 -- a full table would get a new, larger node array here
      local grew = collectgarbage("count") - before
      collectgarbage("restart")
      assert.are.equal(0, grew)
      assert.are.same({ id = "1", text = "hello", n = 5 }, row)
      r:close()
    end)

    it("handles quoted fields, embedded commas, quotes, newlines and CRLF", function()
      local p = write_file("q.csv", 'id,text,n\r\n1,"hello, world",3\r\n2,"multi\nline ""q""",4\r\n'
        .. '\r\n5,"a\r\nb",6')
      local r = assert(reader.open(p, "csv"))
      assert.are.same({ "id", "text", "n" }, r:header()) -- no trailing CR on "n"
      local recs = drain(r)
      assert.are.equal(3, #recs)
      assert.are.same({ id = "1", text = "hello, world", n = "3" }, recs[1][1])
      assert.are.same({ 2, 0, 11, 31, 3 }, { table.unpack(recs[1], 2, 6) })
      assert.are.same({ id = "2", text = 'multi\nline "q"', n = "4" }, recs[2][1])
      assert.are.same({ 3, 1, 31, 55, 5 }, { table.unpack(recs[2], 2, 6) })
      -- the blank line 5 is skipped; a CR inside quotes is data; no final newline
      assert.are.same({ id = "5", text = "a\r\nb", n = "6" }, recs[3][1])
      assert.are.same({ 6, 2, 57, 67, 7 }, { table.unpack(recs[3], 2, 6) })
    end)

    it("keeps spaces, empty fields and a CR inside an unquoted field", function()
      local p = write_file("s.csv", "a,b,c\n x ,,\"\"\nx\ry,\"q\"\" \",z\n")
      local recs = drain(assert(reader.open(p, "csv")))
      assert.are.same({ a = " x ", b = "", c = "" }, recs[1][1])
      assert.are.same({ a = "x\ry", b = 'q" ', c = "z" }, recs[2][1])
    end)

    it("skips a UTF-8 BOM but counts it in offsets", function()
      local p = write_file("bom.csv", "\239\187\191id\n7\n")
      local r = assert(reader.open(p, "csv"))
      assert.are.same({ "id" }, r:header())
      local row, line, index, offset, e, end_line = r:next()
      assert.are.same({ id = "7" }, row)
      assert.are.same({ 2, 0, 6, 8, 3 }, { line, index, offset, e, end_line })
    end)

    it("reports a field-count mismatch and goes on with the next record", function()
      local p = write_file("m.csv", "a,b\n1,2\n3\n4,5,6\n7,8\n")
      local r = assert(reader.open(p, "csv"))
      local recs = drain(r)
      assert.are.equal(4, #recs)
      assert.are.same({ a = "1", b = "2" }, recs[1][1])
      assert.are.equal(6, recs[2].n)
      assert.is_false(recs[2][1])
      assert.are.equal(p .. ":3: expected 2 fields, found 1", recs[2][2])
      assert.is_false(recs[2][3]) -- not fatal
      -- and where the bad record lies, so a checkpoint can move past it
      assert.are.same({ 8, 10, 4 }, { table.unpack(recs[2], 4, 6) })
      assert.is_false(recs[3][1])
      assert.are.equal(p .. ":4: expected 2 fields, found 3", recs[3][2])
      -- a bad record still uses up an index number
      assert.are.same({ a = "7", b = "8" }, recs[4][1])
      assert.are.same({ 5, 3, 16, 20, 6 }, { table.unpack(recs[4], 2, 6) })
    end)

    it("reports malformed quoting at the record's line and resynchronises", function()
      local p = write_file("bad.csv", 'a,b\n1,x"y\n2,z\n3,"unterminated\n')
      local recs = drain(assert(reader.open(p, "csv")))
      assert.are.equal(3, #recs)
      assert.is_false(recs[1][1])
      assert.are.equal(p .. ":2: malformed CSV (error parsing data while strict checking enabled)", recs[1][2])
      assert.is_false(recs[1][3])
      assert.are.same({ a = "2", b = "z" }, recs[2][1])
      assert.are.same({ 3, 1, 10, 14, 4 }, { table.unpack(recs[2], 2, 6) })
      assert.is_false(recs[3][1])
      assert.are.equal(p .. ":4: malformed CSV (error parsing data while strict checking enabled)", recs[3][2])
    end)

    it("returns nil and a message for files it cannot open or use", function()
      local missing = path("missing.csv")
      local r, err = reader.open(missing, "csv")
      assert.is_nil(r)
      assert.are.equal(missing .. ": No such file or directory", err)
      r, err = reader.open(dir, "csv")
      assert.is_nil(r)
      assert.are.equal(dir .. ": Is a directory", err)
      local p = write_file("empty.csv", "")
      r, err = reader.open(p, "csv")
      assert.is_nil(r)
      assert.are.equal(p .. ": empty file, expected a header row", err)
      p = write_file("emptycol.csv", "a,,c\n1,2,3\n")
      r, err = reader.open(p, "csv")
      assert.is_nil(r)
      assert.are.equal(p .. ":1: empty column name (column 2)", err)
      p = write_file("dup.csv", "\n\na,b,a\n")
      r, err = reader.open(p, "csv")
      assert.is_nil(r)
      assert.are.equal(p .. ":3: duplicate column 'a'", err)
    end)

    it("checks its arguments", function()
      local ok, err = pcall(reader.open, path("x"), "xml")
      assert.is_false(ok)
      assert.are.equal("bad argument #2 to 'orch.reader.open' (invalid option 'xml')", err)
      ok, err = pcall(reader.open)
      assert.is_false(ok)
      assert.are.equal("bad argument #1 to 'orch.reader.open' (string expected, got no value)", err)
    end)

    it("resumes after a record with seek(end, index + 1, end_line)", function()
      local p = write_file("r.csv", 'k,v\n1,"a\nb"\n2,c\n\n3,d\n')
      local r = assert(reader.open(p, "csv"))
      local _, _, index, _, e, end_line = r:next()
      assert.are.same({ 0, 12, 4 }, { index, e, end_line })
      local rest = drain(r)
      r:close()

      r = assert(reader.open(p, "csv"))
      assert.is_true(r:seek(e, index + 1, end_line))
      local again = drain(r)
      assert.are.same(rest, again)
      assert.are.same({ k = "2", v = "c" }, again[1][1])
      assert.are.same({ 4, 1, 12, 16, 5 }, { table.unpack(again[1], 2, 6) })
      assert.are.same({ k = "3", v = "d" }, again[2][1])
      assert.are.same({ 6, 2, 17, 21, 7 }, { table.unpack(again[2], 2, 6) })

      -- seeking back to a record's own offset reads it again, also after the end
      assert.is_true(r:seek(again[2][4], again[2][3], again[2][2]))
      local row, line, idx = r:next()
      assert.are.same({ k = "3", v = "d" }, row)
      assert.are.same({ 6, 2 }, { line, idx })
      assert.is_nil(r:next())
    end)

    it("refuses a seek into the header or with a negative cursor", function()
      local p = write_file("h.csv", "a,b\n1,2\n")
      local r = assert(reader.open(p, "csv"))
      local ok, err = r:seek(2, 0, 1)
      assert.is_nil(ok)
      assert.are.equal(p .. ": Invalid argument", err)
      local pok, perr = pcall(r.seek, r, -1, 0, 1)
      assert.is_false(pok)
      assert.is_truthy(perr:find("(invalid cursor)", 1, true), perr)
      -- still usable
      assert.are.same({ a = "1", b = "2" }, (r:next()))
    end)

    it("reads records longer than its 64 KiB buffer", function()
      local big = string.rep("x", 200000)
      local p = write_file("big.csv", 'a,b\n1,"' .. big .. '"\n2,' .. big .. "\n")
      local recs = drain(assert(reader.open(p, "csv")))
      assert.are.equal(2, #recs)
      assert.are.equal(big, recs[1][1].b)
      assert.are.equal(big, recs[2][1].b)
      assert.are.same({ 3, 1, 200009, 400012, 4 }, { table.unpack(recs[2], 2, 6) })
    end)

    it("taker() gives next's results in a row source's order, a malformed record too", function()
      local p = write_file("t.csv", "a,b\n1,2\n3\n\"4\",5\r\n")
      local take = assert(reader.open(p, "csv")):taker()
      assert.are.same({ n = 4, { a = "1", b = "2" }, 2, 8, 3 }, table.pack(take()))
      assert.are.same({ n = 5, false, p .. ":3: expected 2 fields, found 1", false, 10, 4 }, table.pack(take()))
      assert.are.same({ n = 4, { a = "4", b = "5" }, 4, 17, 5 }, table.pack(take()))
      assert.are.same({ n = 1 }, table.pack(take()))
      local r = assert(reader.open(p, "csv"))
      take = r:taker()
      r:close()
      local ok, err = pcall(take)
      assert.is_false(ok)
      assert.are.equal("attempt to use a closed reader", err)
    end)

    it("raises on use after close; closing twice is harmless", function()
      local p = write_file("c.csv", "a\n1\n")
      local r = assert(reader.open(p, "csv"))
      r:close()
      r:close()
      for _, m in ipairs({ "next", "header", "size" }) do
        local ok, err = pcall(r[m], r)
        assert.is_false(ok)
        assert.are.equal("attempt to use a closed reader", err)
      end
      local ok, err = pcall(r.seek, r, 2, 0, 2)
      assert.is_false(ok)
      assert.are.equal("attempt to use a closed reader", err)
    end)

    it("closes through a to-be-closed variable", function()
      local p = write_file("tbc.csv", "a\n1\n")
      local keep
      do
        local r <close> = assert(reader.open(p, "csv"))
        keep = r
      end
      local ok, err = pcall(keep.next, keep)
      assert.is_false(ok)
      assert.are.equal("attempt to use a closed reader", err)
    end)

    it("regression: header() returns a copy, so changing it does not rename later rows' fields", function()
      regression("reader:header() returns the reader's own key table; writing to it changes the "
        .. "keys of every later row", function()
          local p = write_file("alias.csv", "a,b\n1,2\n")
          local r = assert(reader.open(p, "csv"))
          local h = r:header()
          h[1] = "X"
          assert.are.same({ a = "1", b = "2" }, (r:next()))
          assert.are.same({ "a", "b" }, r:header())
        end)
    end)
  end)

  describe("lines", function()
    it("gives one record per non-blank line, without its line ending", function()
      local p = write_file("l.txt", "\239\187\191one\n\n   \t\ntwo\r\nthree")
      local r = assert(reader.open(p, "lines"))
      assert.are.same({}, r:header())
      local recs = drain(r)
      assert.are.equal(3, #recs)
      assert.are.same({ "one", 1, 0, 3, 7, 2 }, { table.unpack(recs[1], 1, 6) })
      assert.are.same({ "two", 4, 1, 13, 18, 5 }, { table.unpack(recs[2], 1, 6) })
      assert.are.same({ "three", 5, 2, 18, 23, 5 }, { table.unpack(recs[3], 1, 6) })
    end)

    it("keeps inner and edge spaces of a line and resumes with seek", function()
      local p = write_file("l2.txt", "  a b  \nc\n")
      local r = assert(reader.open(p, "lines"))
      local text, line, index, offset, e, end_line = r:next()
      assert.are.same({ "  a b  ", 1, 0, 0, 8, 2 }, { text, line, index, offset, e, end_line })
      r:close()
      r = assert(reader.open(p, "lines"))
      assert.is_true(r:seek(e, index + 1, end_line))
      assert.are.same({ "c", 2, 1, 8, 10, 3 }, { r:next() })
      assert.is_nil(r:next())
    end)

    it("reads lines longer than its buffer", function()
      local big = string.rep("y", 150000)
      local p = write_file("bl.txt", big .. "\n" .. big)
      local recs = drain(assert(reader.open(p, "lines")))
      assert.are.equal(2, #recs)
      assert.are.equal(big, recs[1][1])
      assert.are.equal(big, recs[2][1])
      assert.are.same({ 150001, 300001 }, { recs[2][4], recs[2][5] })
    end)
  end)
end)

describe("orch.sink", function()
  it("buffers writes, reports the offset and flushes to the file", function()
    local p = path("sub/dir/out.txt") -- parent directories are created
    local k = assert(sink.open(p))
    assert.are.equal(p, k:path())
    assert.are.equal(0, k:offset())
    assert.is_true(k:write("hello "))
    assert.are.equal(6, k:offset()) -- buffered bytes count
    assert.are.equal("", read_file(p))
    assert.are.equal(6, k:flush())
    assert.are.equal("hello ", read_file(p))
    assert.is_true(k:write("world\n"))
    assert.are.equal(12, k:flush(true))
    assert.is_true(k:close())
    assert.is_true(k:close()) -- closing twice is harmless
    assert.are.equal("hello world\n", read_file(p))
  end)

  it("close() flushes what is buffered", function()
    local p = path("o.txt")
    local k = assert(sink.open(p))
    k:write("abc")
    k:write(42)
    k:close()
    assert.are.equal("abc42", read_file(p))
  end)

  it("truncates a fresh sink and, reopened at an offset, what lies past it", function()
    local p = write_file("t.txt", "old contents\n")
    local k = assert(sink.open(p))
    k:write("0123456789")
    k:close()
    assert.are.equal("0123456789", read_file(p))
    k = assert(sink.open(p, 4))
    assert.are.equal(4, k:offset())
    assert.are.equal("0123", read_file(p)) -- truncated at open
    k:write("X")
    assert.are.equal(5, k:offset())
    k:close()
    assert.are.equal("0123X", read_file(p))
    k = assert(sink.open(p, 5)) -- exactly the file size
    k:write("!")
    k:close()
    assert.are.equal("0123X!", read_file(p))
  end)

  it("refuses an offset past the end of the file", function()
    local p = write_file("short.txt", "abc")
    local k, err = sink.open(p, 10)
    assert.is_nil(k)
    assert.are.equal(p .. ": is 3 bytes, shorter than the 10 bytes recorded at the last checkpoint", err)
    assert.are.equal("abc", read_file(p)) -- left alone
  end)

  it("keeps exact offsets across writes larger than its buffer", function()
    local p = path("big.txt")
    local k = assert(sink.open(p))
    local chunk = string.rep("a", 40000)
    local big = string.rep("b", 100000)
    k:write(chunk)
    k:write(chunk) -- crosses the 64 KiB buffer
    k:write(big) -- larger than the buffer
    k:write("end")
    assert.are.equal(180003, k:offset())
    assert.are.equal(180003, k:flush())
    k:close()
    assert.are.equal(chunk .. chunk .. big .. "end", read_file(p))
  end)

  it("returns nil and a message naming the path when it cannot open", function()
    local k, err = sink.open("/proc/version/x")
    assert.is_nil(k)
    assert.are.equal("/proc/version/x: Not a directory", err)
    k, err = sink.open(dir)
    assert.is_nil(k)
    assert.are.equal(dir .. ": Is a directory", err)
  end)

  it("writer() writes as write does; a full disk raises the sink's error (tests/e2e/diskfull.sh)", function()
    local p = path("w.txt")
    local k = assert(sink.open(p))
    local put = k:writer()
    put(nil, "a\n")
    put(k, "b\n")
    assert.are.equal(4, k:flush())
    assert.are.equal("a\nb\n", read_file(p))
    local ok, err = pcall(put, k, {})
    assert.is_false(ok)
    assert.matches("bad argument #2", err)
    k:close()
    ok, err = pcall(put, k, "c")
    assert.is_false(ok)
    assert.are.equal("attempt to use a closed sink", err)
  end)

  it("raises on use after close", function()
    local k = assert(sink.open(path("c.txt")))
    k:close()
    for _, call in ipairs({
      function() return k:write("x") end,
      function() return k:flush() end,
      function() return k:offset() end,
      function() return k:path() end,
    }) do
      local ok, err = pcall(call)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("attempt to use a closed sink", 1, true), err)
    end
  end)

  it("checks its arguments", function()
    local ok, err = pcall(sink.open)
    assert.is_false(ok)
    assert.are.equal("bad argument #1 to 'orch.sink.open' (string expected, got no value)", err)
    local k = assert(sink.open(path("a.txt")))
    ok, err = pcall(k.write, k, {})
    assert.is_false(ok)
    assert.is_truthy(err:find("string expected, got table", 1, true), err)
    k:close()
  end)

  it("closes through a to-be-closed variable", function()
    local p = path("tbc.txt")
    do
      local k <close> = assert(sink.open(p))
      k:write("kept")
    end
    assert.are.equal("kept", read_file(p))
  end)
end)

describe("orch.io.open_source", function()
  it("streams a csv spec with its columns", function()
    local p = write_file("in.csv", "id,name\n1,ann\n2\n3,\"b,c\"\n")
    local src = assert(oio.open_source(orch.read.csv(p)))
    assert.are.same({ "id", "name" }, src.columns)
    assert.are.equal(24, src:size())
    local row, line = src:next()
    assert.are.same({ id = "1", name = "ann" }, row)
    assert.are.equal(2, line)
    local r2 = table.pack(src:next())
    assert.is_false(r2[1])
    assert.are.equal(p .. ":3: expected 2 fields, found 1", r2[2])
    assert.is_falsy(r2[3])
    row, line = src:next()
    assert.are.same({ id = "3", name = "b,c" }, row)
    assert.are.equal(4, line)
    assert.is_nil(src:next())
    src:close()
  end)

  it("accepts a spec built by hand with the orch.check.Spec metatable", function()
    local p = write_file("h.csv", "x\n1\n")
    local spec = setmetatable({ io = "read", kind = "csv", path = p }, check.Spec)
    local src = assert(oio.open_source(spec))
    assert.are.same({ x = "1" }, (src:next()))
    src:close()
  end)

  it("returns nil and the reader's message for a missing file", function()
    local p = path("nope.csv")
    local src, err = oio.open_source(orch.read.csv(p))
    assert.is_nil(src)
    assert.are.equal(p .. ": No such file or directory", err)
    p = path("nope.jsonl")
    src, err = oio.open_source(orch.read.jsonl(p))
    assert.is_nil(src)
    assert.are.equal(p .. ": No such file or directory", err)
  end)

  it("streams a jsonl spec and reports bad lines by line number", function()
    local p = write_file("in.jsonl", table.concat({
      '{"id":1,"t":"a"}', -- 1
      "{bad", -- 2
      "[1,2]", -- 3
      "42", -- 4
      '"s"', -- 5
      "", -- 6 (blank: skipped)
      '{"id":2,"n":null,"arr":[1,2],"o":{"k":true}}', -- 7
      '{"1":"a","2":"b"}', -- 8: string keys, an object
      "[null]", -- 9
    }, "\n") .. "\n")
    local src = assert(oio.open_source(orch.read.jsonl(p)))
    assert.are.same({ "id", "t" }, src.columns)
    local function nxt()
      return table.pack(src:next())
    end
    local r = nxt()
    assert.are.same({ id = 1, t = "a" }, r[1])
    assert.are.equal("integer", math.type(r[1].id))
    assert.are.equal(1, r[2])
    r = nxt()
    assert.is_false(r[1])
    assert.are.equal(p .. ":2: invalid JSON (expected a string key at byte 2)", r[2])
    assert.is_falsy(r[3])
    r = nxt()
    assert.is_false(r[1])
    assert.are.equal(p .. ":3: expected a JSON object, got an array", r[2])
    r = nxt()
    assert.are.equal(p .. ":4: expected a JSON object, got number", r[2])
    r = nxt()
    assert.are.equal(p .. ":5: expected a JSON object, got string", r[2])
    r = nxt()
    assert.are.equal(7, r[2])
    assert.are.equal(2, r[1].id)
    assert.are.equal(cjson.null, r[1].n)
    assert.are.same({ 1, 2 }, r[1].arr)
    assert.are.same({ k = true }, r[1].o)
    r = nxt()
    assert.are.same({ ["1"] = "a", ["2"] = "b" }, r[1])
    assert.are.equal(8, r[2])
    r = nxt()
    assert.is_false(r[1])
    assert.are.equal(p .. ":9: expected a JSON object, got an array", r[2])
    assert.is_nil(src:next())
    src:close()
  end)

  it("jsonl: columns are the first object line's keys in file order, also when resuming", function()
    local p = write_file("cols.jsonl", table.concat({
      "not json",
      '{"zeta":1,"id":2,"alpha":{"y":1,"x":2}}',
      '{"alpha":3,"new":4,"id":5}',
    }, "\n") .. "\n")
    local src = assert(oio.open_source(orch.read.jsonl(p)))
    assert.are.same({ "zeta", "id", "alpha" }, src.columns)
    src:close()
    assert.is_nil(assert(oio.open_source(orch.read.jsonl(write_file("none.jsonl", "[1]\n")))).columns)
    -- the sink writes those first, in that order, then new fields sorted
    local out = assert(oio.open_sink(orch.write.jsonl(path("cols.out.jsonl")), src.columns))
    assert.are.equal('{"zeta":1,"id":2,"alpha":{"x":2,"y":1},"b":true}\n',
      out:encode({ zeta = 1, id = 2, alpha = { y = 1, x = 2 }, b = true }))
    assert.are.equal('{"id":5,"alpha":3,"new":4}\n', out:encode({ alpha = 3, new = 4, id = 5 }))
    out:close()
  end)

  it("jsonl: numbers, [] and {} come through exactly; bad UTF-8 names the field", function()
    local lines = {
      '{"id":9223372036854775807,"n":9007199254740993,"f":3.0,"g":0.1,"a":[],"o":{},"x":[[],{"y":[]}]}',
      '{"id":2,"review":"caf\233"}',
      '{"id":123456789012345678901}',
    }
    local p = write_file("exact.jsonl", table.concat(lines, "\n") .. "\n")
    local src = assert(oio.open_source(orch.read.jsonl(p)))
    local out = assert(oio.open_sink(orch.write.jsonl(path("exact.out.jsonl")), src.columns))
    local row = src:next()
    assert.are.equal(math.maxinteger, row.id)
    assert.are.equal("integer", math.type(row.n))
    assert.are.equal("float", math.type(row.f))
    assert.are.equal(lines[1] .. "\n", out:encode(row))
    local bad, err = src:next()
    assert.is_false(bad)
    assert.are.equal(p .. ":2: invalid JSON (invalid UTF-8 at .review)", err)
    bad, err = src:next()
    assert.is_false(bad)
    assert.are.equal(p .. ":3: invalid JSON (integer 123456789012345678901 at .id does not fit in 64 bits)", err)
    out:close()
    src:close()
  end)

  it("regression: refuses an empty JSON array line", function()
    regression("a jsonl line '[]' is taken for an empty object: cjson decodes both to {} and the "
      .. "array check looks at element 1 only", function()
        local p = write_file("e.jsonl", "[]\n")
        local src = assert(oio.open_source(orch.read.jsonl(p)))
        local row, err = src:next()
        assert.is_false(row)
        assert.are.equal(p .. ":1: expected a JSON object, got an array", err)
      end)
  end)

  it("regression: names a JSON null line as null", function()
    regression("a jsonl line 'null' is reported as 'got userdata' (cjson.null) instead of 'got null'",
      function()
        local p = write_file("n.jsonl", "null\n")
        local src = assert(oio.open_source(orch.read.jsonl(p)))
        local row, err = src:next()
        assert.is_false(row)
        assert.are.equal(p .. ":1: expected a JSON object, got null", err)
      end)
  end)

  it("yields copies of a plain table's rows, numbered from 1", function()
    local rows = { { a = 1 }, { a = 2, nested = { 1 } } }
    local src = assert(oio.open_source(rows))
    assert.is_nil(src.columns)
    local r1, n1 = src:next()
    assert.are.same({ a = 1 }, r1)
    assert.are.equal(1, n1)
    r1.a = 99
    r1.added = true
    assert.are.same({ a = 1 }, rows[1]) -- the caller's row is untouched
    local r2, n2 = src:next()
    assert.are_not.equal(rows[2], r2)
    assert.are.equal(rows[2].nested, r2.nested) -- a shallow copy
    assert.are.equal(2, n2)
    assert.is_nil(src:next())
    src:close()
  end)

  it("calls an iterator function and reports a non-table row", function()
    local items = { { x = 1 }, "bad", { x = 3 } }
    local i = 0
    local src = assert(oio.open_source(function()
      i = i + 1
      return items[i]
    end))
    local row, n = src:next()
    assert.are.equal(items[1], row) -- not copied
    assert.are.equal(1, n)
    local bad, err = src:next()
    assert.is_false(bad)
    assert.are.equal("input iterator: row 2 is a string, expected a table", err)
    row, n = src:next()
    assert.are.same({ x = 3 }, row)
    assert.are.equal(3, n)
    assert.is_nil(src:next())
    src:close()
  end)
end)

describe("orch.io.open_sink", function()
  it("jsonl: canonical objects with the input's columns first", function()
    local p = path("out/o.jsonl")
    local out = assert(oio.open_sink(orch.write.jsonl(p), { "z", "a", "missing" }))
    assert.are.equal('{"z":2,"a":1,"b":{"j":2,"k":1},"m":"x"}\n', out:encode({ a = 1, z = 2, m = "x", b = { k = 1, j = 2 } }))
    out:write(out:encode({ a = 1, z = 2, m = "x" }))
    out:write(out:encode({ b = 1.5, a = cjson.null }))
    assert.are.equal(41, out:flush())
    out:close()
    assert.are.equal('{"z":2,"a":1,"m":"x"}\n{"a":null,"b":1.5}\n', read_file(p))
  end)

  it("jsonl: a string that is not UTF-8 raises naming the field", function()
    local out = assert(oio.open_sink(orch.write.jsonl(path("u.jsonl")), { "id", "review" }))
    local ok, err = pcall(out.encode, out, { id = 1, review = "caf\233" })
    assert.is_false(ok)
    assert.are.equal("invalid UTF-8 at .review", (err:gsub("^[^:]*:%d+: ", "")))
    out:close()
  end)

  it("jsonl without input columns sorts keys; unencodable values raise", function()
    local out = assert(oio.open_sink(orch.write.jsonl(path("s.jsonl"))))
    assert.are.equal('{"a":[1,2],"b":"q\\"","c":true}\n', out:encode({ c = true, b = 'q"', a = { 1, 2 } }))
    local ok, err = pcall(out.encode, out, { f = print })
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("at .f", 1, true), err)
    out:close()
  end)

  it("csv: header from the first row, input columns first then the others sorted", function()
    local p = path("o.csv")
    local out = assert(oio.open_sink(orch.write.csv(p), { "id", "text", "gone" }))
    out:write(out:encode({
      id = 1, text = 'he said "hi", bye', zeta = 1.5, alpha = { 1, 2 }, b = true, big = 3.0,
      nl = "a\nb", cr = "x\ry", neg = -7, obj = { k = "v" },
    }))
    out:write(out:encode({ id = 2, text = "plain" }))
    out:write(out:encode({ id = 3, text = " spaced ", n = cjson.null }))
    out:close()
    assert.are.equal(table.concat({
      "id,text,alpha,b,big,cr,neg,nl,obj,zeta",
      '1,"he said ""hi"", bye","[1,2]",true,3.0,"x\ry",-7,"a\nb","{""k"":""v""}",1.5',
      "2,plain,,,,,,,,",
      "3, spaced ,,,,,,,,",
    }, "\n") .. "\n", read_file(p))
  end)

  it("csv: output reads back through the csv reader", function()
    local p = path("rt.csv")
    local rows = {
      { id = "1", text = 'a "quoted", value' },
      { id = "2", text = "line\nbreak\r\nand CRLF" },
      { id = "3", text = "" },
    }
    local out = assert(oio.open_sink(orch.write.csv(p), { "id", "text" }))
    for _, row in ipairs(rows) do
      out:write(out:encode(row))
    end
    out:close()
    local r = assert(reader.open(p, "csv"))
    assert.are.same({ "id", "text" }, r:header())
    for _, want in ipairs(rows) do
      assert.are.same(want, (r:next()))
    end
    assert.is_nil(r:next())
    r:close()
  end)

  it("csv: explicit columns fix the header and order", function()
    local p = path("c.csv")
    local out = assert(oio.open_sink(orch.write.csv(p, { columns = { "b", "a" } }), { "a" }))
    out:write(out:encode({ a = 1, b = "x,y", c = 3 }))
    out:write(out:encode({ a = 2 }))
    out:close()
    assert.are.equal('b,a\n"x,y",1\n,2\n', read_file(p))
  end)

  it("csv: quotes header names that need it", function()
    local p = path("hq.csv")
    local out = assert(oio.open_sink(orch.write.csv(p, { columns = { "a,b", 'say "x"' } })))
    out:write(out:encode({ ["a,b"] = 1, ['say "x"'] = 2 }))
    out:close()
    assert.are.equal('"a,b","say ""x"""\n1,2\n', read_file(p))
  end)

  it("regression: csv writes floats so that they read back exactly", function()
    regression("CSV cells use tostring() (%.14g): 1/3 is written 0.33333333333333 and 2^53 "
      .. "9.007199254741e+15, while the jsonl sink writes the shortest exact form", function()
        local p = path("f.csv")
        local out = assert(oio.open_sink(orch.write.csv(p, { columns = { "x", "y", "z" } })))
        out:write(out:encode({ x = 1 / 3, y = 0.1 + 0.2, z = 2.0 ^ 53 }))
        out:close()
        assert.are.equal("x,y,z\n0.3333333333333333,0.30000000000000004,9007199254740992.0\n", read_file(p))
      end)
  end)

  it("returns nil and a message naming the path when it cannot open", function()
    local out, err = oio.open_sink(orch.write.csv("/proc/version/x.csv"))
    assert.is_nil(out)
    assert.are.equal("/proc/version/x.csv: Not a directory", err)
    out, err = oio.open_sink(orch.write.jsonl("/proc/version/x.jsonl"))
    assert.is_nil(out)
    assert.are.equal("/proc/version/x.jsonl: Not a directory", err)
  end)

  it("truncates an existing output file when opened", function()
    local p = write_file("old.jsonl", '{"stale":true}\n')
    local out = assert(oio.open_sink(orch.write.jsonl(p)))
    out:write(out:encode({ fresh = true }))
    out:close()
    assert.are.equal('{"fresh":true}\n', read_file(p))
  end)

  it("write after close raises", function()
    local out = assert(oio.open_sink(orch.write.jsonl(path("wc.jsonl"))))
    out:close()
    local ok, err = pcall(out.write, out, "{}\n")
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("attempt to use a closed sink", 1, true), err)
  end)
end)
