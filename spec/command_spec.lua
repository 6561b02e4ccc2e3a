-- Commands as values, the conveniences, waiting for several, adopting,
-- scopes, the subreaper and exec.
local baton = require "baton"
local H = require "helper"

local BATON = os.getenv("BATON_EXE") or "./build/baton"

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

  it("output trims trailing newlines, ok answers, lines iterate", function()
    assert.are.equal("a\nb", baton.output { "printf", "a\\nb\\n\\n" })
    assert.is_true(baton.ok { "true" })
    assert.is_false(baton.ok { "false" })
    local lines = {}
    for l in baton.lines { "printf", "x\\ny\\nz" } do lines[#lines + 1] = l end
    assert.are.same({ "x", "y", "z" }, lines)
    local ok, err = pcall(function() for _ in baton.lines { "sh", "-c", "echo a; exit 3" } do end end)
    assert.is_false(ok)
    assert.are.equal(baton.Error, getmetatable(err))
    assert.are.equal("exit", err.kind)
    assert.are.equal("command sh -c 'echo a; exit 3' exited with code 3", tostring(err))
    lines = {}
    for l in baton.lines { "sh", "-c", "echo a; exit 3", check = false } do lines[#lines + 1] = l end
    assert.are.same({ "a" }, lines)
  end)

  it("lines: breaking out early kills and reaps the producer", function()
    local seen = 0
    for _ in baton.lines { "yes" } do
      seen = seen + 1
      if seen == 1000 then break end
    end
    assert.are.equal(1000, seen)
    -- the guard checks that `yes` is gone and reaped
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

  it("say when a program is only in a relative PATH entry", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir " .. dir .. " && printf '#!/bin/sh\\necho local\\n' > " .. dir .. "/localprog && chmod +x " .. dir .. "/localprog")
    local p, msg, code = baton.spawn { "localprog", cwd = dir, env = { PATH = ".:/usr/bin:/bin" } }
    assert.is_nil(p)
    assert.are.equal("ENOENT", code)
    assert.matches("not found in PATH %(PATH=%.:/usr/bin:/bin%); %./localprog exists, but relative PATH entries are not searched", msg)
    local r = baton.run { "./localprog", cwd = dir, capture = true }
    assert.are.equal("local\n", r.stdout)
    os.execute("rm -rf " .. dir)
  end)
end)

describe("waiting for several", function()
  H.guard()

  it("wait_any returns the first done", function()
    -- Neither `slow` nor `t` ends before the spec ends them.
    local slow = assert(baton.spawn { "sleep", "30" })
    local fast = assert(baton.spawn { "sh", "-c", "sleep 0.05; exit 4" })
    local t = baton.go(function() baton.sleep(1e6) end)
    local i, w = baton.wait_any { slow, fast, t }
    assert.are.equal(2, i)
    assert.are.equal(fast, w)
    assert.are.equal(4, w:wait().code)
    slow:kill()
    slow:wait()
    t:cancel()
    local i2 = baton.wait_any { slow, t }
    assert.are.equal(1, i2)
    H.error_here(function() baton.wait_any {} end,
      "bad argument #1 to 'wait_any' (non-empty list of tasks or processes expected)")
  end)
end)

describe("adopt", function()
  H.guard()

  it("watches and signals a process that is not our child", function()
    -- `sleep` started by an intermediate shell that exits: re-parented away from us.
    local pid = tonumber(baton.output { "sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!" })
    local p = assert(baton.adopt(pid))
    assert.matches("sleep", p.path)
    assert.is_true(p:signal("TERM"))
    local st = p:wait()
    assert.is_false(st.known)
    assert.are.equal("exited (status unknown: not our child)", tostring(st))
    local q, msg, code = baton.adopt(4194303)
    assert.is_nil(q)
    assert.are.equal("ESRCH", code)
    H.error_here(function() baton.adopt("1") end, "bad argument #1 to 'adopt' (positive integer pid expected)")
  end)
end)

describe("scopes", function()
  H.guard()

  it("terminate and reap what was spawned inside, also on error", function()
    local pids = {}
    local ok, err = pcall(baton.scope, function()
      pids[1] = baton.spawn { "sleep", "30" }.pid
      baton.go(function() pids[2] = baton.spawn { "sleep", "30" }.pid end)
      error("boom")
    end, { grace = 1 })
    assert.is_false(ok)
    assert.matches("^spec/command_spec.lua:%d+: boom$", err)
    assert.is_false(H.alive(pids[1]))
    assert.is_false(H.alive(pids[2]))
  end)

  it("return the function's results and leave detached processes alone", function()
    local detached
    local a, b = baton.scope(function()
      detached = baton.spawn { "sleep", "30" }:detach()
      local q = baton.spawn { "sleep", "30", detach = true }
      q:kill()
      q:wait()
      return 1, 2
    end)
    assert.are.same({ 1, 2 }, { a, b })
    assert.is_true(H.alive(detached.pid))
    detached:kill()
    detached:wait()
  end)

  it("work as to-be-closed variables, escalating to KILL after the grace", function()
    local p
    do
      local s <close> = baton.scope { grace = 0.1 }
      p = baton.spawn { "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done", stdout = "pipe" }
      assert.are.equal("ready", p.stdout:read("l")) -- the trap is set
    end
    assert.are.equal("SIGKILL", p:wait().signame)
    p:close()
  end)
end)

describe("the subreaper", function()
  H.guard()

  it("reaps orphaned grandchildren, and leaves our children to their owners", function()
    local reaped = {}
    assert.is_true(baton.subreaper(true, function(pid, code) reaped[pid] = code end))
    local p = assert(baton.spawn { "sh", "-c", "(sleep 0.1; exit 5) & echo $!", stdout = "pipe" })
    local orphan = tonumber(p.stdout:read("l"))
    assert.are.equal(0, p:wait().code)
    assert.are.equal(5, H.wait_for(function() return reaped[orphan] end, "the orphan to be reaped"))
    assert.is_true(baton.subreaper(false))
    p:close()
  end)
end)

describe("exec", function()
  H.guard()

  it("replaces the process, or returns an error it can report", function()
    local r = baton.run { BATON, "-e", "baton.exec{'sh', '-c', 'echo replaced $0', argv0 = 'me'} print('not reached')", capture = true }
    assert.are.equal("replaced me\n", r.stdout)
    r = baton.run { BATON, "-e", "print(baton.exec{'baton-no-such-program'})", capture = true }
    assert.matches("^nil\tENOENT: cannot run", r.stdout)
    H.error_here(function() baton.exec { "cat", stdin = "pipe" } end,
      "bad argument #1 to 'exec' (exec cannot use pipes, input or a timeout: nothing would be left to serve them)")
  end)

end)

describe("regressions from review", function()
  H.guard()

  it("the owned-pid table survives many spawns, then adopts and reaps (no hang)", function()
    -- Run in a child baton with a timeout: a hang fails instead of blocking the suite.
    local r = baton.run { BATON, "-e", [[
      for _ = 1, 300 do baton.run{"true"} end
      local pid = tonumber(baton.output{"sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"})
      local p = assert(baton.adopt(pid))
      p:signal("KILL")
      p:wait()
      baton.subreaper(true)
      for _ = 1, 100 do baton.run{"sh", "-c", "true &"} end
      baton.subreaper(false)
      print("done")]], capture = true, timeout = 20, check = false }
    assert.is_false(r.timed_out)
    assert.are.equal("done\n", r.stdout)
  end)

  it("a stream handed to another process is its own, blocking, and let go of", function()
    local producer = assert(baton.spawn { "yes", stdout = "pipe" })
    local head = assert(baton.spawn { "head", "-1", stdin = producer.stdout, stdout = "pipe" })
    assert.is_true(producer.stdout.closed) -- baton no longer holds the pipe
    assert.are.equal("y", head.stdout:read("l"))
    assert.is_true(head:wait().ok)
    local st = producer:wait(H.PATIENCE) -- SIGPIPE, as in a shell pipeline
    assert.is_not_nil(st)
    assert.are.equal("SIGPIPE", st.signame)
    head:close()
    producer:close()
    -- a slow producer: the consumer blocks, it does not fail with EAGAIN
    local slow = assert(baton.spawn { "sh", "-c", "sleep 0.2; echo late", stdout = "pipe" })
    assert.are.equal("late\n", baton.run { "cat", stdin = slow.stdout, capture = true }.stdout)
    slow:wait()
  end)

  it("a timed wait that is cancelled leaves no timer and no waiter", function()
    local p = assert(baton.spawn { "sleep", "30" })
    local base = baton.core.handles()
    local t = baton.go(function() return p:wait(5) end)
    t:cancel("stop")
    baton.sleep(0)
    assert.are.equal(base, baton.core.handles())
    for _ = 1, 20 do assert.is_nil(p:wait(0.001)) end
    assert.is_nil(next(p._waiters))
    p:kill()
    p:wait()
  end)

  it("wait_any does not hide a later error of a task it watched", function()
    local r = baton.run { BATON, "-e", [[
      local t1 = baton.go(function() end)
      local t2 = baton.go(function() baton.sleep(0.05) error("late boom") end)
      baton.wait_any{t1, t2}
      baton.sleep(0.3)]], capture = true, check = false }
    assert.are.equal(1, r.code)
    assert.matches("late boom", r.stderr)
  end)

  it("a failed exec leaves baton working", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir " .. dir .. " && printf 'echo no shebang\n' > " .. dir .. "/s && chmod +x " .. dir .. "/s")
    local r = baton.run { BATON, "-e", "print(select(3, baton.exec{'" .. dir .. "/s'})) print(baton.output{'echo', 'still here'})",
      capture = true }
    assert.are.equal("ENOEXEC\nstill here\n", r.stdout)
    os.execute("rm -rf " .. dir)
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
end)

