/* spawn_posix.c — the C peer for the spawn benchmark: N sequential
 * posix_spawn + waitpid of a program. Prints "<N> <seconds>". */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2000;
  char *prog = argc > 2 ? argv[2] : "/bin/true";
  char *args[] = {prog, NULL};
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < n; i++) {
    pid_t pid;
    int st;
    if (posix_spawn(&pid, prog, NULL, NULL, args, environ) != 0) return 1;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st)) return 1;
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%d %.6f\n", n, (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
  return 0;
}
