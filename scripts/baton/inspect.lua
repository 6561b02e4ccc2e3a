--- baton.inspect — values as a person reads them: tables laid out with
-- their contents (keys sorted, strings quoted, cycles marked, depth and
-- width bounded), values with `__tostring` by it, and baton's results and
-- statuses by their status followed by their fields. The REPL shows what
-- entries return with it; scripts have it as `baton.inspect(v[, opts])`.
-- @module baton.inspect
local errors = require "baton.errors"
errors.own()

local M = {}
local fmt, concat = string.format, table.concat

local ESC = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\" }

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return ESC[c] or fmt("\\%03d", c:byte()) end) .. '"'
end

local function key_text(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
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

local function show(v, depth, opts, seen)
  local t = type(v)
  if t == "string" then return quote(v) end
  if t ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  local head
  if mt and mt.__tostring then
    local ok, s = pcall(tostring, v)
    head = ok and s or ("<" .. (mt.__name or "table") .. ">")
    if mt.__name ~= "baton.status" then return head end -- a status shows its fields too
  end
  if seen[v] then return "<cycle>" end
  if depth >= opts.depth then return head or "{…}" end
  seen[v] = true
  local n, keys = #v, {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, before)
  local parts = {}
  for i = 1, n do
    if #parts >= opts.width then break end
    parts[#parts + 1] = show(v[i], depth + 1, opts, seen)
  end
  for _, k in ipairs(keys) do
    if #parts >= opts.width then break end
    parts[#parts + 1] = key_text(k) .. " = " .. show(v[k], depth + 1, opts, seen)
  end
  local more = n + #keys - #parts
  if more > 0 then parts[#parts + 1] = fmt("…(%d more)", more) end
  seen[v] = nil
  local body = "{" .. concat(parts, ", ") .. "}"
  return head and (head .. " " .. body) or body
end

--- `v` as text. `opts`: `depth` (nesting shown, default 4), `width` (items
-- per table, default 50).
function M.inspect(v, opts)
  if opts ~= nil and type(opts) ~= "table" then
    errors.argerror("inspect", 2, "options table expected, got " .. type(opts))
  end
  opts = { depth = opts and opts.depth or 4, width = opts and opts.width or 50 }
  return show(v, 0, opts, {})
end

--- What the REPL prints for a result: strings, numbers and the like as
-- `print` shows them (as lua does), tables by `inspect`.
function M.result(v)
  if type(v) == "table" then return M.inspect(v) end
  return tostring(v)
end

return M
