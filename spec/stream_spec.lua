-- Streams (baton.stream): reading, writing and closing pipes to children, handing them on, backpressure, polling.
local baton = require "baton"
local H = require "helper"

-- CPU seconds this process has used (user + system), from /proc/self/stat.
local CLK_TCK = tonumber(baton.output { "getconf", "CLK_TCK" })
local function cpu_seconds()
  local f = assert(io.open("/proc/self/stat"))
  local stat = f:read("a")
  f:close()
  local fields = {}
  for w in stat:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = w end
  return (tonumber(fields[12]) + tonumber(fields[13])) / CLK_TCK -- utime, stime
end

describe("streams", function()
  H.guard()

  it("reads lines, including a last line without newline and long lines", function()
    local long = string.rep("x", 100000) -- one argv word may not exceed 128 KiB
    local p = assert(baton.spawn { "sh", "-c", "echo one; echo; printf '%s\\n' \"$1\"; printf last", "sh", long,
      stdout = "pipe" })
    local lines = {}
    for l in p.stdout:lines() do lines[#lines + 1] = l end
    assert.are.equal(4, #lines)
    assert.are.equal("one", lines[1])
    assert.are.equal("", lines[2])
    assert.are.equal(long, lines[3])
    assert.are.equal("last", lines[4])
    assert.is_true(p:wait().ok)
    p.stdout:close()
  end)

  it("reads with io-style formats", function()
    local p = assert(baton.spawn { "printf", "ab\\ncdefgh", stdout = "pipe" })
    assert.are.equal("ab\n", p.stdout:read("L"))
    assert.are.equal("cde", p.stdout:read(3))
    assert.are.equal("fgh", p.stdout:read("a"))
    assert.are.equal("", p.stdout:read("a"))
    assert.is_nil(p.stdout:read("l"))
    assert.is_nil(p.stdout:read(1))
    assert.is_nil(p.stdout:read())
    H.error_here(function() p.stdout:read("x") end, "bad argument #1 to 'read' (invalid format \"x\")")
    p:wait()
    p:close()
  end)

  it("writes to stdin and reads the answer", function()
    local p = assert(baton.spawn { "cat", stdin = "pipe", stdout = "pipe" })
    assert.are.equal(p.stdin, p.stdin:write("hello ", "world", "\n"))
    assert.are.equal("hello world", p.stdout:read("l"))
    p.stdin:close()
    assert.is_nil(p.stdout:read("l"))
    assert.is_true(p:wait().ok)
    p:close()
  end)

  it("shutdown of a child's stdin closes it: the child reads end of input", function()
    local p = assert(baton.spawn { "cat", stdin = "pipe", stdout = "pipe" })
    p.stdin:write("last words")
    assert.are.equal(p.stdin, p.stdin:shutdown())
    assert.is_true(p.stdin.closed)
    assert.are.equal("last words", p.stdout:read("a"))
    assert.is_true(p:wait().ok)
    H.error_here(function() p.stdin:shutdown() end, "baton: shutdown of a closed stream (stdin)")
    p:close()
  end)

  it("returns EPIPE when writing to a child that has gone", function()
    local p = assert(baton.spawn { "true", stdin = "pipe" })
    p:wait()
    local ok, msg, code = p.stdin:write(string.rep("x", 1 << 20))
    assert.is_nil(ok)
    assert.are.equal("EPIPE", code)
    assert.matches("^EPIPE", msg)
    p:close()
  end)

  it("sees EOF when the child is killed mid-read", function()
    local p = assert(baton.spawn { "sh", "-c", "echo start; exec sleep 30", stdout = "pipe" })
    assert.are.equal("start", p.stdout:read("l"))
    p:signal("KILL")
    assert.is_nil(p.stdout:read("l"))
    assert.are.equal(9, p:wait().signal)
    p:close()
  end)

  it("two tasks reading one stream both finish", function()
    local p = baton.spawn { "sh", "-c", "echo one; sleep 0.1; echo two", stdout = "pipe" }
    local got = {}
    local function reader()
      local line = p.stdout:read("l")
      got[#got + 1] = line or "eof"
    end
    local t1, t2 = baton.go(reader), baton.go(reader)
    t1:wait()
    t2:wait()
    table.sort(got)
    assert.are.same({ "one", "two" }, got)
    p:close()
  end)

  it("a closed stream lets go of its reader and data while the child runs", function()
    local p = baton.spawn { "sh", "-c", "echo first; head -c 100000 /dev/zero; exec sleep 30", stdout = "pipe" }
    local weak = setmetatable({}, { __mode = "k" })
    assert.are.equal("first", p.stdout:read("l"))
    -- the rest arrives in the stream's queue
    H.wait_for(function() return p.stdout._n == 100000 end, "100000 bytes in the stream's queue")
    -- A task woken by a read runs inside that read's callback until its next
    -- wait, and the callback's frame holds the stream: wait once.
    baton.sleep(0)
    weak[p.stdout] = true
    p.stdout:close()
    p.stdout, p.fds[1] = nil, nil
    collectgarbage()
    collectgarbage()
    local kept = next(weak)
    p:kill()
    p:wait()
    assert.is_nil(kept)
  end)

  it("a stream read to its end lets go of its fd without close or collection", function()
    collectgarbage("stop")
    local before = H.fds()
    for _ = 1, 40 do
      local p = baton.spawn { "echo", "hi", stdout = "pipe" }
      assert.are.equal("hi\n", p.stdout:read("a"))
      p:wait()
    end
    local after = H.fds()
    collectgarbage("restart")
    collectgarbage()
    assert.is_true(after <= before + 2, ("fds: %d before, %d after"):format(before, after))
  end)
end)

describe("streams handed to children", function()
  H.guard()

  it("a stream handed to another process is its own, blocking, and let go of", function()
    local producer = assert(baton.spawn { "yes", stdout = "pipe" })
    local head = assert(baton.spawn { "head", "-1", stdin = producer.stdout, stdout = "pipe" })
    assert.is_true(producer.stdout.closed) -- baton no longer holds the pipe
    assert.are.equal("y", head.stdout:read("l"))
    assert.is_true(head:wait().ok)
    local st = producer:wait(H.PATIENCE) -- SIGPIPE, as in a shell pipeline
    assert.is_not_nil(st)
    assert.are.equal("SIGPIPE", st.signame)
    head:close()
    producer:close()
    -- a slow producer: the consumer blocks, it does not fail with EAGAIN
    local slow = assert(baton.spawn { "sh", "-c", "sleep 0.2; echo late", stdout = "pipe" })
    assert.are.equal("late\n", baton.run { "cat", stdin = slow.stdout, capture = true }.stdout)
    slow:wait()
  end)

  it("a stream read ahead can still be given to a child: nothing is lost", function()
    local a = baton.spawn { "printf", "header\\nline1\\nline2\\n", stdout = "pipe" }
    assert.are.equal("header", a.stdout:read("l"))
    local r = baton.run { "cat", stdin = a.stdout, capture = true }
    assert.are.equal("line1\nline2\n", r.stdout)
    assert.is_true(a:wait().ok)
  end)

  it("a stream read to its end can still be given to a child, which sees end of file", function()
    local p = baton.spawn { "printf", "a\\n", stdout = "pipe" }
    assert.are.equal("a", p.stdout:read("l"))
    assert.is_nil(p.stdout:read("l"))
    assert.are.equal("", baton.run { "cat", stdin = p.stdout, capture = true }.stdout)
    p:wait()
  end)
end)

describe("stream flow", function()
  H.guard()

  it("a slow reader holds the producer back: memory stays bounded", function()
    local p = assert(baton.spawn { "yes", stdout = "pipe" })
    for _ = 1, 5 do
      assert.are.equal("y", p.stdout:read("l"))
      baton.sleep(0.05)
    end
    -- unread data in baton: at most the high-water mark plus one read
    assert.is_true(p.stdout._n <= 256 * 1024 + 1024 * 1024, "buffered " .. p.stdout._n)
    p:close()
  end)

  it("reads a fast stream whole, then stops polling once it goes quiet", function()
    -- Reads in quick succession make the loop poll instead of sleeping; that
    -- must end with the burst, or the quiet second below would burn a CPU.
    local size, n, at_end = 50 * 1000 * 1000, 0, nil
    baton.run { "sh", "-c", ("head -c %d /dev/zero; sleep 1"):format(size), stdout = function(c)
      if c then
        n = n + #c
        if n == size then at_end = cpu_seconds() end
      end
    end }
    assert.are.equal(size, n)
    local quiet = cpu_seconds() - at_end
    assert.is_true(quiet < 0.3, ("%.2f s of CPU while the child slept"):format(quiet))
  end)
end)
