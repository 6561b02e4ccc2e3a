/*
 * main.c — the `baton` executable: runs scripts (`baton script.lua args…`,
 * `baton -e CODE`, `baton -`) as the main task of the event loop, and offers
 * the REPL when started on a terminal without a script. Modelled on lua.c:
 * the same `arg` table, the same handling of a script read from stdin.
 *
 * Exit status: 0, or 1 when the script fails (with a traceback on stderr),
 * or 100 for a usage error.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <malloc.h>
#endif

#include <lualib.h>

#include "interrupt.h"
#include "lbaton.h"
#include "repl.h"
#include "runner_glue.h"

#define EXIT_USAGE 100

static const char *progname = "baton";
static int exit_status = 1; /* for a failed script: 1, or 128 + the signal that stopped it */

static void usage(FILE *f) {
  fprintf(f,
          "usage: %s [options] [script [args...]]\n"
          "Run a Lua script with baton's process orchestration, or an interactive REPL.\n"
          "\n"
          "  -e CODE        run CODE (may be given more than once)\n"
          "  -l MOD         require MOD into global MOD (-l G=MOD: into global G)\n"
          "  -i             enter the REPL after running the script or -e code\n"
          "  -E             ignore LUA_INIT, LUA_PATH and LUA_CPATH\n"
          "  -W             turn warnings on\n"
          "  -v, --version  print the version\n"
          "  -h, --help     print this help\n"
          "  --             stop handling options\n"
          "  -              run the script read from stdin\n"
          "\n"
          "With no script, baton starts the REPL when stdin is a terminal and\n"
          "reads a script from stdin otherwise. `baton` is a global in scripts.\n",
          progname);
}

static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL) msg = luaL_tolstring(L, -1, NULL);
    fprintf(stderr, "%s: %s\n", progname, msg);
    fflush(stderr);
    lua_settop(L, 0);
  }
  return status;
}

/* ---- signals: SIGINT, SIGTERM, SIGHUP stop a script cleanly --------------------
 * Through interrupt.c: its handler sets a hook on the main task's coroutine,
 * as lua.c does, and wakes the loop; from the loop, baton.interrupt cancels
 * the main task's wait, and baton.main then stops the processes left. A
 * second signal, while that goes on, KILLs every process baton started and
 * did not detach (their groups too), reaps its own children, and ends baton
 * with the signal's default action; a third one ends it at once. */

static const int runner_signals[] = {SIGINT, SIGTERM, SIGHUP, 0};
static cli_interrupt runner_intr;
static lua_State *sig_L; /* the thread baton.interrupt runs on from the loop */

/* `busy`: the coroutine whose busy code is being stopped, or NULL. */
static void call_interrupt(lua_State *L, int sig, lua_State *busy) {
  if (glue_interrupt(L, sig, busy) != LUA_OK) {
    fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

/* Busy Lua code in the main task: stop it where it runs. */
static void on_busy(lua_State *co, int sig) {
  call_interrupt(co, sig, co); /* so that baton.main stops the processes left */
  const char *name = bt_signal_name(sig);
  /* No position: the traceback says where, and the same message comes from
   * a cancelled wait. */
  lua_pushfstring(co, "interrupted by %s", name ? name : "a signal");
  lua_error(co);
}

/* The main task waits in the loop (or is over): cancel its wait. */
static void on_wake(int sig) {
  call_interrupt(sig_L, sig, NULL);
}

/* A second signal: nothing is waited for any more. */
static void on_last(int sig) {
  lua_State *L = sig_L;
  if (glue_kill_jobs(L) == LUA_OK && lua_istable(L, -1)) {
    for (lua_Integer i = 1, n = luaL_len(L, -1); i <= n; i++) {
      lua_geti(L, -1, i);
      pid_t pid = (pid_t)lua_tointeger(L, -1);
      lua_pop(L, 1);
      while (pid > 0 && waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
      }
    }
  }
  fflush(NULL);
  signal(sig, SIG_DFL);
  raise(sig);
  _exit(128 + sig); /* a signal that does not end the process by default */
}

/* runner.on_main: the main task's coroutine is what the hook stops. */
static void set_main_co(lua_State *co) {
  cli_interrupt_set_target(&runner_intr, co);
}

static void install_signals(lua_State *L) {
  lb_runtime *rt = lb_runtime_get(L);
  rt->owns_signals = 1; /* blocking waits leave SIGINT to interrupt.c */
  sig_L = glue_runner_thread(L);
  cli_interrupt_start(&runner_intr, rt->loop, runner_signals, CLI_INTERRUPT_UNREF, on_busy,
                      on_wake);
  cli_interrupt_on_last(&runner_intr, on_last);
  glue_on_main(L, set_main_co);
  glue_on_resume(L, set_main_co); /* busy code in any task, not only the main one */
}

static void remove_signals(void) {
  cli_interrupt_stop(&runner_intr);
}

/* Stopped by SIGTERM or SIGHUP, with nothing failing but the interrupt
 * itself (the error value, at -2, is its own message): the way a service
 * manager stops baton, said by the exit status alone — not a traceback in
 * the journal at every stop. SIGINT keeps lua.c's message and traceback. */
static int quiet_stop(lua_State *L, int status) {
  int sig = status - 128;
  if (sig != SIGTERM && sig != SIGHUP) return 0;
  /* (a nil error value: the script caught the interrupt and ended on its
   * own; the message, at -3, is then the interrupt's alone) */
  int at = lua_isnil(L, -2) ? -3 : -2;
  const char *err = lua_type(L, at) == LUA_TSTRING ? lua_tostring(L, at) : NULL;
  const char *name = bt_signal_name(sig);
  char own[64];
  snprintf(own, sizeof own, "interrupted by %s", name ? name : "");
  return err != NULL && strcmp(err, own) == 0;
}

/* Run the function on top of the stack (with nargs arguments below... above it)
 * as the main task: baton.main(fn, args...) drives the loop until all is done. */
static int run_main(lua_State *L, int nargs) {
  int fn = lua_gettop(L) - nargs;
  lua_pushcfunction(L, lb_traceback);
  glue_push_main(L);
  /* stack: fn args... msgh main */
  lua_rotate(L, fn, 2); /* msgh main fn args... */
  int status = lua_pcall(L, nargs + 1, 4, fn);
  if (status != LUA_OK) {
    lua_remove(L, fn); /* the handler */
    return report(L, status);
  }
  if (!lua_toboolean(L, -4)) {
    /* A fourth result is the exit status to use (128 + signal when stopped by
     * one); a nil message was printed already. */
    if (lua_isinteger(L, -1)) exit_status = (int)lua_tointeger(L, -1);
    int printed = lua_isnil(L, -3) || quiet_stop(L, exit_status);
    lua_pushvalue(L, -3); /* the traceback */
    lua_remove(L, fn);
    if (printed) {
      lua_settop(L, fn - 1);
      return LUA_ERRRUN;
    }
    return report(L, LUA_ERRRUN);
  }
  lua_settop(L, fn - 1);
  return LUA_OK;
}

static int createargtable(lua_State *L, char **argv, int argc, int script) {
  int narg = argc - (script + 1);
  lua_createtable(L, narg, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
  return narg;
}

/* The script's `...`: arg[1], arg[2]… as the table is now (-e code may
 * have changed it), as lua.c does. Raises when `arg` is not a table. */
static int pushargs(lua_State *L) {
  if (lua_getglobal(L, "arg") != LUA_TTABLE) luaL_error(L, "'arg' is not a table");
  int n = (int)luaL_len(L, -1);
  luaL_checkstack(L, n + 3, "too many arguments to script");
  for (int i = 1; i <= n; i++)
    lua_rawgeti(L, -i, i);
  lua_remove(L, -n - 1); /* the table */
  return n;
}

static int run_script(lua_State *L, char **argv, int argc, int script) {
  (void)argc;
  const char *fname = argv[script];
  if (strcmp(fname, "-") == 0 && strcmp(argv[script - 1], "--") != 0) fname = NULL;
  int status = luaL_loadfile(L, fname);
  if (status != LUA_OK) return report(L, status);
  int chunk = lua_gettop(L);
  lua_pushcfunction(L, pushargs);
  status = lua_pcall(L, 0, LUA_MULTRET, 0);
  if (status != LUA_OK) {
    lua_remove(L, chunk);
    return report(L, status);
  }
  return run_main(L, lua_gettop(L) - chunk);
}

/* dolibrary(g, m): _G[g] = require(m); called from C, so that require's
 * errors carry no position, as lua.c's. */
static int dolibrary(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushvalue(L, 2);
  lua_call(L, 1, 1);
  lua_setglobal(L, lua_tostring(L, 1));
  return 0;
}

/* -l [G=]MOD: G (or MOD) = require(MOD), in the main task as any chunk. */
static int run_library(lua_State *L, const char *spec) {
  const char *eq = strchr(spec, '=');
  lua_pushcfunction(L, dolibrary);
  if (eq) {
    lua_pushlstring(L, spec, (size_t)(eq - spec));
    lua_pushstring(L, eq + 1);
  } else {
    lua_pushstring(L, spec);
    lua_pushstring(L, spec);
  }
  return run_main(L, 2);
}

/* LUA_INIT_5_4, else LUA_INIT: "@file" runs the file, anything else is code
 * (chunk name "=LUA_INIT"), as lua.c does. */
static int run_init(lua_State *L) {
  const char *name = "=LUA_INIT_5_4";
  const char *init = getenv(name + 1);
  if (init == NULL) {
    name = "=LUA_INIT";
    init = getenv(name + 1);
  }
  if (init == NULL) return LUA_OK;
  int status =
      init[0] == '@' ? luaL_loadfile(L, init + 1) : luaL_loadbuffer(L, init, strlen(init), name);
  if (status != LUA_OK) return report(L, status);
  return run_main(L, 0);
}

static int run_code(lua_State *L, const char *code) {
  int status = luaL_loadbuffer(L, code, strlen(code), "=(command line)");
  if (status != LUA_OK) return report(L, status);
  return run_main(L, 0);
}

/* `baton procfile ARGS…`: baton.procfile.main(ARGS…) as the main task,
 * its result the exit status. (A script named "procfile" runs as
 * `baton ./procfile`.) */
static int run_procfile(lua_State *L, char **argv, int argc) {
  static const char code[] = "local main = require('baton.procfile').main\n"
                             "os.exit(main(...))";
  int status = luaL_loadbuffer(L, code, sizeof code - 1, "=baton procfile");
  if (status != LUA_OK) return report(L, status);
  for (int i = 2; i < argc; i++)
    lua_pushstring(L, argv[i]);
  return run_main(L, argc - 2);
}

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  int script = 0, interactive = 0, has_e = 0, has_v = 0, no_env = 0;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || strcmp(a, "-") == 0) {
      script = i;
      break;
    }
    if (strcmp(a, "--") == 0) {
      if (i + 1 < argc) script = i + 1;
      break;
    }
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      lua_pushinteger(L, 0);
      return 1;
    }
    if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
      /* As lua does: print the version, then run what else was asked. */
      printf("baton %s (%s, libuv %s)\n", BATON_VERSION_STRING, LUA_RELEASE, uv_version_string());
      fflush(stdout);
      has_v = 1;
    } else if (strcmp(a, "-i") == 0) {
      interactive = 1;
    } else if (strcmp(a, "-E") == 0) {
      no_env = 1;
    } else if (strcmp(a, "-W") == 0) {
      /* in order with -e and -l, below */
    } else if (strncmp(a, "-l", 2) == 0 && a[2] != '\0') {
      /* -lMOD: in order with -e, below */
    } else if (strcmp(a, "-l") == 0) {
      if (++i >= argc) {
        fprintf(stderr, "%s: '-l' needs argument\n", progname);
        usage(stderr);
        lua_pushinteger(L, EXIT_USAGE);
        return 1;
      }
    } else if (strncmp(a, "-e", 2) == 0 && a[2] != '\0') {
      has_e = 1; /* -eCODE, as lua takes it */
    } else if (strcmp(a, "-e") == 0) {
      if (++i >= argc) {
        fprintf(stderr, "%s: '-e' needs argument\n", progname);
        usage(stderr);
        lua_pushinteger(L, EXIT_USAGE);
        return 1;
      }
      has_e = 1;
    } else {
      fprintf(stderr, "%s: unrecognized option '%s'\n", progname, a);
      usage(stderr);
      lua_pushinteger(L, EXIT_USAGE);
      return 1;
    }
  }

  if (no_env) { /* -E: package ignores LUA_PATH and LUA_CPATH, as in lua.c */
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  luaL_openlibs(L);
  /* os.exit closes the state by default here, so finalizers run and the loop
   * is closed properly (`os.exit(code, false)` still skips that). */
  /* (Closing the state KILLs and reaps what baton started and did not
   * detach: os.exit leaves nothing behind, though it runs no shutdown
   * hooks and waits for nothing.) */
  /* (The code is checked first, as os.exit does, so that a bad one is the
   * caller's error, raised where it called.) */
  luaL_dostring(
      L, "local exit = os.exit\n"
         "os.exit = function(code, close)\n"
         "  if code ~= nil and type(code) ~= 'boolean' then\n"
         "    local n = (type(code) == 'number' or type(code) == 'string') and tonumber(code)\n"
         "    local why = not n and 'number expected, got ' .. type(code)\n"
         "      or not math.tointeger(n) and 'number has no integer representation'\n"
         "    if why then error(\"bad argument #1 to 'exit' (\" .. why .. ')', 2) end\n"
         "  end\n"
         "  if close == nil then close = true end\n"
         "  local function leave(code, close)\n"
         "    if close and require('baton.core').running() then\n"
         "      -- Inside a loop callback (a signal watcher's function, say): closing\n"
         "      -- the state would run the loop inside itself (it spun forever).\n"
         "      -- What closing does, done now: what waits for stdout goes out,\n"
         "      -- what runs is KILLed; then the exit, without the close.\n"
         "      local logs = package.loaded['baton.logs']\n"
         "      if logs then pcall(function() for _, o in pairs(logs._outs()) "
         "do o:drain() end end) end\n"
         "      pcall(require('baton.runner').kill_jobs)\n"
         "      io.stdout:flush(); io.stderr:flush()\n"
         "      return exit(code, false)\n"
         "    end\n"
         "    return exit(code, close)\n"
         "  end\n"
         "  if close then require('baton.task').exit_unwinding(code, leave) end\n"
         "  return leave(code, close)\n"
         "end");
  glue_open_baton(L);
  createargtable(L, argv, argc, script);
  install_signals(L);
  if (script == 1 && strcmp(argv[1], "procfile") == 0) {
    lua_pushinteger(L, run_procfile(L, argv, argc) == LUA_OK ? 0 : exit_status);
    return 1;
  }

  /* LUA_INIT (unless -E), then -e, -l and -W in order, then the script. */
  if (!no_env && run_init(L) != LUA_OK) {
    lua_pushinteger(L, exit_status);
    return 1;
  }
  for (int i = 1; i < (script ? script : argc); i++) {
    int status = LUA_OK;
    if (strncmp(argv[i], "-e", 2) == 0)
      status = run_code(L, argv[i][2] ? argv[i] + 2 : argv[++i]);
    else if (strncmp(argv[i], "-l", 2) == 0)
      status = run_library(L, argv[i][2] ? argv[i] + 2 : argv[++i]);
    else if (strcmp(argv[i], "-W") == 0)
      lua_warning(L, "@on", 0);
    if (status != LUA_OK) {
      lua_pushinteger(L, exit_status);
      return 1;
    }
  }
  if (script && run_script(L, argv, argc, script) != LUA_OK) {
    lua_pushinteger(L, exit_status);
    return 1;
  }
  if (interactive || (!script && !has_e && !has_v)) {
    if (isatty(STDIN_FILENO) || interactive) {
      remove_signals(); /* the REPL handles Ctrl-C its own way */
      lua_pushinteger(L, lb_repl(L));
      return 1;
    }
    if (!interactive) {
      /* Like `lua -`: the script comes from stdin. */
      int status = luaL_loadfile(L, NULL);
      if (status == LUA_OK)
        status = run_main(L, 0);
      else
        report(L, status);
      lua_pushinteger(L, status == LUA_OK ? 0 : exit_status);
      return 1;
    }
  }
  lua_pushinteger(L, 0);
  return 1;
}

int main(int argc, char **argv) {
  if (argv[0] && argv[0][0]) progname = argv[0];
  /* Started with stdin, stdout or stderr closed (`baton … >&-`): put
   * /dev/null there, or the first pipe would land on fd 0-2 and be taken
   * for it (libuv aborts on that). */
  for (int fd = 0; fd <= 2; fd++) {
    if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
      int n = open("/dev/null", O_RDWR);
      if (n >= 0 && n != fd) close(n);
    }
  }
#if defined(M_MMAP_THRESHOLD) && defined(M_TRIM_THRESHOLD)
  /* Output read from pipes becomes Lua strings of up to a read's size (1 MiB)
   * that live until the next GC cycle, which frees them in a batch. glibc's
   * adaptive thresholds then hand the top of the heap back to the kernel and
   * take it again a few hundred times per GiB read: every page comes back
   * zero-filled through a page fault (2,500-8,000 per GiB read at the end of
   * a pipeline, none for Python). Fixed thresholds keep the heap: strings up
   * to 2 MiB come from it, and up to 4 MiB free at its top is kept. */
  mallopt(M_MMAP_THRESHOLD, 2 << 20);
  mallopt(M_TRIM_THRESHOLD, 4 << 20);
#endif
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create Lua state: not enough memory\n", progname);
    return 111;
  }
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 0);
  int code = 1;
  if (status != LUA_OK)
    report(L, status);
  else
    code = (int)lua_tointeger(L, -1);
  fflush(stdout);
  lua_close(L);
  return code;
}
