/*
 * lbaton.h — private helpers shared by the files of the `baton.core` Lua
 * module (bindings/src) and the `baton` executable (bindings/cli). Hosts use
 * the public header, bindings/include/baton_lua.h, and nothing from here.
 *
 * Where things are: lmodule.c the entry points and the embedded Lua layer;
 * lhandle.c the runtime, handle lifetimes, metatables and callbacks; lutil.c
 * lb_error and the small lookups; lloop.c running the loop and core.defer;
 * then one file per Lua-visible type or group of functions: lprocess.c,
 * lstream.c, lnet.c, ltimer.c, lsignal.c, lfd.c, luser.c, lrlimit.c,
 * lreaper.c, lcgroup.c, lnotify.c, lfile.c, llisten.c.
 *
 * Every Lua-visible handle (process, stream, timer) is a small userdata that
 * points at a malloc'd struct starting with an lb_handle. The struct outlives
 * the userdata when libuv still needs it (a close in flight) and is freed when
 * both the userdata is collected and the uv handle is closed. While a handle is
 * active (a child running, a read or write pending, a timer armed) it anchors
 * its userdata in the registry, so Lua never collects what the kernel still
 * refers to. Callbacks run on one dedicated Lua thread under lua_pcall; an
 * error there goes to the handler set with core.set_error_handler.
 */
#ifndef LBATON_H
#define LBATON_H

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "baton.h"
#include "baton_lua.h"

#ifndef LB_READBUF_SIZE
#define LB_READBUF_SIZE (1024 * 1024) /* reads of 1 MiB: fewer, larger chunks for Lua */
#endif

/* Registry key of the function core.set_error_handler sets (see lb_call). */
#define LB_ONERROR "baton.onerror"

typedef struct lb_handle lb_handle;
typedef struct lb_runtime lb_runtime;

struct lb_runtime {
  uv_loop_t *loop;
  uv_loop_t own_loop;
  int owns_loop;
  int *luv_mode;      /* luv's loop: its run mode, -1 when luv's uv.run is not running */
  int running;        /* inside uv_run */
  lua_State *cbL;     /* the thread callbacks run on */
  lb_handle *handles; /* every open handle, for closing at state close */
  uv_idle_t *spin;    /* active while output streams in: poll, don't sleep */
  uv_idle_t *defer;   /* active while core.defer has functions to run */
  uint64_t last_read, spin_until; /* uv_hrtime of the last read; end of the spin */
  uv_async_t intr;                /* wakes a blocking wait on SIGINT (see lloop.c) */
  int intr_ready;                 /* intr was initialised */
  int owns_signals;               /* the baton executable handles SIGINT itself */
  char readbuf[LB_READBUF_SIZE];  /* one read of a full output pipe */
};

struct lb_handle {
  lb_runtime *rt;
  lb_handle *prev, *next;
  int self_ref;                /* anchors the userdata while active, else LUA_NOREF */
  int cb_ref;                  /* the main callback, or LUA_NOREF */
  int collected;               /* the userdata is gone */
  int open;                    /* the uv handle is open or closing */
  int closing;                 /* uv_close was called */
  void (*close)(lb_handle *h); /* starts closing the uv handle */
};

/* The runtime of the state, created on first use. */
lb_runtime *lb_runtime_get(lua_State *L);

/*
 * Register the metatable of a userdata type `tname` (liolib's pattern):
 * __name = tname (what "bad argument #1 (tname expected)" names), __index =
 * a table of `methods` (none when NULL), __gc and __close = one closure of
 * `release`, __tostring = a closure of `tostring`; both closures get tname as
 * upvalue 1. `release` must be idempotent: a to-be-closed variable is closed,
 * then collected. Leaves the stack as it was.
 */
void lb_newmetatable(lua_State *L, const char *tname, const luaL_Reg *methods,
                     lua_CFunction release, lua_CFunction tostring);

/* Handle bookkeeping. */
void lb_handle_init(lua_State *L, lb_handle *h, void (*close)(lb_handle *));
void lb_handle_anchor(lua_State *L, lb_handle *h, int ud_index);
void lb_handle_unanchor(lua_State *L, lb_handle *h);
void lb_handle_set_cb(lua_State *L, lb_handle *h, int fn_index);
void lb_handle_closed(lb_handle *h); /* from the uv close callback: may free h */
void lb_handle_close(lb_handle *h);  /* start closing once; idempotent */
/* __gc and __close (one function), and __tostring, of every handle type: pass
 * them to lb_newmetatable, which gives them the type name as upvalue 1. */
int lb_handle_release(lua_State *L);
int lb_handle_tostring(lua_State *L);
void *lb_check(lua_State *L, int idx, const char *tname); /* the live struct, or raises */
void *lb_new(lua_State *L, size_t size, const char *tname, void (*close)(lb_handle *));

/* Push the callback of `h` on the callback thread; returns that thread, or NULL
 * when there is no callback. Then push arguments and call lb_call. */
lua_State *lb_push_cb(lb_handle *h);
void lb_call(lb_runtime *rt, lua_State *T, int nargs);
/* lb_call keeping `nresults` results: returns 1 with them on T in place of
 * the function and its arguments, or 0 after an error (reported as lb_call
 * does), with the function and its arguments gone. */
int lb_pcall(lb_runtime *rt, lua_State *T, int nargs, int nresults);
/* Message handler for lua_pcall: the error (or its __tostring) with a traceback. */
int lb_traceback(lua_State *L);

/* Push nil, "ENAME: message", "ENAME" and return 3 (err is a negative errno). */
int lb_error(lua_State *L, int err, const char *what);

/* Start the runtime's idle handle in `*slot` (created on first use; closed
 * with the runtime) with `cb`; `ref`: whether it keeps the loop running.
 * Returns 0, or a negative errno when it cannot be created. */
int lb_runtime_idle_start(lb_runtime *rt, uv_idle_t **slot, uv_idle_cb cb, int ref);

/* Registration, one per file: each adds its functions to the `baton.core`
 * table on top of the stack (and its userdata's metatable to the registry).
 * lmodule.c lists which file adds what. */
void lb_open_loop(lua_State *L);    /* lloop.c */
void lb_open_util(lua_State *L);    /* lutil.c */
void lb_open_process(lua_State *L); /* lprocess.c */
void lb_open_stream(lua_State *L);  /* lstream.c */
void lb_open_timer(lua_State *L);   /* ltimer.c */
void lb_open_signal(lua_State *L);  /* lsignal.c */
void lb_open_fd(lua_State *L);      /* lfd.c */
void lb_open_user(lua_State *L);    /* luser.c */
void lb_open_rlimit(lua_State *L);  /* lrlimit.c */
void lb_open_reaper(lua_State *L);  /* lreaper.c */
void lb_open_notify(lua_State *L);  /* lnotify.c */
void lb_open_cgroup(lua_State *L);  /* lcgroup.c */
void lb_open_net(lua_State *L);     /* lnet.c */
void lb_open_file(lua_State *L);    /* lfile.c */
void lb_open_listen(lua_State *L);  /* llisten.c */
void lb_open_reexec(lua_State *L);  /* lreexec.c */

/* A byte stream (lstream.c): a pipe, or a TCP socket (lnet.c connects it).
 * libuv's stream functions take either through `uv.stream`. */
typedef struct {
  lb_handle h;
  union {
    uv_stream_t stream;
    uv_pipe_t pipe;
    uv_tcp_t tcp;
  } uv;
  int reading;    /* read_start was called, and no EOF or error came since */
  int writes;     /* writes and shutdowns whose callback has not come */
  int connecting; /* a connect whose callback has not come (lnet.c) */
} lb_stream;

/* A stream userdata over `fd` (taken over: closed with the stream); pushed. */
int lb_stream_new(lua_State *L, int fd);
/* A stream userdata over a TCP handle with no socket yet, pushed; NULL (and
 * nothing pushed) when the handle cannot be made, with *err set. */
lb_stream *lb_stream_new_tcp(lua_State *L, int *err);
/* Let go of the anchor once nothing is pending on the stream. */
void lb_stream_maybe_unanchor(lb_stream *s);

/* Register "baton.core" and the embedded Lua modules in package.preload (the
 * executable does this instead of loading `baton` through luaopen_baton). */
void lb_preload(lua_State *L);

#endif
