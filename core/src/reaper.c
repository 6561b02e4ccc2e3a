/*
 * reaper.c — reap orphans when baton is a subreaper (or PID 1), without ever
 * reaping a child that a bt_process_t watches through its pidfd.
 *
 * waitpid(-1) would steal those children's statuses. Instead, on SIGCHLD the
 * reaper lists this process's children from /proc/self/task/<tid>/children
 * and reaps, one by one with WNOHANG, each pid not in the owned set.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

/* ---- the owned set: a small open-addressing hash of pids ------------------- */

static pthread_mutex_t bt__owned_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t *bt__owned;
static size_t bt__owned_cap, bt__owned_len; /* cap is a power of two */

#define BT_TOMB ((pid_t)-1)

static size_t bt__slot(pid_t pid, size_t cap) { return ((size_t)pid * 2654435761u) & (cap - 1); }

static void bt__owned_insert(pid_t *tab, size_t cap, pid_t pid) {
  size_t i = bt__slot(pid, cap);
  while (tab[i] != 0 && tab[i] != BT_TOMB) i = (i + 1) & (cap - 1);
  tab[i] = pid;
}

void bt__owned_add(pid_t pid) {
  pthread_mutex_lock(&bt__owned_lock);
  if ((bt__owned_len + 1) * 2 > bt__owned_cap) {
    size_t cap = bt__owned_cap ? bt__owned_cap * 2 : 64;
    pid_t *tab = calloc(cap, sizeof *tab);
    if (tab) {
      for (size_t i = 0; i < bt__owned_cap; i++)
        if (bt__owned[i] > 0) bt__owned_insert(tab, cap, bt__owned[i]);
      free(bt__owned);
      bt__owned = tab;
      bt__owned_cap = cap;
    }
  }
  /* Out of memory: the pid is not recorded, and an orphan reaper could take
   * its status; the pidfd then reports it exited with an unknown status. */
  if (bt__owned_cap && (bt__owned_len + 1) * 2 <= bt__owned_cap) {
    bt__owned_insert(bt__owned, bt__owned_cap, pid);
    bt__owned_len++;
  }
  pthread_mutex_unlock(&bt__owned_lock);
}

static pid_t *bt__owned_find(pid_t pid) {
  if (bt__owned_cap == 0) return NULL;
  size_t i = bt__slot(pid, bt__owned_cap);
  while (bt__owned[i] != 0) {
    if (bt__owned[i] == pid) return &bt__owned[i];
    i = (i + 1) & (bt__owned_cap - 1);
  }
  return NULL;
}

void bt__owned_remove(pid_t pid) {
  pthread_mutex_lock(&bt__owned_lock);
  pid_t *p = bt__owned_find(pid);
  if (p) {
    *p = BT_TOMB;
    bt__owned_len--;
  }
  pthread_mutex_unlock(&bt__owned_lock);
}

int bt__owned_has(pid_t pid) {
  pthread_mutex_lock(&bt__owned_lock);
  int r = bt__owned_find(pid) != NULL;
  pthread_mutex_unlock(&bt__owned_lock);
  return r;
}

/* ---- the reaper ----------------------------------------------------------------- */

int bt_reaper_reap(bt_reaper_t *reaper) {
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
      do r = waitpid((pid_t)pid, &st, WNOHANG);
      while (r < 0 && errno == EINTR);
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
  if (subreaper && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) return -errno;
  int err = uv_signal_init(loop, &reaper->signal_);
  if (err < 0) return err;
  reaper->signal_.data = reaper;
  reaper->cb_ = cb;
  reaper->close_cb_ = NULL;
  /* Fails on a bad signal number only. */
  err = uv_signal_start(&reaper->signal_, bt__on_sigchld, SIGCHLD);
  assert(err == 0);
  uv_unref((uv_handle_t *)&reaper->signal_); /* reaping alone keeps no loop alive */
  bt_reaper_reap(reaper); /* orphans that arrived before */
  return 0;
}

static void bt__reaper_closed(uv_handle_t *h) {
  bt_reaper_t *reaper = h->data;
  if (reaper->close_cb_) reaper->close_cb_(reaper);
}

void bt_reaper_close(bt_reaper_t *reaper, void (*close_cb)(bt_reaper_t *)) {
  reaper->close_cb_ = close_cb;
  uv_close((uv_handle_t *)&reaper->signal_, bt__reaper_closed);
}
