/*
 * lookpath.c — find a program the way the child's execve will see it.
 *
 * The search runs in the parent, before the child exists, so the child only
 * ever makes one execve and a "not found" is known without spawning anything.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define BT_DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

static int bt__copy(char *out, size_t outlen, const char *a, size_t alen, const char *b) {
  size_t blen = b ? strlen(b) : 0;
  size_t need = alen + (b ? 1 + blen : 0) + 1;
  if (need > outlen) return -ENAMETOOLONG;
  memcpy(out, a, alen);
  if (b) {
    out[alen] = '/';
    memcpy(out + alen + 1, b, blen);
    alen += 1 + blen;
  }
  out[alen] = '\0';
  return 0;
}

int bt_lookpath(const char *file, const char *path_env, const char *cwd, char *out, size_t outlen) {
  (void)cwd; /* a relative path is resolved by the child after its chdir */
  if (file == NULL || *file == '\0') return -ENOENT;
  if (strchr(file, '/')) return bt__copy(out, outlen, file, strlen(file), NULL);

  if (path_env == NULL) path_env = BT_DEFAULT_PATH;
  int err = -ENOENT;
  for (const char *p = path_env;; p++) {
    const char *end = strchrnul(p, ':');
    /* Relative entries would make the result depend on the cwd: Go's ErrDot. */
    if (end > p && *p == '/') {
      int r = bt__copy(out, outlen, p, (size_t)(end - p), file);
      if (r == 0) {
        struct stat st;
        if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) {
          if (faccessat(AT_FDCWD, out, X_OK, AT_EACCESS) == 0) return 0;
          err = -EACCES;
        }
      } else if (err == -ENOENT) {
        err = r;
      }
    }
    if (*end == '\0') break;
    p = end;
  }
  if (outlen) out[0] = '\0';
  return err;
}
