--- baton.process — spawn, run, wait for and signal processes; read and write their pipes.
--
-- Error convention (the same everywhere in baton):
--  * misuse — a wrong argument type, an unknown option, a bad signal name —
--    raises at once, naming the argument or option;
--  * an operational failure of a primitive — program not found, bad cwd,
--    a signal to a process already reaped, a write to a closed pipe —
--    returns `nil, "ENAME: message (context)", "ENAME"`;
--  * `run` is the raising convenience: it raises a `baton.Error` when the
--    program cannot start or (unless `check = false`) does not succeed.
-- @module baton.process
local core = require "baton.core"
local task = require "baton.task"
local suspend = task.suspend

local M = {}
local concat, pack, unpack = table.concat, table.pack, table.unpack
local fmt = string.format

-- ---- errors ------------------------------------------------------------------

--- Raised by `run` (and later conveniences). Fields: `kind` ("spawn" or
-- "exit"), `msg`, `code` (an errno name, for "spawn"), `result` (for "exit"),
-- `argv`. `tostring(err)` is the message.
local Error = { __name = "baton.Error" }
Error.__index = Error
Error.__tostring = function(e) return e.msg end
M.Error = Error

local function argerror(fname, n, msg, level)
  error(fmt("bad argument #%d to '%s' (%s)", n, fname, msg), (level or 2) + 1)
end

-- argv as a shell-like line for messages; long words and long lists are cut.
local function quote_argv(argv)
  local out = {}
  for i = 1, math.min(#argv, 20) do
    local a = argv[i]
    if #a > 80 then a = a:sub(1, 60) .. fmt("…(%d bytes)", #a) end
    out[i] = a:match("^[%w%-%./_=:,+@%%]+$") and a or fmt("%q", a):gsub("\\\n", "\\n")
  end
  if #argv > 20 then out[#out + 1] = fmt("…(%d more)", #argv - 20) end
  return concat(out, " ")
end

-- ---- signals -------------------------------------------------------------------

--- Signal number for a name ("TERM", "SIGTERM") or number; raises if unknown.
function M.signum(sig, fname, n)
  local t = type(sig)
  if t ~= "string" and t ~= "number" then
    argerror(fname or "signum", n or 1, "signal name or number expected, got " .. t, 2)
  end
  local num = core.signum(sig)
  if not num then argerror(fname or "signum", n or 1, fmt("unknown signal %q", tostring(sig)), 2) end
  return num
end

-- ---- status ----------------------------------------------------------------------

local Status = { __name = "baton.status" }
Status.__index = Status
Status.__tostring = function(s)
  if s.signal then
    return fmt("killed by %s%s", s.signame or ("signal " .. s.signal), s.core and " (core dumped)" or "")
  end
  return "exit " .. tostring(s.code)
end

local function make_status(code, sig, coredump)
  return setmetatable({
    ok = code == 0, code = code, signal = sig,
    signame = sig and core.signame(sig) or nil, core = coredump or false,
  }, Status)
end

-- ---- streams -----------------------------------------------------------------------

local HIGH_WATER = 256 * 1024 -- stop reading from the pipe above this much unread data

--- A pipe to or from a child. Reading follows Lua's io library: `read()` (the
-- next chunk), `read("a")`, `read("l")`, `read("L")`, `read(n)`, `lines()`.
-- @type Stream
local Stream = { __name = "baton.stream" }
Stream.__index = Stream
M.Stream = Stream

local function new_stream(ud, name)
  return setmetatable({ _ud = ud, name = name, _q = {}, _qh = 1, _qt = 0, _off = 0, _n = 0,
    _eof = false, _reading = false, closed = false }, Stream)
end

function Stream:_start()
  self._reading = true
  local ok, msg, code = self._ud:read_start(function(data, emsg, ecode)
    if data then
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
    end
    local w = self._waker
    if w then
      self._waker = nil
      w()
    end
  end)
  if not ok then
    self._eof, self._reading, self._err, self._errcode = true, false, msg, code
  end
end

-- Wait until more data is queued or the stream ended. False at end of stream.
function Stream:_fill()
  if self._eof or self.closed then return false end
  suspend(function(wake)
    self._waker = wake
    if not self._reading then self:_start() end
  end)
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

--- Read from the stream. `what`: nil for the next chunk as it arrives, "a" for
-- everything up to end of stream, "l" / "L" for a line without / with its
-- newline, a number for that many bytes (fewer only at end of stream).
-- At end of stream returns nil ("" for "a"); on a read error nil, msg, code.
function Stream:read(what)
  local r
  if what == nil then
    if self._qh > self._qt then self:_fill() end
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
    r = concat(parts)
  elseif what == "l" or what == "*l" then
    r = self:_line(false)
  elseif what == "L" or what == "*L" then
    r = self:_line(true)
  elseif math.type(what) == "integer" and what >= 0 then
    r = self:_bytes(what)
    if r == nil and what == 0 and not (self._eof and self._qh > self._qt) then r = "" end
  else
    argerror("read", 1, fmt("invalid format %q", tostring(what)))
  end
  if r == nil and self._err then return nil, self._err, self._errcode end
  return r
end

--- Iterate over lines (`what` as for read, default "l").
function Stream:lines(what)
  what = what or "l"
  return function() return self:read(what) end
end

--- Write strings (or numbers); waits until the data is in the pipe.
-- Returns the stream, or nil, msg, code (EPIPE when the reader has gone).
function Stream:write(...)
  local n = select("#", ...)
  local data = n == 1 and ... or concat({ ... })
  if type(data) ~= "string" then
    if type(data) == "number" then data = tostring(data)
    else argerror("write", 1, "string expected, got " .. type(data)) end
  end
  if self.closed then return nil, "EBADF: bad file descriptor (stream is closed)", "EBADF" end
  local wrote, msg, code = self._ud:try_write(data)
  if not wrote then return nil, msg, code end
  if wrote == #data then return self end
  if wrote > 0 then data = data:sub(wrote + 1) end
  local ok, emsg, ecode = suspend(function(wake)
    local queued, m, c = self._ud:write(data, wake)
    if not queued then wake(nil, m, c) end
  end)
  if not ok then return nil, emsg, ecode end
  return self
end

--- Close the stream (idempotent). A reader waiting on it sees end of stream.
function Stream:close()
  if self.closed then return end
  self.closed = true
  self._eof = true
  self._ud:close()
  local w = self._waker
  if w then
    self._waker = nil
    w()
  end
end
Stream.__close = Stream.close

--- The underlying fd (for wiring it to another process).
function Stream:fileno() return self._ud:fileno() end

function Stream:__tostring()
  return fmt("baton.stream (%s%s)", self.name or "pipe", self.closed and ", closed" or "")
end

-- ---- option checking ------------------------------------------------------------------

local SPAWN_KEYS = {
  cwd = "string", env = "table", clearenv = "boolean", stdin = "stdio", stdout = "stdio",
  stderr = "stdio", setsid = "boolean", pgroup = "boolean",
}
local RUN_KEYS = setmetatable({ input = "string", capture = "boolean", check = "boolean" },
  { __index = SPAWN_KEYS })

local STDIO_WORDS = { inherit = true, null = true, pipe = true }

-- Turn a stdio option into what core.spawn takes, for child fd `fd`.
local function stdio_spec(v, fd, key, fname)
  local t = type(v)
  if v == nil then return "inherit" end
  if t == "string" then
    if STDIO_WORDS[v] then return v end
    if fd == 2 and v == "stdout" then return { same = 1 } end
    argerror(fname, 1, fmt("option '%s': unknown redirection %q (inherit, null, pipe%s, an fd, a file or a stream)",
      key, v, fd == 2 and ", stdout" or ""), 3)
  elseif math.type(v) == "integer" then
    if v < 0 then argerror(fname, 1, fmt("option '%s': negative fd %d", key, v), 3) end
    return v
  elseif t == "userdata" then
    local fdn = core.fileno(v)
    if fdn then return fdn end
  elseif t == "table" and getmetatable(v) == Stream then
    if v.closed then argerror(fname, 1, fmt("option '%s': stream is closed", key), 3) end
    return v:fileno()
  end
  argerror(fname, 1, fmt("option '%s': cannot redirect to a %s", key, t), 3)
end

local function build_env(env, clear)
  local list, n = {}, 0
  local seen = {}
  if env then
    for k, v in pairs(env) do
      if type(k) ~= "string" or k == "" or k:find("=", 1, true) then
        error(fmt("bad option 'env': invalid variable name %q", tostring(k)), 4)
      end
      local tv = type(v)
      if tv ~= "string" and tv ~= "number" and v ~= false then
        error(fmt("bad option 'env': value of %s must be a string, a number or false, got %s", k, tv), 4)
      end
      seen[k] = true
      if v ~= false then
        n = n + 1
        list[n] = k .. "=" .. tostring(v)
      end
    end
  end
  if not clear then
    local parent = core.environ()
    for i = 1, #parent do
      local kv = parent[i]
      local k = kv:match("^([^=]*)")
      if not seen[k] then
        n = n + 1
        list[n] = kv
      end
    end
  end
  return list
end

-- Validate a command table; returns argv and the options for core.spawn.
local function parse(spec, keys, fname)
  if type(spec) == "string" then spec = { spec } end
  if type(spec) ~= "table" then argerror(fname, 1, "table expected, got " .. type(spec), 3) end
  local argv = {}
  local n = #spec
  if n == 0 then argerror(fname, 1, "no program: the command table needs argv strings at [1], [2], …", 3) end
  for i = 1, n do
    local a = spec[i]
    local t = type(a)
    if t == "number" then a = tostring(a)
    elseif t ~= "string" then argerror(fname, 1, fmt("argv[%d] must be a string, got %s", i, t), 3) end
    if a:find("\0", 1, true) then argerror(fname, 1, fmt("argv[%d] contains a NUL byte", i), 3) end
    argv[i] = a
  end
  for k, v in pairs(spec) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      local want = keys[k]
      if not want then
        argerror(fname, 1, fmt("unknown option %s", type(k) == "string" and fmt("'%s'", k) or tostring(k)), 3)
      end
      if want ~= "stdio" and type(v) ~= want then
        argerror(fname, 1, fmt("option '%s' must be a %s, got %s", k, want, type(v)), 3)
      end
    end
  end
  local o = { argv = argv, cwd = spec.cwd, setsid = spec.setsid }
  if spec.pgroup and not spec.setsid then o.pgid = 0 end
  if spec.env or spec.clearenv then o.env = build_env(spec.env, spec.clearenv) end
  return argv, o, spec
end

-- ---- processes ----------------------------------------------------------------------

--- A running or finished child.
-- Fields: `pid`, `argv`, `path` (resolved program), `stdin`, `stdout`,
-- `stderr` (streams, for "pipe" redirections), `status` (nil until it exited).
-- @type Process
local Process = { __name = "baton.process" }
Process.__index = Process
M.Process = Process

local function spawn_error(argv, o, code, strerr, stage, path)
  local prog = argv[1]
  local cwd = o.cwd or core.cwd() or "?"
  local detail
  if stage == "lookup" then
    local p
    if o.env then
      for i = 1, #o.env do
        p = o.env[i]:match("^PATH=(.*)") or p
      end
    else
      p = os.getenv("PATH")
    end
    detail = code == "ENOENT" and fmt("not found in PATH (PATH=%s)", p or "")
      or fmt("%s (PATH=%s)", strerr, p or "")
  elseif stage == "chdir" then
    detail = fmt("cannot change to cwd %q: %s", cwd, strerr)
  elseif stage == "exec" then
    detail = fmt("exec %s: %s", path, strerr)
  else
    detail = fmt("%s failed: %s", stage, strerr)
  end
  local where = (path and path ~= "") and ("; path: " .. path) or ""
  return fmt("%s: cannot run %q: %s (argv: %s%s; cwd: %s)", code, prog, detail, quote_argv(argv), where, cwd)
end

local function start(spec, keys, fname, defaults)
  local argv, o, s = parse(spec, keys, fname)
  o.stdio = {
    stdio_spec(s.stdin or defaults and defaults.stdin, 0, "stdin", fname),
    stdio_spec(s.stdout or defaults and defaults.stdout, 1, "stdout", fname),
    stdio_spec(s.stderr or defaults and defaults.stderr, 2, "stderr", fname),
  }
  local ud, pipes, strerr, stage, path = core.spawn(o)
  if not ud then
    local code = pipes
    return nil, spawn_error(argv, o, code, strerr, stage, path), code
  end
  local p = setmetatable({
    pid = ud:pid(), argv = argv, path = ud:path(), cwd = o.cwd, _ud = ud, _waiters = {},
    started = core.now(),
  }, Process)
  if pipes[0] then p.stdin = new_stream(pipes[0], "stdin") end
  if pipes[1] then p.stdout = new_stream(pipes[1], "stdout") end
  if pipes[2] then p.stderr = new_stream(pipes[2], "stderr") end
  ud:on_exit(function(code, sig, coredump)
    p.status = make_status(code, sig, coredump)
    p.ended = core.now()
    local ws = p._waiters
    p._waiters = nil
    for i = 1, #ws do ws[i](p.status) end
  end)
  return p
end

--- Start a process. `spec` is `{prog, args…, option = value…}` (or a program
-- name). Options: `cwd`, `env` (merged into the parent's; `false` removes a
-- variable), `clearenv` (start from an empty environment), `stdin`, `stdout`,
-- `stderr` ("inherit" default, "null", "pipe", an fd, a Lua file, a stream;
-- `stderr = "stdout"` merges), `setsid`, `pgroup` (own process group).
-- @return a Process, or nil, msg, code when it cannot start
function M.spawn(spec)
  return start(spec, SPAWN_KEYS, "spawn")
end

--- Wait for the process to exit; returns its status (`ok`, `code`, `signal`,
-- `signame`, `core`). Returns at once if it already exited.
function Process:wait()
  if not self.status then
    suspend(function(wake)
      local ws = self._waiters
      ws[#ws + 1] = wake
    end)
  end
  return self.status
end

--- The status if the process exited, else nil; never waits.
function Process:poll() return self.status end

--- Send a signal (name or number) through the pidfd.
-- @return true, or nil, msg, code ("ESRCH" once the process has exited)
function Process:signal(sig)
  return self._ud:kill(M.signum(sig, "signal", 1))
end

--- Send SIGKILL.
function Process:kill() return self._ud:kill(9) end

--- Close the pipes; kill and reap the process if it still runs. For
-- `local p <close> = baton.spawn{…}`.
function Process:close()
  if not self.status then
    self._ud:kill(9)
    self:wait()
  end
  for _, name in ipairs { "stdin", "stdout", "stderr" } do
    if self[name] then self[name]:close() end
  end
end
Process.__close = Process.close

function Process:__tostring()
  return fmt("baton.process %d (%s)", self.pid, self.status and tostring(self.status) or "running")
end

--- Run a command to completion. Options of `spawn`, plus `input` (a string
-- written to stdin), `capture` (pipe stdout and stderr into the result) and
-- `check` (default true: raise a baton.Error unless it exits 0).
-- @return result: `ok`, `code`, `signal`, `signame`, `core`, `stdout`,
-- `stderr`, `pid`, `argv`, `duration` (seconds)
function M.run(spec)
  local defaults
  if type(spec) == "table" then
    if spec.capture then defaults = { stdout = "pipe", stderr = "pipe" } end
    if spec.input ~= nil then
      defaults = defaults or {}
      defaults.stdin = "pipe"
    end
  end
  local p, msg, code = start(spec, RUN_KEYS, "run", defaults)
  if not p then
    error(setmetatable({ kind = "spawn", msg = msg, code = code, argv = spec[1] and { table.unpack(spec) } }, Error), 2)
  end
  local readers = {}
  for _, name in ipairs { "stdout", "stderr" } do
    local s = p[name]
    if s then
      readers[name] = task.go(function()
        local data = s:read("a")
        s:close()
        return data
      end)
    end
  end
  if p.stdin then
    local input = spec.input or ""
    task.go(function()
      p.stdin:write(input) -- EPIPE (the child did not read it all) is not an error of run
      p.stdin:close()
    end)
  end
  local st = p:wait()
  local r = {
    ok = st.ok, code = st.code, signal = st.signal, signame = st.signame, core = st.core,
    pid = p.pid, argv = p.argv, duration = p.ended - p.started,
  }
  for name, t in pairs(readers) do r[name] = t:wait() end
  if spec.check ~= false and not r.ok then
    local what = r.signal and ("was killed by " .. (r.signame or r.signal)) or ("exited with code " .. r.code)
    local m = fmt("command %s %s", quote_argv(p.argv), what)
    if r.stderr and #r.stderr > 0 then
      local tail = r.stderr:sub(-400):gsub("%s+$", "")
      m = m .. ": " .. tail
    end
    error(setmetatable({ kind = "exit", msg = m, result = r, argv = p.argv }, Error), 2)
  end
  return r
end

--- Find a program in PATH like the child will (absolute entries only).
-- @return the path, or nil, msg, code
function M.which(name, path)
  if type(name) ~= "string" then argerror("which", 1, "string expected, got " .. type(name)) end
  return core.lookpath(name, path)
end

return M
