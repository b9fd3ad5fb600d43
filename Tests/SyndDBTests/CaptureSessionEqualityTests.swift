import CSQLite
import Foundation
import SyndDB
import SyndProtocol
import SyndSQLite
import SyndValidator
import Testing

/// The changeset SyndDB seals into a commit is byte for byte the one SQLite's
/// session extension records for the same statements on a plain local copy:
/// same tables in the same order, same rows in the session extension's hash
/// order, same values and indirect flags. Each case runs its transactions on
/// both and compares the bytes, then applies SyndDB's changesets to a replica
/// and compares it with the local copy.
@Suite struct CaptureSessionEqualityTests {
    /// Runs `setup` (schema and first rows) and then each transaction on
    /// SyndDB and on a local oracle under a session; expects equal changesets
    /// (with `bytes`), and SyndDB's changesets to rebuild the oracle's rows
    /// (`tables`: table names, or queries for rows a changeset can carry).
    static func compare(_ name: String, pragmas: String = "", setup: String, _ transactions: [[String]],
                        tables: [String], bytes: Bool = true, options: DatabaseOptions = DatabaseOptions()) async throws {
        try await withEmbeddedSequencer { server in
            let dir = TemporaryDirectory()
            let dbName = uniqueName(name)
            let db = try Database.open(dbName, sequencer: server.url, options: options)
            let oracle = try Connection(path: dir.path + "/oracle.sqlite")
            if !pragmas.isEmpty {
                try db.execute(pragmas)
                try oracle.execute(pragmas)
            }
            for c in [db.connection, oracle] { try c.execute("PRAGMA foreign_keys=ON") }
            try db.execute("BEGIN; " + setup + " COMMIT;")
            try oracle.execute("BEGIN; " + setup + " COMMIT;")
            let replica = try LogicalReplica(path: dir.path + "/replica.sqlite")
            var version: UInt64 = 0
            while version < db.statistics.version {
                version += 1
                if let batch = try server.service.store.batch(database: dbName, version: version) { try replica.apply(batch) }
            }
            for (n, statements) in transactions.enumerated() {
                var expected: [UInt8] = []
                if bytes {
                    expected = try ChangesetDifferentialTests.runWithSession(oracle, statements)
                } else {
                    try? oracle.execute("BEGIN")
                    for sql in statements { try? oracle.execute(sql) }
                    if !oracle.isAutocommit { try oracle.execute("COMMIT") }
                }
                try? db.execute("BEGIN")
                for sql in statements { try? db.execute(sql) }
                try? db.execute("COMMIT")
                if !db.connection.isAutocommit { try db.execute("ROLLBACK") }
                var ours: [UInt8] = []
                if db.statistics.version != version {
                    version = db.statistics.version
                    ours = try #require(try server.service.store.batch(database: dbName, version: version)).changeset
                }
                if bytes {
                    // Compared outside #expect: printing megabytes of operands would take minutes.
                    let same = ours == expected
                    let firstDifference = zip(ours, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(ours.count, expected.count)
                    #expect(same, "\(name) transaction \(n) \(statements.map { $0.prefix(80) }): \(ours.count) bytes, the session extension's \(expected.count), first difference at byte \(firstDifference)")
                }
                try replica.apply(schemaChanged: false, schema: [], changeset: ours)
                for table in tables {
                    // A query as given, or a whole table.
                    let sql = table.hasPrefix("SELECT") ? table : "SELECT * FROM \(table) ORDER BY 1, 2"
                    let got = try replica.connection.query(sql)
                    let truth = try oracle.query(sql)
                    let same = got == truth
                    #expect(same, "\(name) transaction \(n) \(statements.map { $0.prefix(80) }): replica's \(table) differs (\(got.count) rows, the oracle's \(truth.count))")
                }
            }
        }
    }

    @Test func integerPrimaryKeyInsertsUpdatesDeletes() async throws {
        try await Self.compare("ipk", setup: "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT); INSERT INTO t VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 3, 'c');", [
            ["INSERT INTO t(k, v) VALUES (10, 'new')", "INSERT INTO t(k, v) VALUES (11, 'newer')"],
            ["UPDATE t SET v = 'changed' WHERE id = 2", "DELETE FROM t WHERE id = 3"],
            ["UPDATE t SET v = v WHERE id = 1"],  // touched, unchanged: no record
            ["UPDATE t SET id = 100 WHERE id = 1"],  // the key moves: DELETE and INSERT
            ["INSERT INTO t VALUES (50, 5, 'x')", "UPDATE t SET v = 'y' WHERE id = 50"],  // insert then update: one INSERT
            ["INSERT INTO t VALUES (60, 6, 'x')", "DELETE FROM t WHERE id = 60"],  // insert then delete: nothing
            ["DELETE FROM t WHERE id = 2", "INSERT INTO t VALUES (2, 22, 'again')"],  // delete then insert: UPDATE
            ["DELETE FROM t WHERE id = 100", "INSERT INTO t VALUES (100, 1, 'changed')"],  // same values back: nothing
        ], tables: ["t"])
    }

    @Test func withoutRowidAndTextKeys() async throws {
        try await Self.compare("keys", setup: """
            CREATE TABLE pairs(a TEXT, b INTEGER, v TEXT, PRIMARY KEY(a, b)) WITHOUT ROWID;
            CREATE TABLE named(name TEXT PRIMARY KEY, n INTEGER);
            CREATE TABLE nopk(x, y);
            INSERT INTO pairs VALUES ('a', 1, 'one'), ('a', 2, 'two'), ('b', 1, 'three');
            INSERT INTO named VALUES ('x', 1), ('y', 2);
            """, [
            ["INSERT INTO pairs VALUES ('c', 3, 'new')", "UPDATE pairs SET v = 'upd' WHERE a = 'a'", "DELETE FROM pairs WHERE b = 1"],
            ["UPDATE pairs SET a = 'z' WHERE a = 'a' AND b = 2"],
            ["INSERT INTO named VALUES ('z', 3)", "UPDATE named SET name = 'w' WHERE name = 'x'", "DELETE FROM named WHERE name = 'y'"],
            // A rowid table's TEXT key may be NULL: the session extension ignores such rows.
            ["INSERT INTO named VALUES (NULL, 7)", "INSERT INTO named VALUES ('q', 8)", "UPDATE named SET name = NULL WHERE name = 'z'"],
            ["INSERT INTO nopk VALUES (1, 2)", "INSERT INTO named VALUES ('r', 9)"],
            ["INSERT INTO named VALUES ('5', 1)", "INSERT INTO named VALUES (6, 1)"],  // TEXT affinity: 6 is stored as '6'
        ], tables: ["pairs", "SELECT * FROM named WHERE name IS NOT NULL ORDER BY 1"])
    }

    @Test func conflictsAndUpserts() async throws {
        try await Self.compare("conflicts", setup: """
            CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v INTEGER);
            INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3);
            """, [
            ["INSERT OR REPLACE INTO t VALUES (1, 'a2', 10)"],  // replaces by key
            ["INSERT OR REPLACE INTO t VALUES (9, 'b', 20)"],  // replaces row 2 by its UNIQUE value
            ["INSERT INTO t VALUES (3, 'zz', 0) ON CONFLICT(id) DO UPDATE SET v = v + 100"],
            ["INSERT INTO t VALUES (3, 'zz', 0) ON CONFLICT DO NOTHING", "INSERT INTO t VALUES (4, 'd', 4) ON CONFLICT DO NOTHING"],
            ["INSERT OR IGNORE INTO t VALUES (4, 'e', 5)", "INSERT OR IGNORE INTO t VALUES (5, 'e', 5)"],
            ["REPLACE INTO t VALUES (5, 'd', 55)"],  // conflicts on both the key and the UNIQUE column
            ["UPDATE OR REPLACE t SET u = 'a2' WHERE id = 3"],
            // Fails midway on the UNIQUE column: the whole statement is undone.
            ["INSERT INTO t VALUES (20, 'p', 1), (21, 'p', 2)", "INSERT INTO t VALUES (22, 'q', 3)"],
        ], tables: ["t"])
    }

    @Test func savepointsAndAbortedStatements() async throws {
        try await Self.compare("savepoints", setup: """
            CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
            CREATE TABLE w(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
            INSERT INTO t VALUES (1, 'a'), (2, 'b');
            INSERT INTO w VALUES ('k', 1);
            """, [
            ["SAVEPOINT s", "INSERT INTO t VALUES (10, 'gone')", "INSERT INTO w VALUES ('gone', 1)", "ROLLBACK TO s", "RELEASE s"],
            ["INSERT INTO t VALUES (11, 'kept')", "SAVEPOINT s", "UPDATE t SET v = 'undone' WHERE id = 11", "DELETE FROM t WHERE id = 1", "ROLLBACK TO s",
             "INSERT INTO t VALUES (12, 'after')", "RELEASE s"],
            ["SAVEPOINT a", "INSERT INTO t VALUES (13, 'x')", "SAVEPOINT b", "INSERT INTO t VALUES (14, 'y')", "ROLLBACK TO b", "RELEASE a"],
            ["SAVEPOINT a", "DELETE FROM t WHERE id = 2", "INSERT INTO t VALUES (2, 'b2')", "ROLLBACK TO a", "UPDATE w SET v = 2", "RELEASE a"],
            // A statement that fails after changing rows leaves none of them.
            ["INSERT INTO t VALUES (30, 'p')", "INSERT INTO t SELECT id + 100, v FROM t UNION ALL SELECT 30, 'dup'", "INSERT INTO t VALUES (31, 'q')"],
            ["UPDATE t SET id = 1 WHERE id = 11"],  // fails on the key: nothing
        ], tables: ["t", "w"])
    }

    /// Past 4 MiB of values in one transaction the recorder keeps only key
    /// values, and past spill_mb (here 1 MiB) capture keeps the rows it puts in
    /// order in a temporary file. Neither may change a byte: large inserts,
    /// updates and deletes of rows that existed, text and composite keys, a
    /// savepoint rolled back and a statement that fails midway, all after the
    /// budget is spent.
    @Test func largeTransactionsKeepOnlyKeysAndSpillRowsWithoutChangingTheChangeset() async throws {
        var options = DatabaseOptions()
        options.spillMB = 1
        let rows = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3000)"
        try await Self.compare("large", setup: """
            CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB);
            CREATE TABLE w(k TEXT PRIMARY KEY, n INT, v BLOB) WITHOUT ROWID;
            CREATE TABLE c(a INT, b TEXT, v BLOB, PRIMARY KEY(b, a));
            \(rows) INSERT INTO t(k, v) SELECT x, CAST(printf('%0990d', x) AS BLOB) FROM n;
            \(rows) INSERT INTO w SELECT printf('key-%0300d', x), x, printf('%0990d', x) FROM n;
            \(rows) INSERT INTO c SELECT x % 7, printf('b%d', x), zeroblob(900) FROM n;
            """, [
            // 9 MB of new rows in three tables, of which the later ones are recorded with keys only.
            ["\(rows) INSERT INTO t(k, v) SELECT x, CAST(printf('%0995d', x) AS BLOB) FROM n",
             "\(rows) INSERT INTO w SELECT printf('new-%0300d', x), x, printf('%0995d', x) FROM n",
             "\(rows) INSERT INTO c SELECT x % 5, printf('n%d', x), zeroblob(950) FROM n"],
            // Rows that existed: updated, deleted, keys moved; then undone work that must leave no trace.
            ["UPDATE t SET v = CAST(printf('%0980d', id * 3) AS BLOB) WHERE id % 2 = 0",
             "DELETE FROM t WHERE id % 3 = 0",
             "UPDATE w SET v = printf('%0985d', n * 7), n = n + 1 WHERE n % 2 = 1",
             "DELETE FROM w WHERE n % 5 = 0",
             "UPDATE c SET v = zeroblob(990), a = a + 100 WHERE a = 3",
             "SAVEPOINT s", "\(rows) INSERT INTO t(k, v) SELECT x, zeroblob(999) FROM n", "UPDATE w SET v = 'undone'", "ROLLBACK TO s", "RELEASE s",
             "INSERT INTO t(id, k, v) SELECT id + 100000, k, v FROM t WHERE id < 500 UNION ALL SELECT 2, 0, 'duplicate'",
             "INSERT INTO t(id, k, v) VALUES (99999, 1, zeroblob(10))"],
        ], tables: ["t", "w", "c"], options: options)
    }

    @Test func triggersAndCascadesAreIndirect() async throws {
        try await Self.compare("triggers", setup: """
            CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT);
            CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE, note TEXT);
            CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT);
            CREATE TRIGGER parent_audit AFTER UPDATE ON parent BEGIN INSERT INTO audit(what) VALUES ('parent ' || NEW.id); END;
            CREATE TRIGGER child_touch AFTER INSERT ON child BEGIN UPDATE parent SET name = name || '+' WHERE id = NEW.parent_id; END;
            INSERT INTO parent VALUES (1, 'p1'), (2, 'p2');
            INSERT INTO child VALUES (1, 1, 'c1'), (2, 1, 'c2'), (3, 2, 'c3');
            """, [
            ["UPDATE parent SET name = 'renamed' WHERE id = 1"],
            ["INSERT INTO child VALUES (4, 2, 'c4')"],  // the trigger's UPDATE and the audit row are indirect
            ["DELETE FROM parent WHERE id = 1"],  // cascades to children 1 and 2: indirect
            ["INSERT INTO audit(what) VALUES ('direct')", "UPDATE parent SET name = 'x' WHERE id = 2"],
            ["INSERT INTO child VALUES (5, 99, 'orphan')"],  // foreign key fails: nothing
        ], tables: ["parent", "child", "audit"])
    }

    @Test func realsAndAffinities() async throws {
        try await Self.compare("reals", setup: """
            CREATE TABLE r(id INTEGER PRIMARY KEY, x REAL, n NUMERIC, t TEXT, b BLOB, any);
            CREATE TABLE rk(k REAL PRIMARY KEY, v) WITHOUT ROWID;
            INSERT INTO r VALUES (1, 1.0, 1.0, 1, x'00', 1.5);
            INSERT INTO rk VALUES (1.5, 'a'), (2.0, 'b');
            """, [
            ["INSERT INTO r VALUES (2, 3, '4.0', 5.5, 'text', -0.0)"],  // an integer-valued REAL is stored as an integer, read as a real
            ["UPDATE r SET x = 1 WHERE id = 1"],  // 1.0 to 1: unchanged after REAL affinity
            ["UPDATE r SET x = -0.0 WHERE id = 2", "UPDATE r SET any = 0.0 WHERE id = 2"],
            ["INSERT INTO r VALUES (3, 1e308, 9223372036854775807, 'é', x'', NULL)", "INSERT INTO r VALUES (4, 4.9e-324, -9223372036854775808, '', NULL, x'ff')"],
            ["INSERT INTO rk VALUES (3, 'c')", "UPDATE rk SET v = 'bb' WHERE k = 2", "DELETE FROM rk WHERE k = 1.5"],
            ["UPDATE r SET t = printf('%.5000c', 'x') WHERE id = 1"],  // overflow pages
        ], tables: ["r", "rk"])
    }

    @Test func utf16Database() async throws {
        try await Self.compare("utf16", pragmas: "PRAGMA encoding='UTF-16le'", setup: """
            CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
            CREATE TABLE k(name TEXT PRIMARY KEY, v) WITHOUT ROWID;
            INSERT INTO t VALUES (1, 'ascii'), (2, 'ünïcødé');
            INSERT INTO k VALUES ('ключ', 1);
            """, [
            ["INSERT INTO t VALUES (3, '日本語')", "UPDATE t SET v = 'ünï' WHERE id = 2", "DELETE FROM t WHERE id = 1"],
            ["INSERT INTO k VALUES ('鍵', 2)", "UPDATE k SET v = 3 WHERE name = 'ключ'"],
        ], tables: ["t", "k"])
    }

    /// Above 128 and 256 changed rows the session extension's hash table grows
    /// and its order changes; the capture's order must follow.
    @Test func largeTransactionsFollowTheHashTableGrowth() async throws {
        try await Self.compare("large", setup: """
            CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
            CREATE TABLE w(a TEXT, b INTEGER, v, PRIMARY KEY(a, b)) WITHOUT ROWID;
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) INSERT INTO t SELECT i * 7, 'v' || i FROM n;
            """, [
            ["WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) INSERT INTO t(v) SELECT 'new' || i FROM n"],
            ["UPDATE t SET v = v || '!' WHERE id % 3 = 0", "DELETE FROM t WHERE id % 5 = 0"],
            ["WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 700) INSERT INTO w SELECT 'k' || (i % 13), i, i FROM n"],
            ["UPDATE w SET v = v + 1 WHERE b % 2 = 0", "DELETE FROM w WHERE a = 'k3'"],
        ], tables: ["t", "w"])
    }

    /// Generated columns are in no changeset; SQLite 3.40's session extension
    /// refuses their tables (its column count leaves them out, the preupdate
    /// hook's does not: sqlite3session_changeset fails), so only the effect is
    /// compared, with the oracle run without a session.
    @Test func generatedColumns() async throws {
        try await Self.compare("generated", setup: """
            CREATE TABLE g(id INTEGER PRIMARY KEY, a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL, c TEXT GENERATED ALWAYS AS ('c' || a) STORED, d TEXT);
            INSERT INTO g(id, a, d) VALUES (1, 1, 'x'), (2, 2, 'y');
            """, [
            ["INSERT INTO g(id, a, d) VALUES (3, 3, 'z')", "UPDATE g SET a = 20 WHERE id = 2", "DELETE FROM g WHERE id = 1"],
            ["UPDATE g SET d = 'dd' WHERE id = 3", "INSERT INTO g(a, d) VALUES (4, 'w')"],
        ], tables: ["g"], bytes: false)
    }

    /// A seeded random mix of inserts, updates, deletes, REPLACE, upserts,
    /// savepoints rolled back and failing statements, on several kinds of table.
    @Test func randomWorkloadIsByteIdentical() async throws {
        var rng = SplitMix(seed: 20261122)
        var transactions: [[String]] = []
        for _ in 0..<150 { transactions.append(Self.randomTransaction(&rng)) }
        try await Self.compare("random", setup: """
            CREATE TABLE a(id INTEGER PRIMARY KEY, u TEXT UNIQUE, x REAL, b BLOB);
            CREATE TABLE p(k TEXT, n INTEGER, v, PRIMARY KEY(k, n)) WITHOUT ROWID;
            CREATE TABLE s(name TEXT PRIMARY KEY, v);
            CREATE TABLE log(id INTEGER PRIMARY KEY, what TEXT);
            CREATE TRIGGER a_log AFTER DELETE ON a BEGIN INSERT INTO log(what) VALUES ('deleted ' || OLD.id); END;
            """, transactions, tables: ["a", "p", "SELECT * FROM s WHERE name IS NOT NULL ORDER BY 1", "log"])
    }

    static func randomTransaction(_ rng: inout SplitMix) -> [String] {
        func id() -> Int { Int(rng.next() % 40) + 1 }
        func real() -> String { ["0.5", "-0.0", "2", "1e300", "NULL", "7.25"][Int(rng.next() % 6)] }
        func text() -> String { rng.next() % 6 == 0 ? "printf('%.\(2000 + Int(rng.next() % 3000))c', 'y')" : "'t\(rng.next() % 50)'" }
        var out: [String] = []
        for _ in 0..<(Int(rng.next() % 8) + 1) {
            switch rng.next() % 14 {
            case 0: out.append("INSERT INTO a VALUES (\(id()), 'u\(id())', \(real()), x'\(String(rng.next() % 65536, radix: 16))')")
            case 1: out.append("INSERT OR REPLACE INTO a VALUES (\(id()), 'u\(id())', \(real()), NULL)")
            case 2: out.append("INSERT INTO a(id, u, x) VALUES (\(id()), 'v\(id())', \(real())) ON CONFLICT(id) DO UPDATE SET x = excluded.x")
            case 3: out.append("UPDATE a SET x = coalesce(x, 0) + 1 WHERE id % \(rng.next() % 5 + 2) = 0")
            case 4: out.append("DELETE FROM a WHERE id = \(id())")
            case 5: out.append("UPDATE a SET id = \(id() + 40) WHERE id = \(id())")
            case 6:
                out.append("SAVEPOINT s")
                out.append("INSERT INTO a(u) VALUES ('sp\(rng.next() % 1000)')")
                out.append("DELETE FROM p WHERE n = \(id() % 4)")
                out.append(rng.next() % 2 == 0 ? "ROLLBACK TO s" : "UPDATE s SET v = 'in savepoint'")
                out.append("RELEASE s")
            case 7: out.append("INSERT OR REPLACE INTO p VALUES ('k\(id() % 6)', \(id() % 5), \(text()))")
            case 8: out.append("UPDATE p SET v = \(text()) WHERE k = 'k\(id() % 6)'")
            case 9: out.append("UPDATE p SET n = n + 10 WHERE k = 'k\(id() % 6)' AND n < 5")
            case 10: out.append("INSERT INTO s VALUES (\(rng.next() % 5 == 0 ? "NULL" : "'s\(id() % 10)'"), \(real()))")
            case 11: out.append("UPDATE s SET name = 's\(id() % 10)' WHERE name = 's\(id() % 10)'")
            case 12:  // fails on the UNIQUE column after its first row
                let n = id()
                out.append("INSERT INTO a(id, u) VALUES (\(n + 200), 'dup\(n)'), (\(n + 300), 'dup\(n)')")
            default: out.append("DELETE FROM s WHERE v IS NULL OR v > 3")
            }
        }
        return out
    }
}
