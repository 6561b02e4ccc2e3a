--- baton.stream — byte streams over pipes to and from children, and over
-- TCP connections (baton.net).
--
-- Reading follows Lua's io library: `read()` (the next chunk), `read("a")`,
-- `read("l")`, `read("L")`, `read(n)`, `lines()`. The C side only delivers
-- chunks; buffering, line splitting and backpressure are here.
-- @module baton.stream
local task = require "baton.task"
local errors = require "baton.errors"
errors.own()
local suspend = task.suspend

local concat, fmt = table.concat, string.format
local argerror = errors.argerror

local HIGH_WATER = 256 * 1024 -- stop reading from the pipe above this much unread data

--- A pipe to or from a child. Reading follows Lua's io library: `read()` (the
-- next chunk), `read("a")`, `read("l")`, `read("L")`, `read(n)`, `lines()`.
-- @type Stream
local Stream = { __name = "baton.stream" }
Stream.__index = Stream

--- Wrap a C stream userdata. `mode`: "r" (baton reads: a child's output),
-- "w" (baton writes: a child's input) or "rw" (both: a connection).
function Stream.new(ud, name, mode)
  return setmetatable({ _ud = ud, name = name, mode = mode, _q = {}, _qh = 1, _qt = 0, _off = 0, _n = 0,
    _eof = false, _reading = false, closed = false }, Stream)
end

-- Raise unless `self` is a stream that can be used for `fname`.
local function check(self, fname, mode)
  errors.check_self(getmetatable(self) == Stream, self, fname, "baton.stream")
  if mode and self.mode ~= mode and self.mode ~= "rw" then
    errors.misuse("cannot %s %s: baton %s this end of the pipe", fname, self.name or "a stream",
      self.mode == "w" and "writes" or "reads")
  end
end

function Stream:_start()
  self._reading = true
  local ok, msg, code = self._ud:read_start(function(data, emsg, ecode)
    if data then
      if self.tee then self.tee:write(data) end
      local t = self._qt + 1
      self._qt = t
      self._q[t] = data
      self._n = self._n + #data
      if self._n >= HIGH_WATER and self._reading then
        self._ud:read_stop()
        self._reading = false
      end
    else
      self._eof = true
      self._reading = false
      if emsg then self._err, self._errcode = emsg, ecode end
      -- Nothing more can come: let go of the fd now (what is queued stays
      -- readable), not when the collector gets to the stream; the tee file
      -- has all it will get. A connection can still be written to: its
      -- fd goes with close().
      if self.mode ~= "rw" then self._ud:close() end
      if self.tee and io.type(self.tee) == "file" then self.tee:close() end
    end
    self:_wake()
  end)
  if not ok then
    self._eof, self._reading, self._err, self._errcode = true, false, msg, code
  end
end

-- Wake every task waiting for data (each re-checks the queue).
function Stream:_wake()
  local ws = self._wakers
  if ws then
    self._wakers = nil
    for i = 1, #ws do ws[i]() end
  end
end

-- Wait until more data is queued or the stream ended. False at end of stream.
function Stream:_fill()
  if self._eof or self.closed then return false end
  local me
  local ok, err = pcall(suspend, function(wake)
    me = wake
    local ws = self._wakers
    if ws then ws[#ws + 1] = wake else self._wakers = { wake } end
    if not self._reading then self:_start() end
  end)
  if not ok then -- cancelled: leave nothing behind on a quiet stream
    local ws = self._wakers or {}
    for i = #ws, 1, -1 do
      if ws[i] == me then table.remove(ws, i) end
    end
    error(err, 0)
  end
  return self._qh <= self._qt or not self._eof
end

-- Remove and return the rest of the head chunk.
function Stream:_take()
  local qh = self._qh
  local s = self._q[qh]
  self._q[qh] = nil
  self._qh = qh + 1
  if self._off > 0 then
    s = s:sub(self._off + 1)
    self._off = 0
  end
  self._n = self._n - #s
  return s
end

function Stream:_line(keep)
  local parts, np = {}, 0
  while true do
    if self._qh > self._qt then
      if not self:_fill() then break end
    else
      local s = self._q[self._qh]
      local i = s:find("\n", self._off + 1, true)
      if i then
        np = np + 1
        parts[np] = s:sub(self._off + 1, keep and i or i - 1)
        self._n = self._n - (i - self._off)
        self._off = i
        if i == #s then
          self._q[self._qh] = nil
          self._qh = self._qh + 1
          self._off = 0
        end
        return concat(parts)
      end
      np = np + 1
      parts[np] = self:_take()
    end
  end
  if np == 0 then return nil end
  return concat(parts)
end

function Stream:_bytes(n)
  local parts, np, got = {}, 0, 0
  while got < n do
    if self._qh > self._qt then
      if not self:_fill() then break end
    else
      local s = self._q[self._qh]
      local avail = #s - self._off
      if avail <= n - got then
        np = np + 1
        parts[np] = self:_take()
        got = got + avail
      else
        local want = n - got
        np = np + 1
        parts[np] = s:sub(self._off + 1, self._off + want)
        self._off = self._off + want
        self._n = self._n - want
        got = n
      end
    end
  end
  if np == 0 and n > 0 then return nil end
  return concat(parts)
end

-- One read of `what` (see read).
local function read1(self, what, argn)
  local r
  if what == nil then
    while self._qh > self._qt and self:_fill() do end -- another reader may take it first
    if self._qh <= self._qt then
      r = self:_take()
    end
  elseif what == "a" or what == "*a" then
    local parts, np = {}, 0
    repeat
      while self._qh <= self._qt do
        np = np + 1
        parts[np] = self:_take()
      end
    until not self:_fill()
    if self._err then return nil, self._err, self._errcode end
    r = concat(parts)
  elseif what == "l" or what == "*l" then
    r = self:_line(false)
  elseif what == "L" or what == "*L" then
    r = self:_line(true)
  elseif math.type(what) == "integer" and what >= 0 then
    r = self:_bytes(what)
    if r == nil and what == 0 and not (self._eof and self._qh > self._qt) then r = "" end
  else
    argerror("read", argn, fmt("invalid format %q", tostring(what)))
  end
  if r == nil and self._err then return nil, self._err, self._errcode end
  return r
end

--- Read from the stream. `what`: nil for the next chunk as it arrives, "a" for
-- everything up to end of stream, "l" / "L" for a line without / with its
-- newline, a number for that many bytes (fewer only at end of stream).
-- Several formats give a value each, as Lua's io does (up to the first nil).
-- At end of stream returns nil ("" for "a"); on a read error nil, msg, code.
function Stream:read(...)
  check(self, "read", "r")
  local n = select("#", ...)
  if n <= 1 then return read1(self, (...), 1) end
  local out = {}
  for i = 1, n do
    local v, msg, code = read1(self, (select(i, ...)), i)
    if msg then return nil, msg, code end -- a read error, as io's
    out[i] = v
    if v == nil then return table.unpack(out, 1, i) end
  end
  return table.unpack(out, 1, n)
end

--- Iterate over lines (`what` as for read, default "l").
function Stream:lines(what)
  check(self, "lines", "r")
  what = what or "l"
  return function() return self:read(what) end
end

--- Write strings (or numbers); waits until the data is in the pipe.
-- Returns the stream, or nil, msg, code (EPIPE when the reader has gone).
function Stream:write(...)
  check(self, "write", "w")
  local n = select("#", ...)
  for i = 1, n do
    local v = select(i, ...)
    if type(v) ~= "string" and type(v) ~= "number" then
      argerror("write", i, "string expected, got " .. (v == nil and "nil" or type(v)))
    end
  end
  local data = n == 1 and tostring((...)) or concat({ ... })
  if self.closed then errors.misuse("write to a closed stream (%s)", self.name or "pipe") end
  local wrote, msg, code = self._ud:try_write(data)
  if not wrote then return self:_write_failed(msg, code) end
  if wrote == #data then return self end
  if wrote > 0 then data = data:sub(wrote + 1) end
  local ok, emsg, ecode = suspend(function(wake)
    local queued, m, c = self._ud:write(data, wake)
    if not queued then wake(nil, m, c) end
  end)
  if not ok then return self:_write_failed(emsg, ecode) end
  return self
end

--- End the writing side once what was written is sent (a connection's
-- FIN: the peer reads end of stream), and keep reading. Waits until done;
-- returns the stream, or nil, msg, code. A pipe baton writes is closed:
-- writing is all it does (and shutdown(2) is for sockets only).
function Stream:shutdown()
  check(self, "shutdown", "w")
  if self.closed then errors.misuse("shutdown of a closed stream (%s)", self.name or "pipe") end
  if self.mode ~= "rw" then
    self:close()
    return self
  end
  local ok, msg, code = suspend(function(wake)
    local started, m, c = self._ud:shutdown(wake)
    if not started then wake(nil, m, c) end
  end)
  if not ok then return nil, msg, code end
  return self
end

--- Write `data` and close, from a task of baton's: a child's `input`. EPIPE
-- (the child did not read it all) is not an error here.
function Stream:_feed(data)
  task.go_internal(function()
    self:write(data)
    self:close()
  end)
end

--- Raised by a write to a stream marked `sigpipe` once its reader has gone:
-- what SIGPIPE does to a process, for a Lua function stage of a pipeline.
Stream.EPIPE = setmetatable({}, { __tostring = function() return "EPIPE: the next stage stopped reading" end })

function Stream:_write_failed(msg, code)
  if code == "EPIPE" and self.sigpipe then error(Stream.EPIPE, 0) end
  return nil, msg, code
end

--- Close the stream (idempotent). A reader waiting on it sees end of stream.
function Stream:close()
  check(self, "close")
  if self.closed then return end
  self.closed = true
  self._eof = true
  self._ud:close()
  self:_wake()
  if self.on_close then self.on_close() end
  if self.tee and io.type(self.tee) == "file" then self.tee:close() end
end
Stream.__close = Stream.close

--- The underlying fd (for wiring it to another process).
function Stream:fileno()
  check(self, "fileno")
  return self._ud:fileno()
end

function Stream:__tostring()
  return fmt("baton.stream (%s%s)", self.name or "pipe", self.closed and ", closed" or "")
end

return Stream
