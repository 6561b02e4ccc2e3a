-- cgroup v2 from Lua: baton.core's primitives (cgroup_self, cgroup_create,
-- cgroup_enable, cgroup_set, cgroup_get, cgroup_kill, cgroup_populated,
-- cgroup_oom_kills, cgroup_remove) and the spawn option `cgroup`, against the
-- host's real hierarchy. Where baton cannot make a group of its own (no
-- cgroup2 mounted, not writable), the tests that need one are pending, with
-- the reason. Limits assert what the host offers: applied where its
-- controller is there, an error naming the controller where it is not.
local lfs = require "lfs"
local baton = require "baton"
local H = require "helper"
local core = baton.core

-- A scratch group under baton's own, unique among the specs running in
-- parallel; or nil and why the host cannot have one.
local counter = 0
local function scratch()
  local self, msg = core.cgroup_self()
  if not self then return nil, "no cgroup v2 hierarchy: " .. msg end
  counter = counter + 1
  local dir, err = core.cgroup_create(self, ("baton-spec-%d-%d"):format(core.getpid(), counter))
  if not dir then return nil, "cannot create a cgroup under " .. self .. ": " .. err end
  return dir
end

-- Kill what is left in `dir` and below, wait until nothing runs there, and
-- remove it with the groups below it.
local function cleanup(dir)
  if not lfs.attributes(dir) then return end
  core.cgroup_kill(dir)
  H.wait_for(function() return core.cgroup_populated(dir) == false end, "cgroup " .. dir .. " to empty")
  local function rm(d)
    for name in lfs.dir(d) do
      local sub = d .. "/" .. name
      if name ~= "." and name ~= ".." and lfs.attributes(sub, "mode") == "directory" then rm(sub) end
    end
    assert(core.cgroup_remove(d))
  end
  rm(dir)
end

-- The unique sleeps of the running test (see unique_sleep).
local tags = {}

-- A scratch group for the running test, removed when it ends, however it
-- ends, with any of the test's sleeps that escaped it (only a failing test
-- leaves one); the test is pending when the host cannot have one.
local function group()
  local dir, why = scratch()
  if not dir then pending(why) end
  tags = {}
  finally(function()
    for _, secs in ipairs(tags) do baton.ok { "pkill", "-KILL", "-fx", "sleep " .. secs } end
    cleanup(dir)
  end)
  return dir
end

-- A unique `sleep` argument, and whether a process running it is alive.
local function unique_sleep()
  local secs = ("1000.%d%06d"):format(core.getpid(), math.random(999999))
  tags[#tags + 1] = secs
  return secs, function() return baton.ok { "pgrep", "-fx", "sleep " .. secs, stdout = "null" } end
end

-- The cgroup path /proc/PID/cgroup gives for `pid` ("0::" line).
local function cgroup_of(pid)
  local f = assert(io.open("/proc/" .. pid .. "/cgroup"))
  local text = f:read("a")
  f:close()
  return text:match("0::([^\n]*)")
end

-- Whether directory `dir` names the group at cgroup path `path`.
local function names(dir, path)
  return path ~= nil and path ~= "/" and dir:sub(-#path) == path
end

describe("cgroups", function()
  H.guard()

  it("finds baton's own group through the mounts", function()
    local self, msg, code = core.cgroup_self()
    if not self then
      assert.are.equal("ENOENT", code)
      pending("no cgroup v2 hierarchy: " .. msg)
    end
    assert.matches("^/", self)
    local f = assert(io.open(self .. "/cgroup.procs"))
    local procs = f:read("a")
    f:close()
    assert.truthy(("\n" .. procs):find("\n" .. core.getpid() .. "\n", 1, true), "baton not listed in its group")
  end)

  it("starts a process inside the group given by the spawn option", function()
    local dir = group()
    local secs = unique_sleep()
    local p = assert(baton.spawn { "sleep", secs, cgroup = dir })
    assert.is_true(names(dir, cgroup_of(p.pid)), dir .. " vs " .. tostring(cgroup_of(p.pid)))
    assert.is_true(core.cgroup_populated(dir))
    p:kill()
    assert.are.equal(9, assert(p:wait(H.PATIENCE)).signal)
    -- Before exec: what the program sees of itself is the group already.
    local out = baton.output { "sh", "-c", "grep ^0:: /proc/self/cgroup", cgroup = dir }
    assert.is_true(names(dir, out:match("0::([^\n]*)")), out)
  end)

  it("kills the whole tree, a grandchild in a session of its own too", function()
    local dir = group()
    local a, a_alive = unique_sleep()
    local b, b_alive = unique_sleep()
    local c, c_alive = unique_sleep()
    local p = assert(baton.spawn { "sh", "-c", ("setsid sleep %s & sleep %s & exec sleep %s"):format(a, b, c),
      cgroup = dir })
    H.wait_for(function() return a_alive() and b_alive() and c_alive() end, "the three sleeps")
    assert.is_true(core.cgroup_kill(dir))
    assert.are.equal(9, assert(p:wait(H.PATIENCE)).signal)
    H.wait_for(function() return core.cgroup_populated(dir) == false end, "the group to empty")
    assert.is_false(a_alive(), "the setsid'd grandchild survived")
    assert.is_false(b_alive(), "the background grandchild survived")
    assert.is_false(c_alive())
    assert.is_true(core.cgroup_remove(dir))
  end)

  it("applies limits where the host has the controller, and names it where not", function()
    local dir = group()
    local offered = {}
    for w in assert(core.cgroup_get(dir, "cgroup.controllers")):gmatch("%S+") do offered[w] = true end
    local want, missing = {}, {}
    for _, c in ipairs { "memory", "pids", "cpu" } do
      if offered[c] then want[c] = true else missing[#missing + 1] = c end
    end
    assert.are.same(missing, assert(core.cgroup_enable(dir, "memory pids cpu")))
    local leaf = assert(core.cgroup_create(dir, "leaf"))

    local ok, msg, code = core.cgroup_set(leaf, "pids.max", 1)
    if want.pids then
      assert.is_true(ok, msg)
      assert.are.equal("1", core.cgroup_get(leaf, "pids.max"))
      -- One process may be in it, the shell: its fork fails.
      assert.is_false(baton.ok { "sh", "-c", "true & wait", cgroup = leaf, stderr = "null" })
      assert.is_true(core.cgroup_set(leaf, "pids.max", "max"))
      assert.is_true(baton.ok { "sh", "-c", "true & wait", cgroup = leaf })
    else
      assert.are.equal("ENOENT", code)
      assert.matches("pids.max: the pids controller is not enabled for " .. leaf, msg, 1, true)
    end

    ok, msg, code = core.cgroup_set(leaf, "cpu.max", "50000 100000")
    if want.cpu then
      assert.is_true(ok, msg)
      assert.are.equal("50000 100000", core.cgroup_get(leaf, "cpu.max"))
    else
      assert.are.equal("ENOENT", code)
      assert.matches("cpu.max: the cpu controller is not enabled for " .. leaf, msg, 1, true)
    end

    ok, msg, code = core.cgroup_set(leaf, "memory.max", "16M")
    if want.memory then
      assert.is_true(ok, msg)
      assert.are.equal(tostring(16 * 1024 * 1024), core.cgroup_get(leaf, "memory.max"))
      core.cgroup_set(leaf, "memory.swap.max", "0") -- no swap to escape to, where swap is accounted
      assert.are.equal(0, core.cgroup_oom_kills(leaf))
      -- A shell holding 64 MB in a variable is killed by the OOM killer.
      local r = baton.run { "sh", "-c", "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo ${#x}",
        cgroup = leaf, check = false, capture = true }
      assert.is_false(r.ok)
      assert.is_true(core.cgroup_oom_kills(leaf) >= 1)
    else
      assert.are.equal("ENOENT", code)
      assert.matches("memory.max: the memory controller is not enabled for " .. leaf, msg, 1, true)
      local n
      n, msg, code = core.cgroup_oom_kills(leaf)
      assert.is_nil(n)
      assert.are.equal("ENOENT", code)
      assert.matches("the memory controller is not enabled", msg, 1, true)
    end
  end)

  it("fails a spawn into a missing group as stage 'cgroup', leaving nothing behind", function()
    local p, msg, code = baton.spawn { "true", cgroup = "/nonexistent/baton-cgroup" }
    assert.is_nil(p)
    assert.are.equal("ENOENT", code)
    assert.matches('cannot join cgroup "/nonexistent/baton-cgroup": no such file or directory', msg, 1, true)
    local _, _, c, failure = core.spawn { argv = { "true" }, cgroup = "/nonexistent/baton-cgroup" }
    assert.are.equal("ENOENT", c)
    assert.are.equal("cgroup", failure.stage)

    p, msg, code = baton.spawn { "true", cgroup = "/tmp" }
    assert.is_nil(p)
    assert.are.equal("EINVAL", code)
    assert.matches('cannot join cgroup "/tmp": not a cgroup v2 directory', msg, 1, true)

    -- A group that was there and is gone.
    local dir = group()
    assert.is_true(core.cgroup_remove(dir))
    p, msg, code = baton.spawn { "true", cgroup = dir, stdout = "pipe" }
    assert.is_nil(p)
    assert.are.equal("ENOENT", code)
    assert.matches("cannot join cgroup", msg, 1, true)
  end)

  it("raises on a bad option value, naming it", function()
    H.error_here(function() baton.spawn { "true", cgroup = 3 } end,
      "bad argument #1 to 'spawn' (option 'cgroup' must be the absolute path of a cgroup v2 directory, got number)")
    H.error_here(function() baton.spawn { "true", cgroup = "rel/dir" } end,
      "bad argument #1 to 'spawn' (option 'cgroup' must be the absolute path of a cgroup v2 directory, got \"rel/dir\")")
    H.error_here(function() baton.run { "true", cgroup = "/a\0b" } end,
      "bad argument #1 to 'run' (option 'cgroup' must be the absolute path of a cgroup v2 directory, got \"/a\\0b\")")
  end)

  it("sweeps what a baton of this pid namespace killed hard left, and nothing that runs or is not its", function()
    local dir = group()
    local ns = assert(core.pidns())
    local dead = baton.spawn { "true" }
    dead:wait()
    local function make(name, leaf)
      local d = assert(core.cgroup_create(dir, name))
      if leaf then assert(core.cgroup_create(d, leaf)) end
      return d
    end
    local stale = make(("baton-%d-%d-aaaaaa"):format(ns, dead.pid), "web.1-x")
    local live = make(("baton-%d-%d-bbbbbb"):format(ns, core.getpid()), "web.1-y")
    local other = make(("baton-%d-%d-cccccc"):format(ns + 1, dead.pid), "web.1-z")
    local busy = make(("baton-%d-%d-dddddd"):format(ns, dead.pid), "web.1-w")
    local secs, running = unique_sleep()
    local p = baton.spawn { "sleep", secs, cgroup = busy .. "/web.1-w" }
    H.wait_for(running, "the sleep in its group")
    require("baton.service")._cgroup_sweep(dir, ns)
    assert.is_nil(lfs.attributes(stale)) -- gone, with its leaf
    assert.truthy(lfs.attributes(live .. "/web.1-y")) -- its baton runs
    assert.truthy(lfs.attributes(other .. "/web.1-z")) -- another pid namespace's
    assert.truthy(lfs.attributes(busy .. "/web.1-w")) -- a process in it
    p:kill()
    p:wait()
  end)

  it("answers bad inputs to the primitives with errors that say what is wrong", function()
    assert.has_error(function() core.cgroup_create("/tmp", "a/b") end)
    assert.has_error(function() core.cgroup_set("/tmp", "../cgroup.procs", "0") end)
    assert.has_error(function() core.cgroup_get("/tmp", nil) end)
    assert.has_error(function() core.cgroup_enable("/tmp", { 42 }) end)
    local ok, msg, code = core.cgroup_remove("/tmp")
    assert.is_nil(ok)
    assert.are.equal("EINVAL", code)
    assert.matches("not a cgroup v2 directory: /tmp", msg, 1, true)
    ok, msg, code = core.cgroup_kill("/nonexistent/baton-cgroup")
    assert.is_nil(ok)
    assert.are.equal("ENOENT", code)
    assert.matches("no such cgroup: /nonexistent/baton-cgroup", msg, 1, true)

    local dir = group()
    local raised, err = pcall(core.cgroup_enable, dir, "Memory!")
    assert.is_false(raised)
    assert.matches("bad argument #2 to '[%w.]*cgroup_enable' %(controller names are lower%-case words", err)
    assert.are.equal(dir, core.cgroup_create(core.cgroup_self(), dir:match("[^/]+$"))) -- there already: fine
    local sub = assert(core.cgroup_create(dir, "sub"))
    ok, msg, code = core.cgroup_remove(dir)
    assert.is_nil(ok)
    assert.are.equal("EBUSY", code)
    assert.matches("processes or groups are still in " .. dir, msg, 1, true)
    ok, msg, code = core.cgroup_set(sub, "no.such.file", "1")
    assert.is_nil(ok)
    assert.are.equal("ENOENT", code)
    assert.is_false(core.cgroup_populated(sub))
    assert.is_true(core.cgroup_remove(sub))
    -- The root group (where baton's own is the root) cannot be killed.
    local self = core.cgroup_self()
    if not lfs.attributes(self .. "/cgroup.events") then
      ok, msg, code = core.cgroup_kill(self)
      assert.is_nil(ok)
      assert.are.equal("EINVAL", code)
      assert.matches("the root cgroup cannot be killed", msg, 1, true)
    end
  end)
end)
