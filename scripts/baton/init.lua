--- baton — a Lua-scriptable process orchestrator.
--
-- `require "baton"` gives this table. Script code runs in tasks (coroutines
-- driven by the event loop); see baton.task for how waiting works and
-- baton.process for processes and the error convention.
-- @module baton
local core = require "baton.core"
local task = require "baton.task"
local errors = require "baton.errors"
errors.own()
-- The rest comes on first use: `baton -e ''` stays quick. See `lazy` below.

local M = {
  version = core.version,
  -- tasks
  go = task.go,
  task = task.go,
  sleep = task.sleep,
  all = task.all,
  wait_any = task.wait_any,
  current = task.current,

  --- Seconds since an arbitrary point, monotonic, sub-microsecond resolution.
  now = core.now,
  --- The C layer, for hosts and advanced scripts.
  core = core,
}

--- `baton.signals.TERM` → 15; unknown names give nil.
M.signals = setmetatable({}, {
  __index = function(_, k) return core.signum(k) end,
})

--- Call `fn(signum)` each time signal `sig` arrives (from the loop, not
-- from the signal handler). Returns a watcher with `close()`.
function M.on_signal(sig, fn)
  local n = require("baton.options").signum(sig, "on_signal", 1)
  if type(fn) ~= "function" then errors.argerror("on_signal", 2, "function expected, got " .. type(fn)) end
  local w, msg = core.signal_watch(n, fn)
  if not w then errors.misuse(msg) end
  return w
end

-- A re-exec of the baton executable handed its state over: taken now,
-- before anything can reap the children it names (see baton.reexec).
if os.getenv("BATON_REEXEC") and require("baton.runner").executable then require("baton.reexec")._take() end

-- Loaded on first use, to keep `baton -e ''` quick: name -> {module, field}
-- ({module}: the module itself).
local lazy = {
  spawn = { "baton.process", "spawn" }, adopt = { "baton.process", "adopt" },
  exec = { "baton.process", "exec" }, which = { "baton.process", "which" },
  run = { "baton.run", "run" }, output = { "baton.run", "output" },
  lines = { "baton.run", "lines" }, ok = { "baton.run", "ok" },
  from = { "baton.options", "from" }, signum = { "baton.options", "signum" },
  quote = { "baton.errors", "quote" }, Error = { "baton.errors", "Error" },
  main = { "baton.runner", "main" },
  cmd = { "baton.command", "cmd" }, sh = { "baton.command", "sh" },
  scope = { "baton.scope", "scope" }, subreaper = { "baton.scope", "subreaper" },
  pipeline = { "baton.pipeline", "pipeline" },
  group = { "baton.group", "group" }, map = { "baton.group", "map" },
  inspect = { "baton.inspect", "inspect" },
  supervisor = { "baton.service", "supervisor" },
  procfile = { "baton.procfile" }, -- (no field: the module itself)
  connect = { "baton.net", "connect" }, http_get = { "baton.net", "http_get" },
  logfile = { "baton.logfile" }, -- a whole module: baton.logfile.open
  reexec = { "baton.reexec", "reexec" },
}
setmetatable(M, {
  __lazy = lazy, -- what the REPL completes besides what is loaded
  __index = function(t, k)
    local l = lazy[k]
    if not l then return nil end
    local v = require(l[1])
    if l[2] then v = v[l[2]] end
    rawset(t, k, v)
    return v
  end,
})

return M
