import CSQLite
import SyndCapture
import SyndProtocol
import SyndSQLite

/// Renders changesets as SQL-like statements, with column names from the
/// schema as of each batch.
public final class ChangesetText {
    private let schema: Connection
    private let sentry = ReplicaGuard()

    public init() throws {
        schema = try Connection(path: ":memory:")
        sentry.attach(schema)
    }

    /// Follows a batch's schema change, so later changesets get column names.
    public func track(_ batch: Batch) {
        guard batch.schemaChanged else { return }
        for name in (try? schema.query("SELECT name FROM sqlite_master WHERE type = 'table'"))?.compactMap({ $0[0].string }) ?? [] {
            try? schema.execute("DROP TABLE \(name.quotedIdentifier)")
        }
        // Schema text from the batch: plain definitions only (a table that is not one gets "c0, c1, ..." names).
        for object in batch.schema where object.type == "table" && !object.isVirtualTable {
            try? sentry.runDefinition(object.sql, on: schema, entry: object.name)
        }
    }

    /// One statement per change.
    public func statements(_ changeset: [UInt8]) -> [String] {
        guard !changeset.isEmpty else { return [] }
        // SQLite's reader trusts its input: malformed bytes never reach it.
        if let problem = ChangesetFormat.problem(in: changeset) { return ["-- malformed changeset: \(problem)"] }
        var out: [String] = []
        var mutable = changeset
        var iterator: OpaquePointer?
        let rc = mutable.withUnsafeMutableBytes { sqlite3changeset_start(&iterator, Int32($0.count), $0.baseAddress) }
        guard rc == SQLITE_OK, let iterator else { return ["-- unreadable changeset (\(rc))"] }
        defer { sqlite3changeset_finalize(iterator) }
        while sqlite3changeset_next(iterator) == SQLITE_ROW {
            var table: UnsafePointer<CChar>?
            var n: Int32 = 0
            var op: Int32 = 0
            var indirect: Int32 = 0
            sqlite3changeset_op(iterator, &table, &n, &op, &indirect)
            let name = table.map { String(cString: $0) } ?? "?"
            var pkFlags: UnsafeMutablePointer<UInt8>?
            sqlite3changeset_pk(iterator, &pkFlags, nil)
            let names = columns(of: name, count: Int(n))
            func values(_ read: (OpaquePointer?, Int32, UnsafeMutablePointer<OpaquePointer?>?) -> Int32) -> [String?] {
                (0..<n).map { i in
                    var v: OpaquePointer?
                    guard read(iterator, i, &v) == SQLITE_OK, let v else { return nil }
                    return Self.literal(v)
                }
            }
            let isPK = (0..<Int(n)).map { pkFlags?[$0] ?? 0 != 0 }
            let quoted = name.quotedIdentifier
            switch op {
            case SQLITE_INSERT:
                let new = values(sqlite3changeset_new)
                out.append("INSERT INTO \(quoted)(\(names.joined(separator: ", "))) VALUES (\(new.map { $0 ?? "NULL" }.joined(separator: ", ")))")
            case SQLITE_DELETE:
                let old = values(sqlite3changeset_old)
                let key = (0..<Int(n)).filter { isPK[$0] }.map { "\(names[$0]) = \(old[$0] ?? "NULL")" }
                out.append("DELETE FROM \(quoted) WHERE \(key.joined(separator: " AND "))")
            default:
                let old = values(sqlite3changeset_old), new = values(sqlite3changeset_new)
                let set = (0..<Int(n)).compactMap { i in new[i].map { "\(names[i]) = \($0)" } }
                let key = (0..<Int(n)).filter { isPK[$0] }.map { "\(names[$0]) = \(old[$0] ?? "NULL")" }
                out.append("UPDATE \(quoted) SET \(set.joined(separator: ", ")) WHERE \(key.joined(separator: " AND "))")
            }
            if indirect != 0 { out[out.count - 1] += "  -- by a trigger or foreign key action" }
        }
        return out
    }

    private func columns(of table: String, count: Int) -> [String] {
        let names = (try? schema.query("PRAGMA table_info(\(table.quotedIdentifier))"))?.compactMap { $0[1].string } ?? []
        return (0..<count).map { $0 < names.count ? names[$0] : "c\($0)" }
    }

    static func literal(_ v: OpaquePointer) -> String {
        switch sqlite3_value_type(v) {
        case SQLITE_INTEGER: return String(sqlite3_value_int64(v))
        case SQLITE_FLOAT: return String(sqlite3_value_double(v))
        case SQLITE_TEXT:
            let text = sqlite3_value_text(v).map { String(cString: $0) } ?? ""
            let short = text.count > 60 ? String(text.prefix(57)) + "..." : text
            return "'" + short.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''") + "'"
        case SQLITE_BLOB:
            let n = Int(sqlite3_value_bytes(v))
            let bytes = n > 0 ? Array(UnsafeRawBufferPointer(start: sqlite3_value_blob(v), count: n)) : []
            let hex = bytes.prefix(24).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
            return "x'\(hex)'" + (n > 24 ? "/* \(n) bytes */" : "")
        default: return "NULL"
        }
    }
}
