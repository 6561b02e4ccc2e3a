/*
 * lnet.c — client-side TCP: core.tcp_connect, under baton.connect,
 * baton.http_get and the TCP and HTTP readiness probes (scripts/baton/net.lua).
 *
 * A connect makes a stream userdata (lstream.c) over a TCP handle at once and
 * returns it: that is the request, and closing it abandons the connect (the
 * socket is closed, and the callback never comes). When the connect ends, the
 * callback gets the same userdata, now a connected stream to read and write
 * like a pipe, or nil, msg, code — and then the handle is already closed.
 * Only numeric addresses: resolving names would need a cancellable lookup
 * that outlives the handle, which no probe so far needs.
 */
#include <stdlib.h>
#include <string.h>

#include "lbaton.h"

static void lb_on_connect(uv_connect_t *req, int status) {
  lb_stream *s = req->data;
  lb_runtime *rt = s->h.rt;
  free(req);
  s->connecting = 0;
  /* Closed while connecting (status UV_ECANCELED, from the close itself): the
   * close dropped the callback, and a cancelled connect reports nothing. */
  if (rt == NULL || s->h.closing) {
    if (rt) lb_stream_maybe_unanchor(s);
    return;
  }
  lua_State *T = rt->cbL;
  int cb = s->h.cb_ref;
  s->h.cb_ref = LUA_NOREF; /* one shot: read_start sets the stream's own */
  if (cb == LUA_NOREF) {
    lb_stream_maybe_unanchor(s);
    return;
  }
  lua_rawgeti(T, LUA_REGISTRYINDEX, cb);
  luaL_unref(T, LUA_REGISTRYINDEX, cb);
  if (status == 0) {
    /* Requests and answers are small here: send them at once. */
    (void)uv_tcp_nodelay(&s->uv.tcp, 1);
    lua_rawgeti(T, LUA_REGISTRYINDEX, s->h.self_ref); /* the anchored userdata */
    lb_stream_maybe_unanchor(s);
    lb_call(rt, T, 1);
  } else {
    /* Nobody else holds a failed connect's socket: close it now. */
    lb_handle_close(&s->h);
    lb_stream_maybe_unanchor(s);
    lb_error(T, status, "connect");
    lb_call(rt, T, 3);
  }
}

/* core.tcp_connect(host, port, fn) -> stream | nil, msg, code: start
 * connecting to the numeric IPv4 or IPv6 address `host`; fn(stream) once
 * connected (the stream returned), fn(nil, msg, code) when that failed. A
 * failure to start returns nil, msg, code, and fn is never called; so it is
 * not after stream:close(). */
static int l_tcp_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_argcheck(L, port > 0 && port < 65536, 2, "port out of range (1 to 65535)");
  struct sockaddr_storage addr;
  memset(&addr, 0, sizeof addr);
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&addr) != 0)
    return luaL_argerror(L, 1, "numeric IPv4 or IPv6 address expected");
  int err;
  lb_stream *s = lb_stream_new_tcp(L, &err);
  if (s == NULL) return lb_error(L, err, "socket");
  uv_connect_t *req = malloc(sizeof *req);
  if (req == NULL) {
    lb_handle_close(&s->h);
    return luaL_error(L, "baton: out of memory");
  }
  req->data = s;
  err = uv_tcp_connect(req, &s->uv.tcp, (const struct sockaddr *)&addr, lb_on_connect);
  if (err < 0) {
    free(req);
    lb_handle_close(&s->h);
    return lb_error(L, err, "connect");
  }
  s->connecting = 1;
  lb_handle_set_cb(L, &s->h, 3);
  lb_handle_anchor(L, &s->h, -1);
  return 1;
}

void lb_open_net(lua_State *L) {
  lua_pushcfunction(L, l_tcp_connect);
  lua_setfield(L, -2, "tcp_connect");
}
