import Foundation
import SyndDB
import SyndPostgres
import SyndProtocol
import SyndStorage
import Testing

/// Several `synd sequencer --store postgresql://...` processes on one real
/// PostgreSQL: one truth whichever answers, one signing key, and writers that
/// carry on through another sequencer when one is killed.
@Suite(.enabled(if: PostgresTest.available, PostgresTest.why))
struct PostgresSequencerTests {
    let dir = TemporaryDirectory()

    @Test func twoSequencersServeTheSameDatabases() async throws {
        try await offPool {
            let pg = try PostgresTestDatabase()
            // One key folder for both: the first creates the key, the second uses it.
            let a = try SequencerProcess(directory: dir.path + "/seq", extraArguments: ["--store", pg.url])
            let b = try SequencerProcess(directory: dir.path + "/seq", extraArguments: ["--store", pg.url])
            #expect(a.key != nil && a.key == b.key)
            #expect(a.announcement.contains("store: postgresql://"), "\(a.announcement)")
            let name = uniqueName("shared")
            let writer = try Database.open(name, sequencer: a.url)
            try writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            for i in 1...20 { try writer.execute("INSERT INTO t VALUES (\(i), 'a\(i)')") }
            // B serves what A committed.
            var ro = DatabaseOptions()
            ro.readOnly = true
            let reader = try Database.open(name, sequencer: b.url, options: ro)
            #expect(try reader.scalar("SELECT count(*) FROM t") == .integer(20))
            // A writer on B waits for A's writer's lease (handed over through PostgreSQL) and commits.
            var patient = DatabaseOptions()
            patient.busyTimeoutMs = 10_000
            let second = try Database.open(name, sequencer: b.url, options: patient)
            try second.execute("INSERT INTO t VALUES (21, 'b21')")
            try writer.execute("INSERT INTO t VALUES (22, 'a22')")
            try second.execute("INSERT INTO t VALUES (23, 'b23')")
            #expect(try reader.scalar("SELECT count(*) FROM t") == .integer(23))
            #expect(try reader.scalar("PRAGMA integrity_check") == .text("ok"))
            // A follower on B sees A's commits as they happen (LISTEN/NOTIFY), without a request.
            var follow = DatabaseOptions()
            follow.readOnly = true
            follow.follow = true
            let follower = try Database.open(name, sequencer: b.url, options: follow)
            #expect(try follower.scalar("SELECT count(*) FROM t") == .integer(23))
            try writer.execute("INSERT INTO t VALUES (24, 'a24')")
            var seen = false
            for _ in 0..<200 where !seen {
                seen = try follower.scalar("SELECT count(*) FROM t") == .integer(24)
                if !seen { usleep(10_000) }
            }
            #expect(seen, "the follower on B never saw A's commit")
            // Every batch, whoever sealed it, validates in one chain under the shared key, read through either.
            for url in [a.url, b.url] {
                let validate = try runSynd(["validate", "--sequencer", url, "--db", name, "--sequencer-key", a.key ?? ""])
                #expect(validate.status == 0, "\(validate.output) \(validate.error)")
            }
        }
    }

    @Test func aRetryThroughAnotherSequencerGetsTheFirstAnswer() async throws {
        let pg = try PostgresTestDatabase()
        // Sequencer A refuses the first commit (a fault only A has); B would apply it.
        var faulty = StoreConfiguration(directory: dir.path)
        let refusedTxn = SequencerStoreConformanceTests.txn()
        faulty.commitFault = { $0.txnID == refusedTxn ? SequencerError(.failedPrecondition, "refused by A") : nil }
        let a = try await PostgresStore(PostgresLocation(url: pg.url), configuration: faulty)
        let b = try await PostgresStore(PostgresLocation(url: pg.url), configuration: StoreConfiguration(directory: dir.path))
        defer { a.shutdown(); b.shutdown() }
        try await offPool {
            _ = try a.open(OpenDatabaseRequest(name: "db", create: true))
            let lease = try SequencerStoreConformanceTests.acquire(b)
            let refused = SequencerStoreConformanceTests.request(lease, base: 0, count: 1, [SequencerStoreConformanceTests.page(1, 1)], txn: refusedTxn)
            #expect(throws: SequencerError(.failedPrecondition, "refused by A")) { try a.commit(refused) }
            #expect(throws: SequencerError(.failedPrecondition, "refused by A")) { try b.commit(refused) }
            // An applied commit is a duplicate through the other one, and its status is the same on both.
            let applied = SequencerStoreConformanceTests.request(lease, base: 0, count: 1, [SequencerStoreConformanceTests.page(1, 2)])
            #expect(try b.commit(applied).version == 1)
            let again = try a.commit(applied)
            #expect(again.version == 1 && again.duplicate)
            var status = GetCommitStatusRequest()
            status.database = "db"
            status.txnID = applied.txnID
            #expect(try a.commitStatus(status).version == 1)
            status.txnID = refusedTxn
            #expect(try a.commitStatus(status).state == .notFound)
            // Both see one head, one lease.
            #expect(try a.headVersion(of: "db") == 1)
            #expect(throws: SequencerError.self) { try SequencerStoreConformanceTests.acquire(a, holder: "other") }
        }
    }

    @Test func aSequencerWithAnotherKeyRefusesToStart() async throws {
        try await offPool {
            let pg = try PostgresTestDatabase()
            let first = try SequencerProcess(directory: dir.path + "/one", extraArguments: ["--store", pg.url])
            _ = first
            let other = try runSynd(["sequencer", "--data", dir.path + "/two", "--port", "0", "--store", pg.url])
            #expect(other.status != 0)
            #expect(other.error.contains("is not the key of the sequencers already sharing"), "\(other.error)")
            // An unreachable PostgreSQL is a clear error, not a hang.
            let unreachable = try runSynd(["sequencer", "--data", dir.path + "/three", "--port", "0", "--store", "postgresql://synd@127.0.0.1:1/none?sslmode=disable"])
            #expect(unreachable.status != 0)
            #expect(unreachable.error.contains("PostgreSQL"), "\(unreachable.error)")
            let bad = try runSynd(["sequencer", "--data", dir.path + "/four", "--port", "0", "--store", "mysql://x"])
            #expect(bad.status != 0 && bad.error.contains("not a PostgreSQL URL"), "\(bad.error)")
        }
    }

    @Test func writersCarryOnThroughTheOtherSequencerWhenOneIsKilled() async throws {
        try await offPool {
            let pg = try PostgresTestDatabase()
            let a = try SequencerProcess(directory: dir.path + "/seq", extraArguments: ["--store", pg.url])
            let b = try SequencerProcess(directory: dir.path + "/seq", extraArguments: ["--store", pg.url])
            // A first, so that the writers start on the one that will be killed.
            let both = "\(a.url),\(b.url)"
            let names = (0..<3).map { uniqueName("failover\($0)") }
            for name in names {
                let setup = try Database.open(name, sequencer: both)
                try setup.execute("CREATE TABLE a(id INTEGER PRIMARY KEY, pad BLOB); CREATE TABLE b(id INTEGER PRIMARY KEY, pad BLOB)")
            }
            // Writers in this process (one connection each) and in two Python processes through the extension.
            let loops = CommitLoops(names: names, url: both) { i in
                "BEGIN; INSERT INTO a VALUES (\(i), randomblob(500)); INSERT INTO b VALUES (\(i), randomblob(500)); COMMIT"
            }
            let stop = dir.path + "/stop"
            let pythonNames = (0..<2).map { uniqueName("pyfailover\($0)") }
            let pythons = try pythonNames.map { name in try FailoverWriter(name: name, sequencer: both, stop: stop) }

            // Three times: kill -9 A mid-load; every writer must go on through B within about a second.
            var kills: [Double] = []
            var carriedOn: [Duration] = []
            for _ in 0..<3 {
                usleep(UInt32.random(in: 400_000...700_000))
                let before = loops.acked
                kills.append(Date().timeIntervalSince1970)
                let killed = ContinuousClock.now
                a.kill9()
                let deadline = killed + .seconds(10)
                while ContinuousClock.now < deadline, zip(loops.acked, before).contains(where: { $0 < $1 + 2 }) { usleep(5_000) }
                carriedOn.append(ContinuousClock.now - killed)
                try a.restart()
            }
            try "".write(toFile: stop, atomically: true, encoding: .utf8)
            loops.stop()
            print("failover: this process's writers made two more commits each \(carriedOn) after each kill")
            // A loaded 2-core machine gets some slack over "about a second".
            #expect(carriedOn.allSatisfy { $0 < .seconds(3) }, "writers stalled after a sequencer died: \(carriedOn)")

            var ro = DatabaseOptions()
            ro.readOnly = true
            var checks: [(String, Set<Int64>, Set<Int64>)] = []
            for (index, name) in names.enumerated() {
                let o = loops.outcomes.withLock { $0[index] }
                checks.append((name, Set(o.acked), Set(o.uncertain)))
                print("failover, \(name): \(o.acked.count) acknowledged, \(o.uncertain.count) failed or unknown: \(o.errors.suffix(2))")
            }
            for p in pythons {
                let (acked, failed, times) = try p.finish()
                checks.append((p.name, acked, failed))
                print("failover, \(p.name) (python): \(acked.count) acknowledged, \(failed.count) failed")
                for kill in kills {
                    let next = times.first { $0 > kill }
                    #expect(next.map { $0 - kill < 3 } == true, "\(p.name) did not commit within 3 s of a kill (next commit: \(next.map { "\($0 - kill) s later" } ?? "none"))")
                }
            }
            for (name, acked, uncertain) in checks {
                #expect(acked.count > 10, "\(name): too few commits to mean anything")
                let reader = try Database.open(name, sequencer: b.url, options: ro)
                let aRows = try reader.query("SELECT id FROM a").map { $0[0].int64! }
                let bRows = Set(try reader.query("SELECT id FROM b").map { $0[0].int64! })
                #expect(Set(aRows) == bRows, "\(name): a partial batch is visible")
                #expect(aRows.count == Set(aRows).count, "\(name): a row twice")
                #expect(acked.isSubset(of: Set(aRows)), "\(name): acknowledged commits lost: \(acked.subtracting(Set(aRows)).sorted().prefix(10))")
                #expect(Set(aRows).isSubset(of: acked.union(uncertain)), "\(name): rows that were never written")
                let validate = try runSynd(["validate", "--sequencer", b.url, "--db", name])
                #expect(validate.status == 0, "\(name): \(validate.output) \(validate.error)")
            }
        }
    }
}

/// A Python process committing through libsyndvfs.so until `stop` exists:
/// transaction i inserts row i into tables a and b; it prints "ok i TIME" once
/// COMMIT returned (TIME: Unix time) and "fail i" when it raised.
final class FailoverWriter: @unchecked Sendable {
    // Safe: used by one test thread.
    let name: String
    private let process = Process()
    private let output = Pipe()

    init(name: String, sequencer: String, stop: String) throws {
        self.name = name
        let setup = try Database.open(name, sequencer: sequencer)
        try setup.execute("CREATE TABLE a(id INTEGER PRIMARY KEY, pad BLOB); CREATE TABLE b(id INTEGER PRIMARY KEY, pad BLOB)")
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-u", "-c", """
            import os, sqlite3, sys, time
            c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension("\(SQLiteToolsTests.extensionPath)")
            db = sqlite3.connect("file:\(name)?vfs=synddb&sequencer=\(sequencer)&timeout_ms=1000", uri=True, isolation_level=None, timeout=5)
            i = 0
            while not os.path.exists("\(stop)"):
                i += 1
                try:
                    db.execute("BEGIN")
                    db.execute("INSERT INTO a VALUES (?, randomblob(500))", (i,))
                    db.execute("INSERT INTO b VALUES (?, randomblob(500))", (i,))
                    db.execute("COMMIT")
                    print("ok", i, time.time())
                except sqlite3.Error as e:
                    print("fail", i, e)
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    time.sleep(0.02)
            """]
        process.standardOutput = output
        try startProcess(process)
    }

    /// Waits for it to stop; its acknowledged and failed transactions, and when each acknowledgement came (Unix time).
    func finish() throws -> (acked: Set<Int64>, failed: Set<Int64>, times: [Double]) {
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        var acked = Set<Int64>(), failed = Set<Int64>()
        var times: [Double] = []
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count >= 2, let i = Int64(parts[1]) else { continue }
            if parts[0] == "ok" {
                acked.insert(i)
                if parts.count >= 3, let t = Double(parts[2]) { times.append(t) }
            } else {
                failed.insert(i)
            }
        }
        return (acked, failed, times)
    }
}
