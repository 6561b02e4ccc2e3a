-- Listeners baton owns (core.listen, core.socket_info, core.unlink_socket)
-- and handing them to children by systemd's socket-activation protocol:
-- fds from 3, LISTEN_FDS, LISTEN_FDNAMES, and LISTEN_PID set in the child
-- (`listen_pid = true`). The peers are real servers written for that
-- protocol: spec/sd_listen_peer.c (libsystemd's sd_listen_fds_with_names,
-- built by CMake when libsystemd-dev is installed: BATON_SD_PEER) and a
-- python3 one taking fd 3 with socket.socket(fileno=3).
local baton = require "baton"
local H = require "helper"
local lfs = require "lfs"
local core = baton.core

local function has_ipv6()
  local f = io.open("/proc/net/if_inet6")
  local ok = f and f:read("a"):find("00000000000000000000000000000001 ", 1, true) ~= nil
  if f then f:close() end
  return ok
end

-- A fresh directory for unix sockets; removed by the caller (os.remove).
local function tmpdir()
  local name = os.tmpname()
  os.remove(name)
  assert(baton.run { "mkdir", "-m", "700", name }.ok)
  return name
end

-- Serves one connection on fd 3 if LISTEN_PID is its own pid and
-- LISTEN_FDS >= 1, as a socket-activated python server checks them.
local PY_PEER = [[
import os, socket, sys
ok = os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) >= 1
print("ok" if ok else "refused pid=%s env=%s" % (os.getpid(), os.environ.get("LISTEN_PID")), flush=True)
if not ok:
    sys.exit(1)
s = socket.socket(fileno=3)
c, _ = s.accept()
c.sendall(b"python %d\n" % os.getpid())
c.close()
]]

describe("core.listen", function()
  H.guard()

  it("listens on 127.0.0.1:0 and says which port it got", function()
    local fd, info = core.listen("tcp://127.0.0.1:0")
    assert.is_true(fd > 2)
    assert.are.equal("inet", info.family)
    assert.are.equal("stream", info.type)
    assert.is_true(info.listening)
    assert.are.equal("127.0.0.1", info.address)
    assert.is_true(info.port > 0 and info.port < 65536)
    assert.are.equal("tcp://127.0.0.1:" .. info.port, info.url)
    assert.are.same(info, core.socket_info(fd))
    -- A connection is queued by the kernel before anyone accepts.
    local s <close> = assert(baton.connect(info.url))
    core.close(fd)
  end)

  it("listens on [::1]:0", function()
    if not has_ipv6() then return pending("no IPv6 loopback here") end
    local fd, info = core.listen("tcp://[::1]:0", { v6only = true, backlog = 16 })
    assert.are.equal("inet6", info.family)
    assert.are.equal("::1", info.address)
    assert.are.equal("tcp://[::1]:" .. info.port, info.url)
    local s <close> = assert(baton.connect(info.url))
    core.close(fd)
  end)

  it("binds UDP without listening", function()
    local fd, info = core.listen("udp://127.0.0.1:0")
    assert.are.same({ family = "inet", type = "dgram", listening = false, address = "127.0.0.1",
      port = info.port, url = "udp://127.0.0.1:" .. info.port }, info)
    assert.are.same(info, core.socket_info(fd))
    core.close(fd)
  end)

  it("makes a unix socket with its mode, replaces a stale file, refuses a live one", function()
    local dir = tmpdir()
    local path = dir .. "/app.sock"
    local fd, info = core.listen("unix:" .. path, { mode = tonumber("640", 8),
      owner = tonumber(baton.output { "id", "-u" }), group = tonumber(baton.output { "id", "-g" }) })
    assert.is_truthy(fd, info)
    assert.are.same({ family = "unix", type = "stream", listening = true, path = path, url = "unix:" .. path },
      info)
    assert.are.equal("640", baton.output { "stat", "-c", "%a", path }:match("%d+"))
    -- Live: refused, naming the address.
    local nfd, msg, code = core.listen("unix:" .. path)
    assert.is_nil(nfd)
    assert.are.equal("EADDRINUSE", code)
    assert.are.equal("EADDRINUSE: address already in use (listen on unix:" .. path .. ")", msg)
    -- Closed, its file stays: stale now, and replaced by the next listen.
    core.close(fd)
    fd = assert(core.listen("unix:" .. path))
    core.close(fd)
    assert.is_true(core.unlink_socket(path))
    assert.are.same({ nil, "ENOENT: no such file or directory (" .. path .. ")", "ENOENT" },
      { core.unlink_socket(path) })
    -- Not a socket: left alone.
    local f = assert(io.open(path, "w"))
    f:close()
    nfd, msg, code = core.listen("unix:" .. path)
    assert.is_nil(nfd)
    assert.are.equal("EEXIST", code)
    assert.are.equal("ENOTSOCK", select(3, core.unlink_socket(path)))
    assert.is_true(os.remove(path))
    assert.is_true(os.remove(dir))
  end)

  it("says EADDRINUSE naming the address; reuseport lets two share a port", function()
    local a, info = core.listen("tcp://127.0.0.1:0")
    local fd, msg, code = core.listen(info.url)
    assert.is_nil(fd)
    assert.are.equal("EADDRINUSE", code)
    assert.are.equal("EADDRINUSE: address already in use (listen on " .. info.url .. ")", msg)
    core.close(a)
    local r1, i1 = core.listen("tcp://127.0.0.1:0", { reuseport = true })
    local r2 = assert(core.listen(i1.url, { reuseport = true }))
    core.close(r1)
    core.close(r2)
  end)

  it("fails with ENOENT for a missing unix directory", function()
    local fd, msg, code = core.listen("unix:/nonexistent-baton-dir/x.sock")
    assert.is_nil(fd)
    assert.are.equal("ENOENT", code)
    assert.are.equal("ENOENT: no such file or directory (listen on unix:/nonexistent-baton-dir/x.sock)", msg)
  end)

  it("raises for bad addresses and options, naming them", function()
    local bad = {
      ["tcp://127.0.0.1:65536"] = "port out of range (0 to 65535)",
      ["tcp://127.0.0.1:99999"] = "port out of range (0 to 65535)",
      ["tcp://localhost:80"] = "expected tcp://HOST:PORT, udp://HOST:PORT or unix:PATH, with a numeric host ([…] for IPv6)",
      ["tcp://127.0.0.1"] = "expected tcp://HOST:PORT, udp://HOST:PORT or unix:PATH, with a numeric host ([…] for IPv6)",
      ["tcp://::1:80"] = "expected tcp://HOST:PORT, udp://HOST:PORT or unix:PATH, with a numeric host ([…] for IPv6)",
      ["http://127.0.0.1:80"] = "unknown scheme (tcp://, udp:// or unix:)",
      ["unix:/" .. string.rep("a", 120)] = "unix path too long (107 bytes at most)",
      ["unix:/tmp/a\0b"] = "expected tcp://HOST:PORT, udp://HOST:PORT or unix:PATH, with a numeric host ([…] for IPv6)",
    }
    for addr, why in pairs(bad) do
      local ok, err = pcall(core.listen, addr)
      assert.is_false(ok)
      assert.are.equal(("baton: listen: bad address %q: %s"):format(addr:match("^[^%z]*"), why), err)
    end
    local function raises(addr, opts, msg)
      local ok, err = pcall(core.listen, addr, opts)
      assert.is_false(ok)
      assert.are.equal(msg, err)
    end
    raises("tcp://127.0.0.1:0", { backlog_size = 5 }, "baton: listen: unknown option 'backlog_size'")
    raises("tcp://127.0.0.1:0", { mode = 384 }, "baton: listen: option 'mode' is for unix sockets with a path")
    raises("udp://127.0.0.1:0", { backlog = 5 }, "baton: listen: option 'backlog' is for stream sockets (TCP, unix)")
    raises("udp://127.0.0.1:0", { defer_accept = 1 }, "baton: listen: option 'defer_accept' is for TCP")
    raises("tcp://127.0.0.1:0", { v6only = true }, "baton: listen: option 'v6only' is for IPv6 addresses")
    raises("tcp://127.0.0.1:0", { reuseport = "yes" }, "baton: listen: option 'reuseport' must be a boolean, got string")
    raises("tcp://127.0.0.1:0", { backlog = 0 }, "baton: listen: option 'backlog' must be from 1 to 65535, got 0")
    raises("unix:/tmp/x.sock", { owner = "no-such-user-baton" },
      "baton: listen: option 'owner': no such user \"no-such-user-baton\"")
  end)

  it("describes what is not a socket: ENOTSOCK, EBADF", function()
    local r, w = core.pipe()
    assert.are.equal("ENOTSOCK", select(3, core.socket_info(r)))
    core.close(r)
    core.close(w)
    assert.are.equal("EBADF", select(3, core.socket_info(r)))
  end)
end)

describe("handing listeners to children (systemd's protocol)", function()
  H.guard()

  it("listen_pid = true: the child's LISTEN_PID is its own pid", function()
    local p <close> = assert(baton.spawn { "sh", "-c", "echo $LISTEN_PID $$", listen_pid = true, stdout = "pipe",
      env = { LISTEN_PID = "stale" } })
    local a, b = p.stdout:read("l"):match("^(%d+) (%d+)$")
    assert.are.equal(tostring(p.pid), a)
    assert.are.equal(a, b)
    assert.is_true(p:wait().ok)
    -- Without it, nothing is added or changed.
    assert.are.equal("stale", baton.output { "sh", "-c", "echo $LISTEN_PID", env = { LISTEN_PID = "stale" } })
    -- Checked like any option.
    assert.has_error(function() baton.spawn { "true", listen_pid = "yes" } end)
  end)

  it("an sd_listen_fds server (libsystemd) serves on baton's sockets, generation after generation", function()
    local peer = os.getenv("BATON_SD_PEER")
    if not peer then return pending("libsystemd-dev not installed: no sd_listen_peer built") end
    local dir = tmpdir()
    local fd, info = core.listen("tcp://127.0.0.1:0")
    local ufd = assert(core.listen("unix:" .. dir .. "/admin.sock"))
    for _ = 1, 2 do
      -- Connected before the server starts: the kernel queues it on baton's socket.
      local s <close> = assert(baton.connect(info.url))
      local p <close> = assert(baton.spawn { peer, fds = { [3] = fd, [4] = ufd }, listen_pid = true,
        env = { LISTEN_FDS = "2", LISTEN_FDNAMES = "web:admin" }, stdout = "pipe" })
      assert.are.equal(("fds=2 names=web:admin pid=%d tcp=1 unix=1"):format(p.pid), p.stdout:read("l"))
      assert.are.equal("hello from " .. p.pid, s:read("l"))
      assert.is_true(p:wait().ok)
    end
    -- A LISTEN_PID that is not the child's own: sd_listen_fds refuses the fds.
    local p <close> = assert(baton.spawn { peer, fds = { [3] = fd, [4] = ufd }, stdout = "pipe",
      env = { LISTEN_FDS = "2", LISTEN_PID = tostring(core.getpid()) } })
    assert.are.equal(("fds=0 names= pid=%d tcp=0 unix=0"):format(p.pid), p.stdout:read("l"))
    assert.are.equal(1, p:wait().code)
    core.close(fd)
    core.close(ufd)
    assert.is_true(core.unlink_socket(dir .. "/admin.sock"))
    assert.is_true(os.remove(dir))
  end)

  it("a python server takes fd 3 with socket.socket(fileno=3)", function()
    local fd, info = core.listen("tcp://127.0.0.1:0")
    local s <close> = assert(baton.connect(info.url))
    local p <close> = assert(baton.spawn { "python3", "-c", PY_PEER, fds = { [3] = fd }, listen_pid = true,
      env = { LISTEN_FDS = "1", LISTEN_FDNAMES = "web" }, stdout = "pipe" })
    assert.are.equal("ok", p.stdout:read("l"))
    assert.are.equal("python " .. p.pid, s:read("l"))
    assert.is_true(p:wait().ok)
    core.close(fd)
  end)

  it("the fd is inherited at 3, and the child holds nothing else", function()
    local fd = core.listen("tcp://127.0.0.1:0")
    local p <close> = assert(baton.spawn { "sleep", "30", fds = { [3] = fd }, stdout = "null" })
    -- (spawn returns once the child's exec began: its close-on-exec fds, such
    -- as the pipe that reports exec failures, go a moment later)
    -- (and only that, once: sleep itself may open a locale file for a moment
    -- later; a leaked fd of baton's would be there all along)
    core.close(fd)
    H.wait_for(function() return table.concat(H.fds_of(p.pid), " ") == "0 1 2 3" end, "the child to hold fds 0-3")
  end)
end)

describe("a service's listeners", function()
  assert(baton.subreaper(true)) -- (supervisors make baton a subreaper: its handle is counted from the start)
  H.guard()

  it("a handoff function that raises fails the start, saying so; nothing is left open", function()
    local sv = baton.supervisor {
      s = { "sleep", "1000", ready = { fd = 5 }, listen = { a = "tcp://127.0.0.1:0" },
        handoff = function() error("no handoff today", 0) end },
    }
    local ok, msg = sv:start()
    assert.is_nil(ok)
    assert.matches("handoff: no handoff today", msg, 1, true)
    assert.are.equal("failed", sv:status().s.state)
    sv:close()
  end)

  -- A process that writes to `out` the handoff variables it got and which
  -- of its fds 3-5 are sockets (whether non-blocking), then sleeps.
  local REPORT = [=[{ env | grep -E '^(LISTEN_FDS|LISTEN_FDNAMES|NGINX|FPM_SOCKETS)=' | sort
    for n in 3 4 5; do
      if [ -S /dev/fd/$n ]; then echo "socket $n $(sed -n 's/^flags:[[:space:]]*//p' /proc/$$/fdinfo/$n)"; fi
    done; } > "$0.tmp" && mv "$0.tmp" "$0"; exec sleep 1000]=]

  -- The report of one process of a service with `handoff` and two listeners.
  local function handed(handoff)
    local out = H.tmpname()
    os.remove(out)
    local sv = baton.supervisor { s = { "sh", "-c", REPORT, out, ready = "exec",
      listen = { a = "tcp://127.0.0.1:0", b = "tcp://127.0.0.1:0" }, handoff = handoff } }
    local ok, report = pcall(function()
      assert.is_true(sv:start())
      H.wait_for(function() return lfs.attributes(out) ~= nil end, "the report")
      local f <close> = assert(io.open(out))
      return f:read("a")
    end)
    os.remove(out)
    sv:close()
    assert(ok, report)
    -- (the flags in octal: O_NONBLOCK is 04000; O_RDWR 02)
    return (report:gsub("socket (%d) (%d+)", function(n, flags)
      return "socket " .. n .. (tonumber(flags, 8) & 2048 ~= 0 and " non-blocking" or "")
    end))
  end

  it("handoff \"fd\": the sockets at 3, 4, no variable; \"nginx\" makes them non-blocking, as nginx expects", function()
    assert.are.equal("socket 3\nsocket 4\n", handed("fd"))
    assert.are.equal("LISTEN_FDNAMES=a:b\nLISTEN_FDS=2\nsocket 3\nsocket 4\n", handed("systemd"))
    assert.are.equal("NGINX=3;4;\nsocket 3 non-blocking\nsocket 4 non-blocking\n", handed("nginx"))
    assert.matches("^FPM_SOCKETS=127%.0%.0%.1:%d+=3,127%.0%.0%.1:%d+=4\nsocket 3\nsocket 4\n$", handed("fpm"))
    H.error_here(function() baton.supervisor { s = { "true", handoff = "inetd" } } end,
      "bad argument #1 to 'service' (service 's': handoff must be \"systemd\", \"nginx\", \"fpm\", \"fd\" or a function, got inetd)")
  end)

  it("the nginx and fpm presets name the listeners only, not what the fd store hands on after them", function()
    local HANDOFF = require("baton.service").HANDOFF
    local fd, info = assert(baton.core.listen("tcp://127.0.0.1:0"))
    local r, w = assert(baton.core.pipe())
    finally(function()
      for _, x in ipairs { fd, r, w } do baton.core.close(x) end
    end)
    local ls = { { name = "http", fd = fd, info = info }, { name = "state", fd = r, info = {}, stored = true } }
    local env = {}
    HANDOFF.fpm(ls, env)
    assert.are.equal("127.0.0.1:" .. info.port .. "=3", env.FPM_SOCKETS)
    HANDOFF.nginx(ls, env)
    assert.are.equal("3;", env.NGINX)
  end)

  it("refuses a readiness fd where the listeners and stored fds go", function()
    local decl = { "true", listen = { a = "tcp://127.0.0.1:0" }, fdstore = 1, ready = { fd = 4 } }
    H.error_here(function() baton.supervisor { s = decl } end, "bad argument #1 to 'service' (service 's': "
      .. "ready fd 4 is taken: fds 3 to 4 are its listeners and stored fds (use 5 or above))")
    local sv = baton.supervisor { s = { "true", listen = { a = "tcp://127.0.0.1:0" }, ready = { fd = 4 } } }
    sv:close()
  end)
end)

describe("a service's listener addresses", function()
  H.guard()

  it("an address given twice is two sockets (port 0: two ports), or refused when it would bind once", function()
    local sv = baton.supervisor {
      s = { "sleep", "1000", listen = { a = "tcp://127.0.0.1:0", b = "tcp://127.0.0.1:0" } },
    }
    local a, b = assert(sv:listener("s", "a")), assert(sv:listener("s", "b"))
    assert.are_not.equal(a.port, b.port)
    sv:close()
    H.error_here(function() baton.supervisor { s = { "true", listen = { x = "tcp://127.0.0.1:1", y = "tcp://127.0.0.1:1" } } } end,
      "bad argument #1 to 'service' (service 's': listen.x and listen.y: the same address \"tcp://127.0.0.1:1\" (a socket binds once))")
  end)
end)
