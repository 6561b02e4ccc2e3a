-- Groups of tasks (baton.group: the first failure cancels the rest and
-- stops their processes) and bounded concurrency (baton.map: N at a time,
-- every result and failure in order).
local baton = require "baton"
local H = require "helper"

-- A unique `sleep` argument, and whether a process with it is alive.
local function unique_sleep()
  local secs = string.format("%d.%06d", 7000 + math.random(1000), math.random(999999))
  return secs, function() return baton.ok { "pgrep", "-fx", "sleep " .. secs, stdout = "null" } end
end

describe("baton.group", function()
  H.guard()

  it("waits for every task and returns what its function returned", function()
    local done = {}
    local a, b = baton.group(function(g)
      for i = 1, 4 do g:go(function() baton.sleep(0.01 * i); done[#done + 1] = i end) end
      return "a", "b"
    end)
    assert.are.same({ "a", "b" }, { a, b })
    assert.are.same({ 1, 2, 3, 4 }, done)
  end)

  it("raises the first failure, after cancelling the rest and stopping their processes", function()
    local secs, alive = unique_sleep()
    local cancelled
    local ok, err = pcall(baton.group, function(g)
      g:go(function()
        local ok2, e = pcall(baton.run, { "sleep", secs })
        cancelled = e
        assert(not ok2)
        error(e, 0)
      end)
      g:go(function()
        H.wait_for(alive, "the sleep")
        error("second failed", 0)
      end)
    end)
    assert.is_false(ok)
    assert.are.equal("second failed", err)
    assert.are.equal("cancelled: another task of the group failed", cancelled)
    assert.is_false(alive())
  end)

  it("cancels the waiting body when a task fails, and its own failure ends the tasks", function()
    local reached = false
    local ok, err = pcall(baton.group, function(g)
      g:go(function() error("early", 0) end)
      baton.sleep(30)
      reached = true
    end)
    assert.are.same({ false, "early", false }, { ok, err, reached })
    local t
    ok, err = pcall(baton.group, function(g)
      t = g:go(baton.sleep, 30)
      error("body failed", 0)
    end)
    assert.are.same({ false, "body failed" }, { ok, err })
    assert.is_true(t:is_done())
  end)

  it("ends all of it when the task running the group is cancelled", function()
    local secs, alive = unique_sleep()
    local t = baton.go(baton.group, function(g)
      g:go(baton.run, { "sleep", secs })
      baton.sleep(30)
    end)
    H.wait_for(alive, "the sleep")
    assert.is_true(t:cancel())
    assert.are.equal("cancelled", select(2, pcall(t.wait, t)))
    assert.is_false(alive())
  end)

  it("runs at most `limit` tasks at once", function()
    local now, peak = 0, 0
    baton.group(function(g)
      for _ = 1, 6 do
        g:go(function()
          now = now + 1
          peak = math.max(peak, now)
          baton.sleep(0.01)
          now = now - 1
        end)
      end
    end, { limit = 2 })
    assert.are.equal(2, peak)
  end)

  it("takes the failures after the first: the group raises one error, none is left uncaught", function()
    local reported = {}
    local on_uncaught = require("baton.task").on_uncaught
    require("baton.task").on_uncaught = function(_, trace) reported[#reported + 1] = trace end
    local p = baton.spawn { "sleep", "0.05" }
    local ok, err = pcall(baton.group, function(g)
      g:go(function() p:wait() error("A", 0) end)
      g:go(function() pcall(p.wait, p) error("B", 0) end)
    end)
    collectgarbage()
    collectgarbage()
    require("baton.task").on_uncaught = on_uncaught
    assert.are.same({ false, "A" }, { ok, err })
    assert.are.same({}, reported)
  end)

  it("refuses bad arguments, at the caller's line", function()
    H.error_here(function() baton.group(5) end, "bad argument #1 to 'group' (function expected, got number)")
    H.error_here(function() baton.group(function() end, { limit = 0 }) end,
      "bad argument #3 to 'group' (option 'limit' must be a positive integer, got 0)")
    H.error_here(function() baton.map({}, print, { grace = 1 }) end, "bad argument #3 to 'map' (unknown option 'grace')")
    local g
    baton.group(function(x) g = x end)
    H.error_here(function() g:go(print) end, "baton: go: the group is over")
  end)
end)

describe("baton.map", function()
  H.guard()

  it("runs a list N at a time and gives every result and failure in order", function()
    local now, peak = 0, 0
    local results, failures = baton.map({ "a", "b", "c", "d", "e", "f" }, function(item, i)
      now = now + 1
      peak = math.max(peak, now)
      local r = baton.run { "sh", "-c", 'printf %s "$0"; [ "$1" != 3 ] && [ "$1" != 5 ]', item, tostring(i),
        capture = true, check = false }
      now = now - 1
      if not r.ok then error("item " .. i .. " failed", 0) end
      return r.stdout
    end, { limit = 3 })
    assert.are.equal(3, peak)
    assert.are.same({ [1] = "a", [2] = "b", [4] = "d", [6] = "f" }, results)
    assert.are.same({ { index = 3, error = "item 3 failed" }, { index = 5, error = "item 5 failed" } }, failures)
  end)

  it("stops what it started when the task running it is cancelled", function()
    local secs, alive = unique_sleep()
    local t = baton.go(baton.map, { 1, 2 }, function() return baton.run { "sleep", secs } end)
    H.wait_for(function() return baton.output { "pgrep", "-cfx", "sleep " .. secs, check = false } == "2" end, "both sleeps")
    assert.is_true(t:cancel())
    assert.are.equal("cancelled", select(2, pcall(t.wait, t)))
    assert.is_false(alive())
  end)
end)
