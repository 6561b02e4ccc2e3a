/*
 * lfile.c — append-only files for baton.logfile, and the wall clock.
 *
 * Lua's io library cannot do three things a log that never loses a line
 * needs: say how many bytes of a failed write reached the file (stdio keeps
 * or drops its buffer after ENOSPC as it likes), cut the file back to the
 * last whole line after such a write, and create the file with a given mode
 * and O_CLOEXEC. core.append_open gives a small userdata over one fd that
 * does exactly that; the buffering is the Lua side's (one write(2) per
 * batch). core.realtime is the wall clock with microseconds, for timestamps
 * (os.time has whole seconds only).
 *
 * The userdata is made closed first (fd -1) and the fd stored once open
 * succeeded, so an error in between leaks nothing; __gc and __close are one
 * idempotent function.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "lbaton.h"

#define LB_APPENDFILE "baton.appendfile"

typedef struct {
  int fd; /* -1 once closed */
} lb_appendfile;

static lb_appendfile *check_open(lua_State *L) {
  lb_appendfile *f = luaL_checkudata(L, 1, LB_APPENDFILE);
  if (f->fd < 0) luaL_error(L, "baton: use of a closed append file");
  return f;
}

/* core.append_open(path, mode) -> file | nil, msg, code: open `path` for
 * appending (O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC), created with `mode` (the
 * umask applies). The message names the path. */
static int l_append_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer mode = luaL_checkinteger(L, 2);
  luaL_argcheck(L, mode >= 0 && mode <= 07777, 2, "mode out of range");
  lb_appendfile *f = lua_newuserdatauv(L, sizeof *f, 0);
  f->fd = -1;
  luaL_setmetatable(L, LB_APPENDFILE);
  int fd;
  do
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, (mode_t)mode);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return lb_error(L, -errno, path);
  f->fd = fd;
  return 1;
}

/* file:write(data) -> n | nil, msg, code, written: all of `data`, in as many
 * write(2) calls as it takes; on an error, how many bytes did reach the file
 * comes fourth. */
static int l_append_write(lua_State *L) {
  lb_appendfile *f = check_open(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(f->fd, data + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? -errno : UV_EIO; /* a 0-byte write of a non-empty buffer: no progress */
      lb_error(L, err, "write");
      lua_pushinteger(L, (lua_Integer)done);
      return 4;
    }
    done += (size_t)n;
  }
  lua_pushinteger(L, (lua_Integer)done);
  return 1;
}

/* file:truncate(size) -> true | nil, msg, code: cut the file to `size` bytes
 * (the part line a failed write left). */
static int l_append_truncate(lua_State *L) {
  lb_appendfile *f = check_open(L);
  lua_Integer size = luaL_checkinteger(L, 2);
  luaL_argcheck(L, size >= 0, 2, "negative size");
  int r;
  do
    r = ftruncate(f->fd, (off_t)size);
  while (r < 0 && errno == EINTR);
  if (r < 0) return lb_error(L, -errno, "ftruncate");
  lua_pushboolean(L, 1);
  return 1;
}

/* file:size() -> bytes | nil, msg, code: the file's size now (fstat). */
static int l_append_size(lua_State *L) {
  lb_appendfile *f = check_open(L);
  struct stat st;
  if (fstat(f->fd, &st) < 0) return lb_error(L, -errno, "fstat");
  lua_pushinteger(L, (lua_Integer)st.st_size);
  return 1;
}

static int l_append_fileno(lua_State *L) {
  lua_pushinteger(L, check_open(L)->fd);
  return 1;
}

/* file:close(), also __gc and __close: idempotent. close(2) is not retried
 * on EINTR (Linux has let go of the fd either way). */
static int l_append_close(lua_State *L) {
  lb_appendfile *f = luaL_checkudata(L, 1, LB_APPENDFILE);
  if (f->fd >= 0) {
    close(f->fd);
    f->fd = -1;
  }
  return 0;
}

static int l_append_tostring(lua_State *L) {
  lb_appendfile *f = luaL_checkudata(L, 1, LB_APPENDFILE);
  if (f->fd < 0)
    lua_pushstring(L, LB_APPENDFILE " (closed)");
  else
    lua_pushfstring(L, LB_APPENDFILE " (fd %d)", f->fd);
  return 1;
}

/* core.realtime() -> seconds, microseconds: the wall clock (UTC), as two
 * integers so no precision is lost in a float. */
static int l_realtime(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushinteger(L, (lua_Integer)ts.tv_sec);
  lua_pushinteger(L, (lua_Integer)(ts.tv_nsec / 1000));
  return 2;
}

void lb_open_file(lua_State *L) {
  static const luaL_Reg methods[] = {{"write", l_append_write}, {"truncate", l_append_truncate},
                                     {"size", l_append_size},   {"fileno", l_append_fileno},
                                     {"close", l_append_close}, {NULL, NULL}};
  lb_newmetatable(L, LB_APPENDFILE, methods, l_append_close, l_append_tostring);
  static const luaL_Reg funcs[] = {
      {"append_open", l_append_open}, {"realtime", l_realtime}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
