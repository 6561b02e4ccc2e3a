-- The error convention (baton.errors): one rule, applied everywhere.
local baton = require "baton"
local H = require "helper"

-- The message `fn` raises, or nil.
local function raised(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local HERE = "errors_spec.lua:%d+: "

-- Misuse raises at the script's line naming the call the script made;
-- operational failures return nil, "ENAME: msg", "ENAME"; the conveniences
-- raise a baton.Error.
describe("errors", function()
  H.guard()

  it("name the call the script made, at the script's line", function()
    local c = baton.cmd
    assert.matches(HERE .. "bad argument #1 to 'output' %(unknown option 'colour'%)$",
      raised(function() baton.output { "true", colour = 1 } end))
    assert.matches(HERE .. "bad argument #1 to 'ok' %(unknown option 'colour'%)$",
      raised(function() baton.ok { "true", colour = 1 } end))
    assert.matches(HERE .. "bad argument #1 to 'lines' %(unknown option 'colour'%)$",
      raised(function() baton.lines { "true", colour = 1 } end))
    assert.matches(HERE .. "bad argument #1 to 'output' %(unknown option 'colour'%)$",
      raised(function() c { "true" }:output { colour = 1 } end))
    assert.matches(HERE .. "bad argument #1 to 'run' %(unknown pipeline option 'colour'%)$",
      raised(function() (c { "true" } | c { "cat" }):run { colour = 1 } end))
    assert.matches(HERE .. "bad argument #1 to 'with' %(table expected, got number%)$",
      raised(function() (c { "true" } | c { "cat" }):with(5) end))
    local p = baton.spawn { "true" }
    assert.matches(HERE .. "bad argument #1 to 'terminate' %(grace must be a number of seconds from 0 to 1e%+?0?9, got %-1%)$",
      raised(function() p:terminate(-1) end))
    assert.is_true(p:wait().ok)
    assert.matches(HERE .. "bad argument #2 to 'scope' %(options table expected, got string%)$",
      raised(function() baton.scope(function() end, "x") end))
    assert.matches(HERE .. "bad argument #1 to 'sh' %(unknown directive %%d; only %%s and %%%%%)$",
      raised(function() baton.sh("echo %d", 1) end))
  end)

  it("raise on a stream handed to a child the wrong way round, and on writing what is not a string", function()
    local a = baton.spawn { "cat", stdin = "pipe", stdout = "pipe" }
    H.error_here(function() baton.run { "echo", "hi", stdout = a.stdout } end,
      "bad argument #1 to 'run' (option 'stdout': stdout is the end of a pipe baton reads; the child would need the other end)")
    H.error_here(function() baton.run { "cat", stdin = a.stdin } end,
      "bad argument #1 to 'run' (option 'stdin': stdin is the end of a pipe baton writes; the child would need the other end)")
    H.error_here(function() a.stdin:write("x", nil) end, "bad argument #2 to 'write' (string expected, got nil)")
    H.error_here(function() a.stdin:write({}) end, "bad argument #1 to 'write' (string expected, got table)")
    assert.is_false(a.stdin.closed)
    a.stdin:close()
    assert.are.equal("", a.stdout:read("a"))
    assert.is_true(a:wait().ok)
  end)

  it("raise on a method called with a dot, a stream used the wrong way, conflicting options", function()
    local p = baton.spawn { "cat", stdin = "pipe", stdout = "pipe" }
    assert.matches(HERE .. "bad argument #1 to 'wait' %(a process or pipeline run expected, got no value %(call it as obj:wait%(…%)%)%)$",
      raised(function() p.wait() end))
    assert.matches(HERE .. "baton: cannot read stdin: baton writes this end of the pipe$",
      raised(function() p.stdin:read("a") end))
    assert.matches(HERE .. "baton: cannot write stdout: baton reads this end of the pipe$",
      raised(function() p.stdout:write("x") end))
    assert.matches(HERE .. "bad argument #1 to 'read' %(baton.stream expected, got no value",
      raised(function() p.stdout.read() end))
    local t = baton.go(function() end)
    assert.matches(HERE .. "bad argument #1 to 'wait' %(baton.task expected, got number", raised(function() t.wait(5) end))
    assert.matches(HERE .. "bad argument #1 to 'run' %(option 'capture': stdout and stderr both go elsewhere, so nothing would be captured%)$",
      raised(function() baton.run { "true", capture = true, stdout = "stderr", stderr = "stdout" } end))
    assert.matches(HERE .. "bad argument #1 to 'sleep' %(a number of seconds from 0 to 1e9 expected, got %-1%)$",
      raised(function() baton.sleep(-1) end))
    p.stdin:write("a\nb\n")
    p.stdin:close()
    assert.are.same({ "a", "b", nil, n = 3 }, table.pack(p.stdout:read("l", "l", "l")))
    assert.is_true(p:wait().ok)
  end)

  it("name the call the script made for commands, pipelines, sh, lines and methods without self", function()
    local c = baton.cmd
    H.error_here(function() c { "true" }.argv() end,
      "bad argument #1 to 'argv' (baton.command expected, got no value (call it as obj:argv(…)))")
    H.error_here(function() return c "true" | 1 end, "bad argument #1 to '|' (table expected, got number)")
    H.error_here(function() baton.pipeline { 1 } end, "bad argument #1 to 'pipeline' (table expected, got number)")
    H.error_here(function() baton.sh("echo %s", { 1, {} }) end,
      "bad argument #2 to 'sh' (list for %s number 1: item 2 must be a string or number, got table)")
    H.error_here(function() baton.lines { "true", stdout = "null" } end,
      "bad argument #1 to 'lines' (option 'stdout': lines() reads stdout, so it cannot go elsewhere)")
    H.error_here(function() (c "true" | c "cat").with({}) end,
      "bad argument #1 to 'with' (baton.pipeline expected, got table (call it as obj:with(…)))")
    local t = baton.go(function() end)
    H.error_here(function() t.is_done() end,
      "bad argument #1 to 'is_done' (baton.task expected, got no value (call it as obj:is_done(…)))")
    baton.scope(function(s)
      H.error_here(function() s.processes() end,
        "bad argument #1 to 'processes' (baton.scope expected, got no value (call it as obj:processes(…)))")
    end)
  end)

  it("raise on use after close: a write to a closed stream", function()
    local p = baton.spawn { "cat", stdin = "pipe", stdout = "null" }
    p.stdin:close()
    assert.matches(HERE .. "baton: write to a closed stream %(stdin%)$", raised(function() p.stdin:write("x") end))
    assert.is_true(p:wait().ok)
  end)

  it("of a spawn are nil, msg, code; the conveniences raise a baton.Error", function()
    local p, msg, code = baton.spawn { "/no/such/program" }
    assert.is_nil(p)
    assert.are.equal("ENOENT", code)
    assert.matches('^ENOENT: cannot run "/no/such/program": exec /no/such/program: ', msg)
    local ok, err = pcall(baton.run, { "/no/such/program" })
    assert.is_false(ok)
    assert.are.equal(baton.Error, getmetatable(err))
    assert.are.equal("spawn", err.kind)
    assert.are.equal("ENOENT", err.code)
    assert.are.equal(msg, err.msg)
  end)

  it("of a pipeline stage not found are told before anything starts, from the errno", function()
    local c = baton.cmd
    local r, msg, code = (c { "echo", "x" } | c { "no-such-tool-anywhere" }):spawn()
    assert.is_nil(r)
    assert.are.equal("ENOENT", code)
    assert.matches('^ENOENT: cannot run "no%-such%-tool%-anywhere": not found in PATH .*%(pipeline stage 2%)$', msg)
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir .. " && touch " .. dir .. "/tool && chmod 644 " .. dir .. "/tool"))
    r, msg, code = (c { "echo", "x" } | c { "tool", env = { PATH = dir } }):spawn()
    os.execute("rm -r " .. dir)
    assert.is_nil(r)
    assert.are.equal("EACCES", code)
    assert.matches('^EACCES: cannot run "tool": [Pp]ermission denied %(PATH=', msg)
  end)

  it("of a tee file that cannot be opened carry its errno name", function()
    local c = baton.cmd
    local r, msg, code = (c { "echo", "x" } | c { "cat" }):spawn { tee = "/no/such/dir/tee.log" }
    assert.is_nil(r)
    assert.are.equal("ENOENT", code)
    assert.matches("^ENOENT: cannot open the tee file: /no/such/dir/tee.log: No such file or directory$", msg)
  end)
end)
