/*
 * notify.c — the sd_notify protocol: a reader for the NOTIFY_SOCKET baton
 * creates for its services, the client baton uses to speak to its own
 * service manager, and /proc/<pid>/stat for attributing a message to a tree.
 *
 * The reader hands each datagram to its callback with the sender's
 * credentials and fds, then closes every fd the callback did not take, at
 * once: systemd-notify sends "BARRIER=1" with the write end of a pipe and
 * blocks until every copy of it is closed, so holding one stalls the sender
 * (5 s, then it fails). Policy (what READY=1 means for whom) is the caller's.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

/* Datagrams read per readable event: the poll is level-triggered, so more
 * wait for the next turn instead of starving the loop's other handles. */
#define BT__NOTIFY_BATCH 64

/* Fill `sa` for `path` ('@' first: the abstract namespace); returns the
 * address length, or a negative errno. */
static int bt__notify_addr(const char *path, struct sockaddr_un *sa, socklen_t *len) {
  size_t n = strlen(path);
  if (n == 0 || (path[0] == '@' && n == 1)) return -EINVAL;
  if (n > sizeof sa->sun_path - (path[0] == '@' ? 0 : 1)) return -ENAMETOOLONG;
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  memcpy(sa->sun_path, path, n);
  if (path[0] == '@') {
    /* An abstract name is its bytes after the NUL, without a terminator. */
    sa->sun_path[0] = '\0';
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  } else {
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  }
  return 0;
}

static void bt__close_fds(int *fds, int n) {
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0) {
      close(fds[i]); /* never retried on EINTR: the fd is gone either way on Linux */
      fds[i] = -1;
    }
}

/* Read one datagram and deliver it. Returns 1 when one was read (delivered or
 * dropped), 0 when none is waiting. */
static int bt__notify_read_one(bt_notify_t *n) {
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * BT_NOTIFY_MAX_FDS)];
  } control;
  struct iovec iov = {.iov_base = n->buf_, .iov_len = BT_NOTIFY_MAX};
  struct msghdr mh = {.msg_iov = &iov,
                      .msg_iovlen = 1,
                      .msg_control = control.buf,
                      .msg_controllen = sizeof control.buf};
  ssize_t r;
  do {
    r = recvmsg(n->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return 0; /* EAGAIN, or nothing this socket can recover from now */

  int fds[BT_NOTIFY_MAX_FDS];
  int nfds = 0;
  bt_notify_msg_t msg = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
      struct ucred cred;
      memcpy(&cred, CMSG_DATA(c), sizeof cred);
      msg.pid = cred.pid;
      msg.uid = cred.uid;
      msg.gid = cred.gid;
    } else if (c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int fd;
        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        if (nfds < BT_NOTIFY_MAX_FDS)
          fds[nfds++] = fd;
        else
          close(fd); /* cannot happen: the control buffer holds no more */
      }
    }
  }
  if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
    /* Part of it is lost: acting on the rest could be wrong. */
    bt__close_fds(fds, nfds);
    return 1;
  }
  n->buf_[r] = '\0';
  msg.text = n->buf_;
  msg.len = (size_t)r;
  msg.fds = fds;
  msg.nfds = nfds;
  n->cb_(n, &msg);
  bt__close_fds(fds, nfds);
  return 1;
}

static void bt__notify_on_poll(uv_poll_t *handle, int status, int events) {
  bt_notify_t *n = handle->data;
  (void)events;
  /* On a poll error the read below finds out what is wrong, or nothing. */
  (void)status;
  for (int i = 0; i < BT__NOTIFY_BATCH && !n->closing_; i++)
    if (!bt__notify_read_one(n)) break;
}

/* Watch bound socket `fd` (the handle's from now on, closed on failure). */
static int bt__notify_watch(uv_loop_t *loop, bt_notify_t *notify, int fd) {
  int err = uv_poll_init(loop, &notify->poll_, fd);
  if (err < 0) {
    if (notify->unlink_) unlink(notify->path);
    notify->unlink_ = 0;
    close(fd);
    return err;
  }
  notify->poll_.data = notify;
  notify->fd = fd;
  /* Fails on bad arguments only. */
  err = uv_poll_start(&notify->poll_, UV_READABLE, bt__notify_on_poll);
  assert(err == 0);
  notify->closing_ = 0;
  return 0;
}

static void bt__notify_init(bt_notify_t *notify, bt_notify_cb cb) {
  notify->fd = -1;
  notify->cb_ = cb;
  notify->close_cb_ = NULL;
  notify->closing_ = 1; /* nothing to close until the open succeeds */
  notify->unlink_ = 0;
  notify->path[0] = '\0';
}

int bt_notify_open(uv_loop_t *loop, bt_notify_t *notify, const char *path, bt_notify_cb cb) {
  if (notify == NULL) return -EINVAL;
  bt__notify_init(notify, cb);
  if (!bt__loop_usable(loop) || path == NULL || cb == NULL) return -EINVAL;
  struct sockaddr_un sa;
  socklen_t salen;
  int err = bt__notify_addr(path, &sa, &salen);
  if (err < 0) return err;
  snprintf(notify->path, sizeof notify->path, "%s", path);

  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) {
    err = -errno;
    goto fail;
  }
  /* Room for bursts (systemd asks for 8 MiB). FORCE passes rmem_max with
   * CAP_NET_ADMIN; otherwise the kernel caps the plain request. */
  int size = 8 * 1024 * 1024;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  if (bind(fd, (struct sockaddr *)&sa, salen) < 0) {
    err = -errno;
    goto fail;
  }
  notify->unlink_ = path[0] != '@';
  return bt__notify_watch(loop, notify, fd);

fail:
  close(fd);
  return err;
}

int bt_notify_open_fd(uv_loop_t *loop, bt_notify_t *notify, int fd, const char *path,
                      bt_notify_cb cb) {
  if (notify == NULL) return -EINVAL;
  bt__notify_init(notify, cb);
  if (fd < 0) return -EBADF;
  if (!bt__loop_usable(loop) || path == NULL || cb == NULL || path[0] == '\0') {
    close(fd);
    return -EINVAL;
  }
  snprintf(notify->path, sizeof notify->path, "%s", path);
  int one = 1;
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  notify->unlink_ = path[0] != '@';
  return bt__notify_watch(loop, notify, fd);
}

static void bt__notify_closed(uv_handle_t *handle) {
  bt_notify_t *n = handle->data;
  if (n->close_cb_) n->close_cb_(n);
}

void bt_notify_close(bt_notify_t *notify, void (*close_cb)(bt_notify_t *)) {
  if (notify == NULL) return;
  if (notify->closing_) return;
  notify->closing_ = 1;
  notify->close_cb_ = close_cb;
  /* uv_close stops the poll at once, so the fd may be closed right after. */
  uv_close((uv_handle_t *)&notify->poll_, bt__notify_closed);
  close(notify->fd);
  notify->fd = -1;
  if (notify->unlink_) unlink(notify->path);
  notify->unlink_ = 0;
}

void bt_notify_ref(bt_notify_t *notify, int ref) {
  if (notify == NULL) return;
  if (notify->closing_) return;
  if (ref)
    uv_ref((uv_handle_t *)&notify->poll_);
  else
    uv_unref((uv_handle_t *)&notify->poll_);
}

int bt_sd_notify(const char *socket_path, const char *state, const int *fds, int nfds) {
  if (state == NULL || nfds < 0 || (nfds > 0 && fds == NULL)) return -EINVAL;
  assert(state != NULL);
  if (socket_path == NULL) {
    socket_path = getenv("NOTIFY_SOCKET");
    if (socket_path == NULL || socket_path[0] == '\0') return 0;
  }
  if (nfds < 0 || nfds > BT_NOTIFY_MAX_FDS || (nfds > 0 && fds == NULL)) return -EINVAL;
  struct sockaddr_un sa;
  socklen_t salen;
  int err = bt__notify_addr(socket_path, &sa, &salen);
  if (err < 0) return err;

  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * BT_NOTIFY_MAX_FDS)];
  } control;
  struct iovec iov = {.iov_base = (void *)state, .iov_len = strlen(state)};
  struct msghdr mh = {.msg_name = &sa, .msg_namelen = salen, .msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    memset(&control, 0, sizeof control);
    mh.msg_control = control.buf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
  }
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  ssize_t r;
  do {
    r = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  err = r < 0 ? -errno : 1;
  close(fd);
  return err;
}

/* Read all of `path` (small: a /proc file) into buf; returns its length or a negative errno. */
static ssize_t bt__read_small(const char *path, char *buf, size_t cap) {
  int fd;
  do {
    fd = open(path, O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return -errno;
  size_t len = 0;
  while (len < cap - 1) {
    ssize_t r = read(fd, buf + len, cap - 1 - len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int err = -errno;
      close(fd);
      return err;
    }
    if (r == 0) break;
    len += (size_t)r;
  }
  close(fd);
  buf[len] = '\0';
  return (ssize_t)len;
}

int bt_proc_stat(pid_t pid, bt_proc_stat_t *out) {
  if (out == NULL) return -EINVAL;
  if (pid <= 0) return -EINVAL;
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  ssize_t len = bt__read_small(path, buf, sizeof buf);
  /* Gone before or while reading: either way there is no such process. */
  if (len == -ENOENT || len == -ESRCH) return -ESRCH;
  if (len < 0) return (int)len;
  /* "pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
   * majflt cmajflt utime stime cutime cstime priority nice threads
   * itrealvalue starttime …": comm is whatever the process named itself,
   * so it ends at the last ')', never the first. */
  char *open_paren = strchr(buf, '(');
  char *close_paren = strrchr(buf, ')');
  if (open_paren == NULL || close_paren == NULL || close_paren < open_paren) return -EIO;
  int p;
  if (sscanf(buf, "%d", &p) != 1) return -EIO;
  /* After the name, space-separated: state is field 0, then ppid, pgrp,
   * session, …, and starttime is field 19. */
  char *field[20];
  int nf = 0;
  for (char *c = close_paren + 1; *c != '\0' && nf < 20;) {
    while (*c == ' ')
      c++;
    if (*c == '\0' || *c == '\n') break;
    field[nf++] = c;
    while (*c != ' ' && *c != '\0')
      c++;
  }
  if (nf < 20) return -EIO;
  char state = field[0][0];
  long ppid = strtol(field[1], NULL, 10), pgid = strtol(field[2], NULL, 10),
       sid = strtol(field[3], NULL, 10);
  unsigned long long start = strtoull(field[19], NULL, 10);
  out->pid = (pid_t)p;
  out->ppid = (pid_t)ppid;
  out->pgid = (pid_t)pgid;
  out->sid = (pid_t)sid;
  out->state = state;
  out->start = start;
  size_t clen = (size_t)(close_paren - open_paren - 1);
  if (clen >= sizeof out->comm) clen = sizeof out->comm - 1;
  memcpy(out->comm, open_paren + 1, clen);
  out->comm[clen] = '\0';
  return 0;
}
