--- baton.scope — structured lifetimes for processes: everything spawned
-- inside a scope (by its code and by tasks started in it) is terminated and
-- reaped when the scope ends, normally or by an error, unless detached.
--
--     baton.scope(function()
--       baton.spawn{"server"}        -- stopped when the scope ends
--       baton.run{"client", "--test"}
--     end)
--     do local s <close> = baton.scope() … end
-- @module baton.scope
local task = require "baton.task"
local errors = require "baton.errors"
local options = require "baton.options"
errors.own()

local M = {}
local pack, unpack = table.pack, table.unpack

local Scope = { __name = "baton.scope" }
Scope.__index = Scope

function Scope:_add(p)
  local s = self
  while s and s.closed do s = s.prev end -- a scope that ended hands over to its parent
  if not s then return end
  s.procs[p] = true
  p._scope = s
end

function Scope:_remove(p)
  self.procs[p] = nil
  p._scope = nil
end

--- End the scope: cancel the tasks started in it that still run, TERM
-- (then KILL after `grace`) the processes that still run, wait for all.
function Scope:close()
  errors.check_self(getmetatable(self) == Scope, self, "close", "baton.scope")
  if self.closed then return end
  self.closed = true
  if task.scope() == self then task.set_scope(self.prev) end
  local me = task.current()
  for t in pairs(self._tasks) do
    if t ~= me and not t.done then t:cancel("scope ended") end
  end
  local list = {}
  for p in pairs(self.procs) do list[#list + 1] = p end
  self.procs = {}
  -- All at once; unwinding an error, tasks of baton's do the waiting.
  require("baton.job").stop_all(list, self.grace, true)
end
Scope.__close = Scope.close

--- The processes still recorded in the scope.
function Scope:processes()
  errors.check_self(getmetatable(self) == Scope, self, "processes", "baton.scope")
  local out = {}
  for p in pairs(self.procs) do out[#out + 1] = p end
  return out
end

local function open(opts, n)
  if opts ~= nil and type(opts) ~= "table" then
    errors.argerror("scope", n, "options table expected, got " .. type(opts))
  end
  local grace = opts and opts.grace or 5
  options.check_seconds("scope", n, grace, "option 'grace'")
  local s = M.new(grace)
  s.prev = task.set_scope(s)
  return s
end

--- A scope not entered by the running code: a task given it (`t.scope`)
-- records there what it starts (the REPL gives one to each entry).
function M.new(grace)
  return setmetatable({ procs = {}, _tasks = setmetatable({}, { __mode = "k" }), grace = grace, closed = false },
    Scope)
end

--- `baton.scope(fn, opts)` runs `fn(scope)` inside a new scope and returns
-- its results; `baton.scope(opts)` returns an open scope for `<close>`.
-- opts: `grace` (seconds between TERM and KILL, default 5).
function M.scope(fn, opts)
  if type(fn) ~= "function" then return open(fn, 1) end
  local s = open(opts, 2)
  local r = pack(pcall(fn, s))
  s:close()
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

local reaper

--- Become (or stop being) a subreaper: orphaned descendants are re-parented
-- to baton instead of init, and reaped. `on_reap(pid, code, signal)` is
-- called for each. Returns true or nil, msg, code.
function M.subreaper(on, on_reap)
  if type(on) ~= "boolean" then
    errors.argerror("subreaper", 1, "boolean expected, got " .. type(on))
  end
  if on_reap ~= nil and type(on_reap) ~= "function" then
    errors.argerror("subreaper", 2, "function expected, got " .. type(on_reap))
  end
  local core = require "baton.core"
  if on == false then
    if reaper then
      reaper:reap() -- what is pending now
      reaper:close()
    end
    reaper = nil
    -- Orphans go to init again, not to a process that no longer reaps them.
    return core.set_subreaper(false)
  end
  if reaper then
    if on_reap == nil then return true end
    reaper:reap() -- the old callback sees what is pending; the new one the rest
    reaper:close()
    reaper = nil
  end
  local r, msg, code = core.reaper(true, on_reap)
  if not r then return nil, msg, code end
  reaper = r
  return true
end

return M
