-- demo.lua — a tour of what baton does today. Run: scripts/run-demo
-- (or build/baton scripts/examples/demo.lua). Each step prints what it shows.
local baton = require "baton"

local function step(title) print(("\n\27[1m## %s\27[0m"):format(title)) end

step("run a command and capture its output")
local r = baton.run { "uname", "-sr", capture = true }
print("kernel:", (r.stdout:gsub("\n$", "")), "| exit", r.code, ("| %.2f ms"):format(r.duration * 1000))

step("feed stdin, read stdout line by line as it arrives")
local p = baton.spawn { "sh", "-c", "while read -r l; do echo \"got: $l\"; done", stdin = "pipe", stdout = "pipe" }
for _, word in ipairs { "alpha", "beta", "gamma" } do
  p.stdin:write(word, "\n")
  print(p.stdout:read("l"))
end
p.stdin:close()
print("child:", p:wait())

step("several processes at once, each in its own task")
local t0 = baton.now()
local tasks = {}
for i = 1, 5 do
  tasks[i] = baton.go(function()
    local out = baton.run { "sh", "-c", "sleep 0.3; echo worker " .. i, capture = true }
    return (out.stdout:gsub("\n", ""))
  end)
end
print(table.concat(baton.all(tasks), ", "))
print(("5 x 0.3 s of sleeping took %.2f s in parallel"):format(baton.now() - t0))

step("signals: TERM a long sleep, see how it ended")
local s = baton.spawn { "sleep", "60" }
baton.sleep(0.05)
s:signal("TERM")
print("sleep 60 ->", s:wait())
print("signal after reap:", select(2, s:signal("KILL"))) -- the pidfd knows it is gone

step("failures are precise")
print(select(2, baton.spawn { "no-such-program-anywhere" }))
print(select(2, baton.spawn { "ls", cwd = "/does/not/exist" }))
local _, err = pcall(baton.run, { "sh", "-c", "echo 'something broke' >&2; exit 3", capture = true })
print("run raised:", err)
local soft = baton.run { "false", check = false }
print("check = false gives a result instead:", soft.ok, soft.code)

step("pipelines: wired fd to fd, every stage's status, pipefail without the SIGPIPE noise")
local c = baton.cmd
local words = c { "printf", "to be or not to be\n" } | c { "tr", " ", "\n" } | c { "sort" } | c { "uniq", "-c" }
  | c { "sort", "-rn" }
io.write(words:output(), "\n")
local r4 = (c { "yes" } | c { "head", "-3" }):with { capture = true }:run()
print("yes | head -3:", r4.ok and "ok" or "failed", "PIPESTATUS", table.concat(r4.statuses, " "))
local shout = function(input, output) for l in input:lines() do output:write(l:upper(), "!\n") end end
print((c { "printf", "a\nb\n" } | shout | c { "tac" }):output())
local full = c { "sh", "-c", "cat >/dev/null; echo 'no space left' >&2; exit 28" }
local _, err4 = pcall(baton.run, (c { "seq", "3" } | full | c { "cat" }):with { capture = true })
print("a failing stage is named:", err4)

step("commands are values: build once, derive, run many times")
local git_like = baton.cmd { "sh", "-c", 'echo "$0: $*"', "tool" }
print(git_like("status"):output())
print(git_like:with { "log", "--oneline" }:output())
print("quoted safely:", baton.sh("printf '%%s\\n' %s", "it's; rm -rf / `id`"):output())

step("timeouts: TERM the group, then KILL after the grace")
local r2 = baton.run { "sh", "-c", "trap '' TERM; sleep 30", timeout = 0.2, grace = 0.2, check = false }
print("stubborn sleeper:", r2.signame, "timed out:", r2.timed_out)

step("scopes: whatever was started inside is stopped when it ends")
local pids = {}
baton.scope(function()
  for i = 1, 3 do pids[i] = baton.spawn { "sleep", "60" }.pid end
  print("started", table.concat(pids, " "))
end, { grace = 1 })
local alive = 0
for _, pid in ipairs(pids) do
  if baton.ok { "kill", "-0", tostring(pid), stderr = "null" } then alive = alive + 1 end
end
print("still alive after the scope:", alive)

step("groups of tasks: N at a time, every result in order; the first failure stops the rest")
local sums, failures = baton.map({ "a", "bb", "ccc", "dddd" }, function(word)
  return baton.output { "sh", "-c", 'printf %s "$0" | md5sum | cut -c1-8', word }
end, { limit = 2 })
print("md5 prefixes:", table.concat(sums, " "), "failures:", #failures)
local ok5, err5 = pcall(baton.group, function(g)
  g:go(baton.run, { "sleep", "30" }) -- stopped when its sibling fails
  g:go(function() baton.sleep(0.05) error("deploy step failed", 0) end)
end)
print("group:", ok5, err5)

step("resource use comes with every result")
local r3 = baton.run { "sh", "-c", "head -c 50000000 /dev/zero | md5sum", capture = true }
print(("md5 of 50 MB of zeros in %.0f ms, max RSS %d KiB"):format(r3.duration * 1000, r3.rusage.maxrss))

step("a background task keeps running while the main one waits")
local ticker = baton.go(function()
  for i = 1, 3 do
    baton.sleep(0.1)
    print("  tick", i)
  end
end)
baton.run { "sleep", "0.35" }
ticker:wait()
step("services: a supervised stack in dependency order, restarts with backoff, stopped in reverse")
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local examples = dofile(here .. "stack.lua")
local sv, url = examples.stack(examples.free_port())
sv:on("*", function(ev)
  print(("  %-10s %-7s %s"):format(ev.event, ev.service, ev.error or ev.status or ev.pid or ""))
end)
assert(sv:start())
print(sv:status())
print("GET " .. url .. " ->", (baton.http_get(url)))
baton.core.kill(sv:status().worker.replicas[1].pid, 9) -- a crash: restarted after its backoff
sv:next("ready", "worker")
sv:stop()

step("hot upgrade: three new generations of a server under load, on the same socket, not one request lost")
local web = function(gen)
  return { "python3", here .. "http_server.py", env = { GEN = tostring(gen) }, listen = { http = "tcp://127.0.0.1:0" },
    ready = "notify" }
end
local up = baton.supervisor { web = web(1) }
assert(up:start())
local base = up:listener("web", "http").url:gsub("^tcp", "http") .. "/"
local served, failed, running = {}, 0, true
local clients = {}
for i = 1, 4 do
  clients[i] = baton.go(function()
    while running do
      local code, body = baton.http_get(base, { timeout = 5 })
      if code == 200 then served[body] = (served[body] or 0) + 1 else failed = failed + 1 end
    end
  end)
end
for gen = 2, 4 do
  local res = up:upgrade("web", web(gen))
  print(("  generation %d: %s in %.0f ms (ready after %.0f ms)"):format(gen, res.outcome, res.timings.promoted * 1000,
    res.timings.ready * 1000))
end
baton.sleep(0.3)
running = false
baton.all(clients)
local gens = {}
for body, n in pairs(served) do gens[#gens + 1] = ("gen %s: %d"):format(body:gsub("\n", ""), n) end
table.sort(gens)
print("  requests answered by " .. table.concat(gens, ", ") .. "; failed: " .. failed)
up:close()

print("\ndone. Try the REPL: build/baton; or a stack: build/baton scripts/examples/stack.lua")
