/*
 * lprocess.c — core.spawn and the process userdata.
 *
 * core.spawn takes an options table already checked by the Lua layer
 * (scripts/baton/process.lua) and maps it onto bt_spawn. A running process
 * anchors its userdata; at exit its callback fires once with (code, signal,
 * core), the pidfd is released and the status stays readable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lbaton.h"

#define LB_PROCESS "baton.process"

typedef struct {
  lb_handle h;
  bt_process_t p;
} lb_process;

static void lb_process_closed(bt_process_t *p) { lb_handle_closed(p->data); }
static void lb_process_close(lb_handle *h) {
  bt_process_close(&((lb_process *)h)->p, lb_process_closed);
}

static void lb_on_exit(bt_process_t *p) {
  lb_process *lp = p->data;
  lb_runtime *rt = lp->h.rt;
  if (rt == NULL) return;
  lua_State *T = lb_push_cb(&lp->h);
  if (T) {
    if (p->term_signal) lua_pushnil(T);
    else lua_pushinteger(T, p->exit_code);
    if (p->term_signal) lua_pushinteger(T, p->term_signal);
    else lua_pushnil(T);
    lua_pushboolean(T, p->core_dumped);
    lb_call(rt, T, 3);
  }
  luaL_unref(rt->cbL, LUA_REGISTRYINDEX, lp->h.cb_ref);
  lp->h.cb_ref = LUA_NOREF;
  lb_handle_unanchor(rt->cbL, &lp->h);
  lb_handle_close(&lp->h); /* releases the pidfd now, not at collection */
}

/* A NULL-terminated copy of the strings of the array at `idx`, in one block. */
static char **lb_strv(lua_State *L, int idx, const char *what) {
  lua_Integer n = luaL_len(L, idx);
  char **v = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_geti(L, idx, i) != LUA_TSTRING) luaL_error(L, "baton: %s[%d] must be a string", what, (int)i);
    v[i - 1] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1); /* the string stays alive: it is in the table */
  }
  v[n] = NULL;
  return v;
}

/*
 * core.spawn{argv=, file=, env=, cwd=, stdio={spec for fd 0, fd 1, ...},
 *            setsid=, pgid=}
 * -> proc, {[fd] = stream} | nil, errname, message, stage, path
 * A stdio spec is "inherit", "null", "close", "pipe" or an fd number.
 */
static int l_spawn(lua_State *L) {
  static const char *const kinds[] = {"inherit", "null", "close", "pipe", NULL};
  static const bt_stdio_type map[] = {BT_STDIO_INHERIT, BT_STDIO_NULL, BT_STDIO_CLOSE,
                                      BT_STDIO_PIPE};
  bt_stdio_t stdio[BT_MAX_STDIO];
  bt_spawn_options_t o;
  memset(&o, 0, sizeof o);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);

  lua_getfield(L, 1, "argv"); /* 2 */
  luaL_argcheck(L, lua_istable(L, 2), 1, "argv must be a table");
  o.argv = lb_strv(L, 2, "argv"); /* 3 */
  luaL_argcheck(L, o.argv[0] != NULL, 1, "argv is empty");
  lua_getfield(L, 1, "file"); /* 4 */
  o.file = lua_tostring(L, 4);
  lua_getfield(L, 1, "env"); /* 5 */
  if (lua_istable(L, 5)) o.env = lb_strv(L, 5, "env");
  else lua_pushnil(L); /* 6 */
  lua_getfield(L, 1, "cwd"); /* 7 */
  o.cwd = lua_tostring(L, 7);
  lua_getfield(L, 1, "setsid");
  if (lua_toboolean(L, -1)) o.flags |= BT_SPAWN_SETSID;
  lua_getfield(L, 1, "pgid");
  if (lua_isinteger(L, -1)) {
    o.flags |= BT_SPAWN_SETPGID;
    o.pgid = (pid_t)lua_tointeger(L, -1);
  }
  lua_pop(L, 2);

  lua_getfield(L, 1, "stdio"); /* 8 */
  int n = lua_istable(L, 8) ? (int)luaL_len(L, 8) : 0;
  luaL_argcheck(L, n <= BT_MAX_STDIO, 1, "too many stdio entries");
  for (int i = 0; i < n; i++) {
    lua_geti(L, 8, i + 1);
    stdio[i].flags = 0;
    stdio[i].fd = -1;
    if (lua_isinteger(L, -1)) {
      stdio[i].type = BT_STDIO_FD;
      stdio[i].fd = (int)lua_tointeger(L, -1);
    } else if (lua_istable(L, -1)) { /* {same = k}: the child's fd k (2>&1) */
      lua_getfield(L, -1, "same");
      stdio[i].type = BT_STDIO_SAME;
      stdio[i].fd = (int)luaL_checkinteger(L, -1);
      lua_pop(L, 1);
    } else {
      stdio[i].type = map[luaL_checkoption(L, -1, NULL, kinds)];
    }
    lua_pop(L, 1);
  }
  o.stdio = stdio;
  o.nstdio = n;

  lb_process *lp = lb_new(L, sizeof *lp, LB_PROCESS, lb_process_close); /* 9 */
  lp->p.data = lp;
  int err = bt_spawn(lp->h.rt->loop, &lp->p, &o, lb_on_exit);
  if (err < 0) {
    lua_pushnil(L);
    lua_pushstring(L, uv_err_name(err));
    lua_pushstring(L, uv_strerror(err));
    lua_pushstring(L, bt_stage_name(lp->p.stage));
    lua_pushstring(L, lp->p.path);
    return 5;
  }
  lp->h.open = 1;
  lb_handle_anchor(L, &lp->h, 9);

  lua_createtable(L, 0, 3); /* 10: the parent's pipe ends */
  for (int i = 0; i < n; i++) {
    if (stdio[i].type != BT_STDIO_PIPE) continue;
    err = lb_stream_new(L, stdio[i].fd);
    if (err < 0) {
      /* The child runs; the caller sees an error and must not lose it. */
      for (int j = i + 1; j < n; j++)
        if (stdio[j].type == BT_STDIO_PIPE) close(stdio[j].fd);
      bt_process_kill(&lp->p, SIGKILL);
      lua_pushnil(L);
      lua_pushstring(L, uv_err_name(err));
      lua_pushstring(L, uv_strerror(err));
      lua_pushstring(L, "setup");
      lua_pushstring(L, lp->p.path);
      return 5;
    }
    lua_seti(L, 10, i);
  }
  lua_pushvalue(L, 9);
  lua_pushvalue(L, 10);
  return 2;
}

static int l_proc_pid(lua_State *L) {
  lb_process *lp = lb_check(L, 1, LB_PROCESS);
  lua_pushinteger(L, lp->p.pid);
  return 1;
}

static int l_proc_path(lua_State *L) {
  lb_process *lp = lb_check(L, 1, LB_PROCESS);
  lua_pushstring(L, lp->p.path);
  return 1;
}

/* p:kill(signum) -> true | nil, msg, code ("ESRCH" once reaped) */
static int l_proc_kill(lua_State *L) {
  lb_process *lp = lb_check(L, 1, LB_PROCESS);
  int sig = (int)luaL_checkinteger(L, 2);
  int err = bt_process_kill(&lp->p, sig);
  if (err < 0) return lb_error(L, err, err == -ESRCH ? "process already exited" : "kill");
  lua_pushboolean(L, 1);
  return 1;
}

/* p:status() -> exited, code, signal, core */
static int l_proc_status(lua_State *L) {
  lb_process *lp = lb_check(L, 1, LB_PROCESS);
  lua_pushboolean(L, lp->p.exited);
  if (!lp->p.exited) return 1;
  if (lp->p.term_signal) lua_pushnil(L);
  else lua_pushinteger(L, lp->p.exit_code);
  if (lp->p.term_signal) lua_pushinteger(L, lp->p.term_signal);
  else lua_pushnil(L);
  lua_pushboolean(L, lp->p.core_dumped);
  return 4;
}

/* p:on_exit(fn): fn(code, signal, core) once, from the loop. */
static int l_proc_on_exit(lua_State *L) {
  lb_process *lp = lb_check(L, 1, LB_PROCESS);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!lp->p.exited) lb_handle_set_cb(L, &lp->h, 2);
  return 0;
}

static int l_proc_gc(lua_State *L) { return lb_handle_gc(L, LB_PROCESS); }

void lb_open_process(lua_State *L) {
  static const luaL_Reg methods[] = {{"pid", l_proc_pid},         {"path", l_proc_path},
                                     {"kill", l_proc_kill},       {"status", l_proc_status},
                                     {"on_exit", l_proc_on_exit}, {NULL, NULL}};
  luaL_newmetatable(L, LB_PROCESS);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_proc_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_spawn);
  lua_setfield(L, -2, "spawn");
}
