-- Tasks: coroutines driven by the loop; waiting yields, errors are kept or reported.
local baton = require "baton"
local task = require "baton.task"
local H = require "helper"

local BATON = os.getenv("BATON_EXE") or "./build/baton"

describe("tasks", function()
  H.guard()

  it("run at once until their first wait and return results", function()
    local log = {}
    local t = baton.go(function(a, b)
      log[#log + 1] = "start"
      baton.sleep(0.01)
      log[#log + 1] = "end"
      return a + b, "x"
    end, 1, 2)
    assert.are.same({ "start" }, log)
    assert.is_false(t:is_done())
    local sum, x = t:wait()
    assert.are.equal(3, sum)
    assert.are.equal("x", x)
    assert.are.same({ "start", "end" }, log)
    assert.are.same({ 3, "x" }, { t:wait() }) -- a late wait returns at once
  end)

  it("interleave while waiting: the loop keeps running", function()
    local order = {}
    local a = baton.go(function()
      for i = 1, 3 do
        baton.sleep(0.02)
        order[#order + 1] = "a" .. i
      end
    end)
    local b = baton.go(function()
      baton.sleep(0.01)
      for i = 1, 3 do
        order[#order + 1] = "b" .. i
        baton.sleep(0.02)
      end
    end)
    baton.all { a, b }
    assert.are.same({ "b1", "a1", "b2", "a2", "b3", "a3" }, order)
  end)

  it("wait for processes concurrently from several tasks", function()
    -- A barrier: each child marks itself started, then waits until all four
    -- have. It finishes only if the four tasks' runs are under way at once;
    -- waited for one after another, the first would never end (the timeout
    -- turns that into a failure instead of a hang).
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    local ts = {}
    for i = 1, 4 do
      ts[i] = baton.go(function()
        return baton.run { "sh", "-c", 'touch "$1/$2"; until [ "$(ls "$1" | wc -l)" -eq 4 ]; do sleep 0.01; done; echo "$2"',
          "sh", dir, tostring(i), capture = true, timeout = H.PATIENCE }.stdout
      end)
    end
    local outs = baton.all(ts)
    os.execute("rm -rf " .. dir)
    assert.are.same({ "1\n", "2\n", "3\n", "4\n" }, outs)
  end)

  it("keep their error for whoever waits", function()
    local t = baton.go(function()
      baton.sleep(0.01)
      error("task failed", 0)
    end)
    local ok, err = pcall(t.wait, t)
    assert.is_false(ok)
    assert.are.equal("task failed", err)
    assert.matches("failed", tostring(t))
  end)

  it("report an error nobody waits for when the task is collected, never into unrelated waits", function()
    local reported = {}
    local on_uncaught = task.on_uncaught
    task.on_uncaught = function(_, trace) reported[#reported + 1] = trace end
    local t = baton.go(function()
      baton.sleep(0.01)
      error("unobserved")
    end)
    local done = false
    while not done do
      baton.sleep(0.01) -- an unrelated wait goes on while t fails
      done = t:is_done()
    end
    assert.are.same({}, reported)
    t = nil -- luacheck: ignore (collect it)
    collectgarbage()
    collectgarbage()
    task.on_uncaught = on_uncaught
    assert.are.equal(1, #reported)
    assert.matches("unobserved\nstack traceback:", reported[1])
  end)

  it("wait_any does not hide a later error of a task it watched", function()
    local r = baton.run { BATON, "-e", [[
      local t1 = baton.go(function() end)
      local t2 = baton.go(function() baton.sleep(0.05) error("late boom") end)
      baton.wait_any{t1, t2}
      baton.sleep(0.3)]], capture = true, check = false }
    assert.are.equal(1, r.code)
    assert.matches("late boom", r.stderr)
  end)

  it("can be cancelled while waiting", function()
    local p = baton.spawn { "sleep", "30" }
    local t = baton.go(function() return p:wait() end)
    assert.is_true(t:cancel("stop waiting"))
    local ok, err = pcall(t.wait, t)
    assert.is_false(ok)
    assert.are.equal("stop waiting", err) -- the message as given: no position added
    assert.is_false(t:cancel())
    p:kill()
    p:wait()
  end)

  it("say what is wrong when a wait cannot work", function()
    H.error_here(function() baton.sleep(-1) end, "bad argument #1 to 'sleep' (a number of seconds from 0 to 1e9 expected, got -1)")
    H.error_here(function() baton.sleep("1") end, "bad argument #1 to 'sleep' (a number of seconds from 0 to 1e9 expected, got string)")
    H.error_here(function() baton.go(42) end, "bad argument #1 to 'go' (function expected, got number)")
    -- A wait for something that can never happen is a deadlock, not a hang.
    local never = baton.go(function() task.suspend(function() end) end)
    assert.has_error(function() never:wait() end, "baton: deadlock: waiting for an event that nothing in the loop can produce")
    -- A waiting call inside a plain coroutine resumed from a loop callback.
    local t = baton.go(function()
      baton.sleep(0.01)
      local co = coroutine.wrap(function() baton.sleep(0.01) end)
      co()
    end)
    local ok, err = pcall(t.wait, t)
    assert.is_false(ok)
    -- (coroutine.wrap adds the position of the line that resumed it.)
    assert.matches("^spec/task_spec.lua:%d+: spec/task_spec.lua:%d+: baton: cannot wait here: the loop is running and this code is not in a task " ..
      "%(a waiting call inside a plain coroutine or callback%); wrap it in baton%.go%(fn%)$", err)
  end)

  it("a wait outside any task ends when a timer already due at the loop's turn wakes it", function()
    -- (lua5.4: the wait drives the loop a turn at a time; the turn runs due
    -- timers before it polls, and a child that never exits keeps it polling.
    -- The run starts 5 ms late, as on a busy machine, after the 1 ms timer is due.)
    local tag = string.format("%d.%06d", 7000 + math.random(1000), math.random(999999))
    local code = ([[
      local baton = require "baton"
      local core = require "baton.core"
      local run = core.run
      core.run = function(...)
        local t = os.clock() + 0.005
        while os.clock() < t do end
        return run(...)
      end
      local p = baton.spawn { "sleep", "%s" }
      local st, _, code = p:wait(0.001)
      print(st, code)
      p:kill()
      p:wait()
    ]]):format(tag)
    local r = baton.run { "lua5.4", "-e", code, env = H.lua_env(), capture = true, check = false, timeout = 20 }
    assert.is_false(r.timed_out, "the wait never ended")
    assert.are.equal("nil\tETIMEDOUT\n", r.stdout, r.stderr)
    assert.are.equal(0, r.code, r.stderr)
  end)

  it("run as the main task with baton.main", function()
    if baton.current() then
      -- Under the runner the specs already are the main task, resumed from
      -- the loop: a second main is refused before it runs anything.
      local ran = false
      H.error_here(function() baton.main(function() ran = true end) end,
        "baton: main: the loop runs already (a script run by baton is the main task; start tasks with baton.go)")
      assert.is_false(ran)
    else
      local ok, t = baton.main(function()
        baton.sleep(0.01)
        return "done"
      end)
      assert.is_true(ok)
      assert.are.equal("done", t:wait())
      local ok2, trace = baton.main(function() error("main failed") end)
      assert.is_false(ok2)
      assert.matches("^spec/task_spec.lua:%d+: main failed\nstack traceback:\n", trace)
    end
  end)

  it("keep track of every open handle through closes and collections", function()
    local base = baton.core.handles()
    local keep = baton.on_signal("USR2", function() end)
    assert.are.equal(base + 1, baton.core.handles())
    for _ = 1, 5 do baton.run { "echo", "x", capture = true } end
    baton.sleep(0)
    collectgarbage()
    collectgarbage()
    assert.are.equal(base + 1, baton.core.handles())
    keep:close()
    assert.are.equal(base, baton.core.handles())
  end)

  it("on_signal calls back from the loop", function()
    local got
    local w = baton.on_signal("USR1", function(sig) got = sig end)
    baton.run { "kill", "-USR1", tostring(baton.core.getpid()) }
    H.wait_for(function() return got end, "the SIGUSR1 callback")
    w:close()
    assert.are.equal(baton.signals.USR1, got)
    H.error_here(function() baton.on_signal("NOPE", print) end, "bad argument #1 to 'on_signal' (unknown signal \"NOPE\")")
  end)

  it("sleep(0) in a loop lets I/O and other tasks run", function()
    local stop, turns = false, 0
    local spinner = baton.go(function()
      while not stop do
        turns = turns + 1
        baton.sleep(0)
      end
    end)
    local out = baton.output { "echo", "hi" } -- needs the loop to poll for I/O
    stop = true
    spinner:wait()
    assert.are.equal("hi", out)
    assert.is_true(turns > 0)
  end)

  it("timers let go of their callbacks: sleeping keeps no registry entries", function()
    local function entries()
      local n = 0
      for _ in pairs(debug.getregistry()) do n = n + 1 end
      return n
    end
    baton.sleep(0.001)
    collectgarbage()
    local before = entries()
    for _ = 1, 50 do baton.sleep(0.001) end
    local t = baton.go(function() baton.sleep(100) end)
    t:cancel()
    collectgarbage()
    collectgarbage()
    assert.is_true(entries() <= before + 2, ("registry: %d before, %d after"):format(before, entries()))
  end)

  it("a failing task's <close> handlers run where they can still wait, and see the error", function()
    local seen, slept
    local t = baton.go(function()
      local guard <close> = setmetatable({}, { __close = function(_, e)
        seen = e
        baton.sleep(0.01)
        slept = true
      end })
      error("boom", 0)
    end)
    local ok, err = pcall(t.wait, t)
    assert.is_false(ok)
    assert.are.equal("boom", err)
    assert.are.equal("boom", seen)
    assert.is_true(slept)
  end)

  it("keep odd error values, and a failing task cannot be cancelled out of its error", function()
    local t = baton.go(function() baton.sleep(0) error(nil) end)
    local ok, err = pcall(t.wait, t)
    assert.is_false(ok)
    assert.is_nil(err)
    local bad = setmetatable({}, { __tostring = function() error("inner") end })
    t = baton.go(function() baton.sleep(0) error(bad) end)
    ok, err = pcall(t.wait, t)
    assert.are.equal(bad, err)
    t = baton.go(function()
      local x <close> = setmetatable({}, { __close = function() baton.sleep(0.05) end })
      error("first", 0)
    end)
    assert.is_false(t:cancel()) -- unwinding its own error
    ok, err = pcall(t.wait, t)
    assert.are.equal("first", err)
  end)
end)

