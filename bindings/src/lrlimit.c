/*
 * lrlimit.c — core.RLIMIT: the resource names of the rlimits= option of
 * spawn, mapped to the kernel's RLIMIT_* numbers (setrlimit runs in the
 * child, in the core).
 */
#include <sys/resource.h>

#include "lbaton.h"

void lb_open_rlimit(lua_State *L) {
  static const struct {
    const char *name;
    int res;
  } limits[] = {
      {"as", RLIMIT_AS},           {"core", RLIMIT_CORE},         {"cpu", RLIMIT_CPU},
      {"data", RLIMIT_DATA},       {"fsize", RLIMIT_FSIZE},       {"locks", RLIMIT_LOCKS},
      {"memlock", RLIMIT_MEMLOCK}, {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
      {"nofile", RLIMIT_NOFILE},   {"nproc", RLIMIT_NPROC},       {"rss", RLIMIT_RSS},
      {"rtprio", RLIMIT_RTPRIO},   {"rttime", RLIMIT_RTTIME},     {"sigpending", RLIMIT_SIGPENDING},
      {"stack", RLIMIT_STACK}};
  lua_createtable(L, 0, (int)(sizeof limits / sizeof limits[0]));
  for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
    lua_pushinteger(L, limits[i].res);
    lua_setfield(L, -2, limits[i].name);
  }
  lua_setfield(L, -2, "RLIMIT");
}
