/*
 * reaper.c — reap orphans when baton is a subreaper (or PID 1), without ever
 * reaping a child that a bt_process_t watches through its pidfd.
 *
 * waitpid(-1) would steal those children's statuses. Instead, on SIGCHLD the
 * reaper lists this process's children from /proc/self/task/<tid>/children
 * and reaps, one by one with WNOHANG, each pid not in the owned set (children.c).
 */
#define _GNU_SOURCE
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

int bt_reaper_reap(bt_reaper_t *reaper) {
  if (reaper == NULL) return -EINVAL;
  int reaped = 0;
  DIR *tasks = opendir("/proc/self/task");
  if (tasks == NULL) return 0;
  struct dirent *t;
  while ((t = readdir(tasks)) != NULL) {
    if (t->d_name[0] == '.') continue;
    char path[300];
    snprintf(path, sizeof path, "/proc/self/task/%s/children", t->d_name);
    FILE *f = fopen(path, "re");
    if (f == NULL) continue;
    long pid;
    while (fscanf(f, "%ld", &pid) == 1) {
      if (bt__owned_has((pid_t)pid)) continue;
      int st;
      pid_t r;
      do {
        r = waitpid((pid_t)pid, &st, WNOHANG);
      } while (r < 0 && errno == EINTR);
      if (r == (pid_t)pid) {
        reaped++;
        if (reaper->cb_) reaper->cb_(reaper, r, st);
      }
    }
    fclose(f);
  }
  closedir(tasks);
  return reaped;
}

static void bt__on_sigchld(uv_signal_t *handle, int signum) {
  (void)signum;
  bt_reaper_reap(handle->data);
}

int bt_reaper_start(uv_loop_t *loop, bt_reaper_t *reaper, int subreaper, bt_reap_cb cb) {
  if (!bt__loop_usable(loop) || reaper == NULL) return -EINVAL;
  if (subreaper && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) return -errno;
  int err = uv_signal_init(loop, &reaper->signal_);
  if (err < 0) return err;
  reaper->signal_.data = reaper;
  reaper->cb_ = cb;
  reaper->close_cb_ = NULL;
  /* Fails on a bad signal number only. */
  err = uv_signal_start(&reaper->signal_, bt__on_sigchld, SIGCHLD);
  assert(err == 0);
  /* Reaping alone keeps no loop alive. */
  uv_unref((uv_handle_t *)&reaper->signal_);
  /* Orphans that arrived before. */
  bt_reaper_reap(reaper);
  return 0;
}

static void bt__reaper_closed(uv_handle_t *h) {
  bt_reaper_t *reaper = h->data;
  if (reaper->close_cb_) reaper->close_cb_(reaper);
}

void bt_reaper_close(bt_reaper_t *reaper, void (*close_cb)(bt_reaper_t *)) {
  if (reaper == NULL || uv_is_closing((uv_handle_t *)&reaper->signal_)) return;
  reaper->close_cb_ = close_cb;
  uv_close((uv_handle_t *)&reaper->signal_, bt__reaper_closed);
}
