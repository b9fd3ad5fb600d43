import CSQLite
import SyndSQLite

#if canImport(Glibc)
import Glibc
#endif

extension Connection {
    /// Gives every collation the writer's application registered (and the
    /// validator cannot have) a stand-in that compares bytes, so the schema
    /// loads and rows compare. Replicas never depend on the order it gives:
    /// tables are compared key by key, and each replica's indexes are built
    /// (logical) or only read (physical) consistently.
    func useStandInCollations() {
        sqlite3_collation_needed(handle, nil) { _, db, _, name in
            guard let db, let name else { return }
            sqlite3_create_collation_v2(db, name, SQLITE_UTF8, nil, { _, n1, p1, n2, p2 in
                let n = Int(min(n1, n2))
                let c = n == 0 ? 0 : memcmp(p1!, p2!, n)
                return c != 0 ? c : n1 - n2
            }, nil)
        }
    }
}

/// Functions the writer's application registered and a validator cannot
/// have, called by a CHECK constraint, a generated column or an index
/// expression of the writer's schema (capture does the same on its scratch
/// connection, see `ChangesetCapture.executeMigration`).
///
/// SQLite has no "function needed" callback: SQLite names a missing function
/// when a definition calling it is created ("no such function: f") or a
/// statement evaluating it is prepared ("unknown function: f()"). `run` then
/// registers a stand-in that returns NULL, under that name and any number of
/// arguments, on the validator's connections, and runs the work again.
///
/// What a validator cannot evaluate it does not check: on a connection with
/// stand-ins CHECK constraints are not enforced (`ignore_check_constraints`;
/// the writer's connection enforced them), and once any stand-in exists the
/// replicas are compared on the columns a changeset carries, not on
/// generated columns (see `Validator.compareTable`).
public final class StandInFunctions {
    public private(set) var names: Set<String> = []
    /// Bound on how many functions can be stood in for (a schema is finite;
    /// this only stops a loop on an error that names no new function).
    static let limit = 256

    public init() {}

    /// Registers every stand-in known so far on `connection` (a new connection).
    public func install(on connection: Connection) throws {
        for name in names.sorted() { try Self.register(name, on: connection) }
    }

    /// Runs `body`; when it fails because a function is missing, gives that
    /// function a stand-in on each of `connections` and runs `body` again.
    /// `body` must be safe to repeat after a failure (a statement that failed
    /// changed nothing, and sqlite3changeset_apply rolls back its own savepoint).
    public func run<T>(on connections: [Connection], _ body: () throws -> T) throws -> T {
        while true {
            do {
                return try body()
            } catch {
                guard let name = Self.missingFunction(in: "\(error)"), names.count < Self.limit,
                    names.insert(name.lowercased()).inserted
                else { throw error }
                for connection in connections { try Self.register(name, on: connection) }
            }
        }
    }

    private static func register(_ name: String, on connection: Connection) throws {
        // A function that sets no result returns NULL.
        let rc = sqlite3_create_function_v2(
            connection.handle, name, -1, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, nil, { _, _, _ in }, nil, nil, nil)
        guard rc == SQLITE_OK else {
            throw SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(connection.handle)), context: "stand-in for function \(name)")
        }
        try connection.execute("PRAGMA ignore_check_constraints=ON")
    }

    /// The function named by SQLite's "no such function: NAME" (at CREATE) or
    /// "unknown function: NAME()" (at prepare) in `message`, if any.
    static func missingFunction(in message: String) -> String? {
        for marker in ["no such function: ", "unknown function: "] {
            guard let range = message.firstRange(of: marker) else { continue }
            let name = message[range.upperBound...].prefix { $0 != " " && $0 != "(" && $0 != "[" && $0 != "]" && $0 != ")" }
            if !name.isEmpty { return String(name) }
        }
        return nil
    }
}
