/*
 * luser.c — user and group lookups (core.user, core.group), for the uid=,
 * gid= and groups= options of spawn: the reentrant getpw*_r/getgr*_r calls,
 * with "no such user" as an ENOENT error value.
 */
#define _GNU_SOURCE
#include <grp.h>
#include <pwd.h>

#include "lbaton.h"

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

void lb_open_user(lua_State *L) {
  static const luaL_Reg funcs[] = {{"user", l_user}, {"group", l_group}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
