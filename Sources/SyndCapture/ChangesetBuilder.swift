import CSQLite
import SyndProtocol

/// Builds a transaction's exact changeset with SQLite's own session extension,
/// without touching the committing connection (which must run no statement
/// inside its commit).
///
/// A scratch connection opens the committed state ("before" view, writable,
/// never committed) and attaches the transaction's final image ("after" view,
/// read-only). Inside a transaction that is always rolled back it moves the
/// schema to the after schema, then, with a session attached, deletes every
/// row the preupdate hook saw touched and re-inserts its after version. The
/// session then reports, for each row, the net difference between before and
/// after: rows a failed statement or a ROLLBACK TO put back drop out, as they
/// do for a session on the application's connection.
public final class ChangesetCapture {
    private let scratch: HostConnection
    private let session: synd_session_api

    /// Opens the scratch connection over the two views of file `fileID`.
    public init(database: String, fileID: UInt64, vfs: String, routines: UnsafePointer<sqlite3_api_routines>,
                session: synd_session_api) throws(CaptureError) {
        let beforeURI = "file:\(database)?vfs=\(vfs)&synddb_view=before&synddb_file=\(fileID)"
        let afterURI = "file:\(database)?vfs=\(vfs)&synddb_view=after&synddb_file=\(fileID)"
        scratch = try HostConnection(uri: beforeURI, vfs: vfs, routines: routines)
        self.session = session
        _ = synd_db_enable_triggers(routines, scratch.db, 0)
        try scratch.execute("PRAGMA foreign_keys=OFF; PRAGMA legacy_alter_table=ON; PRAGMA journal_mode=MEMORY")
        // The VFS gives the after image a new change counter for every commit
        // (SnapshotFile), so SQLite never trusts pages cached from an earlier one.
        let literal = "'" + afterURI.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''") + "'"
        try scratch.execute("ATTACH \(literal) AS after")
    }

    /// The changeset of the rows `recorder` saw touched, and the schema if it changed.
    public func build(from recorder: ChangeRecorder, schemaChanged: Bool) throws(CaptureError) -> CapturedBatch {
        let events = recorder.events
        var batch = CapturedBatch()
        try scratch.execute("BEGIN IMMEDIATE")
        do throws(CaptureError) {
            if schemaChanged {
                let target = try schema("after")
                try migrate(to: target)
                batch.schema = target
            }
            // Touched keys per table, in first-touch order.
            var order: [String] = []
            var events_: [String: [ChangeRecorder.Event]] = [:]
            for e in events where !e.table.hasPrefix("sqlite_") {
                if events_[e.table] == nil { order.append(e.table) }
                events_[e.table, default: []].append(e)
            }
            var work: [(table: String, where_: String, singleColumn: String?, anyColumn: String, keys: [[CapturedValue]], oldKeys: [[CapturedValue]])] = []
            for table in order {
                let info = try scratch.query("PRAGMA after.table_info(\(table.quotedIdentifier))")
                guard !info.isEmpty else { continue }  // dropped by this transaction
                let pk = info.compactMap { row -> (ordinal: Int64, cid: Int, name: String)? in
                    guard case .integer(let ordinal) = row[5], ordinal > 0, case .integer(let cid) = row[0],
                        case .text(let name) = row[1] else { return nil }
                    return (ordinal, Int(cid), String(decoding: name, as: UTF8.self))
                }.sorted { $0.ordinal < $1.ordinal }
                guard !pk.isEmpty else {
                    batch.tablesWithoutPrimaryKey.append(table)
                    continue
                }
                var seen = Set<[CapturedValue]>(), seenOld = Set<[CapturedValue]>()
                var keys: [[CapturedValue]] = [], oldKeys: [[CapturedValue]] = []
                for e in events_[table]! {
                    for (isOld, values) in [(true, e.old), (false, e.new)] {
                        guard let values, pk.allSatisfy({ $0.cid < values.count }) else { continue }
                        let key = pk.map { values[$0.cid] }
                        if seen.insert(key).inserted { keys.append(key) }
                        if isOld, seenOld.insert(key).inserted { oldKeys.append(key) }
                    }
                }
                var anyColumn = pk[0].name
                if case .text(let first) = info[0][1] { anyColumn = String(decoding: first, as: UTF8.self) }
                let where_ = pk.enumerated().map { "\($1.name.quotedIdentifier) IS ?\($0 + 1)" }.joined(separator: " AND ")
                work.append((table, where_, pk.count == 1 ? pk[0].name.quotedIdentifier : nil, anyColumn, keys, oldKeys))
            }
            // Rows stored before an ALTER TABLE ADD COLUMN are short, and SQLite
            // 3.40's preupdate hook reports NULL, not the default, for the missing
            // columns. Rewrite the rows about to change (no session attached yet)
            // so their old values are what a reader sees.
            for w in work where !w.oldKeys.isEmpty {
                let t = w.table.quotedIdentifier, c = w.anyColumn.quotedIdentifier
                if let list = w.singleColumn, let json = Self.jsonArray(w.oldKeys) {
                    try scratch.query("UPDATE main.\(t) SET \(c) = \(c) WHERE \(list) IN (SELECT value FROM json_each(?1))", [.text(Array(json.utf8))])
                } else {
                    for key in w.oldKeys { try scratch.query("UPDATE main.\(t) SET \(c) = \(c) WHERE \(w.where_)", key) }
                }
            }
            var pSession: OpaquePointer?
            guard let create = session.session_create, let attach = session.session_attach,
                let changeset = session.session_changeset, let delete = session.session_delete
            else { throw CaptureError(code: SQLITE_ERROR, message: "the session extension is not available") }
            let rc = create(scratch.db, "main", &pSession)
            guard rc == SQLITE_OK, let pSession else { throw scratch.error(rc, "sqlite3session_create") }
            defer { delete(pSession) }
            _ = attach(pSession, nil)

            // All deletes first, then all inserts: a swap of unique values between
            // two rows must not collide halfway. A single-column key of integers
            // or text goes in one statement (a JSON array), others key by key.
            // A key never seen in an old image did not exist before the
            // transaction (replacing or re-keying onto an existing row reports
            // that row's old image first), so only old keys need deleting.
            for w in work where !w.oldKeys.isEmpty {
                let t = w.table.quotedIdentifier
                if let list = w.singleColumn, let json = Self.jsonArray(w.oldKeys) {
                    try scratch.query("DELETE FROM main.\(t) WHERE \(list) IN (SELECT value FROM json_each(?1))", [.text(Array(json.utf8))])
                } else {
                    for key in w.oldKeys { try scratch.query("DELETE FROM main.\(t) WHERE \(w.where_)", key) }
                }
            }
            for w in work {
                let t = w.table.quotedIdentifier
                if let list = w.singleColumn, let json = Self.jsonArray(w.keys) {
                    try scratch.query("INSERT OR IGNORE INTO main.\(t) SELECT * FROM after.\(t) WHERE \(list) IN (SELECT value FROM json_each(?1))", [.text(Array(json.utf8))])
                } else {
                    for key in w.keys { try scratch.query("INSERT OR IGNORE INTO main.\(t) SELECT * FROM after.\(t) WHERE \(w.where_)", key) }
                }
            }
            var n: Int32 = 0
            var p: UnsafeMutableRawPointer?
            let crc = changeset(pSession, &n, &p)
            guard crc == SQLITE_OK else { throw scratch.error(crc, "sqlite3session_changeset") }
            if let p {
                batch.changeset = Array(UnsafeRawBufferPointer(start: p, count: Int(n)))
                scratch.r.pointee.free(p)
            }
        } catch {
            try? scratch.execute("ROLLBACK")
            throw error
        }
        try scratch.execute("ROLLBACK")
        return batch
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
            for sql in renames { try scratch.execute(sql) }
            let statements = try SchemaMigration.statements(
                from: try schema("main"), to: target,
                columnsOfCurrent: { table in try columns("main", table) },
                columnsOfTarget: { object in try columns("after", object.name) })
            for sql in statements { try scratch.execute(sql) }
        } catch let error as CaptureError {
            throw error
        } catch {
            throw CaptureError(code: SQLITE_ERROR, message: "\(error)")
        }
    }
}
