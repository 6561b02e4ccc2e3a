--- baton.net — client-side TCP for scripts and for baton's own probes:
-- `connect` (a Stream both ways) and `http_get`, a small HTTP/1.0 GET for
-- health checks, not a general HTTP client.
--
-- Both wait in the calling task; a cancelled wait leaves no socket and no
-- pending callback. Addresses are numeric IPv4 or IPv6 (names are not
-- resolved). Failures return `nil, "ENAME: message (context)", "ENAME"`:
-- ECONNREFUSED, ETIMEDOUT, EMSGSIZE (an answer over the size cap), EPROTO
-- (not an HTTP answer), and what the system reports.
-- @module baton.net
local core = require "baton.core"
local task = require "baton.task"
local errors = require "baton.errors"
local options = require "baton.options"
local Stream = require "baton.stream"
errors.own()

local M = {}
local fmt, concat = string.format, table.concat
local argerror, fail = errors.argerror, errors.fail

--- Default cap on the size of an HTTP answer (status line, headers, body).
M.MAX_RESPONSE = 1024 * 1024

-- Whether `host` looks like a numeric IPv4 or IPv6 address (core.tcp_connect
-- has the last word).
local function numeric(host)
  local a, b, c, d = host:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if a then
    return tonumber(a) < 256 and tonumber(b) < 256 and tonumber(c) < 256 and tonumber(d) < 256
  end
  return host:find(":", 1, true) ~= nil and host:match("^[%x:.]+$") ~= nil
end

-- host, port of "host:port" or "[v6]:port" (`default_port` when none and
-- one is allowed); raises naming argument `n` of `fname`, `what` it is and
-- `shown`, the whole of it.
local function host_port(fname, n, what, shown, s, default_port)
  local host, port = s:match("^%[([^%]]*)%]:?(%d*)$")
  if not host then host, port = s:match("^([^:%[%]/]*):?(%d*)$") end
  local why
  if not host or host == "" then
    why = "host:port expected, as \"127.0.0.1:8080\" or \"[::1]:8080\""
  elseif port == "" and not default_port then
    why = "no port"
  elseif not numeric(host) then
    why = fmt("%q is not a numeric IPv4 or IPv6 address (names are not resolved: use 127.0.0.1 or ::1)", host)
  else
    port = port == "" and default_port or tonumber(port)
    if port < 1 or port > 65535 then why = "port out of range (1 to 65535)" end
  end
  if why then argerror(fname, n, fmt("bad %s %q: %s", what, shown, why)) end
  return host, port
end

-- Raise unless `opts` is nil or a table whose keys `keys` knows; returns it or {}.
local function check_opts(fname, opts, keys)
  if opts == nil then return {} end
  if type(opts) ~= "table" then argerror(fname, 2, "options table expected, got " .. type(opts)) end
  for k, v in pairs(opts) do
    local want = keys[k]
    if not want then
      argerror(fname, 2, fmt("unknown option %s", type(k) == "string" and fmt("'%s'", k) or tostring(k)))
    elseif want == "seconds" then
      options.check_seconds(fname, 2, v, fmt("option '%s'", k))
    elseif type(v) ~= want then
      argerror(fname, 2, fmt("option '%s' must be a %s, got %s", k, want, type(v)))
    end
  end
  return opts
end

-- Connect to host:port (`name` in messages) within `timeout` seconds (nil:
-- the system's own limit): a Stream, or nil, msg, code.
local function connect(host, port, name, timeout)
  local req, timer
  local ok, ud, msg, code = pcall(task.suspend, function(wake)
    local r, m, c = core.tcp_connect(host, port, wake)
    if not r then return wake(nil, m, c) end
    req = r
    if timeout then
      timer = core.timer()
      timer:start(options.ms(timeout), 0, function() wake(false) end)
    end
  end)
  if timer then timer:close() end
  if not ok or not ud then
    -- Cancelled, timed out or failed: the socket goes (it went already
    -- after a failure), and its callback with it.
    if req then req:close() end
    if not ok then error(ud, 0) end
    if ud == false then return fail("ETIMEDOUT", "connect to %s: no connection within %gs", name, timeout) end
    return fail(code, "%s (connect to %s)", core.strerror(code) or msg, name)
  end
  return Stream.new(ud, name, "rw")
end

local CONNECT_KEYS = { timeout = "seconds" }

--- Connect to a TCP server: `addr` is "127.0.0.1:8080", "[::1]:8080" or
-- "tcp://127.0.0.1:8080". Options: `timeout` (seconds; default: the
-- system's). Returns a Stream to read and write (and `shutdown`, `close`),
-- or nil, msg, code ("ECONNREFUSED", "ETIMEDOUT", …).
function M.connect(addr, opts)
  if type(addr) ~= "string" then argerror("connect", 1, "address string expected, got " .. type(addr)) end
  local host, port = host_port("connect", 1, "address", addr, (addr:gsub("^tcp://", "", 1)), nil)
  opts = check_opts("connect", opts, CONNECT_KEYS)
  return connect(host, port, addr, opts.timeout)
end

--- Raise unless `addr` is an address `connect` takes (for early checks:
-- a service's probe is checked when it is declared).
function M.check_address(addr)
  if type(addr) ~= "string" then argerror("connect", 1, "address string expected, got " .. type(addr)) end
  host_port("connect", 1, "address", addr, (addr:gsub("^tcp://", "", 1)), nil)
end

-- ---- HTTP GET -----------------------------------------------------------------------

-- host, port, authority (for Host:) and path of an http:// URL.
local function parse_url(url)
  if type(url) ~= "string" then argerror("http_get", 1, "URL string expected, got " .. type(url)) end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then argerror("http_get", 1, fmt("bad URL %q: http://host:port/path expected", url)) end
  scheme = scheme:lower()
  if scheme == "https" then
    argerror("http_get", 1, fmt("bad URL %q: https is not supported (plain http:// only)", url))
  elseif scheme ~= "http" then
    argerror("http_get", 1, fmt("bad URL %q: only http:// URLs are supported", url))
  end
  local authority, path = rest:match("^([^/?#]*)([^#]*)")
  if path == "" then path = "/" elseif path:sub(1, 1) == "?" then path = "/" .. path end
  if path:find("[%s%c]") then
    argerror("http_get", 1, fmt("bad URL %q: spaces or control characters in the path", url))
  end
  if authority:find("@", 1, true) then argerror("http_get", 1, fmt("bad URL %q: user info is not supported", url)) end
  local host, port = host_port("http_get", 1, "URL", url, authority, 80)
  return host, port, authority, path
end

--- Raise unless `url` is a URL `http_get` takes.
function M.check_url(url)
  parse_url(url)
end

-- The request for `path` with extra `headers` (name -> value; theirs
-- replace baton's Host, Connection and User-Agent).
local function request(path, authority, headers)
  local own = { host = authority, connection = "close", ["user-agent"] = "baton/" .. core.version }
  local lines = { "GET " .. path .. " HTTP/1.0" }
  for name, value in pairs(headers or {}) do
    if type(name) ~= "string" or not name:match("^[%w!#$%%&'*+.^_`|~-]+$") then
      argerror("http_get", 2, fmt("option 'headers': bad header name %q", tostring(name)))
    end
    if type(value) == "number" then value = tostring(value) end
    if type(value) ~= "string" or value:find("[\r\n%z]") then
      argerror("http_get", 2, fmt("option 'headers': the value of %s must be a one-line string", name))
    end
    own[name:lower()] = nil
    lines[#lines + 1] = name .. ": " .. value
  end
  for _, h in ipairs { { "host", "Host" }, { "connection", "Connection" }, { "user-agent", "User-Agent" } } do
    if own[h[1]] then lines[#lines + 1] = h[2] .. ": " .. own[h[1]] end
  end
  return concat(lines, "\r\n") .. "\r\n\r\n"
end

-- Status, headers (names lowercased; repeated ones joined by ", ") and the
-- body's length (nil: to end of stream) of a response head; or nil, why.
local function parse_head(head)
  local status = head:match("^HTTP/%d%.%d (%d%d%d)[^\r\n]*\r?\n")
  if not status then return nil, "no HTTP status line" end
  status = tonumber(status)
  local headers = {}
  for line in head:gmatch("\n([^\r\n]+)") do
    local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
    if not name then return nil, fmt("bad header line %q", line:sub(1, 80)) end
    name = name:lower()
    headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
  end
  if (headers["transfer-encoding"] or "identity"):lower() ~= "identity" then
    return nil, fmt("transfer-encoding %q in the answer to an HTTP/1.0 request", headers["transfer-encoding"])
  end
  local length
  if status == 204 or status == 304 or status < 200 then
    length = 0
  elseif headers["content-length"] then
    length = headers["content-length"]:match("^%d+$") and tonumber(headers["content-length"])
    if not length then return nil, fmt("bad content-length %q", headers["content-length"]) end
  end
  return status, headers, length
end

-- Send the request on `s` and read the answer: status, body, headers, or
-- nil, msg, code.
local function exchange(s, url, req, max)
  local ok, msg, code = s:write(req)
  if not ok then return nil, msg, code end
  local parts, n, size = {}, 0, 0
  local status, headers, length, head_end, buf
  while true do
    local chunk, emsg, ecode = s:read()
    if emsg then return nil, emsg, ecode end
    if chunk then
      n, size = n + 1, size + #chunk
      parts[n] = chunk
      if size > max then return fail("EMSGSIZE", "GET %s: answer larger than %d bytes", url, max) end
    end
    if not status then
      buf = concat(parts)
      parts, n = { buf }, 1
      local i, j = buf:find("\r?\n\r?\n")
      if i then
        head_end = j
        status, headers, length = parse_head(buf:sub(1, i))
        if not status then return fail("EPROTO", "GET %s: not an HTTP answer (%s)", url, headers) end
      elseif not chunk then
        return fail("EPROTO", "GET %s: %s", url, size == 0 and "connection closed without an answer"
          or "connection closed in the middle of the headers")
      end
    end
    if status and (not chunk or (length and size - head_end >= length)) then break end
  end
  local body = concat(parts):sub(head_end + 1)
  if length then
    if #body < length then
      return fail("EPROTO", "GET %s: connection closed after %d of %d body bytes", url, #body, length)
    end
    body = body:sub(1, length)
  end
  return status, body, headers
end

local HTTP_KEYS = { timeout = "seconds", headers = "table", max_size = "number" }

--- GET an http:// URL (numeric host; HTTP/1.0, `Connection: close`).
-- Options: `timeout` (seconds, for all of it: connect, send, answer),
-- `headers` (name -> value, added to the request), `max_size` (bytes of
-- the answer, default 1 MiB: more is an EMSGSIZE failure). Returns the
-- status code (any: a 404 is an answer), the body and the headers (names
-- lowercased), or nil, msg, code.
function M.http_get(url, opts)
  local host, port, authority, path = parse_url(url)
  opts = check_opts("http_get", opts, HTTP_KEYS)
  local max = opts.max_size or M.MAX_RESPONSE
  if math.type(max) ~= "integer" or max < 0 then
    argerror("http_get", 2, "option 'max_size' must be a non-negative integer")
  end
  local req = request(path, authority, opts.headers)
  local timeout = opts.timeout
  local deadline = timeout and core.now() + timeout
  local s, msg, code = connect(host, port, authority, timeout)
  if not s then return nil, msg, code end
  local timer, timed_out
  if deadline then
    -- Closing the stream ends a pending write or read; the time-out is
    -- what is reported then.
    timer = core.timer()
    timer:start(options.ms(math.max(0, deadline - core.now())), 0, function()
      timed_out = true
      s:close()
    end)
  end
  local r = table.pack(pcall(exchange, s, url, req, max))
  if timer then timer:close() end
  s:close()
  if not r[1] then error(r[2], 0) end -- cancelled
  if timed_out then return fail("ETIMEDOUT", "GET %s: no complete answer within %gs", url, timeout) end
  return table.unpack(r, 2, r.n)
end

return M
