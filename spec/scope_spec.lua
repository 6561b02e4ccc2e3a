-- Scopes (baton.scope): what is started inside ends with the scope; and the subreaper.
local baton = require "baton"
local H = require "helper"

describe("scopes", function()
  H.guard()

  it("terminate and reap what was spawned inside, also on error", function()
    local pids = {}
    local ok, err = pcall(baton.scope, function()
      pids[1] = baton.spawn { "sleep", "30" }.pid
      baton.go(function() pids[2] = baton.spawn { "sleep", "30" }.pid end)
      error("boom")
    end, { grace = 1 })
    assert.is_false(ok)
    assert.matches("^spec/scope_spec.lua:%d+: boom$", err)
    assert.is_false(H.alive(pids[1]))
    assert.is_false(H.alive(pids[2]))
  end)

  it("return the function's results and leave detached processes alone", function()
    local detached
    local a, b = baton.scope(function()
      detached = baton.spawn { "sleep", "30" }:detach()
      local q = baton.spawn { "sleep", "30", detach = true }
      q:kill()
      q:wait()
      return 1, 2
    end)
    assert.are.same({ 1, 2 }, { a, b })
    assert.is_true(H.alive(detached.pid))
    detached:kill()
    detached:wait()
  end)

  it("work as to-be-closed variables, escalating to KILL after the grace", function()
    local p
    do
      local s <close> = baton.scope { grace = 0.1 }
      p = baton.spawn { "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done", stdout = "pipe" }
      assert.are.equal("ready", p.stdout:read("l")) -- the trap is set
    end
    assert.are.equal("SIGKILL", p:wait().signame)
    p:close()
  end)

  it("a scope closed by an error in a task still stops its processes", function()
    local p
    local t = baton.go(function()
      local s <close> = baton.scope { grace = 0.2 }
      p = baton.spawn { "sh", "-c", "trap '' TERM; echo ready; exec sleep 30", stdout = "pipe" }
      assert.are.equal("ready", p.stdout:read("l")) -- the trap is set
      error("boom", 0)
    end)
    local ok, err = pcall(t.wait, t)
    assert.is_false(ok)
    assert.are.equal("boom", err)
    local st = p:wait() -- TERM is ignored: KILL after the grace
    assert.are.equal(9, st.signal)
    p:close()
  end)

  it("a scope ends a process whose children still hold its pipe", function()
    local out, p = {}, nil
    baton.scope(function()
      p = baton.spawn { "sh", "-c", "sleep 30 & echo $!", pgroup = true,
        stdout = function(chunk) out[#out + 1] = chunk end }
      H.wait_for(function() return table.concat(out):match("^%d+\n") end, "the pid line")
      H.wait_for(function() return p._exit end, "sh to be reaped") -- only its child holds the pipe now
    end, { grace = 0.5 })
    assert.is_not_nil(p:poll())
    assert.is_true(H.gone_within(tonumber(table.concat(out):match("^(%d+)\n"))))
  end)

  it("a scope cancels the tasks started in it, so they cannot spawn after it ended", function()
    local later
    baton.scope(function()
      later = baton.go(function()
        baton.sleep(0.05)
        baton.spawn { "sleep", "30" }
      end)
    end)
    assert.is_true(later.done)
    assert.is_true(later.cancelled)
    local ok, err = pcall(later.wait, later)
    assert.is_false(ok)
    assert.are.equal("scope ended", err)
    -- the guard checks that no sleep was started and left
  end)

  it("a scope refuses a grace it could not wait, before anything runs", function()
    H.error_here(function() baton.scope(function() end, { grace = 2e9 }) end,
      "bad argument #2 to 'scope' (option 'grace' must be a number of seconds from 0 to 1e+09, got 2000000000.0)")
    H.error_here(function() baton.scope(function() end, { grace = 0 / 0 }) end,
      "bad argument #2 to 'scope' (option 'grace' must be a number of seconds from 0 to 1e+09, got " .. tostring(0 / 0) .. ")")
  end)
end)

describe("the subreaper", function()
  H.guard()

  it("reaps orphaned grandchildren, and leaves our children to their owners", function()
    local reaped = {}
    assert.is_true(baton.subreaper(true, function(pid, code) reaped[pid] = code end))
    local p = assert(baton.spawn { "sh", "-c", "(sleep 0.1; exit 5) & echo $!", stdout = "pipe" })
    local orphan = tonumber(p.stdout:read("l"))
    assert.are.equal(0, p:wait().code)
    assert.are.equal(5, H.wait_for(function() return reaped[orphan] end, "the orphan to be reaped"))
    assert.is_true(baton.subreaper(false))
    p:close()
  end)
end)
