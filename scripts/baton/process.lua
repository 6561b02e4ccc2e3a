--- baton.process — start, watch and signal processes.
--
-- `start` turns a command into a running child (options checked and built
-- by baton.options, the child made by the C core); a Process is a job
-- (baton.job: exit, output read to its end, timeouts, waiters). Also here:
-- `adopt` (watch a process baton did not start), `exec` and `which`.
-- @module baton.process
local core = require "baton.core"
local task = require "baton.task"
local errors = require "baton.errors"
local options = require "baton.options"
local registry = require "baton.registry"
local job = require "baton.job"
local Stream = require "baton.stream"
errors.own()

local M = {}
local fmt = string.format
local argerror = errors.argerror
local Status = job.Status

--- A running or finished child.
-- Fields: `pid`, `pgid` (when it leads a group), `argv`, `path`, `cwd`,
-- `stdin`, `stdout`, `stderr` and `fds[n]` (streams, for "pipe"),
-- `status` (nil until done), `timed_out`.
-- @type Process
local Process = job.class("baton.process")
M.Process = Process

-- A Process over the core's handle `ud`; `on_exit` is wired here.
-- `weak`: the exit callback does not keep the process alive (an adopted
-- one nobody waits for or refers to is collected, and its pidfd closed);
-- a child of ours stays until it is reaped.
local function new(ud, fields, weak)
  fields.pid, fields.path, fields._ud, fields.fds = ud:pid(), ud:path(), ud, {}
  local p = job.new(Process, fields)
  local ref = setmetatable({ p }, weak and { __mode = "v" } or nil)
  ud:on_exit(function(code, sig, coredump, known)
    local q = ref[1]
    if not q then return end
    q:_exited(setmetatable({
      ok = code == 0, code = code, signal = sig, signame = sig and core.signame(sig) or nil,
      core = coredump or false, known = known ~= false, timed_out = q.timed_out,
      rusage = q._ud:rusage(),
    }, Status))
  end)
  return p
end


-- Copy `src` (a stream read ahead) into the child's stdin, buffered bytes
-- first; the copy ends with the child.
local function pump(p, src)
  local stdin = p.stdin
  p.stdin = nil
  task.go_internal(function()
    while true do
      local chunk = src:read()
      -- at the end, closed with the process, or EPIPE: the child stopped reading
      if not chunk or stdin.closed or not stdin:write(chunk) then break end
    end
    stdin:close()
    src:close()
  end)
  p:_subscribe(function() src:close() end)
end

-- Start the `baton.from` commands of an argv: each writes into a pipe whose
-- read end the main process gets at a free fd; argv names it /dev/fd/N.
-- Returns the wiring for the main process, the commands, the read ends.
local function start_inputs(argv, s, subs, fname, over)
  over = over or {}
  over.fds = over.fds or {}
  local used, inner, held = {}, {}, {}
  for k in pairs(s.fds or {}) do used[k] = true end
  local fd = 3
  for i, sub in pairs(subs) do
    while used[fd] or over.fds[fd] do fd = fd + 1 end
    local r, w = core.pipe()
    local p, msg, code = M.start(options.with(sub, { stdout = w }, true), options.RUN_KEYS, fname)
    core.close(w)
    if not p then
      core.close(r)
      for _, q in ipairs(inner) do q:close() end
      for _, h in ipairs(held) do core.close(h) end
      return nil, msg, code
    end
    registry.forget(p) -- the process it feeds is the unit that counts
    inner[#inner + 1] = p
    held[#held + 1] = r
    over.fds[fd] = r
    argv[i] = "/dev/fd/" .. fd
    fd = fd + 1
  end
  return over, inner, held
end

--- Start a command. `keys`: the options it may have; `fname`: whom misuse
-- errors name; `defaults`: stdio where the command sets none (run's
-- capture); `over`: a pipeline's wiring. Pipelines start themselves.
-- @return a Process (or a pipeline run), or nil, msg, code
function M.start(spec, keys, fname, defaults, over)
  if type(spec) == "table" and spec.__start then return spec:__start(keys, fname, defaults) end
  local argv, s, subs = options.parse(spec, keys, fname)
  local inner, held
  local function undo()
    for _, q in ipairs(inner or {}) do q:close() end
    for _, h in ipairs(held or {}) do core.close(h) end
  end
  if subs then
    over, inner, held = start_inputs(argv, s, subs, fname, over)
    if not over then return nil, inner, held end
  end
  local built, o, ctx = pcall(options.build, argv, s, fname, defaults, over)
  if not built then
    undo()
    error(o, 0)
  end
  if ctx.err then
    options.release(ctx)
    undo()
    return options.spawn_failure(argv, o, nil, ctx)
  end
  local ud, pipes, code, failure = core.spawn(o)
  options.release(ctx)
  for _, h in ipairs(held or {}) do core.close(h) end -- the child has its copies
  if not ud then
    held = nil
    undo()
    failure.code = code
    return options.spawn_failure(argv, o, failure)
  end
  local p = new(ud, { argv = argv, cwd = o.cwd })
  registry.child(p)
  -- A pipeline stage does not lead a group of its own: the pipeline's group is
  -- the run's, and a stage's own timeout must reach only that stage.
  if (o.setsid or o.pgid == 0) and not (over and over.pgid) then p.pgid = p.pid end
  for fd, st in pairs(pipes) do
    local name = fd == 0 and "stdin" or fd == 1 and "stdout" or fd == 2 and "stderr" or ("fd " .. fd)
    local stream = Stream.new(st, name, fd == 0 and "w" or "r")
    if fd <= 2 then p[name] = stream end
    p.fds[fd] = stream
  end
  for fd, fn in pairs(ctx.sinks) do
    local stream = p.fds[fd]
    if fd == 1 then p.stdout = nil elseif fd == 2 then p.stderr = nil end
    p:_consume(stream, fn)
  end
  if s.input ~= nil then
    p.stdin:_feed(s.input)
    p.stdin = nil
  elseif ctx.pump then
    pump(p, ctx.pump)
  end
  p._kill_signal, p._grace, p._wait_delay = s.kill_signal or "TERM", s.grace or 1, s.wait_delay
  if s.timeout then p:_arm_timeout(s.timeout) end
  if inner then
    -- Done only when the substituted commands are done too.
    p.inputs = inner
    for _, q in ipairs(inner) do p:_hold { job = q, wait = function() q:wait() end } end
  end
  if s.detach then p:detach() else registry.track(p) end
  return p
end

--- Start a process: `{prog, args…, option = value…}`, a program name, or a
-- command from `baton.cmd`. See docs/reference.md for every option.
-- @return a Process, or nil, msg, code when it cannot start
function M.spawn(spec)
  -- A command may carry run's options too: `capture` pipes its output, and
  -- `check` has nothing to do for a spawn.
  local command = type(spec) == "table" and spec.__command
  if command and command.capture then
    return M.start(spec, options.RUN_KEYS, "spawn", { stdout = "pipe", stderr = "pipe" })
  end
  return M.start(spec, command and options.RUN_KEYS or options.SPAWN_KEYS, "spawn")
end

-- The group or the process: where timeouts and terminate send signals.
local function send(p, sig)
  if p.pgid then
    local ok, msg, code = core.killpg(p.pgid, sig)
    if ok or code ~= "ESRCH" or not p._ud then return ok, msg, code end
  end
  return p._ud:kill(sig)
end

-- A signal to the process (its group) and to the commands feeding it
-- through baton.from, which are in no group of its.
function Process:_send(sig)
  local ok, msg, code = send(self, sig)
  for _, q in ipairs(self.inputs or {}) do
    if not q.status then send(q, sig) end
  end
  return ok, msg, code
end

--- Send a signal (name or number) through the pidfd.
-- @return true, or nil, msg, code ("ESRCH" once the process has exited)
function Process:signal(sig)
  job.check(self, "signal")
  return self._ud:kill(options.signum(sig, "signal", 1))
end

--- Send a signal to the process group the process leads (pgroup/setsid).
function Process:signal_group(sig)
  job.check(self, "signal_group")
  local n = options.signum(sig, "signal_group", 1)
  if not self.pgid then
    errors.misuse("process %d does not lead a process group (spawn it with pgroup = true)", self.pid)
  end
  return core.killpg(self.pgid, n)
end

-- Whether the loop runs for the process (one adopted or detached: only
-- while someone waits for it).
function Process:_ref(on)
  self._ud:ref(on)
  self:_ref_io(on)
end

--- Send SIGKILL.
function Process:kill()
  job.check(self, "kill")
  return self._ud:kill(9)
end

--- Close the pipes; kill and reap the process if it still runs. For
-- `local p <close> = baton.spawn{…}`. An adopted process is released
-- instead (Go's Release): baton stops watching it.
function Process:close()
  job.check(self, "close")
  if self.adopted then
    if not self.status and not self.released then
      self.released = true
      self._ud:release()
      registry.forget(self)
      self:_wake(job.RELEASED) -- their wait raises
    end
    return
  end
  self:_terminate(0, true)
  for _, s in pairs(self.fds) do s:close() end
end

function Process:_describe()
  return fmt("baton.process %d (%s)", self.pid, self.status and tostring(self.status) or "running")
end

--- Watch a process that exists already (Go's os.FindProcess, through a
-- pidfd): signal it, wait for it. Its exit status is known only if it is our
-- child. Returns a Process, or nil, msg, code (ESRCH: no such process).
function M.adopt(pid)
  if math.type(pid) ~= "integer" or pid <= 0 then argerror("adopt", 1, "positive integer pid expected") end
  local mine = registry.find_child(pid)
  if mine and not mine._exit then return mine end
  local ud, msg, code = core.adopt(pid)
  if not ud then return nil, msg, code end
  local p = new(ud, { argv = {}, adopted = true, _loose = true }, true)
  ud:ref(false)
  return p
end

--- Replace the current process with the command (same options as spawn,
-- minus pipes). Returns only on failure: nil, msg, code.
function M.exec(spec)
  local argv, s = options.parse(spec, options.SPAWN_KEYS, "exec")
  if s.input or s.timeout or s.stdin == "pipe" or s.stdout == "pipe" or s.stderr == "pipe" then
    argerror("exec", 1, "exec cannot use pipes, input or a timeout: nothing would be left to serve them")
  end
  local o, ctx = options.build(argv, s, "exec")
  local piped = ctx.pump or next(ctx.sinks)
  for _, v in pairs(o.stdio) do piped = piped or v == "pipe" end
  if piped then
    options.release(ctx)
    argerror("exec", 1, "exec cannot use pipes, sinks or a stream read ahead: nothing would be left to serve them")
  end
  if ctx.err then
    options.release(ctx)
    return options.spawn_failure(argv, o, nil, ctx)
  end
  local _, _, code, failure = core.exec(o)
  options.release(ctx)
  failure.code = code
  return options.spawn_failure(argv, o, failure)
end

--- Find a program in PATH like the child will (absolute entries only).
-- @return the path, or nil, msg, code
function M.which(name, path)
  if type(name) ~= "string" then argerror("which", 1, "string expected, got " .. type(name)) end
  if name:find("\0", 1, true) then argerror("which", 1, "name contains a NUL byte") end
  if path ~= nil and type(path) ~= "string" then argerror("which", 2, "string expected, got " .. type(path)) end
  return core.lookpath(name, path, nil, true)
end

return M
