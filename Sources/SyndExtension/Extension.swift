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
    let api = synd_extension_sqlite_api(routines, hostSessionAPI(routines))
    let rc = SyndVFS.register(makeDefault: makeDefault, api: api, printsOpenErrors: true)
    guard rc == SQLITE_OK else {
        errorMessage?.pointee = synd_api_strdup(api, "synddb: registering the VFS failed (\(rc))")
        return rc
    }
    // Stay loaded after the connection that loaded us closes: the VFS is process-wide.
    return SYND_SQLITE_OK_LOAD_PERMANENTLY
}

/// The preupdate hook and session functions are not in sqlite3_api_routines:
/// find them in the same loaded object as the host's routines (its
/// libsqlite3.so, or an executable that exports them), never in another copy.
private func hostSessionAPI(_ routines: UnsafePointer<sqlite3_api_routines>) -> synd_session_api {
    var api = synd_session_api()
    var info = synd_dl_info()
    guard let anchor = routines.pointee.libversion_number,
        synd_dladdr(unsafeBitCast(anchor, to: UnsafeRawPointer.self), &info) != 0
    else { return api }
    var handle: UnsafeMutableRawPointer?
    if let path = info.dli_fname { handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD) }
    if handle == nil { handle = dlopen(nil, RTLD_NOW) }
    guard let handle else { return api }
    func symbol<T>(_ name: String) -> T? {
        guard let p = dlsym(handle, name) else { return nil }
        return unsafeBitCast(p, to: T.self)
    }
    api.preupdate_hook = symbol("sqlite3_preupdate_hook")
    api.preupdate_old = symbol("sqlite3_preupdate_old")
    api.preupdate_new = symbol("sqlite3_preupdate_new")
    api.preupdate_count = symbol("sqlite3_preupdate_count")
    api.session_create = symbol("sqlite3session_create")
    api.session_attach = symbol("sqlite3session_attach")
    api.session_changeset = symbol("sqlite3session_changeset")
    api.session_delete = symbol("sqlite3session_delete")
    return api
}
