-- logs.lua — the log benchmark of bench/run.lua (which loads this file and
-- calls the function it returns): one writer printing short lines as fast
-- as it can (`seq 1 N`: N lines of up to 8 bytes), captured into rotating
-- files (10 MiB a file, 1000 kept) by baton and by s6-log, alternating, in
-- one run. BENCH_LOG_LINES (default 5,000,000) lines a round.
--
-- baton: its own process (bench/log_service.lua): a supervisor whose one
--   service is the writer, `log = { stdout = { {file = …, max_size = 10 MiB,
--   keep = 1000} } }`; timed from its spawn until it exits, which is once
--   the service exited, the pipe was read to its end and the file closed.
--   CPU: what that process reports of its own (os.clock: utime + stime, not
--   the writer's).
-- s6-log: `seq 1 N | s6-log -b n1000 s10485760 DIR` (-b: blocking, as
--   baton; no timestamps asked); timed from the spawn of the pipeline until
--   both exited; CPU: s6-log's own rusage.
--
-- Each round counts the lines in every file each wrote (the current file
-- and the rotated ones) and fails unless both wrote exactly N.
local fmt = string.format

return function(ROOT, BUILD, ROUNDS, median)
  local N = tonumber(os.getenv("BENCH_LOG_LINES")) or 5000000
  local tmp = baton.output { "mktemp", "-d", "/tmp/baton-bench-logs.XXXXXX" }

  -- Lines in every file of `dir` (s6-log's lock and state are empty).
  local function count(dir)
    return tonumber(baton.output(baton.pipeline {
      { "find", dir, "-type", "f", "-exec", "cat", "{}", "+" }, { "wc", "-l" } }))
  end

  local function fresh(dir)
    baton.run { "rm", "-rf", dir }
    baton.run { "mkdir", "-p", dir }
  end

  local function run_baton()
    local dir = tmp .. "/baton"
    fresh(dir)
    local r = baton.run { BUILD .. "/baton", ROOT .. "/bench/log_service.lua", tostring(N), dir .. "/baton.log",
      capture = true, check = true }
    local cpu, routed = r.stdout:match("^(%S+) (%d+)")
    local n = count(dir)
    assert(n == N and tonumber(routed) == N, fmt("baton wrote %d lines (%s routed) of %d", n, tostring(routed), N))
    return { wall = r.duration, cpu = tonumber(cpu) }
  end

  local function run_s6()
    local dir = tmp .. "/s6"
    fresh(dir)
    local r = baton.pipeline { { "seq", "1", tostring(N), stdin = "null" },
      { "s6-log", "-b", "n1000", "s10485760", dir } }:run()
    assert(r.ok, "seq | s6-log: " .. tostring(r))
    local ru = r.stages[2].rusage
    local n = count(dir)
    assert(n == N, fmt("s6-log wrote %d lines of %d", n, N))
    return { wall = r.duration, cpu = ru.utime + ru.stime }
  end

  print(fmt("\n== log throughput: `seq 1 %d` into a rotating file (10 MiB, keep 1000), baton vs s6-log", N))
  local ok, err = pcall(function()
    local runs = { baton = {}, s6 = {} }
    for _ = 1, ROUNDS do
      runs.baton[#runs.baton + 1] = run_baton()
      runs.s6[#runs.s6 + 1] = run_s6()
    end
    local m = {}
    for name, rs in pairs(runs) do
      local rate, cpu, shown = {}, {}, {}
      for i, x in ipairs(rs) do
        rate[i], cpu[i] = N / x.wall, x.cpu / N * 1e6 * 1e3
        shown[i] = fmt("%.2f", rate[i] / 1e6)
      end
      m[name] = { rate = median(rate), cpu = median(cpu), shown = table.concat(shown, " ") }
    end
    local label = { baton = "baton service log, file route", s6 = "s6-log -b (seq | s6-log)" }
    for _, name in ipairs { "baton", "s6" } do
      print(fmt("  %-34s %7.2f M lines/s  %7.1f ms CPU per M lines   (runs, M lines/s: %s)", label[name],
        m[name].rate / 1e6, m[name].cpu, m[name].shown))
    end
    print(fmt("  baton/s6-log: lines/s = %.2f (target >= 1.00), CPU per line = %.2f", m.baton.rate / m.s6.rate,
      m.baton.cpu / m.s6.cpu))
  end)
  baton.run { "rm", "-rf", tmp }
  if not ok then error(err, 0) end
end
