-- A service's logs: the proof of issue 12 — a million numbered lines through rotating files while the
-- service is killed and restarted mid-stream: nothing lost, nothing duplicated, files in order.
local baton = require "baton"
local H = require "helper"

assert(baton.subreaper(true)) -- (supervisors make baton a subreaper: its handle is counted from the start)

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local t = f:read("a")
  f:close()
  return t
end

describe("a service's log files", function()
  H.guard()

  it("a million numbered lines, rotating every ~10,000 lines, killed 5 times mid-stream: none lost or doubled", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    local path = dir .. "/numbers.log"
    local TOTAL, LINE = 1000000, #"12.34 1000000\n"
    local count, kills, pid = 0, 0, nil
    local sv
    sv = baton.supervisor {
      -- Each process numbers its lines from 1, after a segment tag (its spawn).
      numbers = { "sh", "-c", 'exec seq -f "${BATON_INSTANCE##*.} %.0f" 1 ' .. TOTAL, restart = "on-failure",
        ready = "exec", backoff = { initial = 0.01, jitter = 0 },
        log = { stdout = { { file = path, max_size = 10000 * LINE, keep = 1000 },
          function()
            count = count + 1
            -- Kill it at 100k, 250k, 400k, 550k, 700k lines seen: mid-stream.
            if kills < 5 and count == 100000 + kills * 150000 then
              kills = kills + 1
              baton.core.kill(pid, 9)
            end
          end } } },
    }
    sv:on("spawned", function(ev) pid = ev.pid end)
    assert.is_true(sv:start())
    assert.is_true(sv:wait("numbers", "exited")) -- the sixth run got to the end
    sv:stop()
    assert.are.equal(5, kills)
    -- The files, oldest first: numbers.log.N … numbers.log.1, numbers.log.
    local files = {}
    for i = 1000, 1, -1 do
      local t = read_all(path .. "." .. i)
      if t then files[#files + 1] = t end
    end
    files[#files + 1] = read_all(path) or ""
    assert.is_true(#files > 50, "rotated files: " .. #files)
    local segments, seg, last, lines, partial = {}, nil, 0, 0, 0
    for _, text in ipairs(files) do
      for line in text:gmatch("([^\n]*)\n") do
        lines = lines + 1
        if line:find(" %[partial%]$") then
          partial = partial + 1 -- the killed process's unfinished last line, marked
        else
          -- (plain checks: a luassert call per line would take most of the time)
          local s, n = line:match("^(%d+) (%d+)$")
          if not s then error("a malformed line: " .. line) end
          n = tonumber(n)
          if s ~= seg then
            if segments[s] then error("segment " .. s .. " came back after another") end
            if n ~= 1 then error("segment " .. s .. " does not start at 1: " .. n) end
            segments[s], seg = true, s
          elseif n ~= last + 1 then
            error(("segment %s: %d after %d (a gap or a double)"):format(s, n, last))
          end
          last = n
        end
      end
    end
    assert.are.equal(TOTAL, last) -- the last segment ran to the end
    local nsegs = 0
    for _ in pairs(segments) do nsegs = nsegs + 1 end
    assert.are.equal(6, nsegs)
    assert.are.equal(count, lines) -- what the handler saw is what the files hold
    assert.is_true(lines >= TOTAL + 100000)
    baton.run { "rm", "-rf", dir }
  end)

  it("reopens its files when asked and on SIGUSR1 (an external logrotate moved them)", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    local path = dir .. "/x.log"
    local sv = baton.supervisor {
      x = { "sh", "-c", "echo hi; echo >&3; exec sleep 1000." .. baton.core.getpid(), ready = { fd = 3 }, log = path },
    }
    assert.is_true(sv:start())
    H.wait_for(function() local f = io.open(path) local t = f and f:read("a") if f then f:close() end
      return t == "hi\n" end, "the first line in the file")
    assert.is_true(os.rename(path, path .. ".moved"))
    assert.are.equal(1, sv:reopen_logs())
    assert.is_truthy(io.open(path)):close()
    assert.is_true(os.rename(path, path .. ".moved2"))
    baton.core.kill(baton.core.getpid(), baton.signals.USR1)
    H.wait_for(function() local f = io.open(path) if f then f:close() return true end end, "the file reopened on SIGUSR1")
    sv:stop()
    baton.run { "rm", "-rf", dir }
  end)

  it("a log file that cannot be opened is a failed start that says why; nothing else is disturbed", function()
    local sv = baton.supervisor {
      bad = { "true", ready = "exec", log = "/nonexistent-dir/x.log" },
      good = { "sh", "-c", "echo >&3; exec sleep 1000." .. baton.core.getpid(), ready = { fd = 3 } },
    }
    local ok, msg, code = sv:start("bad")
    assert.is_nil(ok)
    assert.are.equal("EFAILED", code)
    assert.matches("service 'bad' did not start: ENOENT: cannot open log file /nonexistent%-dir/x%.log", msg)
    assert.are.equal("failed", sv:status().bad.state)
    assert.is_true(sv:start("good"))
    sv:stop()
  end)
end)

describe("a service's logs under concurrent stops", function()
  H.guard()

  it("two stops at once (a handler's and the program's end) close the log once, without an error", function()
    local sv = baton.supervisor {
      w = { "sh", "-c", "echo hello; exec sleep 1000." .. baton.core.getpid(), ready = "exec",
        log = { stdout = { "null" } } },
    }
    assert.is_true(sv:start())
    H.wait_for(function() return sv:logs("w")[1] end, "the first line")
    local a = baton.go(function() return sv:stop() end)
    local b = baton.go(function() return sv:stop() end)
    assert.is_true(a:wait())
    assert.is_true(b:wait())
    assert.are.same({ "hello" }, sv:logs("w"))
  end)

  it("with drop = true a slow handler skips lines (counted) instead of holding the writer back", function()
    local function run(drop)
      local seen = 0
      local sv = baton.supervisor {
        w = { "sh", "-c", "seq 1 300000; echo >&3; exec sleep 1000." .. baton.core.getpid(), ready = { fd = 3 },
          log = { stdout = { function(_, _, log)
            seen = seen + 1
            if seen == 1 then
              -- A slow handler, made so for sure: the first line waits until the
              -- writer has filled the pipe (the loop does not run meanwhile).
              local fd = log.streams.stdout.ud:fileno()
              local deadline = baton.now() + 10
              while baton.core.pipe_pending(fd) < 200 * 1024 and baton.now() < deadline do end
            end
          end }, drop = drop } },
      }
      assert.is_true(sv:start()) -- ready once seq has written everything
      H.wait_for(function()
        local r = sv:status().w.replicas[1]
        return seen + (r.dropped or 0) >= 300000
      end, "every line seen or dropped")
      local dropped = sv:status().w.replicas[1].dropped
      sv:stop()
      return seen, dropped
    end
    local seen, dropped = run(false)
    assert.are.same({ 300000, 0 }, { seen, dropped })
    seen, dropped = run(true)
    assert.is_true(dropped > 0, "nothing dropped")
    assert.are.equal(300000, seen + dropped)
  end)
end)

describe("a service's logs on baton's own stdout", function()
  H.guard()

  it("a terminal nobody reads (a paused pager, Ctrl-S) holds up the lines sent there, never baton's supervision", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    local marks = dir .. "/marks"
    -- talk: 7 MB of numbered lines for the terminal (far beyond the pipe and baton's queue);
    -- beat: exits at once, again and again (its log a file): each exit
    -- baton sees is a line in `marks`, written while talk's output waits.
    local script = ([[
      local marks = assert(io.open(%q, "w"))
      marks:setvbuf("line")
      local sv = baton.supervisor {
        talk = { "sh", "-c", "seq -f 'line %%.0f for the terminal' 1 300000; exec sleep 1000.%d",
          log = { stdout = { "terminal" } } },
        beat = { "sh", "-c", "exit 3", restart = "always", ready = "exec", backoff = { initial = 0.01, factor = 1, jitter = 0 },
          log = { stdout = { %q } } },
      }
      local n = 0
      sv:on("exited", function(ev) if ev.service == "beat" then n = n + 1; marks:write(n, "\n") end end)
      sv:run()
    ]]):format(marks, baton.core.getpid(), dir .. "/beat.log")
    local p <close> = assert(baton.spawn { os.getenv("BATON_EXE") or "./build/baton", "-e", script,
      stdout = "pipe", stderr = "pipe" })
    -- Nothing reads baton's stdout yet: the restarts go on all the same.
    H.wait_for(function()
      local t = read_all(marks)
      return t and t:find("\n20\n", 1, true)
    end, "baton to see beat exit 20 times while its stdout is not read")
    p:signal("TERM")
    -- Then its stdout is read: every line that was sent there whole, in
    -- order — nothing dropped, nothing cut (more than baton's 1 MiB queue
    -- plus the pipes: the reading paused, it dropped nothing) — and baton exits.
    local out = p.stdout:read("a")
    assert.are.equal(143, p:wait().code, p.stderr:read("a"))
    local talk, partial = 0, 0
    for line in out:gmatch("([^\n]*)\n") do
      if line:find("talk", 1, true) then
        if line:find(" [partial]", 1, true) then -- (the TERM caught yes mid-line: that line only)
          partial = partial + 1
        else
          talk = talk + 1
          assert.matches("^%d%d:%d%d:%d%d talk%.1 +| line " .. talk .. " for the terminal$", line)
        end
      end
    end
    assert.is_true(partial <= 1, partial .. " partial lines")
    assert.is_true(talk * #"line 100000 for the terminal\n" > 1024 * 1024, "only " .. talk .. " lines")
    baton.run { "rm", "-rf", dir }
  end)
end)

describe("a service's logs on baton's own stdout, its reading paused", function()
  H.guard()

  local function exists(path)
    local f = io.open(path)
    if f then f:close() end
    return f ~= nil
  end

  local function baton_with(script)
    return assert(baton.spawn { os.getenv("BATON_EXE") or "./build/baton", "-e", script,
      stdout = "pipe", stderr = "pipe" })
  end

  it("a stop reads to the end what the process wrote: no line lost while the terminal waits", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    -- filler fills baton's queue for its stdout (nothing reads it): the
    -- reading of every stream routed there pauses. Then talk writes 40,000
    -- numbered lines (~230 KB: its pipe holds what is not read, the writer
    -- is done), and the services stop.
    local script = ([[
      local sv = baton.supervisor {
        filler = { "sh", "-c", "yes filler | head -n 200000; exec sleep 1000.%d", ready = "exec",
          log = { stdout = { "terminal" } } },
        talk = { "sh", "-c", "sleep 0.5; seq 1 20000; sleep 0.5; seq 20001 40000; touch %s/wrote; exec sleep 1000.%d",
          ready = "exec", log = { stdout = { "terminal" } } },
      }
      sv:start()
      while not io.open(%q) do baton.sleep(0.01) end
      sv:stop()
      local m = io.open(%q, "w"); m:write("stopped\n"); m:close()
    ]]):format(baton.core.getpid(), dir, baton.core.getpid(), dir .. "/wrote", dir .. "/stopped")
    local p <close> = baton_with(script)
    H.wait_for(function() return exists(dir .. "/stopped") end, "the service stopped while stdout is not read")
    local out = p.stdout:read("a")
    assert.are.equal(0, p:wait().code, p.stderr:read("a"))
    local n = 0
    for num in out:gmatch("talk%.1 +| (%d+)\n") do
      n = n + 1
      assert.are.equal(n, tonumber(num))
    end
    assert.are.equal(40000, n)
    baton.run { "rm", "-rf", dir }
  end)

  it("a dying process's partial line stays its own while the terminal waits, never joined to its successor's", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    local marks = dir .. "/marks"
    -- 125,000 short lines (250 KB, 2.5 MB prefixed: the reading pauses
    -- before it is read to the end), then "tail" without a newline; the
    -- restarted process says "next".
    local script = ([[
      local marks = assert(io.open(%q, "w"))
      marks:setvbuf("line")
      local sv = baton.supervisor {
        talk = { "sh", "-c", "if [ -e %s/flag ]; then echo next; exec sleep 1000.%d; fi; touch %s/flag; "
          .. "yes x | head -n 125000; printf tail", restart = "always", ready = "exec",
          backoff = { initial = 0.1, factor = 1, jitter = 0 }, log = { stdout = { "terminal" } } },
      }
      sv:on("spawned", function() marks:write("spawned\n") end)
      sv:run()
    ]]):format(marks, dir, baton.core.getpid(), dir)
    local p <close> = baton_with(script)
    H.wait_for(function()
      local t = read_all(marks)
      return t and t:find("spawned\nspawned\n", 1, true)
    end, "the restart, while baton's stdout is not read")
    baton.sleep(0.3) -- ("next" written)
    local last
    while true do
      local line = assert(p.stdout:read("l"))
      if line:find("next", 1, true) then
        assert.matches("talk%.1 | tail %[partial%]$", last)
        assert.matches("talk%.1 | next$", line)
        break
      end
      last = line
    end
    p:signal("TERM")
    p.stdout:read("a")
    assert.are.equal(143, p:wait().code)
    baton.run { "rm", "-rf", dir }
  end)
end)
