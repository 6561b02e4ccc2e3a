-- Pipelines (baton.pipeline): output and statuses against bash, SIGPIPE rules, wiring, tee, Lua stages, failures.
local baton = require "baton"
local H = require "helper"
local BATON = os.getenv("BATON_EXE") or "./build/baton"

local c = baton.cmd

local function slurp(name)
  local f = assert(io.open(name, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Run `script` in bash with pipefail; returns stdout and the PIPESTATUS list.
local function bash(script, input_file)
  local r = baton.run { "bash", "-c", script .. '\necho "PIPESTATUS=${PIPESTATUS[*]}" >&2',
    stdin = input_file and { path = input_file } or "null", capture = true, check = false }
  local statuses = {}
  for n in r.stderr:match("PIPESTATUS=([%d ]*)"):gmatch("%d+") do statuses[#statuses + 1] = tonumber(n) end
  return r.stdout, statuses
end

describe("pipelines against bash", function()
  H.guard()
  local bin

  setup(function()
    bin = os.tmpname()
    baton.run { "head", "-c", "300000", "/dev/urandom", stdout = { path = bin } }
  end)
  teardown(function() os.remove(bin) end)

  -- Each case: the bash text and the same pipeline as baton stages.
  local cases = {
    { "printf 'b\\na\\nb\\nc\\n' | sort | uniq -c | sort -rn | head -2",
      { { "printf", "b\\na\\nb\\nc\\n" }, { "sort" }, { "uniq", "-c" }, { "sort", "-rn" }, { "head", "-2" } } },
    { "seq 1 100000 | grep 7 | wc -l", { { "seq", "1", "100000" }, { "grep", "7" }, { "wc", "-l" } } },
    { "printf '' | wc -c", { { "printf", "" }, { "wc", "-c" } } },
    { "printf 'a\\nb' | tac", { { "printf", "a\\nb" }, { "tac" } } },
    { "yes | head -1", { { "yes" }, { "head", "-1" } } },
    { "head -c 100000000 /dev/zero | cat | cat | cat | md5sum",
      { { "head", "-c", "100000000", "/dev/zero" }, { "cat" }, { "cat" }, { "cat" }, { "md5sum" } } },
    { "seq 10 | awk '{s+=$1} END {print s}'", { { "seq", "10" }, { "awk", "{s+=$1} END {print s}" } } },
    { "echo hello | tr a-z A-Z | sed s/L/l/g", { { "echo", "hello" }, { "tr", "a-z", "A-Z" }, { "sed", "s/L/l/g" } } },
    { "seq 20 | paste -sd, -", { { "seq", "20" }, { "paste", "-sd,", "-" } } },
    { "printf 'x\\ny\\n' | grep -v x", { { "printf", "x\\ny\\n" }, { "grep", "-v", "x" } } },
    { "false | true", { { "false" }, { "true" } } },
    { "true | false", { { "true" }, { "false" } } },
    { "seq 5 | head -2 | tail -1", { { "seq", "5" }, { "head", "-2" }, { "tail", "-1" } } },
    { "cut -d: -f1 /etc/passwd | sort | head -3", { { "cut", "-d:", "-f1", "/etc/passwd" }, { "sort" }, { "head", "-3" } } },
    { "printf 'a b c\\n' | xargs -n1", { { "printf", "a b c\\n" }, { "xargs", "-n1" } } },
    { "seq 1000 | sed -n '500,505p'", { { "seq", "1000" }, { "sed", "-n", "500,505p" } } },
    { "sh -c 'echo out; echo err >&2' 2>&1 | sort", { { "sh", "-c", "echo out; echo err >&2", stderr = "stdout" }, { "sort" } } },
    { "od -An -tx1 | head -5", { { "od", "-An", "-tx1" }, { "head", "-5" } }, true },
    { "gzip -c | gunzip -c | md5sum", { { "gzip", "-c" }, { "gunzip", "-c" }, { "md5sum" } }, true },
    { "seq 3 | sh -c 'while read x; do echo \"n$x\"; done'", { { "seq", "3" }, { "sh", "-c", 'while read x; do echo "n$x"; done' } } },
    { "seq 100000 | head -1 | cat", { { "seq", "100000" }, { "head", "-1" }, { "cat" } } },
    { "sh -c 'exit 3' | cat", { { "sh", "-c", "exit 3" }, { "cat" } } },
  }

  for i, case in ipairs(cases) do
    it(("#%d %s"):format(i, case[1]), function()
      local want, want_status = bash(case[1], case[3] and bin)
      local stages = {}
      for j, s in ipairs(case[2]) do stages[j] = c(s) end
      local pl = baton.pipeline(stages):with { capture = true, check = false, stdin = case[3] and { path = bin } or "null" }
      local r = pl:run()
      assert.are.equal(#want, #r.stdout)
      assert.is_true(want == r.stdout, "output differs from bash")
      assert.are.same(want_status, r.statuses)
    end)
  end
end)

describe("pipeline status", function()
  H.guard()

  it("forgives SIGPIPE upstream when downstream succeeded, like yes | head", function()
    local r = (c { "yes" } | c { "head", "-1" }):with { capture = true }:run()
    assert.is_true(r.ok)
    assert.are.equal(141, r.statuses[1])
    assert.are.equal("SIGPIPE", r.stages[1].signame)
    -- But a real failure anywhere fails the pipeline, and names the stage.
    local ok, err = pcall(baton.run, (c { "sh", "-c", "echo boom >&2; exit 3" } | c { "cat" } | c { "true" }):with { capture = true })
    assert.is_false(ok)
    assert.matches("failed at stage 1 %(sh %-c 'echo boom >&2; exit 3'%): it exited with code 3", tostring(err))
    assert.are.equal(1, err.result.failed_stage)
    -- The last stage killed by SIGPIPE is a failure: nothing downstream read it.
    local r2 = (c { "sh", "-c", "kill -PIPE $$" } | c { "cat" }):with { check = false }:run()
    assert.is_true(r2.ok) -- upstream SIGPIPE, cat succeeded
    local r3 = (c { "true" } | c { "sh", "-c", "kill -PIPE $$" }):with { check = false }:run()
    assert.is_false(r3.ok)
    assert.are.equal(2, r3.failed_stage)
  end)

  it("a Lua stage writing after the next stage stopped ends like SIGPIPE, forgiven", function()
    local up = function(i, o) for l in i:lines() do o:write(l:upper(), "\n") end end
    assert.are.equal("Y", (c { "yes" } | up | c { "head", "-1" }):output())
    local gen = function(_, o)
      local n = 0
      while true do
        n = n + 1
        o:write(n, "\n")
      end
    end
    local r = (gen | c { "head", "-2" }):run { capture = true }
    assert.are.equal("1\n2\n", r.stdout)
    assert.are.same({ 141, 0 }, r.statuses)
    assert.is_true(r.ok)
  end)

  it("captures the stderr of every stage for the failure message", function()
    local ok, err = pcall(baton.run, baton.pipeline { { "sh", "-c", "echo first-err >&2" },
      { "sh", "-c", "cat; echo second-err >&2; exit 2" }, capture = true })
    assert.is_false(ok)
    assert.matches("first%-err", err.result.stderr)
    assert.matches("second%-err", err.result.stderr)
    assert.matches("second%-err", tostring(err))
  end)

  it("output() reads every stage's stderr: a chatty stage cannot block it", function()
    local out = (c { "sh", "-c", "head -c 1000000 /dev/zero >&2; echo hi" } | c { "cat" }):output()
    assert.are.equal("hi", out)
    local ok, err = pcall(baton.output, c { "sh", "-c", "echo 'disk full' >&2; exit 3" } | c { "cat" })
    assert.is_false(ok)
    assert.matches("disk full", tostring(err))
  end)

  it("a stage whose sink raised is named with the sink's error", function()
    local pl = c { "sh", "-c", "echo err >&2; echo hi", stderr = function(chunk) if chunk then error("boom") end end }
      | c { "cat" }
    local ok, err = pcall(pl.run, pl)
    assert.is_false(ok)
    assert.matches("failed at stage 1 .*its stderr sink raised: .*boom", tostring(err))
  end)
end)

describe("pipeline wiring", function()
  H.guard()

  it("puts every stage in one process group", function()
    local r = (c { "sh", "-c", "ps -o pgid= -p $$" } | c { "sh", "-c", "cat; ps -o pgid= -p $$" }):with { capture = true }:run()
    local a, b = r.stdout:match("(%d+)%s+(%d+)")
    assert.are.equal(a, b)
    assert.are.equal(tostring(r.pid), a)
  end)

  it("sends a timeout or terminate to every stage", function()
    local t0 = baton.now()
    local r = (c { "sleep", "30" } | c { "sleep", "30" } | c { "cat" }):with { timeout = 0.2, check = false }:run()
    assert.is_true(r.timed_out)
    assert.is_true(baton.now() - t0 < 5)
    local pl = (c { "sleep", "30" } | c { "cat" }):spawn()
    local st = pl:terminate(1)
    assert.are.equal("SIGTERM", st.stages[1].signame)
  end)

  it("a stage's own timeout stops that stage only", function()
    -- (The timeout leaves the stage ample time to print.)
    local r = (c { "sh", "-c", "echo x; exec sleep 30", timeout = 1 } | c { "sh", "-c", "cat; echo downstream-finished" })
      :with { capture = true, check = false }:run()
    assert.are.same({ 143, 0 }, r.statuses)
    assert.are.equal("x\ndownstream-finished\n", r.stdout)
    assert.are.equal(1, r.failed_stage)
  end)

  it("a timeout cancels the Lua function stages too", function()
    local r = (c { "echo", "x" } | function() baton.sleep(30) end):run { timeout = 0.3, check = false }
    assert.is_false(r.ok)
    assert.is_true(r.timed_out)
    assert.are.equal(2, r.failed_stage)
  end)

  it("takes a string or a file as the first stdin, and any redirection per stage", function()
    assert.are.equal("3", (c { "cat" } | c { "wc", "-l" }):with { input = "a\nb\nc\n" }:output())
    local name = os.tmpname()
    local f = assert(io.open(name, "w"))
    f:write("from file\n")
    f:close()
    assert.are.equal("FROM FILE", (c { "cat" } | c { "tr", "a-z", "A-Z" }):with { stdin = { path = name } }:output())
    -- stage stderr to null, to a file, merged into the pipe
    local out = (c { "sh", "-c", "echo keep; echo drop >&2", stderr = "null" } | c { "cat" }):output()
    assert.are.equal("keep", out)
    local errfile = os.tmpname()
    baton.run(c { "sh", "-c", "echo to-file >&2", stderr = { path = errfile } } | c { "cat" })
    assert.are.equal("to-file\n", slurp(errfile))
    -- the last stage to a file
    baton.run((c { "echo", "last" } | c { "cat" }):with { stdout = { path = name } })
    assert.are.equal("last\n", slurp(name))
    os.remove(name)
    os.remove(errfile)
  end)

  it("a stage's stdin may be another process's stream", function()
    local src = baton.spawn { "printf", "a\\nb\\n", stdout = "pipe" }
    local r = baton.pipeline { { "cat", stdin = src.stdout }, { "wc", "-l" }, capture = true }:run()
    assert.are.equal("2", (r.stdout:gsub("%s", "")))
    src:wait()
  end)

  it("tees the output to a file while it is read", function()
    local name = os.tmpname()
    local seen = {}
    for l in (c { "seq", "3" } | c { "cat" }):with { tee = name }:lines() do seen[#seen + 1] = l end
    assert.are.same({ "1", "2", "3" }, seen)
    assert.are.equal("1\n2\n3\n", slurp(name))
    local r = (c { "seq", "2" } | c { "cat" }):with { tee = { path = name, append = true }, capture = true }:run()
    assert.are.equal("1\n2\n", r.stdout)
    assert.are.equal("1\n2\n3\n1\n2\n", slurp(name))
    os.remove(name)
  end)

  it("a tee file is complete once the stream reached its end", function()
    local path = os.tmpname()
    local r = baton.pipeline { { "echo", "hello" }, { "cat" }, tee = path, stdout = "pipe" }:spawn()
    assert.are.equal("hello\n", r.stdout:read("a"))
    r:wait()
    assert.are.equal("hello\n", assert(io.open(path)):read("a"))
    os.remove(path)
  end)

  it("tee with stdout inherited copies to baton's stdout too, like | tee", function()
    local path = os.tmpname()
    local r = baton.run { BATON, "-e", ([[
      local c = baton.cmd
      local r = (c{"echo", "hi"} | c{"cat"}):run{tee = %q}
      assert(r.stdout == nil)
      local p = (c{"seq", "100000"} | c{"cat"}):with{tee = %q}:spawn()
      assert(p:wait(20).ok)]]):format(path, path .. ".2"), capture = true, timeout = 30 }
    assert.are.equal("hi\n", r.stdout:sub(1, 3))
    assert.are.equal(#"hi\n" + #baton.output { "seq", "100000" } + 1, #r.stdout)
    assert.are.equal("hi\n", assert(io.open(path)):read("a"))
    assert.are.equal(baton.output { "seq", "100000" } .. "\n", assert(io.open(path .. ".2")):read("a"))
    os.remove(path)
    os.remove(path .. ".2")
  end)

  it("tee copies what a function sink gets, and refuses a stdout it cannot copy", function()
    local path = os.tmpname()
    local got = {}
    (c { "echo", "fn" } | c { "cat" }):run { tee = path, stdout = function(chunk) got[#got + 1] = chunk end }
    assert.are.equal("fn\n", table.concat(got))
    assert.are.equal("fn\n", assert(io.open(path)):read("a"))
    H.error_here(function() (c { "echo", "x" } | c { "cat" }):run { tee = path, stdout = "null" } end,
      "bad argument #1 to 'run' (option 'tee': stdout must be inherited, a pipe or a function to tee it, got \"null\")")
    os.remove(path)
  end)

  it("runs Lua function stages between processes", function()
    local upper = function(input, output)
      for line in input:lines() do output:write(line:upper(), "\n") end
    end
    assert.are.equal("B\nA", (c { "printf", "a\\nb\\n" } | upper | c { "sort", "-r" }):output())
    -- a generator first, a consumer last
    local got = {}
    local gen = function(_, output) for i = 1, 3 do output:write(i, "\n") end end
    local sink = function(input) for l in input:lines() do got[#got + 1] = l end end
    local r = baton.pipeline { gen, { "tac" }, sink }:run()
    assert.is_true(r.ok)
    assert.are.same({ "3", "2", "1" }, got)
    -- an error in a Lua stage fails the pipeline and names it
    local ok, err = pcall(baton.run, c { "seq", "3" } | function() error("lua stage broke") end | c { "cat" })
    assert.is_false(ok)
    assert.matches("failed at stage 2 %(lua function%): it failed: .*lua stage broke", tostring(err))
    H.error_here(function() baton.pipeline { upper, upper } end,
      "bad argument #1 to 'pipeline' (stages 1 and 2 are both functions: join them into one)")
  end)

  it("gives another command's output as a path argument, like <(cmd)", function()
    local r = baton.run { "diff", baton.from { "printf", "a\\nb\\n" }, baton.from(c { "printf", "a\\nc\\n" }), capture = true, check = false }
    assert.are.equal(1, r.code)
    assert.matches("< b\n%-%-%-\n> c", r.stdout)
    assert.are.equal("3\n2\n1", baton.output { "cat", baton.from(c { "seq", "3" } | c { "tac" }) })
  end)

  it("a stage may take another command's output as a path", function()
    local pl = c { "cat", baton.from { "echo", "sub" } } | c { "tr", "a-z", "A-Z" }
    assert.are.equal("SUB", pl:output())
    assert.are.equal("cat <(echo sub) | tr a-z A-Z", tostring(pl))
  end)

  it("moves 100 MB through 5 stages without passing it through baton", function()
    local before = baton.core.maxrss()
    local out = baton.pipeline { { "head", "-c", "100000000", "/dev/zero" }, { "cat" }, { "cat" }, { "cat" }, { "wc", "-c" } }:output()
    assert.are.equal("100000000", out)
    assert.is_true(baton.core.maxrss() - before < 20 * 1024, "baton's memory grew with the data")
  end)
end)

describe("pipelines going wrong", function()
  H.guard()

  it("a missing stage starts nothing and leaks nothing", function()
    local before = H.fds()
    local pl, msg, code = (c { "yes" } | c { "baton-no-such-program" } | c { "cat" }):spawn()
    assert.is_nil(pl)
    assert.are.equal("ENOENT", code)
    assert.matches('cannot run "baton%-no%-such%-program".*%(pipeline stage 2%)', msg)
    assert.are.same({}, H.children())
    assert.are.equal(before, H.fds())
    local ok, err = pcall(baton.run, c { "yes" } | c { "cat", cwd = "/nonexistent" })
    assert.is_false(ok)
    assert.are.equal("spawn", err.kind)
    assert.are.equal("ENOENT", err.code)
    assert.matches('^ENOENT: cannot run "cat": cannot change to cwd "/nonexistent": .*%(pipeline stage 2%)$', tostring(err))
    H.error_here(function() return c { "ls" } | c { "cat", stdin = "null" } | c { "cat" } end,
      "bad argument #1 to 'pipeline' (stage 2: only the first stage may set stdin)")
  end)

  it("a pipeline that fails to start with capture leaks no fd", function()
    local ok, err = pcall(baton.run, (c { "echo", "hi" } | c { "cat", cwd = "/nonexistent" }):with { capture = true })
    assert.is_false(ok)
    assert.are.equal("spawn", err.kind)
    assert.are.equal("ENOENT", err.code)
    -- the guard checks the fds
  end)

  it("a tee file that cannot be opened starts nothing", function()
    local p, msg, code = (c { "echo", "hi" } | c { "cat" }):with { tee = "/nonexistent/dir/tee", stdout = "pipe",
      stderr = "pipe" }:spawn()
    assert.is_nil(p)
    assert.are.equal("ENOENT", code)
    assert.matches("cannot open the tee file: /nonexistent/dir/tee", msg)
    -- the guard checks that no child and no fd is left
  end)

  it("refuses a process group or session of a stage's own", function()
    H.error_here(function() return c { "true", pgroup = true } | c { "cat" } end, "bad argument #1 to 'pipeline' " ..
      "(stage 1: 'pgroup' cannot be set on a stage: the stages share the pipeline's process group)")
    H.error_here(function() baton.pipeline { c { "true" }, c { "cat", setsid = true } } end, "bad argument #1 to 'pipeline' " ..
      "(stage 2: 'setsid' cannot be set on a stage: the stages share the pipeline's process group)")
  end)

  it("a stage killed midway ends the pipeline with its signal named", function()
    local pl = (c { "sh", "-c", "echo start; exec sleep 30" } | c { "cat" }):with { stdout = "pipe" }:spawn()
    assert.are.equal("start", pl.stdout:read("l"))
    assert.is_true(pl.processes[1]:signal("KILL"))
    local st = pl:wait()
    assert.is_false(st.ok)
    assert.are.equal(1, st.failed_stage)
    assert.matches("killed by SIGKILL", st.failure)
    pl:close()
  end)

  it("the reader closing early stops the pipeline", function()
    local pl = (c { "yes" } | c { "cat" }):with { stdout = "pipe" }:spawn()
    assert.are.equal("y", pl.stdout:read("l"))
    pl.stdout:close()
    local st = pl:wait()
    assert.are.equal("SIGPIPE", st.stages[2].signame)
    pl:close()
    local n = 0
    for _ in (c { "yes" } | c { "cat" }):lines() do
      n = n + 1
      if n == 10 then break end
    end
    assert.are.equal(10, n)
  end)

  it("tee to an inherited stdout that goes away ends the pipeline, like | tee | head", function()
    local path = os.tmpname()
    local r = baton.run { "sh", "-c", '"$1" -e "baton.pipeline{{\'yes\'}, tee = \'$2\'}:run{check = false}" | head -1',
      "sh", BATON, path, capture = true, timeout = 20, check = false }
    assert.is_false(r.timed_out)
    assert.are.equal("y\n", r.stdout)
    os.remove(path)
  end)
end)
