import CSQLite
import Synchronization

/// The SyndDB SQLite VFS (https://www.sqlite.org/vfs.html).
///
/// The main database file lives in a sequencer; journals and temp files stay
/// local, in memory. Register it once, then open databases with `vfs=synddb`
/// (or make it the default):
///
///     try SyndVFS.register()
///     sqlite3_open_v2("file:app?sequencer=http://127.0.0.1:8433", &db, flags, "synddb")
public enum SyndVFS {
    /// The name the VFS registers under.
    public static let name = "synddb"

    /// Registers the VFS with SQLite; safe to call more than once. SQLite must
    /// be initialized (https://www.sqlite.org/c3ref/initialize.html).
    ///
    /// - Parameters:
    ///   - makeDefault: also make it SQLite's default VFS.
    ///   - api: the SQLite to register into: `synd_linked_sqlite_api()` for the
    ///     linked library, `synd_extension_sqlite_api(pApi)` in an extension.
    ///   - printsOpenErrors: also print why an open failed to stderr, for hosts
    ///     (shells, Python) that only show SQLite's generic message.
    /// - Returns: SQLite's result code.
    @discardableResult
    public static func register(makeDefault: Bool = false, api: synd_sqlite_api, printsOpenErrors: Bool = false) -> Int32 {
        let registration = Registration.holder.withLock { r -> Registration? in
            if r == nil { r = Registration(api: api, printsOpenErrors: printsOpenErrors) }
            return r
        }
        guard let registration else { return SQLITE_ERROR }
        return api.vfs_register(registration.vfs, makeDefault ? 1 : 0)
    }
}

/// The registered sqlite3_vfs and io_methods: built once, at stable addresses,
/// and never changed afterwards.
final class Registration: Sendable {
    // Safe: written once in init, then only read by SQLite.
    nonisolated(unsafe) let vfs: UnsafeMutablePointer<sqlite3_vfs>
    nonisolated(unsafe) let methods: UnsafeMutablePointer<sqlite3_io_methods>
    let context: VFSContext

    /// SQLite's VFS list is process-wide, so the registration is too: made once,
    /// by the first `register` call, and never changed.
    static let holder = Mutex<Registration?>(nil)

    fileprivate init?(api: synd_sqlite_api, printsOpenErrors: Bool) {
        guard let platform = api.vfs_find(nil) else { return nil }
        methods = .allocate(capacity: 1)
        methods.initialize(to: IOMethods.table)
        context = VFSContext(name: SyndVFS.name, platform: platform, api: api, methods: methods, printsOpenErrors: printsOpenErrors)
        vfs = .allocate(capacity: 1)
        vfs.initialize(to: VFSMethods.table(
            name: SyndVFS.name, context: Unmanaged.passUnretained(context).toOpaque(),
            platform: platform))
    }
}
