/*
 * test_host.c — baton embedded in a host that owns its libuv loop, through
 * the public header only: the host hands its loop over with lb_set_loop,
 * makes `require "baton"` find luaopen_baton, starts a task, and runs the
 * loop itself. Script code then runs in tasks; a waiting call outside a task
 * is refused with a clear error instead of running the host's loop.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include <uv.h>

#include "baton_lua.h"

static int failures;
#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c)) {                                                                                    \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                        \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static int ticks;
static void on_tick(uv_timer_t *t) {
  if (++ticks == 10) uv_close((uv_handle_t *)t, NULL);
}

static const char *global_string(lua_State *L, const char *expr) {
  lua_settop(L, 0);
  char code[256];
  snprintf(code, sizeof code, "return %s", expr);
  if (luaL_dostring(L, code) != LUA_OK) return lua_tostring(L, -1);
  return lua_tostring(L, -1);
}

int main(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lb_set_loop(L, &loop);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_baton);
  lua_setfield(L, -2, "baton");
  lua_pop(L, 1);

  const char *script =
      "baton = require 'baton'\n"
      "results = {}\n"
      "baton.go(function()\n"
      "  local r = baton.run{'sh', '-c', 'echo from host; exit 3', capture = true, check = false}\n"
      "  results.out = r.stdout .. r.code\n"
      "  baton.sleep(0.01)\n"
      "  local c = baton.cmd\n"
      "  results.pipe = (c{'printf', 'b\\\\na\\\\n'} | c{'sort'}):output()\n"
      "  results.done = 'yes'\n"
      "end)\n"
      "results.started = 'before the loop ran'\n";
  if (luaL_dostring(L, script) != LUA_OK) {
    fprintf(stderr, "script: %s\n", lua_tostring(L, -1));
    return 1;
  }
  CHECK(strcmp(global_string(L, "results.started"), "before the loop ran") == 0);
  CHECK(strcmp(global_string(L, "tostring(results.done)"), "nil") == 0);

  /* The host runs its own loop; the task completes inside it. */
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(strcmp(global_string(L, "results.out"), "from host\n3") == 0);
  CHECK(strcmp(global_string(L, "results.pipe"), "a\nb") == 0);
  CHECK(strcmp(global_string(L, "results.done"), "yes") == 0);

  /* A task's uncaught error is reported on stderr and does not stop the
   * host's loop: its own timer still gets all its ticks. */
  char errpath[] = "/tmp/baton-host-XXXXXX";
  int errfd = mkstemp(errpath), saved = dup(2);
  CHECK(errfd >= 0 && saved >= 0);
  dup2(errfd, 2);
  CHECK(luaL_dostring(
            L, "baton.go(function() baton.sleep(0.005); error('task failed on purpose') end)") ==
        LUA_OK);
  uv_timer_t tick;
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, on_tick, 2, 2);
  uv_run(&loop, UV_RUN_DEFAULT);
  lua_gc(L, LUA_GCCOLLECT); /* nobody can wait for it any more: reported */
  dup2(saved, 2);
  close(saved);
  CHECK(ticks == 10);
  char report[4096] = "";
  ssize_t got = pread(errfd, report, sizeof report - 1, 0);
  report[got > 0 ? got : 0] = 0;
  CHECK(strstr(report, "uncaught error in task") && strstr(report, "task failed on purpose"));
  close(errfd);
  unlink(errpath);

  /* Outside a task, a wait cannot run the host's loop: a clear error. */
  const char *err = global_string(L, "select(2, pcall(baton.sleep, 0.01))");
  CHECK(err && strstr(err, "cannot wait here") != NULL);

  /* Closing the state closes baton's handles; the host's loop stays the host's. */
  lua_close(L);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);

  /* lb_set_loop(L, NULL) undoes an earlier call: baton makes and runs its own
   * loop (a NULL taken for a loop would crash at the first handle). */
  L = luaL_newstate();
  luaL_openlibs(L);
  lb_set_loop(L, &loop);
  lb_set_loop(L, NULL);
  luaL_requiref(L, "baton", luaopen_baton, 1);
  lua_pop(L, 1);
  const char *own = global_string(
      L, "require('baton.core').host_loop() == false and baton.cmd{'echo', 'own'}:output()");
  CHECK(own && strcmp(own, "own") == 0);
  lua_close(L);

  if (failures) return 1;
  printf("host: all checks passed\n");
  return 0;
}
