#ifndef SYND_SHELL_H
#define SYND_SHELL_H

/// SQLite's own shell (shell.c from Debian's sqlite3 source), renamed from main.
int synd_shell_main(int argc, char **argv);

/// 1 when the real shell was compiled in, 0 for the placeholder.
int synd_shell_available(void);

/// Registers "synddb-main", the VFS of the shell's main database: the main
/// database goes to synddb, every other file (ATTACH, VACUUM INTO, their
/// journals) to the default VFS. Call after registering synddb as a
/// non-default VFS. Returns SQLite's result code.
int synd_shell_register_main_vfs(void);

#endif
