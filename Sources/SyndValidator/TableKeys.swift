import SyndSQLite

/// How the validator finds and compares one table's rows by primary key, learnt
/// from the physical replica's schema: its b-tree, where each key column sits
/// in a stored record, and the statement that reads one row.
struct TableKeys {
    let name: String
    let root: UInt32
    let withoutRowid: Bool
    /// The primary key is the rowid (a rowid table's INTEGER PRIMARY KEY).
    let rowidKey: Bool
    /// Each key column's field in a stored record, key columns in column order
    /// (the order a changeset gives them in).
    let keyFields: [Int]
    /// Rows can be found by key: the key's collations are SQLite's own. Under
    /// an application's collation the b-tree is in an order the validator's
    /// stand-in does not know, so a changed row sends the whole table to comparison.
    let lookupByKey: Bool
    /// The compared columns, in the order `selectByKey` returns them.
    let columns: [String]
    /// `SELECT <compared columns> FROM t WHERE <key> = ?...` (key in column order).
    let selectByKey: String
    /// `SELECT <key columns> FROM t WHERE rowid = ?`.
    let keyByRowid: String
    /// `SELECT rowid FROM t WHERE <key> = ?...` (rowid tables).
    let rowidsByKey: String
    /// Each key column's affinity, to tell a key SQLite would never have stored.
    let keyAffinities: [Character]

    /// The keyed tables of `connection`'s schema, by root page; tables without
    /// a primary key are left out (their rows are not audited).
    /// - Parameter comparedColumns: the columns compared for a table, as `Validator.compareTable` picks them.
    static func all(on connection: Connection, comparedColumns: (String, [[Value]]) -> [String]) throws -> [UInt32: TableKeys] {
        var result: [UInt32: TableKeys] = [:]
        let tables = try connection.query("""
            SELECT s.name, s.rootpage, l.wr FROM sqlite_schema s JOIN pragma_table_list l ON l.name = s.name AND l.schema = 'main'
            WHERE s.type = 'table' AND s.rootpage > 0 AND s.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
            """)
        for row in tables {
            guard let name = row[0].string, let root = row[1].int64, root > 0, root <= Int64(UInt32.max) else { continue }
            let withoutRowid = row[2].int64 == 1
            let quoted = name.quotedIdentifier
            let info = try connection.query("PRAGMA table_xinfo(\(quoted))")
            // (cid-order index, pk position) of the key columns.
            let keyed = info.indices.filter { (info[$0][5].int64 ?? 0) > 0 }
            guard !keyed.isEmpty else { continue }
            // A column named rowid, oid or _rowid_ hides that name for the rowid: use one it does not.
            let names = Set(info.compactMap { $0[1].string?.lowercased() })
            let rowidName = ["rowid", "_rowid_", "oid"].first { !names.contains($0) }
            let pkIndex = try connection.query("PRAGMA index_list(\(quoted))").first { $0[3].string == "pk" }?[1].string
            let pkOrigin = pkIndex != nil
            var builtIn = true
            if let pkIndex {
                for column in try connection.query("PRAGMA index_xinfo(\(pkIndex.quotedIdentifier))") where column[5].int64 == 1 {
                    builtIn = builtIn && ["BINARY", "NOCASE", "RTRIM"].contains((column[4].string ?? "").uppercased())
                }
            }
            let rowidKey = !withoutRowid && keyed.count == 1 && !pkOrigin
            var fields: [Int] = []
            for i in keyed {
                if withoutRowid {
                    // The key columns open the record, in key order.
                    fields.append(Int(info[i][5].int64 ?? 1) - 1)
                } else {
                    // Virtual generated columns (hidden 2) are not stored.
                    fields.append(info[..<i].filter { ($0[6].int64 ?? 0) != 2 }.count)
                }
            }
            let keyNames = keyed.map { info[$0][1].string ?? "?" }
            let affinities = keyed.map { Self.affinity(of: info[$0][2].string ?? "") }
            let columns = comparedColumns(name, info)
            let whereKey = keyNames.enumerated().map { "\($0.element.quotedIdentifier) = ?\($0.offset + 1)" }.joined(separator: " AND ")
            result[UInt32(root)] = TableKeys(
                name: name, root: UInt32(root), withoutRowid: withoutRowid, rowidKey: rowidKey, keyFields: fields, lookupByKey: builtIn && (withoutRowid || rowidName != nil), columns: columns,
                selectByKey: "SELECT \(columns.map(\.quotedIdentifier).joined(separator: ", ")) FROM \(quoted) WHERE \(whereKey)",
                keyByRowid: "SELECT \(keyNames.map(\.quotedIdentifier).joined(separator: ", ")) FROM \(quoted) WHERE \(rowidName ?? "rowid") = ?1",
                rowidsByKey: withoutRowid ? "" : "SELECT \(rowidName ?? "rowid") FROM \(quoted) WHERE \(whereKey)", keyAffinities: affinities)
        }
        return result
    }

    /// SQLite's affinity of a declared type (https://www.sqlite.org/datatype3.html#determination_of_column_affinity):
    /// I(nteger), T(ext), B(lob), R(eal), N(umeric).
    static func affinity(of declared: String) -> Character {
        let t = declared.uppercased()
        if t.contains("INT") { return "I" }
        if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") { return "T" }
        if t.contains("BLOB") || t.isEmpty { return "B" }
        if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") { return "R" }
        return "N"
    }

    /// True when SQLite could have stored `key` under the key columns'
    /// affinities. A number in a TEXT column, or numeric text in a numeric
    /// one, is found by no lookup (the bound value is converted first).
    func isStorable(_ key: [Value]) -> Bool {
        for (value, affinity) in zip(key, keyAffinities) {
            switch (affinity, value) {
            case ("T", .integer), ("T", .real): return false
            case ("I", .text(let s)), ("R", .text(let s)), ("N", .text(let s)):
                let trimmed = s.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }
                if Double(String(trimmed.reversed())) != nil { return false }
            default: break
            }
        }
        return true
    }

    /// The key of a stored row, or nil when the record cannot give it.
    func key(rowid: Int64, record: [UInt8], encoding: TextEncoding) -> [Value]? {
        if rowidKey { return [.integer(rowid)] }
        guard let last = keyFields.max(), let fields = RecordFields.decode(record, count: last + 1, encoding: encoding) else { return nil }
        return keyFields.map { fields[$0] }
    }
}
