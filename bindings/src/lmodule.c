/*
 * lmodule.c — the entry points: luaopen_baton_core builds the `baton.core`
 * table from every file of the module, luaopen_baton runs the Lua layer (the
 * modules of scripts/baton, embedded at build time), and lb_preload makes
 * those embedded modules requirable.
 *
 * `baton.core` is the thin C layer; `baton` (scripts/baton/init.lua) is what
 * scripts use. luaopen_baton is what lua5.4 calls for `require "baton"` when
 * it finds baton.so.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>

#include "lbaton.h"

/* Where each function of `baton.core` comes from. Every opener adds its
 * functions to the table on top of the stack and registers the metatable of
 * its userdata type, if it has one. */
static void (*const lb_openers[])(lua_State *L) = {
    /* lloop.c: run stop running host_loop alive handles set_error_handler defer */
    lb_open_loop,
    /* lutil.c: now signum signame errname strerror lookpath fileno environ cwd getpid maxrss */
    lb_open_util,
    /* lprocess.c: spawn exec adopt killpg; the process userdata */
    lb_open_process,
    /* lstream.c: stream_open; the stream userdata */
    lb_open_stream,
    /* lnet.c: tcp_connect (its streams are lstream.c's) */
    lb_open_net,
    /* llisten.c: listen socket_info unlink_socket */
    lb_open_listen,
    /* ltimer.c: timer; the timer userdata */
    lb_open_timer,
    /* lsignal.c: signal_watch; the signal watcher userdata */
    lb_open_signal,
    /* lfd.c: pipe setblocking close */
    lb_open_fd,
    /* luser.c: user group */
    lb_open_user,
    /* lrlimit.c: RLIMIT */
    lb_open_rlimit,
    /* lreaper.c: reaper set_subreaper; the reaper userdata */
    lb_open_reaper,
    /* lcgroup.c: cgroup_self cgroup_create cgroup_enable cgroup_set cgroup_get cgroup_kill
     * cgroup_populated cgroup_oom_kills cgroup_remove */
    lb_open_cgroup,
    /* lnotify.c: notify_listen sd_notify proc_stat; the notify listener userdata */
    lb_open_notify,
    /* lfile.c: append_open realtime; the append file userdata (baton.logfile's) */
    lb_open_file,
    /* lreexec.c: memfd readlink read_fd cloexec reexec reexec_claim reexec_unclaim reexec_resume
     * reexec_take */
    lb_open_reexec,
};

int luaopen_baton_core(lua_State *L) {
  lb_runtime_get(L);
  /* Writing to a pipe whose reader left must be an EPIPE error, not death. */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  luaL_checkversion(L);
  lua_createtable(L, 0, 48);
  for (size_t i = 0; i < sizeof lb_openers / sizeof lb_openers[0]; i++)
    lb_openers[i](L);
  lua_pushstring(L, BATON_VERSION_STRING);
  lua_setfield(L, -2, "version");
  return 1;
}

/* ---- embedded Lua layer ------------------------------------------------------------ */

/* The table cmake/embed.cmake generates: one entry per module, then NULLs. */
struct lb_embedded {
  const char *name, *chunkname, *code;
  size_t len;
};
extern const struct lb_embedded lb_embedded_lua[];

static int lb_load_embedded(lua_State *L) {
  const struct lb_embedded *m = lua_touserdata(L, lua_upvalueindex(1));
  if (luaL_loadbuffer(L, m->code, m->len, m->chunkname) != LUA_OK) return lua_error(L);
  lua_pushstring(L, m->name);
  lua_call(L, 1, 1);
  return 1;
}

void lb_preload(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_baton_core);
  lua_setfield(L, -2, "baton.core");
  for (const struct lb_embedded *m = lb_embedded_lua; m->name; m++) {
    lua_pushlightuserdata(L, (void *)m);
    lua_pushcclosure(L, lb_load_embedded, 1);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
}

int luaopen_baton(lua_State *L) {
  lb_preload(L);
  const struct lb_embedded *m = lb_embedded_lua;
  while (m->name && strcmp(m->name, "baton") != 0)
    m++;
  if (m->name == NULL) return luaL_error(L, "baton: the Lua layer is missing from this build");
  lua_pushlightuserdata(L, (void *)m);
  lua_pushcclosure(L, lb_load_embedded, 1);
  lua_call(L, 0, 1);
  return 1;
}
