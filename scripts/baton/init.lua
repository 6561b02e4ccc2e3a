--- baton — a Lua-scriptable process orchestrator.
--
-- `require "baton"` gives this table. Script code runs in tasks (coroutines
-- driven by the event loop); see baton.task for how waiting works and
-- baton.process for processes and the error convention.
-- @module baton
local core = require "baton.core"
local task = require "baton.task"
-- baton.process (and what it loads) comes on first use: `baton -e ''` stays
-- quick. See `lazy` below.
local function process() return require "baton.process" end

local M = {
  version = core.version,
  -- tasks
  go = task.go,
  task = task.go,
  sleep = task.sleep,
  all = task.all,
  current = task.current,

  -- processes (the rest of them: see `lazy`)
  run = function(spec) return process().run(spec, 2) end,

  --- Seconds since an arbitrary point, monotonic, sub-microsecond resolution.
  now = core.now,
}

--- `baton.signals.TERM` → 15; unknown names give nil.
M.signals = setmetatable({}, {
  __index = function(_, k) return core.signum(k) end,
})

--- The C layer, for hosts and advanced scripts.
M.core = core

--- Call `fn(signum)` each time signal `sig` arrives (from the loop, not
-- from the signal handler). Returns a watcher with `close()`.
function M.on_signal(sig, fn)
  if type(fn) ~= "function" then
    error("bad argument #2 to 'on_signal' (function expected, got " .. type(fn) .. ")", 2)
  end
  local w, msg = core.signal_watch(process().signum(sig, "on_signal", 1), fn)
  if not w then error("baton: " .. msg, 2) end
  return w
end

--- Run `fn(...)` as the main task and drive the loop until nothing is left:
-- what `baton script.lua` does. Returns true, task | false, traceback,
-- error, exit status. When the runner delivers a signal (`interrupt`), the
-- main task's wait raises "interrupted by SIGINT" (scopes unwind), then
-- every process still running that was not detached gets TERM, 2 s, KILL.
local caught

function M.main(fn, ...)
  caught = nil
  local ok, a, b = task.main(fn, ...)
  if caught or not ok then
    -- Stopped by a signal, or failed: what it started and did not detach
    -- goes too (TERM, 2 s, KILL); a normal end waits for it instead.
    local stoppers = {}
    for p in pairs(package.loaded["baton.process"] and process().live or {}) do
      stoppers[#stoppers + 1] = task.go_internal(function() pcall(p.terminate, p, 2) end)
    end
    for _, t in ipairs(stoppers) do pcall(t.wait, t) end
  end
  if caught then
    return false, (not ok and a) or ("interrupted by " .. core.signame(caught)), b, 128 + caught
  end
  return ok, a, b
end

--- Called by the runner, from the loop, when SIGINT, SIGTERM or SIGHUP
-- arrived: cancel the main task's wait and stop waiting for the rest.
function M.interrupt(sig)
  if caught then return end
  caught = sig
  local t = task.main_task
  task.interrupted = true
  if t and not t.done then
    -- Its pending wait raises; its scopes and <close> variables unwind with
    -- the loop still running (they may wait), then baton.main stops the rest.
    t:cancel("interrupted by " .. (core.signame(sig) or sig))
    if not t.done then return end
  end
  task.stopping = true -- the main task is over: stop waiting for what it left
  core.stop()
end

-- Loaded on first use, to keep `baton -e ''` quick: name -> {module, field}.
local lazy = {
  spawn = { "baton.process", "spawn" }, output = { "baton.process", "output" },
  lines = { "baton.process", "lines" }, ok = { "baton.process", "ok" },
  wait_any = { "baton.process", "wait_any" }, adopt = { "baton.process", "adopt" },
  exec = { "baton.process", "exec" }, which = { "baton.process", "which" },
  from = { "baton.process", "from" }, signum = { "baton.process", "signum" },
  quote = { "baton.process", "quote" }, Error = { "baton.process", "Error" },
  cmd = { "baton.command", "cmd" }, sh = { "baton.command", "sh" },
  scope = { "baton.scope", "scope" }, subreaper = { "baton.scope", "subreaper" },
  pipeline = { "baton.pipeline", "pipeline" },
}
setmetatable(M, {
  __index = function(t, k)
    local l = lazy[k]
    if not l then return nil end
    local v = require(l[1])[l[2]]
    rawset(t, k, v)
    return v
  end,
})

return M
