-- baton.logs: output held across processes, split into lines once, routed.
local baton = require "baton"
local H = require "helper"
local logs = require "baton.logs"

describe("baton.logs", function()
  H.guard()

  it("holds a pipe across processes: lines of one after another, a partial last line marked", function()
    local got = {}
    local log = assert(logs.open("svc.1", { stdout = { function(line, stream, _, mark)
      got[#got + 1] = stream .. ":" .. line .. (mark and ("[" .. mark .. "]") or "")
    end } }))
    local fd = log:fd("stdout")
    assert.is_true(baton.run { "sh", "-c", "echo one; printf 'two\\nhalf'", stdout = fd }.ok)
    H.wait_for(function() return #got == 2 end, "two lines")
    log:flush_partial()
    assert.is_true(baton.run { "sh", "-c", "echo three", stdout = fd }.ok)
    H.wait_for(function() return #got == 4 end, "the partial line and the third")
    assert.are.same({ "stdout:one", "stdout:two", "stdout:half[partial]", "stdout:three" }, got)
    assert.are.same({ "two", "half", "three" }, log:tail(3))
    log:close()
  end)

  it("splits an over-long line into marked pieces and passes binary bytes unharmed", function()
    local got = {}
    local log = assert(logs.open("b.1", { stdout = { function(line, _, _, mark) got[#got + 1] = { line, mark } end } }))
    local old = logs.MAX_LINE
    logs.MAX_LINE = 10
    local bytes = {}
    for b = 0, 255 do if b ~= 10 then bytes[#bytes + 1] = string.char(b) end end
    local bin = table.concat(bytes)
    local p = baton.spawn { "cat", stdin = "pipe", stdout = log:fd("stdout") }
    p.stdin:write(("x"):rep(25), "\n", bin, "\n")
    p.stdin:close()
    p:wait()
    log:close() -- reads to the end first
    logs.MAX_LINE = old
    assert.are.same({ ("x"):rep(10), "split" }, got[1])
    assert.are.same({ ("x"):rep(10), "split" }, got[2])
    assert.are.same({ ("x"):rep(5) }, got[3])
    local back = {}
    for i = 4, #got do back[#back + 1] = got[i][1] end
    assert.are.equal(bin, table.concat(back))
  end)

  it("formats the terminal view as foreman and honcho do", function()
    logs.widen("worker.1")
    assert.are.equal("12:00:00 web.1    | ", logs.prefix("web.1", "stdout", "12:00:00"))
    assert.are.equal("12:00:00 web.1    | (stderr) ", logs.prefix("web.1", "stderr", "12:00:00"))
  end)

  it("rejects bad routes naming them", function()
    H.error_here(function() logs.check({ 42 }, "log.stdout") end,
      "bad argument #1 to 'service' (log.stdout[1]: \"terminal\", \"null\", a file path, {file = …} or a function expected, got number)")
  end)
end)
