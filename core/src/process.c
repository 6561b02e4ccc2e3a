/*
 * process.c — the process handle: its state, watching a child's exit through
 * its pidfd, signalling it, releasing it.
 *
 * A pidfd names one process for its whole life and after: signals through it
 * cannot reach a recycled pid, and waitid(P_PIDFD) reaps exactly this child,
 * never another one as waitpid(-1) would. The loop polls the pidfd, which
 * becomes readable when the child exits.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

int bt__pidfd_send_signal(int pidfd, int sig) {
  if (syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0) return -errno;
  return 0;
}

void bt__proc_reset(bt_process_t *proc) {
  proc->pid = 0;
  proc->pidfd = -1;
  proc->exited = 0;
  proc->exit_code = -1;
  proc->term_signal = 0;
  proc->core_dumped = 0;
  proc->status_known = 1;
  memset(&proc->rusage, 0, sizeof proc->rusage);
  proc->stage = BT_STAGE_SETUP;
  proc->path[0] = '\0';
  proc->closing_ = 1; /* nothing to close until bt__process_watch succeeds */
  proc->owned_ = 0;
}

/*
 * Reap the child of `proc` if it has exited, without waiting. Returns 1 once
 * it has, with the exit fields set and the pid no longer owned, or 0 while it
 * runs.
 */
static int bt__try_reap(bt_process_t *proc) {
  siginfo_t si;
  long r;
  si.si_pid = 0;
  /* The raw syscall takes a struct rusage, which glibc's waitid does not. */
  do {
    r = syscall(SYS_waitid, P_PIDFD, proc->pidfd, &si, WEXITED | WNOHANG, &proc->rusage);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    /* EAGAIN: still running (libuv made the pidfd nonblocking). */
    if (errno == EAGAIN) return 0;
    /* ECHILD: not our child (adopted), or someone else (a host's waitpid(-1))
     * reaped it. It has exited — the pidfd said so — but its status is lost. */
    proc->exit_code = -1;
    proc->status_known = 0;
  } else if (si.si_pid == 0) {
    return 0;
  } else if (si.si_code == CLD_EXITED) {
    proc->exit_code = si.si_status;
  } else {
    proc->exit_code = -1;
    proc->term_signal = si.si_status;
    proc->core_dumped = si.si_code == CLD_DUMPED;
  }
  proc->exited = 1;
  if (proc->owned_) {
    bt__owned_remove(proc->pid);
    proc->owned_ = 0;
  }
  return 1;
}

static void bt__on_pidfd(uv_poll_t *handle, int status, int events) {
  bt_process_t *proc = handle->data;
  (void)status;
  (void)events;
  if (!bt__try_reap(proc)) return; /* a spurious wakeup */
  uv_poll_stop(handle);
  if (proc->exit_cb_) proc->exit_cb_(proc);
}

int bt__process_watch(uv_loop_t *loop, bt_process_t *proc, bt_exit_cb exit_cb) {
  int err = uv_poll_init(loop, &proc->poll_, proc->pidfd);
  if (err < 0) return err;
  proc->poll_.data = proc;
  proc->exit_cb_ = exit_cb;
  proc->close_cb_ = NULL;
  /* Starting only queues the fd for the next poll: it fails on bad arguments alone. */
  err = uv_poll_start(&proc->poll_, UV_READABLE, bt__on_pidfd);
  assert(err == 0);
  proc->closing_ = 0;
  return err;
}

int bt_process_open(uv_loop_t *loop, bt_process_t *proc, pid_t pid, bt_exit_cb exit_cb) {
  if (proc == NULL) return -EINVAL;
  bt__proc_reset(proc);
  proc->stage = BT_STAGE_NONE;
  if (!bt__loop_usable(loop)) return -EINVAL;
  if (pid <= 0) return -EINVAL;
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) return -errno;
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  proc->pid = pid;
  proc->pidfd = fd;
  /* Best effort: name the program, for messages. */
  char link[64];
  snprintf(link, sizeof link, "/proc/%d/exe", (int)pid);
  ssize_t n = readlink(link, proc->path, sizeof proc->path - 1);
  proc->path[n > 0 ? n : 0] = '\0';
  int err = bt__process_watch(loop, proc, exit_cb);
  if (err < 0) {
    close(fd);
    proc->pidfd = -1;
    return err;
  }
  /* A child the previous image of this program handed over (reexec.c): ours
   * to reap, kept from the orphan reaper as a spawned one is. */
  proc->owned_ = bt__claim_take(pid);
  return 0;
}

int bt_process_kill(bt_process_t *proc, int sig) {
  if (proc == NULL) return -EINVAL;
  if (proc->exited || proc->pidfd < 0) return -ESRCH;
  return bt__pidfd_send_signal(proc->pidfd, sig);
}

static void bt__on_close(uv_handle_t *handle) {
  bt_process_t *proc = handle->data;
  if (proc->pidfd >= 0) close(proc->pidfd);
  proc->pidfd = -1;
  if (proc->close_cb_) proc->close_cb_(proc);
}

void bt_process_ref(bt_process_t *proc, int ref) {
  if (proc == NULL) return;
  if (proc->closing_) return;
  if (ref)
    uv_ref((uv_handle_t *)&proc->poll_);
  else
    uv_unref((uv_handle_t *)&proc->poll_);
}

void bt_process_close(bt_process_t *proc, bt_close_cb close_cb) {
  if (proc == NULL) return;
  if (proc->closing_) return;
  proc->closing_ = 1;
  proc->close_cb_ = close_cb;
  if (proc->owned_) {
    /* Nobody will wait for this child through its pidfd any more: release
     * it, so that an orphan reaper reaps it when it exits. It may have
     * exited already, its SIGCHLD handled while it was still owned and no
     * other one coming: reap it here then. Releasing before looking leaves
     * no moment in which it could exit unseen by both. */
    bt__owned_remove(proc->pid);
    proc->owned_ = 0;
    bt__try_reap(proc);
  }
  uv_close((uv_handle_t *)&proc->poll_, bt__on_close);
}
