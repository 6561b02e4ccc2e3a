--- baton.group — structured concurrency: groups of tasks that end together,
-- and a list of jobs run N at a time.
--
--     baton.group(function(g)          -- Trio's nursery, Go's errgroup
--       g:go(baton.run, { "make", "-C", "a" })
--       g:go(baton.run, { "make", "-C", "b" })
--     end, { limit = 4 })
--
--     local results, failures = baton.map(files, function(f)
--       return baton.output { "sha256sum", f }
--     end, { limit = 4 })                 -- xargs -P 4, every result in order
--
-- A group waits for all its tasks. The first failure (of a task, or of the
-- group's own function) cancels the rest — a cancelled `run` stops its
-- process — stops every process started in the group (it is a scope), and
-- is raised where the group was called.
-- @module baton.group
local core = require "baton.core"
local task = require "baton.task"
local errors = require "baton.errors"
local scope = require "baton.scope"
errors.own()

local M = {}
local pack, unpack = table.pack, table.unpack

-- The `limit` option: nil, or a positive integer. `keys`: the options
-- `fname` takes.
local function limit_of(fname, opts, keys)
  if opts == nil then return nil end
  if type(opts) ~= "table" then errors.argerror(fname, 3, "options table expected, got " .. type(opts)) end
  for k in pairs(opts) do
    if not keys[k] then errors.argerror(fname, 3, ("unknown option '%s'"):format(tostring(k))) end
  end
  local n = opts.limit
  if n ~= nil and (math.type(n) ~= "integer" or n < 1) then
    errors.argerror(fname, 3, "option 'limit' must be a positive integer, got " .. tostring(n))
  end
  return n
end

-- The tasks of `list` not done yet.
local function running(list)
  local out = {}
  for _, t in ipairs(list) do
    if not t.done then out[#out + 1] = t end
  end
  return out
end

local Group = { __name = "baton.group" }
Group.__index = Group

-- A task of the group is done: its failure, if it is the first, ends the
-- group — from the loop's next turn, not inside the task that failed.
function Group:_finished(t)
  if not t.failed or self.failure then return end
  local ok, err = pcall(t.wait, t) -- taken: the group raises it
  assert(not ok)
  self.failure = { err = err }
  core.defer(function() self:_cancel() end)
end

-- Cancel what still runs: the tasks, and the body if it waits.
function Group:_cancel()
  for _, t in ipairs(self.tasks) do
    if not t.done then t:cancel("cancelled: another task of the group failed") end
  end
  if self.body and not self.body.done then self.body:cancel(self.failure.err) end
end

--- Start `fn(...)` as a task of the group; with a `limit`, first wait
-- until fewer than that many run. Returns the task.
function Group:go(fn, ...)
  errors.check_self(getmetatable(self) == Group, self, "go", "baton.group")
  if self.over then errors.misuse("go: the group is over") end
  if type(fn) ~= "function" then errors.argerror("go", 1, "function expected, got " .. type(fn)) end
  if self.failure then error(self.failure.err, 0) end
  while self.limit do
    local now = running(self.tasks)
    if #now < self.limit then break end
    task.wait_any(now)
    if self.failure then error(self.failure.err, 0) end
  end
  local t = task.go(fn, ...)
  self.tasks[#self.tasks + 1] = t
  t:_subscribe(function() self:_finished(t) end)
  return t
end

-- Wait for every task; after a failure, for the cancelled ones to unwind.
-- Failures after the first are taken and dropped (Go's errgroup keeps the
-- first too): the group raises one error, and none is left uncaught.
function Group:_join()
  while true do
    local now = running(self.tasks)
    if #now == 0 then break end
    if self.failure then self:_cancel() end
    task.wait_any(now)
  end
  for _, t in ipairs(self.tasks) do
    if t.failed then pcall(t.wait, t) end
  end
end

--- Run `fn(g)` with a group `g` whose tasks (`g:go(fn, ...)`) it waits for;
-- `opts`: `limit` (at most that many tasks at once), `grace` (seconds
-- between TERM and KILL for the processes stopped after a failure, default
-- 5). Returns what `fn` returned; raises the first failure.
function M.group(fn, opts)
  if type(fn) ~= "function" then errors.argerror("group", 1, "function expected, got " .. type(fn)) end
  local g = setmetatable({ tasks = {}, limit = limit_of("group", opts, { limit = true, grace = true }) }, Group)
  return scope.scope(function()
    -- The body is a task too, so that a failing task can cancel its wait.
    g.body = task.go(fn, g)
    local r = pack(pcall(g.body.wait, g.body))
    if not r[1] and not g.failure then g.failure = { err = r[2] } end
    local ok, err = true, nil
    if r[1] or g.body.done then ok, err = pcall(g._join, g) end
    if not (ok and g.body.done) then -- cancelled from outside: all of it goes
      g.failure = g.failure or { err = err or r[2] }
      g:_cancel()
      pcall(g._join, g)
      pcall(g.body.wait, g.body)
    end
    g.over = true
    if g.failure then error(g.failure.err, 0) end -- the scope stops what still runs
    return unpack(r, 2, r.n)
  end, opts and opts.grace and { grace = opts.grace } or nil)
end

--- Call `fn(item, i)` for each item of `list` in tasks, at most `limit` at
-- once (default: all). Waits for all, whatever fails. Returns `results`
-- (the first value each call returned, by index) and `failures` (a list of
-- `{index = i, error = e}`, in index order; empty when all succeeded).
function M.map(list, fn, opts)
  if type(list) ~= "table" then errors.argerror("map", 1, "table expected, got " .. type(list)) end
  if type(fn) ~= "function" then errors.argerror("map", 2, "function expected, got " .. type(fn)) end
  local limit = limit_of("map", opts, { limit = true }) or math.max(#list, 1)
  local results, failures, active, index = {}, {}, {}, {}
  local function collect(t)
    local ok, v = pcall(t.wait, t)
    if ok then results[index[t]] = v else failures[#failures + 1] = { index = index[t], error = v } end
  end
  local ok, err = pcall(function()
    for i = 1, #list do
      while #active >= limit do
        local k, t = task.wait_any(active)
        table.remove(active, k)
        collect(t)
      end
      local t = task.go(fn, list[i], i)
      index[t] = i
      active[#active + 1] = t
    end
    while #active > 0 do
      local k, t = task.wait_any(active)
      table.remove(active, k)
      collect(t)
    end
  end)
  if not ok then -- cancelled or interrupted: what was started goes too
    for _, t in ipairs(active) do t:cancel() end
    for _, t in ipairs(active) do pcall(t.wait, t) end
    error(err, 0)
  end
  table.sort(failures, function(a, b) return a.index < b.index end)
  return results, failures
end

return M
