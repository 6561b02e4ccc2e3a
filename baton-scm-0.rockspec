-- `luarocks --lua-version 5.4 make` from a checkout builds baton with CMake and
-- installs the `baton` module (baton.so, the Lua layer inside) into the
-- rocks tree. Debian: luarocks, liblua5.4-dev, libuv1-dev, libedit-dev,
-- cmake, pkg-config. The executable, libbaton and the headers come with
-- `cmake --install` (see the README), not with the rock.
rockspec_format = "3.0"
package = "baton"
version = "scm-0"
source = {
   -- A checkout: `luarocks make` builds what is in the current directory.
   url = "git+file://./.git",
}
description = {
   summary = "Spawn, pipe, supervise and hot-upgrade processes from Lua 5.4, on libuv",
   detailed = [[
baton is a process orchestrator: spawn processes (pidfds, exact fd mapping,
credentials, cgroups), pipelines, services with restart policies, readiness
and hot upgrades with listener handoff, all from Lua 5.4 coroutines on a
libuv loop. This rock installs the Lua module.
]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.4, < 5.5",
}
external_dependencies = {
   LIBUV = { header = "uv.h" },
}
build = {
   type = "cmake",
   variables = {
      CMAKE_BUILD_TYPE = "Release",
      CMAKE_INSTALL_PREFIX = "$(PREFIX)",
      BATON_INSTALL_LUA_CMODDIR = "$(LIBDIR)",
      BATON_INSTALL_MODULE_ONLY = "ON",
      BATON_TESTS = "OFF",
   },
}
