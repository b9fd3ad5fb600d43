import Foundation
import Synchronization
import SyndDB
import Testing

/// Every read transaction, on every kind of connection, sees exactly one
/// committed version, and never an older one than a commit acknowledged before
/// it began: a model check with a bank invariant, whatever the writer's locking
/// and journal modes.
@Suite struct ReadConsistencyTests {
    static let accounts = 24
    static let initialBalance = 1000

    /// Read-only readers in other processes (Debian's python3 with the
    /// extension, some with a tiny page cache so SQLite re-reads pages mid
    /// transaction) and threads of this process (the Swift API), while a writer
    /// commits transfers between accounts that sit on different pages.
    @Test(arguments: [("NORMAL", "MEMORY"), ("EXCLUSIVE", "MEMORY"), ("EXCLUSIVE", "DELETE"), ("NORMAL", "TRUNCATE")])
    func readersNeverSeeAMixedOrStaleVersion(lockingMode: String, journalMode: String) async throws {
        let dir = TemporaryDirectory()
        let sequencer = try await offPool { try SequencerProcess(directory: dir.path + "/seq") }
        let url = sequencer.url
        let name = uniqueName("bank")
        let stopFile = dir.path + "/stop"
        try await offPool {
            var options = DatabaseOptions()
            options.pageSize = 4096
            options.journalMode = journalMode
            let writer = try Database.open(name, sequencer: url, options: options)
            try writer.execute("PRAGMA locking_mode=\(lockingMode)")
            // ~1.5 KiB per row: two accounts a page, so a transfer touches two pages.
            try writer.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, pad BLOB)")
            try writer.execute("CREATE TABLE meta(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
            try writer.transaction {
                for id in 1...Self.accounts {
                    try writer.query("INSERT INTO accounts VALUES (?, ?, zeroblob(1500))", [id, Self.initialBalance])
                }
                try writer.execute("INSERT INTO meta VALUES (1, 0)")
            }

            // Readers in other processes.
            let script = dir.path + "/reader.py"
            try Self.readerScript.write(toFile: script, atomically: true, encoding: .utf8)
            var pythons: [Process] = []
            // Readers stop when the stop file appears: on every way out of this test.
            defer {
                FileManager.default.createFile(atPath: stopFile, contents: nil)
                for process in pythons where process.isRunning {
                    process.terminate()
                    process.waitUntilExit()
                }
            }
            for p in 0..<2 {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
                process.arguments = [script, SQLiteToolsTests.extensionPath, url, name, dir.path + "/py\(p)", stopFile, "3"]
                process.standardError = FileHandle(forWritingAtPath: "/dev/null")
                try startProcess(process)
                pythons.append(process)
            }
            // Readers in this process.
            let swiftLines = Mutex<[String]>([])
            let running = Atomic<Int>(0)
            for t in 0..<2 {
                running.add(1, ordering: .sequentiallyConsistent)
                Thread.detachNewThread {
                    defer { running.subtract(1, ordering: .sequentiallyConsistent) }
                    var readOnly = DatabaseOptions()
                    readOnly.readOnly = true
                    guard let reader = try? Database.open(name, sequencer: url, options: readOnly) else {
                        swiftLines.withLock { $0.append("error open") }
                        return
                    }
                    if t == 1 { try? reader.execute("PRAGMA cache_size=2") }
                    var lines: [String] = []
                    while !FileManager.default.fileExists(atPath: stopFile) {
                        let start = Self.monotonicNanoseconds()
                        do {
                            try reader.execute("BEGIN")
                            let sums = try reader.query("SELECT sum(balance), count(*) FROM accounts")
                            let n = try reader.scalar("SELECT n FROM meta")
                            try reader.execute("COMMIT")
                            lines.append("\(start) \(n?.int64 ?? -1) \(sums[0][0].int64 ?? -1) \(sums[0][1].int64 ?? -1)")
                        } catch {
                            lines.append("error \(error)")
                            try? reader.execute("ROLLBACK")
                        }
                    }
                    swiftLines.withLock { $0 += lines }
                }
            }

            // The writer: transfers, each acknowledged at a known instant.
            usleep(300_000)
            var acks: [(at: UInt64, n: Int64)] = []
            var rng = SystemRandomNumberGenerator()
            // Five seconds, and at least 30 transfers: a machine busy with the
            // rest of a parallel run may give the writer little of its time.
            let end = Self.monotonicNanoseconds() + 5_000_000_000
            let latest = end + 55_000_000_000
            while Self.monotonicNanoseconds() < end || (acks.count < 30 && Self.monotonicNanoseconds() < latest) {
                let a = Int.random(in: 1...Self.accounts, using: &rng)
                let to = Int.random(in: 1...Self.accounts, using: &rng)
                guard to != a else { continue }
                let amount = Int.random(in: 1...50, using: &rng)
                try writer.transaction {
                    try writer.query("UPDATE accounts SET balance = balance - ? WHERE id = ?", [amount, a])
                    try writer.query("UPDATE accounts SET balance = balance + ? WHERE id = ?", [amount, to])
                    try writer.execute("UPDATE meta SET n = n + 1")
                }
                let n = try writer.scalar("SELECT n FROM meta")?.int64 ?? -1
                acks.append((Self.monotonicNanoseconds(), n))
            }
            usleep(300_000)
            FileManager.default.createFile(atPath: stopFile, contents: nil)
            for process in pythons { process.waitUntilExit() }
            while running.load(ordering: .sequentiallyConsistent) > 0 { usleep(10_000) }

            var lines = swiftLines.withLock { $0 }
            for p in 0..<2 {
                for t in 0..<3 {
                    let text = (try? String(contentsOfFile: dir.path + "/py\(p).\(t)", encoding: .utf8)) ?? "error missing output of python reader \(p).\(t)"
                    lines += text.split(separator: "\n").map(String.init)
                }
            }
            let report = Self.check(lines, acks: acks)
            print("read consistency (\(lockingMode)/\(journalMode)): \(acks.count) transfers, \(report.reads) read transactions, \(report.anomalies.count) anomalies; writer: \(writer.statistics)")
            #expect(acks.count > 10, "the writer committed only \(acks.count) transfers")
            #expect(report.reads > 100, "only \(report.reads) read transactions")
            #expect(report.anomalies.isEmpty, "\(report.anomalies.count) anomalies in \(report.reads) reads (\(lockingMode)/\(journalMode)), e.g. \(report.anomalies.prefix(5))")
            _ = sequencer
        }
    }

    /// Mixed reads break the total; stale reads show a counter older than a
    /// transfer acknowledged before the read began.
    static func check(_ lines: [String], acks: [(at: UInt64, n: Int64)]) -> (reads: Int, anomalies: [String]) {
        var anomalies: [String] = []
        var reads = 0
        for line in lines {
            let f = line.split(separator: " ")
            guard f.count == 4, f[0] != "error", let start = UInt64(f[0]), let n = Int64(f[1]), let total = Int(f[2]), let count = Int(f[3]) else {
                anomalies.append("reader failed: \(line)")
                continue
            }
            reads += 1
            if total != accounts * initialBalance || count != accounts {
                anomalies.append("mixed: total \(total) over \(count) accounts at n=\(n)")
            }
            // The newest acknowledgement strictly before the read began.
            var lo = 0, hi = acks.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if acks[mid].at < start { lo = mid + 1 } else { hi = mid }
            }
            if lo > 0, n < acks[lo - 1].n {
                anomalies.append("stale: saw n=\(n) after n=\(acks[lo - 1].n) was acknowledged")
            }
        }
        return (reads, anomalies)
    }

    static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Reader threads in a python3 process: one line per read transaction,
    /// "start_ns n total count", the start on the same monotonic clock.
    static let readerScript = """
        import os, sqlite3, sys, threading, time
        ext, url, name, out, stop, threads = sys.argv[1:7]
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(ext)
        def read(index):
            lines = []
            try:
                con = sqlite3.connect(f"file:{name}?vfs=synddb&sequencer={url}&mode=ro", uri=True,
                                      isolation_level=None, check_same_thread=False)
                if index % 2 == 1:
                    con.execute("PRAGMA cache_size=2")
                while not os.path.exists(stop):
                    start = time.monotonic_ns()
                    try:
                        con.execute("BEGIN")
                        total, count = con.execute("SELECT sum(balance), count(*) FROM accounts").fetchone()
                        n = con.execute("SELECT n FROM meta").fetchone()[0]
                        con.execute("COMMIT")
                        lines.append(f"{start} {n} {total} {count}")
                    except Exception as e:
                        lines.append(f"error {e}")
                        try: con.execute("ROLLBACK")
                        except Exception: pass
            except Exception as e:
                lines.append(f"error {e}")
            with open(f"{out}.{index}", "w") as f:
                f.write("\\n".join(lines) + "\\n")
        ts = [threading.Thread(target=read, args=(i,)) for i in range(int(threads))]
        for t in ts: t.start()
        for t in ts: t.join()
        """
}
