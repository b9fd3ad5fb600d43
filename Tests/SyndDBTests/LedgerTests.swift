import Foundation
import SyndDB
import SyndLedger
import SyndProtocol
import SyndSQLite
import SyndStorage
import SyndValidator
import Testing

/// Sealed batches and `synd validate`: an honest history passes; any tampered
/// byte, dropped or reordered batch, or changeset that disagrees with its pages
/// fails at the right version with the reason.
@Suite struct LedgerTests {
    /// Runs the validator over the store's batches as the stream serves them.
    static func validate(_ store: PageStore, _ name: String, rules: [String] = []) throws -> ValidationFailure? {
        let work = TemporaryDirectory()
        let validator = try Validator(directory: work.path, publicKey: store.signingKey.publicKey, rules: rules)
        let head = try store.headVersion(of: name)
        for version in 1...max(head, 1) {
            guard let batch = try store.batch(database: name, version: version) else { continue }
            do throws(ValidationFailure) {
                try validator.process(batch)
            } catch {
                return error
            }
        }
        return validator.version == head ? nil : ValidationFailure(version: head, reason: "stopped early")
    }

    static func bankHistory(_ url: String, _ name: String, transactions: Int) throws {
        let db = try Database.open(name, sequencer: url)
        try db.execute("""
            BEGIN;
            CREATE TABLE accounts(id INTEGER PRIMARY KEY, owner TEXT NOT NULL, balance INTEGER NOT NULL);
            CREATE TABLE transfers(id INTEGER PRIMARY KEY, src INTEGER, dst INTEGER, amount INTEGER);
            CREATE TRIGGER no_overdraft BEFORE UPDATE OF balance ON accounts WHEN NEW.balance < 0
              BEGIN SELECT RAISE(ABORT, 'overdraft'); END;
            COMMIT;
            """)
        try db.transaction {
            for i in 1...20 { try db.query("INSERT INTO accounts VALUES (?, ?, 1000)", [i, "owner\(i)"]) }
        }
        var rng = SplitMix(seed: 7)
        for _ in 0..<transactions {
            let src = Int(rng.next() % 20) + 1, dst = Int(rng.next() % 20) + 1, amount = Int(rng.next() % 300)
            try? db.transaction {
                try db.query("UPDATE accounts SET balance = balance - ? WHERE id = ?", [amount, src])
                try db.query("UPDATE accounts SET balance = balance + ? WHERE id = ?", [amount, dst])
                try db.query("INSERT INTO transfers(src, dst, amount) VALUES (?, ?, ?)", [src, dst, amount])
            }
        }
    }

    @Test func honestHistoryOfOverAThousandTransactionsValidatesThroughTheCLI() async throws {
        let dir = TemporaryDirectory()
        let path = dir.path
        try await offPool {
            let sequencer = try SequencerProcess(directory: path + "/seq")
            try Self.bankHistory(sequencer.url, "bank", transactions: 1300)
            let rules = path + "/rules.sql"
            try "-- no account may go negative\nSELECT count(*) = 0 FROM accounts WHERE balance < 0\nSELECT coalesce(sum(balance), 20000) = 20000 FROM accounts\n"
                .write(toFile: rules, atomically: true, encoding: .utf8)
            let run = try runSynd(["validate", "--sequencer", sequencer.url, "--db", "bank", "--rules", rules])
            #expect(run.status == 0, "\(run.output) \(run.error)")
            let batches = Int(run.output.split(separator: " ").dropFirst().first ?? "") ?? 0
            #expect(batches > 1000, "\(run.output)")
            #expect(run.output.contains("2 rules"))
            let log = try runSynd(["log", "--sequencer", sequencer.url, "bank", "--from", "3"])
            #expect(log.output.hasPrefix("version 3 "))
            #expect(log.output.contains("UPDATE \"accounts\" SET balance = "))
            #expect(log.output.contains("INSERT INTO \"transfers\"(id, src, dst, amount) VALUES (1, "))
        }
    }

    @Test func tamperingWithAnyStoredByteOrOrderIsCaught() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("tamper")
            try Self.bankHistory(server.url, name, transactions: 30)
            let store = server.service.store
            #expect(try Self.validate(store, name) == nil)
            let db = try Connection(path: store.configuration.directory + "/store.sqlite")
            try db.execute("PRAGMA busy_timeout=5000")
            let id = try db.scalar("SELECT id FROM databases WHERE name = ?", [name])!

            /// Tampers, validates, expects the failure, then puts the row back.
            func check(_ what: String, _ expectedVersion: UInt64, _ reason: String, table: String, column: String, version: UInt64,
                       extra: String = "", _ tamper: String) throws {
                let key = "db = ?1 AND version = \(version)" + extra
                let original = try db.scalar("SELECT \(column) FROM \(table) WHERE \(key)", [id])!
                try db.query("UPDATE \(table) SET \(column) = \(tamper) WHERE \(key)", [id])
                let failure = try Self.validate(store, name)
                #expect(failure?.version == expectedVersion, "\(what): \(failure?.description ?? "passed")")
                #expect(failure?.reason.contains(reason) == true, "\(what): \(failure?.description ?? "passed")")
                try db.query("UPDATE \(table) SET \(column) = ?2 WHERE \(key)", [id, original])
                #expect(try Self.validate(store, name) == nil, "\(what) was not restored")
            }
            // One changed byte anywhere: a page image, the changeset, the hash, the signature, the chain link.
            try check("page image", 7, "page images do not match pages_hash", table: "pages", column: "data", version: 7,
                      extra: " AND pgno = 2", "substr(data, 1, 100) || x'FF' || substr(data, 102)")
            try check("plausible page image", 7, "page images do not match pages_hash", table: "pages", column: "data", version: 7,
                      extra: " AND pgno = 2", "(SELECT data FROM pages p WHERE p.db = ?1 AND p.version < 7 AND p.pgno = 2 ORDER BY p.version DESC LIMIT 1)")
            try check("changeset", 9, "changeset does not match changeset_hash", table: "commits", column: "changeset", version: 9,
                      "substr(changeset, 1, 20) || x'00' || substr(changeset, 22)")
            try check("hash", 11, "batch hash does not match", table: "commits", column: "hash", version: 11, "x'00' || substr(hash, 2)")
            try check("signature", 12, "signature is not valid", table: "commits", column: "signature", version: 12,
                      "substr(signature, 1, 63) || x'00'")
            try check("previous hash", 13, "chain is broken", table: "commits", column: "previous_hash", version: 13, "zeroblob(32)")
            // Two batches swapped, then one dropped.
            try db.query("UPDATE commits SET version = -1 WHERE db = ?1 AND version = 3", [id])
            try db.query("UPDATE commits SET version = 3 WHERE db = ?1 AND version = 4", [id])
            try db.query("UPDATE commits SET version = 4 WHERE db = ?1 AND version = -1", [id])
            #expect(try Self.validate(store, name)?.version == 3)
            try db.query("UPDATE commits SET version = -1 WHERE db = ?1 AND version = 3", [id])
            try db.query("UPDATE commits SET version = 3 WHERE db = ?1 AND version = 4", [id])
            try db.query("UPDATE commits SET version = 4 WHERE db = ?1 AND version = -1", [id])
            #expect(try Self.validate(store, name) == nil)
            try db.query("DELETE FROM commits WHERE db = ?1 AND version = 5", [id])
            let dropped = try Self.validate(store, name)
            #expect(dropped?.version == 5 && dropped?.reason.contains("a batch is missing") == true, "\(dropped?.description ?? "passed")")
        }
    }

    @Test func changesetsThatDisagreeWithThePagesAreCaught() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("disagree")
            try Self.bankHistory(server.url, name, transactions: 5)
            var options = DatabaseOptions()
            options.captureChangesets = false  // a writer that lies by omission
            let liar = try Database.open(name, sequencer: server.url, options: options)
            try liar.execute("UPDATE accounts SET owner = 'mallory' WHERE id = 3")
            let version = liar.statistics.version
            let failure = try #require(try Self.validate(server.service.store, name))
            #expect(failure.version == version)
            #expect(failure.table == "accounts")
            #expect(failure.key == "3")
            #expect(failure.expected?.contains("owner=mallory") == true, "\(failure)")
            #expect(failure.actual?.contains("owner=owner3") == true, "\(failure)")
        }
    }

    @Test func schemaChangesReachValidators() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("ddl")
            let db = try Database.open(name, sequencer: server.url)
            for sql in [
                "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT)",
                "INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, NULL)",
                "ALTER TABLE t ADD COLUMN b INTEGER DEFAULT 7",
                "UPDATE t SET b = 1 WHERE id = 1",
                "ALTER TABLE t RENAME COLUMN a TO name",
                "ALTER TABLE t RENAME TO people",
                "CREATE INDEX people_b ON people(b)",
                "BEGIN; CREATE TABLE tmp(x INTEGER PRIMARY KEY); INSERT INTO tmp VALUES (1), (2); DROP INDEX people_b; ALTER TABLE people DROP COLUMN b; UPDATE people SET name = 'uno' WHERE id = 1; COMMIT",
                "CREATE VIEW named AS SELECT name FROM people WHERE name IS NOT NULL",
                "DROP TABLE tmp",
                "INSERT INTO people VALUES (4, 'four')",
                // A UNIQUE index that holds only once the transaction's rows are in place.
                "INSERT INTO people VALUES (5, 'dup'), (6, 'dup')",
                "BEGIN; UPDATE people SET name = 'dup2' WHERE id = 6; CREATE UNIQUE INDEX people_name ON people(name); COMMIT",
            ] {
                try db.execute(sql)
            }
            let failure = try Self.validate(server.service.store, name)
            #expect(failure == nil, "\(failure?.description ?? "")")
            let last = try #require(try server.service.store.batch(database: name, version: db.statistics.version - 3))
            #expect(last.schemaChanged && last.schema.map(\.name) == ["people", "named"])
        }
    }

    @Test func aSchemaEntryWithASecondStatementIsRefused() throws {
        #expect(LogicalReplica.isSingleCreate("CREATE TABLE t(a TEXT DEFAULT ';')", type: "table"))
        #expect(LogicalReplica.isSingleCreate("CREATE TRIGGER g AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END", type: "trigger"))
        #expect(!LogicalReplica.isSingleCreate("CREATE TABLE x(a); VACUUM INTO '/tmp/p'", type: "table"))
        #expect(!LogicalReplica.isSingleCreate("DROP TABLE t", type: "table"))
    }

    @Test func rulesRunOnEveryVersion() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("rules")
            try Self.bankHistory(server.url, name, transactions: 5)
            let db = try Database.open(name, sequencer: server.url)
            try db.execute("DROP TRIGGER no_overdraft")
            try db.execute("UPDATE accounts SET balance = -5 WHERE id = 1")
            let bad = db.statistics.version
            try db.execute("UPDATE accounts SET balance = 5 WHERE id = 1")
            let rule = "SELECT count(*) = 0 FROM accounts WHERE balance < 0"
            let failure = try #require(try Self.validate(server.service.store, name, rules: [rule]))
            #expect(failure.version == bad)
            #expect(failure.reason.contains(rule))
        }
    }

    @Test func revertRestoresThePreviousLogicalContentExactly() async throws {
        let dir = TemporaryDirectory()
        let path = dir.path
        try await offPool {
            let sequencer = try SequencerProcess(directory: path + "/seq")
            let name = "revert"
            var db = try Database.open(name, sequencer: sequencer.url)
            try db.execute("PRAGMA foreign_keys=ON")
            try db.execute("""
                BEGIN;
                CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT);
                CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE, v BLOB);
                CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT);
                CREATE TRIGGER parent_audit AFTER DELETE ON parent BEGIN INSERT INTO audit(what) VALUES ('deleted ' || OLD.id); END;
                COMMIT;
                INSERT INTO parent VALUES (1, 'a'), (2, 'b');
                INSERT INTO child(parent_id, v) VALUES (1, x'00ff'), (1, NULL), (2, x'');
                """)
            func content() throws -> [[[Value]]] {
                try ["parent", "child", "audit"].map { try db.query("SELECT * FROM \($0) ORDER BY 1") }
            }
            let before = try content()
            try db.execute("BEGIN; DELETE FROM parent WHERE id = 1; UPDATE parent SET name = 'B' WHERE id = 2; INSERT INTO parent VALUES (3, 'c'); COMMIT")
            let target = db.statistics.version
            #expect(try content() != before)
            db = try Database.open(name + "-other", sequencer: sequencer.url)  // closes the writer: revert takes the lease
            let run = try runSynd(["revert", "--sequencer", sequencer.url, name, "--version", String(target)])
            #expect(run.status == 0, "\(run.error)")
            db = try Database.open(name, sequencer: sequencer.url)
            #expect(try content() == before)
            #expect(db.statistics.version == target + 1)
            let validate = try runSynd(["validate", "--sequencer", sequencer.url, "--db", name])
            #expect(validate.status == 0, "\(validate.output)")
        }
    }
}
