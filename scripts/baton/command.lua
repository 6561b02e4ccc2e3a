--- baton.command — commands as values: build once, run many times, derive
-- variants. Nothing runs until asked.
--
--     local git = baton.cmd{"git", cwd = repo}
--     local head = git:with{"rev-parse", "HEAD"}:output()
--     for line in git("log", "--oneline"):lines() do … end
-- @module baton.command
local errors = require "baton.errors"
local options = require "baton.options"
errors.own()

local M = {}
local fmt = string.format

local Command = { __name = "baton.command" }
M.Command = Command

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function freeze(spec)
  local c = copy(spec)
  for _, k in ipairs { "env", "fds", "rlimits", "groups" } do
    if type(c[k]) == "table" then c[k] = copy(c[k]) end
  end
  if c.rlimits then -- {cur, max} pairs too
    for name, v in pairs(c.rlimits) do
      if type(v) == "table" then c.rlimits[name] = copy(v) end
    end
  end
  return setmetatable({ __command = c }, Command)
end

--- Make a command from `{prog, args…, option = value…}` (or a program
-- name). The options are checked now; the table is copied, so changing it
-- later does not change the command.
function M.cmd(spec, fname)
  fname = fname or "cmd" -- (pipelines make their stages' commands: their name)
  if type(spec) == "string" then spec = { spec } end
  if getmetatable(spec) == Command then return spec end
  if type(spec) ~= "table" then
    errors.argerror(fname, 1, fmt("table expected, got %s", type(spec)))
  end
  options.check(spec, options.RUN_KEYS, fname)
  return freeze(spec)
end

-- The command with `t` added; misuse errors name `fname`.
local function derive(self, t, fname)
  if type(t) == "string" then t = { t } end
  if type(t) ~= "table" then
    errors.argerror(fname, 1, fmt("table expected, got %s", type(t)))
  end
  local spec = copy(self.__command)
  local n = #spec
  for i = 1, #t do spec[n + i] = t[i] end
  for k, v in pairs(t) do
    if math.type(k) ~= "integer" then
      if k == "env" and type(v) == "table" and type(spec.env) == "table" then
        local env = copy(spec.env)
        for ek, ev in pairs(v) do env[ek] = ev end
        spec.env = env
      else
        spec[k] = v
      end
    end
  end
  options.check(spec, options.RUN_KEYS, fname)
  return freeze(spec)
end

--- A new command: positional values of `t` are appended to the arguments,
-- options replace this command's (`env` is merged: `false` removes).
function Command:with(t)
  return derive(self, t, "with")
end

--- `a | b`: a pipeline (baton.pipeline), loaded on first use.
function Command.__bor(a, b)
  return require("baton.pipeline").bor(a, b)
end

--- `cmd(a, b)` is `cmd:with{a, b}`.
function Command:__call(...)
  return self:with { ... }
end

-- Each takes optional options, as `cmd:with(opts):run()`. The modules
-- that run commands load on first use.
local function runner(mod, fname)
  return function(self, opts) return require(mod)[fname](opts and derive(self, opts, fname) or self) end
end
Command.spawn = runner("baton.process", "spawn")
Command.exec = runner("baton.process", "exec")
Command.run = runner("baton.run", "run")
Command.output = runner("baton.run", "output")
Command.ok = runner("baton.run", "ok")
Command.lines = runner("baton.run", "lines")

--- A copy of the argument vector.
function Command:argv()
  errors.check_self(getmetatable(self) == Command, self, "argv", "baton.command")
  local c = self.__command
  return { table.unpack(c, 1, #c) }
end

function Command:__tostring()
  return errors.quote_argv(self:argv())
end

Command.__index = function(self, k)
  local v = rawget(Command, k)
  if v ~= nil then return v end
  local spec = rawget(self, "__command")
  return spec and spec[k] -- options read through: cmd.cwd
end
Command.__newindex = function()
  errors.misuse("a command is immutable; derive a new one with cmd:with{…}")
end

--- A command running `sh -c` on `template`, where each `%s` becomes one
-- value quoted as a single word for POSIX sh (a table: each item a word),
-- and `%%` a `%`. Only the template is shell syntax; values never are.
function M.sh(template, ...)
  if type(template) ~= "string" then
    errors.argerror("sh", 1, fmt("string expected, got %s", type(template)))
  end
  local args, i = { ... }, 0
  local n = select("#", ...)
  local script = template:gsub("%%(.)", function(c)
    if c == "%" then return "%" end
    if c ~= "s" then errors.argerror("sh", 1, fmt("unknown directive %%%s; only %%s and %%%%", c)) end
    i = i + 1
    if i > n then errors.argerror("sh", 1, fmt("more %%s than values: %d", n)) end
    local v = args[i]
    if type(v) ~= "table" and type(v) ~= "string" and type(v) ~= "number" then
      errors.argerror("sh", i + 1, fmt("string, number or list expected for %%s number %d, got %s", i, type(v)))
    end
    if type(v) == "table" then
      local words = {}
      for j, w in ipairs(v) do
        if type(w) ~= "string" and type(w) ~= "number" then
          errors.argerror("sh", i + 1, fmt("list for %%s number %d: item %d must be a string or number, got %s", i, j,
            type(w)))
        end
        words[j] = errors.quote(w)
      end
      return table.concat(words, " ")
    end
    return errors.quote(v)
  end)
  if i < n then errors.argerror("sh", 1, fmt("%d values for %d %%s", n, i)) end
  return freeze { "sh", "-c", script }
end

return M
