import ArgumentParser
import Dispatch
import Foundation
import SyndClient
import SyndDB
import SyndSQLite
import SyndSequencer
import SyndStorage

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure commit and read latency through the VFS, next to local SQLite with the same durability.",
        discussion: """
            Baseline: a local SQLite file with journal_mode=WAL and synchronous=FULL (one fsync per commit).
            SyndDB: the same statements through the synddb VFS against a sequencer on loopback,
            whose store fsyncs every commit before acknowledging it.
            The many-writer workloads run writer processes (this executable, as hidden workers)
            on one database: lease handover latency between two of them, and the commits per
            second of 2, 4 and 8 processes alternating writes.
            """)

    @Option(help: "Transactions per workload.")
    var transactions: Int = 500

    @Option(help: "Sequencer URL; without it an embedded sequencer runs in this process.")
    var sequencer: String?

    @Option(help: "Also write the report (Markdown) to this file.")
    var output: String?

    @Option(help: "Which workloads: all, single (one connection) or writers (many writer processes).")
    var workloads: String = "all"

    @Option(help: "Lease handovers between two writer processes.")
    var handovers: Int = 300

    @Option(help: "Writer process counts of the throughput workload, comma-separated.")
    var writerProcesses: String = "2,4,8"

    @Option(help: "Seconds each throughput workload runs.")
    var writerSeconds: Double = 5

    @Option(help: "Milliseconds each writer process waits after each commit, outside any transaction (0: the next BEGIN at once).")
    var writerThinkMs: Double = 0

    // A writer process of the many-writer workloads (BenchWriters), driven over stdin and stdout.
    @Option(help: .private) var worker: String?
    @Option(help: .private) var workerId: Int = 0
    @Option(help: .private) var workerLocal: String?
    @Option(help: .private) var workerDb: String?

    func validate() throws {
        guard ["all", "single", "writers"].contains(workloads) else { throw ValidationError("--workloads all, single or writers") }
        guard transactions > 0, handovers > 0, writerSeconds > 0, writerThinkMs >= 0, !processCounts.isEmpty, processCounts.allSatisfy({ $0 >= 1 }) else {
            throw ValidationError("--transactions, --handovers, --writer-seconds and --writer-processes must be positive")
        }
    }

    var processCounts: [Int] { writerProcesses.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    func run() async throws {
        if let worker {
            let target: BenchWriters.Target
            if let workerLocal {
                target = .local(path: workerLocal)
            } else if let workerDb, let sequencer {
                target = .synd(name: workerDb, url: sequencer)
            } else {
                throw ValidationError("--worker needs --worker-local PATH or --worker-db NAME --sequencer URL")
            }
            BenchWriters.runWorker(role: worker, id: workerId, target: target)
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("synd-bench-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var embedded: SequencerServer?
        let url: String
        if let sequencer {
            url = sequencer
        } else {
            embedded = try await SequencerServer.start(store: StoreConfiguration(directory: dir + "/sequencer"))
            url = embedded!.url
        }
        let n = transactions
        let (single, writers) = (workloads != "writers", workloads != "single")
        let (handovers, processes, seconds, thinkMs) = (handovers, processCounts, writerSeconds, writerThinkMs)
        let result: Result<String, any Error> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: Result {
                    var sections: [String] = []
                    if single { sections.append(try Self.measure(n: n, dir: dir, url: url)) }
                    if writers {
                        let results = try BenchWriters.measure(dir: dir, url: url, handovers: handovers, processes: processes, seconds: seconds, thinkMs: thinkMs)
                        sections.append(BenchWriters.report(results).joined(separator: "\n"))
                    }
                    return sections.joined(separator: "\n\n")
                })
            }
        }
        await embedded?.stop()
        let report = try result.get()
        print(report)
        if let output { try report.write(toFile: output, atomically: true, encoding: .utf8) }
    }

    struct Figures {
        var samples: [Double]  // microseconds
        var p50: Double { percentile(0.50) }
        var p99: Double { percentile(0.99) }
        var perSecond: Double { Double(samples.count) / (samples.reduce(0, +) / 1e6) }
        func percentile(_ q: Double) -> Double {
            let s = samples.sorted()
            return s[min(s.count - 1, Int(Double(s.count - 1) * q + 0.5))]
        }
    }

    static func time(_ n: Int, _ body: (Int) throws -> Void) rethrows -> Figures {
        var samples: [Double] = []
        samples.reserveCapacity(n)
        let clock = ContinuousClock()
        for i in 0..<n {
            let d = try clock.measure { try body(i) }
            let (s, atto) = d.components
            samples.append(Double(s) * 1e6 + Double(atto) / 1e12)
        }
        return Figures(samples: samples)
    }

    /// Runs the three workloads on one connection; the schema is made first.
    static func workloads(_ connection: Connection, n: Int) throws -> [String: Figures] {
        try connection.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT)")
        let insert = try connection.prepare("INSERT INTO t(k, v) VALUES (?, ?)")
        let payload = String(repeating: "x", count: 100)
        // Warm-up: fill a little and settle caches.
        for i in 0..<20 { try connection.transaction { _ = try insert.run([i, payload]) } }
        var out: [String: Figures] = [:]
        out["commit-1"] = try time(n) { i in
            try connection.transaction { _ = try insert.run([i, payload]) }
        }
        out["commit-100"] = try time(n) { i in
            try connection.transaction { for j in 0..<100 { _ = try insert.run([i * 100 + j, payload]) } }
        }
        let point = try connection.prepare("SELECT v FROM t WHERE id = ?")
        let maxID = try connection.scalar("SELECT max(id) FROM t")?.int64 ?? 1
        out["read"] = try time(n) { i in
            _ = try point.run([Int64(i * 7919) % maxID + 1])
        }
        return out
    }

    /// "x86_64, 2 cores"
    static func machine() -> String {
        var uts = utsname()
        uname(&uts)
        let machine = withUnsafeBytes(of: uts.machine) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        return "\(machine), \(ProcessInfo.processInfo.activeProcessorCount) cores"
    }

    static func measure(n: Int, dir: String, url: String) throws -> String {
        let local = try Connection(path: dir + "/local.sqlite")
        try local.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL")
        let baseline = try workloads(local, n: n)

        let db = try Database.open("bench-\(getpid())", sequencer: url)
        let before = db.statistics
        let synd = try workloads(db.connection, n: n)
        let after = db.statistics

        // The cost of sealing each transaction's changeset into its commit:
        // the same transactions with and without capture, interleaved so that
        // machine noise falls on both alike.
        var noCapture = DatabaseOptions()
        noCapture.captureChangesets = false
        let plain = try Database.open("bench-nocapture-\(getpid())", sequencer: url, options: noCapture)
        let captured = try Database.open("bench-capture-\(getpid())", sequencer: url)
        var capture: [String: (without: Figures, with: Figures)] = [:]
        for rows in [1, 100] {
            var a: [Double] = [], b: [Double] = []
            let statements = try [plain, captured].map { db in
                try db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT)")
                return try db.prepare("INSERT INTO t(k, v) VALUES (?, ?)")
            }
            let payload = String(repeating: "x", count: 100)
            for i in 0..<n {
                for (index, db) in [plain, captured].enumerated() {
                    let f = try time(1) { _ in
                        try db.transaction { for j in 0..<rows { _ = try statements[index].run([i * rows + j, payload]) } }
                    }
                    if index == 0 { a += f.samples } else { b += f.samples }
                }
            }
            capture["commit-\(rows)"] = (Figures(samples: a), Figures(samples: b))
        }

        // The floor of any remote commit: one empty gRPC round trip.
        let client = try SequencerClient(url: url)
        _ = try client.capabilities()
        let rpc = try time(n) { _ in _ = try client.capabilities() }

        func f(_ x: Double) -> String { String(format: "%.0f", x) }
        func r(_ x: Double) -> String { String(format: "%.2fx", x) }
        var lines = [
            "## synd bench (\(n) transactions per workload)",
            "",
            "Machine: \(machine()); sequencer \(url) (loopback).",
            "Baseline: local SQLite file, journal_mode=WAL, synchronous=FULL. Latencies in microseconds.",
            "",
            "| workload | local p50 | local p99 | local tx/s | SyndDB p50 | SyndDB p99 | SyndDB tx/s | p50 ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for (key, label) in [("commit-1", "commit, 1 row"), ("commit-100", "commit, 100 rows"), ("read", "read transaction, warm writer")] {
            let b = baseline[key]!, s = synd[key]!
            lines.append("| \(label) | \(f(b.p50)) | \(f(b.p99)) | \(f(b.perSecond)) | \(f(s.p50)) | \(f(s.p99)) | \(f(s.perSecond)) | \(r(s.p50 / b.p50)) |")
        }
        lines.append("| empty gRPC round trip (GetCapabilities) | | | | \(f(rpc.p50)) | \(f(rpc.p99)) | \(f(rpc.perSecond)) | |")
        lines.append("")
        lines.append("Changeset capture on the commit path (SyndDB with capture vs. without, same run):")
        lines.append("")
        lines.append("| workload | without p50 | with p50 | ratio |")
        lines.append("|---|---:|---:|---:|")
        for (key, label) in [("commit-1", "commit, 1 row"), ("commit-100", "commit, 100 rows")] {
            let (a, b) = capture[key]!
            lines.append("| \(label) | \(f(a.p50)) | \(f(b.p50)) | \(r(b.p50 / a.p50)) |")
        }
        lines.append("")
        lines.append("Requests to the sequencer during the run: \(after.requests - before.requests) for \(after.commits - before.commits) commits and \(n) reads.")
        return lines.joined(separator: "\n")
    }
}
