// Compiles SQLite's shell into synd-sqlite3. scripts/build-shell.sh generates
// .build-shell/shell.c from Debian's sqlite3 source package (never committed);
// without it this target builds a placeholder that says how to get it.
#include "synd_shell.h"

#if __has_include("../../.build-shell/shell.c")
#define main synd_shell_main
// Runs inside the shell's main, after its sqlite3_config calls: initializes
// SQLite and registers the synddb VFS as the default (Swift, synd-sqlite3).
#define SQLITE_SHELL_INIT_PROC synd_shell_init
#include "../../.build-shell/shell.c"
int synd_shell_available(void) { return 1; }
#else
#include <stdio.h>
int synd_shell_main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fputs("synd-sqlite3 was built without SQLite's shell source: run scripts/build-shell.sh\n", stderr);
    return 1;
}
int synd_shell_available(void) { return 0; }
#endif
