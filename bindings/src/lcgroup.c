/*
 * lcgroup.c — the cgroup v2 primitives of `baton.core`: cgroup_self,
 * cgroup_create, cgroup_enable, cgroup_set, cgroup_get, cgroup_kill,
 * cgroup_populated, cgroup_oom_kills, cgroup_remove (core/src/cgroup.c does
 * the work), cgroup_children and pidns (to find what a baton killed hard
 * left). A group is named by its directory.
 *
 * Each returns its value, or nil, msg, code when the system says no; the
 * message names what is wrong in the terms a user acts on: a group that does
 * not exist, a directory that is no cgroup, the controller a limit needs.
 * Misuse (a wrong type, a name with a '/') raises. Which process tree gets
 * which group is policy, in the Lua layer; the spawn option `cgroup` is read
 * in lprocess.c.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "lbaton.h"

/* A string argument without NUL bytes (the kernel would cut it there). */
static const char *lb_checkpath(lua_State *L, int arg) {
  size_t len;
  const char *s = luaL_checklstring(L, arg, &len);
  luaL_argcheck(L, strlen(s) == len, arg, "contains a NUL byte");
  return s;
}

/* One name under a group: a group's name, or one of its files. */
static const char *lb_checkname(lua_State *L, int arg) {
  const char *s = lb_checkpath(L, arg);
  luaL_argcheck(L, *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0, arg,
                "a single name expected (not empty, no '/', not '.' or '..')");
  return s;
}

/*
 * The failure of a call on group `dir` (and its `file`, or NULL): nil, msg,
 * code, with the context saying which of them is wrong.
 */
static int lb_cgroup_error(lua_State *L, int err, const char *dir, const char *file) {
  char what[4400];
  int fd = bt_cgroup_open(dir);
  if (fd >= 0) close(fd);
  if (fd == -ENOENT) {
    snprintf(what, sizeof what, "no such cgroup: %s", dir);
  } else if (fd == -EINVAL) {
    snprintf(what, sizeof what, "not a cgroup v2 directory: %s", dir);
  } else if (file && err == -ENOENT && strncmp(file, "cgroup.", 7) != 0 && strchr(file, '.')) {
    /* memory.max without the memory controller: say which one is missing. */
    snprintf(what, sizeof what,
             "%s: the %.*s controller is not enabled for %s (see core.cgroup_enable on its parent)",
             file, (int)(strchr(file, '.') - file), file, dir);
  } else if (file) {
    snprintf(what, sizeof what, "%s/%s", dir, file);
  } else if (err == -EBUSY) {
    snprintf(what, sizeof what, "processes or groups are still in %s", dir);
  } else {
    snprintf(what, sizeof what, "%s", dir);
  }
  return lb_error(L, err, what);
}

/* core.cgroup_self() -> dir | nil, msg, code */
static int l_cgroup_self(lua_State *L) {
  char dir[4096];
  int err = bt_cgroup_self(dir, sizeof dir);
  if (err < 0)
    return lb_error(L, err, err == -ENOENT ? "no cgroup2 hierarchy is mounted" : "cgroup_self");
  lua_pushstring(L, dir);
  return 1;
}

/* core.cgroup_create(parent, name) -> dir | nil, msg, code (there already: fine) */
static int l_cgroup_create(lua_State *L) {
  const char *parent = lb_checkpath(L, 1);
  const char *name = lb_checkname(L, 2);
  char dir[4096];
  int err = bt_cgroup_create(parent, name, dir, sizeof dir);
  if (err == -EEXIST) return lb_error(L, err, "exists and is not a directory");
  if (err < 0) return lb_cgroup_error(L, err, parent, NULL);
  lua_pushstring(L, dir);
  return 1;
}

/* core.cgroup_enable(dir, "memory pids cpu" | {"memory", …}) -> {missing…} |
 * nil, msg, code. The list names the controllers this group cannot offer. */
static int l_cgroup_enable(lua_State *L) {
  const char *dir = lb_checkpath(L, 1);
  if (lua_istable(L, 2)) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_Integer n = luaL_len(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
      if (lua_geti(L, 2, i) != LUA_TSTRING) luaL_argerror(L, 2, "controller names must be strings");
      luaL_addvalue(&b);
      luaL_addchar(&b, ' ');
    }
    luaL_pushresult(&b);
    lua_replace(L, 2);
  }
  const char *controllers = lb_checkpath(L, 2);
  char missing[1024];
  int n = bt_cgroup_enable(dir, controllers, missing, sizeof missing);
  if (n == -EINVAL) {
    int fd = bt_cgroup_open(dir);
    if (fd >= 0) {
      close(fd);
      return luaL_argerror(L, 2,
                           "controller names are lower-case words, as in \"memory pids cpu\"");
    }
  }
  if (n < 0) return lb_cgroup_error(L, n, dir, "cgroup.subtree_control");
  lua_createtable(L, n, 0);
  int i = 0;
  for (char *save = NULL, *w = strtok_r(missing, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
    lua_pushstring(L, w);
    lua_seti(L, -2, ++i);
  }
  return 1;
}

/* core.cgroup_set(dir, file, value) -> true | nil, msg, code */
static int l_cgroup_set(lua_State *L) {
  const char *dir = lb_checkpath(L, 1);
  const char *file = lb_checkname(L, 2);
  const char *value = lb_checkpath(L, 3);
  int err = bt_cgroup_set(dir, file, value);
  if (err < 0) return lb_cgroup_error(L, err, dir, file);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.cgroup_get(dir, file) -> contents without the trailing newline | nil, msg, code */
static int l_cgroup_get(lua_State *L) {
  const char *dir = lb_checkpath(L, 1);
  const char *file = lb_checkname(L, 2);
  char buf[16384];
  int len = bt_cgroup_get(dir, file, buf, sizeof buf);
  if (len < 0) return lb_cgroup_error(L, len, dir, file);
  lua_pushlstring(L, buf, (size_t)len);
  return 1;
}

/* core.cgroup_kill(dir) -> true | nil, msg, code: SIGKILL to all in it and below. */
static int l_cgroup_kill(lua_State *L) {
  const char *dir = lb_checkpath(L, 1);
  int err = bt_cgroup_kill(dir);
  if (err == -EINVAL) {
    int fd = bt_cgroup_open(dir);
    if (fd >= 0) {
      close(fd);
      return lb_error(L, err, "the root cgroup cannot be killed");
    }
  }
  if (err < 0) return lb_cgroup_error(L, err, dir, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.cgroup_populated(dir) -> boolean | nil, msg, code */
static int l_cgroup_populated(lua_State *L) {
  const char *dir = lb_checkpath(L, 1);
  int r = bt_cgroup_populated(dir);
  if (r < 0) return lb_cgroup_error(L, r, dir, "cgroup.events");
  lua_pushboolean(L, r);
  return 1;
}

/* core.cgroup_oom_kills(dir) -> count | nil, msg, code (no memory controller) */
static int l_cgroup_oom_kills(lua_State *L) {
  const char *dir = lb_checkpath(L, 1);
  int r = bt_cgroup_oom_kills(dir);
  if (r < 0) return lb_cgroup_error(L, r, dir, "memory.events");
  lua_pushinteger(L, r);
  return 1;
}

/* core.cgroup_remove(dir) -> true | nil, msg, code ("EBUSY" while in use) */
static int l_cgroup_remove(lua_State *L) {
  const char *dir = lb_checkpath(L, 1);
  int err = bt_cgroup_remove(dir);
  if (err < 0) return lb_cgroup_error(L, err, dir, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.cgroup_children(dir) -> {name…} | nil, msg, code: the groups right
 * under `dir` (its subdirectories), in directory order. */
static int l_cgroup_children(lua_State *L) {
  const char *dir = lb_checkpath(L, 1);
  int fd = bt_cgroup_open(dir);
  if (fd < 0) return lb_cgroup_error(L, fd, dir, NULL);
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    int err = -errno;
    close(fd);
    return lb_cgroup_error(L, err, dir, NULL);
  }
  lua_newtable(L);
  lua_Integer n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_type != DT_DIR || strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    lua_pushstring(L, e->d_name);
    lua_rawseti(L, -2, ++n);
  }
  closedir(d);
  return 1;
}

/* core.pidns() -> n: the inode of this process's pid namespace (pids are
 * only comparable within one), or nil, msg, code. */
static int l_pidns(lua_State *L) {
  struct stat st;
  if (stat("/proc/self/ns/pid", &st) < 0) return lb_error(L, -errno, "/proc/self/ns/pid");
  lua_pushinteger(L, (lua_Integer)st.st_ino);
  return 1;
}

void lb_open_cgroup(lua_State *L) {
  static const luaL_Reg funcs[] = {{"cgroup_self", l_cgroup_self},
                                   {"cgroup_create", l_cgroup_create},
                                   {"cgroup_enable", l_cgroup_enable},
                                   {"cgroup_set", l_cgroup_set},
                                   {"cgroup_get", l_cgroup_get},
                                   {"cgroup_kill", l_cgroup_kill},
                                   {"cgroup_populated", l_cgroup_populated},
                                   {"cgroup_oom_kills", l_cgroup_oom_kills},
                                   {"cgroup_remove", l_cgroup_remove},
                                   {"cgroup_children", l_cgroup_children},
                                   {"pidns", l_pidns},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
