-- The REPL in a real pseudo-terminal (tmux): typing, multi-line entries, errors, Ctrl-C, Ctrl-D, output while editing.
local baton = require "baton"
local H = require "helper"

local BATON = os.getenv("BATON_EXE") or "./build/baton"
-- One tmux server per session: a new server on a name whose old server is
-- still shutting down fails with "server exited unexpectedly".
local SOCKET_BASE = "baton-spec-" .. baton.core.getpid()
local sessions = 0
local SOCKET = SOCKET_BASE

local function tmux(...)
  local cmd = { "tmux", "-L", SOCKET, capture = true, check = false, stdin = "null" }
  for i = 1, select("#", ...) do cmd[3 + i] = select(i, ...) end
  return baton.run(cmd)
end

-- The screen text; tmux renders tabs as spaces, so runs of spaces become one.
local function screen()
  return (tmux("capture-pane", "-p", "-t", "repl").stdout:gsub(" +", " "))
end

-- Poll the screen until `done(screen)` is true, and return the screen;
-- fail with `what` and the screen after H.PATIENCE seconds. This is a wait
-- for an event, not a timing claim.
local function wait_screen(done, what, level)
  local deadline = baton.now() + H.PATIENCE
  while true do
    local s = screen()
    if done(s) then return s end
    if baton.now() > deadline then error(("screen never showed %s:\n%s"):format(what, s), level + 1) end
    baton.sleep(0.025)
  end
end

-- Wait until the screen shows `text` (plain text) `count` times (default 1).
local function expect(text, count)
  count = count or 1
  local pattern = text:gsub("%p", "%%%0")
  return wait_screen(function(s) return select(2, s:gsub(pattern, "")) >= count end,
    ("%q (x%d)"):format(text, count), 2)
end

local function last_line(s)
  return s:gsub("%s+$", ""):match("([^\n]*)$")
end

-- Wait until the REPL shows an empty prompt (">" or ">>") on its last line.
local function expect_prompt()
  return wait_screen(function(s) return last_line(s) == ">" or last_line(s) == ">>" end, "an empty prompt", 2)
end

-- Wait until the last line ends with `text`: what was typed is echoed, so the
-- REPL (or the terminal, without libedit) has it. Until then the screen may
-- still show the previous empty prompt.
local function expect_typed(text)
  local tail = text:gsub(" +", " ")
  return wait_screen(function(s) return last_line(s):sub(-#tail) == tail end, ("%q typed"):format(text), 2)
end

-- Type a line and press Enter; unless `busy`, wait for the next prompt, as
-- a person does (type-ahead in cooked mode is echoed out of order, which
-- makes screens unreadable, not the REPL wrong).
local function type_line(text, busy)
  tmux("send-keys", "-t", "repl", "-l", text)
  expect_typed(text)
  tmux("send-keys", "-t", "repl", "Enter")
  if not busy then expect_prompt() end
end

-- Did the REPL's session end (the REPL exited)? Waits for it, boundedly.
local function session_gone()
  local deadline = baton.now() + H.PATIENCE
  while tmux("has-session", "-t", "repl").code == 0 do
    if baton.now() > deadline then return false end
    baton.sleep(0.025)
  end
  return true
end

-- The REPL's pid (env execs it: the pane's own process).
local function repl_pid()
  return tonumber(tmux("display-message", "-p", "-t", "repl", "#{pane_pid}").stdout)
end

-- Whether process `pid` has a SIGINT sent to it but not yet delivered.
local function sigint_pending(pid)
  local f = assert(io.open("/proc/" .. pid .. "/status"))
  local status = f:read("a")
  f:close()
  local pending = tonumber(status:match("\nShdPnd:%s*(%x+)"), 16) | tonumber(status:match("\nSigPnd:%s*(%x+)"), 16)
  return pending & (1 << (baton.signals.INT - 1)) ~= 0
end

local homes = {}

local function start(cmd)
  sessions = sessions + 1
  SOCKET = SOCKET_BASE .. "-" .. sessions
  local home = os.tmpname()
  os.remove(home)
  os.execute("mkdir " .. home)
  homes[#homes + 1] = home
  local r = tmux("new-session", "-d", "-s", "repl", "-x", "120", "-y", "50",
    "env HOME=" .. home .. " TERM=xterm " .. cmd)
  assert.are.equal(0, r.code, r.stderr)
  return home
end

local function stop()
  tmux("kill-server")
end

-- lua5.4's own REPL is the oracle for plain Lua entries.
describe("the REPL", function()
  H.guard()
  after_each(function()
    stop()
    for _, home in ipairs(homes) do os.execute("rm -rf " .. home) end
    homes = {}
  end)
  assert(baton.which("tmux"), "tmux is needed for the REPL specs (apt-get install tmux)")

  it("evaluates expressions, multi-line chunks and errors like lua5.4 does", function()
    local entries = { "1 + 1", "function f(x)", "return x * 2", "end", "f(21)", "error('oops')", "x = {1, 2, 3}", "#x",
      "'a', nil, 3" }
    local function session(cmd)
      start(cmd)
      expect("\n>")
      for _, e in ipairs(entries) do type_line(e) end
      expect("a nil 3")
      local s = screen()
      stop()
      return s
    end
    local ours = session(BATON)
    local oracle = session("lua5.4 -i")
    -- The lines that are not prompts or banners: results and error messages.
    local function results(s)
      local out = {}
      for line in s:gmatch("[^\n]+") do
        if not line:match("^>") and not line:match("^Lua 5") and not line:match("^baton %d")
          and not line:match("^%s") and line ~= "stack traceback:" and line ~= "" then
          out[#out + 1] = line
        end
      end
      return out
    end
    assert.are.same(results(oracle), results(ours))
    assert.are.same({ "2", "42", "stdin:1: oops", "3", "a nil 3" }, results(ours))
    assert.matches(">> return x %* 2", ours) -- the continuation prompt
  end)

  it("completes globals, fields (loaded or not yet) and methods with Tab", function()
    local complete = require("baton.repl").complete
    rawset(_G, "probe_t", setmetatable({ alpha = 1, amber = {} }, { __index = { apply = function() end } }))
    assert.are.same({ "probe_t.alpha", "probe_t.amber", "probe_t.apply" }, complete("probe_t.a"))
    assert.are.same({ "probe_t:apply" }, complete("probe_t:a")) -- methods: functions only
    assert.are.same({ "probe_t" }, complete("probe_"))
    rawset(_G, "probe_t", nil)
    assert.are.same({}, complete("no_such_global.x"))
    -- A literal's: a string's methods (the word is `:up`, the line before it says of what).
    assert.are.same({ ":upper" }, complete(":up", '=("x")'))
    assert.are.same({ ":rep", ":reverse" }, complete(":re", "print('x'"))
    assert.are.same({}, complete(":up", "=(x)")) -- (not a literal)
    assert.are.same({}, complete(":up"))
    start(BATON)
    expect("\n>")
    tmux("send-keys", "-t", "repl", "-l", "baton.spa")
    tmux("send-keys", "-t", "repl", "Tab")
    expect_typed("baton.spawn")
    tmux("send-keys", "-t", "repl", "C-u") -- (the line is dropped)
    type_line("p = baton.spawn{'true'}")
    tmux("send-keys", "-t", "repl", "-l", "p:wa")
    tmux("send-keys", "-t", "repl", "Tab")
    expect_typed("p:wait")
    tmux("send-keys", "-t", "repl", "-l", "()")
    tmux("send-keys", "-t", "repl", "Enter")
    expect("exit 0 {")
    -- A string literal's methods, as the terminal hands the word over.
    tmux("send-keys", "-t", "repl", "-l", "=(\"abc\"):upp")
    tmux("send-keys", "-t", "repl", "Tab")
    expect_typed("=(\"abc\"):upper")
    tmux("send-keys", "-t", "repl", "-l", "()")
    tmux("send-keys", "-t", "repl", "Enter")
    expect("\nABC\n")
    stop()
  end)

  it("completes without running the user's __index or __pairs: Tab never raises nor hangs", function()
    local complete = require("baton.repl").complete
    local function bad() error("no") end
    local function spin() while true do end end
    rawset(_G, "probe_bad", setmetatable({ abc = 1 }, { __index = bad, __pairs = bad }))
    rawset(_G, "probe_spin", setmetatable({ abc = 1 }, { __index = spin, __pairs = spin }))
    -- (the raising cases first: before the fix they fail at once, the spinning ones hang)
    assert.are.same({ "probe_bad.abc" }, complete("probe_bad.a"))
    assert.are.same({}, complete("probe_bad.x.y"))
    assert.are.same({}, complete(".pri")) -- the word does not say of what
    assert.are.same({}, complete(":pri"))
    assert.are.same({ "probe_spin.abc" }, complete("probe_spin.a"))
    assert.are.same({}, complete("probe_spin.x.y"))
    rawset(_G, "probe_spin", nil)
    rawset(_G, "probe_bad", nil)
    rawset(_G, "probe_baton", baton)
    assert.are.same({ "probe_baton.pipeline" }, complete("probe_baton.pipeli")) -- baton's lazy fields still
    rawset(_G, "probe_baton", nil)
  end)

  it("shows tables in color on a terminal, without color when NO_COLOR is set", function()
    local function colored_screen(env)
      start("env " .. env .. " " .. BATON)
      expect("\n>")
      type_line("{7, 'seven', k = true}")
      expect('{7, "seven", k = true}')
      local s = tmux("capture-pane", "-e", "-p", "-t", "repl").stdout
      stop()
      return s
    end
    local s = colored_screen("NO_COLOR=")
    assert.matches("{\27%[33m7\27%[[%d;]*m, \27%[32m\"seven\"\27%[[%d;]*m, k = \27%[33mtrue", s)
    s = colored_screen("NO_COLOR=1")
    assert.matches('\n{7, "seven", k = true}\n', s, 1, true)
    assert.is_nil(s:find("\27[3", 1, true))
  end)

  it("shows a new prompt after a syntax error", function()
    start(BATON)
    expect("\n>")
    type_line("x = = 1")
    local s = expect("stdin:1: unexpected symbol near '='\n>")
    assert.matches("\n> x = = 1\nstdin:1: unexpected symbol near '='\n>%s*$", s)
    stop()
  end)

  it("keeps the loop running while the user types", function()
    local home = start(BATON)
    expect("\n>")
    type_line("t = baton.go(function() for i = 1, 3 do baton.sleep(0.2) print('tick', i) end end)")
    tmux("send-keys", "-t", "repl", "-l", "half = 'typed while")
    -- The ticks appear above; the half-typed line stays intact on the prompt.
    expect("tick 1\ntick 2\ntick 3\n> half = 'typed while")
    tmux("send-keys", "-t", "repl", "-l", " ticking'")
    tmux("send-keys", "-t", "repl", "Enter")
    type_line("half")
    expect("typed while ticking")
    type_line("baton.run{'echo', 'child says hi'}.ok")
    expect("true")
    assert.matches("child says hi\ntrue", screen())
  end)

  it("interrupts a busy entry and a waiting entry with Ctrl-C, drops a line, exits on Ctrl-D", function()
    local home = start(BATON)
    expect("\n>")
    -- Each entry prints a word its echo does not show before it gets busy or
    -- waits: Ctrl-C comes once it runs.
    type_line("print('spin' .. 'ning') while true do end", true)
    expect("\nspinning\n")
    tmux("send-keys", "-t", "repl", "C-c")
    expect("interrupted!")
    -- In its own process group the child does not get the terminal's SIGINT:
    -- Ctrl-C cancels the wait, and the REPL stops what the entry started.
    type_line("p = baton.spawn{'sleep', '30', pgroup = true}; print('wait' .. 'ing'); p:wait()", true)
    expect("\nwaiting\n")
    tmux("send-keys", "-t", "repl", "C-c")
    expect("interrupted!", 2)
    type_line("print(p:wait())")
    expect("killed by SIGTERM")
    tmux("send-keys", "-t", "repl", "-l", "this line is dropped")
    expect_typed("this line is dropped")
    tmux("send-keys", "-t", "repl", "C-c")
    expect("> this line is dropped^C")
    type_line("'still alive'")
    -- The dropped line was neither run nor kept for the next entry.
    assert.matches("\n> this line is dropped^C\n> 'still alive'\nstill alive\n>", screen(), 1, true)
    tmux("send-keys", "-t", "repl", "C-d")
    local gone = session_gone()
    assert.is_true(gone, "the REPL did not exit on Ctrl-D")
    -- History was saved for the next session.
    local f = io.open(home .. "/.baton_history")
    assert.is_not_nil(f)
    assert.matches("still.040alive", f:read("a")) -- libedit's history file escapes spaces
    f:close()
  end)

  it("works without libedit, on the terminal's own line editing", function()
    start("env BATON_REPL_PLAIN=1 " .. BATON)
    expect("\n>")
    -- The terminal echoes what is typed ahead of a prompt: type after each prompt.
    type_line("function g(x)")
    expect(">>")
    type_line("return x + 1 end")
    expect("end\n>")
    type_line("g(41)")
    expect("\n42\n")
    type_line("baton.go(function() baton.sleep(0.1) print('later') end)")
    -- Its output, and the prompt drawn again under it (which wipes from the
    -- screen what was typed on the line: type after it).
    expect("\nlater\n>")
    type_line("'next'")
    expect("\nnext\n")
    tmux("send-keys", "-t", "repl", "C-d")
    local gone = session_gone()
    assert.is_true(gone, "the REPL did not exit on Ctrl-D")
  end)

  it("a second Ctrl-C ends the REPL when busy code in a task cannot be reached", function()
    start(BATON)
    expect("\n>")
    type_line("baton.go(function() print('spin' .. 'ning') while true do end end)", true)
    expect("\nspinning\n")
    tmux("send-keys", "-t", "repl", "C-c")
    -- Two SIGINTs pending at once are one: the second Ctrl-C only once the
    -- first (echoed as ^C when the terminal sent it) reached baton.
    expect("\nspinning\n^C")
    local pid = repl_pid()
    H.wait_for(function() return not sigint_pending(pid) end, "the first SIGINT to reach the REPL")
    tmux("send-keys", "-t", "repl", "C-c")
    local gone = session_gone()
    assert.is_true(gone, "the REPL did not end on a second Ctrl-C")
  end)

  it("SIGHUP (its terminal closed) and SIGTERM end it as Ctrl-D does: what it started stops, exit 128 + n", function()
    local cases = { { "HUP", 129, "baton.sleep(1000)" }, { "TERM", 143, "local x = 0 while true do x = x + 1 end" } }
    for i, case in ipairs(cases) do
      local tag = ("%d%d"):format(baton.core.getpid(), i)
      local rcfile = os.tmpname()
      start(("sh -c '%s; echo $? > %s'"):format(BATON, rcfile))
      expect("\n>")
      type_line(("sv = baton.supervisor{s={'sleep','1000.%s'}}; sv:start()"):format(tag))
      local service = tonumber(baton.output { "pgrep", "-fx", "sleep 1000." .. tag })
      local repl = tonumber(baton.output { "pgrep", "-P", tostring(repl_pid()) }) -- (sh's child)
      type_line(case[3], true)
      baton.core.kill(repl, baton.signals[case[1]])
      local said = H.wait_for(function()
        local f = io.open(rcfile)
        local t = f and f:read("a")
        if f then f:close() end
        return t ~= "" and t
      end, "the REPL to exit")
      os.remove(rcfile)
      assert.are.equal(case[2] .. "\n", said)
      assert.is_true(H.gone_within(service), "the service outlived the REPL")
      stop()
    end
  end)
end)
