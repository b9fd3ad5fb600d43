import CSQLite

/// A prepared statement (https://www.sqlite.org/c3ref/stmt.html).
///
/// Not thread-safe: use it from one thread at a time, like its connection.
public final class Statement {
    /// The `sqlite3_stmt`, for calls this type does not wrap.
    public let handle: OpaquePointer
    unowned let connection: Connection
    public let sql: String

    init(connection: Connection, sql: String) throws {
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v2(connection.handle, sql, -1, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else {
            throw SQLiteError.from(connection.handle, rc, context: sql)
        }
        self.handle = stmt
        self.connection = connection
        self.sql = sql
    }

    deinit { sqlite3_finalize(handle) }

    /// Binds values to parameters 1...n, after resetting the statement.
    public func bind(_ values: [any SQLiteBindable]) throws {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
        for (i, v) in values.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch v.sqliteValue {
            case .null: rc = sqlite3_bind_null(handle, index)
            case .integer(let x): rc = sqlite3_bind_int64(handle, index, x)
            case .real(let x): rc = sqlite3_bind_double(handle, index, x)
            case .text(let x): rc = sqlite3_bind_text(handle, index, x, -1, synd_sqlite_transient())
            case .blob(let x):
                rc = x.withUnsafeBytes { sqlite3_bind_blob(handle, index, $0.baseAddress, Int32($0.count), synd_sqlite_transient()) }
            }
            guard rc == SQLITE_OK else { throw SQLiteError.from(connection.handle, rc, context: sql) }
        }
    }

    /// Steps once; true while a row is available.
    public func step() throws -> Bool {
        let rc = sqlite3_step(handle)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            let error = SQLiteError.from(connection.handle, rc, context: sql)
            sqlite3_reset(handle)
            throw error
        }
    }

    public var columnCount: Int { Int(sqlite3_column_count(handle)) }

    public func columnName(_ i: Int) -> String { String(cString: sqlite3_column_name(handle, Int32(i))) }

    /// The value of column `i` of the current row.
    public func column(_ i: Int) -> Value {
        let index = Int32(i)
        switch sqlite3_column_type(handle, index) {
        case SQLITE_INTEGER: return .integer(sqlite3_column_int64(handle, index))
        case SQLITE_FLOAT: return .real(sqlite3_column_double(handle, index))
        case SQLITE_TEXT: return .text(String(cString: sqlite3_column_text(handle, index)))
        case SQLITE_BLOB:
            let n = Int(sqlite3_column_bytes(handle, index))
            guard n > 0, let p = sqlite3_column_blob(handle, index) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: p, count: n)))
        default: return .null
        }
    }

    /// Runs the statement with `values` and returns every row.
    @discardableResult
    public func run(_ values: [any SQLiteBindable] = []) throws -> [[Value]] {
        try bind(values)
        var rows: [[Value]] = []
        while try step() {
            rows.append((0..<columnCount).map(column))
        }
        sqlite3_reset(handle)
        return rows
    }
}
