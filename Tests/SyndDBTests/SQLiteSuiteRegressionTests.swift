import CSQLite
import Foundation
import SyndDB
import SyndProtocol
import SyndSQLite
import SyndValidator
import SyndVFS
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

    /// lock.test opens `./test.db` and
    /// `./tempdir/../tempdir/t1/.//t2/../../..//test.db`, and tester.tcl
    /// deletes `./test.db`: the local VFS resolves every spelling to one file,
    /// but synddb kept names exactly as given, so each was another database
    /// ("no such table: t1"). xFullPathname (and xDelete) now clean names
    /// lexically; plain names stay as they are.
    @Test func everySpellingOfOnePathNamesOneDatabase() async throws {
        #expect(DatabaseName.normalized("app") == "app")
        #expect(DatabaseName.normalized("./test.db") == "test.db")
        #expect(DatabaseName.normalized("./tempdir/../tempdir/t1/.//t2/../../..//test.db") == "test.db")
        #expect(DatabaseName.normalized("a//b/./c/") == "a/b/c")
        #expect(DatabaseName.normalized("../a/../b") == "../b")
        #expect(DatabaseName.normalized("/../x//y/..") == "/x")
        #expect(DatabaseName.normalized("a/..") == ".")
        try await withEmbeddedSequencer { server in
            let name = uniqueName("spelling")
            var first: Database? = try Database.open("./d/.//e/../../\(name)", sequencer: server.url)
            try first!.execute("CREATE TABLE t1(a INTEGER PRIMARY KEY); INSERT INTO t1 VALUES (1)")
            first = nil  // releases the lease
            let store = server.service.store
            #expect(try store.headVersion(of: name) >= 1)
            let db = try Database.open(name, sequencer: server.url)
            #expect(try db.query("SELECT a FROM t1") == [[.integer(1)]])
            // Deleting another spelling of the name drops this database (the open
            // file lends its sequencer and lease); the connection reads it empty.
            let vfs = try #require(sqlite3_vfs_find(SyndVFS.name))
            #expect(vfs.pointee.xDelete(vfs, "./\(name)", 0) == SQLITE_OK)
            #expect(try db.scalar("SELECT count(*) FROM sqlite_master") == .integer(0))
        }
    }

    /// cache.test and tempdb2.test check `PRAGMA lock_status`, which asks each
    /// file for SQLITE_FCNTL_LOCKSTATE; synddb answered SQLITE_NOTFOUND
    /// ("unknown"). It now answers the lock SQLite holds on the file.
    @Test func theLockStateFileControlAnswersTheLockSQLiteHolds() async throws {
        try await withEmbeddedSequencer { server in
            let db = try Database.open(uniqueName("lockstate"), sequencer: server.url)
            func lockState() -> Int32? {
                var level: Int32 = -1
                let rc = sqlite3_file_control(db.connection.handle, "main", SQLITE_FCNTL_LOCKSTATE, &level)
                return rc == SQLITE_OK ? level : nil
            }
            try db.execute("CREATE TABLE t(x)")
            #expect(lockState() == SQLITE_LOCK_NONE)
            try db.execute("BEGIN; SELECT * FROM t")
            #expect(lockState() == SQLITE_LOCK_SHARED)
            try db.execute("INSERT INTO t VALUES (1)")
            #expect(lockState() == SQLITE_LOCK_RESERVED)
            try db.execute("COMMIT")
            #expect(lockState() == SQLITE_LOCK_NONE)
        }
    }

    /// The validator's logical replica runs the writer's CREATE statements too:
    /// a CHECK constraint, generated column or index expression calling a
    /// function only the application registered stopped `synd validate` as it
    /// stopped capture (func4.test, cb49289). The validator now gives such a
    /// function a stand-in, does not re-run CHECK constraints, and compares
    /// the columns a changeset carries (not generated ones).
    @Test func theValidatorAcceptsDefinitionsCallingAnApplicationFunction() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("appfuncvalidate")
            let db = try Database.open(name, sequencer: server.url)
            let identity: @convention(c) (OpaquePointer?, Int32, UnsafeMutablePointer<OpaquePointer?>?) -> Void = { context, _, args in
                sqlite3_result_value(context, args?[0])
            }
            #expect(sqlite3_create_function_v2(
                db.connection.handle, "tointeger", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, nil, identity, nil, nil, nil) == SQLITE_OK)
            try db.execute("CREATE TABLE t1(id INTEGER PRIMARY KEY, x INTEGER CHECK(tointeger(x) IS NOT NULL))")
            try db.execute("INSERT INTO t1(x) VALUES (5)")
            try db.execute("ALTER TABLE t1 ADD COLUMN y INT CHECK(tointeger(y) > 0)")
            try db.execute("""
                CREATE TABLE t2(id INTEGER PRIMARY KEY, a INT,
                  b INT GENERATED ALWAYS AS (tointeger(a) * 2) STORED,
                  c INT GENERATED ALWAYS AS (tointeger(a) + 1) VIRTUAL)
                """)
            try db.execute("CREATE INDEX t2_a ON t2(tointeger(a))")
            try db.execute("INSERT INTO t1(x, y) VALUES (6, 7); INSERT INTO t2(a) VALUES (21)")
            try db.execute("UPDATE t2 SET a = 22; DELETE FROM t1 WHERE x = 5")
            #expect(try db.query("SELECT a, b, c FROM t2") == [[.integer(22), .integer(44), .integer(23)]])
            let failure = try LedgerTests.validate(server.service.store, name)
            #expect(failure == nil, "\(failure.map(\.description) ?? "")")
        }
    }

    /// view2.test and tkt3838.test: a view naming `main.t1`, and an ALTER TABLE
    /// RENAME of a table with a trigger in a UTF-16 database, failed their
    /// COMMIT with "disk I/O error": capture ATTACHes the after image, and
    /// SQLite refuses an attached schema whose view names `main.` and, there,
    /// failed to re-check the renamed trigger. The scratch connection now
    /// loads such schemas (writable_schema) and the changesets are exact.
    @Test func aViewNamingMainAndARenamedTriggerTableInUTF16Commit() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("mainview")
            let db = try Database.open(name, sequencer: server.url)
            try db.execute("CREATE TABLE t1(id INTEGER PRIMARY KEY, x); INSERT INTO t1(x) VALUES (1)")
            try db.execute("CREATE VIEW v3 AS SELECT * FROM main.t1")
            try db.execute("INSERT INTO t1(x) VALUES (2)")
            #expect(try db.query("SELECT x FROM v3 ORDER BY x") == [[.integer(1)], [.integer(2)]])

            let utf16 = uniqueName("utf16rename")
            let other = try Database.open(utf16, sequencer: server.url)
            try other.execute("PRAGMA encoding=UTF16")
            try other.execute("""
                CREATE TABLE t1(id INTEGER PRIMARY KEY, x); CREATE TABLE log(id INTEGER PRIMARY KEY, y);
                CREATE TRIGGER r1 AFTER INSERT ON T1 BEGIN INSERT INTO log(y) VALUES (new.x); END;
                INSERT INTO t1(x) VALUES (123)
                """)
            try other.execute("ALTER TABLE T1 RENAME TO XYZ2")
            try other.execute("INSERT INTO xyz2(x) VALUES (456)")
            #expect(try other.query("SELECT y FROM log ORDER BY id") == [[.integer(123)], [.integer(456)]])

            for database in [name, utf16] {
                let failure = try LedgerTests.validate(server.service.store, database)
                #expect(failure == nil, "\(database): \(failure.map(\.description) ?? "")")
            }
        }
    }
}
