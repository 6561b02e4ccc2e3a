/*
 * c_host.c — a C program that uses baton's core alone (libbaton, baton.h) on
 * a libuv loop of its own: it spawns a filter with its stdin and stdout
 * piped, feeds it through libuv streams, watches both children's exits,
 * stops a long sleeper with a signal, and ends with every handle closed.
 *
 * Build against an installed baton:
 *   cc c_host.c $(pkg-config --cflags --libs baton) -o c_host
 * or with CMake: find_package(baton CONFIG) and link baton::baton.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <baton.h>
#include <uv.h>

static bt_process_t filter, sleeper;
static uv_pipe_t to_filter, from_filter;
static char output[256];
static size_t outlen;
static int closed;

static void on_closed(bt_process_t *proc) {
  closed++;
}
static void on_handle_closed(uv_handle_t *h) {
  closed++;
}

static void on_exit_cb(bt_process_t *proc) {
  const char *who = proc == &filter ? "filter" : "sleeper";
  if (proc->term_signal)
    printf("%s (pid %d) killed by %s\n", who, (int)proc->pid, bt_signal_name(proc->term_signal));
  else
    printf("%s (pid %d) exited with %d\n", who, (int)proc->pid, proc->exit_code);
  bt_process_close(proc, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  buf->base = output + outlen;
  buf->len = sizeof output - 1 - outlen;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n > 0) outlen += (size_t)n;
  if (n < 0) { /* UV_EOF: the filter closed its stdout */
    output[outlen] = 0;
    printf("filter said: %s", output);
    uv_close((uv_handle_t *)s, on_handle_closed);
    /* Only now stop the sleeper: a signal through its pidfd, never a stale pid. */
    int err = bt_process_kill(&sleeper, SIGTERM);
    if (err < 0) fprintf(stderr, "kill: %s\n", bt_strerror(err));
  }
}

static void on_written(uv_write_t *req, int status) {
  if (status < 0) fprintf(stderr, "write: %s\n", uv_strerror(status));
  uv_close((uv_handle_t *)req->handle, on_handle_closed); /* EOF for the filter */
}

static int spawn_or_say(uv_loop_t *loop, bt_process_t *proc, bt_spawn_options_t *opts) {
  int err = bt_spawn(loop, proc, opts, on_exit_cb);
  if (err < 0)
    fprintf(stderr, "spawn %s: %s (%s, at %s)\n", opts->argv[0], bt_strerror(err), bt_err_name(err),
            bt_stage_name(proc->stage));
  return err;
}

int main(void) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return 111;

  /* The filter: `tr a-z A-Z`, its stdin and stdout pipes to us, stderr ours. */
  char *tr_argv[] = {"tr", "a-z", "A-Z", NULL};
  bt_stdio_t stdio[3] = {{BT_STDIO_PIPE, -1, 0}, {BT_STDIO_PIPE, -1, 0}, {BT_STDIO_INHERIT, 2, 0}};
  bt_spawn_options_t opts = {.argv = tr_argv, .stdio = stdio, .nstdio = 3};
  if (spawn_or_say(&loop, &filter, &opts) < 0) return 1;

  /* The sleeper, in a process group of its own. */
  char *sleep_argv[] = {"sleep", "30", NULL};
  bt_stdio_t quiet[3] = {{BT_STDIO_NULL, -1, 0}, {BT_STDIO_NULL, -1, 0}, {BT_STDIO_INHERIT, 2, 0}};
  bt_spawn_options_t sopts = {
      .argv = sleep_argv, .stdio = quiet, .nstdio = 3, .flags = BT_SPAWN_SETPGID};
  if (spawn_or_say(&loop, &sleeper, &sopts) < 0) return 1;

  /* The parent's pipe ends are ours: hand them to libuv streams. */
  uv_pipe_init(&loop, &to_filter, 0);
  uv_pipe_init(&loop, &from_filter, 0);
  uv_pipe_open(&to_filter, stdio[0].fd);
  uv_pipe_open(&from_filter, stdio[1].fd);
  uv_read_start((uv_stream_t *)&from_filter, on_alloc, on_read);
  static char text[] = "hello from a c host\n";
  uv_buf_t buf = uv_buf_init(text, sizeof text - 1);
  uv_write_t req;
  uv_write(&req, (uv_stream_t *)&to_filter, &buf, 1, on_written);

  uv_run(&loop, UV_RUN_DEFAULT);

  int ok = closed == 4 && strcmp(output, "HELLO FROM A C HOST\n") == 0 && filter.exit_code == 0 &&
           sleeper.term_signal == SIGTERM;
  if (uv_loop_close(&loop) != 0) ok = 0; /* every handle closed */
  printf("c_host: %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
