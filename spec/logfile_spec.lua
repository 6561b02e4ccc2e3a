-- Log files (baton.logfile): rotation by size and age, keep and max_total, compression, reopen,
-- line marks, binary bytes, and failures (unwritable directory, a full disk) that never raise.
local baton = require "baton"
local lfs = require "lfs"
local H = require "helper"

-- A fresh scratch directory, removed by the test's finally.
local function scratch()
  local dir = os.tmpname()
  os.remove(dir)
  assert(lfs.mkdir(dir))
  finally(function() baton.run { "rm", "-rf", "--", dir } end)
  return dir
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function lines_of(s)
  local out = {}
  for l in s:gmatch("([^\n]*)\n") do out[#out + 1] = l end
  return out
end

-- The lines of a log and its rotated files, oldest first; compressed ones decompressed.
local function all_lines(path, keep)
  local out = {}
  for i = keep, 0, -1 do
    local p = i == 0 and path or path .. "." .. i
    local s = read(p)
    if not s and read(p .. ".gz") then s = baton.run({ "gzip", "-dc", "--", p .. ".gz", capture = true }).stdout end
    if not s and read(p .. ".zst") then s = baton.run({ "zstd", "-qdc", "--", p .. ".zst", capture = true }).stdout end
    if s then
      for _, l in ipairs(lines_of(s)) do out[#out + 1] = l end
    end
  end
  return out
end

local function files(dir)
  local out = {}
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

-- Mount a tmpfs on `dir` with `opts` (root only); false when that cannot be done here.
local function mount_tmpfs(dir, opts)
  if not baton.ok { "mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir, stderr = "null" } then return false end
  finally(function() baton.run { "umount", "-l", dir } end)
  return true
end

describe("log files", function()
  H.guard()

  it("rotates by size: every line once, in order, no file over max_size", function()
    local dir = scratch()
    local path = dir .. "/app.log"
    -- "line NNN\n" is 9 bytes: 4 lines a file
    local log = assert(baton.logfile.open(path, { max_size = 40, keep = 20 }))
    for i = 1, 50 do log:line(("line %03d"):format(i)) end
    log:chunk("line 051\nline 05")
    log:chunk("2\n")
    assert.is_true(log:close())
    local got = all_lines(path, 20)
    assert.are.equal(52, #got)
    for i = 1, 52 do assert.are.equal(("line %03d"):format(i), got[i]) end
    assert.are.equal(12, log.rotations)
    assert.are.equal(52, log.lines)
    assert.are.equal(0, log.errors)
    for i = 1, 12 do assert.are.equal(36, lfs.attributes(path .. "." .. i, "size")) end
    assert.are.equal(36, lfs.attributes(path, "size"))
  end)

  it("rotates by age from a timer, and at write time", function()
    local dir = scratch()
    local path = dir .. "/app.log"
    local log <close> = assert(baton.logfile.open(path, { max_age = 0.05 }))
    log:line("first")
    H.wait_for(function() return log.rotations == 1 end, "the age timer's rotation")
    assert.are.equal("first\n", read(path .. ".1"))
    assert.are.equal("", read(path))
    -- The loop does not run while this spins: only the write can see the age.
    log:line("second")
    local t0 = baton.now()
    while baton.now() - t0 < 0.06 do end -- luacheck: ignore 563
    log:line("third")
    assert.are.equal(2, log.rotations)
    assert.are.equal("second\n", read(path .. ".1"))
    assert.are.equal("first\n", read(path .. ".2"))
    log:close()
    assert.are.equal("third\n", read(path))
  end)

  it("keeps `keep` rotated files, and deletes the oldest beyond max_total", function()
    local dir = scratch()
    local path = dir .. "/app.log"
    local log = assert(baton.logfile.open(path, { keep = 2 }))
    for i = 1, 5 do
      log:line("gen " .. i)
      assert.is_true(log:rotate())
    end
    assert.is_true(log:rotate()) -- an empty file is not rotated
    assert.are.equal(5, log.rotations)
    assert.are.same({ "app.log", "app.log.1", "app.log.2" }, files(dir))
    assert.are.equal("gen 5\n", read(path .. ".1"))
    assert.are.equal("gen 4\n", read(path .. ".2"))
    log:close()

    local capped = dir .. "/capped.log"
    log = assert(baton.logfile.open(capped, { keep = 10, max_total = 25 })) -- 10-byte files: two fit
    for i = 1, 6 do
      log:line(("gen %05d"):format(i))
      log:rotate()
    end
    log:close()
    assert.are.equal("gen 00006\n", read(capped .. ".1"))
    assert.are.equal("gen 00005\n", read(capped .. ".2"))
    assert.is_nil(read(capped .. ".3"))
    assert.are.equal(6, log.rotations)
  end)

  for _, how in ipairs { "gzip", "zstd" } do
    it("compresses rotated files with " .. how .. ", one compressor at a time", function()
      if not baton.which(how) then
        pending(how .. " is not installed")
        return
      end
      local dir = scratch()
      local path = dir .. "/app.log"
      local log = assert(baton.logfile.open(path, { max_size = 1000, keep = 50, compress = how }))
      local n = 0
      for _ = 1, 20 do
        for _ = 1, 60 do
          n = n + 1
          log:line(("line %06d"):format(n)) -- 12 bytes: 83 a file
        end
        assert.is_truthy(log._compressing or #log._queue == 0) -- one at a time
      end
      log:close()
      log:settle()
      assert.are.equal(0, log.errors, log.last_error)
      local ext = how == "gzip" and ".gz" or ".zst"
      for i = 1, log.rotations do
        assert.is_nil(read(path .. "." .. i), "left uncompressed: " .. i)
        assert.is_truthy(read(path .. "." .. i .. ext))
      end
      assert.is_nil(read(path .. ".compressing" .. ext))
      local got = all_lines(path, 50)
      assert.are.equal(n, #got)
      for i = 1, n do assert.are.equal(("line %06d"):format(i), got[i]) end
    end)
  end

  it("counts a compressor that cannot run, and keeps the file", function()
    local dir = scratch()
    local path = dir .. "/app.log"
    assert(lfs.mkdir(path .. ".compressing.gz")) -- its output cannot be opened
    local log = assert(baton.logfile.open(path, { compress = "gzip" }))
    log:line("kept")
    assert.is_true(log:rotate())
    log:settle()
    assert.are.equal(1, log.errors)
    assert.matches("^EISDIR: cannot run \"gzip\"", log.last_error)
    assert.matches("(compressing " .. path .. ".1)", log.last_error, 1, true)
    assert.are.equal("kept\n", read(path .. ".1"))
    log:close()
  end)

  it("reopens its path after an external rename", function()
    local dir = scratch()
    local path = dir .. "/app.log"
    local log <close> = assert(baton.logfile.open(path))
    log:line("a")
    assert(os.rename(path, path .. ".old"))
    log:line("b") -- still the moved file, until told
    assert.is_true(log:reopen())
    log:line("c")
    log:close()
    assert.are.equal("a\nb\n", read(path .. ".old"))
    assert.are.equal("c\n", read(path))
    assert.are.equal(3, log.lines)
  end)

  it("a removed directory: no rotation counted per line, and the log takes its path again once there is one", function()
    local dir = scratch()
    local path = dir .. "/app.log"
    local log <close> = assert(baton.logfile.open(path, { max_size = 100 }))
    for i = 1, 5 do log:line(("first %02d"):format(i)) end
    log:flush()
    baton.run { "rm", "-rf", dir }
    for i = 1, 100 do log:line(("lost %03d"):format(i)) end -- (into the removed file: nowhere to rotate)
    log:flush()
    assert.are.equal(0, log.rotations)
    assert.matches("ENOENT", log.last_error)
    assert(baton.ok { "mkdir", dir })
    log:line("back")
    log:flush()
    assert.are.equal("back\n", read(path))
    log:close()
    baton.run { "rm", "-rf", dir }
  end)

  it("marks partial lines and splits long ones, never dropping a byte", function()
    local dir = scratch()
    local path = dir .. "/app.log"
    local log = assert(baton.logfile.open(path, { max_line = 10 }))
    log:line(("x"):rep(25))
    log:line("dying", "partial")
    log:line("two\nlines")
    log:chunk("abc\nde")
    log:chunk(("y"):rep(12)) -- the tail passes max_line: a piece goes out
    assert.is_true(log:flush_partial())
    assert.is_false(log:flush_partial())
    log:chunk("tail")
    log:close() -- what is left goes out as partial
    assert.are.same({
      "xxxxxxxxxx [split]", "xxxxxxxxxx [split]", "xxxxx",
      "dying [partial]",
      "two", "lines",
      "abc", "deyyyyyyyy [split]", "yyyy [partial]",
      "tail [partial]",
    }, lines_of(read(path)))
  end)

  it("writes every byte value but newline unchanged", function()
    local dir = scratch()
    local path = dir .. "/app.log"
    local bytes = {}
    for b = 0, 255 do
      if b ~= 10 then bytes[#bytes + 1] = string.char(b) end
    end
    local s = table.concat(bytes)
    local log = assert(baton.logfile.open(path))
    log:line(s)
    log:chunk(s .. "\n" .. s)
    log:close()
    assert.are.equal(s .. "\n" .. s .. "\n" .. s .. " [partial]\n", read(path))
  end)

  it("prefixes RFC 3339 UTC timestamps with microseconds", function()
    local dir = scratch()
    local path = dir .. "/app.log"
    local log = assert(baton.logfile.open(path, { timestamps = true }))
    local before = os.time()
    log:line("hello")
    log:close()
    local y, mo, d, h, mi, sec, l = read(path):match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)%.%d%d%d%d%d%dZ (.*)\n$")
    assert.are.equal("hello", l)
    local t = os.time { year = y, month = mo, day = d, hour = h, min = mi, sec = sec, isdst = false }
    local utc_offset = os.time(os.date("!*t", before)) - before
    assert.is_true(math.abs(t - utc_offset - before) <= 1)
  end)

  it("creates the file with the mode asked for", function()
    local dir = scratch()
    local log = assert(baton.logfile.open(dir .. "/a.log", { mode = 384 })) -- 0600
    log:close()
    assert.are.equal("rw-------", lfs.attributes(dir .. "/a.log", "permissions"))
  end)

  it("returns nil, msg, code naming the path when the file cannot be opened", function()
    local dir = scratch()
    local log, msg, code = baton.logfile.open(dir .. "/missing/app.log")
    assert.is_nil(log)
    assert.are.equal("ENOENT", code)
    assert.are.equal("ENOENT: cannot open log file " .. dir .. "/missing/app.log: no such file or directory", msg)
    if not mount_tmpfs(dir, "ro,size=64k") then return end
    log, msg, code = baton.logfile.open(dir .. "/app.log")
    assert.is_nil(log)
    assert.are.equal("EROFS", code)
    assert.matches(dir .. "/app.log", msg, 1, true)
  end)

  it("counts what a full disk drops, raises nothing, and marks the gap once there is room", function()
    local dir = scratch()
    if not mount_tmpfs(dir, "size=64k") then
      pending("cannot mount a tmpfs here")
      return
    end
    local path = dir .. "/app.log"
    local log <close> = assert(baton.logfile.open(path))
    log:line("before")
    assert.is_true(log:flush())
    assert.is_false(baton.ok { "dd", "if=/dev/zero", "of=" .. dir .. "/fill", "bs=4096", stderr = "null" }) -- ENOSPC
    local lost = 0
    for i = 1, 2000 do
      log:line(("lost %04d"):format(i))
      lost = lost + 1
      log:flush() -- a write now, not at the loop's next turn
      if log.dropped > 0 then break end
    end
    assert.is_true(log.dropped > 0)
    assert.is_true(log.errors > 0)
    assert.matches("^ENOSPC: .*writing " .. path, log.last_error)
    assert.are.equal(1 + lost, log.lines + log.dropped)
    local landed = lines_of(read(path))
    assert.are.equal(log.lines, #landed) -- whole lines only: the part of a line is cut
    assert(os.remove(dir .. "/fill"))
    log:line("after")
    assert.is_true(log:flush())
    local all = lines_of(read(path))
    local n, why = all[#all - 1]:match("^%[baton: (%d+) lines? lost: (.*)%]$")
    assert.are.equal(log.dropped, tonumber(n))
    assert.matches("^ENOSPC: ", why)
    assert.are.equal("after", all[#all])
    assert.are.equal(log.lines + 1, #all) -- and the marker
    assert.are.equal("before", all[1])
    for i = 2, #all - 2 do assert.are.equal(("lost %04d"):format(i - 1), all[i]) end -- whole, in order
    log:close()
  end)

  it("raises for misuse, naming the argument", function()
    local dir = scratch()
    local p = dir .. "/a.log"
    local open = baton.logfile.open
    H.error_here(function() open(1) end, "bad argument #1 to 'open' (string expected, got number)")
    H.error_here(function() open(p, 5) end, "bad argument #2 to 'open' (table expected, got number)")
    H.error_here(function() open(p, { size = 1 }) end, "bad argument #2 to 'open' (unknown option 'size')")
    H.error_here(function() open(p, { max_size = "1k" }) end,
      "bad argument #2 to 'open' (option 'max_size' must be a positive integer (bytes), got string)")
    H.error_here(function() open(p, { max_total = 0 }) end,
      "bad argument #2 to 'open' (option 'max_total' must be a positive integer (bytes), got 0)")
    H.error_here(function() open(p, { max_age = -1 }) end,
      "bad argument #2 to 'open' (option 'max_age' must be a number of seconds above 0 and up to 1e9, got -1)")
    H.error_here(function() open(p, { keep = 1.5 }) end,
      "bad argument #2 to 'open' (option 'keep' must be an integer from 0 to 1000, got 1.5)")
    H.error_here(function() open(p, { compress = "bzip2" }) end,
      "bad argument #2 to 'open' (option 'compress' must be \"gzip\" or \"zstd\", got \"bzip2\")")
    H.error_here(function() open(p, { timestamps = 1 }) end,
      "bad argument #2 to 'open' (option 'timestamps' must be a boolean, got 1)")
    H.error_here(function() open(p, { mode = "0644" }) end,
      "bad argument #2 to 'open' (option 'mode' must be an integer from 0 to 0777 (511) or 07777 (4095), got string)")
    local log = assert(open(p))
    H.error_here(function() log:line({}) end, "bad argument #1 to 'line' (string expected, got table)")
    H.error_here(function() log:line("x", 1) end, "bad argument #2 to 'line' (mark must be a string, got number)")
    H.error_here(function() log:line("x", "a]b") end,
      "bad argument #2 to 'line' (mark must be at most 32 bytes without newline or ']')")
    H.error_here(function() log:chunk(nil) end, "bad argument #1 to 'chunk' (string expected, got nil)")
    H.error_here(function() log.line("x") end,
      "bad argument #1 to 'line' (baton.logfile expected, got string (call it as obj:line(…)))")
    assert.is_true(log:close())
    assert.is_true(log:close())
    H.error_here(function() log:line("x") end, "baton: line on a closed log file (" .. p .. ")")
  end)
end)
