-- logfile.lua — baton.logfile's write path alone: N short numbered lines
-- ("line 0000001", 13 bytes with the newline) into a log rotating every
-- 10,000 lines, delivered from loop turns in batches of 5,000 as the
-- service layer will (one write(2) per batch), then checked: every line
-- once, in order. Prints "<lines> <seconds> <cpu seconds> <rotations>".
-- Usage: baton bench/logfile.lua [N] [dir]
local N = tonumber(arg[1]) or 1000000
local dir = arg[2] or os.tmpname()
os.remove(dir)
assert(baton.ok { "mkdir", "-p", dir })
local path = dir .. "/bench.log"
local keep = N // 10000 + 1
local log = assert(baton.logfile.open(path, { max_size = 10000 * 13, keep = keep }))
local t0, c0 = baton.now(), os.clock()
local i = 0
require("baton.task").suspend(function(wake)
  local function batch()
    for _ = 1, 5000 do
      i = i + 1
      log:line(string.format("line %07d", i))
      if i == N then break end
    end
    if i == N then wake() else baton.core.defer(batch) end
  end
  baton.core.defer(batch)
end)
log:close()
local dt, cpu = baton.now() - t0, os.clock() - c0
local n = 0
for g = keep, 0, -1 do
  local f = io.open(g == 0 and path or path .. "." .. g, "rb")
  if f then
    for l in f:lines() do
      n = n + 1
      assert(l == string.format("line %07d", n), "out of order at " .. n)
    end
    f:close()
  end
end
assert(n == N, "lines: " .. n)
baton.run { "rm", "-rf", "--", dir }
print(N, string.format("%.3f", dt), string.format("%.3f", cpu), log.rotations)
