-- luacheck configuration (Debian: lua-check). CI runs `luacheck .`.
std = "lua54"
max_line_length = 120
exclude_files = { "build*/**", ".git/**" }
-- Scripts run by `baton` see it as a global.
files["scripts/examples/**"] = { read_globals = { "baton" } }
files["bench/**"] = { read_globals = { "baton" }, max_line_length = 160 }
-- The REPL routes output through its own print and io.write.
files["scripts/baton/repl.lua"] = { globals = { "print", "io" } }
-- Specs spell out whole messages on one line.
-- `local s <close> = …` is used by being closed; results are named for
-- the reader even when only some are checked.
files["spec/**"] = { std = "+busted", read_globals = { "baton" }, max_line_length = 160, ignore = { "211", "311" } }
