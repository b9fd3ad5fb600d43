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
        /// The row's rowid before and after (rowid tables only).
        var oldRowid: Int64?
        var newRowid: Int64?
        /// Made by a trigger or a foreign key action (preupdate depth > 0),
        /// which SQLite's session extension marks "indirect".
        var indirect = false
    }

    public let session: synd_session_api
    public private(set) var routines: UnsafePointer<sqlite3_api_routines>?
    private(set) var events: [Event] = []
    /// True once the hook is installed on the connection.
    public private(set) var isInstalled = false
    /// The connection the hook is installed on.
    private var db: OpaquePointer?
    /// `sqlite3_preupdate_depth` of the host SQLite, when it can be found.
    private var depth: (@convention(c) (OpaquePointer?) -> Int32)?
    /// The last table name seen, so that events in a row need no new String.
    private var lastTable: (bytes: [CChar], name: String)?

    /// The primary-key columns (preupdate column numbers) of a table as
    /// committed, or nil if it is not known there (new in this transaction).
    /// Set by the VFS; asked only once a transaction has recorded
    /// `fullValueBudget` bytes of values.
    public var committedKeyColumns: ((String) -> [Int]?)?
    /// Bytes of values this transaction's events hold in full. Past the budget,
    /// events keep only their primary-key values: capture reads every row it
    /// writes from the database again (`ChangesetCapture`), so the rest is
    /// needed for nothing, and a large transaction would otherwise hold a
    /// second copy of everything it wrote.
    private var fullValueBytes = 0
    static let fullValueBudget = 4 << 20
    /// Per table, the columns kept once past the budget (nil: all of them).
    private var keptColumns: [String: [Int]?] = [:]
    /// Bytes of all values this transaction's events named (kept or not): the
    /// size of its changeset, roughly, so capture can size its buffers once.
    public private(set) var valueBytes = 0

    /// The hook SQLite calls; the context is the recorder.
    private static let callback: synd_preupdate_callback = { context, db, op, zDb, zName, key1, key2 in
        guard let context, let db, let zDb, let zName else { return }
        Unmanaged<ChangeRecorder>.fromOpaque(context).takeUnretainedValue().record(db, op, zDb, zName, key1, key2)
    }

    public init(session: synd_session_api) {
        self.session = session
    }

    /// Whether this SQLite offers what capture needs.
    public var isAvailable: Bool {
        session.preupdate_hook != nil && session.preupdate_old != nil && session.preupdate_new != nil
            && session.preupdate_count != nil
    }

    /// Installs the hook on `db`. The recorder must outlive the connection's use of it.
    public func install(on db: OpaquePointer, routines: UnsafePointer<sqlite3_api_routines>) -> Bool {
        guard isAvailable, let hook = session.preupdate_hook else { return false }
        self.routines = routines
        self.db = db
        depth = HostSymbols.preupdateDepth(routines)
        _ = hook(db, Self.callback, Unmanaged.passUnretained(self).toOpaque())
        isInstalled = true
        return true
    }

    /// Why this transaction's changes may not all have been seen, or nil.
    ///
    /// A connection has one preupdate hook: an application's own
    /// `sqlite3_preupdate_hook`, or a session object, silently replaces
    /// capture's. Setting ours again returns the previous owner; if it is not
    /// this recorder, events were missed. (Called at commit; it runs no statement.)
    public func captureProblem() -> String? {
        guard isInstalled, let db, let hook = session.preupdate_hook else { return nil }
        let me = Unmanaged.passUnretained(self).toOpaque()
        let previous = hook(db, Self.callback, me)
        guard previous == me else {
            return "the application replaced SyndDB's preupdate hook on this connection (sqlite3_preupdate_hook, or a sqlite3session object; SQLite allows one per connection), so the transaction's row changes could not be captured and the commit was refused. Remove that hook; SyndDB's changeset is readable with `synd log`"
        }
        return nil
    }

    /// Other databases of the connection (ATTACHed files, not TEMP) that this
    /// transaction writes: SQLite commits them one by one, so a crash or a
    /// refused commit could apply one and not the other.
    public func otherDatabasesWritten() -> [String] {
        guard let db, let r = routines, let dbName = r.pointee.db_name, let txnState = r.pointee.txn_state,
            let fileName = r.pointee.db_filename
        else { return [] }
        var names: [String] = []
        var i: Int32 = 2  // 0 is main, 1 is temp
        while let zName = dbName(db, i) {
            // Temporary and in-memory databases (VACUUM's own) have no file to keep.
            let file = fileName(db, zName)
            if txnState(db, zName) == SQLITE_TXN_WRITE, let file, file.pointee != 0 { names.append(String(cString: zName)) }
            i += 1
        }
        return names
    }

    public var hasEvents: Bool { !events.isEmpty }

    public func reset() {
        events.removeAll(keepingCapacity: true)
        fullValueBytes = 0
        valueBytes = 0
        keptColumns.removeAll()
    }

    /// The columns of `table` whose values events keep (nil: all).
    private func keptColumns(of table: String) -> [Int]? {
        guard fullValueBytes > Self.fullValueBudget, let lookUp = committedKeyColumns else { return nil }
        if let known = keptColumns[table] { return known }
        let kept = lookUp(table)
        keptColumns[table] = kept
        return kept
    }

    private func record(_ db: OpaquePointer, _ op: Int32, _ zDb: UnsafePointer<CChar>, _ zName: UnsafePointer<CChar>, _ key1: Int64, _ key2: Int64) {
        // Only the remote database: temp tables and attached files are local.
        guard strcmp(zDb, "main") == 0, let r = routines,
            let count = session.preupdate_count, let old = session.preupdate_old, let new = session.preupdate_new
        else { return }
        let n = count(db)
        let table = tableName(zName)
        let kept = keptColumns(of: table)
        func values(_ read: (OpaquePointer?, Int32, UnsafeMutablePointer<OpaquePointer?>?) -> Int32) -> [CapturedValue] {
            (0..<n).map { i in
                var v: OpaquePointer?
                _ = read(db, i, &v)
                let type = v.map { r.pointee.value_type($0) } ?? SQLITE_NULL
                let size = type == SQLITE_TEXT || type == SQLITE_BLOB ? Int(r.pointee.value_bytes(v)) + 2 : 9
                valueBytes += size
                // A dropped value reads as NULL; only key columns are ever looked at.
                if let kept, !kept.contains(Int(i)) { return .null }
                fullValueBytes += size
                return HostConnection.value(v, r)
            }
        }
        var event = Event(table: table)
        event.indirect = (depth?(db) ?? 0) > 0
        if op == SQLITE_UPDATE || op == SQLITE_DELETE {
            event.old = values(old)
            event.oldRowid = key1
        }
        if op == SQLITE_UPDATE || op == SQLITE_INSERT {
            event.new = values(new)
            event.newRowid = key2
        }
        events.append(event)
    }

    /// The table's name, reusing the last one's String when it repeats.
    private func tableName(_ zName: UnsafePointer<CChar>) -> String {
        if let last = lastTable, last.bytes.withUnsafeBufferPointer({ strcmp($0.baseAddress!, zName) }) == 0 {
            return last.name
        }
        let name = String(cString: zName)
        lastTable = (Array(UnsafeBufferPointer(start: zName, count: strlen(zName) + 1)), name)
        return name
    }
}
