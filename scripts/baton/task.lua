--- baton.task — tasks: coroutines driven by the event loop.
--
-- Script code runs in tasks. A call that waits (`p:wait()`, `stream:read()`,
-- `baton.sleep()`) suspends its task; the loop and every other task go on.
-- Outside any task (plain `lua5.4` with `require "baton"`), the same call
-- drives the loop itself until its event arrives.
--
-- A task's error belongs to whoever waits for it: `t:wait()` (and `all`)
-- re-raise it, however long after it happened. A failure nobody ever
-- waits for is *uncaught*: it goes to `task.on_uncaught` when the task is
-- collected or when the program ends (`report_uncaught`) — the runner then
-- exits 1 — and never stops unrelated work at the moment it happens
-- (asyncio's "exception was never retrieved").
-- @module baton.task
local core = require "baton.core"
local errors = require "baton.errors"
errors.own()

local M = {}
local tasks = setmetatable({}, { __mode = "k" }) -- coroutine -> task
local pack, unpack = table.pack, table.unpack
local cocreate, coresume, costatus, coyield, corunning =
  coroutine.create, coroutine.resume, coroutine.status, coroutine.yield, coroutine.running

-- A task is the outermost coroutine of the code it runs: a bare
-- coroutine.yield() there would leave it suspended with nothing to resume
-- it. It raises instead, where it was called, as the same yield fails
-- under lua ("attempt to yield from outside a coroutine"). Baton's own
-- waits yield through `coyield`; coroutines a script makes are untouched.
coroutine.yield = function(...) -- luacheck: ignore 122
  if tasks[corunning()] then error("attempt to yield from outside a coroutine", 0) end
  return coyield(...)
end

-- Resuming a task with this value makes its pending wait raise.
local CANCEL = setmetatable({}, { __tostring = function() return "cancelled" end })
local DEADLOCK = "baton: deadlock: waiting for an event that nothing in the loop can produce"
M.DEADLOCK = DEADLOCK

local Task = {}
Task.__index = Task
Task.__name = "baton.task"

-- Failed tasks whose error nobody has taken yet (weak: a collected one is
-- reported by its finalizer).
local unobserved = setmetatable({}, { __mode = "k" })

--- Called with (task, traceback) for a failure nobody waited for, once that
-- is known: the task was collected, or the program ends. Default: print it
-- to stderr. The runner and the REPL replace it.
function M.on_uncaught(_, trace)
  io.stderr:write("baton: uncaught error in task: ", trace, "\n")
end

--- Called with the task when a task fails while nobody waits for it (its
-- error may still be taken later). Default: nothing; the REPL prints it.
M.on_failure = nil

local function report(t)
  if t.unobserved and not t.reported then
    t.reported = true
    unobserved[t] = nil
    M.on_uncaught(t, t.trace)
  end
end

-- Collected without anyone taking its error: that is final.
function Task:__gc()
  pcall(report, self)
end

--- Report every failure nobody took so far (the program ends); returns how
-- many there were.
function M.report_uncaught()
  local list = {}
  for t in pairs(unobserved) do list[#list + 1] = t end
  table.sort(list, function(a, b) return a.seq < b.seq end)
  for _, t in ipairs(list) do report(t) end
  return #list
end

--- Take the task's error: it is no longer uncaught.
function Task:_observe()
  self.unobserved = nil
  unobserved[self] = nil
end

local seq = 0 -- creation order, for reporting in order

--- An error value as text, as lua.c shows it.
function M.errmsg(v)
  local t = type(v)
  if t == "string" or t == "number" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring then
    local ok, m = pcall(tostring, v)
    if ok and type(m) == "string" then return m end
  end
  return ("(error object is a %s value)"):format(t)
end

local function wake_joiners(t)
  local js, ws = t.joiners, t.watchers
  t.joiners, t.watchers = nil, nil
  if js then for i = 1, #js do js[i]() end end
  if ws then for fn in pairs(ws) do fn() end end
end

-- A task's body runs under xpcall inside its coroutine: an error unwinds
-- there, so its <close> variables (a scope, a lines() loop, a process) are
-- closed where they can still wait, and the traceback is taken where it
-- was raised.
-- The <close> handlers see the error itself; the traceback is kept aside.
local FAILED = setmetatable({}, { __tostring = function() return "failed" end })
-- The words for error `e` raised `level` frames up: an error object that
-- says what it is, its words alone (as lua.c); else a traceback without
-- baton's own frames below the task's function.
local function trace_of(e, level)
  local mt = type(e) ~= "string" and type(e) ~= "number" and getmetatable(e)
  if mt and mt.__tostring then return M.errmsg(e) end
  return (debug.traceback(M.errmsg(e), level):gsub("\n%s*%[C%]: in function 'xpcall'.*$", ""))
end
local function failure(e)
  local t = tasks[corunning()]
  if t and t.failing then
    -- Raised again while unwinding (a <close> handler that failed): the
    -- first trace stays, and says this one too, unless it is the same
    -- error passed on.
    local first = t.first_err
    local again = e == first
      or type(e) == "string" and type(first) == "string" and e:sub(-#first) == first -- (error(e) adds a position)
    if not again then
      t.trace = t.trace .. "\nthen, while unwinding: " .. trace_of(e, 3)
    end
    return e
  end
  if t then -- without baton's own frames below the task's function
    t.failing, t.first_err = true, e -- unwinding now: a cancel would only hide this error
    t.trace = trace_of(e, 3)
  end
  return e
end
local function body(fn)
  return function(...)
    local r = pack(xpcall(fn, failure, ...))
    if r[1] then return unpack(r, 2, r.n) end
    return FAILED, r[2]
  end
end

-- What a task yields to leave for good (os.exit): its step closes it.
local EXIT = setmetatable({}, { __tostring = function() return "exit" end })

--- `os.exit(code, true)` from a task: the task yields out, its step closes
-- its pending to-be-closed variables (and the main task's, as lua closes
-- the main chunk's), then calls `exit(code, true)`. Returns when that
-- cannot be done (not in a task, or it cannot yield): exit at once then.
function M.exit_unwinding(code, exit)
  if tasks[corunning()] and coroutine.isyieldable() then coyield(EXIT, code, exit) end
end

-- A task yielded EXIT: close it (and the main task), then exit.
local function leave(t, code, exit)
  coroutine.close(t.co)
  local main = M.main_task and M.main_task()
  if main and main ~= t and not main.done then coroutine.close(main.co) end
  exit(code, true)
end

--- Called with the coroutine about to run (or nil) each time a task is
-- resumed and when it gives control back: the executable points its
-- interrupt hook at the code running now. nil: nothing to tell.
M.on_resume = nil

local function step(t, ...)
  local hook = M.on_resume
  if hook then hook(t.co) end
  local r = pack(coresume(t.co, ...))
  if hook then
    local outer = corunning()
    hook(tasks[outer] and outer or nil)
  end
  if r[1] and r[2] == EXIT and costatus(t.co) == "suspended" then return leave(t, r[3], r[4]) end
  if costatus(t.co) ~= "dead" then
    if t.token ~= nil or not r[1] then return end
    -- A bare coroutine.yield() in the task, not a baton wait: nothing would
    -- ever resume it. It fails, as the same yield fails under lua.
    local msg = "attempt to yield from outside a coroutine"
    t.trace = debug.traceback(t.co, msg)
    coroutine.close(t.co)
    r = pack(true, FAILED, msg)
  end
  tasks[t.co] = nil
  t.done = true
  local failed = r[1] and r[2] == FAILED
  if r[1] and not failed then
    t.results = pack(unpack(r, 2, r.n))
  else
    t.failed = true
    if failed then
      t.err = r[3]
      t.trace = t.trace or debug.traceback(t.co, M.errmsg(r[3]))
    else -- raised outside the body's xpcall (out of memory, say)
      t.err = r[2]
      t.trace = debug.traceback(t.co, M.errmsg(r[2]))
      coroutine.close(t.co)
    end
    local cancelled = t.cancelled and t.err == (t.cancel_msg or "cancelled") and t.err ~= DEADLOCK
    if not cancelled and (not t.joiners or #t.joiners == 0) then
      t.unobserved = true
      unobserved[t] = true
      -- (not when wait_any or all is watching it: they take it)
      if M.on_failure and not (t.watchers and next(t.watchers)) then M.on_failure(t) end
    end
  end
  if t.on_finish then t.on_finish(t) end
  wake_joiners(t)
end

--- Mark the task of coroutine `co` cancelled with `msg`, so that failing
-- with `msg` is not reported: an interrupt stopped its busy code.
function M.interrupted(co, msg)
  local t = tasks[co]
  if t and not t.done then t.cancelled, t.cancel_msg = true, msg end
end

--- The task running the caller, or nil outside any task.
function M.current()
  return tasks[corunning()]
end

--- Whether a wait can work here: in a task that can yield, or outside the
-- loop (then the wait drives it). Not while unwinding an error through
-- <close> handlers, nor in a loop callback.
function M.can_wait()
  return (tasks[corunning()] ~= nil and coroutine.isyieldable()) or not core.running()
end

--- Suspend until `arm`'s callback is called; return the callback's arguments.
-- `arm(wake)` must arrange for `wake(...)` to be called once, later, from the
-- loop. Inside a task this yields; outside, it drives the loop.
function M.suspend(arm)
  local co = corunning()
  local t = tasks[co]
  -- A task that cannot yield (inside require, a metamethod, a sort
  -- comparator…) waits like code outside any task: by driving the loop.
  if t and coroutine.isyieldable() then
    local token = {}
    local early
    t.token = token
    arm(function(...)
      if t.token ~= token then return end -- a stale wake (cancelled wait)
      t.token = nil
      if costatus(co) == "suspended" then step(t, ...) else early = pack(...) end
    end)
    if early then return unpack(early, 1, early.n) end
    local r = pack(coyield())
    if r[1] == CANCEL and r.n == 1 then error(t.cancel_msg or "cancelled", 0) end
    return unpack(r, 1, r.n)
  end
  if core.running() then
    if t then
      errors.misuse("cannot wait here: a task cannot yield across this C call " ..
        "(require, a metamethod, table.sort, pcall from C…); move the wait out of it")
    end
    errors.misuse("cannot wait here: the loop is running and this code is not in a task " ..
      "(a waiting call inside a plain coroutine or callback); wrap it in baton.go(fn)")
  end
  -- The wake stops the loop's run too: libuv 1.44 runs due timers at the
  -- start of a "once" run and then polls without a timeout when nothing
  -- else is due, so a wake from such a timer (one that came due while Lua
  -- was busy) would be followed by a poll that blocks until some other
  -- event; stopped, that poll does not wait.
  local res
  arm(function(...)
    if not res then
      res = pack(...)
      if core.running() then core.stop() end -- (called from the loop, not from `arm` itself)
    end
  end)
  while not res do
    -- Ctrl-C ends the wait as lua.c ends busy code: "interrupted!"
    local alive, interrupted = core.run("once", true)
    if interrupted then error("interrupted!", errors.user_level()) end
    if not alive and not res then
      error(DEADLOCK, 3)
    end
  end
  return unpack(res, 1, res.n)
end

-- ---- scopes: where processes spawned now are recorded (see baton.scope) ----

local outer_scope -- the scope of code running outside any task

--- The innermost open scope of the running code, or nil.
function M.scope()
  local t = tasks[corunning()]
  if t then return t.scope end
  return outer_scope
end

--- Make `s` the innermost scope of the running code; returns the previous one.
function M.set_scope(s)
  local t = tasks[corunning()]
  local prev
  if t then
    prev, t.scope = t.scope, s
  else
    prev, outer_scope = outer_scope, s
  end
  return prev
end

--- Create a task for `fn` without starting it; `t:start(...)` does. The task
-- belongs to the scope its creator is in.
function M.new(fn, internal)
  if type(fn) ~= "function" then
    errors.argerror("go", 1, "function expected, got " .. type(fn))
  end
  seq = seq + 1
  local t = setmetatable({ co = cocreate(body(fn)), done = false, scope = M.scope(), seq = seq,
    internal = internal or nil }, Task)
  tasks[t.co] = t
  -- A script's task is cancelled when its scope ends; baton's own (reading
  -- a process, feeding its input) end with what they serve.
  if not internal and t.scope and t.scope._tasks then t.scope._tasks[t] = true end
  return t
end

--- Start a task made by `new`, running it until its first wait.
function Task:start(...)
  if self.started then errors.misuse("task already started") end
  self.started = true
  step(self, ...)
  return self
end

--- The script's tasks that started and are not done (not baton's own), in
-- the order they were made.
function M.running()
  local out = {}
  for _, t in pairs(tasks) do
    if t.started and not t.done and not t.internal then out[#out + 1] = t end
  end
  table.sort(out, function(a, b) return a.seq < b.seq end)
  return out
end

--- Start `fn(...)` as a new task; it runs at once until its first wait.
-- @return the task
function M.go(fn, ...)
  return M.new(fn):start(...)
end

-- A task of baton's own machinery: not cancelled by the scope it runs in.
function M.go_internal(fn, ...)
  return M.new(fn, true):start(...)
end

--- Wait for the task to finish; return its results or raise its error.
function Task:wait()
  errors.check_self(getmetatable(self) == Task, self, "wait", "baton.task")
  if not self.done then
    if tasks[corunning()] == self then errors.misuse("a task cannot wait for itself") end
    local me
    local ok, err = pcall(M.suspend, function(wake)
      me = wake
      self.joiners = self.joiners or {}
      self.joiners[#self.joiners + 1] = wake
    end)
    if not ok then -- cancelled: the task waited for keeps no trace of us
      local js = self.joiners or {}
      for i = #js, 1, -1 do
        if js[i] == me then table.remove(js, i) end
      end
      error(err, 0)
    end
  end
  if self.failed then
    self:_observe()
    error(self.err, 0)
  end
  return unpack(self.results, 1, self.results.n)
end

--- Call `fn()` once the task is done (at once if it is). For wait_any: an
-- observer, not a joiner, so an error still counts as uncaught. Returns a
-- function that cancels the subscription.
function Task:_subscribe(fn)
  if self.done then
    fn()
    return function() end
  end
  self.watchers = self.watchers or {}
  self.watchers[fn] = true
  return function() if self.watchers then self.watchers[fn] = nil end end
end

--- Is the task finished (returned or failed)?
function Task:is_done()
  errors.check_self(getmetatable(self) == Task, self, "is_done", "baton.task")
  return self.done
end

--- Make the task's pending wait raise `msg` (default "cancelled").
-- @return true if the task was waiting and got cancelled
function Task:cancel(msg)
  errors.check_self(getmetatable(self) == Task, self, "cancel", "baton.task")
  if self.done or self.failing or not self.token or costatus(self.co) ~= "suspended" then return false end
  self.token = nil
  self.cancelled = true
  self.cancel_msg = msg
  step(self, CANCEL)
  return true
end

function Task:__tostring()
  return string.format("baton.task (%s)", self.done and (self.failed and "failed" or "done") or "running")
end

--- Seconds as the milliseconds a timer takes, rounded.
function M.ms(secs)
  return math.floor(secs * 1000 + 0.5)
end

--- Sleep `s` seconds (fractions allowed) without blocking other tasks.
function M.sleep(s)
  if type(s) ~= "number" or not (s >= 0 and s <= 1e9) then -- NaN fails too
    errors.argerror("sleep", 1, "a number of seconds from 0 to 1e9 expected, got " ..
      (type(s) == "number" and tostring(s) or type(s)))
  end
  local ms = M.ms(s)
  if ms == 0 then
    -- A turn of the loop: I/O, timers and other tasks run first. (A stale
    -- wake after a cancel is ignored.)
    M.suspend(function(wake) core.defer(wake) end)
    return
  end
  local timer = core.timer()
  local ok, err = pcall(M.suspend, function(wake)
    timer:start(ms, 0, function()
      timer:close()
      wake()
    end)
  end)
  if not ok then
    timer:close() -- cancelled or interrupted: the timer must not outlive the wait
    error(err, 0)
  end
end

-- Raise unless every item of `list` can be waited for.
local function waitables(fname, list)
  if type(list) ~= "table" then errors.argerror(fname, 1, "table expected, got " .. type(list)) end
  for i = 1, #list do
    local w = list[i]
    if type(w) ~= "table" or type(w._subscribe) ~= "function" then
      errors.argerror(fname, 1, ("item %d cannot be waited for"):format(i))
    end
  end
end

--- Wait for every task or job in `list`; returns a table with the first
-- result of each (a job's status), in order. A task that fails ends the
-- wait at once: its error is raised (the others go on).
function M.all(list)
  waitables("all", list)
  while true do
    local pending = {}
    for i = 1, #list do
      local w = list[i]
      if w.failed then w:wait() end -- raises its error
      if not (w.done or w.status) then pending[#pending + 1] = w end
    end
    if #pending == 0 then break end
    M.wait_any(pending)
  end
  local out = {}
  for i = 1, #list do out[i] = list[i]:wait() end
  return out
end

--- Wait until one of several tasks or jobs (processes, pipeline runs) is
-- done; returns its index and the waitable itself.
function M.wait_any(list)
  waitables("wait_any", list)
  if #list == 0 then errors.argerror("wait_any", 1, "non-empty list of tasks or processes expected") end
  for i, w in ipairs(list) do
    if w.status or w.done then return i, w end
  end
  local subs = {}
  local ok, i = pcall(M.suspend, function(wake)
    for j, w in ipairs(list) do subs[#subs + 1] = w:_subscribe(function() wake(j) end) end
  end)
  for _, unsubscribe in ipairs(subs) do unsubscribe() end
  if not ok then error(i, 0) end
  return i, list[i]
end

return M
