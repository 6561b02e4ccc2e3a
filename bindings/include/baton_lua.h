/*
 * baton_lua.h — embedding baton's Lua module in a host program.
 *
 * This is everything a host needs: the two module openers and the call that
 * hands baton the host's libuv loop. The `baton` executable and the module's
 * own files use more (bindings/src/lbaton.h), none of which a host should
 * rely on.
 *
 * A host with its own loop does, on the thread that runs that loop:
 *
 *     lua_State *L = luaL_newstate();
 *     luaL_openlibs(L);
 *     lb_set_loop(L, &loop);                   // before baton is first loaded
 *     luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
 *     lua_pushcfunction(L, luaopen_baton);     // so that require "baton" works
 *     lua_setfield(L, -2, "baton");
 *     lua_pop(L, 1);
 *     ... run scripts; they start tasks with baton.go ...
 *     uv_run(&loop, UV_RUN_DEFAULT);           // the tasks run in here
 *     lua_close(L);                            // closes baton's handles ...
 *     uv_run(&loop, UV_RUN_DEFAULT);           // ... which finish closing here
 *     uv_loop_close(&loop);
 *
 * bindings/test/test_host.c is a worked example.
 *
 * Lifetimes. Baton's state for L (its runtime: the loop pointer, the list of
 * its handles, the callback thread) lives in L's registry and is freed by
 * lua_close(L). Its handles are malloc'd by baton and freed by their libuv
 * close callbacks: on a loop of baton's own, lua_close runs it until they
 * have fired and closes it; on the host's loop, lua_close only starts the
 * closes, so the host runs its loop until those have fired (uv_run returns,
 * or uv_loop_close no longer says UV_EBUSY) and only then closes the loop.
 * lua_close(L) also SIGKILLs every process baton started that still runs
 * and was not detached, with the process group it leads, and reaps it (a
 * waitpid that blocks until the kernel has ended it).
 *
 * Callbacks. Baton's libuv callbacks (child exits, pipe reads and writes,
 * timers, signals) fire only from inside uv_run of the loop baton uses, on
 * the thread running it, never from inside luaopen_baton or lb_set_loop;
 * they resume tasks and call Lua functions on L, whose errors they catch
 * (see below). With the host's loop, nothing of baton's runs unless the host
 * runs the loop.
 *
 * Threads and signals. Nothing here is thread-safe: a lua_State, the loop
 * baton uses with it, and every call on either belong to one thread. None
 * may be called from a signal handler. Process-wide effects: SIGPIPE is set
 * to be ignored (see luaopen_baton); scripts that watch signals
 * (baton.on_signal, an orphan reaper's SIGCHLD) do it with libuv's
 * uv_signal_t, whose handlers are process-wide.
 *
 * luv. A host that also opens luv (github.com/luvit/luv) on L gives both the
 * same loop before either is loaded: luv_set_loop(L, &loop) and
 * lb_set_loop(L, &loop). Without a host loop, baton and luv share one
 * whichever is required first (docs/reference.md, "Beside luv").
 *
 * Errors nobody catches are handled on the Lua side; there is no C hook:
 * - a task's error that nobody ever waits for is uncaught: once that is
 *   known (the task was collected, or `require("baton.task")
 *   .report_uncaught()` is called as the program ends) it goes to the Lua
 *   function `require("baton.task").on_uncaught(task, traceback)`, whose
 *   default prints "baton: uncaught error in task: ..." to stderr and leaves
 *   the loop alone. A host replaces that function to send the report
 *   elsewhere (scripts/baton/task.lua says more).
 * - an error raised by a callback of `baton.core` that runs outside any task
 *   goes to the function given to `require("baton.core").set_error_handler`
 *   (called with the traceback), or is printed to stderr
 *   ("baton: error in callback: ...") when none is set.
 */
#ifndef BATON_LUA_H
#define BATON_LUA_H

#include <lua.h>
#include <uv.h>

#if defined(__GNUC__)
#define BATON_LUA_EXTERN __attribute__((visibility("default")))
#else
#define BATON_LUA_EXTERN
#endif

/*
 * The `baton` module: registers baton's Lua modules ("baton.core" and the
 * embedded "baton", "baton.task", "baton.process", ...) in package.preload,
 * then runs the Lua layer and pushes its table. Returns 1 (one result), as a
 * lua_CFunction; meant for package.preload["baton"], luaL_requiref, or
 * lua5.4 loading baton.so. Raises a Lua error on failure (the event loop
 * cannot be created, out of memory, a Lua layer that fails to load): call it
 * in protected mode, as require does; nothing is left to undo then (a
 * runtime already made is freed with the state).
 *
 * On first use in a state it creates baton's runtime: on the loop given with
 * lb_set_loop, or else on luv's loop when luv was loaded first (in a build
 * with luv's header, BATON_WITH_LUV), or else on a
 * loop of its own, which baton runs itself (a waiting call outside any task
 * drives it) and closes with the state. Calling it again on the same state
 * reuses that runtime (the Lua layer runs again: prefer require). It also
 * sets SIGPIPE to be ignored, process-wide, when its disposition was the
 * default, so that writing to a closed pipe is an EPIPE error instead of
 * death.
 */
BATON_LUA_EXTERN int luaopen_baton(lua_State *L);

/*
 * The `baton.core` module alone: the C layer under the Lua API (spawn,
 * streams, timers, the loop), without the Lua layer and without touching
 * package.preload. Pushes its table and returns 1; raises as luaopen_baton
 * does, and has the same first-use effects (the runtime, SIGPIPE). Scripts
 * are not expected to use it directly; luaopen_baton registers it already.
 */
BATON_LUA_EXTERN int luaopen_baton_core(lua_State *L);

/*
 * Make baton use the host's `loop` for state `L`. Call it before baton is
 * first loaded on L; afterwards it has no effect (the runtime keeps the loop
 * it was created with). `loop` is borrowed, not copied: the host keeps
 * ownership; it runs the loop, and baton's callbacks (child exits, pipe
 * reads, timers, signals) fire only from inside the host's uv_run, on the
 * thread running it. Waiting calls
 * then work only inside tasks (baton.go); outside one they raise instead of
 * running the host's loop. The loop must outlive L: lua_close(L) starts
 * closing baton's handles on it, and the host's next uv_run finishes that.
 * Stores `loop` in L's registry: it returns nothing and reports no error,
 * but like any Lua API call it can raise a memory error, which outside
 * protected mode is L's panic (call it right after luaL_newstate, or in
 * protected mode). A NULL `loop` undoes an earlier call (baton makes its
 * own loop then).
 */
BATON_LUA_EXTERN void lb_set_loop(lua_State *L, uv_loop_t *loop);

#endif
