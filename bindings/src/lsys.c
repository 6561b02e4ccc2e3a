/*
 * lsys.c — small system lookups and the orphan reaper, for the Lua layer:
 * user and group names (for uid=/gid= options), and core.reaper.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>

#include "lbaton.h"

#define LB_REAPER "baton.reaper"

/* core.user(name or uid) -> {uid=, gid=, name=, home=, groups={...}} | nil, msg, code */
static int l_user(lua_State *L) {
  struct passwd pw, *res = NULL;
  char buf[4096];
  int err;
  if (lua_type(L, 1) == LUA_TNUMBER) {
    lua_Integer id = luaL_checkinteger(L, 1);
    if (id < 0 || id >= 0xffffffffLL) return lb_error(L, UV_EINVAL, "id out of range");
    err = getpwuid_r((uid_t)id, &pw, buf, sizeof buf, &res);
  } else
    err = getpwnam_r(luaL_checkstring(L, 1), &pw, buf, sizeof buf, &res);
  if (res == NULL) return lb_error(L, err ? -err : UV_ENOENT, "no such user");
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, pw.pw_uid);
  lua_setfield(L, -2, "uid");
  lua_pushinteger(L, pw.pw_gid);
  lua_setfield(L, -2, "gid");
  lua_pushstring(L, pw.pw_name);
  lua_setfield(L, -2, "name");
  lua_pushstring(L, pw.pw_dir);
  lua_setfield(L, -2, "home");
  gid_t groups[256];
  int n = 256;
  if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0) n = 0;
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushinteger(L, groups[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "groups");
  return 1;
}

/* core.group(name or gid) -> gid | nil, msg, code */
static int l_group(lua_State *L) {
  struct group gr, *res = NULL;
  char buf[8192];
  int err;
  if (lua_type(L, 1) == LUA_TNUMBER) {
    lua_Integer id = luaL_checkinteger(L, 1);
    if (id < 0 || id >= 0xffffffffLL) return lb_error(L, UV_EINVAL, "id out of range");
    err = getgrgid_r((gid_t)id, &gr, buf, sizeof buf, &res);
  } else
    err = getgrnam_r(luaL_checkstring(L, 1), &gr, buf, sizeof buf, &res);
  if (res == NULL) return lb_error(L, err ? -err : UV_ENOENT, "no such group");
  lua_pushinteger(L, gr.gr_gid);
  return 1;
}

/* core.pipe([size]) -> rfd, wfd (both O_CLOEXEC) | nil, msg, code. For wiring
 * processes to each other: the fds go to children, then core.close. */
static int l_pipe(lua_State *L) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return lb_error(L, -errno, "pipe");
  lua_Integer size = luaL_optinteger(L, 1, 0);
  if (size > 0) fcntl(fds[1], F_SETPIPE_SZ, (int)size); /* best effort, as in spawn */
  lua_pushinteger(L, fds[0]);
  lua_pushinteger(L, fds[1]);
  return 2;
}

/* core.setblocking(fd): clear O_NONBLOCK (an fd handed to a child). */
static int l_setblocking(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  return 0;
}

static int l_close(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd > 2, 1, "refusing to close stdin, stdout or stderr");
  close(fd);
  return 0;
}

/* core.set_subreaper(on) -> true | nil, msg, code */
static int l_set_subreaper(lua_State *L) {
  if (prctl(PR_SET_CHILD_SUBREAPER, lua_toboolean(L, 1) ? 1 : 0, 0, 0, 0) < 0)
    return lb_error(L, -errno, "prctl");
  lua_pushboolean(L, 1);
  return 1;
}

/* core.maxrss() -> peak resident set of this process, KiB */
static int l_maxrss(lua_State *L) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  lua_pushinteger(L, ru.ru_maxrss);
  return 1;
}

/* ---- the orphan reaper ------------------------------------------------------------- */

typedef struct {
  lb_handle h;
  bt_reaper_t r;
} lb_reaper;

static void lb_reaper_closed(bt_reaper_t *r) { lb_handle_closed(r->data); }
static void lb_reaper_close(lb_handle *h) { bt_reaper_close(&((lb_reaper *)h)->r, lb_reaper_closed); }

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

static int l_reaper_gc(lua_State *L) { return lb_handle_gc(L, LB_REAPER); }

void lb_open_sys(lua_State *L) {
  static const luaL_Reg methods[] = {{"close", l_reaper_close}, {"reap", l_reaper_reap}, {NULL, NULL}};
  luaL_newmetatable(L, LB_REAPER);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_reaper_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  static const luaL_Reg funcs[] = {{"user", l_user},   {"group", l_group}, {"reaper", l_reaper},
                                   {"pipe", l_pipe},   {"close", l_close}, {"maxrss", l_maxrss},
                                   {"setblocking", l_setblocking}, {"set_subreaper", l_set_subreaper},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
  static const struct {
    const char *name;
    int res;
  } limits[] = {{"as", RLIMIT_AS},         {"core", RLIMIT_CORE},       {"cpu", RLIMIT_CPU},
                {"data", RLIMIT_DATA},     {"fsize", RLIMIT_FSIZE},     {"locks", RLIMIT_LOCKS},
                {"memlock", RLIMIT_MEMLOCK}, {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
                {"nofile", RLIMIT_NOFILE}, {"nproc", RLIMIT_NPROC},     {"rss", RLIMIT_RSS},
                {"rtprio", RLIMIT_RTPRIO}, {"rttime", RLIMIT_RTTIME},   {"sigpending", RLIMIT_SIGPENDING},
                {"stack", RLIMIT_STACK}};
  lua_createtable(L, 0, (int)(sizeof limits / sizeof limits[0]));
  for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
    lua_pushinteger(L, limits[i].res);
    lua_setfield(L, -2, limits[i].name);
  }
  lua_setfield(L, -2, "RLIMIT");
}
