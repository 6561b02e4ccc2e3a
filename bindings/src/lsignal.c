/*
 * lsignal.c — signal watchers (core.signal_watch, under baton.on_signal): a
 * uv_signal whose callback runs from the loop each time the signal arrives.
 * A watcher never keeps the loop alive; closing it restores the previous
 * disposition.
 */
#include <signal.h>
#include <string.h>

#include "lbaton.h"

#define LB_SIGNAL "baton.core.signal"

typedef struct {
  lb_handle h;
  uv_signal_t sig;
  int signum; /* 0 until started */

} lb_signal;

/* Watchers per signal number, and the disposition before the first one:
 * libuv gives the last one's signal SIG_DFL back when it stops, which
 * would kill baton on a SIGPIPE, or take SIGINT from the runner. */
static int lb_watchers[65];
static struct sigaction lb_before[65];

static void lb_signal_closed(uv_handle_t *handle) {
  lb_handle_closed(handle->data);
}
static void lb_signal_close(lb_handle *h) {
  lb_signal *s = (lb_signal *)h;
  uv_close((uv_handle_t *)&s->sig, lb_signal_closed); /* stops it now */
  int n = s->signum;
  if (n > 0 && n < 65 && --lb_watchers[n] == 0) sigaction(n, &lb_before[n], NULL);
  s->signum = 0;
}

static void lb_on_signal(uv_signal_t *handle, int signum) {
  lb_signal *s = handle->data;
  if (s->h.rt == NULL) return;
  lua_State *T = lb_push_cb(&s->h);
  if (T == NULL) return;
  lua_pushinteger(T, signum);
  lb_call(s->h.rt, T, 1);
}

/* core.signal_watch(signum, fn) -> watcher | nil, msg, code. fn(signum) from
 * the loop each time the signal arrives; the watcher does not keep the loop
 * alive. watcher:close() restores the previous disposition. */
static int l_signal_watch(lua_State *L) {
  int signum = (int)luaL_checkinteger(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lb_signal *s = lb_new(L, sizeof *s, LB_SIGNAL, lb_signal_close);
  uv_signal_init(s->h.rt->loop, &s->sig);
  s->sig.data = s;
  s->h.open = 1;
  struct sigaction before;
  int known = signum > 0 && signum < 65 && sigaction(signum, NULL, &before) == 0;
  int err = uv_signal_start(&s->sig, lb_on_signal, signum);
  if (err < 0) {
    lb_handle_close(&s->h);
    return lb_error(L, err, "signal");
  }
  if (known) {
    if (lb_watchers[signum]++ == 0) lb_before[signum] = before;
    s->signum = signum;
  }
  uv_unref((uv_handle_t *)&s->sig);
  lb_handle_set_cb(L, &s->h, 2);
  lb_handle_anchor(L, &s->h, lua_gettop(L));
  return 1;
}

static int l_signal_close(lua_State *L) {
  lb_signal *s = lb_check(L, 1, LB_SIGNAL);
  lb_handle_unanchor(L, &s->h);
  lb_handle_close(&s->h);
  return 0;
}

void lb_open_signal(lua_State *L) {
  static const luaL_Reg methods[] = {{"close", l_signal_close}, {NULL, NULL}};
  lb_newmetatable(L, LB_SIGNAL, methods, lb_handle_release, lb_handle_tostring);
  lua_pushcfunction(L, l_signal_watch);
  lua_setfield(L, -2, "signal_watch");
}
