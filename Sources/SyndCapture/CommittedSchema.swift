import CSQLite

/// Primary keys of the committed state's tables, for `ChangeRecorder`, read
/// through a connection of their own on the committed ("before") view. It is
/// asked in the middle of the application's statements, so it never touches
/// the transaction's own image (the scratch connection of `ChangesetCapture`
/// has it attached).
public final class CommittedSchema {
    private let connection: HostConnection

    /// Opens the committed view of file `fileID` of `database`.
    public init(database: String, fileID: UInt64, vfs: String, routines: UnsafePointer<sqlite3_api_routines>) throws(CaptureError) {
        connection = try HostConnection(uri: "file:\(database)?vfs=\(vfs)&synddb_view=before&synddb_file=\(fileID)", vfs: vfs, routines: routines)
    }

    /// The primary-key columns of `table` as committed, numbered as the
    /// preupdate hook numbers them (table_xinfo's cid); an empty list for a
    /// table without a primary key; nil if there is no such table or it
    /// cannot be read.
    public func keyColumns(of table: String) -> [Int]? {
        guard let info = try? connection.query("PRAGMA main.table_xinfo(\(table.quotedIdentifier))"), !info.isEmpty else { return nil }
        var keys: [Int] = []
        for row in info {
            guard row.count > 5, case .integer(let cid) = row[0], case .integer(let pk) = row[5] else { return nil }
            if pk > 0 { keys.append(Int(cid)) }
        }
        return keys
    }
}
