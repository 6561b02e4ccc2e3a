-- baton.inspect: values as a person reads them (and the REPL shows them).
local baton = require "baton"
local H = require "helper"

describe("baton.inspect", function()
  H.guard()

  it("lays tables out with sorted keys, quoted strings, cycles marked and bounds kept", function()
    local t = { 1, 2, "a\nb", x = 3, [true] = "t", ["not id"] = 4, nested = { a = { b = { c = { d = 1 } } } } }
    t.self = t
    assert.are.equal('{1, 2, "a\\nb", nested = {a = {b = {c = {…}}}}, ["not id"] = 4, self = <cycle>, x = 3, '
      .. '[true] = "t"}', baton.inspect(t))
    assert.are.equal("{1, 2, …(3 more)}", baton.inspect({ 1, 2, 3, 4, 5 }, { width = 2 }))
    assert.are.equal('"q\\"uote\\\\"', baton.inspect('q"uote\\'))
    assert.are.equal("nil", baton.inspect(nil))
  end)

  it("shows values by their __tostring, and results by their status and fields", function()
    local p = baton.spawn { "true" }
    p:wait()
    assert.matches("^baton.process %d+ %(exit 0%)$", baton.inspect(p))
    local r = baton.run { "echo", "hi", capture = true }
    local s = baton.inspect(r)
    assert.matches('^exit 0 {argv = {"echo", "hi"}, ', s)
    assert.matches('stdout = "hi\\n"', s, 1, true)
    H.error_here(function() baton.inspect(1, 2) end, "bad argument #2 to 'inspect' (options table expected, got number)")
  end)
end)
