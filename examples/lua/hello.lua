-- hello.lua — baton from a stock lua5.4: `lua5.4 hello.lua` once baton.so is
-- installed on lua5.4's package.cpath (`cmake --install` puts it there).
-- Without a host, baton runs its own loop: a wait outside any task drives it.
local baton = require "baton"

local r = baton.run { "sh", "-c", "echo hello from $0; exit 2", "lua5.4", capture = true, check = false }
assert(r.stdout == "hello from lua5.4\n" and r.code == 2, "unexpected result")

-- Two tasks at once; the main chunk waits for both.
local a = baton.go(function() return baton.cmd { "echo", "a" }:output() end)
local b = baton.go(function() baton.sleep(0.01); return "b" end)
assert(a:wait() == "a" and b:wait() == "b")
print("lua5.4: ok (baton " .. baton.version .. ")")
