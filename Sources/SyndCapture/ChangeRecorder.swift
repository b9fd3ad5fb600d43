import CSQLite

/// Records, through SQLite's preupdate hook, which rows of the main database a
/// write transaction touches. The hook alone is not exact (a statement that
/// fails midway or a ROLLBACK TO leaves touched rows unchanged), so it only
/// names candidate rows; `ChangesetBuilder` compares them before and after.
public final class ChangeRecorder {
    struct Event {
        var table: String
        var old: [CapturedValue]?
        var new: [CapturedValue]?
    }

    public let session: synd_session_api
    public private(set) var routines: UnsafePointer<sqlite3_api_routines>?
    private(set) var events: [Event] = []
    /// True once the hook is installed on the connection.
    public private(set) var isInstalled = false

    public init(session: synd_session_api) {
        self.session = session
    }

    /// Whether this SQLite offers what capture needs.
    public var isAvailable: Bool {
        session.preupdate_hook != nil && session.preupdate_old != nil && session.preupdate_new != nil
            && session.preupdate_count != nil && session.session_create != nil && session.session_attach != nil
            && session.session_changeset != nil && session.session_delete != nil
    }

    /// Installs the hook on `db`. The recorder must outlive the connection's use of it.
    public func install(on db: OpaquePointer, routines: UnsafePointer<sqlite3_api_routines>) -> Bool {
        guard isAvailable, let hook = session.preupdate_hook else { return false }
        self.routines = routines
        _ = hook(db, { context, db, op, zDb, zName, _, _ in
            guard let context, let db, let zDb, let zName else { return }
            Unmanaged<ChangeRecorder>.fromOpaque(context).takeUnretainedValue().record(db, op, zDb, zName)
        }, Unmanaged.passUnretained(self).toOpaque())
        isInstalled = true
        return true
    }

    public var hasEvents: Bool { !events.isEmpty }

    public func reset() { events.removeAll(keepingCapacity: true) }

    private func record(_ db: OpaquePointer, _ op: Int32, _ zDb: UnsafePointer<CChar>, _ zName: UnsafePointer<CChar>) {
        // Only the remote database: temp tables and attached files are local.
        guard strcmp(zDb, "main") == 0, let r = routines,
            let count = session.preupdate_count, let old = session.preupdate_old, let new = session.preupdate_new
        else { return }
        let n = count(db)
        func values(_ read: (OpaquePointer?, Int32, UnsafeMutablePointer<OpaquePointer?>?) -> Int32) -> [CapturedValue] {
            (0..<n).map { i in
                var v: OpaquePointer?
                _ = read(db, i, &v)
                return HostConnection.value(v, r)
            }
        }
        var event = Event(table: String(cString: zName))
        if op == SQLITE_UPDATE || op == SQLITE_DELETE { event.old = values(old) }
        if op == SQLITE_UPDATE || op == SQLITE_INSERT { event.new = values(new) }
        events.append(event)
    }
}
