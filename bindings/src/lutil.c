/*
 * lutil.c — the error tuple, and the small lookups of `baton.core` that own
 * no handle: the clock, signal and errno names, PATH lookup, the fd of a Lua
 * file, the environment, the working directory, the pid, the peak RSS.
 *
 * lb_error is the one way an operational failure reaches Lua: nil, then
 * "ENAME: message (context)", then "ENAME" (luv's shape). Misuse (a wrong
 * type, a bad value) raises instead, naming the argument.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <lualib.h>

#include "lbaton.h"

int lb_error(lua_State *L, int err, const char *what) {
  lua_pushnil(L);
  if (what)
    lua_pushfstring(L, "%s: %s (%s)", bt_err_name(err), bt_strerror(err), what);
  else
    lua_pushfstring(L, "%s: %s", bt_err_name(err), bt_strerror(err));
  lua_pushstring(L, bt_err_name(err));
  return 3;
}

/* core.now() -> seconds from an arbitrary point, monotonic */
static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

/* core.signum(name or number) -> number | nil */
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

/* core.signame(number) -> "SIGTERM" | nil */
static int l_signame(lua_State *L) {
  const char *name = bt_signal_name((int)luaL_checkinteger(L, 1));
  if (name)
    lua_pushstring(L, name);
  else
    lua_pushnil(L);
  return 1;
}

/* core.scan_lines(s, max) -> n, last, long: how many newlines `s` holds,
 * the position of the last one (0: none), and whether a line (the
 * unfinished tail included) is longer than `max` bytes. memchr instead of
 * a find per line: the logs' hot path (baton.logs). */
static int l_scan_lines(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_Integer max = luaL_checkinteger(L, 2);
  const char *p = s, *end = s + len, *last = NULL;
  lua_Integer n = 0;
  int long_line = 0;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (nl == NULL) break;
    if (nl - p > max) long_line = 1;
    n++;
    last = nl;
    p = nl + 1;
  }
  if (end - p > max) long_line = 1;
  lua_pushinteger(L, n);
  lua_pushinteger(L, last ? (lua_Integer)(last - s) + 1 : 0);
  lua_pushboolean(L, long_line);
  return 3;
}

/* core.errname(errno, either sign) -> "ENOENT", "no such file or directory" */
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

/* core.lookpath(file, [path], [cwd], [check]) -> path | nil, msg, code */
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
    if (stat(out, &st) < 0)
      err = -errno;
    else if (!S_ISREG(st.st_mode))
      err = -EACCES;
    else if (faccessat(AT_FDCWD, out, X_OK, AT_EACCESS) < 0)
      err = -errno;
  }
  if (err < 0) return lb_error(L, err, file);
  lua_pushstring(L, out);
  return 1;
}

/* core.fileno(file) -> fd | nil (not an open Lua file); flushes it first */
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

/* core.cwd() -> path | nil, msg, code */
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

/* core.maxrss() -> peak resident set of this process, KiB */
static int l_maxrss(lua_State *L) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  lua_pushinteger(L, ru.ru_maxrss);
  return 1;
}

void lb_open_util(lua_State *L) {
  static const luaL_Reg funcs[] = {{"now", l_now},
                                   {"signum", l_signum},
                                   {"signame", l_signame},
                                   {"errname", l_errname},
                                   {"scan_lines", l_scan_lines},
                                   {"strerror", l_strerror},
                                   {"lookpath", l_lookpath},
                                   {"fileno", l_fileno},
                                   {"environ", l_environ},
                                   {"cwd", l_cwd},
                                   {"getpid", l_getpid},
                                   {"maxrss", l_maxrss},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
