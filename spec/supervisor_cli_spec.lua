-- Supervisors in the baton executable: as a container's init (pid 1) and as a systemd Type=notify unit.
local baton = require "baton"
local H = require "helper"

local BATON = os.getenv("BATON_EXE") or "./build/baton"

local function script(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- Whether this machine lets us make a pid namespace (root, or a container that allows it).
local function can_unshare()
  local r = baton.run { "unshare", "--pid", "--fork", "--mount-proc", "true", check = false, capture = true }
  return r.ok, r.stderr
end

describe("a supervisor in the baton executable", function()
  H.guard()

  it("as pid 1: reaps 100 orphaned zombies; a critical service's death is baton's exit status", function()
    local ok, why = can_unshare()
    if not ok then return pending("no pid namespace here: " .. why) end
    local path = script [[
      local reaped = 0
      assert(baton.subreaper(true, function() reaped = reaped + 1 end))
      assert(baton.core.getpid() == 1)
      local sv = baton.supervisor {
        orphans = { "sh", "-c", "for i in $(seq 100); do (sleep 0.01 &); done; echo >&3; exec sleep 1000", ready = { fd = 3 } },
        core = { "sh", "-c", "echo >&3; exec sleep 1000", ready = { fd = 3 }, critical = true },
      }
      baton.go(function()
        sv:wait("orphans", "ready")
        sv:wait("core", "ready")
        while reaped < 100 do baton.sleep(0.01) end
        for _, pid in ipairs(baton.core.descendants(1)) do
          assert(baton.core.proc_stat(pid).state ~= "Z", "a zombie: " .. pid)
        end
        print("reaped", reaped)
        baton.core.kill(sv:status().core.replicas[1].pid, 9)
      end)
      os.exit(sv:run())
    ]]
    local r = baton.run { "unshare", "--pid", "--fork", "--mount-proc", BATON, path, capture = true, check = false,
      timeout = H.PATIENCE }
    os.remove(path)
    assert.are.equal("", r.stderr)
    assert.are.equal("reaped\t100\n", r.stdout)
    assert.are.equal(137, r.code) -- 128 + SIGKILL, the critical service's end
  end)

  it("as pid 1: SIGTERM stops the services in reverse dependency order", function()
    local ok, why = can_unshare()
    if not ok then return pending("no pid namespace here: " .. why) end
    local path = script [[
      local sv = baton.supervisor {
        db = { "sh", "-c", "echo >&3; exec sleep 1000", ready = { fd = 3 } },
        web = { "sh", "-c", "echo >&3; exec sleep 1000", ready = { fd = 3 }, needs = "db" },
      }
      sv:on("stopped", function(ev) print("stopped", ev.service) end)
      sv:on("ready", function(ev) print("ready", ev.service) end)
      os.exit(sv:run())
    ]]
    local p = baton.spawn { "unshare", "--pid", "--fork", "--mount-proc", BATON, path, stdout = "pipe", stderr = "null" }
    assert.are.equal("ready\tdb", p.stdout:read("l"))
    assert.are.equal("ready\tweb", p.stdout:read("l"))
    local inner = baton.core.descendants(p.pid)[1] -- baton, pid 1 inside
    assert.is_true(baton.core.kill(inner, baton.signals.TERM))
    assert.are.equal("stopped\tweb", p.stdout:read("l"))
    assert.are.equal("stopped\tdb", p.stdout:read("l"))
    assert.are.equal(143, p:wait().code)
    os.remove(path)
  end)

  it("under systemd: READY=1 with a STATUS once ready, WATCHDOG=1, STOPPING=1; services never get baton's socket", function()
    local got = {}
    local sock = "@baton-spec-manager-" .. baton.core.getpid()
    local l = assert(baton.core.notify_listen(sock, function(_, text) got[#got + 1] = text end))
    local seen = os.tmpname()
    local path = script(([[
      local sv = baton.supervisor {
        svc = { "sh", "-c", 'echo "${NOTIFY_SOCKET:-unset} ${WATCHDOG_USEC:-unset}" > %s; echo >&3; exec sleep 1000',
          ready = { fd = 3 } },
      }
      os.exit(sv:run())
    ]]):format(seen))
    local p = baton.spawn { BATON, path, env = { NOTIFY_SOCKET = sock, WATCHDOG_USEC = "400000" }, stderr = "null" }
    local function has(pattern)
      for _, t in ipairs(got) do if t:find(pattern) then return t end end
    end
    local ready = H.wait_for(function() return has("^READY=1\n") end, "READY=1")
    assert.are.equal("READY=1\nSTATUS=1/1 services ready", ready)
    H.wait_for(function() return has("^WATCHDOG=1$") end, "a watchdog ping")
    local f = assert(io.open(seen))
    assert.are.equal("unset unset\n", f:read("a"))
    f:close()
    p:signal("TERM")
    assert.are.equal(143, p:wait().code)
    H.wait_for(function() return has("^STOPPING=1$") end, "STOPPING=1")
    l:close()
    os.remove(path)
    os.remove(seen)
  end)

  it("a second SIGINT KILLs every service's whole tree at once and removes its cgroup leaves", function()
    local t = "1000." .. baton.core.getpid() .. "77"
    local path = script(([[
      local sv = baton.supervisor {
        db = { "sh", "-c", "setsid sh -c 'trap \"\" TERM; exec sleep %s' & trap 'echo got TERM' TERM; echo >&3; "
          .. "while :; do sleep 0.05; done", ready = { fd = 3 } },
      }
      sv:on("ready", function() print(sv:status().db.replicas[1].cgroup) end)
      os.exit(sv:run())
    ]]):format(t))
    local p = baton.spawn { BATON, path, stdout = "pipe", stderr = "null" }
    local leaf = p.stdout:read("l")
    H.wait_for(function()
      return baton.run { "pgrep", "-fx", "sleep " .. t, capture = true, check = false }.ok
    end, "the setsid'd grandchild")
    p:signal("INT")
    assert.are.equal("got TERM", p.stdout:read("l")) -- stopping: the main process ignores it
    p:signal("INT")
    local st = p:wait()
    assert.are.equal("SIGINT", st.signame, tostring(st))
    H.wait_for(function()
      return not baton.run { "pgrep", "-fx", "sleep " .. t, capture = true, check = false }.ok
    end, "the setsid'd grandchild to be gone")
    if leaf ~= "false" then
      assert.is_nil(io.open(leaf .. "/cgroup.procs"), "the cgroup leaf was left behind")
      assert.is_nil(io.open(leaf:match("^(.*)/") .. "/cgroup.procs"), "the cgroup base was left behind")
    end
    os.remove(path)
  end)
end)
