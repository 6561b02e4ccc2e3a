-- pipe.lua — baton's side of the pipeline benchmarks. Prints
-- "<bytes> <seconds> <peak RSS KiB>".
--   pipe.lua wire SIZE      head -c SIZE /dev/zero | cat | cat > /dev/null
--   pipe.lua capture SIZE   head -c SIZE /dev/zero | cat, read by a Lua sink
local mode, size = arg[1], arg[2] or "1G"
local c = baton.cmd
local t = baton.now()
local n = 0
if mode == "wire" then
  local r = baton.run((c { "head", "-c", size, "/dev/zero" } | c { "cat" } | c { "cat" }):with { stdout = { path = "/dev/null" } })
  assert(r.ok)
  n = tonumber(baton.output { "numfmt", "--from=iec", size })
else
  local r = baton.run((c { "head", "-c", size, "/dev/zero" } | c { "cat" }):with {
    stdout = function(chunk) if chunk then n = n + #chunk end end })
  assert(r.ok)
end
print(n, string.format("%.6f", baton.now() - t), baton.core.maxrss())
