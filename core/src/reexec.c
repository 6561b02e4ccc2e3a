/*
 * reexec.c — replacing the running program by a new image of itself
 * without losing its children (systemd's daemon-reexec, nginx's binary
 * upgrade, s6-svscan's exec): the primitives, not the policy.
 *
 * execve keeps the pid, so every child stays a child: the new image can
 * still reap them with their status, through pidfds it opens again. What it
 * must be given is the state (written by the caller into a memfd) and the
 * fds the children share with baton (listeners, log pipes): bt_reexec keeps
 * exactly those open across the exec by clearing FD_CLOEXEC on them alone,
 * and puts everything back if the exec fails. The new image claims the
 * children it is told about (bt_reexec_claim) before any orphan reaper can
 * take their status; bt_process_open then owns a claimed child as if it had
 * spawned it.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

int bt_fd_cloexec(int fd, int on) {
  if (fd < 0) return -EBADF;
  int fl = fcntl(fd, F_GETFD);
  if (fl < 0) return -errno;
  int want = on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC;
  if (want != fl && fcntl(fd, F_SETFD, want) < 0) return -errno;
  return (fl & FD_CLOEXEC) ? 1 : 0;
}

int bt_memfd(const char *name, const void *data, size_t len) {
  if (name == NULL || (data == NULL && len > 0)) return -EINVAL;
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return -errno;
  const char *p = data;
  size_t left = len;
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = -errno;
      close(fd);
      return err;
    }
    p += n;
    left -= (size_t)n;
  }
  return fd;
}

int bt_fd_read_all(int fd, char **out, size_t *len) {
  if (fd < 0) return -EBADF;
  if (out == NULL || len == NULL) return -EINVAL;
  size_t cap = 4096, have = 0;
  char *buf = malloc(cap);
  if (buf == NULL) return -ENOMEM;
  for (;;) {
    if (have == cap) {
      char *more = realloc(buf, cap * 2);
      if (more == NULL) {
        free(buf);
        return -ENOMEM;
      }
      buf = more;
      cap *= 2;
    }
    ssize_t n = pread(fd, buf + have, cap - have, (off_t)have);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = -errno;
      free(buf);
      return err;
    }
    if (n == 0) break;
    have += (size_t)n;
  }
  *out = buf;
  *len = have;
  return 0;
}

/* The signals held back across the exec: those a baton handles. Blocked,
 * one that arrives meanwhile stays pending through execve (which keeps the
 * mask and the pending set) and reaches the new image's handler once it
 * unblocks them (bt_reexec_signals_resume), instead of their default action
 * (TERM would end baton, leaving its services unsupervised). */
static void bt__reexec_sigset(sigset_t *set) {
  static const int sigs[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGCHLD, SIGWINCH};
  sigemptyset(set);
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    sigaddset(set, sigs[i]);
}

/* Whether `fd` is one of the `n` of `keep`. */
static int bt__kept(int fd, const int *keep, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (keep[i] == fd) return 1;
  return 0;
}

/* Mark every fd above stderr that is not in `keep` close-on-exec; the ones
 * that were not go to `*marked` (malloc'd, `*nmarked` of them), to be put
 * back if the exec fails. Returns 0 or a negative errno. */
static int bt__mark_others(const int *keep, size_t nkeep, int **marked, size_t *nmarked) {
  *marked = NULL;
  *nmarked = 0;
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return -errno;
  size_t cap = 0;
  int err = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char *end;
    long fd = strtol(e->d_name, &end, 10);
    if (*e->d_name == '\0' || *end != '\0' || fd <= 2 || fd == dirfd(d)) continue;
    if (bt__kept((int)fd, keep, nkeep)) continue;
    int fl = fcntl((int)fd, F_GETFD);
    if (fl < 0 || (fl & FD_CLOEXEC)) continue;
    if (*nmarked == cap) {
      cap = cap ? cap * 2 : 16;
      int *more = realloc(*marked, cap * sizeof *more);
      if (more == NULL) {
        err = -ENOMEM;
        break;
      }
      *marked = more;
    }
    fcntl((int)fd, F_SETFD, fl | FD_CLOEXEC);
    (*marked)[(*nmarked)++] = (int)fd;
  }
  closedir(d);
  return err;
}

/*
 * Signals the loop's handler caught but the loop did not dispatch yet sit in
 * the loop's signal pipe, which the exec closes: read them out and raise
 * them again (blocked now, they stay pending through the exec for the new
 * image). The messages are libuv's own (uv__signal_msg_t: the handle, then
 * the signal number), written whole by its handler; the pipe is nonblocking.
 */
static void bt__requeue_caught(uv_loop_t *loop, const sigset_t *set) {
  if (loop == NULL || loop->signal_pipefd[0] < 0) return;
  struct {
    void *handle;
    int signum;
  } msg[32];
  int seen[65] = {0};
  for (;;) {
    ssize_t n = read(loop->signal_pipefd[0], msg, sizeof msg);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (size_t i = 0; i < (size_t)n / sizeof msg[0]; i++)
      if (msg[i].signum > 0 && msg[i].signum < 65) seen[msg[i].signum] = 1;
  }
  for (int sig = 1; sig < 65; sig++)
    if (seen[sig] && sigismember(set, sig) == 1) kill(getpid(), sig);
}

int bt_reexec(uv_loop_t *loop, const char *path, char *const argv[], char *const envp[],
              const int *keep, size_t nkeep) {
  if (path == NULL || argv == NULL || argv[0] == NULL || envp == NULL) return -EINVAL;
  if (nkeep > 0 && keep == NULL) return -EINVAL;
  struct stat st;
  if (stat(path, &st) < 0) return -errno;
  if (!S_ISREG(st.st_mode)) return -EACCES;
  if (access(path, X_OK) < 0) return -errno;
  int *was = calloc(nkeep ? nkeep : 1, sizeof *was);
  if (was == NULL) return -ENOMEM;
  int *marked;
  size_t nmarked;
  int err = bt__mark_others(keep, nkeep, &marked, &nmarked);
  size_t done = 0;
  for (; err == 0 && done < nkeep; done++) {
    was[done] = bt_fd_cloexec(keep[done], 0);
    if (was[done] < 0) {
      err = was[done];
      break;
    }
  }
  if (err == 0) {
    sigset_t set, old;
    bt__reexec_sigset(&set);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    bt__requeue_caught(loop, &set);
    execve(path, argv, envp);
    err = -errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  /* Still here: put the flags back, so that nothing leaks into children and
   * nothing the program meant to pass on is lost. */
  for (size_t i = 0; i < done; i++)
    if (was[i] > 0) bt_fd_cloexec(keep[i], 1);
  for (size_t i = 0; i < nmarked; i++)
    bt_fd_cloexec(marked[i], 0);
  free(marked);
  free(was);
  return err;
}

void bt_reexec_signals_resume(void) {
  sigset_t set;
  bt__reexec_sigset(&set);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/* ---- claims: children the previous image handed over ------------------------------ */

static pthread_mutex_t bt__claim_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t *bt__claims;
static size_t bt__nclaims, bt__claims_cap;

int bt_reexec_claim(pid_t pid) {
  if (pid <= 0) return -EINVAL;
  int err = 0;
  pthread_mutex_lock(&bt__claim_lock);
  if (bt__nclaims == bt__claims_cap) {
    size_t cap = bt__claims_cap ? bt__claims_cap * 2 : 16;
    pid_t *more = realloc(bt__claims, cap * sizeof *more);
    if (more == NULL) {
      err = -ENOMEM;
    } else {
      bt__claims = more;
      bt__claims_cap = cap;
    }
  }
  if (err == 0) {
    bt__claims[bt__nclaims++] = pid;
    bt__owned_add(pid);
  }
  pthread_mutex_unlock(&bt__claim_lock);
  return err;
}

/* Remove `pid` from the claims; 1 when it was claimed. */
static int bt__claim_drop(pid_t pid) {
  int found = 0;
  pthread_mutex_lock(&bt__claim_lock);
  for (size_t i = 0; i < bt__nclaims; i++) {
    if (bt__claims[i] == pid) {
      bt__claims[i] = bt__claims[--bt__nclaims];
      found = 1;
      break;
    }
  }
  pthread_mutex_unlock(&bt__claim_lock);
  return found;
}

int bt__claim_take(pid_t pid) {
  return bt__claim_drop(pid);
}

int bt_reexec_unclaim(pid_t pid) {
  if (!bt__claim_drop(pid)) return -ESRCH;
  bt__owned_remove(pid);
  return 0;
}
