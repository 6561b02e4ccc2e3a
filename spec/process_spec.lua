-- Processes (baton.process): spawn, signals, the fds a child gets, adopt, exec and which, against real programs.
local baton = require "baton"
local H = require "helper"

local BATON = os.getenv("BATON_EXE") or "./build/baton"

describe("baton.spawn", function()
  H.guard()

  it("gives a handle with pid, wait and status", function()
    local p = assert(baton.spawn { "sh", "-c", "exit 5" })
    assert.is_true(p.pid > 0)
    assert.matches("sh$", p.path)
    local st = p:wait()
    assert.are.equal(5, st.code)
    assert.is_false(st.ok)
    assert.are.equal("exit 5", tostring(st))
    assert.are.equal(st, p:wait()) -- a late wait returns at once
    assert.are.equal(st, p:poll())
  end)

  it("returns nil, msg, code for operational failures", function()
    local p, msg, code = baton.spawn { "baton-no-such-program" }
    assert.is_nil(p)
    assert.are.equal("ENOENT", code)
    assert.matches("^ENOENT: ", msg)

    p, msg, code = baton.spawn { "ls", cwd = "/nonexistent-dir" }
    assert.is_nil(p)
    assert.are.equal("ENOENT", code)
    assert.matches('cannot change to cwd "/nonexistent%-dir"', msg)
    assert.matches("path: /[%w/]*ls", msg)

    p, msg, code = baton.spawn { "/etc/passwd" }
    assert.is_nil(p)
    assert.are.equal("EACCES", code)
    assert.matches("exec /etc/passwd: permission denied", msg)

    p, msg, code = baton.spawn { "/tmp" }
    assert.is_nil(p)
    assert.are.equal("EACCES", code)
  end)

  it("says when a program is only in a relative PATH entry", function()
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

  it("raises on misuse, naming the argument or option", function()
    H.error_here(function() baton.spawn(42) end, "bad argument #1 to 'spawn' (table expected, got number)")
    H.error_here(function() baton.spawn {} end,
      "bad argument #1 to 'spawn' (no program: the command table needs argv strings at [1], [2], …)")
    H.error_here(function() baton.spawn { "ls", cwd = 1 } end,
      "bad argument #1 to 'spawn' (option 'cwd' must be a string, got number)")
    H.error_here(function() baton.spawn { "ls", colour = true } end,
      "bad argument #1 to 'spawn' (unknown option 'colour')")
    H.error_here(function() baton.spawn { "ls", {} } end,
      "bad argument #1 to 'spawn' (argv[2] must be a string, got table)")
    H.error_here(function() baton.spawn { "ls", stdout = "file.txt" } end,
      "bad argument #1 to 'spawn' (option 'stdout': unknown redirection \"file.txt\" " ..
      "(inherit, null, pipe, stderr, an fd, a file, {path=…}, a stream, a function))")
    H.error_here(function() baton.spawn { "ls", env = { [1] = "x" } } end,
      "bad argument #1 to 'spawn' (option 'env': invalid variable name \"1\")")
  end)

  it("gives the child exactly stdin, stdout and stderr", function()
    local f = io.open("/dev/null") -- an fd of ours, not for the child
    -- A shell that printed "ready" is done starting up; waiting in `read` (a
    -- builtin) it opens nothing, so the listing sees exactly what it got.
    local p = assert(baton.spawn { "sh", "-c", "echo ready; read x", stdin = "pipe", stdout = "pipe" })
    f:close()
    assert.are.equal("ready", p.stdout:read("l"))
    local fds = H.fds_of(p.pid)
    p.stdin:write("\n")
    p:wait()
    p:close()
    assert.are.same({ 0, 1, 2 }, fds)
  end)

  it("resets signal dispositions and mask in the child", function()
    -- grep reads its own status: no shell in between, whose own fork-time
    -- signal blocking would show instead.
    local r = baton.run { "grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status", capture = true }
    assert.matches("SigBlk:%s+0+\n", r.stdout)
    -- This process ignores SIGPIPE; the child must not.
    assert.matches("SigIgn:%s+0+\n", r.stdout)
  end)

  it("leaks no fd and leaves no zombie after many spawns", function()
    local before = H.fds()
    for _ = 1, 300 do
      local r = baton.run { "echo", "x", capture = true }
      assert.are.equal("x\n", r.stdout)
    end
    for _ = 1, 50 do
      local p = baton.spawn { "true", stdin = "pipe", stdout = "pipe", stderr = "pipe" }
      p:wait()
      p:close()
    end
    for _ = 1, 50 do assert.is_nil(baton.spawn { "baton-no-such-program" }) end
    for _ = 1, 50 do assert.is_nil(baton.spawn { "ls", cwd = "/nonexistent", stdout = "pipe" }) end
    baton.sleep(0)
    collectgarbage()
    assert.are.equal(before, H.fds())
    assert.are.same({}, H.children())
  end)
end)

describe("signals", function()
  H.guard()

  it("signals by name and number, and refuses after reap (pid reuse safety)", function()
    for _, sig in ipairs { "TERM", "SIGTERM", 15, "term" } do
      local p = assert(baton.spawn { "sleep", "30" })
      assert.is_nil(p:poll())
      assert.is_true(p:signal(sig))
      local st = p:wait()
      assert.are.equal(15, st.signal)
      local ok, msg, code = p:signal("KILL")
      assert.is_nil(ok)
      assert.are.equal("ESRCH", code)
      assert.matches("already exited", msg)
    end
    local p = assert(baton.spawn { "sleep", "30" })
    assert.is_true(p:kill())
    assert.are.equal("SIGKILL", p:wait().signame)
  end)

  it("raises on a bad signal name", function()
    local p = assert(baton.spawn { "sleep", "30" })
    H.error_here(function() p:signal("NOPE") end, "bad argument #1 to 'signal' (unknown signal \"NOPE\")")
    H.error_here(function() p:signal({}) end, "bad argument #1 to 'signal' (signal name or number expected, got table)")
    p:kill()
    p:wait()
  end)

  it("signal_group reaches grandchildren", function()
    local p = assert(baton.spawn { "sh", "-c", "sleep 30 & echo $!; wait", stdout = "pipe", pgroup = true })
    local grandchild = tonumber(p.stdout:read("l"))
    assert.is_true(H.alive(grandchild))
    assert.is_true(p:signal_group("TERM"))
    p:wait()
    assert.is_true(H.gone_within(grandchild), "the grandchild survived the group's TERM")
    p:close()
    local q = assert(baton.spawn { "true" })
    H.error_here(function() q:signal_group("TERM") end,
      "baton: process " .. q.pid .. " does not lead a process group (spawn it with pgroup = true)")
    q:wait()
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

  it("lets go of the pidfd of an adopted process nobody refers to or waits for", function()
    local pid = tonumber(baton.output { "sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!" })
    -- With 64 fds, 300 adoptions that kept their pidfds would run out (EMFILE).
    local r = baton.run { os.getenv("BATON_EXE"), "-e", ([[
      for i = 1, 300 do
        assert(baton.adopt(%d))
        if i %% 20 == 0 then collectgarbage() baton.sleep(0) end
      end
      print(baton.run { "true" })
    ]]):format(pid), rlimits = { nofile = 64 }, capture = true, check = false }
    local p = assert(baton.adopt(pid))
    p:kill()
    p:wait()
    assert.are.equal("", r.stderr)
    assert.are.equal("exit 0\n", r.stdout)
  end)

  it("adopting our own child gives its handle back", function()
    local p = baton.spawn { "sh", "-c", "sleep 0.1; exit 3" }
    local a = baton.adopt(p.pid)
    assert.are.equal(p, a)
    assert.are.equal(3, p:wait().code)
  end)

  it("closing an adopted process releases it without killing it", function()
    local r = baton.run { "sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!", capture = true }
    local pid = tonumber(r.stdout:match("%d+"))
    do
      local a <close> = assert(baton.adopt(pid))
    end
    assert.is_true(H.alive(pid))
    local a = assert(baton.adopt(pid))
    assert.is_true(a:signal("KILL"))
    assert.is_false(a:wait().known) -- not our child: exit seen, status not
  end)

  it("a task waiting for an adopted process is told when it is released", function()
    local pid = tonumber(baton.output { "sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!" })
    local a = assert(baton.adopt(pid))
    local t = baton.go(function() return pcall(a.wait, a) end)
    assert.is_false(t:is_done()) -- a task runs at once up to its first wait
    a:close()
    local ok, err = t:wait()
    assert.is_false(ok)
    assert.matches("was released", err)
    local b = assert(baton.adopt(pid))
    b:signal("KILL")
    b:wait()
  end)

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

  it("refuses pipes and sinks with a clear error", function()
    H.error_here(function() baton.exec { "true", stdout = function() end } end,
      "bad argument #1 to 'exec' (exec cannot use pipes, sinks or a stream read ahead: nothing would be left to serve them)")
    H.error_here(function() baton.exec { "true", fds = { [3] = "pipe" } } end,
      "bad argument #1 to 'exec' (exec cannot use pipes, sinks or a stream read ahead: nothing would be left to serve them)")
  end)

  it("with a redirection it cannot open runs nothing and says why", function()
    local ok, msg, code = baton.exec { "true", stdin = { path = "/nonexistent/in" } }
    assert.is_nil(ok)
    assert.are.equal("ENOENT", code)
    assert.matches("cannot open a redirection: /nonexistent/in", msg)
    local _, msg2, code2 = baton.exec { "true", stdout = { path = "/tmp" } }
    assert.are.equal("EISDIR", code2)
    assert.matches("cwd: ", msg2)
  end)

  it("that failed leaves baton working", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir " .. dir .. " && printf 'echo no shebang\n' > " .. dir .. "/s && chmod +x " .. dir .. "/s")
    local r = baton.run { BATON, "-e", "print(select(3, baton.exec{'" .. dir .. "/s'})) print(baton.output{'echo', 'still here'})",
      capture = true }
    assert.are.equal("ENOEXEC\nstill here\n", r.stdout)
    os.execute("rm -rf " .. dir)
  end)
end)

describe("finding programs", function()
  H.guard()

  it("which finds programs like the child will", function()
    assert.matches("/sh$", baton.which("sh"))
    local p, msg, code = baton.which("baton-no-such-program")
    assert.is_nil(p)
    assert.are.equal("ENOENT", code)
    assert.is_nil((baton.which("sh", ".:bin")))
  end)

  it("which checks a path it is given", function()
    local missing, _, code = baton.which("./baton-no-such-file")
    assert.is_nil(missing)
    assert.are.equal("ENOENT", code)
    assert.are.equal("EACCES", select(3, baton.which("/etc/passwd")))
    assert.are.equal("/bin/sh", baton.which("/bin/sh"))
  end)
end)
