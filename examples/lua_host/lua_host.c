/*
 * lua_host.c — a C program with its own lua_State and libuv loop that opens
 * baton on them (baton_lua.h): baton's handles and the host's own share the
 * loop the host runs. Script code runs in tasks (baton.go); while a task
 * waits for a child, the host's timer keeps ticking and calls into Lua.
 *
 * Build against an installed baton:
 *   cc lua_host.c $(pkg-config --cflags --libs baton-lua) -o lua_host
 * or with CMake: find_package(baton CONFIG) and link baton::lua.
 */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include <baton_lua.h>
#include <uv.h>

static lua_State *L;
static int ticks;

/* The host's own handle: every 5 ms it asks the script how far it got. */
static void on_tick(uv_timer_t *t) {
  ticks++;
  lua_getglobal(L, "progress");
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
    fprintf(stderr, "progress: %s\n", lua_tostring(L, -1));
  } else if (strcmp(lua_tostring(L, -1), "done") == 0) {
    uv_close((uv_handle_t *)t, NULL);
  }
  lua_pop(L, 1);
}

static const char script[] =
    "local baton = require 'baton'\n"
    "local state = 'starting'\n"
    "function progress() return state end\n"
    "results = {}\n"
    "baton.go(function()\n"
    "  state = 'running'\n"
    "  local r = baton.run{'sh', '-c', 'sleep 0.05; echo from a task; exit 3',\n"
    "                     capture = true, check = false}\n"
    "  results[#results + 1] = r.stdout .. 'code ' .. r.code\n"
    "  local c = baton.cmd\n"
    "  results[#results + 1] = (c{'printf', 'b\\\\na\\\\n'} | c{'sort'}):output()\n"
    "  state = 'done'\n"
    "end)\n";

int main(void) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return 111;
  L = luaL_newstate();
  luaL_openlibs(L);
  lb_set_loop(L, &loop); /* before baton is first loaded on L */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_baton);
  lua_setfield(L, -2, "baton");
  lua_pop(L, 1);

  if (luaL_dostring(L, script) != LUA_OK) {
    fprintf(stderr, "script: %s\n", lua_tostring(L, -1));
    return 1;
  }
  uv_timer_t tick;
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, on_tick, 5, 5);

  uv_run(&loop, UV_RUN_DEFAULT); /* the host's loop: the task and the timer run in here */

  int ok = ticks >= 5; /* the timer ticked while the task waited for sh */
  if (luaL_dostring(L, "return table.concat(results, '|')") == LUA_OK) {
    const char *got = lua_tostring(L, -1);
    printf("results: %s\n", got);
    ok = ok && strcmp(got, "from a task\ncode 3|a\nb") == 0;
  } else {
    ok = 0;
  }
  lua_close(L);                  /* starts closing baton's handles ... */
  uv_run(&loop, UV_RUN_DEFAULT); /* ... which finish closing here */
  if (uv_loop_close(&loop) != 0) ok = 0;
  printf("lua_host: %s (%d ticks)\n", ok ? "ok" : "FAILED", ticks);
  return ok ? 0 : 1;
}
