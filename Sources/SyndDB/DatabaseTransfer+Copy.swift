import CSQLite
import SyndSQLite

extension DatabaseTransfer {
    /// One entry of `sqlite_schema`.
    struct SchemaEntry {
        var type: String
        var name: String
        var sql: String
    }

    /// Copies everything of `source` into the new database `name`, through SQL.
    static func copy(
        from source: Connection, describing: String, into name: String, sequencer: String, batchBytes: Int,
        progress: ((Progress) -> Void)?
    ) throws -> ImportSummary {
        let schema = try source.query("SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY rowid").map {
            SchemaEntry(type: $0[0].string ?? "", name: $0[1].string ?? "", sql: $0[2].string ?? "")
        }
        let virtual = schema.filter { $0.type == "table" && $0.sql.uppercased().hasPrefix("CREATE VIRTUAL TABLE") }
        guard virtual.isEmpty else {
            throw TransferError("""
                \(describing) has virtual tables (\(virtual.map(\.name).joined(separator: ", "))), which this copy \
                does not move yet: copy their rows into ordinary tables first, or use `synd export` for a file
                """)
        }
        // SQLite's own tables (sqlite_sequence, sqlite_stat1) are made by SQLite itself.
        let tables = schema.filter { $0.type == "table" && !$0.name.hasPrefix("sqlite_") }
        let others = schema.filter { $0.type != "table" && !$0.name.hasPrefix("sqlite_") }
        func setting(_ pragma: String) throws -> Value { try source.scalar("PRAGMA \(pragma)") ?? .null }
        let pageSize = Int(try setting("page_size").int64 ?? 4096)
        let encoding = try setting("encoding").string ?? "UTF-8"
        let autoVacuum = try setting("auto_vacuum").int64 ?? 0
        let userVersion = try setting("user_version").int64 ?? 0
        let applicationID = try setting("application_id").int64 ?? 0

        var options = DatabaseOptions()
        options.pageSize = pageSize
        let target = try Database.open(name, sequencer: sequencer, options: options)
        guard try target.scalar("SELECT count(*) FROM sqlite_schema") == .integer(0) else {
            throw TransferError("'\(name)' already has tables: import and fork make a new database; choose another name, or drop it first (synd drop \(name))")
        }
        var summary = ImportSummary(tables: tables.count, rows: 0, commits: 0, version: 0)
        do {
            // Settings a database takes only before its first table.
            try target.execute("PRAGMA encoding = '\(encoding)'")
            try target.execute("PRAGMA auto_vacuum = \(autoVacuum)")
            try target.transaction { for t in tables { try target.execute(t.sql) } }

            var totals: [String: Int] = [:]
            if progress != nil {
                for t in tables { totals[t.name] = Int(try source.scalar("SELECT count(*) FROM main.\(quoted(t.name))")?.int64 ?? 0) }
            }
            let total = totals.values.reduce(0, +)
            for t in tables {
                try copyRows(of: t.name, from: source, to: target, batchBytes: batchBytes, summary: &summary) { done in
                    progress?(Progress(done: done, total: total, stage: t.name))
                }
            }
            if try source.scalar("SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_sequence'") == .integer(1) {
                // AUTOINCREMENT counters: the next rowid must not reuse one the source gave out.
                let counters = try source.query("SELECT name, seq FROM sqlite_sequence")
                try target.transaction {
                    try target.execute("DELETE FROM sqlite_sequence")
                    for c in counters { try target.query("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", c) }
                }
            }
            if !others.isEmpty || userVersion != 0 || applicationID != 0 {
                try target.transaction {
                    for o in others { try target.execute(o.sql) }
                    if userVersion != 0 { try target.execute("PRAGMA user_version = \(userVersion)") }
                    if applicationID != 0 { try target.execute("PRAGMA application_id = \(applicationID)") }
                }
            }
        } catch {
            let at = target.statistics.version
            throw TransferError("""
                copying \(describing) into '\(name)' stopped: \(error). '\(name)' holds a partial copy (version \(at)); \
                drop it (synd drop \(name)) before trying again
                """)
        }
        summary.version = target.statistics.version
        summary.commits = target.statistics.commits
        return summary
    }

    /// `name` as an SQL identifier.
    static func quoted(_ name: String) -> String {
        "\"" + name.split(separator: "\"", omittingEmptySubsequences: false).joined(separator: "\"\"") + "\""
    }

    /// Copies table `table`'s rows, values as they are stored (types, bytes
    /// and rowids), in transactions of about `batchBytes`.
    static func copyRows(
        of table: String, from source: Connection, to target: Database, batchBytes: Int, summary: inout ImportSummary,
        progress: (Int) -> Void
    ) throws {
        let all = try source.query("SELECT name, hidden FROM pragma_table_xinfo(?)", [table])
        // Generated columns (hidden 2, 3) are computed again; hidden 1 is a virtual table's.
        var columns = all.filter { $0[1].int64 == 0 }.compactMap { $0[0].string }
        let names = Set(all.compactMap { $0[0].string?.lowercased() })
        // The rowid, under a name no column takes, unless the table has none (WITHOUT ROWID).
        if let rowid = ["rowid", "_rowid_", "oid"].first(where: { !names.contains($0) }),
            (try? source.prepare("SELECT \(rowid) FROM main.\(quoted(table)) LIMIT 0")) != nil
        {
            columns.insert(rowid, at: 0)
        }
        let list = columns.map { ["rowid", "_rowid_", "oid"].contains($0) ? $0 : quoted($0) }.joined(separator: ", ")
        let select = try source.prepare("SELECT \(list) FROM main.\(quoted(table))")
        let insert = try target.prepare(
            "INSERT INTO main.\(quoted(table))(\(list)) VALUES (\(Array(repeating: "?", count: columns.count).joined(separator: ", ")))")
        let count = Int32(columns.count)
        let db = target.connection
        try db.execute("BEGIN IMMEDIATE")
        var pending = 0
        do {
            while true {
                let rc = sqlite3_step(select.handle)
                if rc == SQLITE_DONE { break }
                guard rc == SQLITE_ROW else { throw SQLiteError.from(source.handle, rc, context: "reading \(table)") }
                for i in 0..<count {
                    // Bound as stored: no conversion of types, text encodings or bytes.
                    sqlite3_bind_value(insert.handle, i + 1, sqlite3_column_value(select.handle, i))
                    pending += Int(sqlite3_column_bytes(select.handle, i)) + 8
                }
                let done = sqlite3_step(insert.handle)
                sqlite3_reset(insert.handle)
                guard done == SQLITE_DONE else { throw SQLiteError.from(db.handle, done, context: "writing \(table)") }
                summary.rows += 1
                if pending >= batchBytes {
                    try db.execute("COMMIT")
                    pending = 0
                    progress(summary.rows)
                    try db.execute("BEGIN IMMEDIATE")
                }
            }
            try db.execute("COMMIT")
            progress(summary.rows)
        } catch {
            if !db.isAutocommit { try? db.execute("ROLLBACK") }
            throw error
        }
    }
}
