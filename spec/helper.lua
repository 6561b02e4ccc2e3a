-- spec/helper.lua — shared by the specs: leak guards and small utilities.
--
-- `guard()` inside a describe block checks around every test that the test
-- process ends with the same open fds it started with, no child process
-- (running or zombie), and no open baton handle.
local lfs = require "lfs"
local baton = require "baton"
local busted = require "busted"
local before_each, after_each, assert = busted.before_each, busted.after_each, busted.assert or assert

local H = {}

io.stdout:setvbuf("no") -- (progress shows in a log even when a spec is killed)

-- libuv opens one fd per loop lazily, at the first stream (a reserve for
-- EMFILE handling); make it exist before anything is counted.
baton.run { "true", stdout = "pipe" }

function H.fds()
  local list = {}
  for name in lfs.dir("/proc/self/fd") do
    if name ~= "." and name ~= ".." then list[#list + 1] = tonumber(name) end
  end
  table.sort(list)
  -- One of them is the directory being listed; it is gone afterwards.
  return #list - 1, list
end

-- The fd numbers process `pid` has open, sorted.
function H.fds_of(pid)
  local fds = {}
  for name in lfs.dir("/proc/" .. pid .. "/fd") do
    if name:match("^%d+$") then fds[#fds + 1] = tonumber(name) end
  end
  table.sort(fds)
  return fds
end

-- Child pids of this process, alive or zombie, from every thread's list.
function H.children()
  local out = {}
  for tid in lfs.dir("/proc/self/task") do
    if tid:match("^%d+$") then
      local f = io.open("/proc/self/task/" .. tid .. "/children")
      if f then
        for pid in f:read("a"):gmatch("%d+") do out[#out + 1] = tonumber(pid) end
        f:close()
      end
    end
  end
  return out
end

-- Is `pid` a live process (not a zombie, not gone)?
function H.alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local stat = f:read("a")
  f:close()
  return stat:match("^%d+ %b() (%a)") ~= "Z"
end

-- How long a wait for an event may take before the spec calls it a hang:
-- such events take milliseconds, but under `ctest -j8` on a busy machine a
-- process can go unscheduled for seconds. Only a hang reaches this bound, so
-- it makes no timing claim.
H.PATIENCE = 30

-- Whether `pid` is gone (exited) within `secs` seconds (default H.PATIENCE):
-- a killed process closes its fds a moment before it is a zombie.
function H.gone_within(pid, secs)
  assert(math.type(pid) == "integer", "gone_within: no pid")
  local deadline = baton.now() + (secs or H.PATIENCE)
  while H.alive(pid) do
    if baton.now() > deadline then return false end
    baton.sleep(0.01)
  end
  return true
end

-- Wait until `pred()` returns a true value, and return that value; the loop
-- runs meanwhile. Fails naming `what` after H.PATIENCE seconds. For events
-- that have no callback to wait on (a line in a sink's buffer, a process
-- gone from /proc).
function H.wait_for(pred, what)
  local deadline = baton.now() + H.PATIENCE
  while true do
    local v = pred()
    if v then return v end
    if baton.now() > deadline then error("gave up waiting for " .. what, 2) end
    baton.sleep(0.01)
  end
end

-- `fn`, a one-line function, raises exactly `msg` positioned at its own line:
-- a misuse error points at the caller, never inside baton. (luassert's
-- has_error and error_matches strip a leading "file:line: " before
-- comparing, so they cannot check the position.)
function H.error_here(fn, msg)
  local info = debug.getinfo(fn, "S")
  assert(info.linedefined == info.lastlinedefined, "error_here: the function must fit on one line")
  local ok, err = pcall(fn)
  assert(not ok, "no error raised; expected: " .. msg)
  assert.are.equal(("%s:%d: %s"):format(info.short_src, info.linedefined, msg), err)
end

-- A test still running after H.STUCK seconds (it waits for what never
-- comes): every task's traceback goes to stderr, so that a spec killed by
-- ctest's timeout says where it was. (A timer that does not keep the loop
-- alive; counted alike before and after the test.)
H.STUCK = tonumber(os.getenv("BATON_SPEC_STUCK")) or 120
local watchdog
local MAIN = coroutine.running() -- (lua5.4: the main thread, where the specs' waits drive the loop)
local function dump_tasks()
  local task = require "baton.task"
  local out = { ("\n=== spec still running after %gs; its tasks:"):format(H.STUCK) }
  for i = 1, math.huge do
    local name, tasks = debug.getupvalue(task.running, i)
    if not name then break end
    if name == "tasks" then
      for co, t in pairs(tasks) do
        out[#out + 1] = debug.traceback(co, ("task %s%s:"):format(tostring(t.seq), t.internal and " (baton's)" or ""))
      end
      if not tasks[MAIN] then out[#out + 1] = debug.traceback(MAIN, "the main thread:") end
    end
  end
  io.stderr:write(table.concat(out, "\n"), "\n")
  io.stderr:flush()
end

function H.guard()
  local before
  before_each(function()
    if not watchdog then
      watchdog = baton.core.timer()
      watchdog:ref(false)
    end
    watchdog:start(math.floor(H.STUCK * 1000), 0, dump_tasks)
    baton.sleep(0) -- finish closes left by the previous test's own cleanup
    collectgarbage()
    -- Baton's own stdout and stderr writers live as long as the process
    -- (opened on first use): open before counting.
    require("baton.logs").out("stdout")
    require("baton.logs").out("stderr")
    before, H.before_list = H.fds()
    H.handles_before = baton.core.handles()
    if os.getenv("HDEBUG") then io.stderr:write("before ", H.handles_before, "\n") end
  end)
  after_each(function()
    watchdog:stop()
    -- One loop turn, so that close callbacks of finished handles run.
    baton.sleep(0)
    collectgarbage()
    collectgarbage()
    local kids = H.children()
    assert.are.same({}, kids, "children left behind: " .. table.concat(kids, " "))
    local now, list = H.fds()
    assert.are.equal(before, now, "fds leaked; open now: " .. table.concat(list, " ") ..
      "; before: " .. table.concat(H.before_list, " "))
    assert.are.equal(H.handles_before, baton.core.handles(), "baton handles left open")
  end)
end

--- The environment (for baton.run's `env`) of a lua5.4 child that loads
-- the baton.so under test: found next to the executable; in a sanitizer
-- build with the sanitizer runtimes preloaded (the module is unloaded at
-- exit, so its static tables would look leaked: no leak check there).
function H.lua_env()
  local env = { LUA_CPATH = os.getenv("BATON_EXE"):match("^(.*)/[^/]*$") .. "/?.so;;", LUA_INIT = false }
  local preload = os.getenv("BATON_LUA_PRELOAD")
  if preload then env.LD_PRELOAD, env.ASAN_OPTIONS = preload, "detect_leaks=0" end
  return env
end

-- What baton told a stand-in service manager (sd_notify messages `msgs`,
-- in order), as the sequence of its READY=1 and RELOADING=1 (with
-- MONOTONIC_USEC) messages: "READY RELOADING READY".
function H.manager_states(msgs)
  local out = {}
  for _, m in ipairs(msgs) do
    local k = m:match("^(RELOADING)=1\nMONOTONIC_USEC=%d+$") or m:match("^(READY)=1")
    if k then out[#out + 1] = k end
  end
  return table.concat(out, " ")
end

-- A scratch file path, removed by the caller.
function H.tmpname()
  return os.tmpname()
end

return H
