/*
 * names.c — the names the core gives to numbers: signals both ways ("TERM",
 * "SIGTERM", "15" <-> 15), errno values ("ENOEXEC" and its message), and the
 * steps of a spawn ("cgroup", "chdir", "exec").
 *
 * Hosts use them to build messages and to accept signal names from users; no
 * other file of the core depends on them. Every string returned is static,
 * except bt_strerror's, which lives in a per-thread buffer.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

static const struct {
  const char *name; /* without the SIG prefix */
  int num;
} bt__signals[] = {
    {"HUP", SIGHUP},       {"INT", SIGINT},   {"QUIT", SIGQUIT},     {"ILL", SIGILL},
    {"TRAP", SIGTRAP},     {"ABRT", SIGABRT}, {"IOT", SIGIOT},       {"BUS", SIGBUS},
    {"FPE", SIGFPE},       {"KILL", SIGKILL}, {"USR1", SIGUSR1},     {"SEGV", SIGSEGV},
    {"USR2", SIGUSR2},     {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},     {"TERM", SIGTERM},
    {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT},     {"STOP", SIGSTOP},
    {"TSTP", SIGTSTP},     {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU},     {"URG", SIGURG},
    {"XCPU", SIGXCPU},     {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF},
    {"WINCH", SIGWINCH},   {"IO", SIGIO},     {"PWR", SIGPWR},       {"SYS", SIGSYS},
};

#define NSIGNALS (sizeof bt__signals / sizeof bt__signals[0])

int bt_signal_number(const char *name) {
  if (name == NULL) return -EINVAL;
  if (name == NULL || *name == '\0') return -EINVAL;
  if (isdigit((unsigned char)name[0])) {
    char *end;
    long n = strtol(name, &end, 10);
    if (*end != '\0' || n < 0 || n >= NSIG) return -EINVAL;
    return (int)n;
  }
  if (strncasecmp(name, "SIG", 3) == 0) name += 3;
  for (size_t i = 0; i < NSIGNALS; i++)
    if (strcasecmp(name, bt__signals[i].name) == 0) return bt__signals[i].num;
  return -EINVAL;
}

const char *bt_signal_name(int sig) {
  static const char *const full[] = {
#define S(n) [SIG##n] = "SIG" #n
      S(HUP),  S(INT),    S(QUIT), S(ILL),   S(TRAP), S(ABRT), S(BUS),  S(FPE),
      S(KILL), S(USR1),   S(SEGV), S(USR2),  S(PIPE), S(ALRM), S(TERM), S(STKFLT),
      S(CHLD), S(CONT),   S(STOP), S(TSTP),  S(TTIN), S(TTOU), S(URG),  S(XCPU),
      S(XFSZ), S(VTALRM), S(PROF), S(WINCH), S(IO),   S(PWR),  S(SYS),
#undef S
  };
  if (sig <= 0 || (size_t)sig >= sizeof full / sizeof full[0]) return NULL;
  return full[sig];
}

const char *bt_stage_name(bt_stage stage) {
  switch (stage) {
  case BT_STAGE_NONE: return "none";
  case BT_STAGE_LOOKUP: return "lookup";
  case BT_STAGE_SETUP: return "setup";
  case BT_STAGE_PGRP: return "setsid";
  case BT_STAGE_LIMITS: return "limits";
  case BT_STAGE_CREDS: return "credentials";
  case BT_STAGE_STDIO: return "stdio";
  case BT_STAGE_CHDIR: return "chdir";
  case BT_STAGE_EXEC: return "exec";
  case BT_STAGE_CGROUP: return "cgroup";
  }
  return "unknown";
}

/* libuv's own codes (UV_EOF, UV_EAI_*, …) are below -3000; above is errno.
 * For an errno libuv does not know, uv_err_name and uv_strerror allocate a
 * string they never free: ask glibc instead. */
#define BT_IS_ERRNO(err) ((err) < 0 && (err) > -3000)

const char *bt_err_name(int err) {
  if (err >= 0) return "EUNKNOWN"; /* not an error code: libuv would allocate */
  if (!BT_IS_ERRNO(err)) return uv_err_name(err);
  const char *name = strerrorname_np(-err);
  return name ? name : "EUNKNOWN";
}

const char *bt_strerror(int err) {
  if (err >= 0) return "unknown error"; /* not an error code: libuv would allocate */
  if (!BT_IS_ERRNO(err)) return uv_strerror(err);
  /* glibc's message, lower-cased like libuv's, in a per-thread buffer. */
  static _Thread_local char buf[128];
  const char *m = strerror(-err);
  size_t i = 0;
  for (; m[i] && i < sizeof buf - 1; i++)
    buf[i] = (char)tolower((unsigned char)m[i]);
  buf[i] = '\0';
  return buf;
}
