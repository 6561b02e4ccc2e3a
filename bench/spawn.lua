-- spawn.lua — baton's side of the spawn benchmark: N sequential baton.run of
-- a program, from a script (run by the baton executable). Prints "<N> <seconds>".
local n = tonumber(arg[1]) or 2000
local prog = arg[2] or "/bin/true"
local t = baton.now()
for _ = 1, n do baton.run { prog } end
print(n, string.format("%.6f", baton.now() - t))
