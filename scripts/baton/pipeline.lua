--- baton.pipeline — `a | b | c`: processes wired fd to fd by the kernel.
--
-- No byte passes through baton between two processes: each pair shares a
-- pipe created here and handed to both children. Bytes reach Lua only where
-- the script asks: the first stdin (`input`, a stream), the last stdout
-- (`capture`, a sink, `lines`), a stage's stderr, or a Lua function placed
-- as a stage. All processes of a pipeline share one process group, so a
-- timeout, `signal` or `terminate` reaches every stage.
--
-- The verdict follows bash's `pipefail`, with SIGPIPE forgiven: a stage
-- killed by SIGPIPE (or exiting 141) is not a failure when everything after
-- it succeeded — `yes | head -1` succeeds.
-- @module baton.pipeline
local core = require "baton.core"
local task = require "baton.task"
local errors = require "baton.errors"
local options = require "baton.options"
local registry = require "baton.registry"
local job = require "baton.job"
local process = require "baton.process"
local runs = require "baton.run"
local command = require "baton.command"
local Stream = require "baton.stream"
errors.own()

local M = {}
local fmt, concat = string.format, table.concat

-- Options of the pipeline as a whole.
local KEYS = {
  stdin = "redir", stdout = "redir", stderr = "redir", input = "string", capture = "boolean", check = "boolean",
  timeout = "seconds", kill_signal = "signal", grace = "seconds", wait_delay = "seconds", tee = "tee",
  detach = "boolean",
}

local function argerror(fname, msg) errors.argerror(fname, 1, msg) end

-- Raise naming the option when a pipeline option has the wrong kind of value.
local function check_option(fname, k, v)
  if not KEYS[k] then
    argerror(fname, fmt("unknown pipeline option %s", type(k) == "string" and ("'" .. k .. "'") or tostring(k)))
  end
  if KEYS[k] == "tee" then
    if type(v) ~= "string" and not (type(v) == "table" and type(v.path) == "string") then
      argerror(fname, "option 'tee' must be a path or {path = …, append = true}")
    end
    return
  end
  options.check_value(fname, k, KEYS[k], v)
end

local Pipeline = { __name = "baton.pipeline" }
Pipeline.__index = Pipeline
M.Pipeline = Pipeline

-- One stage from a user value: a command, a command table, or a function.
local function stage_of(v, fname)
  if type(v) == "function" then return { fn = v } end
  if getmetatable(v) == Pipeline then return nil, v end
  local c = command.cmd(v, fname) -- checks the table, raises naming the problem
  return { cmd = c }
end

local function new(stages, opts)
  local n = #stages
  for i = 1, n do
    if i > 1 and stages[i].fn and stages[i - 1].fn then
      argerror("pipeline", fmt("stages %d and %d are both functions: join them into one", i - 1, i))
    end
    local spec = stages[i].cmd and stages[i].cmd.__command
    if spec then
      local function refuse(msg) argerror("pipeline", fmt("stage %d: %s", i, msg)) end
      if i > 1 and spec.stdin ~= nil then refuse("only the first stage may set stdin") end
      if i > 1 and spec.input ~= nil then refuse("only the first stage may take input") end
      if i < n and spec.stdout ~= nil then refuse("only the last stage may set stdout") end
      if spec.pgroup ~= nil or spec.setsid ~= nil then
        refuse(fmt("'%s' cannot be set on a stage: the stages share the pipeline's process group",
          spec.pgroup ~= nil and "pgroup" or "setsid"))
      end
    end
  end
  return setmetatable({ stages = stages, __options = opts or {} }, Pipeline)
end

local function append(list, v, fname)
  local st, pl = stage_of(v, fname)
  if pl then
    for _, s in ipairs(pl.stages) do list[#list + 1] = s end
  else
    list[#list + 1] = st
  end
end

--- `baton.pipeline{a, b, c, option = value…}`: stages are commands, command
-- tables or functions `fn(input, output)`; options apply to the pipeline.
function M.pipeline(t)
  if type(t) ~= "table" then argerror("pipeline", "table expected, got " .. type(t)) end
  local stages, opts = {}, {}
  for i = 1, #t do append(stages, t[i], "pipeline") end
  for k, v in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > #t then
      check_option("pipeline", k, v)
      opts[k] = v
    end
  end
  if #stages == 0 then argerror("pipeline", "no stages") end
  return new(stages, opts)
end

-- a | b for commands, pipelines and functions, in any order.
local function bor(a, b)
  local stages = {}
  local opts = getmetatable(a) == Pipeline and a.__options or {}
  append(stages, a, "|")
  append(stages, b, "|")
  return new(stages, opts)
end
Pipeline.__bor = bor
M.bor = bor

--- A copy with options added (or replaced with `force`).
function Pipeline:__with_options(extra, force)
  local opts = {}
  for k, v in pairs(self.__options) do opts[k] = v end
  for k, v in pairs(extra) do
    if force or opts[k] == nil then opts[k] = v end
  end
  return new(self.stages, opts)
end

--- A new pipeline with these options.
function Pipeline:with(opts)
  errors.check_self(getmetatable(self) == Pipeline, self, "with", "baton.pipeline")
  return self:_derive(opts, "with")
end

-- The pipeline with `opts`; misuse errors name `fname`.
function Pipeline:_derive(opts, fname)
  if type(opts) ~= "table" then argerror(fname, "table expected, got " .. type(opts)) end
  for k, v in pairs(opts) do check_option(fname, k, v) end
  return self:__with_options(opts, true)
end

function Pipeline:__tostring()
  local parts = {}
  for i, s in ipairs(self.stages) do parts[i] = s.fn and "<lua function>" or tostring(s.cmd) end
  return concat(parts, " | ")
end

-- Each takes optional pipeline options, as `p:with(opts):run()`.
function Pipeline:run(opts) return runs.run(opts and self:_derive(opts, "run") or self) end
function Pipeline:output(opts) return runs.output(opts and self:_derive(opts, "output") or self) end
function Pipeline:ok(opts) return runs.ok(opts and self:_derive(opts, "ok") or self) end
function Pipeline:lines(opts) return runs.lines(opts and self:_derive(opts, "lines") or self) end
function Pipeline:spawn(opts)
  return process.start(opts and self:_derive(opts, "spawn") or self, options.RUN_KEYS, "spawn")
end

-- ---- a running pipeline ---------------------------------------------------------

--- A running pipeline: `stdin` (first stage, when piped), `stdout` (last
-- stage, when piped), `processes` (by stage; nil for function stages),
-- `pgid`, `status` once done.
local Run = job.class("baton.pipeline.run")
M.Run = Run

local function sigpipe(st)
  return st.signal == 13 or st.code == 141
end

-- The verdict: failures are stages not ok, but a SIGPIPE death upstream of
-- stages that all succeeded is forgiven.
local function verdict(stages)
  local n = #stages
  local downstream_ok = true
  local failed
  for i = n, 1, -1 do
    local st = stages[i]
    local ok = st.ok or (i < n and downstream_ok and sigpipe(st))
    downstream_ok = downstream_ok and ok
    if not ok and not failed then failed = i end -- the rightmost failure, as pipefail
  end
  return failed
end

local function describe(st)
  if st.error then return "failed: " .. tostring(st.error) end
  if st.failure then return st.failure end -- a sink of the stage raised, say
  if st.signal then return "was killed by " .. (st.signame or st.signal) end
  if st.code == nil then return "exited with an unknown status" end
  return "exited with code " .. st.code
end

function Run:_stage_done()
  self._pending = self._pending - 1
  if self._pending > 0 then return end
  local stages, statuses = {}, {}
  for i, s in ipairs(self._stages) do
    stages[i] = s.status
    statuses[i] = s.status.code or (s.status.signal and 128 + s.status.signal) or (s.status.error and 1) or 255
  end
  local failed = verdict(stages)
  local last = stages[#stages]
  local st = setmetatable({
    ok = failed == nil, stages = stages, statuses = statuses, failed_stage = failed,
    code = last.code, signal = last.signal, signame = last.signame, core = last.core or false,
    timed_out = self.timed_out, known = true,
  }, job.Status)
  if failed then
    local f = stages[failed]
    st.failure = fmt("failed at stage %d (%s): it %s", failed, self._names[failed], describe(f))
    if self.timed_out then st.failure = st.failure .. " (timed out)" end
  end
  self:_exited(st)
end

-- Whether the loop runs for the stages (a detached run: only while waited).
function Run:_ref(on)
  for _, p in pairs(self.processes) do
    if not p.status then p:_ref(on) end
  end
  self:_ref_io(on)
  for _, name in ipairs { "stdin", "stdout", "stderr" } do
    local s = self[name]
    if s and not s.closed then s._ud:ref(on) end
  end
end

function Run:_on_done()
  if self._tee and io.type(self._tee) == "file" then self._tee:close() end
end

--- Send a signal to every stage (the process group).
function Run:signal(sig)
  job.check(self, "signal")
  local n = options.signum(sig, "signal", 1)
  if not self.pgid then return errors.fail("ESRCH", "no process in the pipeline") end
  return core.killpg(self.pgid, n)
end
Run.signal_group = Run.signal

function Run:kill()
  job.check(self, "kill")
  return self:signal(9)
end

-- What a timeout, terminate and close send: the signal to every stage, and
-- a cancel to the Lua function stages (a signal cannot reach them).
function Run:_send(sig)
  local ok, msg, code = self:signal(sig)
  for _, rec in ipairs(self._stages) do
    if rec.task and not rec.task.done then rec.task:cancel("stopped") end
  end
  return ok, msg, code
end

--- Kill what still runs, wait, close the pipes.
function Run:close()
  job.check(self, "close")
  self:_terminate(0, true)
  for _, name in ipairs { "stdin", "stdout", "stderr" } do
    if self[name] then self[name]:close() end
  end
end
function Run:_describe()
  return fmt("baton.pipeline (%s)", self.status and tostring(self.status) or "running")
end

-- Close every fd in a list (raw pipe ends the parent holds).
local function close_all(fds)
  for fd in pairs(fds) do core.close(fd) end
end

-- Undo a partial start: kill what runs, wait, close what is open.
local function abort(run, held)
  close_all(held)
  if run._err_fd then
    core.close(run._err_fd)
    run._err_fd = nil
  end
  if run.pgid then core.killpg(run.pgid, 9) end
  for _, s in ipairs(run._stages) do
    if s.proc then
      s.proc:wait()
      s.proc:close()
    end
  end
  for _, name in ipairs { "stdin", "stdout", "stderr" } do
    if run[name] then run[name]:close() end
  end
end

--- Start the pipeline (what spawn/run/lines/output call).
function Pipeline:__start(_, fname, defaults)
  local o = self.__options
  fname = fname or "spawn"
  local n = #self.stages
  local run = job.new(Run, { _stages = {}, _names = {}, processes = {}, command = tostring(self), argv = {} })
  run._wait_delay = o.wait_delay

  -- Check every program before anything starts: a missing stage leaves
  -- nothing running.
  for i, s in ipairs(self.stages) do
    if s.cmd then
      local spec = s.cmd.__command
      -- Checked only: nothing is opened or taken over yet.
      local argv, so = options.check(spec, options.SPAWN_KEYS, fname)
      local oo = { cwd = so.cwd }
      if so.env or so.clearenv then oo.env = options.env(so.env, so.clearenv, fname) end
      local found, _, code = core.lookpath(argv[1], errors.envpath(oo.env), so.cwd)
      if not found then
        local _, msg = options.spawn_failure(argv, oo,
          { code = code, strerror = core.strerror(code), stage = "lookup" })
        return nil, fmt("%s (pipeline stage %d)", msg, i), code
      end
      run._names[i] = tostring(s.cmd)
    else
      run._names[i] = "lua function"
    end
  end

  -- The tee file is opened before anything starts.
  local tee
  if o.tee then
    local so = o.stdout == nil and defaults and defaults.stdout or o.stdout
    if not (so == nil or so == "inherit" or so == "pipe" or type(so) == "function") then
      argerror(fname, fmt("option 'tee': stdout must be inherited, a pipe or a function to tee it, got %s",
        type(so) == "string" and fmt("%q", so) or type(so)))
    end
    if self.stages[n].fn then
      argerror(fname, "option 'tee': the last stage is a Lua function; it can write a copy itself")
    end
    local f, msg, errno = io.open(type(o.tee) == "table" and o.tee.path or o.tee,
      (type(o.tee) == "table" and o.tee.append) and "ab" or "wb")
    if not f then return errors.fail(errors.errname(errno), "cannot open the tee file: %s", msg) end
    tee = f
  end

  local held = {}      -- raw fds the parent still holds
  local shared_err     -- capture: every stage's stderr goes to one pipe
  if (defaults and defaults.stderr == "pipe" and o.stderr == nil) or o.stderr == "pipe" then
    -- capture (or output): every stage's stderr into one pipe baton reads
    local r, w = core.pipe()
    held[w] = true
    shared_err = w
    run._err_fd = r
  end

  local tee_to_stdout  -- tee with stdout inherited: baton reads and copies
  run._tee = tee       -- closed when the run is done, whatever happened
  local prev_out -- what the next stage reads: an fd, or "stream" (a function reads it)
  local stdin_first = o.stdin
  local input = o.input
  if input ~= nil then stdin_first = "pipe" end
  if defaults and defaults.stdout and o.stdout == nil then
    o = setmetatable({ stdout = defaults.stdout }, { __index = o })
  end

  -- Started stage by stage; anything raised meanwhile (an interrupt) undoes
  -- what started, as a failed stage does.
  local started, failed, fmsg, fcode = pcall(function()
    for i, s in ipairs(self.stages) do
      local rec = { index = i }
      run._stages[i] = rec
      if s.cmd then
        local over = {}
        if i == 1 then
          over.stdin = stdin_first
        elseif self.stages[i - 1].fn then
          over.stdin = "pipe"
        else
          over.stdin = prev_out
        end
        local w
        if i == n then
          over.stdout = o.stdout
          if tee and (o.stdout == nil or o.stdout == "inherit") then
            over.stdout = "pipe" -- baton copies it to its stdout and the tee
            tee_to_stdout = true
          elseif tee and type(o.stdout) == "function" then
            local fn, f = o.stdout, tee
            over.stdout = function(chunk)
              if chunk then f:write(chunk) end
              return fn(chunk)
            end
          end
        elseif self.stages[i + 1].fn then
          over.stdout = "pipe"
        else
          local r
          r, w = core.pipe(256 * 1024) -- as large as the pipes baton reads: fewer wakeups per byte
          held[r], held[w] = true, true
          over.stdout = w
          prev_out = r
        end
        over.stderr = shared_err or o.stderr
        over.pgid = run.pgid or 0
        local p, msg, code = process.start(s.cmd.__command, options.SPAWN_KEYS, fname, nil, over)
        if w then
          core.close(w)
          held[w] = nil
        end
        if i > 1 and not self.stages[i - 1].fn and type(over.stdin) == "number" then
          core.close(over.stdin)
          held[over.stdin] = nil
        end
        if not p then
          return "failed", fmt("%s (pipeline stage %d)", msg, i), code
        end
        registry.forget(p) -- the pipeline is the unit its scope manages
        run.pgid = run.pgid or p.pid
        run.pid = run.pid or p.pid
        rec.proc = p
        run.processes[i] = p
        run.argv[#run.argv + 1] = p.argv[1]
      end
    end
  end)
  if not started or failed then
    abort(run, held)
    if tee then tee:close() end
    if not started then error(failed, 0) end
    return nil, fmsg, fcode
  end
  if shared_err then
    core.close(shared_err)
    held[shared_err] = nil
  end

  -- Streams at the ends, and the function stages between processes.
  local first, last = run._stages[1], run._stages[n]
  if first.proc and first.proc.stdin then
    run.stdin = first.proc.stdin
    first.proc.stdin = nil
  end
  if last.proc and last.proc.stdout then
    run.stdout = last.proc.stdout
    last.proc.stdout = nil
  end
  if run._err_fd then
    local ud, msg, code = core.stream_open(run._err_fd)
    run._err_fd = nil -- the stream owns it now (or closed it on failure)
    if not ud then
      abort(run, held)
      if tee then tee:close() end
      return nil, msg, code
    end
    run.stderr = Stream.new(ud, "stderr", "r")
  end
  if tee_to_stdout then
    local out = run.stdout
    run.stdout = nil
    out.tee = tee
    run:_consume(out, function(chunk)
      -- Copied as it comes; when baton's own stdout is gone the sink fails,
      -- which closes the pipe: the last stage gets SIGPIPE, as with | tee.
      if chunk then assert(io.stdout:write(chunk)) end
      assert(io.stdout:flush())
    end)
  elseif tee and run.stdout then
    -- The script reads stdout, maybe after the run is done: the stream
    -- closes the tee at its end (or when closed), not the run.
    run.stdout.tee = tee
    run._tee = nil
  end
  if input ~= nil and run.stdin then
    run.stdin:_feed(input)
    run.stdin = nil
  end

  run._pending = n
  for i, rec in ipairs(run._stages) do
    local s = self.stages[i]
    if rec.proc then
      rec.proc:_subscribe(function(st)
        rec.status = st
        run:_stage_done()
      end)
    else
      local inp = i > 1 and run._stages[i - 1].proc.stdout or nil
      local out = i < n and run._stages[i + 1].proc.stdin or nil
      if inp then run._stages[i - 1].proc.stdout = nil end
      if out then
        run._stages[i + 1].proc.stdin = nil
        out.sigpipe = true -- writing after the next stage has gone ends this one
      end
      rec.task = task.go_internal(function()
        local ok, err = pcall(s.fn, inp, out)
        if out then out:close() end
        if inp then inp:close() end -- unread data upstream: SIGPIPE, forgiven when all after succeeds
        if ok then
          rec.status = { ok = true, code = 0 }
        elseif err == Stream.EPIPE then -- as a process killed by SIGPIPE
          rec.status = { ok = false, signal = 13, signame = "SIGPIPE" }
        else
          rec.status = { ok = false, error = err }
        end
        run:_stage_done()
      end)
    end
  end

  if o.timeout then
    run._kill_signal, run._grace = o.kill_signal or "TERM", o.grace or 1
    run:_arm_timeout(o.timeout)
  end
  if o.detach then run:detach() else registry.track(run) end
  return run
end

return M
