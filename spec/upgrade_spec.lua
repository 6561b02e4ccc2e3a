-- Hot upgrades: a new generation on the same listening socket, promoted once ready, the old one drained —
-- under load, with 0 failed requests; and every way it can go wrong rolls back with the old one serving.
local baton = require "baton"
local H = require "helper"

assert(baton.subreaper(true)) -- (supervisors make baton a subreaper: its handle is counted from the start)

local SERVER = "scripts/examples/http_server.py"

local function web(gen, extra)
  local d = { "python3", SERVER, env = { GEN = tostring(gen) }, listen = { http = "tcp://127.0.0.1:0" },
    ready = { notify = true, timeout = 10 }, stop = { timeout = 5 } }
  for k, v in pairs(extra or {}) do
    if k == "env" then for ek, ev in pairs(v) do d.env[ek] = ev end else d[k] = v end
  end
  return d
end

-- Clients hammering `url` in tasks until stopped: counts of answers by body, and failures.
local function load(url, n)
  local stats = { ok = 0, failed = 0, by = {}, errors = {} }
  local running = true
  local tasks = {}
  for i = 1, n do
    tasks[i] = baton.go(function()
      while running do
        local code, body = baton.http_get(url, { timeout = 10 })
        if code == 200 then
          stats.ok = stats.ok + 1
          stats.by[body] = (stats.by[body] or 0) + 1
        else
          stats.failed = stats.failed + 1
          stats.errors[#stats.errors + 1] = tostring(body)
        end
      end
    end)
  end
  return stats, function()
    running = false
    for _, t in ipairs(tasks) do t:wait() end
  end
end

describe("hot upgrades", function()
  H.guard()

  it("replaces a server 10 times under load: every request answered, each generation served", function()
    local sv = baton.supervisor { web = web(1) }
    assert.is_true(sv:start())
    local url = assert(sv:listener("web", "http")).url:gsub("^tcp", "http") .. "/"
    local fds = H.fds()
    local stats, stop = load(url, 4)
    for gen = 2, 11 do
      local r = sv:upgrade("web", web(gen))
      assert.are.equal("promoted", r.outcome, r.reason)
      assert.are.equal(gen, r.generation)
      H.wait_for(function() return (stats.by[gen .. "\n"] or 0) > 0 end, "generation " .. gen .. " to answer")
    end
    stop()
    H.wait_for(function() return #(sv.services.web.draining or {}) == 0 end, "the old generations to drain")
    assert.are.same({}, stats.errors)
    assert.are.equal(0, stats.failed)
    assert.is_true(stats.ok > 100, "requests: " .. stats.ok)
    assert.are.equal("11\n", select(2, baton.http_get(url)))
    assert.are.equal(fds, H.fds()) -- no fd left by ten generations
    assert.are.equal(11, sv:status().web.generation)
    sv:close()
  end)

  it("rolls back, the old generation serving untouched: a crash at start, never ready, a crash while baking", function()
    local sv = baton.supervisor { web = web(1) }
    assert.is_true(sv:start())
    local url = assert(sv:listener("web", "http")).url:gsub("^tcp", "http") .. "/"
    local pid = sv:status().web.replicas[1].pid
    local stats, stop = load(url, 2)
    local r = sv:upgrade("web", web(2, { env = { FAIL = "start" } }))
    assert.are.equal("rolled_back", r.outcome)
    assert.matches("^the new generation failed: exited before it was ready %(exit 3%)", r.reason)
    r = sv:upgrade("web", web(3, { env = { FAIL = "never" } }), { timeout = 0.5 })
    assert.are.equal("rolled_back", r.outcome)
    assert.matches("not ready after 0.5s", r.reason)
    r = sv:upgrade("web", web(4, { env = { FAIL = "after", AFTER = "2" } }), { bake = 10 }) -- (dies 2 s after READY=1)
    assert.are.equal("rolled_back", r.outcome)
    assert.matches("^the new generation failed within the bake window", r.reason)
    stop()
    assert.are.equal(0, stats.failed, table.concat(stats.errors, "\n"))
    assert.are.equal(pid, sv:status().web.replicas[1].pid) -- the same process served throughout
    assert.are.equal(1, sv:status().web.generation)
    assert.are.equal("1\n", select(2, baton.http_get(url)))
    sv:close()
  end)

  it("waits, with the defaults, for a generation that takes 20 s to become ready: promoted, nothing lost", function()
    local sv = baton.supervisor { web = web(1) }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    local url = assert(sv:listener("web", "http")).url:gsub("^tcp", "http") .. "/"
    local stats, stop = load(url, 2)
    local slow = web(2, { env = { READY_AFTER = "20" }, ready = "notify" }) -- (no timeout given: the default)
    local r = sv:upgrade("web", slow) -- (no options)
    assert.are.equal("promoted", r.outcome, r.reason)
    assert.is_true(r.timings.ready >= 20, "ready after " .. tostring(r.timings.ready))
    H.wait_for(function() return (stats.by["2\n"] or 0) > 0 end, "generation 2 to answer")
    stop()
    assert.are.equal(0, stats.failed, table.concat(stats.errors, "\n"))
    assert.is_true((stats.by["1\n"] or 0) > 0) -- generation 1 served while 2 started
    sv:close()
  end)

  it("a rollback in the bake window brings back an old generation that died meanwhile", function()
    local sv = baton.supervisor { web = web(1, { backoff = { initial = 0.01 } }) }
    assert.is_true(sv:start())
    local url = assert(sv:listener("web", "http")).url:gsub("^tcp", "http") .. "/"
    local old = sv.services.web.instances[1]
    local t = baton.go(function() return sv:upgrade("web", web(2), { bake = 60 }) end)
    H.wait_for(function() return sv.services.web.generation == 2 and sv.services.web.instances[1].pid end, "promotion")
    baton.core.kill(old.pid, 9) -- the old generation dies while the new one bakes…
    H.wait_for(function() return old.state == "stopped" end, "the old generation's end")
    baton.core.kill(sv.services.web.instances[1].pid, 9) -- …then the new one fails: back to the old one
    local r = t:wait()
    assert.are.equal("rolled_back", r.outcome)
    assert.are.equal(old, sv.services.web.instances[1])
    assert.is_true(sv:wait("web", "ready", H.PATIENCE)) -- started again, as a crash of it would be
    assert.are.equal("1\n", select(2, baton.http_get(url)))
    sv:close()
  end)

  it("runs two upgrades asked for at once one after the other; bad input is refused up front", function()
    local sv = baton.supervisor { web = web(1) }
    assert.is_true(sv:start())
    local a = baton.go(function() return sv:upgrade("web", web(2)) end)
    local b = baton.go(function() return sv:upgrade("web", web(3)) end)
    assert.are.equal("promoted", a:wait().outcome)
    assert.are.equal("promoted", b:wait().outcome)
    assert.are.equal(3, sv:status().web.generation)
    H.error_here(function() sv:upgrade("web", { "no-such-binary-here" }) end,
      "bad argument #1 to 'service' (service 'web': program 'no-such-binary-here' not found in PATH)")
    H.error_here(function() sv:upgrade("web", nil, { bake = -1 }) end,
      "bad argument #3 to 'upgrade' (option 'bake' must be a number of seconds from 0 to 1e+09, got -1)")
    sv:stop()
    local r = sv:upgrade("web")
    assert.are.equal("failed", r.outcome)
    sv:close()
  end)

  it("an upgrade to the same declaration asked for during another one takes the declaration it promoted", function()
    local sv = baton.supervisor { web = web(1) }
    assert.is_true(sv:start())
    local url = assert(sv:listener("web", "http")).url:gsub("^tcp", "http") .. "/"
    local a = baton.go(function() return sv:upgrade("web", web(2)) end)
    local b = baton.go(function() return sv:upgrade("web") end) -- (as upgrade_on does: a new binary)
    assert.are.equal("promoted", a:wait().outcome)
    assert.are.equal("promoted", b:wait().outcome)
    assert.are.equal(3, sv:status().web.generation)
    assert.are.equal("2\n", select(2, baton.http_get(url))) -- not generation 1's declaration again
    sv:close()
  end)

  it("reloads in place (HUP, then RELOADING=1 … READY=1) and upgrades on a signal", function()
    local sv = baton.supervisor { web = web(1) }
    assert.is_true(sv:start())
    local pid = sv:status().web.replicas[1].pid
    assert.are.same({ outcome = "reloaded", service = "web", confirmed = true }, sv:reload("web"))
    assert.are.equal(pid, sv:status().web.replicas[1].pid) -- the same process, reloaded
    local r = sv:reload("web", { signal = "USR1", timeout = 0.3 }) -- (USR1 kills it: no reload)
    assert.are.equal("failed", r.outcome)
    sv:wait("web", "ready")
    local results = {}
    local w = sv:upgrade_on("USR2", nil, function(name, res) results[#results + 1] = name .. " " .. res.outcome end)
    baton.core.kill(baton.core.getpid(), baton.signals.USR2)
    H.wait_for(function() return results[1] end, "the upgrade a signal asked for")
    w:close()
    assert.are.same({ "web promoted" }, results)
    sv:close()
  end)

  it("keeps fds a service parks (FDSTORE=1) and hands them to its next process (LISTEN_FDS)", function()
    local lines = {}
    local sv = baton.supervisor {
      st = { "python3", "spec/fdstore_peer.py", ready = "notify", fdstore = 4, backoff = { initial = 0.01 },
        log = { stdout = { function(l) lines[#lines + 1] = l end } } },
      no = { "python3", "spec/fdstore_peer.py", ready = "notify", stdout = "null" }, -- (no fdstore)
      named = { "python3", "spec/fdstore_peer.py", ready = "notify", fdstore = 1, env = { FDNAME = "a b" },
        log = { stdout = { function(l) lines[#lines + 1] = l end } } },
    }
    finally(function() sv:close() end)
    assert.is_true(sv:start("st", "no"))
    baton.core.kill(sv:status().st.replicas[1].pid, 9)
    sv:next("ready", "st")
    assert.are.same({ "parked", "found state counter=1" }, lines)
    assert.are.equal(1, sv.services.no.fdstore_refused) -- (closed at once: not allowed to park)
    assert.is_true(sv:restart("st")) -- kept across a restart…
    assert.are.same({ "parked", "found state counter=1", "found state counter=1" }, lines)
    sv:stop("st") -- …released by a stop (systemd's FileDescriptorStorePreserve=restart)
    assert.is_nil(sv.services.st.fdstore)
    assert.is_true(sv:start("st"))
    assert.are.equal("parked", lines[4])
    -- a name as systemd takes it (printable, no ':'), kept as given
    assert.is_true(sv:start("named"))
    baton.core.kill(sv:status().named.replicas[1].pid, 9)
    sv:next("ready", "named")
    assert.are.same({ "parked", "found a b counter=1" }, { lines[5], lines[6] })
  end)

  it("keeps each service's fd store across two restarts under way at once", function()
    local lines = { a = {}, b = {} }
    local function st(name)
      return { "python3", "spec/fdstore_peer.py", ready = "notify", fdstore = 1, backoff = { initial = 0.01 },
        log = { stdout = { function(l) table.insert(lines[name], l) end } } }
    end
    local sv = baton.supervisor { a = st("a"), b = st("b") }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    for _, name in ipairs { "a", "b" } do
      baton.core.kill(sv:status()[name].replicas[1].pid, 9)
      sv:next("ready", name)
    end
    local t = baton.go(function() return sv:restart("a") end)
    assert.is_true(sv:restart("b"))
    assert.is_true(t:wait())
    assert.are.same({ "parked", "found state counter=1", "found state counter=1" }, lines.a)
    assert.are.same({ "parked", "found state counter=1", "found state counter=1" }, lines.b)
  end)

  it("a service stopped with what it needs releases its fd store; restarted with it, keeps it", function()
    local lines = {}
    local sv = baton.supervisor {
      a = { "sleep", "1000." .. baton.core.getpid(), ready = 0 },
      b = { "python3", "spec/fdstore_peer.py", ready = "notify", fdstore = 1, needs = { "a" },
        log = { stdout = { function(l) lines[#lines + 1] = l end } } },
    }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    assert.is_true(sv:restart("a")) -- b, which needs a, stops and starts with it: its store kept
    assert.are.same({ "parked", "found state counter=1" }, lines)
    sv:stop("a") -- b stops with it: its store goes
    assert.is_nil(sv.services.b.fdstore)
    assert.is_true(sv:start())
    assert.are.equal("parked", lines[3])
  end)

  it("rolls 3 replicas over one at a time under load: never fewer than 3 ready, no request lost", function()
    local sv = baton.supervisor { web = web(1, { replicas = 3 }) }
    assert.is_true(sv:start())
    local url = assert(sv:listener("web", "http")).url:gsub("^tcp", "http") .. "/"
    local least = 3
    local w = sv:on("*", function()
      local n = 0
      for _, r in ipairs(sv:status().web.replicas) do if r.ready then n = n + 1 end end
      if n < least then least = n end
    end)
    local stats, stop = load(url, 3)
    local r = sv:upgrade("web", web(2, { replicas = 3 }), { surge = 1 })
    assert.are.equal("promoted", r.outcome, r.reason)
    r = sv:upgrade("web", web(3, { replicas = 3, env = { FAIL = "start" } }), { surge = 1 })
    assert.are.equal("rolled_back", r.outcome)
    stop()
    w()
    assert.are.equal(0, stats.failed, table.concat(stats.errors, "\n"))
    assert.are.equal(3, least)
    for _, rep in ipairs(sv:status().web.replicas) do
      if rep.state == "running" then assert.are.equal(2, rep.generation) end
    end
    assert.are.equal(2, sv:status().web.generation)
    H.error_here(function() sv:upgrade("web", nil, { surge = 0 }) end,
      "bad argument #3 to 'upgrade' (option 'surge' must be a count from 1, got 0)")
    sv:close()
  end)

  it("max_draining counts old generations, not a rolling upgrade's batches", function()
    local sv = baton.supervisor { web = web(1, { replicas = 3 }) }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    local function pids()
      local out = {}
      for _, i in ipairs(sv.services.web.instances) do out[#out + 1] = i end
      return out
    end
    local alive = function(list)
      local n = 0
      for _, i in ipairs(list) do if i.proc then n = n + 1 end end
      return n
    end
    -- (WINCH: a drain signal the server ignores, so the old ones stay until `drain` runs out)
    local slow = { surge = 1, drain_signal = "WINCH", drain = 60 }
    local g1 = pids()
    assert.are.equal("promoted", sv:upgrade("web", web(2, { replicas = 3 }), slow).outcome)
    assert.are.equal(1, #sv.services.web.draining) -- one old generation, in 3 batches
    assert.are.equal(3, alive(g1)) -- none of them stopped by the cap of 2
    local g2 = pids()
    assert.are.equal("promoted", sv:upgrade("web", web(3, { replicas = 3 }), slow).outcome)
    assert.are.equal(2, #sv.services.web.draining)
    assert.are.equal(3, alive(g1))
    assert.are.equal("promoted", sv:upgrade("web", web(4, { replicas = 3 }), slow).outcome)
    -- a third old generation: the oldest (generation 1) is stopped, the others go on draining
    H.wait_for(function() return alive(g1) == 0 end, "generation 1 to be stopped by the cap")
    assert.are.equal(2, #sv.services.web.draining)
    assert.are.equal(3, alive(g2))
  end)

  it("a rolling upgrade stopped half way starts no further batch: nothing runs, the result says so", function()
    local sv, stopping
    local hooks = { draining = function() stopping = stopping or baton.go(function() sv:stop() end) end }
    sv = baton.supervisor { web = web(1, { replicas = 2 }) }
    assert.is_true(sv:start())
    local r = sv:upgrade("web", web(2, { replicas = 2 }), { surge = 1, wait = true, hooks = hooks })
    stopping:wait() -- (stopped after batch 1)
    local running = {}
    for _, i in ipairs(sv.services.web.instances) do if i.proc then running[#running + 1] = i.pid end end
    assert.are.same({}, running)
    assert.are.equal("failed", r.outcome)
    assert.matches("stopped", r.reason)
    sv:close()
  end)

  it("a reload asked for during an upgrade waits for it, then reloads the new generation", function()
    local sv = baton.supervisor { web = web(1), plain = { "sleep", "1000." .. baton.core.getpid(), ready = 0 } }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    local promoted_at, reload
    local hooks = {
      spawned = function() reload = baton.go(function() return sv:reload("web"), baton.now() end) end,
      promoted = function() promoted_at = baton.now() end,
    }
    -- (generation 2 takes half a second to be ready: a reload not waiting would be over long before)
    local r = sv:upgrade("web", web(2, { env = { READY_AFTER = "0.5" } }), { hooks = hooks })
    assert.are.equal("promoted", r.outcome, r.reason)
    local rr, reloaded_at = reload:wait()
    assert.are.same({ outcome = "reloaded", service = "web", confirmed = true }, rr)
    assert.is_true(reloaded_at >= promoted_at)
    -- a service that does not speak sd_notify is only signalled: not confirmed
    assert.are.same({ outcome = "reloaded", service = "plain", confirmed = false },
      sv:reload("plain", { signal = "CONT" }))
  end)

  it("an upgrade or reload waiting its turn is not failed by an error of the one before it", function()
    local sv = baton.supervisor { x = { "sh", "-c", "echo >&3; exec sleep 1000." .. baton.core.getpid(),
      ready = { fd = 3 } } }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    -- (white box: the one under way, as `exclusive` runs it, raises)
    local boom = baton.go(function()
      baton.sleep(0.05)
      error("boom", 0)
    end)
    sv.services.x._upgrading = boom
    local r = sv:reload("x")
    assert.are.equal("reloaded", r.outcome, r.reason)
    local ok, err = pcall(boom.wait, boom)
    assert.is_false(ok)
    assert.are.equal("boom", err)
  end)

  it("reloads only a running service: a stopped one is not 'reloaded'", function()
    local sv = baton.supervisor { web = web(1) }
    assert.is_true(sv:start())
    sv:stop()
    local r = sv:reload("web")
    assert.are.equal("failed", r.outcome)
    assert.matches("not running", r.reason)
    sv:close()
  end)

  it("follows a server that starts its own successor (MAINPID=), still supervising it", function()
    local sv = baton.supervisor { s = { "python3", "spec/selffork_peer.py", ready = "notify" } }
    assert.is_true(sv:start())
    local old = sv:status().s.replicas[1].pid
    baton.core.kill(old, baton.signals.USR2)
    local ev = sv:next("mainpid", "s")
    assert.are_not.equal(old, ev.pid)
    local r = sv:status().s.replicas[1]
    assert.are.equal(ev.pid, r.pid)
    assert.are.equal("running", r.state)
    assert.is_true(H.gone_within(old))
    sv:stop() -- reaches the successor
    assert.is_true(H.gone_within(ev.pid))
    sv:close()
  end)

  it("a successor named while starting carries on the readiness check (here a probe, no READY=1)", function()
    local file = os.tmpname()
    os.remove(file)
    finally(function() os.remove(file) end)
    local exists = function() return io.open(file) ~= nil end
    local sv = baton.supervisor { s = { "python3", "spec/selffork_peer.py", env = { MODE = "startfork", READY_FILE = file },
      ready = { check = exists, interval = 0.02, timeout = 20 }, fdstore = 1 } } -- (fdstore: a NOTIFY_SOCKET for MAINPID=)
    finally(function() sv:close() end)
    local followed
    local off = sv:on("mainpid", function(ev) followed = ev.pid end)
    assert.is_true(sv:start())
    off()
    local r = sv:status().s.replicas[1]
    assert.are.equal("running", r.state)
    assert.are.equal(followed, r.pid)
    sv:stop()
    assert.is_true(H.gone_within(followed))
    sv:close()
  end)

  -- The next event of service `name` among `kinds` (a set).
  local function next_of(sv, name, kinds)
    while true do
      local ev = sv:next("*", name)
      if kinds[ev.event] then return ev end
    end
  end

  it("ignores a MAINPID= naming a process outside the service's tree (never adopted, never signalled)", function()
    local other = baton.spawn { "sleep", "1000" }
    local sv = baton.supervisor { s = { "python3", "spec/selffork_peer.py", ready = "notify", restart = "never",
      env = { MODE = "outside", OUTSIDE = tostring(other.pid) } } }
    assert.is_true(sv:start())
    baton.core.kill(sv:status().s.replicas[1].pid, baton.signals.USR2) -- it names `other`, then exits
    local ev = next_of(sv, "s", { mainpid = true, exited = true })
    local alive = H.alive(other.pid)
    other:kill(9) -- (whatever baton did: its stop must not wait for it)
    other:wait()
    assert.are.equal("exited", ev.event)
    assert.is_true(alive)
    sv:close()
  end)

  it("a MAINPID= successor that died before the old process exits is not followed: an exit", function()
    local sv = baton.supervisor { s = { "python3", "spec/selffork_peer.py", ready = "notify", restart = "never",
      env = { MODE = "diefirst" } } }
    assert.is_true(sv:start())
    local old = sv:status().s.replicas[1].pid
    baton.core.kill(old, baton.signals.USR2)
    local ev = next_of(sv, "s", { mainpid = true, exited = true })
    assert.are.equal("exited", ev.event)
    assert.are.equal(old, ev.pid)
    assert.are.equal(0, ev.status.code) -- (the old process's status, not the successor's)
    sv:close()
  end)

  it("goes on checking a followed successor's health (a failing one is restarted)", function()
    local healthy = true
    local sv = baton.supervisor { s = { "python3", "spec/selffork_peer.py", ready = "notify",
      health = { check = function() return healthy end, interval = 0.05, failures = 1 } } }
    assert.is_true(sv:start())
    local restarted = false
    local off = sv:on("restarting", function() restarted = true end)
    baton.core.kill(sv:status().s.replicas[1].pid, baton.signals.USR2)
    sv:next("mainpid", "s")
    healthy = false
    H.wait_for(function() return restarted end, "the unhealthy successor's restart")
    off()
    sv:close()
  end)

  it("stops a followed successor that left the process group (setsid), without a cgroup", function()
    local sv = baton.supervisor { s = { "python3", "spec/selffork_peer.py", ready = "notify", cgroup = false,
      stop = { timeout = 1 }, env = { MODE = "setsid" } } }
    assert.is_true(sv:start())
    baton.core.kill(sv:status().s.replicas[1].pid, baton.signals.USR2)
    local ev = sv:next("mainpid", "s")
    local t = baton.go(function() return sv:stop() end)
    local gone = H.gone_within(ev.pid)
    if not gone then baton.core.kill(ev.pid, 9) end -- (so that the stop ends, and the spec with it)
    t:wait()
    assert.is_true(gone, "the successor outlived the stop")
    sv:close()
  end)

  it("the new generation writes into the same log pipes as the old one: one file, in order", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    local lines = {}
    local function keep(l) lines[#lines + 1] = l end -- (one function: the same routes each generation)
    local function gen(n)
      return { "sh", "-c", "echo gen " .. n .. " up; echo >&3; exec sleep 1000." .. baton.core.getpid(),
        ready = { fd = 3 }, stop = { signal = "TERM", timeout = 5 },
        log = { stdout = { dir .. "/x.log", keep } } }
    end
    local sv = baton.supervisor { x = gen(1) }
    assert.is_true(sv:start())
    local fd_before = H.fds()
    for n = 2, 4 do
      assert.are.equal("promoted", sv:upgrade("x", gen(n), { wait = true }).outcome)
    end
    assert.are.equal(fd_before, H.fds()) -- (one pipe pair and one file all along)
    sv:close()
    assert.are.same({ "gen 1 up", "gen 2 up", "gen 3 up", "gen 4 up" }, lines)
    local f = assert(io.open(dir .. "/x.log"))
    assert.are.equal("gen 1 up\ngen 2 up\ngen 3 up\ngen 4 up\n", f:read("a"))
    f:close()
    baton.run { "rm", "-rf", dir }
  end)

  it("an upgrade or an update that changes `log` routes the new process's lines the new way; the old pipes close", function()
    local dir = baton.output { "mktemp", "-d", "/tmp/baton-logs.XXXXXX" }:gsub("%s+$", "")
    finally(function() baton.run { "rm", "-rf", dir } end)
    -- (on TERM it says goodbye, on its old pipes, then exits)
    local function gen(n, file)
      return { "sh", "-c", "trap 'echo gen " .. n .. " bye; exit 0' TERM; echo gen " .. n .. " up; echo >&3; "
        .. "while :; do sleep 0.2; done", ready = { fd = 3 }, stop = { timeout = 5 }, stderr = "null",
        log = { stdout = { dir .. "/" .. file } } }
    end
    local function read(file)
      local f = io.open(dir .. "/" .. file)
      if not f then return "" end
      local t = f:read("a")
      f:close()
      return t
    end
    local sv = baton.supervisor { x = gen(1, "a.log") }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    local fd_before = H.fds()
    assert.are.equal("promoted", sv:upgrade("x", gen(2, "b.log"), { wait = true }).outcome)
    H.wait_for(function() return read("a.log") == "gen 1 up\ngen 1 bye\n" end, "generation 1's lines in a.log")
    H.wait_for(function() return read("b.log") == "gen 2 up\n" end, "generation 2's line in b.log")
    assert.are.equal(fd_before, H.fds()) -- (a.log and its pipe closed once generation 1 was gone)
    assert.are.same({ "gen 2 up" }, sv:logs("x")) -- (the new log's lines)
    -- an update changing `log`: the next process (a restart) uses it
    sv:update("x", gen(3, "c.log"))
    assert.is_true(sv:restart("x"))
    H.wait_for(function() return read("c.log") == "gen 3 up\n" end, "the restarted process's line in c.log")
    assert.are.equal("gen 2 up\ngen 2 bye\n", read("b.log"))
    assert.are.equal(fd_before, H.fds())
    sv:close()
  end)

  it("a new generation ready by a line is ready by its own line, not one the old generation writes", function()
    local seen = {}
    local function sink(l) seen[#seen + 1] = l end -- (the same routes: the generations share them)
    local function gen(line)
      return { "sh", "-c", "while :; do echo " .. line .. "; sleep 0.05; done", ready = { line = "ready", timeout = 1 },
        log = { stdout = { sink } }, stop = { timeout = 5 } }
    end
    local sv = baton.supervisor { x = gen("tick-ready") }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    local r = sv:upgrade("x", gen("tick")) -- (it never says it is ready)
    assert.are.equal("rolled_back", r.outcome, r.reason)
    r = sv:upgrade("x", gen("ready-too"))
    assert.are.equal("promoted", r.outcome, r.reason)
    H.wait_for(function() return seen[#seen] == "ready-too" end, "the new generation's lines")
    H.wait_for(function() return sv:logs("x")[1] == "ready-too" end, "the new generation's lines in its log")
  end)

  it("an update that drops `log` closes the old pipes and file once the restarted process runs without them", function()
    local dir = baton.output { "mktemp", "-d", "/tmp/baton-logs.XXXXXX" }:gsub("%s+$", "")
    finally(function() baton.run { "rm", "-rf", dir } end)
    local cmd = { "sh", "-c", "echo up; echo >&3; while :; do sleep 0.2; done", ready = { fd = 3 },
      backoff = { initial = 0.01 }, stdout = "null", stderr = "null" }
    local logged = { log = { stdout = { dir .. "/a.log" } } }
    for k, v in pairs(cmd) do logged[k] = v end
    baton.sleep(0) -- (mktemp's pipe closed)
    collectgarbage()
    local fds, before = H.fds()
    local sv = baton.supervisor { x = logged }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    sv:update("x", cmd)
    baton.core.kill(sv:status().x.replicas[1].pid, 9) -- (its restart runs the new declaration)
    sv:next("ready", "x")
    sv:close()
    assert.are.equal(fds, H.fds(), table.concat(before, " "))
  end)

  it("closes a listener only a past declaration named once its generation is gone (or its trial failed)", function()
    local sv = baton.supervisor { web = web(1) }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    local old = assert(sv:listener("web", "http"))
    local fds = H.fds()
    -- (a port of its own for generation 2: one the kernel picks, free again)
    local fd, info = assert(baton.core.listen("tcp://127.0.0.1:0"))
    baton.core.close(fd)
    local moved = web(2, { listen = { http = "tcp://127.0.0.1:" .. info.port } })
    assert.are.equal("promoted", sv:upgrade("web", moved, { wait = true }).outcome)
    assert.are.equal("2\n", select(2, baton.http_get("http://127.0.0.1:" .. info.port .. "/")))
    assert.is_nil(baton.connect(old.url)) -- (the old port: closed, refused)
    assert.are.equal(fds, H.fds())
    -- a trial that fails: what it bound is closed again
    local fd2, info2 = assert(baton.core.listen("tcp://127.0.0.1:0"))
    baton.core.close(fd2)
    local bad = web(3, { listen = { http = "tcp://127.0.0.1:" .. info2.port }, env = { FAIL = "start" } })
    assert.are.equal("rolled_back", sv:upgrade("web", bad).outcome)
    assert.is_nil(baton.connect("tcp://127.0.0.1:" .. info2.port))
    assert.are.equal(fds, H.fds())
  end)

  it("a second signal KILLs the tree of a generation still draining too (a setsid'd descendant, no cgroup)", function()
    local pidfile = H.tmpname()
    local script = H.tmpname()
    local f = assert(io.open(script, "w"))
    -- (TERM only said: the old generation drains for good; each generation
    -- leaves a descendant in a session of its own and writes its pid)
    f:write(([[
      local sv = baton.supervisor { s = { "sh", "-c", "trap 'echo term' TERM; (trap '' TERM; exec setsid sleep 1000.%d) & "
        .. "echo $$ $! >> %s; echo >&3; while :; do sleep 0.1; done", ready = { fd = 3 }, cgroup = false, stderr = "null",
        stop = { timeout = 60 } } }
      assert(sv:start())
      print(sv:upgrade("s", nil, { drain = 60 }).outcome)
      io.stdout:flush()
      baton.sleep(1000)
    ]]):format(baton.core.getpid(), pidfile))
    f:close()
    local pids = {}
    finally(function()
      for _, pid in ipairs(pids) do if H.alive(pid) then baton.core.kill(pid, 9) end end
      os.remove(script)
      os.remove(pidfile)
    end)
    local b = baton.spawn { os.getenv("BATON_EXE") or "./build/baton", script, stdout = "pipe" }
    local terms, promoted = 0, false
    local function until_terms(n)
      while terms < n or not promoted do
        local l = assert(b.stdout:read("l"))
        if l == "term" then terms = terms + 1 elseif l == "promoted" then promoted = true end
      end
    end
    until_terms(1) -- (promoted, the old generation told to drain)
    for l in io.lines(pidfile) do
      for pid in l:gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
    end
    assert.are.equal(4, #pids)
    b:signal("INT")
    until_terms(3) -- (both generations told to stop: baton is in its grace period)
    b:signal("INT")
    assert.are.equal("SIGINT", b:wait().signame)
    b:close()
    for _, pid in ipairs(pids) do assert.is_true(H.gone_within(pid), "process " .. pid .. " outlived baton") end
    -- (KILLed with baton, its orphans came back to this process: reaped)
    H.wait_for(function() return #H.children() == 0 end, "the orphans to be reaped")
  end)

  it("an update that moves `listen` closes the old socket once no process runs the old declaration", function()
    local sv = baton.supervisor { web = web(1) }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    local old = assert(sv:listener("web", "http"))
    local fd, info = assert(baton.core.listen("tcp://127.0.0.1:0"))
    baton.core.close(fd)
    sv:update("web", web(2, { listen = { http = "tcp://127.0.0.1:" .. info.port } }))
    assert.is_true(sv:restart("web"))
    assert.are.equal("2\n", select(2, baton.http_get("http://127.0.0.1:" .. info.port .. "/")))
    assert.is_nil(baton.connect(old.url)) -- (the old port: closed, refused)
  end)

  it("keeps the listener of a new replica waiting to restart when a rolling upgrade stops half way", function()
    local dir = baton.output { "mktemp", "-d", "/tmp/baton-prune.XXXXXX" }:gsub("%s+$", "")
    finally(function() baton.run { "rm", "-rf", dir } end)
    local sock = dir .. "/new.sock"
    local old = { "sh", "-c", "while :; do sleep 0.2; done", replicas = 2, ready = 0.05,
      listen = { http = "tcp://127.0.0.1:0" }, stop = { timeout = 5 } }
    -- (replica 1 ready, then crashes once told to; replica 2 fails its trial once told to)
    local new = { "sh", "-c", 'if [ "$BATON_REPLICA" = 1 ]; then echo >&5; t=crash; else t=fail; fi; '
      .. 'while [ ! -e "$DIR/$t" ]; do sleep 0.02; done; exit 1', env = { DIR = dir }, replicas = 2,
      ready = { fd = 5, timeout = 30 }, listen = { http = "unix:" .. sock }, backoff = { initial = 30 },
      stop = { timeout = 5 } }
    local sv = baton.supervisor { x = old }
    finally(function() sv:close() end)
    assert.is_true(sv:start())
    local up = baton.go(function() return sv:upgrade("x", new, { surge = 1 }) end)
    local function first() return sv.services.x.instances[1] end
    H.wait_for(function() return first().generation == 2 and first().state == "running" end, "replica 1 upgraded")
    assert(io.open(dir .. "/crash", "w")):close()
    H.wait_for(function() return first().state == "backoff" end, "replica 1 waiting to restart")
    assert(io.open(dir .. "/fail", "w")):close()
    local r = up:wait()
    assert.are.equal("failed", r.outcome, r.reason)
    -- replica 1 runs the new declaration: its socket stays for its restart
    assert.is_truthy(sv.services.x.listeners["unix:" .. sock])
    assert.is_true(baton.run({ "test", "-S", sock }, { check = false }).ok)
  end)

  it("hands on a socket baton itself was given (its own LISTEN_FDS), through upgrades", function()
    local fd, info = assert(baton.core.listen("tcp://127.0.0.1:0"))
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[
      local sv = baton.supervisor { web = { "python3", "scripts/examples/http_server.py", env = { GEN = "1" },
        listen = { http = "systemd:outer" }, ready = "notify" } }
      assert(sv:start())
      print("up")
      io.stdout:flush()
      local r = sv:upgrade("web", { "python3", "scripts/examples/http_server.py", env = { GEN = "2" },
        listen = { http = "systemd:outer" }, ready = "notify" })
      print(r.outcome)
      io.stdout:flush()
      io.read("l")
      sv:close()
    ]])
    f:close()
    local p = baton.spawn { os.getenv("BATON_EXE") or "./build/baton", path, fds = { [3] = fd }, listen_pid = true,
      env = { LISTEN_FDS = "1", LISTEN_FDNAMES = "outer" }, stdin = "pipe", stdout = "pipe" }
    baton.core.close(fd) -- (the child has it; baton's own copy goes)
    assert.are.equal("up", p.stdout:read("l"))
    assert.are.equal("promoted", p.stdout:read("l"))
    local code, body = baton.http_get(("http://127.0.0.1:%d/"):format(info.port))
    assert.are.equal(200, code)
    assert.are.equal("2\n", body)
    p.stdin:write("done\n")
    p.stdin:close()
    assert.are.equal(0, p:wait().code)
    os.remove(path)
  end)

  it("hands on no socket when baton's LISTEN_PID is not its own or LISTEN_FDS is garbage: a start that fails", function()
    local fd = assert(baton.core.listen("tcp://127.0.0.1:0"))
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[
      local sv = baton.supervisor { web = { "python3", "scripts/examples/http_server.py",
        listen = { http = "fd:3" }, ready = "notify" } }
      print(select(2, sv:start()))
      sv:close()
    ]])
    f:close()
    local function child(env, listen_pid)
      return baton.run { os.getenv("BATON_EXE") or "./build/baton", path, fds = { [3] = fd }, listen_pid = listen_pid,
        env = env, capture = true, timeout = H.PATIENCE } -- (a bound for a hang only)
    end
    local rs = {
      child({ LISTEN_FDS = "1", LISTEN_PID = "1" }, false), -- (not baton's)
      child({ LISTEN_FDS = "1e9" }, true), -- (not a count: once a loop over a billion fds)
      child({ LISTEN_FDS = "1x" }, true),
    }
    baton.core.close(fd)
    os.remove(path)
    for _, r in ipairs(rs) do
      assert.are.equal(0, r.code, r.stderr)
      assert.matches('baton was given no socket "fd:3"', r.stdout)
    end
  end)

  it("tells baton's own manager of upgrades: RELOADING=1 once, READY=1 once all are done", function()
    local msgs = {}
    local npath = ("@baton-spec/%d/manager"):format(baton.core.getpid())
    local l = assert(baton.core.notify_listen(npath, function(_, text) msgs[#msgs + 1] = text end))
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[
      local function svc() return { "sh", "-c", "echo >&3; exec sleep 1000", ready = { fd = 3 } } end
      local sv = baton.supervisor { a = svc(), b = svc() }
      assert(sv:start())
      local ta = baton.go(function() return sv:upgrade("a") end) -- (two at once, of two services)
      local tb = baton.go(function() return sv:upgrade("b") end)
      assert(ta:wait().outcome == "promoted" and tb:wait().outcome == "promoted")
      baton.core.sd_notify("STATUS=end")
      sv:close()
    ]])
    f:close()
    local r = baton.run { os.getenv("BATON_EXE") or "./build/baton", path, env = { NOTIFY_SOCKET = npath },
      capture = true }
    os.remove(path)
    assert.are.equal(0, r.code, r.stderr)
    H.wait_for(function()
      for _, m in ipairs(msgs) do if m == "STATUS=end" then return true end end
    end, "the child's message after its upgrades")
    l:close()
    -- (started; one reload, over when both upgrades are)
    assert.are.equal("READY RELOADING READY", H.manager_states(msgs), table.concat(msgs, " | "))
  end)

  it("a reload refused for bad options leaves baton's manager told of the next upgrade", function()
    local msgs = {}
    local npath = ("@baton-spec/%d/manager-bad"):format(baton.core.getpid())
    local l = assert(baton.core.notify_listen(npath, function(_, text) msgs[#msgs + 1] = text end))
    finally(function() l:close() end)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[
      local sv = baton.supervisor { a = { "sh", "-c", "echo >&3; exec sleep 1000", ready = { fd = 3 } } }
      assert(sv:start())
      local ok, e = pcall(sv.reload, sv, "a", { timeout = "soon" })
      assert(not ok and tostring(e):find("bad argument #2 to 'reload'", 1, true), tostring(e))
      ok, e = pcall(sv.reload, sv, "a", { timout = 1 })
      assert(not ok and tostring(e):find("unknown option 'timout'", 1, true), tostring(e))
      assert(sv:upgrade("a").outcome == "promoted")
      baton.core.sd_notify("STATUS=end")
      sv:close()
    ]])
    f:close()
    local r = baton.run { os.getenv("BATON_EXE") or "./build/baton", path, env = { NOTIFY_SOCKET = npath },
      capture = true, check = false }
    os.remove(path)
    assert.are.equal(0, r.code, r.stderr)
    H.wait_for(function()
      for _, m in ipairs(msgs) do if m == "STATUS=end" then return true end end
    end, "the child's message after its upgrade")
    assert.are.equal("READY RELOADING READY", H.manager_states(msgs), table.concat(msgs, " | "))
  end)

  it("a Lua hook that raises is counted in the result, and the upgrade goes on", function()
    local sv = baton.supervisor { web = web(1) }
    assert.is_true(sv:start())
    local url = assert(sv:listener("web", "http")).url:gsub("^tcp", "http") .. "/"
    local stats, stop = load(url, 2)
    local steps = {}
    local r = sv:upgrade("web", web(2), { wait = true, hooks = {
      spawned = function() steps[#steps + 1] = "spawned" end,
      ready = function() error("hook boom") end,
      promoted = function(res) steps[#steps + 1] = "promoted " .. res.generation end,
      exited = function() steps[#steps + 1] = "exited" end,
    } })
    stop()
    assert.are.equal("promoted", r.outcome)
    assert.are.equal(1, r.hook_errors)
    assert.matches("hook boom", r.last_hook_error)
    assert.are.same({ "spawned", "promoted 2", "exited" }, steps)
    assert.are.equal(0, stats.failed, table.concat(stats.errors, "\n"))
    sv:close()
  end)
end)
