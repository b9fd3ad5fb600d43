import CSQLite
import SyndProtocol
import SyndSQLite

/// Checking a batch by the rows it changed: those its page images changed
/// (found by the `PageTracker`) and those its changeset names. Rows no batch
/// touched were equal before and are equal still, so this is as strong as
/// comparing every table, at a cost that follows the batch.
extension Validator {
    /// The key of every row `changeset` touches, by table name (lowercased);
    /// a table is named in `whole` instead when a key has text with a NUL
    /// (which a bound parameter would cut short).
    static func changesetKeys(_ changeset: [UInt8]) -> (keys: [String: Set<[Value]>], whole: Set<String>) {
        var keys: [String: Set<[Value]>] = [:]
        var whole: Set<String> = []
        guard !changeset.isEmpty, changeset.count <= Int(Int32.max) else { return (keys, whole) }
        changeset.withUnsafeBytes { bytes in
            var iterator: OpaquePointer?
            guard sqlite3changeset_start(&iterator, Int32(bytes.count), UnsafeMutableRawPointer(mutating: bytes.baseAddress)) == SQLITE_OK else { return }
            defer { sqlite3changeset_finalize(iterator) }
            while sqlite3changeset_next(iterator) == SQLITE_ROW {
                var table: UnsafePointer<CChar>?
                var columns: Int32 = 0
                var op: Int32 = 0
                var indirect: Int32 = 0
                sqlite3changeset_op(iterator, &table, &columns, &op, &indirect)
                var pk: UnsafeMutablePointer<UInt8>?
                sqlite3changeset_pk(iterator, &pk, &columns)
                guard let table, let pk else { continue }
                let name = String(cString: table).lowercased()
                var key: [Value] = []
                for i in 0..<columns where pk[Int(i)] != 0 {
                    var v: OpaquePointer?
                    if op == SQLITE_INSERT { sqlite3changeset_new(iterator, i, &v) } else { sqlite3changeset_old(iterator, i, &v) }
                    let value = Self.value(v)
                    if case .text(let s) = value, s.utf8.count != Int(sqlite3_value_bytes(v)) { whole.insert(name) }
                    key.append(value)
                }
                keys[name, default: []].insert(key)
            }
        }
        return (keys, whole)
    }

    static func value(_ v: OpaquePointer?) -> Value {
        guard let v else { return .null }
        switch sqlite3_value_type(v) {
        case SQLITE_INTEGER: return .integer(sqlite3_value_int64(v))
        case SQLITE_FLOAT: return .real(sqlite3_value_double(v))
        case SQLITE_TEXT: return .text(sqlite3_value_text(v).map { String(cString: $0) } ?? "")
        case SQLITE_BLOB:
            let n = Int(sqlite3_value_bytes(v))
            guard n > 0, let p = sqlite3_value_blob(v) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: p, count: n)))
        default: return .null
        }
    }

    /// A statement prepared once per connection (and schema: the caches are emptied with the page map).
    func cached(_ sql: String, on connection: Connection, in cache: inout [String: Statement]) throws -> Statement {
        if let statement = cache[sql] { return statement }
        let statement = try connection.prepare(sql)
        cache[sql] = statement
        return statement
    }

    /// Compares, in every keyed table, the rows `changes` and `changesetKeys` name.
    func compareChanged(
        _ changes: PageTracker.Changes, changeset: (keys: [String: Set<[Value]>], whole: Set<String>), tables: [UInt32: TableKeys],
        _ pages: Connection, _ logical: Connection, at version: UInt64
    ) throws {
        for (root, table) in tables {
            if changes.undecided.contains(root) || changeset.whole.contains(table.name.lowercased()) {
                try compareTable(table.name, pages, at: version)
                continue
            }
            var keys = changeset.keys[table.name.lowercased()] ?? []
            let refs = changes.rows[root] ?? []
            guard !keys.isEmpty || !refs.isEmpty else { continue }
            guard table.lookupByKey else {
                try compareTable(table.name, pages, at: version)
                continue
            }
            var byRowid: Statement?
            var byKey: Statement?
            var mustFind: [[Value]] = []
            for ref in refs {
                switch ref {
                case .key(let key):
                    keys.insert(key)
                case .present(let key):
                    keys.insert(key)
                    mustFind.append(key)
                case .rowid(let rowid):
                    // A row that is in the table now: its key, which must lead back to it.
                    if byRowid == nil { byRowid = try cached(table.keyByRowid, on: pages, in: &pagesStatements) }
                    guard let key = try byRowid!.run([rowid]).first else {
                        throw ValidationFailure(
                            version: version, reason: "the page images hold a row with rowid \(rowid) that a lookup by rowid does not find",
                            table: table.name)
                    }
                    keys.insert(key)
                    guard !key.contains(.null) else { continue }
                    if byKey == nil { byKey = try cached(table.rowidsByKey, on: pages, in: &pagesStatements) }
                    let found = try byKey!.run(key).map { $0.first }
                    guard found == [.integer(rowid)] else {
                        throw ValidationFailure(
                            version: version, reason: "the page images' primary-key index does not lead to the row: a lookup by key finds rowids \(found.map { $0?.description ?? "?" }) instead of \(rowid)",
                            table: table.name, key: key.map(\.description).joined(separator: ", "))
                    }
                }
            }
            let physical = try cached(table.selectByKey, on: pages, in: &pagesStatements)
            let replica = try cached(table.selectByKey, on: logical, in: &logicalStatements)
            for key in keys {
                guard !key.contains(.null) else {
                    // No identity a changeset can carry: reported, not compared.
                    unauditedTables.insert(table.name)
                    continue
                }
                let expected = try physical.run(key)
                let actual = try replica.run(key)
                if expected.isEmpty, mustFind.contains(key) {
                    throw ValidationFailure(
                        version: version, reason: "the page images hold a row that a lookup by its key does not find (out of order)",
                        table: table.name, key: key.map(\.description).joined(separator: ", "))
                }
                guard expected != actual else { continue }
                func show(_ row: [Value]?) -> String {
                    guard let row else { return "no row" }
                    return "(" + zip(table.columns, row).map { "\($0)=\($1)" }.joined(separator: ", ") + ")"
                }
                throw ValidationFailure(
                    version: version, reason: "page images and changesets disagree", table: table.name,
                    key: key.map(\.description).joined(separator: ", "), expected: show(expected.first), actual: show(actual.first))
            }
        }
    }
}
