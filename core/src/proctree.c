/*
 * proctree.c — a process's descendants, found through the kernel's own
 * list of each thread's children (/proc/PID/task/TID/children), so that a
 * service's whole tree can be stopped: also what left its process group
 * (setsid) but still descends from it.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* Append the children of every thread of `pid` to out[*n..max). Returns 0,
 * -ESRCH when the process is gone, or -ENOSYS when the kernel does not list
 * children (CONFIG_PROC_CHILDREN). */
static int children_of(pid_t pid, pid_t *out, int *n, int max) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (d == NULL) return -ESRCH;
  int err = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    char file[320];
    snprintf(file, sizeof file, "/proc/%d/task/%s/children", (int)pid, e->d_name);
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      /* The thread ended meanwhile, or the kernel keeps no such list. */
      snprintf(file, sizeof file, "/proc/%d/task/%s", (int)pid, e->d_name);
      if (errno == ENOENT && access(file, F_OK) == 0) err = -ENOSYS;
      continue;
    }
    char buf[4096];
    ssize_t r;
    char num[16];
    size_t nl = 0;
    while ((r = read(fd, buf, sizeof buf)) > 0) {
      for (ssize_t i = 0; i < r; i++) {
        char c = buf[i];
        if (c >= '0' && c <= '9' && nl < sizeof num - 1) {
          num[nl++] = c;
        } else if (nl > 0) {
          num[nl] = '\0';
          if (*n < max) out[(*n)++] = (pid_t)atoi(num);
          nl = 0;
        }
      }
    }
    if (nl > 0) {
      num[nl] = '\0';
      if (*n < max) out[(*n)++] = (pid_t)atoi(num);
    }
    close(fd);
  }
  closedir(d);
  return err;
}

int bt_proc_descendants(pid_t pid, pid_t *out, int max) {
  if (max < 0 || (max > 0 && out == NULL)) return -EINVAL;
  if (pid <= 0 || out == NULL || max < 0) return -EINVAL;
  int n = 0;
  int err = children_of(pid, out, &n, max);
  if (err == -ESRCH || err == -ENOSYS) return err;
  /* Breadth first: each found pid's children are appended behind it. */
  for (int i = 0; i < n; i++) {
    int e = children_of(out[i], out, &n, max);
    if (e == -ENOSYS) return e;
  }
  return n;
}
