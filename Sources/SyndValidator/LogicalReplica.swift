import CSQLite
import Foundation
import SyndCapture
import SyndProtocol
import SyndSQLite

/// A database rebuilt from changesets alone: each batch's schema (when it
/// changed) and then its changeset, applied with sqlite3changeset_apply
/// (https://www.sqlite.org/session/sqlite3changeset_apply.html). Any conflict
/// means the changeset does not describe the database it claims to change.
///
/// Schema text from a batch runs only as plain definitions, under `sentry`'s
/// authorizer and time limit (see `ReplicaGuard`).
public final class LogicalReplica {
    public let connection: Connection
    /// Limits every statement on `connection`; shared with the validator's other connections.
    public let sentry: ReplicaGuard
    /// Functions of the writer's application the schema calls (shared with the validator's physical side).
    public let standIns: StandInFunctions

    public init(path: String, sentry: ReplicaGuard = ReplicaGuard(), standIns: StandInFunctions = StandInFunctions()) throws {
        connection = try Connection(path: path)
        self.sentry = sentry
        self.standIns = standIns
        sentry.attach(connection)
        // The changesets already hold what triggers and cascades did.
        _ = synd_linked_enable_triggers(connection.handle, 0)
        try connection.execute("PRAGMA foreign_keys=OFF; PRAGMA legacy_alter_table=ON; PRAGMA journal_mode=MEMORY; PRAGMA synchronous=OFF; PRAGMA locking_mode=EXCLUSIVE")
        try standIns.install(on: connection)
    }

    /// Makes this replica a copy of the database at `path` (SQLite's backup API).
    public func copy(from path: String) throws {
        let source = try Connection(path: "file:\(path)?mode=ro&immutable=1", readOnly: true)
        guard let backup = sqlite3_backup_init(connection.handle, "main", source.handle, "main") else {
            throw ReplicaRefusal("cannot copy the snapshot into the logical replica: \(String(cString: sqlite3_errmsg(connection.handle)))")
        }
        let rc = sqlite3_backup_step(backup, -1)
        sqlite3_backup_finish(backup)
        guard rc == SQLITE_DONE else {
            throw ReplicaRefusal("cannot copy the snapshot into the logical replica: \(String(cString: sqlite3_errstr(rc)))")
        }
    }

    /// Applies one batch; throws a `ReplicaConflict` at the first conflict, and a
    /// `ReplicaRefusal` for schema text that is not a plain definition or a
    /// statement stopped by the time limit.
    public func apply(schemaChanged: Bool, schema: [SchemaObject], changeset: [UInt8]) throws {
        sentry.reset()
        try connection.execute("BEGIN")
        do {
            if schemaChanged { try migrate(to: schema) }
            if !changeset.isEmpty {
                try standIns.run(on: [connection]) { try Self.apply(changeset, to: connection) }
            }
            if schemaChanged {
                // Indexes, views and triggers the migration left missing, now that the rows are in place.
                for sql in SchemaMigration.finishingStatements(from: try self.schema(), to: schema) {
                    try standIns.run(on: [connection]) { try run(sql, from: schema) }
                }
            }
            try connection.execute("COMMIT")
        } catch {
            try? connection.execute("ROLLBACK")
            throw sentry.explain(error)
        }
    }

    public func apply(_ batch: Batch) throws {
        try apply(schemaChanged: batch.schemaChanged, schema: batch.schema, changeset: batch.changeset)
    }

    /// The current schema (user objects, creation order).
    public func schema(of connection: Connection? = nil) throws -> [SchemaObject] {
        try (connection ?? self.connection).query(SchemaMigration.query(schema: "")).map {
            SchemaObject(type: $0[0].string ?? "", name: $0[1].string ?? "", tableName: $0[2].string ?? "", sql: $0[3].string ?? "")
        }
    }

    private func migrate(to target: [SchemaObject]) throws {
        // Schema text comes from the writer: one CREATE statement each, nothing more.
        for object in target {
            guard Self.isSingleCreate(object.sql, type: object.type) else {
                throw ReplicaConflict(table: object.name, description: "schema entry '\(object.name)' is not a single CREATE \(object.type.uppercased()) statement")
            }
        }
        let current = try schema()
        // Column names of the target tables: create them in a scratch in-memory database.
        let scratch = try Connection(path: ":memory:")
        sentry.attach(scratch)
        try standIns.install(on: scratch)
        func columns(_ db: Connection, _ table: String) throws -> [String] {
            try db.query("PRAGMA table_info(\(table.quotedIdentifier))").compactMap { $0[1].string }
        }
        // Virtual tables are recorded, never instantiated (their module is the writer's).
        for object in target where object.type == "table" && !object.isVirtualTable {
            try standIns.run(on: [scratch, connection]) { try sentry.runDefinition(object.sql, on: scratch, entry: object.name) }
        }
        let renames = try SchemaMigration.renames(
            from: current, to: target,
            columnsOfCurrent: { try columns(self.connection, $0) },
            columnsOfTarget: { try columns(scratch, $0.name) })
        for sql in renames { try standIns.run(on: [scratch, connection]) { try connection.execute(sql) } }
        let statements = try SchemaMigration.statements(
            from: try schema(), to: target,
            columnsOfCurrent: { try columns(self.connection, $0) },
            columnsOfTarget: { try columns(scratch, $0.name) })
        for sql in statements { try standIns.run(on: [scratch, connection]) { try run(sql, from: target) } }
    }

    /// Runs one migration statement. Text from the batch (an entry's CREATE
    /// statement, or an ALTER TABLE ADD COLUMN with a definition taken from one)
    /// runs as a plain definition under the guard; the migration's own
    /// statements (renames, row copies, drops, built from quoted names) as they are.
    private func run(_ sql: String, from target: [SchemaObject]) throws {
        if let object = target.first(where: { $0.sql == sql }) {
            try sentry.runDefinition(sql, on: connection, entry: object.name)
        } else if let table = target.first(where: {
            $0.type == "table" && sql.hasPrefix("ALTER TABLE \($0.name.quotedIdentifier) ADD COLUMN ")
        }) {
            try sentry.runDefinition(sql, on: connection, addColumn: true, entry: table.name)
        } else {
            try connection.execute(sql)
        }
    }

    /// True when `sql` is exactly one CREATE statement of `type`: no second
    /// statement after a semicolon outside quotes and comments.
    public static func isSingleCreate(_ sql: String, type: String) -> Bool {
        let words = sql.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "(" }).prefix(4).map { $0.uppercased() }
        guard words.first == "CREATE", words.contains(type.uppercased()) else { return false }
        let chars = Array(sql.unicodeScalars)
        var i = 0
        var ended = false
        while i < chars.count {
            let c = chars[i]
            if ended {
                if !(c == " " || c == "\n" || c == "\t" || c == "\r" || c == ";") { return false }
                i += 1
                continue
            }
            switch c {
            case "'", "\"", "`", "[":
                let close: Unicode.Scalar = c == "[" ? "]" : c
                i += 1
                while i < chars.count && chars[i] != close { i += 1 }
            case "-" where i + 1 < chars.count && chars[i + 1] == "-":
                while i < chars.count && chars[i] != "\n" { i += 1 }
            case "/" where i + 1 < chars.count && chars[i + 1] == "*":
                i += 2
                while i + 1 < chars.count && !(chars[i] == "*" && chars[i + 1] == "/") { i += 1 }
                i += 1
            case ";":
                // Semicolons inside a trigger body do not end the statement.
                let prefix = String(String.UnicodeScalarView(chars[0...i]))
                ended = sqlite3_complete(prefix) != 0
            default:
                break
            }
            i += 1
        }
        return true
    }

    /// Applies `changeset` to `connection`, aborting at the first conflict
    /// (thrown as a `ReplicaConflict` that names the table, key and kind).
    public static func apply(_ changeset: [UInt8], to connection: Connection) throws {
        // SQLite's reader trusts its input (malformed bytes could keep it busy
        // for minutes): check the structure first.
        if let problem = ChangesetFormat.problem(in: changeset) { throw ReplicaRefusal("malformed changeset: \(problem)") }
        let conflicts = ConflictLog()
        let rc = changeset.withUnsafeBytes { bytes in
            sqlite3changeset_apply(
                connection.handle, Int32(bytes.count), UnsafeMutableRawPointer(mutating: bytes.baseAddress), nil,
                { context, kind, iterator in
                    let log = Unmanaged<ConflictLog>.fromOpaque(context!).takeUnretainedValue()
                    log.record(kind, iterator)
                    return SQLITE_CHANGESET_ABORT
                }, Unmanaged.passUnretained(conflicts).toOpaque())
        }
        if let first = conflicts.first { throw first }
        guard rc == SQLITE_OK else {
            throw ReplicaConflict(table: "?", description: "sqlite3changeset_apply failed: \(String(cString: sqlite3_errmsg(connection.handle))) (\(rc))")
        }
    }
}

/// A changeset that does not fit the replica it is applied to.
public struct ReplicaConflict: Error, CustomStringConvertible {
    public var table: String
    public var description: String
}

private final class ConflictLog {
    var first: ReplicaConflict?

    func record(_ kind: Int32, _ iterator: OpaquePointer?) {
        guard first == nil, let iterator else { return }
        var table: UnsafePointer<CChar>?
        var columns: Int32 = 0
        var op: Int32 = 0
        var indirect: Int32 = 0
        sqlite3changeset_op(iterator, &table, &columns, &op, &indirect)
        let name = table.map { String(cString: $0) } ?? "?"
        let what = switch kind {
        case SQLITE_CHANGESET_DATA: "the row's current values differ from the changeset's old values"
        case SQLITE_CHANGESET_NOTFOUND: "the row to change does not exist"
        case SQLITE_CHANGESET_CONFLICT: "a row with this key already exists"
        case SQLITE_CHANGESET_CONSTRAINT: "a constraint failed"
        case SQLITE_CHANGESET_FOREIGN_KEY: "a foreign key constraint failed"
        default: "conflict \(kind)"
        }
        let opName = op == SQLITE_INSERT ? "INSERT" : op == SQLITE_DELETE ? "DELETE" : "UPDATE"
        var key: [String] = []
        var pk: UnsafeMutablePointer<UInt8>?
        var n: Int32 = 0
        sqlite3changeset_pk(iterator, &pk, &n)
        for i in 0..<n where pk?[Int(i)] != 0 {
            var v: OpaquePointer?
            if op == SQLITE_INSERT { sqlite3changeset_new(iterator, i, &v) } else { sqlite3changeset_old(iterator, i, &v) }
            key.append(v.flatMap { sqlite3_value_text($0) }.map { String(cString: $0) } ?? "NULL")
        }
        first = ReplicaConflict(table: name, description: "\(opName) on \(name) key (\(key.joined(separator: ", "))): \(what)")
    }
}
