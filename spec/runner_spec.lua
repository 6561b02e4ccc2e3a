-- The runner (baton.runner): main task, shutdown hooks in order, interrupts, exit status, and the registry it reads.
local baton = require "baton"
local H = require "helper"

-- Run `code` in a child lua5.4 that has baton; returns the result. Each case
-- runs there, where the runner is not driving the loop already (under the
-- `baton` executable the specs are its main task).
local function lua(code)
  return baton.run { "lua5.4", "-e", code, env = H.lua_env(), capture = true, check = false }
end

-- Wait until process `pid` blocks in the event loop (epoll): a SIGINT then
-- reaches the wait, not busy Lua code (where lua.c's own handler acts).
local function waits_in_loop(pid)
  H.wait_for(function()
    local f = io.open("/proc/" .. pid .. "/wchan")
    local w = f and f:read("a")
    if f then f:close() end
    return w == "do_epoll_wait"
  end, "the process to wait in epoll")
end

describe("the runner", function()
  H.guard()

  it("runs the main task, then the shutdown hooks, the last registered first", function()
    local r = lua [[
      local baton = require "baton"
      local runner = require "baton.runner"
      runner.on_shutdown(function(reason) print("first", reason) end)
      runner.on_shutdown(function(reason) baton.sleep(0.01); print("second", reason) end)
      local ok, t = baton.main(function() baton.sleep(0.01); return "result" end)
      print(ok, t:wait())
    ]]
    assert.are.equal("", r.stderr)
    assert.are.equal("second\tdone\nfirst\tdone\ntrue\tresult\n", r.stdout)
  end)

  it("reports a failed main task with its traceback, and says so to the hooks", function()
    local r = lua [[
      local baton = require "baton"
      require("baton.runner").on_shutdown(function(reason) print("hook", reason) end)
      local ok, trace, err = baton.main(function() error("main failed") end)
      print(ok, err)
      print(trace:match("stack traceback") ~= nil)
    ]]
    assert.matches("^hook\tfailed\nfalse\t%(command line%):3: main failed\ntrue\n$", r.stdout)
  end)

  it("on an interrupt, unwinds the main task, stops what it started but not what it detached", function()
    local r = lua [[
      local baton = require "baton"
      local runner = require "baton.runner"
      local p, d
      local ok, msg, _, status = baton.main(function()
        p = baton.spawn { "sleep", "30" }
        d = baton.spawn { "sleep", "30", detach = true }
        baton.go(function() baton.sleep(0); runner.interrupt(15) end)
        p:wait()
      end)
      print(ok, msg:match("^[^\n]*"), status)
      print(tostring(p:poll()), d:poll())
      d:kill()
      print(tostring(d:wait()))
    ]]
    assert.are.equal("", r.stderr)
    assert.are.equal("false\tinterrupted by SIGTERM\t143\nkilled by SIGTERM\tnil\nkilled by SIGKILL\n", r.stdout)
  end)

  it("neither waits for nor stops a detached process or pipeline: a daemon outlives the script", function()
    local r = baton.run { os.getenv("BATON_EXE"), "-e", [[
      print(baton.spawn { "sleep", "30", detach = true, stdout = "null", stderr = "null" }.pid)
      print((baton.cmd { "sleep", "30" } | baton.cmd { "cat" }):spawn { detach = true, stdout = "null", stderr = "null" }.pid)
    ]], capture = true }
    local pids = {}
    for pid in r.stdout:gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
    assert.are.equal(2, #pids)
    for _, pid in ipairs(pids) do
      assert.is_true(H.alive(pid), "the detached process was stopped")
      assert.is_true(baton.ok { "kill", "-KILL", tostring(pid) })
      assert.is_true(H.gone_within(pid, 5))
    end
  end)

  it("on a second signal during the TERM grace, KILLs what runs (groups too) and dies of the signal", function()
    local tag = string.format("%d.%06d", 4000 + math.random(1000), math.random(999999))
    local script = H.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(([[
      -- TERM is trapped and reported; the sleeps are what must not survive
      local stubborn = "trap 'echo term; trap - TERM' TERM; sleep %s & echo up; while :; do wait; done"
      local p = baton.spawn { "sh", "-c", stubborn, pgroup = true }
      local pl = (baton.cmd { "sh", "-c", "sleep %s" } | baton.cmd { "cat" }):spawn()
      p:wait()
    ]]):format(tag, tag))
    f:close()
    local b = baton.spawn { os.getenv("BATON_EXE"), script, stdout = "pipe" }
    assert.are.equal("up", b.stdout:read("l"))
    assert.is_true(H.wait_for(function() return baton.ok { "pgrep", "-f", "sleep " .. tag, stdout = "null" } end, "the sleeps"))
    b:signal("INT")
    assert.are.equal("term", b.stdout:read("l")) -- the runner is in its grace period
    b:signal("INT")
    local st = b:wait()
    os.remove(script)
    assert.are.equal("SIGINT", st.signame)
    assert.is_true(H.wait_for(function() return not baton.ok { "pgrep", "-f", "sleep " .. tag, stdout = "null" } end, "the sleeps to go"))
  end)

  it("under lua5.4, Ctrl-C ends a wait at once, and nothing the script started outlives lua", function()
    local tag = string.format("%d.%06d", 5000 + math.random(1000), math.random(999999))
    local code = ("local baton = require 'baton'; local p = baton.spawn { 'sleep', '%s', pgroup = true }; "
      .. "print('ready'); io.stdout:flush(); p:wait()"):format(tag)
    local l = baton.spawn { "lua5.4", "-e", code, env = H.lua_env(), stdout = "pipe", stderr = "pipe" }
    assert.are.equal("ready", l.stdout:read("l"))
    waits_in_loop(l.pid)
    l:signal("INT")
    assert.are.equal(1, l:wait().code)
    assert.matches("^lua5.4: %(command line%):1: interrupted!\n", l.stderr:read("a"))
    l:close()
    assert.is_false(baton.ok { "pgrep", "-fx", "sleep " .. tag, stdout = "null" })
  end)

  it("under lua5.4, stops what still runs when the state closes, but not what was detached", function()
    local tag = string.format("%d.%06d", 6000 + math.random(1000), math.random(999999))
    local r = lua(([[
      local baton = require "baton"
      baton.spawn { "sleep", "%s" }
      print(baton.spawn { "sleep", "%s", detach = true, stdout = "null", stderr = "null" }.pid)
    ]]):format(tag, tag))
    local pid = tonumber(r.stdout:match("^(%d+)\n$"))
    assert.is_number(pid)
    assert.are.same({ pid }, { tonumber(baton.output { "pgrep", "-fx", "sleep " .. tag }) })
    assert.is_true(baton.ok { "kill", tostring(pid) })
    assert.is_true(H.gone_within(pid, 5))
  end)

  it("stops what the REPL started when it exits at the end of its input", function()
    local secs = string.format("%d.%06d", 3000 + math.random(1000), math.random(999999))
    local r = baton.run { os.getenv("BATON_EXE"), "-i", capture = true,
      input = ("p = baton.spawn{'sleep', '%s', stdout = 'null'}\nprint(p.pid)\n"):format(secs) }
    local pid = tonumber(r.stdout:match("(%d+)\n"))
    assert.is_number(pid)
    assert.is_true(H.gone_within(pid, 5))
    assert.is_false(baton.ok { "pgrep", "-fx", "sleep " .. secs, stdout = "null" })
  end)

  it("on a failure, cancels the script's tasks before it stops what runs: nothing left, nothing misreported", function()
    local tag = string.format("%d.%06d", 8000 + math.random(1000), math.random(999999))
    local r = baton.run { os.getenv("BATON_EXE"), "-e", ([[
      baton.go(function() -- keeps starting processes that ignore TERM
        while true do
          baton.spawn { "sh", "-c", "trap '' TERM; exec sleep %s", pgroup = true }
          baton.sleep(0.05)
        end
      end)
      baton.go(function() baton.run { "sleep", "%s" } end)
      baton.sleep(0.2)
      error("main failed", 0)
    ]]):format(tag, tag), capture = true, check = false }
    assert.are.equal(1, r.code)
    assert.matches("main failed", r.stderr)
    assert.is_nil(r.stderr:find("uncaught", 1, true), r.stderr)
    assert.is_false(baton.ok { "pgrep", "-f", "sleep " .. tag, stdout = "null" })
  end)

  it("an interrupt never stops baton's own code halfway: every child it started is stopped", function()
    local tag = string.format("%d.%06d", 9000 + math.random(1000), math.random(999999))
    local script = H.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(([[
      print("up")
      io.stdout:flush()
      local ps = {}
      while true do -- mostly busy inside spawn: a signal lands anywhere in it
        ps[#ps + 1] = baton.spawn { "sleep", "%s", timeout = 5000, stdin = "pipe", stdout = "pipe", stderr = "pipe" }
        if #ps > 20 then
          local q = table.remove(ps, 1)
          q:kill()
          q:close()
        end
      end
    ]]):format(tag))
    f:close()
    for round = 1, 5 do
      local b = baton.spawn { os.getenv("BATON_EXE"), script, stdout = "pipe", stderr = "null" }
      assert.are.equal("up", b.stdout:read("l"))
      baton.sleep(0.05 * round) -- somewhere in the loop; any moment will do
      b:signal("INT")
      assert.are.equal(130, b:wait().code)
      b:close()
      assert.is_false(baton.ok { "pgrep", "-f", "sleep " .. tag, stdout = "null" }, "round " .. round)
    end
    os.remove(script)
  end)

  it("an interrupt stops busy code in any task, not only the main one", function()
    local tag = string.format("%d.%06d", 11000 + math.random(1000), math.random(999999))
    local b = baton.spawn { os.getenv("BATON_EXE"), "-e", ([[
      local p = baton.spawn { "sleep", "%s", pgroup = true }
      baton.go(function() baton.sleep(0); print("busy"); io.stdout:flush(); while true do end end)
      p:wait()
    ]]):format(tag), stdout = "pipe", stderr = "pipe" }
    assert.are.equal("busy", b.stdout:read("l"))
    b:signal("INT")
    assert.are.equal(130, b:wait().code)
    local err = b.stderr:read("a")
    b:close()
    assert.matches("interrupted by SIGINT", err)
    assert.is_nil(err:find("uncaught", 1, true), err)
    assert.is_false(baton.ok { "pgrep", "-fx", "sleep " .. tag, stdout = "null" })
  end)

  it("a closed signal watcher gives the signal back as it was (SIGPIPE ignored, SIGINT the runner's)", function()
    local r = baton.run { os.getenv("BATON_EXE"), "-e", [[
      baton.on_signal("PIPE", function() end):close()
      local p = baton.spawn { "true", stdin = "pipe" }
      p:wait()
      print(select(3, p.stdin:write(("x"):rep(100000))))
    ]], capture = true, check = false }
    assert.are.same({ 0, "EPIPE\n" }, { r.code, r.stdout })
    local b = baton.spawn { os.getenv("BATON_EXE"), "-e", [[
      baton.on_signal("INT", function() end):close()
      print("ready") io.stdout:flush() baton.sleep(30)
    ]], stdout = "pipe", stderr = "pipe" }
    assert.are.equal("ready", b.stdout:read("l"))
    waits_in_loop(b.pid)
    b:signal("INT")
    assert.are.equal(130, b:wait().code) -- exited through the runner, not killed by the signal
    assert.matches("interrupted by SIGINT", b.stderr:read("a"))
    b:close()
  end)

  it("reports a shutdown hook that fails, and exits 1", function()
    local r = baton.run { os.getenv("BATON_EXE"), "-e",
      "require('baton.runner').on_shutdown(function() error('hook broke', 0) end)", capture = true, check = false }
    assert.are.equal(1, r.code)
    assert.matches("^baton: uncaught error in task: shutdown hook failed: hook broke\n", r.stderr)
  end)

  it("os.exit from any task or hook exits with its code, once, reporting nothing, leaving nothing", function()
    local tag = string.format("%d.%06d", 12000 + math.random(1000), math.random(999999))
    for _, code in ipairs {
      ("local p = baton.spawn { 'sleep', '%s' }; baton.go(function() baton.sleep(0) os.exit(4) end); p:wait()"):format(tag),
      ("require('baton.runner').on_shutdown(function() os.exit(4) end); baton.spawn { 'sleep', '%s' }; error('boom')")
        :format(tag),
    } do
      local r = baton.run { os.getenv("BATON_EXE"), "-e", code, capture = true, check = false }
      assert.are.equal(4, r.code)
      assert.is_nil(r.stderr:find("uncaught", 1, true), r.stderr)
      assert.is_false(baton.ok { "pgrep", "-fx", "sleep " .. tag, stdout = "null" })
    end
  end)

  it("os.exit closes the pending <close> variables of its task and of the main chunk, and pcall cannot stop it", function()
    local r = baton.run { os.getenv("BATON_EXE"), "-e", [[
      local x <close> = setmetatable({}, { __close = function() print("main closed") end })
      baton.go(function()
        local y <close> = setmetatable({}, { __close = function() print("task closed") end })
        baton.sleep(0)
        pcall(os.exit, 5)
        print("not reached")
      end)
      baton.sleep(30)
    ]], capture = true, check = false, timeout = H.PATIENCE }
    assert.are.same({ 5, "task closed\nmain closed\n", "" }, { r.code, r.stdout, r.stderr })
  end)

  it("under lua5.4, Ctrl-C interrupts baton.main", function()
    local tag = string.format("%d.%06d", 13000 + math.random(1000), math.random(999999))
    local code = ("local baton = require 'baton'; print(select(4, baton.main(function() "
      .. "local p = baton.spawn { 'sleep', '%s' }; print('ready'); io.stdout:flush(); p:wait() end)))"):format(tag)
    local l = baton.spawn { "lua5.4", "-e", code, env = H.lua_env(), stdout = "pipe" }
    assert.are.equal("ready", l.stdout:read("l"))
    waits_in_loop(l.pid)
    l:signal("INT")
    assert.are.equal("130", l.stdout:read("l")) -- main's exit status for it
    assert.is_true(l:wait().ok)
    l:close()
    assert.is_false(baton.ok { "pgrep", "-fx", "sleep " .. tag, stdout = "null" })
  end)

  it("stops what runs when the script calls os.exit", function()
    local tag = string.format("%d.%06d", 10000 + math.random(1000), math.random(999999))
    local r = baton.run { os.getenv("BATON_EXE"), "-e",
      ("print(baton.spawn { 'sleep', '%s' }.pid); os.exit(3)"):format(tag), capture = true, check = false }
    assert.are.equal(3, r.code)
    assert.is_true(H.gone_within(tonumber(r.stdout:match("^(%d+)")), 5))
  end)

  it("shows a background failure in the REPL once, when nobody waits for it", function()
    local r = baton.run { os.getenv("BATON_EXE"), "-i", capture = true, check = false,
      input = "t = baton.go(function() baton.sleep(0.01) error('E1', 0) end)\nprint(pcall(baton.all, {t}))\n"
        .. "u = baton.go(function() baton.sleep(0.01) error('E2', 0) end)\nbaton.sleep(0.05)\n" }
    assert.matches("false\tE1", r.stdout)
    assert.is_nil(r.stderr:find("E1", 1, true), r.stderr)
    assert.matches("baton: error in task: E2\n", r.stderr)
  end)

  it("does not wait for a detached process's sink, timeout or pipeline stage either", function()
    local r = baton.run { os.getenv("BATON_EXE"), "-e", [[
      local a = baton.spawn { "sleep", "90", stdout = function() end, stderr = "null", detach = true }
      local b = baton.spawn { "sleep", "90", timeout = 120, stdout = "null", stderr = "null", detach = true }
      local c = (baton.cmd { "sleep", "90" } | function(i) i:read("a") end):spawn { detach = true, stderr = "null" }
      print(a.pid, b.pid, c.processes[1].pid)
    ]], capture = true, timeout = H.PATIENCE }
    assert.is_false(r.timed_out, "the runner waited for a detached process")
    for pid in r.stdout:gmatch("%d+") do
      assert.is_true(baton.ok { "kill", tostring(pid) })
      assert.is_true(H.gone_within(tonumber(pid), 5))
    end
  end)

  it("knows what runs: started jobs until done, not detached ones", function()
    local registry = require "baton.registry"
    local base = #registry.jobs()
    local p = baton.spawn { "sleep", "30" }
    local pl = (baton.cmd { "sleep", "30" } | baton.cmd { "cat" }):spawn()
    local d = baton.spawn { "sleep", "30", detach = true }
    local seen = {}
    for _, j in ipairs(registry.jobs()) do seen[j] = true end
    assert.are.equal(base + 2, #registry.jobs())
    assert.is_true(seen[p] and seen[pl] and not seen[d])
    assert.are.equal(p, registry.find_child(p.pid))
    pl:close()
    p:kill()
    p:wait()
    d:kill()
    d:wait()
    assert.are.equal(base, #registry.jobs())
  end)
end)
