--- baton.registry — the one place that knows what runs.
--
-- Every job baton started (a process, a pipeline run) is here from its
-- start until it is done or detached, with the scope it belongs to; every
-- child is findable by pid. The runner stops what is here when the script
-- ends badly, scopes stop their part of it, and a status call or a re-exec
-- reads it. (Lower layers keep their own books for their own purposes: the
-- C module closes its open handles when the state closes, and the core's
-- set of owned pids keeps the orphan reaper off baton's children.)
--
-- s6-svscan's one table of services is the model: one record per thing
-- that runs, found in one place.
-- @module baton.registry
local task = require "baton.task"
require("baton.errors").own()

local M = {}

-- Jobs that run and were not detached (weak: a job nobody refers to is
-- still anchored by its handle until it exits).
local jobs = setmetatable({}, { __mode = "k" })

-- Children by pid (weak): adopting one gives its own handle back, or a
-- second handle would reap it and take its status away.
local children = setmetatable({}, { __mode = "v" })

--- Record a job that started: in the enclosing scope (if any) and among
-- those that run. A process also by its pid.
function M.track(job)
  local scope = task.scope()
  if scope then scope:_add(job) end
  jobs[job] = true
end

--- Record a child by pid (tracked or not: detached ones too).
function M.child(p)
  children[p.pid] = p
end

--- The child with this pid that baton started, if it still knows it.
function M.find_child(pid)
  return children[pid]
end

--- The children baton started that still run (tracked or detached), as a
-- list: what a re-exec hands over.
function M.live_children()
  local out = {}
  for _, p in pairs(children) do if not p.status and not p._exit then out[#out + 1] = p end end
  return out
end

--- Forget a job that is done or detached: out of its scope, out of the set
-- the runner stops.
function M.forget(job)
  jobs[job] = nil
  if job._scope then job._scope:_remove(job) end
end

--- The jobs that run and were not detached, as a list.
function M.jobs()
  local out = {}
  for j in pairs(jobs) do out[#out + 1] = j end
  return out
end

return M
