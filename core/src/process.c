/*
 * process.c — watch a child's exit through its pidfd, signal it, release it.
 *
 * A pidfd names one process for its whole life and after: signals through it
 * cannot reach a recycled pid, and waitid(P_PIDFD) reaps exactly this child,
 * never another one as waitpid(-1) would. The loop polls the pidfd, which
 * becomes readable when the child exits.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

int bt__pidfd_send_signal(int pidfd, int sig) {
  if (syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0) return -errno;
  return 0;
}

static void bt__on_pidfd(uv_poll_t *handle, int status, int events) {
  bt_process_t *proc = handle->data;
  siginfo_t si;
  (void)status;
  (void)events;

  si.si_pid = 0;
  if (waitid(P_PIDFD, (id_t)proc->pidfd, &si, WEXITED | WNOHANG) < 0) {
    if (errno == EINTR || errno == EAGAIN) return;
    /* ECHILD: someone else (a host's waitpid(-1)) reaped it; the status is lost. */
    proc->exit_code = -1;
  } else if (si.si_pid == 0) {
    return; /* spurious wakeup: still running */
  } else if (si.si_code == CLD_EXITED) {
    proc->exit_code = si.si_status;
  } else {
    proc->exit_code = -1;
    proc->term_signal = si.si_status;
    proc->core_dumped = si.si_code == CLD_DUMPED;
  }
  proc->exited = 1;
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
  return err;
}

int bt_process_kill(bt_process_t *proc, int sig) {
  if (proc->exited || proc->pidfd < 0) return -ESRCH;
  return bt__pidfd_send_signal(proc->pidfd, sig);
}

static void bt__on_close(uv_handle_t *handle) {
  bt_process_t *proc = handle->data;
  if (proc->pidfd >= 0) close(proc->pidfd);
  proc->pidfd = -1;
  if (proc->close_cb_) proc->close_cb_(proc);
}

void bt_process_close(bt_process_t *proc, bt_close_cb close_cb) {
  if (proc->closing_) return;
  proc->closing_ = 1;
  proc->close_cb_ = close_cb;
  uv_close((uv_handle_t *)&proc->poll_, bt__on_close);
}
