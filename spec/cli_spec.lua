-- The baton executable: scripts, -e, -, options, exit statuses.
local baton = require "baton"
local H = require "helper"

local BATON = os.getenv("BATON_EXE") or "./build/baton"

local function sh(script, opts)
  opts = opts or {}
  local spec = { "sh", "-c", script, "sh", BATON, capture = true, check = false, input = opts.input }
  return baton.run(spec)
end

local function exe(args, opts)
  local spec = { BATON, capture = true, check = false, input = opts and opts.input, timeout = opts and opts.timeout }
  for i = 1, #args do spec[i + 1] = args[i] end
  return baton.run(spec)
end

describe("the baton executable", function()
  H.guard()
  local dir

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
  end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  local function write(name, text)
    local f = assert(io.open(dir .. "/" .. name, "w"))
    f:write(text)
    f:close()
    return dir .. "/" .. name
  end

  it("runs a script with its arguments in arg and ...", function()
    local s = write("args.lua", [[
      local a, b = ...
      print(arg[0], arg[1], arg[2], #arg, a, b)
      print(arg[-1] ~= nil)
    ]])
    local r = exe { s, "one", "two" }
    assert.are.equal(0, r.code)
    assert.are.equal(s .. "\tone\ttwo\t2\tone\ttwo\ntrue\n", r.stdout)
  end)

  it("runs the script as the main task, and waits for other tasks to finish", function()
    -- The background task waits for `gate`, which ends only when the main
    -- chunk's last line closes its stdin: it finishes after the main task
    -- whatever the scheduling.
    local s = write("tasks.lua", [[
      local gate = baton.spawn{"cat", stdin = "pipe"}
      baton.go(function() gate:wait(); print("background done") end)
      local r = baton.run{"echo", "child output", capture = true}
      io.write(r.stdout)
      print("main done")
      gate.stdin:close()
    ]])
    local r = exe { s }
    assert.are.equal("child output\nmain done\nbackground done\n", r.stdout)
  end)

  it("exits 1 with a traceback when the script fails", function()
    local s = write("fail.lua", "local function f() error('kaboom') end\nf()\n")
    local r = exe { s }
    assert.are.equal(1, r.code)
    assert.matches("fail.lua:1: kaboom", r.stderr)
    assert.matches("stack traceback:", r.stderr)
    assert.matches("fail.lua:2: in main chunk", r.stderr)
  end)

  it("exits 1 when a background task fails and nobody ever waits for it, without stopping the rest", function()
    local r = exe { "-e", "baton.go(function() baton.sleep(0.01) error('bg failed') end) print('main goes on')" }
    assert.are.equal(1, r.code)
    assert.matches("^baton: uncaught error in task: %(command line%):1: bg failed\nstack traceback:", r.stderr)
    assert.are.equal("main goes on\n", r.stdout)
  end)

  it("points misuse errors at the script's line, not inside baton", function()
    local s = write("misuse.lua", "local function f()\n  baton.output{'ls', colour = true}\nend\nf()\n")
    local r = exe { s }
    assert.are.equal(1, r.code)
    assert.matches("misuse.lua:2: bad argument #1 to 'output' %(unknown option 'colour'%)\n", r.stderr)
    s = write("misuse2.lua", "local c = baton.cmd\nlocal p = c{'ls'} | c{'cat', stdin = 'null'}\n")
    r = exe { s }
    assert.are.equal(1, r.code)
    assert.matches("misuse2.lua:2: bad argument #1 to 'pipeline' %(stage 2: only the first stage may set stdin%)\n", r.stderr)
  end)

  it("reports syntax errors and missing scripts", function()
    local s = write("bad.lua", "local x = = 1\n")
    local r = exe { s }
    assert.are.equal(1, r.code)
    assert.matches("bad.lua:1: unexpected symbol near '='", r.stderr)
    r = exe { dir .. "/missing.lua" }
    assert.are.equal(1, r.code)
    assert.matches("cannot open .*missing.lua", r.stderr)
  end)

  it("runs -e code, several times, before the script", function()
    local s = write("x.lua", "print('script', X)")
    local r = exe { "-e", "X = 1", "-e", "X = X + 1", s }
    assert.are.equal("script\t2\n", r.stdout)
    r = exe { "-e", "print(baton.run{'sh','-c','exit 4', check=false}.code)" }
    assert.are.equal("4\n", r.stdout)
  end)

  it("reads the script from stdin with - or without a terminal", function()
    local r = exe({ "-", "a1" }, { input = "print('from stdin', ...)" })
    assert.are.equal("from stdin\ta1\n", r.stdout)
    r = exe({}, { input = "print(baton.run{'echo','piped',capture=true}.stdout)" })
    assert.are.equal("piped\n\n", r.stdout)
  end)

  it("prints version and help, and rejects unknown options with status 100", function()
    local r = exe { "-v" }
    assert.matches("^baton %d+%.%d+%.%d+ %(Lua 5%.4", r.stdout)
    r = exe { "--help" }
    assert.are.equal(0, r.code)
    assert.matches("usage: ", r.stdout)
    r = exe { "--nope" }
    assert.are.equal(100, r.code)
    assert.matches("unrecognized option '%-%-nope'", r.stderr)
    r = exe { "-e" }
    assert.are.equal(100, r.code)
    assert.matches("^[^\n]*: '%-e' needs argument\nusage: ", r.stderr) -- lua.c's words
    r = exe { "-l" }
    assert.are.equal(100, r.code)
    assert.matches("^[^\n]*: '%-l' needs argument\nusage: ", r.stderr)
  end)

  it("takes LUA_INIT, -l, -E, -W and builds ... from arg as lua5.4 does", function()
    local init = write("init.lua", "y = 7\n")
    local args = write("args.lua", "print(...)\n")
    local cases = {
      { env = { LUA_INIT = "x = 5" }, "-e", "print(x)" },
      { env = { LUA_INIT = "x = 5", LUA_INIT_5_4 = "x = 6" }, "-e", "print(x)" },
      { env = { LUA_INIT = "@" .. init }, "-e", "print(y)" },
      { env = { LUA_INIT = "x = 5" }, "-E", "-e", "print(x)" },
      { env = { LUA_INIT = "error('boom', 0)" }, "-e", "print(1)" },
      { "-lstring", "-e", "print(string ~= nil)" },
      { "-l", "s=string", "-e", "print(s.rep('a', 2))" },
      { "-lnosuchmod", "-e", "print(1)" },
      { "-W", "-e", "warn('hi')" },
      { "-e", "warn('hi')" },
      { "-e", "arg[1] = 100", args, "a", "b" },
      { "-e", "arg = 1", args },
      { "-e", "local x <close> = setmetatable({}, { __close = function() print('closed') end }); os.exit(3, true)" },
      { "-e", "os.exit(3.5)" },
      { "-e", "os.exit('x')" },
      { "-e", "os.exit('3')" },
      { "-e", "os.exit(false)" },
    }
    local function first(s) return (s:gsub("^[^:]*: ", "", 1):match("^[^\n]*")) end
    for i, c in ipairs(cases) do
      local function run(prog)
        local cmd = { prog, table.unpack(c) }
        cmd.env = c.env or {}
        cmd.env.LUA_INIT = cmd.env.LUA_INIT or false
        cmd.env.LUA_INIT_5_4 = cmd.env.LUA_INIT_5_4 or false
        cmd.capture, cmd.check = true, false
        return baton.run(cmd)
      end
      local ours, lua = run(BATON), run("lua5.4")
      assert.are.same({ lua.code, lua.stdout, first(lua.stderr) }, { ours.code, ours.stdout, first(ours.stderr) },
        "case " .. i)
    end
    -- An error object with __tostring: its words alone, no traceback.
    local code = "error(setmetatable({}, { __tostring = function() return 'custom' end }))"
    local ours = exe { "-e", code }
    local lua = baton.run { "lua5.4", "-e", code, capture = true, check = false }
    assert.are.same({ 1, "lua5.4: custom\n" }, { lua.code, lua.stderr })
    assert.are.same({ 1, "custom\n" }, { ours.code, (ours.stderr:gsub("^[^:]*: ", "", 1)) })
  end)

  it("REPL from a pipe: _PROMPT and _PROMPT2 (through __tostring) as lua5.4 shows them", function()
    local input = "_PROMPT = 'baton> '\n_PROMPT2 = setmetatable({}, { __tostring = function() return '... ' end })\n"
      .. "for i = 1, 2 do\nend\n"
    local r = exe({ "-i" }, { input = input, timeout = H.PATIENCE })
    assert.are.equal(0, r.code)
    assert.matches("\n> baton> baton> %.%.%. baton> \n$", r.stdout)
  end)

  it("REPL from a pipe: a _PROMPT that cannot be made a string gives the default prompt (a documented difference)", function()
    local input = "_PROMPT = setmetatable({}, { __tostring = function() error('no') end })\n1\n"
    local r = exe({ "-i" }, { input = input, timeout = H.PATIENCE })
    assert.are.same({ 0, "" }, { r.code, r.stderr })
    assert.matches("\n> > 1\n> \n$", r.stdout)
    local man = assert(io.open("docs/baton.1")):read("a")
    assert.matches("gives the default prompt instead of ending baton", man, 1, true)
  end)

  it("REPL from a pipe: tables laid out, `_` the last value shown", function()
    local r = exe({ "-i" }, { input = "{1, 2, x = 3}\n_.x\n'a', nil, 3\n", timeout = H.PATIENCE })
    assert.are.equal(0, r.code)
    assert.matches("\n> {1, 2, x = 3}\n> 3\n> a\tnil\t3\n", r.stdout)
  end)

  it("REPL from a pipe: =expr, and a result print cannot show is an error, not a hang", function()
    local r = exe({ "-i" }, { input = "=1+1\nprint = nil\n1+1\nio.stderr:write('still here\\n')\n", timeout = H.PATIENCE })
    assert.are.equal(0, r.code)
    assert.matches("> 2\n", r.stdout)
    assert.are.equal("error calling 'print' (attempt to call a nil value)\nstill here\n"
      .. "error calling 'print' (attempt to call a nil value)\n", r.stderr)
  end)

  it("a bare coroutine.yield() in the main chunk or at the REPL fails as in lua5.4, never a hang", function()
    local code = "coroutine.yield()"
    local ours = exe({ "-e", code })
    local oracle = baton.run { "lua5.4", "-e", code, capture = true, check = false }
    assert.are.equal(oracle.code, ours.code)
    assert.are.equal(oracle.stderr:match("^[^:]*: ([^\n]*)"), ours.stderr:match("^[^:]*: ([^\n]*)"))
    local r = exe({ "-i" }, { input = "coroutine.yield()\nprint('after')\n", timeout = H.PATIENCE })
    assert.are.equal(0, r.code)
    assert.matches("^attempt to yield from outside a coroutine\n", r.stderr)
    assert.matches("> after\n", r.stdout, 1, true)
    -- A coroutine of the script's own still yields.
    assert.are.equal("1\t2\n", exe({ "-e", "local c = coroutine.wrap(function() coroutine.yield(1) return 2 end) print(c(), c())" }).stdout)
  end)

  it("REPL from a pipe: a value that cannot be shown, an error object, io.stderr gone: never a hang", function()
    local input = "setmetatable({1}, {__len = function() error('len') end, __index = error})\n"
      .. "error(setmetatable({}, {__tostring = function() return 'custom' end}))\n"
      .. "io.stderr = nil\nerror('plain', 0)\n'still here'\n"
    local r = exe({ "-i" }, { input = input, timeout = H.PATIENCE })
    assert.is_false(r.timed_out, "the REPL hung")
    assert.are.equal(0, r.code)
    assert.matches("\n> {1}\n> > > > still here\n> \n$", r.stdout)
    assert.are.equal("custom\nplain\nstack traceback:\n\t[C]: in function 'error'\n\tstdin:1: in main chunk\n", r.stderr)
  end)

  it("handles a shebang line and os.exit codes", function()
    local s = write("exit.lua", "#!/usr/bin/env baton\nos.exit(7)\n")
    local r = exe { s }
    assert.are.equal(7, r.code)
  end)

  it("finishes when its stdout reader goes away early", function()
    local r = sh('"$1" -e "for i = 1, 200000 do print(i) end" | head -1')
    assert.are.equal("1\n", r.stdout)
  end)

  it("stops what it started, pipelines included, on SIGTERM and SIGINT", function()
    for _, case in ipairs { { "TERM", 143 }, { "INT", 130 } } do
      local p = assert(baton.spawn { BATON, "-e", [[
        local c = baton.cmd
        local pl = (c{"sleep", "30"} | c{"cat"}):spawn()
        print(pl.pgid)
        io.stdout:flush()
        pl:wait()
        print("not reached")]], stdout = "pipe", stderr = "pipe" })
      local pgid = tonumber(p.stdout:read("l"))
      assert.is_true(baton.core.killpg(pgid, 0)) -- the pipeline runs
      p:signal(case[1])
      local st = p:wait()
      assert.are.equal(case[2], st.code)
      -- (TERM quietly: how a service manager stops it; INT as lua says it)
      local said = case[1] == "TERM" and "^$" or "interrupted by SIGINT"
      assert.matches(said, p.stderr:read("a"))
      assert.is_nil(p.stdout:read("l"))
      local alive, _, code = baton.core.killpg(pgid, 0)
      assert.is_nil(alive)
      assert.are.equal("ESRCH", code) -- the whole group is gone
      p:close()
    end
  end)

  it("takes -v and -eCODE as lua does", function()
    local s = write("v.lua", "print('ran')\n")
    local r = exe { "-v", s }
    assert.matches("^baton %d+%.%d+%.%d+ .*\nran\n$", r.stdout)
    r = exe { "-eprint(6 * 7)" }
    assert.are.equal("42\n", r.stdout)
    r = exe { "-e", "error({})" }
    assert.matches("%(error object is a table value%)", r.stderr)
  end)

  it("runs REPL entries from a pipe or a file with -i, also after an entry that waits", function()
    local r = exe({ "-i" }, { input = "x = 6\nx * 7\n" })
    assert.are.equal(0, r.code)
    assert.matches("42", r.stdout)
    r = exe({ "-i" }, { input = "baton.sleep(0.05)\nprint('after wait')\nprint('no newline')" })
    assert.matches("after wait\n.*no newline", r.stdout)
    r = exe({ "-i" }, { input = "x = '" .. ("a"):rep(20000) .. "' print(#x)\nfor i = 1, 2 do\n" })
    assert.matches("20000", r.stdout)
    assert.are.equal("stdin:1: 'end' expected near <eof>\n", r.stderr) -- a whole line
    assert.matches(">> \n$", r.stdout)
    local f = write("entries.lua", "baton.sleep(0.05)\nprint('from a file')\n")
    r = baton.run { "sh", "-c", '"$1" -i < "$2"', "sh", BATON, f, capture = true }
    assert.matches("from a file", r.stdout)
  end)

  it("a failed script stops what it started; one read from stdin exits 128+n on a signal", function()
    -- Bounded: a runner that waited for the sleep instead would time out.
    local r = exe({ "-e", "local p = baton.spawn{'sh', '-c', 'echo $$; exec sleep 1000'," ..
      " stdout = 'pipe'}; print(p.stdout:read('l')); io.stdout:flush(); error('boom')" }, { timeout = H.PATIENCE })
    assert.is_false(r.timed_out, "the failed script waited for what it started")
    assert.are.equal(1, r.code)
    assert.is_true(H.gone_within(tonumber(r.stdout:match("^(%d+)\n$"))))
    local p = assert(baton.spawn { BATON, input = "print('up'); io.stdout:flush(); baton.sleep(30)",
      stdout = "pipe", stderr = "pipe" })
    assert.are.equal("up", p.stdout:read("l"))
    p:signal("TERM")
    assert.are.equal(143, p:wait().code)
    p:close()
  end)

  it("an interrupt unwinds scopes and lines loops at once, with the loop running", function()
    -- "ready" comes from inside the lines loop, which then waits for a line
    -- that never comes.
    local p = assert(baton.spawn { BATON, "-e", [[
      baton.scope(function()
        baton.spawn{"sleep", "30"}
        for _ in baton.lines{"sh", "-c", "echo; exec sleep 30"} do
          print("ready")
          io.stdout:flush()
        end
      end)]], stdout = "pipe", stderr = "pipe" })
    assert.are.equal("ready", p.stdout:read("l"))
    p:signal("INT")
    local st = p:wait(1.5) -- not the 2 s TERM-to-KILL fallback of the runner
    assert.are.equal(130, st and st.code)
    local err = p.stderr:read("a")
    assert.matches("interrupted by SIGINT", err)
    assert.is_not_matches("deadlock", err)
    p:close()
  end)

  it("stops busy Lua code on SIGINT and exits 130, closing its loop cleanly", function()
    -- Under the sanitizer build a loop left open is a reported leak: exit 1.
    local p = assert(baton.spawn { BATON, "-e", "print('busy'); io.stdout:flush(); local x = 0 while true do x = x + 1 end",
      stdout = "pipe", stderr = "pipe" })
    assert.are.equal("busy", p.stdout:read("l"))
    p:signal("INT")
    assert.are.equal(130, p:wait().code)
    assert.matches("interrupted by SIGINT", p.stderr:read("a"))
    p:close()
  end)

  it("stops quietly on SIGTERM and SIGHUP (a service manager's stop), but says any other failure", function()
    local function stopped(sig, code)
      local p = assert(baton.spawn { BATON, "-e", code, stdout = "pipe", stderr = "pipe" })
      assert.are.equal("up", p.stdout:read("l"))
      p:signal(sig)
      local st, err = p:wait(), p.stderr:read("a")
      p:close()
      return st.code, err
    end
    local waiting = "local p = baton.spawn{'sleep', '1000.41'}; print('up'); io.stdout:flush(); p:wait()"
    local busy = "print('up'); io.stdout:flush(); local x = 0 while true do x = x + 1 end"
    local code, err = stopped("TERM", waiting)
    assert.are.same({ 143, "" }, { code, err })
    code, err = stopped("HUP", busy)
    assert.are.same({ 129, "" }, { code, err })
    -- A script that catches the interrupt and ends on its own: as quiet.
    code, err = stopped("TERM", "local p = baton.spawn{'sleep', '1000.41'}; print('up'); io.stdout:flush(); "
      .. "assert(not pcall(p.wait, p))")
    assert.are.same({ 143, "" }, { code, err })
    -- Something else that fails on the way out is still said, traceback and all.
    code, err = stopped("TERM", "local c <close> = setmetatable({}, {__close = function() error('cleanup broke') end}); "
      .. waiting)
    assert.are.equal(143, code)
    assert.matches("cleanup broke", err, 1, true)
    assert.matches("stack traceback", err, 1, true)
  end)

  it("says an error a <close> handler raised while unwinding another, but not the same one passed on", function()
    local close_with = "local c <close> = setmetatable({}, {__close = function(_, e) %s end}); error('first')"
    local r = exe { "-e", close_with:format("error('second')") }
    assert.are.equal(1, r.code)
    assert.matches("first\nstack traceback:.*\nthen, while unwinding: %(command line%):1: second\nstack traceback:", r.stderr)
    r = exe { "-e", close_with:format("error(e)") } -- (passed on: once, though error() adds a position)
    assert.matches("first", r.stderr, 1, true)
    assert.is_nil(r.stderr:find("while unwinding", 1, true), r.stderr)
    r = exe { "-e", "local c <close> = setmetatable({}, {__close = function() error({}) end}); error({})" }
    assert.matches("then, while unwinding: %(error object is a table value%)", r.stderr)
  end)

  it("os.exit from a signal watcher's function (or a task it starts) exits at once, KILLing what runs", function()
    for i, call in ipairs { "os.exit(3)", "baton.go(function() os.exit(3) end)" } do
      local r = exe({ "-e", ("baton.on_signal('USR1', function() %s end); local p = baton.spawn{'sleep', '1000.%d%d'}; "
        .. "print(p.pid); io.stdout:flush(); baton.core.kill(baton.core.getpid(), baton.signals.USR1); p:wait()")
        :format(call, baton.core.getpid(), i) }, { timeout = H.PATIENCE })
      assert.is_false(r.timed_out, "os.exit in a callback did not end baton (it spun)")
      assert.are.equal(3, r.code, r.stderr)
      assert.is_true(H.gone_within(tonumber(r.stdout:match("^(%d+)\n"))))
    end
  end)

  it("runs with stdout closed", function()
    local r = sh('"$1" -e "baton.run{\'true\'}; io.stderr:write(\'fine\')" >&-')
    assert.are.equal(0, r.code)
    assert.are.equal("fine", r.stderr)
  end)
end)

