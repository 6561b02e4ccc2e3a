-- spawn.lua — baton's side of the spawn benchmarks: N sequential baton.run of
-- /bin/true from a script, optionally while holding MiB of memory (a touched
-- Lua string). Prints "<N> <seconds>".  Usage: spawn.lua N [hold_mib]
local n = tonumber(arg[1]) or 2000
local hold = tonumber(arg[2]) or 0
local ballast = hold > 0 and string.rep("x", hold << 20) or nil
local t = baton.now()
for _ = 1, n do baton.run { "/bin/true" } end
print(n, string.format("%.6f", baton.now() - t))
assert(not ballast or #ballast == hold << 20)
