--- baton — a Lua-scriptable process orchestrator.
--
-- `require "baton"` gives this table. Script code runs in tasks (coroutines
-- driven by the event loop); see baton.task for how waiting works and
-- baton.process for processes and the error convention.
-- @module baton
local core = require "baton.core"
local task = require "baton.task"
local process = require "baton.process"

local M = {
  version = core.version,
  -- tasks
  go = task.go,
  task = task.go,
  sleep = task.sleep,
  all = task.all,
  current = task.current,
  main = task.main,
  -- processes
  spawn = process.spawn,
  run = function(spec) return process.run(spec, 2) end,
  output = process.output,
  lines = process.lines,
  ok = process.ok,
  wait_any = process.wait_any,
  adopt = process.adopt,
  exec = process.exec,
  which = process.which,
  from = process.from,
  signum = process.signum,
  quote = process.quote,
  Error = process.Error,

  --- Seconds since an arbitrary point, monotonic, sub-microsecond resolution.
  now = core.now,
}

--- `baton.signals.TERM` → 15; unknown names give nil.
M.signals = setmetatable({}, {
  __index = function(_, k) return core.signum(k) end,
})

--- The C layer, for hosts and advanced scripts.
M.core = core

-- Loaded on first use, to keep `baton -e ''` quick: name -> {module, field}.
local lazy = {
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
