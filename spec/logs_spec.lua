-- baton.logs: output held across processes, split into lines once, routed.
local baton = require "baton"
local H = require "helper"
local logs = require "baton.logs"

describe("baton.logs", function()
  H.guard()

  it("holds a pipe across processes: lines of one after another, a partial last line marked", function()
    local got = {}
    local log = assert(logs.open("svc.1", { stdout = { function(line, stream, _, mark)
      got[#got + 1] = stream .. ":" .. line .. (mark and ("[" .. mark .. "]") or "")
    end } }))
    local fd = log:fd("stdout")
    assert.is_true(baton.run { "sh", "-c", "echo one; printf 'two\\nhalf'", stdout = fd }.ok)
    H.wait_for(function() return #got == 2 end, "two lines")
    log:flush_partial()
    assert.is_true(baton.run { "sh", "-c", "echo three", stdout = fd }.ok)
    H.wait_for(function() return #got == 4 end, "the partial line and the third")
    assert.are.same({ "stdout:one", "stdout:two", "stdout:half[partial]", "stdout:three" }, got)
    assert.are.same({ "two", "half", "three" }, log:tail(3))
    log:close()
  end)

  it("splits an over-long line into marked pieces and passes binary bytes unharmed", function()
    local got = {}
    local log = assert(logs.open("b.1", { stdout = { function(line, _, _, mark) got[#got + 1] = { line, mark } end } }))
    local old = logs.MAX_LINE
    logs.MAX_LINE = 10
    local bytes = {}
    for b = 0, 255 do if b ~= 10 then bytes[#bytes + 1] = string.char(b) end end
    local bin = table.concat(bytes)
    local p = baton.spawn { "cat", stdin = "pipe", stdout = log:fd("stdout") }
    p.stdin:write(("x"):rep(25), "\n", bin, "\n")
    p.stdin:close()
    p:wait()
    log:close() -- reads to the end first
    logs.MAX_LINE = old
    assert.are.same({ ("x"):rep(10), "split" }, got[1])
    assert.are.same({ ("x"):rep(10), "split" }, got[2])
    assert.are.same({ ("x"):rep(5) }, got[3])
    local back = {}
    for i = 4, #got do back[#back + 1] = got[i][1] end
    assert.are.equal(bin, table.concat(back))
  end)

  it("writes whole chunks to files as the line-by-line way would: rotations, splits, counts, the ring", function()
    -- The same bytes, in odd pieces, to a file alone (the shorter way) and to
    -- a file beside a null route (line by line): the same files, counts, tail.
    local old_line, old_ring = logs.MAX_LINE, logs.RING
    logs.MAX_LINE, logs.RING = 40, 7
    local parts = {}
    for i = 1, 120 do -- some too long (split), some just short enough
      local line = ("line %04d"):format(i)
      if i % 37 == 0 then line = ("y"):rep(95) elseif i % 29 == 0 then line = ("z"):rep(41) end
      if i % 31 == 0 then line = ("x"):rep(40) end
      parts[#parts + 1] = line
      parts[#parts + 1] = "\n"
    end
    parts[#parts + 1] = "no newline at the end"
    local text = table.concat(parts)
    local function through(routes_of)
      local dir = os.tmpname()
      os.remove(dir)
      assert(baton.ok { "mkdir", dir })
      local log = assert(logs.open("w.1", { stdout = routes_of(dir .. "/w.log") }))
      local f, blocks = log.files[1], 0
      f._lines = function(...) -- (counts the blocks the shorter way hands over)
        blocks = blocks + 1
        return baton.logfile.Log._lines(...)
      end
      local reads = 0 -- (a flush of its own, called after each read)
      table.insert(log.streams.stdout.flushes, function() reads = reads + 1 end)
      local p = baton.spawn { "cat", stdin = "pipe", stdout = log:fd("stdout") }
      local i, step, tails = 1, 1, {}
      while i <= #text do -- pieces of 1 to 148 bytes, each read before the next
        local before = reads
        p.stdin:write(text:sub(i, i + step - 1))
        H.wait_for(function() return reads > before end, "the piece read")
        i, step = i + step, step % 120 + 29
        if reads % 3 == 0 then tails[#tails + 1] = table.concat(log:tail(), "|") end
      end
      p.stdin:close()
      p:wait()
      log:close()
      local files = {}
      for g = 150, 0, -1 do -- oldest first
        local h = io.open(dir .. "/w.log" .. (g == 0 and "" or "." .. g), "rb")
        if h then
          files[#files + 1] = h:read("a")
          h:close()
        end
      end
      baton.run { "rm", "-rf", dir }
      return { files = files, lines = log.lines, file_lines = f.lines, rotations = f.rotations, tail = log:tail(),
        tails = tails },
        blocks
    end
    local fast, slow, blocks
    -- (8: no line fits, a file each; 37: a split piece, 49 bytes, does not
    -- fit; 209 and 210: 10-byte lines fill 210 bytes exactly)
    for _, size in ipairs { 8, 37, 209, 210 } do
      fast, blocks = through(function(path) return { { file = path, max_size = size, keep = 150 } } end)
      assert.is_true(blocks > 5)
      slow, blocks = through(function(path) return { { file = path, max_size = size, keep = 150 }, "null" } end)
      assert.are.equal(0, blocks)
      assert.are.same(slow, fast)
    end
    logs.MAX_LINE, logs.RING = old_line, old_ring
    assert.is_true(fast.rotations > 3)
    assert.are.equal(7, #fast.tail)
    assert.are.equal("no newline at the end [partial]", fast.files[#fast.files]:match("[^\n]*\n$"):sub(1, -2))
    assert.are.equal(text, (table.concat(fast.files):gsub(" %[split%]\n", ""):gsub(" %[partial%]\n$", "")))
  end)

  it("formats the terminal view as foreman and honcho do", function()
    logs.widen("worker.1")
    assert.are.equal("12:00:00 web.1    | ", logs.prefix("web.1", "stdout", "12:00:00"))
    assert.are.equal("12:00:00 web.1    | (stderr) ", logs.prefix("web.1", "stderr", "12:00:00"))
  end)

  it("rejects bad routes naming them", function()
    H.error_here(function() logs.check({ 42 }, "log.stdout") end,
      "bad argument #1 to 'service' (log.stdout[1]: \"terminal\", \"null\", a file path, {file = …} or a function expected, got number)")
  end)
end)
