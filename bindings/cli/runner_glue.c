/*
 * runner_glue.c — the executable's side of its contract with the Lua layer:
 * each function below is one lookup or call of a name listed in
 * runner_glue.h, and nothing else in bindings/cli names a Lua field.
 */
#include <string.h>

#include <lauxlib.h>

#include "lbaton.h"
#include "runner_glue.h"

#define GLUE_REPL "baton.repl"                   /* registry: the REPL's module */
#define GLUE_RUNNER_THREAD "baton.runner.thread" /* registry: the interrupt thread */

void glue_open_baton(lua_State *L) {
  lb_preload(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "baton");
  lua_call(L, 1, 1);
  lua_setglobal(L, "baton");
}

void glue_push_main(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "baton");
  lua_getfield(L, -1, "main");
  lua_remove(L, -2);
  lua_remove(L, -2);
}

lua_State *glue_runner_thread(lua_State *L) {
  lua_State *T = lua_newthread(L);
  lua_setfield(L, LUA_REGISTRYINDEX, GLUE_RUNNER_THREAD);
  return T;
}

static void (*glue_main_cb)(lua_State *co);

/* baton.task.on_main(task): hand the main task's coroutine over. */
static int glue_on_main_task(lua_State *L) {
  lua_getfield(L, 1, "co");
  glue_main_cb(lua_tothread(L, -1));
  return 0;
}

void glue_on_main(lua_State *L, void (*cb)(lua_State *co)) {
  glue_main_cb = cb;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "baton.task");
  lua_pushcfunction(L, glue_on_main_task);
  lua_setfield(L, -2, "on_main");
  lua_pop(L, 2);
}

int glue_interrupt(lua_State *L, int sig) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "baton");
  lua_getfield(L, -1, "interrupt");
  lua_pushinteger(L, sig);
  int status = lua_pcall(L, 1, 0, 0);
  if (status != LUA_OK) lua_insert(L, -3); /* the message goes under the tables */
  lua_pop(L, 2);
  return status;
}

void glue_repl_install(lua_State *L, lua_CFunction hide, lua_CFunction show) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, GLUE_REPL);
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "install");
  lua_pushcfunction(L, hide);
  lua_pushcfunction(L, show);
  lua_call(L, 2, 0);
  lua_setfield(L, LUA_REGISTRYINDEX, GLUE_REPL);
}

int glue_repl_compile(lua_State *L, const char *src) {
  lua_getfield(L, LUA_REGISTRYINDEX, GLUE_REPL);
  lua_getfield(L, -1, "compile");
  lua_pushstring(L, src);
  lua_call(L, 1, 2); /* repl, fn | nil, msg */
  lua_remove(L, -3);
  if (!lua_isnil(L, -2)) {
    lua_pop(L, 1);
    return GLUE_COMPILED;
  }
  lua_remove(L, -2);
  const char *msg = lua_tostring(L, -1);
  return msg && strcmp(msg, "incomplete") == 0 ? GLUE_INCOMPLETE : GLUE_SYNTAX_ERROR;
}

lua_State *glue_repl_eval(lua_State *L, int fn_index, lua_CFunction done) {
  fn_index = lua_absindex(L, fn_index);
  lua_getfield(L, LUA_REGISTRYINDEX, GLUE_REPL);
  lua_getfield(L, -1, "eval");
  lua_pushvalue(L, fn_index);
  lua_pushcfunction(L, done);
  lua_call(L, 2, 1); /* the task, not started */
  lua_remove(L, -2);
  lua_getfield(L, -1, "co");
  lua_State *co = lua_tothread(L, -1);
  lua_pop(L, 1);
  return co;
}

int glue_task_start(lua_State *L, int task_index) {
  task_index = lua_absindex(L, task_index);
  lua_getfield(L, task_index, "start");
  lua_pushvalue(L, task_index);
  return lua_pcall(L, 1, 0, 0);
}

int glue_task_cancel(lua_State *L, int task_index, const char *msg) {
  task_index = lua_absindex(L, task_index);
  lua_getfield(L, task_index, "cancel");
  lua_pushvalue(L, task_index);
  lua_pushstring(L, msg);
  return lua_pcall(L, 2, 0, 0);
}
