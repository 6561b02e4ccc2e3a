-- Task errors: each reaches its waiter, an unwaited one is reported at the end, a cancel stops what a call started.
local baton = require "baton"
local H = require "helper"

local BATON = os.getenv("BATON_EXE")

-- Run `script` (a chunk using the global `baton`) in `mode` ("baton" or
-- "lua"); returns the result. Each case runs under both: the `baton`
-- executable and a plain lua5.4.
local function script(mode, code)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local cmd = mode == "baton" and { BATON, path } or { "lua5.4", "-e", "baton = require 'baton'", path }
  cmd.env, cmd.capture, cmd.check = H.lua_env(), true, false
  local r = baton.run(cmd)
  os.remove(path)
  return r
end

-- A unique `sleep` to look for after the fact: its argv, and whether a
-- process with that argv is alive.
local function unique_sleep()
  local secs = string.format("%d.%06d", 1000 + math.random(1000), math.random(999999))
  return secs, function() return baton.ok { "pgrep", "-fx", "sleep " .. secs, stdout = "null" } end
end

for _, mode in ipairs { "baton", "lua" } do
  describe("tasks under " .. mode, function()
    H.guard()

    it("give each failure to its waiter: a parallel job runner exits 0", function()
      local r = script(mode, [[
        local ts = {}
        for i, c in ipairs { { "true" }, { "no-such-tool" }, { "sleep", "0.2" } } do ts[i] = baton.go(baton.run, c) end
        for i, t in ipairs(ts) do print(i, pcall(t.wait, t)) end
      ]])
      assert.are.equal("", r.stderr)
      assert.are.equal(0, r.code)
      assert.matches('^1\ttrue\texit 0\n2\tfalse\tENOENT: cannot run "no%-such%-tool": [^\n]*\n3\ttrue\texit 0\n$', r.stdout)
    end)

    it("raise a failure from all() and from a task wait_any returned", function()
      local r = script(mode, [[
        local a = baton.go(function() baton.sleep(0.2) return "a" end)
        local b = baton.go(function() baton.sleep(0.01) error("b failed", 0) end)
        print(pcall(baton.all, { a, b }))
        local i, t = baton.wait_any { b, a }
        print(i, pcall(t.wait, t))
        print(a:wait())
      ]])
      assert.are.equal("", r.stderr)
      assert.are.equal(0, r.code)
      assert.are.equal("false\tb failed\n1\tfalse\tb failed\na\n", r.stdout)
    end)

    it("report a failure nobody waits for at the end, after the rest ran, and exit 1", function()
      local secs, alive = unique_sleep()
      local r = script(mode, ([[
        baton.go(function() error("nobody waits for me", 0) end)
        local p = baton.spawn { "sleep", "%s" }
        baton.go(function() baton.sleep(0.05) p:kill() end)
        print("main goes on", tostring(p:wait()))
      ]]):format(secs))
      assert.are.equal("main goes on\tkilled by SIGKILL\n", r.stdout)
      assert.is_false(alive())
      if mode == "baton" then
        assert.are.equal(1, r.code)
        assert.matches("^baton: uncaught error in task: nobody waits for me\nstack traceback:", r.stderr)
      else -- lua5.4 knows nothing of it: reported when the state closes, exit status untouched
        assert.are.equal(0, r.code)
        assert.matches("^baton: uncaught error in task: nobody waits for me\nstack traceback:", r.stderr)
      end
    end)
  end)
end

describe("cancelling a task", function()
  H.guard()

  it("stops the process its pending run waits for before the cancel returns", function()
    local secs, alive = unique_sleep()
    local t = baton.go(baton.run, { "sh", "-c", 'trap "" TERM; exec sleep "$0"', secs })
    baton.wait_any { baton.go(function() while not alive() do baton.sleep(0.01) end end) }
    assert.is_true(t:cancel("give up"))
    local ok, err = pcall(t.wait, t)
    assert.is_false(ok)
    assert.are.equal("give up", err)
    assert.is_false(alive())
  end)

  it("stops every stage of a pipeline its pending output() waits for", function()
    local secs, alive = unique_sleep()
    local c = baton.cmd
    local t = baton.go(function() return (c { "sleep", secs } | c { "cat" }):output() end)
    baton.wait_any { baton.go(function() while not alive() do baton.sleep(0.01) end end) }
    assert.is_true(t:cancel())
    assert.are.equal("cancelled", select(2, pcall(t.wait, t)))
    assert.is_false(alive())
  end)
end)
