-- baton.procfile: Procfiles and .env files read as honcho reads them; the
-- oracle tests run the real honcho (when there is one: BATON_HONCHO, or
-- `honcho` in PATH) and Debian's foreman on the same files.
local baton = require "baton"
local H = require "helper"
local pf = baton.procfile

-- A supervisor makes baton a subreaper (its reaper is a handle the leak
-- guard must count from the start); it also means whatever honcho or
-- foreman left running would be our child, and the guard would see it.
assert(baton.subreaper(true))

-- The message `fn` raises (a data error: no Lua position), or a failure.
local function raised(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

describe("procfile", function()
  H.guard()

  describe("parse_procfile", function()
    it("reads name: command lines in order, as honcho's pattern does", function()
      local e = pf.parse_procfile(table.concat({
        "# a comment",
        "web: python -m http.server $PORT",
        "",
        "   ",
        "my-worker:sh -c 'echo hi'  ",
        "clock_2:   \tnext  # not a comment for the Procfile",
        "  # an indented comment",
      }, "\n"))
      assert.are.same({
        { name = "web", command = "python -m http.server $PORT", line = 2 },
        { name = "my-worker", command = "sh -c 'echo hi'  ", line = 5 },
        { name = "clock_2", command = "next  # not a comment for the Procfile", line = 6 },
      }, e)
    end)

    it("counts lines as Python's splitlines (\\r\\n, \\r)", function()
      local e = pf.parse_procfile("a: x\r\nb: y\rc: z\n")
      assert.are.same({ "a", "b", "c" }, { e[1].name, e[2].name, e[3].name })
      assert.are.same({ 1, 2, 3 }, { e[1].line, e[2].line, e[3].line })
      assert.are.equal("x", e[1].command)
    end)

    it("raises file:line for what honcho would silently ignore", function()
      assert.are.equal([[Procfile:2: not a process line (expected 'name: command'): "bad line"]],
        raised(function() pf.parse_procfile("web: x\nbad line") end))
      assert.are.equal([[app/Procfile:1: not a process line (an entry starts at the beginning of the line): "  web: x"]],
        raised(function() pf.parse_procfile("  web: x", "app/Procfile") end))
      assert.are.equal([[Procfile:3: not a process line (a process type is letters, digits, '_' and '-', followed at once by ':'): "x.y: z"]],
        raised(function() pf.parse_procfile("a: b\n\nx.y: z") end))
      assert.are.equal([[Procfile:1: not a process line (a process type is letters, digits, '_' and '-', followed at once by ':'): "web : x"]],
        raised(function() pf.parse_procfile("web : x") end))
      assert.are.equal([[Procfile:1: not a process line (process type "web" has no command): "web:"]],
        raised(function() pf.parse_procfile("web:") end))
      assert.are.equal([[Procfile:1: process type "web" has no command]],
        raised(function() pf.parse_procfile("web:   ") end))
    end)

    it("with strict = false, ignores them as honcho does, and lists them", function()
      local e, ignored = pf.parse_procfile("bad line\n  web: x\nweb:   \nx.y: z\nok: 1", "P", { strict = false })
      -- honcho's \s*(.+) leaves the last blank to the command when nothing else follows
      assert.are.same({ { name = "web", command = " ", line = 3 }, { name = "ok", command = "1", line = 5 } }, e)
      assert.are.same({ { line = 1, text = "bad line" }, { line = 2, text = "  web: x" },
        { line = 4, text = "x.y: z" } }, ignored)
    end)

    it("refuses a type declared twice, in both modes", function()
      for _, strict in ipairs { true, false } do
        assert.are.equal([[Procfile:4: process type "web" is declared twice (first at line 1); honcho refuses it too]],
          raised(function() pf.parse_procfile("web: a\nw: b\n\nweb: c", nil, { strict = strict }) end))
      end
    end)

    it("names its misuse", function()
      H.error_here(function() pf.parse_procfile(nil) end, "bad argument #1 to 'parse_procfile' (string expected, got nil)")
      H.error_here(function() pf.parse_procfile("", nil, { lax = 1 }) end, "bad argument #3 to 'parse_procfile' (unknown option 'lax')")
    end)
  end)

  describe("parse_env", function()
    -- Each case was run through honcho 2.0.0's environ.parse (and a
    -- 15,000-line random differential check agreed): line → { name = value }.
    local cases = {
      { "A=plain", { A = "plain" } },
      { [[A='single $HOME \n lit']], { A = "single $HOME \n lit" } },
      { [[A="double \"q\" \n tab\t dollar $HOME"]], { A = "double \"q\" \n tab\t dollar $HOME" } },
      { "export C=exported", {} },
      { "D=", {} },
      { [[D=""]], { D = "" } },
      { "D=''", { D = "" } },
      { "E=unquoted value # trailing comment", { E = "unquotedvalue" } },
      { "F = spaced", { F = "spaced" } },
      { [[G=a'b'c"d"]], { G = "abcd" } },
      { "A=x#y", { A = "x" } },
      { "A='x#y'", { A = "x#y" } },
      { "A=x=y", { A = "x=y" } },
      { "A=a.b/c:d", { A = "a.b/c:d" } },
      { "A=${B}", { A = "${B}" } },
      { "1A=x", {} },
      { "_A=x", { _A = "x" } },
      { "A.B=x", {} },
      { "a-b=x", {} },
      { [[A=\'x]], { A = "'x" } },
      { [[A="a\\b"]], { A = "a\\b" } },
      { [[A="a\zb"]], { A = "a\\zb" } },
      { [[A='a\zb']], { A = "a\\zb" } },
      { [[A=a\ b]], { A = "a b" } },
      { "  A=indented", { A = "indented" } },
      { "A=é", { A = "é" } },
      { "A=1 2 3", { A = "123" } },
      { [[A="x" y]], { A = "xy" } },
      { "A==x", { A = "=x" } },
      { "A : x", {} },
      { "A= 'sp ace' ", { A = "sp ace" } },
      { "KEY=a;b", { KEY = "a;b" } },
      { [[A=\n]], { A = "n" } },
      { [[A='\\n']], { A = "\\\n" } },
      { "A=x\tB=y", { A = "xB=y" } },
      { "export=1", { export = "1" } },
      { "A=1\r", { A = "1" } },
      { "# A=1", {} },
      { "A='it''s'", { A = "its" } },
      { [[A="$(cmd)"]], { A = "$(cmd)" } },
    }

    it("gives honcho's values for honcho's quoting (strict = false)", function()
      for _, c in ipairs(cases) do
        local vars = pf.parse_env(c[1], ".env", { strict = false })
        assert.are.same(c[2], vars, "line: " .. c[1])
      end
    end)

    it("keeps the order of first assignment; later lines win", function()
      local vars, order = pf.parse_env("B=1\nA=2\nB=3\n")
      assert.are.same({ A = "2", B = "3" }, vars)
      assert.are.same({ "B", "A" }, order)
    end)

    it("raises file:line for a line that sets nothing or that honcho crashes on", function()
      assert.are.equal([[.env:2: 'export' is not understood: honcho ignores the whole line (write C=…): "export C=1"]],
        raised(function() pf.parse_env("A=1\nexport C=1") end))
      assert.are.equal([[x.env:1: no closing " quote: "H=\"multi"]],
        raised(function() pf.parse_env('H="multi\nline"', "x.env") end))
      assert.are.equal([[.env:1: no closing ' quote: "A='x"]], raised(function() pf.parse_env("A='x") end))
      assert.are.equal([[.env:3: a backslash at the end of the line escapes nothing: "A=x\\"]],
        raised(function() pf.parse_env("\n\nA=x\\") end))
      assert.are.equal([[.env:1: "1A" is not a variable name (a letter or '_' first): "1A=x"]],
        raised(function() pf.parse_env("1A=x") end))
      assert.are.equal([[.env:1: expected NAME=value: "A : x"]], raised(function() pf.parse_env("A : x") end))
      assert.are.equal([[.env:1: expected NAME=value: "JUSTAWORD"]], raised(function() pf.parse_env("JUSTAWORD") end))
    end)

    it("lets KEY= pass (it sets nothing, as in honcho) and says so", function()
      local vars, order, ignored = pf.parse_env("# c\nA=\nB=1")
      assert.are.same({ B = "1" }, vars)
      assert.are.same({ "B" }, order)
      assert.are.equal(2, ignored[1].line)
      assert.matches("honcho leaves A unset", ignored[1].why)
    end)
  end)

  describe("concurrency, ports", function()
    it("parses honcho's -c value", function()
      local c, order = pf.concurrency("web=2,worker=1, x = 3,web=0")
      assert.are.same({ web = 0, worker = 1, [" x "] = 3 }, c)
      assert.are.same({ "web", "worker", " x " }, order)
      assert.are.equal([[concurrency: "web" is not name=count (in "web")]], raised(function() pf.concurrency("web") end))
      assert.are.equal([[concurrency: "" is not name=count (in "")]], raised(function() pf.concurrency("") end))
      assert.are.equal([[concurrency: the count of "web" must be a whole number from 0, got "two"]],
        raised(function() pf.concurrency("web=two") end))
      assert.are.equal([[concurrency: the count of "web" must be a whole number from 0, got "-1"]],
        raised(function() pf.concurrency("web=-1") end))
    end)

    it("gives base + 100 per type, + 1 per replica; a type run 0 times keeps its 100", function()
      local e = pf.parse_procfile("web: a\nworker: b\nclock: c")
      local procs, unknown = pf.ports(e, 6000, { web = 2, worker = 0, nope = 4 })
      local got = {}
      for i, p in ipairs(procs) do got[i] = { p.name, p.port, p.colour } end
      assert.are.same({ { "web.1", 6000, "36" }, { "web.2", 6001, "33" }, { "clock.1", 6200, "32" } }, got)
      assert.are.same({ "nope" }, unknown)
      assert.are.equal(5000, pf.ports(e)[1].port)
    end)

    it("picks the base port as honcho does: .env, then -p, then the inherited PORT, then 5000", function()
      assert.are.equal(7000, pf.base_port("6000", { PORT = "7000" }, "8000"))
      assert.are.equal(6000, pf.base_port("6000", {}, "8000"))
      assert.are.equal(8000, pf.base_port(nil, {}, " 8000 "))
      assert.are.equal(5000, pf.base_port(nil, nil, false))
      assert.are.equal("invalid value for port: 'http'", raised(function() pf.base_port("http") end))
    end)
  end)

  describe("the combined view", function()
    it("formats honcho's prefix, padded to the longest name (at least 'system')", function()
      assert.are.equal(6, pf.width { "web.1" })
      assert.are.equal(19, pf.width { "web.1", "long_name_process.1" })
      assert.are.equal("12:34:56 web.1  | ", pf.prefix("web.1", 6, nil, "12:34:56"))
      assert.are.equal("12:34:56 system | ", pf.prefix("system", 6, nil, "12:34:56"))
      assert.are.equal("\27[0m\27[36;1m12:34:56 web.1  | \27[0m", pf.prefix("web.1", 6, "36;1", "12:34:56"))
      assert.matches("^%d%d:%d%d:%d%d web%.1  | $", pf.prefix("web.1", 6))
      assert.are.same({ "t web.1 | a", "t web.1 | ", "t web.1 | b" }, pf.format("web.1", "a\n\nb\n", 5, nil, "t"))
      assert.are.same({ "cyan", "yellow" }, { pf.colour(1) == "36" and "cyan", pf.colour(14) == "33" and "yellow" })
    end)

    it("words the system lines and the exit status as honcho", function()
      local m = pf.messages
      assert.are.equal("web.1 started (pid=42)", m.started("web.1", 42))
      assert.are.equal("web.1 stopped (rc=-15)", m.stopped("web.1", pf.returncode { signal = 15 }))
      assert.are.equal("sending SIGTERM to web.2 (pid 43)", m.sending("SIGTERM", "web.2", 43))
      assert.are.equal("SIGINT received", m.received("SIGINT"))
      assert.are.same({ 3, 241, 130 }, { pf.exit_status(3), pf.exit_status(-15), pf.exit_status(130) })
    end)
  end)

  describe("declarations", function()
    it("gives one service per process: /bin/sh -c, honcho's env, restart never, ready exec", function()
      local e = pf.parse_procfile("web: echo $PORT\nworker: echo w")
      local decls, procs = pf.declarations(e, { env = { A = "1", PORT = "9000" }, concurrency = { web = 2 } })
      assert.are.same({ "/bin/sh", "-c", "echo $PORT", env = { HONCHO_PROCESS_NAME = "web.2", A = "1", PORT = "9001" },
        restart = "never", ready = "exec" }, decls["web.2"])
      assert.are.equal("9100", decls["worker.1"].env.PORT)
      assert.are.same({ "web.1", "web.2", "worker.1" }, { procs[1].name, procs[2].name, procs[3].name })
      local only = select(2, pf.declarations(e, { only = { "worker", "web" }, port = 6000, inherited_port = false }))
      assert.are.same({ "worker.1", 6000, "web.1", 6100 }, { only[1].name, only[1].port, only[2].name, only[2].port })
      assert.are.equal("Process type 'db' does not exist in Procfile",
        raised(function() pf.declarations(e, { only = { "db" } }) end))
      H.error_here(function() pf.declarations(e, { formation = 1 }) end, "bad argument #2 to 'declarations' (unknown option 'formation')")
    end)

    it("runs under baton.supervisor", function()
      local e = pf.parse_procfile("web: echo \"$HONCHO_PROCESS_NAME $PORT $A\" > \"$OUT.$HONCHO_PROCESS_NAME\"")
      local out = os.tmpname()
      local decls = pf.declarations(e, { env = { A = "x y", OUT = out }, concurrency = { web = 2 }, port = 7000,
        inherited_port = false })
      local sv = baton.supervisor(decls)
      sv:start()
      assert.is_true(sv:wait("web.1", "exited"))
      assert.is_true(sv:wait("web.2", "exited"))
      sv:stop()
      for i = 1, 2 do
        local f = assert(io.open(out .. ".web." .. i))
        assert.are.equal(("web.%d %d x y\n"):format(i, 6999 + i), f:read("a"))
        f:close()
        os.remove(out .. ".web." .. i)
      end
      os.remove(out)
    end)
  end)

  -- ---- oracles ---------------------------------------------------------------------

  -- A Procfile of 3 types (web twice) whose processes print their PORT and
  -- .env values; `last` exits (code 7) once the three others have printed,
  -- the others wait to be stopped. `touch` marks "printed".
  -- luacheck: push ignore 631
  local PROCFILE = [[
# printed lines, then a mark; honcho stops the rest when last exits
web: printf 'web %s %s A=[%s] B=[%s] C=[%s]\n' "$PORT" "$HONCHO_PROCESS_NAME" "$A" "$B" "$C"; echo "two $PORT"; touch "mark.$PORT"; exec sleep 60
worker: printf 'worker %s A=[%s] B=[%s] C=[%s]\n' "$PORT" "$A" "$B" "$C"; touch "mark.$PORT"; exec sleep 60
last: echo "last $PORT"; i=0; while [ ! -e mark.6000 ] || [ ! -e mark.6001 ] || [ ! -e mark.6100 ]; do i=$((i+1)); [ $i -gt 3000 ] && exit 99; sleep 0.01; done; exit 7
]]
  -- luacheck: pop
  local DOTENV = [[
# tricky quoting
A='single $HOME \t lit'
B="double \"q\" and  spaces"
C=un quoted # gone
]]

  local function scratch()
    local dir = os.tmpname()
    os.remove(dir)
    assert(baton.ok { "mkdir", dir })
    for name, text in pairs { Procfile = PROCFILE, [".env"] = DOTENV } do
      local f = assert(io.open(dir .. "/" .. name, "w"))
      f:write(text)
      f:close()
    end
    return dir
  end

  -- What baton computes for the same files.
  local function expected()
    local entries = pf.parse_procfile(PROCFILE)
    local env = pf.parse_env(DOTENV)
    local _, procs = pf.declarations(entries, { env = env, port = 6000, concurrency = pf.concurrency("web=2") })
    local by = {}
    for _, p in ipairs(procs) do by[p.name] = p end
    local function text(p)
      if p.type == "web" then
        return ("web %d %s A=[%s] B=[%s] C=[%s]\ntwo %d\n"):format(p.port, p.name, env.A, env.B, env.C, p.port)
      elseif p.type == "worker" then
        return ("worker %d A=[%s] B=[%s] C=[%s]\n"):format(p.port, env.A, env.B, env.C)
      end
      return ("last %d\n"):format(p.port)
    end
    return procs, by, text, env
  end

  local function honcho_path()
    local p = os.getenv("BATON_HONCHO")
    if p and p ~= "" then return p end
    return baton.which("honcho")
  end

  -- honcho's output and exit status for the scratch Procfile, as its own
  -- run gives them, asserted on `r` (honcho's run, or baton procfile's).
  local function like_honcho(r)
    assert.are.equal(7, r.code, "honcho's exit status: the first to stop's rc; output:\n" .. r.stdout .. r.stderr)
    local procs, by, text = expected()
    local width = pf.width(procs)
    -- Lines per process name, timestamps replaced.
    local per = {}
    for line in r.stdout:gmatch("([^\n]*)\n") do
      assert.matches("^%d%d:%d%d:%d%d ", line)
      line = "TT:TT:TT" .. line:sub(9)
      local name = line:match("^TT:TT:TT (%S+) +| ")
      per[name] = per[name] or {}
      table.insert(per[name], line)
    end
    for _, p in ipairs(procs) do
      assert.are.same(pf.format(p.name, text(p), width, nil, "TT:TT:TT"), per[p.name], p.name)
    end
    -- system lines: started, stopped, sending SIGTERM (pids aside)
    local sys = {}
    for _, l in ipairs(per.system) do
      sys[#sys + 1] = l:gsub("(pid[= ])%d+%)$", "%1N)")
    end
    local P = pf.prefix("system", width, nil, "TT:TT:TT")
    local m = pf.messages
    for _, p in ipairs(procs) do
      assert.is_truthy(table.concat(sys, "\n"):find(P .. m.started(p.name, 0):gsub("=0%)$", "=N)"), 1, true), p.name)
    end
    local want_stop = { P .. m.stopped("last.1", 7), P .. m.stopped("web.1", -15), P .. m.stopped("web.2", -15),
      P .. m.stopped("worker.1", -15), P .. m.sending("SIGTERM", "web.1", 0):gsub(" 0%)$", " N)") }
    for _, w in ipairs(want_stop) do
      assert.is_truthy(table.concat(sys, "\n"):find(w, 1, true), w .. " in:\n" .. r.stdout)
    end
    assert.are.equal(by["web.2"].port, 6001)
  end

  it("agrees with the real honcho: ports, env, names, prefix format, system lines, exit status", function()
    local honcho = honcho_path()
    if not honcho then pending("no honcho (not packaged in Debian 12): set BATON_HONCHO to run this oracle") end
    local dir = scratch()
    local r = baton.run { honcho, "start", "-f", "Procfile", "-e", ".env", "-c", "web=2", "-p", "6000",
      cwd = dir, capture = true, check = false, timeout = 60, env = { PORT = false } }
    baton.run { "rm", "-rf", dir }
    like_honcho(r)
  end)

  it("baton procfile runs it as honcho does (the same assertions as honcho's run)", function()
    local dir = scratch()
    local r = baton.run { os.getenv("BATON_EXE") or "./build/baton", "procfile", "-f", "Procfile", "-e", ".env",
      "-c", "web=2", "-p", "6000", cwd = dir, capture = true, check = false, timeout = 60, env = { PORT = false } }
    baton.run { "rm", "-rf", dir }
    like_honcho(r)
    assert.are.equal("", r.stderr)
  end)

  it("baton procfile: a malformed Procfile or .env line is an error naming file and line", function()
    local dir = scratch()
    local f = assert(io.open(dir .. "/Procfile", "a"))
    f:write("  indented: x\n")
    f:close()
    local exe = os.getenv("BATON_EXE") or "./build/baton"
    local r = baton.run { exe, "procfile", cwd = dir, capture = true, check = false }
    assert.are.equal(1, r.code)
    assert.matches("Procfile:%d+: not a process line", r.stderr)
    r = baton.run { exe, "procfile", "-f", "nope", cwd = dir, capture = true, check = false }
    assert.are.equal(1, r.code)
    assert.matches("nope: Procfile does not exist", r.stderr)
    baton.run { "rm", "-rf", dir }
  end)

  it("baton procfile: a Procfile without entries is an error, not a silent success", function()
    local dir = scratch()
    local f = assert(io.open(dir .. "/Procfile", "w"))
    f:write("# nothing here\n\n")
    f:close()
    local r = baton.run { os.getenv("BATON_EXE") or "./build/baton", "procfile", cwd = dir, capture = true,
      check = false }
    baton.run { "rm", "-rf", dir }
    assert.are.equal(1, r.code)
    assert.matches("Procfile: no processes defined in Procfile", r.stderr, 1, true)
  end)

  it("baton procfile: SIGTERM stops every process (one ignores TERM), exits 143, with no error on the way", function()
    local dir = scratch()
    local tag = "7" .. baton.core.getpid() -- (a number: sleep takes nothing else)
    local f = assert(io.open(dir .. "/Procfile", "w"))
    f:write("a: exec sleep 1000." .. tag .. "\n", "b: trap '' TERM; sleep 1000." .. tag .. "; :\n")
    f:close()
    local p <close> = assert(baton.spawn { os.getenv("BATON_EXE") or "./build/baton", "procfile", cwd = dir,
      stdout = "pipe", stderr = "pipe" })
    local started = 0
    while started < 2 do
      local line = assert(p.stdout:read("l"))
      if line:find("started (pid=", 1, true) then started = started + 1 end
    end
    p:signal("TERM")
    local out, err = p.stdout:read("a"), p.stderr:read("a")
    assert.are.equal(143, p:wait().code, out .. err)
    assert.is_nil(err:find("uncaught", 1, true), err) -- (only the interruption's own message)
    baton.run { "rm", "-rf", dir }
  end)

  it("agrees with Debian's foreman on ports, names, values and lines", function()
    local foreman = baton.which("foreman")
    if not foreman then pending("no foreman (Debian's ruby-foreman)") end
    local dir = scratch()
    local r = baton.run { foreman, "start", "-f", "Procfile", "-e", ".env", "-m", "web=2,worker=1,last=1", "-p", "6000",
      cwd = dir, capture = true, check = false, timeout = 60, env = { PORT = false } }
    baton.run { "rm", "-rf", dir }
    assert.are.equal(7, r.code, r.stdout .. r.stderr)
    local procs, _, text = expected()
    local per = {}
    for line in r.stdout:gmatch("([^\n]*)\n") do
      local name, rest = line:match("^%d%d:%d%d:%d%d (%S+) +| (.*)$")
      if name then
        per[name] = per[name] or {}
        table.insert(per[name], rest)
      end
    end
    -- Foreman reads .env its own way (no shlex: it even expands $HOME in
    -- single quotes) and sets no HONCHO_PROCESS_NAME: compared here are the
    -- lines each process printed, by their first two words (tag and PORT).
    for _, p in ipairs(procs) do
      local want, got = {}, {}
      for l in text(p):gmatch("([^\n]*)\n") do want[#want + 1] = l:match("^%S+ %d+") end
      for _, l in ipairs(per[p.name] or {}) do
        if l:match("^%S+ %d+") and not l:match("^started with pid") then got[#got + 1] = l:match("^%S+ %d+") end
      end
      assert.are.same(want, got, p.name .. ":\n" .. r.stdout)
    end
    assert.is_truthy(r.stdout:find("last.1   | exited with code 7", 1, true))
  end)
end)
