-- spawn.lua — baton's side of the spawn benchmarks: N sequential baton.run of
-- /bin/true from a script, optionally while holding MiB of touched memory.
-- The memory is malloc'd in C (hold.so, next to the baton executable) as in
-- the uv_spawn peer; `lua` holds it as a Lua string instead, which the GC
-- counts (see hold.c). Prints "<N> <seconds>".  Usage: spawn.lua N [hold_mib [lua]]
local n = tonumber(arg[1]) or 2000
local hold = tonumber(arg[2]) or 0
local ballast
if hold > 0 and arg[3] == "lua" then
  ballast = string.rep("x", hold << 20)
elseif hold > 0 then
  local dir = arg[-1]:match("^(.*)/[^/]*$") or "."
  local hold_c = assert(package.loadlib(dir .. "/hold.so", "luaopen_hold"))()
  ballast = hold_c(hold)
end
local t = baton.now()
for _ = 1, n do baton.run { "/bin/true" } end
print(n, string.format("%.6f", baton.now() - t))
assert(not ballast or type(ballast) ~= "string" or #ballast == hold << 20)
