#ifndef SYND_CSQLITE_SHIM_H
#define SYND_CSQLITE_SHIM_H

// Debian's libsqlite3 is built with these; the declarations only appear when they are defined.
#define SQLITE_ENABLE_SESSION 1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include <sqlite3.h>
// The routines table of loadable extensions, without sqlite3ext.h's macros
// that would redirect every sqlite3_* call through it.
#define SQLITE_CORE 1
#include <sqlite3ext.h>
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

/// The SQLite functions the VFS calls. The VFS never calls SQLite directly, so
/// the loadable extension can route these through the host's
/// sqlite3_api_routines (and link no SQLite of its own), while the Swift API
/// and the static shell pass the linked library's functions.
typedef struct synd_sqlite_api {
    sqlite3_vfs *(*vfs_find)(const char *);
    int (*vfs_register)(sqlite3_vfs *, int);
    const char *(*uri_parameter)(const char *, const char *);
    void (*log)(int, const char *, ...);
    char *(*mprintf)(const char *, ...);
} synd_sqlite_api;

/// The functions of the SQLite this binary links.
static inline synd_sqlite_api synd_linked_sqlite_api(void) {
    synd_sqlite_api api = { sqlite3_vfs_find, sqlite3_vfs_register, sqlite3_uri_parameter, sqlite3_log, sqlite3_mprintf };
    return api;
}

/// The functions of the SQLite that loaded this extension.
static inline synd_sqlite_api synd_extension_sqlite_api(const sqlite3_api_routines *r) {
    synd_sqlite_api api = { r->vfs_find, r->vfs_register, r->uri_parameter, r->log, r->mprintf };
    return api;
}

/// sqlite3_log is variadic.
static inline void synd_api_log(synd_sqlite_api api, int code, const char *message) { api.log(code, "%s", message); }
/// sqlite3_mprintf is variadic; SQLite frees the copy (FCNTL_PRAGMA error text).
static inline char *synd_api_strdup(synd_sqlite_api api, const char *s) { return api.mprintf("%s", s); }

// SQLite's configuration call is variadic; Swift cannot call it directly.
static inline int synd_sqlite_config_log(void (*fn)(void *, int, const char *), void *arg) {
    return sqlite3_config(SQLITE_CONFIG_LOG, fn, arg);
}

#endif
