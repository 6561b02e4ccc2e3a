/*
 * server.c — a small HTTP/1.1 server made hot-upgradable under baton
 * (issue 14's host example 5) with nothing of baton's: libsystemd's own
 * sd-daemon API does the job, so baton adds no C helper of its own (run.lua
 * next to this file supervises and upgrades it). It is also the peer of
 * spec/upgrade_peers_spec.lua and bench/upgrade.lua. It takes its listeners with
 * sd_listen_fds_with_names(3) (which returns 0 unless LISTEN_PID is this very process), says
 * READY=1 with sd_notify(3), and answers every GET with the body "$GEN\n".
 *
 * Without LISTEN_FDS it binds the address given as its argument
 * (`127.0.0.1:PORT`, SO_REUSEADDR) itself: the naive server a
 * stop-then-start restart replaces, with a gap when nobody listens.
 *
 * It drains on TERM: it stops accepting (what waits in the kernel's queue is
 * the next generation's), answers the request each open connection sends
 * next with "Connection: close" and closes it, closes connections idle for a
 * second, and exits 0 once none is left. It opens no fd but its sockets, so
 * /proc/PID/fd shows exactly stdio, its listeners and its connections; the
 * signal is taken with ppoll(2)'s mask, not a signalfd or a self-pipe.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

enum { MAX_LISTEN = 8, MAX_CONN = 4096, BUF = 8192 };

struct conn {
  int fd;
  size_t in_len;
  char in[BUF];
  size_t out_len, out_off;
  char out[256];
  int close_after;
  double last; /* when it last did something, for the drain's idle bound */
};

static volatile sig_atomic_t draining;
static int listeners[MAX_LISTEN];
static int n_listeners;
static struct conn *conns[MAX_CONN];
static int n_conns;
static char body[64];

static void on_term(int sig) {
  (void)sig;
  draining = 1;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The listening socket the argument names, bound here (the naive mode). */
static int bind_self(const char *addr) {
  char host[64];
  const char *colon = strrchr(addr, ':');
  if (!colon || (size_t)(colon - addr) >= sizeof host) return -1;
  memcpy(host, addr, (size_t)(colon - addr));
  host[colon - addr] = '\0';
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return -1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 128) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void drop(int i) {
  close(conns[i]->fd);
  free(conns[i]);
  conns[i] = conns[--n_conns];
}

/* A whole request is in: queue its answer, and whether to close after it. */
static void answer(struct conn *c, const char *req, size_t head_len) {
  int keep = strstr(req, "HTTP/1.1") != NULL;
  for (const char *p = req; p && p < req + head_len; p = strstr(p, "\r\n")) {
    p += (*p == '\r') ? 2 : 0;
    if (strncasecmp(p, "connection:", 11) == 0) {
      const char *v = p + 11;
      while (*v == ' ')
        v++;
      if (strncasecmp(v, "close", 5) == 0) keep = 0;
      if (strncasecmp(v, "keep-alive", 10) == 0) keep = 1;
    }
  }
  if (draining) keep = 0;
  c->close_after = !keep;
  int n = snprintf(c->out, sizeof c->out,
                   "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                   "Connection: %s\r\n\r\n%s",
                   strlen(body), keep ? "keep-alive" : "close", body);
  c->out_len = (size_t)n;
  c->out_off = 0;
}

/* If a whole request head is buffered, answer it and drop it from the buffer. */
static void answer_next(struct conn *c) {
  char *end = strstr(c->in, "\r\n\r\n");
  if (end == NULL) return;
  size_t head = (size_t)(end + 4 - c->in);
  answer(c, c->in, head);
  memmove(c->in, c->in + head, c->in_len - head);
  c->in_len -= head;
  c->in[c->in_len] = '\0';
}

/* Read what the connection sent; 0 to keep it, -1 to drop it. */
static int on_readable(struct conn *c) {
  for (;;) {
    if (c->in_len == sizeof c->in - 1) return -1; /* (a request head this large: refused) */
    ssize_t n = read(c->fd, c->in + c->in_len, sizeof c->in - 1 - c->in_len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) return -1;
    c->in_len += (size_t)n;
    c->in[c->in_len] = '\0';
  }
  if (c->out_len == 0) answer_next(c);
  return 0;
}

/* Write what is queued; 0 to keep the connection, -1 to close it. */
static int on_writable(struct conn *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return 0;
    if (n < 0) return -1;
    c->out_off += (size_t)n;
  }
  c->out_len = c->out_off = 0;
  if (c->close_after) return -1;
  answer_next(c); /* (a pipelined request already read gets its answer now) */
  return 0;
}

static void accept_all(int lfd) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return; /* EAGAIN: another generation or process took it */
    struct conn *c = n_conns < MAX_CONN ? calloc(1, sizeof *c) : NULL;
    if (!c) {
      close(fd);
      continue;
    }
    c->fd = fd;
    c->last = now();
    conns[n_conns++] = c;
  }
}

int main(int argc, char **argv) {
  const char *gen = getenv("GEN");
  snprintf(body, sizeof body, "%s\n", gen ? gen : "?");
  sigset_t term, orig;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  sigprocmask(SIG_BLOCK, &term, &orig);
  struct sigaction sa = {.sa_handler = on_term};
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  char **names = NULL;
  int n = sd_listen_fds_with_names(1, &names);
  for (int i = 0; names && names[i]; i++)
    free(names[i]);
  free(names);
  if (n > 0) {
    for (int i = 0; i < n && n_listeners < MAX_LISTEN; i++)
      listeners[n_listeners++] = SD_LISTEN_FDS_START + i;
  } else if (argc > 1) {
    int fd = bind_self(argv[1]);
    if (fd < 0) {
      fprintf(stderr, "sd_http_server: cannot listen on %s: %s\n", argv[1], strerror(errno));
      return 111;
    }
    listeners[n_listeners++] = fd;
  } else {
    fprintf(stderr, "sd_http_server: no listener (LISTEN_FDS, or an address argument)\n");
    return 100;
  }
  for (int i = 0; i < n_listeners; i++)
    fcntl(listeners[i], F_SETFL, fcntl(listeners[i], F_GETFL) | O_NONBLOCK);
  sd_notify(0, "READY=1");

  static struct pollfd pfd[MAX_LISTEN + MAX_CONN];
  int drain_seen = 0;
  for (;;) {
    int was_draining = draining;
    if (was_draining && !drain_seen) { /* (the idle bound counts from the drain's start) */
      drain_seen = 1;
      for (int i = 0; i < n_conns; i++)
        conns[i]->last = now();
    }
    if (was_draining && n_conns == 0) break;
    int np = 0, nl = was_draining ? 0 : n_listeners;
    for (int i = 0; i < nl; i++)
      pfd[np++] = (struct pollfd){.fd = listeners[i], .events = POLLIN};
    for (int i = 0; i < n_conns; i++)
      pfd[np++] =
          (struct pollfd){.fd = conns[i]->fd, .events = conns[i]->out_len ? POLLOUT : POLLIN};
    struct timespec tick = {0, 100 * 1000 * 1000};
    int r = ppoll(pfd, (nfds_t)np, was_draining ? &tick : NULL, &orig);
    if (r < 0 && errno != EINTR) return 111;
    if (r < 0) continue; /* TERM: poll again, without the listeners */
    double t = now();
    /* Connections first, from the last: drop() moves the last one into the hole. */
    for (int i = n_conns - 1; i >= 0; i--) {
      short ev = pfd[nl + i].revents;
      struct conn *c = conns[i];
      int rc = 0;
      if (ev & (POLLERR | POLLHUP | POLLNVAL) && !(ev & POLLIN))
        rc = -1;
      else if (ev & POLLIN)
        rc = on_readable(c);
      else if (ev & POLLOUT)
        rc = on_writable(c);
      if (ev) c->last = t;
      if (rc == 0 && c->out_len && ev & POLLIN) rc = on_writable(c); /* (answer at once) */
      if (rc == 0 && draining && c->out_len == 0 && c->in_len == 0 && t - c->last > 1.0) rc = -1;
      if (rc < 0) drop(i);
    }
    for (int i = 0; i < nl; i++)
      if (pfd[i].revents & POLLIN) accept_all(listeners[i]);
  }
  for (int i = 0; i < n_listeners; i++)
    close(listeners[i]);
  return 0;
}
