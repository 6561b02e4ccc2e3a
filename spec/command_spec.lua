-- Commands as values (baton.command): cmd, with, sh, quote and from.
local baton = require "baton"
local H = require "helper"

describe("commands", function()
  H.guard()

  it("are reusable values; nothing runs until asked", function()
    local name = os.tmpname()
    os.remove(name)
    local touch = baton.cmd { "touch", name }
    assert.is_nil(io.open(name)) -- built, not run
    assert.is_true(touch:run().ok)
    assert.is_not_nil(io.open(name))
    os.remove(name)
    assert.is_true(touch:run().ok) -- and again
    os.remove(name)
  end)

  it("derive variants without changing the original", function()
    local echo = baton.cmd { "sh", "-c", "echo $0 $@ $V", "x", env = { V = "1" } }
    local more = echo:with { "a", "b", env = { W = "2" } }
    assert.are.equal("x 1", echo:output())
    assert.are.equal("x a b 1", more:output())
    assert.are.equal("x c 1", echo("c"):output())
    assert.are.equal("x 1", echo:output())
    H.error_here(function() echo.cwd = "/" end, "baton: a command is immutable; derive a new one with cmd:with{…}")
    H.error_here(function() baton.cmd { "ls", bogus = 1 } end, "bad argument #1 to 'cmd' (unknown option 'bogus')")
    local spec = { "echo", "one" }
    local c = baton.cmd(spec)
    spec[2] = "two" -- the command took a copy
    assert.are.equal("one", c:output())
    assert.are.equal("sh -c 'echo $0 $@ $V' x", tostring(echo))
  end)

  it("a command checks its values when it is made, not when it runs", function()
    for _, case in ipairs {
      { { "true", stdout = "bogus" }, "option 'stdout': unknown redirection \"bogus\" " ..
        "(inherit, null, pipe, stderr, an fd, a file, {path=…}, a stream, a function)" },
      { { "true", env = { X = {} } }, "option 'env': value of X must be a string, a number or false, got table" },
      { { "true", rlimits = { bogus = 1 } }, "option 'rlimits': unknown limit \"bogus\"" },
      { { "true", fds = { x = 1 } }, "option 'fds': keys must be fd numbers 3..63, got x" },
      { { "true", input = "x", stdin = "null" }, "options 'input' and 'stdin' exclude each other" },
      { { "true", stdout = { path = "f", mode = "q" } }, "option 'stdout': mode must be \"r\", \"w\", \"a\", \"r+\", \"w+\" or \"a+\"" },
    } do
      H.error_here(function() baton.cmd(case[1]) end, "bad argument #1 to 'cmd' (" .. case[2] .. ")")
    end
    H.error_here(function() baton.cmd { "true" }:with { stdin = function() end } end,
      "bad argument #1 to 'with' (option 'stdin': a function cannot be read from (use input = …))")
  end)

  it("a command's limits cannot be changed through the table it was made from", function()
    local limits = { nofile = { 64, 64 } }
    local c = baton.cmd { "sh", "-c", "ulimit -n", rlimits = limits }
    limits.nofile[1] = 32
    assert.are.equal("64", c:output())
  end)

  it("run, output and friends take options on a command", function()
    local c = baton.cmd { "sh", "-c", "echo out; exit 3" }
    assert.are.equal(3, c:run { check = false }.code)
    assert.are.equal("out", c:output { check = false })
    local p = baton.cmd { "echo", "hi", capture = true }:spawn()
    assert.are.equal("hi\n", p.stdout:read("a"))
    p:wait()
  end)

  it("sh quotes every value as one word", function()
    local nasty = { "it's", "a b", "$HOME", "`id`", "; rm -rf /", "*", "", "\n" }
    for _, v in ipairs(nasty) do
      assert.are.equal(v, baton.sh("printf %%s %s", v):with { capture = true }:run().stdout)
    end
    local words = baton.sh("for w in %s; do echo \"[$w]\"; done", { "one two", "three" }):output()
    assert.are.equal("[one two]\n[three]", words)
    assert.are.equal("'it'\\''s'", baton.quote("it's"))
    H.error_here(function() baton.sh("echo %d", 1) end, "bad argument #1 to 'sh' (unknown directive %d; only %s and %%)")
    H.error_here(function() baton.sh("echo %s %s", 1) end, "bad argument #1 to 'sh' (more %s than values: 1)")
  end)

  it("baton.from leaves nothing behind when the outer command cannot start", function()
    H.error_here(function() baton.run { "cat", baton.from { "sleep", "7" }, stdin = "bogus" } end,
      "bad argument #1 to 'run' (option 'stdin': unknown redirection \"bogus\" " ..
      "(inherit, null, pipe, an fd, a file, {path=…}, a stream))")
    local ok, err = pcall(baton.run, { "cat", baton.from { "sleep", "7" }, stdout = { path = "/nonexistent/x" } })
    assert.is_false(ok)
    assert.are.equal("spawn", err.kind)
    assert.are.equal("ENOENT", err.code)
    assert.matches('^ENOENT: cannot run "cat": cannot open a redirection: /nonexistent/x: ', err.msg)
    -- the guard checks that no sleep and no fd is left
  end)
end)
