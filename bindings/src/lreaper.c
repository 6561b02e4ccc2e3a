/*
 * lreaper.c — the orphan reaper (core.reaper, under baton.subreaper) and
 * core.set_subreaper. A reaper reaps every child that no process handle
 * owns (orphans re-parented to baton as a subreaper or as PID 1) and reports
 * each with fn(pid, code, signal).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "lbaton.h"

#define LB_REAPER "baton.core.reaper"

/* core.set_subreaper(on) -> true | nil, msg, code */
static int l_set_subreaper(lua_State *L) {
  if (prctl(PR_SET_CHILD_SUBREAPER, lua_toboolean(L, 1) ? 1 : 0, 0, 0, 0) < 0)
    return lb_error(L, -errno, "prctl");
  lua_pushboolean(L, 1);
  return 1;
}

typedef struct {
  lb_handle h;
  bt_reaper_t r;
} lb_reaper;

static void lb_reaper_closed(bt_reaper_t *r) {
  lb_handle_closed(r->data);
}
static void lb_reaper_close(lb_handle *h) {
  bt_reaper_close(&((lb_reaper *)h)->r, lb_reaper_closed);
}

static void lb_on_orphan(bt_reaper_t *r, pid_t pid, int wstatus) {
  lb_reaper *lr = r->data;
  lua_State *T = lb_push_cb(&lr->h);
  if (T == NULL) return;
  lua_pushinteger(T, pid);
  if (WIFEXITED(wstatus)) {
    lua_pushinteger(T, WEXITSTATUS(wstatus));
    lua_pushnil(T);
  } else {
    lua_pushnil(T);
    lua_pushinteger(T, WTERMSIG(wstatus));
  }
  lb_call(lr->h.rt, T, 3);
}

/* core.reaper(subreaper, fn) -> reaper | nil, msg, code. fn(pid, code, signal) per orphan. */
static int l_reaper(lua_State *L) {
  int sub = lua_toboolean(L, 1);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lb_reaper *lr = lb_new(L, sizeof *lr, LB_REAPER, lb_reaper_close);
  lr->r.data = lr;
  int err = bt_reaper_start(lr->h.rt->loop, &lr->r, sub, lb_on_orphan);
  if (err < 0) return lb_error(L, err, "subreaper");
  lr->h.open = 1;
  lb_handle_set_cb(L, &lr->h, 2);
  return 1;
}

static int l_reaper_close(lua_State *L) {
  lb_reaper *lr = lb_check(L, 1, LB_REAPER);
  lb_handle_close(&lr->h);
  return 0;
}

static int l_reaper_reap(lua_State *L) {
  lb_reaper *lr = lb_check(L, 1, LB_REAPER);
  lua_pushinteger(L, lr->h.closing ? 0 : bt_reaper_reap(&lr->r));
  return 1;
}

void lb_open_reaper(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"close", l_reaper_close}, {"reap", l_reaper_reap}, {NULL, NULL}};
  lb_newmetatable(L, LB_REAPER, methods, lb_handle_release, lb_handle_tostring);
  static const luaL_Reg funcs[] = {
      {"reaper", l_reaper}, {"set_subreaper", l_set_subreaper}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
