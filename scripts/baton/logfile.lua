--- baton.logfile — log files that never lose a line, rotated by baton itself.
--
-- A log is one file (`path`) baton appends whole lines to, and its rotated
-- predecessors `path.1` (newest) … `path.<keep>` (oldest), optionally
-- compressed (`path.1.gz`, `path.2.zst`). Rotation is rename + reopen,
-- never copy + truncate, so nothing written between the two is lost.
--
-- Lines are gathered in memory and written with one write(2) per batch: at
-- the next turn of the loop, when 64 KiB are waiting, before a rotation, on
-- `flush()` and `close()`. Outside a running loop every line is written at
-- once (nothing would come back to flush it).
--
-- A write that fails (ENOSPC, EIO…) never raises: the file is cut back to
-- its last whole line, the lines that did not make it are counted in
-- `dropped`, and the next write that succeeds starts with a marker line
-- `[baton: N lines lost: <error>]` ("1 line lost"). Compression runs `gzip`/`zstd` as a
-- child, one at a time per log; its failure leaves the file uncompressed
-- and is counted in `errors`.
-- @module baton.logfile
local core = require "baton.core"
local task = require "baton.task"
local errors = require "baton.errors"
errors.own()

local M = {}
local fmt, concat, find, byte, sub = string.format, table.concat, string.find, string.byte, string.sub
local argerror = errors.argerror

local FLUSH_AT = 64 * 1024 -- bytes gathered before a write without waiting for the loop's turn
local MAX_MARK = 32 -- bytes of a line's mark
local SUFFIXES = { "", ".gz", ".zst" } -- of rotated files, compressed or not
local COMPRESSORS = {
  gzip = { argv = { "gzip", "-c" }, ext = ".gz" },
  zstd = { argv = { "zstd", "-q", "-c" }, ext = ".zst" },
}

--- A log file. Fields (read them, do not set them): `path`, `size` (bytes in
-- the current file, written), `lines` (lines written, all files), `rotations`,
-- `errors` (failed writes, rotations, compressions), `last_error` (the last
-- such message, or nil), `dropped` (lines that could not be written),
-- `pending` (bytes gathered, not written yet), `closed`.
-- @type Log
local Log = { __name = "baton.logfile" }
Log.__index = Log

-- ---- options ----------------------------------------------------------------------

local function what(v)
  return type(v) == "number" and tostring(v) or type(v)
end

local function positive_integer(k, v)
  if math.type(v) ~= "integer" or v < 1 then
    argerror("open", 2, fmt("option '%s' must be a positive integer (bytes), got %s", k, what(v)))
  end
end

local CHECK = {
  max_size = positive_integer,
  max_total = positive_integer,
  max_line = positive_integer,
  max_age = function(k, v)
    if type(v) ~= "number" or not (v > 0 and v <= 1e9) then
      argerror("open", 2, fmt("option '%s' must be a number of seconds above 0 and up to 1e9, got %s", k, what(v)))
    end
  end,
  keep = function(k, v)
    if math.type(v) ~= "integer" or v < 0 or v > 1000 then
      argerror("open", 2, fmt("option '%s' must be an integer from 0 to 1000, got %s", k, what(v)))
    end
  end,
  compress = function(k, v)
    if v ~= false and not COMPRESSORS[v] then
      argerror("open", 2, fmt("option '%s' must be \"gzip\" or \"zstd\", got %s", k,
        type(v) == "string" and fmt("%q", v) or what(v)))
    end
  end,
  timestamps = function(k, v)
    if type(v) ~= "boolean" then argerror("open", 2, fmt("option '%s' must be a boolean, got %s", k, what(v))) end
  end,
  mode = function(k, v)
    if math.type(v) ~= "integer" or v < 0 or v > 4095 then
      argerror("open", 2, fmt("option '%s' must be an integer from 0 to 0777 (511) or 07777 (4095), got %s", k,
        what(v)))
    end
  end,
}

-- ---- timestamps ---------------------------------------------------------------------

local ts_sec, ts_head -- the last second formatted, and its "YYYY-MM-DDTHH:MM:SS"

-- "2026-11-30T07:16:00.123456Z ": RFC 3339, UTC, microseconds, and a space.
local function stamp()
  local sec, usec = core.realtime()
  if sec ~= ts_sec then ts_sec, ts_head = sec, os.date("!%Y-%m-%dT%H:%M:%S", sec) end
  return fmt("%s.%06dZ ", ts_head, usec)
end
M._stamp = stamp

-- ---- opening --------------------------------------------------------------------------

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() end
  return f ~= nil
end

local function file_size(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

--- Open (or create) the log file `path` for appending. `opts`: `max_size`
-- (bytes), `max_age` (seconds), `keep` (rotated files kept, default 5),
-- `max_total` (bytes of rotated files), `compress` ("gzip", "zstd"),
-- `timestamps` (boolean), `mode` (default 0644, before the umask), `max_line`
-- (bytes, default 65536). Returns the log, or nil, msg, code (msg names the
-- path).
function M.open(path, opts)
  if type(path) ~= "string" then argerror("open", 1, "string expected, got " .. type(path)) end
  if path == "" or path:find("\0", 1, true) then argerror("open", 1, "a file name without NUL bytes expected") end
  if opts ~= nil and type(opts) ~= "table" then argerror("open", 2, "table expected, got " .. type(opts)) end
  opts = opts or {}
  for k, v in pairs(opts) do
    local check = CHECK[k]
    if not check then
      argerror("open", 2, fmt("unknown option %s", type(k) == "string" and fmt("'%s'", k) or tostring(k)))
    end
    check(k, v)
  end
  local f, _, code = core.append_open(path, opts.mode or 420) -- 0644
  if not f then return nil, fmt("%s: cannot open log file %s: %s", code, path, core.strerror(code)), code end
  local size = f:size() or 0
  local self = setmetatable({
    path = path, size = size, lines = 0, rotations = 0, errors = 0, dropped = 0, pending = 0, closed = false,
    max_size = opts.max_size, max_age = opts.max_age, keep = opts.keep or 5, max_total = opts.max_total,
    compress = opts.compress or nil, timestamps = opts.timestamps or false, mode = opts.mode or 420,
    max_line = opts.max_line or 65536,
    _f = f, _buf = {}, _bn = 0, _blines = 0, _tail = nil, _lost = 0, _queue = {},
  }, Log)
  if size > 0 then self:_born() end
  return self
end

-- ---- writing ----------------------------------------------------------------------------

local function check(self, fname)
  errors.check_self(getmetatable(self) == Log, self, fname, "baton.logfile")
  if self.closed then errors.misuse("%s on a closed log file (%s)", fname, self.path) end
end

-- The current file got its first byte: its age counts from now. A one-shot
-- timer (not keeping the loop alive) rotates it when it is max_age old.
function Log:_born()
  self._since = core.now()
  if not self.max_age then return end
  local t = self._timer or core.timer()
  self._timer = t
  t:ref(false)
  t:start(task.ms(self.max_age), 0, function()
    if self.closed or self.size + self.pending == 0 then return end
    self:_rotate()
  end)
end

-- A failure that is counted, not raised.
function Log:_error(msg)
  self.errors = self.errors + 1
  self.last_error = msg
end

-- How many newlines `s` holds from byte i to byte j.
local function count_lines(s, i, j)
  local n = 0
  while true do
    local k = s:find("\n", i, true)
    if not k or k > j then return n end
    n, i = n + 1, k + 1
  end
end

-- What was gathered goes out now, or at the loop's next turn.
function Log:_gathered(pending)
  if pending >= FLUSH_AT or not core.running() then
    self:flush()
  elseif not self._scheduled then
    self._scheduled = true
    core.defer(function()
      self._scheduled = false
      if not self.closed then self:flush() end
    end)
  end
end

-- Gather one line (no newline in it, at most max_line bytes) with its mark.
function Log:_put(text, mark)
  local ts = self.timestamps and stamp() or nil
  local n = #text + 1 + (mark and #mark + 3 or 0) + (ts and #ts or 0)
  local used = self.size + self.pending
  if used > 0 and not self._reopen then -- (a reopen due: the next flush tries it, not each line)
    local ms = self.max_size
    if (ms and used + n > ms) or (self.max_age and self._since and core.now() - self._since >= self.max_age) then
      self:_rotate()
      used = self.size + self.pending
    end
  end
  if used == 0 then self:_born() end
  local buf, bn = self._buf, self._bn
  if ts then bn = bn + 1; buf[bn] = ts end
  bn = bn + 1; buf[bn] = text
  if mark then bn = bn + 1; buf[bn] = " [" .. mark .. "]\n" else bn = bn + 1; buf[bn] = "\n" end
  self._bn = bn
  self._blines = self._blines + 1
  local pending = self.pending + n
  self.pending = pending
  self:_gathered(pending)
end

-- (For baton.logs, which has split them already.) Gather `n` whole lines at
-- once: the first `len` bytes of `s`, every line ending with its newline,
-- none longer than max_line, for a log without timestamps. The file rotates
-- between the same lines as with `line`, cut where the size limit falls; a
-- rotation that fails is tried once, and what is left goes on in the file.
function Log:_lines(s, len, n)
  check(self, "_lines")
  if self.max_age and self._since and self.size + self.pending > 0 and core.now() - self._since >= self.max_age then
    self:_rotate()
  end
  local ms, i, failed = self.max_size, 1, false
  while i <= len do
    local used = self.size + self.pending
    local j = len -- the end of what goes into this file
    if ms and not failed and used + len - i + 1 > ms then
      local k = i + (ms - used) - 1 -- the last byte that fits: back to the end of a line
      while k >= i and byte(s, k) ~= 10 do k = k - 1 end
      if k >= i then
        j = k
      elseif used == 0 then
        j = find(s, "\n", i, true) -- an empty file takes one line, even one too big
      else
        j = nil
        self:_rotate()
        failed = self.size + self.pending > 0
      end
    end
    if j then
      if used == 0 then self:_born() end
      local m = j == len and n or count_lines(s, i, j)
      n = n - m
      local bn = self._bn + 1
      self._buf[bn] = (i == 1 and j == #s) and s or sub(s, i, j)
      self._bn, self._blines, self.pending = bn, self._blines + m, self.pending + j - i + 1
      i = j + 1
    end
  end
  self:_gathered(self.pending)
end

-- One line that may be longer than max_line: pieces, each but the last
-- marked [split].
function Log:_long(text, mark)
  local max = self.max_line
  local len = #text
  if len <= max then return self:_put(text, mark) end
  local i = 1
  while len - i + 1 > max do
    self:_put(text:sub(i, i + max - 1), "split")
    i = i + max
  end
  self:_put(text:sub(i), mark)
end

local function check_mark(fname, n, mark)
  if mark == nil then return end
  if type(mark) ~= "string" then argerror(fname, n, "mark must be a string, got " .. type(mark)) end
  if #mark > MAX_MARK or mark:find("[\n\r%]]") then
    argerror(fname, n, fmt("mark must be at most %d bytes without newline or ']'", MAX_MARK))
  end
end

--- Append one line (`text` without its newline; a newline inside starts
-- another line). `mark`: nil, or a short word written as ` [mark]` at the
-- end of the line ("partial" for a process's unterminated last line). A
-- line longer than max_line is written in pieces, each but the last ending
-- with ` [split]`. Bytes are written as given.
function Log:line(text, mark)
  check(self, "line")
  if type(text) ~= "string" then
    if type(text) ~= "number" then argerror("line", 1, "string expected, got " .. type(text)) end
    text = tostring(text)
  end
  check_mark("line", 2, mark)
  if not text:find("\n", 1, true) then return self:_long(text, mark) end
  local i = 1
  while true do
    local j = text:find("\n", i, true)
    if not j then return self:_long(text:sub(i), mark) end
    self:_long(text:sub(i, j - 1))
    i = j + 1
  end
end

--- Append raw bytes as they come from a pipe: whole lines are written, the
-- rest waits for the next chunk (at most max_line bytes of it: longer is
-- written in [split] pieces).
function Log:chunk(data)
  check(self, "chunk")
  if type(data) ~= "string" then argerror("chunk", 1, "string expected, got " .. type(data)) end
  local tail = self._tail
  if tail then data = tail .. data; self._tail = nil end
  local i = 1
  while true do
    local j = data:find("\n", i, true)
    if not j then break end
    self:_long(data:sub(i, j - 1))
    i = j + 1
  end
  local rest = #data - i + 1
  local max = self.max_line
  while rest > max do
    self:_put(data:sub(i, i + max - 1), "split")
    i, rest = i + max, rest - max
  end
  if rest > 0 then self._tail = data:sub(i) end
end

--- Write what `chunk` holds of an unterminated line, marked `mark` (default
-- "partial"). Returns whether there was anything.
function Log:flush_partial(mark)
  check(self, "flush_partial")
  check_mark("flush_partial", 1, mark)
  local tail = self._tail
  if not tail then return false end
  self._tail = nil
  self:_put(tail, mark or "partial")
  return true
end

--- Write what is gathered now. Returns true, or nil, msg, code when the
-- write failed (counted too: the lines in `dropped`, a marker to come).
function Log:flush()
  errors.check_self(getmetatable(self) == Log, self, "flush", "baton.logfile")
  if self._reopen then self:_reopen_now() end
  local bn, blines = self._bn, self._blines
  if bn == 0 then return true end
  local data = bn == 1 and self._buf[1] or concat(self._buf, "", 1, bn)
  self._buf, self._bn, self._blines, self.pending = {}, 0, 0, 0
  local head = ""
  if self._dirty then head = "\n" end -- a failed write left a part line that could not be cut
  if self._lost > 0 then
    local ts = self.timestamps and stamp() or ""
    local lost = self._lost
    head = head .. ts .. fmt("[baton: %d %s lost: %s]\n", lost, lost == 1 and "line" or "lines", self._lost_why)
  end
  if head ~= "" then data = head .. data end
  local f = self._f
  local n, _, code, written = f:write(data)
  if n then
    self.size = self.size + n
    self.lines = self.lines + blines
    self._lost, self._dirty = 0, false
    return true
  end
  -- Keep the whole lines that reached the file, cut the rest.
  local msg = fmt("%s: %s (writing %s)", code, core.strerror(code), self.path)
  self:_error(msg)
  local keep = written
  while keep > 0 and data:byte(keep) ~= 10 do keep = keep - 1 end
  if written > keep then
    if f:truncate(self.size + keep) then
      self._dirty = false
    else
      keep = written
      self._dirty = true
    end
  elseif written > 0 then
    self._dirty = false
  end
  self.size = self.size + keep
  local landed = 0
  if keep >= #head then
    if head ~= "" then self._lost = 0 end
    landed = count_lines(data, #head + 1, keep)
  end
  self.lines = self.lines + landed
  self.dropped = self.dropped + blines - landed
  self._lost = self._lost + blines - landed
  self._lost_why = msg
  return nil, msg, code
end

-- ---- rotation -----------------------------------------------------------------------------

-- The rotated file of index i, with the suffix it has now (or nil).
local function rotated(path, i)
  for _, suf in ipairs(SUFFIXES) do
    local p = path .. "." .. i .. suf
    if exists(p) then return p end
  end
end

-- Rename `a` to `b`; a missing `a` is no error.
local function move(a, b)
  local ok, msg, errno = os.rename(a, b)
  if ok or errno == 2 then return true end
  return nil, msg, errno
end

-- Open `path` afresh. False (counted) when it cannot be: the log goes on in
-- the file it has, and tries again at the next write.
function Log:_reopen_now()
  local f, _, code = core.append_open(self.path, self.mode)
  if not f then
    self._reopen = true
    local msg = fmt("%s: %s (reopening %s)", code, core.strerror(code), self.path)
    self:_error(msg)
    return nil, msg, code
  end
  self._reopen = false
  if self._f then self._f:close() end
  self._f = f
  self.size = f:size() or 0
  self._dirty = false
  if self._timer then self._timer:stop() end
  if self.size > 0 then self:_born() end
  return true
end

-- Rotate now, counting failures instead of raising: what the size and age
-- limits do.
function Log:_rotate()
  local ok, msg, code = self:flush()
  if not ok and not self._f then return nil, msg, code end
  if self.size == 0 then return true end
  local path, keep = self.path, self.keep
  -- The file is gone (removed, or its directory): nothing to rotate, and no
  -- rotation counted; the path is opened afresh when it can be.
  if not exists(path) then return self:_reopen_now() end
  for i = keep, 1, -1 do
    for _, suf in ipairs(SUFFIXES) do
      local p = path .. "." .. i .. suf
      if i == keep then
        os.remove(p)
      else
        local moved, err = move(p, path .. "." .. (i + 1) .. suf)
        if not moved then self:_error(err) end
      end
    end
  end
  local moved, err, errno
  if keep > 0 then moved, err, errno = move(path, path .. ".1") else moved, err, errno = os.remove(path) end
  if not moved then
    local name = errors.errname(errno)
    self:_error(fmt("%s: %s (rotating %s)", name, err, path))
    return nil, self.last_error, name
  end
  self.rotations = self.rotations + 1
  if self._timer then self._timer:stop() end
  ok, msg, code = self:_reopen_now()
  if not ok then
    -- The old fd writes on into what is now path.1: nothing is lost.
    return nil, msg, code
  end
  if self.compress and keep > 0 then
    self._queue[#self._queue + 1] = self.rotations
    self:_compress_next()
  end
  self:_trim()
  return true
end

-- Delete the oldest rotated files while they hold more than max_total.
function Log:_trim()
  local cap = self.max_total
  if not cap then return end
  local sizes, total = {}, 0
  for i = 1, self.keep do
    local p = rotated(self.path, i)
    sizes[i] = p and file_size(p) or 0
    total = total + sizes[i]
  end
  for i = self.keep, 1, -1 do
    if total <= cap then break end
    if sizes[i] > 0 then
      for _, suf in ipairs(SUFFIXES) do os.remove(self.path .. "." .. i .. suf) end
      total = total - sizes[i]
    end
  end
end

-- ---- compression --------------------------------------------------------------------------

-- Start compressing the next rotated file waiting, unless one is at it.
function Log:_compress_next()
  if self._compressing then return end
  local queue = self._queue
  while #queue > 0 do
    local gen = table.remove(queue, 1)
    local idx = self.rotations - gen + 1
    local src = self.path .. "." .. idx
    if idx <= self.keep and exists(src) then
      local c = COMPRESSORS[self.compress]
      local tmp = self.path .. ".compressing" .. c.ext
      -- Not the caller's scope's: a compressor outlives the code that rotated.
      local prev = task.set_scope(nil)
      local argv = { table.unpack(c.argv) }
      argv.stdin, argv.stdout, argv.stderr = { path = src }, { path = tmp }, "pipe"
      local p, msg = require("baton.process").spawn(argv)
      task.set_scope(prev)
      if p then
        self._compressing = p
        task.go_internal(function() self:_compressed(p, gen, tmp, c) end)
        return
      end
      os.remove(tmp)
      self:_error(fmt("%s (compressing %s)", msg, src))
    end
  end
  local ws = self._settlers
  if ws then
    self._settlers = nil
    for i = 1, #ws do ws[i]() end
  end
end

-- A compressor ended: put its output in place of the file it read (where
-- that file is now), or count its failure.
function Log:_compressed(p, gen, tmp, c)
  local err = p.stderr:read("a") or ""
  local st = p:wait()
  p:close()
  self._compressing = nil
  local idx = self.rotations - gen + 1
  local src = self.path .. "." .. idx
  if not st.ok then
    os.remove(tmp)
    local how = st.signal and ("killed by " .. (st.signame or st.signal)) or ("exited with code " .. tostring(st.code))
    err = err:gsub("%s+$", "")
    self:_error(fmt("%s %s: %s%s", c.argv[1], src, how, err ~= "" and (": " .. err) or ""))
  elseif idx > self.keep or not exists(src) then
    os.remove(tmp) -- deleted meanwhile (keep, max_total)
  else
    local ok, msg = os.rename(tmp, src .. c.ext)
    if ok then
      os.remove(src)
      self:_trim()
    else
      os.remove(tmp)
      self:_error(msg)
    end
  end
  self:_compress_next()
end

--- Wait until no compressor runs nor waits to run (tests, shutdown).
function Log:settle()
  errors.check_self(getmetatable(self) == Log, self, "settle", "baton.logfile")
  if not self._compressing and #self._queue == 0 then return end
  task.suspend(function(wake)
    local ws = self._settlers or {}
    ws[#ws + 1] = wake
    self._settlers = ws
  end)
end

--- Rotate now: `path` becomes `path.1` (older ones shift up to `keep`),
-- and a new `path` is opened. An empty file is not rotated. Returns true,
-- or nil, msg, code (also counted in `errors`; the log goes on).
function Log:rotate()
  check(self, "rotate")
  return self:_rotate()
end

--- Open `path` again, after something else moved the file away (an
-- external logrotate). Returns true, or nil, msg, code.
function Log:reopen()
  check(self, "reopen")
  self:flush()
  return self:_reopen_now()
end

--- Write what is gathered (an unterminated line marked "partial") and close
-- the file. Idempotent. A compressor still running finishes on its own
-- (`settle` waits for it).
function Log:close()
  errors.check_self(getmetatable(self) == Log, self, "close", "baton.logfile")
  if self.closed then return true end
  if self._tail then self:flush_partial() end
  local ok, msg, code = self:flush()
  self.closed = true
  if self._timer then self._timer:close(); self._timer = nil end
  if self._f then self._f:close(); self._f = nil end
  if not ok then return nil, msg, code end
  return true
end
Log.__close = Log.close
Log.__gc = function(self) pcall(Log.close, self) end

function Log:__tostring()
  return fmt("baton.logfile (%s%s)", self.path, self.closed and ", closed" or "")
end

M.Log = Log
return M
