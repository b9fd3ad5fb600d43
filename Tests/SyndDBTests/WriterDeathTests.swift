import Foundation
import Synchronization
import SyndClient
import SyndDB
import SyndProtocol
import SyndSQLite
import Testing

/// A writer that dies holding the lease (kill -9) does not block the next one:
/// its lease is held by a HoldLease call on its connection, and the sequencer
/// releases it when that connection closes. A writer that is only paused
/// (SIGSTOP) keeps its connection, so its lease lapses by the TTL as before,
/// and fencing refuses its commit when it wakes if another writer came in.
///
/// Real parts: a `synd sequencer` process and writers in Debian's python3 with
/// libsyndvfs.so (scripts/build-sqlite-tools.sh), killed and stopped with signals.
@Suite struct WriterDeathTests {
    static let extensionPath = SQLiteToolsTests.extensionPath

    let dir = TemporaryDirectory()
    let sequencer: SequencerProcess

    init() async throws {
        let path = dir.path + "/seq"
        sequencer = try await offPool { try SequencerProcess(directory: path) }
        guard FileManager.default.fileExists(atPath: Self.extensionPath + ".so") else {
            throw TestFailure("\(Self.extensionPath).so is missing: run scripts/build-sqlite-tools.sh (scripts/test.sh does)")
        }
    }

    /// kill -9 a python writer while it holds the lease inside a write
    /// transaction (default TTL 10 s): a writer through the Swift API that was
    /// waiting in its busy handler commits within about a second of the kill,
    /// and so does a restarted python process after a second kill.
    @Test func aKilledWritersLeaseIsReleasedWhenItsConnectionCloses() async throws {
        let url = sequencer.url
        let name = uniqueName("killed")
        try await offPool {
            let first = try PythonWriter(extensionPath: Self.extensionPath, uri: "file:\(name)?vfs=synddb&sequencer=\(url)")
            try first.expectOK("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            try first.expectOK("INSERT INTO t(v) VALUES ('first')")
            try first.expectOK("BEGIN IMMEDIATE")
            try first.expectOK("INSERT INTO t(v) VALUES ('never committed')")
            // It holds the lease in a transaction: a writer without a busy timeout is refused at once.
            let impatient = try Database.open(name, sequencer: url)
            #expect {
                try impatient.execute("INSERT INTO t(v) VALUES ('impatient')")
            } throws: { error in
                guard let e = error as? SQLiteError else { return false }
                return e.code == 5 && e.message.contains("is locked")
            }
            var patient = DatabaseOptions()
            patient.busyTimeoutMs = 15_000
            let db = try Database.open(name, sequencer: url, options: patient)
            let killed = Mutex<ContinuousClock.Instant?>(nil)
            // The kill lands while the Swift writer is already waiting.
            Thread.detachNewThread {
                usleep(300_000)
                killed.withLock { $0 = .now }
                first.kill9()
            }
            try db.execute("INSERT INTO t(v) VALUES ('after kill')")
            let took = ContinuousClock.now - killed.withLock { $0 ?? .now }
            print("kill -9 of a python writer inside a transaction (lease TTL 10 s): the waiting Swift writer committed \(took) after the kill")
            #expect(took < .milliseconds(1500), "the next writer waited \(took) after the kill")
            #expect(try db.query("SELECT v FROM t ORDER BY id") == [[.text("first")], [.text("after kill")]])

            // A restarted application: another python process, after a second kill.
            let second = try PythonWriter(extensionPath: Self.extensionPath, uri: "file:\(name)?vfs=synddb&sequencer=\(url)")
            try second.expectOK("PRAGMA busy_timeout=15000")
            try second.expectOK("INSERT INTO t(v) VALUES ('second')")
            try second.expectOK("BEGIN IMMEDIATE")
            let killedAgain = ContinuousClock.now
            second.kill9()
            let third = try PythonWriter(extensionPath: Self.extensionPath, uri: "file:\(name)?vfs=synddb&sequencer=\(url)")
            try third.expectOK("PRAGMA busy_timeout=15000")
            try third.expectOK("INSERT INTO t(v) VALUES ('restarted')")
            let tookPython = ContinuousClock.now - killedAgain
            print("kill -9 of a python writer, then a new python process: committed \(tookPython) after the kill (process start included)")
            #expect(tookPython < .seconds(3), "the restarted writer waited \(tookPython)")
            #expect(try third.rows("SELECT v FROM t ORDER BY id") == "[('first',), ('after kill',), ('second',), ('restarted',)]")
            try third.expectOK("PRAGMA integrity_check")
            third.close()
        }
    }

    /// SIGSTOP keeps the connection open: the lease is not released, another
    /// writer gets SQLITE_BUSY until the TTL passes (its busy handler waits for
    /// it), and after SIGCONT the paused writer's COMMIT fails cleanly (another
    /// writer took the lease and wrote), it reads the other writer's row, not
    /// its old cache, and its next write builds on that row.
    @Test func aPausedWriterKeepsItsLeaseUntilTheTTLAndIsFencedAfterwards() async throws {
        let url = sequencer.url
        let name = uniqueName("paused")
        // The last renewal can be a third of the TTL before the pause, so the
        // lease may lapse two thirds of the TTL after it. The early attempt below
        // (an open and one lock_wait_ms of 500 ms) must end before that even when
        // the full suite loads both cores: 1.5 s left it too little room.
        let ttlMs = 3000
        try await offPool {
            let paused = try PythonWriter(extensionPath: Self.extensionPath, uri: "file:\(name)?vfs=synddb&sequencer=\(url)&lease_ttl_ms=\(ttlMs)")
            try paused.expectOK("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            try paused.expectOK("INSERT INTO t(v) VALUES ('before pause')")
            try paused.expectOK("BEGIN")
            try paused.expectOK("INSERT INTO t(v) VALUES ('paused')")
            paused.stop()
            let stopped = ContinuousClock.now
            defer { paused.resume() }

            usleep(200_000)
            let other = try Database.open(name, sequencer: url)
            do {
                try other.execute("INSERT INTO t(v) VALUES ('too early')")
                Issue.record("a paused writer's lease was released before its TTL")
            } catch let error as SQLiteError {
                #expect(error.code == 5 && error.message.contains("is locked"), "\(error)")
            }
            try other.execute("PRAGMA busy_timeout=15000")
            try other.execute("INSERT INTO t(v) VALUES ('other')")
            let waited = ContinuousClock.now - stopped
            print("SIGSTOP of a writer (lease TTL \(ttlMs) ms): the next writer (busy timeout) committed \(waited) after the pause")
            // The last renewal was at most a third of the TTL before the pause.
            #expect(waited >= .milliseconds(ttlMs * 2 / 3 - 100), "the lease of a paused writer was released after \(waited)")
            #expect(waited < .milliseconds(ttlMs + 2000))

            paused.resume()
            let commit = try paused.send("COMMIT")
            #expect(commit.hasPrefix("error"), "the paused writer's COMMIT went through: \(commit)")
            _ = try paused.send("ROLLBACK")  // SQLite may have rolled back already
            // Its next read shows the other writer's row, not its old cache.
            #expect(try paused.rows("SELECT v FROM t ORDER BY id") == "[('before pause',), ('other',)]")
            // Its next write waits for the lease (the idle other writer hands it
            // over) and builds on the other writer's row.
            try paused.expectOK("PRAGMA busy_timeout=15000")
            try paused.expectOK("INSERT INTO t(v) VALUES ('late')")
            #expect(try other.query("SELECT v FROM t ORDER BY id") == [[.text("before pause")], [.text("other")], [.text("late")]])
            paused.close()
        }
    }

    /// A paused writer whose lease lapsed while nobody else wrote takes the
    /// lease again at COMMIT, and its transaction commits.
    @Test func aPausedWriterCommitsAfterALapseIfNobodyWrote() async throws {
        let url = sequencer.url
        let name = uniqueName("lapsed")
        try await offPool {
            let writer = try PythonWriter(extensionPath: Self.extensionPath, uri: "file:\(name)?vfs=synddb&sequencer=\(url)&lease_ttl_ms=1500")
            try writer.expectOK("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            try writer.expectOK("BEGIN")
            try writer.expectOK("INSERT INTO t(v) VALUES ('across a pause')")
            writer.stop()
            usleep(2_000_000)  // past the TTL; the TTL leaves a loaded machine room for the COMMIT
            writer.resume()
            try writer.expectOK("COMMIT")
            var ro = DatabaseOptions()
            ro.readOnly = true
            let reader = try Database.open(name, sequencer: url, options: ro)
            #expect(try reader.query("SELECT v FROM t") == [[.text("across a pause")]])
            writer.close()
        }
    }

    /// A network cut closes the writer's connections: the sequencer releases
    /// its lease at once and another writer takes it and commits. The first
    /// writer's next read transaction must not come from its cache (the lease
    /// that kept it valid is gone), although its renewal is seconds away.
    @Test func aWriterWhoseConnectionsWereCutReadsTheTakeoverNotItsCache() async throws {
        let url = sequencer.url
        let name = uniqueName("cut")
        let proxy = try CuttingProxy(upstreamPort: sequencer.port)
        try await offPool {
            let a = try Database.open(name, sequencer: proxy.url)  // lease TTL 10 s: renewals every 3.3 s
            try a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, x); INSERT INTO t VALUES (1, 'before')")
            #expect(try a.query("SELECT x FROM t") == [[.text("before")]])  // warm: from the cache

            proxy.cutAll()
            let cut = ContinuousClock.now
            // The sequencer released a's lease when its hold connection closed:
            // b takes it without waiting out the TTL.
            var options = DatabaseOptions()
            options.busyTimeoutMs = 15_000
            var b: Database? = try Database.open(name, sequencer: url, options: options)
            try b!.execute("UPDATE t SET x = 'after takeover'")
            let took = ContinuousClock.now - cut
            #expect(took < .seconds(5), "the takeover waited \(took)")
            #expect(try a.query("SELECT x FROM t") == [[.text("after takeover")]], "read \(took) after the cut")
            // Its next write takes the lease again (b is idle and hands it over)
            // and builds on b's row.
            try a.execute("PRAGMA busy_timeout=15000")
            try a.execute("UPDATE t SET x = x || ', then a again'")
            b = nil
            #expect(try a.query("SELECT x FROM t") == [[.text("after takeover, then a again")]])
            var readOnly = DatabaseOptions()
            readOnly.readOnly = true
            #expect(try Database.open(name, sequencer: url, options: readOnly).query("SELECT x FROM t") == [[.text("after takeover, then a again")]])
        }
    }

    /// The protocol, against a sequencer in this process: a hold renews
    /// nothing, is refused for a lease the caller does not hold, ends when the
    /// lease lapses and moves, and releases the lease when its connection closes.
    @Test func holdLeaseSemantics() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("hold")
            let setup = try SequencerClient(url: server.url)
            _ = try setup.open(name, create: true)
            func acquire(_ client: SequencerClient, _ holder: String, ttl: UInt32 = 10_000) throws(SequencerError) -> Lease {
                var r = AcquireLeaseRequest()
                r.database = name
                r.holder = holder
                r.ttlMs = ttl
                return try client.acquireLease(r)
            }
            func hold(_ client: SequencerClient, _ holder: String, _ epoch: UInt64, _ ends: Ends) throws(SequencerError) {
                var r = HoldLeaseRequest()
                r.database = name
                r.holder = holder
                r.epoch = epoch
                _ = try client.holdLease(r) { end in ends.list.withLock { $0.append(end) } }
            }
            /// Reads the connection (a cheap request) until `ends` has an entry.
            func awaitEnd(_ client: SequencerClient, _ ends: Ends) throws -> SequencerError? {
                for _ in 0..<40 {
                    if let end = ends.list.withLock({ $0.first }) { return end }
                    _ = try client.capabilities()
                    usleep(50_000)
                }
                return nil
            }
            #expect(try setup.capabilities().features.contains("lease-hold"))

            // Refused for an epoch the caller does not hold.
            var a: SequencerClient? = try SequencerClient(url: server.url)
            // A TTL far longer than the wait below: a release seen here came from the closed connection.
            let lease = try acquire(a!, "a", ttl: 120_000)
            let refused = Ends()
            try hold(a!, "a", lease.epoch + 1, refused)
            #expect(try awaitEnd(a!, refused)?.code == .failedPrecondition)

            // Held: another holder is refused; closing the connection releases it long before its TTL.
            let ends = Ends()
            try hold(a!, "a", lease.epoch, ends)
            _ = try a!.capabilities()
            #expect(throws: SequencerError.self) { try acquire(setup, "b") }
            let closed = ContinuousClock.now
            a = nil
            var b: Lease?
            while b == nil, ContinuousClock.now - closed < .seconds(30) {
                b = try? acquire(setup, "b", ttl: 300)
                if b == nil { usleep(10_000) }
            }
            // Not a timing bound (loaded CI machines stall for seconds): the TTL is 120 s, so any release here is the close.
            #expect(b != nil, "not released \(ContinuousClock.now - closed) after its connection closed")
            print("holdLeaseSemantics: released \(ContinuousClock.now - closed) after the connection closed")
            // The client learned that its hold ended with the connection, before the socket closed.
            #expect(ends.list.withLock { $0.count == 1 && $0[0].isTransport })

            // A hold renews nothing: b's lease lapses with the hold open; the hold then ends.
            let c = try SequencerClient(url: server.url)
            let bEnds = Ends()
            try hold(c, "b", b!.epoch, bEnds)
            usleep(500_000)
            let taken = try acquire(setup, "c")
            #expect(taken.epoch > b!.epoch)
            let end = try awaitEnd(c, bEnds)
            #expect(end?.code == .failedPrecondition, "\(String(describing: end))")
            #expect(throws: SequencerError.self) { try acquire(setup, "d") }  // c's lease stands
        }
    }
}

/// How HoldLease calls ended, in order.
final class Ends: Sendable {
    let list = Mutex<[SequencerError]>([])
}

/// A python3 process with one SQLite connection through libsyndvfs.so that runs
/// the statements it is sent, one per line, and answers each with one line:
/// `ok <rows>` or `error <message>`. Its busy timeout is 0 (Python's default
/// would retry a refused lock for 5 s).
final class PythonWriter: @unchecked Sendable {
    // Safe: `lines` is guarded by `condition`; the rest is used by the test's thread.
    private let process = Process()
    private let input = Pipe()
    private let condition = NSCondition()
    private var lines: [String] = []
    private var stderrText = ""
    private var eof = false
    /// How many times it tried to open the database (see `retryOpenForSeconds`).
    private(set) var openAttempts = 0

    static let script = """
        import sqlite3, sys, time
        extension, uri, retry = sys.argv[1], sys.argv[2], float(sys.argv[3])
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(extension)
        start, attempts = time.monotonic(), 0
        while True:
            attempts += 1
            try:
                db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=0)
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() - start > retry:
                    print("error", e, flush=True)
                    sys.exit(1)
                time.sleep(0.02)
        print("open", attempts, flush=True)
        for line in sys.stdin:
            try:
                print("ok", db.execute(line).fetchall(), flush=True)
            except Exception as e:
                print("error", type(e).__name__, e, flush=True)
        """

    /// Starts the process and waits until it has opened `uri` (read-write: it
    /// takes the lease), retrying SQLITE_BUSY for up to `retryOpenForSeconds`.
    init(extensionPath: String, uri: String, retryOpenForSeconds: Double = 0) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", Self.script, extensionPath, uri, String(retryOpenForSeconds)]
        let output = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        try startProcess(process)
        Thread.detachNewThread { [self] in
            let handle = output.fileHandleForReading
            var pending = Data()
            while true {
                let chunk = handle.availableData
                condition.lock()
                if chunk.isEmpty {
                    eof = true
                    condition.broadcast()
                    condition.unlock()
                    return
                }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    lines.append(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                    pending = Data(pending[(newline + 1)...])
                }
                condition.broadcast()
                condition.unlock()
            }
        }
        Thread.detachNewThread { [self] in
            let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            condition.lock()
            stderrText = text
            condition.unlock()
        }
        let first = try nextLine(timeout: 30)
        guard first.hasPrefix("open ") else {
            throw TestFailure("python writer did not open \(uri): \(first) \(stderr)")
        }
        openAttempts = Int(first.dropFirst(5)) ?? 0
    }

    private var stderr: String {
        condition.lock()
        defer { condition.unlock() }
        return stderrText
    }

    private func nextLine(timeout: Double) throws -> String {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while lines.isEmpty {
            if eof { throw TestFailure("python writer exited") }
            guard condition.wait(until: deadline) else { throw TestFailure("python writer did not answer within \(timeout) s") }
        }
        return lines.removeFirst()
    }

    /// Runs one statement; returns the answer line.
    @discardableResult
    func send(_ sql: String, timeout: Double = 30) throws -> String {
        input.fileHandleForWriting.write(Data((sql + "\n").utf8))
        return try nextLine(timeout: timeout)
    }

    func expectOK(_ sql: String) throws {
        let answer = try send(sql)
        guard answer.hasPrefix("ok") else { throw TestFailure("\(sql): \(answer)") }
    }

    /// The rows of a query as Python prints them.
    func rows(_ sql: String) throws -> String {
        let answer = try send(sql)
        guard answer.hasPrefix("ok ") else { throw TestFailure("\(sql): \(answer)") }
        return String(answer.dropFirst(3))
    }

    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitForExit()
    }

    func stop() { kill(process.processIdentifier, SIGSTOP) }
    func resume() { kill(process.processIdentifier, SIGCONT) }

    /// Ends its input: it closes its database (releasing the lease) and exits.
    func close() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }

    deinit {
        kill(process.processIdentifier, SIGKILL)
        process.waitForExit()
    }
}
