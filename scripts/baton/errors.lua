--- baton.errors — the one place baton's errors are made.
--
-- The rule (README, "Errors"), applied everywhere:
--  * misuse — a wrong argument type, an unknown option, a bad signal name,
--    using something after it was closed — raises at once with `argerror`
--    or `misuse`, naming the argument or option, at the line of the script
--    that made the call, however deep inside baton it was found;
--  * an operational failure of a primitive (program not found, bad cwd, a
--    signal to a process already reaped, a write to a pipe nobody reads)
--    returns `nil, "ENAME: message (context)", "ENAME"`: see `fail`;
--  * the raising conveniences (`run`, `output`, `lines`) raise a
--    `baton.Error` value, which carries the result or the errno name.
-- @module baton.errors
local core = require "baton.core"

local M = {}
local fmt, concat = string.format, table.concat
local getinfo = debug.getinfo

-- Sources of baton's own Lua modules: frames to skip when blaming a caller.
local own = {}

--- Mark the calling module as baton's own: misuse errors found in it point
-- past it, at the script's line.
function M.own()
  own[getinfo(2, "S").source] = true
end
M.own()

--- Whether `source` (a chunk name) is one of baton's own modules.
function M.is_own(source)
  return own[source] == true
end

--- The stack level (as `error` counts, from the caller of this function's
-- caller) of the first frame that is neither baton's own Lua nor C.
function M.user_level()
  local level = 3
  while true do
    local info = getinfo(level, "S")
    if not info then return 1 end
    if not own[info.source] and info.what ~= "C" then return level - 1 end
    level = level + 1
  end
end

--- Raise `bad argument #n to 'fname' (msg)` at the script's line.
function M.argerror(fname, n, msg)
  error(fmt("bad argument #%d to '%s' (%s)", n, fname, msg), M.user_level())
end

--- Raise unless a method was called on an object of its kind (`p.wait()`
-- instead of `p:wait()`, say): `is` says whether `self` is one.
function M.check_self(is, self, fname, kind)
  if not is then
    M.argerror(fname, 1, fmt("%s expected, got %s (call it as obj:%s(…))", kind,
      self == nil and "no value" or type(self), fname))
  end
end

--- Raise `baton: msg` (formatted) at the script's line: misuse that is not
-- about one argument (use after close, waiting where nothing can wake).
function M.misuse(msg, ...)
  if select("#", ...) > 0 then msg = fmt(msg, ...) end
  error("baton: " .. msg, M.user_level())
end

--- The failure triple of a primitive: `nil, "CODE: msg", "CODE"`.
function M.fail(code, msg, ...)
  if select("#", ...) > 0 then msg = fmt(msg, ...) end
  return nil, code .. ": " .. msg, code
end

--- The errno name for what `io.open` and friends return as their third value.
function M.errname(errno)
  return errno and core.errname(errno) or "EIO"
end

-- ---- naming commands in messages -------------------------------------------------

--- Quote a string as one word for POSIX sh.
function M.quote(s)
  if type(s) == "number" then s = tostring(s) end
  if type(s) ~= "string" then M.argerror("quote", 1, "string expected, got " .. type(s)) end
  if s:match("^[%w%-%./_=:,+@%%^]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- argv as a shell-like line for messages; long words and long lists are cut.
function M.quote_argv(argv)
  local out = {}
  for i = 1, math.min(#argv, 20) do
    local a, sub = argv[i], nil
    if type(a) == "table" and a.__from then -- baton.from: shown as bash shows <(cmd)
      local c = a.__from
      a, sub = type(c) == "string" and c or tostring(getmetatable(c) and c or M.quote_argv(c)), true
    elseif type(a) ~= "string" then
      a = tostring(a)
    end
    if #a > 80 then a = a:sub(1, 60) .. fmt("…(%d bytes)", #a) end
    out[i] = (sub and "<(" .. a .. ")" or M.quote(a)):gsub("\n", "\\n")
  end
  if #argv > 20 then out[#out + 1] = fmt("…(%d more)", #argv - 20) end
  return concat(out, " ")
end

-- ---- processes that cannot start ---------------------------------------------------

-- PATH of a spawn's environment list (nil: baton's own).
local function envpath(env)
  if not env then return os.getenv("PATH") end
  for i = 1, #env do
    local p = env[i]:match("^PATH=(.*)")
    if p then return p end
  end
end
M.envpath = envpath

local STAGES = {
  chdir = function(f, cwd) return fmt("cannot change to cwd %q: %s", cwd, f.strerror) end,
  exec = function(f) return fmt("exec %s: %s", f.path, f.strerror) end,
  credentials = function(f) return fmt("cannot switch user or groups: %s", f.strerror) end,
  limits = function(f) return fmt("cannot apply limits (rlimits, nice, pdeathsig): %s", f.strerror) end,
  stdio = function(f) return fmt("cannot set up fds: %s", f.strerror) end,
  redirect = function(f) return fmt("cannot open a redirection: %s", f.strerror) end,
  cgroup = function(f)
    return fmt("cannot join cgroup %q: %s", f.cgroup or "?",
      f.code == "EINVAL" and "not a cgroup v2 directory" or f.strerror)
  end,
}

-- Why a lookup failed, and (Go's ErrDot lesson) why a program found in a
-- relative PATH entry was not used.
function STAGES.lookup(f, _, prog)
  local p = envpath(f.env)
  if f.code ~= "ENOENT" then return fmt("%s (PATH=%s)", f.strerror, p or "") end
  local detail = fmt("not found in PATH (PATH=%s)", p or "")
  for dir in (p or ""):gmatch("[^:]*") do
    if dir:sub(1, 1) ~= "/" then
      local rel = (dir == "" and "." or dir) .. "/" .. prog
      local file = io.open(f.cwd and (f.cwd .. "/" .. rel) or rel) -- relative to the child's cwd
      if file then
        file:close()
        return detail .. fmt("; %s exists, but relative PATH entries are not searched: name it with a '/'", rel)
      end
    end
  end
  return detail
end

--- The failure triple of a process that could not start. `f`: `code`,
-- `strerror`, `stage` (lookup, cgroup, chdir, exec, credentials, limits,
-- stdio, redirect, …), `path`, and the spawn's `cwd`, `env` list and `cgroup`.
function M.spawn_failure(argv, f)
  local prog = argv[1]
  local cwd = f.cwd or core.cwd() or "?"
  local stage = STAGES[f.stage]
  local detail = stage and stage(f, cwd, prog) or fmt("%s failed: %s", f.stage, f.strerror)
  local where = (f.path and f.path ~= "") and ("; path: " .. f.path) or ""
  return nil, fmt("%s: cannot run %q: %s (argv: %s%s; cwd: %s)", f.code, prog, detail, M.quote_argv(argv), where, cwd),
    f.code
end

-- ---- the raising conveniences --------------------------------------------------------

--- Raised by `run` and the other conveniences. Fields: `kind` ("spawn",
-- "exit"), `msg`, `code` (an errno name, for "spawn"), `result` (for
-- "exit"), `argv`. `tostring(err)` is the message.
local Error = { __name = "baton.Error" }
Error.__index = Error
Error.__tostring = function(e) return e.msg end
M.Error = Error

--- Raise the `baton.Error` of a command that could not start.
function M.raise_spawn(argv, msg, code)
  error(setmetatable({ kind = "spawn", msg = msg, code = code, argv = argv }, Error), M.user_level())
end

--- What went wrong with a finished command, as a sentence.
function M.failure_message(r)
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
  local m = fmt("command %s %s", r.command or M.quote_argv(r.argv), what)
  if r.stderr and #r.stderr > 0 then
    m = m .. ": " .. r.stderr:sub(-400):gsub("%s+$", "")
  end
  return m
end

--- Raise the `baton.Error` of a command that did not succeed.
function M.raise_exit(r)
  error(setmetatable({ kind = "exit", msg = M.failure_message(r), result = r, argv = r.argv }, Error), M.user_level())
end

return M
