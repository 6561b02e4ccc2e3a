/*
 * lfd.c — plain file descriptors for wiring processes to each other:
 * core.pipe makes a pair, core.setblocking readies one for a child, and
 * core.close lets go of it once handed over. (A pipe the script reads or
 * writes itself is a stream: lstream.c.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lbaton.h"

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

/* core.setblocking(fd[, blocking]): clear O_NONBLOCK (an fd handed to a
 * child), or set it when `blocking` is false (a listener for a server that
 * expects it set, as nginx does with the sockets it inherits). The flag
 * belongs to the open file: every process holding it sees the change. */
static int l_setblocking(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  int blocking = lua_isnoneornil(L, 2) || lua_toboolean(L, 2);
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK);
  return 0;
}

/* core.pipe_pending(fd) -> bytes waiting to be read in the pipe (FIONREAD):
 * how far behind its reader is. */
static int l_pipe_pending(lua_State *L) {
  int n = 0;
  if (ioctl((int)luaL_checkinteger(L, 1), FIONREAD, &n) < 0)
    return lb_error(L, -errno, "pipe_pending");
  lua_pushinteger(L, n);
  return 1;
}

/* core.isatty(fd) -> boolean: is fd a terminal (colors, prompts). */
static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* core.reopen_stream(fd) -> stream | nil, msg, code: the pipe or terminal
 * at `fd` (baton's stdout or stderr) opened again, as a stream of its own
 * that never blocks baton: a reader that stops (a paused pager, Ctrl-S)
 * then holds up only what is written through it, never the loop. The open
 * file is a new one (through /proc/self/fd, as libuv reopens a tty), so its
 * O_NONBLOCK is baton's alone — never the one the shell and the children
 * share. EOPNOTSUPP for anything else (a file, a socket: keep writing those
 * as before), ENXIO for a pipe nobody reads any more. */
static int l_reopen_stream(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  struct stat st;
  if (fstat(fd, &st) < 0) return lb_error(L, -errno, "reopen_stream");
  if (!S_ISFIFO(st.st_mode) && !(S_ISCHR(st.st_mode) && isatty(fd)))
    return lb_error(L, UV_ENOTSUP, "reopen_stream: not a pipe or a terminal");
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int nfd;
  do /* (O_NONBLOCK: a FIFO without a reader fails with ENXIO, never waits for one) */
    nfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  while (nfd < 0 && errno == EINTR);
  if (nfd < 0) return lb_error(L, -errno, "reopen_stream");
  int err = lb_stream_new(L, nfd); /* closes nfd on failure */
  if (err < 0) return lb_error(L, err, "reopen_stream");
  return 1;
}

static int l_close(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd > 2, 1, "refusing to close stdin, stdout or stderr");
  close(fd);
  return 0;
}

void lb_open_fd(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"pipe", l_pipe},     {"setblocking", l_setblocking},   {"close", l_close},
      {"isatty", l_isatty}, {"pipe_pending", l_pipe_pending}, {"reopen_stream", l_reopen_stream},
      {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
