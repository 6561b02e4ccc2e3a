-- supervise.lua — baton's side of the supervisor benchmarks, run as its own
-- `baton` process so that the driver (bench/run.lua) measures this process
-- and nothing of its own.
--
--   supervise.lua idle ARG…  one `sleep ARG` service per argument (each
--       argument unique, so the driver finds the sleeps by their command
--       lines); prints "ready <pid>" once all run, then supervises until
--       SIGTERM, which stops the services as any baton script does.
--   supervise.lua crashloop SECS  /bin/false with the default policy for
--       SECS seconds; prints "<spawns> <ready events> <state>".
--   supervise.lua latency N ARG  one `sleep ARG` service, restart = "always"
--       with the backoff at its floor (initial = 0). N times: SIGKILL its
--       process and print "<exited> <spawned>", the seconds from the kill to
--       the "exited" event and to the "spawned" event of the next process
--       (event times, ev.time, are taken by the supervisor as it emits).
local core = baton.core
local mode = arg[1]

local function service(sleep_arg, extra)
  local s = { "sleep", sleep_arg, ready = "exec", stdin = "null", stdout = "null", stderr = "null" }
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

if mode == "idle" then
  local decls = {}
  for i = 2, #arg do decls[("s%02d"):format(i - 1)] = service(arg[i]) end
  local sv = baton.supervisor(decls)
  assert(sv:start())
  io.stdout:write("ready ", core.getpid(), "\n")
  io.stdout:flush()
  os.exit(sv:run())
elseif mode == "latency" then
  local n = assert(tonumber(arg[2]), "usage: supervise.lua latency N SLEEP_ARG")
  local sv = baton.supervisor {
    lat = service(arg[3], { restart = "always", backoff = { initial = 0, jitter = 0 } }),
  }
  -- Handlers only record: ev.time is when the supervisor emitted the event.
  local exited, spawned = {}, {}
  sv:on("exited", function(ev) exited[ev.pid] = ev.time end)
  sv:on("spawned", function(ev) spawned[#spawned + 1] = { pid = ev.pid, time = ev.time } end)
  assert(sv:start())
  local function current() return sv:status().lat.replicas[1].pid end
  for _ = 1, n do
    baton.sleep(0.01) -- the new sleep has exec'd and the supervisor is idle again
    local pid, seen = current(), #spawned
    local t0 = baton.now()
    core.kill(pid, 9)
    while not exited[pid] or #spawned == seen do baton.sleep(0.001) end
    io.stdout:write(("%.9f %.9f\n"):format(exited[pid] - t0, spawned[seen + 1].time - t0))
  end
  io.stdout:flush()
  sv:stop()
elseif mode == "crashloop" then
  -- /bin/false under the default policy (restart always, default backoff)
  -- for SECS seconds: how often it was started, and whether it was ever
  -- called ready or running (it never should be).
  local secs = assert(tonumber(arg[2]), "usage: supervise.lua crashloop SECS")
  local sv = baton.supervisor { crash = { "false" } }
  local spawns, ready = 0, 0
  sv:on("spawned", function() spawns = spawns + 1 end)
  sv:on("ready", function() ready = ready + 1 end)
  sv:start()
  baton.sleep(secs)
  io.stdout:write(("%d %d %s\n"):format(spawns, ready, sv:status().crash.state))
  sv:stop()
else
  io.stderr:write("usage: supervise.lua idle SLEEP_ARG… | latency N SLEEP_ARG | crashloop SECS\n")
  os.exit(100)
end
