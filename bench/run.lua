-- bench/run.lua — runs each benchmark and its peers side by side, alternating,
-- several rounds, and prints medians and ratios. Started by bench/run.
local baton = require "baton"

local ROOT = arg[1]
local BUILD = ROOT .. "/build-bench"
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 5
local N = tonumber(os.getenv("BENCH_SPAWNS")) or 2000

local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) / 2] or (s[n / 2] + s[n / 2 + 1]) / 2
end

local function timed(cmd)
  local spec = { table.unpack(cmd) }
  spec.capture = true
  local r = baton.run(spec)
  local n, secs = r.stdout:match("(%d+)%s+([%d.]+)")
  return tonumber(n) / tonumber(secs)
end

local function section(title) print(("\n== %s"):format(title)) end

local function report(rows, base)
  local b = median(rows[base].v)
  for _, name in ipairs(rows.order) do
    local m = median(rows[name].v)
    print(("  %-34s %10.1f %s   %5.2fx %s   (runs: %s)"):format(name, m, rows.unit, m / b, base,
      table.concat((function()
        local o = {}
        for i, v in ipairs(rows[name].v) do o[i] = ("%.0f"):format(v) end
        return o
      end)(), " ")))
  end
end

-- 1. spawn + wait of /bin/true, sequential.
section(("spawn+wait of /bin/true, %d sequential, median of %d alternating rounds"):format(N, ROUNDS))
local peers = {
  order = { "C posix_spawn loop", "baton.run (script)", "python3 subprocess.run" },
  unit = "spawns/s",
  ["C posix_spawn loop"] = { cmd = { BUILD .. "/spawn_posix", tostring(N) }, v = {} },
  ["baton.run (script)"] = { cmd = { BUILD .. "/baton", ROOT .. "/bench/spawn.lua", tostring(N) }, v = {} },
  ["python3 subprocess.run"] = { cmd = { "python3", ROOT .. "/bench/spawn.py", tostring(N) }, v = {} },
}
for _ = 1, ROUNDS do
  for _, name in ipairs(peers.order) do
    local p = peers[name]
    p.v[#p.v + 1] = timed(p.cmd)
  end
end
report(peers, "C posix_spawn loop")
local ratio_c = median(peers["baton.run (script)"].v) / median(peers["C posix_spawn loop"].v)
local ratio_py = median(peers["baton.run (script)"].v) / median(peers["python3 subprocess.run"].v)
print(("  baton / C = %.2f (target >= 0.90)   baton / python = %.2f (target >= 1.00)"):format(ratio_c, ratio_py))

-- 2. startup: baton -e '' against lua5.4 -e ''.
local STARTS = tonumber(os.getenv("BENCH_STARTS")) or 200
section(("startup, %d runs each of `baton -e ''` and `lua5.4 -e ''`, alternating"):format(STARTS))
local times = { baton = {}, lua = {} }
for _ = 1, STARTS do
  times.baton[#times.baton + 1] = baton.run { BUILD .. "/baton", "-e", "" }.duration
  times.lua[#times.lua + 1] = baton.run { "lua5.4", "-e", "" }.duration
end
local mb, ml = median(times.baton), median(times.lua)
print(("  baton -e ''   %7.3f ms (median)"):format(mb * 1000))
print(("  lua5.4 -e ''  %7.3f ms (median)"):format(ml * 1000))
print(("  baton / lua5.4 = %.2f (target <= 1.50)"):format(mb / ml))
