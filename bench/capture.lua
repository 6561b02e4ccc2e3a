-- capture.lua — baton's side of the capture benchmark: read SIZE bytes of a
-- child's stdout through a Lua sink that discards them. The child writes in
-- 8 KiB blocks (head, like most stdio programs) or 1 MiB blocks (dd).
-- Prints "<bytes> <seconds>".
local size, writer = arg[1] or "1G", arg[2] or "head"
local argv = writer == "dd" and { "dd", "if=/dev/zero", "bs=1M", "count=" .. (size:match("^(%d+)G$") or 1) * 1024, "status=none" }
  or { "head", "-c", size, "/dev/zero" }
local n = 0
local t = baton.now()
argv.stdout = function(c) if c then n = n + #c end end
baton.run(argv)
print(n, string.format("%.6f", baton.now() - t))
