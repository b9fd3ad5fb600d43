import CSQLite
import Foundation
import SyndClient
import SyndDB
import SyndLedger
import SyndProtocol
import SyndSQLite
import Testing

/// Followers: a read-only connection with `follow=1` keeps its cache current
/// from the checked batch stream, so its read transactions make no request;
/// each read transaction sees one version; `min_version` gives
/// read-your-writes across processes; a tampered batch stops it for good,
/// before anything of it is shown.
///
/// Real parts: `synd sequencer` processes on loopback, SQLite through the VFS
/// in this process, writers in `synd sql` processes or on another thread, a
/// TCP proxy that rewrites bytes on the wire.
@Suite struct FollowerTests {
    let dir = TemporaryDirectory()
    let sequencer: SequencerProcess

    init() async throws {
        let path = dir.path + "/seq"
        sequencer = try await offPool { try SequencerProcess(directory: path) }
    }

    static func follower(_ name: String, _ url: String, configure: (inout DatabaseOptions) -> Void = { _ in }) throws -> Database {
        var options = DatabaseOptions()
        options.follow = true
        configure(&options)
        return try Database.open(name, sequencer: url, options: options)
    }

    /// Waits until the follower's stream is up and it heard the head (its lag is known).
    static func waitUntilCurrent(_ follower: Database) throws {
        for _ in 0..<500 {
            if let lag = try follower.scalar("PRAGMA synddb_lag")?.string.flatMap(Int.init), lag >= 0 { return }
            usleep(10_000)
        }
        throw TestFailure("the follower's stream never came up")
    }

    @Test func aFollowerStaysCurrentWithoutRequestsAndMinVersionReadsAnotherProcessesWrites() async throws {
        let url = sequencer.url
        let name = uniqueName("follow")
        try await offPool {
            let created = try runSynd(["sql", "--sequencer", url, name, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "PRAGMA synddb_version"])
            #expect(created.status == 0, "\(created.error)")
            let follower = try Self.follower(name, url)
            #expect(try follower.scalar("SELECT count(*) FROM t") == .integer(0))
            var requests = follower.statistics.requests
            for i in 1...12 {
                // Another process commits and says which version it made.
                let write = try runSynd(["sql", "--sequencer", url, name, "INSERT INTO t(v) VALUES ('row \(i)')", "PRAGMA synddb_version"])
                let version = try #require(UInt64(write.output.trimmingCharacters(in: .whitespacesAndNewlines)), "\(write.output) \(write.error)")
                // Read-your-writes across processes: wait for that version, then read.
                try follower.execute("PRAGMA synddb_min_version = \(version)")
                #expect(try follower.scalar("SELECT count(*) FROM t") == .integer(Int64(i)))
                #expect(try follower.scalar("SELECT v FROM t WHERE id = ?", [i]) == .text("row \(i)"))
                #expect(follower.statistics.version >= version)
                if i == 1 { requests = follower.statistics.requests }  // the first read filled the cache
            }
            #expect(follower.statistics.requests == requests, "an up-to-date follower reads without a request")
            #expect(try follower.scalar("PRAGMA synddb_lag")?.string.flatMap(Int.init).map { $0 >= 0 } ?? false, "its lag is known")
            // Still read-only.
            #expect(throws: SQLiteError.self) { try follower.execute("INSERT INTO t(v) VALUES ('no')") }
        }
    }

    /// What a process committed, its followers show at their next read, as a
    /// local file would: no min_version needed within one process.
    @Test func aFollowerSeesWhatItsOwnProcessCommittedAtOnce() async throws {
        let url = sequencer.url
        let name = uniqueName("own")
        try await offPool {
            let writer = try Database.open(name, sequencer: url)
            try writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            let follower = try Self.follower(name, url)
            for i in 1...60 {
                try writer.query("INSERT INTO t(v) VALUES (?)", ["row \(i)"])
                #expect(try follower.scalar("SELECT count(*) FROM t") == .integer(Int64(i)), "commit \(i) of this process")
            }
        }
    }

    /// A follower that does not read while a writer commits megabytes keeps
    /// only page numbers past its bound (merged into one entry), and then reads
    /// exactly what the writer has, through updates, shrinking and VACUUM: no
    /// page it had cached stays stale.
    @Test func anIdleFollowerBoundsWhatItQueuesAndThenReadsExactlyTheHead() async throws {
        let url = sequencer.url
        let name = uniqueName("idle")
        try await offPool {
            let writer = try Database.open(name, sequencer: url)
            try writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
            try writer.transaction { for i in 0..<100 { try writer.query("INSERT INTO t VALUES (?, randomblob(3000))", [i]) } }
            let follower = try Self.follower(name, url) { $0.cacheMB = 1 }  // queues at most 1 MiB of images
            // Every page cached, then nothing read while the writer goes on.
            _ = try follower.query("SELECT id, hex(v) FROM t")
            try Self.waitUntilCurrent(follower)
            for i in 0..<300 {
                if i == 100 {
                    // The file shrinks on the way: pages above the new end are cut off.
                    try writer.execute("DELETE FROM t WHERE id % 3 = 0")
                    try writer.execute("VACUUM")
                }
                try writer.query("UPDATE t SET v = randomblob(3000) WHERE id = ?", [(i * 7) % 100])
            }
            let expected = try writer.query("SELECT id, hex(v) FROM t ORDER BY id")
            try follower.execute("PRAGMA synddb_min_version = \(writer.statistics.version)")
            #expect(try follower.query("SELECT id, hex(v) FROM t ORDER BY id") == expected)
            #expect(try follower.scalar("PRAGMA integrity_check") == .text("ok"))
            #expect(try follower.scalar("PRAGMA page_count") == writer.scalar("PRAGMA page_count"))
        }
    }

    @Test func everyReadTransactionSeesOneVersionWhileAWriterCommits() async throws {
        let url = sequencer.url
        let name = uniqueName("bank")
        try await offPool {
            let accounts = 8, initial: Int64 = 1000
            let setup = try Database.open(name, sequencer: url)
            try setup.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
            try setup.transaction { for i in 1...accounts { try setup.query("INSERT INTO accounts VALUES (?, ?)", [i, initial]) } }
            let done = Locked(false)
            let writes = Locked(0)
            let finished = DispatchSemaphore(value: 0)
            let writer = Thread {
                defer { finished.signal() }
                do {
                    let db = try Database.open(name, sequencer: url)
                    var n = 0
                    while !done.withLock({ $0 }) {
                        n += 1
                        let (a, b) = (n % accounts + 1, (n * 7) % accounts + 1)
                        try db.transaction {
                            try db.query("UPDATE accounts SET balance = balance - ? WHERE id = ?", [n % 13, a])
                            try db.query("UPDATE accounts SET balance = balance + ? WHERE id = ?", [n % 13, b])
                        }
                        writes.withLock { $0 = n }
                    }
                } catch {
                    Issue.record("writer: \(error)")
                    done.withLock { $0 = true }
                }
            }
            writer.start()
            defer {
                done.withLock { $0 = true }
                finished.wait()  // the writer ends before the sequencer does
            }
            let follower = try Self.follower(name, url)
            _ = try follower.scalar("SELECT sum(balance) FROM accounts")
            try Self.waitUntilCurrent(follower)
            _ = try follower.scalar("SELECT sum(balance) FROM accounts")
            let requests = follower.statistics.requests
            var versions: [UInt64] = []
            var reads = 0
            while reads < 3000 || writes.withLock({ $0 }) < 50 {
                reads += 1
                if reads > 200_000 { break }
                try follower.execute("BEGIN")
                // The snapshot is taken at the first read (a PRAGMA before it reads nothing).
                let total = try follower.scalar("SELECT sum(balance) FROM accounts")
                let v1 = try follower.scalar("PRAGMA synddb_version")
                var byRow: Int64 = 0
                for i in 1...accounts { byRow += try follower.scalar("SELECT balance FROM accounts WHERE id = ?", [i])?.int64 ?? 0 }
                let v2 = try follower.scalar("PRAGMA synddb_version")
                try follower.execute("COMMIT")
                #expect(total == .integer(Int64(accounts) * initial) && byRow == Int64(accounts) * initial, "read \(reads) at version \(String(describing: v1)): a state that never existed")
                #expect(v1 == v2, "one version from the first read to the end")
                if let v = v1?.string.flatMap(UInt64.init) {
                    if let last = versions.last { #expect(v >= last, "versions never go back") }
                    if versions.last != v { versions.append(v) }
                }
            }
            #expect(versions.count > 10, "the follower moved with the writer (\(versions.count) versions over \(reads) reads, \(writes.withLock { $0 }) commits)")
            #expect(follower.statistics.requests == requests, "the stream kept it current: no request while reading")
        }
    }

    @Test func aTamperedBatchStopsTheFollowerBeforeAnythingOfItIsShown() async throws {
        let url = sequencer.url
        let name = uniqueName("tamper")
        let proxy = try TamperingProxy(upstreamPort: sequencer.port, marker: "PLAIN-TEXT-ROW-42", replacement: "EVIL-TEXT-ROW-666")
        try await offPool {
            let writer = try Database.open(name, sequencer: url)
            try writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('ordinary')")
            let follower = try Self.follower(name, proxy.url)
            #expect(try follower.query("SELECT v FROM t") == [[.text("ordinary")]])
            try Self.waitUntilCurrent(follower)
            try writer.query("INSERT INTO t(v) VALUES (?)", ["PLAIN-TEXT-ROW-42"])
            var refusal: SQLiteError?
            let deadline = Date().addingTimeInterval(10)
            while refusal == nil, Date() < deadline {
                do {
                    let rows = try follower.query("SELECT v FROM t ORDER BY id")
                    #expect(!rows.contains([.text("EVIL-TEXT-ROW-666")]), "the tampered state was shown")
                    #expect(rows.count == 1, "nothing of the refused batch shows")
                    usleep(10_000)
                } catch let error as SQLiteError {
                    refusal = error
                }
            }
            let error = try #require(refusal, "the follower kept serving after a tampered batch")
            #expect(error.message.contains("fails its check") && error.message.contains("pages_hash"), "\(error)")
            #expect(proxy.rewritten > 0)
            // For good: the next read fails too.
            #expect(throws: SQLiteError.self) { try follower.query("SELECT count(*) FROM t") }
            // The direct view is the real one.
            #expect(try writer.query("SELECT v FROM t ORDER BY id") == [[.text("ordinary")], [.text("PLAIN-TEXT-ROW-42")]])
        }
    }

    /// A key known beforehand (`sequencer_key=`, as `synd sequencer` prints
    /// it) is the only one a follower and a validator check with: batches
    /// signed by any other key are refused, whatever the sequencer claims.
    @Test func aPinnedKeyIsTheOnlyKeyFollowersAndValidatorsAccept() async throws {
        let url = sequencer.url
        let name = uniqueName("pinned")
        let key = try #require(sequencer.key, "the sequencer prints its key: \(sequencer.announcement)")
        #expect(key.count == 8 + 64)
        let stored = try SigningKey(path: sequencer.directory + "/sequencer.ed25519", create: false)
        #expect(key == SequencerKeyText.format(stored.publicKey))
        let other = "ed25519:" + String(repeating: "ab", count: 32)
        try await offPool {
            let writer = try Database.open(name, sequencer: url)
            try writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('one')")
            let right = try Self.follower(name, url) { $0.sequencerKey = key }
            try Self.waitUntilCurrent(right)
            try writer.execute("INSERT INTO t(v) VALUES ('two')")
            try right.execute("PRAGMA synddb_min_version = \(writer.statistics.version)")
            #expect(try right.scalar("SELECT count(*) FROM t") == .integer(2))

            let wrong = try Self.follower(name, url) { $0.sequencerKey = other }
            var refusal: SQLiteError?
            for _ in 0..<500 where refusal == nil {
                do { _ = try wrong.scalar("SELECT count(*) FROM t"); usleep(10_000) } catch let e as SQLiteError { refusal = e }
            }
            let error = try #require(refusal, "a follower pinned to another key kept serving")
            #expect(error.message.contains("signature is not valid"), "\(error)")

            let good = try runSynd(["validate", "--sequencer", url, "--db", name, "--sequencer-key", key])
            #expect(good.status == 0 && good.output.hasPrefix("ok:"), "\(good.output) \(good.error)")
            let bad = try runSynd(["validate", "--sequencer", url, "--db", name, "--sequencer-key", other])
            #expect(bad.status != 0 && bad.output.contains("signature is not valid"), "\(bad.output) \(bad.error)")
            #expect(bad.error.contains("not \(other)"), "\(bad.error)")
        }
    }

    @Test func aFollowerWhoseSequencerIsGoneFailsInsteadOfServingStaleAndCatchesUpAfter() async throws {
        let path = dir.path + "/restart"
        let own = try await offPool { try SequencerProcess(directory: path) }
        let url = own.url
        let name = uniqueName("gone")
        try await offPool {
            let writer = try Database.open(name, sequencer: url)
            try writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('one')")
            let follower = try Self.follower(name, url) { $0.maxLagMs = 200; $0.timeoutMs = 500 }
            #expect(try follower.scalar("SELECT count(*) FROM t") == .integer(1))
            own.kill9()
            usleep(300_000)
            #expect(throws: SQLiteError.self, "a follower that cannot show it is fresh must not serve") {
                try follower.scalar("SELECT count(*) FROM t")
            }
            try own.restart()
            // On PostgreSQL the writer's lease outlives the sequencer (it lives in
            // the database): another connection waits for it to lapse.
            var patient = DatabaseOptions()
            patient.busyTimeoutMs = PostgresTest.storeForAllTests ? 15_000 : 0
            let again = try Database.open(name, sequencer: url, options: patient)
            try again.execute("INSERT INTO t(v) VALUES ('two')")
            let version = again.statistics.version
            try follower.execute("PRAGMA synddb_min_version = \(version)")
            var count: Value?
            for _ in 0..<50 where count != .integer(2) {
                count = try? follower.scalar("SELECT count(*) FROM t")
                if count != .integer(2) { usleep(100_000) }
            }
            #expect(count == .integer(2), "it follows again once the sequencer is back")
        }
    }
}
