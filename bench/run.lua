-- bench/run.lua — runs each benchmark and its peers side by side, alternating,
-- several rounds, and prints medians and ratios. Started by bench/run, which
-- builds everything first. Sizes: BENCH_ROUNDS, BENCH_SPAWNS, BENCH_STARTS,
-- BENCH_HOLD_MIB, BENCH_CAPTURE, BENCH_WIRE; for the supervisors (see
-- bench/supervisors.lua) BENCH_IDLE_SECS, BENCH_IDLE_SETTLE, BENCH_KILLS; for the
-- log benchmark (bench/logs.lua) BENCH_LOG_LINES.
-- BENCH_ONLY=spawn,hold,startup,capture,pipeline,supervise-idle,supervise-latency,logs,upgrade
-- picks (`supervise` picks both supervisor benchmarks). The hot-upgrade one
-- (bench/upgrade.lua): BENCH_UPGRADES, BENCH_UPGRADE_WINDOW, BENCH_WRK_THREADS,
-- BENCH_WRK_CONNS.
local baton = require "baton"

local ROOT = arg[1]
local BUILD = ROOT .. "/build-bench"
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 5
local N = tonumber(os.getenv("BENCH_SPAWNS")) or 2000
local HOLD = tonumber(os.getenv("BENCH_HOLD_MIB")) or 1024
local CAPTURE = os.getenv("BENCH_CAPTURE") or "1G"
local WIRE = os.getenv("BENCH_WIRE") or "4G"
local ONLY = os.getenv("BENCH_ONLY")

-- Picked when BENCH_ONLY contains the name, or its group as a word (the part
-- before the "-": `supervise` picks supervise-idle and supervise-latency).
local function wanted(name)
  return not ONLY or ONLY:find(name, 1, true) ~= nil or (" " .. ONLY:gsub(",", " ") .. " "):find(
    " " .. (name:match("^(.-)%-") or name) .. " ", 1, true) ~= nil
end

local function median(t)
  local s = { table.unpack(t) }
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) / 2] or (s[n / 2] + s[n / 2 + 1]) / 2
end

-- Run a peer that prints "<count> <seconds> [peak RSS KiB]"; returns count
-- per second (and records the largest RSS a peer reported).
local peak_rss = {}
local function rate(cmd, name)
  local spec = { table.unpack(cmd) }
  spec.capture = true
  local r = baton.run(spec)
  local n, secs, rss = r.stdout:match("(%d+)%s+([%d.]+)%s*(%d*)")
  if rss ~= "" and name then peak_rss[name] = math.max(peak_rss[name] or 0, tonumber(rss)) end
  return tonumber(n) / tonumber(secs)
end

-- Run every peer once per round, alternating; report medians and ratios to `base`.
local function compare(title, unit, scale, peers, base)
  print(("\n== %s"):format(title))
  for _ = 1, ROUNDS do
    for _, p in ipairs(peers) do
      p.v = p.v or {}
      p.v[#p.v + 1] = rate(p.cmd, p.name) / scale
    end
  end
  local b
  for _, p in ipairs(peers) do
    p.m = median(p.v)
    if p.name == base then b = p.m end
  end
  for _, p in ipairs(peers) do
    local runs = {}
    for i, v in ipairs(p.v) do runs[i] = ("%.0f"):format(v) end
    print(("  %-40s %9.1f %s  %5.2fx   (runs: %s)"):format(p.name, p.m, unit, p.m / b, table.concat(runs, " ")))
  end
  local by = {}
  for _, p in ipairs(peers) do by[p.name] = p.m end
  return by
end

print(("baton benchmarks — %d rounds, alternating peers, medians (%s)"):format(ROUNDS, os.date("!%Y-%m-%d %H:%M UTC")))

if wanted("spawn") then
  local m = compare(("spawn+wait of /bin/true, %d sequential"):format(N), "spawns/s", 1, {
    { name = "C posix_spawn loop", cmd = { BUILD .. "/spawn_posix", tostring(N) } },
    { name = "baton.run (script)", cmd = { BUILD .. "/baton", ROOT .. "/bench/spawn.lua", tostring(N) } },
    { name = "python3 subprocess.run", cmd = { "python3", ROOT .. "/bench/spawn.py", tostring(N) } },
  }, "C posix_spawn loop")
  print(("  baton/C = %.2f (target >= 0.90); baton/python = %.2f (target >= 1.00)"):format(
    m["baton.run (script)"] / m["C posix_spawn loop"], m["baton.run (script)"] / m["python3 subprocess.run"]))
end

if wanted("hold") then
  local n_uv = math.max(20, N // 20) -- uv_spawn with a big parent is slow: fewer spawns
  local m = compare(("spawn rate while the parent holds %d MiB (N=%d; uv_spawn N=%d)"):format(HOLD, N, n_uv), "spawns/s", 1, {
    { name = "baton.run, empty parent", cmd = { BUILD .. "/baton", ROOT .. "/bench/spawn.lua", tostring(N), "0" } },
    { name = ("baton.run, %d MiB resident"):format(HOLD), cmd = { BUILD .. "/baton", ROOT .. "/bench/spawn.lua", tostring(N), tostring(HOLD) } },
    { name = "libuv uv_spawn, empty parent", cmd = { BUILD .. "/spawn_uv", tostring(n_uv), "0" } },
    { name = ("libuv uv_spawn, %d MiB resident"):format(HOLD), cmd = { BUILD .. "/spawn_uv", tostring(n_uv), tostring(HOLD) } },
  }, "baton.run, empty parent")
  print(("  baton %d MiB / baton empty = %.2f (target >= 0.90)"):format(HOLD,
    m[("baton.run, %d MiB resident"):format(HOLD)] / m["baton.run, empty parent"]))
end

if wanted("startup") then
  local STARTS = tonumber(os.getenv("BENCH_STARTS")) or 200
  print(("\n== startup, %d runs each of `baton -e ''` and `lua5.4 -e ''`, alternating"):format(STARTS))
  local tb, tl = {}, {}
  for _ = 1, STARTS do
    tb[#tb + 1] = baton.run { BUILD .. "/baton", "-e", "" }.duration
    tl[#tl + 1] = baton.run { "lua5.4", "-e", "" }.duration
  end
  local mb, ml = median(tb), median(tl)
  print(("  baton -e ''    %7.3f ms\n  lua5.4 -e ''   %7.3f ms\n  baton/lua5.4 = %.2f (target <= 1.50)"):format(
    mb * 1000, ml * 1000, mb / ml))
end

if wanted("capture") then
  local B, P = "baton.run, Lua function sink", "python3 Popen + read(65536) loop"
  local m = compare(("capture %s of a child's stdout, discarded (head: 8 KiB writes)"):format(CAPTURE), "MB/s", 1e6, {
    { name = B, cmd = { BUILD .. "/baton", ROOT .. "/bench/capture.lua", CAPTURE } },
    { name = P, cmd = { "python3", ROOT .. "/bench/capture.py", CAPTURE } },
  }, P)
  print(("  baton/python = %.2f (target >= 1.00)"):format(m[B] / m[P]))
  if CAPTURE:match("^%d+G$") then
    m = compare(("capture %s written in 1 MiB blocks (dd bs=1M), discarded"):format(CAPTURE), "MB/s", 1e6, {
      { name = B, cmd = { BUILD .. "/baton", ROOT .. "/bench/capture.lua", CAPTURE, "dd" } },
      { name = P, cmd = { "python3", ROOT .. "/bench/capture.py", CAPTURE, "dd" } },
    }, P)
    print(("  baton/python = %.2f"):format(m[B] / m[P]))
  end
end

if wanted("pipeline") then
  local m = compare(("pipeline: head -c %s /dev/zero | cat | cat > /dev/null"):format(WIRE), "MB/s", 1e6, {
    { name = "baton pipeline (fd to fd)", cmd = { BUILD .. "/baton", ROOT .. "/bench/pipe.lua", "wire", WIRE } },
    { name = "bash pipeline", cmd = { "bash", ROOT .. "/bench/pipe.sh", WIRE } },
  }, "bash pipeline")
  print(("  baton/bash = %.2f (target >= 0.95); baton peak RSS %d KiB"):format(
    m["baton pipeline (fd to fd)"] / m["bash pipeline"], peak_rss["baton pipeline (fd to fd)"] or -1))
  local m2 = compare(("pipeline capture: head -c %s /dev/zero | cat, into a Lua sink / read loop"):format(CAPTURE), "MB/s", 1e6, {
    { name = "baton pipeline, Lua function sink", cmd = { BUILD .. "/baton", ROOT .. "/bench/pipe.lua", "capture", CAPTURE } },
    { name = "python3 Popen chain + read(65536)", cmd = { "python3", ROOT .. "/bench/pipe.py", CAPTURE } },
  }, "python3 Popen chain + read(65536)")
  print(("  baton/python = %.2f (target >= 1.00); baton peak RSS %d KiB"):format(
    m2["baton pipeline, Lua function sink"] / m2["python3 Popen chain + read(65536)"],
    peak_rss["baton pipeline, Lua function sink"] or -1))
end

if wanted("supervise-idle") or wanted("supervise-latency") then
  dofile(ROOT .. "/bench/supervisors.lua")(ROOT, BUILD, wanted)
end

if wanted("logs") then
  dofile(ROOT .. "/bench/logs.lua")(ROOT, BUILD, ROUNDS, median)
end
if wanted("upgrade") then
  dofile(ROOT .. "/bench/upgrade.lua")(ROOT, BUILD)
end
