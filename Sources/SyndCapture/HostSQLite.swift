import CSQLite

/// A value read from or bound to the host's SQLite.
public enum CapturedValue: Hashable, Sendable {
    case null
    case integer(Int64)
    case real(Double)
    case text([UInt8])
    case blob([UInt8])
}

/// An error from the host's SQLite while building a changeset.
public struct CaptureError: Error, Sendable, CustomStringConvertible {
    public var code: Int32
    public var message: String
    public var description: String { message }
    public init(code: Int32, message: String) {
        self.code = code
        self.message = message
    }
}

/// A connection of the host's SQLite, reached only through its
/// sqlite3_api_routines, so that a loadable extension links no SQLite.
final class HostConnection {
    let r: UnsafePointer<sqlite3_api_routines>
    let db: OpaquePointer
    private var statements: [String: OpaquePointer] = [:]

    init(uri: String, vfs: String, routines: UnsafePointer<sqlite3_api_routines>) throws(CaptureError) {
        r = routines
        var handle: OpaquePointer?
        // A private cache: in shared-cache mode the two views (one file name)
        // would otherwise be one database, "already attached".
        let rc = r.pointee.open_v2(uri, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI | SQLITE_OPEN_PRIVATECACHE, vfs)
        guard rc == SQLITE_OK, let handle else {
            let message = handle.flatMap { routines.pointee.errmsg($0) }.map { String(cString: $0) } ?? "open failed"
            _ = routines.pointee.close(handle)
            throw CaptureError(code: rc, message: "changeset capture cannot open \(uri): \(message)")
        }
        db = handle
    }

    deinit {
        for s in statements.values { _ = r.pointee.finalize(s) }
        _ = r.pointee.close(db)
    }

    func error(_ rc: Int32, _ context: String) -> CaptureError {
        let message = r.pointee.errmsg(db).map { String(cString: $0) } ?? "error \(rc)"
        return CaptureError(code: rc, message: "changeset capture: \(message) [\(context)]")
    }

    func execute(_ sql: String) throws(CaptureError) {
        let rc = r.pointee.exec(db, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc, sql) }
    }

    /// Registers `name` (any number of arguments) as a deterministic function
    /// that returns NULL: a stand-in for a function only the application
    /// registered, so that definitions calling it (CHECK constraints, index
    /// expressions, generated columns) can be created on this connection.
    func createStandInFunction(_ name: String) throws(CaptureError) {
        // A function that sets no result returns NULL.
        let rc = r.pointee.create_function_v2(
            db, name, -1, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, nil, { _, _, _ in }, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc, "stand-in for function \(name)") }
    }

    /// The prepared statement for `sql`, prepared once and kept.
    func statement(_ sql: String) throws(CaptureError) -> OpaquePointer {
        if let cached = statements[sql] { return cached }
        var s: OpaquePointer?
        let rc = r.pointee.prepare_v2(db, sql, -1, &s, nil)
        guard rc == SQLITE_OK, let s else { throw error(rc, sql) }
        statements[sql] = s
        return s
    }

    /// Runs one statement (cached) with bindings; returns its rows.
    @discardableResult
    func query(_ sql: String, _ values: [CapturedValue] = []) throws(CaptureError) -> [[CapturedValue]] {
        let stmt = try statement(sql)
        defer {
            _ = r.pointee.reset(stmt)
            _ = r.pointee.clear_bindings(stmt)
        }
        try bind(stmt, values, sql)
        var rows: [[CapturedValue]] = []
        while true {
            let rc = r.pointee.step(stmt)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw error(rc, sql) }
            let n = r.pointee.column_count(stmt)
            rows.append((0..<n).map { column(stmt, $0) })
        }
        return rows
    }

    /// Runs one statement (cached) with bindings, handing each row to `body`
    /// while it is current (its column values are valid only inside `body`).
    func forEachRow(_ sql: String, _ values: [CapturedValue], _ body: (OpaquePointer) -> Void) throws(CaptureError) {
        let stmt = try statement(sql)
        defer {
            _ = r.pointee.reset(stmt)
            _ = r.pointee.clear_bindings(stmt)
        }
        try bind(stmt, values, sql)
        while true {
            let rc = r.pointee.step(stmt)
            if rc == SQLITE_DONE { return }
            guard rc == SQLITE_ROW else { throw error(rc, sql) }
            body(stmt)
        }
    }

    private func bind(_ stmt: OpaquePointer, _ values: [CapturedValue], _ sql: String) throws(CaptureError) {
        for (i, v) in values.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch v {
            case .null: rc = r.pointee.bind_null(stmt, index)
            case .integer(let x): rc = r.pointee.bind_int64(stmt, index, x)
            case .real(let x): rc = r.pointee.bind_double(stmt, index, x)
            case .text(let x):
                rc = x.withUnsafeBufferPointer { b in
                    r.pointee.bind_text(stmt, index, UnsafeRawPointer(b.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self), Int32(b.count), synd_sqlite_transient())
                }
            case .blob(let x):
                rc = x.withUnsafeBytes { b in
                    r.pointee.bind_blob(stmt, index, b.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, Int32(b.count), synd_sqlite_transient())
                }
            }
            guard rc == SQLITE_OK else { throw error(rc, sql) }
        }
    }

    private func column(_ stmt: OpaquePointer, _ i: Int32) -> CapturedValue {
        switch r.pointee.column_type(stmt, i) {
        case SQLITE_INTEGER: return .integer(r.pointee.column_int64(stmt, i))
        case SQLITE_FLOAT: return .real(r.pointee.column_double(stmt, i))
        case SQLITE_TEXT:
            let n = Int(r.pointee.column_bytes(stmt, i))
            guard n > 0, let p = r.pointee.column_text(stmt, i) else { return .text([]) }
            return .text(Array(UnsafeBufferPointer(start: p, count: n)))
        case SQLITE_BLOB:
            let n = Int(r.pointee.column_bytes(stmt, i))
            guard n > 0, let p = r.pointee.column_blob(stmt, i) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: p, count: n)))
        default: return .null
        }
    }

    /// Reads a sqlite3_value (from the preupdate hook).
    static func value(_ v: OpaquePointer?, _ r: UnsafePointer<sqlite3_api_routines>) -> CapturedValue {
        guard let v else { return .null }
        switch r.pointee.value_type(v) {
        case SQLITE_INTEGER: return .integer(r.pointee.value_int64(v))
        case SQLITE_FLOAT: return .real(r.pointee.value_double(v))
        case SQLITE_TEXT:
            let n = Int(r.pointee.value_bytes(v))
            guard n > 0, let p = r.pointee.value_text(v) else { return .text([]) }
            return .text(Array(UnsafeBufferPointer(start: p, count: n)))
        case SQLITE_BLOB:
            let n = Int(r.pointee.value_bytes(v))
            guard n > 0, let p = r.pointee.value_blob(v) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: p, count: n)))
        default: return .null
        }
    }
}

extension String {
    /// A quoted SQL identifier.
    public var quotedIdentifier: String {
        var out = "\""
        for c in self {
            if c == "\"" { out += "\"\"" } else { out.append(c) }
        }
        return out + "\""
    }
}
