/*
 * baton.h — the whole public C API of baton's core.
 *
 * The core spawns processes, watches their exit through a pidfd polled by the
 * host's libuv loop, sends them signals, reaps orphans, manages cgroup v2
 * groups, and names errors, signals and spawn steps. It knows nothing of Lua:
 * a C host links it alone.
 * Errors. Every call returns 0 (or a non-negative value where said) on
 * success and a negative errno on failure (-ENOENT, …), as libuv does, or
 * one of libuv's own codes where libuv's call failed (bt_err_name and
 * bt_strerror name both kinds); errno itself carries no meaning afterwards.
 * Bad input is an error, not a crash: a NULL where a pointer is required, a
 * loop that was closed (uv_loop_close) and a negative fd are refused with
 * -EINVAL (-EBADF for an fd) before anything starts; void calls given NULL
 * do nothing.
 *
 * Ownership. Memory the caller passes in (options, strings, arrays, fd
 * lists, output buffers) is only read or written during the call: nothing
 * is kept, so it may be freed or reused once the call returns. Handles
 * (bt_process_t, bt_reaper_t, bt_notify_t) are the exception: their memory
 * is the caller's, filled by the call that starts them, and must stay valid
 * and unmoved until their close callback has fired. Strings returned are
 * static or per-thread, never to be freed. fds returned (pipe ends,
 * listeners, cgroup directories) are the caller's to close.
 *
 * Callbacks. A call that takes a callback and fails never fires it, neither
 * during the call nor later. Callbacks fire from inside uv_run of the loop
 * the handle was started on, on the thread running it: exit, SIGCHLD and
 * datagram callbacks in the poll phase of the loop iteration that sees the
 * event,
 * close callbacks in the close phase of a later iteration. None fires from
 * inside the call that started or closed the handle, except the reaper's
 * `cb`, which bt_reaper_start and bt_reaper_reap call for what they reap.
 *
 * Handles. A handle is started by one call (bt_spawn, bt_process_open,
 * bt_reaper_start, bt_notify_open), which initialises it whatever it held;
 * when that call fails there is nothing to close (closing it anyway does
 * nothing for processes and notification sockets). A started handle must be
 * closed (bt_process_close, bt_reaper_close, bt_notify_close) before its
 * loop is closed; its own callback never fires after the close call, which
 * may be made from inside that callback; a second close call does nothing;
 * the close callback, on a later loop iteration, says the memory may be
 * freed. As with libuv, uv_loop_close fails with UV_EBUSY while a handle is
 * open or closing: run the loop until the close callbacks have fired.
 *
 * Threads and signals. Nothing here is async-signal-safe: no call may be
 * made from a signal handler, nor in a child after fork(2) (bt_spawn's own
 * child side makes raw system calls only, never taking a lock, so spawning
 * from a multi-threaded program is safe). A handle belongs to its loop's
 * thread: start it, use it and close it there. Calls that take no handle and
 * no loop are thread-safe (they keep no state between calls, or keep it per
 * thread), except bt_exec, which changes the whole process. bt_spawn may run
 * on several threads at once, each with its own loop: the set of owned
 * children it shares with the reaper is locked. It reads `environ` when
 * `env` is NULL, so no other thread may change the environment meanwhile.
 *
 * Linking: libbaton.so (pkg-config baton; CMake baton::baton) or libbaton.a
 * (baton::baton_static), with libuv.
 */
#ifndef BATON_H
#define BATON_H

#include <stddef.h>
#include <sys/resource.h>
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
  BT_STDIO_SAME         /* the same file as the child's fd `fd` (2>&1); not itself SAME */
} bt_stdio_type;

/* Direction of a BT_STDIO_PIPE, seen from the child. */
enum { BT_PIPE_CHILD_READS = 1, BT_PIPE_CHILD_WRITES = 2 };

typedef struct {
  bt_stdio_type type;
  int fd;    /* BT_STDIO_FD: in. BT_STDIO_PIPE: out, the parent's end (O_CLOEXEC|O_NONBLOCK) */
  int flags; /* BT_STDIO_PIPE: BT_PIPE_CHILD_*; 0: the child reads fd 0, writes the others */
} bt_stdio_t;

enum {
  BT_SPAWN_SETSID = 1 << 0,     /* child becomes a session (and group) leader */
  BT_SPAWN_SETPGID = 1 << 1,    /* child joins group `pgid` (0: a new group of its own) */
  BT_SPAWN_UMASK = 1 << 2,      /* set the umask to `umask` */
  BT_SPAWN_SETUID = 1 << 3,     /* set real and effective uid to `uid` */
  BT_SPAWN_SETGID = 1 << 4,     /* set real and effective gid to `gid` */
  BT_SPAWN_SETGROUPS = 1 << 5,  /* set supplementary groups to `groups` (may be empty) */
  BT_SPAWN_NICE = 1 << 6,       /* set the nice value to `nice` */
  BT_SPAWN_CGROUP = 1 << 7,     /* join the cgroup v2 group of directory fd `cgroup_fd` */
  BT_SPAWN_LISTEN_PID = 1 << 8, /* the child's env gets LISTEN_PID=<its own pid> (see below) */
};

/* One resource limit for the child (see setrlimit(2)). */
typedef struct {
  int resource; /* RLIMIT_* */
  rlim_t cur, max;
} bt_rlimit_t;

/* Which step of a spawn failed; lets a caller say precisely what went wrong. */
typedef enum {
  BT_STAGE_NONE = 0,
  BT_STAGE_LOOKUP, /* finding the program (PATH search, or the given path) */
  BT_STAGE_SETUP,  /* pipes, stack, clone in the parent */
  BT_STAGE_PGRP,   /* setsid / setpgid in the child */
  BT_STAGE_LIMITS, /* parent-death signal, rlimits, nice, umask in the child */
  BT_STAGE_STDIO,  /* wiring fds in the child */
  BT_STAGE_CREDS,  /* setgroups, setgid, setuid in the child */
  BT_STAGE_CHDIR,  /* changing to cwd in the child */
  BT_STAGE_EXEC,   /* execve itself */
  BT_STAGE_CGROUP  /* joining the cgroup (BT_SPAWN_CGROUP), the child's first step */
} bt_stage;

typedef struct {
  const char *file;           /* a path, or a name looked up in PATH (bt_lookpath); NULL: argv[0] */
  char *const *argv;          /* NULL-terminated, argv[0] included; required */
  char *const *env;           /* NULL-terminated "K=V" list for the child; NULL inherits environ */
  const char *cwd;            /* the child's working directory; NULL inherits */
  bt_stdio_t *stdio;          /* child fd i gets stdio[i]; every fd >= nstdio is closed */
  int nstdio;                 /* 0..BT_MAX_STDIO */
  unsigned flags;             /* BT_SPAWN_* */
  pid_t pgid;                 /* with BT_SPAWN_SETPGID */
  mode_t umask;               /* with BT_SPAWN_UMASK */
  uid_t uid;                  /* with BT_SPAWN_SETUID */
  gid_t gid;                  /* with BT_SPAWN_SETGID */
  const gid_t *groups;        /* with BT_SPAWN_SETGROUPS */
  int ngroups;                /* entries in `groups` */
  int nice;                   /* with BT_SPAWN_NICE: the absolute nice value, -20..19 */
  const bt_rlimit_t *rlimits; /* applied in the child, in order */
  int nrlimits;               /* entries in `rlimits` */
  int pdeathsig;              /* signal the child gets when baton's thread dies; 0: none */
  int cgroup_fd;              /* with BT_SPAWN_CGROUP: a group's directory (bt_cgroup_open) */
} bt_spawn_options_t;
/* BT_SPAWN_LISTEN_PID: systemd's socket-activation protocol wants LISTEN_PID
 * to be the receiving process's own pid, which the parent cannot know before
 * clone. With the flag, bt_spawn builds the child's environment from `env`
 * (or environ when NULL) without any LISTEN_PID entry it holds, plus
 * "LISTEN_PID=" and room for the digits, all in memory of this spawn only;
 * the child writes its own pid there after clone, before anything else. The
 * fds themselves (`stdio` entries 3, 4, … of type BT_STDIO_FD), LISTEN_FDS
 * and LISTEN_FDNAMES are the caller's. With bt_exec the pid is the caller's,
 * which is right too: execve keeps it. */
/* In the child, in this order: signals reset, LISTEN_PID, cgroup, setsid/setpgid,
 * pdeathsig, fds, rlimits, nice, umask, setgroups, setgid, setuid, chdir,
 * empty mask, execve. The cgroup comes first, so that nothing the child does
 * happens outside it (and while it is still privileged to move itself);
 * limits come after the fds (a low RLIMIT_NOFILE must not stop the
 * rearranging), chdir after the credentials (checked as the new user). */

#define BT_MAX_STDIO 64

typedef struct bt_process_s bt_process_t;
/* Fires at most once, from the poll phase of the loop iteration that sees
 * the pidfd readable, after the process ended (and was reaped when it is our
 * child); the exit fields are set. Never after bt_process_close. It may
 * close `proc` (and usually does). */
typedef void (*bt_exit_cb)(bt_process_t *proc);
/* Fires once, from the close phase of a loop iteration after the one in which
 * bt_process_close was called (never inside it): the pidfd is closed and
 * `proc` may be freed. */
typedef void (*bt_close_cb)(bt_process_t *proc);

/*
 * A process handle. The caller owns the memory; after a successful bt_spawn
 * or bt_process_open it must stay valid until the close callback has fired,
 * even once the process has exited. Fields above the private line are the
 * core's to write and the caller's to read, except `data`.
 */
struct bt_process_s {
  void *data;           /* for the caller */
  pid_t pid;            /* 0 until bt_spawn or bt_process_open succeeds */
  int pidfd;            /* -1 once closed */
  int exited;           /* 1 once reaped; then the fields below are set */
  int exit_code;        /* exit status, or -1 when killed by a signal */
  int term_signal;      /* the killing signal, or 0 */
  int core_dumped;      /* 1 when the signal dumped core */
  int status_known;     /* 0 for an adopted process that is not our child: exit seen, status not */
  struct rusage rusage; /* resources used, once reaped (zero when unknown) */
  bt_stage stage;       /* on spawn failure: the failing step */
  char path[4096];      /* the program, as bt_lookpath found it (also set when exec fails) */
  /* private */
  uv_poll_t poll_;
  bt_exit_cb exit_cb_;
  bt_close_cb close_cb_;
  int closing_;
  int owned_; /* spawned by bt_spawn, not yet reaped nor released by a close */
};

/*
 * Start a process. On success returns 0, the child runs, `proc->pid`,
 * `pidfd` and `path` are set, and `exit_cb` (may be NULL) fires once from
 * `loop` after the child ended and was reaped (never from inside bt_spawn);
 * `proc` must then be closed with bt_process_close. Each BT_STDIO_PIPE slot
 * holds the parent's end of its pipe, which the caller owns and closes. On
 * failure returns a negative errno (-EINVAL for bad options, -EBADF for a
 * negative BT_STDIO_FD fd; bt_lookpath's errors, stage BT_STAGE_LOOKUP; the
 * child's failing call's, such as -ENOENT or -EACCES from execve, with its
 * stage; pipe2's, mmap's, clone's, libuv's, stage BT_STAGE_SETUP), fills
 * `proc->stage` and `proc->path`,
 * leaves no child and no fd behind (every BT_STDIO_PIPE slot holds -1), and
 * `proc` needs no close. `opts` and what it points to are only read during
 * the call (bt_spawn returns once the child has exec'd, so nothing is
 * borrowed), except that BT_STDIO_PIPE slots of `opts->stdio` are written.
 *
 * It blocks the calling thread while the child sets itself up, until its
 * execve succeeded or a step failed (CLONE_VFORK), never for the program's
 * run. The calling thread's signals are blocked meanwhile and delivered
 * after.
 *
 * The child is created with clone(CLONE_VM|CLONE_VFORK): no copy of the parent's
 * memory, whatever its size. In the child every signal disposition is reset to
 * default and the signal mask emptied before exec; every fd not named in
 * `stdio` is closed.
 */
BT_EXTERN int bt_spawn(uv_loop_t *loop, bt_process_t *proc, const bt_spawn_options_t *opts,
                       bt_exit_cb exit_cb);

/*
 * Watch an existing process by pid (Go's os.FindProcess, done right): opens a
 * pidfd (`proc->pidfd`, the handle's: bt_process_close closes it), so later
 * signals cannot hit a recycled pid. Returns 0, -EINVAL for
 * a pid <= 0, -ESRCH if there is no such process, or another negative errno
 * (pidfd_open's, libuv's); on failure `proc` needs no close and `exit_cb`
 * never fires. On success `proc` must be closed like a spawned one, and
 * `exit_cb` (may be NULL) fires once from `loop` when the process exits: if
 * it is our child it is reaped with its status, otherwise `status_known` is
 * 0. It is not owned: an orphan reaper may reap our child first, and then
 * its status is not known either.
 */
BT_EXTERN int bt_process_open(uv_loop_t *loop, bt_process_t *proc, pid_t pid, bt_exit_cb exit_cb);

/*
 * Replace the current process, with the same rules as bt_spawn (lookup,
 * fds, signals, credentials, cwd). Returns only on failure, with a negative
 * errno and `info->stage`/`info->path` set; BT_STDIO_PIPE is refused. The
 * program is looked up and the cwd checked before anything changes; when
 * execve itself fails (ENOEXEC: a script without #!), signal dispositions,
 * mask, umask and fds 0..nstdio-1 are put back, other fds are left open
 * (marked close-on-exec). Limits, credentials, cwd and cgroup, once changed,
 * stay. Not thread-safe: it changes process-wide state and keeps what it
 * must put back in static storage; call it while no other thread spawns or
 * changes signal dispositions.
 */
BT_EXTERN int bt_exec(const bt_spawn_options_t *opts, bt_process_t *info);

/*
 * Send signal `sig` (0 probes) through the pidfd. Returns 0, -ESRCH once the
 * process was reaped (`exited` is set: from exit_cb on, or by
 * bt_process_close) or its pidfd released (by the close callback's time)
 * (a recycled pid is never hit), or
 * pidfd_send_signal's error (-EPERM; -EINVAL for a bad signal; -EINVAL for
 * a NULL `proc`).
 */
BT_EXTERN int bt_process_kill(bt_process_t *proc, int sig);

/*
 * Stop watching and release the pidfd; `close_cb` (may be NULL) fires from the
 * loop when `proc` may be freed (see bt_close_cb), and `exit_cb` never fires
 * after this call, which may be made from inside exit_cb. Calling it again,
 * or after a failed bt_spawn or bt_process_open, does nothing. A child of
 * bt_spawn that has exited but whose exit_cb has not fired yet is reaped
 * here (its status fills the exit fields). One still running keeps running
 * and is no longer owned: an orphan reaper (bt_reaper_start) reaps it when
 * it exits; without one, nobody does and it stays a zombie. Kill and wait
 * for it first unless that is what you want. An adopted process
 * (bt_process_open) is only let go.
 */
BT_EXTERN void bt_process_close(bt_process_t *proc, bt_close_cb close_cb);

/*
 * Whether watching `proc` keeps the loop alive (it does by default, like any
 * libuv handle). A host watching a process it did not start may not want to.
 * Does nothing once `proc` is closing, or after a failed start.
 */
BT_EXTERN void bt_process_ref(bt_process_t *proc, int ref);

/*
 * Find `file` the way the child will, by the rules of Go's exec.LookPath and
 * Cmd.Dir. A name containing '/' is a path and is not searched: an absolute
 * one is taken as is; a relative one ("./prog", "bin/prog") names a file in
 * the child's working directory `cwd` when one is given ("If Path is
 * relative, it is evaluated relative to Dir"), so the result is `cwd` joined
 * with it ("./prog" in "/srv" gives "/srv/prog"; with a relative `cwd` the
 * result is relative to the caller's working directory), and without `cwd`
 * the path as given. A path is not checked: the child's execve reports what
 * is wrong with it. A name without '/' is searched in each absolute entry of
 * `path_env` (NULL: "/usr/local/bin:/usr/bin:/bin") for an executable
 * regular file; relative entries (empty, ".", "bin") are skipped, as Go's
 * LookPath refuses an implicit "./", so `cwd` never matters for a name.
 * Writes the result to `out` and returns 0, or -ENOENT (also for an empty
 * `file`), -EACCES, -ENAMETOOLONG (the result does not fit in `outlen`
 * bytes), -EINVAL (`outlen` 0). Thread-safe; it reads no environment
 * variable (pass getenv("PATH") as `path_env` for the caller's own).
 */
BT_EXTERN int bt_lookpath(const char *file, const char *path_env, const char *cwd, char *out,
                          size_t outlen);

/*
 * Orphan reaping. With PR_SET_CHILD_SUBREAPER, orphaned descendants are
 * re-parented to this process instead of init; someone must reap them. The
 * reaper watches SIGCHLD and reaps every child that no bt_process_t owns
 * (owned: spawned by bt_spawn, not yet reaped, not closed), never one that
 * does: those are reaped through their pidfd. `cb` (may be NULL) fires for
 * each child it reaps, with its pid and wait status, from the loop on
 * SIGCHLD (libuv's process-wide signal handling, poll phase) and
 * synchronously from inside bt_reaper_start and bt_reaper_reap. The caller
 * owns `reaper`'s memory, valid from bt_reaper_start until the close
 * callback has fired. The SIGCHLD watch does not keep the loop alive. The
 * subreaper attribute and SIGCHLD are process-wide: one reaper per process
 * is what makes sense.
 */
typedef struct bt_reaper_s bt_reaper_t;
typedef void (*bt_reap_cb)(bt_reaper_t *reaper, pid_t pid, int wstatus);
struct bt_reaper_s {
  void *data;
  /* private */
  uv_signal_t signal_;
  bt_reap_cb cb_;
  void (*close_cb_)(bt_reaper_t *);
};
/* Become a subreaper (if `subreaper`) and start reaping orphans, those already
 * waiting included (`cb` fires for them before this returns). Returns 0 or a
 * negative errno (-EINVAL for a NULL or closed loop or a NULL `reaper`;
 * prctl's, libuv's); on failure nothing needs closing (do not close it) and
 * `cb` never fires, though the subreaper attribute, when prctl succeeded,
 * stays. */
BT_EXTERN int bt_reaper_start(uv_loop_t *loop, bt_reaper_t *reaper, int subreaper, bt_reap_cb cb);
/* Reap what is pending now, calling `cb` for each before returning; returns
 * how many were reaped (0 too when /proc cannot be read), or -EINVAL for a
 * NULL `reaper`. For a started reaper, on its loop's thread. */
BT_EXTERN int bt_reaper_reap(bt_reaper_t *reaper);
/* Stop reaping (the subreaper attribute stays); `cb` never fires after this call,
 * and `close_cb` (may be NULL) fires from the loop (close phase, never inside
 * this call) when `reaper` may be freed. Calling it again does nothing; only
 * for a reaper bt_reaper_start started. */
BT_EXTERN void bt_reaper_close(bt_reaper_t *reaper, void (*close_cb)(bt_reaper_t *));

/*
 * The descendants of `pid` (children, their children, …; `pid` itself not
 * included), breadth first, read from the kernel's per-thread children
 * lists: a process that left the group or session (setsid) is still found,
 * one re-parented away (its parent exited) is not. At most `max` pids are
 * written to `out`. Returns how many, -ESRCH when `pid` does not exist,
 * -ENOSYS when the kernel keeps no children lists, -EINVAL for bad
 * arguments. A snapshot: processes fork and exit meanwhile.
 */
BT_EXTERN int bt_proc_descendants(pid_t pid, pid_t *out, int max);

/*
 * Readiness notifications: the reader of the sd_notify protocol (the
 * NOTIFY_SOCKET a service manager creates), its client, and /proc/<pid>/stat
 * for telling which process tree a sender belongs to.
 *
 * A sender's datagram is text ("READY=1\nSTATUS=…"), possibly with fds
 * (SCM_RIGHTS), and the kernel attaches the sender's credentials because the
 * socket has SO_PASSCRED. A process with CAP_SYS_ADMIN may put another pid
 * there: Debian's systemd-notify, run as root, reports its parent's pid and
 * its own otherwise; attribute a message to a process tree (its process
 * group, its ancestry), never to one exact pid.
 */

/* The largest datagram read whole; a longer one is dropped. systemd's own
 * limit for a notification is 4096 bytes. */
#define BT_NOTIFY_MAX 65536
/* The most fds one datagram may carry (the kernel's SCM_MAX_FD); with more,
 * the datagram is dropped. */
#define BT_NOTIFY_MAX_FDS 253

typedef struct bt_notify_s bt_notify_t;

/* One datagram, as the callback sees it: valid during the callback only. */
typedef struct {
  pid_t pid;        /* the sender's, from SCM_CREDENTIALS; 0 when absent */
  uid_t uid;        /* with it; (uid_t)-1 when absent */
  gid_t gid;        /* with it; (gid_t)-1 when absent */
  const char *text; /* the datagram, NUL-terminated (it may hold NULs itself) */
  size_t len;       /* its length, the terminating NUL not counted */
  int *fds;         /* fds that came with it (SCM_RIGHTS, close-on-exec) */
  int nfds;         /* entries in `fds`; 0 when none */
} bt_notify_msg_t;

/* Fires from the loop's poll phase for each datagram (up to 64 per loop
 * iteration; more wait for the next). `msg` and the text it points to are
 * valid during the call only. Every fd left in msg->fds is closed when it
 * returns: to keep one, take it and set its slot to -1. It may call
 * bt_notify_close; then no further datagram is delivered. */
typedef void (*bt_notify_cb)(bt_notify_t *notify, const bt_notify_msg_t *msg);

/* A notification socket. The caller owns the memory, valid from a successful
 * bt_notify_open until the close callback has fired. `data` is the caller's;
 * the other public fields are the core's to write. */
struct bt_notify_s {
  void *data;
  int fd;         /* the socket; -1 once closed */
  char path[109]; /* as given to bt_notify_open ('@' for the abstract namespace) */
  /* private */
  uv_poll_t poll_;
  bt_notify_cb cb_;
  void (*close_cb_)(bt_notify_t *);
  int closing_;
  int unlink_; /* bound a file that close removes */
  char buf_[BT_NOTIFY_MAX + 1];
};

/*
 * Bind a datagram socket at `path` and deliver what arrives there to `cb`.
 * `path` is a file system path, or with a leading '@' a name in Linux's
 * abstract namespace (as in NOTIFY_SOCKET); it must fit sockaddr_un
 * (-ENAMETOOLONG) and not exist yet (-EADDRINUSE: a stale socket is the
 * caller's to remove). The socket is close-on-exec and nonblocking, has
 * SO_PASSCRED and a receive buffer as large as the system allows, and is
 * watched by `loop`, which it keeps alive (see bt_notify_ref). `path` is
 * copied (to `notify->path`). Returns 0, or a negative errno (-EINVAL for an
 * empty path, a bare '@', a NULL `cb`, a NULL or closed loop; socket's,
 * bind's, libuv's); on failure nothing needs closing (closing does
 * nothing), no file is left and `cb` never fires. `cb` is required and
 * fires from the loop only, never from inside this call. A datagram
 * truncated by the buffer (longer than BT_NOTIFY_MAX, or with more fds than
 * fit) is dropped, its fds closed.
 */
BT_EXTERN int bt_notify_open(uv_loop_t *loop, bt_notify_t *notify, const char *path,
                             bt_notify_cb cb);
/* The same on a socket bound already (`fd`, handed over by a previous image
 * of this program: see bt_reexec), which the handle owns from now on (also
 * on failure: then it is closed); `path` is what it is bound to, for
 * `notify->path` and the unlink at close. It is made close-on-exec and
 * nonblocking, with SO_PASSCRED. Returns 0 or a negative errno. */
BT_EXTERN int bt_notify_open_fd(uv_loop_t *loop, bt_notify_t *notify, int fd, const char *path,
                                bt_notify_cb cb);
/* Stop reading, close the socket and remove the file it was bound to (never
 * for an abstract name), all before returning; `cb` never fires after this
 * call, which may be made from inside `cb`, and `close_cb` (may be NULL)
 * fires from the loop (close phase, never inside this call) when `notify`
 * may be freed. Calling it again, or after a failed open, does nothing. */
BT_EXTERN void bt_notify_close(bt_notify_t *notify, void (*close_cb)(bt_notify_t *));
/* Whether the socket keeps the loop alive (yes by default). Does nothing once
 * `notify` is closing. */
BT_EXTERN void bt_notify_ref(bt_notify_t *notify, int ref);

/*
 * Send one notification, as sd_pid_notify_with_fds(3) does: the datagram
 * `state` (e.g. "READY=1\nSTATUS=up"), with `nfds` fds of `fds` (none when
 * 0; they stay the caller's), to `socket_path`, or when it is NULL to
 * $NOTIFY_SOCKET ('@' for the abstract namespace in both). Returns 1 once
 * sent; 0 when `socket_path` is NULL and NOTIFY_SOCKET is unset or empty
 * (nothing to notify: not an error, as for sd_notify); or a negative errno
 * (-ENAMETOOLONG, -EINVAL for a bare '@', sendmsg's: -ENOENT or
 * -ECONNREFUSED with no reader, -EMSGSIZE, -EAGAIN). It never blocks, unlike
 * sd_notify: -EAGAIN says the reader's queue is full (it holds
 * net.unix.max_dgram_qlen datagrams, 10 by default, 512 where systemd set
 * it), and the caller retries later (a timer). The kernel attaches this
 * process's credentials. `state` and `fds` are only read during the call;
 * thread-safe (it reads NOTIFY_SOCKET with getenv when `socket_path` is NULL).
 */
BT_EXTERN int bt_sd_notify(const char *socket_path, const char *state, const int *fds, int nfds);

/* What /proc/<pid>/stat says of a process. */
typedef struct {
  pid_t pid, ppid, pgid, sid;
  char state;               /* 'R', 'S', 'D', 'Z', 'T', … */
  unsigned long long start; /* start time, clock ticks after boot: with `pid`, names the process */
  char comm[64];            /* its name, as the kernel keeps it (15 bytes at most for a task) */
} bt_proc_stat_t;

/* Fill `out` from /proc/<pid>/stat (the name may hold spaces and ')': it is
 * taken up to the last ')'). Returns 0, -EINVAL for a pid <= 0, -ESRCH when
 * there is no such process (a zombie is still one: state 'Z'), or another
 * negative errno (-EIO when the file cannot be parsed). */
BT_EXTERN int bt_proc_stat(pid_t pid, bt_proc_stat_t *out);

/*
 * Listeners owned by baton: sockets bound (and listening, for streams) once
 * and handed to each generation of a service, so that the kernel's accept
 * queue survives every restart.
 *
 * An address is a string:
 *   tcp://127.0.0.1:8080   tcp://[::1]:8080   tcp://0.0.0.0:0   tcp://[::]:443
 *   udp://127.0.0.1:5353   udp://[::1]:0
 *   unix:/run/app.sock     unix:///run/app.sock   unix:relative.sock   unix:@abstract
 * Hosts are numeric (no name lookup); ports are 0..65535, 0 letting the
 * kernel choose. A unix path must fit sockaddr_un (107 bytes); '@' names
 * Linux's abstract namespace.
 */
typedef struct {
  int family;       /* AF_INET, AF_INET6, AF_UNIX, or another AF_* (then nothing below is set) */
  int type;         /* SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET, … */
  int listening;    /* 1 when listen(2) was called on it (SO_ACCEPTCONN) */
  int port;         /* AF_INET, AF_INET6: the port, host order */
  char address[46]; /* AF_INET, AF_INET6: the numeric host, without brackets; else "" */
  char path[109];   /* AF_UNIX: the path, '@' + name for an abstract one, "" when unnamed */
} bt_socket_info_t;

/* What bt_listen reports of the socket it made: the address it is bound to
 * (for port 0, the port the kernel chose). */
typedef bt_socket_info_t bt_listen_info_t;

enum {
  BT_LISTEN_REUSEPORT = 1 << 0,    /* SO_REUSEPORT: several sockets may bind the same address */
  BT_LISTEN_REUSEADDR = 1 << 1,    /* SO_REUSEADDR on (the default for TCP only) */
  BT_LISTEN_NO_REUSEADDR = 1 << 2, /* SO_REUSEADDR off, TCP included */
  BT_LISTEN_V6ONLY = 1 << 3,       /* IPv6: IPV6_V6ONLY on (no IPv4-mapped peers) */
  BT_LISTEN_DUALSTACK = 1 << 4,    /* IPv6: IPV6_V6ONLY off; neither flag: the system's default */
  BT_LISTEN_MODE = 1 << 5,         /* unix path: chmod to `mode` after bind */
  BT_LISTEN_UID = 1 << 6,          /* unix path: chown to `uid` after bind */
  BT_LISTEN_GID = 1 << 7,          /* unix path: chown to group `gid` after bind */
};

typedef struct {
  const char *address; /* as above; required */
  unsigned flags;      /* BT_LISTEN_* */
  int backlog;         /* streams: listen(2)'s backlog; 0: SOMAXCONN */
  int defer_accept;    /* TCP: TCP_DEFER_ACCEPT, in seconds; 0: off */
  mode_t mode;         /* with BT_LISTEN_MODE: permission bits, 07777 at most */
  uid_t uid;           /* with BT_LISTEN_UID */
  gid_t gid;           /* with BT_LISTEN_GID */
} bt_listen_options_t;

/*
 * Parse `address` into `out`: family, type and port or path (listening 0).
 * Returns 0, or -EINVAL (malformed: no "scheme:", no port, a host that is
 * not a numeric IPv4 or bracketed IPv6 address, an empty path), -ERANGE (a
 * port above 65535), -EAFNOSUPPORT (a scheme other than tcp, udp, unix),
 * -ENAMETOOLONG (a unix path too long for sockaddr_un).
 */
BT_EXTERN int bt_listen_parse(const char *address, bt_socket_info_t *out);

/*
 * Make a socket for `opts->address`: bound, and listening for TCP and unix
 * (backlog `opts->backlog`, SOMAXCONN when 0; UDP is only bound). Returns
 * the fd, which the caller owns and closes, or a negative errno; `info`
 * (may be NULL) then says what the socket is bound to (getsockname: the
 * port the kernel chose for port 0). The fd is O_CLOEXEC and left blocking:
 * O_NONBLOCK is a flag of the open file, shared with every process the fd
 * is handed to, so set it only on a dup the caller keeps to itself (or
 * accept with SOCK_NONBLOCK). Errors: bt_listen_parse's; -EINVAL for an
 * option that does not fit the kind (`defer_accept` on UDP or unix, a
 * backlog on UDP, BT_LISTEN_MODE/UID/GID on anything but a unix path,
 * V6ONLY/DUALSTACK on IPv4, both V6ONLY and DUALSTACK, a negative backlog
 * or defer_accept, a mode above 07777); socket's, setsockopt's, bind's
 * (-EADDRINUSE, -EADDRNOTAVAIL, -EACCES for a privileged port), listen's;
 * for a unix path: -ENOENT when its directory does not exist, -EEXIST when
 * a file that is not a socket is there (it is left alone), -EADDRINUSE when
 * a socket there accepts connections, chmod's and chown's (-EPERM).
 *
 * A unix path where a socket file already exists: a connect is tried, and
 * only when it is refused (ECONNREFUSED: nothing listens, a stale file left
 * by a process that died) is the file removed and bound anew. Between that
 * test and the bind, another process could bind it; the bind then fails.
 * The file is created by bind with the process's umask applied, then chmod
 * and chown set `mode` and the owner: a peer could connect in that short
 * window, so put the socket in a directory whose permissions guard it when
 * that matters. The file is never removed by closing the fd (the kernel
 * does not either): bt_unlink_socket does, when the caller decides (a
 * service's final stop). On failure nothing is left: no fd, and no file
 * this call created.
 */
BT_EXTERN int bt_listen(const bt_listen_options_t *opts, bt_listen_info_t *info);

/*
 * Describe the socket `fd` (one inherited from systemd's LISTEN_FDS, say):
 * its family, type, whether it listens, and its bound address. Returns 0,
 * -ENOTSOCK when `fd` is not a socket, -EBADF, or getsockopt's or
 * getsockname's error. An unbound socket has port 0 or an empty path.
 */
BT_EXTERN int bt_socket_info(int fd, bt_socket_info_t *info);

/*
 * Remove the socket file at `path` (a unix listener's, once it is no longer
 * wanted), but only if it is a socket. Returns 0, -ENOENT when there is no
 * file, -ENOTSOCK when the file is not a socket (it is left alone), or
 * lstat's or unlink's error.
 */
BT_EXTERN int bt_unlink_socket(const char *path);

/* Signal number for "TERM", "SIGTERM", "term" or "15"; -EINVAL if unknown. */
BT_EXTERN int bt_signal_number(const char *name);
/* "SIGTERM" for 15 (a static string), or NULL if unknown (real-time signals too). */
BT_EXTERN const char *bt_signal_name(int sig);

/* The name of a negative error as a static string: "ENOEXEC" for -ENOEXEC
 * (libuv's uv_err_name does not know every errno), "EUNKNOWN" for an errno
 * without a name or a value that is not negative, libuv's name for libuv's
 * own codes (UV_EOF, UV_EAI_*). */
BT_EXTERN const char *bt_err_name(int err);
/* Its message, lower-case like libuv's ("exec format error"). For an errno the
 * string lives in a per-thread buffer, valid until the next call on the same
 * thread; for libuv's own codes it is libuv's static string; "unknown error"
 * for a value that is not negative. */
BT_EXTERN const char *bt_strerror(int err);

/* A static name for a bt_stage ("exec", "chdir", …); "unknown" for other values. */
BT_EXTERN const char *bt_stage_name(bt_stage stage);

/*
 * cgroup v2. A group is named by its directory in the unified hierarchy,
 * found through /proc/self/mountinfo (fstype cgroup2): /sys/fs/cgroup on a
 * pure v2 host, /sys/fs/cgroup/unified on a hybrid one. Only v2 is used; a
 * controller that is v1 on the host is simply not available in v2. Calls
 * that take a `dir` return -EINVAL when it is not a cgroup v2 directory and
 * -ENOENT when it does not exist. Moving processes, making groups and
 * writing limits need the right to write the files (root, or a delegated
 * subtree); otherwise -EACCES or -EPERM.
 */

/* The directory of the calling process's own v2 group: the cgroup2 mount
 * joined with the "0::" line of /proc/self/cgroup. Returns 0, -ENOENT when
 * no cgroup2 is mounted where that group is visible, -ENAMETOOLONG. */
BT_EXTERN int bt_cgroup_self(char *out, size_t outlen);
/* Make group `name` (one path component) under `parent`, or find it there
 * already; its directory goes to `out`. Returns 0, -EINVAL for a bad name,
 * -ENAMETOOLONG, or mkdir's error. */
BT_EXTERN int bt_cgroup_create(const char *parent, const char *name, char *out, size_t outlen);
/* An O_DIRECTORY|O_CLOEXEC fd of group `dir`, for BT_SPAWN_CGROUP (the
 * caller closes it), or a negative errno. */
BT_EXTERN int bt_cgroup_open(const char *dir);
/*
 * Enable `controllers` ("memory pids cpu", "+memory,+pids": names split at
 * spaces and commas, an optional '+' each) for the groups below `dir`, one
 * write to cgroup.subtree_control each. A controller not listed in `dir`'s
 * cgroup.controllers (not in the kernel, v1 on this host, not enabled in the
 * parent) is not enabled but named in `missing` (space-separated, as many as
 * fit in `missinglen` bytes; may be NULL). Returns how many were missing (0:
 * all enabled), -EINVAL for a malformed name (then nothing changes), or the
 * first write's error (-EBUSY: `dir` holds processes and is not the root,
 * the "no internal processes" rule); controllers enabled before it stay.
 */
BT_EXTERN int bt_cgroup_enable(const char *dir, const char *controllers, char *missing,
                               size_t missinglen);
/* Write `value` to `file` of `dir` ("memory.max", "pids.max", "cpu.max",
 * "cgroup.freeze", …). Returns 0, -EINVAL for a bad file name, -ENOENT when
 * the file does not exist (its controller is not enabled for `dir`), or the
 * kernel's refusal of the value (-EINVAL, -EBUSY, …). */
BT_EXTERN int bt_cgroup_set(const char *dir, const char *file, const char *value);
/* Read `file` of `dir` into `out`, trailing newlines removed. Returns its
 * length, -ENOENT as bt_cgroup_set, -EOVERFLOW when it does not fit. */
BT_EXTERN int bt_cgroup_get(const char *dir, const char *file, char *out, size_t outlen);
/*
 * SIGKILL every process in `dir` and the groups below it, escaped
 * grandchildren and new sessions included: the caller too, if it is inside.
 * Writes cgroup.kill (Linux 5.14), which the kernel applies to the whole
 * subtree at once, forks in flight included; where it does not exist, falls
 * back to bt_cgroup_kill_sweep. Does not wait: the processes are dying when
 * it returns; bt_cgroup_populated says when they are gone. Returns 0 or a
 * negative errno (-EINVAL for the root group, which has no cgroup.kill).
 */
BT_EXTERN int bt_cgroup_kill(const char *dir);
/*
 * The fallback of bt_cgroup_kill, public so that hosts and tests can use it
 * where cgroup.kill exists too. Freezes the group (cgroup.freeze, Linux 5.2)
 * unless it is frozen already, then in rounds reads cgroup.procs of `dir`
 * and of every group below it and sends SIGKILL to each process listed,
 * through a pidfd after checking it is still a member (a recycled pid is
 * never hit), until none is listed or, for 20 rounds 1 ms apart, only
 * processes already killed and still exiting are; then thaws the group.
 * The race it narrows but cannot close: a fork that had passed the kernel's
 * fatal-signal check when its parent was killed makes a child that joins
 * the group just after; frozen, that child cannot run, and a later round
 * finds it; without the freezer it can run until then. Returns 0, -EAGAIN
 * when new processes kept appearing for 1000 rounds, -EINVAL for the root
 * group, or another negative errno.
 */
BT_EXTERN int bt_cgroup_kill_sweep(const char *dir);
/* 1 while a process is in `dir` or below (cgroup.events "populated"), 0
 * once none is (zombies do not count), or a negative errno (-ENOENT for the
 * root group, which has no cgroup.events). */
BT_EXTERN int bt_cgroup_populated(const char *dir);
/* How many processes the OOM killer killed in `dir` and below (memory.events
 * "oom_kill"), or -ENOENT when the memory controller is not enabled there. */
BT_EXTERN int bt_cgroup_oom_kills(const char *dir);
/* Remove the empty group `dir` (rmdir). Returns 0, -EBUSY while a process
 * or a child group is in it, or another negative errno. */
BT_EXTERN int bt_cgroup_remove(const char *dir);

/*
 * Re-exec: replace this program by a new image of itself, same pid, without
 * losing its children (systemd's daemon-reexec). The caller writes its
 * state somewhere the new image finds it (bt_memfd, its fd in an
 * environment variable) and names the fds to keep.
 */
/* Set (on = 1) or clear FD_CLOEXEC on `fd`. Returns 1 or 0 (whether it was
 * set before), or a negative errno. */
BT_EXTERN int bt_fd_cloexec(int fd, int on);
/* A memfd (memfd_create, close-on-exec) named `name` holding the `len`
 * bytes of `data`. Returns the fd (the caller's), or a negative errno. */
BT_EXTERN int bt_memfd(const char *name, const void *data, size_t len);
/* Read everything `fd` holds from offset 0 (pread: the offset is not moved)
 * into a buffer the caller frees with free(3). Returns 0, or a negative
 * errno (nothing to free then). */
BT_EXTERN int bt_fd_read_all(int fd, char **out, size_t *len);
/*
 * execve(`path`, `argv`, `envp`) keeping exactly stdin, stdout, stderr and
 * the fds of `keep` (FD_CLOEXEC cleared on those, set on every other one
 * first: what the program opened without it, an io.open, does not leak
 * into the new image). `path` must be an
 * executable regular file, checked first. The signals baton handles (HUP,
 * INT, QUIT, TERM, USR1, USR2, CHLD, WINCH) are blocked across the exec:
 * one that arrives meanwhile stays pending, for the new image to handle
 * once it calls bt_reexec_signals_resume; so does one `loop` (may be NULL)
 * caught but did not dispatch yet (read out of its signal pipe and raised
 * again: call this from outside the loop's signal dispatch, e.g. an idle or
 * a timer callback, so that none is held in a batch being dispatched; if
 * the exec fails they are delivered to the loop's handler as they come
 * back). Returns only on failure, with a
 * negative errno, every flag and the signal mask put back as they were.
 * Not thread-safe (it changes the process); the loop's other threads end
 * with the exec.
 */
BT_EXTERN int bt_reexec(uv_loop_t *loop, const char *path, char *const argv[], char *const envp[],
                        const int *keep, size_t nkeep);
/* In the new image, once its signal handlers are in place: unblock the
 * signals bt_reexec blocked (those pending arrive now). */
BT_EXTERN void bt_reexec_signals_resume(void);
/* In the new image, before any orphan reaper runs: `pid` is a child the
 * previous image handed over. The reaper leaves it alone, and the next
 * bt_process_open of it owns it as bt_spawn's handle would (reaped with its
 * status, released to the reaper by a close). Returns 0 or -ENOMEM. */
BT_EXTERN int bt_reexec_claim(pid_t pid);
/* Drop the claim on `pid` (nobody took it): the reaper may reap it again.
 * Returns 0, or -ESRCH when it was not claimed (or taken already). */
BT_EXTERN int bt_reexec_unclaim(pid_t pid);

#ifdef __cplusplus
}
#endif
#endif /* BATON_H */
