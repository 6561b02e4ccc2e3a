/*
 * lloop.c — the event loop as `baton.core` shows it: running it (core.run,
 * stop, running, alive, host_loop), counting open handles, where errors in
 * callbacks go (core.set_error_handler), and core.defer for the next turn.
 *
 * When a host owns the loop (lb_set_loop), baton never runs it: core.run
 * refuses, and waits must happen inside tasks the host's loop drives.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "lbaton.h"

/* Ctrl-C during a blocking wait (plain lua5.4 with `require "baton"`): the
 * wait is in epoll, where lua.c's own handler, a hook that stops the next
 * Lua instruction, cannot reach. For the time of the run SIGINT gets a
 * handler that wakes the loop and stops it; the old handler comes back
 * after. Only async-signal-safe things happen in the handler. */
static uv_async_t *volatile lb_intr_async;
static volatile sig_atomic_t lb_intr_sig;

static void lb_on_sigint(int sig) {
  lb_intr_sig = sig;
  uv_async_t *a = lb_intr_async;
  if (a) uv_async_send(a);
}

static void lb_on_intr(uv_async_t *a) {
  if (lb_intr_sig) uv_stop(a->loop);
}

/* core.run([mode[, interruptible]]) -> alive, interrupted: mode "default",
 * "once" or "nowait", as uv_run; interruptible: a SIGINT ends the run. */
static int l_run(lua_State *L) {
  static const char *const modes[] = {"default", "once", "nowait", NULL};
  static const uv_run_mode map[] = {UV_RUN_DEFAULT, UV_RUN_ONCE, UV_RUN_NOWAIT};
  int mode = luaL_checkoption(L, 1, "default", modes);
  lb_runtime *rt = lb_runtime_get(L);
  int interruptible = lua_toboolean(L, 2) && !rt->owns_signals;
  if (!rt->owns_loop && !rt->luv_mode)
    return luaL_error(L, "baton: the host runs the loop; wait from inside a task (baton.go)");
  if (rt->running)
    return luaL_error(L, "baton: cannot wait here: the loop is already running "
                         "(waiting calls must run inside a task: wrap the code in baton.go)");
  if (rt->luv_mode && *rt->luv_mode >= 0)
    return luaL_error(L, "baton: cannot wait here: luv's uv.run() is running the loop "
                         "(waiting calls must run inside a task: wrap the code in baton.go)");
  struct sigaction old;
  if (interruptible && !rt->intr_ready && uv_async_init(rt->loop, &rt->intr, lb_on_intr) == 0) {
    uv_unref((uv_handle_t *)&rt->intr);
    rt->intr_ready = 1;
  }
  interruptible = interruptible && rt->intr_ready;
  if (interruptible && sigaction(SIGINT, NULL, &old) == 0 && old.sa_handler == SIG_IGN)
    interruptible = 0; /* SIGINT ignored (a daemon, nohup): it stays so */
  if (interruptible) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = lb_on_sigint;
    sigemptyset(&sa.sa_mask);
    lb_intr_sig = 0;
    lb_intr_async = &rt->intr;
    sigaction(SIGINT, &sa, &old);
  }
  /* luv's uv.run() from a callback must refuse, as it does inside its own. */
  int *luv_mode = rt->luv_mode;
  if (luv_mode) *luv_mode = (int)map[mode];
  rt->running = 1;
  int alive = uv_run(rt->loop, map[mode]);
  rt->running = 0;
  if (luv_mode) *luv_mode = -1;
  int interrupted = 0;
  if (interruptible) {
    sigaction(SIGINT, &old, NULL);
    lb_intr_async = NULL;
    interrupted = lb_intr_sig != 0;
  }
  lua_pushboolean(L, alive != 0 || uv_loop_alive(rt->loop));
  lua_pushboolean(L, interrupted);
  return 2;
}

static int l_stop(lua_State *L) {
  uv_stop(lb_runtime_get(L)->loop);
  return 0;
}

/* core.running(): true inside uv_run, or always when a host runs the loop; with
 * luv's loop, while either luv's uv.run or baton runs it. */
static int l_running(lua_State *L) {
  lb_runtime *rt = lb_runtime_get(L);
  if (rt->luv_mode)
    lua_pushboolean(L, rt->running || *rt->luv_mode >= 0);
  else
    lua_pushboolean(L, rt->running || !rt->owns_loop);
  return 1;
}

/* core.host_loop(): true when a host runs the loop (lb_set_loop), not baton;
 * "luv" when baton shares the loop with luv (either was required first), and
 * both may run it. */
static int l_host_loop(lua_State *L) {
  lb_runtime *rt = lb_runtime_get(L);
  if (rt->luv_mode)
    lua_pushliteral(L, "luv");
  else
    lua_pushboolean(L, !rt->owns_loop);
  return 1;
}

static int l_alive(lua_State *L) {
  lua_pushboolean(L, uv_loop_alive(lb_runtime_get(L)->loop));
  return 1;
}

/* core.handles() -> how many of baton's handles are open (leak checks). */
static int l_handles(lua_State *L) {
  lb_runtime *rt = lb_runtime_get(L);
  int n = 0;
  for (lb_handle *h = rt->handles; h; h = h->next)
    if (h->open && !h->closing) n++;
  lua_pushinteger(L, n);
  return 1;
}

/* core.set_error_handler(fn | nil): fn(traceback) for an error raised by a
 * callback; without one, lb_call prints it to stderr. */
static int l_set_error_handler(lua_State *L) {
  if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, LB_ONERROR);
  return 0;
}

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

void lb_open_loop(lua_State *L) {
  static const luaL_Reg funcs[] = {{"run", l_run},
                                   {"stop", l_stop},
                                   {"running", l_running},
                                   {"host_loop", l_host_loop},
                                   {"alive", l_alive},
                                   {"handles", l_handles},
                                   {"set_error_handler", l_set_error_handler},
                                   {"defer", l_defer},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
