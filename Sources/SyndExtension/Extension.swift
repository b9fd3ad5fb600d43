import CSQLite
import SyndVFS

#if canImport(Glibc)
import Glibc
#endif

// libsyndvfs.so: SyndDB's VFS as a loadable SQLite extension
// (https://www.sqlite.org/loadext.html). It links no SQLite: every SQLite call
// goes through the sqlite3_api_routines of the host that loads it, so it
// registers into the host's SQLite even when that is a static copy.
//
//     sqlite> .load ./libsyndvfs
//     sqlite> .open file:app?vfs=synddb&sequencer=http://127.0.0.1:8433
//
// SYNDDB_DEFAULT_VFS=1, or the entry point sqlite3_syndvfs_default_init, also
// makes it the default VFS.

/// Entry point SQLite derives from the file name `libsyndvfs.so`.
@_cdecl("sqlite3_syndvfs_init")
public func sqlite3_syndvfs_init(
    _ db: OpaquePointer?, _ errorMessage: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    _ routines: UnsafePointer<sqlite3_api_routines>?
) -> Int32 {
    let wantsDefault = getenv("SYNDDB_DEFAULT_VFS").map { String(cString: $0) == "1" } ?? false
    return registerExtension(routines, makeDefault: wantsDefault, errorMessage)
}

/// `.load ./libsyndvfs sqlite3_syndvfs_default_init`: register as the default VFS.
@_cdecl("sqlite3_syndvfs_default_init")
public func sqlite3_syndvfs_default_init(
    _ db: OpaquePointer?, _ errorMessage: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    _ routines: UnsafePointer<sqlite3_api_routines>?
) -> Int32 {
    registerExtension(routines, makeDefault: true, errorMessage)
}

private func registerExtension(
    _ routines: UnsafePointer<sqlite3_api_routines>?, makeDefault: Bool,
    _ errorMessage: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    guard let routines else { return SQLITE_ERROR }
    let api = synd_extension_sqlite_api(routines)
    let rc = SyndVFS.register(makeDefault: makeDefault, api: api, printsOpenErrors: true)
    guard rc == SQLITE_OK else {
        errorMessage?.pointee = synd_api_strdup(api, "synddb: registering the VFS failed (\(rc))")
        return rc
    }
    // Stay loaded after the connection that loaded us closes: the VFS is process-wide.
    return SYND_SQLITE_OK_LOAD_PERMANENTLY
}
