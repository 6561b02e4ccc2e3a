-- baton.inspect: values as a person reads them (and the REPL shows them).
local baton = require "baton"
local H = require "helper"

describe("baton.inspect", function()
  H.guard()

  it("lays tables out with sorted keys, quoted strings, cycles marked and bounds kept", function()
    local t = { 1, 2, "a\nb", x = 3, [true] = "t", ["not id"] = 4, nested = { a = { b = { c = { d = 1 } } } } }
    t.self = t
    assert.are.equal('{1, 2, "a\\nb", nested = {a = {b = {c = {…}}}}, ["not id"] = 4, self = <cycle>, x = 3, '
      .. '[true] = "t"}', baton.inspect(t, { line = 200 }))
    assert.are.equal("{1, 2, …(3 more)}", baton.inspect({ 1, 2, 3, 4, 5 }, { width = 2 }))
    assert.are.equal('"q\\"uote\\\\"', baton.inspect('q"uote\\'))
    assert.are.equal("nil", baton.inspect(nil))
  end)

  it("lays a table that outgrows its line out one item per line, nested ones indented", function()
    local t = { name = ("n"):rep(30), list = { ("a"):rep(30), ("b"):rep(30), ("c"):rep(30) }, x = 1 }
    assert.are.equal('{\n  list = {\n    "' .. ("a"):rep(30) .. '",\n    "' .. ("b"):rep(30) .. '",\n    "'
      .. ("c"):rep(30) .. '"\n  },\n  name = "' .. ("n"):rep(30) .. '",\n  x = 1\n}', baton.inspect(t))
    assert.are.equal("{x = 1}", baton.inspect({ x = 1 }, { line = 7 }))
    assert.are.equal("{\n  x = 1\n}", baton.inspect({ x = 1 }, { line = 6 }))
  end)

  it("colors values by kind only when asked to", function()
    assert.are.equal('{\27[33m1\27[0m, \27[32m"s"\27[0m, k = \27[33mtrue\27[0m}',
      baton.inspect({ 1, "s", k = true }, { color = true }))
    assert.are.equal('{1, "s"}', baton.inspect({ 1, "s" }))
    -- Color codes take no columns: the colored table stays on one line.
    assert.is_nil(baton.inspect({ ("a"):rep(70) }, { color = true }):find("\n"))
  end)

  it("shows values by their __tostring, and results by their status and fields", function()
    local p = baton.spawn { "true" }
    p:wait()
    assert.matches("^baton.process %d+ %(exit 0%)$", baton.inspect(p))
    local r = baton.run { "echo", "hi", capture = true }
    local s = baton.inspect(r)
    assert.matches('^exit 0 {\n  argv = {"echo", "hi"},\n  code = 0,\n', s)
    assert.matches('stdout = "hi\\n"', s, 1, true)
    H.error_here(function() baton.inspect(1, 2) end, "bad argument #2 to 'inspect' (options table expected, got number)")
  end)

  it("reads tables raw: metamethods that raise, loop or make contents up are not run", function()
    local function boom() error("boom") end
    local t = setmetatable({ 1, x = 2 }, { __index = boom, __len = boom, __pairs = boom })
    assert.are.equal("{1, x = 2}", baton.inspect(t))
    local looping = setmetatable({}, { __pairs = function() return function() return 1, 1 end end })
    assert.are.equal("{}", baton.inspect(looping))
    assert.are.equal("{}", baton.inspect(setmetatable({}, { __len = function() return 2.5 end })))
    assert.are.equal("<table>", baton.inspect(setmetatable({}, { __tostring = boom, __name = {} })))
    assert.are.equal("{a = 1}", baton.inspect(setmetatable({ a = 1 }, { __metatable = "locked" })))
  end)

  it("sorts keys of every kind without comparing across kinds, and quotes reserved words", function()
    local t = { 1, [1.5] = "f", [-math.huge] = "m", [0.0] = "z", a = 1, [true] = 2, [print] = 3, ["end"] = 4 }
    local s = baton.inspect(t, { line = 1000 })
    assert.matches('^{1, %[%-inf%] = "m", %[0%] = "z", %[1%.5%] = "f", a = 1, %["end"%] = 4, '
      .. '%[function: [^%]]+%] = 3, %[true%] = 2}$', s)
    H.error_here(function() baton.inspect({}, { depth = "x" }) end,
      "bad argument #2 to 'inspect' (option 'depth': number expected, got string)")
  end)
end)
