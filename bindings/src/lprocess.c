/*
 * lprocess.c — core.spawn and the process userdata.
 *
 * core.spawn takes an options table already checked by the Lua layer
 * (scripts/baton/process.lua) and maps it onto bt_spawn. A running process
 * anchors its userdata; at exit its callback fires once with (code, signal,
 * core), the pidfd is released and the status stays readable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lbaton.h"

#define LB_PROCESS "baton.core.process"

typedef struct {
  lb_handle h;
  bt_process_t p;
  int adopted; /* not our child: watched only while someone waits */
  int unref;   /* not waited for by the loop: adopted, or detached */
} lb_process;

static void lb_process_closed(bt_process_t *p) {
  lb_handle_closed(p->data);
}
static void lb_process_close(lb_handle *h) {
  lb_process *lp = (lb_process *)h;
  /* Collected while the child runs: a running child is anchored until it
   * exits, so this is the Lua state closing (plain lua5.4 ending, a host
   * closing its state). Nothing baton started outlives it unless detached
   * (unref'd): KILL it and the group it leads, and reap it. Its pid cannot
   * have been reused: it is our child, not yet reaped. */
  if (h->collected && !lp->adopted && !lp->unref && !lp->p.exited && lp->p.pid > 0) {
    kill(-lp->p.pid, SIGKILL); /* ESRCH unless it leads a group */
    bt_process_kill(&lp->p, SIGKILL);
    while (waitpid(lp->p.pid, NULL, 0) < 0 && errno == EINTR) {
    }
  }
  bt_process_close(&lp->p, lb_process_closed);
}

static void lb_on_exit(bt_process_t *p) {
  lb_process *lp = p->data;
  lb_runtime *rt = lp->h.rt;
  if (rt == NULL) return;
  lua_State *T = lb_push_cb(&lp->h);
  if (T) {
    if (p->term_signal || !p->status_known)
      lua_pushnil(T);
    else
      lua_pushinteger(T, p->exit_code);
    if (p->term_signal)
      lua_pushinteger(T, p->term_signal);
    else
      lua_pushnil(T);
    lua_pushboolean(T, p->core_dumped);
    lua_pushboolean(T, p->status_known);
    lb_call(rt, T, 4);
  }
  luaL_unref(rt->cbL, LUA_REGISTRYINDEX, lp->h.cb_ref);
  lp->h.cb_ref = LUA_NOREF;
  lb_handle_unanchor(rt->cbL, &lp->h);
  lb_handle_close(&lp->h); /* releases the pidfd now, not at collection */
}

/* A NULL-terminated copy of the strings of the array at `idx`, in one block. */
static char **lb_strv(lua_State *L, int idx, const char *what) {
  lua_Integer n = luaL_len(L, idx);
  char **v = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_geti(L, idx, i) != LUA_TSTRING)
      luaL_error(L, "baton: %s[%d] must be a string", what, (int)i);
    v[i - 1] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1); /* the string stays alive: it is in the table */
  }
  v[n] = NULL;
  return v;
}

/* Storage for one options table's arrays, on the C stack of the caller. */
typedef struct {
  bt_stdio_t stdio[BT_MAX_STDIO];
  bt_rlimit_t rlimits[16];
  gid_t groups[64];
  const char *cgroup; /* the group's directory; opened just before the spawn */
} lb_spawn_storage;

/* A uid or gid the kernel takes as such: not -1 ("unchanged"), no wrap-around. */
static lua_Integer lb_checkid(lua_State *L, lua_Integer id, const char *key) {
  if (id < 0 || id >= 0xffffffffLL) luaL_error(L, "baton: option '%s': id out of range", key);
  return id;
}

static lua_Integer lb_optint(lua_State *L, int t, const char *key, int *present) {
  lua_getfield(L, t, key);
  *present = lua_isinteger(L, -1);
  lua_Integer v = *present ? lua_tointeger(L, -1) : 0;
  if (!*present && !lua_isnil(L, -1)) luaL_error(L, "baton: option '%s' must be an integer", key);
  lua_pop(L, 1);
  return v;
}

/*
 * Read the normalized options table at `t` into `o`: argv=, file=, env=,
 * cwd=, stdio={spec for fd 0, fd 1, ...}, setsid=, listen_pid=, pgid=, umask=, uid=, gid=,
 * groups={...}, nice=, rlimits={{res, cur, max}, ...}, pdeathsig=, cgroup=.
 * A stdio spec is "inherit", "null", "close", "pipe", an fd number or
 * {same = k}. Strings stay owned by the table; arrays go to `st` and to
 * userdata pushed on the stack (the caller keeps the stack until done).
 */
static void lb_spawn_options(lua_State *L, int t, bt_spawn_options_t *o, lb_spawn_storage *st) {
  static const char *const kinds[] = {"inherit", "null", "close", "pipe", NULL};
  static const bt_stdio_type map[] = {BT_STDIO_INHERIT, BT_STDIO_NULL, BT_STDIO_CLOSE,
                                      BT_STDIO_PIPE};
  int present;
  memset(o, 0, sizeof *o);
  luaL_checktype(L, t, LUA_TTABLE);

  lua_getfield(L, t, "argv");
  luaL_argcheck(L, lua_istable(L, -1), 1, "argv must be a table");
  o->argv = lb_strv(L, lua_gettop(L), "argv"); /* pushes the vector */
  luaL_argcheck(L, o->argv[0] != NULL, 1, "argv is empty");
  lua_getfield(L, t, "file");
  o->file = lua_tostring(L, -1);
  lua_getfield(L, t, "env");
  if (lua_istable(L, -1)) o->env = lb_strv(L, lua_gettop(L), "env");
  lua_getfield(L, t, "cwd");
  o->cwd = lua_tostring(L, -1);

  lua_getfield(L, t, "setsid");
  if (lua_toboolean(L, -1)) o->flags |= BT_SPAWN_SETSID;
  lua_pop(L, 1);
  lua_getfield(L, t, "listen_pid"); /* LISTEN_PID=<the child's pid> in its env */
  if (lua_toboolean(L, -1)) o->flags |= BT_SPAWN_LISTEN_PID;
  lua_pop(L, 1);
  o->pgid = (pid_t)lb_optint(L, t, "pgid", &present);
  if (present) o->flags |= BT_SPAWN_SETPGID;
  o->umask = (mode_t)lb_optint(L, t, "umask", &present);
  if (present) o->flags |= BT_SPAWN_UMASK;
  lua_Integer id = lb_optint(L, t, "uid", &present);
  if (present) o->uid = (uid_t)lb_checkid(L, id, "uid"), o->flags |= BT_SPAWN_SETUID;
  id = lb_optint(L, t, "gid", &present);
  if (present) o->gid = (gid_t)lb_checkid(L, id, "gid"), o->flags |= BT_SPAWN_SETGID;
  o->nice = (int)lb_optint(L, t, "nice", &present);
  if (present) o->flags |= BT_SPAWN_NICE;
  o->pdeathsig = (int)lb_optint(L, t, "pdeathsig", &present);
  lua_getfield(L, t, "cgroup");
  st->cgroup = lua_tostring(L, -1); /* stays alive: it is in the table */
  lua_pop(L, 1);

  if (lua_getfield(L, t, "groups") == LUA_TTABLE) {
    int n = (int)luaL_len(L, -1);
    luaL_argcheck(L, n <= 64, 1, "too many groups (64 at most)");
    for (int i = 0; i < n; i++) {
      lua_geti(L, -1, i + 1);
      st->groups[i] = (gid_t)lb_checkid(L, luaL_checkinteger(L, -1), "groups");
      lua_pop(L, 1);
    }
    o->groups = st->groups;
    o->ngroups = n;
    o->flags |= BT_SPAWN_SETGROUPS;
  }
  lua_pop(L, 1);

  if (lua_getfield(L, t, "rlimits") == LUA_TTABLE) {
    int n = (int)luaL_len(L, -1);
    luaL_argcheck(L, n <= 16, 1, "too many rlimits");
    for (int i = 0; i < n; i++) {
      lua_geti(L, -1, i + 1);
      lua_geti(L, -1, 1);
      lua_geti(L, -2, 2);
      lua_geti(L, -3, 3);
      st->rlimits[i].resource = (int)luaL_checkinteger(L, -3);
      st->rlimits[i].cur = lua_tointeger(L, -2) < 0 ? RLIM_INFINITY : (rlim_t)lua_tointeger(L, -2);
      st->rlimits[i].max = lua_tointeger(L, -1) < 0 ? RLIM_INFINITY : (rlim_t)lua_tointeger(L, -1);
      lua_pop(L, 4);
    }
    o->rlimits = st->rlimits;
    o->nrlimits = n;
  }
  lua_pop(L, 1);

  lua_getfield(L, t, "stdio");
  int n = lua_istable(L, -1) ? (int)luaL_len(L, -1) : 0;
  luaL_argcheck(L, n <= BT_MAX_STDIO, 1, "too many fds (64 at most)");
  for (int i = 0; i < n; i++) {
    lua_geti(L, -1, i + 1);
    st->stdio[i].flags = 0;
    st->stdio[i].fd = -1;
    if (lua_isinteger(L, -1)) {
      st->stdio[i].type = BT_STDIO_FD;
      st->stdio[i].fd = (int)lua_tointeger(L, -1);
    } else if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "same");
      st->stdio[i].type = BT_STDIO_SAME;
      st->stdio[i].fd = (int)luaL_checkinteger(L, -1);
      lua_pop(L, 1);
    } else {
      st->stdio[i].type = map[luaL_checkoption(L, -1, NULL, kinds)];
      /* Pipes at fds above 2 carry data out of the child unless asked otherwise. */
      if (st->stdio[i].type == BT_STDIO_PIPE && i > 2) st->stdio[i].flags = BT_PIPE_CHILD_WRITES;
    }
    lua_pop(L, 1);
  }
  o->stdio = st->stdio;
  o->nstdio = n;
}

/* Open the group of the `cgroup` option for `o` (BT_SPAWN_CGROUP). Returns 0
 * or a negative errno with `p->stage` set; lb_cgroup_close closes it. Done
 * right before the spawn, once nothing can raise and leak the fd. */
static int lb_cgroup_open(bt_spawn_options_t *o, const lb_spawn_storage *st, bt_process_t *p) {
  if (st->cgroup == NULL) return 0;
  int fd = bt_cgroup_open(st->cgroup);
  if (fd < 0) {
    p->stage = BT_STAGE_CGROUP;
    return fd;
  }
  o->flags |= BT_SPAWN_CGROUP;
  o->cgroup_fd = fd;
  return 0;
}

static void lb_cgroup_close(bt_spawn_options_t *o) {
  if (o->flags & BT_SPAWN_CGROUP) close(o->cgroup_fd);
  o->flags &= ~(unsigned)BT_SPAWN_CGROUP;
}

/* The failure of a spawn or exec: the error triple every call returns
 * (nil, "ENAME: message (stage)", "ENAME"), and what the Lua layer words its
 * message from: {stage = "exec"…, path = the program looked up, strerror}. */
static int lb_spawn_fail(lua_State *L, int err, bt_process_t *p) {
  const char *stage = bt_stage_name(p->stage);
  lb_error(L, err, stage);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, stage);
  lua_setfield(L, -2, "stage");
  lua_pushstring(L, p->path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, bt_strerror(err));
  lua_setfield(L, -2, "strerror");
  return 4;
}

/*
 * core.spawn(options) -> proc, {[fd] = stream} | nil, msg, code, {stage, path, strerror}
 */
static int l_spawn(lua_State *L) {
  bt_spawn_options_t o;
  lb_spawn_storage st;
  lua_settop(L, 1);
  lb_spawn_options(L, 1, &o, &st);

  lb_process *lp = lb_new(L, sizeof *lp, LB_PROCESS, lb_process_close);
  int ud = lua_gettop(L);
  lp->p.data = lp;
  int err = lb_cgroup_open(&o, &st, &lp->p);
  if (err < 0) return lb_spawn_fail(L, err, &lp->p);
  err = bt_spawn(lp->h.rt->loop, &lp->p, &o, lb_on_exit);
  lb_cgroup_close(&o);
  if (err < 0) return lb_spawn_fail(L, err, &lp->p);
  lp->h.open = 1;
  lb_handle_anchor(L, &lp->h, ud);

  lua_createtable(L, 0, 3); /* the parent's pipe ends, by child fd */
  int pipes = lua_gettop(L);
  for (int i = 0; i < o.nstdio; i++) {
    if (st.stdio[i].type != BT_STDIO_PIPE) continue;
    err = lb_stream_new(L, st.stdio[i].fd);
    if (err < 0) {
      /* The child runs; the caller sees an error and must not lose it. */
      for (int j = i + 1; j < o.nstdio; j++)
        if (st.stdio[j].type == BT_STDIO_PIPE) close(st.stdio[j].fd);
      bt_process_kill(&lp->p, SIGKILL);
      lp->p.stage = BT_STAGE_SETUP;
      return lb_spawn_fail(L, err, &lp->p);
    }
    lua_seti(L, pipes, i);
  }
  lua_pushvalue(L, ud);
  lua_pushvalue(L, pipes);
  return 2;
}

/* core.exec(options): returns only on failure, as core.spawn does. */
static int l_exec(lua_State *L) {
  bt_spawn_options_t o;
  lb_spawn_storage st;
  bt_process_t info;
  lua_settop(L, 1);
  lb_spawn_options(L, 1, &o, &st);
  fflush(NULL); /* what Lua buffered must not be lost with the process image */
  memset(&info, 0, sizeof info);
  int err = lb_cgroup_open(&o, &st, &info);
  if (err == 0) err = bt_exec(&o, &info);
  lb_cgroup_close(&o);
  return lb_spawn_fail(L, err, &info);
}

/* core.adopt(pid) -> proc | nil, msg, code */
static int l_adopt(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  lb_process *lp = lb_new(L, sizeof *lp, LB_PROCESS, lb_process_close);
  int ud = lua_gettop(L);
  lp->p.data = lp;
  int err = bt_process_open(lp->h.rt->loop, &lp->p, (pid_t)pid, lb_on_exit);
  if (err < 0) return lb_error(L, err, "pidfd_open");
  lp->h.open = 1;
  lp->adopted = 1;
  lb_handle_anchor(L, &lp->h, ud);
  lua_pushvalue(L, ud);
  return 1;
}

/* core.descendants(pid) -> {pid…} (breadth first) | nil, msg, code */
static int l_descendants(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  luaL_argcheck(L, pid > 0 && pid <= INT32_MAX, 1, "positive pid expected");
  int max = 4096;
  pid_t *out = malloc((size_t)max * sizeof *out);
  if (out == NULL) return lb_error(L, -ENOMEM, "descendants");
  int n = bt_proc_descendants((pid_t)pid, out, max);
  if (n < 0) {
    free(out);
    return lb_error(L, n, "descendants");
  }
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushinteger(L, out[i]);
    lua_rawseti(L, -2, i + 1);
  }
  free(out);
  return 1;
}

/* core.kill(pid, sig) -> true | nil, msg, code: a plain kill(2), for
 * processes baton holds no handle of (a service's descendants). */
static int l_kill_pid(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  int sig = (int)luaL_checkinteger(L, 2);
  luaL_argcheck(L, pid > 1 && pid <= INT32_MAX, 1, "invalid pid");
  if (kill((pid_t)pid, sig) < 0) return lb_error(L, -errno, "kill");
  lua_pushboolean(L, 1);
  return 1;
}

/* core.killpg(pgid, sig) -> true | nil, msg, code */
static int l_killpg(lua_State *L) {
  lua_Integer pgid = luaL_checkinteger(L, 1);
  int sig = (int)luaL_checkinteger(L, 2);
  luaL_argcheck(L, pgid > 1, 1, "invalid process group");
  if (kill(-(pid_t)pgid, sig) < 0) return lb_error(L, -errno, "killpg");
  lua_pushboolean(L, 1);
  return 1;
}

static int l_proc_pid(lua_State *L) {
  lb_process *lp = lb_check(L, 1, LB_PROCESS);
  lua_pushinteger(L, lp->p.pid);
  return 1;
}

static int l_proc_path(lua_State *L) {
  lb_process *lp = lb_check(L, 1, LB_PROCESS);
  lua_pushstring(L, lp->p.path);
  return 1;
}

/* p:kill(signum) -> true | nil, msg, code ("ESRCH" once reaped) */
static int l_proc_kill(lua_State *L) {
  lb_process *lp = lb_check(L, 1, LB_PROCESS);
  int sig = (int)luaL_checkinteger(L, 2);
  int err = bt_process_kill(&lp->p, sig);
  if (err < 0) return lb_error(L, err, err == -ESRCH ? "process already exited" : "kill");
  lua_pushboolean(L, 1);
  return 1;
}

/* p:ref(on): whether watching the process keeps the loop running. An
 * adopted process is also anchored only while on: unwatched and no longer
 * referred to, it is collected and its pidfd closed. (Our own children stay
 * anchored until reaped, or they would be left as zombies.) */
static int l_proc_ref(lua_State *L) {
  lb_process *lp = lb_check(L, 1, LB_PROCESS);
  int on = lua_toboolean(L, 2);
  bt_process_ref(&lp->p, on);
  lp->unref = !on;
  if (lp->adopted && lp->h.open) {
    if (on)
      lb_handle_anchor(L, &lp->h, 1);
    else
      lb_handle_unanchor(L, &lp->h);
  }
  return 0;
}

/* p:own() -> boolean: an adopted process that is a child the previous image
 * of this program handed over (claimed: reexec.c) becomes ours as if spawned
 * here — anchored until reaped, and KILLed with the group it leads if the
 * Lua state closes while it runs (os.exit), as the first image would have.
 * false (nothing changes) for any other adopted process. */
static int l_proc_own(lua_State *L) {
  lb_process *lp = lb_check(L, 1, LB_PROCESS);
  if (!lp->adopted) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (!lp->p.owned_ || !lp->h.open || lp->p.exited) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lp->adopted = 0;
  lp->unref = 0; /* (killed at a close even before a task waits for it) */
  lb_handle_anchor(L, &lp->h, 1);
  lua_pushboolean(L, 1);
  return 1;
}

/* p:release(): stop watching; the process itself is left alone. */
static int l_proc_release(lua_State *L) {
  lb_process *lp = lb_check(L, 1, LB_PROCESS);
  lb_handle_close(&lp->h);
  lb_handle_set_cb(L, &lp->h, lua_gettop(L) + 1); /* no exit callback will come */
  lb_handle_unanchor(L, &lp->h);
  return 0;
}

/* p:rusage() -> {maxrss = KiB, utime = s, stime = s} | nil (not reaped, or unknown) */
static int l_proc_rusage(lua_State *L) {
  lb_process *lp = lb_check(L, 1, LB_PROCESS);
  if (!lp->p.exited || !lp->p.status_known) return 0;
  const struct rusage *ru = &lp->p.rusage;
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, ru->ru_maxrss);
  lua_setfield(L, -2, "maxrss");
  lua_pushnumber(L, (lua_Number)ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6);
  lua_setfield(L, -2, "utime");
  lua_pushnumber(L, (lua_Number)ru->ru_stime.tv_sec + ru->ru_stime.tv_usec / 1e6);
  lua_setfield(L, -2, "stime");
  return 1;
}

/* p:on_exit(fn): fn(code, signal, core, status_known) once, from the loop. */
static int l_proc_on_exit(lua_State *L) {
  lb_process *lp = lb_check(L, 1, LB_PROCESS);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!lp->p.exited) lb_handle_set_cb(L, &lp->h, 2);
  return 0;
}

void lb_open_process(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"pid", l_proc_pid},         {"path", l_proc_path},       {"kill", l_proc_kill},
      {"rusage", l_proc_rusage},   {"on_exit", l_proc_on_exit}, {"ref", l_proc_ref},
      {"release", l_proc_release}, {"own", l_proc_own},         {NULL, NULL}};
  lb_newmetatable(L, LB_PROCESS, methods, lb_handle_release, lb_handle_tostring);
  static const luaL_Reg funcs[] = {{"spawn", l_spawn},
                                   {"exec", l_exec},
                                   {"adopt", l_adopt},
                                   {"killpg", l_killpg},
                                   {"descendants", l_descendants},
                                   {"kill", l_kill_pid},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
