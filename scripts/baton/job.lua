--- baton.job — the lifecycle shared by everything baton runs and watches: a
-- process, a pipeline run, and (next) a service generation.
--
--     started ──► exited ──► output read to its end ──► done
--                  (status)   (or the bound passed)      (waiters woken)
--
-- A job is *exited* when its exit status is known (`_exited`), and *done*
-- once every pipe baton reads for it (sinks, captures, substitutions) has
-- reached its end — or the bound after a timeout passed. Waiters see it only
-- when it is done. A timeout sends `kill_signal` to the job, then KILL after
-- `grace`. A kind of job provides `_send(sig)` (where signals go) and may
-- provide `_on_done()`.
-- @module baton.job
local core = require "baton.core"
local task = require "baton.task"
local errors = require "baton.errors"
local options = require "baton.options"
local registry = require "baton.registry"
errors.own()

local M = {}
local fmt = string.format
local suspend = task.suspend

-- ---- status ----------------------------------------------------------------------

--- How a job ended: `ok`, `code`, `signal`, `signame`, `core`, `timed_out`,
-- `known`, `rusage`; pipelines add `stages`, `statuses`, `failed_stage`;
-- `failure` says why it failed when the exit alone does not. Results of
-- `run` are statuses too, with the output and the command added.
local Status = { __name = "baton.status" }
Status.__index = Status
M.Status = Status

function Status.__tostring(s)
  local t
  if s.signal then
    t = fmt("killed by %s%s", s.signame or ("signal " .. s.signal), s.core and " (core dumped)" or "")
  elseif s.known == false then
    t = "exited (status unknown: not our child)"
  elseif s.code == nil then -- a pipeline ending in a Lua function stage
    t = s.ok and "ok" or "failed"
  else
    t = "exit " .. tostring(s.code)
  end
  if s.timed_out then t = t .. " (timed out)" end
  if s.wait_delay_expired then t = t .. " (output held open past wait_delay)" end
  if s.sink_error ~= nil then t = t .. " (a sink raised: " .. tostring(s.sink_error) .. ")" end
  return t
end

--- What waiters of a job that stopped being watched get (an adopted
-- process released by `close`).
M.RELEASED = setmetatable({}, { __tostring = function() return "released" end })

-- ---- the job ---------------------------------------------------------------------------

local Job = {}
Job.__index = Job
M.Job = Job

-- Raise unless `self` is a job (`p.wait()` instead of `p:wait()`, say).
local function check(self, fname)
  errors.check_self(type(self) == "table" and self._readers ~= nil, self, fname, "a process or pipeline run")
end
M.check = check

--- A class of jobs: its methods fall back on Job's. Metamethods are not
-- inherited by Lua, so `__close` and `__tostring` are set here.
function M.class(name)
  local class = setmetatable({ __name = name }, { __index = Job })
  class.__index = class
  class.__close = function(self) return self:close() end
  class.__tostring = function(self) return self:_describe() end
  return class
end

--- Make `fields` a job of `class`, started now.
function M.new(class, fields)
  fields._waiters, fields._readers = {}, {}
  fields.started = core.now()
  fields.timed_out = false
  return setmetatable(fields, class)
end

--- Read `stream` to its end straight from the loop's read callback, handing
-- each chunk to `fn` (then nil at the end): no task switch per chunk, which
-- keeps sinks and captures at pipe speed. `fn` must not wait. The job is
-- done only once every such stream reached its end (or the bound passed).
-- A raising `fn` closes the stream and fails the job.
function Job:_consume(stream, fn)
  local r = { stream = stream, done = false }
  local function finish()
    if r.done then return end
    r.done = true
    local w = r.wake
    r.wake = nil
    if w then w() end
  end
  r.wait = function()
    if not r.done then suspend(function(wake) r.wake = wake end) end
  end
  local tee = stream.tee
  stream.on_close = tee and function()
    tee:close()
    finish()
  end or finish -- closed early (the bound passed): done here
  local ok = stream._ud:read_start(function(data)
    if data then
      if tee then tee:write(data) end
      local good, err = pcall(fn, data)
      if not good then
        r.err = err
        stream:close()
      end
      return
    end
    local good, err = pcall(fn, nil)
    if not good then r.err = err end
    stream:close()
  end)
  if not ok then stream:close() end
  self:_hold(r)
  return r
end

--- The job is not done before `r.wait()` returns. `r.stream`: a pipe to
-- close, or `r.job`: a job to kill, when the wait is given up.
function Job:_hold(r)
  self._readers[#self._readers + 1] = r
end

--- After `secs`, `_kill_signal` to the job, then KILL after `_grace` seconds.
function Job:_arm_timeout(secs)
  local timer = core.timer()
  self._timer = timer
  local sig = options.signum(self._kill_signal, "spawn", 1)
  timer:start(options.ms(secs), 0, function()
    if self.status then return end
    self.timed_out = true
    local exited = self._exit
    if exited then
      -- It exited in time, but what it started still holds its output open:
      -- that counts against the timeout too (its group gets the signals).
      exited.timed_out, exited.ok = true, false
      exited.failure = exited.failure or "timed out: it exited, but its output was still held open"
      self:_bound_readers(self._wait_delay or 1)
    end
    self:_send(sig)
    -- Done already (a pipeline's Lua stages end at once when cancelled)?
    if sig ~= 9 and self._timer == timer then
      timer:start(options.ms(self._grace), 0, function()
        if not self.status then self:_send(9) end
      end)
    end
  end)
end

--- Stop waiting for what the job is not done without: close the pipes baton
-- reads, kill the jobs feeding it (baton.from).
function Job:_abandon_readers()
  for _, r in ipairs(self._readers) do
    if r.stream then r.stream:close() elseif r.job and not r.job.status then r.job:_send(9) end
  end
end

--- Abandon the readers `secs` from now (`wait_delay`, or 1 s after a
-- timeout): what holds the output open is killed if it is in the job's
-- group, and the job no longer counts as a success (Go's ErrWaitDelay).
function Job:_bound_readers(secs)
  if self._reader_timer then return end
  local timer = core.timer()
  self._reader_timer = timer
  if self._loose then timer:ref(false) end
  timer:start(options.ms(secs), 0, function()
    self._abandoned = true
    if self.pgid then self:_send(9) end
    self:_abandon_readers()
  end)
end

--- The exit status is known: done once the readers reached their end, or
-- the bound passed (by default none; 1 s after a timeout).
function Job:_exited(st)
  self.ended = core.now()
  self._exit = st
  if #self._readers == 0 then return self:_done() end
  local bound = self._wait_delay or (self.timed_out and 1 or nil)
  if bound then self:_bound_readers(bound) end
  task.go_internal(function()
    for _, r in ipairs(self._readers) do r.wait() end
    self:_done()
  end)
end

function Job:_done()
  -- The timeout, if any, ran until now: the output counts too.
  if self._timer then
    self._timer:close()
    self._timer = nil
  end
  if self._reader_timer then
    self._reader_timer:close()
    self._reader_timer = nil
  end
  registry.forget(self)
  if self._on_done then self:_on_done() end
  local st = self._exit
  if st.timed_out then st.ok = false end -- stopped by its timeout, whatever it exited with
  if self._abandoned and st.ok then
    st.ok, st.wait_delay_expired = false, true
    st.failure = st.failure or "its output was still held open after wait_delay"
  end
  -- A sink that raised fails the job, whatever its exit: the error is the
  -- cause (the child may then have died of SIGPIPE).
  for _, r in ipairs(self._readers) do
    if r.err ~= nil and st.sink_error == nil then
      st.ok, st.sink_error = false, r.err
      local f = fmt("failed: its %s sink raised: %s", r.stream.name or "output", tostring(r.err))
      st.failure = st.failure and (f .. "; " .. st.failure) or f
    end
  end
  self.status = st
  self:_wake(st)
end

--- Wake every waiter with `v` (the status, or RELEASED).
function Job:_wake(v)
  local ws = self._waiters
  self._waiters = {}
  for fn in pairs(ws) do fn(v) end
end

--- Call `fn(status)` once the job is done (at once if it is). Returns a
-- function that cancels the subscription.
function Job:_subscribe(fn)
  if self.status then
    fn(self.status)
    return function() end
  end
  if self.released then errors.misuse("process %d was released (close): it cannot be waited for", self.pid) end
  self._waiters[fn] = true
  if self._loose then self:_ref(true) end
  return function()
    self._waiters[fn] = nil
    if self._loose and not self.status and not self.released and next(self._waiters) == nil then
      self:_ref(false)
    end
  end
end

--- Wait until the job is done: exited and, for pipes baton reads itself
-- (sinks, captures), read to the end. Returns the status, or with a
-- `timeout` in seconds `nil, "ETIMEDOUT: …", "ETIMEDOUT"` if it is not done
-- by then.
function Job:wait(timeout)
  check(self, "wait")
  options.check_seconds("wait", 1, timeout, "timeout")
  if self.status then return self.status end
  local timer = timeout and core.timer()
  local unsubscribe
  local ok, st = pcall(suspend, function(wake)
    unsubscribe = self:_subscribe(wake)
    if timer then timer:start(options.ms(timeout), 0, function() wake(false) end) end
  end)
  -- Whatever ended the wait (done, timeout, cancel), leave nothing behind.
  if timer then timer:close() end
  if unsubscribe then unsubscribe() end
  if not ok then error(st, 0) end
  if st == M.RELEASED then errors.misuse("process %d was released (close) while waited for", self.pid) end
  if not st then
    return errors.fail("ETIMEDOUT", "%s still running after %gs", self.pid and ("process " .. self.pid) or "it",
      timeout)
  end
  return st
end

--- The status if the job is done, else nil; never waits.
function Job:poll()
  check(self, "poll")
  return self.status
end

--- Stop the job and return its status: TERM, up to `grace` seconds (none:
-- straight to KILL), KILL, and after one more second stop waiting for pipes
-- that something else still holds open. `unwinding`: called from a
-- `<close>` handler, where an error may be unwinding and Lua cannot wait —
-- then a task of baton's does the waiting, and this returns nil.
function Job:_terminate(grace, unwinding)
  if self.status then return self.status end
  if unwinding and not task.can_wait() then
    task.go_internal(function() self:_terminate(grace) end)
    return nil
  end
  local function signal(sig)
    -- Signals go to the group when there is one, also after the leader
    -- exited: its children may be what holds the pipes.
    if not self._exit or self.pgid then self:_send(sig) end
  end
  if grace > 0 then
    signal(15)
    self:wait(grace)
  end
  if not self.status then
    signal(9)
    if not self:wait(1) then self:_abandon_readers() end
  end
  return self:wait()
end

--- Stop every job of `list` at once (each as `_terminate` does) and wait
-- until all are done. `unwinding`: see `_terminate` (then nothing waits).
function M.stop_all(list, grace, unwinding)
  local stoppers = {}
  for _, j in ipairs(list) do
    if not j.status then
      stoppers[#stoppers + 1] = task.go_internal(function() return j:_terminate(grace) end)
    end
  end
  if unwinding and not task.can_wait() then return end
  local failed
  for _, t in ipairs(stoppers) do
    local ok, err = pcall(t.wait, t)
    if not ok and failed == nil then failed = err end
  end
  if failed ~= nil then error(failed, 0) end
end

--- TERM (the group, if it leads one), wait up to `grace` seconds (default
-- 5), then KILL; returns the status.
function Job:terminate(grace)
  check(self, "terminate")
  options.check_seconds("terminate", 1, grace, "grace")
  return self:_terminate(grace or 5)
end

--- Whether the job's own timers and the pipes baton reads or writes for it
-- keep the loop running (a detached job's do not, unless waited for; a
-- write still under way always does).
function Job:_ref_io(on)
  for _, timer in ipairs { self._timer or false, self._reader_timer or false } do
    if timer then timer:ref(on) end
  end
  for _, r in ipairs(self._readers) do
    if r.stream and not r.stream.closed then r.stream._ud:ref(on) end
  end
  for _, s in pairs(self.fds or {}) do
    if not s.closed then s._ud:ref(on) end
  end
end

--- Leave the enclosing scope and the runner's care, as a daemon started by
-- a script: not terminated when the scope or the script ends, and the
-- runner does not wait for it (unless a task does).
function Job:detach()
  check(self, "detach")
  registry.forget(self)
  if not self.status and not self._loose then
    self._loose = true
    if next(self._waiters) == nil then self:_ref(false) end
  end
  return self
end

return M
