-- Jobs (baton.job), the lifecycle of processes and pipeline runs: waiting, timeouts, wait_delay, terminate, statuses.
local baton = require "baton"
local H = require "helper"

describe("waiting", function()
  H.guard()

  it("wait(timeout) gives ETIMEDOUT and the process keeps running", function()
    local p = assert(baton.spawn { "sleep", "10" })
    local st, msg, code = p:wait(0.05)
    assert.is_nil(st)
    assert.are.equal("ETIMEDOUT", code)
    assert.matches("still running", msg)
    assert.is_nil(p:poll())
    local st2 = p:terminate(1)
    assert.are.equal("SIGTERM", st2.signame)
  end)

  it("a timed wait that is cancelled leaves no timer and no waiter", function()
    local p = assert(baton.spawn { "sleep", "1000" })
    local base = baton.core.handles()
    local t = baton.go(function() return p:wait(5) end)
    t:cancel("stop")
    baton.sleep(0)
    assert.are.equal(base, baton.core.handles())
    for _ = 1, 20 do assert.is_nil(p:wait(0.001)) end
    assert.is_nil(next(p._waiters))
    p:kill()
    p:wait()
  end)
end)

describe("waiting for several", function()
  H.guard()

  it("wait_any returns the first done", function()
    -- Neither `slow` nor `t` ends before the spec ends them.
    local slow = assert(baton.spawn { "sleep", "30" })
    local fast = assert(baton.spawn { "sh", "-c", "sleep 0.05; exit 4" })
    local t = baton.go(function() baton.sleep(1e6) end)
    local i, w = baton.wait_any { slow, fast, t }
    assert.are.equal(2, i)
    assert.are.equal(fast, w)
    assert.are.equal(4, w:wait().code)
    slow:kill()
    slow:wait()
    t:cancel()
    local i2 = baton.wait_any { slow, t }
    assert.are.equal(1, i2)
    H.error_here(function() baton.wait_any {} end,
      "bad argument #1 to 'wait_any' (non-empty list of tasks or processes expected)")
  end)

  it("baton.all waits for processes too", function()
    local p1 = baton.spawn { "sh", "-c", "exit 1" }
    local p2 = baton.spawn { "true" }
    local st = baton.all { p1, p2 }
    assert.are.equal(1, st[1].code)
    assert.are.equal(0, st[2].code)
    H.error_here(function() baton.all { 42 } end, "bad argument #1 to 'all' (item 1 cannot be waited for)")
  end)
end)

describe("timeouts", function()
  H.guard()

  it("TERM the process group at the timeout, then KILL after the grace", function()
    local t0 = baton.now()
    -- The timeout leaves the shell ample time to set its trap (nothing can
    -- tell baton when it has); the grace is what is measured.
    local r = baton.run { "sh", "-c", "trap '' TERM; sleep 10", timeout = 1, grace = 0.2, check = false }
    assert.is_true(r.timed_out)
    assert.are.equal("SIGKILL", r.signame)
    assert.is_true(baton.now() - t0 < 5)
    local ok, err = pcall(baton.run, { "sleep", "10", timeout = 0.1 })
    assert.is_false(ok)
    assert.matches("timed out and was killed by SIGTERM", tostring(err))
  end)

  it("a process stopped by its timeout did not succeed, whatever it exited with", function()
    local r = baton.run { "sh", "-c", "trap 'exit 0' TERM; sleep 30 & wait", timeout = 0.2, check = false }
    assert.are.equal(0, r.code)
    assert.is_true(r.timed_out)
    assert.is_false(r.ok)
    assert.are.equal("exit 0 (timed out)", tostring(r))
  end)

  it("timers count from when they start, however long Lua was busy before", function()
    baton.sleep(0) -- the loop's clock is read here
    local t = baton.now()
    while baton.now() - t < 0.3 do end -- busy: the loop's clock goes stale
    local t0 = baton.now()
    local r = baton.run { "sleep", "30", timeout = 0.4, check = false }
    assert.is_true(r.timed_out)
    assert.is_true(baton.now() - t0 >= 0.35)
  end)

  it("returns within the drain bound when a grandchild holds stdout open", function()
    local t0 = baton.now()
    -- setsid puts the grandchild out of reach of the group kill: only the
    -- drain bound can end the wait, long before the grandchild would.
    local r = baton.run { "sh", "-c", 'setsid sleep 30 & echo "started $!"; sleep 10', timeout = 1, wait_delay = 0.3,
      capture = true, check = false }
    local took = baton.now() - t0
    assert.is_true(r.timed_out)
    local pid = tonumber(r.stdout:match("^started (%d+)\n$"))
    assert.is_not_nil(pid, r.stdout)
    assert.is_true(took < 10, "took " .. took)
    -- The orphaned sleep leads its own group, and belongs to init now: kill
    -- it (and only it: other specs running at the same time sleep too).
    assert.is_true(baton.core.killpg(pid, 9))
    assert.is_true(H.gone_within(pid))
  end)

  it("a timeout also bounds output held open by a child after the process exited", function()
    -- (The timeout leaves sh ample time to print and exit.)
    local r = baton.run { "sh", "-c", "sleep 30 & echo $!", timeout = 1, capture = true, check = false }
    assert.is_true(r.timed_out, ("%s, stdout %q"):format(tostring(r), r.stdout))
    assert.is_false(r.ok)
    assert.are.equal(0, r.code)
    assert.is_true(H.gone_within(tonumber(r.stdout:match("^(%d+)\n$"))))
  end)

  it("lines() is bounded by a timeout when a leftover child holds stdout", function()
    local got = {}
    local ok, err = pcall(function()
      for l in baton.lines { "sh", "-c", "sleep 30 & echo $!", timeout = 1 } do got[#got + 1] = l end
    end)
    assert.is_false(ok)
    assert.matches("timed out", tostring(err))
    assert.are.equal(1, #got)
    assert.is_true(H.gone_within(tonumber(got[1])))
  end)

  it("a timeout reaches the commands feeding a process through baton.from", function()
    local r = baton.run { "cat", baton.from { "sh", "-c", "echo $$; exec sleep 30" }, timeout = 1,
      capture = true, check = false }
    assert.is_true(r.timed_out)
    assert.is_true(H.gone_within(tonumber(r.stdout:match("^(%d+)\n$"))))
  end)
end)

describe("terminate and close", function()
  H.guard()

  it("terminate escalates to KILL after the grace", function()
    local p = assert(baton.spawn { "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done", stdout = "pipe", pgroup = true })
    assert.are.equal("ready", p.stdout:read("l"))
    local st = p:terminate(0.2)
    assert.are.equal("SIGKILL", st.signame)
    p:close()
  end)

  it("terminate reaches the group when the leader is gone but its children hold the pipe", function()
    local out = {}
    local p = baton.spawn { "sh", "-c", "sleep 30 & echo $!", pgroup = true,
      stdout = function(chunk) out[#out + 1] = chunk end }
    local sleeper = tonumber(H.wait_for(function() return table.concat(out):match("^(%d+)\n") end, "the pid line"))
    -- sh has exited and baton knows it; sleep still holds stdout.
    H.wait_for(function() return p._exit end, "sh to be reaped")
    assert.is_nil(p:poll())
    assert.is_true(H.alive(sleeper))
    local st = p:terminate(0.5)
    assert.is_true(st.ok) -- sh itself exited 0
    assert.is_true(H.gone_within(sleeper))
  end)

  it("a process can be closed with <close>, killing and reaping", function()
    local pid
    do
      local p <close> = assert(baton.spawn { "sleep", "30", stdout = "pipe" })
      pid = p.pid
      assert.is_true(H.alive(pid))
    end
    assert.is_false(H.alive(pid))
  end)
end)

describe("run results", function()
  H.guard()

  it("are statuses: the same fields, and tostring gives the status", function()
    local r = baton.run { "sh", "-c", "echo out; exit 3", capture = true, check = false }
    assert.are.equal("exit 3", tostring(r))
    assert.are.equal(3, r.code)
    assert.is_false(r.ok)
    assert.are.equal("out\n", r.stdout)
    assert.is_true(r.known)
    assert.is_number(r.rusage.maxrss)
    local c = baton.cmd
    local pr = (c { "true" } | c { "sh", "-c", "kill -TERM $$" }):run { check = false }
    assert.are.equal("killed by SIGTERM", tostring(pr))
    assert.are.same({ 0, 143 }, pr.statuses)
  end)

  it("name a sink that raised, in the status and its text", function()
    local r = baton.run { "echo", "x", stdout = function(chunk) if chunk then error("sink boom", 0) end end, check = false }
    assert.is_false(r.ok)
    assert.are.equal("sink boom", r.sink_error)
    assert.are.equal("exit 0 (a sink raised: sink boom)", tostring(r))
  end)

  it("a sink that raises fails the run with its message", function()
    local ok, err = pcall(baton.run, { "sh", "-c", "echo hi", stdout = function(chunk)
      if chunk then error("sink bug") end
    end })
    assert.is_false(ok)
    assert.matches("its stdout sink raised: .*sink bug", tostring(err))
    local p = baton.spawn { "seq", "1", "200000", stdout = function(chunk) if chunk then error("x") end end }
    local st = p:wait()
    assert.is_false(st.ok)
    assert.matches("x$", tostring(st.sink_error))
  end)

  it("flag output held open past wait_delay, and stop what holds it in the group", function()
    local secs = string.format("%d.%06d", 2000 + math.random(1000), math.random(999999))
    local r = baton.run { "sh", "-c", "sleep " .. secs .. " & echo started", stdout = function() end,
      wait_delay = 0.1, pgroup = true, check = false }
    assert.is_false(r.ok)
    assert.is_true(r.wait_delay_expired)
    assert.are.equal("exit 0 (output held open past wait_delay)", tostring(r))
    local deadline = baton.now() + 5 -- a killed process takes a moment to go
    while baton.ok { "pgrep", "-fx", "sleep " .. secs, stdout = "null" } and baton.now() < deadline do baton.sleep(0.01) end
    assert.is_false(baton.ok { "pgrep", "-fx", "sleep " .. secs, stdout = "null" })
  end)
end)
