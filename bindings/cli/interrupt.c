/*
 * interrupt.c — the signal handler, Lua hook and loop wakeup shared by the
 * runner and the REPL (see interrupt.h for the contract).
 *
 * Only async-signal-safe things happen in the handler: reading and writing
 * sig_atomic_t and pointers set before the handler was installed,
 * lua_sethook (Lua's ldebug.c allows it during a signal, and lua.c relies on
 * it), uv_async_send, signal and raise.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <string.h>

#include "interrupt.h"
#include "runner_glue.h"

#define CLI_HOOK_MASK (LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT)

static cli_interrupt *volatile cli_active; /* the one the handler serves */

/* Busy Lua code in the target: stop it where it runs. */
static void cli_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  cli_interrupt *in = cli_active;
  if (in == NULL || !in->pending) {
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  /* Not inside baton's own code (a spawn half done, a process not yet
   * recorded): stop at the script's next instruction instead. */
  lua_Debug here;
  if (lua_getstack(L, 0, &here) && lua_getinfo(L, "S", &here) &&
      (here.what[0] == 'C' || glue_is_own(L, here.source)))
    return; /* the hook stays */
  lua_sethook(L, NULL, 0, 0);
  int sig = in->pending;
  in->acted = 1;
  if (in->flags & CLI_INTERRUPT_REARM) in->pending = 0;
  in->on_hook(L, sig);
}

static void cli_on_signal(int sig) {
  cli_interrupt *in = cli_active;
  if (in->pending) {
    /* The first one was never acted on (busy code the hook cannot reach, a
     * blocked C call) or, in the runner, is still being acted on: a second
     * one ends the process, as in lua.c — from the loop, after on_last has
     * killed what it knows, when there is one; a third one at once. */
    if (in->on_last && !in->last) {
      in->last = sig;
      for (const int *s = in->signals; *s; s++)
        signal(*s, SIG_DFL);
      uv_async_send(&in->async);
      return;
    }
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  in->acted = 0;
  in->pending = sig;
  lua_State *co = in->target;
  if (co) lua_sethook(co, cli_hook, CLI_HOOK_MASK, 1);
  uv_async_send(&in->async);
}

static void cli_on_async(uv_async_t *a) {
  cli_interrupt *in = a->data;
  if (in->last) in->on_last(in->last);
  int sig = in->pending;
  if (!sig) return; /* the hook acted on it already */
  in->acted = 1;
  if (in->flags & CLI_INTERRUPT_REARM) in->pending = 0;
  lua_State *co = in->target;
  if (co) lua_sethook(co, NULL, 0, 0); /* waiting, not running: the wake callback acts */
  in->on_wake(sig);
}

int cli_interrupt_start(cli_interrupt *in, uv_loop_t *loop, const int *signals, int flags,
                        cli_hook_cb on_hook, cli_wake_cb on_wake) {
  memset(in, 0, sizeof *in);
  in->flags = flags;
  in->signals = signals;
  in->on_hook = on_hook;
  in->on_wake = on_wake;
  int err = uv_async_init(loop, &in->async, cli_on_async);
  if (err < 0) return err;
  in->async.data = in;
  if (flags & CLI_INTERRUPT_UNREF) uv_unref((uv_handle_t *)&in->async);
  cli_active = in;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = cli_on_signal;
  sigemptyset(&sa.sa_mask);
  for (const int *s = signals; *s; s++)
    sigaction(*s, &sa, NULL);
  return 0;
}

void cli_interrupt_on_last(cli_interrupt *in, cli_last_cb on_last) {
  in->on_last = on_last;
}

void cli_interrupt_set_target(cli_interrupt *in, lua_State *co) {
  in->target = co;
  atomic_signal_fence(memory_order_seq_cst); /* the handler sees it before pending is read */
  /* A signal that came while there was no target: the loop's wakeup may
   * never run if this coroutine's code is busy, so the hook acts instead. */
  if (co && in->pending && !in->acted) lua_sethook(co, cli_hook, CLI_HOOK_MASK, 1);
}

lua_State *cli_interrupt_target(const cli_interrupt *in) {
  return in->target;
}

void cli_interrupt_stop(cli_interrupt *in) {
  for (const int *s = in->signals; *s; s++)
    signal(*s, SIG_DFL);
  in->target = NULL;
  if (!uv_is_closing((uv_handle_t *)&in->async)) uv_close((uv_handle_t *)&in->async, NULL);
}
