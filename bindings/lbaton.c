/*
 * lbaton.c — the `baton.core` module: the loop, handle bookkeeping, errors,
 * signal names, and the entry points luaopen_baton_core / luaopen_baton.
 *
 * `baton.core` is the thin C layer; `baton` (scripts/baton/init.lua, embedded
 * at build time) is what scripts use. luaopen_baton is what lua5.4 calls for
 * `require "baton"` when it finds baton.so: it registers the embedded Lua
 * modules and runs the Lua layer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <lualib.h>

#include "lbaton.h"

#define LB_RUNTIME "baton.runtime"       /* registry: the runtime userdata */
#define LB_RUNTIME_MT "baton.runtime.mt" /* registry: its metatable */
#define LB_CBTHREAD "baton.cbthread"
#define LB_ONERROR "baton.onerror"
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

lb_runtime *lb_runtime_get(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, LB_RUNTIME) == LUA_TUSERDATA) {
    lb_runtime *rt = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return rt;
  }
  lua_pop(L, 1);
  lb_runtime *rt = lua_newuserdatauv(L, sizeof *rt, 0);
  memset(rt, 0, sizeof *rt - sizeof rt->readbuf);
  if (luaL_newmetatable(L, LB_RUNTIME_MT)) {
    lua_pushcfunction(L, lb_runtime_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if (lua_getfield(L, LUA_REGISTRYINDEX, LB_HOSTLOOP) == LUA_TLIGHTUSERDATA) {
    rt->loop = lua_touserdata(L, -1);
  } else {
    int err = uv_loop_init(&rt->own_loop);
    if (err < 0) luaL_error(L, "baton: cannot create the event loop: %s", bt_strerror(err));
    rt->loop = &rt->own_loop;
    rt->owns_loop = 1;
  }
  lua_pop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, LB_RUNTIME);
  rt->cbL = lua_newthread(L);
  lua_setfield(L, LUA_REGISTRYINDEX, LB_CBTHREAD);
  return rt;
}

void lb_set_loop(lua_State *L, uv_loop_t *loop) {
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
  if (h->prev) h->prev->next = h->next;
  else h->rt->handles = h->next;
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

int lb_handle_gc(lua_State *L, const char *tname) {
  lb_box *box = luaL_checkudata(L, 1, tname);
  lb_handle *h = box->h;
  if (h == NULL) return 0;
  box->h = NULL;
  h->collected = 1;
  if (h->rt) {
    luaL_unref(L, LUA_REGISTRYINDEX, h->cb_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, h->self_ref);
  }
  h->cb_ref = h->self_ref = LUA_NOREF;
  if (h->open) lb_handle_close(h); /* frees h once closed */
  else {
    lb_handle_unlink(h);
    free(h);
  }
  return 0;
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

void lb_call(lb_runtime *rt, lua_State *T, int nargs) {
  (void)rt;
  int base = lua_gettop(T) - nargs;
  lua_pushcfunction(T, lb_traceback);
  lua_insert(T, base);
  if (lua_pcall(T, nargs, 0, base) != LUA_OK) {
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
  }
  lua_settop(T, base - 1);
}

int lb_error(lua_State *L, int err, const char *what) {
  lua_pushnil(L);
  if (what)
    lua_pushfstring(L, "%s: %s (%s)", bt_err_name(err), bt_strerror(err), what);
  else
    lua_pushfstring(L, "%s: %s", bt_err_name(err), bt_strerror(err));
  lua_pushstring(L, bt_err_name(err));
  return 3;
}

/* ---- module functions ---------------------------------------------------------- */

static int l_run(lua_State *L) {
  static const char *const modes[] = {"default", "once", "nowait", NULL};
  static const uv_run_mode map[] = {UV_RUN_DEFAULT, UV_RUN_ONCE, UV_RUN_NOWAIT};
  int mode = luaL_checkoption(L, 1, "default", modes);
  lb_runtime *rt = lb_runtime_get(L);
  if (!rt->owns_loop)
    return luaL_error(L, "baton: the host runs the loop; wait from inside a task (baton.go)");
  if (rt->running)
    return luaL_error(L, "baton: cannot wait here: the loop is already running "
                         "(waiting calls must run inside a task: wrap the code in baton.go)");
  rt->running = 1;
  int alive = uv_run(rt->loop, map[mode]);
  rt->running = 0;
  lua_pushboolean(L, alive != 0 || uv_loop_alive(rt->loop));
  return 1;
}

static int l_stop(lua_State *L) {
  uv_stop(lb_runtime_get(L)->loop);
  return 0;
}

static int l_running(lua_State *L) {
  lb_runtime *rt = lb_runtime_get(L);
  lua_pushboolean(L, rt->running || !rt->owns_loop);
  return 1;
}

/* core.host_loop(): true when a host runs the loop (lb_set_loop), not baton. */
static int l_host_loop(lua_State *L) {
  lua_pushboolean(L, !lb_runtime_get(L)->owns_loop);
  return 1;
}

static int l_alive(lua_State *L) {
  lua_pushboolean(L, uv_loop_alive(lb_runtime_get(L)->loop));
  return 1;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

static int l_signum(lua_State *L) {
  if (lua_type(L, 1) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n >= 0 && n < NSIG) {
      lua_pushinteger(L, n);
      return 1;
    }
  } else {
    int n = bt_signal_number(luaL_checkstring(L, 1));
    if (n >= 0) {
      lua_pushinteger(L, n);
      return 1;
    }
  }
  lua_pushnil(L);
  return 1;
}

static int l_signame(lua_State *L) {
  const char *name = bt_signal_name((int)luaL_checkinteger(L, 1));
  if (name) lua_pushstring(L, name);
  else lua_pushnil(L);
  return 1;
}

static int l_errname(lua_State *L) {
  int err = (int)luaL_checkinteger(L, 1);
  if (err > 0) err = -err;
  lua_pushstring(L, bt_err_name(err));
  lua_pushstring(L, bt_strerror(err));
  return 2;
}

/* core.strerror(errno or "ENAME") -> the system's message for it. */
static int l_strerror(lua_State *L) {
  int err = 0;
  if (lua_type(L, 1) == LUA_TSTRING) {
    const char *name = lua_tostring(L, 1);
    for (int e = 1; e < 4096 && err == 0; e++)
      if (strcmp(bt_err_name(-e), name) == 0) err = -e;
    if (err == 0) return luaL_argerror(L, 1, "unknown errno name");
  } else {
    err = (int)luaL_checkinteger(L, 1);
    if (err > 0) err = -err;
  }
  lua_pushstring(L, bt_strerror(err));
  return 1;
}

static int l_lookpath(lua_State *L) {
  const char *file = luaL_checkstring(L, 1);
  const char *path = luaL_optstring(L, 2, getenv("PATH"));
  const char *cwd = luaL_optstring(L, 3, NULL);
  char out[4096];
  int err = bt_lookpath(file, path, cwd, out, sizeof out);
  if (err == 0 && lua_toboolean(L, 4) && strchr(file, '/')) {
    /* A path is taken as is by the lookup (the child resolves it after its
     * chdir); `which` checks it names an executable file, as LookPath does. */
    struct stat st;
    if (stat(out, &st) < 0) err = -errno;
    else if (!S_ISREG(st.st_mode)) err = -EACCES;
    else if (faccessat(AT_FDCWD, out, X_OK, AT_EACCESS) < 0) err = -errno;
  }
  if (err < 0) return lb_error(L, err, file);
  lua_pushstring(L, out);
  return 1;
}

static int l_fileno(lua_State *L) {
  luaL_Stream *s = luaL_testudata(L, 1, LUA_FILEHANDLE);
  if (s == NULL || s->closef == NULL || s->f == NULL) {
    lua_pushnil(L);
    return 1;
  }
  fflush(s->f);
  lua_pushinteger(L, fileno(s->f));
  return 1;
}

static int l_set_error_handler(lua_State *L) {
  if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, LB_ONERROR);
  return 0;
}

static int l_handles(lua_State *L) {
  lb_runtime *rt = lb_runtime_get(L);
  int n = 0;
  for (lb_handle *h = rt->handles; h; h = h->next)
    if (h->open && !h->closing) n++;
  lua_pushinteger(L, n);
  return 1;
}

extern char **environ;

/* core.environ() -> {"K=V", ...}: the process environment, as execve gets it. */
static int l_environ(lua_State *L) {
  lua_newtable(L);
  for (int i = 0; environ && environ[i]; i++) {
    lua_pushstring(L, environ[i]);
    lua_seti(L, -2, i + 1);
  }
  return 1;
}

static int l_cwd(lua_State *L) {
  char buf[4096];
  size_t len = sizeof buf;
  int err = uv_cwd(buf, &len);
  if (err < 0) return lb_error(L, err, "getcwd");
  lua_pushlstring(L, buf, len);
  return 1;
}

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

LB_EXPORT int luaopen_baton_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"run", l_run},         {"stop", l_stop},         {"running", l_running}, {"host_loop", l_host_loop},
      {"alive", l_alive},     {"now", l_now},           {"signum", l_signum},
      {"signame", l_signame}, {"errname", l_errname}, {"strerror", l_strerror},   {"lookpath", l_lookpath},
      {"fileno", l_fileno},   {"handles", l_handles},   {"getpid", l_getpid},
      {"environ", l_environ}, {"cwd", l_cwd},
      {"set_error_handler", l_set_error_handler},       {NULL, NULL}};
  lb_runtime_get(L);
  /* Writing to a pipe whose reader left must be an EPIPE error, not death. */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  luaL_newlib(L, funcs);
  lua_pushstring(L, BATON_VERSION_STRING);
  lua_setfield(L, -2, "version");
  lb_open_process(L);
  lb_open_stream(L);
  lb_open_timer(L);
  lb_open_sys(L);
  lb_open_signal(L);
  return 1;
}

/* ---- embedded Lua layer ------------------------------------------------------------ */

struct lb_embedded {
  const char *name, *chunkname, *code;
  size_t len;
};
extern const struct lb_embedded lb_embedded_lua[];

static int lb_load_embedded(lua_State *L) {
  const struct lb_embedded *m = lua_touserdata(L, lua_upvalueindex(1));
  if (luaL_loadbuffer(L, m->code, m->len, m->chunkname) != LUA_OK) return lua_error(L);
  lua_pushstring(L, m->name);
  lua_call(L, 1, 1);
  return 1;
}

void lb_preload(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_baton_core);
  lua_setfield(L, -2, "baton.core");
  for (const struct lb_embedded *m = lb_embedded_lua; m->name; m++) {
    lua_pushlightuserdata(L, (void *)m);
    lua_pushcclosure(L, lb_load_embedded, 1);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
}

LB_EXPORT int luaopen_baton(lua_State *L) {
  lb_preload(L);
  const struct lb_embedded *m = lb_embedded_lua;
  while (m->name && strcmp(m->name, "baton") != 0) m++;
  if (m->name == NULL) return luaL_error(L, "baton: the Lua layer is missing from this build");
  lua_pushlightuserdata(L, (void *)m);
  lua_pushcclosure(L, lb_load_embedded, 1);
  lua_call(L, 0, 1);
  return 1;
}
