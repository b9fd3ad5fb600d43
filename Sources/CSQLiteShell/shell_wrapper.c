// Compiles SQLite's shell into synd-sqlite3. scripts/fetch-sqlite-shell.sh
// generates .build-shell/shell.c from Debian's sqlite3 source package (never
// committed) and patches it; without it this target builds a placeholder that
// says how to get it.
//
// Which files are remote. The platform VFS stays SQLite's default, so every file
// the shell opens by itself is local, as in stock sqlite3: .backup, .save,
// .clone, .restore's source, the unnamed temporary database. Only the shell's
// main database (the command line, .open) is opened remotely: the patch makes
// open_db() call synd_shell_open_main() below, which opens it through
// "synddb-main", a VFS that sends the main database to synddb and every other
// file to the platform VFS. It has to be a VFS of its own because SQLite opens
// an ATTACHed file, and VACUUM INTO's output, through the VFS of the connection:
// with synddb there, ATTACH 'local.db' would create a remote database. A name is
// remote elsewhere only where it says so: a `file:` URI with vfs=synddb.
#include "synd_shell.h"

#if __has_include("../../.build-shell/shell.c")
// Called by the patched shell.c (sqlite3 is only a forward-declared struct here).
struct sqlite3;
static int synd_shell_open_main(const char *zFilename, struct sqlite3 **ppDb, int flags, const char *zVfs);
static int synd_shell_open_restore_source(const char *zFilename, struct sqlite3 **ppDb);

#define main synd_shell_main
// Runs inside the shell's main, after its sqlite3_config calls: initializes
// SQLite and registers the synddb VFS (Swift, synd-sqlite3).
#define SQLITE_SHELL_INIT_PROC synd_shell_init
#include "../../.build-shell/shell.c"
#undef main

#if !defined(SYND_SHELL_PATCH) || SYND_SHELL_PATCH != 1
#error ".build-shell/shell.c is not patched for synd-sqlite3: run scripts/fetch-sqlite-shell.sh (scripts/build-sqlite-tools.sh does)"
#endif

int synd_shell_available(void) { return 1; }

#define SYND_MAIN_VFS_NAME "synddb-main"

static sqlite3_vfs *syndRemote;  // "synddb": the main database
static sqlite3_vfs *syndLocal;   // the platform VFS: every other named file
static sqlite3_vfs syndMainVfs;  // "synddb-main", registered by synd_shell_register_main_vfs
static int syndOpeningMain;      // inside synd_shell_open_main's sqlite3_open_v2
static char **syndRemoteNames;   // full names of the main databases opened remotely
static int syndRemoteNameCount;

static void syndRememberRemoteName(const char *zName) {
    for (int i = 0; i < syndRemoteNameCount; i++) {
        if (strcmp(syndRemoteNames[i], zName) == 0) return;
    }
    char **names = realloc(syndRemoteNames, sizeof(char *) * (size_t)(syndRemoteNameCount + 1));
    if (names == 0) return;
    syndRemoteNames = names;
    char *copy = strdup(zName);
    if (copy) syndRemoteNames[syndRemoteNameCount++] = copy;
}

// The journal, WAL or super-journal of a main database opened remotely. synddb
// keeps those in memory; every other name is a local file.
static int syndIsRemoteCompanion(const char *zName) {
    if (zName == 0) return 0;
    for (int i = 0; i < syndRemoteNameCount; i++) {
        size_t n = strlen(syndRemoteNames[i]);
        if (strncmp(zName, syndRemoteNames[i], n) != 0) continue;
        const char *suffix = zName + n;
        if (strcmp(suffix, "-journal") == 0 || strcmp(suffix, "-wal") == 0 || strncmp(suffix, "-mj", 3) == 0) return 1;
    }
    return 0;
}

static sqlite3_vfs *syndRoute(const char *zName, int flags) {
    // Temporary files (no name): synddb's private memory files, as for any synddb connection.
    if (zName == 0) return syndRemote;
    // A database file is remote only while the shell opens its main database;
    // an ATTACHed file or VACUUM INTO's output is a local file.
    if (flags & SQLITE_OPEN_MAIN_DB) return syndOpeningMain ? syndRemote : syndLocal;
    return syndIsRemoteCompanion(zName) ? syndRemote : syndLocal;
}

static int syndOpen(sqlite3_vfs *vfs, const char *zName, sqlite3_file *file, int flags, int *outFlags) {
    (void)vfs;
    sqlite3_vfs *target = syndRoute(zName, flags);
    return target->xOpen(target, zName, file, flags, outFlags);
}

static int syndDelete(sqlite3_vfs *vfs, const char *zName, int syncDir) {
    (void)vfs;
    sqlite3_vfs *target = syndIsRemoteCompanion(zName) ? syndRemote : syndLocal;
    return target->xDelete(target, zName, syncDir);
}

static int syndAccess(sqlite3_vfs *vfs, const char *zName, int flags, int *out) {
    (void)vfs;
    sqlite3_vfs *target = syndIsRemoteCompanion(zName) ? syndRemote : syndLocal;
    return target->xAccess(target, zName, flags, out);
}

static int syndFullPathname(sqlite3_vfs *vfs, const char *zName, int nOut, char *zOut) {
    (void)vfs;
    if (!syndOpeningMain) return syndLocal->xFullPathname(syndLocal, zName, nOut, zOut);
    // synddb keeps database names as given (they are sequencer names, not paths).
    int rc = syndRemote->xFullPathname(syndRemote, zName, nOut, zOut);
    if (rc == SQLITE_OK) syndRememberRemoteName(zOut);
    return rc;
}

static void *syndDlOpen(sqlite3_vfs *vfs, const char *zPath) {
    (void)vfs;
    return syndLocal->xDlOpen(syndLocal, zPath);
}

static void syndDlError(sqlite3_vfs *vfs, int n, char *zOut) {
    (void)vfs;
    syndLocal->xDlError(syndLocal, n, zOut);
}

static void (*syndDlSym(sqlite3_vfs *vfs, void *handle, const char *zSymbol))(void) {
    (void)vfs;
    return syndLocal->xDlSym(syndLocal, handle, zSymbol);
}

static void syndDlClose(sqlite3_vfs *vfs, void *handle) {
    (void)vfs;
    syndLocal->xDlClose(syndLocal, handle);
}

static int syndRandomness(sqlite3_vfs *vfs, int n, char *zOut) {
    (void)vfs;
    return syndLocal->xRandomness(syndLocal, n, zOut);
}

static int syndSleep(sqlite3_vfs *vfs, int micros) {
    (void)vfs;
    return syndLocal->xSleep(syndLocal, micros);
}

static int syndCurrentTime(sqlite3_vfs *vfs, double *out) {
    (void)vfs;
    return syndLocal->xCurrentTime(syndLocal, out);
}

static int syndGetLastError(sqlite3_vfs *vfs, int n, char *zOut) {
    (void)vfs;
    return syndLocal->xGetLastError ? syndLocal->xGetLastError(syndLocal, n, zOut) : 0;
}

static int syndCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *out) {
    (void)vfs;
    if (syndLocal->iVersion >= 2 && syndLocal->xCurrentTimeInt64) return syndLocal->xCurrentTimeInt64(syndLocal, out);
    double now = 0;
    int rc = syndLocal->xCurrentTime(syndLocal, &now);
    *out = (sqlite3_int64)(now * 86400000.0);
    return rc;
}

int synd_shell_register_main_vfs(void) {
    if (syndMainVfs.zName != 0) return SQLITE_OK;
    syndRemote = sqlite3_vfs_find("synddb");
    syndLocal = sqlite3_vfs_find(0);
    if (syndRemote == 0 || syndLocal == 0 || syndLocal == syndRemote) {
        fputs("synd-sqlite3: the synddb VFS must be registered, and not as the default, before synddb-main\n", stderr);
        return SQLITE_ERROR;
    }
    syndMainVfs.iVersion = 2;
    syndMainVfs.szOsFile = syndRemote->szOsFile > syndLocal->szOsFile ? syndRemote->szOsFile : syndLocal->szOsFile;
    syndMainVfs.mxPathname = syndRemote->mxPathname > syndLocal->mxPathname ? syndRemote->mxPathname : syndLocal->mxPathname;
    syndMainVfs.zName = SYND_MAIN_VFS_NAME;
    syndMainVfs.xOpen = syndOpen;
    syndMainVfs.xDelete = syndDelete;
    syndMainVfs.xAccess = syndAccess;
    syndMainVfs.xFullPathname = syndFullPathname;
    syndMainVfs.xDlOpen = syndDlOpen;
    syndMainVfs.xDlError = syndDlError;
    syndMainVfs.xDlSym = syndDlSym;
    syndMainVfs.xDlClose = syndDlClose;
    syndMainVfs.xRandomness = syndRandomness;
    syndMainVfs.xSleep = syndSleep;
    syndMainVfs.xCurrentTime = syndCurrentTime;
    syndMainVfs.xGetLastError = syndGetLastError;
    syndMainVfs.xCurrentTimeInt64 = syndCurrentTimeInt64;
    return sqlite3_vfs_register(&syndMainVfs, 0);
}

// A `file:` URI whose vfs parameter is exactly "synddb", with synddb-main
// instead, so that ATTACH on that connection stays local too. NULL otherwise.
static char *syndUriWithMainVfs(const char *zFilename) {
    if (sqlite3_strnicmp(zFilename, "file:", 5) != 0) return 0;
    const char *query = strchr(zFilename, '?');
    if (query == 0) return 0;
    const char *end = strchr(query, '#');
    if (end == 0) end = query + strlen(query);
    for (const char *p = query + 1; p < end;) {
        const char *next = memchr(p, '&', (size_t)(end - p));
        if (next == 0) next = end;
        if (next - p == 10 && memcmp(p, "vfs=synddb", 10) == 0) {
            return sqlite3_mprintf("%.*svfs=" SYND_MAIN_VFS_NAME "%s", (int)(p - zFilename), zFilename, next);
        }
        p = next + 1;
    }
    return 0;
}

// open_db()'s sqlite3_open_v2, for the main database: through synddb-main when
// the shell asked for no particular VFS and the name is a database name
// (`:memory:` and the unnamed temporary database stay local).
static int synd_shell_open_main(const char *zFilename, sqlite3 **ppDb, int flags, const char *zVfs) {
    if (zVfs != 0 || syndMainVfs.zName == 0 || zFilename == 0 || zFilename[0] == 0 || strcmp(zFilename, ":memory:") == 0) {
        return sqlite3_open_v2(zFilename, ppDb, flags, zVfs);
    }
    // Local files follow the default VFS, which the shell's -vfs option may have changed.
    sqlite3_vfs *platform = sqlite3_vfs_find(0);
    if (platform != 0 && platform != &syndMainVfs && platform != syndRemote) syndLocal = platform;
    char *uri = syndUriWithMainVfs(zFilename);
    syndOpeningMain = 1;
    int rc = sqlite3_open_v2(uri ? uri : zFilename, ppDb, flags, SYND_MAIN_VFS_NAME);
    syndOpeningMain = 0;
    sqlite3_free(uri);
    return rc;
}

// .restore's source: a file that exists. Stock sqlite3 opens it read-write with
// create, so `.restore missing.db` restores a new, empty database over main;
// read-only, a missing file is an error and main is left alone.
static int synd_shell_open_restore_source(const char *zFilename, sqlite3 **ppDb) {
    return sqlite3_open_v2(zFilename, ppDb, SQLITE_OPEN_READONLY, 0);
}

#else
#include <stdio.h>
int synd_shell_main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fputs("synd-sqlite3 was built without SQLite's shell source: run scripts/build-sqlite-tools.sh\n", stderr);
    return 1;
}
int synd_shell_available(void) { return 0; }
int synd_shell_register_main_vfs(void) { return 1; }
#endif
