--- baton.reexec — replace the running baton by a new image of itself
-- (a new binary, a changed script) without losing its children:
-- systemd's `daemon-reexec`, nginx's binary upgrade, s6-svscan's exec.
--
--     baton.on_signal("USR1", function() baton.reexec() end)
--
-- The pid stays (execve), so the services' processes stay baton's children
-- and its manager (systemd, a container runtime) keeps tracking it. Before
-- the exec, what runs is written down — each service's instances (pid,
-- group, cgroup, generation, state, counters), its listeners and fd store,
-- the log pipes, the notification socket — into a memfd whose fd is in
-- `BATON_REEXEC`; exactly those fds stay open across the exec. The new
-- image takes the state when `baton` is loaded (and removes the variable:
-- no child sees it), runs the script from the top, and a supervisor that
-- starts a service of the same name *adopts* its running instances instead
-- of spawning: same pids, same sockets (never bound again), same pipes.
-- What no service claims by the time the main task first waits (or ends)
-- is stopped (stop signal, stop timeout, KILL).
-- @module baton.reexec
local core = require "baton.core"
local errors = require "baton.errors"
local task = require "baton.task"
errors.own()

local M = {}
local fmt = string.format

-- ---- writing the state down ------------------------------------------------------------

-- `v` as Lua source: nil, booleans, numbers, strings and tables of them
-- (functions, userdata and metatables are left out).
local function dump(v, out)
  local t = type(v)
  if t == "table" then
    out[#out + 1] = "{"
    for k, x in pairs(v) do
      local tk, tx = type(k), type(x)
      if (tk == "string" or tk == "number") and (tx == "table" or tx == "string" or tx == "number"
        or tx == "boolean") then
        out[#out + 1] = "["
        dump(k, out)
        out[#out + 1] = "]="
        dump(x, out)
        out[#out + 1] = ","
      end
    end
    out[#out + 1] = "}"
  elseif t == "string" then
    out[#out + 1] = fmt("%q", v)
  elseif math.type(v) == "integer" then
    out[#out + 1] = fmt("%d", v)
  elseif t == "number" then
    out[#out + 1] = v ~= v and "0/0" or v == math.huge and "math.huge" or v == -math.huge and "-math.huge"
      or fmt("%.17g", v)
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  else
    out[#out + 1] = "nil"
  end
  return out
end
M._dump = function(v) return table.concat(dump(v, {})) end

local function undump(s)
  local fn, msg = load("return " .. s, "=(baton re-exec state)", "t", { math = { huge = math.huge } })
  if not fn then return nil, msg end
  local ok, v = pcall(fn)
  if not ok then return nil, tostring(v) end
  if type(v) ~= "table" then return nil, "a " .. type(v) .. ", not a table" end
  return v
end

-- ---- the program to exec ------------------------------------------------------------------

-- The running program's argv, as the kernel has it.
local function cmdline()
  local f = io.open("/proc/self/cmdline", "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local out = {}
  for a in s:gmatch("([^%z]*)%z") do out[#out + 1] = a end
  return out
end

-- The running binary's path: /proc/self/exe names it (" (deleted)" once a
-- package manager replaced the file: the new file at the same path is the
-- one to run, as systemd's daemon-reexec does).
local function self_exe()
  local path = core.readlink("/proc/self/exe")
  return path and (path:gsub(" %(deleted%)$", ""))
end

-- The Lua code `argv` (baton's arguments) runs: the script path (or false
-- for none: -e only, a REPL) and the -e chunks; or nil, why for a script
-- that cannot be run again (read from stdin).
local function sources(argv)
  local chunks, i = {}, 2
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      i = i + 1
      break
    elseif a == "-e" or a == "-l" then
      if a == "-e" then chunks[#chunks + 1] = argv[i + 1] end
      i = i + 2
    elseif a:sub(1, 2) == "-e" then
      chunks[#chunks + 1] = a:sub(3)
      i = i + 1
    elseif a:sub(1, 1) == "-" and #a > 1 then
      i = i + 1
    else
      break
    end
  end
  local script = argv[i]
  if script == "-" then return nil, "the script was read from stdin: it cannot be read again" end
  if script == "procfile" and i == 2 then script = false end
  return script or false, chunks
end

-- Whether the code baton would run loads (a syntax check, as `nginx -t`).
local function check_code(argv)
  local script, chunks = sources(argv)
  if script == nil then return nil, chunks end
  for _, c in ipairs(chunks) do
    local ok, msg = load(c, "=(command line)")
    if not ok then return nil, "-e code does not load: " .. msg end
  end
  if script then
    local ok, msg = loadfile(script)
    if not ok then return nil, "the script does not load: " .. msg end
  end
  return true
end

-- ---- the state handed over (the new image) -------------------------------------------------

-- What the previous image handed over, until claimed or swept.
local handed
local swept = false

-- Children that were neither services' nor claimed: watched (reaped with
-- their status) so that none stays a zombie.
local bare = {}
M._bare = bare

--- The state a previous image handed over (nil when this image is not a
-- re-exec, or once it was swept).
function M.state()
  return handed
end

--- Whether this image came from a re-exec (its state may be claimed still).
function M.pending()
  return handed ~= nil and not swept
end

-- Every fd and pid the state names.
local function walk(state, fd, pid)
  for _, s in pairs(state.services or {}) do
    for _, l in pairs(s.listeners or {}) do fd(l.fd) end
    for _, e in ipairs(s.fdstore or {}) do fd(e.fd) end
    for _, r in pairs(s.instances or {}) do
      if r.pid then pid(r.pid) end
      for _, st in pairs(r.log and r.log.streams or {}) do
        fd(st.r)
        fd(st.w)
      end
    end
  end
  for _, n in pairs(state.notify or {}) do fd(n) end
  for _, p in ipairs(state.bare or {}) do pid(p) end
end

-- Whether `state` is one this very process wrote before its exec (its pid
-- is ours: execve keeps it) and names fds and pids as such: nil, why
-- otherwise (a BATON_REEXEC set by hand, a state cut short), and then
-- nothing it names is touched.
local function check(state)
  if state.pid ~= core.getpid() then
    return nil, fmt("it was written by another process (pid %s), not by this one before its exec", tostring(state.pid))
  end
  local function bad(what) error(what, 0) end
  local function int(v, what, min)
    if math.type(v) ~= "integer" or v < min then bad(fmt("%s is not one (%s)", what, tostring(v))) end
  end
  local function tbl(v, what) if v ~= nil and type(v) ~= "table" then bad(what .. " is not a table") end end
  local ok, msg = pcall(function()
    for _, k in ipairs { "services", "notify", "bare", "out", "cgroup" } do tbl(state[k], k) end
    for _, k in ipairs { "tokens", "sockets" } do if state[k] ~= nil then int(state[k], k, 0) end end
    if state.cgroup and (type(state.cgroup.base) ~= "string" or type(state.cgroup.self) ~= "string") then
      bad("cgroup is not a pair of paths")
    end
    for name, s in pairs(state.services or {}) do
      if type(name) ~= "string" or type(s) ~= "table" then bad("a service is not one") end
      for _, k in ipairs { "listeners", "fdstore", "instances" } do tbl(s[k], "service " .. name .. "'s " .. k) end
      for _, r in pairs(s.instances or {}) do
        tbl(r, "an instance of " .. name)
        for _, k in ipairs { "index", "generation", "restarts", "failures", "since", "next_retry", "ready_since",
          "pgid", "main_pid" } do
          if r[k] ~= nil and type(r[k]) ~= "number" then
            bad(fmt("%s of an instance of %s is not a number", k, name))
          end
        end
        tbl(r.log, "a log of " .. name)
        if r.log then tbl(r.log.streams, "a log of " .. name) end
        for _, st in pairs(r.log and r.log.streams or {}) do tbl(st, "a log pipe of " .. name) end
      end
    end
    walk(state, function(fd) int(fd, "an fd", 3) end, function(pid) int(pid, "a pid", 1) end)
  end)
  if not ok then return nil, msg end
  return true
end

-- Whether process `pid` is a child of this one (what the previous image
-- ran is: execve keeps the children; a pid that is not names a process
-- that ended, and a pid reused since).
local function mine(pid)
  local st = core.proc_stat(pid)
  return st ~= nil and st.ppid == core.getpid()
end

-- Stop what nobody claimed; watch the bare children; tell the manager.
-- Returns the tasks of the stops.
local function sweep()
  if swept or not handed then return {} end
  swept = true
  local state = handed
  local stops = require("baton.service")._reexec_sweep(state)
  for _, pid in ipairs(state.bare or {}) do
    local p = require("baton.process").adopt(pid) -- (the handle owns it: the claim is its)
    if not p then core.reexec_unclaim(pid) end -- (gone: the orphan reaper's, if any)
    if p then
      bare[pid] = p
      task.go_internal(function()
        p:wait()
        bare[pid] = nil
      end)
    end
  end
  handed = nil
  return stops or {}
end

--- In the new image, when `baton` is loaded by the executable: take the
-- state (the fds back to close-on-exec, the children claimed before any
-- orphan reaper runs), and on the loop's first turn unblock the signals
-- held across the exec and stop what the script did not claim.
function M._take()
  local fd = core.reexec_take()
  if not fd then return end
  local data, msg = core.read_fd(fd)
  core.close(fd)
  local state, verb = nil, "read"
  if data then state, msg = undump(data) end
  if state then
    local ok, why = check(state)
    if not ok then state, msg, verb = nil, why, "used" end
  end
  if not state then
    io.stderr:write(fmt("baton: re-exec: the state handed over cannot be %s: %s\n", verb, tostring(msg):sub(1, 200)))
    core.reexec_resume()
    return
  end
  -- (a pid that is no child of ours any more: ended meanwhile, nothing to adopt)
  for _, s in pairs(state.services or {}) do
    for _, r in pairs(s.instances or {}) do
      if r.pid and not mine(r.pid) then r.pid = nil end
    end
  end
  local kids = {}
  for _, pid in ipairs(state.bare or {}) do if mine(pid) then kids[#kids + 1] = pid end end
  state.bare = kids
  walk(state, function(n) core.cloexec(n, true) end, function(pid) core.reexec_claim(pid) end)
  handed = state
  if state.out and next(state.out) then require("baton.logs")._put_out(state.out) end
  core.defer(function()
    core.reexec_resume()
    -- (after the main task first waited or ended: it declared its services)
    task.go_internal(sweep)
  end)
  -- The script fails (or ends) before its first wait: what it was handed
  -- is stopped as it would be after that wait, before baton exits.
  require("baton.runner").on_shutdown(function()
    for _, t in ipairs(sweep()) do pcall(t.wait, t) end
  end)
  -- os.exit before then (no shutdown hooks): KILLed when the state closes,
  -- as the processes the first image started would have been.
  M._guard = setmetatable({}, { __gc = function()
    if swept or handed ~= state then return end
    for _, s in pairs(state.services or {}) do
      for _, r in pairs(s.instances or {}) do
        if r.pid and not r.claimed then
          if r.pgid == r.pid then core.killpg(r.pgid, 9) end
          core.kill(r.pid, 9)
        end
      end
    end
  end })
end

-- ---- re-exec ----------------------------------------------------------------------------

-- What runs that cannot be handed over now: nil, why; or the pids of
-- the services' processes and the bare children to hand over.
local function busy(force)
  if require("baton.runner").stopping() then
    return nil, "ECANCELED", "reexec: the program is stopping (a signal came)"
  end
  local service = package.loaded["baton.service"]
  local svcpids = {}
  if service then
    local ok, msg = service._reexec_check()
    if not ok then return nil, "EBUSY", "reexec: " .. msg end
    svcpids = service._reexec_pids()
  end
  -- Processes started outside services: their tasks and pipes do not
  -- survive the exec. Refused unless forced; then handed over as bare pids.
  local out = {}
  local registry = package.loaded["baton.registry"]
  if registry then
    if not force then
      for _, j in ipairs(registry.jobs()) do
        if not (j.pid and svcpids[j.pid]) then
          return nil, "EBUSY", fmt("reexec: %s runs outside services: its waiters and pipes would be lost "
            .. "(force = true hands its processes over, to be reaped only)", tostring(j))
        end
      end
    end
    for _, p in ipairs(registry.live_children()) do
      if not svcpids[p.pid] then out[#out + 1] = p.pid end
    end
  end
  for pid, p in pairs(bare) do -- (handed over to this image bare: on to the next)
    if not p.status then out[#out + 1] = pid end
  end
  return out
end

-- The exec itself, once the checks passed: the state written down, the
-- manager told, execve. Returns only on failure: nil, msg, code.
local function exec(path, argv, force)
  -- The program must be a baton: anything else would leave every service
  -- orphaned (a shell script put at the binary's path, say). Asked as a
  -- person would: `-v` says "baton X.Y.Z …" (a wrapper that execs baton too).
  local v = require("baton").run { path, "-v", capture = true, check = false, timeout = 10, stdin = "null",
    env = { BATON_REEXEC = false } }
  if not (v.ok and v.stdout:match("^baton %d")) then
    return errors.fail("EINVAL", "reexec: %s is not baton (its -v said %q; nothing changed)", path,
      (v.stdout .. v.stderr):sub(1, 200))
  end
  local pids, code, why = busy(force)
  if not pids then return errors.fail(code, "%s", why) end
  local service = package.loaded["baton.service"]
  local state = { version = 1, pid = core.getpid(), bare = pids }
  local keep = {}
  if service then service._reexec_collect(state, keep) end
  -- Sockets baton's own manager gave it (LISTEN_FDS for baton's pid) stay
  -- baton's: the new image finds them by the same variables.
  local n, lpid = tonumber(os.getenv("LISTEN_FDS") or ""), tonumber(os.getenv("LISTEN_PID") or "")
  if n and lpid == core.getpid() and n < 1e4 then
    for k = 3, 2 + n do if core.socket_info(k) then keep[#keep + 1] = k end end
  end
  -- What waits for baton's stdout and stderr (the open files it writes
  -- them through do not survive the exec): the next image writes it first.
  local logs = package.loaded["baton.logs"]
  state.out = logs and logs._take_out() or nil
  local fd, fmsg, fcode = core.memfd("baton-reexec", M._dump(state))
  if not fd then
    if logs then logs._put_out(state.out) end
    return nil, "reexec: " .. fmsg, fcode
  end
  keep[#keep + 1] = fd
  local env = {}
  for _, kv in ipairs(core.environ()) do
    if kv:sub(1, 13) ~= "BATON_REEXEC=" then env[#env + 1] = kv end
  end
  env[#env + 1] = "BATON_REEXEC=" .. fd
  if service then service._reexec_manager("reloading") end
  io.stdout:flush()
  io.stderr:flush()
  local _, emsg, ecode = core.reexec(path, argv, env, keep)
  -- Still here: nothing changed (the fds are close-on-exec again).
  core.close(fd)
  if logs then logs._put_out(state.out) end
  if service then service._reexec_manager("ready") end
  return errors.fail(ecode or "EIO", "reexec: %s", emsg)
end

local KEYS = { exe = true, args = true, force = true }

--- Replace this baton by a new image of itself, same pid, keeping its
-- services running (see the module comment). `opts`: `exe` (the program;
-- default: the running binary's path, as newly installed there), `args`
-- (its arguments after argv[0]; default: the running ones — the same
-- script and arguments), `force` (hand over processes started outside
-- services too: they keep running, watched only to be reaped).
--
-- What can be checked is checked at once: a failure returns nil, msg,
-- code, with baton going on unchanged — ENOTSUP (not the baton
-- executable), EINVAL (the script does not load), ENOENT/EACCES (no such
-- program), EBUSY (an upgrade, a stop or a start waiting for a readiness
-- fd under way; processes started outside services, without `force`).
-- The exec itself comes one turn of the loop later, so that signals
-- arriving with the trigger are handled first (a TERM then cancels it:
-- ECANCELED): from a task, `reexec` waits for that and returns only on
-- failure (execve's error); from a callback outside tasks (a signal
-- watcher's function) it returns true at once, and a later failure is
-- written to stderr.
function M.reexec(opts)
  if opts ~= nil and type(opts) ~= "table" then errors.argerror("reexec", 1, "options table expected") end
  opts = opts or {}
  for k in pairs(opts) do
    if not KEYS[k] then errors.argerror("reexec", 1, fmt("unknown option '%s'", tostring(k))) end
  end
  if opts.exe ~= nil and type(opts.exe) ~= "string" then errors.argerror("reexec", 1, "exe: string expected") end
  if opts.args ~= nil then
    if type(opts.args) ~= "table" then errors.argerror("reexec", 1, "args: list of strings expected") end
    for i, a in ipairs(opts.args) do
      if type(a) ~= "string" then errors.argerror("reexec", 1, fmt("args[%d]: string expected", i)) end
    end
  end
  if not require("baton.runner").executable then
    return errors.fail("ENOTSUP", "reexec: only the baton executable can re-exec itself (this program hosts "
      .. "the baton module: restart it instead)")
  end
  if M.pending() then
    return errors.fail("EBUSY", "reexec: the state of the previous re-exec is not adopted yet")
  end
  local argv = cmdline()
  if not argv or #argv == 0 then return errors.fail("EIO", "reexec: cannot read /proc/self/cmdline") end
  if opts.args then argv = { argv[1], table.unpack(opts.args) } end
  local exe = opts.exe or self_exe()
  if not exe then return errors.fail("EIO", "reexec: cannot read /proc/self/exe") end
  local path, msg, code = core.lookpath(exe, nil, nil, true)
  if not path then return errors.fail(code or "ENOENT", "reexec: %s", msg) end
  local ok, why = check_code(argv)
  if not ok then return errors.fail("EINVAL", "reexec: %s (nothing changed)", why) end
  local pids, bcode, bwhy = busy(opts.force)
  if not pids then return errors.fail(bcode, "%s", bwhy) end
  -- (one turn of the loop first: the signals dispatched with the trigger are handled)
  if task.can_wait() then
    task.sleep(0)
    return exec(path, argv, opts.force)
  end
  task.go_internal(function()
    task.sleep(0)
    local _, emsg = exec(path, argv, opts.force)
    io.stderr:write("baton: ", tostring(emsg), "\n")
  end)
  return true
end

return M
