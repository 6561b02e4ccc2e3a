/*
 * spawn.c — start a child with clone(CLONE_VM|CLONE_VFORK) and execve.
 *
 * Why not fork or uv_spawn: fork copies the parent's page tables, so its cost
 * grows with the orchestrator's memory; CLONE_VM shares them and CLONE_VFORK
 * suspends the parent until the child has exec'd or exited. Because memory is
 * shared during that window, the child reports an exec failure by writing its
 * errno into the parent's `child_args` (the parent reads it once resumed),
 * which needs no extra pipe and no extra syscalls on the hot path.
 *
 * Hazards of running on the parent's memory, and how they are handled:
 *  - signal handlers of the parent could run in the child and corrupt shared
 *    state: the parent blocks every signal around clone(), and the child resets
 *    every disposition to default before it unblocks anything;
 *  - libc and sanitizer interceptors may take locks or touch thread state: the
 *    child makes raw system calls only and is built without instrumentation;
 *  - the child runs on its own small stack, one kept per spawning thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

#define BT_CHILD_STACK (64 * 1024)
#define BT_SRC_CLOSE (-1)
#define BT_SRC_NULL (-2)
#define BT_SRC_SAME (-100) /* BT_SRC_SAME - k: the same file as child fd k */

extern char **environ;

typedef struct {
  const bt_spawn_options_t *opts;
  const char *path;
  char *const *envp;
  int src[BT_MAX_STDIO]; /* parent fd for each child fd, or BT_SRC_* */
  int inherit[BT_MAX_STDIO];
  int err;               /* written by the child on failure */
  bt_stage stage;
} child_args;

#if defined(__clang__) || defined(__GNUC__)
#define BT_NO_SANITIZE __attribute__((no_sanitize("address", "undefined"), noinline))
#else
#define BT_NO_SANITIZE
#endif

/* Runs in the child, on the parent's memory. Raw syscalls only; never returns. */
BT_NO_SANITIZE static int child_main(void *arg) {
  child_args *a = arg;
  const bt_spawn_options_t *o = a->opts;
  int n = o->nstdio;
  int tmp[BT_MAX_STDIO];
  long r;

  /* A zeroed kernel sigaction is SIG_DFL with no flags and an empty mask. */
  unsigned long ksa[4] = {0, 0, 0, 0};
  for (int s = 1; s < 65; s++)
    if (s != SIGKILL && s != SIGSTOP) syscall(SYS_rt_sigaction, s, ksa, NULL, 8);

  a->stage = BT_STAGE_PGRP;
  if (o->flags & BT_SPAWN_SETSID) {
    if (syscall(SYS_setsid) < 0) goto fail;
  } else if (o->flags & BT_SPAWN_SETPGID) {
    if (syscall(SYS_setpgid, 0, o->pgid) < 0) goto fail;
  }

  /* Move every source above the target range first, so that no dup2 below can
   * clobber a source that another target still needs. */
  a->stage = BT_STAGE_STDIO;
  for (int i = 0; i < n; i++) {
    int src = a->src[i];
    tmp[i] = -1;
    if (src == BT_SRC_CLOSE) continue;
    if (src <= BT_SRC_SAME) {
      int k = BT_SRC_SAME - src;
      if (tmp[k] < 0) continue; /* same as a closed fd: closed */
      r = syscall(SYS_fcntl, tmp[k], F_DUPFD_CLOEXEC, n);
    } else if (src == BT_SRC_NULL) {
      r = syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR | O_CLOEXEC);
      if (r < 0) goto fail;
      src = (int)r;
      r = syscall(SYS_fcntl, src, F_DUPFD_CLOEXEC, n);
      syscall(SYS_close, src);
    } else {
      r = syscall(SYS_fcntl, src, F_DUPFD_CLOEXEC, n);
      if (r < 0 && errno == EBADF && a->inherit[i]) continue; /* closed in the parent */
    }
    if (r < 0) goto fail;
    tmp[i] = (int)r;
  }
  for (int i = 0; i < n; i++) {
    if (tmp[i] < 0)
      syscall(SYS_close, i);
    else if (syscall(SYS_dup2, tmp[i], i) < 0) /* dup2 clears FD_CLOEXEC on i */
      goto fail;
  }
  if (syscall(SYS_close_range, n, ~0U, 0) < 0) {
    struct rlimit rl = {1024, 1024};
    syscall(SYS_getrlimit, RLIMIT_NOFILE, &rl);
    for (unsigned long fd = (unsigned long)n; fd < rl.rlim_cur && fd < 65536; fd++)
      syscall(SYS_close, fd);
  }

  a->stage = BT_STAGE_CHDIR;
  if (o->cwd && syscall(SYS_chdir, o->cwd) < 0) goto fail;

  unsigned long empty = 0;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, 8);

  a->stage = BT_STAGE_EXEC;
  syscall(SYS_execve, a->path, o->argv, a->envp);
fail:
  a->err = errno ? errno : EINVAL;
  syscall(SYS_exit, 127);
  return 127;
}

static const char *bt__env_path(char *const *env) {
  if (env == NULL) return getenv("PATH");
  for (char *const *e = env; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0) return *e + 5;
  return NULL;
}

static void bt__close_pipes(const bt_spawn_options_t *o, child_args *a, int parent_too) {
  for (int i = 0; i < o->nstdio; i++) {
    if (o->stdio[i].type != BT_STDIO_PIPE) continue;
    if (a->src[i] >= 0) close(a->src[i]);
    a->src[i] = BT_SRC_CLOSE;
    if (parent_too && o->stdio[i].fd >= 0) {
      close(o->stdio[i].fd);
      o->stdio[i].fd = -1;
    }
  }
}


int bt_spawn(uv_loop_t *loop, bt_process_t *proc, const bt_spawn_options_t *o,
             bt_exit_cb exit_cb) {
  child_args a;
  int err;

  proc->pid = 0;
  proc->pidfd = -1;
  proc->exited = 0;
  proc->exit_code = -1;
  proc->term_signal = 0;
  proc->core_dumped = 0;
  proc->stage = BT_STAGE_SETUP;
  proc->path[0] = '\0';
  proc->closing_ = 0;

  if (o == NULL || o->argv == NULL || o->argv[0] == NULL || o->nstdio < 0 ||
      o->nstdio > BT_MAX_STDIO || (o->nstdio > 0 && o->stdio == NULL))
    return -EINVAL;

  memset(&a, 0, sizeof a);
  a.opts = o;
  a.envp = o->env ? o->env : environ;
  for (int i = 0; i < o->nstdio; i++) {
    a.src[i] = BT_SRC_CLOSE;
    if (o->stdio[i].type == BT_STDIO_PIPE) o->stdio[i].fd = -1;
  }

  proc->stage = BT_STAGE_LOOKUP;
  err = bt_lookpath(o->file ? o->file : o->argv[0], bt__env_path(o->env), o->cwd, proc->path,
                    sizeof proc->path);
  if (err < 0) return err;
  a.path = proc->path;

  proc->stage = BT_STAGE_SETUP;
  for (int i = 0; i < o->nstdio; i++) {
    bt_stdio_t *s = &o->stdio[i];
    switch (s->type) {
    case BT_STDIO_INHERIT: a.src[i] = i; a.inherit[i] = 1; break;
    case BT_STDIO_NULL: a.src[i] = BT_SRC_NULL; break;
    case BT_STDIO_CLOSE: a.src[i] = BT_SRC_CLOSE; break;
    case BT_STDIO_SAME:
      if (s->fd < 0 || s->fd >= i) { err = -EINVAL; goto fail_pipes; }
      a.src[i] = BT_SRC_SAME - s->fd;
      break;
    case BT_STDIO_FD:
      if (s->fd < 0) { err = -EBADF; goto fail_pipes; }
      a.src[i] = s->fd;
      break;
    case BT_STDIO_PIPE: {
      int fds[2];
      int child_reads = s->flags ? (s->flags & BT_PIPE_CHILD_READS) != 0 : i == 0;
      if (pipe2(fds, O_CLOEXEC) < 0) { err = -errno; goto fail_pipes; }
      a.src[i] = child_reads ? fds[0] : fds[1];
      s->fd = child_reads ? fds[1] : fds[0];
      fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
      break;
    }
    default: err = -EINVAL; goto fail_pipes;
    }
  }

  /* The child's stack is only in use while this thread waits in clone(), so
   * one per thread serves every spawn; mapping and unmapping it each time
   * costs page faults and, with CLONE_VM, a TLB shootdown. */
  static _Thread_local void *stack;
  if (stack == NULL) {
    void *m = mmap(NULL, BT_CHILD_STACK, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) { err = -errno; goto fail_pipes; }
    stack = m;
  }

  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int pidfd = -1;
  pid_t pid = clone(child_main, (char *)stack + BT_CHILD_STACK,
                    CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &a, &pidfd);
  err = pid < 0 ? -errno : 0;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  bt__close_pipes(o, &a, 0); /* the child's ends: the child has its own copies now */

  if (err < 0) goto fail_parent;
  if (a.err) {
    /* The child reported and exited: reap it now, it is already gone. */
    siginfo_t si;
    while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR) {}
    close(pidfd);
    proc->stage = a.stage;
    err = -a.err;
    goto fail_parent;
  }

  proc->pid = pid;
  proc->pidfd = pidfd;
  proc->stage = BT_STAGE_NONE;
  err = bt__process_watch(loop, proc, exit_cb);
  if (err < 0) {
    siginfo_t si;
    bt__pidfd_send_signal(pidfd, SIGKILL);
    while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR) {}
    close(pidfd);
    proc->pidfd = -1;
    proc->pid = 0;
    proc->stage = BT_STAGE_SETUP;
    goto fail_parent;
  }
  return 0;

fail_pipes:
  proc->stage = BT_STAGE_SETUP;
fail_parent:
  bt__close_pipes(o, &a, 1);
  return err;
}
