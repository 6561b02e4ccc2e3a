-- The conveniences (baton.run): run, output, ok and lines; results, captures, input and check.
local baton = require "baton"
local H = require "helper"

describe("baton.run", function()
  H.guard()

  it("returns the exit code and ok", function()
    local r = baton.run { "true" }
    assert.is_true(r.ok)
    assert.are.equal(0, r.code)
    assert.is_nil(r.signal)
    r = baton.run { "sh", "-c", "exit 7", check = false }
    assert.is_false(r.ok)
    assert.are.equal(7, r.code)
  end)

  it("captures stdout and stderr separately", function()
    local r = baton.run { "sh", "-c", "echo out; echo err >&2; printf tail", capture = true }
    assert.are.equal("out\ntail", r.stdout)
    assert.are.equal("err\n", r.stderr)
    assert.is_true(r.duration >= 0)
    assert.are.equal("number", type(r.pid))
  end)

  it("merges stderr into stdout with stderr = 'stdout'", function()
    local r = baton.run { "sh", "-c", "echo a; echo b >&2; echo c", stdout = "pipe", stderr = "stdout" }
    assert.are.equal("a\nb\nc\n", r.stdout)
    assert.is_nil(r.stderr)
  end)

  it("feeds input to stdin", function()
    local r = baton.run { "tr", "a-z", "A-Z", input = "hello\n", capture = true }
    assert.are.equal("HELLO\n", r.stdout)
  end)

  it("moves a megabyte each way at once without deadlock", function()
    local big = string.rep("0123456789abcdef", 65536) -- 1 MiB, far above a pipe buffer
    local r = baton.run { "sh", "-c", "tee /dev/stderr", input = big, capture = true }
    assert.are.equal(#big, #r.stdout)
    assert.are.equal(big, r.stdout)
    assert.are.equal(big, r.stderr)
  end)

  it("raises a baton.Error on failure by default, with the stderr tail", function()
    local ok, err = pcall(baton.run, { "sh", "-c", "echo 'disk on fire' >&2; exit 3", capture = true })
    assert.is_false(ok)
    assert.are.equal(baton.Error, getmetatable(err))
    assert.are.equal("exit", err.kind)
    assert.are.equal(3, err.result.code)
    assert.matches("exited with code 3", tostring(err))
    assert.matches("disk on fire", tostring(err))
  end)

  it("reports a signal death", function()
    local r = baton.run { "sh", "-c", "kill -TERM $$", check = false }
    assert.is_false(r.ok)
    assert.is_nil(r.code)
    assert.are.equal(15, r.signal)
    assert.are.equal("SIGTERM", r.signame)
    local ok, err = pcall(baton.run, { "sh", "-c", "kill -KILL $$" })
    assert.is_false(ok)
    assert.matches("killed by SIGKILL", tostring(err))
  end)

  it("raises a spawn error naming program, PATH and cwd", function()
    local ok, err = pcall(baton.run, { "baton-no-such-program", "x" })
    assert.is_false(ok)
    assert.are.equal("spawn", err.kind)
    assert.are.equal("ENOENT", err.code)
    assert.matches('cannot run "baton%-no%-such%-program": not found in PATH', err.msg)
    assert.matches("cwd: /", err.msg)
  end)
end)

describe("output, ok and lines", function()
  H.guard()

  it("output trims trailing newlines, ok answers, lines iterate", function()
    assert.are.equal("a\nb", baton.output { "printf", "a\\nb\\n\\n" })
    assert.is_true(baton.ok { "true" })
    assert.is_false(baton.ok { "false" })
    local lines = {}
    for l in baton.lines { "printf", "x\\ny\\nz" } do lines[#lines + 1] = l end
    assert.are.same({ "x", "y", "z" }, lines)
    local ok, err = pcall(function() for _ in baton.lines { "sh", "-c", "echo a; exit 3" } do end end)
    assert.is_false(ok)
    assert.are.equal(baton.Error, getmetatable(err))
    assert.are.equal("exit", err.kind)
    assert.are.equal("command sh -c 'echo a; exit 3' exited with code 3", tostring(err))
    lines = {}
    for l in baton.lines { "sh", "-c", "echo a; exit 3", check = false } do lines[#lines + 1] = l end
    assert.are.same({ "a" }, lines)
  end)

  it("lines: breaking out early kills and reaps the producer", function()
    local seen = 0
    for _ in baton.lines { "yes" } do
      seen = seen + 1
      if seen == 1000 then break end
    end
    assert.are.equal(1000, seen)
    -- the guard checks that `yes` is gone and reaped
  end)

  it("output() refuses a stdout that goes elsewhere, before running", function()
    local path = os.tmpname()
    os.remove(path)
    H.error_here(function() baton.output { "sh", "-c", "echo x > " .. path, stdout = "null" } end,
      "bad argument #1 to 'output' (option 'stdout': output() returns stdout, so it cannot go elsewhere)")
    assert.is_nil(io.open(path))
  end)
end)
