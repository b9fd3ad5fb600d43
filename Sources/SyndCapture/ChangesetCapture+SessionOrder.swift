import CSQLite

extension ChangesetCapture {
    /// The changeset of a transaction that left the schema alone, as SQLite's
    /// session extension writes it: tables in the order they were first
    /// changed, rows in the extension's hash order (`SessionOrder`), an INSERT
    /// for each key that did not exist before the transaction and exists after
    /// it, an UPDATE or DELETE for each key that existed before and changed.
    ///
    /// Old values come from the committed state ("before" view) and only for
    /// rows that existed before; new values from the transaction's final image
    /// ("after" view), which is what makes statements that failed midway and
    /// ROLLBACK TO come out right: the preupdate hook saw those changes, and
    /// the final image does not have them. Tables whose keys SQLite compares
    /// under a collation, or that have generated columns, are compared as
    /// `diff` compares them.
    func buildInSessionOrder(_ events: [ChangeRecorder.Event], expectedSize: Int = 0) throws(CaptureError) -> CapturedBatch {
        var batch = CapturedBatch()
        var order: [String] = []
        var byTable: [String: [Int]] = [:]
        for (i, e) in events.enumerated() where !e.table.hasPrefix("sqlite_") {
            if byTable[e.table] == nil { order.append(e.table) }
            byTable[e.table, default: []].append(i)
        }
        try scratch.query("BEGIN")
        do throws(CaptureError) {
            try refreshLayouts()
            var writer = ChangesetWriter(spillThreshold: rowSpillThreshold, spillDirectory: spillDirectory)
            // Sized once, like the last changeset or the values the events
            // named (with room for the records' own bytes): growing a large
            // buffer step by step costs more than the reading, and holds the
            // old and the new buffer at once. Memory never written is never used.
            writer.reserve(writer.reservation(for: max(lastChangesetSize, expectedSize + expectedSize / 8 + 4096)))
            for table in order {
                let indices = byTable[table] ?? []
                guard let layout = try layout(of: table) else { continue }  // not in the after image
                guard !layout.primaryKey.allSatisfy({ $0 == 0 }) else {
                    batch.tablesWithoutPrimaryKey.append(table)
                    continue
                }
                if layout.exact, let sessions = Self.sessionOrder(indices.map { events[$0] }, layout) {
                    try write(table, layout, sessions, to: &writer, expectedSize: expectedSize)
                } else {
                    try writeByDiff(table, indices.map { events[$0] }, to: &writer, tablesWithoutPrimaryKey: &batch.tablesWithoutPrimaryKey)
                }
            }
            lastChangesetSize = writer.count
            (batch.changeset, batch.spilledChangeset) = try writer.finish()
        } catch {
            _ = try? scratch.query("ROLLBACK")
            throw error
        }
        try scratch.query("COMMIT")
        return batch
    }

    /// When every page was rewritten (VACUUM, a restore through the backup
    /// API, or simply a small database), rows may have changed that no event
    /// names. Compares every table whole: if the events name every changed
    /// row (of tables `buildInSessionOrder` reads by key), returns the tables
    /// without a primary key (to be reported unaudited, as the whole
    /// comparison reports them); nil if they do not.
    func tablesWithoutKeyIfEventsExplainEveryChange(_ events: [ChangeRecorder.Event]) throws(CaptureError) -> [String]? {
        var byTable: [String: [ChangeRecorder.Event]] = [:]
        for e in events { byTable[e.table, default: []].append(e) }
        try scratch.query("BEGIN")
        defer { _ = try? scratch.query("COMMIT") }
        try refreshLayouts()
        var withoutKey: [String] = []
        let tables = try scratch.query("SELECT name FROM after.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND sql NOT LIKE 'CREATE VIRTUAL %' ORDER BY rowid")
        for row in tables {
            guard case .text(let bytes) = row.first else { continue }
            let table = String(decoding: bytes, as: UTF8.self)
            guard let layout = try layout(of: table) else { continue }
            if layout.rowidKey && layout.exact {
                // Streamed: a bulk load into a small database rewrites every page.
                let sessions = Self.sessionOrder(byTable[table] ?? [], layout)
                var named = Set<Int64>()
                for case .rowid(let id) in sessions?.entries.map(\.key) ?? [] { named.insert(id) }
                guard try everyChangedRowIsNamed(table, layout, { named.contains($0) }) else { return nil }
                continue
            }
            guard let changes = try diff(table, [], schemaChanged: false, whole: true) else {
                withoutKey.append(table)
                continue
            }
            guard !changes.rows.isEmpty else { continue }
            guard layout.exact, let sessions = Self.sessionOrder(byTable[table] ?? [], layout) else { return nil }
            let named = Set(sessions.entries.map(\.key))
            for (before, after) in changes.rows {
                guard let row = after ?? before else { continue }
                let key: RowKey
                if layout.rowidKey {
                    guard case .integer(let id) = row[layout.keyColumns[0]] else { return nil }
                    key = .rowid(id)
                } else {
                    key = .values(layout.keyColumns.map { row[$0] })
                }
                guard named.contains(key) else { return nil }
            }
        }
        return withoutKey
    }

    /// The session extension's calls for these events; nil if an event does
    /// not have the table's column count (the extension would stop with SQLITE_SCHEMA).
    static func sessionOrder(_ events: [ChangeRecorder.Event], _ layout: TableLayout) -> SessionOrder? {
        var sessions = SessionOrder()
        let n = layout.primaryKey.count
        for e in events {
            guard (e.old ?? e.new)?.count == n, e.new == nil || e.new!.count == n else { return nil }
            func key(_ values: [CapturedValue]?, _ rowid: Int64?) -> RowKey? {
                if layout.rowidKey { return rowid.map(RowKey.rowid) }
                guard let values else { return nil }
                var k: [CapturedValue] = []
                k.reserveCapacity(layout.keyColumns.count)
                for c in layout.keyColumns {
                    if values[c] == .null { return nil }
                    k.append(values[c])
                }
                return .values(k)
            }
            if e.old != nil { sessions.record(key(e.old, e.oldRowid), inserted: false, indirect: e.indirect) }
            if e.new != nil { sessions.record(key(e.new, e.newRowid), inserted: true, indirect: e.indirect) }
        }
        return sessions
    }

    /// One table's changes, rows in session order.
    private func write(_ table: String, _ layout: TableLayout, _ sessions: SessionOrder, to writer: inout ChangesetWriter,
                       expectedSize: Int) throws(CaptureError) {
        let entries = sessions.entries
        guard !entries.isEmpty else { return }
        let after = try rows(in: "after", table, layout, sessions, expectedSize: expectedSize) { _ in true }
        let before = try rows(in: "main", table, layout, sessions, expectedSize: expectedSize) { !$0.inserted }
        var wroteHeader = false
        func header() {
            if !wroteHeader { writer.table(table, primaryKey: layout.primaryKey) }
            wroteHeader = true
        }
        for i in sessions.order {
            let e = entries[i]
            let a = try after.spans[i].map { range throws(CaptureError) in try after.data.bytes(range) }
            let b = e.inserted ? nil : try before.spans[i].map { range throws(CaptureError) in try before.data.bytes(range) }
            switch (b, a) {
            case (nil, let a?):
                header()
                writer.change(18, indirect: e.indirect, record: a)
            case (let b?, nil):
                header()
                writer.change(9, indirect: e.indirect, record: b)
            case (let b?, let a?):
                let mark = writer.count
                if !wroteHeader {
                    writer.table(table, primaryKey: layout.primaryKey)
                    if writer.update(oldRecord: b, newRecord: a, primaryKey: layout.primaryKey, indirect: e.indirect) {
                        wroteHeader = true
                    } else {
                        try writer.truncate(to: mark)
                    }
                } else {
                    _ = writer.update(oldRecord: b, newRecord: a, primaryKey: layout.primaryKey, indirect: e.indirect)
                }
            case (nil, nil):
                break
            }
            try writer.settle()
        }
    }

    /// Encoded rows (one changeset value per column), by entry of the table's `SessionOrder`.
    struct Rows {
        var data: RowBytes
        var spans: [Range<Int>?]
    }

    /// The rows of `table` in `schemaName` with the keys of the entries that
    /// `included` takes, read by rowid or by key (`IS`, as the session
    /// extension looks them up); one range scan when the rowids lie close together.
    private func rows(in schemaName: String, _ table: String, _ layout: TableLayout, _ sessions: SessionOrder, expectedSize: Int,
                      _ included: (SessionOrder.Entry) -> Bool) throws(CaptureError) -> Rows {
        let entries = sessions.entries
        let wanted = entries.indices.filter { included(entries[$0]) }
        // Encoded rows are about as large as the changeset's records of them.
        var out = Rows(data: RowBytes(threshold: rowSpillThreshold, directory: spillDirectory,
                                      expected: wanted.isEmpty ? 0 : max(1024, lastChangesetSize, expectedSize)),
                       spans: [Range<Int>?](repeating: nil, count: entries.count))
        guard !wanted.isEmpty else { return out }
        let r = scratch.r
        let t = "\(schemaName).\(table.quotedIdentifier)"
        let list = layout.names.map(\.quotedIdentifier).joined(separator: ", ")
        let n = Int32(layout.names.count)
        var failure: CaptureError?
        func take(_ entry: Int, _ stmt: OpaquePointer, from first: Int32) {
            guard failure == nil else { return }
            do throws(CaptureError) {
                out.spans[entry] = try out.data.append { bytes in
                    for c in first..<(first + n) { ChangesetWriter.appendColumn(stmt, c, r, to: &bytes) }
                }
            } catch {
                failure = error
            }
        }
        if layout.rowidKey {
            let id = layout.names[layout.keyColumns[0]].quotedIdentifier
            var low = Int64.max, high = Int64.min
            for i in wanted {
                guard case .rowid(let k) = entries[i].key else { continue }
                low = min(low, k)
                high = max(high, k)
            }
            guard low <= high else { return out }
            let span = UInt64(bitPattern: high &- low)
            if wanted.count >= 4 && span < UInt64(4 * wanted.count) {
                try scratch.forEachRow("SELECT \(id), \(list) FROM \(t) WHERE \(id) BETWEEN ?1 AND ?2", [.integer(low), .integer(high)]) { stmt in
                    if let i = sessions.find(.rowid(r.pointee.column_int64(stmt, 0))), included(entries[i]) { take(i, stmt, from: 1) }
                }
            } else {
                let sql = "SELECT \(list) FROM \(t) WHERE \(id) = ?1"
                for i in wanted {
                    guard case .rowid(let k) = entries[i].key else { continue }
                    try scratch.forEachRow(sql, [.integer(k)]) { stmt in take(i, stmt, from: 0) }
                }
            }
            if let failure { throw failure }
            return out
        }
        let condition = layout.keyColumns.enumerated().map { "\(layout.names[$1].quotedIdentifier) IS ?\($0 + 1)" }.joined(separator: " AND ")
        let sql = "SELECT \(list) FROM \(t) WHERE \(condition)"
        for i in wanted {
            guard case .values(let values) = entries[i].key else { continue }
            try scratch.forEachRow(sql, values) { stmt in take(i, stmt, from: 0) }
        }
        if let failure { throw failure }
        return out
    }

    /// A table compared as `build` compares it after a schema change (rows in key order).
    private func writeByDiff(_ table: String, _ events: [ChangeRecorder.Event], to writer: inout ChangesetWriter,
                             tablesWithoutPrimaryKey: inout [String]) throws(CaptureError) {
        guard let changes = try diff(table, events, schemaChanged: false, whole: false) else {
            tablesWithoutPrimaryKey.append(table)
            return
        }
        guard !changes.rows.isEmpty else { return }
        writer.table(table, primaryKey: changes.primaryKey)
        for (before, after) in changes.rows {
            switch (before, after) {
            case (nil, let a?): writer.insert(a)
            case (let b?, nil): writer.delete(b)
            case (let b?, let a?): writer.update(old: b, new: a, primaryKey: changes.primaryKey)
            case (nil, nil): break
            }
            try writer.settle()
        }
    }

    /// Forgets the table layouts when the after image's schema is not the one they were read from.
    private func refreshLayouts() throws(CaptureError) {
        let version = try scratch.query("PRAGMA after.schema_version").first?.first
        if version != layoutsVersion {
            layouts.removeAll()
            layoutsVersion = version
        }
    }

    /// `table`'s layout in the after image (cached per schema version); nil if it has no such table.
    private func layout(of table: String) throws(CaptureError) -> TableLayout? {
        if let cached = layouts[table] { return cached }
        let info = try scratch.query("PRAGMA after.table_xinfo(\(table.quotedIdentifier))")
        guard !info.isEmpty else { return nil }
        var names: [String] = []
        var primaryKey: [Int] = []
        var hidden = false
        for row in info {
            guard row.count > 6, case .text(let name) = row[1], case .integer(let pk) = row[5], case .integer(let h) = row[6] else { continue }
            if h != 0 {
                hidden = true
                continue
            }
            names.append(String(decoding: name, as: UTF8.self))
            primaryKey.append(Int(pk))
        }
        let keyColumns = primaryKey.indices.filter { primaryKey[$0] > 0 }
        let name = CapturedValue.text(Array(table.utf8))
        let withoutRowid = try scratch.query("SELECT wr FROM pragma_table_list WHERE schema = 'after' AND name = ?1", [name]).first?.first == .integer(1)
        let collations = try scratch.query(
            "SELECT x.coll FROM after.pragma_index_list(?1) AS l, after.pragma_index_xinfo(l.name) AS x WHERE l.origin = 'pk' AND x.key = 1", [name])
        // A rowid table's primary key without an index of its own is the rowid.
        let rowidKey = !withoutRowid && keyColumns.count == 1 && collations.isEmpty
        let binary = collations.allSatisfy { $0.first == .text(Array("BINARY".utf8)) }
        let layout = TableLayout(names: names, primaryKey: primaryKey, keyColumns: keyColumns, rowidKey: rowidKey,
                                 exact: !hidden && binary && !keyColumns.isEmpty)
        layouts[table] = layout
        return layout
    }
}
