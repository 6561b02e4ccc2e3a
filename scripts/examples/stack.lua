-- stack.lua — a small stack under a baton supervisor: a db-like service
-- that says it is ready through sd_notify, a web server that needs it
-- (ready when it answers HTTP, health-checked), and a worker that needs it
-- too (ready when it prints "worker up").
--
--   build/baton scripts/examples/stack.lua [port]   # runs until Ctrl-C or a critical death
--
-- Also used by demo.lua, which drives it for a few seconds.
local baton = require "baton"

-- A free TCP port on 127.0.0.1 (the kernel picks it).
local function free_port()
  return tonumber(baton.output { "python3", "-c",
    "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])" })
end

local function stack(port)
  local url = ("http://127.0.0.1:%d/"):format(port)
  return baton.supervisor {
    db = { "sh", "-c", "sleep 0.2; systemd-notify --ready --status='accepting connections'; exec sleep infinity",
      ready = "notify", critical = true },
    web = { "python3", "-m", "http.server", tostring(port), "--bind", "127.0.0.1", "--directory", "/usr/share/doc",
      needs = "db", ready = { http = url }, health = { http = url, interval = 5 }, stderr = "null" },
    worker = { "sh", "-c", "echo worker up; while :; do sleep 1; done", needs = "db", ready = { line = "worker up" },
      backoff = { initial = 0.1 } },
  }, url
end

if arg and arg[0] and arg[0]:match("stack%.lua$") then
  local sv = stack(tonumber(arg[1]) or free_port())
  sv:on("*", function(ev)
    print(("%-10s %-7s %s"):format(ev.event, ev.service, ev.status or ev.error or ev.pid or ""))
  end)
  print("baton: supervising db, web, worker; Ctrl-C stops them in order")
  os.exit(sv:run())
end

return { stack = stack, free_port = free_port }
