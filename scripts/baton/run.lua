--- baton.run — the raising conveniences: run a command (or a pipeline) to
-- completion and get its result, its output, its verdict, or its lines.
--
-- Each raises a `baton.Error` when the command cannot start and, unless
-- `check = false`, when it does not succeed — so scripts are `set -e`-safe.
-- @module baton.run
local task = require "baton.task"
local errors = require "baton.errors"
local options = require "baton.options"
local process = require "baton.process"
local job = require "baton.job"
errors.own()

local M = {}
local concat, unpack = table.concat, table.unpack

-- Start for a convenience: the job, or raise the spawn error.
local function start(spec, fname, defaults)
  local j, msg, code = process.start(spec, options.RUN_KEYS, fname, defaults)
  if not j then
    local argv = type(spec) == "table" and (spec.__command or spec) or { spec }
    errors.raise_spawn({ unpack(argv) }, msg, code)
  end
  return j
end

--- The result of a finished job: its status (the same shape: `ok`, `code`,
-- `signal`, `signame`, `core`, `timed_out`, `rusage`, `failure`, and for
-- pipelines `stages`, `statuses`, `failed_stage`), plus `pid`, `argv`,
-- `command`, `duration` and what was captured.
local function result(j, st, captured)
  local r = setmetatable({ pid = j.pid, argv = j.argv, command = j.command, duration = j.ended - j.started },
    job.Status)
  for k, v in pairs(st) do r[k] = v end
  for name, chunks in pairs(captured or {}) do r[name] = concat(chunks) end
  return r
end

-- Wait for a job the call owns. A cancel (or an interrupt) of the waiting
-- task stops it — TERM, its grace (default 1 s), KILL — before the error
-- goes on, as Go's CommandContext does: nothing the call started outlives it.
local function wait(j)
  local ok, st = pcall(j.wait, j)
  if ok then return st end
  if task.can_wait() then
    -- In a task of baton's, so that a second cancel cannot cut it short.
    local stopper = task.go_internal(function() j:_terminate(j._grace or 1) end)
    while not stopper.done do pcall(stopper.wait, stopper) end
  else
    j:_terminate(0, true)
  end
  error(st, 0)
end

-- run, for `fname`.
local function complete(spec, fname)
  local s = options.of(spec)
  local j = start(spec, fname, s.capture and { stdout = "pipe", stderr = "pipe" } or nil)
  local captured = {}
  for _, name in ipairs { "stdout", "stderr" } do
    local stream = j[name]
    if stream then
      local chunks = {}
      captured[name] = chunks
      j:_consume(stream, function(chunk) chunks[#chunks + 1] = chunk end)
    end
  end
  local r = result(j, wait(j), captured)
  if s.check == false or r.ok then return r end
  errors.raise_exit(r)
end

--- Run a command to completion. Options of `spawn`, plus `capture` (pipe
-- stdout and stderr into the result) and `check` (default true: raise a
-- baton.Error unless it succeeds).
-- @return the result (see `result` above); `tostring(r)` is its status
function M.run(spec)
  return complete(spec, "run")
end

-- The options of a call that reads stdout itself (`what` it does with it):
-- a stdout sent elsewhere is refused.
local function own_stdout(spec, fname, what)
  local o = options.of(spec)
  if o.stdout ~= nil and o.stdout ~= "pipe" then
    errors.argerror(fname, 1, ("option 'stdout': %s() %s stdout, so it cannot go elsewhere"):format(fname, what))
  end
  return o
end

--- Run and return stdout, trailing newlines removed (like `$(…)` in sh).
function M.output(spec)
  local o = own_stdout(spec, "output", "returns")
  local extra = { stdout = "pipe" }
  if o.capture == nil then extra.stderr = "pipe" end
  local r = complete(options.with(spec, extra), "output")
  return (r.stdout:gsub("\n+$", ""))
end

--- Did the command succeed? Never raises for a failed exit; raises when it
-- cannot start.
function M.ok(spec)
  return complete(options.with(spec, { check = false }, true), "ok").ok
end

--- Iterate over the lines of a command's stdout, as they come:
-- `for line in baton.lines{…} do … end`. Leaving the loop early (break,
-- error) kills and reaps the process. At the end, a failed exit raises
-- unless `check = false`.
function M.lines(spec)
  local check = own_stdout(spec, "lines", "reads").check
  local j = start(options.with(spec, { stdout = "pipe", check = false, capture = false }, true), "lines")
  local out = j.stdout
  -- The iterator reads stdout: the job is done once it reached the end (or
  -- the bound after a timeout closed it).
  local waker
  j:_hold { stream = out, wait = function()
    if not out.closed then task.suspend(function(w) waker = w end) end
  end }
  out.on_close = function()
    local w = waker
    waker = nil
    if w then w() end
  end
  local closer = setmetatable({}, {
    __close = function()
      out:close()
      if not j._exit then
        j:_send(9) -- a pipeline: its Lua stages too
      end
      -- Unwinding an error in a task (an interrupt, say), Lua cannot wait
      -- here: the loop then reaps the killed process on its own.
      if task.can_wait() then j:wait() end
    end,
  })
  local function iter()
    local line = out:read("l")
    if line then return line end
    out:close()
    local r = result(j, j:wait())
    if check ~= false and not r.ok then errors.raise_exit(r) end
    return nil
  end
  return iter, nil, nil, closer
end

return M
