-- orch.key_if_present: the ready workflows key rows by a column when the
-- input has it, by the row number when it does not.
local orch = require("orch")

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

describe("orch.llm_params", function()
  after_each(function()
    orch.params = {}
  end)

  it("reads provider, model, base_url and concurrency from --set, with the ready workflows' defaults", function()
    orch.params = {}
    local llm = orch.llm_params { max_tokens = 80 }
    assert.are.same({ provider = "mock", model = "mock", concurrency = 32, max_tokens = 80 }, llm)
    orch.params = { provider = "openai", model = "m", base_url = "http://127.0.0.1:1/v1", concurrency = "4" }
    llm = orch.llm_params { concurrency = 8 }
    assert.are.same({ provider = "openai", model = "m", base_url = "http://127.0.0.1:1/v1", concurrency = 4 }, llm)
  end)

  it("lists what it reads for orch params", function()
    orch.params_read = {}
    orch.llm_params()
    local names = {}
    for _, p in ipairs(orch.params_read) do
      names[#names + 1] = p.name
    end
    assert.are.same({ "provider", "model", "base_url", "concurrency" }, names)
  end)
end)
