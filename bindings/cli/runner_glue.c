/*
 * runner_glue.c — the executable's side of its contract with the Lua layer:
 * each function below is one lookup or call of a name listed in
 * runner_glue.h, and nothing else in bindings/cli names a Lua field.
 */
#include <string.h>

#include <lauxlib.h>

#include "lbaton.h"
#include "runner_glue.h"

static int glue_runner = LUA_NOREF; /* registry ref: the module baton.runner */
static int glue_repl = LUA_NOREF;   /* registry ref: the module baton.repl */
static int glue_thread = LUA_NOREF; /* registry ref: the interrupt thread */
static int glue_own = LUA_NOREF;    /* registry ref: errors.is_own */

/* require(name), referenced in the registry. Raises on failure. */
static int glue_require(lua_State *L, const char *name) {
  lua_getglobal(L, "require");
  lua_pushstring(L, name);
  lua_call(L, 1, 1);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Push field `k` of the module referenced by `ref`. */
static void glue_field(lua_State *L, int ref, const char *k) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lua_getfield(L, -1, k);
  lua_remove(L, -2);
}

void glue_open_baton(lua_State *L) {
  lb_preload(L);
  /* (before `baton`, which takes what a re-exec handed over only in the
   * executable) */
  glue_runner = glue_require(L, "baton.runner");
  lua_rawgeti(L, LUA_REGISTRYINDEX, glue_runner);
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "executable"); /* (baton.reexec: this program is baton itself) */
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "baton");
  lua_call(L, 1, 1);
  lua_setglobal(L, "baton");
  int errors = glue_require(L, "baton.errors");
  glue_field(L, errors, "is_own");
  glue_own = luaL_ref(L, LUA_REGISTRYINDEX);
  luaL_unref(L, LUA_REGISTRYINDEX, errors);
}

int glue_is_own(lua_State *L, const char *source) {
  if (glue_own == LUA_NOREF || !lua_checkstack(L, 3)) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, glue_own);
  lua_pushstring(L, source);
  int own = lua_pcall(L, 1, 1, 0) == LUA_OK && lua_toboolean(L, -1);
  lua_pop(L, 1);
  return own;
}

void glue_push_main(lua_State *L) {
  glue_field(L, glue_runner, "main");
}

lua_State *glue_runner_thread(lua_State *L) {
  lua_State *T = lua_newthread(L);
  glue_thread = luaL_ref(L, LUA_REGISTRYINDEX);
  return T;
}

static void (*glue_main_cb)(lua_State *co);

/* runner.on_main(task): hand the main task's coroutine over. */
static int glue_on_main_task(lua_State *L) {
  lua_getfield(L, 1, "co");
  glue_main_cb(lua_tothread(L, -1));
  return 0;
}

void glue_on_main(lua_State *L, void (*cb)(lua_State *co)) {
  glue_main_cb = cb;
  lua_rawgeti(L, LUA_REGISTRYINDEX, glue_runner);
  lua_pushcfunction(L, glue_on_main_task);
  lua_setfield(L, -2, "on_main");
  lua_pop(L, 1);
}

int glue_interrupt(lua_State *L, int sig, lua_State *co) {
  glue_field(L, glue_runner, "interrupt");
  lua_pushinteger(L, sig);
  if (co == L)
    lua_pushthread(L);
  else
    lua_pushnil(L);
  return lua_pcall(L, 2, 0, 0);
}

static void (*glue_resume_cb)(lua_State *co);

/* task.on_resume(co or nil) */
static int glue_on_resume_task(lua_State *L) {
  glue_resume_cb(lua_tothread(L, 1));
  return 0;
}

void glue_on_resume(lua_State *L, void (*cb)(lua_State *co)) {
  glue_resume_cb = cb;
  int task = glue_require(L, "baton.task");
  lua_rawgeti(L, LUA_REGISTRYINDEX, task);
  lua_pushcfunction(L, glue_on_resume_task);
  lua_setfield(L, -2, "on_resume");
  lua_pop(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, task);
}

int glue_kill_jobs(lua_State *L) {
  glue_field(L, glue_runner, "kill_jobs");
  return lua_pcall(L, 0, 1, 0);
}

void glue_repl_install(lua_State *L, lua_CFunction hide, lua_CFunction show) {
  glue_repl = glue_require(L, "baton.repl");
  glue_field(L, glue_repl, "install");
  lua_pushcfunction(L, hide);
  lua_pushcfunction(L, show);
  lua_call(L, 2, 0);
}

int glue_repl_complete(lua_State *L, const char *text, const char *line, size_t before) {
  glue_field(L, glue_repl, "complete");
  lua_pushstring(L, text);
  if (line)
    lua_pushlstring(L, line, before);
  else
    lua_pushnil(L);
  return lua_pcall(L, 2, 1, 0);
}

int glue_repl_finish(lua_State *L) {
  glue_field(L, glue_repl, "finish");
  return lua_pcall(L, 0, 0, 0);
}

int glue_repl_compile(lua_State *L, const char *src) {
  glue_field(L, glue_repl, "compile");
  lua_pushstring(L, src);
  lua_call(L, 1, 2); /* fn | nil, msg */
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
  glue_field(L, glue_repl, "eval");
  lua_pushvalue(L, fn_index);
  lua_pushcfunction(L, done);
  lua_call(L, 2, 1); /* the task, not started */
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
