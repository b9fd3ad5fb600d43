import CSQLite

/// An error from SQLite: its result code, extended code, message and context.
///
/// See https://www.sqlite.org/rescode.html for the codes.
public struct SQLiteError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The primary result code (e.g. `SQLITE_BUSY`).
    public var code: Int32
    /// The extended result code (e.g. `SQLITE_BUSY_SNAPSHOT`).
    public var extendedCode: Int32
    /// SQLite's message, followed by SyndDB's detail when the VFS gave one.
    public var message: String
    /// The SQL or operation that failed.
    public var context: String?

    public init(code: Int32, extendedCode: Int32? = nil, message: String, context: String? = nil) {
        self.code = code & 0xFF
        self.extendedCode = extendedCode ?? code
        self.message = message
        self.context = context
    }

    public var description: String {
        let name = String(cString: sqlite3_errstr(extendedCode))
        var s = "SQLite error \(extendedCode) (\(name)): \(message)"
        if let context { s += " [\(context)]" }
        return s
    }

    /// The error SQLite reports for `db` after `rc`, with the VFS's detail appended.
    public static func from(_ db: OpaquePointer?, _ rc: Int32, context: String? = nil) -> SQLiteError {
        guard let db else {
            return SQLiteError(code: rc, message: String(cString: sqlite3_errstr(rc)), context: context)
        }
        var message = String(cString: sqlite3_errmsg(db))
        let extended = sqlite3_extended_errcode(db)
        var vfs: UnsafeMutablePointer<sqlite3_vfs>?
        if sqlite3_file_control(db, "main", SQLITE_FCNTL_VFS_POINTER, &vfs) == SQLITE_OK,
            let vfs, let detail = takeVFSDetail(vfs)
        {
            message += ": " + detail
        }
        return SQLiteError(code: extended, extendedCode: extended, message: message, context: context)
    }

    /// SyndDB's VFS keeps the detail of its last failure on this thread behind xGetLastError.
    static func takeVFSDetail(_ vfs: UnsafeMutablePointer<sqlite3_vfs>) -> String? {
        guard let name = vfs.pointee.zName, String(cString: name).hasPrefix("synddb"),
            let getLastError = vfs.pointee.xGetLastError
        else { return nil }
        var buffer = [CChar](repeating: 0, count: 1024)
        _ = buffer.withUnsafeMutableBufferPointer { getLastError(vfs, Int32($0.count), $0.baseAddress) }
        let detail = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return detail.isEmpty ? nil : detail
    }
}
