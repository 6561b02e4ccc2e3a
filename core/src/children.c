/*
 * children.c — the children baton owns: the pids of processes that a
 * bt_process_t spawned and has not yet reaped (or released by closing it).
 *
 * The set is process-wide, like the subreaper attribute and the parent-child
 * relation themselves, and guarded by a mutex, so spawns on several threads
 * and loops share it. Its one reader is the orphan reaper (reaper.c), which
 * must never take the exit status of a child that a pidfd is waiting for.
 *
 * It is a small open-addressing hash table of pids with linear probing;
 * removed slots become tombstones, reclaimed whenever the table is rebuilt.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"

static pthread_mutex_t bt__owned_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t *bt__owned;
static size_t bt__owned_cap;   /* a power of two, or 0 */
static size_t bt__owned_len;   /* live pids */
static size_t bt__owned_tombs; /* removed slots not yet reclaimed */

#define BT_TOMB ((pid_t)-1)

static size_t bt__slot(pid_t pid, size_t cap) {
  return ((size_t)pid * 2654435761u) & (cap - 1);
}

/* Rebuild into a table of `cap` slots, dropping the tombstones. */
static int bt__owned_rehash(size_t cap) {
  pid_t *tab = calloc(cap, sizeof *tab);
  if (tab == NULL) return -1;
  for (size_t i = 0; i < bt__owned_cap; i++) {
    pid_t pid = bt__owned[i];
    if (pid <= 0) continue;
    size_t j = bt__slot(pid, cap);
    while (tab[j] != 0)
      j = (j + 1) & (cap - 1);
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
    while ((bt__owned_len + 1) * 2 > cap)
      cap *= 2;
    bt__owned_rehash(cap);
  }
  /* Out of memory: the pid is not recorded, and an orphan reaper could take
   * its status; the pidfd then reports it exited with an unknown status. */
  if (bt__owned_cap && (bt__owned_len + bt__owned_tombs + 1) * 2 <= bt__owned_cap) {
    size_t i = bt__slot(pid, bt__owned_cap);
    while (bt__owned[i] > 0)
      i = (i + 1) & (bt__owned_cap - 1);
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
