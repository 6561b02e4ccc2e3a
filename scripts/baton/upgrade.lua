--- baton.upgrade — hot upgrades of a supervised service, as a policy in Lua
-- (read it, copy it, change it): one generation replaces another without a
-- dropped connection.
--
--   1. a new generation starts beside the old one, on the same listening
--      sockets (the service's `listen`: bound once, the kernel's accept
--      queue shared, never re-bound);
--   2. it must be ready (its `ready` check) before a deadline — or it is
--      killed and the old one goes on serving, untouched: `rolled_back`;
--   3. promoted: it is the service now. During the bake window (`bake`
--      seconds) the old generation is kept running; if the new one fails
--      then, the old one is the service again: `rolled_back`;
--      With `surge = k` below the replica count, a rolling upgrade: k
--      replicas at a time, each batch ready before the old ones it
--      replaces drain (never fewer than N ready); a failing first batch
--      rolls back, a later one stops the upgrade half done ("failed").
--   4. the old generation drains in the background: its drain signal
--      (default its stop signal), `drain` seconds to finish what it
--      serves, then its stop (signal, timeout, KILL) reaches whatever is
--      left of its tree. `wait = true` waits for that; otherwise the next
--      upgrade need not, and at most `max_draining` (2) old generations
--      drain at once: beyond, the oldest is stopped.
--
-- Upgrades of one service run one after another (up to the promotion or
-- the rollback); the result is a value:
-- `{outcome = "promoted" | "rolled_back" | "failed", reason, service,
-- generation, from, timings = {ready, promoted, drained}}`.
-- @module baton.upgrade
local core = require "baton.core"
local task = require "baton.task"
local errors = require "baton.errors"
local options = require "baton.options"
errors.own()

local M = {}
local fmt, now = string.format, core.now
local function service() return require "baton.service" end -- (which requires this module)

local OPTS = { timeout = "seconds", bake = "seconds", drain = "seconds", drain_signal = "signal", hooks = "table",
  wait = "boolean", max_draining = "number", surge = "number" }
local HOOKS = { spawned = true, ready = true, promoted = true, draining = true, exited = true, rolled_back = true }

local function check(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then errors.argerror("upgrade", 3, "options table expected, got " .. type(opts)) end
  for k, v in pairs(opts) do
    local want = OPTS[k]
    if not want then errors.argerror("upgrade", 3, fmt("unknown option '%s'", tostring(k))) end
    if want == "seconds" then
      options.check_seconds("upgrade", 3, v, "option '" .. k .. "'")
    elseif want == "signal" then
      options.signum(v, "upgrade", 3)
    elseif want == "number" and (math.type(v) ~= "integer" or v < 0) then
      errors.argerror("upgrade", 3, fmt("option '%s' must be a count from 0, got %s", k, tostring(v)))
    elseif want ~= "number" and type(v) ~= want then
      errors.argerror("upgrade", 3, fmt("option '%s' must be a %s, got %s", k, want, type(v)))
    end
  end
  if opts.surge ~= nil and opts.surge < 1 then
    errors.argerror("upgrade", 3, "option 'surge' must be a count from 1, got " .. tostring(opts.surge))
  end
  for k, v in pairs(opts.hooks or {}) do
    if not HOOKS[k] or type(v) ~= "function" then
      errors.argerror("upgrade", 3, fmt("hooks.%s: a function for spawned, ready, promoted, draining, exited or "
        .. "rolled_back expected", tostring(k)))
    end
  end
  return opts
end

-- Stop instances (their whole trees) at once; wait until they are gone.
local STOPPED = "the service was stopped during the upgrade"

local function stop_all(list)
  local ts = {}
  for _, i in ipairs(list) do ts[#ts + 1] = task.go_internal(function() i:_stop() end) end
  for _, t in ipairs(ts) do t:wait() end
end

-- One upgrade or reload of a service at a time: `turn` waits for the one
-- under way (every waiter wakes when it is over; the first to run takes
-- the next turn), `exclusive` runs `fn` as the service's, in a task of its
-- own (a caller cancelled meanwhile does not cut it in half).
local function turn(svc)
  -- (waiting for it to end, not for its result: an error of the one before
  -- is its caller's, not this one's)
  while svc._upgrading and not svc._upgrading.done do task.wait_any { svc._upgrading } end
end

local function exclusive(svc, fn)
  local t = task.new(fn, true)
  svc._upgrading = t
  t:start()
  local ok, r = pcall(t.wait, t)
  if svc._upgrading == t and t.done then svc._upgrading = nil end
  if not ok then error(r, 0) end
  return r
end

--- Run an upgrade of `svc` (a service of supervisor `sv`) to declaration
-- `decl` (nil: the service's declaration when its turn comes) with `opts` (`timeout`: readiness deadline, default the
-- declaration's ready timeout; `bake`: seconds the old generation is kept
-- after promotion, default 0; `drain`: seconds it gets to finish, default
-- its stop timeout; `drain_signal`: default its stop signal; `hooks`:
-- functions called with the result table as it fills).
function M.run(sv, svc, decl, opts)
  opts = check(opts)
  turn(svc) -- (one upgrade of a service at a time: a second one waits its turn)
  -- (no declaration: the service's as it is now, after the upgrades before)
  decl = decl or svc.decl
  local res = { service = svc.name, from = svc.generation, timings = {} }
  local hooks = opts.hooks or {}
  local function hook(name)
    local fn = hooks[name]
    if not fn then return end
    local ok, err = pcall(fn, res)
    if not ok then
      res.hook_errors, res.last_hook_error = (res.hook_errors or 0) + 1, tostring(err)
    end
  end
  local t0 = now()
  -- New instances of generation `gen` for replica numbers `idx`, started;
  -- returns them once all are ready, or nil and why (they are stopped).
  local function trial(gen, idx)
    local news = {}
    for k, i in ipairs(idx) do
      local inst = service()._new_instance(svc, i)
      inst.decl, inst.own_generation, inst.trial, inst.want = decl, gen, true, "up"
      news[k] = inst
      svc.extra[inst] = true
    end
    for _, inst in ipairs(news) do inst:_spawn() end
    hook("spawned")
    local deadline = opts.timeout or decl.ready.timeout
    local ready = sv:_until(function()
      local all = true
      for _, inst in ipairs(news) do
        if inst.state == "failed" or inst.state == "exited" or inst.state == "stopped" then return inst end
        if not inst.ready then all = false end
      end
      if all then return true end
    end, deadline + 1) -- (each instance's own deadline comes first; this one is a backstop)
    if svc.want ~= "up" then ready = "stopped" end -- (a stop meanwhile: what started goes too)
    if ready == true then
      local last = t0 -- (when the last of them said it was ready, not when this task noticed)
      for _, inst in ipairs(news) do
        inst.trial, svc.extra[inst] = nil, nil
        if inst.ready_since and inst.ready_since > last then last = inst.ready_since end
      end
      res.timings.ready = last - t0
      return news
    end
    stop_all(news)
    for _, inst in ipairs(news) do svc.extra[inst] = nil end
    svc:_prune_listeners() -- (what the failed declaration bound, if it changed `listen`)
    if ready == "stopped" then return nil, STOPPED end
    return nil, ready and ("the new generation failed: " .. ready:_why())
      or fmt("the new generation was not ready after %gs", deadline)
  end
  -- Drain instances of the old generation, in the background (`wait =
  -- true` waits): their drain signal, then their stop. The old generation
  -- is one entry of `svc.draining` however many batches a rolling upgrade
  -- drains it in: the cap counts generations, not batches.
  local draining -- (this upgrade's entry, while some of it drains)
  local cap = opts.max_draining or 2
  local function drain_old(old, old_decl)
    for _, inst in ipairs(old) do
      inst.want = "down" -- (it is not restarted any more, whatever happens)
      svc.extra[inst] = true
    end
    local sig = opts.drain_signal and options.signum(opts.drain_signal, "upgrade", 3) or old_decl.stop_signal
    local drain = opts.drain or old_decl.stop_timeout
    svc.draining = svc.draining or {}
    if not draining then
      draining = { instances = {}, batches = 0 }
      table.insert(svc.draining, draining)
      -- A cap on old generations still draining: the oldest are stopped now.
      while #svc.draining > cap do
        local oldest = table.remove(svc.draining, 1)
        oldest.capped = true
        task.go_internal(function() stop_all(oldest.instances) end)
      end
    end
    local mine = draining
    for _, inst in ipairs(old) do mine.instances[#mine.instances + 1] = inst end
    mine.batches = mine.batches + 1
    hook("draining")
    if mine.capped then -- (a cap of 0: no time to drain)
      sig, drain = nil, 0
    end
    for _, inst in ipairs(old) do
      if inst.proc and sig then
        inst:_set("draining")
        inst:_signal(sig)
      end
    end
    local t = task.go_internal(function()
      if drain > 0 then
        sv:_until(function()
          for _, inst in ipairs(old) do if inst.proc then return nil end end
          return true
        end, drain)
      end
      stop_all(old) -- (what did not finish in time: stop signal, timeout, KILL)
      for _, inst in ipairs(old) do svc.extra[inst] = nil end
      svc:_prune_listeners() -- (what only the old declaration named)
      mine.batches = mine.batches - 1
      if mine.batches == 0 then
        for k, dr in ipairs(svc.draining) do if dr == mine then table.remove(svc.draining, k) end end
        if draining == mine then draining = nil end -- (a later batch starts a new entry)
      end
      res.timings.drained = now() - t0
      hook("exited")
    end)
    if opts.wait then t:wait() end
  end
  local function rolled_back(why)
    res.outcome, res.reason = "rolled_back", why
    hook("rolled_back")
    return res
  end
  local body = function()
    if svc.want ~= "up" then
      res.outcome, res.reason = "failed", "the service is not running (start it first)"
      return res
    end
    local old, old_decl, old_gen = svc.instances, svc.decl, svc.generation
    local gen = svc.generation + 1
    res.generation = gen
    svc.extra = svc.extra or {}
    local n = decl.replicas
    local surge = opts.surge or n
    if surge < n and n == #old then
      -- Rolling: `surge` replicas at a time, each batch ready before the old
      -- ones it replaces drain: never fewer than n ready.
      for b = 1, n, surge do
        local idx = {}
        for i = b, math.min(n, b + surge - 1) do idx[#idx + 1] = i end
        local news, why
        if svc.want == "up" then news, why = trial(gen, idx) else why = STOPPED end
        if not news then
          if b == 1 then return rolled_back(why) end
          res.outcome = "failed"
          res.reason = fmt("%s (replicas %d to %d; replicas 1 to %d run generation %d, the rest %d)", why, b,
            idx[#idx], b - 1, gen, old_gen)
          return res
        end
        local olds = {}
        for k, i in ipairs(idx) do
          olds[k] = svc.instances[i]
          svc.extra[olds[k]] = true
          svc.instances[i] = news[k]
        end
        service()._adopt_logs(svc, news)
        sv:_changed()
        drain_old(olds, old_decl)
      end
      svc.decl, svc.generation = decl, gen
      for _, inst in ipairs(svc.instances) do inst.decl = nil end
      res.timings.promoted = now() - t0
      res.outcome = "promoted"
      hook("promoted")
      return res
    end
    local news, why = trial(gen, (function()
      local all = {}
      for i = 1, n do all[i] = i end
      return all
    end)())
    if not news then return rolled_back(why) end
    hook("ready")
    -- Promote: the new generation is the service.
    for _, inst in ipairs(old) do
      inst.want = "down" -- (kept, not restarted: it is not the service any more)
      svc.extra[inst] = true
    end
    svc.instances, svc.decl, svc.generation = news, decl, gen
    for _, inst in ipairs(news) do inst.decl = nil end -- (they follow the service's declaration now)
    service()._adopt_logs(svc, news)
    res.timings.promoted = now() - t0
    hook("promoted")
    sv:_changed()
    -- Bake: the old generation stays while the new one proves itself.
    if (opts.bake or 0) > 0 then
      local failed = sv:_until(function()
        for _, inst in ipairs(news) do
          if not inst.proc or inst.state == "backoff" or inst.state == "failed" then return inst end
        end
      end, opts.bake)
      if failed then
        -- Back to the old generation (still running: it never drained).
        for _, inst in ipairs(old) do
          inst.want = "up"
          svc.extra[inst] = nil
        end
        svc.instances, svc.decl, svc.generation = old, old_decl, old_gen
        for _, inst in ipairs(news) do svc.extra[inst] = true end
        service()._adopt_logs(svc, old)
        stop_all(news)
        for _, inst in ipairs(news) do svc.extra[inst] = nil end
        svc:_prune_listeners()
        -- An old instance that died while it was not the service's (so was not
        -- restarted) starts again now, as its crash would have made it.
        sv:_advance(svc)
        if svc.want ~= "up" then return rolled_back(STOPPED) end
        return rolled_back("the new generation failed within the bake window: " .. failed:_why())
      end
    end
    res.outcome = "promoted"
    drain_old(old, old_decl)
    return res
  end
  local r = exclusive(svc, function()
    M.manager("reloading")
    local ok, r = pcall(body)
    M.manager("ready")
    if not ok then error(r, 0) end
    return r
  end)
  sv:_changed()
  return r
end

--- Tell baton's own service manager (systemd Type=notify-reload) that a
-- reload is under way ("reloading": RELOADING=1 with MONOTONIC_USEC) or
-- over ("ready": READY=1), so `systemctl reload` returns with the outcome;
-- several at once (of several services) are one reload to the manager.
-- Upgrades and reloads under way (of any service): one RELOADING=1 when
-- the first begins, READY=1 when the last is over.
local reloads = 0

function M.manager(what)
  if what == "reloading" then
    reloads = reloads + 1
    if reloads > 1 then return end
  elseif reloads > 0 then
    reloads = reloads - 1
    if reloads > 0 then return end
  end
  local path = os.getenv("NOTIFY_SOCKET")
  if not path or path == "" then return end
  if what == "reloading" then
    core.sd_notify(fmt("RELOADING=1\nMONOTONIC_USEC=%d", math.floor(now() * 1e6)))
  else
    core.sd_notify("READY=1")
  end
end

--- In-place reload of a server that reloads itself: `signal` (default
-- HUP) to each running instance; one that speaks sd_notify (`ready =
-- "notify"`) is waited for: RELOADING=1 then READY=1 within `timeout`
-- seconds (default its ready timeout). A reload waits for an upgrade of
-- the service under way (and an upgrade for a reload): one at a time.
-- Returns {outcome = "reloaded" | "failed", reason, confirmed}: `confirmed`
-- is true when the server said it reloaded (sd_notify), false when it was
-- only signalled (nothing else tells when a reload is done).
local RELOAD_OPTS = { signal = true, timeout = true }

function M.reload(sv, svc, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not RELOAD_OPTS[k] then errors.argerror("reload", 2, fmt("unknown option '%s'", tostring(k))) end
  end
  local sig = options.signum(opts.signal or "HUP", "reload", 2)
  options.check_seconds("reload", 2, opts.timeout, "option 'timeout'")
  turn(svc)
  local function body()
    local d = svc.decl
    local live = false
    for _, inst in ipairs(svc.instances) do live = live or inst.proc ~= nil end
    if svc.want ~= "up" or not live then
      return { outcome = "failed", service = svc.name, reason = "the service is not running (start it first)" }
    end
    M.manager("reloading")
    local waits = {}
    local timeout = opts.timeout or d.ready.timeout
    local ok, r = pcall(function()
      for _, inst in ipairs(svc.instances) do
        if inst.proc then
          inst.reloaded = nil
          if d.ready.kind == "notify" then waits[#waits + 1] = inst end
          inst.proc:signal(sig)
        end
      end
      return sv:_until(function()
        for _, inst in ipairs(waits) do
          if not inst.proc then return inst end
          if not inst.reloaded then return nil end
        end
        return true
      end, timeout)
    end)
    M.manager("ready") -- (whatever happened: the manager is told the reload is over)
    if not ok then error(r, 0) end
    if r == true then return { outcome = "reloaded", service = svc.name, confirmed = #waits > 0 } end
    return { outcome = "failed", service = svc.name, reason = r and ("it exited while reloading: " .. r:_why())
      or fmt("no RELOADING=1 … READY=1 within %gs", timeout) }
  end
  return exclusive(svc, body)
end

return M
