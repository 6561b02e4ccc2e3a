--- baton.logs — a service's output, held by baton: the pipes outlive the
-- processes that write into them (a restarted or replaced process writes
-- into the same pipe, so nothing written is lost when one dies), lines are
-- split once and routed — to the combined terminal view, to log files, to
-- Lua handlers — and the last lines are kept for status and error messages.
--
-- A `Log` is one instance's output (stdout and stderr each a pipe baton
-- holds both ends of); `routes` say where lines go:
--
--     { "terminal", "/var/log/web.log", { file = "/var/log/web.log", max_size = 1e7 },
--       function(line, stream, log, mark) … end, "raw", "null" }
--
-- ("terminal": the combined, prefixed view; "raw": the line alone on
-- baton's stdout or stderr.)
--
-- Lines are routed from the loop's read callback, chunk by chunk, without a
-- task switch; a handler must not wait (hand waiting work to a task). A slow
-- route slows the reading, so the pipe fills and the writer waits: memory
-- stays bounded and nothing is dropped (s6-log's contract).
--
-- Baton's own stdout and stderr, when they are a pipe or a terminal, are
-- written without ever blocking the loop (a stream of their own, see
-- `M.out`): a reader that stops (a pager, Ctrl-S) holds up only the streams
-- routed there — their reading pauses once `OUT_CAP` bytes wait, so their
-- writers wait as they would on the terminal itself — while baton keeps
-- supervising (restarts, readiness, upgrades, files). In drop mode those
-- lines are skipped and counted instead.
--
-- A stream whose routes are all files (without timestamps) takes a shorter
-- way: the whole lines of a chunk go to each file as one block (one string,
-- one write), counted but not cut apart; the ring of last lines keeps the
-- blocks and cuts its lines out only when asked. A chunk holding a line too
-- long for that (to be split) goes the line-by-line way.
-- @module baton.logs
local core = require "baton.core"
local task = require "baton.task"
local errors = require "baton.errors"
local inspect = require "baton.inspect"
errors.own()

local M = {}
local fmt, byte, sub = string.format, string.byte, string.sub
local scan_lines = core.scan_lines

M.MAX_LINE = 64 * 1024 -- longer lines are split (each piece marked), never held whole
M.RING = 100           -- last lines kept per log

-- ---- the terminal view ----------------------------------------------------------------

-- The combined view, as foreman and honcho print it: `HH:MM:SS name.N | line`,
-- names padded to the widest, a color per service on a terminal.
local view = { width = 0, colors = nil, next_color = 0, by_name = {} }
local PALETTE = { 36, 33, 32, 35, 34, 31 } -- cyan yellow green magenta blue red (honcho's order)

local function color_of(name)
  local c = view.by_name[name]
  if not c then
    view.next_color = view.next_color % #PALETTE + 1
    c = PALETTE[view.next_color]
    view.by_name[name] = c
  end
  return c
end

-- ---- baton's own stdout and stderr ----------------------------------------------------

M.OUT_CAP = 1024 * 1024 -- bytes waiting for baton's stdout (stderr) before its routes pause

local outs = {}

--- Baton's stdout or stderr (`name`) as a writer that never blocks the
-- loop: `o:write(data)` sends what it can now and queues the rest (in
-- order, after whatever `print` left in stdio's buffer); `o:full()` says
-- that `OUT_CAP` bytes or more wait; `o:on_drain(fn)` calls `fn()` once
-- they are written. A file or a socket is written as before, through io
-- (never full).
function M.out(name)
  local o = outs[name]
  if o then return o end
  local s = core.reopen_stream(name == "stdout" and 1 or 2)
  o = { file = io[name], s = s, queued = 0, waiting = {}, inflight = {} }
  function o:write(data)
    if not self.s then
      self.file:write(data)
      return
    end
    if self.broken then return end -- (nobody reads it any more: as io drops it)
    if self.queued == 0 then
      -- What print() left goes first — only now: with writes queued, a
      -- flush would block the loop (it goes once they are written).
      self.file:flush()
      local n = self.s:try_write(data)
      if not n then
        self.broken = true
        return
      end
      if n == #data then return end
      data = sub(data, n + 1)
    end
    self.queued = self.queued + #data
    local inflight = self.inflight
    inflight[#inflight + 1] = data
    self.s:write(data, function(ok)
      table.remove(inflight, 1) -- (writes end in order)
      self.queued = self.queued - #data
      if not ok then self.broken = true end
      if self.queued == 0 or self.broken then
        if self.queued == 0 and not self.broken then self.file:flush() end
        local fns = self.waiting
        self.waiting = {}
        for _, fn in ipairs(fns) do fn() end
      end
    end)
  end
  function o:full() return self.queued >= M.OUT_CAP and not self.broken end
  function o:on_drain(fn) self.waiting[#self.waiting + 1] = fn end
  function o:flush()
    if not self.s then self.file:flush() end
  end
  -- What is still queued goes out through io, blocking (the stream is
  -- closed: libuv writes no more of it).
  function o:drain()
    if not s or s:closed() then return end
    local left = s:queued()
    local all = table.concat(self.inflight)
    s:close()
    if left > 0 and not self.broken then
      self.file:write(sub(all, #all - left + 1))
      self.file:flush()
    end
  end
  -- The state closes with writes still queued (a lua5.4 host whose reader
  -- is slow; the executable's loop runs until they are written): they go
  -- as stdio's buffer would at exit.
  if s then o.finalizer = setmetatable({}, { __gc = function() o:drain() end }) end
  outs[name] = o
  return o
end

--- Before baton execs itself (baton.reexec): what waits for its stdout and
-- stderr, taken out of their streams (closed: the next write opens them
-- again), {stdout = bytes, stderr = bytes}, for the next image to write
-- first — never a blocking write with a reader that stopped.
function M._take_out()
  local out = {}
  for name, o in pairs(outs) do
    local s = o.s
    if s and not s:closed() then
      local left = s:queued()
      local all = table.concat(o.inflight)
      s:close()
      if left > 0 and not o.broken then out[name] = sub(all, #all - left + 1) end
    end
    outs[name] = nil
  end
  return out
end

-- Baton's stdout and stderr writers opened so far, by name.
function M._outs() return outs end

--- Write what `_take_out` took (in a new image, or after a failed exec).
function M._put_out(out)
  for name, data in pairs(out or {}) do
    if name == "stdout" or name == "stderr" then M.out(name):write(data) end
  end
end

-- Functions that write to baton's stdout (a route of the procfile view):
-- their streams pause as the terminal's do.
local out_fns = setmetatable({}, { __mode = "k" })

--- Mark route function `fn` as one that writes to baton's stdout.
function M.out_route(fn)
  out_fns[fn] = true
  return fn
end

--- Make room for `label` in the terminal view's name column.
function M.widen(label)
  if #label > view.width then view.width = #label end
end

--- The terminal view's line for `label` (a service.replica name): time,
-- padded name, `|`, the line; stderr lines are marked. `now` (seconds of
-- the day) may be given for tests.
function M.prefix(label, stream, clock)
  if view.colors == nil then view.colors = inspect.colors(1) end
  local head = fmt("%s %-" .. view.width .. "s |", clock or os.date("%H:%M:%S"), label)
  if stream == "stderr" then head = head .. " (stderr)" end
  if view.colors then head = fmt("\27[%dm%s\27[0m", color_of(label:match("^[^.]+") or label), head) end
  return head .. " "
end

--- Print a system line (`system | …`) in the terminal view.
function M.system(text)
  M.widen("system")
  local o = M.out("stdout")
  o:write(M.prefix("system") .. text .. "\n")
  o:flush()
end

-- ---- routes ----------------------------------------------------------------------------

-- A route as a function(line, stream, mark) and a function that flushes it
-- (or nil), and for a file route the file: checked once; `what` names it.
local function route(r, what, owner)
  if r == "raw" then -- the line as written, on baton's own stdout or stderr
    local bufs = { stdout = {}, stderr = {} }
    return function(line, stream, mark)
      local b = bufs[stream] or bufs.stdout
      b[#b + 1] = line .. (mark and (" [" .. mark .. "]") or "") .. "\n"
    end, function()
      for name, b in pairs(bufs) do
        if #b > 0 then
          local o = M.out(name)
          o:write(table.concat(b))
          o:flush()
          bufs[name] = {}
        end
      end
    end, nil, true
  elseif r == "terminal" then
    local b = {}
    return function(line, stream, mark)
      b[#b + 1] = M.prefix(owner.label, stream) .. line .. (mark and (" [" .. mark .. "]") or "") .. "\n"
    end, function()
      if #b > 0 then
        local o = M.out("stdout")
        o:write(table.concat(b))
        o:flush()
        b = {}
      end
    end, nil, true
  elseif r == "null" then
    return function() end
  elseif type(r) == "function" then
    return function(line, stream, mark)
      local ok, err = pcall(r, line, stream, owner, mark)
      if not ok then
        owner.handler_errors = owner.handler_errors + 1
        owner.last_error = tostring(err)
      end
    end, nil, nil, out_fns[r]
  elseif type(r) == "string" or type(r) == "table" then
    local path, opts = r, nil
    if type(r) == "table" then
      path, opts = r.file, {}
      for k, v in pairs(r) do if k ~= "file" then opts[k] = v end end
    end
    if type(path) ~= "string" then
      errors.argerror("service", 1, fmt("%s: a file route needs file = path", what))
    end
    path = path:gsub("%%s", owner.label)
    local f = owner.by_path[path] -- (both streams to one file: one writer)
    if not f then
      local msg
      f, msg = require("baton.logfile").open(path, opts)
      if not f then return nil, msg end
      owner.files[#owner.files + 1], owner.by_path[path] = f, f
    end
    return function(line, _, mark) f:line(line, mark) end, function() f:flush() end, f
  end
  errors.argerror("service", 1,
    fmt("%s: \"terminal\", \"null\", a file path, {file = …} or a function expected, got %s", what, type(r)))
end

--- Check routes as declared (raises on a bad one): "terminal", "null",
-- a path ("%s" becomes the instance's label), `{file = path, …logfile
-- options}`, a function, or a list of these.
function M.check(routes, what)
  if routes == nil then return nil end
  if type(routes) ~= "table" or routes.file then routes = { routes } end
  for i, r in ipairs(routes) do
    local ok = r == "terminal" or r == "raw" or r == "null" or type(r) == "function" or type(r) == "string"
      or (type(r) == "table" and type(r.file) == "string")
    if not ok then
      errors.argerror("service", 1, fmt("%s[%d]: \"terminal\", \"null\", a file path, {file = …} or a function "
        .. "expected, got %s", what, i, type(r)))
    end
  end
  return routes
end

-- ---- reopening files (an external logrotate moved them) -----------------------------------

local open_logs = setmetatable({}, { __mode = "k" }) -- logs with files
local usr1 -- the SIGUSR1 watcher, while there are such logs

--- Reopen every log file (after an external logrotate renamed them); what
-- SIGUSR1 does while a service writes to files. Returns how many.
function M.reopen_all()
  local n = 0
  for log in pairs(open_logs) do
    for _, f in ipairs(log.files) do
      f:reopen()
      n = n + 1
    end
  end
  return n
end

local function track_files(log, on)
  if on then
    open_logs[log] = true
    if not usr1 then usr1 = core.signal_watch(core.signum("USR1"), function() M.reopen_all() end) end
  else
    open_logs[log] = nil
    if usr1 and next(open_logs) == nil then
      usr1:close()
      usr1 = nil
    end
  end
end

-- ---- a log: one instance's held pipes ----------------------------------------------------

local Log = {}
Log.__index = Log
M.Log = Log

--- A log for `label` with `routes` per stream (`{stdout = routes, stderr =
-- routes}`, checked by `check`). Returns it, or nil and why (a log file
-- that cannot be opened). `handed`: pipes a previous image of baton held
-- (a re-exec: `{stdout = {r = fd, w = fd, pending = "…"}, …}`), taken
-- over instead of new ones, so the processes writing into them go on.
function M.open(label, routes, handed)
  local log = setmetatable({ label = label, files = {}, by_path = {}, ring = {}, ring_head = 0, lines = 0,
    handler_errors = 0, streams = {}, _raw = {}, _raw_lines = 0, dropped = 0, drop = routes.drop == true,
    routes = routes }, Log)
  M.widen(label)
  for _, name in ipairs { "stdout", "stderr" } do
    local rs = routes[name]
    if rs then
      local fns, flushes, files, file_route, to_out = {}, {}, {}, {}, false
      for i, r in ipairs(rs) do
        local fn, flush, f, out = route(r, fmt("log.%s[%d]", name, i), log)
        to_out = to_out or out or false
        if not fn then
          log:close()
          return nil, flush
        end
        fns[#fns + 1] = fn
        file_route[#fns] = f ~= nil
        if flush then flushes[#flushes + 1] = flush end
        if files and f and not f.timestamps then files[#files + 1] = f else files = nil end
      end
      local ok, why = log:_pipe(name, fns, flushes, files, file_route, to_out, handed and handed[name])
      if not ok then
        log:close()
        return nil, why
      end
    end
  end
  if #log.files > 0 then track_files(log, true) end
  return log
end

-- Keep `line` in the ring of last lines.
function Log:_keep(line, stream)
  if self._raw[1] then self:_unraw() end
  local h = self.ring_head % M.RING + 1
  self.ring_head = h
  self.ring[h] = stream == "stderr" and ("(stderr) " .. line) or line
end

-- Keep the `n` lines of a block (the first `len` bytes of `s`, ending with a
-- newline) for the ring, whole: blocks that newer ones cover are let go.
function Log:_keep_block(s, len, n, stream)
  local raw = self._raw
  if n >= M.RING and raw[1] then
    raw = {}
    self._raw, self._raw_lines = raw, 0
  end
  raw[#raw + 1] = { s, len, n, stream }
  local kept = self._raw_lines + n
  while kept - raw[1][3] >= M.RING do
    kept = kept - raw[1][3]
    table.remove(raw, 1)
  end
  self._raw_lines = kept
end

-- Put the last lines of the blocks kept into the ring, in order.
function Log:_unraw()
  local raw = self._raw
  self._raw, self._raw_lines = {}, 0
  for _, b in ipairs(raw) do
    local s, e, stream = b[1], b[2], b[4]
    local count = math.min(b[3], M.RING)
    local lines, k = {}, e - 1
    for c = count, 1, -1 do -- from the end: its lines are found without cutting the rest
      while k > 0 and byte(s, k) ~= 10 do k = k - 1 end
      lines[c] = sub(s, k + 1, e - 1)
      e, k = k, k - 1
    end
    for c = 1, count do self:_keep(lines[c], stream) end
  end
end

--- The last `n` lines (default all kept), oldest first.
function Log:tail(n)
  if self._raw[1] then self:_unraw() end
  local out, count = {}, math.min(n or M.RING, #self.ring)
  for i = count - 1, 0, -1 do
    out[#out + 1] = self.ring[(self.ring_head - 1 - i) % M.RING + 1]
  end
  return out
end

-- The shorter way for a chunk (`buf`, what was pending first) of a stream
-- whose routes are all files: the whole lines in one block to each file.
-- False, having done nothing, when a line is too long for it.
local function direct(log, s, stream, buf)
  local max = M.MAX_LINE
  if s.max_line < max then max = s.max_line end
  local n, last, long = scan_lines(buf, max)
  if long then return false end
  local i = last + 1
  if n > 0 then
    log.lines = log.lines + n
    log:_keep_block(buf, i - 1, n, stream)
    local files = s.files
    for k = 1, #files do files[k]:_lines(buf, i - 1, n) end
  end
  s.pending = i > #buf and "" or sub(buf, i)
  return true
end

-- One pipe for `stream`: baton holds both ends; the write end goes to each
-- process as its fd, the read end is read here, line by line. `files`: the
-- files, when every route is one (the shorter way). `to_out`: a route
-- writes to baton's stdout or stderr (its reading pauses while they are
-- full). `h`: the pipe a re-exec handed over (its fds, the unfinished line).
function Log:_pipe(stream, fns, flushes, files, file_route, to_out, h)
  local rfd, wfd
  if h then
    rfd, wfd = h.r, h.w
  else
    rfd, wfd = core.pipe(256 * 1024)
    if not rfd then return nil, wfd end
  end
  local ud, msg = core.stream_open(rfd)
  if not ud then
    core.close(wfd)
    return nil, msg
  end
  local s = { ud = ud, wfd = wfd, rfd = rfd, pending = h and h.pending or "", read = 0, dues = {}, fns = fns,
    flushes = flushes, files = files and files[1] and files, file_route = file_route or {} }
  if s.files then
    s.max_line = math.huge
    for _, f in ipairs(files) do s.max_line = math.min(s.max_line, f.max_line) end
  end
  self.streams[stream] = s
  local behind = false -- (drop mode: the routes other than files skip lines while set)
  local function emit(line, mark)
    self.lines = self.lines + 1
    self:_keep(line, stream)
    if behind then
      self.dropped = self.dropped + 1
      for k, fn in ipairs(fns) do if s.file_route[k] then fn(line, stream, mark) end end
    else
      for _, fn in ipairs(fns) do fn(line, stream, mark) end
    end
    if self.watch then self.watch(line, stream) end -- (a readiness check on a line)
  end
  s.emit = emit
  -- Baton's stdout (stderr) has OUT_CAP bytes waiting: unless in drop mode,
  -- read no more until they are written.
  local function congested()
    if not to_out then return false end
    local o, e = M.out("stdout"), M.out("stderr")
    return o:full() and o or e:full() and e or false
  end
  local on_data
  local function pause()
    local o = congested()
    if not o or self.drop or self.closed or s.paused then return end
    ud:read_stop()
    s.paused = true
    o:on_drain(function() s.resume() end)
  end
  -- Read again (the terminal drained, or the log closes: what is left in
  -- the pipe is read to the end, whatever waits for the terminal).
  function s.resume()
    if not s.paused then return end
    s.paused = false
    if not s.eof and not ud:closed() then ud:read_start(on_data) end
  end
  local on_chunk
  -- A chunk read; `s.dues` (flush_partial): how far into the pipe, in bytes
  -- read, the last words of a process that ended go — what pends there is
  -- its partial line, not the start of its successor's.
  on_data = function(data)
    if not data or not s.dues[1] then
      if data then s.read = s.read + #data end
      return on_chunk(data)
    end
    local base, from = s.read, 1
    s.read = base + #data
    while s.dues[1] and s.dues[1] <= s.read do
      local at = table.remove(s.dues, 1) - base
      if at >= from then on_chunk(sub(data, from, at)) end
      if at >= from - 1 then from = at + 1 end
      if s.pending ~= "" then
        local rest = s.pending
        s.pending = ""
        emit(rest, "partial")
        for _, f in ipairs(flushes) do f() end
      end
    end
    if from <= #data then on_chunk(from == 1 and data or sub(data, from)) end
  end
  on_chunk = function(data)
    if not data then -- the last write end closed: the log is closing
      if #s.pending > 0 then emit(s.pending, "partial") end
      s.pending, s.eof = "", true
      for _, f in ipairs(flushes) do f() end
      ud:close()
      return
    end
    local buf = s.pending == "" and data or s.pending .. data
    if s.files and not self.watch and direct(self, s, stream, buf) then
      for _, f in ipairs(flushes) do f() end
      return
    end
    local skip_out = self.drop and congested() -- (drop mode: what waits for the terminal is skipped)
    -- Drop mode: when the pipe holds more than half of what it can, the
    -- writer is about to wait for the routes; instead, slow routes skip
    -- lines (counted in `dropped`) until it is not; files get every line.
    behind = skip_out or self.drop and (core.pipe_pending(rfd) or 0) >= 128 * 1024
    local start, count = 1, 0
    while true do
      local nl = buf:find("\n", start, true)
      if not nl then break end
      count = count + 1
      if self.drop and count % 256 == 0 then -- (the writer keeps writing while lines are routed)
        behind = skip_out or (core.pipe_pending(rfd) or 0) >= 128 * 1024
      end
      local line = buf:sub(start, nl - 1)
      while #line > M.MAX_LINE do
        emit(line:sub(1, M.MAX_LINE), "split")
        line = line:sub(M.MAX_LINE + 1)
      end
      emit(line)
      start = nl + 1
    end
    local rest = buf:sub(start)
    while #rest > M.MAX_LINE do
      emit(rest:sub(1, M.MAX_LINE), "split")
      rest = rest:sub(M.MAX_LINE + 1)
    end
    s.pending = rest
    for _, f in ipairs(flushes) do f() end
    pause()
  end
  ud:read_start(on_data)
  return true
end

--- What a re-exec hands over (baton.reexec): each stream's pipe (both
-- ends, `keep` gets their fds) and the unfinished line read from it, the
-- last lines; the files are flushed first.
function Log:_handover(keep)
  local out = { streams = {}, ring = self:tail(), lines = self.lines }
  for name, s in pairs(self.streams) do
    if s.wfd and not s.eof then
      for _, f in ipairs(s.flushes) do f() end
      local r = s.ud:fileno()
      out.streams[name] = { r = r, w = s.wfd, pending = s.pending }
      keep[#keep + 1], keep[#keep + 2] = r, s.wfd
    end
  end
  return out
end

--- Take back what `_handover` wrote (in the new image): the last lines.
function Log:_restore(h)
  for _, line in ipairs(h.ring or {}) do self:_keep(line, "stdout") end
  self.lines = h.lines or self.lines
end

--- The fd a process writes `stream` to (the held pipe's write end), or nil
-- when the stream is not held.
function Log:fd(stream)
  local s = self.streams[stream]
  return s and s.wfd
end

--- A process that wrote here ended: what it left without a newline is a
-- line of its own, marked "partial". Called a turn after the exit, so that
-- what it wrote last was read.
function Log:flush_partial()
  for _, s in pairs(self.streams) do
    -- (unless more of it waits in the pipe, unread — its reading paused
    -- for the terminal, say: then once that much is read, whatever its
    -- successor writes meanwhile)
    local unread = not s.eof and not s.ud:closed() and core.pipe_pending(s.rfd) or 0
    if unread > 0 then
      s.dues[#s.dues + 1] = s.read + unread
    elseif #s.pending > 0 then
      local line = s.pending
      s.pending = ""
      s.emit(line, "partial")
      for _, f in ipairs(s.flushes) do f() end
    end
  end
end

--- Stop holding the pipes: what is left in them is read and routed once
-- every process that had the write end is gone (waiting up to a second for
-- that where the caller can wait), then the files close.
function Log:close()
  if self.closed then return end
  self.closed = true
  for _, s in pairs(self.streams) do
    if s.wfd then
      core.close(s.wfd)
      s.wfd = nil
    end
    s.resume() -- (paused for the terminal: what is left is read all the same)
    s.dues = {} -- (no successor: the end of the pipe marks what is left partial; a process
    -- the one that ended left behind may still be writing)
  end
  if task.can_wait() then
    local deadline = core.now() + 1
    for _, s in pairs(self.streams) do
      while not s.eof and core.now() < deadline do task.sleep(0.005) end
    end
  end
  for _, s in pairs(self.streams) do
    if not s.eof then s.ud:close() end
  end
  for _, f in ipairs(self.files) do f:close() end
  self.files = {}
  track_files(self, false)
end

return M
