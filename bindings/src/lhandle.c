/*
 * lhandle.c — the runtime and the life of every handle of `baton.core`.
 *
 * The runtime is the per-state record (the loop, the callback thread, the list
 * of open handles), created on first use and closed with the Lua state. A
 * handle is a malloc'd struct starting with an lb_handle, pointed at by a
 * small userdata: lb_new makes both, lb_check gets the struct back, and
 * lb_handle_gc lets go of it. Callbacks from libuv reach Lua through
 * lb_push_cb and lb_call, which never let an error escape into libuv.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lbaton.h"

#ifdef BATON_WITH_LUV
#include <dlfcn.h>
#include <luv/luv.h>
#endif

#define LB_RUNTIME "baton.runtime"         /* registry: the runtime userdata */
#define LB_RUNTIME_MT "baton.core.runtime" /* registry: its metatable */
#define LB_CBTHREAD "baton.cbthread"
#define LB_HOSTLOOP "baton.hostloop"

/* ---- runtime ---------------------------------------------------------------- */

static void lb_close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static int lb_runtime_gc(lua_State *L) {
  lb_runtime *rt = luaL_checkudata(L, 1, LB_RUNTIME_MT);
  if (rt->loop == NULL) return 0;
  /* Close what is still open; the close callbacks free the structs. */
  if (rt->spin) uv_close((uv_handle_t *)rt->spin, (uv_close_cb)free);
  rt->spin = NULL;
  if (rt->defer) uv_close((uv_handle_t *)rt->defer, (uv_close_cb)free);
  rt->defer = NULL;
  lb_handle *h = rt->handles;
  rt->handles = NULL;
  while (h) {
    lb_handle *next = h->next;
    h->prev = h->next = NULL;
    h->rt = NULL;
    h->collected = 1;
    lb_handle_close(h);
    h = next;
  }
  if (rt->intr_ready && !rt->owns_loop) uv_close((uv_handle_t *)&rt->intr, NULL);
  rt->intr_ready = 0;
  if (rt->owns_loop) {
    /* The loop is ours: whatever else is still open on it (the runner's
     * signal wakeup, say) is closed too, or the loop could not be. */
    uv_walk(rt->loop, lb_close_any, NULL);
    /* A uv_stop made while the loop was not running (an interrupt of busy
     * code) would end the next run at once: the first run clears it. */
    uv_run(rt->loop, UV_RUN_NOWAIT);
    uv_run(rt->loop, UV_RUN_DEFAULT);
    uv_loop_close(rt->loop);
  }
  rt->loop = NULL;
  return 0;
}

static int lb_runtime_tostring(lua_State *L) {
  lb_runtime *rt = luaL_checkudata(L, 1, LB_RUNTIME_MT);
  if (rt->loop == NULL)
    lua_pushliteral(L, LB_RUNTIME_MT " (closed)");
  else
    lua_pushfstring(L, LB_RUNTIME_MT " (%p)", (void *)rt);
  return 1;
}

int lb_runtime_idle_start(lb_runtime *rt, uv_idle_t **slot, uv_idle_cb cb, int ref) {
  if (*slot == NULL) {
    uv_idle_t *idle = malloc(sizeof *idle);
    if (idle == NULL) return UV_ENOMEM;
    int err = uv_idle_init(rt->loop, idle);
    if (err < 0) {
      free(idle);
      return err;
    }
    idle->data = rt;
    if (!ref) uv_unref((uv_handle_t *)idle);
    *slot = idle;
  }
  if (!uv_is_active((uv_handle_t *)*slot)) uv_idle_start(*slot, cb);
  return 0;
}

/*
 * luv (the ecosystem's libuv binding) in the same state: baton and luv share
 * one loop whichever is required first, so that luv's uv.run() drives
 * baton's tasks and a baton wait outside any task drives luv's handles.
 *
 * luv keeps its context, a luv_ctx_t (public in luv.h), as a full userdata
 * at registry["luv_context"]; its `loop` is what luv runs, and `mode` is -1
 * except while the loop runs. luaopen_luv makes a loop of its own only when
 * that context has none yet: luv_set_loop(L, loop), luv's documented call
 * "before luaopen_luv", gives it one.
 *
 * - luv first: baton takes luv's loop (lb_luv_loop). The loop stays luv's:
 *   baton never closes it, and at lua_close baton's handles (created after
 *   luv's loop, so finalized before it) are closing when luv's finalizer
 *   closes what is left and runs the loop to the end.
 * - baton first: baton made its own loop, and puts a searcher in front of
 *   package.searchers that, for "luv" while luv has no loop yet, finds luv's
 *   loader with the other searchers, then looks up luv_set_loop in the
 *   library that loader came from (or in the program) and calls it with
 *   baton's loop just before luaopen_luv runs (lb_luv_searcher). The loop
 *   stays baton's: luv never closes a loop it was given, and at lua_close
 *   luv's handles (created after baton's runtime, so finalized before it)
 *   are closing when baton's finalizer closes what is left and runs the loop
 *   to the end. When luv_set_loop cannot be found (a luv linked into the
 *   program without exporting it), `require "luv"` raises an error saying to
 *   require luv first, rather than leave two loops that never run together.
 *
 * While baton runs the loop it sets luv's `mode` too, so that luv's uv.run()
 * called from a callback refuses ("loop already running") instead of running
 * the loop inside itself. Without luv.h at build time, luv is not looked for
 * and each keeps its own loop.
 */
#ifdef BATON_WITH_LUV
static luv_ctx_t *lb_luv_context(lua_State *L) {
  luv_ctx_t *ctx = NULL;
  if (lua_getfield(L, LUA_REGISTRYINDEX, "luv_context") == LUA_TUSERDATA &&
      lua_rawlen(L, -1) >= sizeof(luv_ctx_t))
    ctx = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return ctx;
}
#endif

static int lb_luv_loop(lua_State *L, lb_runtime *rt) {
#ifdef BATON_WITH_LUV
  luv_ctx_t *ctx = lb_luv_context(L);
  if (ctx == NULL || ctx->loop == NULL) return 0;
  rt->loop = ctx->loop;
  rt->luv_mode = &ctx->mode;
  return 1;
#else
  (void)L;
  (void)rt;
  return 0;
#endif
}

#ifdef BATON_WITH_LUV
typedef void (*lb_luv_set_loop_fn)(lua_State *L, uv_loop_t *loop);

/* The loader lb_luv_searcher returns: upvalue 1 luv's own loader, upvalue 2
 * a userdata holding luv_set_loop. Arguments: the module name and the extra
 * value of luv's searcher, passed on to luv's loader. */
static int lb_luv_load(lua_State *L) {
  lb_luv_set_loop_fn set_loop = *(lb_luv_set_loop_fn *)lua_touserdata(L, lua_upvalueindex(2));
  lb_runtime *rt = lb_runtime_get(L);
  luv_ctx_t *ctx = lb_luv_context(L);
  if (rt->loop != NULL && (ctx == NULL || ctx->loop == NULL)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    set_loop(lua_tothread(L, -1), rt->loop); /* luv calls back on the main thread */
    lua_pop(L, 1);
  }
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 2, 1);
  ctx = lb_luv_context(L);
  if (ctx != NULL && rt->loop != NULL && ctx->loop == rt->loop) rt->luv_mode = &ctx->mode;
  return 1;
}

static int lb_luv_refuse(lua_State *L) {
  return luaL_error(L, "baton: luv cannot share baton's loop (no luv_set_loop to give it): "
                       "require \"luv\" before \"baton\"");
}

/* package.searchers[1] while baton runs its own loop (see above): nil for
 * every module but "luv", and for "luv" once luv has a loop. */
static int lb_luv_searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  if (strcmp(name, "luv") != 0) return 0;
  lua_getfield(L, LUA_REGISTRYINDEX, LB_RUNTIME);
  lb_runtime *rt = luaL_testudata(L, -1, LB_RUNTIME_MT);
  lua_pop(L, 1);
  luv_ctx_t *ctx = lb_luv_context(L);
  if (rt == NULL || rt->loop == NULL || !rt->owns_loop || (ctx != NULL && ctx->loop != NULL))
    return 0;
  /* luv's loader, from the searchers after this one. */
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, LUA_LOADLIBNAME) != LUA_TTABLE ||
      lua_getfield(L, -1, "searchers") != LUA_TTABLE)
    return 0;
  int searchers = lua_gettop(L);
  for (lua_Integer i = 1;; i++) {
    if (lua_geti(L, searchers, i) == LUA_TNIL) return 0; /* not found: require says why */
    if (lua_tocfunction(L, -1) == lb_luv_searcher) {
      lua_pop(L, 1);
      continue;
    }
    lua_pushstring(L, name);
    lua_call(L, 1, 2);
    if (lua_isfunction(L, -2)) break;
    lua_pop(L, 2);
  }
  int loader = lua_gettop(L) - 1, extra = loader + 1;
  /* luv_set_loop: in the library lua5.4's C searcher just loaded (extra is its
   * path), or else in the program. */
  lb_luv_set_loop_fn set_loop = NULL;
  void *lib = lua_type(L, extra) == LUA_TSTRING
                  ? dlopen(lua_tostring(L, extra), RTLD_NOW | RTLD_NOLOAD)
                  : NULL;
  if (lib != NULL) {
    *(void **)&set_loop = dlsym(lib, "luv_set_loop");
    dlclose(lib); /* (a reference more, just taken: the library stays loaded) */
  }
  if (set_loop == NULL) *(void **)&set_loop = dlsym(RTLD_DEFAULT, "luv_set_loop");
  if (set_loop == NULL) {
    lua_pushcfunction(L, lb_luv_refuse);
  } else {
    lua_pushvalue(L, loader);
    *(lb_luv_set_loop_fn *)lua_newuserdatauv(L, sizeof set_loop, 0) = set_loop;
    lua_pushcclosure(L, lb_luv_load, 2);
  }
  lua_pushvalue(L, extra);
  return 2;
}

/* Put lb_luv_searcher first in package.searchers (when there is a package
 * library). */
static void lb_luv_watch(lua_State *L) {
  int top = lua_gettop(L);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, LUA_LOADLIBNAME) == LUA_TTABLE &&
      lua_getfield(L, -1, "searchers") == LUA_TTABLE) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = n; i >= 1; i--) {
      lua_rawgeti(L, -1, i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, lb_luv_searcher);
    lua_rawseti(L, -2, 1);
  }
  lua_settop(L, top);
}
#endif

lb_runtime *lb_runtime_get(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, LB_RUNTIME) == LUA_TUSERDATA) {
    lb_runtime *rt = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return rt;
  }
  lua_pop(L, 1);
  lb_runtime *rt = lua_newuserdatauv(L, sizeof *rt, 0);
  memset(rt, 0, sizeof *rt - sizeof rt->readbuf);
  lb_newmetatable(L, LB_RUNTIME_MT, NULL, lb_runtime_gc, lb_runtime_tostring);
  luaL_setmetatable(L, LB_RUNTIME_MT);
  if (lua_getfield(L, LUA_REGISTRYINDEX, LB_HOSTLOOP) == LUA_TLIGHTUSERDATA) {
    rt->loop = lua_touserdata(L, -1);
  } else if (lb_luv_loop(L, rt)) {
    /* luv was loaded first: its loop is shared (see lb_luv_loop). */
  } else {
    int err = uv_loop_init(&rt->own_loop);
    if (err < 0) luaL_error(L, "baton: cannot create the event loop: %s", bt_strerror(err));
    rt->loop = &rt->own_loop;
    rt->owns_loop = 1;
#ifdef BATON_WITH_LUV
    lb_luv_watch(L);
#endif
  }
  lua_pop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, LB_RUNTIME);
  rt->cbL = lua_newthread(L);
  lua_setfield(L, LUA_REGISTRYINDEX, LB_CBTHREAD);
  return rt;
}

void lb_set_loop(lua_State *L, uv_loop_t *loop) {
  if (loop == NULL)
    lua_pushnil(L); /* (a NULL light userdata would be taken for a loop) */
  else
    lua_pushlightuserdata(L, loop);
  lua_setfield(L, LUA_REGISTRYINDEX, LB_HOSTLOOP);
}

/* ---- handles ---------------------------------------------------------------- */

void lb_handle_init(lua_State *L, lb_handle *h, void (*close)(lb_handle *)) {
  lb_runtime *rt = lb_runtime_get(L);
  h->rt = rt;
  h->self_ref = LUA_NOREF;
  h->cb_ref = LUA_NOREF;
  h->collected = 0;
  h->open = 0;
  h->close = close;
  h->prev = NULL;
  h->next = rt->handles;
  if (rt->handles) rt->handles->prev = h;
  rt->handles = h;
}

static void lb_handle_unlink(lb_handle *h) {
  /* Unlinked already (closed, then collected): a second unlink must not touch
   * the list, whose head it would otherwise reset. */
  if (h->rt == NULL || (h->prev == NULL && h->rt->handles != h)) return;
  if (h->prev)
    h->prev->next = h->next;
  else
    h->rt->handles = h->next;
  if (h->next) h->next->prev = h->prev;
  h->prev = h->next = NULL;
}

void lb_handle_anchor(lua_State *L, lb_handle *h, int ud_index) {
  if (h->self_ref != LUA_NOREF) return;
  lua_pushvalue(L, ud_index);
  h->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void lb_handle_unanchor(lua_State *L, lb_handle *h) {
  luaL_unref(L, LUA_REGISTRYINDEX, h->self_ref);
  h->self_ref = LUA_NOREF;
}

void lb_handle_set_cb(lua_State *L, lb_handle *h, int fn_index) {
  luaL_unref(L, LUA_REGISTRYINDEX, h->cb_ref);
  h->cb_ref = LUA_NOREF;
  if (!lua_isnoneornil(L, fn_index)) {
    lua_pushvalue(L, fn_index);
    h->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

void lb_handle_close(lb_handle *h) {
  if (!h->open || h->closing) return;
  h->closing = 1;
  /* No callback comes after a close: let go of it, or a callback that refers
   * to its own handle (most do) keeps both alive through the registry. */
  if (h->rt && h->cb_ref != LUA_NOREF) {
    luaL_unref(h->rt->cbL, LUA_REGISTRYINDEX, h->cb_ref);
    h->cb_ref = LUA_NOREF;
  }
  h->close(h);
}

void lb_handle_closed(lb_handle *h) {
  h->open = 0;
  lb_handle_unlink(h);
  if (h->collected) free(h);
}

typedef struct {
  lb_handle *h;
} lb_box;

void *lb_new(lua_State *L, size_t size, const char *tname, void (*close)(lb_handle *)) {
  lb_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->h = NULL;
  luaL_setmetatable(L, tname);
  lb_handle *h = calloc(1, size);
  if (h == NULL) luaL_error(L, "baton: out of memory");
  lb_handle_init(L, h, close);
  box->h = h;
  return h;
}

void *lb_check(lua_State *L, int idx, const char *tname) {
  lb_box *box = luaL_checkudata(L, idx, tname);
  if (box->h == NULL) luaL_error(L, "baton: %s used after release", tname);
  return box->h;
}

/* __gc and __close of every handle type (upvalue 1: the type name): the
 * userdata lets go of its struct, which is freed now, or once its uv handle
 * has closed. A second call finds nothing left to do. */
int lb_handle_release(lua_State *L) {
  lb_box *box = luaL_checkudata(L, 1, lua_tostring(L, lua_upvalueindex(1)));
  lb_handle *h = box->h;
  if (h == NULL) return 0;
  box->h = NULL;
  h->collected = 1;
  if (h->rt) {
    luaL_unref(L, LUA_REGISTRYINDEX, h->cb_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, h->self_ref);
  }
  h->cb_ref = h->self_ref = LUA_NOREF;
  if (h->open)
    lb_handle_close(h); /* frees h once closed */
  else {
    lb_handle_unlink(h);
    free(h);
  }
  return 0;
}

/* __tostring of every handle type (upvalue 1: the type name), as liolib's
 * "file (0x...)" and "file (closed)". */
int lb_handle_tostring(lua_State *L) {
  const char *tname = lua_tostring(L, lua_upvalueindex(1));
  lb_box *box = luaL_checkudata(L, 1, tname);
  if (box->h == NULL || !box->h->open || box->h->closing)
    lua_pushfstring(L, "%s (closed)", tname);
  else
    lua_pushfstring(L, "%s (%p)", tname, (void *)box);
  return 1;
}

void lb_newmetatable(lua_State *L, const char *tname, const luaL_Reg *methods,
                     lua_CFunction release, lua_CFunction tostring) {
  luaL_newmetatable(L, tname); /* sets __name; an existing one is updated */
  if (methods) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pushstring(L, tname);
  lua_pushcclosure(L, release, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__gc");
  lua_setfield(L, -2, "__close");
  lua_pushstring(L, tname);
  lua_pushcclosure(L, tostring, 1);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}

/* ---- callbacks ---------------------------------------------------------------- */

lua_State *lb_push_cb(lb_handle *h) {
  if (h->rt == NULL || h->cb_ref == LUA_NOREF) return NULL;
  lua_State *T = h->rt->cbL;
  lua_rawgeti(T, LUA_REGISTRYINDEX, h->cb_ref);
  return T;
}

int lb_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int lb_pcall(lb_runtime *rt, lua_State *T, int nargs, int nresults) {
  (void)rt;
  int base = lua_gettop(T) - nargs;
  lua_pushcfunction(T, lb_traceback);
  lua_insert(T, base);
  if (lua_pcall(T, nargs, nresults, base) != LUA_OK) {
    if (lua_getfield(T, LUA_REGISTRYINDEX, LB_ONERROR) == LUA_TFUNCTION) {
      lua_pushvalue(T, -2);
      if (lua_pcall(T, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "baton: error in error handler: %s\n", lua_tostring(T, -1));
        lua_pop(T, 1);
      }
    } else {
      lua_pop(T, 1);
      fprintf(stderr, "baton: error in callback: %s\n", luaL_tolstring(T, -1, NULL));
      lua_pop(T, 1);
    }
    lua_settop(T, base - 1);
    return 0;
  }
  lua_remove(T, base); /* the message handler */
  return 1;
}

void lb_call(lb_runtime *rt, lua_State *T, int nargs) {
  int base = lua_gettop(T) - nargs - 1;
  if (lb_pcall(rt, T, nargs, 0)) lua_settop(T, base);
}
