-- upgrade_peers.lua — what spec/upgrade_peers_spec.lua and bench/upgrade.lua
-- share: the declarations of the real servers a hot upgrade replaces (the C
-- server on libsystemd's sd-daemon API; Debian's gunicorn, nginx, HAProxy,
-- lighttpd and php-fpm) and their configurations, readiness predicates that
-- look at the new generation's own processes (the old one answers on the
-- same socket: a probe through it proves nothing), sockets from /proc, and
-- `wrk` as the load, its report parsed. No busted here: the benchmark loads
-- it too (`dofile`), and sets P.ROOT, the repository's root.
local baton = require "baton"

local P = { ROOT = "." }

-- ---- processes, from /proc ----------------------------------------------------------

-- The children of `pid` (every thread's list), as numbers.
function P.children(pid)
  local out = {}
  local ok, tids = pcall(function()
    local list = {}
    for tid in require("lfs").dir("/proc/" .. pid .. "/task") do
      if tid:match("^%d+$") then list[#list + 1] = tid end
    end
    return list
  end)
  for _, tid in ipairs(ok and tids or {}) do
    local f = io.open("/proc/" .. pid .. "/task/" .. tid .. "/children")
    if f then
      for c in f:read("a"):gmatch("%d+") do out[#out + 1] = tonumber(c) end
      f:close()
    end
  end
  return out
end

local function slurp(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
P.slurp = slurp

-- How many children of `pid` satisfy `is(child)`.
local function count_children(pid, is)
  local n = 0
  for _, c in ipairs(P.children(pid)) do if is(c) then n = n + 1 end end
  return n
end

-- The fd numbers of process `pid`, sorted (nil if it is gone).
function P.fds_of(pid)
  local lfs = require "lfs"
  local out = {}
  local ok = pcall(function()
    for name in lfs.dir("/proc/" .. pid .. "/fd") do
      if name:match("^%d+$") then out[#out + 1] = tonumber(name) end
    end
  end)
  if not ok then return nil end
  table.sort(out)
  return out
end

-- What this process's fds are ("3=anon_inode:[pidfd] 4=…"), for messages.
function P.fd_targets()
  local lfs = require "lfs"
  local out = {}
  for name in lfs.dir("/proc/self/fd") do
    if name:match("^%d+$") then
      out[#out + 1] = name .. "=" .. tostring(lfs.symlinkattributes("/proc/self/fd/" .. name, "target"))
    end
  end
  table.sort(out)
  return table.concat(out, " ")
end

-- ---- sockets, from /proc ---------------------------------------------------------------------

-- The inode of the socket at fd `fd` of process `pid` ("self" for this
-- one), or nil.
function P.socket_inode(pid, fd)
  local target = require("lfs").symlinkattributes(("/proc/%s/fd/%d"):format(pid, fd), "target")
  return target and tonumber(target:match("^socket:%[(%d+)%]$"))
end

-- Whether process `pid` has the socket of inode `ino` open at some fd.
function P.holds(pid, ino)
  for _, fd in ipairs(P.fds_of(pid) or {}) do
    if P.socket_inode(pid, fd) == ino then return true end
  end
  return false
end

-- The inodes of the listening TCP sockets on local port `port`
-- (/proc/net/tcp), sorted: one, baton's, when no server bound its own.
-- The kernel lists listening sockets first: the reading stops at the first
-- other line (under load, tens of thousands in TIME_WAIT follow).
function P.listening(port)
  local out = {}
  local f = io.open("/proc/net/tcp")
  if not f then return out end
  local hex = ("%04X"):format(port)
  f:read("l") -- (the header)
  for line in f:lines() do
    local lport, st, ino = line:match("^%s*%d+: %x+:(%x+) %x+:%x+ (%x+) %x+:%x+ %x+:%x+ %x+%s+%d+%s+%d+%s+(%d+)")
    if st ~= "0A" then break end
    if lport == hex then out[#out + 1] = tonumber(ino) end
  end
  f:close()
  table.sort(out)
  return out
end

-- Whether process `pid` polls the socket of inode `ino`: one of its epoll
-- sets lists it (the "tfd: … ino:<hex>" lines of the epoll fd's fdinfo).
function P.polls(pid, ino)
  for _, fd in ipairs(P.fds_of(pid) or {}) do
    local target = require("lfs").symlinkattributes(("/proc/%d/fd/%d"):format(pid, fd), "target")
    if target == "anon_inode:[eventpoll]" then
      for hex in (slurp(("/proc/%d/fdinfo/%d"):format(pid, fd)) or ""):gmatch("tfd:%s*%d+%s+events:[^\n]-ino:(%x+)") do
        if tonumber(hex, 16) == ino then return true end
      end
    end
  end
  return false
end

--- Ready once the process polls the listener it was given at fd 3: past
-- its configuration and start-up, in its event loop, accepting. (The old
-- generation answers on the same socket, so a probe through it could not
-- tell the new one is ready.)
function P.polls_listener(inst)
  local ino = P.socket_inode(inst.pid, 3)
  return ino ~= nil and P.polls(inst.pid, ino)
end

-- ---- the peers ----------------------------------------------------------------------------

P.WORKERS = 2

--- The C server (examples/upgradable_server/server.c, built by CMake as BATON_SD_HTTP):
-- listeners from LISTEN_FDS through sd_listen_fds_with_names, READY=1
-- through sd_notify, drains on TERM. `extra` overrides keys.
function P.c_server(exe, gen, extra)
  local d = { exe, env = { GEN = tostring(gen) }, listen = { http = "tcp://127.0.0.1:0" },
    ready = { notify = true, timeout = 20 }, stop = { timeout = 10 } }
  for k, v in pairs(extra or {}) do d[k] = v end
  return d
end

--- Debian's gunicorn serving spec/gunicorn_app.py with P.WORKERS sync
-- workers, its listener from LISTEN_FDS (gunicorn checks LISTEN_PID against
-- its own pid). Ready: every worker renamed itself "gunicorn-ready" (its
-- post_worker_init hook: app loaded, about to accept) — gunicorn 20.1's
-- own READY=1 comes before any worker exists.
function P.gunicorn_ready(inst)
  return count_children(inst.pid, function(c)
    return (slurp("/proc/" .. c .. "/comm") or "") == "gunicorn-ready\n"
  end) >= P.WORKERS
end

function P.gunicorn(gen)
  return { "gunicorn", "-c", P.ROOT .. "/spec/gunicorn_app.py", "--pythonpath", P.ROOT .. "/spec",
    "--workers", tostring(P.WORKERS), "gunicorn_app:app",
    env = { GEN = tostring(gen) }, listen = { http = "tcp://127.0.0.1:0" },
    ready = { check = P.gunicorn_ready, timeout = 30, interval = 0.02 }, stop = { timeout = 15 } }
end

--- Debian's nginx, started fresh with the `nginx` handoff (NGINX="3;",
-- the variable of its own binary upgrade: "using inherited sockets from
-- "3;"" in its error log), master and P.WORKERS workers in the foreground,
-- configured in `dir` (P.nginx_conf). Ready: every worker process has set
-- its title "nginx: worker process", which it does after its
-- initialisation (listening sockets in its event loop). It drains on QUIT.
function P.nginx_ready(inst)
  return count_children(inst.pid, function(c)
    return (slurp("/proc/" .. c .. "/cmdline") or ""):find("^nginx: worker process") ~= nil
  end) >= P.WORKERS
end

function P.nginx(dir, gen)
  return { P.nginx_bin(), "-p", dir, "-c", dir .. "/nginx.conf", "-e", dir .. "/error.log",
    "-g", ("pid %s/nginx-%d.pid;"):format(dir, gen),
    env = { GEN = tostring(gen) }, listen = { http = "tcp://127.0.0.1:0" }, handoff = "nginx",
    ready = { check = P.nginx_ready, timeout = 30, interval = 0.02 }, stop = { timeout = 15 } }
end

-- nginx is in /usr/sbin, which a user's PATH may lack.
function P.nginx_bin()
  if baton.which("nginx") then return baton.which("nginx") end
  local f = io.open("/usr/sbin/nginx")
  if f then f:close() end
  return f and "/usr/sbin/nginx" or nil
end

-- The configuration for a listener bound at `port` (the body is the
-- generation, from the env: nginx passes no env to its config, so the
-- body is fixed; generations are told apart by pid). `location`, the
-- body of `location /`, replaces that answer.
function P.nginx_conf(dir, port, location)
  local f = assert(io.open(dir .. "/nginx.conf", "w"))
  f:write(([[
daemon off;
master_process on;
worker_processes %d;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %s/body;
  proxy_temp_path %s/proxy;
  fastcgi_temp_path %s/fastcgi;
  uwsgi_temp_path %s/uwsgi;
  scgi_temp_path %s/scgi;
  server {
    listen 127.0.0.1:%d;
    location / { %s }
  }
}
]]):format(P.WORKERS, dir, dir, dir, dir, dir, port, location or 'return 200 "ok\\n";'))
  f:close()
end

-- A program in PATH or /usr/sbin (which a user's PATH may lack) whose name
-- matches `pattern` (php-fpm is "php-fpm8.2" in Debian 12), or nil.
function P.sbin(name, pattern)
  if baton.which(name) then return baton.which(name) end
  local ok, found = pcall(function()
    for f in require("lfs").dir("/usr/sbin") do
      if f == name or (pattern and f:match(pattern)) then return "/usr/sbin/" .. f end
    end
  end)
  return ok and found or nil
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

--- Debian's HAProxy, told its listener in its configuration (`bind fd@3`)
-- and handed it with the `fd` handoff (no variable), one process (no
-- master-worker mode) in the foreground (-db), configured in `dir`
-- (P.haproxy_conf). Ready: it polls fd 3 (P.polls_listener). It drains
-- on USR1 (soft stop).
function P.haproxy(dir, gen)
  return { P.sbin("haproxy"), "-f", dir .. "/haproxy.cfg", "-db", "-q", env = { GEN = tostring(gen) },
    listen = { http = "tcp://127.0.0.1:0" }, handoff = "fd",
    ready = { check = P.polls_listener, timeout = 30, interval = 0.02 }, stop = { timeout = 15 } }
end

-- HAProxy answers itself, no backend: the generation (its environment)
-- and its pid. `option idle-close-on-response`: at a soft stop an idle
-- keep-alive connection is not closed at once (which races the client's
-- next request on it) but kept for one more request, answered with
-- "Connection: close"; hard-stop-after bounds the wait.
function P.haproxy_conf(dir)
  write(dir .. "/haproxy.cfg", [[
global
  nbthread 2
  hard-stop-after 10s
defaults
  mode http
  timeout client 10s
  timeout connect 5s
  timeout server 10s
  option idle-close-on-response
frontend web
  bind fd@3
  http-request return status 200 content-type text/plain lf-string "%[env(GEN)] %pid\n"
]])
end

--- Debian's lighttpd, with systemd's socket activation
-- (server.systemd-socket-activation; the `systemd` handoff), one process in
-- the foreground (-D), configured in `dir` (P.lighttpd_conf). Ready: it
-- polls fd 3. It drains on INT (graceful shutdown).
function P.lighttpd(dir, gen)
  return { P.sbin("lighttpd"), "-D", "-f", dir .. "/lighttpd.conf", env = { GEN = tostring(gen) },
    listen = { http = "tcp://127.0.0.1:0" },
    ready = { check = P.polls_listener, timeout = 30, interval = 0.02 }, stop = { timeout = 15 } }
end

-- lighttpd matches an inherited socket to the address it is configured
-- with: the port bound before it starts. It serves `dir`/index.html ("ok").
function P.lighttpd_conf(dir, port)
  write(dir .. "/index.html", "ok\n")
  write(dir .. "/lighttpd.conf", ([[
server.document-root = "%s"
server.bind = "127.0.0.1"
server.port = %d
server.systemd-socket-activation = "enable"
server.errorlog = "%s/error.log"
server.feature-flags = ( "server.graceful-shutdown-timeout" => 10 )
index-file.names = ( "index.html" )
]]):format(dir, port, dir))
end

--- Debian's php-fpm, its listener from FPM_SOCKETS (the `fpm` handoff: the
-- variable of its own re-exec, "127.0.0.1:PORT=3", which must name the
-- pool's `listen` address as php-fpm prints it), master and P.WORKERS
-- children in the foreground (-F), no php.ini (-n), allowed to run as root
-- (-R), configured in `dir` (P.fpm_conf). Ready: READY=1 (Debian builds
-- it with systemd's notify), sent once its children are forked. It drains
-- on QUIT (children finish their request; process_control_timeout bounds
-- it).
function P.fpm(dir, gen)
  return { P.fpm_bin(), "-F", "-n", "-R", "-y", dir .. "/php-fpm.conf", env = { GEN = tostring(gen) },
    listen = { http = "tcp://127.0.0.1:0" }, handoff = "fpm", ready = { notify = true, timeout = 30 },
    stop = { timeout = 15 } }
end

function P.fpm_bin()
  return P.sbin("php-fpm", "^php%-fpm[%d.]+$")
end

-- The pool listens where baton bound (`port`); its script answers the
-- generation (`clear_env = no`: the master's environment).
function P.fpm_conf(dir, port)
  write(dir .. "/gen.php", '<?php echo getenv("GEN"), "\\n";\n')
  write(dir .. "/php-fpm.conf", ([[
[global]
error_log = %s/php-fpm.log
daemonize = no
process_control_timeout = 10s
[web]
listen = 127.0.0.1:%d
pm = static
pm.max_children = %d
clear_env = no
]]):format(dir, port, P.WORKERS))
end

-- nginx's `location /` that passes every request to php-fpm at `port`
-- (one connection per request: nginx's default).
function P.fastcgi_location(dir, port)
  return ("fastcgi_pass 127.0.0.1:%d; fastcgi_param SCRIPT_FILENAME %s/gen.php; "
    .. "fastcgi_param REQUEST_METHOD $request_method; fastcgi_param QUERY_STRING $query_string;"):format(port, dir)
end

-- ---- load: wrk ----------------------------------------------------------------------------

--- wrk's report parsed: requests, seconds, rate (requests/s), and its
-- error counts (connect, read, write, timeout, non2xx; 0 when it printed
-- no such line).
function P.parse_wrk(out)
  local r = { requests = tonumber(out:match("(%d+) requests in")), rate = tonumber(out:match("Requests/sec:%s*([%d.]+)")),
    connect = 0, read = 0, write = 0, timeout = 0, non2xx = 0, text = out }
  local c, rd, w, t = out:match("Socket errors: connect (%d+), read (%d+), write (%d+), timeout (%d+)")
  if c then r.connect, r.read, r.write, r.timeout = tonumber(c), tonumber(rd), tonumber(w), tonumber(t) end
  r.non2xx = tonumber(out:match("Non%-2xx or 3xx responses: (%d+)")) or 0
  r.errors = r.connect + r.read + r.write + r.timeout + r.non2xx
  return r
end

-- The established TCP connections to local port `port` (/proc/net/tcp).
function P.established(port)
  local n = 0
  local hex = ("%04X"):format(port)
  for line in (slurp("/proc/net/tcp") or ""):gmatch("[^\n]+") do
    local rem, st = line:match("^%s*%d+: %x+:%x+ %x+:(%x+) (%x+)")
    if rem == hex and st == "01" then n = n + 1 end
  end
  return n
end

--- Start wrk against `url` (`opts`: threads, connections, close = true for
-- "Connection: close"); it runs until `w:stop()` (SIGINT: wrk then prints
-- its report), which returns the parsed report. Closing it (`<close>`)
-- stops it if it still runs.
function P.wrk(url, opts)
  opts = opts or {}
  local argv = { "wrk", "-t" .. (opts.threads or 1), "-c" .. (opts.connections or 8), "-d" .. (opts.duration or "600s") }
  if opts.close then
    argv[#argv + 1] = "-H"
    argv[#argv + 1] = "Connection: close"
  end
  argv[#argv + 1] = url
  argv.stdout = "pipe"
  local p = assert(baton.spawn(argv))
  local reader = baton.go(function() return p.stdout:read("a") end)
  local w = { proc = p, started = baton.now() }
  function w.running() return p:poll() == nil end
  function w.stop()
    if w.report then return w.report end
    p:signal("INT")
    local out = reader:wait() or ""
    p:wait()
    p:close()
    w.report = P.parse_wrk(out)
    w.report.elapsed = baton.now() - w.started
    return w.report
  end
  return setmetatable(w, { __close = function()
    if not w.report then
      p:close()
      reader:wait()
    end
  end })
end

-- Whether program `prog` (a name in PATH) is installed here.
function P.have(prog)
  return baton.which(prog) ~= nil
end

return P
