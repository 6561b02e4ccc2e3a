/* repl.h — the interactive REPL of the baton executable. */
#ifndef BATON_REPL_H
#define BATON_REPL_H
#include <lua.h>
/* Run the REPL on the terminal until Ctrl-D; returns the exit status. */
int lb_repl(lua_State *L);
#endif
