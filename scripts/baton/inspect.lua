--- baton.inspect — values as a person reads them: tables laid out with
-- their contents (keys sorted, strings quoted, cycles marked, depth and
-- width bounded, one item per line once a table outgrows a line), values
-- with `__tostring` by it, and baton's results and statuses by their status
-- followed by their fields; colors on request. The REPL shows what entries
-- return with it (in color on a terminal unless `NO_COLOR` is set); scripts
-- have it as `baton.inspect(v[, opts])`.
-- @module baton.inspect
local core = require "baton.core"
local errors = require "baton.errors"
errors.own()

local M = {}
local fmt, concat = string.format, table.concat

local ESC = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\" }

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return ESC[c] or fmt("\\%03d", c:byte()) end) .. '"'
end

-- Lua's reserved words: `{["end"] = 1}`, not `{end = 1}`.
local KEYWORD = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or repeat return then
  true until while]]):gmatch("%a+") do KEYWORD[w] = true end

local function key_text(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not KEYWORD[k] then return k end
  return "[" .. (type(k) == "string" and quote(k) or tostring(k)) .. "]"
end

-- Keys in a stable order: numbers first by value, then strings, then the rest.
local RANK = { number = 1, string = 2 }
local function before(a, b)
  local ra, rb = RANK[type(a)] or 3, RANK[type(b)] or 3
  if ra ~= rb then return ra < rb end
  if ra == 3 then return tostring(a) < tostring(b) end
  return a < b
end

-- SGR colors by kind of value (node's util.inspect uses much the same).
local COLOR = { string = 32, number = 33, boolean = 33, ["nil"] = 90, head = 35, mark = 90, other = 36 }

local function paint(opts, kind, s)
  if not opts.color then return s end
  return fmt("\27[%dm%s\27[0m", COLOR[kind] or COLOR.other, s)
end

-- Columns a text takes on the terminal (colors take none).
local function columns(s)
  s = s:gsub("\27%[[%d;]*m", "")
  return utf8.len(s) or #s
end

local function show(v, depth, opts, seen)
  local t = type(v)
  if t == "string" then return paint(opts, t, quote(v)) end
  if t ~= "table" then return paint(opts, t, tostring(v)) end
  local mt = getmetatable(v)
  mt = type(mt) == "table" and mt or nil -- (a __metatable field may hide it)
  local head
  if mt and mt.__tostring then
    local ok, s = pcall(tostring, v)
    local name = type(mt.__name) == "string" and mt.__name or "table"
    head = paint(opts, "head", ok and type(s) == "string" and s or ("<" .. name .. ">"))
    if mt.__name ~= "baton.status" then return head end -- a status shows its fields too
  end
  if seen[v] then return paint(opts, "mark", "<cycle>") end
  if depth >= opts.depth then return head or paint(opts, "mark", "{…}") end
  seen[v] = true
  -- The table's own contents: raw accesses, so that no __len, __index or
  -- __pairs runs (they may raise, loop, or make up contents).
  local n, keys = rawlen(v), {}
  for k in next, v do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, before)
  local parts = {}
  for i = 1, n do
    if #parts >= opts.width then break end
    parts[#parts + 1] = show(rawget(v, i), depth + 1, opts, seen)
  end
  for _, k in ipairs(keys) do
    if #parts >= opts.width then break end
    parts[#parts + 1] = key_text(k) .. " = " .. show(rawget(v, k), depth + 1, opts, seen)
  end
  local more = n + #keys - #parts
  if more > 0 then parts[#parts + 1] = paint(opts, "mark", fmt("…(%d more)", more)) end
  seen[v] = nil
  local body = "{" .. concat(parts, ", ") .. "}"
  local indent = ("  "):rep(depth)
  if body:find("\n") or columns(body) + #indent + (head and columns(head) + 1 or 0) > opts.line then
    local inner = "\n" .. indent .. "  "
    body = "{" .. inner .. concat(parts, "," .. inner) .. "\n" .. indent .. "}"
  end
  return head and (head .. " " .. body) or body
end

--- `v` as text. `opts`: `depth` (nesting shown, default 4), `width` (items
-- per table, default 50), `line` (columns a table may take before it is
-- laid out one item per line, default 80), `color` (ANSI colors, default
-- false; `inspect.colors(fd)` says whether a terminal wants them).
function M.inspect(v, opts)
  if opts ~= nil and type(opts) ~= "table" then
    errors.argerror("inspect", 2, "options table expected, got " .. type(opts))
  end
  opts = opts or {}
  for _, o in ipairs { "depth", "width", "line" } do
    if opts[o] ~= nil and type(opts[o]) ~= "number" then
      errors.argerror("inspect", 2, "option '" .. o .. "': number expected, got " .. type(opts[o]))
    end
  end
  opts = { depth = opts.depth or 4, width = opts.width or 50, line = opts.line or 80, color = opts.color == true }
  return show(v, 0, opts, {})
end

--- Whether output on `fd` should be colored: it is a terminal, `NO_COLOR`
-- is unset or empty (no-color.org) and `TERM` is not "dumb".
function M.colors(fd)
  return core.isatty(fd) and (os.getenv("NO_COLOR") or "") == "" and os.getenv("TERM") ~= "dumb"
end

return M
