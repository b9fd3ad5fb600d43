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
#include <malloc.h>

// glibc's malloc_trim (malloc.h is not in Swift's Glibc module).
static inline void synd_malloc_trim(void) { (void)malloc_trim(0); }

// Macros Swift cannot import.
static inline sqlite3_destructor_type synd_sqlite_transient(void) { return SQLITE_TRANSIENT; }
static const int SYND_SQLITE_IOERR_SHORT_READ = SQLITE_IOERR_SHORT_READ;
static const int SYND_SQLITE_IOERR_READ = SQLITE_IOERR_READ;
static const int SYND_SQLITE_IOERR_WRITE = SQLITE_IOERR_WRITE;
static const int SYND_SQLITE_IOERR_FSYNC = SQLITE_IOERR_FSYNC;
static const int SYND_SQLITE_IOERR_TRUNCATE = SQLITE_IOERR_TRUNCATE;
static const int SYND_SQLITE_IOERR_LOCK = SQLITE_IOERR_LOCK;
static const int SYND_SQLITE_IOERR_FSTAT = SQLITE_IOERR_FSTAT;
static const int SYND_SQLITE_IOERR_UNLOCK = SQLITE_IOERR_UNLOCK;
static const int SYND_SQLITE_BUSY_SNAPSHOT = SQLITE_BUSY_SNAPSHOT;
static const int SYND_SQLITE_CANTOPEN_NOTEMPDIR = SQLITE_CANTOPEN_NOTEMPDIR;
static const int SYND_SQLITE_OK_LOAD_PERMANENTLY = SQLITE_OK_LOAD_PERMANENTLY;
static const int SYND_SQLITE_CANTOPEN_FULLPATH = SQLITE_CANTOPEN_FULLPATH;
static const int SYND_SQLITE_IOERR_ACCESS = SQLITE_IOERR_ACCESS;
static const int SYND_SQLITE_IOERR_DELETE = SQLITE_IOERR_DELETE;
static const int SYND_SQLITE_BUSY_TIMEOUT = SQLITE_BUSY_TIMEOUT;

/// The SQLite functions the VFS calls. The VFS never calls SQLite directly, so
/// the loadable extension can route these through the host's
/// sqlite3_api_routines (and link no SQLite of its own), while the Swift API
/// and the static shell pass the linked library's functions.
/// The preupdate hook and the session extension: not in sqlite3_api_routines,
/// so an extension resolves them from its host's SQLite image (any may be NULL).
typedef void (*synd_preupdate_callback)(void *, sqlite3 *, int, const char *, const char *, sqlite3_int64, sqlite3_int64);
typedef struct synd_session_api {
    void *(*preupdate_hook)(sqlite3 *, synd_preupdate_callback, void *);
    int (*preupdate_old)(sqlite3 *, int, sqlite3_value **);
    int (*preupdate_new)(sqlite3 *, int, sqlite3_value **);
    int (*preupdate_count)(sqlite3 *);
    int (*session_create)(sqlite3 *, const char *, sqlite3_session **);
    int (*session_attach)(sqlite3_session *, const char *);
    int (*session_changeset)(sqlite3_session *, int *, void **);
    void (*session_delete)(sqlite3_session *);
} synd_session_api;

typedef struct synd_sqlite_api {
    sqlite3_vfs *(*vfs_find)(const char *);
    int (*vfs_register)(sqlite3_vfs *, int);
    const char *(*uri_parameter)(const char *, const char *);
    void (*log)(int, const char *, ...);
    char *(*mprintf)(const char *, ...);
    int (*auto_extension)(void (*)(void));
    synd_session_api session;
} synd_sqlite_api;

/// The functions of the SQLite this binary links.
static inline synd_sqlite_api synd_linked_sqlite_api(void) {
    synd_session_api session = {
        sqlite3_preupdate_hook, sqlite3_preupdate_old, sqlite3_preupdate_new, sqlite3_preupdate_count,
        sqlite3session_create, sqlite3session_attach, sqlite3session_changeset, sqlite3session_delete };
    synd_sqlite_api api = { sqlite3_vfs_find, sqlite3_vfs_register, sqlite3_uri_parameter, sqlite3_log, sqlite3_mprintf,
                            sqlite3_auto_extension, session };
    return api;
}

/// The functions of the SQLite that loaded this extension; `session` is filled by the caller.
static inline synd_sqlite_api synd_extension_sqlite_api(const sqlite3_api_routines *r, synd_session_api session) {
    synd_sqlite_api api = { r->vfs_find, r->vfs_register, r->uri_parameter, r->log, r->mprintf,
                            r->auto_extension, session };
    return api;
}

/// dladdr(3) without _GNU_SOURCE (glibc's Dl_info layout).
typedef struct synd_dl_info {
    const char *dli_fname;
    void *dli_fbase;
    const char *dli_sname;
    void *dli_saddr;
} synd_dl_info;
extern int synd_dladdr(const void *address, synd_dl_info *info) __asm__("dladdr");

/// sqlite3_db_config is variadic (linked SQLite).
static inline int synd_linked_enable_triggers(sqlite3 *db, int on) {
    return sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, on, (int *)0);
}

/// sqlite3_db_config is variadic (host SQLite).
static inline int synd_db_enable_triggers(const sqlite3_api_routines *r, sqlite3 *db, int on) {
    return r->db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, on, (int *)0);
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
