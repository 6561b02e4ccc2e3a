/*
 * ltimer.c — the timer userdata (core.timer), under baton.sleep and every
 * timeout of the Lua layer. An armed timer anchors its userdata; a one-shot
 * timer lets go of its callback once it fired.
 */
#include <stdlib.h>

#include "lbaton.h"

#define LB_TIMER "baton.core.timer"

typedef struct {
  lb_handle h;
  uv_timer_t timer;
} lb_timer;

static void lb_timer_closed(uv_handle_t *handle) {
  lb_handle_closed(handle->data);
}
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

/* t:ref(on): whether the timer keeps the loop running (default: yes). */
static int l_timer_ref(lua_State *L) {
  lb_timer *t = lb_check(L, 1, LB_TIMER);
  if (lua_toboolean(L, 2))
    uv_ref((uv_handle_t *)&t->timer);
  else
    uv_unref((uv_handle_t *)&t->timer);
  return 0;
}

static int l_timer_close(lua_State *L) {
  lb_timer *t = lb_check(L, 1, LB_TIMER);
  lb_handle_unanchor(L, &t->h);
  lb_handle_close(&t->h);
  return 0;
}

void lb_open_timer(lua_State *L) {
  static const luaL_Reg methods[] = {{"start", l_timer_start},
                                     {"stop", l_timer_stop},
                                     {"close", l_timer_close},
                                     {"ref", l_timer_ref},
                                     {NULL, NULL}};
  lb_newmetatable(L, LB_TIMER, methods, lb_handle_release, lb_handle_tostring);
  lua_pushcfunction(L, l_timer_new);
  lua_setfield(L, -2, "timer");
}
