#ifndef SYND_SHELL_H
#define SYND_SHELL_H

/// SQLite's own shell (shell.c from Debian's sqlite3 source), renamed from main.
int synd_shell_main(int argc, char **argv);

/// 1 when the real shell was compiled in, 0 for the placeholder.
int synd_shell_available(void);

#endif
