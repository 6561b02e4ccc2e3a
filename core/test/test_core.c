/*
 * test_core.c — tests of the C core, linked as a host would link it.
 *
 * Like libuv's tests, this binary doubles as the child helper: run with
 * "--child NAME" it reports what a spawned process sees (its fds, its signal
 * state). Every test reaps what it spawns; the run ends by checking that no
 * child, zombie or fd was left behind.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "baton.h"

static int failures;
static const char *self;

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, __func__, #cond); \
      failures++;                                                                      \
    }                                                                                  \
  } while (0)
#define CHECK_EQ(a, b)                                                                 \
  do {                                                                                 \
    long long a_ = (long long)(a), b_ = (long long)(b);                                \
    if (a_ != b_) {                                                                    \
      fprintf(stderr, "%s:%d: %s: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, \
              __func__, #a, a_, #b, b_);                                               \
      failures++;                                                                      \
    }                                                                                  \
  } while (0)

/* ---- child helpers ---------------------------------------------------------- */

static int child_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d)) continue;
    printf("%s ", e->d_name);
  }
  closedir(d);
  printf("\n");
  return 0;
}

static int child_sigs(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "SigBlk:", 7) || !strncmp(line, "SigIgn:", 7)) fputs(line, stdout);
  fclose(f);
  return 0;
}

/* ---- helpers ------------------------------------------------------------------- */

static int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

static void on_exit_count(bt_process_t *p) { (*(int *)p->data)++; }

/* Spawn, run the loop until exit, close. Returns the spawn result. */
static int run_proc(bt_process_t *p, bt_spawn_options_t *o) {
  uv_loop_t loop;
  int exits = 0;
  uv_loop_init(&loop);
  p->data = &exits;
  int r = bt_spawn(&loop, p, o, on_exit_count);
  if (r == 0) {
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(exits, 1);
    CHECK(p->exited);
    bt_process_close(p, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  CHECK_EQ(uv_loop_close(&loop), 0);
  return r;
}

/* Read everything from a nonblocking fd once the writer has gone. */
static size_t drain(int fd, char *buf, size_t cap) {
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fd, buf + n, cap - 1 - n);
    if (r > 0) { n += (size_t)r; continue; }
    if (r < 0 && errno == EINTR) continue;
    break;
  }
  buf[n] = '\0';
  return n;
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_exit_codes(void) {
  bt_process_t p;
  char *t[] = {"true", NULL};
  bt_spawn_options_t o = {.argv = t};
  CHECK_EQ(run_proc(&p, &o), 0);
  CHECK_EQ(p.exit_code, 0);
  CHECK_EQ(p.term_signal, 0);
  CHECK(strcmp(p.path, "/usr/bin/true") == 0 || strcmp(p.path, "/bin/true") == 0);

  char *sh[] = {"sh", "-c", "exit 3", NULL};
  o.argv = sh;
  CHECK_EQ(run_proc(&p, &o), 0);
  CHECK_EQ(p.exit_code, 3);
}

static void test_signal_and_reuse(void) {
  uv_loop_t loop;
  bt_process_t p;
  int exits = 0;
  char *argv[] = {"sleep", "30", NULL};
  bt_spawn_options_t o = {.argv = argv};
  uv_loop_init(&loop);
  p.data = &exits;
  CHECK_EQ(bt_spawn(&loop, &p, &o, on_exit_count), 0);
  CHECK(p.pid > 0);
  CHECK_EQ(bt_process_kill(&p, 0), 0);
  CHECK_EQ(bt_process_kill(&p, SIGTERM), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(exits, 1);
  CHECK_EQ(p.term_signal, SIGTERM);
  CHECK_EQ(p.exit_code, -1);
  CHECK_EQ(p.core_dumped, 0);
  /* Reaped: the pid may be recycled; the handle must refuse. */
  CHECK_EQ(bt_process_kill(&p, SIGKILL), -ESRCH);
  bt_process_close(&p, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(p.pidfd, -1);
  CHECK_EQ(uv_loop_close(&loop), 0);
}

static void test_failures(void) {
  bt_process_t p;
  char *missing[] = {"baton-no-such-program", NULL};
  bt_spawn_options_t o = {.argv = missing};
  CHECK_EQ(run_proc(&p, &o), -ENOENT);
  CHECK_EQ(p.stage, BT_STAGE_LOOKUP);

  char *abs[] = {"/nonexistent/prog", NULL};
  o.argv = abs;
  CHECK_EQ(run_proc(&p, &o), -ENOENT);
  CHECK_EQ(p.stage, BT_STAGE_EXEC);
  CHECK(strcmp(p.path, "/nonexistent/prog") == 0);

  char *t[] = {"true", NULL};
  o.argv = t;
  o.cwd = "/nonexistent-dir";
  CHECK_EQ(run_proc(&p, &o), -ENOENT);
  CHECK_EQ(p.stage, BT_STAGE_CHDIR);
  o.cwd = NULL;

  char *dir[] = {"/tmp", NULL};
  o.argv = dir;
  CHECK_EQ(run_proc(&p, &o), -EACCES);
  CHECK_EQ(p.stage, BT_STAGE_EXEC);

  char *noexec[] = {"/etc/passwd", NULL};
  o.argv = noexec;
  CHECK_EQ(run_proc(&p, &o), -EACCES);

  bt_stdio_t bad[] = {{BT_STDIO_FD, 9999, 0}};
  o.argv = t;
  o.stdio = bad;
  o.nstdio = 1;
  CHECK_EQ(run_proc(&p, &o), -EBADF);
  CHECK_EQ(p.stage, BT_STAGE_STDIO);

  o.stdio = NULL;
  o.nstdio = -1;
  CHECK_EQ(run_proc(&p, &o), -EINVAL);
}

static void test_pipe_and_fds(void) {
  bt_process_t p;
  char buf[4096];
  /* An fd without CLOEXEC in the parent must not reach the child. */
  int leak = dup(2);
  char *argv[] = {(char *)self, "--child", "fds", NULL};
  bt_stdio_t io[] = {{BT_STDIO_NULL, -1, 0}, {BT_STDIO_PIPE, -1, 0}, {BT_STDIO_INHERIT, -1, 0}};
  bt_spawn_options_t o = {.argv = argv, .stdio = io, .nstdio = 3};
  CHECK_EQ(run_proc(&p, &o), 0);
  CHECK(io[1].fd >= 0);
  drain(io[1].fd, buf, sizeof buf);
  close(io[1].fd);
  CHECK(strcmp(buf, "0 1 2 \n") == 0);
  if (strcmp(buf, "0 1 2 \n") != 0) fprintf(stderr, "child fds: %s", buf);

  /* Only fd 1 asked for, at a high source fd: fds 0 and 2 absent. */
  int fds[2];
  CHECK_EQ(pipe2(fds, O_CLOEXEC), 0);
  int hi = fcntl(fds[1], F_DUPFD_CLOEXEC, 50);
  bt_stdio_t only1[] = {{BT_STDIO_CLOSE, -1, 0}, {BT_STDIO_FD, hi, 0}};
  o.stdio = only1;
  o.nstdio = 2;
  CHECK_EQ(run_proc(&p, &o), 0);
  close(hi);
  close(fds[1]);
  drain(fds[0], buf, sizeof buf);
  close(fds[0]);
  CHECK(strcmp(buf, "1 \n") == 0);
  close(leak);
}

static void test_fd_swap(void) {
  bt_process_t p;
  char buf[256];
  int a[2], b[2];
  CHECK_EQ(pipe2(a, O_CLOEXEC), 0);
  CHECK_EQ(pipe2(b, O_CLOEXEC), 0);
  char *argv[] = {"sh", "-c", "echo out; echo err >&2", NULL};
  /* Child fd 1 is b's writer and fd 2 is a's: the crossed mapping must hold. */
  bt_stdio_t io[] = {{BT_STDIO_NULL, -1, 0}, {BT_STDIO_FD, b[1], 0}, {BT_STDIO_FD, a[1], 0}};
  bt_spawn_options_t o = {.argv = argv, .stdio = io, .nstdio = 3};
  CHECK_EQ(run_proc(&p, &o), 0);
  close(a[1]);
  close(b[1]);
  drain(a[0], buf, sizeof buf);
  CHECK(strcmp(buf, "err\n") == 0);
  drain(b[0], buf, sizeof buf);
  CHECK(strcmp(buf, "out\n") == 0);
  close(a[0]);
  close(b[0]);
}

static void test_stdio_same(void) {
  /* 2>&1 onto a pipe: both streams arrive on the one pipe, in order. */
  bt_process_t p;
  char buf[256];
  char *argv[] = {"sh", "-c", "echo out; echo err >&2; echo out2", NULL};
  bt_stdio_t io[] = {{BT_STDIO_NULL, -1, 0}, {BT_STDIO_PIPE, -1, 0}, {BT_STDIO_SAME, 1, 0}};
  bt_spawn_options_t o = {.argv = argv, .stdio = io, .nstdio = 3};
  CHECK_EQ(run_proc(&p, &o), 0);
  drain(io[1].fd, buf, sizeof buf);
  close(io[1].fd);
  CHECK(strcmp(buf, "out\nerr\nout2\n") == 0);
  bt_stdio_t bad[] = {{BT_STDIO_SAME, 0, 0}};
  o.stdio = bad;
  o.nstdio = 1;
  CHECK_EQ(run_proc(&p, &o), -EINVAL);
}

static void test_signal_state(void) {
  bt_process_t p;
  char buf[512];
  sigset_t set, old;
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigprocmask(SIG_BLOCK, &set, &old);
  char *argv[] = {(char *)self, "--child", "sigs", NULL};
  bt_stdio_t io[] = {{BT_STDIO_NULL, -1, 0}, {BT_STDIO_PIPE, -1, 0}, {BT_STDIO_INHERIT, -1, 0}};
  bt_spawn_options_t o = {.argv = argv, .stdio = io, .nstdio = 3};
  CHECK_EQ(run_proc(&p, &o), 0);
  drain(io[1].fd, buf, sizeof buf);
  close(io[1].fd);
  CHECK(strstr(buf, "SigBlk:\t0000000000000000\n") != NULL);
  CHECK(strstr(buf, "SigIgn:\t0000000000000000\n") != NULL);
  sigprocmask(SIG_SETMASK, &old, NULL);
  signal(SIGPIPE, SIG_DFL);
}

static void test_env_cwd_pgrp(void) {
  bt_process_t p;
  char buf[512];
  char *argv[] = {"sh", "-c", "echo $FOO; pwd; [ $(ps -o pgid= $$) -eq $$ ] && echo leader", NULL};
  char *env[] = {"FOO=bar", "PATH=/usr/bin:/bin", NULL};
  bt_stdio_t io[] = {{BT_STDIO_NULL, -1, 0}, {BT_STDIO_PIPE, -1, 0}, {BT_STDIO_INHERIT, -1, 0}};
  bt_spawn_options_t o = {.argv = argv, .env = env, .cwd = "/tmp", .stdio = io, .nstdio = 3,
                          .flags = BT_SPAWN_SETPGID};
  CHECK_EQ(run_proc(&p, &o), 0);
  drain(io[1].fd, buf, sizeof buf);
  close(io[1].fd);
  CHECK(strcmp(buf, "bar\n/tmp\nleader\n") == 0);
  if (strcmp(buf, "bar\n/tmp\nleader\n") != 0) fprintf(stderr, "got: %s", buf);

  /* PATH from the child's env: a PATH without /bin and /usr/bin finds no sh. */
  char *env2[] = {"PATH=/nonexistent", NULL};
  o.env = env2;
  CHECK_EQ(run_proc(&p, &o), -ENOENT);
  CHECK_EQ(p.stage, BT_STAGE_LOOKUP);
}

static void test_lookpath(void) {
  char out[256];
  CHECK_EQ(bt_lookpath("sh", "/nonexistent:/bin", NULL, out, sizeof out), 0);
  CHECK(strcmp(out, "/bin/sh") == 0);
  /* Relative entries are never searched, even when the file is there. */
  CHECK_EQ(bt_lookpath("sh", ".:bin:", "/", out, sizeof out), -ENOENT);
  CHECK_EQ(bt_lookpath("passwd", "/etc", NULL, out, sizeof out), -EACCES);
  CHECK_EQ(bt_lookpath("./x", NULL, NULL, out, sizeof out), 0);
  CHECK(strcmp(out, "./x") == 0);
  CHECK_EQ(bt_lookpath("sh", "/bin", NULL, out, 4), -ENAMETOOLONG);
  CHECK_EQ(bt_lookpath("", NULL, NULL, out, sizeof out), -ENOENT);
}

static void test_signal_names(void) {
  CHECK_EQ(bt_signal_number("TERM"), SIGTERM);
  CHECK_EQ(bt_signal_number("SIGKILL"), SIGKILL);
  CHECK_EQ(bt_signal_number("hup"), SIGHUP);
  CHECK_EQ(bt_signal_number("9"), 9);
  CHECK_EQ(bt_signal_number("NOPE"), -EINVAL);
  CHECK_EQ(bt_signal_number("99"), -EINVAL);
  CHECK(strcmp(bt_signal_name(SIGINT), "SIGINT") == 0);
  CHECK(bt_signal_name(0) == NULL);
  CHECK(strcmp(bt_stage_name(BT_STAGE_CHDIR), "chdir") == 0);
}

static void test_many_spawns(void) {
  /* 200 spawns through one loop, all in flight together. */
  enum { N = 200 };
  static bt_process_t ps[N];
  uv_loop_t loop;
  int exits = 0;
  char *argv[] = {"true", NULL};
  bt_spawn_options_t o = {.argv = argv};
  uv_loop_init(&loop);
  for (int i = 0; i < N; i++) {
    ps[i].data = &exits;
    CHECK_EQ(bt_spawn(&loop, &ps[i], &o, on_exit_count), 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(exits, N);
  for (int i = 0; i < N; i++) bt_process_close(&ps[i], NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--child") == 0) {
    if (strcmp(argv[2], "fds") == 0) return child_fds();
    if (strcmp(argv[2], "sigs") == 0) return child_sigs();
    return 2;
  }
  self = "/proc/self/exe";
  static char path[4096];
  ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n > 0) { path[n] = '\0'; self = path; }

  /* libuv opens two process-wide fds at its first loop: count after that. */
  uv_loop_t warm;
  uv_loop_init(&warm);
  uv_loop_close(&warm);
  int fds_before = count_fds();
  test_exit_codes();
  test_signal_and_reuse();
  test_failures();
  test_pipe_and_fds();
  test_fd_swap();
  test_stdio_same();
  test_signal_state();
  test_env_cwd_pgrp();
  test_lookpath();
  test_signal_names();
  test_many_spawns();

  /* Nothing left: no child (alive or zombie) and no fd. */
  siginfo_t si;
  CHECK_EQ(waitid(P_ALL, 0, &si, WEXITED | WNOHANG), -1);
  CHECK_EQ(errno, ECHILD);
  CHECK_EQ(count_fds(), fds_before);

  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("core: all checks passed\n");
  return 0;
}
