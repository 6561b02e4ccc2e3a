--- baton.service — supervisors: long-running services declared in Lua and
-- kept in the state the script describes, by events (a process exits, a
-- readiness check answers, a backoff timer fires), never by polling.
--
--     local sv = baton.supervisor {
--       db  = { "./db", "--port", "5400", ready = { fd = 3 } },
--       web = { "./web", needs = "db", replicas = 2, restart = "on-failure" },
--     }
--     sv:start()          -- db, then web once db is ready
--     print(sv:status())
--     os.exit(sv:run())   -- until stopped, or a critical service dies
--
-- A service is a declaration (a command and its policy). At run time each
-- of its replicas is an *instance* running one process tree (its own
-- process group) at a time. A *generation* is one incarnation of the
-- declaration: starting a stopped service or restarting it makes a new
-- one; a crash restart stays in the same generation (the hot-upgrade work
-- runs two side by side).
--
-- Instance states: stopped → waiting (for its needs) → starting (spawned,
-- not ready) → running (ready) → stopping → stopped; a process that exits
-- goes to backoff (a restart is due at `next_retry`), exited (done, not
-- restarted) or failed (gave up, or failed with restart = "never").
-- @module baton.service
local core = require "baton.core"
local task = require "baton.task"
local errors = require "baton.errors"
local options = require "baton.options"
local command = require "baton.command"
local process = require "baton.process"
local runner = require "baton.runner"
errors.own()

local M = {}
local fmt, now = string.format, core.now
local argerror = errors.argerror

-- ---- declarations -------------------------------------------------------------------

-- Policy keys of a declaration; anything else is the command's.
local POLICY = {
  cmd = true, replicas = true, needs = true, bind = true, restart = true, success = true, backoff = true,
  give_up = true, ready = true, stop = true, critical = true, limits = true, cgroup = true, health = true,
  watchdog = true, log = true, listen = true, handoff = true, fdstore = true,
}
-- How a generation receives its listeners (fds from 3, in declaration order).
local HANDOFF = {
  -- systemd's socket activation: LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID (the
  -- child's own pid, written by the child).
  systemd = function(ls, env, extra)
    local names = {}
    for i, l in ipairs(ls) do names[i] = l.name end
    env.LISTEN_FDS, env.LISTEN_FDNAMES = tostring(#ls), table.concat(names, ":")
    extra.listen_pid = true
  end,
  -- nginx's own binary-upgrade variable: NGINX="3;4;". nginx takes these
  -- sockets as its old master left them, non-blocking, and does not set
  -- that itself: on a blocking one a worker that loses the race for a
  -- connection to another process blocks in accept(), its other
  -- connections stalled until one more arrives.
  nginx = function(ls, env)
    local fds = {}
    for i, l in ipairs(ls) do
      if not l.stored then -- (the fd store's are no listeners: not nginx's to take)
        core.setblocking(l.fd, false)
        fds[#fds + 1] = (2 + i) .. ";"
      end
    end
    env.NGINX = table.concat(fds)
  end,
  -- php-fpm's: FPM_SOCKETS="addr=3,addr=4".
  fpm = function(ls, env)
    local t = {}
    for i, l in ipairs(ls) do
      if not l.stored then t[#t + 1] = (l.info.path or (l.info.address .. ":" .. l.info.port)) .. "=" .. (2 + i) end
    end
    env.FPM_SOCKETS = table.concat(t, ",")
  end,
  -- The fds alone (3, 4, … in name order), no variable: for servers told
  -- in their configuration (HAProxy's `bind fd@3`).
  fd = function() end,
}
M.HANDOFF = HANDOFF
-- Resource limits → the cgroup file and controller each needs.
local LIMITS = { memory = { "memory.max", "memory" }, pids = { "pids.max", "pids" }, cpu = { "cpu.max", "cpu" } }
local RESTART = { always = true, ["on-failure"] = true, never = true }
local BACKOFF = { initial = 0.1, max = 30, factor = 2, jitter = 0.2, reset = 10 }
local READY_KINDS = { fd = true, line = true, alive = true, notify = true, exec = true, tcp = true, http = true,
  check = true }
local PROBES = { exec = true, tcp = true, http = true, check = true }
local READY_LIST = "fd, line, alive, notify, exec, tcp, http, check"

local function bad(name, fmtstr, ...)
  argerror("service", 1, fmt("service '%s': " .. fmtstr, name, ...))
end

local function seconds(name, what, v)
  if not options.is_seconds(v) then
    bad(name, "%s must be a number of seconds, got %s", what, type(v) == "number" and tostring(v) or type(v))
  end
  return v
end

-- The argument of check `kind` (a probe, or a readiness check), checked;
-- `what` names it in errors ("ready.tcp", "health.http").
local function check_arg(name, what, kind, v)
  if kind == "fd" then
    if math.type(v) ~= "integer" or v < 3 or v > 1023 then
      bad(name, "%s must be an fd number from 3 to 1023, got %s", what, tostring(v))
    end
  elseif kind == "line" then
    if type(v) ~= "string" then bad(name, "%s must be a Lua pattern, got %s", what, type(v)) end
  elseif kind == "alive" then
    seconds(name, what, v)
  elseif kind == "notify" then
    if v ~= true then bad(name, "%s must be true, got %s", what, tostring(v)) end
  elseif kind == "exec" then
    local ok, c = pcall(command.cmd, v, "service")
    if not ok then bad(name, "%s: %s", what, (tostring(c):gsub("^.-bad argument #1 to 'service' %((.*)%)$", "%1"))) end
    return c
  elseif kind == "tcp" or kind == "http" then
    local net = require "baton.net"
    local ok, err = pcall(kind == "tcp" and net.check_address or net.check_url, v)
    if not ok then bad(name, "%s: %s", what, (tostring(err):gsub("^.-bad argument #1 to '[%w_]+' %((.*)%)$", "%1"))) end
  elseif kind == "check" then
    if type(v) ~= "function" then bad(name, "%s must be a function, got %s", what, type(v)) end
  end
  return v
end

-- `ready`: what makes an instance ready. Returns {kind, arg, timeout, interval}.
local function readiness(name, r)
  if r == nil then return { kind = "alive", arg = 1, timeout = 30 } end
  if r == "exec" then return { kind = "spawned", timeout = 30 } end
  if r == "notify" then return { kind = "notify", timeout = 30 } end
  if type(r) == "number" then return { kind = "alive", arg = seconds(name, "ready", r), timeout = r + 30 } end
  if type(r) == "function" then return { kind = "check", arg = r, timeout = 30, interval = 0.1 } end
  if type(r) ~= "table" then
    bad(name, "ready must be \"exec\", \"notify\", seconds, a function or a table, got %s",
      type(r) == "string" and fmt("%q", r) or type(r))
  end
  local out = { timeout = 30, interval = 0.1 }
  for k, v in pairs(r) do
    if k == "timeout" or k == "interval" then
      out[k] = seconds(name, "ready." .. k, v)
    elseif READY_KINDS[k] then
      if out.kind then bad(name, "ready has two checks: %s and %s", out.kind, k) end
      out.kind, out.arg = k, check_arg(name, "ready." .. k, k, v)
    else
      bad(name, "unknown readiness check '%s' (%s, timeout, interval)", tostring(k), READY_LIST)
    end
  end
  if not out.kind then bad(name, "ready names no check (%s)", READY_LIST) end
  if out.kind == "alive" then out.timeout = math.max(out.timeout, out.arg + 1) end
  return out
end

-- `health`: a probe run every `interval` seconds once ready; `failures`
-- in a row (each failing or not answering within `timeout`) restart it.
local function health(name, h)
  if h == nil then return nil end
  if type(h) == "function" then h = { check = h } end
  if type(h) ~= "table" then bad(name, "health must be a table or a function, got %s", type(h)) end
  local out = { interval = 10, timeout = 5, failures = 3 }
  for k, v in pairs(h) do
    if k == "interval" or k == "timeout" then
      out[k] = seconds(name, "health." .. k, v)
      if v <= 0 then bad(name, "health.%s must be above 0, got %s", k, v) end
    elseif k == "failures" then
      if math.type(v) ~= "integer" or v < 1 then
        bad(name, "health.failures must be a count from 1, got %s", tostring(v))
      end
      out.failures = v
    elseif PROBES[k] then
      if out.kind then bad(name, "health has two probes: %s and %s", out.kind, k) end
      out.kind, out.arg = k, check_arg(name, "health." .. k, k, v)
    else
      bad(name, "unknown health option '%s' (exec, tcp, http, check, interval, timeout, failures)", tostring(k))
    end
  end
  if not out.kind then bad(name, "health names no probe (exec, tcp, http, check)") end
  return out
end

-- `log`: routes for both streams, or `{stdout = routes, stderr = routes}`
-- (see baton.logs).
function M._log_routes(name, l)
  local logs = require "baton.logs"
  local what = fmt("service '%s': log", name)
  local drop
  if type(l) == "table" and l.drop ~= nil then
    if type(l.drop) ~= "boolean" then bad(name, "log.drop must be a boolean, got %s", type(l.drop)) end
    local copy = {}
    for k, v in pairs(l) do if k ~= "drop" then copy[k] = v end end
    l, drop = copy, l.drop
  end
  if type(l) == "table" and (l.stdout ~= nil or l.stderr ~= nil) and not l.file then
    for k in pairs(l) do
      if k ~= "stdout" and k ~= "stderr" then
        bad(name, "unknown log stream '%s' (stdout, stderr, drop)", tostring(k))
      end
    end
    return { stdout = logs.check(l.stdout, what .. ".stdout"), stderr = logs.check(l.stderr, what .. ".stderr"),
      drop = drop }
  end
  local routes = logs.check(l, what)
  return { stdout = routes, stderr = routes, drop = drop }
end

-- A declaration, checked: {name, cmd, replicas, needs, policy…}.
local function declare(name, spec)
  if type(name) ~= "string" or not name:match("^[%w_][%w_.-]*$") then
    argerror("service", 1, fmt("service names are words (letters, digits, _ . -), got %s",
      type(name) == "string" and fmt("%q", name) or type(name)))
  end
  if type(spec) == "string" or getmetatable(spec) == command.Command then spec = { cmd = spec } end
  if type(spec) ~= "table" then bad(name, "table expected, got %s", type(spec)) end
  local d = { name = name }
  local cmd = spec.cmd
  if cmd == nil then -- the command's words and options are the declaration's own
    cmd = {}
    for k, v in pairs(spec) do if not POLICY[k] then cmd[k] = v end end
    if cmd[1] == nil then bad(name, "no command (give cmd = … or the program as the first item)") end
  else
    for k in pairs(spec) do
      if not POLICY[k] then bad(name, "unknown option '%s' (the command's options go in cmd)", tostring(k)) end
    end
  end
  local ok, c = pcall(command.cmd, cmd, "service")
  if not ok then bad(name, "%s", (tostring(c):gsub("^.-bad argument #1 to 'service' %((.*)%)$", "%1"))) end
  d.cmd = c
  local argv0 = c.__command[1]
  if type(argv0) ~= "string" then bad(name, "the program must be a string, got %s", type(argv0)) end
  if not argv0:find("/", 1, true) and not process.which(argv0) then
    bad(name, "program '%s' not found in PATH", argv0)
  end
  local r = spec.replicas or 1
  if math.type(r) ~= "integer" or r < 0 or r > 10000 then
    bad(name, "replicas must be an integer from 0 to 10000, got %s", tostring(r))
  end
  d.replicas = r
  local needs = spec.needs or {}
  if type(needs) == "string" then needs = { needs } end
  if type(needs) ~= "table" then bad(name, "needs must be a name or a list of names, got %s", type(needs)) end
  d.needs = {}
  for i, n in ipairs(needs) do
    if type(n) ~= "string" then bad(name, "needs[%d] must be a service name, got %s", i, type(n)) end
    d.needs[i] = n
  end
  for _, k in ipairs { "bind", "critical" } do
    if spec[k] ~= nil and type(spec[k]) ~= "boolean" then
      bad(name, "%s must be a boolean, got %s", k, type(spec[k]))
    end
  end
  d.bind = spec.bind == true
  local restart = spec.restart or "always"
  if not RESTART[restart] then
    bad(name, "restart must be \"always\", \"on-failure\" or \"never\", got %s", tostring(restart))
  end
  d.restart = restart
  d.success = {}
  local success = spec.success or { 0 }
  if type(success) ~= "table" then
    bad(name, "success must be a list of exit codes and signal names, got %s", type(success))
  end
  for i, v in ipairs(success) do
    if math.type(v) == "integer" then
      d.success[v] = true
    elseif type(v) == "string" and core.signum(v) then
      d.success[core.signum(v) + 1000] = true -- (signals by number + 1000: no clash with codes)
    else
      bad(name, "success[%d] must be an exit code or a signal name, got %s", i, tostring(v))
    end
  end
  local b = {}
  for k, v in pairs(BACKOFF) do b[k] = v end
  if spec.backoff ~= nil then
    if type(spec.backoff) ~= "table" then bad(name, "backoff must be a table, got %s", type(spec.backoff)) end
    for k, v in pairs(spec.backoff) do
      if BACKOFF[k] == nil then
        bad(name, "unknown backoff option '%s' (initial, max, factor, jitter, reset)", tostring(k))
      end
      b[k] = seconds(name, "backoff." .. k, v)
    end
    if b.factor < 1 then bad(name, "backoff.factor must be at least 1, got %s", b.factor) end
    if b.jitter > 1 then bad(name, "backoff.jitter must be from 0 to 1, got %s", b.jitter) end
  end
  d.backoff = b
  local g = spec.give_up
  if g ~= nil and (math.type(g) ~= "integer" or g < 0) then
    bad(name, "give_up must be a count of restarts, got %s", tostring(g))
  end
  d.give_up = g
  d.ready = readiness(name, spec.ready)
  d.health = health(name, spec.health)
  if spec.watchdog ~= nil then
    d.watchdog = seconds(name, "watchdog", spec.watchdog)
    if d.watchdog <= 0 then bad(name, "watchdog must be above 0 seconds, got %s", d.watchdog) end
  end
  local stop = spec.stop
  if stop == nil or type(stop) == "string" or type(stop) == "number" then stop = { signal = stop } end
  if type(stop) ~= "table" then bad(name, "stop must be a signal or a table, got %s", type(stop)) end
  for k in pairs(stop) do
    if k ~= "signal" and k ~= "timeout" then bad(name, "unknown stop option '%s' (signal, timeout)", tostring(k)) end
  end
  d.stop_signal = options.signum(stop.signal or "TERM", "service", 1)
  d.stop_timeout = stop.timeout and seconds(name, "stop.timeout", stop.timeout) or 10
  d.critical = spec.critical == true
  if spec.listen ~= nil then
    if type(spec.listen) ~= "table" then
      bad(name, "listen must be a table of name = address, got %s", type(spec.listen))
    end
    d.listen = {}
    for lname, v in pairs(spec.listen) do
      if type(lname) ~= "string" or not lname:match("^[%w_.-]+$") then
        bad(name, "listen: names are words (they become LISTEN_FDNAMES), got %s", tostring(lname))
      end
      local addr, opts = v, {}
      if type(v) == "table" then
        addr = v[1] or v.address
        for k, x in pairs(v) do if k ~= 1 and k ~= "address" then opts[k] = x end end
      end
      if type(addr) ~= "string" or not addr:match("^%a+:") then
        bad(name, "listen.%s: an address as \"tcp://127.0.0.1:8080\", \"udp://…\" or \"unix:/path\" expected, got %s",
          lname, type(addr) == "string" and fmt("%q", addr) or type(addr))
      end
      d.listen[#d.listen + 1] = { name = lname, address = addr, opts = opts }
    end
    table.sort(d.listen, function(x, y) return x.name < y.name end)
    -- One socket per entry: an address given twice is two sockets (port 0:
    -- two ports; reuseport: one port shared) or a mistake (it binds once).
    local seen = {}
    for _, l in ipairs(d.listen) do
      local first = seen[l.address]
      if first and not (l.address:match(":0$") or l.opts.reuseport) then
        bad(name, "listen.%s and listen.%s: the same address %q (a socket binds once)", first.name, l.name, l.address)
      end
      l.key = first and fmt("%s#%d", l.address, first.n + 1) or l.address
      seen[l.address] = { name = first and first.name or l.name, n = first and first.n + 1 or 1 }
    end
  end
  if spec.fdstore ~= nil and (math.type(spec.fdstore) ~= "integer" or spec.fdstore < 0 or spec.fdstore > 1000) then
    bad(name, "fdstore must be a count of fds from 0 to 1000, got %s", tostring(spec.fdstore))
  end
  d.fdstore = spec.fdstore
  -- (the listeners, then the fd store, take the fds from 3)
  local passed = #(d.listen or {}) + (d.fdstore or 0)
  if d.ready.kind == "fd" and d.ready.arg >= 3 and d.ready.arg < 3 + passed then
    bad(name, "ready fd %d is taken: fds 3 to %d are its listeners and stored fds (use %d or above)", d.ready.arg,
      2 + passed, 3 + passed)
  end
  local h = spec.handoff or "systemd"
  if not (HANDOFF[h] or type(h) == "function") then
    bad(name, "handoff must be \"systemd\", \"nginx\", \"fpm\", \"fd\" or a function, got %s", tostring(h))
  end
  d.handoff = HANDOFF[h] or h
  d.log = spec.log ~= nil and M._log_routes(name, spec.log) or nil
  if d.ready.kind == "line" then -- read from the held stdout (passed on as it is, unless routed)
    d.log = d.log or {}
    d.log.stdout = d.log.stdout or { "raw" }
  end
  if spec.cgroup ~= nil and type(spec.cgroup) ~= "boolean" then
    bad(name, "cgroup must be a boolean, got %s", type(spec.cgroup))
  end
  d.cgroup = spec.cgroup ~= false
  d.limits = {}
  if spec.limits ~= nil then
    if type(spec.limits) ~= "table" then bad(name, "limits must be a table, got %s", type(spec.limits)) end
    for k, v in pairs(spec.limits) do
      if not LIMITS[k] then bad(name, "unknown limit '%s' (memory, pids, cpu)", tostring(k)) end
      if k == "cpu" and type(v) == "number" then
        if not (v > 0 and v <= 4096) then bad(name, "limits.cpu must be a number of CPUs above 0, got %s", v) end
        v = fmt("%d 100000", math.floor(v * 100000 + 0.5))
      elseif math.type(v) == "integer" and v > 0 then
        v = tostring(v)
      elseif type(v) ~= "string" or not v:match("^[%w .]+$") then
        bad(name, "limits.%s must be a positive integer or a cgroup value such as \"max\", got %s", k,
          type(v) == "string" and fmt("%q", v) or type(v) == "number" and tostring(v) or type(v))
      end
      d.limits[#d.limits + 1] = { k, v }
    end
    table.sort(d.limits, function(x, y) return x[1] < y[1] end)
    if not d.cgroup and #d.limits > 0 then bad(name, "limits need a cgroup (cgroup = false)") end
  end
  return d
end

-- ---- cgroups: a leaf per instance, where the host lets baton make one ---------------------------

-- Baton's own parent group for services (`<its group>/baton-<pid>`), made
-- on first use; nil and why not where there is no writable cgroup v2.
local cg = {}

-- What batons of this pid namespace killed hard (no chance to clean up)
-- left beside ours: `baton-<ns>-<pid>-<hex>` groups whose baton is gone,
-- removed with their leaves. The kernel refuses to remove a group that
-- holds a process, so nothing that runs is touched.
local function cgroup_sweep(self, ns)
  for _, name in ipairs(core.cgroup_children(self) or {}) do
    local n, pid = name:match("^baton%-(%d+)%-(%d+)%-%x+$")
    if tonumber(n) == ns and tonumber(pid) ~= core.getpid() and not core.proc_stat(tonumber(pid)) then
      local dir = self .. "/" .. name
      for _, leaf in ipairs(core.cgroup_children(dir) or {}) do core.cgroup_remove(dir .. "/" .. leaf) end
      core.cgroup_remove(dir)
    end
  end
end
M._cgroup_sweep = cgroup_sweep

local function cgroup_base()
  if cg.checked then return cg.base, cg.why end
  cg.checked = true
  local self, msg = core.cgroup_self()
  -- (the pid namespace, the pid and a random part: a baton in another pid
  -- namespace may have our pid, and its groups are not ours to sweep)
  local ns = core.pidns() or 0
  if self then cgroup_sweep(self, ns) end
  local name = fmt("baton-%d-%d-%06x", ns, core.getpid(), math.random(0, 0xffffff))
  if self then cg.base, msg = core.cgroup_create(self, name) end
  if not cg.base then
    cg.why = "no cgroup: " .. tostring(msg)
    return nil, cg.why
  end
  cg.self = self
  return cg.base
end

-- Make `controllers` available to the groups under the base: enabled in
-- baton's group and in the base. The kernel lets a group that holds
-- processes give none to its children, so baton moves itself into a leaf
-- of the base when its group refuses (a container's or a unit's group).
-- Returns true, or nil and what is missing.
local function cgroup_controllers(controllers)
  local list = table.concat(controllers, " ")
  local missing, msg, code = core.cgroup_enable(cg.self, list)
  if not missing and code == "EBUSY" then
    local leaf = core.cgroup_create(cg.base, "supervisor")
    if leaf and core.cgroup_set(leaf, "cgroup.procs", "0") then
      missing, msg = core.cgroup_enable(cg.self, list)
    end
  end
  if missing and #missing == 0 then missing, msg = core.cgroup_enable(cg.base, list) end
  if not missing then return nil, msg end
  if #missing > 0 then
    return nil, fmt("the %s controller%s not available in %s", table.concat(missing, ", "),
      #missing > 1 and "s are" or " is", cg.self)
  end
  return true
end

-- Remove the base once every supervisor is done with it.
local function cgroup_release()
  if cg.base and core.cgroup_remove(cg.base) then cg.base, cg.checked = nil, nil end
end

-- ---- instances: one replica, one process tree at a time -----------------------------------

-- Whether routes `a` and `b` are the same (tables compared item by item;
-- functions by identity).
local function same(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- Whether a live process of service `svc` other than `but`'s writes to `log`.
local function log_in_use(svc, log, but)
  for _, i in ipairs(svc.instances) do if i ~= but and i.log == log and i.proc then return true end end
  for i in pairs(svc.extra or {}) do if i ~= but and i.log == log and i.proc then return true end end
  return false
end

-- Replica `index` of service `svc` writes to `log` from now on; the one it
-- replaces closes unless a process (of a draining generation) still writes
-- to it: that one closes it when it stops.
local function adopt_log(svc, index, log)
  local held = svc.logs[index]
  svc.logs[index] = log
  if held and held ~= log and not held.closed and not log_in_use(svc, held) then held:close() end
end

--- Instances (of an upgrade: promoted, or back after a rollback) are their
-- replicas' from now on: so are their logs.
function M._adopt_logs(svc, instances)
  svc.logs = svc.logs or {}
  for _, i in ipairs(instances) do if i.log then adopt_log(svc, i.index, i.log) end end
end


local Instance = {}
Instance.__index = Instance

local tokens = 0
local sockets = 0 -- (NOTIFY_SOCKETs made: part of their names)

-- After a re-exec: the counters go on from the previous image's (its
-- processes' tokens and sockets keep their names), and so does its cgroup.
do
  local h = require("baton.reexec").state()
  if h then
    tokens, sockets = h.tokens or 0, h.sockets or 0
    if h.cgroup and h.cgroup.base then cg.checked, cg.base, cg.self = true, h.cgroup.base, h.cgroup.self end
  end
end

local function new_instance(svc, index)
  tokens = tokens + 1
  return setmetatable({ service = svc, index = index, state = "stopped", since = now(), restarts = 0,
    failures = 0, generation = 0, ready = false, token = core.getpid() .. "." .. tokens }, Instance)
end

-- The declaration this instance runs: its generation's (an upgrade's new
-- one), else the service's.
function Instance:_decl()
  return self.decl or self.service.decl
end

function Instance:_label()
  local svc = self.service
  return #svc.instances > 1 and fmt("%s.%d", svc.name, self.index) or svc.name
end

-- Move to `state` (visible to waiters); `ev`: the event that goes with it.
function Instance:_set(state, ev)
  if self.state ~= state then
    self.state, self.since = state, now()
  end
  self.ready = state == "running"
  local sv = self.service.sv
  if ev then
    ev.service, ev.replica, ev.generation = self.service.name, self.index, self.generation
    ev.pid = ev.pid or self.pid
    sv:_emit(ev)
  end
  sv:_changed(self.service)
end

function Instance:_clear_timers()
  for _, k in ipairs { "_retry", "_ready_timer", "_kill_timer", "_watchdog", "_health" } do
    if self[k] then
      self[k]:close()
      self[k] = nil
    end
  end
  self.next_retry = nil
end

local function timer(secs, fn, ref)
  local t = core.timer()
  t:start(options.ms(secs), 0, fn)
  if ref == false then t:ref(false) end
  return t
end

-- Whether process `pid` carries `token` in its environment (inherited from
-- the instance's main process, unless a program cleared it).
local function carries(pid, token)
  local f = io.open("/proc/" .. pid .. "/environ", "rb")
  if not f then return false end
  local env = f:read("a") or ""
  f:close()
  return ("\0" .. env):find("\0BATON_INSTANCE=" .. token .. "\0", 1, true) ~= nil
end

-- Send `sig` to a process tree: group `pgid`, every descendant of the
-- live main process `main` (also those that left the group with setsid),
-- and the orphans that came back to baton (a subreaper) and still carry
-- the spawn's BATON_INSTANCE `token`. Each process gets it once: a server
-- may read a second one as more urgent (lighttpd: a second INT ends its
-- graceful shutdown at once, dropping the connections it was finishing).
local function kill_tree(sig, pgid, main, token, leaf)
  if leaf and sig == 9 then core.cgroup_kill(leaf) end
  if pgid then core.killpg(pgid, sig) end
  local sent = {}
  local function once(pid)
    if sent[pid] then return end
    sent[pid] = true
    local st = pgid and core.proc_stat(pid)
    if not (st and st.pgid == pgid) then core.kill(pid, sig) end -- (the group's have it)
  end
  if leaf then -- exact: everything in the group
    for pid in (core.cgroup_get(leaf, "cgroup.procs") or ""):gmatch("%d+") do
      pid = tonumber(pid)
      if pid > 1 then once(pid) end -- (0: a process outside our pid namespace)
    end
  end
  if main then
    once(main) -- (a successor it follows (MAINPID=) may have left the group)
    for _, pid in ipairs(core.descendants(main) or {}) do once(pid) end
  end
  for _, pid in ipairs(core.descendants(core.getpid()) or {}) do
    if pid ~= main and carries(pid, token) then once(pid) end
  end
end

-- Send `sig` to the instance's whole tree.
function Instance:_signal(sig)
  if self.run_token then kill_tree(sig, self.pgid, self.proc and self.pid, self.run_token, self.cgroup) end
end

-- KILL what earlier processes of the instance left (by their tokens; their
-- group ids may be others' by now), and wait until it is gone.
function Instance:_sweep()
  local toks = self._leftovers or {}
  self._leftovers = nil
  if self.run_token and not self.proc then toks[#toks + 1] = self.run_token end
  local leaf = self.cgroup
  -- (cgroup.kill waits for the kernel's cgroup lock: not when empty)
  if leaf and core.cgroup_populated(leaf) then core.cgroup_kill(leaf) end
  for _ = 1, 200 do
    local left = leaf and core.cgroup_populated(leaf) or false
    for _, pid in ipairs(core.descendants(core.getpid()) or {}) do
      for _, tok in ipairs(toks) do
        if carries(pid, tok) then
          core.kill(pid, 9)
          left = true
        end
      end
      -- (a KILLed one is a zombie for a moment, until the loop reaps it)
      local st = not left and core.proc_stat(pid)
      if st and st.state == "Z" then left = true end
    end
    if not left or not task.can_wait() then return end
    task.sleep(0.005) -- (a KILLed process is gone within a scheduler tick)
  end
end

-- What the child needs for its readiness check; returns spawn options to add.
function Instance:_ready_setup(env)
  local r = self:_decl().ready
  if r.kind == "fd" then
    local rfd, wfd = core.pipe()
    self._ready_fd, self._ready_wfd = rfd, wfd
    return { fds = { [r.arg] = wfd } }
  end
  return {}, env
end

-- The instance is ready (if this is still the process being checked).
function Instance:_became_ready(p)
  if self.proc ~= p or self.state ~= "starting" then return end
  if self._ready_timer then
    self._ready_timer:close()
    self._ready_timer = nil
  end
  self.reloading = nil
  self:_set("running", { event = "ready" })
  self:_arm_watchdog()
  self:_start_health(p)
  local svc = self.service
  self.ready_since = now() -- (stable after backoff.reset seconds: see _failures)
  svc.sv:_advance_dependents(svc)
end

-- Failed starts and crashes in a row: none once the process ran ready
-- for `backoff.reset` seconds (judged when asked: no timer, no wakeup).
function Instance:_failures()
  if self.ready_since and now() - self.ready_since >= self:_decl().backoff.reset then
    self.failures = 0
  end
  return self.failures
end

-- Run probe `kind` (exec, tcp, http, check) once, within `timeout`
-- seconds: true, or false and why not.
local function probe(kind, arg, timeout, inst)
  if kind == "check" then
    local ok, v = pcall(arg, inst)
    if not ok then return false, tostring(v) end
    return v and true or false, "the check returned " .. tostring(v)
  elseif kind == "exec" then
    local r = require("baton.run").run(options.with(arg,
      { check = false, timeout = timeout, stdin = "null", stdout = "null", stderr = "null" }, true))
    return r.ok, fmt("%s: %s", errors.quote_argv(r.argv), tostring(r))
  elseif kind == "tcp" then
    local conn, msg = require("baton.net").connect(arg, { timeout = timeout })
    if not conn then return false, msg end
    conn:close()
    return true
  end
  local code, body = require("baton.net").http_get(arg, { timeout = timeout })
  if not code then return false, body end
  if code >= 200 and code < 300 then return true end
  return false, fmt("HTTP status %d from %s", code, arg)
end

-- The process runs, but the instance is not live (watchdog, health): it
-- goes like a stop (signal, CONT for a stopped one, KILL after the stop
-- timeout) and counts as a failure, whatever its exit status.
function Instance:_fail_liveness(msg)
  if not self.proc or self._liveness_fail or self.state == "stopping" then return end
  self._liveness_fail, self.last_error = msg, msg
  local d = self:_decl()
  self:_signal(d.stop_signal)
  self:_signal(18) -- SIGCONT: a stopped process gets to handle it
  self._kill_timer = timer(d.stop_timeout, function() self:_signal(9) end)
end

-- Arm (again) the watchdog: WATCHDOG=1 must come within `secs`.
function Instance:_arm_watchdog(secs)
  self.watchdog = secs or self.watchdog
  if not self.watchdog or not self.proc then return end
  if self._watchdog then self._watchdog:close() end
  self._watchdog = timer(self.watchdog, function()
    self._watchdog:close()
    self._watchdog = nil
    self:_fail_liveness(fmt("watchdog: no WATCHDOG=1 within %gs", self.watchdog))
  end)
end

-- Health probes every `interval` seconds while the process runs and is ready.
function Instance:_start_health(p)
  local h = self:_decl().health
  if not h then return end
  local t = core.timer()
  self._health, self.health_failures = t, 0
  local busy = false
  t:start(options.ms(h.interval), options.ms(h.interval), function()
    if busy then return end
    busy = true
    task.go_internal(function()
      local ok, why = probe(h.kind, h.arg, h.timeout, self)
      busy = false
      if self.proc ~= p then return end
      if ok then
        self.health_failures = 0
        return
      end
      self.health_failures = self.health_failures + 1
      self.last_error = why
      if self.health_failures >= h.failures then
        self:_fail_liveness(fmt("health check failed %d times in a row: %s", self.health_failures, why))
      end
    end)
  end)
end

-- (Re)arm the readiness deadline: `secs` from now.
function Instance:_ready_deadline(p, secs)
  if self._ready_timer then self._ready_timer:close() end
  self.ready_deadline = now() + secs
  self._ready_timer = timer(secs, function()
    self._ready_timer:close()
    self._ready_timer = nil
    if self.proc == p and self.state == "starting" then
      self._ready_fail = fmt("not ready after %gs", secs)
      self:_signal(9)
    end
  end)
end

-- Start checking readiness of process `p`.
function Instance:_check_ready(p)
  local r = self:_decl().ready
  -- (readiness is the run's: a successor it names with MAINPID= while
  -- starting carries on — the alive timer, the fd, the line, the probe)
  local run = self.run_token
  local function ready()
    if self.run_token == run and self.proc then self:_became_ready(self.proc) end
  end
  if r.kind == "spawned" then return ready() end
  self:_ready_deadline(p, r.timeout)
  if r.kind == "alive" then
    self._alive = timer(r.arg, function()
      self._alive:close()
      self._alive = nil
      ready()
    end)
  elseif r.kind == "fd" then
    core.close(self._ready_wfd)
    self._ready_wfd = nil
    local ud = core.stream_open(self._ready_fd)
    self._ready_fd = nil
    local Stream = require "baton.stream"
    local s = Stream.new(ud, "notification fd", "r")
    task.go_internal(function()
      local line = s:read("l") -- a newline (s6's notification-fd protocol)
      s:close()
      if line then ready() end
    end)
  elseif r.kind == "line" then
    self.log.watch = function(line, stream)
      if stream == "stdout" and line:find(r.arg) then
        self.log.watch = nil
        ready()
      end
    end
  elseif r.kind ~= "notify" then -- a probe, tried every `interval` seconds while starting
    local function going() return self.run_token == run and self.proc ~= nil and self.state == "starting" end
    task.go_internal(function()
      while going() do
        local ok, why = probe(r.kind, r.arg, math.max(r.interval, 1), self)
        if ok then return ready() end
        self.last_error = why
        if not going() then return end
        task.sleep(r.interval)
      end
    end)
  end
end

function Instance:_release_ready()
  for _, k in ipairs { "_ready_fd", "_ready_wfd" } do
    if self[k] then
      core.close(self[k])
      self[k] = nil
    end
  end
  if self._alive then
    self._alive:close()
    self._alive = nil
  end
end

-- The instance's cgroup leaf with the service's limits set, made on first
-- use; nil where the host has none (the tree is then found by group,
-- ancestry and token), or nil and why the limits cannot be enforced.
function Instance:_cgroup()
  local d = self:_decl()
  if not d.cgroup then return nil end
  local base, why = cgroup_base()
  if base and not self.cgroup then
    self.cgroup, why = core.cgroup_create(base, fmt("%s.%d-%s", self.service.name, self.index, self.token))
  end
  self.cgroup_why = why
  if #d.limits == 0 then return self.cgroup end
  local function refuse(msg)
    return nil, fmt("limits cannot be enforced here: %s", msg)
  end
  if not self.cgroup then return refuse(why) end
  local controllers = {}
  for i, l in ipairs(d.limits) do controllers[i] = LIMITS[l[1]][2] end
  local ok, msg = cgroup_controllers(controllers)
  if not ok then return refuse(msg) end
  for _, l in ipairs(d.limits) do
    local set, err = core.cgroup_set(self.cgroup, LIMITS[l[1]][1], l[2])
    if not set then return refuse(err) end
    if l[1] == "memory" then self._oom_base = core.cgroup_oom_kills(self.cgroup) end
  end
  return self.cgroup
end

-- Start the process now (the instance wants to run and its needs are ready).
function Instance:_spawn()
  local svc = self.service
  local d = self:_decl()
  self:_clear_timers()
  if self._leftovers then self:_sweep() end
  local base = options.of(d.cmd)
  local env = {}
  for k, v in pairs(base.env or {}) do env[k] = v end
  self.spawns = (self.spawns or 0) + 1
  self.run_token = self.token .. "." .. self.spawns
  env.BATON_SERVICE, env.BATON_REPLICA, env.BATON_INSTANCE = svc.name, tostring(self.index), self.run_token
  if d.ready.kind == "notify" or d.watchdog or d.fdstore then
    local path, why = svc.sv:_notify_socket()
    if not path then
      self.last_error = why
      return self:_set("failed", { event = "failed", error = why })
    end
    env.NOTIFY_SOCKET = path
  end
  -- What baton's own service manager gave baton is not the service's.
  if env.NOTIFY_SOCKET == nil then env.NOTIFY_SOCKET = false end
  env.WATCHDOG_PID, env.WATCHDOG_USEC = false, false
  if d.watchdog then env.WATCHDOG_USEC = tostring(math.floor(d.watchdog * 1e6 + 0.5)) end
  local extra = self:_ready_setup(env)
  extra.pgroup, extra.env = true, env
  -- A replica's log belongs to the service: the process of a new
  -- generation writes into the same pipes as the one it replaces — unless
  -- its declaration routes lines elsewhere (an upgrade or an update that
  -- changed `log`): then it gets pipes of its own, the service's from its
  -- promotion (a trial's) or at once, and the old ones close once no
  -- process writes to them.
  svc.logs = svc.logs or {}
  local held = svc.logs[self.index]
  if self.log and not (d.log and same(self.log.routes, d.log)) then self:_release_log(self.log) end
  if not d.log and not self.trial and held then -- (no `log` any more: the replica's pipes go too)
    svc.logs[self.index] = nil
    if not held.closed and not log_in_use(svc, held, self) then held:close() end
  end
  -- (a trial ready by a line reads lines of its own: on shared pipes the
  -- old generation's would make it ready)
  local own = self.trial and d.ready.kind == "line"
  if d.log and not self.log and held and not held.closed and same(held.routes, d.log) and not own then
    self.log = held
  end
  if d.log and not self.log then
    local label = svc.name .. "." .. self.index
    local log, msg = require("baton.logs").open(label, d.log)
    if not log then
      self:_release_ready()
      self.last_error = msg
      return self:_set("failed", { event = "failed", error = msg })
    end
    self.log = log
    if not self.trial then adopt_log(svc, self.index, log) end
  end
  if self.log then
    extra.stdout, extra.stderr = self.log:fd("stdout") or base.stdout, self.log:fd("stderr") or base.stderr
    self.log.watch = nil
  end
  if d.listen or svc.fdstore then
    local ls, lwhy = {}, nil
    if d.listen then ls, lwhy = svc:_listeners(d) end
    if not ls then
      self:_release_ready()
      self.last_error = lwhy
      return self:_set("failed", { event = "failed", error = lwhy })
    end
    for _, e in ipairs(svc.fdstore or {}) do ls[#ls + 1] = { name = e.name, fd = e.fd, info = {}, stored = true } end
    extra.fds = extra.fds or {}
    for fd, v in pairs(base.fds or {}) do if extra.fds[fd] == nil then extra.fds[fd] = v end end
    for i, l in ipairs(ls) do extra.fds[2 + i] = l.fd end
    env.LISTEN_FDS, env.LISTEN_FDNAMES, env.LISTEN_PID = false, false, false
    local hok, herr = pcall(d.handoff, ls, env, extra)
    if not hok then -- (a user's policy: its failure is this start's, not the caller's)
      self:_release_ready()
      self.last_error = "handoff: " .. tostring(herr)
      return self:_set("failed", { event = "failed", error = self.last_error })
    end
  end
  local cgroup, why = self:_cgroup()
  if why then
    self:_release_ready()
    self.last_error = why
    return self:_set("failed", { event = "failed", error = why })
  end
  extra.cgroup = cgroup
  if extra.fds then
    for fd, v in pairs(base.fds or {}) do if extra.fds[fd] == nil then extra.fds[fd] = v end end
  end
  -- Owned by the supervisor, not by the scope of the code that started it.
  local prev = task.set_scope(nil)
  local ok, p, msg = pcall(process.start, options.with(d.cmd, extra, true), options.RUN_KEYS, "service")
  task.set_scope(prev)
  if not ok then
    self:_release_ready()
    error(p, 0)
  end
  self.generation = self.own_generation or svc.generation
  if not p then
    self:_release_ready()
    self.last_error, self.pid, self.pgid = msg, nil, nil
    self:_exited(nil)
    return
  end
  self.proc, self.pid, self.pgid, self.ready_since = p, p.pid, p.pid, nil
  self.last_error, self._ready_fail, self._liveness_fail = nil, nil, nil
  self.watchdog, self.status_text, self.reloading, self.main_pid = d.watchdog, nil, nil, nil
  self:_set("starting", { event = "spawned" })
  self:_check_ready(p)
  self:_watch(p)
end

-- Wait for process `p`, the instance's main process, to end.
function Instance:_watch(p)
  task.go_internal(function()
    local st = p:wait()
    -- Its readiness message may have come in the same turn of the loop as
    -- its exit: read first, then judge (ready, then exited; not "exited
    -- before it was ready").
    -- (also a MAINPID= sent just before: read what the notify socket holds)
    local d = self:_decl()
    if self.proc == p and (self.state == "starting" or self.log or d.ready.kind == "notify" or d.watchdog) then
      task.sleep(0)
    end
    -- Its last words, read by now — unless a process of its tree still
    -- runs (a child dying of the same stop may write on): then the log's
    -- end says where the partial line ends.
    if self.log and not self:_tree_left() then self.log:flush_partial() end
    if self.proc == p and self:_follow(p) then return end
    if self.proc == p then self:_exited(st) end
  end)
end

-- A server that started its own successor and said so (MAINPID=): when the
-- old main process ends, baton follows the new one — it is the service
-- now (through a pidfd; as a subreaper baton is its parent once the old one
-- is gone). Returns true when it did.
function Instance:_follow(p)
  local pid = self.main_pid
  self.main_pid = nil
  if not pid or pid == p.pid or self.state == "stopping" or self.want ~= "up" then return false end
  -- Still of this run's tree, and alive (a successor that died, a pid
  -- reused since: an exit like any other).
  local st = core.proc_stat(pid)
  if not st or st.state == "Z" or not (st.pgid == self.pgid or carries(pid, self.run_token)
    or (self.cgroup and self:_in_cgroup(pid))) then
    return false
  end
  local q = require("baton.process").adopt(pid)
  if not q then return false end -- (gone already: an exit like any other)
  self.proc, self.pid = q, pid
  -- What watched the old process watches its successor: the readiness
  -- deadline (what is left of it), the health checks.
  if self.state == "starting" and self._ready_timer and self.ready_deadline then
    self:_ready_deadline(q, math.max(0, self.ready_deadline - now()))
  end
  if self._health then
    self._health:close()
    self._health = nil
    self:_start_health(q)
  end
  self:_set(self.state, { event = "mainpid", pid = pid })
  self:_watch(q)
  return true
end

-- Whether process `pid` is in the instance's cgroup leaf.
function Instance:_in_cgroup(pid)
  local f = io.open("/proc/" .. pid .. "/cgroup")
  local line = f and f:read("a"):match("0::(/[^\n]*)")
  if f then f:close() end
  return line ~= nil and line ~= "/" and self.cgroup:sub(-#line) == line
end

-- Whether status `st` counts as a success for the declaration `d`.
local function succeeded(d, st)
  if not st then return false end
  if st.signal then return d.success[st.signal + 1000] == true end
  return st.code ~= nil and d.success[st.code] == true
end

-- The delay before restart number `n` (1, 2, …): exponential, capped, jittered.
local function delay_for(b, n)
  local base = math.min(b.max, b.initial * b.factor ^ (n - 1))
  return math.max(0, base * (1 + b.jitter * (2 * math.random() - 1)))
end
M._delay_for = delay_for

-- The process ended (`st`; nil when it could not start): decide what next.
function Instance:_exited(st)
  local svc = self.service
  local d, sv = self:_decl(), svc.sv
  local was = self.state
  self.proc = nil
  self:_release_ready()
  self:_clear_timers()
  -- What it left goes too: the service is its whole tree. (Stopping: the
  -- stop waits for the rest within the stop timeout, then KILLs it.)
  if was ~= "stopping" then
    -- Asked to go now; KILLed at the next spawn or stop if still there.
    self:_signal(d.stop_signal)
    self._leftovers = self._leftovers or {}
    self._leftovers[#self._leftovers + 1] = self.run_token
  end
  self.last_status = st
  local failure = self._ready_fail or self._liveness_fail or (st == nil and self.last_error) or nil
  local oom = self._oom_base and self.cgroup and core.cgroup_oom_kills(self.cgroup)
  if oom and oom > self._oom_base then
    self._oom_base = oom
    failure = "killed by the OOM killer (memory limit)"
  end
  if was == "starting" and not failure then failure = "exited before it was ready" end
  self.last_error = failure
  self:_set(was, { event = "exited", status = st, error = failure, pid = self.pid })
  self.pid = nil
  if self.want ~= "up" then
    self:_set("stopped", { event = "stopped" })
    return
  end
  if self.trial then -- a generation on trial (an upgrade) is not restarted: it failed
    self.want = "down"
    return self:_set("failed", { event = "failed", status = st, error = failure or "exited" })
  end
  local ok = succeeded(d, st) and was == "running" and not self._liveness_fail
  if was == "running" then sv:_unbind(svc) end
  if d.critical and not sv._stopping then
    self:_set(ok and "exited" or "failed", { event = ok and "exited" or "failed", status = st })
    return sv:_critical(svc, st)
  end
  if d.restart == "never" or (d.restart == "on-failure" and ok) then
    if ok then return self:_set("exited") end
    return self:_set("failed", { event = "failed", status = st, error = failure })
  end
  self.failures = self:_failures() + 1
  self.ready_since = nil
  if d.give_up and self.failures > d.give_up then
    return self:_set("failed", { event = "failed", status = st,
      error = fmt("gave up after %d restarts", d.give_up) })
  end
  local delay = delay_for(d.backoff, self.failures)
  self:_retry_at(svc, now() + delay)
  self:_set("backoff", { event = "restarting", delay = delay, status = st, error = failure })
end

-- Restart at `at` (now() seconds: a backoff's end), as one more restart of
-- service `svc`.
function Instance:_retry_at(svc, at)
  self.next_retry = at
  self._retry = timer(math.max(0, at - now()), function()
    self._retry:close()
    self._retry = nil
    self.next_retry = nil
    self.restarts = self.restarts + 1
    svc.sv:_advance(svc, self)
  end)
end

-- Stop the process tree: the stop signal to its group, KILL after the
-- timeout; returns once it is gone.
function Instance:_stop()
  self.want = "down"
  if self._retry or self.state == "waiting" or self.state == "backoff" then
    self:_clear_timers()
    self:_set("stopped", { event = "stopped" })
  end
  local p = self.proc
  if not p then
    if self.state ~= "stopped" and self.state ~= "exited" and self.state ~= "failed" then self:_set("stopped") end
    self:_sweep()
    self:_drop_cgroup()
    self:_close_log()
    return
  end
  if self.state ~= "stopping" then
    self:_set("stopping")
    self._stop_deadline = now() + self:_decl().stop_timeout
    self:_signal(self:_decl().stop_signal)
    self:_signal(18) -- SIGCONT: a stopped process gets to handle it (as systemd does)
    self._kill_timer = timer(self:_decl().stop_timeout, function() self:_signal(9) end)
  end
  p:wait()
  while self.proc == p do task.sleep(0) end -- its exit handler runs first
  -- The rest of the tree gets the rest of the stop timeout to finish (as
  -- systemd's control-group kill mode), then KILL.
  while self:_tree_left() and now() < (self._stop_deadline or 0) do task.sleep(0.005) end
  self:_signal(9)
  self:_sweep()
  self:_drop_cgroup()
  self:_close_log()
end

-- This instance's process no longer writes to `log` (its routes changed):
-- closed unless the service or another process still has it.
function Instance:_release_log(log)
  self.last_lines, self.log = log:tail(), nil
  if self.service.logs[self.index] ~= log and not log_in_use(self.service, log, self) then log:close() end
end

-- The service stopped: what its processes wrote is read to the end, its
-- files close.
function Instance:_close_log()
  local log = self.log
  -- (shared with the other generation's process of this replica: closed
  -- when the service stops, not when one generation leaves)
  if log and self.service.want == "up" and self.service.logs[self.index] == log then
    local other = false
    for _, i in ipairs(self.service.instances) do if i ~= self and i.log == log then other = true end end
    if other then
      self.last_lines, self.log = log:tail(), nil
      return
    end
  end
  if log then
    log:close() -- (waits for the pipes' last bytes: another stop may close it meanwhile)
    self.last_lines = log:tail()
    if self.log == log then self.log = nil end
  end
end

-- Whether a live process of the current run's tree is left (its main
-- process gone): in its cgroup, its process group, or carrying its token.
function Instance:_tree_left()
  if not self.run_token then return false end
  if self.cgroup and core.cgroup_populated(self.cgroup) then
    for pid in (core.cgroup_get(self.cgroup, "cgroup.procs") or ""):gmatch("%d+") do
      local st = core.proc_stat(tonumber(pid))
      if st and st.state ~= "Z" then return true end
    end
  end
  for _, pid in ipairs(core.descendants(core.getpid()) or {}) do
    local st = core.proc_stat(pid)
    if st and st.state ~= "Z" and (st.pgid == self.pgid or carries(pid, self.run_token)) then return true end
  end
  return false
end

function Instance:_drop_cgroup()
  if self.cgroup and not self.proc and core.cgroup_remove(self.cgroup) then self.cgroup = nil end
end

-- ---- re-exec: taking over what a previous image of baton ran -------------------------------

-- The log of a process handed over (record `h`): its pipes, routed the way
-- the declaration says now; a stream it writes that the declaration no
-- longer routes goes to baton's own stdout or stderr, as without `log`.
local function handed_log(label, d, h)
  local routes, own = {}, true
  for k, v in pairs(d.log or {}) do routes[k] = v end
  for name in pairs(h.streams) do
    if not routes[name] then
      routes[name], own = { "raw" }, false
    end
  end
  local log, msg = require("baton.logs").open(label, own and d.log or routes, h.streams)
  if not log then -- (a log file that cannot be opened: the lines go to baton's own output)
    io.stderr:write("baton: re-exec: ", label, ": ", tostring(msg), "\n")
    log = require("baton.logs").open(label, { stdout = { "raw" }, stderr = { "raw" } }, h.streams)
  end
  log:_restore(h)
  return log
end

-- Take the instance's record `r` from the previous image: its tokens,
-- counters, cgroup, log and process (watched from now on). Returns the
-- process, or nil when it had none (or it is gone).
function Instance:_restore(r)
  local svc = self.service
  self.token, self.spawns, self.run_token = r.token or self.token, r.spawns, r.run_token
  self.cgroup, self.generation = r.cgroup, r.generation or svc.generation
  self.since, self.restarts, self.failures = r.since or self.since, r.restarts or 0, r.failures or 0
  self.last_error, self._leftovers, self.status_text = r.last_error, r.leftovers, r.status_text
  if r.last_status then self.last_status = setmetatable(r.last_status, require("baton.job").Status) end
  if r.log then
    svc.logs = svc.logs or {}
    self.log = handed_log(svc.name .. "." .. self.index, self:_decl(), r.log)
    svc.logs[self.index] = self.log
  end
  if r.notify then svc.sv:_take_notifier(r.notify) end
  if not r.pid then return nil end
  local p = process.adopt(r.pid)
  if not p then return nil end
  p._ud:own() -- (the previous image's child: killed if the program ends at once, os.exit, as one spawned here)
  self.proc, self.pid, self.pgid = p, r.pid, r.pgid
  self.ready_since, self.watchdog, self.main_pid = r.ready_since, r.watchdog, r.main_pid
  return p
end

-- Adopt record `r` instead of spawning: the process the previous image
-- started goes on as this instance's, in the state it was in (a running one
-- is running; a starting one has its readiness checked again, with a new
-- deadline; one waiting for a restart waits what was left of its delay).
function Instance:_adopt(r)
  local svc = self.service
  local p = self:_restore(r)
  if svc.generation < self.generation then svc.generation = self.generation end
  if not p then
    if r.pid then -- (gone, and reaped, meanwhile: an exit whose status is lost)
      self.pid, self.last_error = r.pid, "exited during the re-exec"
      return self:_exited(nil)
    end
    if r.state == "backoff" and r.next_retry then
      self:_retry_at(svc, r.next_retry) -- (the same moment: the clock is the same, CLOCK_MONOTONIC)
      return self:_set("backoff")
    end
    if r.state == "failed" or r.state == "exited" then -- (done: not started again by this start)
      self._settled = true
      return self:_set(r.state)
    end
    return -- (stopped or waiting: started as usual)
  end
  if r.state == "running" then
    self:_set("running", { event = "adopted" })
    self:_arm_watchdog()
    self:_start_health(p)
    self:_watch(p)
    svc.sv:_advance_dependents(svc)
  else
    self:_set("starting", { event = "adopted" })
    self:_check_ready(p)
    self:_watch(p)
  end
end

-- What the next image needs of this instance (fds added to `keep`).
function Instance:_handover(keep)
  local st = self.last_status
  local r = { index = self.index, state = self.state, token = self.token, spawns = self.spawns,
    run_token = self.run_token, cgroup = self.cgroup, generation = self.generation, since = self.since,
    restarts = self.restarts, failures = self.failures, last_error = self.last_error, leftovers = self._leftovers,
    status_text = self.status_text, next_retry = self.next_retry,
    last_status = st and { ok = st.ok, code = st.code, signal = st.signal, signame = st.signame, core = st.core,
      known = st.known } }
  if self.proc then
    r.pid, r.pgid, r.ready_since, r.watchdog, r.main_pid = self.pid, self.pgid, self.ready_since, self.watchdog,
      self.main_pid
    if self.log and not self.log.closed then r.log = self.log:_handover(keep) end
    local n = self.service.sv._notifier
    if n then r.notify = n.path end
  end
  return r
end

M._new_instance = function(...) return new_instance(...) end

-- ---- services ---------------------------------------------------------------------------

local Service = {}
Service.__index = Service

-- Precedence of instance states in a service's summary state.
local RANK = { failed = 1, backoff = 2, starting = 3, waiting = 4, stopping = 5, draining = 5, running = 6, exited = 7,
  stopped = 8 }

--- The service's state: its instances' when they agree, else the most
--- urgent one (failed, backoff, starting, waiting, stopping, running…).
function Service:state()
  local best
  for _, i in ipairs(self.instances) do
    if not best or RANK[i.state] < RANK[best] then best = i.state end
  end
  return best or (self.want == "up" and "running" or "stopped")
end

--- All instances ready (a service with 0 replicas is ready when wanted).
function Service:is_ready()
  if self.want ~= "up" then return false end
  for _, i in ipairs(self.instances) do if not i.ready then return false end end
  return true
end

-- The service's listeners, bound once (the first time a process needs
-- them) and kept across restarts and generations: the same sockets, the
-- same accept queues. Returns the list ({name, fd, info}), or nil and why.
-- Sockets baton itself was given by its service manager (systemd's
-- LISTEN_FDS, for baton's own pid): by LISTEN_FDNAMES name and as "fd:N".
local inherited

local function inherited_sockets()
  if inherited then return inherited end
  inherited = {}
  -- (decimal counts only, as sd_listen_fds reads them; a count beyond any
  -- fd table is garbage, not a loop over a billion fds)
  local n, pid = (os.getenv("LISTEN_FDS") or ""):match("^%d+$"), (os.getenv("LISTEN_PID") or ""):match("^%d+$")
  n, pid = n and #n <= 6 and tonumber(n), pid and tonumber(pid)
  if not n or pid ~= core.getpid() then return inherited end
  local names = {}
  for name in ((os.getenv("LISTEN_FDNAMES") or "") .. ":"):gmatch("([^:]*):") do names[#names + 1] = name end
  for k = 1, n do
    local fd = 2 + k
    local info = core.socket_info(fd)
    if info then
      local e = { fd = fd, info = info }
      inherited["fd:" .. fd] = e
      if names[k] and names[k] ~= "" and not inherited[names[k]] then inherited[names[k]] = e end
    end
  end
  return inherited
end

function Service:_listeners(d)
  self.listeners = self.listeners or {}
  local out = {}
  for i, l in ipairs(d.listen) do
    local have = self.listeners[l.key]
    local given = l.address:match("^systemd:(.+)$") or l.address:match("^(fd:%d+)$")
    if not have and given then -- handed on: a socket baton's own manager gave it
      local e = inherited_sockets()[given]
      if not e then
        return nil, fmt("listen %s: baton was given no socket %q (its LISTEN_FDS/LISTEN_FDNAMES)", l.name, given)
      end
      have = { name = l.name, fd = e.fd, info = e.info, address = l.address, inherited = true }
      self.listeners[l.key] = have
    elseif not have then
      local fd, info = core.listen(l.address, l.opts)
      if not fd then return nil, fmt("listen %s: %s", l.name, info) end
      have = { name = l.name, fd = fd, info = info, address = l.address }
      self.listeners[l.key] = have
    end
    out[i] = { name = l.name, fd = have.fd, info = have.info }
  end
  return out
end

-- The fd store (systemd's FDSTORE=1): fds a process parks with baton, by
-- FDNAME, handed to its next process after the listeners (LISTEN_FDS).
-- `fdstore = n` in the declaration allows up to n; beyond, or without it,
-- they are closed. Returns true when the fds are kept.
function Service:_store_fds(inst, name, fds)
  local max = inst:_decl().fdstore or 0
  self.fdstore = self.fdstore or {}
  if #self.fdstore + #fds > max then
    self.fdstore_refused = (self.fdstore_refused or 0) + #fds
    return false
  end
  -- (a name as systemd takes one: printable ASCII but ':', up to 255
  -- bytes; another is ignored, the fds stored as "stored", as systemd does)
  name = (name and #name <= 255 and name:match("^[ -~]*$") and not name:find(":", 1, true)) and name or "stored"
  for _, fd in ipairs(fds) do self.fdstore[#self.fdstore + 1] = { name = name, fd = fd } end
  return true
end

function Service:_unstore_fds(name)
  for k = #(self.fdstore or {}), 1, -1 do
    local e = self.fdstore[k]
    if e.name == name then
      core.close(e.fd)
      table.remove(self.fdstore, k)
    end
  end
end

--- Close the listeners no declaration in use names any more (the
-- service's, its replicas', and those of a draining or a trial
-- generation), after an upgrade or a rollback that changed
-- `listen`. (A socket baton was given stays open: its manager's.)
function Service:_prune_listeners()
  local used = {}
  local function mark(d)
    for _, l in ipairs(d and d.listen or {}) do used[l.key] = true end
  end
  mark(self.decl)
  -- (every replica's, running or not: one waiting to restart, of a rolling
  -- upgrade stopped half way, starts again with its own declaration)
  for _, i in ipairs(self.instances) do mark(i:_decl()) end
  for i in pairs(self.extra or {}) do mark(i:_decl()) end
  for key, l in pairs(self.listeners or {}) do
    if not used[key] and not l.inherited then
      core.close(l.fd)
      if l.info.path then core.unlink_socket(l.info.path) end
      self.listeners[key] = nil
    end
  end
end

-- Close the fds of the fd store.
function Service:_release_fdstore()
  for _, e in ipairs(self.fdstore or {}) do core.close(e.fd) end
  self.fdstore = nil
end

--- Close the service's listeners (unix socket files removed): at its
-- final stop (remove, or the end of the program).
function Service:_close_listeners()
  self:_release_fdstore()
  for addr, l in pairs(self.listeners or {}) do
    if not l.inherited then -- (a socket baton was given stays baton's: its manager's)
      core.close(l.fd)
      if l.info.path then core.unlink_socket(l.info.path) end
    end
    self.listeners[addr] = nil
  end
end

-- Instances to match the declared replica count (extra ones are stopped
-- first, by the caller).
function Service:_resize()
  local n = self.decl.replicas
  for i = #self.instances + 1, n do self.instances[i] = new_instance(self, i) end
end

-- After a re-exec: the previous image's record of this service, taken once
-- (its listeners and fd store are the service's from now on, its
-- generation goes on); false when there is none.
function Service:_take_handover()
  if self._handed ~= nil then return self._handed end
  local state = require("baton.reexec").state()
  local h = state and state.services and state.services[self.name]
  if not h or h.taken then
    self._handed = false
    return false
  end
  h.taken = true
  self._handed = h
  self.listeners = self.listeners or {}
  for key, l in pairs(h.listeners or {}) do
    if self.listeners[key] then
      core.close(l.fd)
    else
      self.listeners[key] = { name = l.name, fd = l.fd, info = l.info, address = l.address }
    end
  end
  h.listeners = {}
  if h.fdstore and #h.fdstore > 0 then
    self.fdstore = self.fdstore or {}
    for _, e in ipairs(h.fdstore) do self.fdstore[#self.fdstore + 1] = e end
  end
  h.fdstore = {}
  if self.generation < (h.generation or 0) then self.generation = h.generation end
  return h
end

-- ---- the supervisor ------------------------------------------------------------------------

local Supervisor = { __name = "baton.supervisor" }
Supervisor.__index = Supervisor
M.Supervisor = Supervisor

local supervisors = setmetatable({}, { __mode = "k" })
local register -- (below: the program's end)
local manager -- (below: baton under a service manager)

--- A supervisor for the services in `decls` (name → declaration). See the
-- module comment and docs/reference.md for declarations.
function M.supervisor(decls)
  if decls ~= nil and type(decls) ~= "table" then
    argerror("supervisor", 1, "table of services expected, got " .. type(decls))
  end
  local sv = setmetatable({ services = {}, _handlers = {}, _watchers = {} }, Supervisor)
  local names = {}
  for name in pairs(decls or {}) do names[#names + 1] = name end
  table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
  for _, name in ipairs(names) do sv:_put(name, decls[name]) end
  sv:_check_graph()
  for _, svc in pairs(sv.services) do svc:_resize() end
  supervisors[sv] = true
  return sv
end

function Supervisor:_put(name, spec)
  local d = declare(name, spec)
  local svc = self.services[name]
  if svc then
    svc.decl = d
  else
    svc = setmetatable({ name = name, decl = d, sv = self, instances = {}, want = "down", generation = 0 }, Service)
    self.services[name] = svc
  end
  return svc
end

-- Raise unless every need is declared and the needs form no cycle.
function Supervisor:_check_graph()
  local names = {}
  for name in pairs(self.services) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    for _, n in ipairs(self.services[name].decl.needs) do
      if not self.services[n] then
        argerror("supervisor", 1, fmt("service '%s' needs '%s', which is not declared", name, n))
      end
    end
  end
  local mark, path = {}, {}
  local function visit(name)
    if mark[name] == "done" then return end
    if mark[name] == "open" then
      local from
      for i, n in ipairs(path) do if n == name then from = i end end
      local cycle = { table.unpack(path, from) }
      cycle[#cycle + 1] = name
      argerror("supervisor", 1, "dependency cycle: " .. table.concat(cycle, " -> "))
    end
    mark[name] = "open"
    path[#path + 1] = name
    for _, n in ipairs(self.services[name].decl.needs) do visit(n) end
    path[#path] = nil
    mark[name] = "done"
  end
  for _, name in ipairs(names) do visit(name) end
end

local function check_sv(self, fname)
  errors.check_self(getmetatable(self) == Supervisor, self, fname, "a supervisor")
end

-- The services named by `...` (all when none), raising for unknown names.
function Supervisor:_pick(fname, ...)
  local out = {}
  local n = select("#", ...)
  if n == 0 then
    for _, svc in pairs(self.services) do out[#out + 1] = svc end
  else
    for i = 1, n do
      local name = select(i, ...)
      local svc = type(name) == "string" and self.services[name]
      if not svc then
        argerror(fname, i, type(name) == "string" and fmt("no service '%s'", name) or
          ("service name expected, got " .. type(name)))
      end
      out[#out + 1] = svc
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

-- Services that need `svc` directly.
function Supervisor:_dependents(svc)
  local out = {}
  for _, s in pairs(self.services) do
    for _, n in ipairs(s.decl.needs) do if n == svc.name then out[#out + 1] = s end end
  end
  return out
end

-- ---- sd_notify ---------------------------------------------------------------------------

--- The NOTIFY_SOCKET of the supervisor's services (an abstract unix
-- socket), opened on first use; nil and why when it cannot be.
function Supervisor:_notify_socket()
  if self._notifier then return self._notifier.path end
  sockets = sockets + 1
  local path = fmt("@baton/%d/%d/notify", core.getpid(), sockets)
  local l, msg = core.notify_listen(path, function(pid, text, fds) return self:_on_notify(pid, text, fds) end)
  if not l then return nil, "cannot open a NOTIFY_SOCKET: " .. msg end
  l:ref(false) -- (the services keep the program running, not their socket)
  self._notifier = l
  return path
end

-- After a re-exec: the socket the adopted processes were told about (their
-- NOTIFY_SOCKET), handed over still bound — nothing sent during the exec
-- is lost. Only when this supervisor has none yet.
function Supervisor:_take_notifier(path)
  if self._notifier then return end
  local state = require("baton.reexec").state()
  local fd = state and state.notify and state.notify[path]
  if not fd then return end
  state.notify[path] = nil
  local l = core.notify_listen(path, function(pid, text, fds) return self:_on_notify(pid, text, fds) end, fd)
  if not l then return end
  l:ref(false)
  self._notifier = l
end

-- Whether process `pid` belongs to the tree of instance `i`: it is its
-- main process, in its cgroup, in its process group, or descends from it.
-- (Debian's systemd-notify, run as root, sends its parent's pid.)
local function belongs(pid, i, stat)
  if pid == i.pid then return true end
  if i.cgroup and i:_in_cgroup(pid) then return true end
  if stat and stat.pgid == i.pgid then return true end
  local p = stat and stat.ppid
  for _ = 1, 32 do
    if not p or p <= 1 then break end
    if p == i.pid then return true end
    local st = core.proc_stat(p)
    p = st and st.ppid
  end
  -- (last: the run's token in its environment — a successor that left the
  -- group whose parent exited before its message was read: re-parented to
  -- baton, it is in no group, no cgroup and no ancestry of the instance)
  return i.run_token ~= nil and carries(pid, i.run_token)
end

-- A datagram from `pid`: what it says applies to the instance whose tree
-- the sender is in; others' messages are ignored (systemd's NotifyAccess=all
-- within the service).
function Supervisor:_on_notify(pid, text, fds)
  if not pid then return end
  local stat = core.proc_stat(pid)
  local inst
  for _, svc in pairs(self.services) do
    for _, i in ipairs(svc.instances) do
      if i.proc and belongs(pid, i, stat) then inst = i end
    end
    for i in pairs(svc.extra or {}) do -- (another generation: an upgrade's)
      if i.proc and belongs(pid, i, stat) then inst = i end
    end
  end
  if not inst then
    self.notify_ignored = (self.notify_ignored or 0) + 1
    return
  end
  local p = inst.proc
  local fields = {}
  for line in text:gmatch("[^\n]+") do
    local k, v = line:match("^([%u_]+)=(.*)$")
    if k then fields[k] = v end
  end
  if fields.STATUS then inst.status_text = fields.STATUS end
  if fields.MAINPID then
    -- (only a process of the instance's own tree: systemd refuses others too)
    local mp = math.tointeger(tonumber(fields.MAINPID))
    if mp and mp > 1 and belongs(mp, inst, core.proc_stat(mp)) then inst.main_pid = mp end
  end
  if fields.ERRNO then
    local n = tonumber(fields.ERRNO)
    inst.last_error = fmt("the service reported errno %s%s", fields.ERRNO,
      n and core.errname(-n) and (" (" .. core.errname(-n) .. ")") or "")
  end
  if fields.RELOADING == "1" then inst.reloading = true end
  if fields.STOPPING == "1" then inst.stopping_notified = true end
  local ext = tonumber(fields.EXTEND_TIMEOUT_USEC)
  if ext and inst.state == "starting" then inst:_ready_deadline(p, ext / 1e6) end
  if fields.WATCHDOG_USEC and tonumber(fields.WATCHDOG_USEC) then
    inst:_arm_watchdog(tonumber(fields.WATCHDOG_USEC) / 1e6)
  end
  if fields.WATCHDOG == "1" and inst.state == "running" then inst:_arm_watchdog() end
  if fields.WATCHDOG == "trigger" then inst:_fail_liveness("watchdog: the service asked for it (WATCHDOG=trigger)") end
  local kept
  if fields.FDSTORE == "1" and fds and #fds > 0 then kept = inst.service:_store_fds(inst, fields.FDNAME, fds) end
  if fields.FDSTOREREMOVE == "1" and fields.FDNAME then inst.service:_unstore_fds(fields.FDNAME) end
  if fields.READY == "1" then
    if inst.reloading then inst.reloaded = true end -- (RELOADING=1 … READY=1: a reload done)
    inst.reloading = nil
    if inst.state == "starting" and inst:_decl().ready.kind == "notify" then inst:_became_ready(p) end
  end
  self:_changed()
  return kept -- (true: the fds are in the store, not closed)
end

-- ---- events and waiting ----------------------------------------------------------------

--- Call `fn(event)` for each event of `kind` ("spawned", "ready", "exited",
-- "restarting", "failed", "stopped", or "*" for all), in a task of its
-- own ("mainpid": a server that started its own successor, followed;
-- "adopted": an instance taken over from the previous image after a
-- re-exec, see baton.reexec). An
-- event: `event`, `service`, `replica`, `generation`, `pid`,
-- `time`, and `status` (exited, restarting, failed), `delay`
-- (restarting), `error` (why a start failed). Returns a function that
-- removes the handler.
local EVENTS = { spawned = true, ready = true, exited = true, restarting = true, failed = true, stopped = true,
  mainpid = true, adopted = true,
  ["*"] = true }
local EVENT_LIST = "spawned, ready, exited, restarting, failed, stopped, mainpid, adopted or *"

local function check_event(fname, kind)
  if type(kind) ~= "string" then argerror(fname, 1, "event name expected, got " .. type(kind)) end
  if not EVENTS[kind] then argerror(fname, 1, fmt("unknown event %q (%s)", kind, EVENT_LIST)) end
end

function Supervisor:on(kind, fn)
  check_sv(self, "on")
  check_event("on", kind)
  if type(fn) ~= "function" then argerror("on", 2, "function expected, got " .. type(fn)) end
  local entry = { kind = kind, fn = fn }
  self._handlers[entry] = true
  return function() self._handlers[entry] = nil end
end

-- A copy of a set's keys: handlers and watchers may come and go while
-- they are called.
local function keys(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  return out
end

-- Handlers and waiters run on the loop's next turn, never inside the
-- transition that emits (a handler or a woken task that stops, restarts or
-- removes the service would otherwise run before the supervisor finished
-- the change: a spawn not yet watched, a state not yet set).
function Supervisor:_emit(ev)
  ev.time = now()
  if ev.event == "ready" or ev.event == "failed" or ev.event == "stopped" then manager.status() end
  for _, h in ipairs(keys(self._handlers)) do
    if h.kind == ev.event or h.kind == "*" then
      core.defer(function()
        if not self._handlers[h] then return end -- (removed meanwhile)
        local prev = task.set_scope(nil) -- (the supervisor's, not the emitting code's)
        task.go(h.fn, ev)
        task.set_scope(prev)
      end)
    end
  end
  self:_notify(ev)
end

-- One turn of the loop, where the code may wait: the handlers of the events
-- emitted so far start (an operation returns after its events' handlers
-- started, and the program does not end before them).
local function settle()
  if task.can_wait() then task.sleep(0) end
end

function Supervisor:_changed()
  self:_notify(nil)
end

function Supervisor:_notify(ev)
  for _, w in ipairs(keys(self._watchers)) do
    if self._watchers[w] then w(ev) end
  end
end

-- Wait until `done(ev)` (called on every event, ev nil for a state
-- change without one) returns a value; `timeout` seconds at most.
function Supervisor:_until(done, timeout)
  local v = done(nil)
  if v ~= nil then return v end
  local watcher, t
  local ok, r = pcall(task.suspend, function(wake)
    watcher = function(ev)
      local x = done(ev)
      if x ~= nil then core.defer(function() wake(x) end) end -- (see _emit)
    end
    self._watchers[watcher] = true
    if timeout then t = timer(timeout, function() wake(false) end) end
  end)
  self._watchers[watcher] = nil
  if t then t:close() end
  if not ok then error(r, 0) end
  return r
end

--- Wait for the next event of `kind` ("*": any), of service `name` if
-- given; returns the event.
function Supervisor:next(kind, name)
  check_sv(self, "next")
  check_event("next", kind)
  if name ~= nil then self:_pick("next", name) end
  return self:_until(function(ev)
    if ev and (kind == "*" or ev.event == kind) and (name == nil or ev.service == name) then return ev end
  end)
end

--- Wait until service `name` is in `state`: "ready" (every replica ready;
-- a service not started yet is waited for), "stopped" (no process:
-- stopped, exited or failed), "failed", or any instance state every
-- replica shares. Returns true, or nil, msg, code: "EFAILED" when the
-- service failed while waited for ready, "ETIMEDOUT" after `timeout`
-- seconds.
function Supervisor:wait(name, state, timeout)
  check_sv(self, "wait")
  local svc = self:_pick("wait", name)[1]
  if type(state) ~= "string" then argerror("wait", 2, "state expected, got " .. type(state)) end
  if state ~= "ready" and not RANK[state] then
    argerror("wait", 2, fmt("unknown state %q (ready, running, stopped, failed, exited, starting, waiting, "
      .. "stopping, backoff)", state))
  end
  options.check_seconds("wait", 3, timeout, "timeout")
  local r = self:_until(function()
    if state == "ready" or state == "running" then
      if svc:is_ready() then return true end
      local st = svc.want == "up" and svc:state()
      if st == "failed" or st == "exited" then return st end
    elseif state == "stopped" then
      local all = true
      for _, i in ipairs(svc.instances) do
        if i.proc or i.state == "backoff" or i.state == "waiting" then all = false end
      end
      if all then return true end
    else
      local s = svc:state()
      if s == state then return true end
    end
  end, timeout)
  if r == true then return true end
  if r == false then return errors.fail("ETIMEDOUT", "service '%s' not %s after %gs", name, state, timeout) end
  return errors.fail("EFAILED", "service '%s' %s while waited for: %s", name, r, svc:_why())
end

-- Why the service is not running, from its instances' last exits.
function Service:_why()
  for _, i in ipairs(self.instances) do
    if i.last_error or i.last_status then
      local st = i.last_status and tostring(i.last_status)
      if i.last_error and st then return i.last_error .. " (" .. st .. ")" end
      return i.last_error or st
    end
  end
  return self:state()
end

-- ---- starting and stopping ---------------------------------------------------------------

-- Whether every service `svc` needs is ready.
function Supervisor:_needs_ready(svc)
  for _, n in ipairs(svc.decl.needs) do
    if not self.services[n]:is_ready() then return false end
  end
  return true
end

-- Bring `svc` (or only `only`, one of its instances) towards running.
function Supervisor:_advance(svc, only)
  if svc.want ~= "up" then return end
  -- (after a re-exec: what runs already is adopted, whatever its needs)
  local h = svc:_take_handover()
  for _, i in ipairs(svc.instances) do
    local r = h and h.instances[i.index]
    if r and not r.claimed and (only == nil or i == only) and not i.proc and i.want == "up" then
      r.claimed = true
      i._again = nil
      i:_adopt(r)
    end
  end
  local ready = self:_needs_ready(svc)
  for _, i in ipairs(svc.instances) do
    if (only == nil or i == only) and not i.proc and i.want == "up" and not i._retry and not i._settled
      and (i.state ~= "failed" or only or i._again) then
      i._again = nil
      if ready then i:_spawn() elseif i.state ~= "waiting" then i:_set("waiting") end
    end
  end
end

-- `svc` became ready: start what waited for it.
function Supervisor:_advance_dependents(svc)
  if not svc:is_ready() then return end
  for _, d in ipairs(self:_dependents(svc)) do
    for _, i in ipairs(d.instances) do
      if i.state == "waiting" then
        self:_advance(d)
        break
      end
    end
  end
end

-- Want `svc` and what it needs up; a new generation when it was down.
function Supervisor:_want_up(svc, seen)
  seen = seen or {}
  if seen[svc] then return end
  seen[svc] = true
  for _, n in ipairs(svc.decl.needs) do self:_want_up(self.services[n], seen) end
  if svc.want ~= "up" then
    svc.want = "up"
    svc.generation = svc.generation + 1
  end
  for _, i in ipairs(svc.instances) do
    i.want = "up"
    i.failures = 0 -- a manual start bypasses the backoff, and tries a failed one again
    if i.state == "failed" and not i.proc then i._again = true end
    if i._retry then
      i:_clear_timers()
      i.restarts = i.restarts + 1
    end
  end
end

--- Start services (all when no name is given) and what they need, in
-- dependency order — independent ones at once, each after its needs are
-- ready — and wait until the named ones are ready. Returns true, or nil,
-- msg, "EFAILED" when one could not start (it keeps trying by its restart
-- policy).
function Supervisor:start(...)
  check_sv(self, "start")
  local targets = self:_pick("start", ...)
  -- A stop under way finishes first (else both would act on the same
  -- instances: a service killed by the stop restarted by its policy, one
  -- left waiting for a need the stop took down).
  for t in pairs(self._stops or {}) do
    if not t.done then t:wait() end
  end
  local seen = {}
  for _, svc in ipairs(targets) do
    -- (what a re-exec handed over as done — exited, failed — stays done
    -- through a start of everything, the new script's `start` or `run`;
    -- a start that names the service runs it again)
    if select("#", ...) > 0 then
      for _, i in ipairs(svc.instances) do i._settled = nil end
    end
    self:_want_up(svc, seen)
  end
  register()
  for svc in pairs(seen) do self:_advance(svc) end
  for _, svc in ipairs(targets) do
    local failed = self:_until(function()
      if svc:is_ready() then return false end
      local done = true -- (each one ready, or ready once and exited for good)
      for _, i in ipairs(svc.instances) do
        if i.state == "failed" or i.state == "backoff" then return i end
        if not (i.ready or i.state == "exited") then done = false end
      end
      if done then return false end
      if svc.want ~= "up" then return true end
    end)
    if failed then
      local why = failed == true and "stopped" or failed:_why()
      local tail = failed ~= true and failed.log and failed.log:tail(5) or {}
      if #tail > 0 then why = why .. "; its last output:\n  " .. table.concat(tail, "\n  ") end
      settle()
      return errors.fail("EFAILED", "service '%s' did not start: %s", svc.name, why)
    end
  end
  manager.ready(self)
  settle()
  return true
end

function Instance:_why()
  local st = self.last_status and tostring(self.last_status)
  if self.last_error and st then return self.last_error .. " (" .. st .. ")" end
  return self.last_error or st or self.state
end

-- Run `fn(x)` for each `x` of `list` at once, each in a task; wait for all.
local function each(list, fn)
  local ts = {}
  for _, x in ipairs(list) do ts[#ts + 1] = task.go_internal(fn, x) end
  for _, t in ipairs(ts) do t:wait() end
end

-- Stop `svc` after what needs it; `stopping`: the stop tasks under way.
function Supervisor:_stop_one(svc, stopping)
  if stopping[svc] then return stopping[svc]:wait() end
  local t = task.go_internal(function()
    local up = {}
    for _, d in ipairs(self:_dependents(svc)) do if d.want == "up" then up[#up + 1] = d end end
    each(up, function(d) self:_stop_one(d, stopping) end)
    svc.want = "down"
    local all = { table.unpack(svc.instances) }
    for i in pairs(svc.extra or {}) do all[#all + 1] = i end -- (an upgrade's: trial or draining)
    each(all, function(i) i:_stop() end)
  end)
  stopping[svc] = t
  return t:wait()
end

-- `svc` stopped being ready: services bound to it (`bind = true`) stop
-- too, and start again once it is ready.
function Supervisor:_unbind(svc)
  for _, d in ipairs(self:_dependents(svc)) do
    if d.decl.bind and d.want == "up" then
      task.go_internal(function()
        self:_unbind(d)
        each(d.instances, function(i)
          i:_stop()
          i.want = "up"
        end)
        self:_advance(d)
      end)
    end
  end
end

--- Stop services (all when none is named), each after the services that
-- need it, with its stop signal and KILL after its stop timeout; waits
-- until their process trees are gone.
function Supervisor:stop(...)
  check_sv(self, "stop")
  local stopping = {}
  local targets = self:_pick("stop", ...)
  -- (tracked: a start waits until the stops under way are done)
  local t = task.go_internal(function() each(targets, function(svc) self:_stop_one(svc, stopping) end) end)
  self._stops = self._stops or {}
  self._stops[t] = true
  local ok, err = pcall(t.wait, t)
  self._stops[t] = nil
  if not ok then error(err, 0) end
  -- A stopped service's fd store is released (as systemd's default
  -- FileDescriptorStorePreserve=restart): kept only across a restart.
  -- Its listeners the declaration no longer names (an update moved
  -- `listen`) close now that no process of the old one runs.
  -- (the services named and those stopped with them: what needs them)
  for svc in pairs(stopping) do
    if svc.want ~= "up" and not (self._restarting and self._restarting[svc]) then svc:_release_fdstore() end
    if svc.want ~= "up" then svc:_prune_listeners() end
  end
  local idle = true
  for _, svc in pairs(self.services) do if svc.want == "up" then idle = false end end
  if idle and self._notifier then
    self._notifier:close()
    self._notifier = nil
  end
  cgroup_release() -- (when no service of any supervisor holds a leaf)
  settle()
  return true
end

--- Restart services: stop them (and what needs them), then start them
-- again as a new generation, with what was running before; waits until
-- they are ready (as `start`).
function Supervisor:restart(...)
  check_sv(self, "restart")
  local targets = self:_pick("restart", ...)
  local up = {}
  for _, s in pairs(self.services) do if s.want == "up" then up[#up + 1] = s.name end end
  local names = {}
  for _, svc in ipairs(targets) do names[#names + 1] = svc.name end
  -- (counted per service: restarts under way at once, of the same service
  -- or others, each keep their own services' fd stores)
  -- (and those that need them, stopped with them and started again: all
  -- that run now come back)
  local restarting = self._restarting or {}
  self._restarting = restarting
  local back = {}
  for _, svc in ipairs(targets) do back[svc] = true end
  for _, svc in pairs(self.services) do if svc.want == "up" then back[svc] = true end end
  for svc in pairs(back) do restarting[svc] = (restarting[svc] or 0) + 1 end
  local ok, err = pcall(self.stop, self, table.unpack(names))
  for svc in pairs(back) do
    restarting[svc] = restarting[svc] - 1
    if restarting[svc] == 0 then restarting[svc] = nil end
  end
  if not ok then error(err, 0) end
  local again = {}
  for _, n in ipairs(up) do again[n] = true end
  for _, n in ipairs(names) do again[n] = true end
  local list = {}
  for n in pairs(again) do list[#list + 1] = n end
  return self:start(table.unpack(list))
end

--- The last `n` lines (default: all kept, up to 100 per replica) a
-- service wrote to the streams baton holds (`log` declared), oldest first;
-- each prefixed by its replica's label when there are several.
function Supervisor:logs(name, n)
  check_sv(self, "logs")
  local svc = self:_pick("logs", name)[1]
  if n ~= nil and (math.type(n) ~= "integer" or n < 0) then
    argerror("logs", 2, "count expected, got " .. tostring(n))
  end
  local out = {}
  for _, i in ipairs(svc.instances) do
    local lines = i.log and i.log:tail(n) or i.last_lines or {}
    if n and #lines > n then lines = { table.unpack(lines, #lines - n + 1) } end
    for _, line in ipairs(lines) do
      out[#out + 1] = #svc.instances > 1 and (i.index .. ": " .. line) or line
    end
  end
  return out
end

--- Reopen the log files of every service (of every supervisor): after an
-- external logrotate renamed them. SIGUSR1 does the same. Returns how many.
function Supervisor:reopen_logs()
  check_sv(self, "reopen_logs")
  return require("baton.logs").reopen_all()
end

--- Replace service `name`'s running generation with a new one, without
-- dropping a connection: see baton.upgrade. `decl`: a new declaration (nil:
-- the same one, e.g. a new binary at the same path); `opts`: the policy.
-- Returns the result ({outcome = "promoted" | "rolled_back" | "failed",
-- reason, generation, timings}).
function Supervisor:upgrade(name, decl, opts)
  check_sv(self, "upgrade")
  local svc = self:_pick("upgrade", name)[1]
  if decl ~= nil then
    decl = declare(name, decl)
    if #decl.needs ~= #svc.decl.needs then
      argerror("upgrade", 2, "an upgrade cannot change what a service needs (use update, then restart)")
    end
  end
  return require("baton.upgrade").run(self, svc, decl, opts)
end

--- Reload service `name` in place (a server that reloads itself on a
-- signal): see baton.upgrade.reload. `opts`: `signal` (HUP), `timeout`.
function Supervisor:reload(name, opts)
  check_sv(self, "reload")
  local svc = self:_pick("reload", name)[1]
  if opts ~= nil and type(opts) ~= "table" then argerror("reload", 2, "options table expected, got " .. type(opts)) end
  return require("baton.upgrade").reload(self, svc, opts)
end

--- Upgrade every running service (each to its current declaration: a new
-- binary at the same path, a new config) when signal `sig` (default USR2,
-- nginx's) arrives; `opts` as for `upgrade`. Returns the signal watcher
-- (`close()` it to stop). The results go to `on_result(name, result)`
-- when given.
function Supervisor:upgrade_on(sig, opts, on_result)
  check_sv(self, "upgrade_on")
  local n = options.signum(sig or "USR2", "upgrade_on", 1)
  return core.signal_watch(n, function()
    task.go_internal(function()
      for name, svc in pairs(self.services) do
        if svc.want == "up" then
          local r = self:upgrade(name, nil, opts)
          if on_result then on_result(name, r) end
        end
      end
    end)
  end)
end

--- Where listener `lname` of service `name` is bound ({family, address,
-- port, path, url}: port 0 shows the port chosen), binding the service's
-- listeners now if no process did yet. Returns the info, or nil, msg.
function Supervisor:listener(name, lname)
  check_sv(self, "listener")
  local svc = self:_pick("listener", name)[1]
  if not svc.decl.listen then return nil, fmt("service '%s' declares no listeners", name) end
  local ls, why = svc:_listeners(svc.decl)
  if not ls then return nil, why end
  for _, l in ipairs(ls) do if l.name == lname then return l.info end end
  return nil, fmt("service '%s' has no listener '%s'", name, tostring(lname))
end

--- Send signal `sig` to every running process tree of the named services
-- (all when the only argument is the signal): `sv:signal("web", "HUP")`,
-- `sv:signal("USR1")` — what an init forwards. Returns how many instances
-- got it.
function Supervisor:signal(...)
  check_sv(self, "signal")
  local n = select("#", ...)
  if n == 0 then argerror("signal", 1, "signal expected, got no value") end
  local sig = options.signum(select(n, ...), "signal", n)
  local count = 0
  for _, svc in ipairs(self:_pick("signal", table.unpack({ ... }, 1, n - 1))) do
    for _, i in ipairs(svc.instances) do
      if i.proc then
        i:_signal(sig)
        count = count + 1
      end
    end
  end
  return count
end

--- Run until stopped: start every service, wait until the supervisor
-- stops (`stop`, or a critical service died), return the exit status a
-- program should exit with: 0, or the critical service's (its code, or
-- 128 + signal). `os.exit(sv:run())` makes a container entry point.
function Supervisor:run()
  check_sv(self, "run")
  local ok, msg = self:start()
  if not ok and self._exit == nil then
    io.stderr:write("baton: ", msg, "\n")
  end
  local code = self:_until(function()
    if self._exit ~= nil then return self._exit end
    for _, svc in pairs(self.services) do
      if svc.want == "up" then return nil end
    end
    return 0
  end)
  if self._stop_task then self._stop_task:wait() end
  -- A stop under way (from a handler, another task): until its trees are gone.
  self:_until(function()
    for _, svc in pairs(self.services) do
      for _, i in ipairs(svc.instances) do if i.proc or i.state == "stopping" then return nil end end
    end
    return true
  end)
  return code
end

-- A critical service died: stop everything; `run` returns its status.
function Supervisor:_critical(svc, st)
  self._stopping = true
  self._exit = st and (st.signal and 128 + st.signal or st.code) or 1
  self._exit_service = svc.name
  self._stop_task = task.new(function() self:stop() end, true) -- (set before it runs: run() looks)
  self._stop_task:start()
end

--- Declare a service at run time (it starts when `start` names it, or at
-- once with `{start = true}` as `opts`). Raises for a bad declaration, a
-- duplicate name or an undeclared need.
function Supervisor:add(name, spec)
  check_sv(self, "add")
  if self.services[name] then argerror("add", 1, fmt("service '%s' exists already", tostring(name))) end
  self:_put(name, spec)
  local ok, err = pcall(self._check_graph, self)
  if not ok then
    self.services[name] = nil
    error(err, 0)
  end
  self.services[name]:_resize()
  return self.services[name]
end

--- Stop and forget a service; raises when another service needs it.
function Supervisor:remove(name)
  check_sv(self, "remove")
  local svc = self:_pick("remove", name)[1]
  local deps = self:_dependents(svc)
  if #deps > 0 then argerror("remove", 1, fmt("service '%s' is needed by '%s'", name, deps[1].name)) end
  self:stop(name)
  self.services[name]:_close_listeners()
  self.services[name] = nil
  return true
end

--- Change a service's declaration (command, policy, replicas): what runs
-- keeps running until the next restart, except that extra replicas stop
-- and new ones start at once.
function Supervisor:update(name, spec)
  check_sv(self, "update")
  local svc = self:_pick("update", name)[1]
  local old = svc.decl
  self:_put(name, spec)
  local ok, err = pcall(self._check_graph, self)
  if not ok then
    svc.decl = old
    error(err, 0)
  end
  svc:_resize() -- (only once the change is accepted: new replicas run it)
  for i = #svc.instances, svc.decl.replicas + 1, -1 do
    svc.instances[i]:_stop()
    svc.instances[i] = nil
  end
  if svc.want == "up" then
    for _, i in ipairs(svc.instances) do if i.want ~= "up" then i.want = "up" end end
    self:_advance(svc)
  end
  return svc
end

-- ---- status ---------------------------------------------------------------------------

local Status = { __name = "baton.services" }
Status.__index = Status

local function ago(t) return t and fmt("%.1fs", now() - t) or "-" end

function Status.__tostring(s)
  local rows = {}
  for _, name in ipairs(s._order) do
    local svc = s[name]
    for _, r in ipairs(svc.replicas) do
      local label = #svc.replicas > 1 and fmt("%s.%d", name, r.replica) or name
      local state = r.state
      if r.next_retry then state = fmt("backoff (next in %.1fs)", math.max(0, r.next_retry - now())) end
      rows[#rows + 1] = fmt("%-16s %-24s pid %-7s gen %-3d since %-8s restarts %d%s", label, state,
        r.pid or "-", r.generation, ago(r.since), r.restarts,
        r.last_status and ("  last: " .. tostring(r.last_status)) or "")
    end
  end
  return table.concat(rows, "\n")
end

--- Status as data: service name → {state, ready, generation, replicas =
-- {{replica, state, pid, generation, since, restarts, failures,
-- last_status, last_error, ready, next_retry}…}}; shown as a table when
-- printed.
function Supervisor:status()
  check_sv(self, "status")
  local out = setmetatable({ _order = {} }, Status)
  for name, svc in pairs(self.services) do
    out._order[#out._order + 1] = name
    local reps = {}
    local all = { table.unpack(svc.instances) }
    for i in pairs(svc.extra or {}) do all[#all + 1] = i end -- (another generation: trial or draining)
    for _, i in ipairs(all) do
      reps[#reps + 1] = { replica = i.index, state = i.state, pid = i.pid, generation = i.generation,
        since = i.since, restarts = i.restarts, failures = i:_failures(), last_status = i.last_status,
        last_error = i.last_error, ready = i.ready, next_retry = i.next_retry,
        cgroup = i.cgroup or false, cgroup_why = i.cgroup_why, status_text = i.status_text,
        reloading = i.reloading, watchdog = i.watchdog, main_pid = i.main_pid, dropped = i.log and i.log.dropped,
        ready_deadline = i.state == "starting" and i.ready_deadline or nil }
    end
    out[name] = { state = svc:state(), ready = svc:is_ready(), generation = svc.generation, replicas = reps }
  end
  table.sort(out._order)
  return out
end

function Supervisor:__tostring()
  local n = 0
  for _ in pairs(self.services) do n = n + 1 end
  return fmt("baton.supervisor (%d services)", n)
end

--- Stop every service and let go of their listeners (unix socket files
-- removed): the supervisor's end. (`stop` keeps the listeners, so that a
-- later `start` serves on the same sockets.)
function Supervisor:close()
  check_sv(self, "close")
  self:stop()
  for _, svc in pairs(self.services) do svc:_close_listeners() end
end

function Supervisor:__close()
  if task.can_wait() then
    self:close()
  else
    task.go_internal(function() self:close() end)
  end
end

-- ---- baton under a service manager (systemd's NOTIFY_SOCKET for baton) ---------------------

-- When baton itself runs as a Type=notify unit: READY=1 once a start
-- brought every service it asked for up, STATUS= with a summary as states
-- change, STOPPING=1 when the program stops, and WATCHDOG=1 at half of
-- WATCHDOG_USEC while that is set for baton (its only timer when idle).
manager = {}

local function manager_socket()
  local path = os.getenv("NOTIFY_SOCKET")
  return path ~= nil and path ~= "" and path or nil
end

function manager.send(state)
  if manager_socket() then core.sd_notify(state) end
end

function manager.summary()
  local up, all, failed = 0, 0, 0
  for sv in pairs(supervisors) do
    for _, svc in pairs(sv.services) do
      if svc.want == "up" then
        all = all + 1
        if svc:is_ready() then up = up + 1 elseif svc:state() == "failed" then failed = failed + 1 end
      end
    end
  end
  return fmt("%d/%d services ready%s", up, all, failed > 0 and fmt(", %d failed", failed) or "")
end

function manager.ready()
  if not manager_socket() then return end
  -- (once: a later start — sv:run after sv:start, a service added — only
  -- updates the status)
  manager.send((manager.readied and "" or "READY=1\n") .. "STATUS=" .. manager.summary())
  manager.readied = true
  local usec = tonumber(os.getenv("WATCHDOG_USEC") or "")
  local pid = tonumber(os.getenv("WATCHDOG_PID") or "")
  if usec and usec > 0 and (not pid or pid == core.getpid()) and not manager.watchdog then
    local t = core.timer()
    local half = math.max(1, math.floor(usec / 2000))
    t:start(half, half, function() manager.send("WATCHDOG=1") end)
    t:ref(false)
    manager.watchdog = t
    manager.send("WATCHDOG=1")
  end
end

function manager.status()
  if manager_socket() and manager.watchdog ~= false then manager.send("STATUS=" .. manager.summary()) end
end

function manager.stopping()
  manager.send("STOPPING=1")
  if manager.watchdog then
    manager.watchdog:close()
    manager.watchdog = nil
  end
end

-- ---- the program's end ------------------------------------------------------------------

local registered = false

-- Once a supervisor starts something: when the program ends other than
-- normally (a signal, a failure, the REPL's exit), supervisors stop their
-- services in order, before the runner stops what is left.
function register()
  -- Orphaned descendants of services come back to baton, which reaps them.
  require("baton.scope").subreaper(true)
  if registered then return end
  registered = true
  -- A second signal: KILL every tree now, beyond the main processes' groups
  -- (setsid'd descendants, the cgroup leaves), and remove the leaves.
  table.insert(runner._kill_hooks, function()
    for sv in pairs(supervisors) do
      for _, svc in pairs(sv.services) do
        local all = { table.unpack(svc.instances) }
        for i in pairs(svc.extra or {}) do all[#all + 1] = i end -- (an upgrade's: trial or draining)
        for _, i in ipairs(all) do
          if i.run_token then kill_tree(9, i.pgid, i.proc and i.pid, i.run_token, i.cgroup) end
          -- (a KILLed process leaves its cgroup as it exits, within moments)
          for _ = 1, 100000 do
            if not (i.cgroup and core.cgroup_populated(i.cgroup)) then break end
          end
          if i.cgroup and core.cgroup_remove(i.cgroup) then i.cgroup = nil end
        end
      end
    end
    cgroup_release()
  end)
  runner.on_shutdown(function(reason)
    if reason == "done" then return cgroup_release() end
    manager.stopping()
    local ts = {}
    for sv in pairs(supervisors) do ts[#ts + 1] = task.go_internal(function() sv:stop() end) end
    for _, t in ipairs(ts) do t:wait() end
    for sv in pairs(supervisors) do
      for _, svc in pairs(sv.services) do svc:_close_listeners() end -- (unix socket files go)
    end
    cgroup_release()
  end)
end

-- ---- re-exec: what this image hands over (baton.reexec) -------------------------------------

-- Why a re-exec cannot be done now (nil, msg), or true.
function M._reexec_check()
  local names = {}
  for sv in pairs(supervisors) do
    if sv._stopping or (sv._stops and next(sv._stops)) then return nil, "a supervisor is stopping its services" end
    for name, svc in pairs(sv.services) do
      if names[name] then
        return nil, fmt("two supervisors have a service '%s' (a re-exec matches services by name)", name)
      end
      names[name] = true
      if svc._upgrading and not svc._upgrading.done then
        return nil, fmt("an upgrade or reload of service '%s' is under way", name)
      end
      if svc.extra and next(svc.extra) then
        return nil, fmt("an older generation of service '%s' is still draining", name)
      end
      for _, i in ipairs(svc.instances) do
        if i.state == "stopping" then return nil, fmt("service '%s' is stopping", name) end
        if i.state == "starting" and i:_decl().ready.kind == "fd" then
          return nil, fmt("service '%s' is starting (ready = {fd = …} cannot be handed over): try again once it is "
            .. "ready", name)
        end
      end
    end
  end
  return true
end

-- The pids of the services' processes.
function M._reexec_pids()
  local out = {}
  for sv in pairs(supervisors) do
    for _, svc in pairs(sv.services) do
      for _, i in ipairs(svc.instances) do if i.proc then out[i.pid] = true end end
    end
  end
  return out
end

-- Write what runs into `state`; the fds to keep open across the exec go
-- to `keep`.
function M._reexec_collect(state, keep)
  state.tokens, state.sockets = tokens, sockets
  state.cgroup = cg.base and { base = cg.base, self = cg.self } or nil
  state.services, state.notify = {}, {}
  state.manager_ready = manager.readied or false
  for sv in pairs(supervisors) do
    if sv._notifier then
      local fd = sv._notifier.fd
      if fd and fd >= 0 then
        state.notify[sv._notifier.path] = fd
        keep[#keep + 1] = fd
      end
    end
    for name, svc in pairs(sv.services) do
      local h = { generation = svc.generation, stop_signal = svc.decl.stop_signal, stop_timeout = svc.decl.stop_timeout,
        listeners = {}, fdstore = {}, instances = {} }
      for key, l in pairs(svc.listeners or {}) do
        if not l.inherited then -- (a socket baton's manager gave it stays open across the exec by itself)
          h.listeners[key] = { name = l.name, fd = l.fd, address = l.address, info = l.info }
          keep[#keep + 1] = l.fd
        end
      end
      for _, e in ipairs(svc.fdstore or {}) do
        h.fdstore[#h.fdstore + 1] = { name = e.name, fd = e.fd }
        keep[#keep + 1] = e.fd
      end
      if svc.want == "up" then
        for _, i in ipairs(svc.instances) do h.instances[i.index] = i:_handover(keep) end
      end
      state.services[name] = h
    end
  end
end

-- After the re-exec: stop what no service claimed (a service no longer
-- declared, or not started by the time the main task first waited; extra
-- replicas), close what only it used. Each stop as the previous
-- declaration said: its stop signal, its stop timeout, KILL. Returns the
-- tasks of the stops.
function M._reexec_sweep(state)
  local stops = {}
  local quiet = { _emit = function() end, _changed = function() end, _advance_dependents = function() end,
    _take_notifier = function() end }
  for name, h in pairs(state.services or {}) do
    for idx, r in pairs(h.instances or {}) do
      if not r.claimed then
        r.claimed = true
        local decl = { stop_signal = h.stop_signal or 15, stop_timeout = h.stop_timeout or 10,
          ready = { kind = "spawned" }, backoff = BACKOFF, cgroup = true, limits = {} }
        local svc = setmetatable({ name = name, sv = quiet, instances = {}, logs = {}, want = "down",
          generation = h.generation or 0, decl = decl }, Service)
        local i = new_instance(svc, idx)
        svc.instances[1] = i
        local routes = r.log and {} or nil
        if r.log then
          for stream in pairs(r.log.streams) do routes[stream] = { "raw" } end
          svc.decl.log = routes
        end
        local p = i:_restore(r)
        if p then
          io.stderr:write(fmt("baton: re-exec: %s.%d (pid %d) was not claimed by the script: stopping it\n", name,
            idx, r.pid))
          i.state, i.want = "running", "down"
          i:_watch(p)
        end
        stops[#stops + 1] = task.go_internal(function() i:_stop() end)
      end
    end
    if not h.taken then
      h.taken = true
      for _, l in pairs(h.listeners or {}) do
        core.close(l.fd)
        if l.info and l.info.path then core.unlink_socket(l.info.path) end
      end
      for _, e in ipairs(h.fdstore or {}) do core.close(e.fd) end
    end
  end
  for _, fd in pairs(state.notify or {}) do core.close(fd) end
  state.notify = {}
  -- The new image runs what the previous one did: its manager hears READY=1.
  -- (unless a start of the new image said it already)
  if state.manager_ready and not manager.readied then manager.ready() end
  return stops
end

-- Tell baton's manager a re-exec begins ("reloading") or failed ("ready").
function M._reexec_manager(what)
  if what == "reloading" then
    manager.send(fmt("RELOADING=1\nMONOTONIC_USEC=%d", math.floor(now() * 1e6)))
  else
    manager.send("READY=1")
  end
end

return M
