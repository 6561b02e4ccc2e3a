/*
 * listen.c — sockets baton binds once and hands on: TCP and unix stream
 * listeners, bound UDP sockets, and the description of a socket received
 * from elsewhere (systemd's LISTEN_FDS).
 *
 * The point of owning a listener is that it outlives the processes serving
 * on it: each generation of a service gets the same socket, so connections
 * queued while one generation stops and the next starts wait in the
 * kernel's accept queue instead of being refused. So this file only makes
 * and describes sockets; handing them on is spawn's `stdio` (fds 3, 4, …)
 * and BT_SPAWN_LISTEN_PID.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

#define BT_SUN_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path))

/* The port after "host:", digits only; -EINVAL or -ERANGE otherwise. */
static int bt__parse_port(const char *s) {
  if (*s == '\0') return -EINVAL;
  long port = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -EINVAL;
    port = port * 10 + (*s - '0');
    if (port > 65535) return -ERANGE;
  }
  return (int)port;
}

int bt_listen_parse(const char *address, bt_socket_info_t *out) {
  if (address == NULL || out == NULL) return -EINVAL;
  if (address == NULL || out == NULL) return -EINVAL;
  memset(out, 0, sizeof *out);
  const char *colon = strchr(address, ':');
  if (colon == NULL || colon == address) return -EINVAL;
  size_t slen = (size_t)(colon - address);

  if (slen == 4 && strncmp(address, "unix", 4) == 0) {
    const char *path = colon + 1;
    if (strncmp(path, "///", 3) == 0) path += 2; /* unix:///run/x.sock */
    size_t len = strlen(path);
    if (len == 0 || (path[0] == '@' && len == 1)) return -EINVAL;
    if (len >= BT_SUN_PATH_MAX) return -ENAMETOOLONG;
    out->family = AF_UNIX;
    out->type = SOCK_STREAM;
    memcpy(out->path, path, len + 1);
    return 0;
  }
  if (slen == 3 && strncmp(address, "tcp", 3) == 0)
    out->type = SOCK_STREAM;
  else if (slen == 3 && strncmp(address, "udp", 3) == 0)
    out->type = SOCK_DGRAM;
  else
    return -EAFNOSUPPORT;
  if (strncmp(colon, "://", 3) != 0) return -EINVAL;

  const char *host = colon + 3, *end, *port;
  char buf[64];
  if (host[0] == '[') {
    end = strchr(host, ']');
    if (end == NULL || end[1] != ':') return -EINVAL;
    host++;
    port = end + 2;
    out->family = AF_INET6;
  } else {
    end = strrchr(host, ':');
    if (end == NULL) return -EINVAL;
    port = end + 1;
    out->family = AF_INET;
  }
  size_t hlen = (size_t)(end - host);
  if (hlen == 0 || hlen >= sizeof buf) return -EINVAL;
  memcpy(buf, host, hlen);
  buf[hlen] = '\0';
  unsigned char bin[sizeof(struct in6_addr)];
  if (inet_pton(out->family, buf, bin) != 1) return -EINVAL;
  int p = bt__parse_port(port);
  if (p < 0) return p;
  out->port = p;
  /* Canonical form: "::0001" reads back as "::1". */
  inet_ntop(out->family, bin, out->address, sizeof out->address);
  return 0;
}

/* Fill `info` from a socket address of `len` bytes. */
static void bt__describe(const struct sockaddr_storage *ss, socklen_t len, bt_socket_info_t *info) {
  info->port = 0;
  info->address[0] = '\0';
  info->path[0] = '\0';
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &in->sin_addr, info->address, sizeof info->address);
    info->port = ntohs(in->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &in6->sin6_addr, info->address, sizeof info->address);
    info->port = ntohs(in6->sin6_port);
  } else if (ss->ss_family == AF_UNIX) {
    const struct sockaddr_un *un = (const struct sockaddr_un *)ss;
    size_t n = len > offsetof(struct sockaddr_un, sun_path)
                   ? (size_t)len - offsetof(struct sockaddr_un, sun_path)
                   : 0;
    if (n > 0 && un->sun_path[0] == '\0') {
      /* Abstract: a name of exactly n - 1 bytes after the NUL. */
      info->path[0] = '@';
      size_t k = n - 1 < sizeof info->path - 2 ? n - 1 : sizeof info->path - 2;
      memcpy(info->path + 1, un->sun_path + 1, k);
      info->path[k + 1] = '\0';
    } else if (n > 0) {
      size_t k = strnlen(un->sun_path, n < BT_SUN_PATH_MAX ? n : BT_SUN_PATH_MAX);
      memcpy(info->path, un->sun_path, k);
      info->path[k] = '\0';
    }
  }
}

int bt_socket_info(int fd, bt_socket_info_t *info) {
  if (fd < 0) return -EBADF;
  if (info == NULL) return -EINVAL;
  if (info == NULL) return -EINVAL;
  memset(info, 0, sizeof *info);
  int v;
  socklen_t vl = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &vl) < 0) return -errno;
  info->family = v;
  vl = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &vl) < 0) return -errno;
  info->type = v;
  vl = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) < 0) return -errno;
  info->listening = v != 0;
  if (info->family != AF_INET && info->family != AF_INET6 && info->family != AF_UNIX) return 0;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -errno;
  bt__describe(&ss, len, info);
  return 0;
}

int bt_unlink_socket(const char *path) {
  if (path == NULL) return -EINVAL;
  struct stat st;
  if (path == NULL || path[0] == '\0') return -EINVAL;
  if (lstat(path, &st) < 0) return -errno;
  if (!S_ISSOCK(st.st_mode)) return -ENOTSOCK;
  return unlink(path) < 0 ? -errno : 0;
}

/* The sockaddr_un of `path` ('@': abstract); returns its length. */
static socklen_t bt__sun(const char *path, struct sockaddr_un *un) {
  size_t len = strlen(path);
  memset(un, 0, sizeof *un);
  un->sun_family = AF_UNIX;
  memcpy(un->sun_path, path, len);
  if (path[0] == '@') un->sun_path[0] = '\0';
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (path[0] == '@' ? 0 : 1));
}

/*
 * Make room at a unix path: nothing there is fine; a socket nobody listens
 * on (a connect is refused) is removed; a live one is -EADDRINUSE; anything
 * else is -EEXIST and stays.
 */
static int bt__clear_stale(const char *path, const struct sockaddr_un *un, socklen_t len) {
  struct stat st;
  if (lstat(path, &st) < 0) return errno == ENOENT ? 0 : -errno;
  if (!S_ISSOCK(st.st_mode)) return -EEXIST;
  int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (probe < 0) return -errno;
  int r;
  while ((r = connect(probe, (const struct sockaddr *)un, len)) < 0 && errno == EINTR)
    continue;
  int err = r < 0 ? errno : 0;
  close(probe);
  /* Connected, or a full backlog (EAGAIN), or a datagram socket
   * (EPROTOTYPE): someone is there. Only a refusal says nobody is. */
  if (err == 0 || err == EAGAIN || err == EPROTOTYPE) return -EADDRINUSE;
  if (err == ENOENT) return 0; /* gone meanwhile */
  if (err != ECONNREFUSED) return -err;
  if (unlink(path) < 0 && errno != ENOENT) return -errno;
  return 0;
}

static int bt__setopt(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof value) < 0 ? -errno : 0;
}

/* Check that the options fit the kind of `a`. */
static int bt__check_options(const bt_listen_options_t *o, const bt_socket_info_t *a) {
  unsigned f = o->flags;
  int is_path = a->family == AF_UNIX && a->path[0] != '@';
  if (o->backlog < 0 || o->defer_accept < 0 || (o->mode & ~(mode_t)07777)) return -EINVAL;
  if (a->type == SOCK_DGRAM && o->backlog != 0) return -EINVAL;
  if (o->defer_accept && !(a->type == SOCK_STREAM && a->family != AF_UNIX)) return -EINVAL;
  if ((f & (BT_LISTEN_MODE | BT_LISTEN_UID | BT_LISTEN_GID)) && !is_path) return -EINVAL;
  if ((f & (BT_LISTEN_V6ONLY | BT_LISTEN_DUALSTACK)) && a->family != AF_INET6) return -EINVAL;
  if ((f & BT_LISTEN_V6ONLY) && (f & BT_LISTEN_DUALSTACK)) return -EINVAL;
  if ((f & BT_LISTEN_REUSEADDR) && (f & BT_LISTEN_NO_REUSEADDR)) return -EINVAL;
  if ((f & BT_LISTEN_REUSEPORT) && a->family == AF_UNIX) return -EINVAL;
  return 0;
}

int bt_listen(const bt_listen_options_t *o, bt_listen_info_t *info) {
  if (o == NULL || o->address == NULL) return -EINVAL;
  bt_socket_info_t a;
  if (o == NULL) return -EINVAL;
  int err = bt_listen_parse(o->address, &a);
  if (err < 0) return err;
  err = bt__check_options(o, &a);
  if (err < 0) return err;

  struct sockaddr_storage ss;
  socklen_t sslen;
  memset(&ss, 0, sizeof ss);
  if (a.family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)a.port);
    inet_pton(AF_INET, a.address, &in->sin_addr);
    sslen = sizeof *in;
  } else if (a.family == AF_INET6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)a.port);
    inet_pton(AF_INET6, a.address, &in6->sin6_addr);
    sslen = sizeof *in6;
  } else {
    sslen = bt__sun(a.path, (struct sockaddr_un *)&ss);
  }

  int fd = socket(a.family, a.type | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int bound_file = 0; /* a file this call created, removed on failure */
  unsigned f = o->flags;

  int reuseaddr = (f & BT_LISTEN_REUSEADDR) ||
                  (a.family != AF_UNIX && a.type == SOCK_STREAM && !(f & BT_LISTEN_NO_REUSEADDR));
  if (reuseaddr && (err = bt__setopt(fd, SOL_SOCKET, SO_REUSEADDR, 1)) < 0) goto fail;
  if ((f & BT_LISTEN_REUSEPORT) && (err = bt__setopt(fd, SOL_SOCKET, SO_REUSEPORT, 1)) < 0)
    goto fail;
  if ((f & (BT_LISTEN_V6ONLY | BT_LISTEN_DUALSTACK)) &&
      (err = bt__setopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, (f & BT_LISTEN_V6ONLY) != 0)) < 0)
    goto fail;

  if (a.family == AF_UNIX && a.path[0] != '@') {
    err = bt__clear_stale(a.path, (struct sockaddr_un *)&ss, sslen);
    if (err < 0) goto fail;
  }
  if (bind(fd, (struct sockaddr *)&ss, sslen) < 0) {
    err = -errno;
    goto fail;
  }
  if (a.family == AF_UNIX && a.path[0] != '@') {
    bound_file = 1;
    if ((f & BT_LISTEN_MODE) && chmod(a.path, o->mode) < 0) {
      err = -errno;
      goto fail;
    }
    if ((f & (BT_LISTEN_UID | BT_LISTEN_GID)) &&
        lchown(a.path, (f & BT_LISTEN_UID) ? o->uid : (uid_t)-1,
               (f & BT_LISTEN_GID) ? o->gid : (gid_t)-1) < 0) {
      err = -errno;
      goto fail;
    }
  }
  if (o->defer_accept && (err = bt__setopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, o->defer_accept)) < 0)
    goto fail;
  if (a.type != SOCK_DGRAM && listen(fd, o->backlog ? o->backlog : SOMAXCONN) < 0) {
    err = -errno;
    goto fail;
  }
  if (info) {
    err = bt_socket_info(fd, info);
    if (err < 0) goto fail;
  }
  return fd;

fail:
  if (bound_file) unlink(a.path);
  close(fd);
  return err;
}
