import Foundation
import Synchronization
import SyndDB
import SyndProtocol
import SyndSQLite
import Testing

/// Round trips, refusals and leases, against a sequencer in this process (for
/// its request counters and fault hook) over real loopback HTTP/2.
@Suite struct CommitPathTests {
    @Test func oneRequestPerWriteTransactionAndNonePerWarmRead() async throws {
        try await withEmbeddedSequencer { server in
            let db = try Database.open(uniqueName("counts"), sequencer: server.url)
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            let insert = try db.prepare("INSERT INTO t(v) VALUES (?)")
            for i in 0..<20 { try db.transaction { _ = try insert.run(["warm-\(i)"]) } }
            let counters = server.service.counters
            func served() -> Int { counters.total - counters[.renewLease] }

            for i in 0..<25 {
                let client = db.statistics.requests, server = served()
                try db.transaction {
                    for j in 0..<10 { _ = try insert.run(["\(i)-\(j)"]) }
                }
                #expect(db.statistics.requests - client == 1)
                #expect(served() - server == 1)
            }
            for _ in 0..<25 {
                let client = db.statistics.requests, server = served()
                #expect(try db.scalar("SELECT count(*) FROM t") == .integer(270))
                try db.transaction { _ = try db.query("SELECT v FROM t WHERE id = 5") }
                #expect(db.statistics.requests == client)
                #expect(served() == server)
            }
        }
    }

    @Test func injectedCommitFailureFailsCommitAndLeavesAConsistentView() async throws {
        let failures = FailureSwitch()
        try await withEmbeddedSequencer(configure: { config in
            config.commitFault = { _ in failures.take() }
        }) { server in
            let name = uniqueName("inject")
            let db = try Database.open(name, sequencer: server.url)
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            try db.execute("INSERT INTO t(v) VALUES ('kept')")
            // UNAVAILABLE is retried under the same transaction id: applied once.
            failures.arm(SequencerError(.unavailable, "injected: busy disk"))
            try db.execute("INSERT INTO t(v) VALUES ('retried')")
            #expect(try db.scalar("SELECT count(*) FROM t WHERE v = 'retried'") == .integer(1))
            try db.execute("DELETE FROM t WHERE v = 'retried'")
            // INTERNAL is a refusal: COMMIT fails and says why.
            failures.arm(SequencerError(.internal, "injected: disk on fire"))
            do {
                try db.execute("BEGIN; INSERT INTO t(v) VALUES ('lost'); UPDATE t SET v = 'changed' WHERE id = 1; COMMIT")
                Issue.record("COMMIT should have failed")
            } catch let error as SQLiteError {
                #expect(error.message.contains("injected: disk on fire"))
                #expect(error.code & 0xFF == 10)  // SQLITE_IOERR
            }
            if !db.connection.isAutocommit { try db.execute("ROLLBACK") }
            #expect(try db.query("SELECT v FROM t") == [[.text("kept")]])
            try db.execute("INSERT INTO t(v) VALUES ('after')")
            var ro = DatabaseOptions()
            ro.readOnly = true
            let reader = try Database.open(name, sequencer: server.url, options: ro)
            #expect(try reader.query("SELECT v FROM t ORDER BY id") == [[.text("kept")], [.text("after")]])
            #expect(try reader.scalar("PRAGMA integrity_check") == .text("ok"))
            // The commit after a refused one, on the same base version, carries its own changeset.
            let failure = try LedgerTests.validate(server.service.store, name)
            #expect(failure == nil, "\(failure?.description ?? "")")
        }
    }

    /// A second read-write connection opens at once; its write gets
    /// SQLITE_BUSY ("database is locked", with the reason) only while the
    /// first is inside a write transaction, and goes through as soon as the
    /// first is idle: the first hands its lease over on demand.
    @Test func secondWriterGetsBusyOnlyWhileTheFirstWrites() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("fence")
            let first = try Database.open(name, sequencer: server.url)
            try first.execute("CREATE TABLE t(x)")
            let second = try Database.open(name, sequencer: server.url)
            try first.execute("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
            #expect {
                try second.execute("INSERT INTO t VALUES (2)")
            } throws: { error in
                guard let e = error as? SQLiteError else { return false }
                return e.code == 5 && e.message.contains("another connection holds its writer lease")  // SQLITE_BUSY
            }
            try first.execute("COMMIT")
            // No busy timeout: the idle first writer hands the lease over while
            // the second one's lock request waits on the sequencer.
            try second.execute("INSERT INTO t VALUES (2)")
            try first.execute("INSERT INTO t VALUES (3)")
            #expect(try second.query("SELECT x FROM t ORDER BY rowid") == [[.integer(1)], [.integer(2)], [.integer(3)]])
            #expect(try first.statistics.leaseAcquisitions == 2)
            #expect(try second.statistics.leaseAcquisitions == 1)
        }
    }

    @Test func lapsedLeaseIsTakenAgainAtCommitUnlessAnotherWriterCameInBetween() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("lapse")
            do {
                let setup = try Database.open(name, sequencer: server.url)
                try setup.execute("CREATE TABLE t(x)")
            }
            var options = DatabaseOptions()
            options.leaseTTLMs = 1500  // room for a loaded machine: each commit must land within the TTL
            options.renewLease = false
            let a = try Database.open(name, sequencer: server.url, options: options)
            let epoch = try a.statistics.leaseEpoch
            try a.execute("BEGIN IMMEDIATE; INSERT INTO t VALUES ('a1')")
            usleep(1_800_000)
            // A lapse alone: nobody committed meanwhile (the sequencer checks the
            // base version), so COMMIT takes a new epoch and succeeds.
            try a.execute("COMMIT")
            #expect(try a.statistics.leaseEpoch > epoch)
            // A takeover by another writer fails the commit, and says why: the
            // COMMIT waits for the idle writer to hand the lease back, then
            // finds that the database moved on meanwhile.
            try a.execute("BEGIN IMMEDIATE; INSERT INTO t VALUES ('a2')")
            usleep(1_800_000)
            let b = try Database.open(name, sequencer: server.url)
            try b.execute("INSERT INTO t VALUES ('b1')")
            #expect {
                try a.execute("COMMIT")
            } throws: { error in
                guard let e = error as? SQLiteError else { return false }
                return e.code == 5 && e.message.contains("the database moved from version 2 to 3 meanwhile")
            }
            // SQLite rolled the transaction back: a retried COMMIT cannot report a false success.
            #expect(a.connection.isAutocommit)
            #expect(throws: SQLiteError.self) { try a.execute("COMMIT") }
            #expect(try b.query("SELECT x FROM t ORDER BY rowid") == [[.text("a1")], [.text("b1")]])
        }
    }

    @Test func alternatingWritersLoseNoUpdate() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("alternate")
            do {
                let setup = try Database.open(name, sequencer: server.url)
                try setup.execute("CREATE TABLE counter(id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO counter VALUES (1, 0)")
            }
            var expected = 0
            for round in 0..<10 {
                // Writer A and writer B take turns; each reopens and so takes the lease anew.
                let writer = try Database.open(name, sequencer: server.url)
                for _ in 0..<(round % 2 == 0 ? 7 : 5) {
                    try writer.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
                    expected += 1
                }
            }
            // A writer whose lease lapsed and was taken over loses no update.
            var short = DatabaseOptions()
            short.leaseTTLMs = 1500
            short.renewLease = false
            let a = try Database.open(name, sequencer: server.url, options: short)
            try a.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
            expected += 1
            usleep(1_800_000)
            let b = try Database.open(name, sequencer: server.url)
            try b.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
            expected += 1
            // a's next statement reads b's update (its lease, and so its cache,
            // is gone) and takes the lease back from the idle b.
            try a.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
            expected += 1
            #expect(try b.scalar("SELECT n FROM counter") == .integer(Int64(expected)))
            #expect(try a.scalar("SELECT n FROM counter") == .integer(Int64(expected)))
        }
    }
}

/// Arms one commit failure for the fault hook.
final class FailureSwitch: Sendable {
    private let next = Mutex<SequencerError?>(nil)
    func arm(_ error: SequencerError) { next.withLock { $0 = error } }
    func take() -> SequencerError? { next.withLock { e in defer { e = nil }; return e } }
}
