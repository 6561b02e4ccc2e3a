/*
 * lookpath.c — find a program the way the child's execve will see it.
 *
 * The search runs in the parent, before the child exists, so the child only
 * ever makes one execve and a "not found" is known without spawning anything.
 * The rules are Go's (exec.LookPath, and Cmd.Dir for relative paths); see
 * bt_lookpath in baton.h.
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
  if (file == NULL || out == NULL || outlen == 0) return -EINVAL;
  if (file == NULL || *file == '\0') return -ENOENT;
  if (strchr(file, '/')) {
    /* A path, not searched. A relative one names a file in the child's
     * working directory: its execve runs after its chdir. */
    if (file[0] == '/' || cwd == NULL || cwd[0] == '\0')
      return bt__copy(out, outlen, file, strlen(file), NULL);
    while (file[0] == '.' && file[1] == '/') { /* "./prog" is "prog" there */
      file += 2;
      while (*file == '/')
        file++;
    }
    size_t clen = strlen(cwd);
    while (clen > 0 && cwd[clen - 1] == '/') /* "/" joins as "" + "/" + file */
      clen--;
    return bt__copy(out, outlen, cwd, clen, file);
  }

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
