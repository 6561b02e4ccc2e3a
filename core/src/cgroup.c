/*
 * cgroup.c — cgroup v2 helpers: find the calling process's cgroup, make a
 * child group, enable controllers, set and read its files, kill everything
 * in it, tell whether anything still runs there, remove it.
 *
 * A service supervisor wants one cgroup per process tree: a double fork or a
 * setsid cannot take a process out of it, cgroup.kill ends the whole tree at
 * once, and memory.max, pids.max and cpu.max bound it. Which tree gets which
 * group is policy and lives in the Lua layer; these are the primitives.
 *
 * Only the v2 (unified) hierarchy is used. It is found through
 * /proc/self/mountinfo (fstype cgroup2), never at a fixed path: hybrid hosts
 * mount it at /sys/fs/cgroup/unified, pure v2 hosts at /sys/fs/cgroup, a
 * container may see a subtree. Every function takes the directory of a group
 * and returns 0 (or the value said) or a negative errno.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define BT_SWEEP_ROUNDS 1000 /* rounds of the fallback kill before giving up */
#define BT_SWEEP_QUIET 20    /* rounds (1 ms apart) with no new process: done */
#define BT_SWEEP_DEPTH 64    /* nested groups the fallback kill descends into */

/* ---- small file helpers ------------------------------------------------------------ */

/* Write `s` to `name` under the directory fd `dfd` in one write(2), as the
 * cgroup files want. Returns 0 or a negative errno. */
static int bt__write_at(int dfd, const char *name, const char *s) {
  int fd = openat(dfd, name, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  size_t len = strlen(s);
  ssize_t n;
  while ((n = write(fd, s, len)) < 0 && errno == EINTR)
    continue;
  int err = n < 0 ? -errno : (size_t)n != len ? -EIO : 0;
  close(fd);
  return err;
}

/* Read `name` under `dfd` into `buf` (NUL-terminated). Returns its length,
 * -EOVERFLOW when it does not fit, or a negative errno. */
static int bt__read_at(int dfd, const char *name, char *buf, size_t cap) {
  int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  size_t len = 0;
  int err = 0;
  for (;;) {
    if (len == cap - 1) {
      char c;
      ssize_t more = read(fd, &c, 1);
      if (more > 0) err = -EOVERFLOW;
      break;
    }
    ssize_t n = read(fd, buf + len, cap - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) err = -errno;
    if (n <= 0) break;
    len += (size_t)n;
  }
  close(fd);
  buf[len] = '\0';
  return err < 0 ? err : (int)len;
}

/* Open a cgroup v2 directory by path (relative paths from the cwd). */
static int bt__open_dir(const char *dir) {
  if (dir == NULL || *dir == '\0') return -EINVAL;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct statfs sf;
  if (fstatfs(fd, &sf) < 0 || sf.f_type != CGROUP2_SUPER_MAGIC) {
    close(fd);
    return -EINVAL;
  }
  return fd;
}

/* A single file or directory name: not empty, no '/', not "." or "..". */
static int bt__is_name(const char *name) {
  return name && *name && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* The value of `key` in a "key value" per line file (cgroup.events,
 * memory.events): its number, or -ENOENT when the key is absent. */
static long long bt__keyed(const char *text, const char *key) {
  size_t klen = strlen(key);
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
    if (strncmp(p, key, klen) == 0 && p[klen] == ' ') return strtoll(p + klen + 1, NULL, 10);
  return -ENOENT;
}

/* ---- finding the hierarchy ---------------------------------------------------------- */

/* Undo mountinfo's octal escapes ("\040" for a space) in place. */
static void bt__unescape(char *s) {
  char *w = s;
  for (char *r = s; *r; r++) {
    if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
        r[3] <= '7') {
      *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
      r += 3;
    } else {
      *w++ = *r;
    }
  }
  *w = '\0';
}

/* The directory of cgroup path `cg` (as /proc/PID/cgroup names it): the
 * first cgroup2 mount whose root holds it, joined with the rest. */
static int bt__mount_dir(const char *cg, char *out, size_t outlen) {
  FILE *f = fopen("/proc/self/mountinfo", "re");
  if (f == NULL) return -errno;
  char *line = NULL;
  size_t cap = 0;
  int err = -ENOENT;
  while (err == -ENOENT && getline(&line, &cap, f) > 0) {
    char *sep = strstr(line, " - ");
    if (sep == NULL || strncmp(sep + 3, "cgroup2 ", 8) != 0) continue;
    *sep = '\0';
    /* id parent major:minor root mount-point ... */
    char *field[5], *save = NULL;
    int n = 0;
    for (char *t = strtok_r(line, " ", &save); t && n < 5; t = strtok_r(NULL, " ", &save))
      field[n++] = t;
    if (n < 5) continue;
    char *root = field[3], *mnt = field[4];
    bt__unescape(root);
    bt__unescape(mnt);
    size_t rl = strcmp(root, "/") == 0 ? 0 : strlen(root);
    if (strncmp(cg, root, rl) != 0 || (cg[rl] != '/' && cg[rl] != '\0')) continue;
    const char *rest = strcmp(cg + rl, "/") == 0 ? "" : cg + rl;
    if (strcmp(mnt, "/") == 0 && *rest) mnt = "";
    int len = snprintf(out, outlen, "%s%s", mnt, rest);
    err = len < 0 || (size_t)len >= outlen ? -ENAMETOOLONG : 0;
  }
  free(line);
  fclose(f);
  return err;
}

/* The v2 cgroup directory of process `pid` ("self" or a number). */
static int bt__cgroup_dir_of(const char *pid, char *out, size_t outlen) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%s/cgroup", pid);
  FILE *f = fopen(path, "re");
  if (f == NULL) return errno == ENOENT ? -ESRCH : -errno;
  char *line = NULL;
  size_t cap = 0;
  int err = -ENOENT;
  while (getline(&line, &cap, f) > 0) {
    if (strncmp(line, "0::", 3) != 0) continue;
    line[strcspn(line, "\n")] = '\0';
    err = bt__mount_dir(line + 3, out, outlen);
    break;
  }
  free(line);
  fclose(f);
  return err;
}

int bt_cgroup_self(char *out, size_t outlen) {
  if (out == NULL || outlen == 0) return -EINVAL;
  return bt__cgroup_dir_of("self", out, outlen);
}

/* ---- making and changing groups -------------------------------------------------- */

int bt_cgroup_open(const char *dir) {
  if (dir == NULL) return -EINVAL;
  return bt__open_dir(dir);
}

int bt_cgroup_create(const char *parent, const char *name, char *out, size_t outlen) {
  if (parent == NULL || name == NULL || out == NULL) return -EINVAL;
  if (!bt__is_name(name)) return -EINVAL;
  int dfd = bt__open_dir(parent);
  if (dfd < 0) return dfd;
  close(dfd);
  size_t plen = strlen(parent);
  while (plen > 1 && parent[plen - 1] == '/')
    plen--;
  int len = snprintf(out, outlen, "%.*s/%s", (int)plen, parent, name);
  if (len < 0 || (size_t)len >= outlen) return -ENAMETOOLONG;
  if (mkdir(out, 0755) == 0) return 0;
  int err = -errno;
  struct stat st;
  if (err == -EEXIST && stat(out, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
  return err;
}

/* Whether `word` is one of the space-separated words of `list`. */
static int bt__has_word(const char *list, const char *word, size_t wlen) {
  for (const char *p = list; *p;) {
    p += strspn(p, " \t\n");
    size_t n = strcspn(p, " \t\n");
    if (n == wlen && strncmp(p, word, n) == 0) return 1;
    p += n;
  }
  return 0;
}

int bt_cgroup_enable(const char *dir, const char *controllers, char *missing, size_t missinglen) {
  if (dir == NULL || controllers == NULL) return -EINVAL;
  static const char *const delim = " \t\n,";
  if (controllers == NULL) return -EINVAL;
  /* Check every name first, so that a bad one changes nothing. */
  for (const char *p = controllers + strspn(controllers, delim); *p; p += strspn(p, delim)) {
    if (*p == '+') p++;
    size_t n = strcspn(p, delim);
    if (n == 0 || n > 32) return -EINVAL;
    for (size_t i = 0; i < n; i++)
      if (!islower((unsigned char)p[i]) && !isdigit((unsigned char)p[i]) && p[i] != '_')
        return -EINVAL;
    p += n;
  }
  int dfd = bt__open_dir(dir);
  if (dfd < 0) return dfd;
  char avail[1024];
  int err = bt__read_at(dfd, "cgroup.controllers", avail, sizeof avail);
  if (missing && missinglen) missing[0] = '\0';
  int nmissing = 0;
  size_t mlen = 0;
  for (const char *p = controllers + strspn(controllers, delim); err >= 0 && *p;
       p += strspn(p, delim)) {
    if (*p == '+') p++;
    size_t n = strcspn(p, delim);
    if (!bt__has_word(avail, p, n)) {
      nmissing++;
      if (missing && mlen + n + 2 <= missinglen) {
        mlen += (size_t)sprintf(missing + mlen, "%s%.*s", mlen ? " " : "", (int)n, p);
      }
    } else {
      char word[40];
      snprintf(word, sizeof word, "+%.*s", (int)n, p);
      err = bt__write_at(dfd, "cgroup.subtree_control", word);
    }
    p += n;
  }
  close(dfd);
  return err < 0 ? err : nmissing;
}

int bt_cgroup_set(const char *dir, const char *file, const char *value) {
  if (dir == NULL || file == NULL || value == NULL) return -EINVAL;
  if (!bt__is_name(file) || value == NULL) return -EINVAL;
  int dfd = bt__open_dir(dir);
  if (dfd < 0) return dfd;
  int err = bt__write_at(dfd, file, value);
  close(dfd);
  return err;
}

int bt_cgroup_get(const char *dir, const char *file, char *out, size_t outlen) {
  if (dir == NULL || file == NULL || out == NULL) return -EINVAL;
  if (!bt__is_name(file) || out == NULL || outlen == 0) return -EINVAL;
  int dfd = bt__open_dir(dir);
  if (dfd < 0) return dfd;
  int len = bt__read_at(dfd, file, out, outlen);
  close(dfd);
  while (len > 0 && out[len - 1] == '\n')
    out[--len] = '\0';
  return len;
}

/* ---- state -------------------------------------------------------------------------- */

/* The number under `key` in `file` of `dir`, clamped to an int. */
static int bt__keyed_file(const char *dir, const char *file, const char *key) {
  char buf[1024];
  int dfd = bt__open_dir(dir);
  if (dfd < 0) return dfd;
  int len = bt__read_at(dfd, file, buf, sizeof buf);
  close(dfd);
  if (len < 0) return len;
  long long v = bt__keyed(buf, key);
  return v > 0x7fffffff ? 0x7fffffff : (int)v;
}

int bt_cgroup_populated(const char *dir) {
  if (dir == NULL) return -EINVAL;
  return bt__keyed_file(dir, "cgroup.events", "populated");
}

int bt_cgroup_oom_kills(const char *dir) {
  if (dir == NULL) return -EINVAL;
  return bt__keyed_file(dir, "memory.events", "oom_kill");
}

int bt_cgroup_remove(const char *dir) {
  if (dir == NULL) return -EINVAL;
  int dfd = bt__open_dir(dir);
  if (dfd < 0) return dfd;
  close(dfd);
  return rmdir(dir) < 0 ? -errno : 0;
}

/* ---- killing ------------------------------------------------------------------------ */

int bt_cgroup_kill(const char *dir) {
  if (dir == NULL) return -EINVAL;
  int dfd = bt__open_dir(dir);
  if (dfd < 0) return dfd;
  int err = bt__write_at(dfd, "cgroup.kill", "1");
  close(dfd);
  if (err == -ENOENT) return bt_cgroup_kill_sweep(dir); /* before Linux 5.14 */
  return err;
}

/* Pids seen by the sweep so far (to tell when no new process appears). */
typedef struct {
  pid_t *v;
  size_t n, cap;
} bt__pidset;

/* Add `pid`; returns 1 if it is new. When memory runs out it counts as new,
 * which only makes the sweep go on longer. */
static int bt__pidset_add(bt__pidset *s, pid_t pid) {
  for (size_t i = 0; i < s->n; i++)
    if (s->v[i] == pid) return 0;
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    pid_t *v = realloc(s->v, cap * sizeof *v);
    if (v == NULL) return 1;
    s->v = v;
    s->cap = cap;
  }
  s->v[s->n++] = pid;
  return 1;
}

/* SIGKILL `pid` if it is (still) in the group of `dfd`. Through a pidfd: if
 * the signal reaches the process, it held the pid from the pidfd_open on,
 * so the cgroup read in between was its own, and a recycled pid is never
 * hit. Without pidfd_open (before Linux 5.3), kill(2). */
static void bt__kill_member(int dfd, const struct stat *group, pid_t pid) {
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) {
    if (errno == ENOSYS) kill(pid, SIGKILL);
    return; /* ESRCH: gone already */
  }
  char num[24], dir[4096];
  struct stat st;
  snprintf(num, sizeof num, "%d", (int)pid);
  if (bt__cgroup_dir_of(num, dir, sizeof dir) == 0 && stat(dir, &st) == 0 &&
      st.st_dev == group->st_dev && st.st_ino == group->st_ino)
    bt__pidfd_send_signal(pidfd, SIGKILL);
  close(pidfd);
}

/* One round over the group of `dfd` and the groups below it: SIGKILL every
 * process listed. `listed` counts them, `fresh` those never seen before. */
static int bt__sweep(int dfd, int depth, bt__pidset *seen, int *listed, int *fresh) {
  struct stat group;
  if (fstat(dfd, &group) < 0) return -errno;
  int fd = openat(dfd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? 0 : -errno; /* removed meanwhile */
  FILE *f = fdopen(fd, "r");
  if (f == NULL) {
    close(fd);
    return -ENOMEM;
  }
  long pid;
  while (fscanf(f, "%ld", &pid) == 1) {
    (*listed)++;
    *fresh += bt__pidset_add(seen, (pid_t)pid);
    bt__kill_member(dfd, &group, (pid_t)pid);
  }
  fclose(f);
  if (depth >= BT_SWEEP_DEPTH) return 0;
  int dup = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return -errno;
  DIR *d = fdopendir(dup);
  if (d == NULL) {
    close(dup);
    return -ENOMEM;
  }
  int err = 0;
  struct dirent *e;
  while (err == 0 && (e = readdir(d)) != NULL) {
    if (e->d_type != DT_DIR || !bt__is_name(e->d_name)) continue;
    int sub = openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sub < 0) continue; /* removed meanwhile */
    err = bt__sweep(sub, depth + 1, seen, listed, fresh);
    close(sub);
  }
  closedir(d);
  return err;
}

int bt_cgroup_kill_sweep(const char *dir) {
  if (dir == NULL) return -EINVAL;
  int dfd = bt__open_dir(dir);
  if (dfd < 0) return dfd;
  /* The root group has no cgroup.events: sweeping it would kill the host. */
  if (faccessat(dfd, "cgroup.events", F_OK, 0) < 0) {
    int err = errno == ENOENT ? -EINVAL : -errno;
    close(dfd);
    return err;
  }
  /* Frozen (Linux 5.2), a process cannot fork behind the sweep's back: one
   * created during a fork already under way is born frozen, inside the
   * group, and is found by a later round. SIGKILL ends frozen processes. */
  char was[8] = "";
  int frozen = bt__read_at(dfd, "cgroup.freeze", was, sizeof was) > 0 && was[0] == '0' &&
               bt__write_at(dfd, "cgroup.freeze", "1") == 0;
  bt__pidset seen = {NULL, 0, 0};
  int err = -EAGAIN, quiet = 0;
  for (int round = 0; round < BT_SWEEP_ROUNDS; round++) {
    int listed = 0, fresh = 0;
    int r = bt__sweep(dfd, 0, &seen, &listed, &fresh);
    if (r < 0 || listed == 0) {
      err = r;
      break;
    }
    /* Only processes already killed, still on their way out (exiting ones
     * are listed until they are zombies): give them a moment. */
    quiet = fresh ? 0 : quiet + 1;
    if (quiet >= BT_SWEEP_QUIET) {
      err = 0;
      break;
    }
    if (!fresh) nanosleep(&(struct timespec){0, 1000000}, NULL);
  }
  if (frozen) bt__write_at(dfd, "cgroup.freeze", "0"); /* as it was */
  free(seen.v);
  close(dfd);
  return err;
}
