import CSQLite
import SyndProtocol

/// Builds a transaction's exact changeset without touching the committing
/// connection (which must run no statement inside its commit).
///
/// A scratch connection opens the committed state ("before" view, writable,
/// never committed) and attaches the transaction's final image ("after" view,
/// read-only). Inside a transaction that is always rolled back it moves the
/// schema to the after schema (when it changed), then reads every row the
/// preupdate hook saw touched as it was before and as it is after, and writes
/// the net difference as SQLite's changeset. Rows that a failed statement or a
/// ROLLBACK TO put back drop out, as they do for SQLite's session extension
/// on the application's connection (the differential test's oracle).
public final class ChangesetCapture {
    let scratch: HostConnection
    /// Table layouts of the after image (`buildInSessionOrder`), valid for one schema version.
    var layouts: [String: TableLayout] = [:]
    var layoutsVersion: CapturedValue?
    /// The size of the last changeset built, to size the next one's buffers.
    var lastChangesetSize = 0
    /// Bytes of a transaction's rows that capture keeps in memory while it
    /// puts them in order, and of its changeset; the rest waits in a
    /// temporary file in `spillDirectory` (0: all in memory).
    public var rowSpillThreshold = 16 << 20
    public var spillDirectory = "/tmp"

    /// Opens the scratch connection over the two views of file `fileID`.
    public init(database: String, fileID: UInt64, vfs: String, routines: UnsafePointer<sqlite3_api_routines>) throws(CaptureError) {
        let beforeURI = "file:\(database)?vfs=\(vfs)&synddb_view=before&synddb_file=\(fileID)"
        let afterURI = "file:\(database)?vfs=\(vfs)&synddb_view=after&synddb_file=\(fileID)"
        // An attached database must have main's text encoding, and the before
        // view of a new database is empty: give it the after image's encoding.
        let encoding = try HostConnection(uri: afterURI, vfs: vfs, routines: routines).query("PRAGMA encoding").first?.first
        var scratch = try HostConnection(uri: beforeURI, vfs: vfs, routines: routines)
        if case .text(let name) = encoding, name.allSatisfy({ $0 != 0x27 }) {
            try scratch.execute("PRAGMA encoding='\(String(decoding: name, as: UTF8.self))'")
            // A before image of one page and no schema (`PRAGMA auto_vacuum` or
            // `page_size` committed first) records no encoding, so SQLite reads
            // it as UTF-8 whatever was asked: an empty in-memory database in the
            // after image's encoding holds the same (no) rows.
            // (Reading sqlite_master loads the schema, which is when SQLite settles the encoding.)
            if try scratch.query("SELECT count(*) FROM sqlite_master").first?.first == .integer(0),
                try scratch.query("PRAGMA encoding").first?.first != encoding
            {
                scratch = try HostConnection(uri: "file:synd-empty-before?mode=memory", vfs: vfs, routines: routines)
                try scratch.execute("PRAGMA encoding='\(String(decoding: name, as: UTF8.self))'")
            }
        }
        self.scratch = scratch
        _ = synd_db_enable_triggers(routines, scratch.db, 0)
        // Collations only the application's connection has: capture reads rows
        // by rowid, or scans (see `rows`), and never relies on their order; a
        // stand-in lets the schema's definitions be created on the scratch side.
        _ = routines.pointee.collation_needed(scratch.db, UnsafeMutableRawPointer(mutating: routines)) { context, db, _, name in
            guard let context, let db, let name else { return }
            let r = context.assumingMemoryBound(to: sqlite3_api_routines.self)
            _ = r.pointee.create_collation_v2(db, name, SQLITE_UTF8, nil, { _, n1, p1, n2, p2 in
                let n = Int(min(n1, n2))
                let c = n == 0 ? 0 : memcmp(p1!, p2!, n)
                return c != 0 ? c : n1 - n2
            }, nil)
        }
        // CHECK constraints were enforced on the application's connection; here
        // they may call stand-ins (see `executeMigration`), so they are not re-run.
        // writable_schema: the after image is ATTACHed, and SQLite refuses to
        // load an attached schema whose view or trigger names `main.` ("view v3
        // cannot reference objects in database main", found by view2.test), a
        // schema that is valid as the main database it is. With it SQLite skips
        // such an entry (its text still reads from sqlite_master, and capture
        // reads only tables), and ALTER TABLE RENAME does not fail on views and
        // triggers it cannot re-check (tkt3838.test: a trigger of a UTF-16
        // database). The scratch side never commits.
        try scratch.execute("PRAGMA foreign_keys=OFF; PRAGMA legacy_alter_table=ON; PRAGMA journal_mode=MEMORY; PRAGMA ignore_check_constraints=ON; PRAGMA writable_schema=ON")
        // The VFS gives the after image a new change counter for every commit
        // (SnapshotFile), so SQLite never trusts pages cached from an earlier one.
        let literal = "'" + afterURI.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''") + "'"
        try scratch.execute("ATTACH \(literal) AS after")
    }

    /// The changeset of the rows `recorder` saw touched, and the schema if it changed.
    ///
    /// When the schema did not change and not every page was rewritten, this
    /// is `buildInSessionOrder`: the changeset SQLite's session extension
    /// would have recorded, byte for byte. Otherwise (below) rows are compared
    /// table by table after the scratch side's schema is moved to the new one.
    ///
    /// Each touched row is read as it was before and as it is after, with plain
    /// SELECTs by rowid (or by key for WITHOUT ROWID tables and after a schema
    /// change), and the difference is written in SQLite's changeset format.
    /// Reading by rowid needs none of what the application may have added to
    /// its own connection (collations, modules), and text comes back as UTF-8
    /// whatever the database encoding, as changesets carry it.
    ///
    /// With `compareAll` (the transaction rewrote every page: a restore through
    /// the backup API, VACUUM), pages changed that no row event names, so every
    /// table is compared whole. That costs a read of the database, as the
    /// rewrite itself did.
    public func build(from recorder: ChangeRecorder, schemaChanged: Bool, compareAll: Bool = false) throws(CaptureError) -> CapturedBatch {
        let events = recorder.events
        if !schemaChanged {
            if !compareAll { return try buildInSessionOrder(events, expectedSize: recorder.valueBytes) }
            if let withoutKey = try tablesWithoutKeyIfEventsExplainEveryChange(events) {
                var batch = try buildInSessionOrder(events, expectedSize: recorder.valueBytes)
                for table in withoutKey where !batch.tablesWithoutPrimaryKey.contains(table) { batch.tablesWithoutPrimaryKey.append(table) }
                return batch
            }
        }
        var batch = CapturedBatch()
        try scratch.execute("BEGIN IMMEDIATE")
        do throws(CaptureError) {
            // Tables whose definition this transaction changed (created, renamed,
            // altered, dropped columns): their rows are compared whole, since the
            // preupdate hook reported them in an older layout or under an older name.
            var redefined = Set<String>()
            if schemaChanged {
                let target = try schema("after")
                let current = Dictionary(try schema("main").filter { $0.type == "table" }.map { ($0.name, $0.sql) }, uniquingKeysWith: { a, _ in a })
                for t in target where t.type == "table" && !t.isVirtualTable && current[t.name] != t.sql {
                    redefined.insert(t.name)
                }
                try migrate(to: target)
                batch.schema = target
            }
            // Touched rows per table, in first-touch order.
            var order: [String] = []
            var byTable: [String: [ChangeRecorder.Event]] = [:]
            for e in events where !e.table.hasPrefix("sqlite_") {
                if byTable[e.table] == nil { order.append(e.table) }
                byTable[e.table, default: []].append(e)
            }
            for table in redefined.sorted() where byTable[table] == nil { order.append(table) }
            if compareAll {
                let tables = try scratch.query("SELECT name FROM after.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND sql NOT LIKE 'CREATE VIRTUAL %' ORDER BY rowid")
                for row in tables {
                    guard case .text(let bytes) = row.first else { continue }
                    let table = String(decoding: bytes, as: UTF8.self)
                    if byTable[table] == nil && !redefined.contains(table) { order.append(table) }
                }
            }
            var writer = ChangesetWriter(spillThreshold: rowSpillThreshold, spillDirectory: spillDirectory)
            for table in order {
                guard let changes = try diff(table, byTable[table] ?? [], schemaChanged: schemaChanged, whole: compareAll || redefined.contains(table)) else {
                    batch.tablesWithoutPrimaryKey.append(table)
                    continue
                }
                guard !changes.rows.isEmpty else { continue }
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
            (batch.changeset, batch.spilledChangeset) = try writer.finish()
        } catch {
            try? scratch.execute("ROLLBACK")
            throw error
        }
        try scratch.execute("ROLLBACK")
        return batch
    }

    /// The changed rows of one table (before, after), keyed as its changeset
    /// keys them, and which columns form that key; nil for a table without a
    /// PRIMARY KEY, which a changeset cannot carry.
    func diff(_ table: String, _ events: [ChangeRecorder.Event], schemaChanged: Bool, whole: Bool) throws(CaptureError)
        -> (primaryKey: [Int], rows: [([CapturedValue]?, [CapturedValue]?)])?
    {
        let t = table.quotedIdentifier
        // table_xinfo numbers columns as the preupdate hook does; generated
        // columns (hidden 2 and 3) are computed, and changesets leave them out.
        let info = try scratch.query("PRAGMA after.table_xinfo(\(t))")
        guard !info.isEmpty else { return (primaryKey: [], rows: []) }  // dropped by this transaction
        var columns: [(cid: Int, name: String, pk: Int64)] = []
        for row in info {
            guard case .integer(let cid) = row[0], case .text(let name) = row[1], case .integer(let pk) = row[5],
                case .integer(let hidden) = row[6], hidden == 0 else { continue }
            columns.append((Int(cid), String(decoding: name, as: UTF8.self), pk))
        }
        let keyColumns = columns.indices.filter { columns[$0].pk > 0 }.sorted { columns[$0].pk < columns[$1].pk }
        guard !keyColumns.isEmpty else { return nil }
        let list = columns.map { $0.name.quotedIdentifier }.joined(separator: ", ")
        let withoutRowid = try scratch.query("SELECT wr FROM pragma_table_list WHERE schema = 'after' AND name = ?1", [.text(Array(table.utf8))])
            .first?.first == .integer(1)

        var before: [[CapturedValue]] = []
        var after: [[CapturedValue]] = []
        if whole {
            after = try scratch.query("SELECT \(list) FROM after.\(t)")
            let present = try scratch.query("SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?1", [.text(Array(table.utf8))])
            if !present.isEmpty { before = try scratch.query("SELECT \(list) FROM main.\(t)") }
        } else if !withoutRowid {
            // By rowid: every row the transaction touched, as it was and as it is.
            var rowids = Set<Int64>()
            for e in events {
                if let r = e.oldRowid { rowids.insert(r) }
                if let r = e.newRowid { rowids.insert(r) }
            }
            let json = "[" + rowids.sorted().map(String.init).joined(separator: ",") + "]"
            after = try scratch.query("SELECT \(list) FROM after.\(t) WHERE rowid IN (SELECT value FROM json_each(?1))", [.text(Array(json.utf8))])
            if !schemaChanged {
                before = try scratch.query("SELECT \(list) FROM main.\(t) WHERE rowid IN (SELECT value FROM json_each(?1))", [.text(Array(json.utf8))])
            } else {
                // A migrated table may have new rowids: find the old rows by key.
                let keys = Self.distinct(events.flatMap { e in [e.old, e.new].compactMap { $0 } }.compactMap { values in
                    keyColumns.allSatisfy({ columns[$0].cid < values.count }) ? keyColumns.map { values[columns[$0].cid] } : nil
                } + after.map { row in keyColumns.map { row[$0] } })
                before = try rows(in: "main", table, list, keyColumns.map { columns[$0].name }, keyColumns, keys)
            }
        } else {
            let keys = Self.distinct(events.flatMap { e in [e.old, e.new].compactMap { $0 } }.compactMap { values in
                keyColumns.allSatisfy({ columns[$0].cid < values.count }) ? keyColumns.map { values[columns[$0].cid] } : nil
            })
            before = try rows(in: "main", table, list, keyColumns.map { columns[$0].name }, keyColumns, keys)
            after = try rows(in: "after", table, list, keyColumns.map { columns[$0].name }, keyColumns, keys)
        }
        func key(_ row: [CapturedValue]) -> [CapturedValue] { keyColumns.map { row[$0] } }
        var old: [[CapturedValue]: [CapturedValue]] = [:]
        var keys: [[CapturedValue]] = []
        for row in before where !row.isEmpty {
            if old.updateValue(row, forKey: key(row)) == nil { keys.append(key(row)) }
        }
        var new: [[CapturedValue]: [CapturedValue]] = [:]
        for row in after where !row.isEmpty {
            if new.updateValue(row, forKey: key(row)) == nil, old[key(row)] == nil { keys.append(key(row)) }
        }
        var changed: [([CapturedValue]?, [CapturedValue]?)] = []
        for k in keys {
            let b = old[k], a = new[k]
            if let b, let a, ChangesetWriter.same(b, a) { continue }
            changed.append((b, a))
        }
        let primaryKey = columns.map { Int($0.pk) }
        return (primaryKey, changed)
    }

    /// Rows of `table` in `schemaName` whose key is one of `keys`.
    ///
    /// A key under a collation only the application has is found by a scan
    /// and exact comparison: a lookup would order by the scratch side's
    /// stand-in, not by the collation the index was built with.
    private func rows(in schemaName: String, _ name: String, _ list: String, _ keyNames: [String], _ keyIndices: [Int],
                      _ keys: [[CapturedValue]]) throws(CaptureError) -> [[CapturedValue]] {
        guard !keys.isEmpty else { return [] }
        let table = name.quotedIdentifier
        let collations = try scratch.query(
            "SELECT x.coll FROM \(schemaName).pragma_index_list(?1) AS l, \(schemaName).pragma_index_xinfo(l.name) AS x WHERE l.origin = 'pk' AND x.key = 1",
            [.text(Array(name.utf8))])
        let builtIn: Set<[UInt8]> = [Array("BINARY".utf8), Array("NOCASE".utf8), Array("RTRIM".utf8)]
        if collations.contains(where: { row in if case .text(let c) = row.first { !builtIn.contains(c) } else { false } }) {
            let wanted = Set(keys)
            return try scratch.query("SELECT \(list) FROM \(schemaName).\(table)").filter { row in
                wanted.contains(keyIndices.map { row[$0] })
            }
        }
        if keyNames.count == 1, let json = Self.jsonArray(keys) {
            return try scratch.query("SELECT \(list) FROM \(schemaName).\(table) WHERE \(keyNames[0].quotedIdentifier) IN (SELECT value FROM json_each(?1))", [.text(Array(json.utf8))])
        }
        let condition = keyNames.enumerated().map { "\($1.quotedIdentifier) IS ?\($0 + 1)" }.joined(separator: " AND ")
        var out: [[CapturedValue]] = []
        for k in keys { out += try scratch.query("SELECT \(list) FROM \(schemaName).\(table) WHERE \(condition)", k) }
        return out
    }

    static func distinct(_ keys: [[CapturedValue]]) -> [[CapturedValue]] {
        var seen = Set<[CapturedValue]>()
        return keys.filter { seen.insert($0).inserted }
    }

    /// `[k1, k2, ...]` when every key is one integer or one plain text, else nil.
    static func jsonArray(_ keys: [[CapturedValue]]) -> String? {
        guard keys.count > 1 else { return nil }
        var out = "["
        for (i, key) in keys.enumerated() {
            if i > 0 { out += "," }
            switch key.first {
            case .integer(let v): out += String(v)
            case .text(let bytes):
                // Only text that needs no JSON escaping and compares equal as JSON text.
                guard bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7F && $0 != 0x22 && $0 != 0x5C }) else { return nil }
                out += "\"" + String(decoding: bytes, as: UTF8.self) + "\""
            default: return nil
            }
        }
        return out + "]"
    }

    private func schema(_ database: String) throws(CaptureError) -> [SchemaObject] {
        try scratch.query(SchemaMigration.query(schema: database)).map { row in
            func text(_ v: CapturedValue) -> String {
                if case .text(let t) = v { return String(decoding: t, as: UTF8.self) }
                return ""
            }
            return SchemaObject(type: text(row[0]), name: text(row[1]), tableName: text(row[2]), sql: text(row[3]))
        }
    }

    private func migrate(to target: [SchemaObject]) throws(CaptureError) {
        func columns(_ schemaName: String, _ table: String) throws(CaptureError) -> [String] {
            try scratch.query("PRAGMA \(schemaName).table_info(\(table.quotedIdentifier))").compactMap { row in
                if case .text(let t) = row[1] { return String(decoding: t, as: UTF8.self) }
                return nil
            }
        }
        do {
            let renames = try SchemaMigration.renames(
                from: try schema("main"), to: target,
                columnsOfCurrent: { table in try columns("main", table) },
                columnsOfTarget: { object in try columns("after", object.name) })
            for sql in renames { try executeMigration(sql) }
            let statements = try SchemaMigration.statements(
                from: try schema("main"), to: target,
                columnsOfCurrent: { table in try columns("main", table) },
                columnsOfTarget: { object in try columns("after", object.name) })
            for sql in statements { try executeMigration(sql) }
        } catch let error as CaptureError {
            throw error
        } catch {
            throw CaptureError(code: SQLITE_ERROR, message: "\(error)")
        }
    }

    /// Functions given a stand-in on the scratch connection.
    private var standInFunctions = Set<String>()

    /// Runs one migration statement. SQLite resolves the functions a CHECK
    /// constraint, an index expression or a generated column calls when the
    /// definition is created, so a function only the application registered
    /// (as with collations, see `init`) gets a stand-in that returns NULL.
    /// Capture never evaluates it for a row it reports: it reads stored
    /// columns (generated ones are not in a changeset), CHECK constraints are
    /// off here, and the scratch side's index contents are never read.
    private func executeMigration(_ sql: String) throws(CaptureError) {
        while true {
            do {
                try scratch.execute(sql)
                return
            } catch {
                guard let name = Self.missingFunction(in: error.message), standInFunctions.count < 64,
                    standInFunctions.insert(name.lowercased()).inserted
                else { throw error }
                try scratch.createStandInFunction(name)
            }
        }
    }

    /// The function named by SQLite's "no such function: NAME" error, if any.
    static func missingFunction(in message: String) -> String? {
        guard let range = message.firstRange(of: "no such function: ") else { return nil }
        let name = message[range.upperBound...].prefix { $0 != " " && $0 != "[" && $0 != "]" }
        return name.isEmpty ? nil : String(name)
    }
}
