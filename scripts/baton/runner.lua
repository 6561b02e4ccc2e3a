--- baton.runner — the program's life when baton runs a script: the main
-- task, interrupts, uncaught errors, shutdown in order, the exit status.
--
-- The `baton` executable (bindings/cli) uses exactly this contract:
--  * `runner.on_main = fn` before `main`: `fn(task)` is called with the main
--    task before it first runs (the executable hooks its coroutine, so that a
--    signal can stop busy Lua code);
--  * `runner.main(fn, ...)` runs `fn(...)` as the main task, drives the loop
--    until nothing is left, runs the shutdown hooks, and returns
--    `true, task` or `false, message, error value, exit status` — the
--    message nil when it was printed already (failures of tasks nobody
--    waited for, reported as they are found);
--  * `runner.interrupt(signum[, co])`, when SIGINT, SIGTERM or SIGHUP
--    arrived: the main task's pending wait raises `interrupted by SIGINT`,
--    its scopes unwind with the loop running, then the shutdown hooks stop
--    what is left and the exit status is 128 + signum (`co`, when given, is
--    a task whose busy code the signal stops: its failure is the interrupt's);
--  * `runner.kill_jobs()` on a second signal: KILL now, returns the pids to
--    reap;
--  * besides: `task.on_resume` (the hook follows the running task) and
--    `errors.is_own` (the hook never stops baton's own code halfway).
-- Hosts and stock `lua5.4` may call `main` too (as `baton.main`).
-- @module baton.runner
local core = require "baton.core"
local task = require "baton.task"
local errors = require "baton.errors"
errors.own()

local M = {}

-- Shutdown hooks: fn(reason) run in reverse order of registration, each in
-- a task of its own (they may wait), after the main task ended.
local hooks = {}

--- Run `fn(reason)` when the program ends (reason: "done", "failed",
-- "interrupted", or "exit" when the REPL exits); the last registered runs
-- first. Returns a function that removes the hook.
function M.on_shutdown(fn)
  if type(fn) ~= "function" then errors.argerror("on_shutdown", 1, "function expected, got " .. type(fn)) end
  local entry = { fn = fn }
  hooks[#hooks + 1] = entry
  return function()
    for i = #hooks, 1, -1 do
      if hooks[i] == entry then table.remove(hooks, i) end
    end
  end
end

--- Stop what the script left running: cancel its tasks (a cancelled run
-- stops its own process; a task's failure from that is not reported), then
-- stop every job baton started and did not detach, all at once — TERM,
-- `grace` seconds, KILL — again while new ones appear.
function M.stop_all(grace, why)
  for _, t in ipairs(task.running()) do t:cancel(why) end
  if not package.loaded["baton.registry"] then return end -- no process ever ran
  local registry, job = require "baton.registry", require "baton.job"
  for _ = 1, 10 do
    for _, t in ipairs(task.running()) do t:cancel(why) end -- started meanwhile
    local jobs = registry.jobs()
    if #jobs == 0 then break end
    pcall(job.stop_all, jobs, grace)
  end
end

-- Functions called first by `kill_jobs` (KILL at once, no waiting): what
-- other modules own beyond jobs (the supervisors' process trees).
M._kill_hooks = {}

--- KILL every job baton started and did not detach (their groups too),
-- at once, without waiting: a second signal came. Returns the pids of
-- baton's own children among them, for the caller to reap.
function M.kill_jobs()
  local pids = {}
  for _, fn in ipairs(M._kill_hooks) do pcall(fn) end
  if not package.loaded["baton.registry"] then return pids end
  for _, j in ipairs(require("baton.registry").jobs()) do
    pcall(j._send, j, 9)
    for _, p in pairs(j.processes or { j }) do
      if p.pid and not p.adopted then pids[#pids + 1] = p.pid end
      for _, q in ipairs(p.inputs or {}) do pids[#pids + 1] = q.pid end
    end
  end
  return pids
end

-- The first hook, so the last to run: unless the program ended normally
-- (having waited for them), what it started and did not detach goes too.
M.on_shutdown(function(reason)
  if reason ~= "done" then M.stop_all(2, "cancelled: baton is stopping (" .. reason .. ")") end
end)

--- Run the shutdown hooks, each in a task of its own, waiting for each.
function M.shutdown(reason)
  for i = #hooks, 1, -1 do
    local t = task.go_internal(hooks[i].fn, reason)
    local ok, err = pcall(t.wait, t)
    if not ok then -- said, and counted as a failure nobody waited for
      task.on_uncaught(t, "shutdown hook failed: " .. (t.trace or task.errmsg(err)))
    end
  end
end

local caught      -- the signal that interrupts the program
local abandoning  -- the main task is over: stop waiting for what it left

-- Drive the loop for the main task `t` until nothing is left to do, or it
-- failed (then the shutdown hooks stop what it left), or an interrupt
-- unwound it.
local function drive(t)
  while not abandoning and not (t.done and (caught or t.failed)) do
    if core.alive() then
      -- (interruptible only where baton's executable does not handle
      -- SIGINT itself: baton.main under a plain lua5.4)
      local _, interrupted = core.run("default", true)
      if interrupted then M.interrupt(2) end
    elseif t.done or not t:cancel(task.DEADLOCK) then
      break -- finished, or stuck where it cannot be woken
    end
  end
  t:_observe() -- its failure is the program's, reported by the caller
  if not t.done then
    local msg = "baton: deadlock: the main task waits for an event that nothing can produce"
    return false, debug.traceback(t.co, msg), msg
  end
  if t.failed then return false, t.trace, t.err end -- e.g. cancelled by a signal
  return true, t
end

--- Run `fn(...)` as the main task and drive the loop until nothing is left:
-- what `baton script.lua` does.
-- @return true, task | false, message (a traceback), error value, exit status
-- (128 + signal after an interrupt; nil otherwise)
function M.main(fn, ...)
  if core.running() or task.current() then
    errors.misuse("main: the loop runs already (a script run by baton is the main task; start tasks with baton.go)")
  end
  caught, abandoning = nil, false -- before it runs: an interrupt may come at once
  -- As a container's init (pid 1) every orphan of the namespace is baton's
  -- to reap; a script that asks (baton.subreaper(true)) gets the same.
  if core.getpid() == 1 then require("baton.scope").subreaper(true) end
  -- A failure nobody waited for is printed when it is known to be one (the
  -- task was collected, or now at the end) and makes the exit status 1.
  local uncaught = 0
  local on_uncaught = task.on_uncaught
  task.on_uncaught = function(t, trace)
    uncaught = uncaught + 1
    return on_uncaught(t, trace)
  end
  local t = task.new(fn)
  M.main_task = t
  task.main_task = function() return M.main_task end
  t.on_finish = function()
    if caught or t.failed then core.stop() end -- unwound or failed: main takes over
  end
  if M.on_main then M.on_main(t) end
  t:start(...)
  local ok, a, b = drive(t)
  M.shutdown(caught and "interrupted" or ok and "done" or "failed")
  task.report_uncaught()
  task.on_uncaught = on_uncaught
  if caught then
    return false, (not ok and a) or ("interrupted by " .. core.signame(caught)), b, 128 + caught
  end
  if ok and uncaught > 0 then return false, nil, nil, 1 end
  return ok, a, b
end

--- Whether the program is stopping because SIGINT, SIGTERM or SIGHUP came
-- (baton.reexec does not exec then).
function M.stopping()
  return caught ~= nil
end

--- From the loop, when SIGINT, SIGTERM or SIGHUP arrived: cancel the main
-- task's wait and stop waiting for the rest.
-- `co`: the coroutine whose busy code the signal stops (it raises the same
-- message), when that is not the main task.
function M.interrupt(sig, co)
  local msg = "interrupted by " .. (core.signame(sig) or sig)
  if co then task.interrupted(co, msg) end
  if caught then return end
  caught = sig
  local t = M.main_task
  if t and not t.done then
    -- Its pending wait raises; its scopes and <close> variables unwind with
    -- the loop still running (they may wait), then main stops the rest.
    t:cancel(msg)
    if not t.done then return end
  end
  abandoning = true
  core.stop()
end

return M
