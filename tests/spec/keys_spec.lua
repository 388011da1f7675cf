-- orch.key_if_present: the ready workflows key rows by a column when the
-- input has it, by the row number when it does not.
local orch = require "orch"

describe("orch.key_if_present", function()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local function file(name, text)
    local path = dir .. "/" .. name
    local fh = assert(io.open(path, "w"))
    fh:write(text)
    fh:close()
    return path
  end

  it("gives the name when the first CSV row has that column", function()
    assert.are.equal("id", orch.key_if_present(file("a.csv", "id,text\n1,a\n"), "id"))
  end)

  it("gives nil when the first row has no such field (CSV and JSONL)", function()
    assert.is_nil(orch.key_if_present(file("b.csv", "n,text\n1,a\n"), "id"))
    assert.is_nil(orch.key_if_present(file("c.jsonl", '{"body":"x"}\n'), "id"))
  end)

  it("gives the name for a file it cannot read, so the run reports the file", function()
    assert.are.equal("id", orch.key_if_present(dir .. "/missing.csv", "id"))
  end)

  it("checks its arguments", function()
    local ok, err = pcall(orch.key_if_present, 5, "id")
    assert.is_false(ok)
    assert.matches("orch.key_if_present: argument 1 must be a string, got number", tostring(err), 1, true)
  end)
end)
