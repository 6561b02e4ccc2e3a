/*
 * lreexec.c — the primitives of baton.reexec over core/src/reexec.c:
 * core.memfd and core.read_fd (the state handed over), core.cloexec,
 * core.reexec (the exec itself, keeping the fds named), and for the new
 * image core.reexec_claim, core.reexec_unclaim and core.reexec_resume. The
 * policy (what is handed over, who adopts it) is scripts/baton/reexec.lua.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "lbaton.h"

/* core.memfd(name, data) -> fd (close-on-exec) | nil, msg, code */
static int l_memfd(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  int fd = bt_memfd(name, data, len);
  if (fd < 0) return lb_error(L, fd, "memfd");
  lua_pushinteger(L, fd);
  return 1;
}

/* core.read_fd(fd) -> string (all of it, from offset 0) | nil, msg, code */
static int l_read_fd(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  char *buf;
  size_t len;
  int err = bt_fd_read_all(fd, &buf, &len);
  if (err < 0) return lb_error(L, err, "read");
  lua_pushlstring(L, buf, len);
  free(buf);
  return 1;
}

/* core.cloexec(fd, on) -> was (boolean) | nil, msg, code */
static int l_cloexec(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  luaL_checkany(L, 2);
  int r = bt_fd_cloexec(fd, lua_toboolean(L, 2));
  if (r < 0) return lb_error(L, r, "fcntl");
  lua_pushboolean(L, r);
  return 1;
}

/* core.reexec(path, argv, env, keep) -> nil, msg, code (returns only on
 * failure: every fd flag and the signal mask as they were) */
static int l_reexec(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_checktype(L, 4, LUA_TTABLE);
  /* The strings stay referenced by the tables (arguments, on the stack). */
  lua_Integer na = luaL_len(L, 2), ne = luaL_len(L, 3), nk = luaL_len(L, 4);
  luaL_argcheck(L, na > 0, 2, "argv is empty");
  char **argv = lua_newuserdatauv(L, (size_t)(na + 1) * sizeof *argv, 0);
  char **envp = lua_newuserdatauv(L, (size_t)(ne + 1) * sizeof *envp, 0);
  int *keep = lua_newuserdatauv(L, (size_t)(nk + 1) * sizeof *keep, 0);
  for (lua_Integer i = 1; i <= na; i++) {
    if (lua_geti(L, 2, i) != LUA_TSTRING) return luaL_argerror(L, 2, "strings expected");
    argv[i - 1] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  argv[na] = NULL;
  for (lua_Integer i = 1; i <= ne; i++) {
    if (lua_geti(L, 3, i) != LUA_TSTRING) return luaL_argerror(L, 3, "strings expected");
    envp[i - 1] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  envp[ne] = NULL;
  for (lua_Integer i = 1; i <= nk; i++) {
    int isnum;
    lua_geti(L, 4, i);
    keep[i - 1] = (int)lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum) return luaL_argerror(L, 4, "fds expected");
  }
  fflush(NULL); /* what Lua and C buffered is written before the image goes */
  int err = bt_reexec(lb_runtime_get(L)->loop, path, argv, envp, keep, (size_t)nk);
  return lb_error(L, err, path);
}

/* core.readlink(path) -> target | nil, msg, code */
static int l_readlink(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char buf[4096];
  ssize_t n = readlink(path, buf, sizeof buf - 1);
  if (n < 0) return lb_error(L, -errno, path);
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

/* core.reexec_claim(pid) -> true | nil, msg, code */
static int l_reexec_claim(lua_State *L) {
  int err = bt_reexec_claim((pid_t)luaL_checkinteger(L, 1));
  if (err < 0) return lb_error(L, err, "claim");
  lua_pushboolean(L, 1);
  return 1;
}

/* core.reexec_unclaim(pid) -> boolean (it was claimed) */
static int l_reexec_unclaim(lua_State *L) {
  lua_pushboolean(L, bt_reexec_unclaim((pid_t)luaL_checkinteger(L, 1)) == 0);
  return 1;
}

/* core.reexec_take() -> fd | nil: the state a previous image handed over
 * (the fd in BATON_REEXEC), the variable removed from the environment so
 * that no child ever sees it. nil when there is none (or not an open fd). */
static int l_reexec_take(lua_State *L) {
  const char *v = getenv("BATON_REEXEC");
  if (v == NULL) return 0;
  char *end;
  long fd = strtol(v, &end, 10);
  int ok = *v && *end == '\0' && fd > 2 && fd < (1L << 30);
  unsetenv("BATON_REEXEC");
  if (!ok || bt_fd_cloexec((int)fd, 1) < 0) return 0;
  lua_pushinteger(L, fd);
  return 1;
}

/* core.reexec_resume(): unblock the signals the previous image held back. */
static int l_reexec_resume(lua_State *L) {
  (void)L;
  bt_reexec_signals_resume();
  return 0;
}

void lb_open_reexec(lua_State *L) {
  static const luaL_Reg funcs[] = {{"memfd", l_memfd},
                                   {"readlink", l_readlink},
                                   {"read_fd", l_read_fd},
                                   {"cloexec", l_cloexec},
                                   {"reexec", l_reexec},
                                   {"reexec_claim", l_reexec_claim},
                                   {"reexec_unclaim", l_reexec_unclaim},
                                   {"reexec_resume", l_reexec_resume},
                                   {"reexec_take", l_reexec_take},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
