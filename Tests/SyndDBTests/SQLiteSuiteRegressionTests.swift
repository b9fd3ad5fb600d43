import CSQLite
import Foundation
import SyndDB
import SyndProtocol
import SyndSQLite
import SyndValidator
import Testing

/// Defects found by running SQLite's own TCL test suite with synddb as the
/// default VFS (scripts/sqlite-test-suite.sh), each with the smallest case.
@Suite struct SQLiteSuiteRegressionTests {
    /// func4-3.1: `CREATE TABLE t1(x INTEGER CHECK(tointeger(x) IS NOT NULL))`,
    /// where tointeger is a function only the application registered, failed
    /// its COMMIT with "disk I/O error": changeset capture creates the table on
    /// its scratch connection, and SQLite resolves the functions of CHECK
    /// constraints and generated columns when a table is created. Capture now
    /// gives such a function a stand-in (as it does for collations).
    @Test func aCheckConstraintCallingAnApplicationFunctionCommits() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("appfunc")
            let db = try Database.open(name, sequencer: server.url)
            let identity: @convention(c) (OpaquePointer?, Int32, UnsafeMutablePointer<OpaquePointer?>?) -> Void = { context, _, args in
                sqlite3_result_value(context, args?[0])
            }
            #expect(sqlite3_create_function_v2(
                db.connection.handle, "tointeger", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, nil, identity, nil, nil, nil) == SQLITE_OK)
            try db.execute("CREATE TABLE t1(x INTEGER CHECK(tointeger(x) IS NOT NULL))")
            try db.execute("INSERT INTO t1(x) VALUES (5)")
            // The constraint still holds on the application's connection.
            #expect(throws: (any Error).self) { try db.execute("INSERT INTO t1(x) VALUES (NULL)") }
            // Rows already there, a column added with such a CHECK, a STORED
            // generated column and an index expression calling it.
            try db.execute("ALTER TABLE t1 ADD COLUMN y INT CHECK(tointeger(y) > 0)")
            try db.execute("CREATE TABLE t2(id INTEGER PRIMARY KEY, a INT, b INT GENERATED ALWAYS AS (tointeger(a) * 2) STORED)")
            try db.execute("CREATE INDEX t2_a ON t2(tointeger(a))")
            try db.execute("INSERT INTO t1(x, y) VALUES (6, 7); INSERT INTO t2(a) VALUES (21)")
            #expect(try db.query("SELECT x, y FROM t1 ORDER BY x") == [[.integer(5), .null], [.integer(6), .integer(7)]])
            #expect(try db.query("SELECT a, b FROM t2") == [[.integer(21), .integer(42)]])
            // The last batch carries t2's row (t1 has no PRIMARY KEY, so no changeset can).
            let store = server.service.store
            let head = try store.headVersion(of: name)
            let last = try #require(try store.batch(database: name, version: head))
            let text = try ChangesetText().statements(last.changeset).joined(separator: "; ")
            #expect(text.contains("t2") && text.contains("INSERT") && text.contains("21"), "\(text)")
        }
    }
}
