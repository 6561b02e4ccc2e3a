-- Readiness notifications (baton.core.notify_listen, sd_notify, proc_stat), against Debian's real systemd-notify.
local baton = require "baton"
local lfs = require "lfs"
local H = require "helper"
local core = baton.core

-- A fresh directory for sockets; removed by rmdir (the listener removes its socket).
local function tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(lfs.mkdir(dir))
  return dir
end

-- A listener at `path` that records each message: pid, text, the fds it
-- came with, and the sender's /proc stat taken while the sender waits.
local function recorder(path, keep)
  local msgs = {}
  local l = assert(core.notify_listen(path, function(pid, text, fds)
    msgs[#msgs + 1] = { pid = pid, text = text, fds = fds, stat = pid and core.proc_stat(pid) }
    return keep
  end))
  return l, msgs
end

-- Whether a process of ours may state another pid in its credentials
-- (CAP_SYS_ADMIN, bit 21 of the effective set): systemd-notify then does.
local function may_fake_pid()
  local f = assert(io.open("/proc/self/status"))
  local caps = f:read("a"):match("\nCapEff:%s*(%x+)")
  f:close()
  return (tonumber(caps, 16) >> 21) & 1 == 1
end
local ROOT = may_fake_pid()

describe("core.notify_listen", function()
  H.guard()

  it("gets systemd-notify's READY=1 and STATUS=, attributed to the service by its process group", function()
    local dir = tmpdir()
    local path = dir .. "/notify"
    local l, msgs = recorder(path)
    assert.are.equal(path, l.path)
    -- Not the shell's last command, so that the shell stays its parent.
    local p = assert(baton.spawn { "sh", "-c", "systemd-notify --ready --status=hi; echo exited $?",
      env = { NOTIFY_SOCKET = path }, pgroup = true, stdout = "pipe" })
    -- Exit status 0: its BARRIER=1 came back, because the fd it sent was
    -- closed at once (a held one makes it fail after 5 s, status 1).
    assert.are.equal("exited 0\n", p.stdout:read("a"))
    assert.is_true(p:wait().ok)
    assert.are.equal(2, #msgs)
    assert.are.equal("READY=1\nSTATUS=hi", msgs[1].text)
    assert.are.same({}, msgs[1].fds)
    assert.are.equal("BARRIER=1", msgs[2].text)
    assert.are.equal(1, #msgs[2].fds)
    assert.is_nil(lfs.attributes("/proc/self/fd/" .. msgs[2].fds[1])) -- closed already
    -- v252 states its parent's pid in the credentials of READY=1 when it may
    -- (as root); otherwise the kernel puts its own. BARRIER=1 always comes
    -- with its own. Either way each sender is in the service's group.
    local notify_pid = msgs[2].pid
    assert.are_not.equal(p.pid, notify_pid)
    assert.are.equal(p.pid, msgs[2].stat.ppid)
    assert.are.equal(ROOT and p.pid or notify_pid, msgs[1].pid)
    for _, m in ipairs(msgs) do
      assert.are.equal(p.pid, m.stat.pgid)
    end
    l:close()
    l:close() -- again: nothing
    assert.is_nil(lfs.attributes(path)) -- the socket file is gone
    assert(lfs.rmdir(dir))
  end)

  it("shows why an exact pid cannot attribute: run by baton itself, systemd-notify names baton", function()
    local dir = tmpdir()
    local path = dir .. "/notify"
    local l, msgs = recorder(path)
    local p = assert(baton.spawn { "systemd-notify", "--ready", env = { NOTIFY_SOCKET = path }, pgroup = true })
    assert.is_true(p:wait().ok)
    assert.are.equal("READY=1", msgs[1].text)
    if ROOT then
      assert.are.equal(core.getpid(), msgs[1].pid) -- the parent: not in the service's group
      assert.are_not.equal(p.pid, msgs[1].stat.pgid)
    else
      assert.are.equal(p.pid, msgs[1].pid)
    end
    assert.are.equal(p.pid, msgs[2].pid) -- BARRIER=1, from itself
    assert.are.equal(p.pid, msgs[2].stat.pgid)
    l:close()
    assert(lfs.rmdir(dir))
  end)

  it("leaves fds to fn when it returns true: systemd-notify waits until they are closed", function()
    local dir = tmpdir()
    local path = dir .. "/notify"
    local l, msgs = recorder(path, true)
    local p = assert(baton.spawn { "sh", "-c", "systemd-notify --ready; echo exited $?",
      env = { NOTIFY_SOCKET = path }, stdout = "pipe" })
    H.wait_for(function() return msgs[2] end, "BARRIER=1")
    local fd = msgs[2].fds[1]
    assert.is_truthy(lfs.attributes("/proc/self/fd/" .. fd))
    assert.is_nil(p:poll()) -- blocked on the barrier
    core.close(fd)
    assert.are.equal("exited 0\n", p.stdout:read("a"))
    assert.is_true(p:wait().ok)
    l:close()
    assert(lfs.rmdir(dir))
  end)

  it("closes fds after an error in fn, reports the error and keeps listening", function()
    local dir = tmpdir()
    local path = dir .. "/notify"
    local got, n, reported = {}, 0, {}
    core.set_error_handler(function(msg) reported[#reported + 1] = msg end)
    local l = assert(core.notify_listen(path, function(_, text, fds)
      n = n + 1
      got[n] = fds[1] or false
      if text == "FAIL=1" then error("boom") end
    end))
    local rfd, wfd = core.pipe()
    assert.is_true(core.sd_notify("FAIL=1", path, { wfd }))
    assert.is_true(core.sd_notify("NEXT=1", path))
    core.close(wfd)
    H.wait_for(function() return n == 2 end, "the message after the error")
    assert.are.equal(false, got[2])
    core.set_error_handler(nil)
    assert.are.equal(1, #reported)
    assert.matches("boom", reported[1])
    assert.is_nil(lfs.attributes("/proc/self/fd/" .. got[1]))
    core.close(rfd)
    l:close()
    assert(lfs.rmdir(dir))
  end)

  it("listens on an abstract name ('@'), and is closed with its Lua state", function()
    local name = "@baton-spec-notify-" .. core.getpid()
    local l, msgs = recorder(name)
    assert.is_true(core.sd_notify("READY=1", name))
    H.wait_for(function() return msgs[1] end, "a message")
    assert.are.equal(core.getpid(), msgs[1].pid)
    assert.matches("^baton%.core%.notify %(", tostring(l))
    l:close()
    assert.are.equal("baton.core.notify (closed)", tostring(l))
    assert.are.equal(name, l.path)

    -- A lua5.4 that leaves its listener open: closing the state at exit removes the file.
    local dir = tmpdir()
    local path = dir .. "/notify"
    local r = baton.run { "lua5.4", "-e", ("local c = require('baton').core; " ..
      "local l = assert(c.notify_listen(%q, print)); print(require('lfs').attributes(%q, 'mode'))"):format(path, path),
      env = H.lua_env(), capture = true }
    assert.are.equal("socket\n", r.stdout)
    assert.is_nil(lfs.attributes(path))
    assert(lfs.rmdir(dir))
  end)

  it("keeps the loop alive unless unref'd", function()
    local dir = tmpdir()
    local alive = core.alive()
    local l = recorder(dir .. "/notify")
    assert.is_true(core.alive())
    l:ref(false)
    assert.are.equal(alive, core.alive())
    l:ref(true)
    assert.is_true(core.alive())
    l:close()
    l:ref(false) -- closed: nothing
    assert(lfs.rmdir(dir))
  end)

  it("returns nil, msg, code for operational failures and raises on misuse", function()
    local dir = tmpdir()
    local l, msg, code = core.notify_listen(dir .. "/missing/notify", print)
    assert.is_nil(l)
    assert.are.equal("ENOENT", code)
    assert.are.equal("ENOENT: no such file or directory (" .. dir .. "/missing/notify)", msg)
    local f = io.open(dir .. "/file", "w")
    f:close()
    l, msg, code = core.notify_listen(dir .. "/file", print)
    assert.is_nil(l)
    assert.are.equal("EADDRINUSE", code)
    assert.is_truthy(lfs.attributes(dir .. "/file")) -- left alone
    os.remove(dir .. "/file")
    code = select(3, core.notify_listen(("/x"):rep(100), print))
    assert.are.equal("ENAMETOOLONG", code)
    H.error_here(function() core.notify_listen(dir .. "/n", 42) end,
      "bad argument #2 to 'notify_listen' (function expected, got number)")
    H.error_here(function() core.notify_listen(nil, print) end,
      "bad argument #1 to 'notify_listen' (string expected, got nil)")
    assert.is_nil(lfs.attributes(dir .. "/n"))
    assert(lfs.rmdir(dir))
  end)
end)

describe("core.sd_notify", function()
  H.guard()

  it("does nothing without NOTIFY_SOCKET, and says why it could not send", function()
    if os.getenv("NOTIFY_SOCKET") == nil then
      assert.is_false(core.sd_notify("READY=1"))
    end
    local dir = tmpdir()
    local ok, msg, code = core.sd_notify("READY=1", dir .. "/none")
    assert.is_nil(ok)
    assert.are.equal("ENOENT", code)
    assert.are.equal("ENOENT: no such file or directory (" .. dir .. "/none)", msg)
    H.error_here(function() core.sd_notify("X=1", dir, { "x" }) end,
      "bad argument #3 to 'sd_notify' (fds[1] must be an fd)")
    H.error_here(function() core.sd_notify() end,
      "bad argument #1 to 'sd_notify' (string expected, got no value)")
    assert(lfs.rmdir(dir))
  end)
end)

describe("core.proc_stat", function()
  H.guard()

  it("reads a process's parent, group, session, state and start", function()
    local me = assert(core.proc_stat(core.getpid()))
    assert.are.equal(core.getpid(), me.pid)
    assert.are.equal("R", me.state)
    assert.is_true(me.start > 0)
    -- A child in a group of its own, whose name (its program's file name)
    -- holds spaces and parentheses.
    local dir = tmpdir()
    local prog = dir .. "/a) b (c"
    assert(baton.run { "cp", "/bin/sleep", prog }.ok)
    local p = assert(baton.spawn { prog, "1000", pgroup = true })
    local st = assert(core.proc_stat(p.pid))
    assert.are.equal("a) b (c", st.comm)
    assert.are.equal(p.pid, st.pid)
    assert.are.equal(core.getpid(), st.ppid)
    assert.are.equal(p.pid, st.pgid)
    assert.are.equal(me.sid, st.sid)
    assert.is_true(st.start >= me.start)
    p:kill()
    p:wait()
    local none, msg, code = core.proc_stat(p.pid)
    assert.is_nil(none)
    assert.are.equal("ESRCH", code)
    assert.are.equal("ESRCH: no such process (pid " .. p.pid .. ")", msg)
    code = select(3, core.proc_stat(0))
    assert.are.equal("EINVAL", code)
    os.remove(prog)
    assert(lfs.rmdir(dir))
    H.error_here(function() core.proc_stat("x") end,
      "bad argument #1 to 'proc_stat' (number expected, got string)")
  end)
end)
