-- log_service.lua — baton's side of the log benchmark (bench/logs.lua), run
-- as its own `baton` process so that the driver measures this process and
-- nothing of its own: one service, the writer (`seq 1 N`), whose stdout baton
-- holds and routes into a rotating file, FILE (10 MiB a file, 1000 kept).
-- Waits until the service exited, then stops the supervisor, which reads the
-- pipe to its end and closes the file: every line is on disk when this
-- process exits. Prints "<cpu seconds of this process> <lines routed>".
-- Usage: baton bench/log_service.lua N FILE
local n, file = arg[1], arg[2]
assert(tonumber(n) and file, "usage: log_service.lua N FILE")
local sv = baton.supervisor {
  writer = {
    "seq", "1", n, stdin = "null", stderr = "null", ready = "exec", restart = "never",
    log = { stdout = { { file = file, max_size = 10 * 1024 * 1024, keep = 1000 } } },
  },
}
assert(sv:start())
local ok, msg = sv:wait("writer", "stopped")
assert(ok, msg)
local lines = sv.services.writer.instances[1].log.lines
sv:stop()
io.stdout:write(("%.6f %d\n"):format(os.clock(), lines))
