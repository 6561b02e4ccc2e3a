-- Spawn options (baton.options): every option and redirection, observed from inside real children.
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

  it("a low nofile limit still lets the child start", function()
    assert.are.equal("4\n", out { "sh", "-c", "ulimit -n", rlimits = { nofile = 4 } })
    local keep = {}
    for i = 1, 60 do keep[i] = io.open("/dev/null") end -- a parent holding many fds
    assert.are.equal("16\n", out { "sh", "-c", "ulimit -n", rlimits = { nofile = 16 } })
    for _, f in ipairs(keep) do f:close() end
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

  it("runs in cwd with extra and removed environment variables", function()
    local r = baton.run { "sh", "-c", 'pwd; echo "$BATON_X"; echo "${HOME-unset}"', cwd = "/tmp",
      env = { BATON_X = "42", HOME = false }, capture = true }
    assert.are.equal("/tmp\n42\nunset\n", r.stdout)
    r = baton.run { "/usr/bin/env", clearenv = true, env = { ONLY = "me" }, capture = true }
    assert.are.equal("ONLY=me\n", r.stdout)
  end)

  it("starts a new session or process group on request", function()
    local r = baton.run { "sh", "-c", "ps -o sid= -o pgid= -p $$", setsid = true, capture = true }
    local sid, pgid = r.stdout:match("(%d+)%s+(%d+)")
    assert.are.equal(tostring(r.pid), sid)
    assert.are.equal(tostring(r.pid), pgid)
    r = baton.run { "sh", "-c", "ps -o pgid= -p $$", pgroup = true, capture = true }
    assert.are.equal(tostring(r.pid), r.stdout:match("%d+"))
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

  it("a path for an extra fd is opened for reading unless a mode says otherwise", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("kept\n")
    f:close()
    assert.are.equal("kept", baton.output { "sh", "-c", "cat <&3", fds = { [3] = { path = path } } })
    baton.run { "sh", "-c", "echo more >&3", fds = { [3] = { path = path, mode = "a" } } }
    assert.are.equal("kept\nmore", baton.output { "cat", path })
    os.remove(path)
  end)

  it("redirects to files, fds and null", function()
    local name = os.tmpname()
    local f = assert(io.open(name, "w"))
    baton.run { "echo", "to a file", stdout = f }
    baton.run { "echo", "nothing", stdout = "null" }
    f:close()
    local g = assert(io.open(name))
    assert.are.equal("to a file\n", g:read("a"))
    g:close()
    local fin = assert(io.open(name))
    local r = baton.run { "cat", stdin = fin, capture = true }
    fin:close()
    assert.are.equal("to a file\n", r.stdout)
    os.remove(name)
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

  it("stdin from a path is read even when append is given", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("hello\n")
    f:close()
    assert.are.equal("hello", baton.output { "cat", stdin = { path = path, append = true } })
    os.remove(path)
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

  it("refuses out-of-range numbers before anything runs", function()
    local seconds, id = "must be a number of seconds from 0 to 1e+09, got ", "must be a name or an id from 0 to 4294967294, got "
    for _, case in ipairs {
      { { "true", timeout = math.huge }, "'timeout' " .. seconds .. "inf" },
      { { "true", grace = 1e300 }, "'grace' " .. seconds .. "1e+300" },
      { { "true", wait_delay = -1 }, "'wait_delay' " .. seconds .. "-1" },
      { { "id", user = 1 << 32 }, "'user' " .. id .. "4294967296" },
      { { "id", user = -1 }, "'user' " .. id .. "-1" },
      { { "id", group = -1 }, "'group' " .. id .. "-1" },
      { { "id", groups = { 1 << 32 } }, "'groups': entry 1 must be a group name or an id from 0 to 4294967294, got 4294967296" },
      { { "true", umask = -1 }, "'umask' must be an integer from 0 to 0777 (511), got -1" },
      { { "true", umask = 1 << 40 }, "'umask' must be an integer from 0 to 0777 (511), got 1099511627776" },
      { { "true", nice = 1 << 33 }, "'nice' must be an integer from -20 to 19, got 8589934592" },
      { { "true", cwd = "/tmp\0x" }, "'cwd' contains a NUL byte" },
      { { "true", env = { X = "a\0b" } }, "'env': value of X contains a NUL byte" },
    } do
      H.error_here(function() baton.run(case[1]) end, "bad argument #1 to 'run' (option " .. case[2] .. ")")
    end
    H.error_here(function() baton.sleep(math.huge) end,
      "bad argument #1 to 'sleep' (a number of seconds from 0 to 1e9 expected, got inf)")
    local p = baton.spawn { "true" }
    H.error_here(function() p:wait(math.huge) end,
      "bad argument #1 to 'wait' (timeout must be a number of seconds from 0 to 1e+09, got inf)")
    p:wait()
  end)
end)
