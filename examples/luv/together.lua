-- together.lua — baton beside luv (Debian: lua-luv) in one lua5.4 state,
-- on one libuv loop, whichever is required first: luv first, baton takes
-- luv's loop; baton first, baton gives luv its own loop as luv is loaded
-- (with luv_set_loop). Either way baton.core.host_loop() says "luv".
--   lua5.4 together.lua [baton-first]
local order = arg[1] or "luv-first"
assert(order == "luv-first" or order == "baton-first", "usage: lua5.4 together.lua [baton-first]")
local uv, baton
if order == "luv-first" then
  uv = require "luv"
  baton = require "baton"
else
  baton = require "baton"
  uv = require "luv"
end
assert(require("baton.core").host_loop() == "luv", "baton and luv do not share one loop")

-- 1. luv's uv.run() drives baton's tasks and processes.
local ticks, out = 0, nil
local timer = uv.new_timer()
timer:start(5, 5, function() ticks = ticks + 1 end)
baton.go(function()
  out = baton.cmd { "sh", "-c", "echo from a baton task" }:output()
  -- Baton's waits, luv's timer ticking meanwhile (bounded: on a loaded
  -- machine a tick may come late, but it comes).
  for _ = 1, 2000 do
    if ticks >= 3 then break end
    baton.sleep(0.005)
  end
  timer:close()
end)
uv.run()
assert(out == "from a baton task", tostring(out))
assert(ticks >= 3, "luv's timer did not tick while baton waited: " .. ticks)

-- 2. A baton wait outside any task drives luv's handles: a luv TCP echo
-- server answers baton's client while the main chunk waits in baton.
local server = uv.new_tcp()
assert(server:bind("127.0.0.1", 0))
assert(server:listen(16, function()
  local conn = uv.new_tcp()
  server:accept(conn)
  conn:read_start(function(_, data)
    if data then conn:write("echo: " .. data) else conn:close() end
  end)
end))
local port = server:getsockname().port
local reply = baton.go(function()
  local s = assert(baton.connect("tcp://127.0.0.1:" .. port))
  s:write("hello luv\n")
  local line = s:read("l")
  s:close()
  return line
end):wait()
server:close()
assert(reply == "echo: hello luv", tostring(reply))

-- 3. Inside luv's uv.run, outside a task, a wait cannot run the loop again.
local refused
local t = uv.new_timer()
t:start(1, 0, function()
  refused = select(2, pcall(baton.sleep, 0.01))
  t:close()
end)
uv.run()
assert(tostring(refused):find("cannot wait here", 1, true), tostring(refused))
-- 4. While a baton wait runs the loop, luv sees it running (uv.loop_mode()),
-- so a luv that checks (1.50 and later) refuses a uv.run() inside it.
local mode_seen
local t2 = uv.new_timer()
t2:start(1, 0, function()
  mode_seen = uv.loop_mode()
  t2:close()
end)
baton.sleep(0.02)
assert(mode_seen ~= nil, "luv did not see baton running the loop")
print(("luv (%s): ok (%d luv ticks while baton waited, %s)"):format(order, ticks, reply))
