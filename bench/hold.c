/* hold.c — a Lua C module for the spawn benchmark: hold(mib) mallocs that
 * much memory and touches every page, outside the Lua heap, as a supervisor
 * holds its buffers and tables in C. A Lua string as ballast would not
 * measure the same thing: it counts in the collector's heap size, so with
 * 1 GiB held the collector, paced on that size, never runs during the spawn
 * loop (the garbage of every run piles up in fresh pages), which is about
 * Lua's GC, not about what a spawn costs in a big parent. Never freed: the
 * process exits after the loop. Built by bench/run as build-bench/hold.so. */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>

static int l_hold(lua_State *L) {
  size_t n = (size_t)luaL_checkinteger(L, 1) << 20;
  /* Touched through a volatile pointer, as in spawn_uv.c: untouched pages
   * would not be resident. */
  volatile char *mem = malloc(n);
  if (mem == NULL) return luaL_error(L, "hold: cannot allocate %d MiB", (int)(n >> 20));
  for (size_t i = 0; i < n; i += 4096)
    mem[i] = 1;
  lua_pushlightuserdata(L, (void *)mem);
  return 1;
}

int luaopen_hold(lua_State *L) {
  lua_pushcfunction(L, l_hold);
  return 1;
}
