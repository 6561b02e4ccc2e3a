-- run.lua — server.c under baton, upgraded without dropping a connection.
--
--   cc -o /tmp/server examples/upgradable_server/server.c $(pkg-config --cflags --libs libsystemd)
--   baton examples/upgradable_server/run.lua /tmp/server [port]
--
-- What makes a server hot-upgradable under baton is the systemd protocol,
-- which libsystemd's sd-daemon already implements: take the listeners with
-- sd_listen_fds(3) (baton hands the same sockets to every generation, with
-- LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID), say READY=1 with sd_notify(3)
-- once serving, and drain on TERM (stop accepting, finish, exit).
-- Then `kill -USR2 <baton's pid>` upgrades it (a new generation of the same
-- binary: rebuild it first to deploy a new version); Ctrl-C stops it.
local baton = require "baton"
local server, port = arg[1], arg[2] or "8080"
assert(server, "usage: baton run.lua /path/to/server [port]")
local gen = 1
local function decl()
  return { server, env = { GEN = tostring(gen) }, listen = { http = "tcp://127.0.0.1:" .. port },
    ready = "notify", stop = { signal = "TERM", timeout = 10 } }
end
local sv = baton.supervisor { web = decl() }
assert(sv:start())
print(("serving on %s (baton pid %d): kill -USR2 %d upgrades"):format(sv:listener("web", "http").url,
  baton.core.getpid(), baton.core.getpid()))
baton.on_signal("USR2", function()
  gen = gen + 1
  baton.go(function()
    local r = sv:upgrade("web", decl())
    print(("generation %d: %s%s"):format(r.generation or gen, r.outcome, r.reason and (" — " .. r.reason) or ""))
  end)
end)
os.exit(sv:run())
