import CSQLite
import Foundation
import SyndDB
import SyndProtocol
import SyndSQLite
import SyndValidator
import Testing

/// For hundreds of random transactions, the changeset SyndDB seals into each
/// commit has the same effect as the one SQLite's real session extension
/// records for the same statements on a plain local database.
@Suite struct ChangesetDifferentialTests {
    static let schema = """
        CREATE TABLE accounts(id INTEGER PRIMARY KEY, owner TEXT UNIQUE, balance REAL, data BLOB);
        CREATE TABLE pairs(a TEXT, b INTEGER, v TEXT, PRIMARY KEY(a, b)) WITHOUT ROWID;
        CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE, note TEXT);
        CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT);
        CREATE TRIGGER accounts_audit AFTER UPDATE OF balance ON accounts BEGIN INSERT INTO audit(what) VALUES ('balance ' || NEW.id); END;
        CREATE TABLE nopk(x, y);
        """
    static let tables = ["accounts", "pairs", "parent", "child", "audit"]

    @Test func randomWorkloadMatchesTheSessionExtension() async throws {
        try await withEmbeddedSequencer { server in
            let dir = TemporaryDirectory()
            let name = uniqueName("differential")
            let db = try Database.open(name, sequencer: server.url)
            let oracle = try Connection(path: dir.path + "/oracle.sqlite")
            let sessionReplica = try LogicalReplica(path: dir.path + "/from-session.sqlite")
            let syndReplica = try LogicalReplica(path: dir.path + "/from-synddb.sqlite")
            for c in [db.connection, oracle] { try c.execute("PRAGMA foreign_keys=ON") }

            try db.execute("BEGIN; " + Self.schema + " COMMIT;")
            try oracle.execute(Self.schema)
            let first = try #require(try server.service.store.batch(database: name, version: 1))
            #expect(first.schemaChanged && first.schema.contains { $0.name == "accounts_audit" })
            try syndReplica.apply(first)
            try sessionReplica.connection.execute(Self.schema)

            var rng = SplitMix(seed: 20261121)
            var lastVersion = db.statistics.version
            var flagged = false
            var nonEmpty = 0
            for txn in 0..<300 {
                let statements = Self.transaction(&rng)
                let expected = try Self.runWithSession(oracle, statements)
                try? db.execute("BEGIN")
                for sql in statements { try? db.execute(sql) }
                try? db.execute("COMMIT")
                if !db.connection.isAutocommit { try db.execute("ROLLBACK") }

                let version = db.statistics.version
                var ours: [UInt8] = []
                if version != lastVersion {
                    #expect(version == lastVersion + 1)
                    let batch = try #require(try server.service.store.batch(database: name, version: version))
                    ours = batch.changeset
                    flagged = flagged || batch.unauditedTables == ["nopk"]
                    lastVersion = version
                }
                if !expected.isEmpty { nonEmpty += 1 }
                try sessionReplica.apply(schemaChanged: false, schema: [], changeset: expected)
                try syndReplica.apply(schemaChanged: false, schema: [], changeset: ours)
                for table in Self.tables {
                    let sql = "SELECT * FROM \(table) ORDER BY 1, 2"
                    let truth = try oracle.query(sql)
                    #expect(try sessionReplica.connection.query(sql) == truth, "oracle replica, txn \(txn), \(table)")
                    let got = try syndReplica.connection.query(sql)
                    #expect(got == truth, "txn \(txn) \(statements): \(table) differs")
                    if got != truth { return }
                }
            }
            #expect(nonEmpty > 150, "the workload changed too little to be a test")
            #expect(flagged, "changes to a table without a primary key were not flagged")
        }
    }

    /// Runs `statements` in one transaction under a real session; returns its changeset.
    static func runWithSession(_ c: Connection, _ statements: [String]) throws -> [UInt8] {
        var session: OpaquePointer?
        guard sqlite3session_create(c.handle, "main", &session) == SQLITE_OK, let session else { throw TestFailure("session") }
        defer { sqlite3session_delete(session) }
        sqlite3session_attach(session, nil)
        try c.execute("BEGIN")
        for sql in statements { try? c.execute(sql) }
        if !c.isAutocommit { try c.execute("COMMIT") }
        var n: Int32 = 0
        var p: UnsafeMutableRawPointer?
        guard sqlite3session_changeset(session, &n, &p) == SQLITE_OK else { throw TestFailure("changeset") }
        defer { sqlite3_free(p) }
        return p.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(n))) } ?? []
    }

    /// One random transaction mixing the cases that trip a bare preupdate hook.
    static func transaction(_ rng: inout SplitMix) -> [String] {
        func id() -> Int { Int(rng.next() % 30) + 1 }
        func real() -> String { ["0.1", "-0.0", "1e308", "4.9e-324", "-123.456", "NULL", "3"][Int(rng.next() % 7)] }
        func blob() -> String {
            switch rng.next() % 4 {
            case 0: return "NULL"
            case 1: return "x''"
            default: return "x'" + (0..<Int(rng.next() % 40)).map { _ in String(format: "%02x", rng.next() % 256) }.joined() + "'"
            }
        }
        func text() -> String {
            rng.next() % 5 == 0 ? "printf('%.\(3000 + Int(rng.next() % 3000))c', 'x')" : "'t\(rng.next() % 1000)'"
        }
        var out: [String] = []
        for _ in 0..<(Int(rng.next() % 6) + 1) {
            switch rng.next() % 16 {
            case 0: out.append("INSERT INTO accounts(id, owner, balance, data) VALUES (\(id()), 'o\(id())', \(real()), \(blob()))")
            case 1: out.append("INSERT OR REPLACE INTO accounts(id, owner, balance, data) VALUES (\(id()), 'o\(id())', \(real()), \(blob()))")
            case 2: out.append("INSERT INTO accounts(id, owner, balance) VALUES (\(id()), 'u\(id())', \(real())) ON CONFLICT(id) DO UPDATE SET balance = excluded.balance, data = \(blob())")
            case 3: out.append("UPDATE accounts SET balance = coalesce(balance, 0) + \(rng.next() % 50) WHERE id % \(rng.next() % 4 + 2) = 0")
            case 4: out.append("DELETE FROM accounts WHERE id = \(id())")
            case 5:  // fails midway on the UNIQUE owner: the whole statement is undone
                let a = id(), b = id()
                out.append("INSERT INTO accounts(id, owner) VALUES (\(a + 100), 'fresh\(a)'), (\(b + 200), 'fresh\(a)')")
            case 6:
                out.append("SAVEPOINT s")
                out.append("UPDATE accounts SET owner = owner || '!' WHERE id = \(id())")
                out.append("INSERT INTO pairs VALUES ('p\(id())', \(id()), \(text()))")
                out.append("ROLLBACK TO s")
                out.append("RELEASE s")
            case 7: out.append("INSERT OR REPLACE INTO pairs VALUES ('p\(id() % 5)', \(id() % 4), \(text()))")
            case 8: out.append("UPDATE pairs SET v = \(text()) WHERE a = 'p\(id() % 5)'")
            case 9: out.append("DELETE FROM pairs WHERE b = \(id() % 4)")
            case 10: out.append("INSERT OR IGNORE INTO parent VALUES (\(id()), 'parent\(id())')")
            case 11: out.append("INSERT INTO child(parent_id, note) VALUES (\(id()), \(text()))")  // FK may fail
            case 12: out.append("DELETE FROM parent WHERE id = \(id())")  // cascades to child
            case 13: out.append("INSERT INTO nopk VALUES (\(id()), \(text()))")
            case 14: out.append("UPDATE accounts SET data = \(blob()), owner = NULL WHERE id = \(id())")
            default: out.append("UPDATE accounts SET balance = balance WHERE id = \(id())")  // touches, changes nothing
            }
        }
        return out
    }
}

/// A small deterministic generator (SplitMix64).
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
