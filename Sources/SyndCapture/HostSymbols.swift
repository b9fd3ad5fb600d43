import CSQLite

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Functions of the host's SQLite that neither `sqlite3_api_routines` nor
/// `synd_session_api` carries, looked up in the same loaded object as the
/// host's routines (never in another copy of SQLite).
enum HostSymbols {
    /// `sqlite3_preupdate_depth`: nil when the host does not export it (a
    /// static executable without exported symbols). Capture then marks no
    /// change indirect, which only the changeset's indirect flags show.
    static func preupdateDepth(_ routines: UnsafePointer<sqlite3_api_routines>) -> (@convention(c) (OpaquePointer?) -> Int32)? {
        var info = synd_dl_info()
        guard let anchor = routines.pointee.libversion_number,
            synd_dladdr(unsafeBitCast(anchor, to: UnsafeRawPointer.self), &info) != 0
        else { return nil }
        var handle: UnsafeMutableRawPointer?
        if let path = info.dli_fname { handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD) }
        if handle == nil { handle = dlopen(nil, RTLD_NOW) }
        guard let handle, let p = dlsym(handle, "sqlite3_preupdate_depth") else { return nil }
        return unsafeBitCast(p, to: (@convention(c) (OpaquePointer?) -> Int32).self)
    }
}
