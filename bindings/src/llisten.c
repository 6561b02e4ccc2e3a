/*
 * llisten.c — listeners baton owns: core.listen binds (and listens on) an
 * address once, so that each generation of a service can be handed the same
 * socket (spawn's `fds`, LISTEN_FDS, `listen_pid`); core.socket_info says
 * what an fd is (one systemd passed to baton, say); core.unlink_socket
 * removes a unix listener's file when the caller decides.
 *
 * The fds are plain integers, baton's to keep and to close with core.close:
 * they outlive every child they are handed to, and nothing here reads or
 * accepts on them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lbaton.h"

/* Push the info table of `si`: {family, type, listening, address, port, path, url}. */
static void lb_push_socket_info(lua_State *L, const bt_socket_info_t *si) {
  lua_createtable(L, 0, 7);
  const char *family = si->family == AF_INET    ? "inet"
                       : si->family == AF_INET6 ? "inet6"
                       : si->family == AF_UNIX  ? "unix"
                                                : NULL;
  if (family)
    lua_pushstring(L, family);
  else
    lua_pushinteger(L, si->family);
  lua_setfield(L, -2, "family");
  const char *type = si->type == SOCK_STREAM      ? "stream"
                     : si->type == SOCK_DGRAM     ? "dgram"
                     : si->type == SOCK_SEQPACKET ? "seqpacket"
                                                  : NULL;
  if (type)
    lua_pushstring(L, type);
  else
    lua_pushinteger(L, si->type);
  lua_setfield(L, -2, "type");
  lua_pushboolean(L, si->listening);
  lua_setfield(L, -2, "listening");
  if (si->family == AF_INET || si->family == AF_INET6) {
    const char *scheme = si->type == SOCK_DGRAM ? "udp" : "tcp";
    lua_pushstring(L, si->address);
    lua_setfield(L, -2, "address");
    lua_pushinteger(L, si->port);
    lua_setfield(L, -2, "port");
    if (si->family == AF_INET6)
      lua_pushfstring(L, "%s://[%s]:%d", scheme, si->address, si->port);
    else
      lua_pushfstring(L, "%s://%s:%d", scheme, si->address, si->port);
    lua_setfield(L, -2, "url");
  } else if (si->family == AF_UNIX) {
    lua_pushstring(L, si->path);
    lua_setfield(L, -2, "path");
    if (si->path[0]) {
      lua_pushfstring(L, "unix:%s", si->path);
      lua_setfield(L, -2, "url");
    }
  }
}

/* Why bt_listen_parse refused an address, in words. */
static const char *lb_address_problem(int err) {
  switch (err) {
  case -ERANGE: return "port out of range (0 to 65535)";
  case -EAFNOSUPPORT: return "unknown scheme (tcp://, udp:// or unix:)";
  case -ENAMETOOLONG: return "unix path too long (107 bytes at most)";
  default:
    return "expected tcp://HOST:PORT, udp://HOST:PORT or unix:PATH, with a numeric host "
           "([…] for IPv6)";
  }
}

static lua_Integer lb_int_option(lua_State *L, const char *key, lua_Integer lo, lua_Integer hi) {
  if (!lua_isinteger(L, -1))
    luaL_error(L, "baton: listen: option '%s' must be an integer, got %s", key,
               luaL_typename(L, -1));
  lua_Integer v = lua_tointeger(L, -1);
  if (v < lo || v > hi)
    luaL_error(L, "baton: listen: option '%s' must be from %d to %d, got %d", key, (int)lo, (int)hi,
               (int)v);
  return v;
}

static int lb_bool_option(lua_State *L, const char *key) {
  if (!lua_isboolean(L, -1))
    luaL_error(L, "baton: listen: option '%s' must be a boolean, got %s", key,
               luaL_typename(L, -1));
  return lua_toboolean(L, -1);
}

/* A uid or gid: an integer, or a name looked up in the user or group database. */
static unsigned lb_id_option(lua_State *L, const char *key, int user) {
  if (lua_isinteger(L, -1)) return (unsigned)lb_int_option(L, key, 0, 0xfffffffe);
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "baton: listen: option '%s' must be a name or an id, got %s", key,
               luaL_typename(L, -1));
  const char *name = lua_tostring(L, -1);
  char buf[4096];
  if (user) {
    struct passwd pw, *res = NULL;
    if (getpwnam_r(name, &pw, buf, sizeof buf, &res) == 0 && res) return (unsigned)res->pw_uid;
    luaL_error(L, "baton: listen: option '%s': no such user \"%s\"", key, name);
  }
  struct group gr, *res = NULL;
  if (getgrnam_r(name, &gr, buf, sizeof buf, &res) == 0 && res) return (unsigned)res->gr_gid;
  return (unsigned)luaL_error(L, "baton: listen: option '%s': no such group \"%s\"", key, name);
}

/* Raise unless option `key` suits the kind of socket `a` names. */
static void lb_option_fits(lua_State *L, const char *key, const bt_socket_info_t *a) {
  int path = a->family == AF_UNIX && a->path[0] != '@';
  const char *why = NULL;
  if (!strcmp(key, "mode") || !strcmp(key, "owner") || !strcmp(key, "group"))
    why = path ? NULL : "is for unix sockets with a path";
  else if (!strcmp(key, "defer_accept"))
    why = a->family != AF_UNIX && a->type == SOCK_STREAM ? NULL : "is for TCP";
  else if (!strcmp(key, "backlog"))
    why = a->type == SOCK_STREAM ? NULL : "is for stream sockets (TCP, unix)";
  else if (!strcmp(key, "v6only"))
    why = a->family == AF_INET6 ? NULL : "is for IPv6 addresses";
  else if (!strcmp(key, "reuseport") || !strcmp(key, "reuseaddr"))
    why = a->family != AF_UNIX ? NULL : "is for TCP and UDP";
  if (why) luaL_error(L, "baton: listen: option '%s' %s", key, why);
}

/*
 * core.listen(address [, opts]) -> fd, info | nil, msg, code
 * opts: backlog, reuseport, reuseaddr, defer_accept, v6only, mode, owner,
 * group. Raises for a malformed address or a bad option (naming it);
 * returns nil, "EADDRINUSE: address already in use (listen on ADDRESS)",
 * "EADDRINUSE" and the like for what the system refuses.
 */
static int l_listen(lua_State *L) {
  const char *address = luaL_checkstring(L, 1);
  bt_socket_info_t a;
  int err = bt_listen_parse(address, &a);
  if (err < 0 || strlen(address) != lua_rawlen(L, 1))
    return luaL_error(L, "baton: listen: bad address \"%s\": %s", address,
                      lb_address_problem(err < 0 ? err : -EINVAL));
  bt_listen_options_t o;
  memset(&o, 0, sizeof o);
  o.address = address;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        return luaL_error(L, "baton: listen: unknown option %s", luaL_tolstring(L, -2, NULL));
      const char *key = lua_tostring(L, -2);
      if (!strcmp(key, "backlog")) {
        o.backlog = (int)lb_int_option(L, key, 1, 65535);
      } else if (!strcmp(key, "defer_accept")) {
        o.defer_accept = (int)lb_int_option(L, key, 0, 3600);
      } else if (!strcmp(key, "mode")) {
        o.mode = (mode_t)lb_int_option(L, key, 0, 07777);
        o.flags |= BT_LISTEN_MODE;
      } else if (!strcmp(key, "owner")) {
        o.uid = (uid_t)lb_id_option(L, key, 1);
        o.flags |= BT_LISTEN_UID;
      } else if (!strcmp(key, "group")) {
        o.gid = (gid_t)lb_id_option(L, key, 0);
        o.flags |= BT_LISTEN_GID;
      } else if (!strcmp(key, "reuseport")) {
        if (lb_bool_option(L, key)) o.flags |= BT_LISTEN_REUSEPORT;
      } else if (!strcmp(key, "reuseaddr")) {
        o.flags |= lb_bool_option(L, key) ? BT_LISTEN_REUSEADDR : BT_LISTEN_NO_REUSEADDR;
      } else if (!strcmp(key, "v6only")) {
        o.flags |= lb_bool_option(L, key) ? BT_LISTEN_V6ONLY : BT_LISTEN_DUALSTACK;
      } else {
        return luaL_error(L, "baton: listen: unknown option '%s'", key);
      }
      lb_option_fits(L, key, &a);
      lua_pop(L, 1);
    }
  }
  bt_listen_info_t info;
  int fd = bt_listen(&o, &info);
  if (fd < 0) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "listen on ");
    luaL_addstring(&b, address);
    luaL_pushresult(&b);
    return lb_error(L, fd, lua_tostring(L, -1));
  }
  lua_pushinteger(L, fd);
  lb_push_socket_info(L, &info);
  return 2;
}

/* core.socket_info(fd) -> info | nil, msg, code ("ENOTSOCK", "EBADF") */
static int l_socket_info(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 1, "fd out of range");
  bt_socket_info_t si;
  int err = bt_socket_info((int)fd, &si);
  if (err < 0) return lb_error(L, err, "socket_info");
  lb_push_socket_info(L, &si);
  return 1;
}

/* core.unlink_socket(path) -> true | nil, msg, code ("ENOENT", "ENOTSOCK") */
static int l_unlink_socket(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int err = bt_unlink_socket(path);
  if (err < 0) return lb_error(L, err, path);
  lua_pushboolean(L, 1);
  return 1;
}

void lb_open_listen(lua_State *L) {
  static const luaL_Reg funcs[] = {{"listen", l_listen},
                                   {"socket_info", l_socket_info},
                                   {"unlink_socket", l_unlink_socket},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
