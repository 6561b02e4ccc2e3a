/*
 * test_core.c — tests of the C core, linked as a host would link it.
 *
 * Each test is a function named in the test list at the end of this file
 * (libuv's pattern). "test_core NAME" runs one test, "test_core --list"
 * prints their names, and "test_core" alone runs every test, each in a
 * process of its own. ctest gives each test its own entry, core_NAME
 * (core/test/CMakeLists.txt reads the names from the TEST_ENTRY lines). A
 * test ends by checking that it left nothing behind: no child (running or
 * zombie) and no fd that was not open when it started.
 *
 * Like libuv's tests, this binary doubles as the child helper: run with
 * "--child NAME" it reports what a spawned process sees (its fds, its signal
 * state) or plays a part (an orphan, a parent that dies, bt_exec).
 *
 * Tests wait for events (an exit, a pipe's end of file), never for time: the
 * one timer, in run_until, only ends a wait that would otherwise hang.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/wait.h>
#include <unistd.h>

#include "baton.h"

/* Exit status of a skipped test; core/test/CMakeLists.txt tells ctest. */
#define EXIT_SKIP 77

static int failures;
static int skipped;
static const char *self;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, __func__, #cond);       \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)
#define CHECK_EQ(a, b)                                                                             \
  do {                                                                                             \
    long long a_ = (long long)(a), b_ = (long long)(b);                                            \
    if (a_ != b_) {                                                                                \
      fprintf(stderr, "%s:%d: %s: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__,          \
              __func__, #a, a_, #b, b_);                                                           \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)
#define CHECK_STR(a, b)                                                                            \
  do {                                                                                             \
    const char *a_ = (a), *b_ = (b);                                                               \
    if (strcmp(a_, b_) != 0) {                                                                     \
      fprintf(stderr, "%s:%d: %s: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, __func__,  \
              #a, a_, b_);                                                                         \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)
/* Skip the rest of the test, saying why (ctest reports it as skipped). */
#define SKIP(why)                                                                                  \
  do {                                                                                             \
    fprintf(stderr, "%s: skipped: %s\n", __func__, why);                                           \
    skipped = 1;                                                                                   \
    return;                                                                                        \
  } while (0)

/* ---- child helpers ------------------------------------------------------------------- */

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

/* Spawn `sleep 30` that dies with its parent (this helper), print its pid, exit. */
static int child_pdeath(void) {
  uv_loop_t loop;
  bt_process_t p;
  char *argv[] = {"sleep", "30", NULL};
  bt_spawn_options_t o = {.argv = argv, .pdeathsig = SIGKILL};
  uv_loop_init(&loop);
  if (bt_spawn(&loop, &p, &o, NULL) != 0) return 1;
  printf("%d\n", (int)p.pid);
  fflush(stdout);
  _exit(0); /* the thread that spawned it dies: SIGKILL for the grandchild */
}

/* Leave an orphan running sleep (re-parented to init or a subreaper), print its pid. */
static int child_orphan(void) {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) < 0) return 111;
  pid_t pid = fork();
  if (pid < 0) return 111;
  if (pid == 0) {
    execlp("sleep", "sleep", "30", (char *)NULL);
    _exit(127);
  }
  /* The write end closes when the child execs (or exits): from then on its
   * /proc/PID/exe is sleep's, and an adopter sees the right program. */
  close(ready[1]);
  char c;
  while (read(ready[0], &c, 1) < 0 && errno == EINTR)
    continue;
  close(ready[0]);
  printf("%d\n", (int)pid);
  return 0;
}

/* Name this process "a) b (c" (spaces, parentheses), say so, wait for stdin's end. */
static int child_comm(void) {
  if (prctl(PR_SET_NAME, "a) b (c", 0, 0, 0) < 0) return 111;
  printf("ready\n");
  fflush(stdout);
  char c;
  while (read(0, &c, 1) != 0)
    if (errno != EINTR) break;
  return 0;
}

/* Replace this process with sh; if that fails, say so. */
static int child_exec(const char *what) {
  bt_process_t info;
  char *ok[] = {"sh", "-c", "echo exec worked: $0", "sh-by-exec", NULL};
  char *missing[] = {"baton-no-such-program", NULL};
  bt_stdio_t io[] = {
      {BT_STDIO_INHERIT, -1, 0}, {BT_STDIO_INHERIT, -1, 0}, {BT_STDIO_INHERIT, -1, 0}};
  bt_spawn_options_t o = {.argv = strcmp(what, "ok") == 0 ? ok : missing, .stdio = io, .nstdio = 3};
  int err = bt_exec(&o, &info);
  printf("exec failed: %d %s\n", err, bt_stage_name(info.stage));
  return 3;
}

/* Replace this process with ./prog in `dir`; if that fails, say so. */
static int child_exec_cwd(const char *dir) {
  bt_process_t info;
  char *argv[] = {"./prog", NULL};
  bt_stdio_t io[] = {
      {BT_STDIO_INHERIT, -1, 0}, {BT_STDIO_INHERIT, -1, 0}, {BT_STDIO_INHERIT, -1, 0}};
  bt_spawn_options_t o = {.argv = argv, .cwd = dir, .stdio = io, .nstdio = 3};
  int err = bt_exec(&o, &info);
  printf("exec failed: %d %s\n", err, bt_stage_name(info.stage));
  return 3;
}

/* ---- helpers ------------------------------------------------------------------------- */

static void on_exit_count(bt_process_t *p) {
  (*(int *)p->data)++;
}

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
    if (r > 0) {
      n += (size_t)r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    break;
  }
  buf[n] = '\0';
  return n;
}

/* Run `argv` with stdout on a pipe; returns its output in buf. */
static int capture(char **argv, bt_spawn_options_t *base, char *buf, size_t cap) {
  bt_process_t p;
  bt_stdio_t io[] = {{BT_STDIO_NULL, -1, 0}, {BT_STDIO_PIPE, -1, 0}, {BT_STDIO_INHERIT, -1, 0}};
  bt_spawn_options_t o = *base;
  o.argv = argv;
  o.stdio = io;
  o.nstdio = 3;
  int r = run_proc(&p, &o);
  buf[0] = '\0';
  if (r == 0) {
    drain(io[1].fd, buf, cap);
    close(io[1].fd);
  }
  return r;
}

/*
 * Wait until the child of `p` has exited, without reaping it or running the
 * loop: its pidfd becomes readable then. (libuv made the pidfd nonblocking,
 * so a waitid on it would not wait.) Returns 0 or a negative errno.
 */
static int wait_exited(const bt_process_t *p) {
  struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
  int r;
  while ((r = poll(&pfd, 1, -1)) < 0 && errno == EINTR)
    continue;
  return r < 0 ? -errno : 0;
}

static void on_hang(uv_timer_t *t) {
  *(int *)t->data = 1;
  uv_stop(t->loop);
}

/*
 * Run `loop` until a callback sets `*done`. A timer ends the wait after
 * `hang_ms` if it never happens, so that a broken test fails with a message
 * instead of hanging; it measures nothing. Returns whether `*done` was set.
 */
static int run_until(uv_loop_t *loop, const int *done, unsigned hang_ms) {
  uv_timer_t t;
  int hung = 0;
  uv_timer_init(loop, &t);
  t.data = &hung;
  uv_timer_start(&t, on_hang, hang_ms, 0);
  while (!*done && !hung)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT); /* the timer's close */
  return *done != 0;
}

/* Run `loop` until `*count` reaches `n`, with run_until's guard against a hang. */
static int run_until_n(uv_loop_t *loop, const int *count, int n, unsigned hang_ms) {
  uv_timer_t t;
  int hung = 0;
  uv_timer_init(loop, &t);
  t.data = &hung;
  uv_timer_start(&t, on_hang, hang_ms, 0);
  while (*count < n && !hung)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return *count >= n;
}

/* Make a fresh directory (mode 0700) under $TMPDIR or /tmp into `dir`. */
static int make_temp_dir(char *dir, size_t cap) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, cap, "%s/baton-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  return mkdtemp(dir) ? 0 : -errno;
}

/* Write an executable shell script at `path`. */
static int write_script(const char *path, const char *body) {
  FILE *f = fopen(path, "we");
  if (f == NULL) return -errno;
  fprintf(f, "#!/bin/sh\n%s\n", body);
  if (fclose(f) != 0) return -errno;
  return chmod(path, 0755) < 0 ? -errno : 0;
}

/* ---- tests --------------------------------------------------------------------------- */

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

static void test_limits_umask_nice(void) {
  char buf[256];
  char *argv[] = {"sh", "-c", "umask; ulimit -n; nice", NULL};
  bt_rlimit_t rl[] = {{RLIMIT_NOFILE, 100, 100}};
  bt_spawn_options_t o = {.flags = BT_SPAWN_UMASK | BT_SPAWN_NICE,
                          .umask = 027,
                          .nice = 5,
                          .rlimits = rl,
                          .nrlimits = 1};
  CHECK_EQ(capture(argv, &o, buf, sizeof buf), 0);
  CHECK(strcmp(buf, "0027\n100\n5\n") == 0);
  if (strcmp(buf, "0027\n100\n5\n") != 0) fprintf(stderr, "got: %s", buf);
  /* A limit no process may set: RLIMIT_NOFILE above fs.nr_open is refused even
   * to root, and it is above the hard limit of an unprivileged process too. */
  bt_process_t p;
  o.argv = argv;
  FILE *f = fopen("/proc/sys/fs/nr_open", "re");
  long nr_open = 0;
  if (f) {
    if (fscanf(f, "%ld", &nr_open) != 1) nr_open = 0;
    fclose(f);
  }
  CHECK(nr_open > 0);
  bt_rlimit_t over[] = {{RLIMIT_NOFILE, (rlim_t)nr_open + 1, (rlim_t)nr_open + 1}};
  o.rlimits = over;
  CHECK_EQ(run_proc(&p, &o), -EPERM);
  CHECK_EQ(p.stage, BT_STAGE_LIMITS);
  /* A resource that does not exist. */
  bt_rlimit_t bad[] = {{9999, 1, 1}};
  o.rlimits = bad;
  CHECK_EQ(run_proc(&p, &o), -EINVAL);
  CHECK_EQ(p.stage, BT_STAGE_LIMITS);
}

static void test_credentials(void) {
  if (geteuid() != 0) SKIP("needs root");
  char buf[256];
  char *argv[] = {"sh", "-c", "id -u; id -g; id -G", NULL};
  gid_t groups[] = {65534};
  bt_spawn_options_t o = {.flags = BT_SPAWN_SETUID | BT_SPAWN_SETGID | BT_SPAWN_SETGROUPS,
                          .uid = 65534,
                          .gid = 65534,
                          .groups = groups,
                          .ngroups = 1};
  CHECK_EQ(capture(argv, &o, buf, sizeof buf), 0);
  CHECK(strcmp(buf, "65534\n65534\n65534\n") == 0);
  /* chdir happens as the new user: a directory of mode 0700 owned by root is
   * closed to nobody. */
  char dir[4096];
  CHECK_EQ(make_temp_dir(dir, sizeof dir), 0);
  bt_process_t p;
  o.argv = argv;
  o.cwd = dir;
  CHECK_EQ(run_proc(&p, &o), -EACCES);
  CHECK_EQ(p.stage, BT_STAGE_CHDIR);
  CHECK_EQ(rmdir(dir), 0);
}

static void on_orphan(bt_reaper_t *r, pid_t pid, int st) {
  int *out = r->data;
  out[0] = (int)pid;
  out[1] = st;
}

static void test_pdeathsig_and_reaper(void) {
  /* As a subreaper, the orphaned grandchild comes to us, killed by its
   * parent-death signal, and the reaper reaps it (not an owned child). */
  uv_loop_t loop;
  bt_reaper_t reaper;
  int got[2] = {0, 0};
  char buf[64];
  uv_loop_init(&loop);
  reaper.data = got;
  CHECK_EQ(bt_reaper_start(&loop, &reaper, 1, on_orphan), 0);
  char *argv[] = {(char *)self, "--child", "pdeath", NULL};
  bt_spawn_options_t o = {0};
  CHECK_EQ(capture(argv, &o, buf, sizeof buf), 0);
  int grandchild = atoi(buf);
  CHECK(grandchild > 0);
  CHECK(run_until(&loop, &got[0], 20000));
  CHECK_EQ(got[0], grandchild);
  CHECK(WIFSIGNALED(got[1]) && WTERMSIG(got[1]) == SIGKILL);
  bt_reaper_close(&reaper, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
  prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

static void test_reaper_spares_owned(void) {
  /* A reaper running while owned children exit must leave them to their pidfd. */
  uv_loop_t loop;
  bt_reaper_t reaper;
  int got[2] = {0, 0};
  bt_process_t p;
  int exits = 0;
  char *argv[] = {"sh", "-c", "exit 7", NULL};
  bt_spawn_options_t o = {.argv = argv};
  uv_loop_init(&loop);
  reaper.data = got;
  CHECK_EQ(bt_reaper_start(&loop, &reaper, 0, on_orphan), 0);
  p.data = &exits;
  CHECK_EQ(bt_spawn(&loop, &p, &o, on_exit_count), 0);
  /* Let it exit before anyone looks, the race the reaper must lose. */
  CHECK_EQ(wait_exited(&p), 0);
  CHECK_EQ(bt_reaper_reap(&reaper), 0);
  uv_run(&loop, UV_RUN_DEFAULT); /* until the pidfd's exit is handled */
  CHECK_EQ(exits, 1);
  CHECK_EQ(p.exit_code, 7);
  CHECK(p.status_known);
  CHECK(p.rusage.ru_maxrss > 0);
  CHECK_EQ(got[0], 0);
  bt_process_close(&p, NULL);
  bt_reaper_close(&reaper, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
}

static void test_close_running_reaped(void) {
  /* A child closed while it runs is no longer owned: when it dies, the orphan
   * reaper (subreaper mode, as the runner uses it) reaps it. */
  uv_loop_t loop;
  bt_reaper_t reaper;
  int got[2] = {0, 0};
  bt_process_t p;
  int exits = 0;
  char *argv[] = {"sleep", "30", NULL};
  bt_spawn_options_t o = {.argv = argv};
  uv_loop_init(&loop);
  reaper.data = got;
  CHECK_EQ(bt_reaper_start(&loop, &reaper, 1, on_orphan), 0);
  p.data = &exits;
  CHECK_EQ(bt_spawn(&loop, &p, &o, on_exit_count), 0);
  pid_t pid = p.pid;
  bt_process_close(&p, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(p.pidfd, -1);
  CHECK_EQ(p.exited, 0);
  /* Not reaped yet, so the pid still names our child. */
  CHECK_EQ(kill(pid, SIGKILL), 0);
  CHECK(run_until(&loop, &got[0], 20000));
  CHECK_EQ(got[0], pid);
  CHECK(WIFSIGNALED(got[1]) && WTERMSIG(got[1]) == SIGKILL);
  CHECK_EQ(exits, 0);
  bt_reaper_close(&reaper, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
  prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

static void test_close_exited_reaped(void) {
  /* A child that exited while still owned, its SIGCHLD already handled by
   * the reaper (which spared it), then closed before the loop saw its exit:
   * no other SIGCHLD will come, so the close reaps it. */
  uv_loop_t loop;
  bt_reaper_t reaper;
  int got[2] = {0, 0};
  bt_process_t p;
  int exits = 0;
  char *argv[] = {"sh", "-c", "exit 5", NULL};
  bt_spawn_options_t o = {.argv = argv};
  uv_loop_init(&loop);
  reaper.data = got;
  CHECK_EQ(bt_reaper_start(&loop, &reaper, 0, on_orphan), 0);
  p.data = &exits;
  CHECK_EQ(bt_spawn(&loop, &p, &o, on_exit_count), 0);
  pid_t pid = p.pid;
  CHECK_EQ(wait_exited(&p), 0);
  CHECK_EQ(bt_reaper_reap(&reaper), 0);
  bt_process_close(&p, NULL);
  CHECK(p.exited);
  CHECK_EQ(p.exit_code, 5);
  /* No zombie left: the pid is no child of ours any more. */
  CHECK_EQ(waitpid(pid, NULL, WNOHANG), -1);
  CHECK_EQ(errno, ECHILD);
  bt_reaper_close(&reaper, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(exits, 0);
  CHECK_EQ(got[0], 0);
  CHECK_EQ(uv_loop_close(&loop), 0);
}

static void test_adopt(void) {
  uv_loop_t loop;
  bt_process_t p;
  int exits = 0;
  char buf[64];
  uv_loop_init(&loop);
  /* Not our child: an orphan re-parented to init. Exit seen, status unknown. */
  char *argv[] = {(char *)self, "--child", "orphan", NULL};
  bt_spawn_options_t o = {0};
  CHECK_EQ(capture(argv, &o, buf, sizeof buf), 0);
  pid_t orphan = (pid_t)atoi(buf);
  p.data = &exits;
  CHECK_EQ(bt_process_open(&loop, &p, orphan, on_exit_count), 0);
  CHECK(strstr(p.path, "sleep") != NULL);
  CHECK_EQ(bt_process_kill(&p, SIGTERM), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(exits, 1);
  CHECK_EQ(p.status_known, 0);
  CHECK_EQ(bt_process_kill(&p, SIGTERM), -ESRCH);
  bt_process_close(&p, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(bt_process_open(&loop, &p, 0, on_exit_count), -EINVAL);
  CHECK_EQ(bt_process_open(&loop, &p, 4194303, on_exit_count), -ESRCH);
  CHECK_EQ(uv_loop_close(&loop), 0);
}

static void test_owned_churn(void) {
  /* Hundreds of pids come and go through the owned table; then lookups of
   * pids that were never in it (an adopted orphan, the reaper's scan) must
   * still end. This hung once: tombstones filled the table. */
  bt_process_t p;
  char *t[] = {"true", NULL};
  bt_spawn_options_t o = {.argv = t};
  for (int i = 0; i < 300; i++)
    CHECK_EQ(run_proc(&p, &o), 0);
  uv_loop_t loop;
  bt_reaper_t reaper;
  int got[2] = {0, 0};
  uv_loop_init(&loop);
  reaper.data = got;
  CHECK_EQ(bt_reaper_start(&loop, &reaper, 0, on_orphan), 0);
  CHECK_EQ(bt_reaper_reap(&reaper), 0);
  char buf[64];
  char *argv[] = {(char *)self, "--child", "orphan", NULL};
  bt_spawn_options_t oo = {0};
  CHECK_EQ(capture(argv, &oo, buf, sizeof buf), 0);
  int exits = 0;
  bt_process_t a;
  a.data = &exits;
  CHECK_EQ(bt_process_open(&loop, &a, (pid_t)atoi(buf), on_exit_count), 0);
  CHECK_EQ(bt_process_kill(&a, SIGKILL), 0);
  while (!exits)
    uv_run(&loop, UV_RUN_ONCE);
  bt_process_close(&a, NULL);
  bt_reaper_close(&reaper, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
}

static void on_usr2_unused(uv_signal_t *h, int sig) {
  (void)h;
  (void)sig;
}

/*
 * The re-exec helper, first image: start a child (`sh -c 'exit 7'`, which
 * waits on its stdin), write the state (its pid) into a memfd, open a plain
 * fd that must not survive, and re-exec this program as the second image
 * with the memfd and the child's stdin kept. A failed exec is reported.
 */
static int child_reexec(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  bt_process_t p;
  char *argv[] = {"sh", "-c", "read x; exit 7", NULL};
  bt_stdio_t io[] = {{BT_STDIO_PIPE, -1, 0}, {BT_STDIO_INHERIT, -1, 0}, {BT_STDIO_INHERIT, -1, 0}};
  bt_spawn_options_t o = {.argv = argv, .stdio = io, .nstdio = 3};
  if (bt_spawn(&loop, &p, &o, NULL) < 0) return 2;
  char state[64];
  int len = snprintf(state, sizeof state, "%d", (int)p.pid);
  int mfd = bt_memfd("test-reexec", state, (size_t)len);
  int stray = open("/dev/null", O_RDONLY); /* not close-on-exec, not kept: closed by the exec */
  /* A signal the loop caught and has not dispatched: it must reach the next image. */
  static uv_signal_t usr2;
  uv_signal_init(&loop, &usr2);
  uv_signal_start(&usr2, on_usr2_unused, SIGUSR2);
  raise(SIGUSR2);
  /* A failed exec first: nothing changes. */
  int keep[] = {mfd, io[0].fd};
  char *env0[] = {NULL};
  int err = bt_reexec(&loop, "/nonexistent/prog", argv, env0, keep, 2);
  if (err != -ENOENT || fcntl(mfd, F_GETFD) != FD_CLOEXEC || fcntl(stray, F_GETFD) != 0) {
    printf("failed exec changed something: %d\n", err);
    return 3;
  }
  char fdarg[32], inarg[32], strayarg[32];
  snprintf(fdarg, sizeof fdarg, "%d", mfd);
  snprintf(inarg, sizeof inarg, "%d", io[0].fd);
  snprintf(strayarg, sizeof strayarg, "%d", stray);
  char *next[] = {(char *)self, "--reexec-2", fdarg, inarg, strayarg, NULL};
  char *env[] = {"PATH=/usr/bin:/bin", NULL};
  err = bt_reexec(&loop, self, next, env, keep, 2);
  printf("reexec failed: %d\n", err);
  return 3;
}

/* The second image: the kept fds are open (made close-on-exec again), the
 * stray one closed; the child is claimed, an orphan reaper leaves it alone,
 * and a process handle reaps it with its status. */
static int child_reexec_2(int mfd, int in, int stray) {
  char *state;
  size_t len;
  if (bt_fd_read_all(mfd, &state, &len) < 0) return 2;
  pid_t pid = (pid_t)atoi(state);
  free(state);
  if (bt_fd_cloexec(mfd, 1) != 0 || bt_fd_cloexec(in, 1) != 0 || fcntl(stray, F_GETFD) >= 0)
    return 4;
  close(mfd);
  CHECK_EQ(bt_reexec_claim(pid), 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  bt_reaper_t reaper;
  int got[2] = {0, 0};
  reaper.data = got;
  CHECK_EQ(bt_reaper_start(&loop, &reaper, 0, on_orphan), 0);
  bt_process_t p;
  int exits = 0;
  p.data = &exits;
  CHECK_EQ(bt_process_open(&loop, &p, pid, on_exit_count), 0);
  CHECK_EQ(bt_reexec_unclaim(pid), -ESRCH); /* taken by the handle */
  close(in);                                /* the child reads EOF and exits 7 */
  while (!exits)
    uv_run(&loop, UV_RUN_ONCE);
  CHECK_EQ(bt_reaper_reap(&reaper), 0);
  sigset_t pending;
  sigpending(&pending);
  signal(SIGUSR2, SIG_IGN); /* (its default would end this image once unblocked) */
  bt_reexec_signals_resume();
  printf("second image: child %s %d%s\n", p.status_known ? "exited" : "unknown", p.exit_code,
         sigismember(&pending, SIGUSR2) == 1 ? ", USR2 pending" : "");
  bt_process_close(&p, NULL);
  bt_reaper_close(&reaper, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
  return failures ? 5 : 0;
}

static void test_reexec(void) {
  char buf[256];
  bt_spawn_options_t o = {0};
  char *argv[] = {(char *)self, "--child", "reexec", NULL};
  CHECK_EQ(capture(argv, &o, buf, sizeof buf), 0);
  CHECK_STR(buf, "second image: child exited 7, USR2 pending\n");
  /* The primitives' own errors. */
  CHECK_EQ(bt_fd_cloexec(-1, 1), -EBADF);
  CHECK_EQ(bt_memfd(NULL, "", 0), -EINVAL);
  char *a[] = {"x", NULL};
  CHECK_EQ(bt_reexec(NULL, "/etc", a, a, NULL, 0), -EACCES);
  CHECK_EQ(bt_reexec_unclaim(4194303), -ESRCH);
  int fd = bt_memfd("t", "abc", 3);
  CHECK(fd > 2);
  char *data;
  size_t len;
  CHECK_EQ(bt_fd_read_all(fd, &data, &len), 0);
  CHECK_EQ((int)len, 3);
  CHECK(memcmp(data, "abc", 3) == 0);
  free(data);
  close(fd);
}

static void test_exec(void) {
  char buf[256];
  bt_spawn_options_t o = {0};
  char *ok[] = {(char *)self, "--child", "exec-ok", NULL};
  CHECK_EQ(capture(ok, &o, buf, sizeof buf), 0);
  CHECK(strcmp(buf, "exec worked: sh-by-exec\n") == 0);
  char *missing[] = {(char *)self, "--child", "exec-missing", NULL};
  CHECK_EQ(capture(missing, &o, buf, sizeof buf), 0);
  CHECK(strcmp(buf, "exec failed: -2 lookup\n") == 0);
}

static void test_stdio_forward_same(void) {
  /* fd 1 follows fd 2, declared after it: both land on fd 2's pipe. */
  bt_process_t p;
  char buf[128];
  char *argv[] = {"sh", "-c", "echo one; echo two >&2", NULL};
  bt_stdio_t io[] = {{BT_STDIO_NULL, -1, 0}, {BT_STDIO_SAME, 2, 0}, {BT_STDIO_PIPE, -1, 0}};
  bt_spawn_options_t o = {.argv = argv, .stdio = io, .nstdio = 3};
  CHECK_EQ(run_proc(&p, &o), 0);
  drain(io[2].fd, buf, sizeof buf);
  close(io[2].fd);
  CHECK(strcmp(buf, "one\ntwo\n") == 0);
  /* SAME of a SAME, or of itself, is refused. */
  bt_stdio_t bad[] = {{BT_STDIO_NULL, -1, 0}, {BT_STDIO_SAME, 2, 0}, {BT_STDIO_SAME, 1, 0}};
  o.stdio = bad;
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
  bt_spawn_options_t o = {
      .argv = argv, .env = env, .cwd = "/tmp", .stdio = io, .nstdio = 3, .flags = BT_SPAWN_SETPGID};
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
  /* Relative entries are never searched, even when the file is there: "bin"
   * in the child's cwd "/" holds sh. */
  CHECK_EQ(bt_lookpath("sh", ".:bin:", "/", out, sizeof out), -ENOENT);
  CHECK_EQ(bt_lookpath("passwd", "/etc", NULL, out, sizeof out), -EACCES);
  CHECK_EQ(bt_lookpath("./x", NULL, NULL, out, sizeof out), 0);
  CHECK(strcmp(out, "./x") == 0);
  CHECK_EQ(bt_lookpath("sh", "/bin", NULL, out, 4), -ENAMETOOLONG);
  CHECK_EQ(bt_lookpath("", NULL, NULL, out, sizeof out), -ENOENT);
}

static void test_lookpath_cwd(void) {
  /* A relative path is relative to the child's cwd (Go: to Cmd.Dir); an
   * absolute path, and any path without a cwd, is taken as is. */
  char out[256];
  CHECK_EQ(bt_lookpath("./prog", NULL, "/srv/app", out, sizeof out), 0);
  CHECK_STR(out, "/srv/app/prog");
  CHECK_EQ(bt_lookpath("bin/prog", "/bin", "/srv/app/", out, sizeof out), 0);
  CHECK_STR(out, "/srv/app/bin/prog");
  CHECK_EQ(bt_lookpath("../prog", NULL, "/srv/app", out, sizeof out), 0);
  CHECK_STR(out, "/srv/app/../prog");
  CHECK_EQ(bt_lookpath("./prog", NULL, "/", out, sizeof out), 0);
  CHECK_STR(out, "/prog");
  CHECK_EQ(bt_lookpath("./prog", NULL, "sub", out, sizeof out), 0);
  CHECK_STR(out, "sub/prog");
  CHECK_EQ(bt_lookpath("/bin/sh", NULL, "/srv/app", out, sizeof out), 0);
  CHECK_STR(out, "/bin/sh");
  CHECK_EQ(bt_lookpath("./prog", NULL, "", out, sizeof out), 0);
  CHECK_STR(out, "./prog");
  CHECK_EQ(bt_lookpath("./prog", NULL, "/srv/app", out, 13), -ENAMETOOLONG);
  CHECK_EQ(bt_lookpath("./prog", NULL, "/srv/app", out, 14), 0);

  /* A name is searched in absolute PATH entries only: the cwd, given or
   * our own, never matters, even when the program is right there. */
  char dir[4096], prog[4200];
  CHECK_EQ(make_temp_dir(dir, sizeof dir), 0);
  snprintf(prog, sizeof prog, "%s/prog", dir);
  CHECK_EQ(write_script(prog, "exit 0"), 0);
  CHECK_EQ(bt_lookpath("prog", ".:", dir, out, sizeof out), -ENOENT);
  int here = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  CHECK_EQ(chdir(dir), 0);
  CHECK_EQ(bt_lookpath("prog", ".:", NULL, out, sizeof out), -ENOENT);
  CHECK_EQ(fchdir(here), 0);
  close(here);
  CHECK_EQ(bt_lookpath("prog", dir, "/", out, sizeof out), 0);
  CHECK_STR(out, prog);
  CHECK_EQ(unlink(prog), 0);
  CHECK_EQ(rmdir(dir), 0);
}

static void test_relative_path_cwd(void) {
  /* `./prog` with a cwd runs the cwd's prog, and the handle names it from
   * here; with a relative cwd too (the child must not apply it twice). */
  char dir[4096], sub[4200], prog[4300], buf[4096], want[4500];
  CHECK_EQ(make_temp_dir(dir, sizeof dir), 0);
  snprintf(sub, sizeof sub, "%s/sub", dir);
  snprintf(prog, sizeof prog, "%s/prog", sub);
  CHECK_EQ(mkdir(sub, 0755), 0);
  CHECK_EQ(write_script(prog, "echo \"$0 in $(pwd)\""), 0);

  char *argv[] = {"./prog", NULL};
  bt_spawn_options_t o = {.cwd = sub};
  CHECK_EQ(capture(argv, &o, buf, sizeof buf), 0);
  snprintf(want, sizeof want, "./prog in %s\n", sub);
  CHECK_STR(buf, want);

  bt_process_t p;
  o.argv = argv;
  CHECK_EQ(run_proc(&p, &o), 0);
  CHECK_STR(p.path, prog);
  char *missing[] = {"./missing", NULL};
  o.argv = missing;
  CHECK_EQ(run_proc(&p, &o), -ENOENT);
  CHECK_EQ(p.stage, BT_STAGE_EXEC);
  snprintf(want, sizeof want, "%s/missing", sub);
  CHECK_STR(p.path, want);

  int here = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  CHECK_EQ(chdir(dir), 0);
  o.cwd = "sub";
  CHECK_EQ(capture(argv, &o, buf, sizeof buf), 0);
  snprintf(want, sizeof want, "./prog in %s\n", sub);
  CHECK_STR(buf, want);
  o.argv = argv;
  CHECK_EQ(run_proc(&p, &o), 0);
  CHECK_STR(p.path, "sub/prog");
  CHECK_EQ(fchdir(here), 0);
  close(here);

  /* bt_exec checks the program where the child will find it, before its
   * chdir, and runs it. */
  char *exec[] = {(char *)self, "--child", "exec-cwd", sub, NULL};
  bt_spawn_options_t none = {0};
  CHECK_EQ(capture(exec, &none, buf, sizeof buf), 0);
  snprintf(want, sizeof want, "./prog in %s\n", sub);
  CHECK_STR(buf, want);

  CHECK_EQ(unlink(prog), 0);
  CHECK_EQ(rmdir(sub), 0);
  CHECK_EQ(rmdir(dir), 0);
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
  for (int i = 0; i < N; i++)
    bt_process_close(&ps[i], NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
}

static void test_descendants(void) {
  /* A child, a grandchild that left the group (setsid) and a great-grandchild
   * are all found; what is not there is an error. */
  uv_loop_t loop;
  bt_process_t p;
  int exits = 0;
  char *argv[] = {"sh", "-c", "sleep 30 & setsid sh -c 'sleep 30 & wait' & wait", NULL};
  bt_spawn_options_t o = {.argv = argv, .flags = BT_SPAWN_SETPGID};
  pid_t out[16];
  int n = 0;
  uv_loop_init(&loop);
  p.data = &exits;
  CHECK_EQ(bt_spawn(&loop, &p, &o, on_exit_count), 0);
  for (int tries = 0; tries < 2000 && n < 3; tries++) { /* until the shells forked */
    n = bt_proc_descendants(p.pid, out, 16);
    if (n < 3) usleep(5000);
  }
  CHECK_EQ(n, 3);
  CHECK_EQ(bt_proc_descendants(p.pid, out, 1), 1); /* bounded by max */
  n = bt_proc_descendants(p.pid, out, 16);
  for (int i = 0; i < n; i++)
    CHECK_EQ(kill(out[i], SIGKILL), 0);
  bt_process_kill(&p, SIGKILL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(exits, 1);
  bt_process_close(&p, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
  CHECK_EQ(bt_proc_descendants(0, out, 16), -EINVAL);
  CHECK_EQ(bt_proc_descendants(getpid(), NULL, 16), -EINVAL);
  CHECK_EQ(bt_proc_descendants(getpid(), out, 16), 0);         /* reaped: no children left */
  CHECK_EQ(bt_proc_descendants(4194304 + 1, out, 16), -ESRCH); /* above pid_max */
}

/* ---- cgroup v2 ----------------------------------------------------------------------- */

static char cgroup_why[4400]; /* why the cgroup tests skip */

/*
 * A fresh, empty scratch group under our own, named by pid and a counter
 * (tests run in parallel), into `dir`. Returns 0, or a negative errno with
 * `cgroup_why` saying why the host cannot have one (then the test skips).
 */
static int cgroup_scratch(char *dir, size_t cap) {
  static int counter;
  char self_dir[4096], name[64];
  int err = bt_cgroup_self(self_dir, sizeof self_dir);
  if (err < 0) {
    snprintf(cgroup_why, sizeof cgroup_why, "no cgroup v2 group of our own (%s)", bt_strerror(err));
    return err;
  }
  snprintf(name, sizeof name, "baton-test-%d-%d", (int)getpid(), ++counter);
  err = bt_cgroup_create(self_dir, name, dir, cap);
  if (err < 0)
    snprintf(cgroup_why, sizeof cgroup_why, "cannot create a cgroup under %s (%s)", self_dir,
             bt_strerror(err));
  return err;
}

/*
 * Wait until nothing runs in group `dir` any more, for an event: kernfs
 * wakes a poll for POLLPRI on cgroup.events when the file changes after it
 * was last read through the fd. Returns 0, -ETIMEDOUT after `hang_ms` (only
 * a broken test gets there), or a negative errno.
 */
static int cgroup_wait_empty(const char *dir, int hang_ms) {
  char path[4200], buf[256];
  snprintf(path, sizeof path, "%s/cgroup.events", dir);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  int err = -ETIMEDOUT;
  for (;;) {
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n < 0) {
      err = -errno;
      break;
    }
    buf[n] = '\0';
    if (strstr(buf, "populated 0")) {
      err = 0;
      break;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLPRI};
    int r;
    while ((r = poll(&pfd, 1, hang_ms)) < 0 && errno == EINTR)
      continue;
    if (r <= 0) break;
  }
  close(fd);
  return err;
}

/* Kill what is left in `dir`, wait until it is empty, remove it. */
static void cgroup_cleanup(const char *dir) {
  int err = bt_cgroup_kill(dir);
  if (err < 0) CHECK_EQ(bt_cgroup_kill_sweep(dir), 0);
  CHECK_EQ(cgroup_wait_empty(dir, 20000), 0);
  CHECK_EQ(bt_cgroup_remove(dir), 0);
}

/* Whether /proc/PID/cgroup names `dir` (whose path ends with the group's). */
static int cgroup_has(const char *dir, pid_t pid) {
  char path[64], line[4096];
  int found = 0;
  snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
  FILE *f = fopen(path, "re");
  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, "0::", 3) != 0) continue;
    line[strcspn(line, "\n")] = '\0';
    size_t n = strlen(line + 3), d = strlen(dir);
    found = n > 1 && d >= n && strcmp(dir + d - n, line + 3) == 0;
  }
  if (f) fclose(f);
  return found;
}

/* Read one line (a pid) from the nonblocking pipe `fd`, waiting for it. */
static long read_pid_line(int fd) {
  char buf[64];
  size_t n = 0;
  while (n < sizeof buf - 1) {
    ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
    if (r > 0) {
      n += (size_t)r;
      buf[n] = '\0';
      if (strchr(buf, '\n')) break;
      continue;
    }
    if (r == 0) break;
    if (errno == EINTR) continue;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (errno != EAGAIN || poll(&pfd, 1, 20000) <= 0) break;
  }
  buf[n] = '\0';
  return atol(buf);
}

static void test_cgroup_self(void) {
  char dir[4096], path[4200], line[64];
  int err = bt_cgroup_self(dir, sizeof dir);
  if (err == -ENOENT) SKIP("no cgroup2 hierarchy mounted where our group is visible");
  CHECK_EQ(err, 0);
  CHECK(dir[0] == '/');
  /* We are listed in its cgroup.procs. */
  snprintf(path, sizeof path, "%s/cgroup.procs", dir);
  FILE *f = fopen(path, "re");
  CHECK(f != NULL);
  int found = 0;
  while (f && fgets(line, sizeof line, f))
    found |= atoi(line) == (int)getpid();
  if (f) fclose(f);
  CHECK(found);
  char small[2];
  CHECK_EQ(bt_cgroup_self(small, sizeof small), -ENAMETOOLONG);
  int fd = bt_cgroup_open(dir);
  CHECK(fd >= 0);
  if (fd >= 0) {
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    close(fd);
  }
  CHECK_EQ(bt_cgroup_open("/tmp"), -EINVAL);
  CHECK_EQ(bt_cgroup_open("/nonexistent-cgroup"), -ENOENT);
}

/* Spawn `argv` into group `dir` with stdout on a pipe (its fd in `*out`).
 * Returns bt_spawn's result. */
static int spawn_in(uv_loop_t *loop, bt_process_t *p, const char *dir, char **argv, int *out,
                    int *exits) {
  int cfd = bt_cgroup_open(dir);
  if (cfd < 0) return cfd;
  bt_stdio_t io[] = {{BT_STDIO_NULL, -1, 0}, {BT_STDIO_PIPE, -1, 0}, {BT_STDIO_INHERIT, -1, 0}};
  bt_spawn_options_t o = {
      .argv = argv, .stdio = io, .nstdio = 3, .flags = BT_SPAWN_CGROUP, .cgroup_fd = cfd};
  p->data = exits;
  int err = bt_spawn(loop, p, &o, on_exit_count);
  close(cfd);
  *out = io[1].fd;
  return err;
}

/* A child in `dir` whose setsid'd grandchild escapes its session; both are
 * killed through the group, by cgroup.kill or by the sweep. */
static void cgroup_kill_tree(int sweep) {
  char dir[4096], sub[4200];
  if (cgroup_scratch(dir, sizeof dir) < 0) SKIP(cgroup_why);
  uv_loop_t loop;
  bt_process_t p, q;
  int exits = 0, out = -1, out2 = -1;
  uv_loop_init(&loop);
  char *argv[] = {"sh", "-c", "setsid sh -c 'echo $$; exec sleep 1000' & exec sleep 1000", NULL};
  int err = spawn_in(&loop, &p, dir, argv, &out, &exits);
  if (err == -EBUSY || err == -EOPNOTSUPP) {
    CHECK_EQ(bt_cgroup_remove(dir), 0);
    uv_loop_close(&loop);
    snprintf(cgroup_why, sizeof cgroup_why, "cannot move a process into %s (%s)", dir,
             bt_strerror(err));
    SKIP(cgroup_why);
  }
  CHECK_EQ(err, 0);
  long grandchild = err == 0 ? read_pid_line(out) : 0;
  CHECK(grandchild > 0);
  CHECK(cgroup_has(dir, p.pid));
  CHECK(grandchild > 0 && cgroup_has(dir, (pid_t)grandchild));
  CHECK(grandchild > 0 && getsid((pid_t)grandchild) == (pid_t)grandchild);
  CHECK_EQ(bt_cgroup_populated(dir), 1);
  /* A group below, with a process of its own: the kill reaches it too. */
  CHECK_EQ(bt_cgroup_create(dir, "sub", sub, sizeof sub), 0);
  char *argv2[] = {"sleep", "1000", NULL};
  CHECK_EQ(spawn_in(&loop, &q, sub, argv2, &out2, &exits), 0);
  CHECK(cgroup_has(sub, q.pid));
  CHECK_EQ(bt_cgroup_remove(dir), -EBUSY);

  CHECK_EQ(sweep ? bt_cgroup_kill_sweep(dir) : bt_cgroup_kill(dir), 0);
  CHECK(run_until_n(&loop, &exits, 2, 20000));
  CHECK_EQ(p.term_signal, SIGKILL);
  CHECK_EQ(q.term_signal, SIGKILL);
  /* Empty: the escaped grandchild, in the group, is gone too. */
  CHECK_EQ(cgroup_wait_empty(dir, 20000), 0);
  CHECK_EQ(bt_cgroup_populated(dir), 0);
  CHECK_EQ(bt_cgroup_populated(sub), 0);
  if (sweep) {
    char frozen[16] = "?";
    CHECK(bt_cgroup_get(dir, "cgroup.freeze", frozen, sizeof frozen) >= 0);
    CHECK_STR(frozen, "0"); /* thawed again */
  }
  bt_process_close(&p, NULL);
  bt_process_close(&q, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (out >= 0) close(out);
  if (out2 >= 0) close(out2);
  cgroup_cleanup(sub);
  cgroup_cleanup(dir);
  CHECK_EQ(uv_loop_close(&loop), 0);
}

static void test_cgroup_kill(void) {
  cgroup_kill_tree(0);
}

static void test_cgroup_kill_sweep(void) {
  cgroup_kill_tree(1);
}

static void test_cgroup_spawn_fail(void) {
  /* The join fails in the child, which then leaves no trace: no child, no fd. */
  bt_process_t p;
  char *argv[] = {"true", NULL};
  bt_spawn_options_t o = {.argv = argv, .flags = BT_SPAWN_CGROUP, .cgroup_fd = -1};
  CHECK_EQ(run_proc(&p, &o), -EBADF);
  CHECK_EQ(p.stage, BT_STAGE_CGROUP);
  CHECK_STR(bt_stage_name(BT_STAGE_CGROUP), "cgroup");
  /* A directory that is no group: no cgroup.procs in it. */
  o.cgroup_fd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  CHECK_EQ(run_proc(&p, &o), -ENOENT);
  CHECK_EQ(p.stage, BT_STAGE_CGROUP);
  CHECK_EQ(p.pid, 0);
  CHECK_EQ(p.pidfd, -1);
  close(o.cgroup_fd);

  /* A group removed after it was opened. */
  char dir[4096];
  if (cgroup_scratch(dir, sizeof dir) < 0) SKIP(cgroup_why);
  o.cgroup_fd = bt_cgroup_open(dir);
  CHECK(o.cgroup_fd >= 0);
  CHECK_EQ(bt_cgroup_remove(dir), 0);
  bt_stdio_t io[] = {{BT_STDIO_NULL, -1, 0}, {BT_STDIO_PIPE, -1, 0}, {BT_STDIO_INHERIT, -1, 0}};
  o.stdio = io;
  o.nstdio = 3;
  CHECK_EQ(run_proc(&p, &o), -ENOENT);
  CHECK_EQ(p.stage, BT_STAGE_CGROUP);
  CHECK_EQ(io[1].fd, -1); /* the pipe is closed again */
  close(o.cgroup_fd);
}

static void test_cgroup_files(void) {
  char dir[4096], leaf[4200], avail[1024], missing[256], val[256];
  CHECK_EQ(bt_cgroup_enable("/tmp", "Memory!", NULL, 0), -EINVAL);
  CHECK_EQ(bt_cgroup_set("/tmp", "memory.max", "1"), -EINVAL); /* not a cgroup */
  if (cgroup_scratch(dir, sizeof dir) < 0) SKIP(cgroup_why);
  CHECK_EQ(bt_cgroup_create(dir, "a/b", leaf, sizeof leaf), -EINVAL);
  CHECK_EQ(bt_cgroup_create(dir, "..", leaf, sizeof leaf), -EINVAL);
  CHECK_EQ(bt_cgroup_create(dir, "leaf", leaf, 8), -ENAMETOOLONG);
  CHECK_EQ(bt_cgroup_create(dir, "leaf", leaf, sizeof leaf), 0);
  CHECK_EQ(bt_cgroup_create(dir, "leaf", leaf, sizeof leaf), 0); /* there already: fine */
  CHECK_EQ(bt_cgroup_populated(dir), 0);
  CHECK_EQ(bt_cgroup_remove(dir), -EBUSY); /* holds a group */

  /* What the host offers decides what enabling gives: both ways assert. */
  CHECK(bt_cgroup_get(dir, "cgroup.controllers", avail, sizeof avail) >= 0);
  const char *want[] = {"memory", "pids", "cpu"};
  char expect[256] = "";
  int nexpect = 0;
  for (int i = 0; i < 3; i++) {
    char padded[1100], word[16];
    snprintf(padded, sizeof padded, " %s ", avail);
    snprintf(word, sizeof word, " %s ", want[i]);
    if (strstr(padded, word)) continue;
    snprintf(expect + strlen(expect), sizeof expect - strlen(expect), "%s%s", nexpect ? " " : "",
             want[i]);
    nexpect++;
  }
  CHECK_EQ(bt_cgroup_enable(dir, "memory +pids,cpu", missing, sizeof missing), nexpect);
  CHECK_STR(missing, expect);
  fprintf(stderr, "cgroup_files: controllers offered: \"%s\"; not available: \"%s\"\n", avail,
          missing);
  int has_memory = !strstr(expect, "memory"), has_pids = !strstr(expect, "pids");
  if (has_memory) {
    CHECK_EQ(bt_cgroup_set(leaf, "memory.max", "100M"), 0);
    CHECK_EQ(bt_cgroup_get(leaf, "memory.max", val, sizeof val), 9);
    CHECK_STR(val, "104857600");
    CHECK_EQ(bt_cgroup_oom_kills(leaf), 0);
  } else {
    CHECK_EQ(bt_cgroup_set(leaf, "memory.max", "100M"), -ENOENT);
    CHECK_EQ(bt_cgroup_oom_kills(leaf), -ENOENT);
  }
  CHECK_EQ(bt_cgroup_set(leaf, "pids.max", "10"), has_pids ? 0 : -ENOENT);
  if (has_pids) {
    CHECK_EQ(bt_cgroup_get(leaf, "pids.max", val, sizeof val), 2);
    CHECK_STR(val, "10");
    CHECK_EQ(bt_cgroup_set(leaf, "pids.max", "lots"), -EINVAL); /* the kernel refuses it */
  }
  CHECK_EQ(bt_cgroup_set(leaf, "../cgroup.procs", "0"), -EINVAL);
  CHECK_EQ(bt_cgroup_set(leaf, "no.such.file", "1"), -ENOENT);
  CHECK_EQ(bt_cgroup_get(leaf, "cgroup.type", val, 2), -EOVERFLOW); /* "domain" */
  CHECK_EQ(bt_cgroup_populated(leaf), 0);

  CHECK_EQ(bt_cgroup_remove(leaf), 0);
  CHECK_EQ(bt_cgroup_remove(leaf), -ENOENT);
  CHECK_EQ(bt_cgroup_remove(dir), 0);
  CHECK_EQ(bt_cgroup_populated(dir), -ENOENT);
  CHECK_EQ(bt_cgroup_remove("/tmp"), -EINVAL);

  /* The root group has no cgroup.events and cannot be killed. */
  char self_dir[4096], events[4200];
  CHECK_EQ(bt_cgroup_self(self_dir, sizeof self_dir), 0);
  snprintf(events, sizeof events, "%s/cgroup.events", self_dir);
  if (access(events, F_OK) < 0) {
    CHECK_EQ(bt_cgroup_populated(self_dir), -ENOENT);
    CHECK_EQ(bt_cgroup_kill(self_dir), -EINVAL);
  }
}

/* ---- notifications (sd_notify) ---------------------------------------------------------- */

/* What the notification callbacks saw. */
typedef struct {
  int count;    /* datagrams delivered */
  int done_at;  /* set `done` once `count` reaches this */
  int done;     /* for run_until */
  int keep;     /* take fds[0] (set its slot to -1) into `kept` */
  int kept;     /* the fd taken, or -1 */
  int close_at; /* close the handle from the callback at this count (0: never) */
  pid_t pid;    /* of the last datagram, and the rest of it */
  uid_t uid;
  gid_t gid;
  int nfds;
  size_t len;
  char text[BT_NOTIFY_MAX + 1];
} notes_t;

static void notes_init(notes_t *nt, int done_at) {
  memset(nt, 0, offsetof(notes_t, text));
  nt->text[0] = '\0';
  nt->done_at = done_at;
  nt->kept = -1;
}

static void on_note(bt_notify_t *n, const bt_notify_msg_t *msg) {
  notes_t *nt = n->data;
  nt->count++;
  nt->pid = msg->pid;
  nt->uid = msg->uid;
  nt->gid = msg->gid;
  nt->nfds = msg->nfds;
  nt->len = msg->len;
  memcpy(nt->text, msg->text, msg->len + 1);
  if (nt->keep && msg->nfds > 0) {
    nt->kept = msg->fds[0];
    msg->fds[0] = -1;
  }
  if (nt->count == nt->close_at) bt_notify_close(n, NULL);
  if (nt->count >= nt->done_at) nt->done = 1;
}

/* Fill `sa` for a socket path ('@': abstract); returns its length. */
static socklen_t unix_addr(const char *path, struct sockaddr_un *sa) {
  size_t n = strlen(path);
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  memcpy(sa->sun_path, path, n);
  if (path[0] != '@') return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  sa->sun_path[0] = '\0';
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
}

/*
 * Send one datagram of `len` bytes to `path` the raw way, with `nfds` fds
 * and, when `cred` is given, those credentials stated explicitly (another
 * pid than ours needs CAP_SYS_ADMIN). Returns 0 or a negative errno.
 */
static int send_raw(const char *path, const char *text, size_t len, const int *fds, int nfds,
                    const struct ucred *cred) {
  struct sockaddr_un sa;
  socklen_t salen = unix_addr(path, &sa);
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 8)];
  } control;
  memset(&control, 0, sizeof control);
  struct iovec iov = {.iov_base = (void *)text, .iov_len = len};
  struct msghdr mh = {.msg_name = &sa, .msg_namelen = salen, .msg_iov = &iov, .msg_iovlen = 1};
  size_t used = 0;
  mh.msg_control = control.buf;
  mh.msg_controllen = sizeof control.buf;
  struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
  if (cred) {
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_CREDENTIALS;
    c->cmsg_len = CMSG_LEN(sizeof *cred);
    memcpy(CMSG_DATA(c), cred, sizeof *cred);
    used += CMSG_SPACE(sizeof *cred);
    c = (struct cmsghdr *)(control.buf + used);
  }
  if (nfds > 0) {
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    used += CMSG_SPACE(sizeof(int) * (size_t)nfds);
  }
  mh.msg_controllen = used;
  if (used == 0) mh.msg_control = NULL;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int r = sendmsg(fd, &mh, 0) < 0 ? -errno : 0;
  close(fd);
  return r;
}

/* Whether the read end `fd` of a pipe sees its end (every write end closed),
 * without waiting: an fd the reader closed at once is closed by now. */
static int pipe_ended(int fd) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLHUP);
}

static void test_notify_basic(void) {
  char dir[256], path[300];
  CHECK_EQ(make_temp_dir(dir, sizeof dir), 0);
  snprintf(path, sizeof path, "%s/notify", dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  bt_notify_t n;
  static notes_t nt;
  notes_init(&nt, 1);
  n.data = &nt;
  CHECK_EQ(bt_notify_open(&loop, &n, path, on_note), 0);
  CHECK(n.fd >= 0);
  CHECK_STR(n.path, path);
  struct stat st;
  CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode));
  CHECK_EQ(fcntl(n.fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  CHECK_EQ(nt.count, 0); /* never from inside open */

  /* The kernel attaches the sender's credentials. */
  CHECK_EQ(bt_sd_notify(path, "READY=1\nSTATUS=hi", NULL, 0), 1);
  CHECK(run_until(&loop, &nt.done, 10000));
  CHECK_EQ(nt.count, 1);
  CHECK_EQ(nt.pid, getpid());
  CHECK_EQ(nt.uid, getuid());
  CHECK_EQ(nt.gid, getgid());
  CHECK_EQ(nt.nfds, 0);
  CHECK_EQ(nt.len, 17);
  CHECK_STR(nt.text, "READY=1\nSTATUS=hi");

  /* Many, from a sender that blocks while the queue is full (it holds
   * net.unix.max_dgram_qlen datagrams, 10 by default): each arrives once,
   * in order. NULs inside count in `len`. */
  pid_t sender = fork();
  CHECK(sender >= 0);
  if (sender == 0) {
    for (int i = 0; i < 150; i++) {
      char text[32] = {0};
      int len = snprintf(text, sizeof text, "N=%d", i);
      if (send_raw(path, text, (size_t)len + 2, NULL, 0, NULL) < 0) _exit(1);
    }
    _exit(0);
  }
  nt.done = 0;
  nt.done_at = 151;
  CHECK(run_until(&loop, &nt.done, 30000));
  CHECK_EQ(nt.count, 151);
  CHECK_STR(nt.text, "N=149");
  CHECK_EQ(nt.len, 7);
  int st_sender = -1;
  while (waitpid(sender, &st_sender, 0) < 0 && errno == EINTR)
    continue;
  CHECK_EQ(st_sender, 0);

  /* Explicit credentials are taken as stated; another pid than ours (as
   * systemd-notify claims its parent's) needs privilege. */
  struct ucred cred = {.pid = getppid(), .uid = getuid(), .gid = getgid()};
  int r = send_raw(path, "X=1", 3, NULL, 0, &cred);
  if (r == -EPERM) {
    cred.pid = getpid();
    r = send_raw(path, "X=1", 3, NULL, 0, &cred);
  }
  CHECK_EQ(r, 0);
  nt.done = 0;
  nt.done_at = 152;
  CHECK(run_until(&loop, &nt.done, 10000));
  CHECK_EQ(nt.pid, cred.pid);

  /* Unref'd, it does not keep the loop alive; ref'd again, it does. */
  bt_notify_ref(&n, 0);
  CHECK_EQ(uv_loop_alive(&loop), 0);
  bt_notify_ref(&n, 1);
  CHECK(uv_loop_alive(&loop));

  /* Close: the file is gone at once, nothing fires after. */
  CHECK_EQ(bt_sd_notify(path, "LATE=1", NULL, 0), 1);
  bt_notify_close(&n, NULL);
  bt_notify_close(&n, NULL); /* again: nothing */
  CHECK_EQ(n.fd, -1);
  CHECK_EQ(stat(path, &st), -1);
  CHECK_EQ(errno, ENOENT);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(nt.count, 152);
  CHECK_EQ(bt_sd_notify(path, "GONE=1", NULL, 0), -ENOENT);
  CHECK_EQ(uv_loop_close(&loop), 0);
  CHECK_EQ(rmdir(dir), 0);
}

static void test_notify_fds(void) {
  char dir[256], path[300];
  CHECK_EQ(make_temp_dir(dir, sizeof dir), 0);
  snprintf(path, sizeof path, "%s/notify", dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  bt_notify_t n;
  static notes_t nt;
  notes_init(&nt, 1);
  n.data = &nt;
  CHECK_EQ(bt_notify_open(&loop, &n, path, on_note), 0);

  /* As systemd-notify's BARRIER=1: the write end of a pipe, whose reader
   * waits for its end. The callback leaves it: closed once it returns. */
  int a[2], b[2];
  CHECK_EQ(pipe2(a, O_CLOEXEC), 0);
  CHECK_EQ(pipe2(b, O_CLOEXEC), 0);
  int both[] = {a[1], b[1]};
  CHECK_EQ(bt_sd_notify(path, "BARRIER=1", both, 2), 1);
  close(a[1]);
  close(b[1]);
  CHECK(!pipe_ended(a[0])); /* the copies in flight hold it open */
  CHECK(run_until(&loop, &nt.done, 10000));
  CHECK_EQ(nt.nfds, 2);
  CHECK_STR(nt.text, "BARRIER=1");
  CHECK(pipe_ended(a[0]));
  CHECK(pipe_ended(b[0]));
  close(a[0]);
  close(b[0]);

  /* A callback that takes one keeps it open, close-on-exec; the rest close. */
  CHECK_EQ(pipe2(a, O_CLOEXEC), 0);
  CHECK_EQ(pipe2(b, O_CLOEXEC), 0);
  int fds2[] = {a[1], b[1]};
  CHECK_EQ(send_raw(path, "FDSTORE=1", 9, fds2, 2, NULL), 0);
  close(a[1]);
  close(b[1]);
  nt.keep = 1;
  nt.done = 0;
  nt.done_at = 2;
  CHECK(run_until(&loop, &nt.done, 10000));
  CHECK(nt.kept >= 0);
  CHECK_EQ(fcntl(nt.kept, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  CHECK(!pipe_ended(a[0]));
  CHECK(pipe_ended(b[0]));
  close(nt.kept);
  CHECK(pipe_ended(a[0]));
  close(a[0]);
  close(b[0]);

  bt_notify_close(&n, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
  CHECK_EQ(rmdir(dir), 0);
}

static void test_notify_truncated(void) {
  char dir[256], path[300];
  CHECK_EQ(make_temp_dir(dir, sizeof dir), 0);
  snprintf(path, sizeof path, "%s/notify", dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  bt_notify_t n;
  static notes_t nt;
  notes_init(&nt, 1);
  n.data = &nt;
  CHECK_EQ(bt_notify_open(&loop, &n, path, on_note), 0);

  /* One byte too long, with an fd: dropped, the fd closed; the datagram
   * after it arrives. */
  static char big[BT_NOTIFY_MAX + 1];
  memset(big, 'x', sizeof big);
  memcpy(big, "STATUS=", 7);
  int a[2];
  CHECK_EQ(pipe2(a, O_CLOEXEC), 0);
  CHECK_EQ(send_raw(path, big, BT_NOTIFY_MAX + 1, &a[1], 1, NULL), 0);
  close(a[1]);
  CHECK_EQ(send_raw(path, "AFTER=1", 7, NULL, 0, NULL), 0);
  CHECK(run_until(&loop, &nt.done, 10000));
  CHECK_EQ(nt.count, 1);
  CHECK_STR(nt.text, "AFTER=1");
  CHECK(pipe_ended(a[0]));
  close(a[0]);

  /* 4096 bytes (systemd's limit), and the largest that fits, arrive whole. */
  CHECK_EQ(send_raw(path, big, 4096, NULL, 0, NULL), 0);
  CHECK_EQ(send_raw(path, big, BT_NOTIFY_MAX, NULL, 0, NULL), 0);
  nt.done = 0;
  nt.done_at = 3;
  CHECK(run_until(&loop, &nt.done, 10000));
  CHECK_EQ(nt.count, 3);
  CHECK_EQ(nt.len, BT_NOTIFY_MAX);
  CHECK_EQ(strlen(nt.text), BT_NOTIFY_MAX);
  CHECK(memcmp(nt.text, big, BT_NOTIFY_MAX) == 0);

  /* Fds that cannot be received (no fd number free below RLIMIT_NOFILE):
   * the kernel cuts the control data (MSG_CTRUNC) and the datagram is
   * dropped, the fds closed. */
  CHECK_EQ(pipe2(a, O_CLOEXEC), 0);
  CHECK_EQ(send_raw(path, "CUT=1", 5, &a[1], 1, NULL), 0);
  close(a[1]);
  struct rlimit rl, low;
  CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  int lowest = dup(0);
  close(lowest);
  low = rl;
  low.rlim_cur = (rlim_t)lowest;
  CHECK_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  CHECK_EQ(nt.count, 3);
  CHECK(pipe_ended(a[0]));
  close(a[0]);

  /* A callback that closes the handle gets no further datagram. */
  nt.close_at = 4;
  CHECK_EQ(send_raw(path, "ONE=1", 5, NULL, 0, NULL), 0);
  CHECK_EQ(send_raw(path, "TWO=1", 5, NULL, 0, NULL), 0);
  nt.done = 0;
  nt.done_at = 4;
  CHECK(run_until(&loop, &nt.done, 10000));
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(nt.count, 4);
  CHECK_STR(nt.text, "ONE=1");
  CHECK_EQ(uv_loop_close(&loop), 0);
  CHECK_EQ(access(path, F_OK), -1);
  CHECK_EQ(rmdir(dir), 0);
}

static void test_notify_abstract(void) {
  char name[64];
  snprintf(name, sizeof name, "@baton-test-notify-%d", (int)getpid());
  uv_loop_t loop;
  uv_loop_init(&loop);
  bt_notify_t n;
  static notes_t nt;
  notes_init(&nt, 2);
  n.data = &nt;
  CHECK_EQ(bt_notify_open(&loop, &n, name, on_note), 0);
  CHECK_STR(n.path, name);
  /* Named in full, and through NOTIFY_SOCKET. */
  CHECK_EQ(bt_sd_notify(name, "ONE=1", NULL, 0), 1);
  setenv("NOTIFY_SOCKET", name, 1);
  CHECK_EQ(bt_sd_notify(NULL, "TWO=1", NULL, 0), 1);
  unsetenv("NOTIFY_SOCKET");
  CHECK(run_until(&loop, &nt.done, 10000));
  CHECK_EQ(nt.count, 2);
  CHECK_STR(nt.text, "TWO=1");
  CHECK_EQ(nt.pid, getpid());
  /* Taken while open; free again after the close. */
  bt_notify_t other;
  CHECK_EQ(bt_notify_open(&loop, &other, name, on_note), -EADDRINUSE);
  bt_notify_close(&n, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(bt_sd_notify(name, "GONE=1", NULL, 0), -ECONNREFUSED);
  CHECK_EQ(bt_notify_open(&loop, &other, name, on_note), 0);
  bt_notify_close(&other, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
}

static void test_notify_errors(void) {
  char dir[256], path[300];
  CHECK_EQ(make_temp_dir(dir, sizeof dir), 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  bt_notify_t n;
  n.data = NULL;
  snprintf(path, sizeof path, "%s/missing/notify", dir);
  CHECK_EQ(bt_notify_open(&loop, &n, path, on_note), -ENOENT);
  CHECK_EQ(bt_notify_open(&loop, &n, "", on_note), -EINVAL);
  CHECK_EQ(bt_notify_open(&loop, &n, "@", on_note), -EINVAL);
  char longp[200];
  memset(longp, 'a', sizeof longp - 1);
  longp[0] = '/';
  longp[sizeof longp - 1] = '\0';
  CHECK_EQ(bt_notify_open(&loop, &n, longp, on_note), -ENAMETOOLONG);
  CHECK_EQ(bt_sd_notify(longp, "X=1", NULL, 0), -ENAMETOOLONG);
  /* An existing file is left alone. */
  snprintf(path, sizeof path, "%s/file", dir);
  int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  CHECK(fd >= 0);
  close(fd);
  CHECK_EQ(bt_notify_open(&loop, &n, path, on_note), -EADDRINUSE);
  CHECK_EQ(access(path, F_OK), 0);
  CHECK_EQ(bt_sd_notify(path, "X=1", NULL, 0), -ECONNREFUSED);
  CHECK_EQ(unlink(path), 0);
  CHECK_EQ(bt_sd_notify(path, "X=1", NULL, 0), -ENOENT);
  CHECK_EQ(bt_sd_notify(path, "X=1", NULL, -1), -EINVAL);
  CHECK_EQ(uv_loop_close(&loop), 0);
  CHECK_EQ(rmdir(dir), 0);
}

static void test_sd_notify_unset(void) {
  /* With NOTIFY_SOCKET unset or empty there is nothing to notify: 0, and no
   * datagram anywhere. The listener below (where NOTIFY_SOCKET pointed
   * before) gets only the marker sent after. */
  char name[64];
  snprintf(name, sizeof name, "@baton-test-unset-%d", (int)getpid());
  uv_loop_t loop;
  uv_loop_init(&loop);
  bt_notify_t n;
  static notes_t nt;
  notes_init(&nt, 1);
  n.data = &nt;
  CHECK_EQ(bt_notify_open(&loop, &n, name, on_note), 0);
  unsetenv("NOTIFY_SOCKET");
  CHECK_EQ(bt_sd_notify(NULL, "READY=1", NULL, 0), 0);
  setenv("NOTIFY_SOCKET", "", 1);
  CHECK_EQ(bt_sd_notify(NULL, "READY=1", NULL, 0), 0);
  unsetenv("NOTIFY_SOCKET");
  CHECK_EQ(bt_sd_notify(name, "MARKER=1", NULL, 0), 1);
  CHECK(run_until(&loop, &nt.done, 10000));
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK_EQ(nt.count, 1);
  CHECK_STR(nt.text, "MARKER=1");
  bt_notify_close(&n, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
}

static void test_proc_stat(void) {
  bt_proc_stat_t st;
  CHECK_EQ(bt_proc_stat(getpid(), &st), 0);
  CHECK_EQ(st.pid, getpid());
  CHECK_EQ(st.ppid, getppid());
  CHECK_EQ(st.pgid, getpgrp());
  CHECK_EQ(st.sid, getsid(0));
  CHECK_EQ(st.state, 'R');
  CHECK_STR(st.comm, "test_core");
  CHECK(st.start > 0);
  bt_proc_stat_t again;
  CHECK_EQ(bt_proc_stat(getpid(), &again), 0);
  CHECK_EQ(again.start, st.start);

  CHECK_EQ(bt_proc_stat(0, &st), -EINVAL);
  CHECK_EQ(bt_proc_stat(-1, &st), -EINVAL);
  /* Past pid_max no pid ever exists. */
  char buf[32] = "";
  FILE *f = fopen("/proc/sys/kernel/pid_max", "re");
  CHECK(f != NULL);
  if (f) {
    CHECK(fgets(buf, sizeof buf, f) != NULL);
    fclose(f);
  }
  CHECK_EQ(bt_proc_stat((pid_t)atoi(buf) + 1, &st), -ESRCH);
}

static void test_proc_stat_comm(void) {
  /* A child that names itself "a) b (c" (spaces, both parentheses), in a
   * process group of its own, then waits for its stdin to end. */
  uv_loop_t loop;
  uv_loop_init(&loop);
  bt_process_t p;
  int exits = 0;
  p.data = &exits;
  char *argv[] = {(char *)self, "--child", "comm", NULL};
  bt_stdio_t io[] = {{BT_STDIO_PIPE, -1, 0}, {BT_STDIO_PIPE, -1, 0}, {BT_STDIO_INHERIT, -1, 0}};
  bt_spawn_options_t o = {.argv = argv, .stdio = io, .nstdio = 3, .flags = BT_SPAWN_SETPGID};
  CHECK_EQ(bt_spawn(&loop, &p, &o, on_exit_count), 0);
  char buf[16];
  int fl = fcntl(io[1].fd, F_GETFL);
  fcntl(io[1].fd, F_SETFL, fl & ~O_NONBLOCK);
  ssize_t r;
  while ((r = read(io[1].fd, buf, sizeof buf)) < 0 && errno == EINTR)
    continue;
  CHECK_EQ(r, 6); /* "ready\n": named by now */
  bt_proc_stat_t st;
  CHECK_EQ(bt_proc_stat(p.pid, &st), 0);
  CHECK_STR(st.comm, "a) b (c");
  CHECK_EQ(st.pid, p.pid);
  CHECK_EQ(st.ppid, getpid());
  CHECK_EQ(st.pgid, p.pid);
  CHECK_EQ(st.sid, getsid(0));
  CHECK(st.state == 'S' || st.state == 'R');
  /* Exited, not reaped yet: a zombie is still there. */
  close(io[0].fd);
  CHECK_EQ(wait_exited(&p), 0);
  CHECK_EQ(bt_proc_stat(p.pid, &st), 0);
  CHECK_EQ(st.state, 'Z');
  CHECK_STR(st.comm, "a) b (c");
  pid_t pid = p.pid;
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(exits, 1);
  CHECK_EQ(p.exit_code, 0);
  CHECK_EQ(bt_proc_stat(pid, &st), -ESRCH);
  close(io[1].fd);
  bt_process_close(&p, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
}

/* ---- listeners ----------------------------------------------------------------------- */

/* Connect a blocking client to `info`'s address; returns the fd or -errno. */
static int connect_to(const bt_socket_info_t *info, int type) {
  struct sockaddr_storage ss;
  socklen_t len;
  memset(&ss, 0, sizeof ss);
  if (info->family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)info->port);
    inet_pton(AF_INET, info->address, &in->sin_addr);
    len = sizeof *in;
  } else if (info->family == AF_INET6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)info->port);
    inet_pton(AF_INET6, info->address, &in6->sin6_addr);
    len = sizeof *in6;
  } else {
    struct sockaddr_un *un = (struct sockaddr_un *)&ss;
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, info->path, strnlen(info->path, sizeof un->sun_path - 1));
    len = sizeof *un;
  }
  int fd = socket(info->family, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  return fd;
}

/* Listen at `address`, connect, accept, pass a byte each way; checks info. */
static void listen_roundtrip(const char *address, int family) {
  bt_listen_options_t o = {.address = address};
  bt_listen_info_t info;
  int fd = bt_listen(&o, &info);
  CHECK(fd >= 0);
  if (fd < 0) {
    fprintf(stderr, "bt_listen(%s): %s\n", address, bt_strerror(fd));
    return;
  }
  CHECK_EQ(info.family, family);
  CHECK_EQ(info.type, SOCK_STREAM);
  CHECK_EQ(info.listening, 1);
  CHECK(info.port > 0);
  CHECK_EQ(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  CHECK_EQ(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
  int c = connect_to(&info, SOCK_STREAM);
  CHECK(c >= 0);
  int s = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
  CHECK(s >= 0);
  char ch = 0;
  CHECK_EQ(write(c, "x", 1), 1);
  CHECK_EQ(read(s, &ch, 1), 1);
  CHECK_EQ(ch, 'x');
  bt_socket_info_t si;
  CHECK_EQ(bt_socket_info(fd, &si), 0);
  CHECK_EQ(si.family, family);
  CHECK_EQ(si.listening, 1);
  CHECK_EQ(si.port, info.port);
  CHECK_STR(si.address, info.address);
  CHECK_EQ(bt_socket_info(s, &si), 0);
  CHECK_EQ(si.listening, 0); /* an accepted connection */
  CHECK_EQ(si.port, info.port);
  close(s);
  close(c);
  close(fd);
}

static int has_ipv6(void) {
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  int ok = bind(fd, (struct sockaddr *)&in6, sizeof in6) == 0;
  close(fd);
  return ok;
}

static void test_listen_tcp4(void) {
  listen_roundtrip("tcp://127.0.0.1:0", AF_INET);
  bt_listen_info_t info;
  bt_listen_options_t o = {.address = "tcp://0.0.0.0:0", .backlog = 5, .defer_accept = 1};
  int fd = bt_listen(&o, &info);
  CHECK(fd >= 0);
  CHECK_STR(info.address, "0.0.0.0");
  int v = 0;
  socklen_t vl = sizeof v;
  CHECK_EQ(getsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &v, &vl), 0);
  CHECK(v > 0); /* the kernel rounds seconds to retransmits */
  vl = sizeof v;
  CHECK_EQ(getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &vl), 0);
  CHECK_EQ(v, 1);
  if (fd >= 0) close(fd);
}

static void test_listen_tcp6(void) {
  if (!has_ipv6()) SKIP("no IPv6 loopback");
  listen_roundtrip("tcp://[::1]:0", AF_INET6);
  bt_listen_info_t info;
  bt_listen_options_t o = {.address = "tcp://[::]:0", .flags = BT_LISTEN_V6ONLY};
  int fd = bt_listen(&o, &info);
  CHECK(fd >= 0);
  CHECK_STR(info.address, "::");
  int v = 0;
  socklen_t vl = sizeof v;
  CHECK_EQ(getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &vl), 0);
  CHECK_EQ(v, 1);
  /* v6only: an IPv4 client is refused on that port. */
  bt_socket_info_t four = {.family = AF_INET, .port = info.port, .address = "127.0.0.1"};
  int c = connect_to(&four, SOCK_STREAM);
  CHECK_EQ(c, -ECONNREFUSED);
  if (c >= 0) close(c);
  if (fd >= 0) close(fd);
}

static void test_listen_udp(void) {
  bt_listen_options_t o = {.address = "udp://127.0.0.1:0"};
  bt_listen_info_t info;
  int fd = bt_listen(&o, &info);
  CHECK(fd >= 0);
  if (fd < 0) return;
  CHECK_EQ(info.type, SOCK_DGRAM);
  CHECK_EQ(info.listening, 0);
  CHECK(info.port > 0);
  int c = connect_to(&info, SOCK_DGRAM);
  CHECK(c >= 0);
  CHECK_EQ(send(c, "ping", 4, 0), 4);
  char buf[8];
  CHECK_EQ(recv(fd, buf, sizeof buf, 0), 4);
  bt_socket_info_t si;
  CHECK_EQ(bt_socket_info(fd, &si), 0);
  CHECK_EQ(si.type, SOCK_DGRAM);
  CHECK_EQ(si.family, AF_INET);
  CHECK_EQ(si.port, info.port);
  close(c);
  close(fd);
  /* A backlog or defer_accept makes no sense for UDP. */
  o.backlog = 4;
  CHECK_EQ(bt_listen(&o, &info), -EINVAL);
  o.backlog = 0;
  o.defer_accept = 1;
  CHECK_EQ(bt_listen(&o, &info), -EINVAL);
}

static void test_listen_unix(void) {
  char dir[256], path[300], addr[320];
  CHECK_EQ(make_temp_dir(dir, sizeof dir), 0);
  snprintf(path, sizeof path, "%s/app.sock", dir);
  snprintf(addr, sizeof addr, "unix:%s", path);
  bt_listen_options_t o = {.address = addr,
                           .flags = BT_LISTEN_MODE | BT_LISTEN_UID | BT_LISTEN_GID,
                           .mode = 0620,
                           .uid = getuid(),
                           .gid = getgid()};
  bt_listen_info_t info;
  int fd = bt_listen(&o, &info);
  CHECK(fd >= 0);
  CHECK_EQ(info.family, AF_UNIX);
  CHECK_EQ(info.listening, 1);
  CHECK_STR(info.path, path);
  struct stat st;
  CHECK_EQ(lstat(path, &st), 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK_EQ(st.st_mode & 07777, 0620);
  CHECK_EQ(st.st_uid, getuid());
  int c = connect_to(&info, SOCK_STREAM);
  CHECK(c >= 0);
  int s = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
  CHECK(s >= 0);
  bt_socket_info_t si;
  CHECK_EQ(bt_socket_info(fd, &si), 0);
  CHECK_EQ(si.family, AF_UNIX);
  CHECK_EQ(si.type, SOCK_STREAM);
  CHECK_STR(si.path, path);
  CHECK_EQ(bt_socket_info(c, &si), 0);
  CHECK_STR(si.path, ""); /* the client is unnamed */
  close(s);
  close(c);
  close(fd);
  /* Closing does not remove the file; bt_unlink_socket does. */
  CHECK_EQ(lstat(path, &st), 0);
  CHECK_EQ(bt_unlink_socket(path), 0);
  CHECK_EQ(bt_unlink_socket(path), -ENOENT);
  /* unix:/// and an abstract name. */
  snprintf(addr, sizeof addr, "unix://%s", path);
  bt_listen_options_t o2 = {.address = addr};
  fd = bt_listen(&o2, &info);
  CHECK(fd >= 0);
  CHECK_STR(info.path, path);
  close(fd);
  CHECK_EQ(bt_unlink_socket(path), 0);
  snprintf(addr, sizeof addr, "unix:@baton-test-%d", (int)getpid());
  fd = bt_listen(&o2, &info);
  CHECK(fd >= 0);
  CHECK_STR(info.path, addr + 5);
  close(fd);
  o2.flags = BT_LISTEN_MODE; /* no file to chmod */
  CHECK_EQ(bt_listen(&o2, &info), -EINVAL);
  CHECK_EQ(rmdir(dir), 0);
}

static void test_listen_addrinuse(void) {
  bt_listen_options_t o = {.address = "tcp://127.0.0.1:0"};
  bt_listen_info_t info;
  int a = bt_listen(&o, &info);
  CHECK(a >= 0);
  char addr[64];
  snprintf(addr, sizeof addr, "tcp://127.0.0.1:%d", info.port);
  o.address = addr;
  CHECK_EQ(bt_listen(&o, NULL), -EADDRINUSE);
  close(a);

  /* With SO_REUSEPORT on both, two sockets share the port. */
  bt_listen_options_t r = {.address = "tcp://127.0.0.1:0", .flags = BT_LISTEN_REUSEPORT};
  a = bt_listen(&r, &info);
  CHECK(a >= 0);
  snprintf(addr, sizeof addr, "tcp://127.0.0.1:%d", info.port);
  r.address = addr;
  int b = bt_listen(&r, &info);
  CHECK(b >= 0);
  o.address = addr; /* one without it is still refused */
  CHECK_EQ(bt_listen(&o, NULL), -EADDRINUSE);
  if (b >= 0) close(b);
  close(a);

  /* UDP too. */
  bt_listen_options_t u = {.address = "udp://127.0.0.1:0"};
  a = bt_listen(&u, &info);
  snprintf(addr, sizeof addr, "udp://127.0.0.1:%d", info.port);
  u.address = addr;
  CHECK_EQ(bt_listen(&u, NULL), -EADDRINUSE);
  close(a);
}

static void test_listen_unix_stale(void) {
  char dir[256], path[300], addr[320];
  CHECK_EQ(make_temp_dir(dir, sizeof dir), 0);
  snprintf(path, sizeof path, "%s/s.sock", dir);
  snprintf(addr, sizeof addr, "unix:%s", path);
  bt_listen_options_t o = {.address = addr};

  /* A stale socket file: bound, then its socket closed. Replaced. */
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  memcpy(un.sun_path, path, strnlen(path, sizeof un.sun_path - 1));
  CHECK_EQ(bind(s, (struct sockaddr *)&un, sizeof un), 0);
  close(s);
  int fd = bt_listen(&o, NULL);
  CHECK(fd >= 0);

  /* A live one: refused, and left working. */
  CHECK_EQ(bt_listen(&o, NULL), -EADDRINUSE);
  bt_socket_info_t info;
  CHECK_EQ(bt_socket_info(fd, &info), 0);
  int c = connect_to(&info, SOCK_STREAM);
  CHECK(c >= 0);
  if (c >= 0) close(c);
  close(fd);
  CHECK_EQ(bt_unlink_socket(path), 0);

  /* A file that is not a socket: refused, left alone. */
  int f = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  close(f);
  CHECK_EQ(bt_listen(&o, NULL), -EEXIST);
  CHECK_EQ(bt_unlink_socket(path), -ENOTSOCK);
  struct stat st;
  CHECK_EQ(lstat(path, &st), 0);
  CHECK(S_ISREG(st.st_mode));
  CHECK_EQ(unlink(path), 0);

  /* A missing directory. */
  snprintf(addr, sizeof addr, "unix:%s/no-such-dir/s.sock", dir);
  CHECK_EQ(bt_listen(&o, NULL), -ENOENT);
  /* A failed chown leaves no file behind (unless running as root). */
  if (getuid() != 0) {
    snprintf(addr, sizeof addr, "unix:%s", path);
    bt_listen_options_t own = {.address = addr, .flags = BT_LISTEN_UID, .uid = 0};
    CHECK_EQ(bt_listen(&own, NULL), -EPERM);
    CHECK_EQ(lstat(path, &st), -1);
  }
  CHECK_EQ(rmdir(dir), 0);
}

static void test_listen_parse(void) {
  bt_socket_info_t a;
  CHECK_EQ(bt_listen_parse("tcp://127.0.0.1:8080", &a), 0);
  CHECK_EQ(a.family, AF_INET);
  CHECK_EQ(a.type, SOCK_STREAM);
  CHECK_EQ(a.port, 8080);
  CHECK_STR(a.address, "127.0.0.1");
  CHECK_EQ(bt_listen_parse("udp://[::0001]:53", &a), 0);
  CHECK_EQ(a.family, AF_INET6);
  CHECK_EQ(a.type, SOCK_DGRAM);
  CHECK_STR(a.address, "::1");
  CHECK_EQ(bt_listen_parse("unix:/run/x.sock", &a), 0);
  CHECK_STR(a.path, "/run/x.sock");
  CHECK_EQ(bt_listen_parse("tcp://127.0.0.1:65536", &a), -ERANGE);
  CHECK_EQ(bt_listen_parse("tcp://127.0.0.1:99999999999999999999", &a), -ERANGE);
  CHECK_EQ(bt_listen_parse("tcp://127.0.0.1:", &a), -EINVAL);
  CHECK_EQ(bt_listen_parse("tcp://127.0.0.1:8o", &a), -EINVAL);
  CHECK_EQ(bt_listen_parse("tcp://127.0.0.1", &a), -EINVAL);
  CHECK_EQ(bt_listen_parse("tcp://localhost:80", &a), -EINVAL);
  CHECK_EQ(bt_listen_parse("tcp://::1:80", &a), -EINVAL);
  CHECK_EQ(bt_listen_parse("tcp://[::1]80", &a), -EINVAL);
  CHECK_EQ(bt_listen_parse("tcp://[127.0.0.1]:80", &a), -EINVAL);
  CHECK_EQ(bt_listen_parse("tcp:127.0.0.1:80", &a), -EINVAL);
  CHECK_EQ(bt_listen_parse("sctp://127.0.0.1:80", &a), -EAFNOSUPPORT);
  CHECK_EQ(bt_listen_parse("127.0.0.1:80", &a), -EAFNOSUPPORT);
  CHECK_EQ(bt_listen_parse("unix:", &a), -EINVAL);
  CHECK_EQ(bt_listen_parse("unix:@", &a), -EINVAL);
  char longp[200];
  memset(longp, 'a', sizeof longp);
  memcpy(longp, "unix:/", 6);
  longp[sizeof longp - 1] = '\0';
  CHECK_EQ(bt_listen_parse(longp, &a), -ENAMETOOLONG);
  /* Options that do not fit the kind. */
  bt_listen_options_t o = {.address = "tcp://127.0.0.1:0", .flags = BT_LISTEN_MODE};
  CHECK_EQ(bt_listen(&o, NULL), -EINVAL);
  o.flags = BT_LISTEN_V6ONLY;
  CHECK_EQ(bt_listen(&o, NULL), -EINVAL);
  o.flags = 0;
  o.backlog = -1;
  CHECK_EQ(bt_listen(&o, NULL), -EINVAL);
  o.backlog = 0;
  o.address = "tcp://bad";
  CHECK_EQ(bt_listen(&o, NULL), -EINVAL);
  /* bt_socket_info on what is not a socket. */
  int p[2];
  CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
  CHECK_EQ(bt_socket_info(p[0], &a), -ENOTSOCK);
  close(p[0]);
  close(p[1]);
  CHECK_EQ(bt_socket_info(p[0], &a), -EBADF);
}

/* BT_SPAWN_LISTEN_PID: the exec'd child sees its own pid. */
static void test_spawn_listen_pid(void) {
  char buf[256], want[64];
  char *argv[] = {"sh", "-c", "echo $LISTEN_PID $$ $LISTEN_FDS", NULL};
  char *env[] = {"LISTEN_PID=garbage", "PATH=/usr/bin:/bin", "LISTEN_FDS=1", "LISTEN_PID=x", NULL};
  bt_spawn_options_t base = {.env = env, .flags = BT_SPAWN_LISTEN_PID};
  bt_process_t p;
  bt_stdio_t io[] = {{BT_STDIO_NULL, -1, 0}, {BT_STDIO_PIPE, -1, 0}, {BT_STDIO_INHERIT, -1, 0}};
  base.argv = argv;
  base.stdio = io;
  base.nstdio = 3;
  for (int round = 0; round < 3; round++) {
    CHECK_EQ(run_proc(&p, &base), 0);
    drain(io[1].fd, buf, sizeof buf);
    close(io[1].fd);
    snprintf(want, sizeof want, "%d %d 1\n", (int)p.pid, (int)p.pid);
    CHECK_STR(buf, want);
  }
  /* The caller's env is untouched. */
  CHECK_STR(env[0], "LISTEN_PID=garbage");
  /* Without env: environ, plus LISTEN_PID. */
  base.env = NULL;
  CHECK_EQ(run_proc(&p, &base), 0);
  drain(io[1].fd, buf, sizeof buf);
  close(io[1].fd);
  snprintf(want, sizeof want, "%d %d\n", (int)p.pid, (int)p.pid);
  CHECK_STR(buf, want);
  /* Without the flag, no LISTEN_PID is added. */
  base.flags = 0;
  CHECK_EQ(run_proc(&p, &base), 0);
  drain(io[1].fd, buf, sizeof buf);
  close(io[1].fd);
  snprintf(want, sizeof want, "%d\n", (int)p.pid);
  CHECK_STR(buf, want);
  /* A failed spawn frees what it built. */
  char *missing[] = {"/nonexistent/prog", NULL};
  base.argv = missing;
  base.flags = BT_SPAWN_LISTEN_PID;
  base.env = env;
  CHECK_EQ(run_proc(&p, &base), -ENOENT);
}

/*
 * fds at exact numbers: the parent's fds 3 and 4 given crossed (4 at 3, 3
 * at 4), and one given at its own number (5 at 5). The child gets them
 * without FD_CLOEXEC; the parent's own flags stay as they were.
 */
static void test_spawn_fds_exact(void) {
  int a[2], b[2], c[2];
  CHECK_EQ(pipe2(a, O_CLOEXEC), 0);
  CHECK_EQ(pipe2(b, O_CLOEXEC), 0);
  CHECK_EQ(pipe2(c, O_CLOEXEC), 0);
  /* Free fds 3, 4, 5 for the test, putting what held them back after. */
  int saved[3], saved_fl[3];
  for (int i = 0; i < 3; i++) {
    saved_fl[i] = fcntl(3 + i, F_GETFD);
    saved[i] = saved_fl[i] >= 0 ? fcntl(3 + i, F_DUPFD_CLOEXEC, 100) : -1;
  }
  CHECK_EQ(dup3(a[1], 3, O_CLOEXEC), 3);
  CHECK_EQ(dup3(b[1], 4, O_CLOEXEC), 4);
  CHECK_EQ(dup3(c[1], 5, O_CLOEXEC), 5);
  CHECK_EQ(fcntl(5, F_SETFL, fcntl(5, F_GETFL) | O_NONBLOCK), 0);
  close(a[1]);
  close(b[1]);
  close(c[1]);

  char *argv[] = {"sh", "-c", "echo three >&3 && echo four >&4 && echo five >&5", NULL};
  bt_stdio_t io[] = {{BT_STDIO_NULL, -1, 0}, {BT_STDIO_INHERIT, -1, 0}, {BT_STDIO_INHERIT, -1, 0},
                     {BT_STDIO_FD, 4, 0},    {BT_STDIO_FD, 3, 0},       {BT_STDIO_FD, 5, 0}};
  bt_spawn_options_t o = {.argv = argv, .stdio = io, .nstdio = 6};
  bt_process_t p;
  CHECK_EQ(run_proc(&p, &o), 0);
  CHECK_EQ(p.exit_code, 0);
  for (int fd = 3; fd <= 5; fd++)
    CHECK_EQ(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  CHECK_EQ(fcntl(5, F_GETFL) & O_NONBLOCK, O_NONBLOCK); /* a flag of the file: never cleared */

  /* Put back whatever held fds 3..5 (or close them). */
  for (int i = 0; i < 3; i++) {
    if (saved[i] >= 0) {
      dup3(saved[i], 3 + i, (saved_fl[i] & FD_CLOEXEC) ? O_CLOEXEC : 0);
      close(saved[i]);
    } else {
      close(3 + i);
    }
  }
  char buf[64];
  drain(a[0], buf, sizeof buf); /* a was the parent's 3, given at 4 */
  CHECK_STR(buf, "four\n");
  drain(b[0], buf, sizeof buf);
  CHECK_STR(buf, "three\n");
  drain(c[0], buf, sizeof buf);
  CHECK_STR(buf, "five\n");
  close(a[0]);
  close(b[0]);
  close(c[0]);
}

/* ---- bad input at the C boundary -------------------------------------------------------- */

static void on_bad_exit(bt_process_t *proc) {
  CHECK(!"an exit callback after an error return");
}
static void on_bad_note(bt_notify_t *n, const bt_notify_msg_t *msg) {
  CHECK(!"a notify callback after an error return");
}
static void on_bad_reap(bt_reaper_t *r, pid_t pid, int wstatus) {}
static void on_bad_notify_closed(bt_notify_t *n) {
  CHECK(!"no close callback after a failed open");
}
static void on_bad_close(bt_process_t *p) {
  CHECK(!"no close callback after a failed spawn or open");
}
static int bad_reaper_closed;
static void on_bad_reaper_closed(bt_reaper_t *r) {
  bad_reaper_closed++;
}

/* NULL pointers, invalid fds and a closed loop: a negative errno, no crash, no
 * callback, nothing left to close (the test ends with the leak check). */
static void test_bad_input(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  bt_process_t p;
  char *argv[] = {"true", NULL};
  bt_spawn_options_t o = {.argv = argv};
  CHECK_EQ(bt_spawn(&loop, &p, NULL, on_bad_exit), -EINVAL);
  CHECK_EQ(bt_spawn(NULL, &p, &o, on_bad_exit), -EINVAL);
  CHECK_EQ(bt_spawn(&loop, NULL, &o, on_bad_exit), -EINVAL);
  bt_spawn_options_t noargv = {.argv = NULL};
  CHECK_EQ(bt_spawn(&loop, &p, &noargv, on_bad_exit), -EINVAL);
  bt_stdio_t bad[1] = {{BT_STDIO_FD, -7, 0}};
  bt_spawn_options_t badfd = {.argv = argv, .stdio = bad, .nstdio = 1};
  CHECK(bt_spawn(&loop, &p, &badfd, on_bad_exit) < 0);
  bt_stdio_t closed[1] = {{BT_STDIO_FD, 1000, 0}}; /* not open */
  bt_spawn_options_t closedfd = {.argv = argv, .stdio = closed, .nstdio = 1};
  CHECK_EQ(bt_spawn(&loop, &p, &closedfd, on_bad_exit), -EBADF);
  static bt_stdio_t many[BT_MAX_STDIO + 1]; /* all BT_STDIO_INHERIT */
  bt_spawn_options_t toomany = {.argv = argv, .stdio = many, .nstdio = BT_MAX_STDIO + 1};
  CHECK_EQ(bt_spawn(&loop, &p, &toomany, on_bad_exit), -EINVAL);
  bt_spawn_options_t nostdio = {.argv = argv, .stdio = NULL, .nstdio = 2};
  CHECK_EQ(bt_spawn(&loop, &p, &nostdio, on_bad_exit), -EINVAL);
  CHECK_EQ(bt_exec(NULL, &p), -EINVAL);
  CHECK_EQ(bt_exec(&noargv, &p), -EINVAL);

  CHECK_EQ(bt_process_open(&loop, &p, -1, on_bad_exit), -EINVAL);
  CHECK_EQ(bt_process_open(NULL, &p, getpid(), on_bad_exit), -EINVAL);
  CHECK_EQ(bt_process_open(&loop, NULL, getpid(), on_bad_exit), -EINVAL);
  CHECK_EQ(bt_process_kill(NULL, SIGTERM), -EINVAL);
  bt_process_close(NULL, NULL); /* does nothing */
  bt_process_ref(NULL, 0);

  bt_reaper_t r;
  CHECK_EQ(bt_reaper_start(NULL, &r, 0, on_bad_reap), -EINVAL);
  CHECK_EQ(bt_reaper_start(&loop, NULL, 0, on_bad_reap), -EINVAL);

  bt_notify_t n;
  CHECK_EQ(bt_notify_open(&loop, &n, NULL, on_bad_note), -EINVAL);
  CHECK_EQ(bt_notify_open(NULL, &n, "@baton-bad", on_bad_note), -EINVAL);
  CHECK_EQ(bt_notify_open(&loop, NULL, "@baton-bad", on_bad_note), -EINVAL);
  CHECK_EQ(bt_sd_notify("@baton-bad", NULL, NULL, 0), -EINVAL);
  CHECK_EQ(bt_sd_notify("@baton-bad", "READY=1", NULL, 2), -EINVAL);
  int badfds[1] = {-3};
  CHECK(bt_sd_notify("@baton-bad-nobody", "READY=1", badfds, 1) < 0);

  char out[64];
  CHECK_EQ(bt_lookpath(NULL, NULL, NULL, out, sizeof out), -EINVAL);
  CHECK_EQ(bt_lookpath("sh", NULL, NULL, NULL, 0), -EINVAL);
  pid_t pids[4];
  CHECK_EQ(bt_proc_descendants(getpid(), NULL, 4), -EINVAL);
  CHECK_EQ(bt_proc_descendants(-1, pids, 4), -EINVAL);
  bt_proc_stat_t st;
  CHECK_EQ(bt_proc_stat(-1, &st), -EINVAL);
  CHECK_EQ(bt_proc_stat(getpid(), NULL), -EINVAL);

  bt_socket_info_t info;
  CHECK_EQ(bt_listen_parse(NULL, &info), -EINVAL);
  CHECK_EQ(bt_listen_parse("tcp://127.0.0.1:0", NULL), -EINVAL);
  CHECK_EQ(bt_listen(NULL, NULL), -EINVAL);
  bt_listen_options_t lo = {.address = NULL};
  CHECK_EQ(bt_listen(&lo, NULL), -EINVAL);
  CHECK_EQ(bt_socket_info(-1, &info), -EBADF);
  CHECK_EQ(bt_socket_info(1000, &info), -EBADF);
  CHECK_EQ(bt_socket_info(0, NULL), -EINVAL);
  CHECK_EQ(bt_unlink_socket(NULL), -EINVAL);

  CHECK_EQ(bt_signal_number(NULL), -EINVAL);
  CHECK(bt_signal_name(-1) == NULL);
  CHECK(bt_err_name(1) != NULL && bt_strerror(1) != NULL && bt_stage_name(-1) != NULL);

  CHECK_EQ(bt_cgroup_self(NULL, 0), -EINVAL);
  CHECK_EQ(bt_cgroup_open(NULL), -EINVAL);
  CHECK_EQ(bt_cgroup_create(NULL, "x", out, sizeof out), -EINVAL);
  CHECK_EQ(bt_cgroup_set(NULL, "pids.max", "1"), -EINVAL);
  CHECK_EQ(bt_cgroup_get(NULL, "pids.max", out, sizeof out), -EINVAL);
  CHECK_EQ(bt_cgroup_enable(NULL, "pids", NULL, 0), -EINVAL);
  CHECK_EQ(bt_cgroup_kill(NULL), -EINVAL);
  CHECK_EQ(bt_cgroup_kill_sweep(NULL), -EINVAL);
  CHECK_EQ(bt_cgroup_populated(NULL), -EINVAL);
  CHECK_EQ(bt_cgroup_oom_kills(NULL), -EINVAL);
  CHECK_EQ(bt_cgroup_remove(NULL), -EINVAL);

  /* After a failed spawn or open there is nothing to close: closing (or
   * unref'ing) the handle anyway does nothing, and no callback fires. */
  memset(&p, 0, sizeof p);
  CHECK_EQ(bt_spawn(&loop, &p, &noargv, on_bad_exit), -EINVAL);
  bt_process_ref(&p, 0);
  bt_process_close(&p, on_bad_close);
  memset(&p, 0, sizeof p);
  CHECK_EQ(bt_process_open(&loop, &p, -1, on_bad_exit), -EINVAL);
  bt_process_close(&p, on_bad_close);
  uv_run(&loop, UV_RUN_NOWAIT);

  /* A notify socket without a callback is refused (it would call NULL at its
   * first datagram). */
  int nrc = bt_notify_open(&loop, &n, "@baton-bad-nocb", NULL);
  CHECK_EQ(nrc, -EINVAL);
  if (nrc == 0) bt_notify_close(&n, NULL);
  /* After a failed open, as for a process: closing does nothing. */
  memset(&n, 0, sizeof n);
  CHECK_EQ(bt_notify_open(&loop, &n, "", on_bad_note), -EINVAL);
  bt_notify_ref(&n, 0);
  bt_notify_close(&n, on_bad_notify_closed);
  uv_run(&loop, UV_RUN_NOWAIT);
  /* A second bt_reaper_close does nothing, as for the other handles (a second
   * uv_close of the same handle is undefined). */
  CHECK_EQ(bt_reaper_start(&loop, &r, 0, on_bad_reap), 0);
  bt_reaper_close(&r, on_bad_reaper_closed);
  bt_reaper_close(&r, on_bad_reaper_closed);
  CHECK_EQ(bad_reaper_closed, 0); /* (from the loop, never inside the call) */
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(bad_reaper_closed, 1);

  /* A closed loop is refused before anything starts: no child, no fd. */
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
  CHECK_EQ(bt_spawn(&loop, &p, &o, on_bad_exit), -EINVAL);
  CHECK_EQ(bt_process_open(&loop, &p, getpid(), on_bad_exit), -EINVAL);
  CHECK_EQ(bt_reaper_start(&loop, &r, 0, on_bad_reap), -EINVAL);
  CHECK_EQ(bt_notify_open(&loop, &n, "@baton-bad", on_bad_note), -EINVAL);
  /* Refused for the loop, the handles are initialised all the same: closing
   * them does nothing (the memory held garbage before). */
  memset(&p, 0x5a, sizeof p);
  CHECK_EQ(bt_spawn(&loop, &p, &o, on_bad_exit), -EINVAL);
  bt_process_close(&p, on_bad_close);
  memset(&p, 0x5a, sizeof p);
  CHECK_EQ(bt_process_open(&loop, &p, getpid(), on_bad_exit), -EINVAL);
  bt_process_close(&p, on_bad_close);
  memset(&n, 0x5a, sizeof n);
  CHECK_EQ(bt_notify_open(&loop, &n, "@baton-bad", on_bad_note), -EINVAL);
  bt_notify_close(&n, on_bad_notify_closed);
}

/* ---- the test list ------------------------------------------------------------------- */

/* One line per test: core/test/CMakeLists.txt reads the names from these lines. */
#define TEST_ENTRY(name)                                                                           \
  { #name, test_##name }

static const struct {
  const char *name;
  void (*fn)(void);
} tests[] = {
    TEST_ENTRY(exit_codes),
    TEST_ENTRY(bad_input),
    TEST_ENTRY(descendants),
    TEST_ENTRY(signal_and_reuse),
    TEST_ENTRY(failures),
    TEST_ENTRY(pipe_and_fds),
    TEST_ENTRY(fd_swap),
    TEST_ENTRY(stdio_same),
    TEST_ENTRY(stdio_forward_same),
    TEST_ENTRY(limits_umask_nice),
    TEST_ENTRY(credentials),
    TEST_ENTRY(pdeathsig_and_reaper),
    TEST_ENTRY(reaper_spares_owned),
    TEST_ENTRY(close_running_reaped),
    TEST_ENTRY(close_exited_reaped),
    TEST_ENTRY(adopt),
    TEST_ENTRY(owned_churn),
    TEST_ENTRY(exec),
    TEST_ENTRY(reexec),
    TEST_ENTRY(signal_state),
    TEST_ENTRY(env_cwd_pgrp),
    TEST_ENTRY(lookpath),
    TEST_ENTRY(lookpath_cwd),
    TEST_ENTRY(relative_path_cwd),
    TEST_ENTRY(signal_names),
    TEST_ENTRY(many_spawns),
    TEST_ENTRY(cgroup_self),
    TEST_ENTRY(cgroup_kill),
    TEST_ENTRY(cgroup_kill_sweep),
    TEST_ENTRY(cgroup_spawn_fail),
    TEST_ENTRY(cgroup_files),
    TEST_ENTRY(notify_basic),
    TEST_ENTRY(notify_fds),
    TEST_ENTRY(notify_truncated),
    TEST_ENTRY(notify_abstract),
    TEST_ENTRY(notify_errors),
    TEST_ENTRY(sd_notify_unset),
    TEST_ENTRY(proc_stat),
    TEST_ENTRY(proc_stat_comm),
    TEST_ENTRY(listen_tcp4),
    TEST_ENTRY(listen_tcp6),
    TEST_ENTRY(listen_udp),
    TEST_ENTRY(listen_unix),
    TEST_ENTRY(listen_addrinuse),
    TEST_ENTRY(listen_unix_stale),
    TEST_ENTRY(listen_parse),
    TEST_ENTRY(spawn_listen_pid),
    TEST_ENTRY(spawn_fds_exact),
};

#define NTESTS (sizeof tests / sizeof tests[0])

/* ---- what a test leaves behind ------------------------------------------------------- */

#define MAX_FDS 1024

/* The fds open in this process, as a set (fds past MAX_FDS are not tracked). */
static void open_fds(unsigned char set[MAX_FDS]) {
  memset(set, 0, MAX_FDS);
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name);
    if (e->d_name[0] != '.' && fd != dirfd(d) && fd < MAX_FDS) set[fd] = 1;
  }
  closedir(d);
}

/* Report each fd opened or closed since `before`; returns how many. */
static int check_fds(const unsigned char before[MAX_FDS]) {
  unsigned char after[MAX_FDS];
  int n = 0;
  open_fds(after);
  for (int fd = 0; fd < MAX_FDS; fd++) {
    if (before[fd] == after[fd]) continue;
    char link[64], target[256] = "?";
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, target, sizeof target - 1);
    if (len > 0) target[len] = '\0';
    fprintf(stderr, "leak check: fd %d %s%s\n", fd, after[fd] ? "left open: " : "closed",
            after[fd] ? target : "");
    n++;
  }
  return n;
}

/* Report every child still there, running or zombie, then kill and reap it so
 * that it holds no pipe of ctest's open; returns how many there were. */
static int check_children(void) {
  pid_t pids[256];
  int n = 0;
  DIR *tasks = opendir("/proc/self/task");
  struct dirent *t;
  while (tasks && (t = readdir(tasks)) != NULL) {
    if (t->d_name[0] == '.') continue;
    char path[300];
    snprintf(path, sizeof path, "/proc/self/task/%s/children", t->d_name);
    FILE *f = fopen(path, "re");
    long pid;
    while (f && n < 256 && fscanf(f, "%ld", &pid) == 1)
      pids[n++] = (pid_t)pid;
    if (f) fclose(f);
  }
  if (tasks) closedir(tasks);
  for (int i = 0; i < n; i++) {
    char path[64], stat[300] = "", comm[64] = "?", state = '?';
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pids[i]);
    FILE *f = fopen(path, "re");
    if (f && fgets(stat, sizeof stat, f)) sscanf(stat, "%*d (%63[^)]) %c", comm, &state);
    if (f) fclose(f);
    fprintf(stderr, "leak check: child %d (%s) left %s\n", (int)pids[i], comm,
            state == 'Z' ? "as a zombie" : "running");
    kill(pids[i], SIGKILL);
    while (waitpid(pids[i], NULL, 0) < 0 && errno == EINTR)
      continue;
  }
  /* Then none may remain, listed or not. */
  siginfo_t si;
  si.si_pid = 0;
  if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG) == 0) {
    if (si.si_pid)
      fprintf(stderr, "leak check: child %d left (not listed in /proc)\n", (int)si.si_pid);
    else
      fprintf(stderr, "leak check: a child left running (not listed in /proc)\n");
    n++;
  } else if (errno != ECHILD) {
    fprintf(stderr, "leak check: waitid: %s\n", strerror(errno));
    n++;
  }
  return n;
}

/* Run one test in this process; returns its exit status. */
static int run_test(int i) {
  /* libuv opens process-wide fds at its first loop (the signal pipe): open
   * them before taking the snapshot. */
  uv_loop_t warm;
  uv_loop_init(&warm);
  uv_loop_close(&warm);
  unsigned char fds[MAX_FDS];
  open_fds(fds);

  tests[i].fn();

  if (check_children()) failures++;
  if (check_fds(fds)) failures++;
  if (failures) {
    fprintf(stderr, "core_%s: %d check(s) failed\n", tests[i].name, failures);
    return 1;
  }
  printf("core_%s: %s\n", tests[i].name, skipped ? "skipped" : "ok");
  return skipped ? EXIT_SKIP : 0;
}

/* Run every test, each in a process of its own, as ctest does; returns the exit status. */
static int run_all(void) {
  int failed = 0;
  for (size_t i = 0; i < NTESTS; i++) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return 111;
    if (pid == 0) {
      execl(self, self, tests[i].name, (char *)NULL);
      _exit(111);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
      if (errno != EINTR) return 111;
    if (!WIFEXITED(st) || (WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != EXIT_SKIP)) failed++;
  }
  printf("%d of %zu tests failed\n", failed, NTESTS);
  return failed ? 1 : 0;
}

int main(int argc, char **argv) {
  self = "/proc/self/exe";
  static char path[4096];
  ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n > 0) {
    path[n] = '\0';
    self = path;
  }
  if (argc == 3 && strcmp(argv[1], "--child") == 0) {
    if (strcmp(argv[2], "fds") == 0) return child_fds();
    if (strcmp(argv[2], "sigs") == 0) return child_sigs();
    if (strcmp(argv[2], "pdeath") == 0) return child_pdeath();
    if (strcmp(argv[2], "comm") == 0) return child_comm();
    if (strcmp(argv[2], "orphan") == 0) return child_orphan();
    if (strcmp(argv[2], "exec-ok") == 0) return child_exec("ok");
    if (strcmp(argv[2], "exec-missing") == 0) return child_exec("missing");
    if (strcmp(argv[2], "reexec") == 0) return child_reexec();
    return 100;
  }
  if (argc == 5 && strcmp(argv[1], "--reexec-2") == 0)
    return child_reexec_2(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
  if (argc == 4 && strcmp(argv[1], "--child") == 0 && strcmp(argv[2], "exec-cwd") == 0)
    return child_exec_cwd(argv[3]);

  if (argc == 1) return run_all();
  if (argc == 2 && strcmp(argv[1], "--list") == 0) {
    for (size_t i = 0; i < NTESTS; i++)
      printf("%s\n", tests[i].name);
    return 0;
  }
  if (argc == 2)
    for (size_t i = 0; i < NTESTS; i++)
      if (strcmp(argv[1], tests[i].name) == 0) return run_test((int)i);
  fprintf(stderr, "usage: %s [--list | NAME | --child NAME]\n", argv[0]);
  return 100;
}
