/*
 * lnotify.c — readiness notifications (core.notify_listen, core.sd_notify)
 * and core.proc_stat, over core/src/notify.c.
 *
 * A listener calls fn(pid, text, fds) from the loop for each datagram; the
 * fds it did not keep (fn returned true) are closed when fn returns, even
 * after an error in fn, so a sender waiting on a barrier is never held up.
 * An open listener anchors its userdata and keeps the loop alive until
 * :ref(false) or :close().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "lbaton.h"

#define LB_NOTIFY "baton.core.notify"

typedef struct {
  lb_handle h;
  bt_notify_t n;
} lb_notify;

static void lb_notify_closed(bt_notify_t *n) {
  lb_handle_closed(n->data);
}
static void lb_notify_close(lb_handle *h) {
  bt_notify_close(&((lb_notify *)h)->n, lb_notify_closed);
}

static void lb_on_notify(bt_notify_t *n, const bt_notify_msg_t *msg) {
  lb_notify *ln = n->data;
  lua_State *T = lb_push_cb(&ln->h);
  if (T == NULL) return; /* the core closes the fds */
  int base = lua_gettop(T) - 1;
  if (msg->pid > 0)
    lua_pushinteger(T, msg->pid);
  else
    lua_pushnil(T);
  lua_pushlstring(T, msg->text, msg->len);
  lua_createtable(T, msg->nfds, 0);
  for (int i = 0; i < msg->nfds; i++) {
    lua_pushinteger(T, msg->fds[i]);
    lua_rawseti(T, -2, i + 1);
  }
  if (lb_pcall(ln->h.rt, T, 3, 1)) {
    /* Kept: Lua owns them now (core.close). */
    if (lua_toboolean(T, -1))
      for (int i = 0; i < msg->nfds; i++)
        msg->fds[i] = -1;
  }
  lua_settop(T, base);
}

/* core.notify_listen(path, fn[, fd]) -> listener | nil, msg, code. fn(pid, text,
 * fds) from the loop per datagram (`fd`: a socket bound at `path` already,
 * handed over by a re-exec, which the listener owns from now on): pid from its credentials (nil
 * when absent), fds a table of the fds that came with it; they are closed when fn returns unless it
 * returns true. */
static int l_notify_listen(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int fd = (int)luaL_optinteger(L, 3, -1);
  lb_notify *ln = lb_new(L, sizeof *ln, LB_NOTIFY, lb_notify_close);
  ln->n.data = ln;
  int err = fd >= 0 ? bt_notify_open_fd(ln->h.rt->loop, &ln->n, fd, path, lb_on_notify)
                    : bt_notify_open(ln->h.rt->loop, &ln->n, path, lb_on_notify);
  if (err < 0) return lb_error(L, err, path);
  ln->h.open = 1;
  lb_handle_set_cb(L, &ln->h, 2);
  lb_handle_anchor(L, &ln->h, lua_gettop(L));
  return 1;
}

static int l_notify_close(lua_State *L) {
  lb_notify *ln = lb_check(L, 1, LB_NOTIFY);
  lb_handle_unanchor(L, &ln->h);
  lb_handle_close(&ln->h);
  return 0;
}

/* listener:ref(on): whether it keeps the loop running (default: yes). */
static int l_notify_ref(lua_State *L) {
  lb_notify *ln = lb_check(L, 1, LB_NOTIFY);
  luaL_checkany(L, 2);
  if (ln->h.open && !ln->h.closing) bt_notify_ref(&ln->n, lua_toboolean(L, 2));
  return 0;
}

/* __index: the methods, and `path` (as given; it stays readable after close). */
static int l_notify_index(lua_State *L) {
  const char *key = lua_tostring(L, 2);
  if (key && strcmp(key, "path") == 0) {
    lb_notify *ln = lb_check(L, 1, LB_NOTIFY);
    lua_pushstring(L, ln->n.path);
    return 1;
  }
  if (key && strcmp(key, "fd") == 0) { /* (-1 once closed) */
    lb_notify *ln = lb_check(L, 1, LB_NOTIFY);
    lua_pushinteger(L, ln->h.open && !ln->h.closing ? ln->n.fd : -1);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

/* core.sd_notify(state[, path[, fds]]) -> true (sent) | false (no
 * NOTIFY_SOCKET: nothing to do) | nil, msg, code. To `path`, or to
 * $NOTIFY_SOCKET when nil. */
static int l_sd_notify(lua_State *L) {
  const char *state = luaL_checkstring(L, 1);
  const char *path = luaL_optstring(L, 2, NULL);
  int fds[BT_NOTIFY_MAX_FDS];
  int nfds = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 3);
    luaL_argcheck(L, n <= BT_NOTIFY_MAX_FDS, 3, "too many fds");
    for (lua_Integer i = 1; i <= n; i++) {
      lua_geti(L, 3, i);
      int isnum;
      lua_Integer fd = lua_tointegerx(L, -1, &isnum);
      if (!isnum || fd < 0 || fd > 0x7fffffff)
        return luaL_argerror(L, 3, lua_pushfstring(L, "fds[%d] must be an fd", (int)i));
      fds[nfds++] = (int)fd;
      lua_pop(L, 1);
    }
  }
  int r = bt_sd_notify(path, state, fds, nfds);
  if (r < 0) return lb_error(L, r, path ? path : "NOTIFY_SOCKET");
  lua_pushboolean(L, r > 0);
  return 1;
}

/* core.proc_stat(pid) -> {pid=, ppid=, pgid=, sid=, state=, start=, comm=} | nil, msg, code */
static int l_proc_stat(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  bt_proc_stat_t st;
  int err = pid > 0 && pid <= 0x7fffffff ? bt_proc_stat((pid_t)pid, &st) : -EINVAL;
  if (err < 0) return lb_error(L, err, lua_pushfstring(L, "pid %I", pid));
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, st.pid);
  lua_setfield(L, -2, "pid");
  lua_pushinteger(L, st.ppid);
  lua_setfield(L, -2, "ppid");
  lua_pushinteger(L, st.pgid);
  lua_setfield(L, -2, "pgid");
  lua_pushinteger(L, st.sid);
  lua_setfield(L, -2, "sid");
  lua_pushlstring(L, &st.state, 1);
  lua_setfield(L, -2, "state");
  lua_pushinteger(L, (lua_Integer)st.start);
  lua_setfield(L, -2, "start");
  lua_pushstring(L, st.comm);
  lua_setfield(L, -2, "comm");
  return 1;
}

void lb_open_notify(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"close", l_notify_close}, {"ref", l_notify_ref}, {NULL, NULL}};
  lb_newmetatable(L, LB_NOTIFY, methods, lb_handle_release, lb_handle_tostring);
  /* `path` beside the methods: __index becomes a function over them. */
  luaL_getmetatable(L, LB_NOTIFY);
  lua_getfield(L, -1, "__index");
  lua_pushcclosure(L, l_notify_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  static const luaL_Reg funcs[] = {{"notify_listen", l_notify_listen},
                                   {"sd_notify", l_sd_notify},
                                   {"proc_stat", l_proc_stat},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
