-- Client-side TCP (baton.net): connect and http_get, against real peers
-- (spec/net_peer.py, each on a port the kernel picked) on the loopback.
local baton = require "baton"
local H = require "helper"

-- Start a peer (see spec/net_peer.py) on `host`; returns it (a process,
-- for `<close>`: killed and reaped) and its port.
local function peer(mode, host)
  local p = assert(baton.spawn { "python3", "spec/net_peer.py", mode, host or "127.0.0.1", stdout = "pipe" })
  local port = p.stdout:read("l")
  if not port then
    p:close()
    error("net_peer.py " .. mode .. " did not start")
  end
  return p, math.tointeger(tonumber(port))
end

local function has_ipv6()
  local p = io.open("/proc/net/if_inet6")
  local ok = p and p:read("a"):find("00000000000000000000000000000001 ", 1, true) ~= nil
  if p then p:close() end
  return ok
end

describe("baton.connect", function()
  H.guard()

  it("connects, writes and reads back (echo server)", function()
    local srv <close>, port = peer("echo")
    local s <close> = assert(baton.connect("127.0.0.1:" .. port))
    assert.are.equal("baton.stream (127.0.0.1:" .. port .. ")", tostring(s))
    assert.are.equal(s, s:write("hello ", "world", "\n"))
    assert.are.equal("hello world", s:read("l"))
    s:write("one\ntwo\n", "three")
    assert.are.equal(s, s:shutdown()) -- the server sees EOF, answers the rest and closes
    local lines = {}
    for l in s:lines() do lines[#lines + 1] = l end
    assert.are.same({ "one", "two", "three" }, lines)
    assert.are.equal("", s:read("a"))
    s:close()
    assert.is_true(s.closed)
    H.error_here(function() s:write("x") end, "baton: write to a closed stream (127.0.0.1:" .. port .. ")")
  end)

  it("reads everything to EOF with read('a') and takes tcp:// addresses", function()
    local srv <close>, port = peer("echo")
    local s <close> = assert(baton.connect("tcp://127.0.0.1:" .. port, { timeout = H.PATIENCE }))
    local big = string.rep("0123456789abcdef", 1 << 14) -- 256 KiB: more than a socket buffer
    baton.go(function()
      s:write(big)
      s:shutdown()
    end)
    assert.are.equal(big, s:read("a"))
  end)

  it("connects over IPv6", function()
    if not has_ipv6() then return pending("no IPv6 loopback here") end
    local srv <close>, port = peer("echo", "::1")
    local s <close> = assert(baton.connect("[::1]:" .. port))
    s:write("six\n")
    assert.are.equal("six", s:read("l"))
  end)

  it("returns nil, msg, 'ECONNREFUSED' where nothing listens", function()
    local srv <close>, port = peer("closed")
    local s, msg, code = baton.connect("127.0.0.1:" .. port)
    assert.is_nil(s)
    assert.are.equal("ECONNREFUSED", code)
    assert.are.equal("ECONNREFUSED: connection refused (connect to 127.0.0.1:" .. port .. ")", msg)
  end)

  it("returns nil, msg, 'ETIMEDOUT' when the connection is not made in time", function()
    -- The peer's accept queue (backlog 0) is full after the first connect:
    -- the kernel drops the SYNs of the next one, which never completes.
    local srv <close>, port = peer("silent")
    local first <close> = assert(baton.connect("127.0.0.1:" .. port))
    local s, msg, code = baton.connect("127.0.0.1:" .. port, { timeout = 0.2 })
    assert.is_nil(s)
    assert.are.equal("ETIMEDOUT", code)
    assert.are.equal("ETIMEDOUT: connect to 127.0.0.1:" .. port .. ": no connection within 0.2s", msg)
  end)

  it("a cancelled connect leaves no socket and no callback behind", function()
    local srv <close>, port = peer("echo")
    local before = H.fds()
    local t = baton.go(function() return baton.connect("127.0.0.1:" .. port) end)
    assert.is_false(t:is_done()) -- waiting for the connect
    assert.is_true(t:cancel())
    assert.has_error(function() t:wait() end, "cancelled")
    baton.sleep(0) -- the close completes in a turn of the loop
    assert.are.equal(before, H.fds())

    -- The C request the same way: closed, its callback never comes.
    local fired = false
    local req = assert(baton.core.tcp_connect("127.0.0.1", port, function() fired = true end))
    req:close()
    -- A connect made after it has completed when this one is done.
    local s <close> = assert(baton.connect("127.0.0.1:" .. port))
    s:close()
    baton.sleep(0)
    assert.is_false(fired)
    assert.are.equal(before, H.fds())
  end)

  it("raises on bad addresses and options, naming them", function()
    H.error_here(function() baton.connect(8080) end, "bad argument #1 to 'connect' (address string expected, got number)")
    H.error_here(function() baton.connect("127.0.0.1") end,
      "bad argument #1 to 'connect' (bad address \"127.0.0.1\": no port)")
    H.error_here(function() baton.connect("localhost:80") end, "bad argument #1 to 'connect' (bad address " ..
      "\"localhost:80\": \"localhost\" is not a numeric IPv4 or IPv6 address (names are not resolved: use 127.0.0.1 or ::1))")
    H.error_here(function() baton.connect("127.0.0.1:70000") end,
      "bad argument #1 to 'connect' (bad address \"127.0.0.1:70000\": port out of range (1 to 65535))")
    H.error_here(function() baton.connect("::1:80") end, "bad argument #1 to 'connect' (bad address \"::1:80\": " ..
      "host:port expected, as \"127.0.0.1:8080\" or \"[::1]:8080\")")
    H.error_here(function() baton.connect("256.0.0.1:80") end, "bad argument #1 to 'connect' (bad address " ..
      "\"256.0.0.1:80\": \"256.0.0.1\" is not a numeric IPv4 or IPv6 address (names are not resolved: use 127.0.0.1 or ::1))")
    H.error_here(function() baton.connect("127.0.0.1:80", { timout = 1 }) end,
      "bad argument #2 to 'connect' (unknown option 'timout')")
    H.error_here(function() baton.connect("127.0.0.1:80", { timeout = -1 }) end,
      "bad argument #2 to 'connect' (option 'timeout' must be a number of seconds from 0 to 1e+09, got -1)")
  end)
end)

describe("baton.http_get", function()
  H.guard()

  it("returns status, body and headers", function()
    local srv <close>, port = peer("http")
    local status, body, headers = baton.http_get("http://127.0.0.1:" .. port .. "/")
    assert.are.equal(200, status)
    assert.are.equal("hello\n", body)
    assert.are.equal("6", headers["content-length"])
    assert.are.equal("net_peer", headers["x-peer"])

    status, body = baton.http_get("http://127.0.0.1:" .. port .. "/missing", { timeout = H.PATIENCE })
    assert.are.equal(404, status)
    assert.are.equal("no such thing\n", body)

    status, body = baton.http_get("http://127.0.0.1:" .. port .. "/nolength")
    assert.are.equal(200, status)
    assert.are.equal("to the end\n", body)
  end)

  it("sends an HTTP/1.0 request with Host, Connection: close and the headers given", function()
    local srv <close>, port = peer("http")
    local status, body = baton.http_get("http://127.0.0.1:" .. port .. "/headers", { headers = { ["X-Probe"] = "yes" } })
    assert.are.equal(200, status)
    assert.matches("^GET /headers HTTP/1.0\r\n", body)
    assert.matches("\nHost: 127.0.0.1:" .. port .. "\n", body, 1, true)
    assert.matches("\nConnection: close\n", body, 1, true)
    assert.matches("\nX-Probe: yes\n", body, 1, true)
    assert.matches("\nUser-Agent: baton/", body, 1, true)

    status, body = baton.http_get("http://127.0.0.1:" .. port .. "/headers", { headers = { host = "example.org" } })
    assert.are.equal(200, status)
    assert.matches("\nhost: example.org\n", body, 1, true)
    assert.is_nil(body:find("\nHost:", 1, true))
  end)

  it("speaks to IPv6 servers", function()
    if not has_ipv6() then return pending("no IPv6 loopback here") end
    local srv <close>, port = peer("http", "::1")
    local status, body = baton.http_get("http://[::1]:" .. port .. "/headers")
    assert.are.equal(200, status)
    assert.matches("\nHost: [::1]:" .. port .. "\n", body, 1, true)
  end)

  it("caps the size of the answer", function()
    local srv <close>, port = peer("http")
    local url = "http://127.0.0.1:" .. port .. "/big"
    local ok, msg, code = baton.http_get(url)
    assert.is_nil(ok)
    assert.are.equal("EMSGSIZE", code)
    assert.are.equal("EMSGSIZE: GET " .. url .. ": answer larger than 1048576 bytes", msg)
    local status, body = baton.http_get(url, { max_size = 3 << 20 })
    assert.are.equal(200, status)
    assert.are.equal(2 << 20, #body)
  end)

  it("returns ECONNREFUSED, ETIMEDOUT and EPROTO failures", function()
    local closed <close>, cport = peer("closed")
    local ok, msg, code = baton.http_get("http://127.0.0.1:" .. cport .. "/")
    assert.is_nil(ok)
    assert.are.equal("ECONNREFUSED", code)
    assert.are.equal("ECONNREFUSED: connection refused (connect to 127.0.0.1:" .. cport .. ")", msg)

    local silent <close>, sport = peer("silent") -- accepts (in the kernel), never answers
    local url = "http://127.0.0.1:" .. sport .. "/health"
    ok, msg, code = baton.http_get(url, { timeout = 0.2 })
    assert.is_nil(ok)
    assert.are.equal("ETIMEDOUT", code)
    assert.are.equal("ETIMEDOUT: GET " .. url .. ": no complete answer within 0.2s", msg)

    local echo <close>, eport = peer("echo") -- sends the request back: not an answer
    url = "http://127.0.0.1:" .. eport .. "/"
    ok, msg, code = baton.http_get(url)
    assert.is_nil(ok)
    assert.are.equal("EPROTO", code)
    assert.are.equal("EPROTO: GET " .. url .. ": not an HTTP answer (no HTTP status line)", msg)
  end)

  it("raises on bad URLs and options, naming them", function()
    H.error_here(function() baton.http_get() end, "bad argument #1 to 'http_get' (URL string expected, got nil)")
    H.error_here(function() baton.http_get("https://127.0.0.1/") end,
      "bad argument #1 to 'http_get' (bad URL \"https://127.0.0.1/\": https is not supported (plain http:// only))")
    H.error_here(function() baton.http_get("ftp://127.0.0.1/") end,
      "bad argument #1 to 'http_get' (bad URL \"ftp://127.0.0.1/\": only http:// URLs are supported)")
    H.error_here(function() baton.http_get("127.0.0.1:80/") end,
      "bad argument #1 to 'http_get' (bad URL \"127.0.0.1:80/\": http://host:port/path expected)")
    H.error_here(function() baton.http_get("http://example.org/") end, "bad argument #1 to 'http_get' (bad URL " ..
      "\"http://example.org/\": \"example.org\" is not a numeric IPv4 or IPv6 address (names are not resolved: use 127.0.0.1 or ::1))")
    H.error_here(function() baton.http_get("http://127.0.0.1/a b") end,
      "bad argument #1 to 'http_get' (bad URL \"http://127.0.0.1/a b\": spaces or control characters in the path)")
    H.error_here(function() baton.http_get("http://127.0.0.1/", { headers = { ["a b"] = "x" } }) end,
      "bad argument #2 to 'http_get' (option 'headers': bad header name \"a b\")")
    H.error_here(function() baton.http_get("http://127.0.0.1/", { headers = { a = "x\r\ny: z" } }) end,
      "bad argument #2 to 'http_get' (option 'headers': the value of a must be a one-line string)")
    H.error_here(function() baton.http_get("http://127.0.0.1/", { max_size = -1 }) end,
      "bad argument #2 to 'http_get' (option 'max_size' must be a non-negative integer)")
  end)
end)
