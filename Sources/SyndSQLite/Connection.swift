import CSQLite

/// A SQLite connection (https://www.sqlite.org/c3ref/sqlite3.html).
///
/// Like SQLite's own handle, use it from one thread at a time.
public final class Connection {
    public let handle: OpaquePointer

    /// Opens `path` (a file name or a `file:` URI) with `sqlite3_open_v2`.
    ///
    /// - Parameters:
    ///   - vfs: the VFS name, or nil for SQLite's default.
    public init(path: String, readOnly: Bool = false, vfs: String? = nil) throws {
        var db: OpaquePointer?
        let flags = (readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
            | SQLITE_OPEN_URI | SQLITE_OPEN_FULLMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, vfs)
        guard rc == SQLITE_OK, let db else {
            var error = SQLiteError.from(db, rc, context: "open \(path)")
            if let vfs, let v = sqlite3_vfs_find(vfs), let detail = SQLiteError.takeVFSDetail(v) {
                error.message += ": " + detail
            }
            sqlite3_close_v2(db)
            throw error
        }
        sqlite3_extended_result_codes(db, 1)
        self.handle = db
    }

    deinit { sqlite3_close_v2(handle) }

    /// Runs one or more statements that return no rows.
    public func execute(_ sql: String) throws {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw SQLiteError.from(handle, rc, context: sql) }
    }

    public func prepare(_ sql: String) throws -> Statement {
        try Statement(connection: self, sql: sql)
    }

    /// Runs one statement with bindings and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ values: [any SQLiteBindable] = []) throws -> [[Value]] {
        try prepare(sql).run(values)
    }

    /// The first column of the first row, or nil.
    public func scalar(_ sql: String, _ values: [any SQLiteBindable] = []) throws -> Value? {
        try query(sql, values).first?.first
    }

    /// Runs `body` in a transaction; commits if it returns, rolls back if it throws.
    @discardableResult
    public func transaction<T>(_ kind: String = "DEFERRED", _ body: () throws -> T) throws -> T {
        try execute("BEGIN \(kind)")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            if sqlite3_get_autocommit(handle) == 0 { try? execute("ROLLBACK") }
            throw error
        }
    }

    public var changes: Int { Int(sqlite3_changes(handle)) }
    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }
    public var isAutocommit: Bool { sqlite3_get_autocommit(handle) != 0 }
}
