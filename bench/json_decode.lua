-- json_decode.lua -- decode speed of orch.json.decode against lua-cjson's on
-- the rows orch reads: the JSONL form of examples/data/reviews.csv (text
-- heavy) and rows of many numbers (ids, counts, scores, nested arrays).
--
--   ./build/orch lua bench/json_decode.lua [ROWS] [ROUNDS] [DIR]
--
-- With DIR, the two row sets are also written to DIR/reviews.jsonl and
-- DIR/numeric.jsonl (bench/json_decode.sh times yajl's parser on them).
--
-- Each decoder decodes the same ROWS lines ROUNDS times; the best round's
-- CPU time (os.clock) is reported as rows/s and MB/s.  Both decoders run in
-- the same process on the same strings, so the comparison is fair on a
-- noisy machine; the absolute figures are not.
local json = require("orch.json")
local cjson = require("cjson")
local reader = require("orch.reader")

local nrows = tonumber(arg and arg[1]) or 200000
local rounds = tonumber(arg and arg[2]) or 5
local dump = arg and arg[3]

local function reviews_lines(n)
  local r = assert(reader.open("examples/data/reviews.csv", "csv"))
  local cols = r:header()
  local base = {}
  while true do
    local row = r:next()
    if row == nil then
      break
    end
    if row then
      row.id = math.tointeger(tonumber(row.id))
      row.rating = math.tointeger(tonumber(row.rating))
      base[#base + 1] = json.encode(row, cols)
    end
  end
  r:close()
  local lines = {}
  for i = 1, n do
    lines[i] = base[(i - 1) % #base + 1]
  end
  return lines
end

local function numeric_lines(n)
  local lines = {}
  for i = 1, n do
    local v = {
      id = 1000000000000 + i * 7919, seq = i, score = (i % 1000) / 7, count = i % 97,
      ratio = 1 / (i % 13 + 1), big = 9007199254740993 + i, neg = -i,
      tags = { i % 5, i % 7, i % 11, (i % 3) * 0.5 }, empty = setmetatable({}, json.array_mt),
      pos = { x = i * 0.25, y = -i * 0.125, z = i },
    }
    lines[i] = json.encode(v)
  end
  return lines
end

local function bench(name, decode, lines)
  local best = math.huge
  local bytes = 0
  for _, l in ipairs(lines) do
    bytes = bytes + #l
  end
  for _ = 1, rounds do
    collectgarbage("collect")
    local t0 = os.clock()
    for i = 1, #lines do
      decode(lines[i])
    end
    local t = os.clock() - t0
    if t < best then
      best = t
    end
  end
  io.write(string.format("  %-18s %8.3f s  %10.0f rows/s  %7.1f MB/s\n", name, best, #lines / best,
    bytes / best / 1e6))
  return best
end

-- the same value both ways, for the text rows (cjson would lose the numbers)
local function check(lines)
  for i = 1, math.min(#lines, 1000) do
    assert(json.encode(json.decode(lines[i])) == lines[i], "orch.json.decode does not round-trip line " .. i)
  end
end

local sets = {
  { "reviews.csv as JSONL", reviews_lines(nrows), "reviews.jsonl" },
  { "numeric rows", numeric_lines(nrows), "numeric.jsonl" },
}
if dump then
  for _, set in ipairs(sets) do
    local fh = assert(io.open(dump .. "/" .. set[3], "wb"))
    fh:write(table.concat(set[2], "\n"), "\n")
    fh:close()
  end
end
print(string.format("decode %d rows, best of %d rounds (CPU time)", nrows, rounds))
for _, set in ipairs(sets) do
  check(set[2])
  print(set[1] .. string.format(" (%d bytes/row):", #set[2][1]))
  local c = bench("lua-cjson 2.1.0", cjson.new().decode, set[2])
  local o = bench("orch.json.decode", json.decode, set[2])
  print(string.format("  orch.json.decode / lua-cjson time: %.2f", o / c))
end
