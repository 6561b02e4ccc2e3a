-- upgrade.lua — the hot-upgrade benchmark of bench/run.lua (which loads this
-- file and calls the function it returns; BENCH_ONLY=upgrade): wrk against
-- three ways of replacing a running HTTP server, side by side in one run,
-- with keep-alive and with "Connection: close":
--
--   (a) baton upgrading the C server of the specs (examples/upgradable_server/server.c:
--       libsystemd's sd_listen_fds_with_names and sd_notify, drains on TERM)
--       BENCH_UPGRADES times (default 50) with sv:upgrade;
--   (b) a Go server upgrading itself with cloudflare/tableflip
--       (bench/tableflip_server.go, built from Debian's
--       golang-github-cloudflare-tableflip-dev, offline: GO111MODULE=off and
--       /usr/share/gocode), SIGHUP after SIGHUP, each once the previous
--       parent exited (tableflip refuses an upgrade before that);
--   (c) a naive restart: the same C server binding its port itself, stopped
--       and started again (sv:restart) as many times.
--
-- Per mode: wrk's errors (connect, read, write, timeout, non-2xx), requests/s
-- in a window of BENCH_UPGRADE_WINDOW seconds (default 5) over which the
-- replacements are paced evenly, against requests/s of the same window with
-- the same server left alone (target >= 0.95, 0 errors) — medians of
-- BENCH_UPGRADE_ROUNDS (3) rounds of both windows, alternating — and
-- for (a) the time from READY=1 arriving (the supervisor's "ready" event,
-- stamped as the datagram is read) to promotion (the upgrade's `promoted`
-- hook): p50/p99 (target p99 < 1 ms). wrk: BENCH_WRK_THREADS (1),
-- BENCH_WRK_CONNS (16).
local core = baton.core
local fmt = string.format

return function(ROOT, BUILD)
  local UPGRADES = tonumber(os.getenv("BENCH_UPGRADES")) or 50
  local WINDOW = tonumber(os.getenv("BENCH_UPGRADE_WINDOW")) or 5
  local THREADS = tonumber(os.getenv("BENCH_WRK_THREADS")) or 1
  local CONNS = tonumber(os.getenv("BENCH_WRK_CONNS")) or 16
  local ROUNDS = tonumber(os.getenv("BENCH_UPGRADE_ROUNDS")) or 3
  local P = dofile(ROOT .. "/spec/upgrade_peers.lua")
  P.ROOT = ROOT
  local C_SERVER = BUILD .. "/sd_http_server"
  assert(baton.subreaper(true)) -- (tableflip's generations are orphans: baton reaps them)

  local function pct(list, p)
    local s = { table.unpack(list) }
    table.sort(s)
    if #s == 0 then return 0 / 0 end
    return s[math.max(1, math.ceil(#s * p))]
  end

  -- wrk for WINDOW seconds while `replace(i)` runs UPGRADES times, paced
  -- evenly over the window (replacement i starts at i·WINDOW/UPGRADES, or at
  -- once when behind); `replace` nil: the same window with the server left
  -- alone (the steady state). Returns wrk's report, and how long the
  -- replacements took in all.
  local function window(url, port, close, replace)
    local w <close> = P.wrk(url, { threads = THREADS, connections = CONNS, close = close, duration = "300s" })
    local deadline = baton.now() + 30
    while P.established(port) == 0 and w.running() and baton.now() < deadline do baton.sleep(0.001) end
    assert(w.running(), "wrk ended early")
    local t0, busy = baton.now(), 0
    -- (pcall: an error must stop wrk here — a <close> variable of the main
    -- chunk is not closed when the error leaves the script)
    local ok, err = pcall(function()
      for i = 1, replace and UPGRADES or 0 do
        local at = t0 + (i - 1) * WINDOW / UPGRADES
        if baton.now() < at then baton.sleep(at - baton.now()) end
        local t = baton.now()
        replace(i)
        busy = busy + baton.now() - t
      end
      if baton.now() < t0 + WINDOW then baton.sleep(t0 + WINDOW - baton.now()) end
    end)
    local r = w.stop()
    if not ok then error(err, 0) end
    r.took = busy
    return r
  end
  -- ROUNDS rounds of (steady window, window with replacements), one after
  -- the other, so that drift over the run (TIME_WAIT sockets piling up in
  -- close mode, caches warming) falls on both alike: the steady rate is the
  -- median of the steady windows; the rate during upgrades the median of
  -- the others, with their errors, requests and time summed.
  local function measure(url, port, close, replace)
    local bases, rates, sum = {}, {}, nil
    for k = 1, ROUNDS do
      bases[k] = window(url, port, close, nil).rate
      local r = window(url, port, close, replace)
      rates[k] = r.rate or 0
      if not sum then
        sum = r
      else
        for _, f in ipairs { "requests", "connect", "read", "write", "timeout", "non2xx", "errors", "took" } do
          sum[f] = (sum[f] or 0) + (r[f] or 0)
        end
      end
    end
    sum.rate = pct(rates, 0.5)
    return pct(bases, 0.5), sum
  end

  local rows = {}
  local function row(name, close, base, r, extra)
    rows[#rows + 1] = { name = name, mode = close and "close" or "keep-alive", base = base, r = r, extra = extra or "" }
    io.stderr:write(fmt("  (%s, %s: done)\n", name, close and "close" or "keep-alive"))
  end

  -- (a) baton + the C server.
  local latencies, internal = {}, {}
  do
    local decl = function(gen) return P.c_server(C_SERVER, gen) end
    local sv = baton.supervisor { web = decl(1) }
    assert(sv:start())
    local info = assert(sv:listener("web", "http"))
    local url = info.url:gsub("^tcp", "http") .. "/"
    local ready_at = {}
    local off = sv:on("ready", function(ev) ready_at[ev.generation] = ev.time end)
    local gen = 1
    for _, close in ipairs { false, true } do
      local base, r = measure(url, info.port, close, function()
        gen = gen + 1
        local promoted_at
        local res = sv:upgrade("web", decl(gen), { hooks = { promoted = function() promoted_at = core.now() end } })
        assert(res.outcome == "promoted", res.reason)
        internal[#internal + 1] = res.timings.promoted - res.timings.ready
        latencies[#latencies + 1] = { gen = gen, promoted = promoted_at }
      end)
      row("baton + C server (sd-daemon)", close, base, r)
    end
    baton.sleep(0) -- (the ready handlers ran long ago; one more turn for good measure)
    off()
    for i, l in ipairs(latencies) do latencies[i] = l.promoted - assert(ready_at[l.gen], "no ready event") end
    sv:close()
  end

  -- (b) tableflip, built from Debian's package source, offline.
  local tf_skip
  local tf_bin = BUILD .. "/tableflip_server"
  do
    local src = "/usr/share/gocode/src/github.com/cloudflare/tableflip"
    if not baton.which("go") then
      tf_skip = "no Go toolchain (golang-go)"
    elseif not io.open(src .. "/upgrader.go") then
      tf_skip = "no tableflip source (" .. src .. ": golang-github-cloudflare-tableflip-dev)"
    else
      local gopath = BUILD .. "/gopath"
      baton.run { "mkdir", "-p", gopath .. "/src/tableflip_server" }
      baton.run { "cp", ROOT .. "/bench/tableflip_server.go", gopath .. "/src/tableflip_server/main.go" }
      local r = baton.run { "go", "build", "-o", tf_bin, ".", cwd = gopath .. "/src/tableflip_server", capture = true,
        check = false, env = { GO111MODULE = "off", GOPATH = gopath .. ":/usr/share/gocode", GOFLAGS = false,
          GOCACHE = gopath .. "/cache", GOPROXY = "off" } }
      if not r.ok then tf_skip = "go build failed offline: " .. (r.stderr or ""):gsub("%s+$", "") end
    end
  end
  local tf_retries = 0
  if not tf_skip then
    local dir = baton.output { "mktemp", "-d", "/tmp/baton-bench-tf.XXXXXX" }:gsub("%s+$", "")
    local pidfile, portfile = dir .. "/pid", dir .. "/port"
    local first = assert(baton.spawn { tf_bin, "-pid-file", pidfile, "-port-file", portfile,
      stderr = { path = dir .. "/stderr", mode = "w" } })
    local function read(path) return tonumber((P.slurp(path) or ""):match("%d+")) end
    local function gone(pid)
      local st = core.proc_stat(pid)
      return not st or st.state == "Z"
    end
    local function failures()
      local _, n = (P.slurp(dir .. "/stderr") or ""):gsub("upgrade failed", "")
      return n
    end
    local ok, err = pcall(function()
      local deadline = baton.now() + 30
      while not (read(pidfile) and P.slurp(portfile)) and baton.now() < deadline do baton.sleep(0.001) end
      local port = assert(tonumber((P.slurp(portfile) or ""):match(":(%d+)")), "tableflip server: no port")
      local url = fmt("http://127.0.0.1:%d/", port)
      local took = {}
      for _, close in ipairs { false, true } do
        local base, r = measure(url, port, close, function()
          local pid = read(pidfile)
          local t0 = baton.now()
          local limit = t0 + 30
          -- HUP; again if tableflip refused it ("upgrade failed: parent
          -- hasn't exited" on its stderr: the new generation learns of its
          -- parent's exit a moment late).
          repeat
            local refused = failures()
            assert(core.kill(pid, 1))
            while read(pidfile) == pid and failures() == refused and baton.now() < limit do baton.sleep(0.0005) end
            if read(pidfile) == pid and failures() > refused then
              tf_retries = tf_retries + 1
              baton.sleep(0.001)
            end
          until read(pidfile) ~= pid or baton.now() > limit
          assert(read(pidfile) ~= pid, "tableflip: no new generation within 30 s")
          took[#took + 1] = baton.now() - t0
          -- The child wrote its pid once Ready; the parent then shuts down.
          while not gone(pid) and baton.now() < limit do baton.sleep(0.0005) end
          assert(gone(pid), "tableflip: the old generation did not exit within 30 s")
        end)
        row("tableflip (Go, self-upgrading)", close, base, r, fmt("HUP → new pid p50 %.1f ms", pct(took, 0.5) * 1e3))
      end
    end)
    -- Whatever generation runs now (an orphan re-parented to baton) goes.
    for _ = 1, 100 do
      local last = read(pidfile)
      if not last or gone(last) then break end
      core.kill(last, 9)
      baton.sleep(0.01)
    end
    first:close()
    baton.run { "rm", "-rf", dir }
    if not ok then error(err, 0) end
  end

  -- (c) the naive restart.
  do
    local fd, info = core.listen("tcp://127.0.0.1:0")
    core.close(fd)
    local addr = "127.0.0.1:" .. info.port
    local sv = baton.supervisor { web = { C_SERVER, addr, env = { GEN = "1" }, ready = { notify = true, timeout = 20 },
      stop = { timeout = 10 } } }
    assert(sv:start())
    for _, close in ipairs { false, true } do
      local base, r = measure("http://" .. addr .. "/", info.port, close, function() assert(sv:restart("web")) end)
      row("naive stop-then-start (C server)", close, base, r)
    end
    sv:close()
  end

  print(fmt("\n== hot upgrade under wrk (-t%d -c%d): %d replacements paced over %gs; steady = the same %gs, server alone;"
    .. " %d rounds of both, medians (errors, requests: all rounds)", THREADS, CONNS, UPGRADES, WINDOW, WINDOW, ROUNDS))
  print(fmt("  %-34s %-10s %9s %9s %6s %9s  %-38s %s", "mode", "wrk", "steady/s", "during/s", "ratio", "requests",
    "errors: connect/read/write/timeout/non2xx", "replacements took"))
  for _, x in ipairs(rows) do
    local r = x.r
    print(fmt("  %-34s %-10s %9.0f %9.0f %6.2f %9d  %-38s %.2fs %s", x.name, x.mode, x.base, r.rate or 0,
      (r.rate or 0) / x.base, r.requests or 0, fmt("%d/%d/%d/%d/%d (%d)", r.connect, r.read, r.write, r.timeout,
        r.non2xx, r.errors), r.took, x.extra))
  end
  if tf_skip then print("  tableflip: skipped — " .. tf_skip) end
  if tf_retries > 0 then print(fmt("  tableflip: %d HUPs sent again after \"parent hasn't exited\"", tf_retries)) end
  print(fmt("  baton: READY=1 received → promoted, %d upgrades: p50 %.0f µs, p99 %.0f µs, max %.0f µs (target p99 < 1 ms)",
    #latencies, pct(latencies, 0.5) * 1e6, pct(latencies, 0.99) * 1e6, pct(latencies, 1) * 1e6))
  print(fmt("  baton: readiness seen by the upgrade → promoted: p50 %.0f µs, p99 %.0f µs",
    pct(internal, 0.5) * 1e6, pct(internal, 0.99) * 1e6))
end
