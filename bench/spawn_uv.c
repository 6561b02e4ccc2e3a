/* spawn_uv.c — libuv's uv_spawn as a peer: N sequential spawns of a program,
 * optionally while holding MiB of touched memory (uv_spawn forks, so its
 * cost grows with the parent's size). Prints "<N> <seconds>". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

static int left;
static uv_process_options_t opts;
static uv_process_t proc;

static void on_exit_cb(uv_process_t *p, int64_t status, int sig);
static void start(uv_loop_t *loop) {
  if (uv_spawn(loop, &proc, &opts) != 0) exit(1);
}
static void on_closed(uv_handle_t *h) {
  if (--left > 0) start(h->loop);
}
static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  (void)status;
  (void)sig;
  uv_close((uv_handle_t *)p, on_closed);
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 200;
  size_t hold = argc > 2 ? (size_t)atol(argv[2]) << 20 : 0;
  /* Touch every page through a volatile pointer: a plain memset before free
   * is a dead store the compiler may drop, and untouched pages cost fork nothing. */
  volatile char *mem = hold ? malloc(hold) : NULL;
  for (size_t i = 0; mem && i < hold; i += 4096)
    mem[i] = 1;
  char *args[] = {"/bin/true", NULL};
  opts.file = args[0];
  opts.args = args;
  opts.exit_cb = on_exit_cb;
  left = n;
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  start(uv_default_loop());
  uv_run(uv_default_loop(), UV_RUN_DEFAULT);
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%d %.6f\n", n, (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
  free((void *)mem);
  return 0;
}
