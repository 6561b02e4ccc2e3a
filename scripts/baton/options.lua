--- baton.options — checking a command's options and building what the C
-- core's spawn takes from them.
--
-- A command is `{prog, args…, option = value…}`, a program name, a
-- `baton.cmd` value or a pipeline. `check` validates one as far as can be
-- done without the system (names, kinds, ranges, redirection values);
-- `build` turns it into core.spawn's table, opening what it names. Both
-- raise naming the option (baton.errors' rule); neither changes the table.
-- @module baton.options
local core = require "baton.core"
local errors = require "baton.errors"
local Stream = require "baton.stream"
errors.own()

local M = {}
local fmt, unpack = string.format, table.unpack
local argerror = errors.argerror

--- Option name -> kind, for spawn (and exec). `RUN_KEYS` adds run's.
M.SPAWN_KEYS = {
  cwd = "string", env = "table", clearenv = "boolean", argv0 = "string",
  stdin = "redir", stdout = "redir", stderr = "redir", fds = "table", input = "string",
  setsid = "boolean", pgroup = "boolean", umask = "umask", nice = "nice",
  user = "id", group = "id", groups = "table", rlimits = "table", pdeathsig = "signal",
  timeout = "seconds", kill_signal = "signal", grace = "seconds", wait_delay = "seconds",
  detach = "boolean", cgroup = "cgroup", listen_pid = "boolean",
}
M.RUN_KEYS = setmetatable({ capture = "boolean", check = "boolean" }, { __index = M.SPAWN_KEYS })

M.MAX_SECONDS = 1e9 -- about 31 years: longer is a mistake, and would not fit a timer

--- Whether `v` is a number of seconds baton can wait (0 … MAX_SECONDS).
function M.is_seconds(v)
  return type(v) == "number" and v >= 0 and v <= M.MAX_SECONDS
end

--- Raise unless `v` is nil or a number of seconds; `what` names it.
function M.check_seconds(fname, n, v, what)
  if v ~= nil and not M.is_seconds(v) then
    argerror(fname, n, fmt("%s must be a number of seconds from 0 to %g, got %s", what, M.MAX_SECONDS,
      type(v) == "number" and tostring(v) or type(v)))
  end
end

M.ms = require("baton.task").ms

--- An id (uid or gid) the kernel can take: -1 would mean "unchanged" and
-- larger values wrap around, to root among others.
function M.is_id(v)
  return math.type(v) == "integer" and v >= 0 and v < 0xffffffff
end

--- Signal number for a name ("TERM", "SIGTERM") or number; raises naming
-- argument `n` of `fname` if unknown.
function M.signum(sig, fname, n)
  local t = type(sig)
  if t ~= "string" and t ~= "number" then
    argerror(fname or "signum", n or 1, "signal name or number expected, got " .. t)
  end
  local num = core.signum(sig)
  if not num then argerror(fname or "signum", n or 1, fmt("unknown signal %q", tostring(sig))) end
  return num
end

--- The option table of a command value: a table, a command's, a pipeline's;
-- a program name has none.
function M.of(spec)
  if type(spec) ~= "table" then return {} end
  return spec.__command or spec.__options or spec
end

--- A copy of `spec` with `extra` options added where it has none (`force`:
-- replaced). Commands and pipelines stay what they are.
function M.with(spec, extra, force)
  if type(spec) == "table" and spec.__with_options then return spec:__with_options(extra, force) end
  local s = type(spec) == "table" and (spec.__command or spec) or { spec }
  local copy = {}
  for k, v in pairs(s) do copy[k] = v end
  for k, v in pairs(extra) do
    if force or copy[k] == nil then copy[k] = v end
  end
  return copy
end

-- Raise unless `v` suits an option of kind `want`.
local function check_value(fname, k, want, v)
  local t = type(v)
  if want == "redir" or want == "table" and t == "table" then return end
  if want == "seconds" then
    M.check_seconds(fname, 1, v, fmt("option '%s'", k))
  elseif want == "umask" then
    if math.type(v) ~= "integer" or v < 0 or v > 511 then
      argerror(fname, 1, fmt("option 'umask' must be an integer from 0 to 0777 (511), got %s",
        math.type(v) == "integer" and tostring(v) or type(v)))
    end
  elseif want == "nice" then
    if math.type(v) ~= "integer" or v < -20 or v > 19 then
      argerror(fname, 1, fmt("option 'nice' must be an integer from -20 to 19, got %s",
        math.type(v) == "integer" and tostring(v) or type(v)))
    end
  elseif want == "id" then
    if t ~= "string" and not M.is_id(v) then
      argerror(fname, 1, fmt("option '%s' must be a name or an id from 0 to 4294967294, got %s", k,
        t == "number" and tostring(v) or t))
    end
    if t == "string" and v:find("\0", 1, true) then argerror(fname, 1, fmt("option '%s' contains a NUL byte", k)) end
  elseif want == "string" and t == "string" then
    if k ~= "input" and v:find("\0", 1, true) then argerror(fname, 1, fmt("option '%s' contains a NUL byte", k)) end
  elseif want == "signal" then
    M.signum(v, fname, 1)
  elseif want == "cgroup" then
    if t ~= "string" or v:sub(1, 1) ~= "/" or v:find("\0", 1, true) then
      argerror(fname, 1, fmt("option 'cgroup' must be the absolute path of a cgroup v2 directory, got %s",
        t == "string" and fmt("%q", v) or t))
    end
  elseif t ~= want then
    argerror(fname, 1, fmt("option '%s' must be a %s, got %s", k, want, t))
  end
end
M.check_value = check_value

--- Raise naming option `k` of `fname` unless `keys` knows it and `v` suits it.
function M.check_option(keys, fname, k, v)
  local want = keys[k]
  if not want then
    argerror(fname, 1, fmt("unknown option %s", type(k) == "string" and fmt("'%s'", k) or tostring(k)))
  end
  check_value(fname, k, want, v)
end

-- argv and options of a command: returns argv, the option table, and the
-- `baton.from` arguments by position (or nil).
local function parse(spec, keys, fname)
  if type(spec) == "string" then spec = { spec } end
  spec = type(spec) == "table" and spec.__command or spec
  if type(spec) ~= "table" then argerror(fname, 1, "table expected, got " .. type(spec)) end
  local n = #spec
  if n == 0 then argerror(fname, 1, "no program: the command table needs argv strings at [1], [2], …") end
  local argv, subs = {}, nil
  for i = 1, n do
    local a = spec[i]
    local t = type(a)
    if t == "number" then
      a = tostring(a)
    elseif t == "table" and a.__from then
      subs = subs or {}
      subs[i] = a.__from -- process substitution: replaced by /dev/fd/N at spawn
      a = "/dev/fd/?"
    elseif t ~= "string" then
      argerror(fname, 1, fmt("argv[%d] must be a string, got %s", i, t))
    end
    if a:find("\0", 1, true) then argerror(fname, 1, fmt("argv[%d] contains a NUL byte", i)) end
    argv[i] = a
  end
  for k, v in pairs(spec) do
    if math.type(k) ~= "integer" or k < 1 or k > n then M.check_option(keys, fname, k, v) end
  end
  return argv, spec, subs
end
M.parse = parse

--- `baton.from(cmd)` as an argument: the command's output, as a path
-- (`/dev/fd/N`) the program can open — bash's `<(cmd)`.
function M.from(cmd)
  if type(cmd) ~= "table" and type(cmd) ~= "string" then argerror("from", 1, "command expected, got " .. type(cmd)) end
  return { __from = cmd }
end

--- The child's environment as a list of "K=V": baton's own with `env`
-- merged in (`false` removes), or `env` alone with `clear`.
function M.env(env, clear, fname)
  local list, n, seen = {}, 0, {}
  for k, v in pairs(env or {}) do
    if type(k) ~= "string" or k == "" or k:find("[=%z]") then
      argerror(fname, 1, fmt("option 'env': invalid variable name %q", tostring(k)))
    end
    local tv = type(v)
    if tv ~= "string" and tv ~= "number" and v ~= false then
      argerror(fname, 1, fmt("option 'env': value of %s must be a string, a number or false, got %s", k, tv))
    end
    if tv == "string" and v:find("\0", 1, true) then
      argerror(fname, 1, fmt("option 'env': value of %s contains a NUL byte", k))
    end
    seen[k] = true
    if v ~= false then
      n = n + 1
      list[n] = k .. "=" .. tostring(v)
    end
  end
  if not clear then
    local parent = core.environ()
    for i = 1, #parent do
      local kv = parent[i]
      if not seen[kv:match("^([^=]*)")] then
        n = n + 1
        list[n] = kv
      end
    end
  end
  return list
end

local function limit(fname, name, x)
  if x == "unlimited" or x == math.huge then return -1 end
  if math.type(x) ~= "integer" or x < 0 then
    argerror(fname, 1, fmt("option 'rlimits': %s must be a non-negative integer or 'unlimited'", name))
  end
  return x
end

--- `rlimits = {nofile = 1024, core = {0, "unlimited"}}` as core.spawn takes it.
function M.rlimits(t, fname)
  local out = {}
  for name, v in pairs(t) do
    local res = core.RLIMIT[name]
    if not res then argerror(fname, 1, fmt("option 'rlimits': unknown limit %q", tostring(name))) end
    local cur, max
    if type(v) == "table" then cur, max = v[1], v[2] or v[1] else cur, max = v, v end
    out[#out + 1] = { res, limit(fname, name, cur), limit(fname, name, max) }
  end
  return out
end

-- uid, gid and groups for user=/group=/groups=, like su: a user name brings
-- its primary group and supplementary groups unless given.
local function credentials(s, o, fname)
  if s.user ~= nil then
    local u = core.user(s.user)
    if not u then
      if math.type(s.user) == "integer" then u = { uid = s.user }
      else argerror(fname, 1, fmt("option 'user': no such user %q", s.user)) end
    end
    o.uid = u.uid
    if s.group == nil and u.gid then o.gid = u.gid end
    if s.groups == nil and u.groups then o.groups = u.groups end
  end
  if s.group ~= nil then
    local g = core.group(s.group)
    if not g then
      if math.type(s.group) == "integer" then g = s.group
      else argerror(fname, 1, fmt("option 'group': no such group %q", s.group)) end
    end
    o.gid = g
  end
  if s.groups ~= nil then
    local list = {}
    for i, g in ipairs(s.groups) do
      if not (type(g) == "string" and not g:find("\0", 1, true)) and not M.is_id(g) then
        argerror(fname, 1, fmt("option 'groups': entry %d must be a group name or an id from 0 to 4294967294, got %s",
          i, type(g) == "number" and tostring(g) or type(g)))
      end
      local id = core.group(g) or (math.type(g) == "integer" and g)
      if not id then argerror(fname, 1, fmt("option 'groups': no such group %q", tostring(g))) end
      list[i] = id
    end
    o.groups = list
  end
end

local STDIO_WORDS = { inherit = true, null = true, pipe = true }

-- One redirection as core.spawn takes it for child fd `fd`. `ctx` collects
-- files to close after the spawn and sinks to start; without it, the value
-- is only checked (nothing is opened or taken over).
local function redirection(v, fd, key, fname, ctx)
  local t = type(v)
  if v == nil then return "inherit" end
  if t == "string" then
    if STDIO_WORDS[v] then return v end
    if fd == 2 and v == "stdout" then return { same = 1 } end
    if fd == 1 and v == "stderr" then return { same = 2 } end
    local other = fd == 2 and ", stdout" or fd == 1 and ", stderr" or ""
    argerror(fname, 1, fmt("option '%s': unknown redirection %q (inherit, null, pipe%s, an fd, a file, {path=…}, "
      .. "a stream%s)", key, v, other, fd > 0 and ", a function" or ""))
  elseif math.type(v) == "integer" then
    if v < 0 then argerror(fname, 1, fmt("option '%s': negative fd %d", key, v)) end
    return v
  elseif t == "userdata" then
    local fdn = core.fileno(v)
    if fdn then return fdn end
    if io.type(v) == "closed file" then argerror(fname, 1, fmt("option '%s': the file is closed", key)) end
  elseif t == "function" then
    if fd == 0 then argerror(fname, 1, "option 'stdin': a function cannot be read from (use input = …)") end
    if not ctx then return end
    ctx.sinks[fd] = v
    return "pipe"
  elseif t == "table" and getmetatable(v) == Stream then
    -- The child reads what baton would read, or writes what baton would write.
    local want = fd == 0 and "r" or (fd <= 2 and "w")
    if want and v.mode and v.mode ~= want then
      argerror(fname, 1, fmt("option '%s': %s is the end of a pipe baton %s; the child would need the other end", key,
        v.name or "the stream", v.mode == "r" and "reads" or "writes"))
    end
    if not ctx then return end -- whether it is still open is for when it runs
    if v.closed then argerror(fname, 1, fmt("option '%s': stream is closed", key)) end
    if v._eof and v._qh > v._qt then return fd == 0 and "null" or "close" end -- read to its end: nothing left
    if v._qh <= v._qt then
      -- Already read ahead (a header line, say): the child could not see
      -- those bytes in the fd, so baton feeds it through a pipe instead.
      if fd ~= 0 then argerror(fname, 1, fmt("option '%s': the stream holds unread input", key)) end
      ctx.pump = v
      return "pipe"
    end
    -- Handed over: the child gets the pipe as a plain blocking fd, and baton
    -- lets go of its end after the spawn (or a reader would never see EOF,
    -- a writer never SIGPIPE).
    v._ud:read_stop()
    local fdn = v:fileno()
    core.setblocking(fdn)
    ctx.handoff[#ctx.handoff + 1] = v
    return fdn
  elseif t == "table" and type(v.path) == "string" then
    -- stdin and extra fds read unless told; stdout and stderr write
    -- (truncate, or append). An extra fd never truncates by default.
    local mode = v.mode or (fd == 0 and "r") or ((fd == 1 or fd == 2) and (v.append and "a" or "w"))
      or (v.append and "a" or "r")
    if type(mode) ~= "string" or not mode:match("^[rwa]%+?$") then
      argerror(fname, 1, fmt("option '%s': mode must be \"r\", \"w\", \"a\", \"r+\", \"w+\" or \"a+\"", key))
    end
    if not ctx then return end
    local f, msg, errno = io.open(v.path, mode .. "b")
    if not f then
      ctx.err, ctx.errno = msg, errno
      return "close"
    end
    ctx.files[#ctx.files + 1] = f
    return core.fileno(f)
  end
  argerror(fname, 1, fmt("option '%s': cannot redirect to a %s", key, t))
end

-- The child's fds from the options, indexed by fd + 1 as core.spawn takes
-- them. `over` (a pipeline's wiring) and `defaults` (run's capture) fill in
-- what the options leave unset; without `ctx` only checks.
local function stdio(s, fname, ctx, over, defaults)
  over, defaults = over or {}, defaults or {}
  local stdin, stdout, stderr = s.stdin, s.stdout, s.stderr
  if over.stdin ~= nil then stdin = over.stdin end
  if over.stdout ~= nil then stdout = over.stdout end
  if stderr == nil then stderr = over.stderr end
  if stdin == nil then stdin = defaults.stdin end
  if stdout == nil then stdout = defaults.stdout end
  if stderr == nil then stderr = defaults.stderr end
  if s.input ~= nil then
    if stdin ~= nil and stdin ~= "pipe" then argerror(fname, 1, "options 'input' and 'stdin' exclude each other") end
    stdin = "pipe"
  end
  if s.capture then -- run's: stdout and stderr default to pipes baton reads
    local out = s.stdout == nil or s.stdout == "pipe"
    local err = s.stderr == nil or s.stderr == "pipe"
    if not (out or err or (s.stdout == "stderr" and s.stderr == nil)) then
      argerror(fname, 1, "option 'capture': stdout and stderr both go elsewhere, so nothing would be captured")
    end
  end
  local fds = { [1] = redirection(stdin, 0, "stdin", fname, ctx) }
  if stdout == "stderr" and stderr == "stdout" then
    fds[2], fds[3] = 2, 1 -- a swap: each gets what the parent has on the other
  else
    fds[2] = redirection(stdout, 1, "stdout", fname, ctx)
    fds[3] = redirection(stderr, 2, "stderr", fname, ctx)
  end
  local extra = s.fds
  if over.fds then
    extra = {}
    for k, v in pairs(s.fds or {}) do extra[k] = v end
    for k, v in pairs(over.fds) do extra[k] = v end
  end
  if extra then
    for fd, v in pairs(extra) do
      if math.type(fd) ~= "integer" or fd < 3 or fd > 63 then
        argerror(fname, 1, fmt("option 'fds': keys must be fd numbers 3..63, got %s", tostring(fd)))
      end
      fds[fd + 1] = redirection(v, fd, "fds[" .. fd .. "]", fname, ctx)
    end
    -- Fds not named between 3 and the highest one named are closed.
    local top = 0
    for k in pairs(fds) do if k > top then top = k end end
    for i = 1, top do fds[i] = fds[i] or "close" end
  end
  return fds
end

--- Check a command as far as can be done without the system: option names
-- and kinds, env, rlimits, redirection values, fd numbers. What depends on
-- the system (users, files, programs) is checked when it runs.
-- @return argv, the option table
function M.check(spec, keys, fname)
  local argv, s = parse(spec, keys, fname)
  if s.env then M.env(s.env, true, fname) end
  if s.rlimits then M.rlimits(s.rlimits, fname) end
  stdio(s, fname)
  return argv, s
end

--- Build core.spawn's (and core.exec's) table from a parsed command. Returns
-- it and a context: `files` to close once spawned, `sinks` by fd, `handoff`
-- streams, `pump` (a stream to copy to stdin), `err`/`errno` when a
-- redirection file could not be opened. `over`: a pipeline's wiring
-- (`stdin`, `stdout`, `stderr`, `fds`, `pgid`).
function M.build(argv, s, fname, defaults, over)
  local ctx = { files = {}, sinks = {}, handoff = {} }
  local o = { argv = argv, cwd = s.cwd, setsid = s.setsid, umask = s.umask, nice = s.nice, cgroup = s.cgroup,
    listen_pid = s.listen_pid }
  if s.argv0 then
    o.file = argv[1]
    o.argv = { s.argv0, unpack(argv, 2) }
  end
  local pgroup = s.pgroup
  if pgroup == nil and s.timeout then pgroup = true end -- a timeout reaches the whole group
  if pgroup and not s.setsid then o.pgid = 0 end
  if over and over.pgid then o.pgid = over.pgid end
  if s.env or s.clearenv then o.env = M.env(s.env, s.clearenv, fname) end
  if s.rlimits then o.rlimits = M.rlimits(s.rlimits, fname) end
  if s.pdeathsig then o.pdeathsig = M.signum(s.pdeathsig, fname, 1) end
  credentials(s, o, fname)
  o.stdio = stdio(s, fname, ctx, over, defaults)
  return o, ctx
end

--- Close what `build` opened for the spawn (files, handed-over streams).
function M.release(ctx)
  for _, f in ipairs(ctx.files) do f:close() end
  for _, st in ipairs(ctx.handoff) do st:close() end
end

--- The failure triple of core.spawn's (core.exec's, core.lookpath's)
-- failure table, or of a redirection `build` could not open.
function M.spawn_failure(argv, o, f, ctx)
  if ctx and ctx.err then
    f = { code = errors.errname(ctx.errno), strerror = ctx.err, stage = "redirect" }
  end
  f.cwd, f.env, f.cgroup = o.cwd, o.env, o.cgroup
  return errors.spawn_failure(argv, f)
end

return M
