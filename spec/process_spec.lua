-- Processes: spawn, run, wait, signals, pipes, errors and leaks, against real programs.
local baton = require "baton"
local H = require "helper"

-- CPU seconds this process has used (user + system), from /proc/self/stat.
local CLK_TCK = tonumber(baton.output { "getconf", "CLK_TCK" })
local function cpu_seconds()
  local f = assert(io.open("/proc/self/stat"))
  local stat = f:read("a")
  f:close()
  local fields = {}
  for w in stat:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = w end
  return (tonumber(fields[12]) + tonumber(fields[13])) / CLK_TCK -- utime, stime
end

describe("baton.run", function()
  H.guard()

  it("reads a fast stream whole, then stops polling once it goes quiet", function()
    -- Reads in quick succession make the loop poll instead of sleeping; that
    -- must end with the burst, or the quiet second below would burn a CPU.
    local size, n, at_end = 50 * 1000 * 1000, 0, nil
    baton.run { "sh", "-c", ("head -c %d /dev/zero; sleep 1"):format(size), stdout = function(c)
      if c then
        n = n + #c
        if n == size then at_end = cpu_seconds() end
      end
    end }
    assert.are.equal(size, n)
    local quiet = cpu_seconds() - at_end
    assert.is_true(quiet < 0.3, ("%.2f s of CPU while the child slept"):format(quiet))
  end)

  it("returns the exit code and ok", function()
    local r = baton.run { "true" }
    assert.is_true(r.ok)
    assert.are.equal(0, r.code)
    assert.is_nil(r.signal)
    r = baton.run { "sh", "-c", "exit 7", check = false }
    assert.is_false(r.ok)
    assert.are.equal(7, r.code)
  end)

  it("captures stdout and stderr separately", function()
    local r = baton.run { "sh", "-c", "echo out; echo err >&2; printf tail", capture = true }
    assert.are.equal("out\ntail", r.stdout)
    assert.are.equal("err\n", r.stderr)
    assert.is_true(r.duration >= 0)
    assert.are.equal("number", type(r.pid))
  end)

  it("merges stderr into stdout with stderr = 'stdout'", function()
    local r = baton.run { "sh", "-c", "echo a; echo b >&2; echo c", stdout = "pipe", stderr = "stdout" }
    assert.are.equal("a\nb\nc\n", r.stdout)
    assert.is_nil(r.stderr)
  end)

  it("feeds input to stdin", function()
    local r = baton.run { "tr", "a-z", "A-Z", input = "hello\n", capture = true }
    assert.are.equal("HELLO\n", r.stdout)
  end)

  it("moves a megabyte each way at once without deadlock", function()
    local big = string.rep("0123456789abcdef", 65536) -- 1 MiB, far above a pipe buffer
    local r = baton.run { "sh", "-c", "tee /dev/stderr", input = big, capture = true }
    assert.are.equal(#big, #r.stdout)
    assert.are.equal(big, r.stdout)
    assert.are.equal(big, r.stderr)
  end)

  it("raises a baton.Error on failure by default, with the stderr tail", function()
    local ok, err = pcall(baton.run, { "sh", "-c", "echo 'disk on fire' >&2; exit 3", capture = true })
    assert.is_false(ok)
    assert.are.equal(baton.Error, getmetatable(err))
    assert.are.equal("exit", err.kind)
    assert.are.equal(3, err.result.code)
    assert.matches("exited with code 3", tostring(err))
    assert.matches("disk on fire", tostring(err))
  end)

  it("reports a signal death", function()
    local r = baton.run { "sh", "-c", "kill -TERM $$", check = false }
    assert.is_false(r.ok)
    assert.is_nil(r.code)
    assert.are.equal(15, r.signal)
    assert.are.equal("SIGTERM", r.signame)
    local ok, err = pcall(baton.run, { "sh", "-c", "kill -KILL $$" })
    assert.is_false(ok)
    assert.matches("killed by SIGKILL", tostring(err))
  end)

  it("raises a spawn error naming program, PATH and cwd", function()
    local ok, err = pcall(baton.run, { "baton-no-such-program", "x" })
    assert.is_false(ok)
    assert.are.equal("spawn", err.kind)
    assert.are.equal("ENOENT", err.code)
    assert.matches('cannot run "baton%-no%-such%-program": not found in PATH', err.msg)
    assert.matches("cwd: /", err.msg)
  end)

  it("runs in cwd with extra and removed environment variables", function()
    local r = baton.run { "sh", "-c", 'pwd; echo "$BATON_X"; echo "${HOME-unset}"', cwd = "/tmp",
      env = { BATON_X = "42", HOME = false }, capture = true }
    assert.are.equal("/tmp\n42\nunset\n", r.stdout)
    r = baton.run { "/usr/bin/env", clearenv = true, env = { ONLY = "me" }, capture = true }
    assert.are.equal("ONLY=me\n", r.stdout)
  end)
end)

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

  it("reads lines, including a last line without newline and long lines", function()
    local long = string.rep("x", 100000) -- one argv word may not exceed 128 KiB
    local p = assert(baton.spawn { "sh", "-c", "echo one; echo; printf '%s\\n' \"$1\"; printf last", "sh", long,
      stdout = "pipe" })
    local lines = {}
    for l in p.stdout:lines() do lines[#lines + 1] = l end
    assert.are.equal(4, #lines)
    assert.are.equal("one", lines[1])
    assert.are.equal("", lines[2])
    assert.are.equal(long, lines[3])
    assert.are.equal("last", lines[4])
    assert.is_true(p:wait().ok)
    p.stdout:close()
  end)

  it("reads with io-style formats", function()
    local p = assert(baton.spawn { "printf", "ab\\ncdefgh", stdout = "pipe" })
    assert.are.equal("ab\n", p.stdout:read("L"))
    assert.are.equal("cde", p.stdout:read(3))
    assert.are.equal("fgh", p.stdout:read("a"))
    assert.are.equal("", p.stdout:read("a"))
    assert.is_nil(p.stdout:read("l"))
    assert.is_nil(p.stdout:read(1))
    assert.is_nil(p.stdout:read())
    H.error_here(function() p.stdout:read("x") end, "bad argument #1 to 'read' (invalid format \"x\")")
    p:wait()
    p:close()
  end)

  it("writes to stdin and reads the answer", function()
    local p = assert(baton.spawn { "cat", stdin = "pipe", stdout = "pipe" })
    assert.are.equal(p.stdin, p.stdin:write("hello ", "world", "\n"))
    assert.are.equal("hello world", p.stdout:read("l"))
    p.stdin:close()
    assert.is_nil(p.stdout:read("l"))
    assert.is_true(p:wait().ok)
    p:close()
  end)

  it("returns EPIPE when writing to a child that has gone", function()
    local p = assert(baton.spawn { "true", stdin = "pipe" })
    p:wait()
    local ok, msg, code = p.stdin:write(string.rep("x", 1 << 20))
    assert.is_nil(ok)
    assert.are.equal("EPIPE", code)
    assert.matches("^EPIPE", msg)
    p:close()
  end)

  it("sees EOF when the child is killed mid-read", function()
    local p = assert(baton.spawn { "sh", "-c", "echo start; exec sleep 30", stdout = "pipe" })
    assert.are.equal("start", p.stdout:read("l"))
    p:signal("KILL")
    assert.is_nil(p.stdout:read("l"))
    assert.are.equal(9, p:wait().signal)
    p:close()
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

  it("can be closed with <close>, killing and reaping", function()
    local pid
    do
      local p <close> = assert(baton.spawn { "sleep", "30", stdout = "pipe" })
      pid = p.pid
      assert.is_true(H.alive(pid))
    end
    assert.is_false(H.alive(pid))
  end)

  it("starts a new session or process group on request", function()
    local r = baton.run { "sh", "-c", "ps -o sid= -o pgid= -p $$", setsid = true, capture = true }
    local sid, pgid = r.stdout:match("(%d+)%s+(%d+)")
    assert.are.equal(tostring(r.pid), sid)
    assert.are.equal(tostring(r.pid), pgid)
    r = baton.run { "sh", "-c", "ps -o pgid= -p $$", pgroup = true, capture = true }
    assert.are.equal(tostring(r.pid), r.stdout:match("%d+"))
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

  it("which finds programs like the child will", function()
    assert.matches("/sh$", baton.which("sh"))
    local p, msg, code = baton.which("baton-no-such-program")
    assert.is_nil(p)
    assert.are.equal("ENOENT", code)
    assert.is_nil((baton.which("sh", ".:bin")))
  end)
end)

describe("process regressions from review", function()
  H.guard()

  it("a closed stream lets go of its reader and data while the child runs", function()
    local p = baton.spawn { "sh", "-c", "echo first; head -c 100000 /dev/zero; exec sleep 30", stdout = "pipe" }
    local weak = setmetatable({}, { __mode = "k" })
    assert.are.equal("first", p.stdout:read("l"))
    -- the rest arrives in the stream's queue
    H.wait_for(function() return p.stdout._n == 100000 end, "100000 bytes in the stream's queue")
    -- A task woken by a read runs inside that read's callback until its next
    -- wait, and the callback's frame holds the stream: wait once.
    baton.sleep(0)
    weak[p.stdout] = true
    p.stdout:close()
    p.stdout, p.fds[1] = nil, nil
    collectgarbage()
    collectgarbage()
    local kept = next(weak)
    p:kill()
    p:wait()
    assert.is_nil(kept)
  end)

  it("a sink that raises fails the run with its message", function()
    local ok, err = pcall(baton.run, { "sh", "-c", "echo hi", stdout = function(chunk)
      if chunk then error("sink bug") end
    end })
    assert.is_false(ok)
    assert.matches("its stdout sink raised: .*sink bug", tostring(err))
    local p = baton.spawn { "seq", "1", "200000", stdout = function(chunk) if chunk then error("x") end end }
    local st = p:wait()
    assert.is_false(st.ok)
    assert.matches("x$", tostring(st.sink_error))
  end)

  it("a stream read ahead can still be given to a child: nothing is lost", function()
    local a = baton.spawn { "printf", "header\\nline1\\nline2\\n", stdout = "pipe" }
    assert.are.equal("header", a.stdout:read("l"))
    local r = baton.run { "cat", stdin = a.stdout, capture = true }
    assert.are.equal("line1\nline2\n", r.stdout)
    assert.is_true(a:wait().ok)
  end)

  it("two tasks reading one stream both finish", function()
    local p = baton.spawn { "sh", "-c", "echo one; sleep 0.1; echo two", stdout = "pipe" }
    local got = {}
    local function reader()
      local line = p.stdout:read("l")
      got[#got + 1] = line or "eof"
    end
    local t1, t2 = baton.go(reader), baton.go(reader)
    t1:wait()
    t2:wait()
    table.sort(got)
    assert.are.same({ "one", "two" }, got)
    p:close()
  end)

  it("terminate reaches the group when the leader is gone but its children hold the pipe", function()
    local out = {}
    local p = baton.spawn { "sh", "-c", "sleep 30 & echo $!", pgroup = true,
      stdout = function(chunk) out[#out + 1] = chunk end }
    local sleeper = tonumber(H.wait_for(function() return table.concat(out):match("^(%d+)\n") end, "the pid line"))
    -- sh has exited and baton knows it; sleep still holds stdout.
    H.wait_for(function() return p._exit end, "sh to be reaped")
    assert.is_nil(p:poll())
    assert.is_true(H.alive(sleeper))
    local st = p:terminate(0.5)
    assert.is_true(st.ok) -- sh itself exited 0
    assert.is_true(H.gone_within(sleeper))
  end)

  it("a scope ends a process whose children still hold its pipe", function()
    local out, p = {}, nil
    baton.scope(function()
      p = baton.spawn { "sh", "-c", "sleep 30 & echo $!", pgroup = true,
        stdout = function(chunk) out[#out + 1] = chunk end }
      H.wait_for(function() return table.concat(out):match("^%d+\n") end, "the pid line")
      H.wait_for(function() return p._exit end, "sh to be reaped") -- only its child holds the pipe now
    end, { grace = 0.5 })
    assert.is_not_nil(p:poll())
    assert.is_true(H.gone_within(tonumber(table.concat(out):match("^(%d+)\n"))))
  end)

  it("timers count from when they start, however long Lua was busy before", function()
    baton.sleep(0) -- the loop's clock is read here
    local t = baton.now()
    while baton.now() - t < 0.3 do end -- busy: the loop's clock goes stale
    local t0 = baton.now()
    local r = baton.run { "sleep", "30", timeout = 0.4, check = false }
    assert.is_true(r.timed_out)
    assert.is_true(baton.now() - t0 >= 0.35)
  end)

  it("a stream read to its end lets go of its fd without close or collection", function()
    collectgarbage("stop")
    local before = H.fds()
    for _ = 1, 40 do
      local p = baton.spawn { "echo", "hi", stdout = "pipe" }
      assert.are.equal("hi\n", p.stdout:read("a"))
      p:wait()
    end
    local after = H.fds()
    collectgarbage("restart")
    collectgarbage()
    assert.is_true(after <= before + 2, ("fds: %d before, %d after"):format(before, after))
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

  it("exec with a redirection it cannot open runs nothing and says why", function()
    local ok, msg, code = baton.exec { "true", stdin = { path = "/nonexistent/in" } }
    assert.is_nil(ok)
    assert.are.equal("ENOENT", code)
    assert.matches("cannot open a redirection: /nonexistent/in", msg)
    local _, msg2, code2 = baton.exec { "true", stdout = { path = "/tmp" } }
    assert.are.equal("EISDIR", code2)
    assert.matches("cwd: ", msg2)
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

  it("output() refuses a stdout that goes elsewhere, before running", function()
    local path = os.tmpname()
    os.remove(path)
    H.error_here(function() baton.output { "sh", "-c", "echo x > " .. path, stdout = "null" } end,
      "bad argument #1 to 'output' (option 'stdout': output() returns stdout, so it cannot go elsewhere)")
    assert.is_nil(io.open(path))
  end)

  it("a timeout also bounds output held open by a child after the process exited", function()
    -- (The timeout leaves sh ample time to print and exit.)
    local r = baton.run { "sh", "-c", "sleep 30 & echo $!", timeout = 1, capture = true, check = false }
    assert.is_true(r.timed_out, ("%s, stdout %q"):format(tostring(r), r.stdout))
    assert.is_false(r.ok)
    assert.are.equal(0, r.code)
    assert.is_true(H.gone_within(tonumber(r.stdout:match("^(%d+)\n$"))))
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

  it("which checks a path it is given", function()
    local missing, _, code = baton.which("./baton-no-such-file")
    assert.is_nil(missing)
    assert.are.equal("ENOENT", code)
    assert.are.equal("EACCES", select(3, baton.which("/etc/passwd")))
    assert.are.equal("/bin/sh", baton.which("/bin/sh"))
  end)

  it("a scope cancels the tasks started in it, so they cannot spawn after it ended", function()
    local later
    baton.scope(function()
      later = baton.go(function()
        baton.sleep(0.05)
        baton.spawn { "sleep", "30" }
      end)
    end)
    assert.is_true(later.done)
    assert.is_true(later.cancelled)
    local ok, err = pcall(later.wait, later)
    assert.is_false(ok)
    assert.are.equal("scope ended", err)
    -- the guard checks that no sleep was started and left
  end)

  it("stdin from a path is read even when append is given", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("hello\n")
    f:close()
    assert.are.equal("hello", baton.output { "cat", stdin = { path = path, append = true } })
    os.remove(path)
  end)

  it("a stream read to its end can still be given to a child, which sees end of file", function()
    local p = baton.spawn { "printf", "a\\n", stdout = "pipe" }
    assert.are.equal("a", p.stdout:read("l"))
    assert.is_nil(p.stdout:read("l"))
    assert.are.equal("", baton.run { "cat", stdin = p.stdout, capture = true }.stdout)
    p:wait()
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

  it("a scope refuses a grace it could not wait, before anything runs", function()
    H.error_here(function() baton.scope(function() end, { grace = 2e9 }) end,
      "bad argument #2 to 'scope' (option 'grace' must be a number of seconds from 0 to 1e+09, got 2000000000.0)")
    H.error_here(function() baton.scope(function() end, { grace = 0 / 0 }) end,
      "bad argument #2 to 'scope' (option 'grace' must be a number of seconds from 0 to 1e+09, got " .. tostring(0 / 0) .. ")")
  end)

  it("a timeout reaches the commands feeding a process through baton.from", function()
    local r = baton.run { "cat", baton.from { "sh", "-c", "echo $$; exec sleep 30" }, timeout = 1,
      capture = true, check = false }
    assert.is_true(r.timed_out)
    assert.is_true(H.gone_within(tonumber(r.stdout:match("^(%d+)\n$"))))
  end)

  it("lines() is bounded by a timeout when a leftover child holds stdout", function()
    local got = {}
    local ok, err = pcall(function()
      for l in baton.lines { "sh", "-c", "sleep 30 & echo $!", timeout = 1 } do got[#got + 1] = l end
    end)
    assert.is_false(ok)
    assert.matches("timed out", tostring(err))
    assert.are.equal(1, #got)
    assert.is_true(H.gone_within(tonumber(got[1])))
  end)

  it("exec refuses pipes and sinks with a clear error", function()
    H.error_here(function() baton.exec { "true", stdout = function() end } end,
      "bad argument #1 to 'exec' (exec cannot use pipes, sinks or a stream read ahead: nothing would be left to serve them)")
    H.error_here(function() baton.exec { "true", fds = { [3] = "pipe" } } end,
      "bad argument #1 to 'exec' (exec cannot use pipes, sinks or a stream read ahead: nothing would be left to serve them)")
  end)

  it("a tee file is complete once the stream reached its end", function()
    local path = os.tmpname()
    local r = baton.pipeline { { "echo", "hello" }, { "cat" }, tee = path, stdout = "pipe" }:spawn()
    assert.are.equal("hello\n", r.stdout:read("a"))
    r:wait()
    assert.are.equal("hello\n", assert(io.open(path)):read("a"))
    os.remove(path)
  end)

  it("a scope closed by an error in a task still stops its processes", function()
    local p
    local t = baton.go(function()
      local s <close> = baton.scope { grace = 0.2 }
      p = baton.spawn { "sh", "-c", "trap '' TERM; echo ready; exec sleep 30", stdout = "pipe" }
      assert.are.equal("ready", p.stdout:read("l")) -- the trap is set
      error("boom", 0)
    end)
    local ok, err = pcall(t.wait, t)
    assert.is_false(ok)
    assert.are.equal("boom", err)
    local st = p:wait() -- TERM is ignored: KILL after the grace
    assert.are.equal(9, st.signal)
    p:close()
  end)
end)

