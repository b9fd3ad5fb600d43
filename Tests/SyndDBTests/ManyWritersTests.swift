import Foundation
import Synchronization
import SyndDB
import SyndSQLite
import Testing

/// Many writers, one database, SQLite's locking rules: four python3
/// processes (the extension) and two connections in this process write at
/// once with a busy timeout. Every transaction commits without the
/// application retrying, no update is lost, money is neither made nor lost,
/// and the history validates.
///
/// Real parts: a `synd sequencer` process, Debian's python3 with
/// libsyndvfs.so, the Swift API; the lease moves between them on demand.
@Suite struct ManyWritersTests {
    static let accounts = 20
    static let initialBalance = 1_000
    static let transactionsPerWriter = 40

    /// One writer's loop: even rounds a transfer in BEGIN IMMEDIATE (two
    /// balances and a log row), odd rounds an autocommit read-modify-write of
    /// one counter (a lost update would show in its total). Prints `ok` and
    /// the time spent, or the first error.
    static let writerScript = """
        import random, sqlite3, sys, time
        extension, uri, writer, rounds, accounts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(extension)
        db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
        rng = random.Random(writer)
        start = time.monotonic()
        try:
            for i in range(rounds):
                if i % 2 == 0:
                    a, b = rng.sample(range(1, accounts + 1), 2)
                    amount = rng.randint(1, 50)
                    db.execute("BEGIN IMMEDIATE")
                    db.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
                    db.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))
                    db.execute("INSERT INTO log(writer, round) VALUES (?, ?)", (writer, i))
                    db.execute("COMMIT")
                else:
                    db.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
            print("ok %.3f" % (time.monotonic() - start), flush=True)
        except Exception as e:
            print("error round %d: %s: %s" % (i, type(e).__name__, e), flush=True)
            sys.exit(1)
        """

    @Test func fourProcessesAndTwoConnectionsInOneProcessLoseNothing() async throws {
        let dir = TemporaryDirectory()
        let sequencer = try await offPool { try SequencerProcess(directory: dir.path + "/seq") }
        let url = sequencer.url
        let name = uniqueName("bank")
        let rounds = Self.transactionsPerWriter
        try await offPool {
            do {
                let setup = try Database.open(name, sequencer: url)
                try setup.execute("""
                    CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
                    CREATE TABLE log(id INTEGER PRIMARY KEY, writer TEXT NOT NULL, round INTEGER NOT NULL);
                    CREATE TABLE counter(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
                    INSERT INTO counter VALUES (1, 0)
                    """)
                try setup.transaction {
                    for id in 1...Self.accounts {
                        try setup.query("INSERT INTO accounts VALUES (?, ?)", [id, Self.initialBalance])
                    }
                }
            }
            let script = dir.path + "/writer.py"
            try Self.writerScript.write(toFile: script, atomically: true, encoding: .utf8)
            var pythons: [(Process, Pipe)] = []
            defer {
                for (p, _) in pythons where p.isRunning { p.terminate() }
            }
            for w in 0..<4 {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
                process.arguments = [script, SQLiteToolsTests.extensionPath, "file:\(name)?vfs=synddb&sequencer=\(url)",
                                     "py\(w)", String(rounds), String(Self.accounts)]
                let out = Pipe()
                process.standardOutput = out
                process.standardError = out
                try startProcess(process)
                pythons.append((process, out))
            }
            // Two connections of this process, each on its own thread.
            let swiftResults = Mutex<[String]>([])
            let running = Atomic<Int>(0)
            for w in 0..<2 {
                running.add(1, ordering: .sequentiallyConsistent)
                Thread.detachNewThread {
                    defer { running.subtract(1, ordering: .sequentiallyConsistent) }
                    var options = DatabaseOptions()
                    options.busyTimeoutMs = 60_000
                    var rng = SystemRandomNumberGenerator()
                    var round = 0
                    do {
                        let db = try Database.open(name, sequencer: url, options: options)
                        for i in 0..<rounds {
                            round = i
                            if i % 2 == 0 {
                                let a = Int.random(in: 1...Self.accounts, using: &rng)
                                var b = Int.random(in: 1...Self.accounts, using: &rng)
                                if b == a { b = a % Self.accounts + 1 }
                                let amount = Int.random(in: 1...50, using: &rng)
                                try db.execute("BEGIN IMMEDIATE")
                                try db.query("UPDATE accounts SET balance = balance - ? WHERE id = ?", [amount, a])
                                try db.query("UPDATE accounts SET balance = balance + ? WHERE id = ?", [amount, b])
                                try db.query("INSERT INTO log(writer, round) VALUES (?, ?)", ["swift\(w)", i])
                                try db.execute("COMMIT")
                            } else {
                                try db.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
                            }
                        }
                        swiftResults.withLock { $0.append("ok") }
                    } catch {
                        swiftResults.withLock { $0.append("error round \(round): \(error)") }
                    }
                }
            }
            for (process, out) in pythons {
                // To its end: the writer closes it when it exits.
                let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                process.waitUntilExit()  // off Swift's cooperative pool (offPool)
                #expect(process.terminationStatus == 0 && text.hasPrefix("ok"), "python writer: \(text)")
            }
            while running.load(ordering: .sequentiallyConsistent) > 0 { usleep(10_000) }
            let results = swiftResults.withLock { $0 }
            #expect(results == ["ok", "ok"], "\(results)")

            var readOnly = DatabaseOptions()
            readOnly.readOnly = true
            let check = try Database.open(name, sequencer: url, options: readOnly)
            let writers = 6
            let transfers = writers * ((rounds + 1) / 2)
            let increments = writers * (rounds / 2)
            #expect(try check.scalar("SELECT sum(balance) FROM accounts") == .integer(Int64(Self.accounts * Self.initialBalance)))
            #expect(try check.scalar("SELECT count(*) FROM log") == .integer(Int64(transfers)))
            #expect(try check.scalar("SELECT count(DISTINCT writer) FROM log") == .integer(Int64(writers)))
            #expect(try check.scalar("SELECT n FROM counter") == .integer(Int64(increments)), "an update was lost")
            #expect(try check.scalar("PRAGMA integrity_check") == .text("ok"))
            let validate = try runSynd(["validate", "--sequencer", url, "--db", name])
            #expect(validate.status == 0, "\(validate.output) \(validate.error)")
            print("many writers: \(writers) writers, \(transfers) transfers and \(increments) increments committed; \(validate.output.split(separator: "\n").last ?? "")")
            _ = sequencer
        }
    }

    /// A deferred transaction that read, then finds the database moved on
    /// when it first writes, gets SQLITE_BUSY_SNAPSHOT at once (as in WAL
    /// mode: waiting cannot help); after ROLLBACK the retry commits and sees
    /// the other writer's row. Autocommit statements never see it: SQLite's
    /// busy handler retries them on the new version.
    @Test func aDeferredTransactionOnAStaleSnapshotIsToldToRetry() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("stale")
            var options = DatabaseOptions()
            options.busyTimeoutMs = 10_000
            let a = try Database.open(name, sequencer: server.url, options: options)
            let b = try Database.open(name, sequencer: server.url, options: options)
            try a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            try a.execute("BEGIN")
            #expect(try a.scalar("SELECT count(*) FROM t") == .integer(0))
            try b.execute("INSERT INTO t(v) VALUES ('b')")
            #expect {
                try a.execute("INSERT INTO t(v) VALUES ('a')")
            } throws: { error in
                guard let e = error as? SQLiteError else { return false }
                return e.extendedCode == 517  // SQLITE_BUSY_SNAPSHOT
            }
            try a.execute("ROLLBACK")
            try a.execute("BEGIN")
            let n = try a.scalar("SELECT count(*) FROM t")
            try a.execute("INSERT INTO t(v) VALUES ('a')")
            try a.execute("COMMIT")
            #expect(n == .integer(1))
            // An autocommit write after another writer committed: retried by SQLite, no error.
            try b.execute("INSERT INTO t(v) VALUES ('b2')")
            try a.execute("INSERT INTO t(v) VALUES ('a2')")
            #expect(try b.query("SELECT v FROM t ORDER BY id") == [[.text("b")], [.text("a")], [.text("b2")], [.text("a2")]])
        }
    }

    /// A connection that gets the lease back after others wrote keeps the
    /// pages they did not write: its next read transaction drops only theirs.
    @Test func aCacheSurvivesAHandoverExceptForThePagesOthersWrote() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("cache")
            let a = try Database.open(name, sequencer: server.url)
            try a.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, pad BLOB); CREATE TABLE small(id INTEGER PRIMARY KEY, v)")
            try a.transaction {
                for i in 1...200 { try a.query("INSERT INTO big VALUES (?, zeroblob(3000))", [i]) }
            }
            #expect(try a.scalar("SELECT count(*) FROM big WHERE length(pad) = 3000") == .integer(200))
            let b = try Database.open(name, sequencer: server.url)
            try b.execute("INSERT INTO small(v) VALUES ('from b')")  // a hands over; b writes a page or two
            let before = a.statistics
            #expect(try a.scalar("SELECT count(*) FROM big WHERE length(pad) = 3000") == .integer(200))
            #expect(try a.scalar("SELECT v FROM small") == .text("from b"))
            let after = a.statistics
            // The scan of ~200 pages is served from the cache: a handful of requests, not one per page.
            #expect(after.pagesKeptOnRefresh - before.pagesKeptOnRefresh >= 150, "\(after)")
            #expect(after.requests - before.requests <= 4, "\(before) → \(after)")
        }
    }

    /// Python's multiprocessing forks: children of a parent that already used
    /// the extension write one database together (they crashed on the Swift
    /// runtime's cached thread id in Synchronization.Mutex before the client
    /// moved to pthread mutexes).
    @Test func forkedChildrenOfAProcessThatUsedTheExtensionWriteTogether() async throws {
        let dir = TemporaryDirectory()
        let sequencer = try await offPool { try SequencerProcess(directory: dir.path + "/seq") }
        let url = sequencer.url
        let name = uniqueName("forked")
        let script = """
            import os, sqlite3, sys
            extension, uri = sys.argv[1], sys.argv[2]
            loader = sqlite3.connect(":memory:")
            loader.enable_load_extension(True)
            loader.load_extension(extension)
            db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
            db.execute("CREATE TABLE t(child INTEGER, i INTEGER)")
            db.execute("INSERT INTO t VALUES (-1, 0)")
            db.close()
            children = []
            for c in range(3):
                pid = os.fork()
                if pid == 0:
                    code = 0
                    try:
                        db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
                        for i in range(30):
                            db.execute("BEGIN IMMEDIATE")
                            db.execute("INSERT INTO t VALUES (?, ?)", (c, i))
                            db.execute("COMMIT")
                        db.close()
                    except Exception as e:
                        print("child", c, type(e).__name__, e, flush=True)
                        code = 1
                    os._exit(code)
                children.append(pid)
            statuses = [os.waitpid(pid, 0)[1] for pid in children]
            db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
            print("statuses", statuses, "rows", db.execute("SELECT count(*) FROM t WHERE child >= 0").fetchone()[0], flush=True)
            """
        try await offPool {
            let run = try Self.python(script, "file:\(name)?vfs=synddb&sequencer=\(url)")
            #expect(run.status == 0, "\(run.output)")
            #expect(run.output.contains("statuses [0, 0, 0] rows 90"), "\(run.output)")
            _ = sequencer
        }
    }

    /// A process that takes the lease (a write it rolls back) and exits at
    /// once, without closing, leaves nothing behind: the next writer, with no
    /// busy timeout, writes at once every time (found by SQLite's
    /// savepoint4.test, where such a child left its lease for the TTL).
    @Test func aProcessThatExitsRightAfterTakingTheLeaseLeavesNothingBehind() async throws {
        let dir = TemporaryDirectory()
        let sequencer = try await offPool { try SequencerProcess(directory: dir.path + "/seq") }
        let url = sequencer.url
        let name = uniqueName("quickexit")
        let script = """
            import os, sqlite3, sys
            loader = sqlite3.connect(":memory:")
            loader.enable_load_extension(True)
            loader.load_extension(sys.argv[1])
            db = sqlite3.connect(sys.argv[2], uri=True, isolation_level=None, timeout=0)
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM t")
            db.execute("ROLLBACK")
            os._exit(0)
            """
        try await offPool {
            let parent = try Database.open(name, sequencer: url)
            try parent.execute("CREATE TABLE t(x); INSERT INTO t VALUES (0)")
            for round in 1...10 {
                let child = try Self.python(script, "file:\(name)?vfs=synddb&sequencer=\(url)")
                #expect(child.status == 0, "\(child.output)")
                let start = ContinuousClock.now
                try parent.execute("INSERT INTO t VALUES (?)".replacingOccurrences(of: "?", with: String(round)))
                let took = ContinuousClock.now - start
                #expect(took < .seconds(2), "round \(round): the parent waited \(took) for a lease its exited child left behind")
            }
            #expect(try parent.scalar("SELECT count(*) FROM t") == .integer(11))
            _ = sequencer
        }
    }

    /// Runs `script` in Debian's python3 with the extension's path and `uri`
    /// as arguments; returns its status and its output (stdout and stderr).
    /// Call it off Swift's cooperative pool (`offPool`): it waits for the exit.
    static func python(_ script: String, _ uri: String) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", script, SQLiteToolsTests.extensionPath, uri]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try startProcess(process)
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }
}
