/*
 * spawn.c — start a child with clone(CLONE_VM|CLONE_VFORK) and execve, or
 * replace the current process (bt_exec) under the same rules.
 *
 * Why not fork or uv_spawn: fork copies the parent's page tables, so its cost
 * grows with the orchestrator's memory; CLONE_VM shares them and CLONE_VFORK
 * suspends the parent until the child has exec'd or exited. Because memory is
 * shared during that window, the child reports a failure by writing its errno
 * and the failing step into the parent's `child_args` (the parent reads them
 * once resumed): the same guarantee as a CLOEXEC error pipe, without the pipe
 * and its syscalls on every spawn.
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
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
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
#define BT_CLOSE_RANGE_CLOEXEC (1U << 2) /* Linux 5.11 */

#define BT_CHILD_STACK (64 * 1024)
#ifndef BT_PIPE_SIZE
#define BT_PIPE_SIZE (256 * 1024) /* capacity of output pipes */
#endif
#define BT_SRC_CLOSE (-1)
#define BT_SRC_NULL (-2)
#define BT_SRC_SAME (-100) /* BT_SRC_SAME - k: the same file as child fd k */

extern char **environ;

typedef struct {
  const bt_spawn_options_t *opts;
  const char *path;
  char *const *envp;
  pid_t parent;
  int src[BT_MAX_STDIO]; /* parent fd for each child fd, or BT_SRC_* */
  int inherit[BT_MAX_STDIO];
  int tmp[BT_MAX_STDIO]; /* temporary copies of the sources (closed by exec) */
  int exec_mode;         /* bt_exec: mark other fds close-on-exec, do not close them */
  char **own_env;        /* BT_SPAWN_LISTEN_PID: the env built for this spawn (malloc'd) */
  char *listen_pid;      /* in the same block: "LISTEN_PID=", the digits written by the child */
  int err;               /* written by the child on failure */
  bt_stage stage;
} child_args;

#if defined(__clang__) || defined(__GNUC__)
#define BT_NO_SANITIZE __attribute__((no_sanitize("address", "undefined"), noinline))
#else
#define BT_NO_SANITIZE
#endif

/*
 * Everything between clone (or the start of bt_exec) and execve. Raw
 * syscalls only. Returns an errno with a->stage set; on success it does not
 * return at all.
 */
BT_NO_SANITIZE static int bt__child_setup(child_args *a) {
  const bt_spawn_options_t *o = a->opts;
  int n = o->nstdio;
  int *tmp = a->tmp;
  long r;

  /* A zeroed kernel sigaction is SIG_DFL with no flags and an empty mask. */
  unsigned long ksa[4] = {0, 0, 0, 0};
  for (int s = 1; s < 65; s++)
    if (s != SIGKILL && s != SIGSTOP) syscall(SYS_rt_sigaction, s, ksa, NULL, 8);

  /* LISTEN_PID=<our pid>, into this spawn's own buffer (the parent is
   * suspended, and only this child writes it). No libc: raw getpid, and
   * digits by hand. */
  if (o->flags & BT_SPAWN_LISTEN_PID) {
    char digits[24];
    int nd = 0;
    unsigned long v = (unsigned long)syscall(SYS_getpid);
    do {
      digits[nd++] = (char)('0' + v % 10);
      v /= 10;
    } while (v && nd < 20);
    char *p = a->listen_pid + sizeof "LISTEN_PID=" - 1;
    while (nd > 0)
      *p++ = digits[--nd];
    *p = '\0';
  }

  /* The cgroup first: from here on, whatever the child does (and every
   * process it starts) is inside it. Before the fds are rearranged, which
   * may reuse cgroup_fd's number; before the uid switch, which may take away
   * the right to move. Writing "0" moves the writer. */
  a->stage = BT_STAGE_CGROUP;
  if (o->flags & BT_SPAWN_CGROUP) {
    r = syscall(SYS_openat, o->cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
    if (r < 0) return errno;
    int fd = (int)r;
    r = syscall(SYS_write, fd, "0", 1);
    int err = r < 0 ? errno : 0;
    syscall(SYS_close, fd);
    if (err) return err;
  }

  a->stage = BT_STAGE_PGRP;
  if (o->flags & BT_SPAWN_SETSID) {
    if (syscall(SYS_setsid) < 0) return errno;
  } else if (o->flags & BT_SPAWN_SETPGID) {
    if (syscall(SYS_setpgid, 0, o->pgid) < 0) return errno;
  }

  a->stage = BT_STAGE_LIMITS;
  if (o->pdeathsig > 0) {
    if (syscall(SYS_prctl, PR_SET_PDEATHSIG, o->pdeathsig, 0, 0, 0) < 0) return errno;
    /* The parent may have died before the prctl: then act as if it just did. */
    if (syscall(SYS_getppid) != a->parent) syscall(SYS_kill, syscall(SYS_getpid), o->pdeathsig);
  }

  /* Move every source above the target range first, so that no dup2 below can
   * clobber a source that another target still needs; SAME entries follow
   * the file their target got. */
  a->stage = BT_STAGE_STDIO;
  for (int i = 0; i < n; i++)
    tmp[i] = -1;
  for (int i = 0; i < n; i++) {
    int src = a->src[i];
    if (src == BT_SRC_CLOSE || src <= BT_SRC_SAME) continue;
    if (src == BT_SRC_NULL) {
      r = syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR | O_CLOEXEC);
      if (r < 0) return errno;
      src = (int)r;
      r = syscall(SYS_fcntl, src, F_DUPFD_CLOEXEC, n);
      syscall(SYS_close, src);
    } else {
      r = syscall(SYS_fcntl, src, F_DUPFD_CLOEXEC, n);
      if (r < 0 && errno == EBADF && a->inherit[i]) continue; /* closed in the parent */
    }
    if (r < 0) return errno;
    tmp[i] = (int)r;
  }
  for (int i = 0; i < n; i++) {
    int src = a->src[i];
    int from = src <= BT_SRC_SAME ? tmp[BT_SRC_SAME - src] : tmp[i];
    if (from < 0)
      syscall(SYS_close, i);
    else if (syscall(SYS_dup2, from, i) < 0) /* dup2 clears FD_CLOEXEC on i */
      return errno;
  }
  if (a->exec_mode) {
    /* Replacing this process: fds close only if exec succeeds. */
    if (syscall(SYS_close_range, n, ~0U, BT_CLOSE_RANGE_CLOEXEC) < 0) {
      uint64_t rl[2] = {1024, 1024};
      syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, rl);
      for (uint64_t fd = (uint64_t)n; fd < rl[0] && fd < 65536; fd++)
        syscall(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC);
    }
  } else if (syscall(SYS_close_range, n, ~0U, 0) < 0) {
    uint64_t rl[2] = {1024, 1024};
    syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, rl);
    for (uint64_t fd = (uint64_t)n; fd < rl[0] && fd < 65536; fd++)
      syscall(SYS_close, fd);
  }
  if (!a->exec_mode)
    for (int i = 0; i < n; i++)
      tmp[i] = -1; /* closed by close_range */

  /* Limits after the fds: RLIMIT_NOFILE may be lower than the fds the
   * rearranging above needed. Before the credentials: raising a hard limit
   * needs the privilege the uid switch drops. */
  a->stage = BT_STAGE_LIMITS;
  for (int i = 0; i < o->nrlimits; i++) {
    uint64_t lim[2] = {(uint64_t)o->rlimits[i].cur, (uint64_t)o->rlimits[i].max};
    if (syscall(SYS_prlimit64, 0, o->rlimits[i].resource, lim, NULL) < 0) return errno;
  }
  if ((o->flags & BT_SPAWN_NICE) && syscall(SYS_setpriority, PRIO_PROCESS, 0, o->nice) < 0)
    return errno;
  if (o->flags & BT_SPAWN_UMASK) syscall(SYS_umask, o->umask & 0777);

  /* Groups first: once the uid is dropped, setgroups is no longer allowed. */
  a->stage = BT_STAGE_CREDS;
  if ((o->flags & BT_SPAWN_SETGROUPS) && syscall(SYS_setgroups, o->ngroups, o->groups) < 0)
    return errno;
  if ((o->flags & BT_SPAWN_SETGID) && syscall(SYS_setresgid, o->gid, o->gid, o->gid) < 0)
    return errno;
  if ((o->flags & BT_SPAWN_SETUID) && syscall(SYS_setresuid, o->uid, o->uid, o->uid) < 0)
    return errno;

  a->stage = BT_STAGE_CHDIR;
  if (o->cwd && syscall(SYS_chdir, o->cwd) < 0) return errno;

  unsigned long empty = 0;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, 8);

  a->stage = BT_STAGE_EXEC;
  syscall(SYS_execve, a->path, o->argv, a->envp);
  return errno ? errno : EINVAL;
}

/* Runs in the child, on the parent's memory; never returns. */
BT_NO_SANITIZE static int child_main(void *arg) {
  child_args *a = arg;
  a->err = bt__child_setup(a);
  syscall(SYS_exit, 127);
  return 127;
}

static const char *bt__env_path(char *const *env) {
  if (env == NULL) return getenv("PATH");
  for (char *const *e = env; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0) return *e + 5;
  return NULL;
}

/*
 * BT_SPAWN_LISTEN_PID: the child's environment, `base` without its
 * LISTEN_PID entries, then a->listen_pid ("LISTEN_PID=", digits to come).
 * The array is this spawn's (freed by bt__free_env); the strings stay the
 * caller's. Returns 0 or -ENOMEM.
 */
static int bt__listen_pid_env(child_args *a, char *const *base) {
  size_t n = 0;
  for (char *const *e = base; e && *e; e++)
    n++;
  /* Room for 20 digits, more than any pid_t needs. */
  char **env = malloc((n + 2) * sizeof *env + 32);
  if (env == NULL) return -ENOMEM;
  a->listen_pid = (char *)(env + n + 2);
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(base[i], "LISTEN_PID=", 11) != 0) env[k++] = base[i];
  memset(a->listen_pid, 0, 32);
  memcpy(a->listen_pid, "LISTEN_PID=", 11);
  env[k++] = a->listen_pid;
  env[k] = NULL;
  a->own_env = env;
  a->envp = env;
  return 0;
}

static void bt__free_env(child_args *a) {
  free(a->own_env);
  a->own_env = NULL;
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

/* Checks and lookups shared by bt_spawn and bt_exec; fills `a`. */
static int bt__prepare(const bt_spawn_options_t *o, bt_process_t *proc, child_args *a) {
  bt__proc_reset(proc);
  if (o == NULL || o->argv == NULL || o->argv[0] == NULL || o->nstdio < 0 ||
      o->nstdio > BT_MAX_STDIO || (o->nstdio > 0 && o->stdio == NULL) || o->nrlimits < 0 ||
      (o->nrlimits > 0 && o->rlimits == NULL) || o->ngroups < 0 ||
      (o->ngroups > 0 && o->groups == NULL))
    return -EINVAL;
  for (int i = 0; i < o->nstdio; i++) {
    const bt_stdio_t *s = &o->stdio[i];
    if (s->type == BT_STDIO_SAME &&
        (s->fd < 0 || s->fd >= o->nstdio || s->fd == i || o->stdio[s->fd].type == BT_STDIO_SAME))
      return -EINVAL;
    if (s->type == BT_STDIO_FD && s->fd < 0) return -EBADF;
  }

  memset(a, 0, sizeof *a);
  a->opts = o;
  a->envp = o->env ? o->env : environ;
  a->parent = getpid();
  for (int i = 0; i < o->nstdio; i++)
    a->src[i] = BT_SRC_CLOSE;

  proc->stage = BT_STAGE_LOOKUP;
  const char *file = o->file ? o->file : o->argv[0];
  int err = bt_lookpath(file, bt__env_path(o->env), o->cwd, proc->path, sizeof proc->path);
  if (err < 0) return err;
  /* proc->path names the program from here. The child, already in `cwd`,
   * execs a path as it was given: a relative cwd would be applied twice. */
  a->path = strchr(file, '/') ? file : proc->path;
  proc->stage = BT_STAGE_SETUP;
  if (o->flags & BT_SPAWN_LISTEN_PID) return bt__listen_pid_env(a, a->envp);
  return 0;
}

/* Fill a->src from the stdio table; pipes are created here. */
static int bt__stdio(const bt_spawn_options_t *o, child_args *a) {
  for (int i = 0; i < o->nstdio; i++) {
    bt_stdio_t *s = &o->stdio[i];
    switch (s->type) {
    case BT_STDIO_INHERIT:
      a->src[i] = i;
      a->inherit[i] = 1;
      break;
    case BT_STDIO_NULL: a->src[i] = BT_SRC_NULL; break;
    case BT_STDIO_CLOSE: a->src[i] = BT_SRC_CLOSE; break;
    case BT_STDIO_SAME: a->src[i] = BT_SRC_SAME - s->fd; break;
    case BT_STDIO_FD: a->src[i] = s->fd; break;
    case BT_STDIO_PIPE: {
      int fds[2];
      int child_reads = s->flags ? (s->flags & BT_PIPE_CHILD_READS) != 0 : i == 0;
      if (pipe2(fds, O_CLOEXEC) < 0) return -errno;
      a->src[i] = child_reads ? fds[0] : fds[1];
      s->fd = child_reads ? fds[1] : fds[0];
      fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
      /* Output pipes get 256 KiB instead of 64: fewer wakeups and larger reads
       * (capture throughput nearly doubles). Best effort: over the per-user
       * pipe budget the kernel refuses, and the default stays. */
      if (!child_reads) fcntl(s->fd, F_SETPIPE_SZ, BT_PIPE_SIZE);
      break;
    }
    default: return -EINVAL;
    }
  }
  return 0;
}

/* Wait for the child of `pidfd`, which has exited or is about to, and reap it. */
static void bt__wait_reap(int pidfd) {
  siginfo_t si;
  while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR)
    continue;
}

int bt_spawn(uv_loop_t *loop, bt_process_t *proc, const bt_spawn_options_t *o, bt_exit_cb exit_cb) {
  if (proc == NULL) return -EINVAL;
  bt__proc_reset(proc); /* (again in bt__prepare: bt_exec's path) */
  if (!bt__loop_usable(loop)) return -EINVAL;
  child_args a;
  if (o && o->stdio)
    for (int i = 0; i < o->nstdio && i < BT_MAX_STDIO; i++)
      if (o->stdio[i].type == BT_STDIO_PIPE) o->stdio[i].fd = -1;
  int err = bt__prepare(o, proc, &a);
  if (err < 0) return err;
  err = bt__stdio(o, &a);
  if (err < 0) goto fail;

  /* The child's stack is only in use while this thread waits in clone(), so
   * one per thread serves every spawn; mapping and unmapping it each time
   * costs page faults and, with CLONE_VM, a TLB shootdown. */
  static _Thread_local void *stack;
  if (stack == NULL) {
    void *m = mmap(NULL, BT_CHILD_STACK, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) {
      err = -errno;
      goto fail;
    }
    stack = m;
  }

  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int pidfd = -1;
  pid_t pid = clone(child_main, (char *)stack + BT_CHILD_STACK,
                    CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &a, &pidfd);
  err = pid < 0 ? -errno : 0;
  if (pid > 0) bt__owned_add(pid); /* before any SIGCHLD can be handled */
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  bt__close_pipes(o, &a, 0); /* the child's ends: the child has its own copies now */

  if (err < 0) goto fail_parent;
  if (a.err) {
    /* The child reported and exited: reap it now, it is already gone. */
    bt__wait_reap(pidfd);
    bt__owned_remove(pid);
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
    bt__pidfd_send_signal(pidfd, SIGKILL);
    bt__wait_reap(pidfd);
    bt__owned_remove(pid);
    close(pidfd);
    proc->pidfd = -1;
    proc->pid = 0;
    proc->stage = BT_STAGE_SETUP;
    goto fail_parent;
  }
  proc->owned_ = 1;
  bt__free_env(&a); /* the child has exec'd: its env is its own copy now */
  return 0;

fail:
  proc->stage = BT_STAGE_SETUP;
fail_parent:
  bt__close_pipes(o, &a, 1);
  bt__free_env(&a);
  return err;
}

/* bt_exec once bt__prepare has filled `a`. */
static int bt__exec(const bt_spawn_options_t *o, bt_process_t *info, child_args *ap) {
  child_args a = *ap;
  int err;
  for (int i = 0; i < o->nstdio; i++)
    if (o->stdio[i].type == BT_STDIO_PIPE) return -EINVAL;
  /* Fail early on what can be known without changing anything (from here,
   * before the chdir: info->path, not a.path). */
  if (access(info->path, X_OK) < 0) {
    info->stage = BT_STAGE_EXEC;
    return -errno;
  }
  if (o->cwd && access(o->cwd, X_OK) < 0 && !(o->flags & BT_SPAWN_SETUID)) {
    info->stage = BT_STAGE_CHDIR;
    return -errno;
  }
  err = bt__stdio(o, &a);
  if (err < 0) return err;
  a.exec_mode = 1;

  /* What the setup changes in this process, to put back if exec fails: the
   * signal dispositions and mask, umask, and the stdio fds (saved as dups).
   * Other fds are only marked close-on-exec. */
  static struct sigaction saved[65];
  for (int sig = 1; sig < 65; sig++)
    sigaction(sig, NULL, &saved[sig]);
  int saved_fd[BT_MAX_STDIO];
  for (int i = 0; i < o->nstdio; i++)
    saved_fd[i] = fcntl(i, F_DUPFD_CLOEXEC, BT_MAX_STDIO);
  mode_t saved_umask = umask(0);
  umask(saved_umask);

  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  err = bt__child_setup(&a);
  info->stage = a.stage;

  /* Still here: exec failed. Undo. */
  for (int i = 0; i < o->nstdio; i++) {
    if (a.tmp[i] >= 0) close(a.tmp[i]);
    if (saved_fd[i] >= 0) {
      dup2(saved_fd[i], i);
      close(saved_fd[i]);
    } else {
      close(i);
    }
  }
  umask(saved_umask);
  for (int sig = 1; sig < 65; sig++)
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &saved[sig], NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return -err;
}

int bt_exec(const bt_spawn_options_t *o, bt_process_t *info) {
  if (info == NULL) return -EINVAL;
  child_args a;
  int err = bt__prepare(o, info, &a);
  if (err < 0) return err;
  err = bt__exec(o, info, &a);
  bt__free_env(&a);
  return err;
}
