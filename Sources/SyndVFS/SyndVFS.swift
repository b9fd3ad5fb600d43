import CSQLite
import SyndClient

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

    /// File control (https://www.sqlite.org/c3ref/file_control.html) that fills
    /// `statisticsCount` Int64s, starting with requests made, batches committed,
    /// version, lease epoch.
    public static let statisticsFileControl: Int32 = 0x5359_4E01
    /// How many Int64 values `statisticsFileControl` writes: requests, commits,
    /// version, lease epoch, lease acquisitions, cached pages kept on refresh,
    /// reads sent ahead of a scan, and those of them whose answer was used.
    public static let statisticsCount = 8

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
        let rc = api.vfs_register(registration.vfs, makeDefault ? 1 : 0)
        guard rc == SQLITE_OK else { return rc }
        // Every new connection passes through here; those whose main database is
        // a synddb writer get the preupdate hook that changeset capture needs.
        // (SQLite ignores a second registration of the same entry point.)
        return api.auto_extension?(unsafeBitCast(connectionOpened, to: (@convention(c) () -> Void).self)) ?? SQLITE_ERROR
    }
}

/// The auto-extension entry point (https://www.sqlite.org/c3ref/auto_extension.html).
/// SQLite passes its own sqlite3_api_routines, whichever copy of SQLite it is.
private let connectionOpened: @convention(c) (
    OpaquePointer?, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, UnsafePointer<sqlite3_api_routines>?
) -> Int32 = { db, _, routines in
    guard let db, let routines,
        let methods = Registration.holder.withLock({ $0?.context.methods })
    else { return SQLITE_OK }
    var file: UnsafeMutablePointer<sqlite3_file>?
    guard routines.pointee.file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &file) == SQLITE_OK,
        let file, file.pointee.pMethods == UnsafePointer(methods),
        let remote = FileSlot.object(file) as? RemoteFile, !remote.readOnly
    else { return SQLITE_OK }
    _ = remote.recorder.install(on: db, routines: routines)
    return SQLITE_OK
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
    static let holder = Locked<Registration?>(nil)

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
