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
static size_t bt__owned_cap;   /* a power of two, or 0 */
static size_t bt__owned_len;   /* live pids */
static size_t bt__owned_tombs; /* removed slots not yet reclaimed */

#define BT_TOMB ((pid_t)-1)

static size_t bt__slot(pid_t pid, size_t cap) { return ((size_t)pid * 2654435761u) & (cap - 1); }

/* Rebuild into a table of `cap` slots, dropping the tombstones. */
static int bt__owned_rehash(size_t cap) {
  pid_t *tab = calloc(cap, sizeof *tab);
  if (tab == NULL) return -1;
  for (size_t i = 0; i < bt__owned_cap; i++) {
    pid_t pid = bt__owned[i];
    if (pid <= 0) continue;
    size_t j = bt__slot(pid, cap);
    while (tab[j] != 0) j = (j + 1) & (cap - 1);
    tab[j] = pid;
  }
  free(bt__owned);
  bt__owned = tab;
  bt__owned_cap = cap;
  bt__owned_tombs = 0;
  return 0;
}

/* The slot of `pid`, or NULL. Probes at most cap slots: tombstones never
 * fill the table (they are reclaimed by rehashing), so an empty slot ends
 * every search. */
static pid_t *bt__owned_find(pid_t pid) {
  if (bt__owned_cap == 0) return NULL;
  size_t i = bt__slot(pid, bt__owned_cap);
  for (size_t n = 0; n < bt__owned_cap && bt__owned[i] != 0; n++) {
    if (bt__owned[i] == pid) return &bt__owned[i];
    i = (i + 1) & (bt__owned_cap - 1);
  }
  return NULL;
}

void bt__owned_add(pid_t pid) {
  pthread_mutex_lock(&bt__owned_lock);
  /* Keep live + tombstones at most half the table. */
  if ((bt__owned_len + bt__owned_tombs + 1) * 2 > bt__owned_cap) {
    size_t cap = bt__owned_cap ? bt__owned_cap : 64;
    while ((bt__owned_len + 1) * 2 > cap) cap *= 2;
    bt__owned_rehash(cap);
  }
  /* Out of memory: the pid is not recorded, and an orphan reaper could take
   * its status; the pidfd then reports it exited with an unknown status. */
  if (bt__owned_cap && (bt__owned_len + bt__owned_tombs + 1) * 2 <= bt__owned_cap) {
    size_t i = bt__slot(pid, bt__owned_cap);
    while (bt__owned[i] > 0) i = (i + 1) & (bt__owned_cap - 1);
    if (bt__owned[i] == BT_TOMB) bt__owned_tombs--;
    bt__owned[i] = pid;
    bt__owned_len++;
  }
  pthread_mutex_unlock(&bt__owned_lock);
}

void bt__owned_remove(pid_t pid) {
  pthread_mutex_lock(&bt__owned_lock);
  pid_t *p = bt__owned_find(pid);
  if (p) {
    *p = BT_TOMB;
    bt__owned_len--;
    bt__owned_tombs++;
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
