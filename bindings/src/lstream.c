/*
 * lstream.c — byte streams over pipe fds (a child's stdin, stdout, stderr)
 * and over TCP sockets (lnet.c connects them).
 *
 * The C side only moves bytes: read_start delivers chunks to a callback,
 * write queues a Lua string (kept alive by a reference until written). The
 * buffering, line splitting and backpressure live in the Lua layer.
 */
#include <stdlib.h>
#include <unistd.h>

#include "lbaton.h"

#define LB_STREAM "baton.core.stream"

typedef struct {
  uv_write_t req;
  lb_stream *s;
  int data_ref, cb_ref;
} lb_write_req;

typedef struct {
  uv_shutdown_t req;
  lb_stream *s;
  int cb_ref;
} lb_shutdown_req;

static void lb_stream_closed(uv_handle_t *handle) {
  lb_handle_closed(handle->data);
}
static void lb_stream_close(lb_handle *h) {
  uv_close((uv_handle_t *)&((lb_stream *)h)->uv.stream, lb_stream_closed);
}

void lb_stream_maybe_unanchor(lb_stream *s) {
  if (!s->reading && s->writes == 0 && !s->connecting && s->h.rt)
    lb_handle_unanchor(s->h.rt->cbL, &s->h);
}

int lb_stream_new(lua_State *L, int fd) {
  lb_stream *s = lb_new(L, sizeof *s, LB_STREAM, lb_stream_close);
  int err = uv_pipe_init(s->h.rt->loop, &s->uv.pipe, 0);
  if (err == 0) {
    s->uv.pipe.data = s;
    s->h.open = 1;
    err = uv_pipe_open(&s->uv.pipe, fd);
  }
  if (err < 0) {
    close(fd);
    lb_handle_close(&s->h);
    lua_pop(L, 1);
    return err;
  }
  return 0;
}

lb_stream *lb_stream_new_tcp(lua_State *L, int *err) {
  lb_stream *s = lb_new(L, sizeof *s, LB_STREAM, lb_stream_close);
  /* No socket yet: uv_tcp_connect makes one of the address's family. */
  *err = uv_tcp_init(s->h.rt->loop, &s->uv.tcp);
  if (*err < 0) {
    lua_pop(L, 1); /* never opened: the collector frees it */
    return NULL;
  }
  s->uv.tcp.data = s;
  s->h.open = 1;
  return s;
}

static void lb_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  lb_stream *s = handle->data;
  (void)suggested;
  /* Reads are delivered to Lua (and copied) before the next alloc, so one
   * buffer per runtime serves every stream. */
  buf->base = s->h.rt->readbuf;
  buf->len = sizeof s->h.rt->readbuf;
}

/* Reading a fast stream. A reader faster than its writer empties the pipe at
 * every read and goes back to sleep in epoll, to be woken by the writer's
 * next write: a context switch (in a VM also an inter-processor interrupt)
 * for every few KiB, which costs a fast stream a third of its throughput. So
 * after a read that came less than LB_SPIN_NS after the previous one, the
 * loop polls without sleeping (an active idle handle) until LB_SPIN_NS pass
 * with no read, the way network drivers poll a busy NIC. A busy stream is
 * read at pipe speed; a quiet one (a log line now and then) never spins; the
 * end of a burst costs at most LB_SPIN_NS of CPU. (Gathering small reads
 * into bigger chunks for Lua was tried too: slower, from the page faults of
 * bigger short-lived strings.) */
#ifndef LB_SPIN_NS
#define LB_SPIN_NS 20000
#endif

static void lb_spin_check(uv_idle_t *idle) {
  lb_runtime *rt = idle->data;
  if (uv_hrtime() >= rt->spin_until) uv_idle_stop(idle);
}

static void lb_spin_after_read(lb_runtime *rt) {
  uint64_t now = uv_hrtime();
  uint64_t gap = now - rt->last_read;
  rt->last_read = now;
  if (gap >= LB_SPIN_NS) return;
  rt->spin_until = now + LB_SPIN_NS;
  /* Unref'd: never what keeps the loop running. Without it, reads just sleep. */
  (void)lb_runtime_idle_start(rt, &rt->spin, lb_spin_check, 0);
}

static void lb_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  lb_stream *s = stream->data;
  lb_runtime *rt = s->h.rt;
  if (nread == 0 || rt == NULL) return;
  if (nread < 0) {
    uv_read_stop(stream);
    s->reading = 0;
  } else {
    lb_spin_after_read(rt);
  }
  lua_State *T = lb_push_cb(&s->h);
  if (T) {
    if (nread > 0) {
      lua_pushlstring(T, buf->base, (size_t)nread);
      lb_call(rt, T, 1);
    } else if (nread == UV_EOF) {
      lua_pushnil(T);
      lb_call(rt, T, 1);
    } else {
      lb_error(T, (int)nread, "read");
      lb_call(rt, T, 3);
    }
  }
  if (nread < 0) lb_stream_maybe_unanchor(s);
}

/* s:read_start(fn): fn(chunk) for data, fn(nil) at EOF, fn(nil, msg, code) on error. */
static int l_read_start(lua_State *L) {
  lb_stream *s = lb_check(L, 1, LB_STREAM);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (s->h.closing) return lb_error(L, UV_EBADF, "stream is closed");
  lb_handle_set_cb(L, &s->h, 2);
  int err = uv_read_start(&s->uv.stream, lb_alloc, lb_on_read);
  if (err < 0 && err != UV_EALREADY) return lb_error(L, err, "read_start");
  s->reading = 1;
  lb_handle_anchor(L, &s->h, 1);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_read_stop(lua_State *L) {
  lb_stream *s = lb_check(L, 1, LB_STREAM);
  if (!s->h.closing) uv_read_stop(&s->uv.stream);
  s->reading = 0;
  lb_stream_maybe_unanchor(s);
  return 0;
}

/* s:try_write(data) -> bytes written now (0 when it would block), or nil, msg, code. */
static int l_try_write(lua_State *L) {
  lb_stream *s = lb_check(L, 1, LB_STREAM);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  if (s->h.closing) return lb_error(L, UV_EBADF, "stream is closed");
  if (s->writes > 0 || len == 0) { /* keep order behind queued writes */
    lua_pushinteger(L, 0);
    return 1;
  }
  uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
  int n = uv_try_write(&s->uv.stream, &buf, 1);
  if (n == UV_EAGAIN) n = 0;
  if (n < 0) return lb_error(L, n, "write");
  lua_pushinteger(L, n);
  return 1;
}

/* The callback `cb` (a registry ref, or LUA_NOREF) of a write or shutdown
 * that ended with `status`: fn(true), or fn(nil, msg, code); the ref goes. */
static void lb_stream_report(lb_runtime *rt, int cb, int status, const char *what) {
  lua_State *T = rt->cbL;
  if (cb == LUA_NOREF) return;
  lua_rawgeti(T, LUA_REGISTRYINDEX, cb);
  luaL_unref(T, LUA_REGISTRYINDEX, cb);
  if (status == 0) {
    lua_pushboolean(T, 1);
    lb_call(rt, T, 1);
  } else {
    lb_error(T, status, what);
    lb_call(rt, T, 3);
  }
}

static void lb_on_write(uv_write_t *req, int status) {
  lb_write_req *w = (lb_write_req *)req;
  lb_stream *s = w->s;
  lb_runtime *rt = s->h.rt;
  s->writes--;
  if (rt) {
    lua_State *T = rt->cbL;
    luaL_unref(T, LUA_REGISTRYINDEX, w->data_ref);
    lb_stream_report(rt, w->cb_ref, status, "write");
    lb_stream_maybe_unanchor(s);
  }
  free(w);
}

/* s:write(data, fn): fn(true) once written, fn(nil, msg, code) on failure. */
static int l_write(lua_State *L) {
  lb_stream *s = lb_check(L, 1, LB_STREAM);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TFUNCTION);
  if (s->h.closing) return lb_error(L, UV_EBADF, "stream is closed");
  lb_write_req *w = malloc(sizeof *w);
  if (w == NULL) return luaL_error(L, "baton: out of memory");
  uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
  int err = uv_write(&w->req, &s->uv.stream, &buf, 1, lb_on_write);
  if (err < 0) {
    free(w);
    return lb_error(L, err, "write");
  }
  w->s = s;
  lua_pushvalue(L, 2);
  w->data_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  w->cb_ref = LUA_NOREF;
  if (!lua_isnoneornil(L, 3)) {
    lua_pushvalue(L, 3);
    w->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  s->writes++;
  lb_handle_anchor(L, &s->h, 1);
  lua_pushboolean(L, 1);
  return 1;
}

static void lb_on_shutdown(uv_shutdown_t *req, int status) {
  lb_shutdown_req *r = (lb_shutdown_req *)req;
  lb_stream *s = r->s;
  lb_runtime *rt = s->h.rt;
  s->writes--;
  if (rt) {
    lb_stream_report(rt, r->cb_ref, status, "shutdown");
    lb_stream_maybe_unanchor(s);
  }
  free(r);
}

/* s:shutdown(fn): end the writing side once queued writes are done (a TCP
 * FIN; the reading side stays open); fn(true), or fn(nil, msg, code). */
static int l_shutdown(lua_State *L) {
  lb_stream *s = lb_check(L, 1, LB_STREAM);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  if (s->h.closing) return lb_error(L, UV_EBADF, "stream is closed");
  lb_shutdown_req *r = malloc(sizeof *r);
  if (r == NULL) return luaL_error(L, "baton: out of memory");
  int err = uv_shutdown(&r->req, &s->uv.stream, lb_on_shutdown);
  if (err < 0) {
    free(r);
    return lb_error(L, err, "shutdown");
  }
  r->s = s;
  r->cb_ref = LUA_NOREF;
  if (!lua_isnoneornil(L, 2)) {
    lua_pushvalue(L, 2);
    r->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  s->writes++;
  lb_handle_anchor(L, &s->h, 1);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_stream_close(lua_State *L) {
  lb_stream *s = lb_check(L, 1, LB_STREAM);
  s->reading = 0;
  lb_handle_close(&s->h);
  /* No callback can come any more: drop it (it may hold a lot of Lua data)
   * and the anchor, unless a cancelled write still has to report. */
  lb_handle_set_cb(L, &s->h, lua_gettop(L) + 1); /* none: clears it */
  lb_stream_maybe_unanchor(s);
  return 0;
}

static int l_stream_fileno(lua_State *L) {
  lb_stream *s = lb_check(L, 1, LB_STREAM);
  uv_os_fd_t fd;
  if (s->h.closing || uv_fileno((uv_handle_t *)&s->uv.stream, &fd) < 0)
    return lb_error(L, UV_EBADF, "fileno");
  lua_pushinteger(L, fd);
  return 1;
}

/* s:ref(on): whether reads and writes pending on the stream keep the loop
 * running (default: yes). */
static int l_stream_ref(lua_State *L) {
  lb_stream *s = lb_check(L, 1, LB_STREAM);
  if (!s->h.closing) {
    if (lua_toboolean(L, 2))
      uv_ref((uv_handle_t *)&s->uv.stream);
    else
      uv_unref((uv_handle_t *)&s->uv.stream);
  }
  return 0;
}

/* s:queued() -> bytes handed to s:write that are not written yet. */
static int l_stream_queued(lua_State *L) {
  lb_stream *s = lb_check(L, 1, LB_STREAM);
  lua_pushinteger(L, s->h.closing ? 0 : (lua_Integer)uv_stream_get_write_queue_size(&s->uv.stream));
  return 1;
}

static int l_stream_closed(lua_State *L) {
  lb_stream *s = lb_check(L, 1, LB_STREAM);
  lua_pushboolean(L, s->h.closing);
  return 1;
}

/* core.stream_open(fd) -> stream | nil, msg, code: take over a pipe fd. */
static int l_stream_open(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd > 2, 1, "refusing to take over stdin, stdout or stderr");
  int err = lb_stream_new(L, fd);
  if (err < 0) return lb_error(L, err, "stream_open");
  return 1;
}

void lb_open_stream(lua_State *L) {
  static const luaL_Reg methods[] = {{"read_start", l_read_start},
                                     {"read_stop", l_read_stop},
                                     {"write", l_write},
                                     {"try_write", l_try_write},
                                     {"close", l_stream_close},
                                     {"fileno", l_stream_fileno},
                                     {"closed", l_stream_closed},
                                     {"ref", l_stream_ref},
                                     {"shutdown", l_shutdown},
                                     {"queued", l_stream_queued},
                                     {NULL, NULL}};
  lb_newmetatable(L, LB_STREAM, methods, lb_handle_release, lb_handle_tostring);
  lua_pushcfunction(L, l_stream_open);
  lua_setfield(L, -2, "stream_open");
}
