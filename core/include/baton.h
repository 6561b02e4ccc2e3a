/*
 * baton.h — the whole public C API of baton's core.
 *
 * The core spawns processes, watches their exit through a pidfd polled by the
 * host's libuv loop, and sends them signals. It knows nothing of Lua: a C host
 * links it alone. Every call returns 0 (or a non-negative value where said) on
 * success and a negative errno on failure, as libuv does; errno itself carries
 * no meaning afterwards. When a call that takes a callback fails, the callback
 * never fires.
 */
#ifndef BATON_H
#define BATON_H

#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(BATON_STATIC) || !defined(__GNUC__)
#define BT_EXTERN
#else
#define BT_EXTERN __attribute__((visibility("default")))
#endif

#define BATON_VERSION_MAJOR 0
#define BATON_VERSION_MINOR 1
#define BATON_VERSION_PATCH 0
#define BATON_VERSION_STRING "0.1.0"

/* What the child gets at one fd number. */
typedef enum {
  BT_STDIO_INHERIT = 0, /* the parent's fd of the same number (closed if the parent's is) */
  BT_STDIO_NULL,        /* /dev/null, opened read-write in the child */
  BT_STDIO_FD,          /* the parent's fd `fd`, duplicated to this number */
  BT_STDIO_PIPE,        /* a new pipe; on success `fd` holds the parent's end */
  BT_STDIO_CLOSE,       /* nothing: the fd is closed in the child */
  BT_STDIO_SAME         /* the same file as the child's fd `fd` (< this one): 2>&1 */
} bt_stdio_type;

/* Direction of a BT_STDIO_PIPE, seen from the child. */
enum { BT_PIPE_CHILD_READS = 1, BT_PIPE_CHILD_WRITES = 2 };

typedef struct {
  bt_stdio_type type;
  int fd;    /* BT_STDIO_FD: in. BT_STDIO_PIPE: out, the parent's end (O_CLOEXEC|O_NONBLOCK) */
  int flags; /* BT_STDIO_PIPE: BT_PIPE_CHILD_READS or _WRITES; 0 means reads for fd 0, writes otherwise */
} bt_stdio_t;

enum {
  BT_SPAWN_SETSID = 1 << 0,  /* child becomes a session (and group) leader */
  BT_SPAWN_SETPGID = 1 << 1, /* child joins group `pgid` (0: a new group of its own) */
};

/* Which step of a spawn failed; lets a caller say precisely what went wrong. */
typedef enum {
  BT_STAGE_NONE = 0,
  BT_STAGE_LOOKUP, /* finding the program (PATH search, or the given path) */
  BT_STAGE_SETUP,  /* pipes, stack, clone in the parent */
  BT_STAGE_PGRP,   /* setsid / setpgid in the child */
  BT_STAGE_STDIO,  /* wiring fds in the child */
  BT_STAGE_CHDIR,  /* changing to cwd in the child */
  BT_STAGE_EXEC    /* execve itself */
} bt_stage;

typedef struct {
  const char *file;   /* a path (contains '/') or a name looked up in the child's PATH */
  char *const *argv;  /* NULL-terminated, argv[0] included; required */
  char *const *env;   /* NULL-terminated "K=V" list for the child; NULL inherits environ */
  const char *cwd;    /* the child's working directory; NULL inherits */
  bt_stdio_t *stdio;  /* child fd i gets stdio[i]; every fd >= nstdio is closed */
  int nstdio;         /* 0..BT_MAX_STDIO */
  unsigned flags;     /* BT_SPAWN_* */
  pid_t pgid;         /* with BT_SPAWN_SETPGID */
} bt_spawn_options_t;

#define BT_MAX_STDIO 64

typedef struct bt_process_s bt_process_t;
typedef void (*bt_exit_cb)(bt_process_t *proc);
typedef void (*bt_close_cb)(bt_process_t *proc);

/*
 * A child process. The caller owns the memory; it must stay valid until the
 * close callback has fired. Fields above the private line are read-only.
 */
struct bt_process_s {
  void *data;         /* for the caller */
  pid_t pid;
  int pidfd;          /* -1 once closed */
  int exited;         /* 1 once reaped; then the fields below are set */
  int exit_code;      /* exit status, or -1 when killed by a signal */
  int term_signal;    /* the killing signal, or 0 */
  int core_dumped;    /* 1 when the signal dumped core */
  bt_stage stage;     /* on spawn failure: the failing step */
  char path[4096];    /* the program's resolved path (also set when exec fails) */
  /* private */
  uv_poll_t poll_;
  bt_exit_cb exit_cb_;
  bt_close_cb close_cb_;
  int closing_;
};

/*
 * Start a process. On success returns 0, the child runs, and `exit_cb` fires
 * once from `loop` after the child ended and was reaped (never from inside
 * bt_spawn). On failure returns a negative errno, fills `proc->stage` and
 * `proc->path`, leaves no child and no fd behind, and `proc` needs no close.
 * Every BT_STDIO_PIPE slot then holds fd -1.
 *
 * The child is created with clone(CLONE_VM|CLONE_VFORK): no copy of the parent's
 * memory, whatever its size. In the child every signal disposition is reset to
 * default and the signal mask emptied before exec; every fd not named in
 * `stdio` is closed.
 */
BT_EXTERN int bt_spawn(uv_loop_t *loop, bt_process_t *proc, const bt_spawn_options_t *opts,
                       bt_exit_cb exit_cb);

/*
 * Send signal `sig` (0 probes) through the pidfd. Returns -ESRCH once the
 * process was reaped: a recycled pid is never hit.
 */
BT_EXTERN int bt_process_kill(bt_process_t *proc, int sig);

/*
 * Stop watching and release the pidfd; `close_cb` (may be NULL) fires from the
 * loop when `proc` may be freed. A child still running keeps running and
 * nobody reaps it: kill and wait for it first unless that is what you want.
 */
BT_EXTERN void bt_process_close(bt_process_t *proc, bt_close_cb close_cb);

/*
 * Find `file` the way the child will: a name containing '/' is taken as is
 * (relative to `cwd` when given); otherwise each absolute entry of `path_env`
 * (NULL: "/usr/local/bin:/usr/bin:/bin") is tried for an executable regular
 * file. Relative PATH entries (empty, ".", "bin") are skipped, as Go's
 * LookPath refuses an implicit "./". Writes the result to `out` and returns 0,
 * or -ENOENT, -EACCES, -ENAMETOOLONG.
 */
BT_EXTERN int bt_lookpath(const char *file, const char *path_env, const char *cwd, char *out,
                          size_t outlen);

/* Signal number for "TERM", "SIGTERM", "term" or "15"; a negative errno if unknown. */
BT_EXTERN int bt_signal_number(const char *name);
/* "SIGTERM" for 15, or NULL if unknown. */
BT_EXTERN const char *bt_signal_name(int sig);

/* A static name for a bt_stage ("exec", "chdir", …). */
BT_EXTERN const char *bt_stage_name(bt_stage stage);

#ifdef __cplusplus
}
#endif
#endif /* BATON_H */
