-- Every spawn option and redirection, observed from inside real children.
local baton = require "baton"
local H = require "helper"

local function out(spec)
  spec.capture = true
  return baton.run(spec).stdout
end

local function tmpfile(text)
  local name = os.tmpname()
  if text then
    local f = assert(io.open(name, "w"))
    f:write(text)
    f:close()
  end
  return name
end

local function slurp(name)
  local f = assert(io.open(name))
  local s = f:read("a")
  f:close()
  return s
end

describe("spawn options", function()
  H.guard()

  it("umask, nice and rlimits are what the child sees", function()
    assert.are.equal("0027\n", out { "sh", "-c", "umask", umask = tonumber("027", 8) })
    assert.are.equal("7\n", out { "nice", nice = 7 })
    assert.are.equal("100\n", out { "sh", "-c", "ulimit -n", rlimits = { nofile = 100 } })
    assert.are.equal("0\n1000\n", out { "sh", "-c", "ulimit -c; ulimit -H -n", rlimits = { core = 0, nofile = { 50, 1000 } } })
    H.error_here(function() baton.run { "true", rlimits = { bogus = 1 } } end,
      "bad argument #1 to 'run' (option 'rlimits': unknown limit \"bogus\")")
    H.error_here(function() baton.run { "true", umask = "027" } end,
      "bad argument #1 to 'run' (option 'umask' must be an integer from 0 to 0777 (511), got string)")
  end)

  it("a limit the child may not raise is a spawn error naming the step", function()
    if baton.output { "id", "-u" } == "0" then
      -- root may raise hard limits: use a bad one instead
      local p, msg, code = baton.spawn { "true", rlimits = { nofile = { 10, 5 } } }
      assert.is_nil(p)
      assert.are.equal("EINVAL", code)
      assert.matches("cannot apply limits", msg)
    else
      local p, msg, code = baton.spawn { "true", rlimits = { nofile = { 1 << 40, 1 << 40 } } }
      assert.is_nil(p)
      assert.are.equal("EPERM", code)
      assert.matches("cannot apply limits", msg)
    end
  end)

  it("argv0 is what the program sees as its name", function()
    assert.are.equal("renamed\n", out { "sh", "-c", "echo $0", argv0 = "renamed" })
    -- The program is still looked up by argv[1].
    assert.are.equal("fancy-name\n", out { "bash", "-c", "echo $0", argv0 = "fancy-name" })
  end)

  it("env merges, removes and clears; cwd is applied", function()
    local got = out { "sh", "-c", 'echo "$A|${HOME-none}|$(pwd)"', env = { A = 1, HOME = false }, cwd = "/usr" }
    assert.are.equal("1|none|/usr\n", got)
    assert.are.equal("B=2\n", out { "/usr/bin/env", clearenv = true, env = { B = "2" } })
    -- PATH is looked up in the child's environment.
    local p, msg = baton.spawn { "sh", clearenv = true, env = { PATH = "/nonexistent" } }
    assert.is_nil(p)
    assert.matches("PATH=/nonexistent", msg)
  end)

  it("extra fds land at the numbers asked for, and only those", function()
    local a, b = tmpfile("from fd 3\n"), tmpfile()
    local fa = assert(io.open(a))
    local fb = assert(io.open(b, "w"))
    -- The data goes where asked...
    assert.are.equal("from fd 3\n", out { "sh", "-c", "cat <&3; /bin/echo to fd 5 >&5", fds = { [3] = fa, [5] = fb } })
    assert.are.equal("to fd 5\n", slurp(b))
    -- ...and the child has exactly those fds.
    -- A shell that printed "ready" is done starting up; waiting in `read` (a
    -- builtin) it opens nothing, so the listing sees exactly what it got.
    local p = assert(baton.spawn { "sh", "-c", "echo ready; read x", fds = { [3] = fa, [5] = fb },
      stdin = "pipe", stdout = "pipe" })
    fa:close()
    fb:close()
    assert.are.equal("ready", p.stdout:read("l"))
    local fds = H.fds_of(p.pid)
    p.stdin:write("\n")
    p:wait()
    p:close()
    assert.are.same({ 0, 1, 2, 3, 5 }, fds)
    os.remove(a)
    os.remove(b)
    H.error_here(function() baton.run { "true", fds = { [2] = 1 } } end,
      "bad argument #1 to 'run' (option 'fds': keys must be fd numbers 3..63, got 2)")
    H.error_here(function() baton.run { "true", fds = { [64] = 1 } } end,
      "bad argument #1 to 'run' (option 'fds': keys must be fd numbers 3..63, got 64)")
  end)

  it("a pipe at an extra fd reads what the child writes there", function()
    local p = assert(baton.spawn { "sh", "-c", "echo status-line >&3; echo out", fds = { [3] = "pipe" }, stdout = "pipe" })
    assert.are.equal("status-line", p.fds[3]:read("l"))
    assert.are.equal("out", p.stdout:read("l"))
    p:wait()
    p:close()
  end)

  it("redirects to files by path: truncate, append, and stdin from a file", function()
    local name = tmpfile("old content\n")
    baton.run { "echo", "one", stdout = { path = name } }
    assert.are.equal("one\n", slurp(name))
    baton.run { "echo", "two", stdout = { path = name, append = true } }
    baton.run { "sh", "-c", "echo three >&2", stderr = { path = name, append = true } }
    assert.are.equal("one\ntwo\nthree\n", slurp(name))
    assert.are.equal("one\ntwo\nthree\n", out { "cat", stdin = { path = name } })
    os.remove(name)
    local p, msg, code = baton.spawn { "cat", stdin = { path = "/nonexistent/file" } }
    assert.is_nil(p)
    assert.are.equal("ENOENT", code)
    assert.matches("cannot open a redirection: /nonexistent/file", msg)
  end)

  it("sends output to a Lua function, chunk by chunk, then nil", function()
    local got, ends = {}, 0
    local r = baton.run { "sh", "-c", "echo a; echo b >&2; echo c",
      stdout = function(chunk) if chunk then got[#got + 1] = chunk else ends = ends + 1 end end,
      stderr = "stdout" }
    assert.is_true(r.ok)
    assert.are.equal("a\nb\nc\n", table.concat(got))
    assert.are.equal(1, ends)
  end)

  it("swaps stdout and stderr", function()
    local name1, name2 = tmpfile(), tmpfile()
    baton.run { "sh", "-c", string.format(
      "exec 1>%s 2>%s; %s -e 'baton.run{\"sh\",\"-c\",\"echo to-out; echo to-err >&2\", stdout=\"stderr\", stderr=\"stdout\"}'",
      name1, name2, os.getenv("BATON_EXE") or "./build/baton") }
    assert.are.equal("to-err\n", slurp(name1))
    assert.are.equal("to-out\n", slurp(name2))
    os.remove(name1)
    os.remove(name2)
  end)

  it("moves 10 MiB through stdin, stdout and stderr at once", function()
    local big = string.rep("abcdefghijklmnop", 10 * 65536) -- 10 MiB
    local r = baton.run { "sh", "-c", "tee /dev/stderr", input = big, capture = true }
    assert.are.equal(#big, #r.stdout)
    assert.are.equal(#big, #r.stderr)
    assert.is_true(r.stdout == big and r.stderr == big)
  end)

  it("sends the parent-death signal when baton's side dies", function()
    -- An intermediate baton spawns `sleep` with pdeathsig and exits at once.
    local r = baton.run { os.getenv("BATON_EXE") or "./build/baton", "-e",
      "local p = baton.spawn{'sleep', '30', pdeathsig = 'KILL'} print(p.pid) os.exit(0, false)", capture = true }
    local pid = tonumber(r.stdout)
    assert.is_not_nil(pid)
    assert.is_true(H.gone_within(pid), "sleep survived its parent")
  end)

  it("switches user and groups when root, refusing unknown names", function()
    H.error_here(function() baton.run { "true", user = "baton-no-such-user" } end,
      "bad argument #1 to 'run' (option 'user': no such user \"baton-no-such-user\")")
    if baton.output { "id", "-u" } ~= "0" then
      -- Not root: the child cannot switch, and says so.
      local p, msg, code = baton.spawn { "id", user = "nobody" }
      assert.is_nil(p)
      assert.are.equal("EPERM", code)
      assert.matches("cannot switch user or groups", msg)
    else
      assert.are.equal("65534 65534 65534\n", out { "sh", "-c", 'echo "$(id -u) $(id -g) $(id -G)"', user = "nobody", group = 65534 })
      local r = baton.run { "id", "-G", user = 65534, group = 65534, groups = {}, capture = true }
      assert.are.equal("65534\n", r.stdout)
      -- The switch comes before the chdir: a directory only root may enter is refused.
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -m 700 " .. dir))
      local p, msg, code = baton.spawn { "ls", user = "nobody", cwd = dir }
      os.remove(dir)
      assert.is_nil(p)
      assert.are.equal("EACCES", code)
      assert.matches('cannot change to cwd "' .. dir .. '": permission denied', msg, 1, true)
    end
  end)

  it("reports resource use", function()
    local r = baton.run { "sh", "-c", "head -c 20000000 /dev/zero | wc -c", capture = true }
    assert.is_true(r.rusage.maxrss > 0)
    assert.is_true(r.rusage.utime >= 0 and r.rusage.stime >= 0)
  end)
end)

describe("timeouts", function()
  H.guard()

  it("TERM the process group at the timeout, then KILL after the grace", function()
    local t0 = baton.now()
    -- The timeout leaves the shell ample time to set its trap (nothing can
    -- tell baton when it has); the grace is what is measured.
    local r = baton.run { "sh", "-c", "trap '' TERM; sleep 10", timeout = 1, grace = 0.2, check = false }
    assert.is_true(r.timed_out)
    assert.are.equal("SIGKILL", r.signame)
    assert.is_true(baton.now() - t0 < 5)
    local ok, err = pcall(baton.run, { "sleep", "10", timeout = 0.1 })
    assert.is_false(ok)
    assert.matches("timed out and was killed by SIGTERM", tostring(err))
  end)

  it("returns within the drain bound when a grandchild holds stdout open", function()
    local t0 = baton.now()
    -- setsid puts the grandchild out of reach of the group kill: only the
    -- drain bound can end the wait, long before the grandchild would.
    local r = baton.run { "sh", "-c", 'setsid sleep 30 & echo "started $!"; sleep 10', timeout = 1, wait_delay = 0.3,
      capture = true, check = false }
    local took = baton.now() - t0
    assert.is_true(r.timed_out)
    local pid = tonumber(r.stdout:match("^started (%d+)\n$"))
    assert.is_not_nil(pid, r.stdout)
    assert.is_true(took < 10, "took " .. took)
    -- The orphaned sleep leads its own group, and belongs to init now: kill
    -- it (and only it: other specs running at the same time sleep too).
    assert.is_true(baton.core.killpg(pid, 9))
    assert.is_true(H.gone_within(pid))
  end)

  it("wait(timeout) gives ETIMEDOUT and the process keeps running", function()
    local p = assert(baton.spawn { "sleep", "10" })
    local st, msg, code = p:wait(0.05)
    assert.is_nil(st)
    assert.are.equal("ETIMEDOUT", code)
    assert.matches("still running", msg)
    assert.is_nil(p:poll())
    local st2 = p:terminate(1)
    assert.are.equal("SIGTERM", st2.signame)
  end)

  it("terminate escalates to KILL after the grace", function()
    local p = assert(baton.spawn { "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done", stdout = "pipe", pgroup = true })
    assert.are.equal("ready", p.stdout:read("l"))
    local st = p:terminate(0.2)
    assert.are.equal("SIGKILL", st.signame)
    p:close()
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

describe("limits regressions from review", function()
  H.guard()

  it("a low nofile limit still lets the child start", function()
    assert.are.equal("4\n", out { "sh", "-c", "ulimit -n", rlimits = { nofile = 4 } })
    local keep = {}
    for i = 1, 60 do keep[i] = io.open("/dev/null") end -- a parent holding many fds
    assert.are.equal("16\n", out { "sh", "-c", "ulimit -n", rlimits = { nofile = 16 } })
    for _, f in ipairs(keep) do f:close() end
  end)
end)
