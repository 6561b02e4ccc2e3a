/*
 * internal.h — declarations shared by the core's files, not part of the API.
 *
 * The one private header of the core: each group below names the file that
 * defines it. Internal names start with bt__ and are never exported.
 */
#ifndef BATON_INTERNAL_H
#define BATON_INTERNAL_H

#include "baton.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* ---- process.c: the process handle --------------------------------------------- */

/* pidfd_send_signal(2) as a raw system call (glibc may not wrap it). */
int bt__pidfd_send_signal(int pidfd, int sig);
/* Put `proc` in its initial state (no pid, no pidfd, status unknown yet). */
void bt__proc_reset(bt_process_t *proc);
/* Start polling the pidfd of a freshly spawned child (spawn.c -> process.c). */
int bt__process_watch(uv_loop_t *loop, bt_process_t *proc, bt_exit_cb exit_cb);

/* ---- children.c: the children baton owns --------------------------------------- */

/*
 * Pids of the children that bt_process_t handles own (spawned, not yet
 * reaped, not released by a close), process-wide like the subreaper
 * attribute itself: the orphan reaper must never reap one of them.
 * Thread-safe. Adding may silently fail when memory runs out (see children.c).
 */
void bt__owned_add(pid_t pid);
void bt__owned_remove(pid_t pid);
int bt__owned_has(pid_t pid);

/* ---- reexec.c: children handed over by the previous image ----------------------- */

/* 1 when `pid` was claimed (bt_reexec_claim), the claim now taken: the
 * caller's handle owns the child (it stays in the owned set); 0 otherwise. */
int bt__claim_take(pid_t pid);

/* A loop calls may start handles on: given, and not closed (uv_loop_close
 * leaves no backend fd). Calls refuse any other with -EINVAL rather than
 * crash or start a handle that never fires. */
static inline int bt__loop_usable(uv_loop_t *loop) {
  return loop != NULL && uv_backend_fd(loop) >= 0;
}

#endif
