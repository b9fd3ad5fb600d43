#ifndef SYND_CSQLITE_SHIM_H
#define SYND_CSQLITE_SHIM_H

// Debian's libsqlite3 is built with these; the declarations only appear when they are defined.
#define SQLITE_ENABLE_SESSION 1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include <sqlite3.h>
#include <string.h>

// Macros Swift cannot import.
static inline sqlite3_destructor_type synd_sqlite_transient(void) { return SQLITE_TRANSIENT; }
static const int SYND_SQLITE_IOERR_SHORT_READ = SQLITE_IOERR_SHORT_READ;
static const int SYND_SQLITE_IOERR_READ = SQLITE_IOERR_READ;
static const int SYND_SQLITE_IOERR_WRITE = SQLITE_IOERR_WRITE;
static const int SYND_SQLITE_IOERR_FSYNC = SQLITE_IOERR_FSYNC;
static const int SYND_SQLITE_IOERR_TRUNCATE = SQLITE_IOERR_TRUNCATE;
static const int SYND_SQLITE_IOERR_LOCK = SQLITE_IOERR_LOCK;
static const int SYND_SQLITE_IOERR_UNLOCK = SQLITE_IOERR_UNLOCK;
static const int SYND_SQLITE_BUSY_SNAPSHOT = SQLITE_BUSY_SNAPSHOT;
static const int SYND_SQLITE_CANTOPEN_NOTEMPDIR = SQLITE_CANTOPEN_NOTEMPDIR;
static const int SYND_SQLITE_OK_LOAD_PERMANENTLY = SQLITE_OK_LOAD_PERMANENTLY;
static const int SYND_SQLITE_CANTOPEN_FULLPATH = SQLITE_CANTOPEN_FULLPATH;
static const int SYND_SQLITE_IOERR_ACCESS = SQLITE_IOERR_ACCESS;
static const int SYND_SQLITE_BUSY_TIMEOUT = SQLITE_BUSY_TIMEOUT;

/// sqlite3_log is variadic.
static inline void synd_sqlite_log(int code, const char *message) { sqlite3_log(code, "%s", message); }
/// sqlite3_mprintf is variadic; SQLite frees the copy (FCNTL_PRAGMA error text).
static inline char *synd_sqlite_strdup(const char *s) { return sqlite3_mprintf("%s", s); }

// SQLite's configuration call is variadic; Swift cannot call it directly.
static inline int synd_sqlite_config_log(void (*fn)(void *, int, const char *), void *arg) {
    return sqlite3_config(SQLITE_CONFIG_LOG, fn, arg);
}

#endif
