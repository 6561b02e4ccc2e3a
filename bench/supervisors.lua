-- supervisors.lua — the supervisor benchmarks of bench/run.lua (which loads
-- this file and calls the function it returns): baton's supervisor beside
-- supervisord and s6, on the same machine, in one run.
--
-- idle: the three supervise 10 `sleep` services each, all at once, for one
--   window (BENCH_IDLE_SECS, default 60, after BENCH_IDLE_SETTLE seconds,
--   default 1); per supervisor, summed over its own processes (baton: the
--   `baton bench/supervise.lua idle` process; supervisord: 1; s6: s6-svscan
--   and its 10 s6-supervise): context switches (wakeups; every thread), CPU
--   time (utime + stime), and RSS and PSS at the end (smaps_rollup).
-- latency: BENCH_KILLS (default 50: supervisord takes
--   about a second to notice each) SIGKILLs of a supervised sleep with the
--   restart delay at its floor; p50/p99 of kill → exit noticed and kill →
--   the new process started. Baton's side is measured inside its supervisor
--   (bench/supervise.lua, event times); supervisord's by an event listener
--   (bench/supervisord_listener.py) stamping the events it is sent, against
--   the kill time taken here (both CLOCK_MONOTONIC).
--
-- Every sleep gets a unique argument, 999999999.<driver pid><number>, which
-- is how its processes are found, and how whatever is left at the end is
-- found and KILLed, by pid. Everything lives in a temporary directory that
-- goes at the end; a failure tears down first and then raises.
local core = baton.core
local fmt = string.format

return function(ROOT, BUILD, wanted)
  local IDLE_SECS = tonumber(os.getenv("BENCH_IDLE_SECS")) or 60
  local SETTLE = tonumber(os.getenv("BENCH_IDLE_SETTLE")) or 1
  local KILLS = tonumber(os.getenv("BENCH_KILLS")) or 50
  local SERVICES = 10
  local TICK = tonumber(baton.output { "getconf", "CLK_TCK" })
  local PREFIX = fmt("999999999.%07d", core.getpid())
  local function mark(k) return fmt("%s%03d", PREFIX, k) end

  local tmp = baton.output { "mktemp", "-d", "/tmp/baton-bench-sv.XXXXXX" }
  local started = {} -- processes spawned here, stopped at the end in reverse

  local function write(path, text, mode)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    if mode then baton.run { "chmod", mode, path } end
  end

  local function slurp(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return s
  end

  -- pid → {ppid, comm, args} of every process.
  local function processes()
    local out = {}
    for line in baton.lines { "ps", "-eo", "pid=,ppid=,comm=,args=" } do
      local pid, ppid, comm, args = line:match("^%s*(%d+)%s+(%d+)%s+(%S+)%s+(.*)$")
      if pid then out[tonumber(pid)] = { ppid = tonumber(ppid), comm = comm, args = args } end
    end
    return out
  end

  -- The pids of the sleeps of this run, by their argument.
  local function marked()
    local out = {}
    for pid, p in pairs(processes()) do
      local m = p.comm == "sleep" and p.args:match("^sleep (" .. PREFIX:gsub("%.", "%%.") .. "%d+)$")
      if m then out[m] = pid end
    end
    return out
  end

  -- Wait (up to 20 s) until the sleeps `ks` (mark numbers) run; their pids.
  local function await_marks(ks)
    local deadline = baton.now() + 20
    while true do
      local m, pids, all = marked(), {}, true
      for _, k in ipairs(ks) do
        pids[k] = m[mark(k)]
        if not pids[k] then all = false end
      end
      if all then return pids end
      if baton.now() > deadline then error("supervised sleeps did not all start within 20 s", 0) end
      baton.sleep(0.05)
    end
  end

  local function spawn(spec)
    spec.stdin = spec.stdin or "null"
    spec.stdout = spec.stdout or "null"
    spec.stderr = spec.stderr or { path = tmp .. "/stderr." .. (#started + 1), mode = "w" }
    local p = assert(baton.spawn(spec))
    started[#started + 1] = p
    return p
  end

  -- TERM, then KILL after 10 s; `how`: a gentler way to ask first.
  local function stop(p, how)
    if p.status then return end
    if how then how() else p:signal("TERM") end
    if not p:wait(10) then
      p:kill()
      p:wait()
    end
  end

  -- Whatever of this run is still there (a sleep whose supervisor did not
  -- take it down): KILLed by pid and counted.
  local function sweep()
    local left = 0
    for _, pid in pairs(marked()) do
      core.kill(pid, 9)
      left = left + 1
    end
    return left
  end

  local function teardown()
    for i = #started, 1, -1 do stop(started[i], started[i].stop_how) end
    started = {}
    local left = sweep()
    baton.run { "rm", "-rf", tmp }
    return left
  end

  -- ---- the peers' configurations ---------------------------------------------------------

  local function supervisord_conf(dir, programs, listener)
    baton.run { "mkdir", "-p", dir }
    local t = {
      "[supervisord]", "nodaemon=true", "logfile=" .. dir .. "/supervisord.log",
      "pidfile=" .. dir .. "/supervisord.pid", "childlogdir=" .. dir, "user=root", "",
      "[unix_http_server]", "file=" .. dir .. "/supervisor.sock", "",
      "[rpcinterface:supervisor]", "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
      "[supervisorctl]", "serverurl=unix://" .. dir .. "/supervisor.sock", "",
    }
    for _, pr in ipairs(programs) do
      for _, l in ipairs {
        "[program:" .. pr.name .. "]", "command=sleep " .. pr.arg, "autorestart=true", "startsecs=0",
        "stdout_logfile=NONE", "stderr_logfile=NONE", "",
      } do t[#t + 1] = l end
    end
    if listener then
      for _, l in ipairs {
        "[eventlistener:stamp]", fmt("command=python3 %s/bench/supervisord_listener.py %s", ROOT, listener),
        "events=PROCESS_STATE", "buffer_size=1000", "stderr_logfile=" .. dir .. "/listener.err", "",
      } do t[#t + 1] = l end
    end
    local conf = dir .. "/supervisord.conf"
    write(conf, table.concat(t, "\n"))
    return conf
  end

  -- ---- measuring processes -----------------------------------------------------------------

  -- Context switches (every thread), CPU seconds, of the processes `pids`.
  local function counters(pids)
    local vol, invol, cpu = 0, 0, 0
    for _, pid in ipairs(pids) do
      local stat = assert(slurp(("/proc/%d/stat"):format(pid)), "process gone: " .. pid)
      local f = {}
      for w in stat:match("%) (.*)$"):gmatch("%S+") do f[#f + 1] = w end
      cpu = cpu + (tonumber(f[12]) + tonumber(f[13])) / TICK -- utime, stime (fields 14, 15)
      for tid in baton.lines { "ls", ("/proc/%d/task"):format(pid) } do
        local st = slurp(("/proc/%d/task/%s/status"):format(pid, tid)) or ""
        vol = vol + tonumber(st:match("\nvoluntary_ctxt_switches:%s*(%d+)") or 0)
        invol = invol + tonumber(st:match("\nnonvoluntary_ctxt_switches:%s*(%d+)") or 0)
      end
    end
    return { vol = vol, invol = invol, cpu = cpu }
  end

  -- RSS and PSS in KiB, summed over `pids`.
  local function memory(pids)
    local rss, pss = 0, 0
    for _, pid in ipairs(pids) do
      local s = assert(slurp(("/proc/%d/smaps_rollup"):format(pid)), "process gone: " .. pid)
      rss = rss + tonumber(s:match("\nRss:%s*(%d+)"))
      pss = pss + tonumber(s:match("\nPss:%s*(%d+)"))
    end
    return rss, pss
  end

  -- p (0..1) of the samples `v`, nearest rank.
  local function pct(v, p)
    local s = { table.unpack(v) }
    table.sort(s)
    return s[math.max(1, math.ceil(p * #s))]
  end

  -- ---- idle ------------------------------------------------------------------------------------

  local function idle()
    print(("\n== idle: 10 `sleep` services each, %g s window after %g s settling, all three at once"):format(
      IDLE_SECS, SETTLE))
    local ks = { baton = {}, supervisord = {}, s6 = {} }
    for i = 1, SERVICES do
      ks.baton[i], ks.supervisord[i], ks.s6[i] = i, 100 + i, 200 + i
    end
    -- baton: its own process, running bench/supervise.lua.
    local args = { BUILD .. "/baton", ROOT .. "/bench/supervise.lua", "idle", stdout = "pipe" }
    for _, k in ipairs(ks.baton) do args[#args + 1] = mark(k) end
    local bp = spawn(args)
    local line = bp.stdout:read("l")
    assert(line and line:match("^ready "), "baton supervisor did not start: " .. tostring(line))
    -- supervisord
    local programs = {}
    for i, k in ipairs(ks.supervisord) do programs[i] = { name = fmt("s%02d", i), arg = mark(k) } end
    local sd = spawn { "supervisord", "-c", supervisord_conf(tmp .. "/supervisord-idle", programs) }
    -- s6: a scan directory with one service directory per sleep.
    local scan = tmp .. "/scan"
    for i, k in ipairs(ks.s6) do
      local d = fmt("%s/s%02d", scan, i)
      baton.run { "mkdir", "-p", d }
      write(d .. "/run", "#!/bin/sh\nexec sleep " .. mark(k) .. "\n", "+x")
    end
    local s6 = spawn { "s6-svscan", scan }
    s6.stop_how = function() baton.run { "s6-svscanctl", "-t", scan } end

    local all = {}
    for _, name in ipairs { "baton", "supervisord", "s6" } do
      for _, k in ipairs(ks[name]) do all[#all + 1] = k end
    end
    await_marks(all)
    local groups = { baton = { bp.pid }, supervisord = { sd.pid }, s6 = { s6.pid } }
    for pid, p in pairs(processes()) do
      if p.ppid == s6.pid and p.comm == "s6-supervise" then table.insert(groups.s6, pid) end
    end
    assert(#groups.s6 == SERVICES + 1, fmt("expected %d s6-supervise, found %d", SERVICES, #groups.s6 - 1))

    -- Meanwhile, in a process of its own: /bin/false under the default policy.
    local crash = baton.spawn { BUILD .. "/baton", ROOT .. "/bench/supervise.lua", "crashloop",
      tostring(SETTLE + IDLE_SECS), stdout = "pipe" }
    baton.sleep(SETTLE)
    local before = {}
    for name, pids in pairs(groups) do before[name] = counters(pids) end
    baton.sleep(IDLE_SECS)
    local rows = {}
    for _, name in ipairs { "baton", "supervisord", "s6" } do
      local after = counters(groups[name])
      local rss, pss = memory(groups[name])
      rows[#rows + 1] = {
        name = name, procs = #groups[name], rss = rss, pss = pss,
        vol = after.vol - before[name].vol, invol = after.invol - before[name].invol,
        cpu = after.cpu - before[name].cpu,
      }
    end
    local label = { baton = "baton (1 process)", supervisord = "supervisord (1 process)",
      s6 = "s6 (s6-svscan + 10 s6-supervise)" }
    print(("  %-34s %9s %9s %12s %13s %10s"):format("", "RSS KiB", "PSS KiB", "wakeups vol", "+ nonvol", "CPU ms"))
    local by = {}
    for _, r in ipairs(rows) do
      by[r.name] = r
      print(("  %-34s %9d %9d %12d %13d %10.0f"):format(label[r.name], r.rss, r.pss, r.vol, r.invol, r.cpu * 1000))
    end
    print(("  baton PSS / s6 PSS = %.2f (target <= 1.00); baton wakeups: %d (target 0); per minute: "
      .. "baton %.1f, supervisord %.1f, s6 %.1f"):format(by.baton.pss / by.s6.pss, by.baton.vol + by.baton.invol,
      (by.baton.vol + by.baton.invol) * 60 / IDLE_SECS, (by.supervisord.vol + by.supervisord.invol) * 60 / IDLE_SECS,
      (by.s6.vol + by.s6.invol) * 60 / IDLE_SECS))
    print(("  baton PSS / supervisord PSS = %.2f; baton RSS / s6 RSS = %.2f"):format(by.baton.pss / by.supervisord.pss,
      by.baton.rss / by.s6.rss))
    local n, readies, state = (crash.stdout:read("l") or ""):match("^(%d+) (%d+) (%S+)")
    crash:wait()
    print(("  meanwhile /bin/false as a service (default policy) for %g s: %s starts (target <= 10 in 60 s), "
      .. "%s ready, now %s"):format(SETTLE + IDLE_SECS, n or "?", readies or "?", state or "?"))
    return by
  end

  -- ---- latency ---------------------------------------------------------------------------------

  local function baton_latency()
    local r = baton.run { BUILD .. "/baton", ROOT .. "/bench/supervise.lua", "latency", tostring(KILLS), mark(301),
      capture = true }
    local exited, spawned = {}, {}
    for a, b in r.stdout:gmatch("(%S+) (%S+)\n") do
      exited[#exited + 1], spawned[#spawned + 1] = tonumber(a), tonumber(b)
    end
    assert(#exited == KILLS, "baton latency: " .. #exited .. " samples of " .. KILLS)
    return { exited = exited, started = spawned }
  end

  local function supervisord_latency()
    local dir = tmp .. "/supervisord-latency"
    local events = dir .. "/events"
    local conf = supervisord_conf(dir, { { name = "lat", arg = mark(302) } }, events)
    write(events, "")
    local sd = spawn { "supervisord", "-c", conf }
    local f = assert(io.open(events, "r"))
    -- The next event of `lat` named `kind` (PROCESS_STATE_<kind>) and
    -- `pid ~= not_pid`: its time and pid (polled: the listener stamps).
    local pending = {}
    local function next_event(kind, not_pid)
      local deadline = baton.now() + 10
      while true do
        while #pending > 0 do
          local e = table.remove(pending, 1)
          if e.kind == kind and (not not_pid or e.pid ~= not_pid) then return e.time, e.pid end
        end
        local l = f:read("l")
        if l then
          local t, ev, name, pid = l:match("^(%S+) PROCESS_STATE_(%S+) (%S+) (%S+)$")
          if name == "lat" then pending[#pending + 1] = { time = tonumber(t), kind = ev, pid = tonumber(pid) } end
        else
          if baton.now() > deadline then error("supervisord: no " .. kind .. " event within 10 s", 0) end
          baton.sleep(0.001)
        end
      end
    end
    local _, pid = next_event("RUNNING")
    local exited, starting, running = {}, {}, {}
    for i = 1, KILLS do
      baton.sleep(0.01)
      local t0 = baton.now()
      core.kill(pid, 9)
      local te = next_event("EXITED")
      local ts = next_event("STARTING")
      local tr, new = next_event("RUNNING", pid)
      exited[i], starting[i], running[i], pid = te - t0, ts - t0, tr - t0, new
    end
    f:close()
    stop(sd)
    return { exited = exited, starting = starting, started = running }
  end

  local function latency()
    print(("\n== kill latency: SIGKILL a supervised sleep %d times, restart delay at its floor"):format(KILLS))
    print("   (baton: backoff.initial = 0, event times; supervisord: startsecs=0, autorestart, listener stamps)")
    local b = baton_latency()
    local s = supervisord_latency()
    local function row(name, v)
      print(("  %-56s p50 %8.3f ms   p99 %8.3f ms   max %8.3f ms"):format(name, pct(v, 0.5) * 1e3, pct(v, 0.99) * 1e3,
        pct(v, 1) * 1e3))
    end
    row("baton: kill → \"exited\" event", b.exited)
    row("supervisord: kill → PROCESS_STATE_EXITED at listener", s.exited)
    row("baton: kill → \"spawned\" (next process started)", b.started)
    row("supervisord: kill → PROCESS_STATE_STARTING at listener", s.starting)
    row("supervisord: kill → PROCESS_STATE_RUNNING (new pid)", s.started)
    print(("  exit noticed: baton p99 %.3f ms (target < 1 ms); supervisord/baton p50 = %.1fx, p99 = %.1fx"):format(
      pct(b.exited, 0.99) * 1e3, pct(s.exited, 0.5) / pct(b.exited, 0.5), pct(s.exited, 0.99) / pct(b.exited, 0.99)))
    print(("  restarted: supervisord RUNNING/baton spawned p50 = %.1fx, p99 = %.1fx"):format(
      pct(s.started, 0.5) / pct(b.started, 0.5), pct(s.started, 0.99) / pct(b.started, 0.99)))
  end

  local ok, err = pcall(function()
    if wanted("supervise-idle") then idle() end
    if wanted("supervise-latency") then latency() end
  end)
  local left = teardown()
  if left > 0 then print(("  (teardown: %d sleep%s left behind, KILLed)"):format(left, left > 1 and "s" or "")) end
  if not ok then error(err, 0) end
end
