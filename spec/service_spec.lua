-- baton.supervisor: services against real processes — order, backoff, readiness, stopping whole trees.
local baton = require "baton"
local H = require "helper"

-- Supervisors make baton a subreaper (orphans of services come back to it);
-- its reaper is a handle the leak guard counts from the start.
assert(baton.subreaper(true))

-- A unique tag for `sleep` arguments: processes are found by it, never by name.
local seq = 0
local function tag()
  seq = seq + 1
  return ("1000.%d%03d"):format(baton.core.getpid(), seq)
end

local function alive_tagged(t)
  return baton.run { "pgrep", "-fx", "sleep " .. t, capture = true, check = false }.code == 0
end

-- Every event of `sv`, in order.
local function record(sv)
  local log = {}
  sv:on("*", function(ev) log[#log + 1] = ev end)
  return log
end

local function kinds(log, service)
  local out = {}
  for _, ev in ipairs(log) do
    if service == nil or ev.service == service then out[#out + 1] = ev.event end
  end
  return table.concat(out, " ")
end

local function index_of(log, event, service)
  for i, ev in ipairs(log) do
    if ev.event == event and ev.service == service then return i end
  end
end

-- A service ready through the s6 notification fd 3, then asleep (tagged).
local function sleeper(t, extra)
  local spec = { "sh", "-c", "echo >&3; exec sleep " .. t, ready = { fd = 3 } }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return spec
end

describe("baton.supervisor", function()
  H.guard()

  it("rejects bad declarations with errors that name the service and the problem", function()
    H.error_here(function() baton.supervisor { web = { "true", restrat = "always" } } end,
      "bad argument #1 to 'service' (service 'web': unknown option 'restrat')")
    H.error_here(function() baton.supervisor { web = { "true", restart = "sometimes" } } end,
      "bad argument #1 to 'service' (service 'web': restart must be \"always\", \"on-failure\" or \"never\", got sometimes)")
    H.error_here(function() baton.supervisor { web = { "true", needs = "db" } } end,
      "bad argument #1 to 'supervisor' (service 'web' needs 'db', which is not declared)")
    H.error_here(function() baton.supervisor { a = { "true", needs = "b" }, b = { "true", needs = "c" }, c = { "true", needs = "a" } } end,
      "bad argument #1 to 'supervisor' (dependency cycle: a -> b -> c -> a)")
    H.error_here(function() baton.supervisor { web = { "no-such-program-here" } } end,
      "bad argument #1 to 'service' (service 'web': program 'no-such-program-here' not found in PATH)")
    H.error_here(function() baton.supervisor { web = { "true", replicas = -1 } } end,
      "bad argument #1 to 'service' (service 'web': replicas must be an integer from 0 to 10000, got -1)")
    H.error_here(function() baton.supervisor { web = { "true", ready = { port = 80 } } } end,
      "bad argument #1 to 'service' (service 'web': unknown readiness check 'port' (fd, line, alive, notify, exec, tcp, http, check, timeout, interval))")
    H.error_here(function() baton.supervisor { web = { "true", health = { tcp = "localhost:80" } } } end,
      "bad argument #1 to 'service' (service 'web': health.tcp: bad address \"localhost:80\": "
        .. "\"localhost\" is not a numeric IPv4 or IPv6 address (names are not resolved: use 127.0.0.1 or ::1))")
    H.error_here(function() baton.supervisor { web = { "true", ready = { http = "https://127.0.0.1/" } } } end,
      "bad argument #1 to 'service' (service 'web': ready.http: bad URL \"https://127.0.0.1/\": https is not supported (plain http:// only))")
    H.error_here(function() baton.supervisor { web = { "true", limits = { memory = {} } } } end,
      "bad argument #1 to 'service' (service 'web': limits.memory must be a positive integer or a cgroup value such as \"max\", got table)")
    H.error_here(function() baton.supervisor { web = { "true", backoff = { initial = -1 } } } end,
      "bad argument #1 to 'service' (service 'web': backoff.initial must be a number of seconds, got -1)")
    H.error_here(function() baton.supervisor { web = { cmd = "true", cwd = "/" } } end,
      "bad argument #1 to 'service' (service 'web': unknown option 'cwd' (the command's options go in cmd))")
    H.error_here(function() baton.supervisor { web = { "true", success = "TERM" } } end,
      "bad argument #1 to 'service' (service 'web': success must be a list of exit codes and signal names, got string)")
    H.error_here(function() baton.supervisor { web = { "true", success = 3 } } end,
      "bad argument #1 to 'service' (service 'web': success must be a list of exit codes and signal names, got number)")
    H.error_here(function() baton.supervisor { web = { "true", critical = "yes" } } end,
      "bad argument #1 to 'service' (service 'web': critical must be a boolean, got string)")
    H.error_here(function() baton.supervisor { web = { "true", bind = 1 } } end,
      "bad argument #1 to 'service' (service 'web': bind must be a boolean, got number)")
    H.error_here(function() baton.supervisor(5) end,
      "bad argument #1 to 'supervisor' (table of services expected, got number)")
    local sv = baton.supervisor { db = { "true" }, web = { "true", needs = "db" } }
    H.error_here(function() sv:add("db", { "true" }) end, "bad argument #1 to 'add' (service 'db' exists already)")
    H.error_here(function() sv:remove("db") end, "bad argument #1 to 'remove' (service 'db' is needed by 'web')")
    H.error_here(function() sv:start("nope") end, "bad argument #1 to 'start' (no service 'nope')")
    H.error_here(function() sv:on("ready!", print) end,
      "bad argument #1 to 'on' (unknown event \"ready!\" (spawned, ready, exited, restarting, failed, stopped, mainpid, adopted or *))")
    H.error_here(function() sv:next("exit") end,
      "bad argument #1 to 'next' (unknown event \"exit\" (spawned, ready, exited, restarting, failed, stopped, mainpid, adopted or *))")
    H.error_here(function() sv:wait("db", "up") end,
      "bad argument #2 to 'wait' (unknown state \"up\" (ready, running, stopped, failed, exited, starting, waiting, stopping, backoff))")
    H.error_here(function() sv.start() end, "bad argument #1 to 'start' (a supervisor expected, got no value (call it as obj:start(…)))")
    -- A failed change leaves the declaration as it was.
    H.error_here(function() sv:update("db", { "true", needs = "web" }) end,
      "bad argument #1 to 'supervisor' (dependency cycle: db -> web -> db)")
    H.error_here(function() sv:update("db", { "true", needs = "web", replicas = 3 }) end,
      "bad argument #1 to 'supervisor' (dependency cycle: db -> web -> db)")
    assert.are.same({}, sv.services.db.decl.needs)
    assert.are.equal(1, #sv:status().db.replicas)
  end)

  it("starts each service after its needs are ready, independent ones at once, and stops in reverse", function()
    local fifo = os.tmpname()
    os.remove(fifo)
    assert.is_true(baton.run { "mkfifo", fifo }.ok)
    local ta, tb, tc = tag(), tag(), tag()
    -- a is ready only once the spec writes to the fifo.
    local sv = baton.supervisor {
      a = { "sh", "-c", "read x < " .. fifo .. "; echo >&3; exec sleep " .. ta, ready = { fd = 3 } },
      b = sleeper(tb, { needs = "a" }),
      c = sleeper(tc), -- independent of a
    }
    local log = record(sv)
    local starter = baton.go(function() return sv:start() end)
    sv:wait("c", "ready")
    assert.are.equal("starting", sv:status().a.state)
    assert.are.equal("waiting", sv:status().b.state)
    assert.is_nil(index_of(log, "spawned", "b"))
    local f = assert(io.open(fifo, "w"))
    f:write("go\n")
    f:close()
    assert.is_true(starter:wait())
    assert.is_true(index_of(log, "ready", "a") < index_of(log, "spawned", "b"))
    sv:stop()
    assert.is_true(index_of(log, "stopped", "b") < index_of(log, "stopped", "a"))
    os.remove(fifo)
  end)

  it("starts B only after A is ready, in 20 of 20 runs", function()
    for _ = 1, 20 do
      local sv = baton.supervisor { a = sleeper(tag()), b = sleeper(tag(), { needs = "a" }) }
      local log = record(sv)
      assert.is_true(sv:start())
      sv:stop()
      baton.sleep(0) -- the handlers' tasks ran
      assert.is_true(index_of(log, "ready", "a") < index_of(log, "spawned", "b"))
    end
  end)

  it("never calls a crashing service ready, backs off exponentially and gives up visibly", function()
    local sv = baton.supervisor {
      crash = { "false", ready = 0.2, give_up = 4, backoff = { initial = 0.01, factor = 2, jitter = 0 } },
    }
    local log = record(sv)
    local ok, msg, code = sv:start()
    assert.is_nil(ok)
    assert.are.equal("EFAILED", code)
    assert.are.equal("EFAILED: service 'crash' did not start: exited before it was ready (exit 1)", msg)
    local failed = sv:next("failed", "crash")
    assert.are.equal("gave up after 4 restarts", failed.error)
    assert.are.equal(1, failed.status.code)
    baton.sleep(0)
    assert.are.equal("spawned exited restarting spawned exited restarting spawned exited restarting "
      .. "spawned exited restarting spawned exited failed", kinds(log))
    local delays = {}
    for _, ev in ipairs(log) do if ev.event == "restarting" then delays[#delays + 1] = ev.delay end end
    assert.are.same({ 0.01, 0.02, 0.04, 0.08 }, delays)
    local st = sv:status().crash
    assert.are.equal("failed", st.state)
    assert.is_false(st.ready)
    assert.are.equal(4, st.replicas[1].restarts)
    sv:stop()
  end)

  it("a manual start bypasses the backoff", function()
    local sv = baton.supervisor { crash = { "false", ready = 0.2, backoff = { initial = 1000, max = 1000 } } }
    assert.is_nil(sv:start())
    local r = sv:status().crash.replicas[1]
    assert.are.equal("backoff", r.state)
    assert.is_true(r.next_retry > baton.now() + 500)
    local log = record(sv)
    assert.is_nil(sv:start()) -- fails again, at once rather than in 1000 s
    assert.are.equal("spawned exited restarting", kinds(log))
    sv:stop()
    assert.are.equal("stopped", sv:status().crash.state)
  end)

  it("a crash after a stable period restarts at the initial delay again", function()
    local t = tag()
    local sv = baton.supervisor {
      s = sleeper(t, { backoff = { initial = 0.01, factor = 10, jitter = 0, reset = 0.05 } }),
    }
    assert.is_true(sv:start())
    local function crash()
      local pid = sv:status().s.replicas[1].pid
      baton.core.kill(pid, 9)
      local ev = sv:next("restarting", "s")
      assert.are.equal("SIGKILL", ev.status.signame)
      sv:wait("s", "ready")
      return ev.delay
    end
    assert.are.equal(0.01, crash())
    assert.are.equal(0.1, crash()) -- crashed again before it was stable: backed off
    H.wait_for(function() return sv:status().s.replicas[1].failures == 0 end, "the stable period to pass")
    assert.are.equal(0.01, crash())
    sv:stop()
  end)

  -- Through the cgroup where baton can make one (this machine's cgroup2),
  -- and through process group + descendants + subreaper + token without.
  for _, cg in ipairs { true, false } do
    it("stops the whole tree: its group, a setsid'd grandchild and orphans (cgroup = " .. tostring(cg) .. ")", function()
      local t1, t2, t3, t4 = tag(), tag(), tag(), tag()
      local sv = baton.supervisor {
        tree = { "sh", "-c", ("sleep %s & setsid sleep %s & (sleep %s &); echo >&3; exec sleep %s"):format(t1, t2, t3, t4),
          ready = { fd = 3 }, cgroup = cg },
      }
      assert.is_true(sv:start())
      local r = sv:status().tree.replicas[1]
      if cg and r.cgroup == false then
        sv:stop()
        return pending("no cgroup here: " .. tostring(r.cgroup_why)) -- (the path without is the next case)
      end
      assert.are.equal(cg, r.cgroup ~= false)
      for _, t in ipairs { t1, t2, t3, t4 } do
        H.wait_for(function() return alive_tagged(t) end, "sleep " .. t .. " to run")
      end
      sv:stop()
      for _, t in ipairs { t1, t2, t3, t4 } do assert.is_false(alive_tagged(t), "sleep " .. t .. " survived") end
      H.wait_for(function() return #H.children() == 0 end, "the orphans to be reaped")
    end)
  end

  it("stops a crashed service's leftovers too", function()
    local t1, t2 = tag(), tag()
    local sv = baton.supervisor {
      s = { "sh", "-c", ("setsid sleep %s & echo >&3; exec sleep %s"):format(t1, t2), ready = { fd = 3 },
        restart = "never", stop = { signal = "CONT" } }, -- (CONT: leftovers ignore the polite signal)
    }
    assert.is_true(sv:start())
    H.wait_for(function() return alive_tagged(t1) end, "the grandchild to run")
    baton.core.kill(sv:status().s.replicas[1].pid, 9)
    assert.are.equal("failed", sv:next("failed", "s").event)
    assert.is_true(alive_tagged(t1)) -- asked politely (CONT), still there
    sv:stop()
    assert.is_false(alive_tagged(t1))
    H.wait_for(function() return #H.children() == 0 end, "the orphan to be reaped")
  end)

  it("follows the restart policy and the exit codes that count as success", function()
    local sv = baton.supervisor {
      ok = { "sh", "-c", "echo >&3; sleep 0.01; exit 0", ready = { fd = 3 }, restart = "on-failure" },
      three = { "sh", "-c", "echo >&3; sleep 0.01; exit 3", ready = { fd = 3 }, restart = "on-failure",
        success = { 0, 3 } },
      never = { "sh", "-c", "echo >&3; sleep 0.01; exit 1", ready = { fd = 3 }, restart = "never" },
    }
    local log = record(sv)
    sv:start()
    for _, name in ipairs { "ok", "three" } do
      assert.is_true(sv:wait(name, "exited"))
    end
    assert.is_true(sv:wait("never", "failed"))
    baton.sleep(0)
    assert.are.equal("spawned ready exited", kinds(log, "ok"))
    assert.are.equal("spawned ready exited", kinds(log, "three"))
    assert.are.equal("spawned ready exited failed", kinds(log, "never"))
    sv:stop()
  end)

  it("a critical service's death stops the rest in reverse order; run returns its status", function()
    local tc = tag()
    local sv = baton.supervisor {
      db = sleeper(tag()),
      web = sleeper(tag(), { needs = "db" }),
      core = sleeper(tc, { critical = true }),
    }
    local log = record(sv)
    local killer = baton.go(function()
      sv:wait("core", "ready")
      sv:wait("web", "ready")
      baton.core.kill(sv:status().core.replicas[1].pid, 9)
    end)
    assert.are.equal(137, sv:run())
    killer:wait()
    baton.sleep(0)
    assert.is_true(index_of(log, "stopped", "web") < index_of(log, "stopped", "db"))
    assert.are.equal("stopped", sv:status().db.state)
    assert.are.equal("failed", sv:status().core.state)
  end)

  it("sends a signal to the trees of some services or of all, as an init forwards one", function()
    local sv = baton.supervisor {
      a = { "sh", "-c", "trap 'exit 0' HUP; echo >&3; while :; do sleep 0.01; done", ready = { fd = 3 },
        restart = "never", stderr = "null" },
      b = sleeper(tag()),
    }
    assert.is_true(sv:start())
    assert.are.equal(1, sv:signal("a", "HUP"))
    assert.are.equal(0, sv:next("exited", "a").status.code) -- its trap ran
    assert.are.equal(1, sv:signal("USR2")) -- b (a is gone): killed by it
    assert.are.equal("SIGUSR2", sv:next("exited", "b").status.signame)
    H.error_here(function() sv:signal("a", "NOPE") end, "bad argument #2 to 'signal' (unknown signal \"NOPE\")")
    H.error_here(function() sv:signal() end, "bad argument #1 to 'signal' (signal expected, got no value)")
    sv:stop()
  end)

  it("gives status as data and as text", function()
    local sv = baton.supervisor { web = sleeper(tag(), { replicas = 2 }) }
    sv:start()
    local st = sv:status()
    assert.are.equal("running", st.web.state)
    assert.is_true(st.web.ready)
    assert.are.equal(1, st.web.generation)
    assert.are.equal(2, #st.web.replicas)
    for i, r in ipairs(st.web.replicas) do
      assert.are.equal(i, r.replica)
      assert.is_true(baton.core.kill(r.pid, 0))
      assert.are.equal(0, r.restarts)
    end
    local text = tostring(st)
    assert.matches("^web%.1 +running +pid %d+ +gen 1 ", text)
    assert.matches("\nweb%.2 +running +pid %d+ +gen 1 ", text)
    assert.are.equal(text, baton.inspect(st))
    sv:stop()
    assert.matches("^web%.1 +stopped +pid %- +gen 1 .*last: killed by SIGTERM", tostring(sv:status()))
  end)

  it("changes at run time: add, more and fewer replicas, restart as a new generation, remove", function()
    local sv = baton.supervisor { a = sleeper(tag()) }
    sv:start()
    sv:add("b", sleeper(tag(), { needs = "a" }))
    assert.is_true(sv:start("b"))
    sv:update("b", sleeper(tag(), { needs = "a", replicas = 3 }))
    assert.is_true(sv:wait("b", "ready"))
    assert.are.equal(3, #sv:status().b.replicas)
    sv:update("b", sleeper(tag(), { needs = "a", replicas = 1 }))
    assert.are.equal(1, #sv:status().b.replicas)
    local pid = sv:status().b.replicas[1].pid
    assert.is_true(sv:restart("b"))
    local r = sv:status().b.replicas[1]
    assert.are_not.equal(pid, r.pid)
    assert.are.equal(2, r.generation)
    -- Restarting a need restarts what needs it (after it).
    local log = record(sv)
    assert.is_true(sv:restart("a"))
    baton.sleep(0)
    assert.are.equal("exited stopped spawned ready", kinds(log, "b"))
    assert.is_true(index_of(log, "ready", "a") < index_of(log, "spawned", "b"))
    sv:stop("b")
    assert.is_true(sv:remove("b"))
    assert.is_nil(sv.services.b)
    sv:stop()
  end)

  it("a bound service stops when its need crashes and starts again once it is ready", function()
    local sv = baton.supervisor {
      a = sleeper(tag(), { backoff = { initial = 0.01 } }),
      b = sleeper(tag(), { needs = "a", bind = true }),
    }
    assert.is_true(sv:start())
    local log = record(sv)
    baton.core.kill(sv:status().a.replicas[1].pid, 9)
    sv:next("ready", "b")
    assert.are.equal("exited stopped spawned ready", kinds(log, "b"))
    assert.is_true(index_of(log, "ready", "a") < index_of(log, "spawned", "b"))
    sv:stop()
  end)

  it("a program that cannot start is a failed start with the reason", function()
    local sv = baton.supervisor { x = { "/nonexistent/prog", backoff = { initial = 1000 } } }
    local ok, msg = sv:start()
    assert.is_nil(ok)
    assert.matches("^EFAILED: service 'x' did not start: .*/nonexistent/prog.*no such file", msg)
    assert.are.equal("backoff", sv:status().x.state)
    sv:stop()
  end)

  it("readiness through Debian's systemd-notify: B starts after A's READY=1, in 100 of 100 runs", function()
    assert(baton.which("systemd-notify"), "systemd-notify is needed (apt-get install systemd)")
    for _ = 1, 100 do
      local sv = baton.supervisor {
        a = { "sh", "-c", "systemd-notify --ready --status=up && exec sleep " .. tag(), ready = "notify" },
        b = sleeper(tag(), { needs = "a" }),
      }
      local log = record(sv)
      assert.is_true(sv:start())
      assert.are.equal("up", sv:status().a.replicas[1].status_text)
      sv:stop()
      baton.sleep(0)
      assert.is_true(index_of(log, "ready", "a") < index_of(log, "spawned", "b"))
    end
  end)

  it("ignores notifications from outside a service's tree, and honours EXTEND_TIMEOUT_USEC", function()
    local fifo = os.tmpname()
    os.remove(fifo)
    assert.is_true(baton.run { "mkfifo", fifo }.ok)
    local sv = baton.supervisor {
      a = { "sh", "-c", "systemd-notify EXTEND_TIMEOUT_USEC=60000000; read x < " .. fifo
        .. "; systemd-notify --ready; exec sleep " .. tag(), ready = { notify = true, timeout = 5 } },
    }
    local starter = baton.go(function() return sv:start() end)
    -- The service's own EXTEND_TIMEOUT_USEC moves its deadline 60 s ahead.
    H.wait_for(function()
      local d = sv:status().a.replicas[1].ready_deadline
      return d and d > baton.now() + 30
    end, "the readiness deadline to be extended")
    -- An outsider (run by the spec, not in a's tree) says READY=1 on a's socket: ignored.
    assert.is_true(baton.run { "systemd-notify", "--ready", env = { NOTIFY_SOCKET = sv._notifier.path } }.ok)
    H.wait_for(function() return (sv.notify_ignored or 0) >= 1 end, "the outsider's message")
    assert.are.equal("starting", sv:status().a.state)
    local f = assert(io.open(fifo, "w"))
    f:write("go\n")
    f:close()
    assert.is_true(starter:wait())
    os.remove(fifo)
    sv:stop()
  end)

  it("restarts a SIGSTOP'd service whose watchdog expired, and one whose health checks fail", function()
    local sv = baton.supervisor {
      w = { "sh", "-c", "echo >&3; kill -STOP $$; exec sleep " .. tag(), ready = { fd = 3 }, watchdog = 0.2,
        stop = { timeout = 5 }, backoff = { initial = 0.01 } },
      h = sleeper(tag(), { health = { tcp = "127.0.0.1:1", interval = 0.05, failures = 2 }, backoff = { initial = 0.01 } }),
      -- WATCHDOG=1 pings keep this one alive past its deadline, many times over.
      pinged = { "sh", "-c", "echo >&3; while :; do systemd-notify WATCHDOG=1; sleep 0.05; done",
        ready = { fd = 3 }, watchdog = 2 },
    }
    local log = record(sv)
    assert.is_true(sv:start())
    local w = sv:next("restarting", "w")
    assert.are.equal("watchdog: no WATCHDOG=1 within 0.2s", w.error)
    assert.are.equal("SIGTERM", w.status.signame) -- TERM, then CONT reached the stopped process
    local h = sv:next("restarting", "h")
    assert.matches("^health check failed 2 times in a row: ECONNREFUSED", h.error)
    -- While w and h restarted twice, the pinged one stayed up.
    sv:next("restarting", "w")
    sv:next("restarting", "h")
    assert.are.equal("spawned ready", kinds(log, "pinged"))
    sv:stop()
  end)

  it("holds a service's output across restarts: every line, in order, a dying process's partial line marked", function()
    local got = {}
    local counter = os.tmpname()
    local sv = baton.supervisor {
      -- Each run prints the next three numbers (from a counter file), the
      -- last without a newline, and dies.
      s = { "sh", "-c", 'n=$(cat "$F" 2>/dev/null || echo 0); echo $((n+1)); echo $((n+2)) >&2; '
        .. 'echo $((n+3)) > "$F"; printf $((n+3)); echo >&3; exec sleep ' .. tag(), env = { F = counter },
        ready = { fd = 3 }, backoff = { initial = 0.01, jitter = 0 },
        log = { function(line, stream, _, mark) got[#got + 1] = line .. (stream == "stderr" and "e" or "")
          .. (mark and ("/" .. mark) or "") end } },
    }
    assert.is_true(sv:start())
    for _ = 1, 3 do
      baton.core.kill(sv:status().s.replicas[1].pid, 9)
      sv:next("ready", "s")
    end
    sv:stop()
    assert.are.same({ "1", "2e", "3/partial", "4", "5e", "6/partial", "7", "8e", "9/partial", "10", "11e",
      "12/partial" }, got)
    assert.are.same({ "10", "(stderr) 11", "12" }, sv:logs("s", 3))
    os.remove(counter)
  end)

  it("an event handler that starts the service again sees the exit finished: no process left untracked", function()
    local marker = H.tmpname()
    local t = tag()
    -- Exits (ready first) on its first run, sleeps on the next.
    local sv = baton.supervisor {
      a = { "sh", "-c", ("echo >&3; [ -s %s ] && exec sleep %s; echo x > %s"):format(marker, t, marker),
        ready = { fd = 3 }, restart = "never" },
    }
    local again
    sv:on("exited", function() if not again then again = baton.go(function() return sv:start() end) end end)
    assert.is_true(sv:start())
    H.wait_for(function() return again end, "the exited handler")
    assert.is_true(again:wait())
    local r = sv:status().a.replicas[1]
    assert.are.equal("running", r.state)
    assert.is_true(H.alive(r.pid))
    sv:stop()
    assert.is_false(alive_tagged(t))
    os.remove(marker)
  end)

  it("a manual start or restart tries a failed service again", function()
    local marker = H.tmpname()
    local t = tag()
    -- Fails on its first run, sleeps on the next.
    local sv = baton.supervisor {
      a = { "sh", "-c", ("[ -s %s ] && { echo >&3; exec sleep %s; }; echo x > %s; exit 3"):format(marker, t, marker),
        ready = { fd = 3 }, restart = "never" },
    }
    assert.is_nil(sv:start())
    assert.are.equal("failed", sv:status().a.state)
    assert.is_true(sv:start("a"))
    assert.are.equal("running", sv:status().a.state)
    sv:stop()
    os.remove(marker)
    assert.is_nil(sv:start())
    assert.is_true(sv:restart("a"))
    assert.are.equal("running", sv:status().a.state)
    sv:stop()
    assert.is_false(alive_tagged(t))
    os.remove(marker)
  end)

  it("gives the rest of the tree what is left of the stop timeout once the main process exited", function()
    local out = H.tmpname()
    -- The child finishes its work on TERM (0.2 s); the main process exits at once.
    local sv = baton.supervisor {
      a = { "sh", "-c", ("sh -c 'trap \"sleep 0.2; echo done > %s; exit 0\" TERM; echo >&3; "
        .. "while :; do sleep 0.05; done' & exec sleep %s"):format(out, tag()), ready = { fd = 3 } },
    }
    assert.is_true(sv:start())
    sv:stop()
    local f = assert(io.open(out))
    assert.are.equal("done\n", f:read("a"))
    f:close()
    os.remove(out)
  end)

  it("stops a SIGSTOP'd service with its stop signal (CONT follows it), not only by KILL at the timeout", function()
    local sv = baton.supervisor { a = sleeper(tag(), { stop = { timeout = H.PATIENCE } }) }
    assert.is_true(sv:start())
    local pid = sv:status().a.replicas[1].pid
    baton.core.kill(pid, baton.signals.STOP)
    H.wait_for(function() return baton.core.proc_stat(pid).state == "T" end, "the service to stop")
    sv:stop()
    assert.are.equal("SIGTERM", sv:status().a.replicas[1].last_status.signame)
  end)

  it("a start while a stop is under way starts after it: every service ends up running", function()
    local sv = baton.supervisor { a = sleeper(tag()), b = sleeper(tag(), { needs = "a" }) }
    assert.is_true(sv:start())
    local stopper = baton.go(function() return sv:stop() end)
    assert.is_true(sv:start())
    assert.is_true(stopper:wait())
    assert.are.equal("running", sv:status().a.state)
    assert.are.equal("running", sv:status().b.state)
    sv:stop()
  end)

  it("a signal reaches each process of the tree once (a second one may mean more to a server)", function()
    -- Python's C handler writes the signal's number to the wakeup fd at
    -- each delivery, and the script appends it to `out`. It spins: a
    -- running process takes a signal at once, before the next one is sent
    -- (one sleeping in read() may still have the first pending, merged).
    local out = H.tmpname()
    local py = [[
import os, signal, sys
r, w = os.pipe()
os.set_blocking(r, False)
os.set_blocking(w, False)
for s in (signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(s, lambda *a: None)
signal.set_wakeup_fd(w)
print("up", flush=True)
while True:
    try:
        got = os.read(r, 64)
    except BlockingIOError:
        continue
    for b in got:
        with open(sys.argv[1], "a") as f:
            f.write("%d\n" % b)
]]
    local sv = baton.supervisor { s = { "python3", "-c", py, out, ready = { line = "^up$" } } }
    finally(function()
      sv:close()
      os.remove(out)
    end)
    assert.is_true(sv:start())
    local function got()
      local f <close> = io.open(out)
      return f and f:read("a") or ""
    end
    -- (a duplicate comes microseconds after the first: it shows when the
    -- process took the first in between — rounds make that likely, not
    -- certain; a duplicate USR1 would be pending before USR2, delivered
    -- first)
    local ROUNDS = 20
    for i = 1, ROUNDS do
      assert.are.equal(1, sv:signal("s", "USR1"))
      H.wait_for(function() return select(2, got():gsub("\n", "")) >= 2 * i - 1 end, "USR1")
      assert.are.equal(1, sv:signal("s", "USR2"))
      H.wait_for(function() return got():sub(-3) == "12\n" and select(2, got():gsub("\n", "")) >= 2 * i end, "USR2")
    end
    assert.are.equal(("10\n12\n"):rep(ROUNDS), got())
  end)
end)
