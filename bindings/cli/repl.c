/*
 * repl.c — the interactive REPL of the `baton` executable, on a terminal.
 *
 * The event loop never blocks on the terminal: libedit's readline-compatible
 * callback interface reads a character whenever a uv_poll on stdin says one is
 * there, so tasks, timers and child exits go on while the user types. Each
 * complete entry runs as a task (scripts/baton/repl.lua); while it runs the
 * prompt is down and the terminal is in its normal mode, as in lua.c.
 *
 * libedit is opened with dlopen when the REPL starts, so running scripts never
 * pays for loading it (nor needs it installed). Without it the REPL still
 * works, on the terminal's own line editing (canonical mode).
 *
 * Ctrl-C (through interrupt.c, as the runner): at the prompt it drops the
 * line; while an entry runs Lua code it stops it through a hook set from the
 * signal handler (lua.c's method); while an entry waits in the loop it
 * cancels the wait. Ctrl-D at the prompt exits. What the REPL asks of the Lua
 * side (scripts/baton/repl.lua) goes through runner_glue.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dlfcn.h>

#include <editline/readline.h> /* types only: libedit is loaded when the REPL starts */

#include "interrupt.h"
#include "lbaton.h"
#include "repl.h"
#include "runner_glue.h"

#define PROMPT "> "
#define PROMPT2 ">> "

static struct {
  lua_State *L;
  lb_runtime *rt;
  uv_poll_t input;
  uv_idle_t file_input; /* stdin is a regular file (no poll): read when idle */
  uv_idle_t backlog;    /* lines read ahead, for when the prompt is back */
  int from_file;
  cli_interrupt intr; /* Ctrl-C; its target is the running entry's coroutine */
  int done;
  int quit_sig;  /* SIGHUP or SIGTERM ended the REPL: exit 128 + it */
  int prompt_up; /* the line editor owns the terminal line */
  char *pending; /* lines of an incomplete entry */
  int entry_ref; /* the running entry's task, anchored, or LUA_NOREF */
  char histfile[1024];
} R;

static void repl_prompt(int second);
static const char *repl_prompt_text(int second);
static void repl_on_input(uv_poll_t *p, int status, int events);
static void repl_on_file(uv_idle_t *idle) {
  (void)idle;
  repl_on_input(NULL, 0, UV_READABLE); /* a file never blocks a read */
}

/* Wait for input (or stop): a poll on a terminal or pipe, idle reads from a file. */
static void repl_input(int on) {
  if (R.from_file) {
    if (on)
      uv_idle_start(&R.file_input, repl_on_file);
    else
      uv_idle_stop(&R.file_input);
  } else {
    if (on)
      uv_poll_start(&R.input, UV_READABLE, repl_on_input);
    else
      uv_poll_stop(&R.input);
  }
}
static void repl_line(char *line);
static void ed_lines(void);

/* ---- the line editor: libedit through dlopen, or the terminal's own ------------ */

static struct {
  int loaded;
  void (*install)(const char *, rl_vcpfunc_t *);
  void (*remove)(void);
  void (*read_char)(void);
  void (*redisplay)(void);
  int (*delete_text)(int, int);
  int (*add_history)(const char *);
  int (*read_history)(const char *);
  int (*write_history)(const char *);
  void (*using_history)(void);
  int *point, *end, *catch_signals;
  const char **name;
  /* completion (optional: missing symbols leave it off) */
  char *(**completion_entry)(const char *, int);
  const char **word_breaks;
  char **line_buffer;
  int *append_char;
  /* the fallback: lines assembled from read(2) in canonical mode */
  const char *prompt;
  char *buf; /* grows to hold a whole line, up to ED_MAXLINE */
  size_t cap, len;
  int eof;
} E;

#define ED_MAXLINE (64u << 20)

static int ed_load(void) {
  void *h = dlopen("libedit.so.2", RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) return -1;
#define SYM(field, name)                                                                           \
  if ((*(void **)&E.field = dlsym(h, name)) == NULL) return -1
  SYM(install, "rl_callback_handler_install");
  SYM(remove, "rl_callback_handler_remove");
  SYM(read_char, "rl_callback_read_char");
  SYM(redisplay, "rl_forced_update_display");
  SYM(delete_text, "rl_delete_text");
  SYM(add_history, "add_history");
  SYM(read_history, "read_history");
  SYM(write_history, "write_history");
  SYM(using_history, "using_history");
  SYM(point, "rl_point");
  SYM(end, "rl_end");
  SYM(catch_signals, "rl_catch_signals");
  SYM(name, "rl_readline_name");
#undef SYM
  *(void **)&E.completion_entry = dlsym(h, "rl_completion_entry_function");
  *(void **)&E.word_breaks = dlsym(h, "rl_basic_word_break_characters");
  *(void **)&E.line_buffer = dlsym(h, "rl_line_buffer");
  *(void **)&E.append_char = dlsym(h, "rl_completion_append_character");
  E.loaded = 1;
  return 0;
}

/* Tab: the candidates repl.complete(text) gives, one per call (readline's
 * generator protocol: state 0 starts a new list; each string is malloc'd
 * and freed by the library). */
static char *ed_complete(const char *text, int state) {
  static char **list;
  static size_t n, next;
  if (state == 0) {
    for (size_t i = next; i < n; i++)
      free(list[i]);
    free(list);
    list = NULL;
    n = next = 0;
    lua_State *L = R.L;
    /* The line before the word (`("x")` before `:up`), when it can be told. */
    const char *line = E.line_buffer ? *E.line_buffer : NULL;
    size_t len = strlen(text), at = (size_t)*E.point;
    size_t start = line && at >= len && at <= strlen(line) ? at - len : 0;
    if (glue_repl_complete(L, text, line, start) == LUA_OK) {
      size_t count = (size_t)luaL_len(L, -1);
      list = calloc(count ? count : 1, sizeof *list);
      for (size_t i = 0; list && i < count; i++) {
        lua_geti(L, -1, (lua_Integer)i + 1);
        const char *s = lua_tostring(L, -1);
        if (s && (list[n] = strdup(s)) != NULL) n++;
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  return next < n ? list[next++] : NULL;
}

static void ed_install(const char *prompt) {
  if (E.loaded) {
    E.install(prompt, repl_line);
  } else {
    E.prompt = prompt;
    fputs(prompt, stdout);
    fflush(stdout);
  }
}

static void ed_remove(void) {
  if (E.loaded) E.remove();
}

static void ed_clear(void) {
  if (E.loaded) {
    E.delete_text(0, *E.end);
    *E.point = *E.end = 0;
  }
  E.len = 0;
}

static void ed_redisplay(void) {
  if (E.loaded)
    E.redisplay();
  else if (E.prompt) {
    fputs(E.prompt, stdout);
    fflush(stdout);
  }
}

static void ed_history(const char *line) {
  if (E.loaded) E.add_history(line);
}

/* Input is readable: feed the editor, or cut complete lines ourselves. */
static void ed_read(void) {
  if (E.loaded) {
    E.read_char();
    return;
  }
  if (!E.eof) {
    if (E.len + 1 >= E.cap && E.cap < ED_MAXLINE) {
      size_t cap = E.cap ? E.cap * 2 : 8192;
      char *b = realloc(E.buf, cap);
      if (b) E.buf = b, E.cap = cap;
    }
    if (E.buf == NULL) return;
    ssize_t n = read(STDIN_FILENO, E.buf + E.len, E.cap - 1 - E.len);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0)
      E.eof = 1;
    else
      E.len += (size_t)n;
  }
  ed_lines();
}

/* Hand the complete lines read so far to the REPL while it prompts (an
 * entry that waits takes the prompt down: the rest stays for later); at end
 * of input, a last line without newline, then the end. */
static void ed_lines(void) {
  while (R.prompt_up && !R.done) {
    char *nl = memchr(E.buf, '\n', E.len);
    size_t linelen = nl ? (size_t)(nl - E.buf) : E.len;
    if (nl == NULL && !(E.len + 1 >= E.cap && E.cap >= ED_MAXLINE) && !(E.eof && E.len > 0)) {
      if (E.eof) repl_line(NULL);
      return;
    }
    char *line = strndup(E.buf, linelen);
    size_t used = nl ? linelen + 1 : linelen;
    memmove(E.buf, E.buf + used, E.len - used);
    E.len -= used;
    repl_line(line);
  }
}

/* The prompt is back: lines already read are not waiting for more input. */
static void ed_backlog(uv_idle_t *idle) {
  uv_idle_stop(idle);
  ed_lines();
}

/* ---- Ctrl-C, and SIGHUP / SIGTERM (through interrupt.c) -------------------------
 * Ctrl-C stops the entry, or drops the line. SIGHUP (the terminal closed)
 * and SIGTERM end the REPL as Ctrl-D does — what was started at the prompt
 * is stopped — with 128 + the signal as exit status. */

static const int repl_signals[] = {SIGINT, SIGHUP, SIGTERM, 0};

static void repl_quit(int sig) {
  R.quit_sig = sig;
  R.done = 1;
  uv_stop(R.rt->loop);
}

/* The entry runs Lua code: stop it there. */
static void repl_on_busy(lua_State *co, int sig) {
  if (sig != SIGINT) {
    repl_quit(sig);
    const char *name = bt_signal_name(sig);
    luaL_error(co, "interrupted by %s", name ? name : "a signal");
  }
  luaL_error(co, "interrupted!");
}

static void repl_on_wake(int sig) {
  if (sig != SIGINT) {
    if (cli_interrupt_target(&R.intr)) {
      const char *name = bt_signal_name(sig);
      char msg[64];
      snprintf(msg, sizeof msg, "interrupted by %s", name ? name : "a signal");
      lua_State *L = R.L;
      lua_rawgeti(L, LUA_REGISTRYINDEX, R.entry_ref);
      if (glue_task_cancel(L, -1, msg) != LUA_OK) lua_pop(L, 1);
      lua_pop(L, 1);
    }
    repl_quit(sig);
    return;
  }
  if (cli_interrupt_target(&R.intr)) {
    /* The entry waits in the loop: make its wait raise. */
    lua_State *L = R.L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, R.entry_ref);
    if (glue_task_cancel(L, -1, "interrupted!") != LUA_OK) {
      fprintf(stderr, "baton: %s\n", lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  } else if (R.prompt_up) {
    /* Drop the line and any incomplete entry, as a shell does. */
    free(R.pending);
    R.pending = NULL;
    ed_clear();
    fputs("^C\n", stdout);
    fflush(stdout);
    ed_remove();
    repl_prompt(0);
  }
}

/* ---- output from tasks while the prompt is up -------------------------------------- */

static int repl_hide(lua_State *L) {
  (void)L;
  if (R.prompt_up) {
    fputs("\r\033[K", stdout); /* to column 0, clear the line */
    fflush(stdout);
  }
  return 0;
}

static int repl_show(lua_State *L) {
  (void)L;
  if (R.prompt_up) ed_redisplay();
  return 0;
}

/* ---- entries ---------------------------------------------------------------------- */

static int repl_entry_done(lua_State *L) {
  (void)L;
  cli_interrupt_set_target(&R.intr, NULL);
  luaL_unref(R.L, LUA_REGISTRYINDEX, R.entry_ref);
  R.entry_ref = LUA_NOREF;
  if (!R.done) repl_prompt(0);
  return 0;
}

static void repl_run(lua_State *L, int fn_index) {
  /* The prompt goes down: the entry (and its children) own the terminal. */
  ed_remove();
  R.prompt_up = 0;
  repl_input(0);

  lua_State *co = glue_repl_eval(L, fn_index, repl_entry_done); /* pushes the task */
  cli_interrupt_set_target(&R.intr, co);
  lua_pushvalue(L, -1);
  R.entry_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* Runs until the entry's first wait, or to its end (then done fired). */
  if (glue_task_start(L, -1) != LUA_OK) {
    fprintf(stderr, "baton: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    if (R.entry_ref != LUA_NOREF) repl_entry_done(L);
  }
  lua_pop(L, 1); /* the task */
}

static void repl_line(char *line) {
  lua_State *L = R.L;
  if (line == NULL) { /* Ctrl-D */
    ed_remove();
    R.prompt_up = 0;
    fputs("\n", stdout); /* off the prompt's line */
    fflush(stdout);
    if (R.pending) { /* an entry left unfinished: say why, as lua does */
      if (luaL_loadbuffer(L, R.pending, strlen(R.pending), "=stdin") != LUA_OK)
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
      lua_pop(L, 1);
      free(R.pending);
      R.pending = NULL;
    }
    R.done = 1;
    uv_stop(R.rt->loop);
    return;
  }
  char *src;
  if (R.pending) {
    size_t a = strlen(R.pending), b = strlen(line);
    src = malloc(a + b + 2);
    memcpy(src, R.pending, a);
    src[a] = '\n';
    memcpy(src + a + 1, line, b + 1);
    free(R.pending);
    R.pending = NULL;
  } else {
    src = strdup(line);
  }
  free(line);

  int compiled = glue_repl_compile(L, src); /* pushes the function or the message */
  if (compiled == GLUE_INCOMPLETE) {
    R.pending = src;
    lua_pop(L, 1);
    ed_remove();
    repl_prompt(1);
    return;
  }
  if (compiled == GLUE_SYNTAX_ERROR) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    if (src[strspn(src, " \t")] != '\0') ed_history(src);
    free(src);
    lua_pop(L, 1);
    ed_remove(); /* a new prompt under the message, as for a finished entry */
    repl_prompt(0);
    return;
  }
  if (src[strspn(src, " \t")] != '\0') ed_history(src);
  free(src);
  repl_run(L, lua_gettop(L));
  lua_pop(L, 1); /* fn */
}

static void ed_backlog(uv_idle_t *idle);

/* tostring(_PROMPT or _PROMPT2), for repl_prompt_text in protected mode. */
static int repl_prompt_get(lua_State *L) {
  lua_getglobal(L, lua_toboolean(L, 1) ? "_PROMPT2" : "_PROMPT");
  if (lua_isnil(L, -1)) return 0;
  luaL_tolstring(L, -1, NULL);
  return 1;
}

/* The prompt as lua.c shows it: _PROMPT / _PROMPT2 when set (through
 * __tostring), else "> " / ">> ". Kept in a buffer that lives until the
 * next prompt. */
static const char *repl_prompt_text(int second) {
  static char buf[256];
  lua_State *L = R.L;
  const char *text = second ? PROMPT2 : PROMPT;
  lua_pushcfunction(L, repl_prompt_get);
  lua_pushboolean(L, second);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_isstring(L, -1)) text = lua_tostring(L, -1);
  snprintf(buf, sizeof buf, "%s", text);
  lua_pop(L, 1);
  return buf;
}

static void repl_prompt(int second) {
  R.prompt_up = 1;
  ed_install(repl_prompt_text(second));
  repl_input(1);
  if (!E.loaded && (E.len > 0 || E.eof)) uv_idle_start(&R.backlog, ed_backlog);
}

static void repl_on_input(uv_poll_t *p, int status, int events) {
  (void)p;
  (void)events;
  if (status < 0) { /* the terminal went away */
    R.done = 1;
    uv_stop(R.rt->loop);
    return;
  }
  if (R.prompt_up) ed_read();
}

/* ---- setup ---------------------------------------------------------------------------- */

int lb_repl(lua_State *L) {
  memset(&R, 0, sizeof R);
  R.L = L;
  R.rt = lb_runtime_get(L);
  R.entry_ref = LUA_NOREF;

  glue_repl_install(L, repl_hide, repl_show);

  memset(&E, 0, sizeof E);
  /* BATON_REPL_PLAIN=1 forces the fallback (tests, dumb terminals). */
  const char *plain = getenv("BATON_REPL_PLAIN");
  if (!isatty(STDIN_FILENO)) plain = "1"; /* `baton -i < file`: lines, no editor */
  if ((plain == NULL || strcmp(plain, "1") != 0) && ed_load() == 0) {
    *E.name = "baton";
    *E.catch_signals = 0;
    if (E.completion_entry) *E.completion_entry = ed_complete;
    /* "baton.sp" and "p:w" are one word to complete; `("x"):up` is `:up`
     * (a completion with a quote or a parenthesis would be escaped) */
    static const char breaks[] = " \t\n\"'`@$><=;|&{(),+-*/%^#~[]";
    if (E.word_breaks) *E.word_breaks = breaks;
    if (E.append_char) *E.append_char = 0;
    E.using_history();
    const char *home = getenv("HOME");
    if (home &&
        snprintf(R.histfile, sizeof R.histfile, "%s/.baton_history", home) < (int)sizeof R.histfile)
      E.read_history(R.histfile);
    else
      R.histfile[0] = '\0';
  } else if (plain == NULL) {
    fprintf(stderr, "baton: libedit not found (apt-get install libedit2): no line editing\n");
  }

  if (uv_poll_init(R.rt->loop, &R.input, STDIN_FILENO) < 0) { /* a regular file */
    R.from_file = 1;
    uv_idle_init(R.rt->loop, &R.file_input);
  }
  /* uv_poll_init made the tty non-blocking; the line editor wants it blocking
   * (and the shell after us too). Polling works either way. */
  int fl = fcntl(STDIN_FILENO, F_GETFL);
  if (fl >= 0) fcntl(STDIN_FILENO, F_SETFL, fl & ~O_NONBLOCK);
  uv_idle_init(R.rt->loop, &R.backlog);
  cli_interrupt_start(&R.intr, R.rt->loop, repl_signals, CLI_INTERRUPT_REARM, repl_on_busy,
                      repl_on_wake);

  printf("baton %s (%s, libuv %s) — Ctrl-D exits, Ctrl-C interrupts\n", BATON_VERSION_STRING,
         LUA_RELEASE, uv_version_string());
  fflush(stdout);
  R.prompt_up = 1;
  ed_install(repl_prompt_text(0));
  repl_input(1);

  while (!R.done) {
    R.rt->running = 1;
    uv_run(R.rt->loop, UV_RUN_ONCE);
    R.rt->running = 0;
  }

  if (R.prompt_up) ed_remove();
  uv_close(R.from_file ? (uv_handle_t *)&R.file_input : (uv_handle_t *)&R.input, NULL);
  uv_close((uv_handle_t *)&R.backlog, NULL);
  uv_run(R.rt->loop, UV_RUN_NOWAIT);
  /* Nothing started at the prompt outlives it (unless detached); Ctrl-C
   * meanwhile finds no entry and no prompt, and is ignored. */
  if (glue_repl_finish(L) != LUA_OK) {
    fprintf(stderr, "baton: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  cli_interrupt_stop(&R.intr); /* the signals back to their defaults, as the runner left them */
  if (E.loaded && R.histfile[0]) E.write_history(R.histfile);
  free(R.pending);
  free(E.buf);
  E.buf = NULL;
  E.cap = E.len = 0;
  return R.quit_sig ? 128 + R.quit_sig : 0;
}
