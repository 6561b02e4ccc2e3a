/*
 * ltimer.c — timers (baton.sleep, timeouts) and signal watchers for the Lua layer.
 */
#include <stdlib.h>

#include "lbaton.h"

#define LB_TIMER "baton.timer"

typedef struct {
  lb_handle h;
  uv_timer_t timer;
} lb_timer;

static void lb_timer_closed(uv_handle_t *handle) { lb_handle_closed(handle->data); }
static void lb_timer_close(lb_handle *h) {
  uv_close((uv_handle_t *)&((lb_timer *)h)->timer, lb_timer_closed);
}

static int l_timer_new(lua_State *L) {
  lb_timer *t = lb_new(L, sizeof *t, LB_TIMER, lb_timer_close);
  uv_timer_init(t->h.rt->loop, &t->timer);
  t->timer.data = t;
  t->h.open = 1;
  return 1;
}

static void lb_on_timer(uv_timer_t *handle) {
  lb_timer *t = handle->data;
  lb_runtime *rt = t->h.rt;
  if (rt == NULL) return;
  lua_State *T = lb_push_cb(&t->h);
  if (uv_timer_get_repeat(handle) == 0) {
    /* Fired for good: nothing refers to the callback any more (it is on the
     * stack for this call; a restart inside it sets a new one). */
    lb_handle_unanchor(rt->cbL, &t->h);
    luaL_unref(rt->cbL, LUA_REGISTRYINDEX, t->h.cb_ref);
    t->h.cb_ref = LUA_NOREF;
  }
  if (T) lb_call(rt, T, 0);
}

/* t:start(ms, repeat_ms, fn) */
static int l_timer_start(lua_State *L) {
  lb_timer *t = lb_check(L, 1, LB_TIMER);
  lua_Integer ms = luaL_checkinteger(L, 2);
  lua_Integer rep = luaL_optinteger(L, 3, 0);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  luaL_argcheck(L, ms >= 0, 2, "negative timeout");
  luaL_argcheck(L, rep >= 0, 3, "negative repeat");
  if (t->h.closing) return luaL_error(L, "baton: timer used after close");
  lb_handle_set_cb(L, &t->h, 4);
  lb_handle_anchor(L, &t->h, 1);
  /* The loop's clock was read when it last polled; Lua may have been busy
   * since. Count from now, not from then. */
  uv_update_time(t->h.rt->loop);
  uv_timer_start(&t->timer, lb_on_timer, (uint64_t)ms, (uint64_t)rep);
  return 0;
}

static int l_timer_stop(lua_State *L) {
  lb_timer *t = lb_check(L, 1, LB_TIMER);
  if (!t->h.closing) uv_timer_stop(&t->timer);
  lb_handle_unanchor(L, &t->h);
  lb_handle_set_cb(L, &t->h, lua_gettop(L) + 1); /* start sets one again */
  return 0;
}

static int l_timer_close(lua_State *L) {
  lb_timer *t = lb_check(L, 1, LB_TIMER);
  lb_handle_unanchor(L, &t->h);
  lb_handle_close(&t->h);
  return 0;
}

static int l_timer_gc(lua_State *L) { return lb_handle_gc(L, LB_TIMER); }

/* ---- core.defer(fn): run fn on the loop's next turn ----------------------------
 * After the loop has polled for I/O and run due timers: what `baton.sleep(0)`
 * needs. A 0 ms timer started from a timer callback would run in the same
 * pass of libuv's timers, so a task doing `sleep(0)` in a loop would starve
 * I/O and never let closed handles be freed. */
#define LB_DEFERRED "baton.deferred"

static void lb_on_defer(uv_idle_t *idle) {
  lb_runtime *rt = idle->data;
  lua_State *T = rt->cbL;
  /* Take the list; what the functions defer goes to the next turn. */
  lua_getfield(T, LUA_REGISTRYINDEX, LB_DEFERRED);
  lua_newtable(T);
  lua_setfield(T, LUA_REGISTRYINDEX, LB_DEFERRED);
  int list = lua_gettop(T);
  lua_Integer n = luaL_len(T, list);
  for (lua_Integer i = 1; i <= n && rt->defer; i++) {
    lua_geti(T, list, i);
    lb_call(rt, T, 0);
  }
  lua_settop(T, list - 1);
  if (!rt->defer) return; /* the state is closing */
  lua_getfield(T, LUA_REGISTRYINDEX, LB_DEFERRED);
  if (luaL_len(T, -1) == 0) uv_idle_stop(idle);
  lua_pop(T, 1);
}

static int l_defer(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lb_runtime *rt = lb_runtime_get(L);
  if (lb_runtime_idle_start(rt, &rt->defer, lb_on_defer, 1) < 0)
    return luaL_error(L, "baton: cannot create the defer handle");
  if (lua_getfield(L, LUA_REGISTRYINDEX, LB_DEFERRED) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, LB_DEFERRED);
  }
  lua_pushvalue(L, 1);
  lua_seti(L, -2, luaL_len(L, -2) + 1);
  return 0;
}

void lb_open_timer(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"start", l_timer_start}, {"stop", l_timer_stop}, {"close", l_timer_close}, {NULL, NULL}};
  luaL_newmetatable(L, LB_TIMER);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_timer_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_timer_new);
  lua_setfield(L, -2, "timer");
  lua_pushcfunction(L, l_defer);
  lua_setfield(L, -2, "defer");
}

/* ---- signal watchers (uv_signal) -------------------------------------------- */

#define LB_SIGNAL "baton.signal"

typedef struct {
  lb_handle h;
  uv_signal_t sig;
} lb_signal;

static void lb_signal_closed(uv_handle_t *handle) { lb_handle_closed(handle->data); }
static void lb_signal_close(lb_handle *h) {
  uv_close((uv_handle_t *)&((lb_signal *)h)->sig, lb_signal_closed);
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
  int err = uv_signal_start(&s->sig, lb_on_signal, signum);
  if (err < 0) {
    lb_handle_close(&s->h);
    return lb_error(L, err, "signal");
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

static int l_signal_gc(lua_State *L) { return lb_handle_gc(L, LB_SIGNAL); }

void lb_open_signal(lua_State *L) {
  static const luaL_Reg methods[] = {{"close", l_signal_close}, {NULL, NULL}};
  luaL_newmetatable(L, LB_SIGNAL);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_signal_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_signal_watch);
  lua_setfield(L, -2, "signal_watch");
}
