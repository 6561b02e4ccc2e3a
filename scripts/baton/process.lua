--- baton.process — spawn, run, wait for and signal processes.
--
-- Error convention (the same everywhere in baton):
--  * misuse — a wrong argument type, an unknown option, a bad signal name —
--    raises at once, naming the argument or option;
--  * an operational failure of a primitive — program not found, bad cwd,
--    a signal to a process already reaped, a write to a closed pipe —
--    returns `nil, "ENAME: message (context)", "ENAME"`;
--  * `run`, `output`, `lines` are the raising conveniences: they raise a
--    `baton.Error` when the program cannot start or (unless `check = false`)
--    does not succeed.
-- @module baton.process
local core = require "baton.core"
local task = require "baton.task"
local Stream = require "baton.stream"
local suspend = task.suspend

local M = {}
local concat, pack, unpack = table.concat, table.pack, table.unpack

--- Processes started and not detached, while they run (weak: a process
-- nobody refers to is still anchored by its handle until it exits).
M.live = setmetatable({}, { __mode = "k" })
local fmt = string.format

M.Stream = Stream

-- ---- errors ------------------------------------------------------------------

--- Raised by `run` and the other conveniences. Fields: `kind` ("spawn",
-- "exit"), `msg`, `code` (an errno name, for "spawn"), `result` (for
-- "exit"), `argv`. `tostring(err)` is the message.
local Error = { __name = "baton.Error" }
Error.__index = Error
Error.__tostring = function(e) return e.msg end
M.Error = Error

-- The stack level of the first caller outside baton's own Lua modules: where
-- a misuse error should point, however deep inside baton it was found.
local function user_level()
  local level = 3
  while true do
    local info = debug.getinfo(level, "S")
    if not info then return 1 end
    if not info.source:match("^@scripts/baton/") and info.what ~= "C" then return level - 1 end
    level = level + 1
  end
end
M.user_level = user_level

local function argerror(fname, n, msg)
  error(fmt("bad argument #%d to '%s' (%s)", n, fname, msg), user_level())
end

--- Quote a string as one word for POSIX sh.
function M.quote(s)
  if type(s) == "number" then s = tostring(s) end
  if type(s) ~= "string" then argerror("quote", 1, "string expected, got " .. type(s)) end
  if s:match("^[%w%-%./_=:,+@%%^]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- argv as a shell-like line for messages; long words and long lists are cut.
local quote_argv
function quote_argv(argv)
  local out = {}
  for i = 1, math.min(#argv, 20) do
    local a, sub = argv[i], nil
    if type(a) == "table" and a.__from then -- baton.from: shown as bash shows <(cmd)
      local c = a.__from
      a, sub = type(c) == "string" and c or tostring(getmetatable(c) and c or quote_argv(c)), true
    elseif type(a) ~= "string" then
      a = tostring(a)
    end
    if #a > 80 then a = a:sub(1, 60) .. fmt("…(%d bytes)", #a) end
    out[i] = (sub and "<(" .. a .. ")" or M.quote(a)):gsub("\n", "\\n")
  end
  if #argv > 20 then out[#out + 1] = fmt("…(%d more)", #argv - 20) end
  return concat(out, " ")
end
M.quote_argv = quote_argv

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
  local t
  if s.signal then
    t = fmt("killed by %s%s", s.signame or ("signal " .. s.signal), s.core and " (core dumped)" or "")
  elseif s.known == false then
    t = "exited (status unknown: not our child)"
  elseif s.code == nil then -- a pipeline ending in a Lua function stage
    t = s.ok and "ok" or "failed"
  else
    t = "exit " .. tostring(s.code)
  end
  return s.timed_out and (t .. " (timed out)") or t
end

-- ---- options ------------------------------------------------------------------------

-- Option name -> checker kind. Keys of `run` add to those of `spawn`.
local SPAWN_KEYS = {
  cwd = "string", env = "table", clearenv = "boolean", argv0 = "string",
  stdin = "redir", stdout = "redir", stderr = "redir", fds = "table", input = "string",
  setsid = "boolean", pgroup = "boolean", umask = "umask", nice = "nice",
  user = "id", group = "id", groups = "table", rlimits = "table", pdeathsig = "signal",
  timeout = "seconds", kill_signal = "signal", grace = "seconds", wait_delay = "seconds",
  detach = "boolean",
}
local RUN_KEYS = setmetatable({ capture = "boolean", check = "boolean" }, { __index = SPAWN_KEYS })
M.SPAWN_KEYS, M.RUN_KEYS = SPAWN_KEYS, RUN_KEYS

M.MAX_SECONDS = 1e9 -- about 31 years: longer is a mistake, and would not fit a timer

--- Whether `v` is a number of seconds baton can wait (0 … MAX_SECONDS).
function M.is_seconds(v)
  return type(v) == "number" and v >= 0 and v <= M.MAX_SECONDS
end

-- An id (uid or gid) the kernel can take: -1 would mean "unchanged" and
-- larger values wrap around, to root among others.
function M.is_id(v)
  return math.type(v) == "integer" and v >= 0 and v < 0xffffffff
end

local function check_value(fname, k, want, v)
  local t = type(v)
  if want == "redir" or want == "table" and t == "table" then return end
  if want == "integer" then
    if math.type(v) ~= "integer" then argerror(fname, 1, fmt("option '%s' must be an integer, got %s", k, t), 4) end
  elseif want == "seconds" then
    if not M.is_seconds(v) then
      argerror(fname, 1, fmt("option '%s' must be a number of seconds from 0 to %g, got %s", k, M.MAX_SECONDS,
        t == "number" and tostring(v) or t), 4)
    end
  elseif want == "umask" then
    if math.type(v) ~= "integer" or v < 0 or v > 511 then
      argerror(fname, 1, fmt("option 'umask' must be an integer from 0 to 0777 (511), got %s",
        math.type(v) == "integer" and tostring(v) or type(v)), 4)
    end
  elseif want == "nice" then
    if math.type(v) ~= "integer" or v < -20 or v > 19 then
      argerror(fname, 1, fmt("option 'nice' must be an integer from -20 to 19, got %s",
        math.type(v) == "integer" and tostring(v) or type(v)), 4)
    end
  elseif want == "id" then
    if t ~= "string" and not M.is_id(v) then
      argerror(fname, 1, fmt("option '%s' must be a name or an id from 0 to 4294967294, got %s", k,
        t == "number" and tostring(v) or t), 4)
    end
    if t == "string" and v:find("\0", 1, true) then argerror(fname, 1, fmt("option '%s' contains a NUL byte", k), 4) end
  elseif want == "string" and t == "string" then
    if k ~= "input" and v:find("\0", 1, true) then argerror(fname, 1, fmt("option '%s' contains a NUL byte", k), 4) end
  elseif want == "signal" then
    M.signum(v, fname, 1)
  elseif t ~= want then
    argerror(fname, 1, fmt("option '%s' must be a %s, got %s", k, want, t), 4)
  end
end

M.check_value = check_value

-- Validate a command table: returns argv and the table itself.
local function parse(spec, keys, fname)
  if type(spec) == "string" then spec = { spec } end
  if type(spec) == "table" and spec.__command then spec = spec.__command end
  if type(spec) ~= "table" then argerror(fname, 1, "table expected, got " .. type(spec), 3) end
  local argv = {}
  local n = #spec
  if n == 0 then argerror(fname, 1, "no program: the command table needs argv strings at [1], [2], …", 3) end
  local subs
  for i = 1, n do
    local a = spec[i]
    local t = type(a)
    if t == "number" then a = tostring(a)
    elseif t == "table" and a.__from then
      subs = subs or {}
      subs[i] = a.__from -- process substitution: replaced by /dev/fd/N at spawn
      a = "/dev/fd/?"
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
      check_value(fname, k, want, v)
    end
  end
  return argv, spec, subs
end

--- `baton.from(cmd)` as an argument: the command's output, as a path
-- (`/dev/fd/N`) the program can open — bash's `<(cmd)`.
function M.from(cmd)
  if type(cmd) ~= "table" and type(cmd) ~= "string" then argerror("from", 1, "command expected, got " .. type(cmd)) end
  return { __from = cmd }
end

local function build_env(env, clear, fname)
  local list, n, seen = {}, 0, {}
  if env then
    for k, v in pairs(env) do
      if type(k) ~= "string" or k == "" or k:find("[=%z]") then
        argerror(fname, 1, fmt("option 'env': invalid variable name %q", tostring(k)), 4)
      end
      local tv = type(v)
      if tv ~= "string" and tv ~= "number" and v ~= false then
        argerror(fname, 1, fmt("option 'env': value of %s must be a string, a number or false, got %s", k, tv), 4)
      end
      if tv == "string" and v:find("\0", 1, true) then
        argerror(fname, 1, fmt("option 'env': value of %s contains a NUL byte", k), 4)
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
      if not seen[kv:match("^([^=]*)")] then
        n = n + 1
        list[n] = kv
      end
    end
  end
  return list
end

local function rlimits(t, fname)
  local out = {}
  for name, v in pairs(t) do
    local res = core.RLIMIT[name]
    if not res then argerror(fname, 1, fmt("option 'rlimits': unknown limit %q", tostring(name)), 4) end
    local cur, max
    if type(v) == "table" then cur, max = v[1], v[2] or v[1] else cur, max = v, v end
    local function num(x)
      if x == "unlimited" or x == math.huge then return -1 end
      if math.type(x) ~= "integer" or x < 0 then
        argerror(fname, 1, fmt("option 'rlimits': %s must be a non-negative integer or 'unlimited'", name), 5)
      end
      return x
    end
    out[#out + 1] = { res, num(cur), num(max) }
  end
  return out
end

-- uid, gid and groups for user=/group=/groups=, like su: a user name brings
-- its primary group and supplementary groups unless given.
local function credentials(s, o, fname)
  if s.user ~= nil then
    local u, msg = core.user(s.user)
    if not u then
      if math.type(s.user) == "integer" then u = { uid = s.user }
      else argerror(fname, 1, fmt("option 'user': no such user %q", s.user), 4) end
    end
    o.uid = u.uid
    if s.group == nil and u.gid then o.gid = u.gid end
    if s.groups == nil and u.groups then o.groups = u.groups end
  end
  if s.group ~= nil then
    local g = core.group(s.group)
    if not g then
      if math.type(s.group) == "integer" then g = s.group
      else argerror(fname, 1, fmt("option 'group': no such group %q", s.group), 4) end
    end
    o.gid = g
  end
  if s.groups ~= nil then
    local list = {}
    for i, g in ipairs(s.groups) do
      if not (type(g) == "string" and not g:find("\0", 1, true)) and not M.is_id(g) then
        argerror(fname, 1, fmt("option 'groups': entry %d must be a group name or an id from 0 to 4294967294, got %s",
          i, type(g) == "number" and tostring(g) or type(g)), 4)
      end
      local id = core.group(g) or (math.type(g) == "integer" and g)
      if not id then argerror(fname, 1, fmt("option 'groups': no such group %q", tostring(g)), 4) end
      list[i] = id
    end
    o.groups = list
  end
end

local STDIO_WORDS = { inherit = true, null = true, pipe = true }

-- Turn one redirection into what core.spawn takes for child fd `fd`.
-- `ctx` collects files to close after the spawn and sinks to start; without
-- it, the value is only checked (nothing is opened or taken over).
local function redirection(v, fd, key, fname, ctx)
  local t = type(v)
  if v == nil then return "inherit" end
  if t == "string" then
    if STDIO_WORDS[v] then return v end
    if fd == 2 and v == "stdout" then return { same = 1 } end
    if fd == 1 and v == "stderr" then return { same = 2 } end
    argerror(fname, 1, fmt("option '%s': unknown redirection %q (inherit, null, pipe%s, an fd, a file, {path=…}, a stream%s)",
      key, v, fd == 2 and ", stdout" or fd == 1 and ", stderr" or "", fd > 0 and ", a function" or ""), 4)
  elseif math.type(v) == "integer" then
    if v < 0 then argerror(fname, 1, fmt("option '%s': negative fd %d", key, v), 4) end
    return v
  elseif t == "userdata" then
    local fdn = core.fileno(v)
    if fdn then return fdn end
    if io.type(v) == "closed file" then argerror(fname, 1, fmt("option '%s': the file is closed", key), 4) end
  elseif t == "function" then
    if fd == 0 then argerror(fname, 1, "option 'stdin': a function cannot be read from (use input = …)", 4) end
    if not ctx then return end
    ctx.sinks[fd] = v
    return "pipe"
  elseif t == "table" and getmetatable(v) == Stream then
    if not ctx then return end -- whether it is still open is for when it runs
    if v.closed then argerror(fname, 1, fmt("option '%s': stream is closed", key), 4) end
    if v._eof and v._qh > v._qt then return fd == 0 and "null" or "close" end -- read to its end: nothing left
    if v._qh <= v._qt then
      -- Already read ahead (a header line, say): the child could not see
      -- those bytes in the fd, so baton feeds it through a pipe instead.
      if fd ~= 0 then argerror(fname, 1, fmt("option '%s': the stream holds unread input", key), 4) end
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
      argerror(fname, 1, fmt("option '%s': mode must be \"r\", \"w\", \"a\", \"r+\", \"w+\" or \"a+\"", key), 4)
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
  argerror(fname, 1, fmt("option '%s': cannot redirect to a %s", key, t), 4)
end

-- Build the options table for core.spawn / core.exec. `over` (from
-- pipelines) sets stdin/stdout/stderr to wired fds and joins a process group.
local function build(argv, s, fname, defaults, over)
  local ctx = { files = {}, sinks = {}, handoff = {} }
  local o = { argv = argv, cwd = s.cwd, setsid = s.setsid, umask = s.umask, nice = s.nice }
  if s.argv0 then
    o.file = argv[1]
    o.argv = { s.argv0, unpack(argv, 2) }
  end
  local pgroup = s.pgroup
  if pgroup == nil and s.timeout then pgroup = true end -- a timeout reaches the whole group
  if pgroup and not s.setsid then o.pgid = 0 end
  if over and over.pgid then o.pgid = over.pgid end
  if s.env or s.clearenv then o.env = build_env(s.env, s.clearenv, fname) end
  if s.rlimits then o.rlimits = rlimits(s.rlimits, fname) end
  if s.pdeathsig then o.pdeathsig = M.signum(s.pdeathsig, fname, 1) end
  credentials(s, o, fname)

  local stdin, stdout, stderr = s.stdin, s.stdout, s.stderr
  if over then
    if over.stdin ~= nil then stdin = over.stdin end
    if over.stdout ~= nil then stdout = over.stdout end
    if over.stderr ~= nil and stderr == nil then stderr = over.stderr end
  end
  if defaults then
    if stdin == nil then stdin = defaults.stdin end
    if stdout == nil then stdout = defaults.stdout end
    if stderr == nil then stderr = defaults.stderr end
  end
  if s.input ~= nil then
    if stdin ~= nil and stdin ~= "pipe" then argerror(fname, 1, "options 'input' and 'stdin' exclude each other", 3) end
    stdin = "pipe"
  end
  local stdio = {}
  if stdout == "stderr" and stderr == "stdout" then
    -- A swap: each gets what the parent has on the other.
    stdio[1], stdio[2], stdio[3] = redirection(stdin, 0, "stdin", fname, ctx), 2, 1
  else
    stdio[1] = redirection(stdin, 0, "stdin", fname, ctx)
    stdio[2] = redirection(stdout, 1, "stdout", fname, ctx)
    stdio[3] = redirection(stderr, 2, "stderr", fname, ctx)
  end
  local fds = s.fds
  if over and over.fds then
    fds = {}
    for k, v in pairs(s.fds or {}) do fds[k] = v end
    for k, v in pairs(over.fds) do fds[k] = v end
  end
  if fds then
    for fd, v in pairs(fds) do
      if math.type(fd) ~= "integer" or fd < 3 or fd > 63 then
        argerror(fname, 1, fmt("option 'fds': keys must be fd numbers 3..63, got %s", tostring(fd)), 3)
      end
      stdio[fd + 1] = redirection(v, fd, "fds[" .. fd .. "]", fname, ctx)
    end
    -- Fds not named between 3 and the highest one named are closed.
    local top = 0
    for k in pairs(stdio) do if k > top then top = k end end
    for i = 1, top do stdio[i] = stdio[i] or "close" end
  end
  o.stdio = stdio
  return o, ctx
end

--- Check a spec as far as can be done without the system: option names and
-- kinds, env, rlimits, redirection values, fd numbers. What depends on the
-- system (users, files, programs) is checked when it runs.
function M.check_spec(spec, keys, fname)
  local argv, s = parse(spec, keys, fname)
  if s.env then build_env(s.env, true, fname) end
  if s.rlimits then rlimits(s.rlimits, fname) end
  if s.input ~= nil and s.stdin ~= nil and s.stdin ~= "pipe" then
    argerror(fname, 1, "options 'input' and 'stdin' exclude each other")
  end
  redirection(s.stdin, 0, "stdin", fname)
  redirection(s.stdout, 1, "stdout", fname)
  redirection(s.stderr, 2, "stderr", fname)
  for fd, v in pairs(s.fds or {}) do
    if math.type(fd) ~= "integer" or fd < 3 or fd > 63 then
      argerror(fname, 1, fmt("option 'fds': keys must be fd numbers 3..63, got %s", tostring(fd)))
    end
    redirection(v, fd, "fds[" .. fd .. "]", fname)
  end
  return argv, s
end

-- ---- processes ----------------------------------------------------------------------

--- A running or finished child.
-- Fields: `pid`, `pgid` (when it leads a group), `argv`, `path`, `cwd`,
-- `stdin`, `stdout`, `stderr` and `fds[n]` (streams, for "pipe"),
-- `status` (nil until done), `timed_out`.
-- @type Process
local Process = { __name = "baton.process" }
Process.__index = Process
M.Process = Process

local function envpath(o)
  if o.env then
    for i = 1, #o.env do
      local p = o.env[i]:match("^PATH=(.*)")
      if p then return p end
    end
    return nil
  end
  return os.getenv("PATH")
end

local function spawn_error(argv, o, code, strerr, stage, path)
  local prog = argv[1]
  local cwd = o.cwd or core.cwd() or "?"
  local detail
  if stage == "lookup" then
    local p = envpath(o)
    if code == "ENOENT" then
      detail = fmt("not found in PATH (PATH=%s)", p or "")
      -- Go's ErrDot lesson: say why a program in a relative PATH entry was not used.
      for dir in (p or ""):gmatch("[^:]*") do
        if dir:sub(1, 1) ~= "/" then
          local rel = (dir == "" and "." or dir) .. "/" .. prog
          local f = io.open(o.cwd and (o.cwd .. "/" .. rel) or rel) -- relative to the child's cwd
          if f then
            f:close()
            detail = detail .. fmt("; %s exists, but relative PATH entries are not searched: name it with a '/'", rel)
            break
          end
        end
      end
    else
      detail = fmt("%s (PATH=%s)", strerr, p or "")
    end
  elseif stage == "chdir" then
    detail = fmt("cannot change to cwd %q: %s", cwd, strerr)
  elseif stage == "exec" then
    detail = fmt("exec %s: %s", path, strerr)
  elseif stage == "credentials" then
    detail = fmt("cannot switch user or groups: %s", strerr)
  elseif stage == "limits" then
    detail = fmt("cannot apply limits (rlimits, nice, pdeathsig): %s", strerr)
  elseif stage == "stdio" then
    detail = fmt("cannot set up fds: %s", strerr)
  else
    detail = fmt("%s failed: %s", stage, strerr)
  end
  local where = (path and path ~= "") and ("; path: " .. path) or ""
  return fmt("%s: cannot run %q: %s (argv: %s%s; cwd: %s)", code, prog, detail, quote_argv(argv), where, cwd)
end

-- The message and code for a redirection file that could not be opened.
local function redirect_error(ctx, argv, o)
  local code = ctx.errno and core.errname(ctx.errno) or "EIO"
  return fmt("%s: cannot run %q: cannot open a redirection: %s (argv: %s; cwd: %s)", code, argv[1], ctx.err,
    quote_argv(argv), o.cwd or core.cwd() or "?"), code
end

local function close_files(ctx)
  for _, f in ipairs(ctx.files) do f:close() end
  for _, st in ipairs(ctx.handoff or {}) do st:close() end
end

-- The group or the process: where timeouts and terminate send signals.
local function send(p, sig)
  if p.pgid then
    local ok, msg, code = core.killpg(p.pgid, sig)
    if ok or code ~= "ESRCH" or not p._ud then return ok, msg, code end
  end
  return p._ud:kill(sig)
end

local start

-- Start the `baton.from` commands of an argv: each writes into a pipe whose
-- read end the main process gets at a free fd; argv names it /dev/fd/N.
local function start_subs(argv, s, subs, fname, over)
  over = over or {}
  local fds = {}
  over.fds = over.fds or {}
  local used = {}
  for k in pairs(s.fds or {}) do used[k] = true end
  local fd = 3
  local inner, held = {}, {}
  for i, sub in pairs(subs) do
    while used[fd] or over.fds[fd] do fd = fd + 1 end
    local r, w = core.pipe()
    local p, msg, code = start(M.with_options(sub, { stdout = w }, true), RUN_KEYS, fname)
    core.close(w)
    if not p then
      core.close(r)
      for _, q in ipairs(inner) do q:close() end
      for _, h in ipairs(held) do core.close(h) end
      return nil, msg, code
    end
    if p.detach then p:detach() end
    inner[#inner + 1] = p
    held[#held + 1] = r
    over.fds[fd] = r
    argv[i] = "/dev/fd/" .. fd
    fds[#fds + 1] = fd
    fd = fd + 1
  end
  return over, inner, held
end

function start(spec, keys, fname, defaults, over)
  if type(spec) == "table" and spec.__start then return spec:__start(keys, fname, defaults) end
  local argv, s, subs = parse(spec, keys, fname)
  local inner, held
  if subs then
    over, inner, held = start_subs(argv, s, subs, fname, over)
    if not over then return nil, inner, held end
  end
  local built, o, ctx = pcall(build, argv, s, fname, defaults, over)
  if not built then
    for _, q in ipairs(inner or {}) do q:close() end
    for _, h in ipairs(held or {}) do core.close(h) end
    error(o, 0)
  end
  if held then
    -- the raw read ends are handed to the child by core.spawn below; close after
    for _, h in ipairs(held) do ctx.files[#ctx.files + 1] = { close = function() core.close(h) end } end
  end
  if ctx.err then
    close_files(ctx)
    for _, q in ipairs(inner or {}) do q:close() end
    return nil, redirect_error(ctx, argv, o)
  end
  local ud, pipes, strerr, stage, path = core.spawn(o)
  close_files(ctx)
  if not ud then
    local code = pipes
    for _, q in ipairs(inner or {}) do q:close() end
    return nil, spawn_error(argv, o, code, strerr, stage, path), code
  end
  local p = setmetatable({
    pid = ud:pid(), argv = argv, path = ud:path(), cwd = o.cwd, _ud = ud, _waiters = {},
    _drains = {}, started = core.now(), fds = {}, timed_out = false,
  }, Process)
  M.owned[p.pid] = p
  -- A pipeline stage does not lead a group of its own: the pipeline's group is
  -- the Run's, and a stage's own timeout must reach only that stage.
  if (o.setsid or o.pgid == 0) and not (over and over.pgid) then p.pgid = p.pid end
  for fd, st in pairs(pipes) do
    local name = fd == 0 and "stdin" or fd == 1 and "stdout" or fd == 2 and "stderr" or ("fd " .. fd)
    local stream = Stream.new(st, name)
    if fd <= 2 then p[name] = stream end
    p.fds[fd] = stream
  end
  for fd, fn in pairs(ctx.sinks) do
    local stream = p.fds[fd]
    if fd == 1 then p.stdout = nil elseif fd == 2 then p.stderr = nil end
    p:_drain(stream, fn)
  end
  if s.input ~= nil then
    local input = s.input
    local stdin = p.stdin
    p.stdin = nil
    task.go_internal(function()
      stdin:write(input) -- EPIPE (the child did not read it all) is not an error here
      stdin:close()
    end)
  elseif ctx.pump then
    -- stdin = a stream that was read ahead: copy it, buffered bytes first.
    local src, stdin = ctx.pump, p.stdin
    p.stdin = nil
    task.go_internal(function()
      while true do
        local chunk = src:read()
        -- at the end, or EPIPE: the child stopped reading
        if not chunk or not stdin:write(chunk) then break end
      end
      stdin:close()
      src:close()
    end)
    p:_subscribe(function() src:close() end) -- the child is done: so is the copy
  end
  p._timeout, p._kill_signal, p._grace, p._wait_delay = s.timeout, s.kill_signal or "TERM", s.grace or 1, s.wait_delay
  ud:on_exit(function(code, sig, coredump, known)
    p:_exited(code, sig, coredump, known)
  end)
  if s.timeout then p:_arm_timeout(s.timeout) end
  if inner then
    -- Done only when the substituted commands are done too.
    p.inputs = inner
    for _, q in ipairs(inner) do
      p._drains[#p._drains + 1] = { proc = q, wait = function() q:wait() end }
    end
  end
  if not s.detach then M.track(p) end
  return p
end
M.start = start

-- Our children by pid (weak): adopting one gives its own handle back, or
-- a second handle would reap it and take its status away.
M.owned = setmetatable({}, { __mode = "v" })

--- Record a process or pipeline in the enclosing scope and among the live
-- ones the runner stops on a signal (undone by `detach`).
function M.track(p)
  local scope = task.scope()
  if scope then scope:_add(p) end
  M.live[p] = true
end
M.build_env = build_env
M.spawn_error = spawn_error
M.Status = Status

-- Read `stream` to its end straight from the loop's read callback, handing
-- each chunk to `fn` (then nil at the end): no task switch per chunk, which
-- keeps sinks and captures at pipe speed. `fn` must not wait. The process is
-- done only once every such stream is drained (or the drain bound passed).
function Process:_drain(stream, fn)
  local d = { stream = stream, done = false }
  local function finish()
    if d.done then return end
    d.done = true
    local w = d.wake
    d.wake = nil
    if w then w() end
  end
  d.wait = function()
    if not d.done then suspend(function(wake) d.wake = wake end) end
  end
  stream.on_close = finish -- closed early (the drain bound): done here
  local tee = stream.tee
  local ok = stream._ud:read_start(function(data)
    if data then
      if tee then tee:write(data) end
      local good, err = pcall(fn, data)
      if not good then
        d.err = err
        stream:close()
      end
      return
    end
    local good, err = pcall(fn, nil)
    if not good then d.err = err end
    stream:close()
  end)
  if tee then
    local prev = stream.on_close
    stream.on_close = function()
      tee:close()
      prev()
    end
  end
  if not ok then stream:close() end
  self._drains[#self._drains + 1] = d
  return d
end

-- After `secs`, `_kill_signal` to the group (or the process), then KILL after
-- `_grace` seconds. Shared with pipelines (a Run has a pgid and no _ud).
function Process:_arm_timeout(secs)
  local timer = core.timer()
  self._timer = timer
  local sig = M.signum(self._kill_signal, "spawn", 1)
  timer:start(math.floor(secs * 1000 + 0.5), 0, function()
    if self.status then return end
    self.timed_out = true
    local exited = self._exit
    if exited then
      -- It exited in time, but what it started still holds its output open:
      -- that counts against the timeout too (its group gets the signals).
      exited.timed_out, exited.ok = true, false
      exited.failure = exited.failure or "timed out: it exited, but its output was still held open"
      self:_bound_drains(self._wait_delay or 1)
    end
    self:_send(sig)
    -- Done already (a pipeline's Lua stages end at once when cancelled)?
    if sig ~= 9 and self._timer == timer then
      timer:start(math.floor(self._grace * 1000 + 0.5), 0, function()
        if not self.status then self:_send(9) end
      end)
    end
  end)
end

-- Stop waiting for what the process is not done without: close the pipes
-- baton drains, kill the commands feeding it (baton.from).
function Process:_close_drains()
  for _, d in ipairs(self._drains) do
    if d.stream then d.stream:close() elseif d.proc and not d.proc.status then d.proc:_send(9) end
  end
end

-- Stop waiting for the drained pipes after `secs`: close them.
function Process:_bound_drains(secs)
  if self._drain_timer then return end
  local timer = core.timer()
  self._drain_timer = timer
  timer:start(math.floor(secs * 1000 + 0.5), 0, function() self:_close_drains() end)
end

-- Called once from the loop when the child has been reaped.
function Process:_exited(code, sig, coredump, known)
  self.ended = core.now()
  local st = setmetatable({
    ok = code == 0, code = code, signal = sig, signame = sig and core.signame(sig) or nil,
    core = coredump or false, known = known ~= false, timed_out = self.timed_out,
    rusage = self._ud:rusage(),
  }, Status)
  self._exit = st
  self:_finish()
end

-- The exit status is known (self._exit): done once the pipes baton reads
-- (sinks, captures, substitutions) reached their end, or the drain bound
-- passed: by default unbounded, 1 s after a timeout kill. Shared with
-- pipelines.
function Process:_finish()
  if #self._drains == 0 then return self:_done() end
  local bound = self._wait_delay or (self.timed_out and 1 or nil)
  if bound then self:_bound_drains(bound) end
  task.go_internal(function()
    for _, d in ipairs(self._drains) do d.wait() end
    self:_done()
  end)
end

function Process:_done()
  -- The timeout, if any, ran until now: the output counts too.
  if self._timer then
    self._timer:close()
    self._timer = nil
  end
  if self._drain_timer then
    self._drain_timer:close()
    self._drain_timer = nil
  end
  M.live[self] = nil
  if self._scope then self._scope:_remove(self) end -- a long-lived scope keeps only what runs
  local st = self._exit
  -- A sink that raised fails the process, whatever its exit: the error is
  -- the cause (the child may then have died of SIGPIPE).
  for _, d in ipairs(self._drains) do
    if d.err ~= nil and st.sink_error == nil then
      st.ok, st.sink_error = false, d.err
      local f = fmt("failed: its %s sink raised: %s", d.stream.name or "output", tostring(d.err))
      st.failure = st.failure and (f .. "; " .. st.failure) or f
    end
  end
  self.status = st
  local ws = self._waiters
  self._waiters = {}
  for fn in pairs(ws) do fn(self.status) end
end

-- What waiters of an adopted process get when it is released.
local RELEASED = setmetatable({}, { __tostring = function() return "released" end })

--- Call `fn(status)` once the process is done (at once if it is). Returns a
-- function that cancels the subscription.
function Process:_subscribe(fn)
  if self.status then
    fn(self.status)
    return function() end
  end
  if self.released then error("baton: process " .. self.pid .. " was released (close): it cannot be waited for", 3) end
  self._waiters[fn] = true
  if self.adopted then self._ud:ref(true) end
  return function()
    self._waiters[fn] = nil
    if self.adopted and not self.status and not self.released and next(self._waiters) == nil then self._ud:ref(false) end
  end
end

--- Start a process: `{prog, args…, option = value…}`, a program name, or a
-- command from `baton.cmd`. See docs/reference.md for every option.
-- @return a Process, or nil, msg, code when it cannot start
function M.spawn(spec)
  -- A command may carry run's options too: `capture` pipes its output, and
  -- `check` has nothing to do for a spawn.
  if type(spec) == "table" and spec.__command and spec.__command.capture then
    return start(spec, RUN_KEYS, "spawn", { stdout = "pipe", stderr = "pipe" })
  end
  return start(spec, type(spec) == "table" and spec.__command and RUN_KEYS or SPAWN_KEYS, "spawn")
end

local function timeout_arg(fname, timeout)
  if timeout ~= nil and not M.is_seconds(timeout) then
    argerror(fname, 1, fmt("timeout must be a number of seconds from 0 to %g", M.MAX_SECONDS), 3)
  end
end

--- Wait until the process is done: exited and, for pipes baton reads itself
-- (sinks, captures), drained. Returns the status (`ok`, `code`, `signal`,
-- `signame`, `core`, `timed_out`, `rusage`), or with a `timeout` in seconds
-- `nil, "ETIMEDOUT: …", "ETIMEDOUT"` if it is not done by then.
function Process:wait(timeout)
  timeout_arg("wait", timeout)
  if self.status then return self.status end
  local timer = timeout and core.timer()
  local unsubscribe
  local ok, st = pcall(suspend, function(wake)
    unsubscribe = self:_subscribe(wake)
    if timer then timer:start(math.floor(timeout * 1000 + 0.5), 0, function() wake(false) end) end
  end)
  -- Whatever ended the wait (done, timeout, cancel), leave nothing behind.
  if timer then timer:close() end
  if unsubscribe then unsubscribe() end
  if not ok then error(st, 0) end
  if st == RELEASED then error("baton: process " .. self.pid .. " was released (close) while waited for", 2) end
  if not st then
    return nil, fmt("ETIMEDOUT: %s still running after %gs", self.pid and ("process " .. self.pid) or "it",
      timeout), "ETIMEDOUT"
  end
  return st
end

--- The status if the process is done, else nil; never waits.
function Process:poll() return self.status end

--- Send a signal (name or number) through the pidfd.
-- @return true, or nil, msg, code ("ESRCH" once the process has exited)
function Process:signal(sig)
  return self._ud:kill(M.signum(sig, "signal", 1))
end

--- Send a signal to the process group the process leads (pgroup/setsid).
function Process:signal_group(sig)
  local n = M.signum(sig, "signal_group", 1)
  if not self.pgid then
    error("baton: process " .. self.pid .. " does not lead a process group (spawn it with pgroup = true)", 2)
  end
  return core.killpg(self.pgid, n)
end

--- Send SIGKILL.
function Process:kill() return self._ud:kill(9) end

-- Stop `p` (a process or a pipeline run) and return its status: TERM, up to
-- `grace` seconds (none: straight to KILL), KILL, and after one more second
-- stop waiting for pipes that something else still holds open. Signals go
-- to the group when there is one, also after the leader exited: its children
-- may be what holds the pipes.
function M.stop(p, grace, closing)
  if p.status then return p.status end
  if closing and not task.can_wait() then
    -- Unwinding an error through <close> (a scope, `local p <close>`): Lua
    -- cannot wait here, so a task of baton's does it (TERM goes out now).
    task.go_internal(function() M.stop(p, grace) end)
    return nil
  end
  local function signal(sig)
    if not p._exit or p.pgid then p:_send(sig) end
  end
  if grace > 0 then
    signal(15)
    p:wait(grace)
  end
  if not p.status then
    signal(9)
    if not p:wait(1) then p:_close_drains() end
  end
  return p:wait()
end

-- A signal to the process (its group) and to the commands feeding it
-- through baton.from, which are in no group of its.
function Process:_send(sig)
  local ok, msg, code = send(self, sig)
  for _, q in ipairs(self.inputs or {}) do
    if not q.status then send(q, sig) end
  end
  return ok, msg, code
end

--- TERM (the group, if it leads one), wait up to `grace` seconds (default
-- 5), then KILL; returns the status.
function Process:terminate(grace)
  timeout_arg("terminate", grace)
  return M.stop(self, grace or 5)
end

--- Close the pipes; kill and reap the process if it still runs. For
-- `local p <close> = baton.spawn{…}`.
function Process:close()
  if self.adopted then
    -- Not ours to kill (Go's Release): stop watching it.
    if not self.status and not self.released then
      self.released = true
      self._ud:release()
      M.live[self] = nil
      local ws = self._waiters
      self._waiters = {}
      for fn in pairs(ws) do fn(RELEASED) end -- their wait raises
    end
    return
  end
  M.stop(self, 0, true)
  for _, s in pairs(self.fds) do s:close() end
end
Process.__close = Process.close

--- Leave the enclosing scope: the process is not terminated when it ends.
function Process:detach()
  if self._scope then self._scope:_remove(self) end
  M.live[self] = nil
  return self
end

function Process:__tostring()
  return fmt("baton.process %d (%s)", self.pid, self.status and tostring(self.status) or "running")
end

-- ---- run and friends ----------------------------------------------------------------

local function raise_spawn(spec, msg, code, level)
  local argv = type(spec) == "table" and (spec.__command or spec) or { spec }
  error(setmetatable({ kind = "spawn", msg = msg, code = code, argv = { unpack(argv) } }, Error), level + 1)
end

local function failure_message(r)
  local what
  if r.failure then
    what = r.failure
  elseif r.timed_out then
    what = fmt("timed out and was %s", r.signal and ("killed by " .. (r.signame or r.signal)) or "stopped")
  elseif r.signal then
    what = "was killed by " .. (r.signame or r.signal)
  elseif r.code == nil then
    what = "exited with an unknown status"
  else
    what = "exited with code " .. r.code
  end
  local m = fmt("command %s %s", r.command or quote_argv(r.argv), what)
  if r.stderr and #r.stderr > 0 then
    m = m .. ": " .. r.stderr:sub(-400):gsub("%s+$", "")
  end
  return m
end

M.failure_message = failure_message

--- Run a command to completion. Options of `spawn`, plus `capture` (pipe
-- stdout and stderr into the result) and `check` (default true: raise a
-- baton.Error unless it exits 0).
-- @return result: `ok`, `code`, `signal`, `signame`, `core`, `timed_out`,
-- `stdout`, `stderr`, `pid`, `argv`, `duration`, `rusage`
function M.run(spec, level)
  level = level or 1
  local s = type(spec) == "table" and (spec.__command or spec.__options or spec) or nil
  local defaults
  if s and s.capture then defaults = { stdout = "pipe", stderr = "pipe" } end
  local p, msg, code = start(spec, RUN_KEYS, "run", defaults)
  if not p then raise_spawn(spec, msg, code, level + 1) end
  local captured = {}
  for _, name in ipairs { "stdout", "stderr" } do
    local stream = p[name]
    if stream then
      local chunks = {}
      captured[name] = chunks
      p:_drain(stream, function(chunk) chunks[#chunks + 1] = chunk end)
    end
  end
  local st = p:wait()
  local r = {
    ok = st.ok, code = st.code, signal = st.signal, signame = st.signame, core = st.core,
    timed_out = st.timed_out, rusage = st.rusage, pid = p.pid, argv = p.argv,
    duration = p.ended - p.started,
    -- pipelines: per-stage statuses (bash's PIPESTATUS) and the failing stage
    stages = st.stages, statuses = st.statuses, failed_stage = st.failed_stage,
    command = p.command, failure = st.failure,
  }
  for name, chunks in pairs(captured) do r[name] = concat(chunks) end
  if s and s.check == false or r.ok then return r end
  error(setmetatable({ kind = "exit", msg = failure_message(r), result = r, argv = p.argv }, Error), level + 1)
end

-- The spec with `extra` options added where it has none (`force`: replaced).
local function with_options(spec, extra, force)
  if type(spec) == "table" and spec.__with_options then return spec:__with_options(extra, force) end
  local s = type(spec) == "table" and (spec.__command or spec) or { spec }
  local copy = {}
  for k, v in pairs(s) do copy[k] = v end
  for k, v in pairs(extra) do
    if force or copy[k] == nil then copy[k] = v end
  end
  return copy
end
M.with_options = with_options

--- Run and return stdout, trailing newlines removed (like `$(…)` in sh).
-- Raises like `run`.
function M.output(spec)
  local o = type(spec) == "table" and (spec.__command or spec.__options or spec) or {}
  if o.stdout ~= nil and o.stdout ~= "pipe" then
    argerror("output", 1, "option 'stdout': output() returns stdout, so it cannot go elsewhere")
  end
  local capture = o.capture
  local extra = { stdout = "pipe" }
  if capture == nil then extra.stderr = "pipe" end
  local r = M.run(with_options(spec, extra), 2)
  return (r.stdout:gsub("\n+$", ""))
end

--- Did the command succeed (exit 0)? Never raises for a failed exit; raises
-- when it cannot start.
function M.ok(spec)
  return M.run(with_options(spec, { check = false }, true), 2).ok
end

--- Iterate over the lines of a command's stdout, as they come:
-- `for line in baton.lines{…} do … end`. Leaving the loop early (break,
-- error) kills and reaps the process. At the end, a failed exit raises
-- unless `check = false`.
function M.lines(spec)
  local check = type(spec) == "table" and (spec.__command or spec.__options or spec).check
  local copy = with_options(spec, { stdout = "pipe", check = false, capture = false }, true)
  local p, msg, code = start(copy, RUN_KEYS, "lines")
  if not p then raise_spawn(spec, msg, code, 2) end
  local out = p.stdout
  -- The iterator drains stdout: the process is done once it reached the end
  -- (or the drain bound of a timeout closed it).
  local drain, waker = { stream = out }, nil
  drain.wait = function()
    if not out.closed then suspend(function(w) waker = w end) end
  end
  out.on_close = function()
    local w = waker
    waker = nil
    if w then w() end
  end
  p._drains[#p._drains + 1] = drain
  local closer = setmetatable({}, {
    __close = function()
      out:close()
      if not p._exit then
        p:_send(9) -- a pipeline: its Lua stages too
      end
      -- Unwinding an error in a task (an interrupt, say), Lua cannot wait
      -- here: the loop then reaps the killed process on its own.
      if task.can_wait() then p:wait() end
    end,
  })
  local function iter()
    local line = out:read("l")
    if line then return line end
    out:close()
    local st = p:wait()
    if check ~= false and not st.ok then
      local r = { argv = p.argv, code = st.code, signal = st.signal, signame = st.signame, timed_out = st.timed_out,
        command = p.command, failure = st.failure }
      error(setmetatable({ kind = "exit", msg = failure_message(r), result = r, argv = p.argv }, Error), 2)
    end
    return nil
  end
  return iter, nil, nil, closer
end

--- Wait until one of several tasks or processes is done; returns its index
-- and the waitable itself.
function M.wait_any(list)
  if type(list) ~= "table" or #list == 0 then argerror("wait_any", 1, "non-empty list of tasks or processes expected") end
  for i, w in ipairs(list) do
    if type(w) ~= "table" or type(w._subscribe) ~= "function" then
      argerror("wait_any", 1, fmt("item %d cannot be waited for", i))
    end
    if w.status or w.done then return i, w end
  end
  local subs = {}
  local ok, i = pcall(suspend, function(wake)
    for j, w in ipairs(list) do subs[#subs + 1] = w:_subscribe(function() wake(j) end) end
  end)
  for _, unsubscribe in ipairs(subs) do unsubscribe() end
  if not ok then error(i, 0) end
  return i, list[i]
end

--- Watch a process that exists already (Go's os.FindProcess, through a
-- pidfd): signal it, wait for it. Its exit status is known only if it is our
-- child. Returns a Process, or nil, msg, code (ESRCH: no such process).
function M.adopt(pid)
  if math.type(pid) ~= "integer" or pid <= 0 then argerror("adopt", 1, "positive integer pid expected") end
  local mine = M.owned[pid]
  if mine and not mine._exit then return mine end
  local ud, msg, code = core.adopt(pid)
  if not ud then return nil, msg, code end
  local p = setmetatable({ pid = pid, argv = {}, path = ud:path(), _ud = ud, _waiters = {}, _drains = {},
    started = core.now(), fds = {}, timed_out = false, adopted = true }, Process)
  ud:on_exit(function(code2, sig, coredump, known) p:_exited(code2, sig, coredump, known) end)
  ud:ref(false) -- watching it keeps baton running only while someone waits
  return p
end

--- Replace the current process with the command (same options as spawn,
-- minus pipes). Returns only on failure: nil, msg, code.
function M.exec(spec)
  local argv, s = parse(spec, SPAWN_KEYS, "exec")
  if s.input or s.timeout or s.stdin == "pipe" or s.stdout == "pipe" or s.stderr == "pipe" then
    argerror("exec", 1, "exec cannot use pipes, input or a timeout: nothing would be left to serve them")
  end
  local o, ctx = build(argv, s, "exec")
  local piped = ctx.pump or next(ctx.sinks)
  for _, v in pairs(o.stdio) do piped = piped or v == "pipe" end
  if piped then
    close_files(ctx)
    argerror("exec", 1, "exec cannot use pipes, sinks or a stream read ahead: nothing would be left to serve them")
  end
  if ctx.err then
    close_files(ctx)
    return nil, redirect_error(ctx, argv, o)
  end
  local _, code, strerr, stage, path = core.exec(o)
  close_files(ctx)
  return nil, spawn_error(argv, o, code, strerr, stage, path), code
end

--- Find a program in PATH like the child will (absolute entries only).
-- @return the path, or nil, msg, code
function M.which(name, path)
  if type(name) ~= "string" then argerror("which", 1, "string expected, got " .. type(name)) end
  if name:find("\0", 1, true) then argerror("which", 1, "name contains a NUL byte") end
  if path ~= nil and type(path) ~= "string" then argerror("which", 2, "string expected, got " .. type(path)) end
  return core.lookpath(name, path, nil, true)
end

return M
