/*
 * interrupt.h — the one path from a signal (Ctrl-C, SIGTERM, SIGHUP) to the
 * Lua code it must stop, shared by the script runner (main.c) and the REPL
 * (repl.c).
 *
 * As in lua.c, a real signal handler does the work (libuv's signal watchers
 * run only when the loop does, never while Lua code is busy): it sets a hook
 * on the target coroutine, the one running the user's code, so that busy
 * code stops at its next instruction, and wakes the loop with a uv_async, so
 * that code waiting in the loop is stopped from there. The hook callback
 * runs if the target was running Lua code; the wake callback runs from the
 * loop in any case, after the hook has been removed again. A signal that
 * arrives while the previous one is still pending ends the process with the
 * signal's default action.
 */
#ifndef BATON_CLI_INTERRUPT_H
#define BATON_CLI_INTERRUPT_H

#include <signal.h>

#include <lua.h>
#include <uv.h>

/* In the target coroutine, from its hook: the code is busy. Should stop it by
 * raising a Lua error (it must not return normally, or the code goes on). */
typedef void (*cli_hook_cb)(lua_State *co, int sig);
/* From the loop: the target waits (its hook was removed), or there is none. */
typedef void (*cli_wake_cb)(int sig);
/* From the loop: a second signal came while the first was being acted on.
 * Must not return: it ends the process (after killing what it knows). */
typedef void (*cli_last_cb)(int sig);

enum {
  /* Each signal is acted on once, and the next one interrupts again (the
   * REPL). Without it the first signal stays pending, so that a second one
   * kills (the runner). */
  CLI_INTERRUPT_REARM = 1,
  /* The wakeup does not keep the loop alive. */
  CLI_INTERRUPT_UNREF = 2,
};

typedef struct {
  uv_async_t async;
  volatile sig_atomic_t pending; /* the signal not acted on yet, or 0 */
  volatile sig_atomic_t acted;   /* pending was acted on (it stays set without REARM) */
  volatile sig_atomic_t last;    /* a second signal, for on_last, or 0 */
  cli_last_cb on_last;           /* NULL: a second signal kills at once */
  lua_State *volatile target;    /* where the hook goes, or NULL */
  int flags;
  const int *signals; /* 0-terminated */
  cli_hook_cb on_hook;
  cli_wake_cb on_wake;
} cli_interrupt;

/* Handle `signals` (0-terminated, static) through `in` from now on; `in` must
 * stay valid until its loop is closed. Returns 0 or a negative libuv error
 * (then nothing was installed). Only one cli_interrupt is active at a time:
 * starting one takes the signals over from the one before. */
int cli_interrupt_start(cli_interrupt *in, uv_loop_t *loop, const int *signals, int flags,
                        cli_hook_cb on_hook, cli_wake_cb on_wake);

/* Have a second signal (while the first is pending, without REARM) call
 * `on_last` from the loop instead of killing at once; a third one still
 * kills at once (the loop may be stuck). */
void cli_interrupt_on_last(cli_interrupt *in, cli_last_cb on_last);

/* The coroutine to hook when a signal comes (NULL: none; the wake callback
 * still runs). Called from the loop's thread, between signals or not. */
void cli_interrupt_set_target(cli_interrupt *in, lua_State *co);
lua_State *cli_interrupt_target(const cli_interrupt *in);

/* Give the signals their default action back (as lua.c does) and close the
 * wakeup (it finishes closing on the loop's next run). */
void cli_interrupt_stop(cli_interrupt *in);

#endif
