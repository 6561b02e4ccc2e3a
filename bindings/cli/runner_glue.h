/*
 * runner_glue.h — every name the `baton` executable looks up on the Lua
 * side, in one place, so that the contract between the C runner and the Lua
 * layer can change here alone. It is the module `baton.runner` (documented
 * in scripts/baton/runner.lua) and, for the REPL, `baton.repl`:
 *
 *   global `baton` = require "baton"           (set by glue_open_baton)
 *   runner.main(fn, ...)                       run fn as the main task; returns
 *                                              true | false, message or nil
 *                                              (printed already), err, status
 *   runner.interrupt(sig)                      a signal arrived (from the loop,
 *                                              or from the main task's hook)
 *   runner.kill_jobs() -> {pid…}               a second signal: KILL what runs
 *   runner.executable = true                   set when loaded: the program is the
 *                                              baton executable (baton.reexec needs it)
 *   errors.is_own(source)                      baton's own code: not interrupted
 *   runner.on_main                             set to a C function: called with
 *                                              the main task; task.co is its coroutine
 *   repl.install(hide, show)                   the REPL's output wrappers
 *   repl.compile(src)  -> fn | nil, "incomplete" | nil, message
 *   repl.eval(fn, done) -> a task not started: task.co, task:start(),
 *                          task:cancel(msg); done() is called when it ends
 *   repl.complete(text) -> {candidate…}        Tab completion
 *   repl.finish()                              the REPL exits: shutdown hooks,
 *                                              what runs is stopped (drives the loop)
 *
 * Both modules are held by references taken when they are loaded, never
 * looked up by name again.
 */
#ifndef BATON_CLI_RUNNER_GLUE_H
#define BATON_CLI_RUNNER_GLUE_H

#include <lua.h>

/* Make the embedded modules requirable and set the global `baton`. Raises
 * on failure (call under lua_pcall). */
void glue_open_baton(lua_State *L);

/* Whether `source` (a chunk name) is baton's own Lua code, where an
 * interrupt must not stop it halfway (errors.is_own). Never raises. */
int glue_is_own(lua_State *L, const char *source);

/* Push runner.main. */
void glue_push_main(lua_State *L);

/* A new Lua thread, anchored in the registry, to call the Lua side from the
 * loop's callbacks with. */
lua_State *glue_runner_thread(lua_State *L);

/* Have `cb(co)` called with the coroutine of the main task when it starts. */
void glue_on_main(lua_State *L, void (*cb)(lua_State *co));

/* Call runner.kill_jobs() in protected mode: SIGKILL to every job baton
 * started and did not detach; pushes the pids of its own children that it
 * killed (a sequence), or the error message. Returns LUA_OK or an error
 * status. */
int glue_kill_jobs(lua_State *L);

/* Have `cb(co)` called with the coroutine of the task about to run, and
 * with NULL (or the outer task's) when it gives control back
 * (task.on_resume). */
void glue_on_resume(lua_State *L, void (*cb)(lua_State *co));

/* Call runner.interrupt(sig[, co]) in protected mode (`co`: busy code of
 * that coroutine is being stopped; NULL: none). Returns LUA_OK, or an error
 * status with the message pushed. */
int glue_interrupt(lua_State *L, int sig, lua_State *co);

/* Load baton.repl and install its output wrappers `hide` and `show`. Raises
 * on failure. */
void glue_repl_install(lua_State *L, lua_CFunction hide, lua_CFunction show);

enum { GLUE_COMPILED, GLUE_INCOMPLETE, GLUE_SYNTAX_ERROR };
/* Compile a REPL entry: pushes the function (GLUE_COMPILED), or the error
 * message (GLUE_INCOMPLETE: the entry goes on on the next line;
 * GLUE_SYNTAX_ERROR). Raises if the Lua side does. */
int glue_repl_compile(lua_State *L, const char *src);

/* Push a task, not started, that runs the function at `fn_index` as a REPL
 * entry and calls `done` when it ends; returns the task's coroutine. Raises
 * if the Lua side does. */
lua_State *glue_repl_eval(lua_State *L, int fn_index, lua_CFunction done);

/* repl.complete(text, before) in protected mode, `before` the first
 * `before` bytes of `line` (the line before the word; nil when line is
 * NULL): pushes the list of completions (or the error message); LUA_OK or an
 * error status. */
int glue_repl_complete(lua_State *L, const char *text, const char *line, size_t before);

/* repl.finish() in protected mode: LUA_OK, or an error status with the
 * message pushed. */
int glue_repl_finish(lua_State *L);

/* task:start() and task:cancel(msg) for the task at `task_index`, in
 * protected mode: LUA_OK, or an error status with the message pushed. */
int glue_task_start(lua_State *L, int task_index);
int glue_task_cancel(lua_State *L, int task_index, const char *msg);

#endif
