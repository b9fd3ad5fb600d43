import CSQLite

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

    /// Registers the VFS with SQLite; safe to call more than once.
    ///
    /// - Parameter makeDefault: also make it SQLite's default VFS.
    /// - Returns: SQLite's result code.
    @discardableResult
    public static func register(makeDefault: Bool = false) -> Int32 {
        guard let registration = Registration.shared else { return SQLITE_ERROR }
        return sqlite3_vfs_register(registration.vfs, makeDefault ? 1 : 0)
    }
}

/// The registered sqlite3_vfs and io_methods: built once, at stable addresses,
/// and never changed afterwards.
final class Registration: Sendable {
    // Safe: written once in init, then only read by SQLite.
    nonisolated(unsafe) let vfs: UnsafeMutablePointer<sqlite3_vfs>
    nonisolated(unsafe) let methods: UnsafeMutablePointer<sqlite3_io_methods>
    let context: VFSContext

    static let shared: Registration? = Registration()

    private init?() {
        guard sqlite3_initialize() == SQLITE_OK, let platform = sqlite3_vfs_find(nil) else { return nil }
        context = VFSContext(name: SyndVFS.name, platform: platform)
        methods = .allocate(capacity: 1)
        methods.initialize(to: IOMethods.table)
        vfs = .allocate(capacity: 1)
        vfs.initialize(to: VFSMethods.table(
            name: SyndVFS.name, context: Unmanaged.passUnretained(context).toOpaque(),
            platform: platform))
    }
}
