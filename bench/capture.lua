-- capture.lua — baton's side of the capture benchmark: read SIZE bytes of a
-- child's stdout through a Lua sink that discards them. Prints "<bytes> <seconds>".
local size = arg[1] or "1G"
local n = 0
local t = baton.now()
baton.run { "head", "-c", size, "/dev/zero", stdout = function(c) if c then n = n + #c end end }
print(n, string.format("%.6f", baton.now() - t))
