--- baton.procfile — Procfiles and `.env` files read as honcho reads them, and
-- turned into `baton.supervisor` declarations.
--
--     local pf = require "baton.procfile"
--     local entries = pf.parse_procfile(io.open("Procfile"):read("a"), "Procfile")
--     local env = pf.parse_env(io.open(".env"):read("a"), ".env")
--     local decls, order = pf.declarations(entries, { env = env, concurrency = pf.concurrency("web=2") })
--     local sv = baton.supervisor(decls)
--
-- The rules are honcho's (2.0.0; the same since 1.1.0), found by reading and
-- running it, so that a Procfile behaves here as it does there: the same
-- process types, the same `.env` values (honcho's `.env` is a line-by-line
-- shlex in POSIX mode, with its oddities: spaces outside quotes vanish, `#`
-- starts a comment anywhere outside quotes, `export` lines and `KEY=` are
-- ignored, `\n` and `\t` become a newline and a tab even inside single
-- quotes), the same PORTs, names, colours and output prefix. Where honcho
-- silently ignores a malformed line, or crashes with a Python traceback,
-- baton raises `file:line: what is wrong` instead (unless `strict = false`,
-- which ignores what honcho ignores).
-- @module baton.procfile
local errors = require "baton.errors"
errors.own()

local M = {}
local fmt, concat = string.format, table.concat
local argerror = errors.argerror

-- Raise a message about the input (not a misuse): no Lua position.
local function bad_input(file, line, msg, ...)
  error(fmt("%s:%d: " .. msg, file, line, ...), 0)
end

local function check_text(fname, text, filename)
  if type(text) ~= "string" then argerror(fname, 1, "string expected, got " .. type(text)) end
  if filename ~= nil and type(filename) ~= "string" then
    argerror(fname, 2, "file name expected, got " .. type(filename))
  end
end

local function check_opts(fname, n, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then argerror(fname, n, "options table expected, got " .. type(opts)) end
  for k in pairs(opts) do
    if not known[k] then argerror(fname, n, fmt("unknown option '%s'", tostring(k))) end
  end
  return opts
end

-- Python's str.splitlines: the line breaks it knows (\n, \r\n, \r, \v, \f,
-- \x1c-\x1e, and in UTF-8 U+0085, U+2028, U+2029), no trailing empty line.
local function splitlines(text)
  local lines, pos, n = {}, 1, #text
  while pos <= n do
    local s, e = text:find("[\n\r\v\f\28\29\30\194\226]", pos)
    local brk
    while s do
      local c = text:byte(s)
      if c == 13 and text:byte(s + 1) == 10 then
        brk = s + 1
      elseif c == 194 then
        if text:byte(s + 1) == 0x85 then brk = s + 1 end
      elseif c == 226 then
        local b2, b3 = text:byte(s + 1, s + 2)
        if b2 == 0x80 and (b3 == 0xA8 or b3 == 0xA9) then brk = s + 2 end
      else
        brk = s
      end
      if brk then break end
      s, e = text:find("[\n\r\v\f\28\29\30\194\226]", e + 1)
    end
    if not s then
      lines[#lines + 1] = text:sub(pos)
      break
    end
    lines[#lines + 1] = text:sub(pos, s - 1)
    pos = brk + 1
  end
  return lines
end
M.splitlines = splitlines

-- ---- Procfile ----------------------------------------------------------------------

-- Python's \s as seen by honcho's pattern, for what can remain in a line.
local SPACE = "[ \t\28\29\30\31]"

--- Parse a Procfile. Honcho's rule: a line is `name: command` when it
-- matches `^([A-Za-z0-9_-]+):\s*(.+)$`; every other line is ignored. Baton
-- ignores blank lines and comments (first non-blank character `#`) and, by
-- default, raises `Procfile:N: …` for any other line that is not an entry
-- (honcho ignores those: `strict = false` does too, and lists them in the
-- second result). A name declared twice raises in both modes (honcho
-- refuses it too: "process names must be unique within a Procfile").
-- @tparam string text the Procfile's content
-- @tparam[opt="Procfile"] string filename names the file in errors
-- @tparam[opt] table opts `strict` (default true)
-- @return the entries in file order, `{ {name=, command=, line=}… }`
-- @return the ignored lines, `{ {line=, text=}… }` (empty when strict)
function M.parse_procfile(text, filename, opts)
  check_text("parse_procfile", text, filename)
  opts = check_opts("parse_procfile", 3, opts, { strict = true })
  local file, strict = filename or "Procfile", opts.strict ~= false
  local entries, ignored, seen = {}, {}, {}
  for n, line in ipairs(splitlines(text)) do
    local name, rest = line:match("^([%w_%-]+):(.*)$")
    local command
    if name and rest ~= "" then
      -- \s*(.+): the spaces go, unless nothing else is left (then .+ takes the last).
      command = rest:match("^" .. SPACE .. "*(.+)$") or rest:sub(-1)
    end
    if command and strict and not command:find("[^ \t\28\29\30\31]") then
      bad_input(file, n, "process type %q has no command", name)
    end
    if command then
      if seen[name] then
        bad_input(file, n, "process type %q is declared twice (first at line %d); honcho refuses it too", name,
          seen[name])
      end
      seen[name] = n
      entries[#entries + 1] = { name = name, command = command, line = n }
    elseif line:match("^%s*$") or line:match("^%s*#") then -- luacheck: ignore 542
      -- blank, or a comment
    elseif strict then
      local why
      if name then
        why = fmt("process type %q has no command", name)
      elseif line:match("^%s+[%w_%-]+%s*:") then
        why = "an entry starts at the beginning of the line"
      elseif line:match("^[^:]+:") then
        why = "a process type is letters, digits, '_' and '-', followed at once by ':'"
      else
        why = "expected 'name: command'"
      end
      bad_input(file, n, "not a process line (%s): %q", why, line)
    else
      ignored[#ignored + 1] = { line = n, text = line }
    end
  end
  return entries, ignored
end

-- ---- .env ----------------------------------------------------------------------------

-- shlex's word characters in POSIX mode (Python 3): ASCII letters, digits,
-- '_', and these Latin-1 letters.
local WORD = {}
for c in ("ßàáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞ"):gmatch("[\xC0-\xFD][\x80-\xBF]*") do
  WORD[c] = true
end
local function is_word(c)
  return c:match("^[%w_]$") ~= nil or WORD[c] == true
end
local WHITE = { [" "] = true, ["\t"] = true, ["\r"] = true, ["\n"] = true }

-- The tokens of one line as Python's shlex.shlex(line, posix=True) yields
-- them (not shlex.split: punctuation is a token of its own, words are runs
-- of word characters, '#' starts a comment even inside a word). Returns the
-- tokens, or nil and what is wrong.
local function shlex(line)
  local chars = {}
  for c in line:gmatch("[\0-\x7F\xC0-\xFF][\x80-\xBF]*") do chars[#chars + 1] = c end
  local i, tokens = 0, {}
  local function next_char()
    i = i + 1
    return chars[i] or ""
  end
  while true do
    local state, token, quoted, escaped_state = " ", "", false, " "
    local done = false -- end of input
    while true do
      local c = next_char()
      if state == " " then
        if c == "" then
          done = true
          break
        elseif WHITE[c] then
          if token ~= "" or quoted then break end
        elseif c == "#" then
          i = #chars -- the rest of the line is a comment
        elseif c == "\\" then
          escaped_state, state = "a", c
        elseif is_word(c) then
          token, state = c, "a"
        elseif c == "'" or c == '"' then
          state = c
        else
          token = c
          break
        end
      elseif state == "'" or state == '"' then
        quoted = true
        if c == "" then return nil, fmt("no closing %s quote", state) end
        if c == state then
          state = "a"
        elseif c == "\\" and state == '"' then
          escaped_state, state = state, c
        else
          token = token .. c
        end
      elseif state == "\\" then
        if c == "" then return nil, "a backslash at the end of the line escapes nothing" end
        -- Inside double quotes a backslash escapes only '"' and itself.
        if escaped_state == '"' and c ~= '"' and c ~= "\\" then token = token .. "\\" end
        token, state = token .. c, escaped_state
      else -- "a": in a word
        if c == "" then
          done = true
          break
        elseif WHITE[c] then
          state = " "
          if token ~= "" or quoted then break end
        elseif c == "#" then
          i, state = #chars, " "
          if token ~= "" or quoted then break end
        elseif c == "'" or c == '"' then
          state = c
        elseif c == "\\" then
          escaped_state, state = "a", c
        elseif is_word(c) then
          token = token .. c
        else
          i = i - 1 -- pushed back: it starts the next token
          state = " "
          if token ~= "" or quoted then break end
        end
      end
    end
    if token ~= "" or quoted then tokens[#tokens + 1] = token end
    if done then return tokens end
  end
end
M._shlex = shlex

--- Parse a `.env` file as honcho does. Each line is split into shlex
-- tokens (POSIX mode); a line is `NAME = value…` when its first token
-- starts with a letter or '_' and its second is '='; the value is the rest
-- of the tokens joined with nothing between them (so `A=1 2` gives "12"),
-- then `\n` → newline and `\t` → tab. Later lines win. Honcho ignores lines
-- with fewer than three tokens — so `KEY=` leaves KEY unset, write
-- `KEY=""` for an empty value — and lines of other shapes (`export KEY=v`
-- among them); it crashes on an unclosed quote. Baton, by default, raises
-- `.env:N: …` for a line that is not blank, a comment or an assignment,
-- and for an unclosed quote; `KEY=` is never an error (it is valid, and
-- does nothing), but is listed in the third result.
-- @tparam string text the file's content
-- @tparam[opt=".env"] string filename names the file in errors
-- @tparam[opt] table opts `strict` (default true)
-- @return `{ NAME = value }`
-- @return the names in the order of their first assignment
-- @return the lines that set nothing, `{ {line=, text=, why=}… }`
function M.parse_env(text, filename, opts)
  check_text("parse_env", text, filename)
  opts = check_opts("parse_env", 3, opts, { strict = true })
  local file, strict = filename or ".env", opts.strict ~= false
  local vars, order, ignored = {}, {}, {}
  for n, line in ipairs(splitlines(text)) do
    local tokens, err = shlex(line)
    local why
    if not tokens then
      if strict then bad_input(file, n, "%s: %q", err, line) end
      why = err .. " (honcho crashes here)"
    elseif #tokens == 0 then -- luacheck: ignore 542
      -- blank, or a comment
    elseif #tokens == 2 and tokens[2] == "=" and tokens[1]:match("^[%a_]") then
      why = fmt("'%s=' with no value sets nothing (honcho leaves %s unset; write %s=\"\" for an empty value)",
        tokens[1], tokens[1], tokens[1])
    elseif #tokens < 3 or tokens[2] ~= "=" or not tokens[1]:match("^[%a_]") then
      if tokens[1] == "export" and #tokens >= 4 and tokens[3] == "=" then
        why = fmt("'export' is not understood: honcho ignores the whole line (write %s=…)", tokens[2])
      elseif #tokens >= 3 and tokens[2] == "=" then
        why = fmt("%q is not a variable name (a letter or '_' first)", tokens[1])
      else
        why = "expected NAME=value"
      end
      if strict then bad_input(file, n, "%s: %q", why, line) end
    else
      local name = tokens[1]
      local value = concat(tokens, "", 3):gsub("\\n", "\n"):gsub("\\t", "\t")
      if vars[name] == nil then order[#order + 1] = name end
      vars[name] = value
    end
    if why then ignored[#ignored + 1] = { line = n, text = line, why = why } end
  end
  return vars, order, ignored
end

-- ---- concurrency and ports -------------------------------------------------------

-- Python's int() on a string: optional spaces and sign, digits (and single
-- underscores between digits).
local function pyint(s)
  if type(s) == "number" then return math.type(s) == "integer" and s or nil end
  if type(s) ~= "string" then return nil end
  local sign, digits = s:match("^%s*([+-]?)(%d[%d_]*)%s*$")
  if not digits or digits:find("__", 1, true) or digits:sub(-1) == "_" then return nil end
  local v = math.tointeger(tonumber((digits:gsub("_", ""))))
  if v and sign == "-" then v = -v end
  return v
end

--- Parse honcho's `-c`/`--concurrency` value, `web=2,worker=1` (foreman
-- calls it `-m`/`--formation`). Honcho splits on ',' then on the first
-- '=', and reads the count as Python's int (spaces around it allowed); a
-- later item for the same type wins. Raises `concurrency: …` on an item
-- that is not `name=count` or a count below 0 (honcho crashes on the first,
-- runs none on the second).
-- @return `{ type = count }`, and the types in order
function M.concurrency(desc)
  if type(desc) ~= "string" then argerror("concurrency", 1, "string expected, got " .. type(desc)) end
  local out, order = {}, {}
  for item in (desc .. ","):gmatch("([^,]*),") do
    local key, count = item:match("^([^=]*)=(.*)$")
    local n = key and pyint(count)
    if not key then
      error(fmt("concurrency: %q is not name=count (in %q)", item, desc), 0)
    elseif not n or n < 0 then
      error(fmt("concurrency: the count of %q must be a whole number from 0, got %q", key, count), 0)
    end
    if out[key] == nil then order[#order + 1] = key end
    out[key] = n
  end
  return out, order
end

--- The base port as honcho picks it: a `PORT` in the `.env` file wins
-- (even over `-p`), then `-p`, then the inherited `PORT`, then 5000.
-- Raises `invalid value for port: 'x'` (honcho's words) when the one picked
-- is not a whole number.
-- @param cli the `-p` value, or nil
-- @param dotenv the parsed `.env` table, or nil
-- @param inherited the inherited `PORT` (default: `os.getenv "PORT"`)
function M.base_port(cli, dotenv, inherited)
  if inherited == nil then inherited = os.getenv("PORT") end
  local v = (dotenv and dotenv.PORT) or cli or inherited or 5000
  local n = pyint(v)
  if not n then error(fmt("invalid value for port: '%s'", tostring(v)), 0) end
  return n
end

--- The processes to run and their ports, as honcho expands a Procfile:
-- each entry (in order) gives `concurrency[name]` processes (default 1),
-- named `name.1`, `name.2`…; the first type gets `base`, `base + 1`… and
-- each next type 100 more — a type run 0 times still takes its 100.
-- Every process gets a PORT. Names in `concurrency` that no entry has are
-- ignored (as honcho does) and returned second.
-- @tparam table entries from parse_procfile
-- @tparam[opt=5000] integer base
-- @tparam[opt] table concurrency `{ type = count }`
-- @return `{ {name="web.1", type="web", index=1, port=5000, command=, colour=}… }`
-- @return the unknown names of `concurrency`, sorted
function M.ports(entries, base, concurrency)
  if type(entries) ~= "table" then argerror("ports", 1, "table of entries expected, got " .. type(entries)) end
  base = base or 5000
  if math.type(base) ~= "integer" then argerror("ports", 2, "integer port expected, got " .. tostring(base)) end
  concurrency = concurrency or {}
  if type(concurrency) ~= "table" then argerror("ports", 3, "table expected, got " .. type(concurrency)) end
  local out, known = {}, {}
  for i, e in ipairs(entries) do
    if type(e) ~= "table" or type(e.name) ~= "string" then
      argerror("ports", 1, fmt("entry %d has no name", i))
    end
    known[e.name] = true
    local count = concurrency[e.name] or 1
    if math.type(count) ~= "integer" or count < 0 then
      argerror("ports", 3, fmt("count of %q must be an integer from 0, got %s", e.name, tostring(count)))
    end
    for r = 1, count do
      local p = { name = e.name .. "." .. r, type = e.name, index = r, port = base + r - 1, command = e.command }
      p.colour = M.colour(#out + 1)
      out[#out + 1] = p
    end
    base = base + 100
  end
  local unknown = {}
  for k in pairs(concurrency) do if not known[k] then unknown[#unknown + 1] = k end end
  table.sort(unknown)
  return out, unknown
end

-- ---- the combined view ---------------------------------------------------------------

--- Honcho's colour cycle, one colour per process (not per type) in the
-- order the processes are expanded: the SGR parameters.
M.colours = { "36", "33", "32", "35", "31", "34", "36;1", "33;1", "32;1", "35;1", "31;1", "34;1" }

--- The colour of the `i`-th process (from 1).
function M.colour(i)
  return M.colours[(i - 1) % #M.colours + 1]
end

--- The width names are padded to: that of the longest process name, at
-- least 6 (`system`, the name of honcho's own lines).
function M.width(names)
  local w = #"system"
  for _, n in ipairs(names or {}) do
    local name = type(n) == "table" and n.name or n
    w = math.max(w, utf8.len(name) or #name)
  end
  return w
end

local function clock(t)
  if type(t) == "string" then return t end
  return os.date("%H:%M:%S", t)
end

--- The prefix of one output line: `HH:MM:SS name   | `, the name padded
-- to `width`; with a colour (an SGR parameter such as "36" or "33;1") it
-- is wrapped as honcho does, `ESC[0m ESC[<colour>m prefix ESC[0m`. Honcho
-- colours only when its stdout is a terminal (and not with --no-colour; it
-- does not know NO_COLOR), and never its own `system` lines.
-- @param time seconds since the epoch (default now), or a ready "HH:MM:SS"
function M.prefix(name, width, colour, time)
  if type(name) ~= "string" then argerror("prefix", 1, "string expected, got " .. type(name)) end
  local pad = (width or 0) - (utf8.len(name) or #name)
  local label = name .. (pad > 0 and (" "):rep(pad) or "")
  local p = clock(time) .. " " .. (label ~= "" and label .. " " or "") .. "| "
  if colour then p = "\27[0m\27[" .. colour .. "m" .. p .. "\27[0m" end
  return p
end

--- The lines honcho prints for `data` (what one read of a process gave:
-- honcho reads a line at a time, so normally one line, or a last line with
-- no newline): split as Python's splitlines (so a '\r' inside breaks the
-- line, an empty line stays), each with its prefix.
-- @return a list of strings without their newline
function M.format(name, data, width, colour, time)
  local p = M.prefix(name, width, colour, time)
  local out = {}
  for _, l in ipairs(splitlines(data)) do out[#out + 1] = p .. l end
  return out
end

--- The words of honcho's own (`system`) lines.
M.messages = {
  started = function(name, pid) return fmt("%s started (pid=%d)", name, pid) end,
  --- `rc` as honcho shows it: the exit code, or minus the signal number.
  stopped = function(name, rc) return fmt("%s stopped (rc=%d)", name, rc) end,
  sending = function(signame, name, pid) return fmt("sending %s to %s (pid %d)", signame, name, pid) end,
  received = function(signame) return fmt("%s received", signame) end,
}

--- Honcho's `rc` of a finished process from a baton wait result: the exit
-- code, or minus the signal number.
function M.returncode(r)
  if r.signal then return -r.signal end
  return r.code
end

--- The exit status of `honcho start`: the `rc` of the first process to
-- stop (0 included), 130 after SIGINT and 143 after SIGTERM if that came
-- first; Python's sys.exit of a negative rc gives `rc & 0xFF` (-15 → 241).
function M.exit_status(rc)
  return (rc or 0) & 0xFF
end

-- ---- declarations ----------------------------------------------------------------

--- The declarations for `baton.supervisor` of a Procfile run as honcho runs
-- it: one service per process (`web.1`, `web.2`: each has its own PORT, so
-- replicas of one service would not do), the command given to `/bin/sh -c`
-- (honcho: Popen(shell=True)), the environment honcho gives — the inherited
-- one, then `HONCHO_PROCESS_NAME=web.1`, then the `.env` values, then
-- `PORT` (no `PS`: that is foreman's) — `restart = "never"` and
-- `ready = "exec"`. Honcho's other rule, that the first process to stop
-- stops all the others (SIGTERM to each process group, SIGKILL 5 s later)
-- and gives its rc as the exit status, is the caller's: watch the
-- supervisor's events (see `exit_status`).
-- @tparam table entries from parse_procfile
-- @tparam[opt] table opts `env` (the `.env` table), `concurrency`
--   (`{ type = count }`), `port` (the `-p` value), `only` (a list of types to
--   run, in the order given, as `honcho start web worker`), `shell`
--   (default "/bin/sh"), `restart` (default "never"), `ready` (default
--   "exec"), `inherited_port` (default `os.getenv "PORT"`)
-- @return `{ ["web.1"] = { "/bin/sh", "-c", command, env = …, restart =, ready = } … }`
-- @return the processes in honcho's order, as `ports` gives them, each with its `env`
-- @return the unknown names of `concurrency`
function M.declarations(entries, opts)
  if type(entries) ~= "table" then
    argerror("declarations", 1, "table of entries expected, got " .. type(entries))
  end
  opts = check_opts("declarations", 2, opts, { env = true, concurrency = true, port = true, only = true,
    shell = true, restart = true, ready = true, inherited_port = true })
  local dotenv = opts.env or {}
  if type(dotenv) ~= "table" then argerror("declarations", 2, "option 'env' must be a table") end
  if opts.only then
    local by = {}
    for _, e in ipairs(entries) do by[e.name] = e end
    local chosen = {}
    for i, name in ipairs(opts.only) do
      if not by[name] then error(fmt("Process type '%s' does not exist in Procfile", name), 0) end
      chosen[i] = by[name]
    end
    entries = chosen
  end
  local base = M.base_port(opts.port, dotenv, opts.inherited_port)
  local procs, unknown = M.ports(entries, base, opts.concurrency)
  local decls = {}
  for _, p in ipairs(procs) do
    local env = { HONCHO_PROCESS_NAME = p.name }
    for k, v in pairs(dotenv) do env[k] = v end
    env.PORT = tostring(p.port)
    p.env = env
    decls[p.name] = { opts.shell or "/bin/sh", "-c", p.command, env = env, restart = opts.restart or "never",
      ready = opts.ready or "exec" }
  end
  return decls, procs, unknown
end

-- ---- `baton procfile`: run one as foreman and honcho do ------------------------------------

local USAGE = [==[
usage: baton procfile [-f Procfile] [-e .env[,more]] [-d DIR] [-p PORT] [-c|-m web=2,worker=1]
                      [--no-colour] [--restart] [type...]
Runs the Procfile's processes with honcho's ports, environment and output;
the first process to stop stops the rest and its code is the exit status.
--restart: keep each one running instead (restart with backoff).]==]

local function read_file(path)
  local f, msg = io.open(path, "rb")
  if not f then return nil, msg end
  local text = f:read("a")
  f:close()
  return text
end

--- `baton procfile ARGS…`: returns the exit status (honcho's: the first
-- process to stop gives its code; 130 or 143 when interrupted).
function M.main(...)
  local args = { ... }
  local o = { f = nil, e = nil, d = ".", p = nil, c = nil, colour = true, restart = false, only = nil }
  local i = 1
  local function value(flag)
    i = i + 1
    if args[i] == nil then error(fmt("procfile: option %s needs a value\n%s", flag, USAGE), 0) end
    return args[i]
  end
  while i <= #args do
    local a = args[i]
    if a == "-f" or a == "--procfile" then o.f = value(a)
    elseif a == "-e" or a == "--env" then o.e = value(a)
    elseif a == "-d" or a == "--app-root" then o.d = value(a)
    elseif a == "-p" or a == "--port" then o.p = value(a)
    elseif a == "-c" or a == "-m" or a == "--concurrency" or a == "--formation" then o.c = value(a)
    elseif a == "--no-colour" or a == "--no-color" then o.colour = false
    elseif a == "--restart" then o.restart = true
    elseif a == "-h" or a == "--help" then
      io.stdout:write(USAGE, "\n")
      return 0
    elseif a:sub(1, 1) == "-" then error(fmt("procfile: unknown option %s\n%s", a, USAGE), 0)
    else
      o.only = o.only or {}
      o.only[#o.only + 1] = a
    end
    i = i + 1
  end
  local path = o.f or (o.d .. "/Procfile")
  local text, msg = read_file(path)
  if not text then error(fmt("procfile: %s: Procfile does not exist or is not a file (%s)", path, msg), 0) end
  local entries = M.parse_procfile(text, path)
  if #entries == 0 then error(fmt("procfile: %s: no processes defined in Procfile", path), 0) end -- (honcho's words)
  local dotenv = {}
  for file in (o.e or ".env"):gmatch("[^,]+") do
    local where = file:sub(1, 1) == "/" and file or (o.d .. "/" .. file)
    local etext = read_file(where)
    if etext then
      for k, v in pairs(M.parse_env(etext, where)) do dotenv[k] = v end
    elseif o.e then
      error(fmt("procfile: %s: no such .env file", where), 0)
    end
  end
  local decls, procs, unknown = M.declarations(entries, {
    env = dotenv, concurrency = o.c and M.concurrency(o.c), port = o.p, only = o.only,
    restart = o.restart and "always" or "never", inherited_port = os.getenv("PORT") })
  for _, name in ipairs(unknown or {}) do
    io.stderr:write(fmt("procfile: no process type %s in %s (ignored)\n", tostring(name), path))
  end
  local names = { "system" }
  for _, p in ipairs(procs) do names[#names + 1] = p.name end
  local width = M.width(names)
  local colours = o.colour and require("baton.core").isatty(1)
  local logs = require "baton.logs"
  local out = logs.out("stdout") -- (never blocks baton: a paused terminal pauses only the output)
  local function say(name, colour, line)
    out:write(M.prefix(name, width, colours and colour or nil) .. line .. "\n")
    out:flush()
  end
  local function system(line) say("system", nil, line) end
  for _, p in ipairs(procs) do
    local d = decls[p.name]
    d.cwd, d.stderr, d.stop = o.d, "stdout", { signal = "TERM", timeout = 5 } -- (honcho: KILL after 5 s)
    d.log = { stdout = { logs.out_route(function(line) say(p.name, p.colour, line) end) } }
  end
  local baton = require "baton"
  local sv = baton.supervisor(decls)
  local first
  sv:on("spawned", function(ev) system(M.messages.started(ev.service, ev.pid)) end)
  sv:on("exited", function(ev)
    local rc = ev.status and M.returncode(ev.status) or 1
    system(M.messages.stopped(ev.service, rc))
    if o.restart or first ~= nil then return end
    first = rc
    for _, p in ipairs(procs) do
      local r = sv:status()[p.name].replicas[1]
      if r.pid and p.name ~= ev.service then system(M.messages.sending("SIGTERM", p.name, r.pid)) end
    end
    sv:stop()
  end)
  local ok, err = pcall(function()
    for _, p in ipairs(procs) do sv:start(p.name) end -- (in the Procfile's order, as honcho)
    sv:run()
  end)
  if not ok then
    -- Ctrl-C or SIGTERM: said as honcho says it, then everything stops.
    local sig = tostring(err):match("interrupted by (SIG%u+)")
    if not sig then error(err, 0) end
    system(M.messages.received(sig))
    first = first or false -- (no "first to stop" now: everything goes)
    for _, p in ipairs(procs) do
      local r = sv:status()[p.name].replicas[1]
      if r.pid then system(M.messages.sending("SIGTERM", p.name, r.pid)) end
    end
    sv:stop()
    return 128 + baton.signals[sig:sub(4)]
  end
  return M.exit_status(first or 0)
end

return M
