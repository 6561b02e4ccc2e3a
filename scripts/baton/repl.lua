--- baton.repl — the Lua half of the interactive REPL (bindings/cli/repl.c is the
-- terminal half). Compiles entries as lua.c does (an expression first, then a
-- statement; "<eof>" in the error means the entry continues on the next
-- line), runs each entry as a task, and routes output through `hide`/`show`
-- so text printed by background tasks does not garble the line being edited.
-- @module baton.repl
local task = require "baton.task"
local scope = require "baton.scope"
local inspect = require "baton.inspect"

local M = {}
local pack, unpack = table.pack, table.unpack
local stderr = io.stderr

--- Wrap print and io.write so that output first hides the prompt, then redraws it.
function M.install(hide, show)
  local rawprint, rawwrite, stdout = print, io.write, io.stdout
  _G.print = function(...)
    hide()
    rawprint(...)
    stdout:flush()
    show()
  end
  io.write = function(...)
    hide()
    local r = pack(rawwrite(...))
    stdout:flush()
    show()
    return unpack(r, 1, r.n)
  end
  -- At the prompt a background task's failure is shown when it happens
  -- (waiting for it later still gives the error); nothing more at the end.
  task.on_failure = function(t)
    hide()
    stderr:write("baton: error in task: ", t.trace, "\n")
    show()
  end
  task.on_uncaught = function() end
  M.color = inspect.colors(1)
end

--- Compile an entry: returns the function, or nil and "incomplete", or nil and
-- the syntax error.
function M.compile(src)
  if src:sub(1, 1) == "=" then src = "return " .. src:sub(2) end -- `=expr`, as lua still takes it
  local fn = load("return " .. src, "=stdin", "t")
  if fn then return fn end
  local err
  fn, err = load(src, "=stdin", "t")
  if fn then return fn end
  if err:sub(-5) == "<eof>" then return nil, "incomplete" end
  return nil, err
end

local function traceback(e)
  -- An error object that says what it is (__tostring): its words alone, as lua.c.
  if type(e) ~= "string" and type(e) ~= "number" then
    local mt = getmetatable(e)
    if type(mt) == "table" and mt.__tostring then return task.errmsg(e) end
  end
  -- Stop at the entry itself: the REPL's own frames are noise to the user.
  local tb = debug.traceback(task.errmsg(e), 2)
  return (tb:gsub("\n\t%[C%]: in function 'xpcall'.*$", ""))
end

--- A task (not yet started) that runs `fn`, prints its results or its error,
-- then calls `done()`. Its coroutine is what Ctrl-C interrupts: an
-- interrupted entry stops what it started (processes, tasks) before the
-- prompt comes back; a finished one leaves it running.
function M.eval(fn, done)
  local entry = scope.new(2)
  local function run()
    local r = pack(xpcall(fn, traceback))
    if r[1] then
      -- The script's own `print`, whatever it is now (lua.c's l_print);
      -- tables laid out by baton.inspect (colored on a terminal), other
      -- values as lua shows them (strings unquoted); `_` is the first value.
      -- Whatever fails in that is said, and the prompt comes back.
      local ok, err = true, nil
      if r.n > 1 then
        rawset(_G, "_", r[2])
        local shown = {}
        for i = 2, r.n do
          local v = r[i]
          if type(v) == "table" then
            local done_ok, text = pcall(inspect.inspect, v, { color = M.color })
            v = done_ok and text or ("<%s>"):format(task.errmsg(text))
          end
          shown[i - 1] = v
        end
        ok, err = pcall(_G.print, unpack(shown, 1, r.n - 1))
      end
      if not ok then stderr:write(("error calling 'print' (%s)\n"):format(task.errmsg(err))) end
    else
      stderr:write(tostring(r[2]), "\n")
      if tostring(r[2]):match("^[^\n]*interrupted!") then entry:close() end
    end
  end
  local t = task.new(function()
    -- The prompt comes back whatever happens here.
    local ok, err = pcall(run)
    if not ok then pcall(stderr.write, stderr, "baton: ", task.errmsg(err), "\n") end
    done()
  end)
  t.scope = entry
  return t
end

-- Completion runs none of the user's code: it reads tables raw, follows
-- __index tables, and calls no __index function but baton's own lazy
-- loader (a metatable with __lazy), so that Tab never raises nor hangs.
local function meta(v, field)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, field) or nil
end

-- v[name] as completion sees it (nil when it cannot tell without running code).
local function field(v, name)
  for _ = 1, 10 do
    if type(v) == "table" then
      local x = rawget(v, name)
      if x ~= nil then return x end
    end
    local index = meta(v, "__index")
    if type(index) == "function" then
      if type(meta(v, "__lazy")) ~= "table" then return nil end
      local ok, x = pcall(index, v, name)
      return ok and x or nil
    end
    if index == nil then return nil end
    v = index
  end
end

-- The names a value offers: its own keys (a table's) and those its
-- metatables' __index tables offer (methods), `methods`: functions only.
local function names_of(v, methods, out)
  local seen = 0
  while v ~= nil and seen < 10 do
    seen = seen + 1
    if type(v) == "table" then
      for k, x in next, v do
        if type(k) == "string" and k:match("^[%a_][%w_]*$") and (not methods or type(x) == "function") then
          out[k] = true
        end
      end
    end
    local lazy = meta(v, "__lazy")
    if type(lazy) == "table" and not methods then names_of(lazy, false, out) end
    local index = meta(v, "__index")
    v = type(index) == "table" and index or nil
  end
  return out
end

--- Completions of `text` (the word before the cursor): globals, fields of a
-- table (`baton.sp` → `baton.spawn`), methods (`p:w` → `p:wait`), a string
-- literal's methods (`("x"):up`: the word is `:up`, and `before`, the line
-- before it, ends with the literal). Sorted.
function M.complete(text, before)
  local base, sep, partial = text:match("^(.-)([.:])([%w_]*)$")
  local where = _G
  if base == "" and type(before) == "string" and before:match("([\"'])[^\"']*%1%)?$") then
    where = "" -- a string's methods
  elseif base then
    if base == "" then return {} end -- `.x`, `:x`: of what, the word does not say
    for name in base:gmatch("[^.:]+") do
      where = field(where, name)
      if where == nil then return {} end
    end
  else
    base, sep, partial = "", "", text
  end
  local out = {}
  for k in pairs(names_of(where, sep == ":", {})) do
    if k:sub(1, #partial) == partial then out[#out + 1] = base .. sep .. k end
  end
  table.sort(out)
  return out
end

--- The REPL exits (Ctrl-D, end of input): the shutdown hooks run, and every
-- process started at the prompt and not detached is stopped. Called from
-- outside any task, with the loop stopped: it drives the loop itself.
function M.finish()
  require("baton.runner").shutdown("exit")
end

return M
