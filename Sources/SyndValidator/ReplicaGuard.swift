import CSQLite
import SyndSQLite

#if canImport(Glibc)
import Glibc
#endif

/// Bounds on the work a validator does for a batch.
public struct ReplicaLimits: Sendable {
    /// Longest any single statement on a replica may run: a schema change,
    /// a changeset application, a comparison or a rule.
    public var statementTimeout: Duration

    public init(statementTimeout: Duration = .seconds(300)) {
        self.statementTimeout = statementTimeout
    }
}

/// Why a batch could not be applied to or checked on a replica, other than
/// a changeset conflict: schema text that is not a plain definition, or a
/// statement stopped by the time limit.
public struct ReplicaRefusal: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Keeps a validator's SQLite connections to what validation needs, because
/// a batch's schema text and page images come from the writer:
///
/// - Schema text runs only through `runDefinition`: exactly one statement,
///   under an authorizer that allows plain definitions (CREATE TABLE, INDEX,
///   VIEW, TRIGGER, and ALTER TABLE ADD COLUMN) and refuses anything that would
///   run a query, such as `CREATE TABLE ... AS SELECT` or a recursive CTE.
/// - Every statement on an attached connection has a deadline, armed when the
///   statement starts (`sqlite3_trace_v2`) and checked by a progress handler,
///   so plain definitions that are expensive by design (an index over a
///   costly expression) are stopped, not waited for.
/// - No ATTACH, and no SQL text above 16 MiB.
///
/// A process-wide memory bound is the caller's (`sqlite3_hard_heap_limit64`,
/// as `synd validate --memory-limit-mb` sets it). Use from one thread at a time.
public final class ReplicaGuard {
    public let limits: ReplicaLimits
    private let timeoutNanos: UInt64
    private var deadline = UInt64.max
    /// The last top-level statement that started, for the message when it is stopped.
    private var running: OpaquePointer?
    /// Set when the progress handler stops a statement; cleared by `reset`
    /// (not by the next statement: SQLite's own cleanup, such as the ROLLBACK TO
    /// inside sqlite3changeset_apply, runs before the caller sees the error).
    private var stoppedSQL: String?

    private enum Mode { case off, definition, addColumn }
    private var mode = Mode.off
    /// What the authorizer refused during the current definition.
    private var refused: String?

    public init(limits: ReplicaLimits = ReplicaLimits()) {
        self.limits = limits
        let (seconds, attoseconds) = limits.statementTimeout.components
        // Saturating: a huge --statement-timeout means "no limit", not a trap.
        let (whole, overflow) = UInt64(max(0, seconds)).multipliedReportingOverflow(by: 1_000_000_000)
        timeoutNanos = overflow ? .max : whole.addingReportingOverflow(UInt64(max(0, attoseconds) / 1_000_000_000)).partialValue
    }

    /// Puts `connection` under the deadline and limits. The guard must outlive it.
    public func attach(_ connection: Connection) {
        connection.useStandInCollations()
        let context = Unmanaged.passUnretained(self).toOpaque()
        sqlite3_trace_v2(connection.handle, UInt32(SQLITE_TRACE_STMT), { _, context, statement, text in
            // Trigger programs report "-- name"; they belong to the statement that fired them.
            if let context, let text, text.assumingMemoryBound(to: CChar.self).pointee != 0x2D {
                Unmanaged<ReplicaGuard>.fromOpaque(context).takeUnretainedValue().started(OpaquePointer(statement))
            }
            return 0
        }, context)
        // Every 64 virtual machine instructions: cheap, and fine-grained enough
        // that a loop over rows is stopped within a few rows of its deadline.
        sqlite3_progress_handler(connection.handle, 64, { context in
            guard let context else { return 0 }
            return Unmanaged<ReplicaGuard>.fromOpaque(context).takeUnretainedValue().expired() ? 1 : 0
        }, context)
        sqlite3_limit(connection.handle, SQLITE_LIMIT_ATTACHED, 0)
        sqlite3_limit(connection.handle, SQLITE_LIMIT_SQL_LENGTH, 16 << 20)
    }

    private func started(_ statement: OpaquePointer?) {
        running = statement
        deadline = Self.now() &+ timeoutNanos
    }

    /// Forgets a stopped statement: call before each unit of work (a batch, a comparison).
    public func reset() {
        stoppedSQL = nil
    }

    private func expired() -> Bool {
        guard Self.now() > deadline else { return false }
        if stoppedSQL == nil {
            stoppedSQL = running.flatMap { sqlite3_sql($0) }.map { String(cString: $0) } ?? "?"
        }
        return true
    }

    /// Why the last statement failed, if the deadline stopped it.
    public var stopped: ReplicaRefusal? {
        stoppedSQL.map { ReplicaRefusal("a statement ran longer than \(Self.format(limits.statementTimeout)) (the validator's statement time limit) and was stopped: \(Self.excerpt($0))") }
    }

    /// `error`, or the time limit when that is what stopped the statement.
    public func explain(_ error: any Error) -> any Error {
        stopped ?? error
    }

    /// Runs schema text from a batch: one statement, plain definitions only.
    /// - Parameters:
    ///   - addColumn: the statement is `ALTER TABLE ... ADD COLUMN` with a definition from the batch
    ///     (SQLite re-checks the table's CHECK constraints with a query of its own).
    ///   - entry: the schema entry's name, for messages.
    public func runDefinition(_ sql: String, on connection: Connection, addColumn: Bool = false, entry: String) throws {
        reset()
        mode = addColumn ? .addColumn : .definition
        refused = nil
        sqlite3_set_authorizer(connection.handle, { context, action, a, b, _, _ in
            guard let context else { return SQLITE_DENY }
            return Unmanaged<ReplicaGuard>.fromOpaque(context).takeUnretainedValue()
                .authorize(action, a.map { String(cString: $0) }, b.map { String(cString: $0) })
        }, Unmanaged.passUnretained(self).toOpaque())
        defer {
            sqlite3_set_authorizer(connection.handle, nil, nil)
            mode = .off
        }
        let db = connection.handle
        var statement: OpaquePointer?
        var more = false
        let rc = sql.withCString { text -> Int32 in
            var tail: UnsafePointer<CChar>?
            let rc = sqlite3_prepare_v2(db, text, -1, &statement, &tail)
            if rc == SQLITE_OK, let tail, tail.pointee != 0 {
                // Only whitespace and comments may follow.
                var next: OpaquePointer?
                more = sqlite3_prepare_v2(db, tail, -1, &next, nil) != SQLITE_OK || next != nil
                sqlite3_finalize(next)
            }
            return rc
        }
        defer { sqlite3_finalize(statement) }
        if more {
            throw ReplicaRefusal("schema entry '\(entry)' holds more than one statement; a validator runs only single definitions: \(Self.excerpt(sql))")
        }
        if let refused {
            throw ReplicaRefusal("schema entry '\(entry)' is not a plain definition: it would \(refused), and a validator never runs queries from a batch: \(Self.excerpt(sql))")
        }
        guard rc == SQLITE_OK else { throw Self.error(db, sql) }
        guard let statement else { return }
        var step = sqlite3_step(statement)
        while step == SQLITE_ROW { step = sqlite3_step(statement) }
        if let stopped { throw stopped }
        guard step == SQLITE_DONE else { throw Self.error(db, sql) }
    }

    private func authorize(_ action: Int32, _ a: String?, _ b: String?) -> Int32 {
        switch action {
        case SQLITE_CREATE_TABLE, SQLITE_CREATE_INDEX, SQLITE_CREATE_VIEW, SQLITE_CREATE_TRIGGER, SQLITE_REINDEX,
            SQLITE_READ:
            // READ: column names in an index, CHECK or generated column, and the schema table.
            return SQLITE_OK
        case SQLITE_FUNCTION where b != "load_extension":
            return SQLITE_OK
        case SQLITE_INSERT where Self.isSchemaTable(a), SQLITE_UPDATE where Self.isSchemaTable(a),
            SQLITE_DELETE where Self.isSchemaTable(a):
            // SQLite records the definition in the schema table.
            return SQLITE_OK
        case SQLITE_ALTER_TABLE where mode == .addColumn:
            return SQLITE_OK
        case SQLITE_SELECT where mode == .addColumn, SQLITE_PRAGMA where mode == .addColumn && a == "quick_check":
            // ADD COLUMN checks existing rows against the table's CHECK constraints
            // with a query SQLite writes itself; a column definition cannot hold one.
            return SQLITE_OK
        default:
            if refused == nil { refused = Self.describe(action, a, b) }
            return SQLITE_DENY
        }
    }

    private static func isSchemaTable(_ name: String?) -> Bool {
        ["sqlite_master", "sqlite_schema"].contains(name?.lowercased() ?? "")
    }

    private static func describe(_ action: Int32, _ a: String?, _ b: String?) -> String {
        switch action {
        case SQLITE_SELECT: "run a query (SELECT)"
        case SQLITE_RECURSIVE: "run a recursive query"
        case SQLITE_PRAGMA: "run PRAGMA \(a ?? "")"
        case SQLITE_ATTACH: "attach a database"
        case SQLITE_DETACH: "detach a database"
        case SQLITE_INSERT: "insert rows into \(a ?? "?")"
        case SQLITE_UPDATE: "update rows of \(a ?? "?")"
        case SQLITE_DELETE: "delete rows of \(a ?? "?")"
        case SQLITE_FUNCTION: "call \(b ?? "?")()"
        case SQLITE_CREATE_VTABLE: "create a virtual table (module \(b ?? "?"))"
        case SQLITE_CREATE_TEMP_TABLE, SQLITE_CREATE_TEMP_INDEX, SQLITE_CREATE_TEMP_VIEW, SQLITE_CREATE_TEMP_TRIGGER:
            "create a TEMP object"
        case SQLITE_ALTER_TABLE: "alter table \(b ?? "?")"
        case SQLITE_TRANSACTION, SQLITE_SAVEPOINT: "control a transaction"
        default: "perform action \(action) on \(a ?? "?")"
        }
    }

    private static func error(_ db: OpaquePointer, _ sql: String) -> SQLiteError {
        SQLiteError(code: sqlite3_extended_errcode(db), message: String(cString: sqlite3_errmsg(db)), context: excerpt(sql))
    }

    static func excerpt(_ sql: String) -> String {
        sql.count > 200 ? String(sql.prefix(197)) + "..." : sql
    }

    static func format(_ d: Duration) -> String {
        let (s, atto) = d.components
        return atto == 0 ? "\(s) s" : "\(s * 1000 + atto / 1_000_000_000_000_000) ms"
    }

    private static func now() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }
}
