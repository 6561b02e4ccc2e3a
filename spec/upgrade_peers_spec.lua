-- Hot upgrades of real servers whose protocol side baton did not write, under
-- wrk load (keep-alive and "Connection: close"): a C server on libsystemd's
-- sd-daemon API (examples/upgradable_server/server.c) and Debian's packages —
-- gunicorn (LISTEN_FDS), nginx (the NGINX variable, drained with QUIT),
-- HAProxy (`bind fd@3` in its configuration, the `fd` handoff, drained with
-- USR1), lighttpd (systemd's socket activation, drained with INT) and
-- php-fpm (FPM_SOCKETS, drained with QUIT, behind a steady nginx). The C
-- server, gunicorn, HAProxy and php-fpm lose nothing; nginx and lighttpd
-- lose nothing without keep-alive, and with it each closes its idle
-- keep-alive connections when it drains, racing the client's next request:
-- their figures are measured and reported. Each generation is checked to
-- take baton's socket (the same inode at its fd 3, no second listener on
-- the port; the server's own log where it says so), every pid of every
-- generation to be gone at the end. A naive stop-then-start under the same
-- load shows errors: the test can fail. fd hygiene: baton ends with the
-- fds it started with, and each generation of the C server holds exactly
-- stdio and its listener.
--
-- BATON_PEER_UPGRADES (default 10) upgrades per peer and mode; the issue's
-- full 50 run in bench/upgrade.lua. Figures go to stderr ("peers: …").
local baton = require "baton"
local H = require "helper"
local P = require "upgrade_peers"

assert(baton.subreaper(true)) -- (supervisors make baton a subreaper: its handle is counted from the start)

local N = tonumber(os.getenv("BATON_PEER_UPGRADES")) or 10
local C_SERVER = os.getenv("BATON_SD_HTTP")
local CONNS = 8
local FD_N = tonumber(os.getenv("BATON_FD_UPGRADES")) or 200 -- (the issue's fd-hygiene count)

local function report(peer, mode, r)
  io.stderr:write(("peers: %-8s %-10s %2d upgrades: %7d requests in %5.2fs (%8.0f/s); errors: connect %d, read %d, "
    .. "write %d, timeout %d, non-2xx %d\n"):format(peer, mode, N, r.requests or 0, r.elapsed, r.rate or 0, r.connect,
    r.read, r.write, r.timeout, r.non2xx))
end

local function url_of(sv)
  local info = assert(sv:listener("web", "http"))
  return info.url:gsub("^tcp", "http") .. "/", info.port
end

-- wrk against `url` (on `port`) while `step(i)` runs `n` times; returns
-- wrk's report. The load is on before the first step (wrk's connections are
-- established) and still on after the last (wrk still runs).
local function under_load(url, port, close, n, step)
  local w <close> = P.wrk(url, { connections = CONNS, close = close })
  H.wait_for(function() return P.established(port) > 0 or not w.running() end, "wrk's first connection")
  assert.is_true(w.running(), "wrk ended early")
  for i = 1, n do step(i) end
  assert.is_true(w.running(), "wrk ended early")
  local r = w.stop()
  assert.is_true(r.requests and r.requests > 0, "no request counted by wrk:\n" .. r.text)
  return r
end

-- What a server that closes its idle keep-alive connections when it drains
-- (nginx, lighttpd) must still get right: no connection refused, none
-- timed out, no non-2xx answer. (Its read errors with keep-alive, the close
-- racing the next request on the connection, are reported.)
local function nothing_refused(r)
  assert.are.equal(0, r.connect, r.text)
  assert.are.equal(0, r.timeout, r.text)
  assert.are.equal(0, r.non2xx, r.text)
end

-- Nothing lost: no error of any kind in wrk's report `r`.
local function lossless(r)
  assert.are.same({ connect = 0, read = 0, write = 0, timeout = 0, non2xx = 0 },
    { connect = r.connect, read = r.read, write = r.write, timeout = r.timeout, non2xx = r.non2xx }, r.text)
end

-- `step` N times under wrk against `url` (on `port`) with keep-alive, then
-- with "Connection: close"; each report printed as `peer`'s and checked by
-- `check(r)`. Returns the reports, by `close`.
local function both_modes(peer, url, port, step, check)
  local got = {}
  for _, close in ipairs { false, true } do
    local r = under_load(url, port, close, N, step)
    report(peer, close and "close" or "keep-alive", r)
    check(r)
    got[close] = r
  end
  return got
end

-- Every pid of a generation's tree, to check they are all gone at the end.
local function tree(pid, into)
  into[#into + 1] = pid
  for _, c in ipairs(P.children(pid)) do tree(c, into) end
  return into
end

-- Upgrade service web to generation `gen` of `decl(gen)`; must be promoted.
-- (Each waits until the old generation drained: one at a time.)
local function upgrade(sv, decl, gen, opts, seen)
  local o = { wait = true }
  for k, v in pairs(opts or {}) do o[k] = v end
  local r = sv:upgrade("web", decl(gen), o)
  assert.are.equal("promoted", r.outcome, r.reason)
  assert.are.equal(gen, r.generation)
  if seen then tree(sv:status().web.replicas[1].pid, seen) end
  return r
end

-- baton's fd count once the old generations finished draining (in the
-- background: their pidfds until then) and the loop turned (close
-- callbacks of handles just closed run in the next turn, as in libuv).
local function fds_now(sv)
  if sv then
    H.wait_for(function() return #(sv.services.web.draining or {}) == 0 end, "the old generations to drain")
  end
  baton.sleep(0)
  return (H.fds())
end

local function all_gone(pids)
  for _, pid in ipairs(pids) do assert.is_true(H.gone_within(pid), "process " .. pid .. " left running") end
end

describe("hot upgrades of real peers under wrk", function()
  H.guard()

  local function needs(what, ok)
    if not ok then pending(what .. " is not installed here") end
    return ok
  end

  it("the C server on libsystemd (sd_listen_fds_with_names, sd_notify): 0 errors, keep-alive and close", function()
    if not needs("the C server (libsystemd-dev at build time)", C_SERVER) or not needs("wrk", P.have("wrk")) then
      return
    end
    local decl = function(gen) return P.c_server(C_SERVER, gen) end
    local sv = baton.supervisor { web = decl(1) }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    local url, port = url_of(sv)
    local fds, before = H.fds(), P.fd_targets()
    local gen, seen = 1, tree(sv:status().web.replicas[1].pid, {})
    both_modes("c-sd", url, port, function()
      gen = gen + 1
      upgrade(sv, decl, gen, nil, seen)
    end, lossless)
    assert.are.equal(gen .. "\n", select(2, baton.http_get(url)))
    assert.are.equal(fds, fds_now(sv), "before: " .. before .. "\nnow: " .. P.fd_targets()) -- nothing left by the generations
    sv:close()
    all_gone(seen)
  end)

  it("200 generations of the C server: each holds exactly stdio and its listener; baton's fds stay as they were", function()
    if not needs("the C server (libsystemd-dev at build time)", C_SERVER) then return end
    local decl = function(gen) return P.c_server(C_SERVER, gen) end
    local sv = baton.supervisor { web = decl(1) }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    local url = url_of(sv)
    local fds = H.fds()
    for gen = 2, FD_N + 1 do
      upgrade(sv, decl, gen)
      local pid = sv:status().web.replicas[1].pid
      -- (once it answered, it is past sd_notify, whose socket it closes just after READY=1 went out)
      assert.are.equal(gen .. "\n", select(2, baton.http_get(url)))
      -- (once the server's side of that connection is closed too)
      local same = function() return table.concat(P.fds_of(pid), " ") == "0 1 2 3" end
      H.wait_for(same, "generation " .. gen .. " to hold exactly fds 0 1 2 3")
    end
    assert.are.equal(fds, fds_now(sv))
    sv:close()
  end)

  it("Debian's gunicorn (LISTEN_FDS, LISTEN_PID; drains on TERM): 0 errors, keep-alive and close", function()
    if not needs("gunicorn", P.have("gunicorn")) or not needs("wrk", P.have("wrk")) then return end
    local sv = baton.supervisor { web = P.gunicorn(1) }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    local url, port = url_of(sv)
    assert.are.equal("1\n", select(2, baton.http_get(url)))
    local fds, before = H.fds(), P.fd_targets()
    local gen, seen = 1, tree(sv:status().web.replicas[1].pid, {})
    both_modes("gunicorn", url, port, function()
      gen = gen + 1
      upgrade(sv, P.gunicorn, gen, nil, seen)
    end, lossless)
    assert.are.equal(gen .. "\n", select(2, baton.http_get(url)))
    assert.are.equal(fds, fds_now(sv), "before: " .. before .. "\nnow: " .. P.fd_targets())
    sv:close()
    all_gone(seen) -- masters and workers of every generation
  end)

  it("Debian's nginx through the NGINX handoff, drained with QUIT: no connect error; its figures reported", function()
    local nginx = P.nginx_bin()
    if not needs("nginx", nginx) or not needs("wrk", P.have("wrk")) then return end
    local dir = baton.output { "mktemp", "-d", "/tmp/baton-nginx.XXXXXX" }:gsub("%s+$", "")
    local decl = function(gen) return P.nginx(dir, gen) end
    local sv = baton.supervisor { web = decl(1) }
    finally(function() -- (busted keeps one finally per test)
      sv:close()
      baton.run { "rm", "-rf", dir }
    end)
    local url, port = url_of(sv) -- (bound before nginx starts: its configuration names the port)
    P.nginx_conf(dir, port)
    assert.is_true(sv:start())
    assert.are.equal("ok\n", select(2, baton.http_get(url)))
    local fds, before = H.fds(), P.fd_targets()
    local gen, seen = 1, tree(sv:status().web.replicas[1].pid, {})
    -- (read errors with keep-alive: QUIT closes idle keep-alive
    -- connections, racing a request the client sends on one: reported)
    local got = both_modes("nginx", url, port, function()
      gen = gen + 1
      upgrade(sv, decl, gen, { drain_signal = "QUIT" }, seen)
    end, nothing_refused)
    assert.are.equal(0, got[true].read + got[true].write, got[true].text) -- (no keep-alive: nothing idle to close)
    -- Every generation took the inherited socket (nginx logs it), none bound its own.
    local log = P.slurp(dir .. "/error.log")
    local _, inherited = log:gsub('using inherited sockets from "3;"', "")
    assert.are.equal(gen, inherited, log)
    assert.are.equal(fds, fds_now(sv), "before: " .. before .. "\nnow: " .. P.fd_targets())
    sv:close()
    all_gone(seen)
  end)

  -- A scratch directory for a server's configuration and logs (the test removes it).
  local function scratch(name)
    return baton.output { "mktemp", "-d", "/tmp/baton-" .. name .. ".XXXXXX" }:gsub("%s+$", "")
  end

  -- The inode of the one socket listening on `port`: baton's (it holds it).
  local function listener_inode(port)
    local inos = P.listening(port)
    assert.are.equal(1, #inos, "listeners on port " .. port .. ": " .. table.concat(inos, " "))
    assert.is_true(P.holds("self", inos[1]), "baton does not hold the listener")
    return inos[1]
  end

  -- The new generation's main process took baton's socket (`ino`) at fd 3
  -- and no server bound another on `port`; `polled`: it polls it.
  local function took(sv, port, ino, polled)
    local pid = sv:status().web.replicas[1].pid
    assert.are.equal(ino, P.socket_inode(pid, 3), "fd 3 of " .. pid .. " is not baton's listener")
    if polled then assert.is_true(P.polls(pid, ino), pid .. " does not poll its fd 3") end
    assert.are.same({ ino }, P.listening(port))
  end

  it("Debian's HAProxy (bind fd@3, handoff \"fd\"), drained with USR1: 0 errors, keep-alive and close", function()
    local haproxy = P.sbin("haproxy")
    if not needs("haproxy", haproxy) or not needs("wrk", P.have("wrk")) then return end
    local dir = scratch("haproxy")
    P.haproxy_conf(dir)
    local decl = function(gen) return P.haproxy(dir, gen) end
    local sv = baton.supervisor { web = decl(1) }
    finally(function()
      sv:close()
      baton.run { "rm", "-rf", dir }
    end)
    assert.is_true(sv:start())
    local url, port = url_of(sv)
    local ino = listener_inode(port)
    assert.matches("^1 %d+\n$", select(2, baton.http_get(url)))
    local fds, before = H.fds(), P.fd_targets()
    local gen, seen = 1, tree(sv:status().web.replicas[1].pid, {})
    took(sv, port, ino, true)
    both_modes("haproxy", url, port, function()
      gen = gen + 1
      upgrade(sv, decl, gen, { drain_signal = "USR1" }, seen)
      took(sv, port, ino, true)
    end, lossless)
    -- (the old generations are gone once drained: only the newest answers)
    assert.are.equal(("%d %d\n"):format(gen, sv:status().web.replicas[1].pid), select(2, baton.http_get(url)))
    assert.are.equal(fds, fds_now(sv), "before: " .. before .. "\nnow: " .. P.fd_targets())
    sv:close()
    all_gone(seen)
  end)

  it("Debian's lighttpd (systemd socket activation), drained with INT: 0 errors without keep-alive; figures reported",
    function()
      local lighttpd = P.sbin("lighttpd")
      if not needs("lighttpd", lighttpd) or not needs("wrk", P.have("wrk")) then return end
      local dir = scratch("lighttpd")
      local decl = function(gen) return P.lighttpd(dir, gen) end
      local sv = baton.supervisor { web = decl(1) }
      finally(function()
        sv:close()
        baton.run { "rm", "-rf", dir }
      end)
      local url, port = url_of(sv) -- (bound before lighttpd starts: its configuration names the port)
      P.lighttpd_conf(dir, port)
      assert.is_true(sv:start())
      local ino = listener_inode(port)
      assert.are.equal("ok\n", select(2, baton.http_get(url)))
      local fds, before = H.fds(), P.fd_targets()
      local gen, seen = 1, tree(sv:status().web.replicas[1].pid, {})
      took(sv, port, ino, true)
      -- (read errors with keep-alive: at a graceful shutdown lighttpd closes
      -- every keep-alive connection whose next request it has not read yet
      -- — it has no setting to answer one more — racing the request the
      -- client sends on it, as nginx does: reported)
      local got = both_modes("lighttpd", url, port, function()
        gen = gen + 1
        upgrade(sv, decl, gen, { drain_signal = "INT" }, seen)
        took(sv, port, ino, true)
      end, nothing_refused)
      assert.are.equal(0, got[true].read + got[true].write, got[true].text) -- (no keep-alive: nothing idle to close)
      assert.are.equal(fds, fds_now(sv), "before: " .. before .. "\nnow: " .. P.fd_targets())
      sv:close()
      all_gone(seen)
    end)

  it("Debian's php-fpm (FPM_SOCKETS) behind a steady nginx, drained with QUIT: 0 errors, keep-alive and close",
    function()
      local fpm, nginx = P.fpm_bin(), P.nginx_bin()
      if not needs("php-fpm", fpm) or not needs("nginx", nginx) or not needs("wrk", P.have("wrk")) then return end
      local dir = scratch("fpm")
      local decl = function(gen) return P.fpm(dir, gen) end
      -- nginx in front, never upgraded: wrk speaks HTTP to it, it FastCGI to php-fpm.
      local sv = baton.supervisor { web = decl(1), front = P.nginx(dir, 1) }
      finally(function()
        sv:close()
        baton.run { "rm", "-rf", dir }
      end)
      local fpm_port = select(2, url_of(sv))
      local front = assert(sv:listener("front", "http"))
      local url, port = front.url:gsub("^tcp", "http") .. "/", front.port
      P.fpm_conf(dir, fpm_port)
      P.nginx_conf(dir, port, P.fastcgi_location(dir, fpm_port))
      assert.is_true(sv:start())
      local ino = listener_inode(fpm_port)
      assert.are.equal("1\n", select(2, baton.http_get(url)))
      local fds, before = H.fds(), P.fd_targets()
      local gen, seen = 1, tree(sv:status().web.replicas[1].pid, tree(sv:status().front.replicas[1].pid, {}))
      took(sv, fpm_port, ino)
      both_modes("php-fpm", url, port, function()
        gen = gen + 1
        upgrade(sv, decl, gen, { drain_signal = "QUIT" }, seen)
        took(sv, fpm_port, ino)
      end, lossless)
      assert.are.equal(gen .. "\n", select(2, baton.http_get(url)))
      -- Every generation took the inherited socket (php-fpm logs it), none bound its own.
      local log = P.slurp(dir .. "/php-fpm.log")
      local _, inherited = log:gsub(('using inherited socket fd=3, "127.0.0.1:%d"'):format(fpm_port), "")
      assert.are.equal(gen, inherited, log)
      assert.are.equal(fds, fds_now(sv), "before: " .. before .. "\nnow: " .. P.fd_targets())
      sv:close()
      all_gone(seen)
    end)

  it("examples/upgradable_server as its notify-reload unit runs it: USR2 → RELOADING=1 … READY=1, generation 2", function()
    if not needs("the C server (libsystemd-dev at build time)", C_SERVER) then return end
    -- (a stand-in for systemd: the unit's NOTIFY_SOCKET, its ReloadSignal=SIGUSR2 and its stop's TERM)
    local msgs = {}
    local npath = ("@baton-spec/%d/unit"):format(baton.core.getpid())
    local l = assert(baton.core.notify_listen(npath, function(_, text) msgs[#msgs + 1] = text end))
    local b = assert(baton.spawn { os.getenv("BATON_EXE") or "./build/baton", "examples/upgradable_server/run.lua",
      C_SERVER, "0", env = { NOTIFY_SOCKET = npath }, stdout = "pipe" })
    finally(function()
      if not b:poll() then -- (a failed assertion: baton stops its servers on TERM)
        b:signal("TERM")
        b:wait(20)
      end
      b:close()
      l:close()
    end)
    local first = b.stdout:read("l")
    local url, pid = first:match("serving on (tcp://[%d.:]+) %(baton pid (%d+)%)")
    assert.is_truthy(url, first)
    url = url:gsub("^tcp", "http") .. "/"
    local function said(pattern)
      for _, m in ipairs(msgs) do if m:find(pattern) then return true end end
    end
    H.wait_for(function() return said("^READY=1") end, "READY=1 from baton")
    assert.are.equal("1\n", select(2, baton.http_get(url)))
    baton.core.kill(tonumber(pid), baton.signals.USR2)
    assert.are.equal("generation 2: promoted", b.stdout:read("l"))
    -- (READY=1 at start, RELOADING=1 with MONOTONIC_USEC at USR2, READY=1 once promoted)
    H.wait_for(function() return H.manager_states(msgs) == "READY RELOADING READY" end,
      "RELOADING=1 … READY=1 for the upgrade")
    -- (generation 1, told to drain at the promotion, may take one more
    -- connection before its TERM is handled: then only generation 2 answers)
    H.wait_for(function() return select(2, baton.http_get(url)) == "2\n" end, "generation 2 to answer")
    b:signal("TERM")
    local st = b:wait()
    assert.are.equal(143, st.code or (128 + (st.signal or 0)), tostring(st))
    H.wait_for(function() return said("STOPPING=1") end, "STOPPING=1")
  end)

  it("a naive stop-then-start (the C server binding its port itself) fails requests under the same load", function()
    if not needs("the C server (libsystemd-dev at build time)", C_SERVER) or not needs("wrk", P.have("wrk")) then
      return
    end
    -- A port the kernel picks, free again for the server to bind.
    local fd, info = baton.core.listen("tcp://127.0.0.1:0")
    baton.core.close(fd)
    local addr = "127.0.0.1:" .. info.port
    local sv = baton.supervisor { web = { C_SERVER, addr, env = { GEN = "1" }, ready = { notify = true, timeout = 20 },
      stop = { timeout = 10 } } }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    local r = under_load("http://" .. addr .. "/", info.port, false, N, function()
      assert.is_true(sv:restart("web"))
    end)
    report("naive", "keep-alive", r)
    assert.is_true(r.errors > 0, "a stop-then-start lost nothing?\n" .. r.text)
    sv:close()
  end)
end)
