-- spec/reexec_spec.lua — baton.reexec: a baton running services replaces
-- itself (same pid, execve) and the new image adopts what runs: the same
-- processes, the same listening socket, the same log pipes; their exits are
-- seen by the new image; what the new script no longer declares is stopped.
-- Each test runs a real `baton` executable on a script of its own, and
-- reads what the script says on baton's stdout.
local baton = require "baton"
local H = require "spec.helper"

local BATON = os.getenv("BATON_EXE") or "./build/baton"
local HTTP = os.getenv("BATON_SD_HTTP")
local N = tostring(baton.core.getpid()) -- (unique sleep arguments: 1000.<spec pid><k>)

-- The script: `web` (the C server, a listener, sd_notify), `talk` (a shell
-- loop that says "ping" on USR1, lines routed by a log function), `slow`
-- (starting until USR1 makes it say READY=1 on its NOTIFY_SOCKET) and, in
-- the first version, `extra`. USR1 re-execs baton; USR2 tries to exec a
-- program that does not exist. Every event is a line on stdout.
local function script(with_extra, broken)
  return ([[
local function say(...)
  local t = {}
  for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
  io.stdout:write(table.concat(t, " "), "\n")
  io.stdout:flush()
end
local decls = {
  talk = { "sh", "-c", 'echo up $$; trap "echo ping $$; kill $! 2>/dev/null" USR1; ' ..
    'while :; do sleep 1000.%s1 & wait $!; done', log = function(line) say("talk-line", line) end },
  slow = { "sh", "-c", 'trap "systemd-notify --ready" USR1; while :; do sleep 1000.%s3 & wait $!; kill $! 2>/dev/null; done',
    ready = { notify = true, timeout = 600 } },
  %s
  %s
}
local sv = baton.supervisor(decls)
sv:on("*", function(e) say("event", e.event, e.service, e.pid, e.generation, e.status) end)
baton.on_signal("USR1", function() say("reexec-failed", select(3, baton.reexec())) end)
baton.on_signal("USR2", function() say("reexec-failed", select(3, baton.reexec { exe = "/nonexistent/baton" })) end)
baton.on_signal("URG", function() -- (a program that is not baton; from a task, reexec says how the exec went)
  baton.go(function() say("reexec-failed", select(3, baton.reexec { exe = "/bin/true" })) end)
end)
baton.on_signal("WINCH", function()
  baton.go(function() local r = sv:upgrade("web") say("upgrade", r.outcome, r.generation, r.reason) end)
end)
baton.go(function() sv:start("slow") end) -- (ready only when told: USR1)
local names = {}
for name in pairs(decls) do if name ~= "slow" then names[#names + 1] = name end end
assert(sv:start(table.unpack(names)))
local port = sv:listener("web", "http")
say("started", port and port.port)
os.exit(sv:run())
%s
]]):format(N, N, HTTP and ("web = { %q, listen = { http = 'tcp://127.0.0.1:0' }, ready = 'notify' },"):format(HTTP)
    or "", with_extra and ('extra = { "sleep", "1000.%s2" },'):format(N) or "", broken and "end end" or "")
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- The socket inode behind fd `fd` of process `pid` ("socket:[123]").
local function link(pid, fd)
  return baton.core.readlink(("/proc/%d/fd/%d"):format(pid, fd))
end

-- The children of `pid` (alive or zombie).
local function children_of(pid)
  local out = {}
  local f = io.open(("/proc/%d/task/%d/children"):format(pid, pid))
  if f then
    for c in f:read("a"):gmatch("%d+") do out[tonumber(c)] = true end
    f:close()
  end
  return out
end

-- Read what baton `b` says as it comes. Returns `expect(pattern)`, which
-- takes the first line not taken yet that matches (events of different
-- services come in any order), waiting for it, and returns its captures;
-- the lines read; and the reading task (done at the end of the output).
local function follow(b)
  local lines, eof, taken = {}, false, {}
  local reader = baton.go(function()
    pcall(function()
      for line in b.stdout:lines() do lines[#lines + 1] = line end
    end)
    eof = true
  end)
  local function expect(pattern)
    return table.unpack(H.wait_for(function()
      for i, line in ipairs(lines) do
        local caps = not taken[i] and { line:match(pattern) } or {}
        if caps[1] then
          taken[i] = true
          return caps
        end
      end
      assert.is_false(eof, "baton's output ended; waiting for " .. pattern .. "\n" .. table.concat(lines, "\n"))
    end, pattern .. " in baton's output:\n" .. table.concat(lines, "\n")))
  end
  return expect, lines, reader
end

-- Stop baton `b` if it still runs (TERM: it stops its services), and let
-- go of it and of the task reading it.
local function stop_baton(b, reader)
  if not b:poll() then
    b:signal("TERM")
    b:wait(20)
  end
  b:close()
  if reader then reader:wait() end
end

-- Run baton on the script at `path`, following its stdout (see `follow`);
-- at the test's end it is stopped and `path` and the other files named
-- are removed. Returns baton, `expect`, the lines read.
local function start(path, ...)
  local b = assert(baton.spawn { BATON, path, stdout = "pipe", stderr = "pipe" })
  local expect, seen, reader = follow(b)
  local files = { path, ... }
  finally(function()
    stop_baton(b, reader)
    for _, f in ipairs(files) do os.remove(f) end
  end)
  return b, expect, seen
end

describe("baton.reexec", function()
  H.guard()

  it("carries what waits for baton's stdout over to the new image: every line once, in order", function()
    -- `talk` sends 3.5 MB to the terminal while nothing reads baton's
    -- stdout (far more than the pipe holds); its first image re-execs with
    -- that queued, the second one says so on stderr; then stdout is read.
    local path, marker = H.tmpname(), H.tmpname()
    os.remove(marker)
    write(path, ([[
local sv = baton.supervisor {
  talk = { "sh", "-c", "seq -f 'line %%.0f' 1 200000; exec sleep 1000.%s5", log = { stdout = { "terminal" } } },
}
local second = io.open(%q) ~= nil
if not second then
  io.open(%q, "w"):close()
  baton.go(function()
    -- (with more than half a MiB queued: the pipe holds 64 KiB)
    local function seen() return tonumber(((sv:logs("talk", 1)[1]) or ""):match("%%d+")) or 0 end
    while seen() < 20000 do baton.sleep(0.01) end
    io.stderr:write("re-exec ", tostring(select(2, baton.reexec())), "\n")
  end)
end
assert(sv:start("talk"))
if second then
  baton.on_signal("USR2", function() baton.go(function() sv:stop() end) end)
  io.stderr:write("second image\n")
end
sv:run()
]]):format(N, marker, marker))
    local b <close> = assert(baton.spawn { BATON, path, stdout = "pipe", stderr = "pipe" })
    assert.are.equal("second image", b.stderr:read("l"))
    b:signal("USR2")
    local out = b.stdout:read("a")
    assert.are.equal(0, b:wait().code, b.stderr:read("a"))
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    if (lines[#lines] or ""):find(" [partial]", 1, true) then lines[#lines] = nil end -- (the stop cut seq short)
    for n, line in ipairs(lines) do assert.matches("^%d%d:%d%d:%d%d talk%.1 +| line " .. n .. "$", line) end
    assert.is_true(#lines > 20000, #lines .. " lines")
    os.remove(path)
    os.remove(marker)
  end)

  it("is refused with a clear error outside the baton executable (a lua5.4 host)", function()
    local r = baton.run { "lua5.4", "-e", [[
      local baton = require "baton"
      local ok, msg, code = baton.reexec()
      print(ok, code, msg)]], env = H.lua_env(), capture = true }
    assert.is_truthy(r.stdout:find("^nil\tENOTSUP\tENOTSUP: reexec: only the baton executable can re%-exec itself"),
      r.stdout .. r.stderr)
  end)

  it("hands over the fd store and what exited; refuses processes outside services unless forced, then reaps them",
    function()
    local path = H.tmpname()
    write(path, ([[
local function say(...)
  local t = {}
  for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
  io.stdout:write(table.concat(t, " "), "\n")
  io.stdout:flush()
end
local sv = baton.supervisor {
  st = { "python3", "spec/fdstore_peer.py", ready = "notify", fdstore = 1, backoff = { initial = 0.01 },
    log = function(line) say("st-line", line) end },
  once = { "sh", "-c", "echo once", restart = "on-failure", ready = "exec" },
}
sv:on("*", function(e) say("event", e.event, e.service, e.pid, e.generation, e.status) end)
baton.on_signal("USR1", function() say("reexec-failed", select(3, baton.reexec())) end)
baton.on_signal("USR2", function() say("reexec-failed", select(3, baton.reexec { force = true })) end)
if not require("baton.reexec").pending() then -- (the first image only)
  local job = baton.spawn { "sleep", "1000.%s4" }
  say("job", job.pid)
end
assert(sv:start())
say("started")
while true do sv:next("*") end -- (not sv:run(): its start would run `once` again)
]]):format(N))
    local b, expect, seen = start(path)
    local job = tonumber(expect("^job (%d+)"))
    assert.are.equal("parked", expect("^st%-line (.*)"))
    local st = tonumber(expect("^event ready st (%d+)"))
    expect("^started")
    expect("^event exited once")
    -- A process started outside services: refused, everything as it was.
    b:signal("USR1")
    assert.are.equal("EBUSY", expect("^reexec%-failed (%S+)"))
    -- Forced: handed over too, as a bare child of the new image.
    b:signal("USR2")
    local from = #seen
    assert.are.equal(tostring(st), expect("^event adopted st (%d+)"))
    expect("^started")
    -- A service that ran and exited for good is not run again by the new image's start.
    for k = from + 1, #seen do assert.is_nil(seen[k]:find("once", 1, true), table.concat(seen, "\n")) end
    assert.is_true(children_of(b.pid)[job], "the job still runs, baton's child")
    -- The fd store came along: the next process of st finds what the first parked.
    baton.core.kill(st, baton.signals.KILL)
    assert.are.equal("found state counter=1", expect("^st%-line (.*)"))
    local st2 = expect("^event ready st (%d+)")
    -- Once more (no process outside services now: not refused): the bare
    -- job is handed on to the next image too.
    b:signal("USR1")
    assert.are.equal(st2, expect("^event adopted st (%d+)"))
    assert.is_true(children_of(b.pid)[job], "the job still runs, baton's child")
    -- The job, killed, is reaped by the new image (no zombie left).
    baton.core.kill(job, baton.signals.KILL)
    H.wait_for(function() return not children_of(b.pid)[job] end, "the job reaped")
    b:signal("TERM")
    b.stderr:read("a")
    b:wait()
  end)

  it("routes adopted output the new way, keeps a restart's delay, stops replicas the new script drops", function()
    local path = H.tmpname()
    local logs = path .. "-%s.log"
    local function version(v)
      write(path, ([[
local function say(...)
  local t = {}
  for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
  io.stdout:write(table.concat(t, " "), "\n")
  io.stdout:flush()
end
local v = %d
local sv = baton.supervisor {
  talk = { "sh", "-c", 'echo up $$; trap "echo ping $$; kill $! 2>/dev/null" USR1; while :; do sleep 1000.%s5 & wait $!; done',
    replicas = v == 1 and 2 or 1, log = v == 1 and function(line) say("fn", line) end or %q },
  crash = { "sh", "-c", "exit 3", backoff = { initial = 1000, jitter = 0 } },
}
sv:on("*", function(e) say("event", e.event, e.service, e.replica, e.pid) end)
sv:on("restarting", function() say("retry", ("%%.6f"):format(sv:status().crash.replicas[1].next_retry)) end)
baton.on_signal("USR1", function() say("reexec-failed", select(3, baton.reexec())) end)
baton.go(function() sv:start("crash") end)
assert(sv:start("talk"))
local c = sv:status().crash.replicas[1]
say("started", v, c.state, c.next_retry and ("%%.6f"):format(c.next_retry))
while true do sv:next("*") end
]]):format(v, N, logs))
    end
    version(1)
    local file = logs:gsub("%%s", "talk.1")
    local b, expect = start(path, file)
    local one = tonumber(expect("^event ready talk 1 (%d+)"))
    local two = tonumber(expect("^event ready talk 2 (%d+)"))
    local retry = expect("^retry (%S+)")
    expect("^started 1")
    version(2)
    b:signal("USR1")
    assert.are.equal(tostring(one), expect("^event adopted talk 1 (%d+)"))
    -- The restart's delay goes on where it was (not from the re-exec).
    assert.are.equal("backoff " .. retry, expect("^started 2 (.*)$"))
    -- The second replica, no longer declared, is stopped.
    assert.is_true(H.gone_within(two), "talk.2 stopped")
    -- talk.1's pipe is routed the new way: to the file.
    baton.core.kill(one, baton.signals.USR1)
    H.wait_for(function()
      local f = io.open(file)
      local text = f and f:read("a") or ""
      if f then f:close() end
      return text:find("ping " .. one, 1, true)
    end, "ping in " .. file)
    b:signal("TERM")
    local err = b.stderr:read("a")
    b:wait()
    assert.is_truthy(err:find(("talk.2 (pid %d) was not claimed"):format(two), 1, true), err)
  end)

  it("leaves nothing it was handed running when the new script fails or exits, before or after adopting", function()
    -- The new image's script raises before its first wait, calls os.exit
    -- before it, or adopts and then calls os.exit: in each case what the
    -- first image ran is stopped (as without a re-exec), not orphaned.
    for k, ending in ipairs { 'error("v2 fails")', "os.exit(3)", "assert(sv:start()) os.exit(4)" } do
      local path, flag = H.tmpname(), H.tmpname()
      os.remove(flag)
      write(path, ([[
local sv = baton.supervisor { a = { "sleep", "1000.%s6%d" } }
sv:on("*", function(e) io.stdout:write("event ", e.event, " ", tostring(e.pid), "\n") io.stdout:flush() end)
baton.on_signal("USR1", function() baton.reexec() end)
if io.open(%q) then %s end
assert(sv:start())
io.stdout:write("started\n") io.stdout:flush()
sv:run()
]]):format(N, k, flag, ending))
      local b, expect = start(path, flag)
      local pid = tonumber(expect("^event spawned (%d+)"))
      expect("^started")
      write(flag, "")
      b:signal("USR1")
      assert.is_truthy(b:wait(20), ending .. ": baton did not exit")
      local gone = H.gone_within(pid, 5)
      if not gone then baton.core.kill(pid, baton.signals.KILL) end -- (an orphan: not the spec's child)
      assert.is_true(gone, ending .. ": the handed-over process still runs")
    end
  end)

  it("ignores a BATON_REEXEC state that is not its own: no crash, no process of it signalled", function()
    -- A fresh baton started with BATON_REEXEC set by hand, naming a file
    -- (another process's pid in it, or nonsense): it says so and runs as usual.
    local victim = assert(baton.spawn { "sleep", "1000." .. N .. "7" })
    local state = H.tmpname()
    finally(function()
      victim:kill()
      victim:wait()
      os.remove(state)
    end)
    local cases = {
      ("{version=1,pid=%d,services={ghost={stop_signal=15,stop_timeout=1,instances={[1]={index=1,state='running',"
        .. "pid=%d,pgid=%d,run_token='x'}}}}}"):format(victim.pid, victim.pid, victim.pid),
      "{services=5}", "{services={a={instances={{pid='x'}}}}}", "{services={a={listeners={{fd='x'}}}}}",
      "{notify={a='b'}}", "{out=5}", "{tokens='x'}", "{bare={0}}", "{services={",
    }
    for _, text in ipairs(cases) do
      write(state, text)
      local r = baton.run { "sh", "-c", 'exec "$0" -e "$1" 3<"$2"', BATON,
        'local sv = baton.supervisor { a = { "true" } } print("ran", require("baton.reexec").pending())', state,
        env = { BATON_REEXEC = "3" }, capture = true, check = false }
      assert.are.equal(0, r.code, text .. "\n" .. r.stderr)
      assert.are.equal("ran\tfalse\n", r.stdout, text .. "\n" .. r.stderr)
      assert.is_truthy(r.stderr:find("baton: re-exec: the state handed over cannot be", 1, true), text .. "\n" .. r.stderr)
      assert.is_nil(victim:poll(), text .. ": the process named was signalled")
    end
  end)

  it("replaces baton in place: same pids, same socket, same pipes; exits seen and restarted by the new image", function()
    local dir = H.tmpname()
    os.remove(dir)
    local path = dir .. ".lua"
    write(path, script(true))
    local msgs = {}
    local npath = ("@baton-spec/%d/reexec"):format(baton.core.getpid())
    local l = assert(baton.core.notify_listen(npath, function(_, text) msgs[#msgs + 1] = text end))
    local b = assert(baton.spawn { BATON, path, stdout = "pipe", stderr = "pipe", env = { NOTIFY_SOCKET = npath } })
    local reader
    local asked, failed, stop, client = 0, {}, false, nil
    finally(function()
      stop = true
      if client then client:wait() end
      stop_baton(b, reader)
      l:close()
      os.remove(path)
    end)
    local f = { follow(b) }
    local expect = f[1]
    reader = f[3]
    local pids = {}
    local function ready(name)
      local pid = expect("^event ready " .. name .. " (%d+)")
      pids[name] = tonumber(pid)
    end
    ready("talk")
    ready("extra")
    pids.slow = tonumber(expect("^event spawned slow (%d+)"))
    if HTTP then ready("web") end
    local port = tonumber(expect("^started (%S+)"))
    local bpid = b.pid
    local url = port and ("http://127.0.0.1:%d/"):format(port)
    H.wait_for(function() return H.manager_states(msgs) == "READY" end, "READY=1 from baton")
    local inode = HTTP and link(pids.web, 3)
    if HTTP then
      assert.is_truthy(inode:find("^socket:"), inode)
      assert.are.equal(200, baton.http_get(url))
    end
    local fds = #H.fds_of(bpid)

    -- A program that does not exist: refused, nothing changes.
    b:signal("USR2")
    assert.are.equal("ENOENT", expect("^reexec%-failed (%S+)"))
    -- One that is not baton (its -v does not say so): refused, nothing changes.
    b:signal("URG")
    assert.are.equal("EINVAL", expect("^reexec%-failed (%S+)"))
    -- A script that does not load: refused before the exec, nothing changes.
    write(path, script(true, true))
    b:signal("USR1")
    assert.are.equal("EINVAL", expect("^reexec%-failed (%S+)"))
    baton.core.kill(pids.talk, baton.signals.USR1)
    assert.are.equal(tostring(pids.talk), expect("^talk%-line ping (%d+)"))
    assert.are.equal(fds, #H.fds_of(bpid))

    -- The same script again: everything adopted, with a client asking all along.
    write(path, script(true))
    client = HTTP and baton.go(function()
      while not stop do
        local code, body = baton.http_get(url, { timeout = 10 })
        asked = asked + 1
        if code ~= 200 then failed[#failed + 1] = tostring(body) end
      end
    end)
    b:signal("USR1")
    local adopted = {}
    for _ = 1, HTTP and 4 or 3 do
      local name, pid = expect("^event adopted (%S+) (%d+)")
      adopted[name] = tonumber(pid)
    end
    assert.are.same(pids, adopted)
    expect("^started")
    local during = asked
    H.wait_for(function() return asked > during + 10 end, "requests after the re-exec")
    stop = true
    if client then client:wait() end
    assert.are.same({}, failed)
    assert.are.equal(bpid, b.pid) -- (the same process: execve)
    assert.is_nil(b:poll())
    if HTTP then
      assert.are.equal(inode, link(pids.web, 3)) -- the same socket, not bound again
      local held = false
      for _, fd in ipairs(H.fds_of(bpid)) do held = held or link(bpid, fd) == inode end
      assert.is_true(held, "baton holds the same listening socket")
    end
    -- No fd of the handover is left open: as many as before.
    H.wait_for(function() return #H.fds_of(bpid) == fds end, "baton's fd count back to " .. fds)
    -- The systemd protocol: RELOADING=1 before the exec, READY=1 once adopted.
    H.wait_for(function() return H.manager_states(msgs) == "READY RELOADING READY" end, "READY after the re-exec")

    -- A service adopted while starting: its READY=1 reaches the new image,
    -- on the notification socket the first one made (handed over, still bound).
    baton.core.kill(pids.slow, baton.signals.USR1)
    assert.are.equal(tostring(pids.slow), expect("^event ready slow (%d+)"))

    -- An upgrade of an adopted service: the next generation on the same socket.
    if HTTP then
      b:signal("WINCH")
      assert.are.equal("promoted 2", expect("^upgrade (%S+ %d+)"))
      local old = pids.web
      pids.web = tonumber(expect("^event ready web (%d+) 2"))
      assert.are.equal(inode, link(pids.web, 3))
      assert.is_true(H.gone_within(old), "the adopted generation drained")
      H.wait_for(function() return not children_of(bpid)[old] end, "the adopted generation reaped")
      assert.are.equal(200, baton.http_get(url))
    end

    -- The log pipe goes on: the same process's output reaches the route.
    baton.core.kill(pids.talk, baton.signals.USR1)
    assert.are.equal(tostring(pids.talk), expect("^talk%-line ping (%d+)"))
    -- Its death is seen by the new image, with its status, and it is restarted.
    baton.core.kill(pids.talk, baton.signals.KILL)
    local pid, st = expect("^event exited talk (%d+) %S+ (.*)$")
    assert.are.equal(tostring(pids.talk), pid)
    assert.are.equal("killed by SIGKILL", st)
    local again = tonumber(expect("^event ready talk (%d+)"))
    assert.are_not.equal(pids.talk, again)
    assert.is_true(children_of(bpid)[again])

    -- A script without `extra`: it is stopped after the re-exec, reaped by baton.
    write(path, script(false))
    b:signal("USR1")
    expect("^started")
    assert.is_true(H.gone_within(pids.extra), "extra stopped")
    H.wait_for(function() return not children_of(bpid)[pids.extra] end, "extra reaped by baton")
    if HTTP then assert.are.equal(200, baton.http_get(url)) end
    assert.is_true(children_of(bpid)[again], "talk still runs")

    -- A stop that comes with a re-exec is not lost, whichever image takes
    -- it: the services are stopped and baton exits 143 (not killed by it).
    b:signal("USR1")
    b:signal("TERM")
    local err = b.stderr:read("a")
    local st2 = b:wait()
    assert.are.equal(143, st2.code, tostring(st2))
    assert.is_truthy(err:find(("re-exec: extra.1 (pid %d) was not claimed by the script: stopping it"):format(pids.extra),
      1, true), err)
    for name, p in pairs(pids) do
      if name ~= "talk" then assert.is_true(H.gone_within(p), name .. " stopped") end
    end
    assert.is_true(H.gone_within(again))
  end)
end)
