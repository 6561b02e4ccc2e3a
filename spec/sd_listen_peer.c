/*
 * sd_listen_peer.c — a server written for systemd's socket activation with
 * libsystemd's own sd-daemon API, for spec/listen_spec.lua: it proves that
 * what baton hands a child (fds from 3, LISTEN_FDS, LISTEN_PID,
 * LISTEN_FDNAMES) is what an unmodified socket-activated server expects.
 * sd_listen_fds_with_names(3) returns 0 unless LISTEN_PID is this very
 * process's pid, so a guessed or missing LISTEN_PID shows as "fds=0".
 *
 * It prints one line, "fds=N names=A:B pid=PID tcp=1 unix=1" (whether fd 3
 * is a listening TCP socket, whether fd 4 is a listening unix one), then, if
 * it got any, accepts one connection on fd 3, writes "hello from PID\n" to
 * it and exits 0; with none it exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

int main(void) {
  char **names = NULL;
  int n = sd_listen_fds_with_names(0, &names);
  char joined[256] = "";
  for (int i = 0; n > 0 && i < n && names && names[i]; i++) {
    if (i) strncat(joined, ":", sizeof joined - strlen(joined) - 1);
    strncat(joined, names[i], sizeof joined - strlen(joined) - 1);
  }
  int tcp = n >= 1 && sd_is_socket_inet(SD_LISTEN_FDS_START, AF_UNSPEC, SOCK_STREAM, 1, 0) > 0;
  int unx = n >= 2 && sd_is_socket_unix(SD_LISTEN_FDS_START + 1, SOCK_STREAM, 1, NULL, 0) > 0;
  printf("fds=%d names=%s pid=%d tcp=%d unix=%d\n", n, joined, (int)getpid(), tcp, unx);
  fflush(stdout);
  if (names) {
    for (int i = 0; names[i]; i++)
      free(names[i]);
    free(names);
  }
  if (n < 1) return 1;
  int c = accept(SD_LISTEN_FDS_START, NULL, NULL);
  if (c < 0) return 2;
  char msg[64];
  int len = snprintf(msg, sizeof msg, "hello from %d\n", (int)getpid());
  if (write(c, msg, (size_t)len) != len) return 3;
  close(c);
  return 0;
}
