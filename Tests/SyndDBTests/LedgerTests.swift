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
    /// Checks every batch twice, comparing whole tables after each and comparing
    /// only the rows each changed, and fails when the two disagree.
    static func validate(_ store: any SequencerStore, _ name: String, rules: [String] = []) throws -> ValidationFailure? {
        let head = try store.headVersion(of: name)
        var batches: [Batch] = []
        for version in 1...max(head, 1) {
            if let batch = try store.batch(database: name, version: version) { batches.append(batch) }
        }
        let failure = try validate(batches, publicKey: store.sequencerKey.publicKey, rules: rules)
        return failure ?? (batches.last?.version == head ? nil : ValidationFailure(version: head, reason: "stopped early"))
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

    /// Batches as a dishonest sequencer (or someone who rewrote its disk and
    /// fixed its checksums) would serve them: one changed byte anywhere, or
    /// batches swapped or left out. The store's own checksums are tested in
    /// LogStoreRecoveryTests; here the validator must catch what passes them.
    @Test func tamperingWithAnyStoredByteOrOrderIsCaught() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("tamper")
            try Self.bankHistory(server.url, name, transactions: 30)
            let store = server.service.store
            let head = try store.headVersion(of: name)
            let batches = try (1...head).map { v in try #require(try store.batch(database: name, version: v)) }
            let key = store.sequencerKey.publicKey
            #expect(try Self.validate(batches, publicKey: key) == nil)

            /// Tampers with a copy of batch `version`, validates, expects the failure.
            func check(_ what: String, _ version: UInt64, _ reason: String, _ tamper: (inout Batch) throws -> Void) throws {
                var copy = batches
                try tamper(&copy[Int(version) - 1])
                let failure = try Self.validate(copy, publicKey: key)
                #expect(failure?.version == version, "\(what): \(failure?.description ?? "passed")")
                #expect(failure?.reason.contains(reason) == true, "\(what): \(failure?.description ?? "passed")")
            }
            // One changed byte anywhere: a page image, the changeset, the hash, the signature, the chain link.
            try check("page image", 7, "page images do not match pages_hash") { b in
                let i = try #require(b.pages.firstIndex { $0.number == 2 })
                b.pages[i].data[100] ^= 0xFF
            }
            try check("plausible page image", 7, "page images do not match pages_hash") { b in
                let i = try #require(b.pages.firstIndex { $0.number == 2 })
                let older = try #require(batches[..<6].last { $0.pages.contains { $0.number == 2 } })
                b.pages[i] = older.pages.first { $0.number == 2 }!
            }
            try check("changeset", 9, "changeset does not match changeset_hash") { $0.changeset[20] ^= 0x01 }
            try check("hash", 11, "batch hash does not match") { $0.hash[0] ^= 0x01 }
            try check("signature", 12, "signature is not valid") { $0.signature[63] ^= 0x01 }
            try check("previous hash", 13, "chain is broken") { $0.previousHash = [UInt8](repeating: 0, count: 32) }
            // Two batches swapped, then one left out.
            var swapped = batches
            swapped.swapAt(2, 3)
            #expect(try Self.validate(swapped, publicKey: key)?.version == 3)
            var missing = batches
            missing.remove(at: 4)
            let dropped = try Self.validate(missing, publicKey: key)
            #expect(dropped?.version == 5 && dropped?.reason.contains("a batch is missing") == true, "\(dropped?.description ?? "passed")")
        }
    }

    /// Validates `batches` in the order given, as a validator fed by a stream would.
    static func validate(_ batches: [Batch], publicKey: [UInt8], rules: [String] = []) throws -> ValidationFailure? {
        let full = try validate(batches, publicKey: publicKey, rules: rules, fullCheck: .everyBatch).failure
        let changedRows = try validate(batches, publicKey: publicKey, rules: rules, fullCheck: .whenNeeded).failure
        guard full?.version == changedRows?.version, full?.table == nil || (full?.table == changedRows?.table && full?.key == changedRows?.key) else {
            return ValidationFailure(version: 0, reason: "the full and the changed-rows checks disagree: \(full?.description ?? "pass") / \(changedRows?.description ?? "pass")")
        }
        return full
    }

    static func validate(_ batches: [Batch], publicKey: [UInt8], rules: [String] = [], fullCheck: Validator.FullCheck) throws -> (failure: ValidationFailure?, validator: Validator) {
        let work = TemporaryDirectory()
        let validator = try Validator(directory: work.path, publicKey: publicKey, rules: rules, fullCheck: fullCheck)
        for batch in batches {
            do throws(ValidationFailure) {
                try validator.process(batch)
            } catch {
                return (error, validator)
            }
        }
        return (nil, validator)
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
