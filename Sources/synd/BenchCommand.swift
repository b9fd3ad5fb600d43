import ArgumentParser
import Dispatch
import Foundation
import SyndClient
import SyndDB
import SyndSQLite

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure SyndDB next to local SQLite with the same durability (and a one-node dqlite).",
        discussion: """
            Baseline: local SQLite files with journal_mode=WAL and synchronous=FULL (one fsync per commit).
            SyndDB: the same statements through the synddb VFS against a sequencer on loopback,
            whose store fsyncs every commit before acknowledging it. Without --sequencer each
            workload starts a sequencer process of its own and reads its CPU time, memory and
            data folder from /proc and the disk.
            Workloads: single (one connection: 1-row and 100-row commits, warm reads, changeset
            capture, dqlite's kvwrite with the sequencer's CPU per commit), dqlite (dqlite-benchmark,
            one node, through scripts/bench-dqlite.sh, when installed), writers (processes on one
            database: lease handovers, processes alternating writes), databases (16 and 64 processes,
            each on its own database), bulk (a bulk load, a cold full scan, the sequencer's disk use),
            memory (the peak RSS of one large transaction, client and sequencer), transfer (synd import
            and export of a SQLite file next to sqlite3 .backup of it), followers (visibility lag on a follower
            in another process, and its read transactions next to local SQLite).
            Writer processes are this executable, started as hidden workers.
            """)

    @Option(help: "Transactions per single-connection workload (1-row commits included).")
    var transactions: Int = 1000

    @Option(help: "Sequencer URL; without it each workload starts its own sequencer process (synd sequencer --port 0).")
    var sequencer: String?

    @Option(help: "Also write the report (Markdown) to this file.")
    var output: String?

    @Option(help: "Which workloads, comma-separated: all, or any of single, dqlite, writers, databases, bulk, memory, transfer, followers, validation, postgres (PostgreSQL store: needs --postgres or SYNDDB_TEST_POSTGRES; part of all when one is given).")
    var workloads: String = "all"

    @Option(help: "Lease handovers between two writer processes.")
    var handovers: Int = 300

    @Option(help: "Writer process counts of the one-database throughput workload, comma-separated.")
    var writerProcesses: String = "2,4,8"

    @Option(help: "Seconds each throughput workload runs (writers and databases).")
    var writerSeconds: Double = 5

    @Option(help: "Milliseconds each writer process waits after each commit, outside any transaction (0: the next BEGIN at once).")
    var writerThinkMs: Double = 0

    @Option(help: "Bytes of the value of each 1-row commit (single, dqlite and databases workloads).")
    var valueBytes: Int = 1024

    @Option(help: "Writer process counts of the databases workload (each process on its own database), comma-separated.")
    var databaseWriters: String = "16,64"

    @Option(help: "Rounds of the databases workload, local SQLite and SyndDB alternating (medians are shown).")
    var rounds: Int = 1

    @Option(help: "Megabytes of the bulk load.")
    var bulkMb: Double = 200

    @Option(help: "Bytes of each row of the bulk load and of the large transaction.")
    var bulkRowBytes: Int = 1000

    @Option(help: "Rows per transaction of the bulk load.")
    var bulkRowsPerTransaction: Int = 2048

    @Option(help: "Cold full scans of the bulk-loaded database, each side (the median is shown).")
    var scans: Int = 3

    @Option(help: "Megabytes of the one large transaction of the memory workload.")
    var memoryMb: Double = 100

    @Option(help: "Megabytes of the SQLite file the transfer workload imports and exports.")
    var transferMb: Double = 50

    @Option(help: "Database sizes of the validation workload, in MB, comma-separated.")
    var validationMb: String = "10,1000"

    @Option(help: "Small commits the validation workload checks per round.")
    var validationCommits: Int = 2000

    @Option(help: "Seconds dqlite-benchmark runs.")
    var dqliteSeconds: Int = 5

    @Option(help: "Path of scripts/bench-dqlite.sh (default: found from the current folder or this executable).")
    var dqliteScript: String?

    @Flag(help: "Do not drop the OS page cache before each cold scan (it needs root, and slows everything else on the machine for a moment).")
    var keepOsCache = false

    // A writer process of the many-writer workloads (BenchWriters), driven over stdin and stdout.
    @Option(help: .private) var worker: String?
    @Option(help: .private) var workerId: Int = 0
    @Option(help: .private) var workerLocal: String?
    @Option(help: .private) var workerDb: String?

    static let workloadNames = ["single", "dqlite", "writers", "databases", "bulk", "memory", "transfer", "followers", "validation", "postgres"]

    /// The workloads asked for, in the order they run.
    var selected: Set<String> {
        let names = Set(workloads.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        // `all` includes the PostgreSQL workload when there is a PostgreSQL to run it on.
        return names.contains("all") ? Set(Self.workloadNames.filter { $0 != "postgres" || postgresURL != nil }) : names
    }

    @Option(help: "PostgreSQL URL for the postgres workload, whose user may create a database (the bench makes its own and drops it): e.g. what scripts/with-postgres.sh exports as SYNDDB_TEST_POSTGRES, the default.")
    var postgres: String?

    var postgresURL: String? { postgres ?? ProcessInfo.processInfo.environment["SYNDDB_TEST_POSTGRES"] }

    func validate() throws {
        let names = workloads.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !names.isEmpty, names.allSatisfy({ $0 == "all" || Self.workloadNames.contains($0) }) else {
            throw ValidationError("--workloads: all, or a comma-separated list of \(Self.workloadNames.joined(separator: ", "))")
        }
        guard transactions > 0, handovers > 0, writerSeconds > 0, writerThinkMs >= 0, !processCounts.isEmpty, processCounts.allSatisfy({ $0 >= 1 }) else {
            throw ValidationError("--transactions, --handovers, --writer-seconds and --writer-processes must be positive")
        }
        let sizes = validationMb.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !sizes.isEmpty, sizes.allSatisfy({ ($0 ?? 0) > 0 }), validationCommits > 0 else {
            throw ValidationError("--validation-mb takes positive sizes in MB, comma-separated, and --validation-commits a positive count")
        }
        guard valueBytes >= 2, !databaseCounts.isEmpty, databaseCounts.allSatisfy({ $0 >= 1 }), bulkMb > 0, bulkRowBytes > 0,
              bulkRowsPerTransaction > 0, scans > 0, rounds > 0, memoryMb > 0, dqliteSeconds > 0, transferMb > 0 else {
            throw ValidationError("--value-bytes (at least 2), --database-writers, --bulk-mb, --bulk-row-bytes, --bulk-rows-per-transaction, --scans, --rounds, --memory-mb, --dqlite-seconds and --transfer-mb must be positive")
        }
    }

    var processCounts: [Int] { writerProcesses.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
    var databaseCounts: [Int] { databaseWriters.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    var settings: BenchIssue10.Settings {
        BenchIssue10.Settings(
            transactions: transactions, valueBytes: valueBytes, databaseWriters: databaseCounts, seconds: writerSeconds, rounds: rounds,
            bulkBytes: Int64(bulkMb * 1e6), bulkRowBytes: bulkRowBytes, bulkRowsPerTransaction: bulkRowsPerTransaction, scans: scans,
            memoryBytes: Int64(memoryMb * 1e6), dqliteSeconds: dqliteSeconds, dqliteScript: dqliteScript, dropCaches: !keepOsCache)
    }

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
            if BenchLoadWorker.roles.contains(worker) { BenchLoadWorker.run(role: worker, id: workerId, target: target) }
            BenchWriters.runWorker(role: worker, id: workerId, target: target)
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("synd-bench-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let command = "synd " + CommandLine.arguments.dropFirst().joined(separator: " ")
        let (selected, given, n, settings) = (selected, sequencer, transactions, settings)
        let (handovers, processes, seconds, thinkMs) = (handovers, processCounts, writerSeconds, writerThinkMs)
        let (transferMb, bulkRowBytes, rounds) = (transferMb, bulkRowBytes, rounds)
        let validationSizes = validationMb.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
        let validationCommits = validationCommits
        let postgresURL = postgresURL
        if selected.contains("postgres"), postgresURL == nil {
            throw ValidationError("the postgres workload needs a PostgreSQL: --postgres URL, or run under scripts/with-postgres.sh")
        }
        let started = Date()
        let result: Result<String, any Error> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: Result {
                    signal(SIGPIPE, SIG_IGN)
                    /// A sequencer for one workload: the given one, or a fresh process stopped afterwards.
                    func withServer<T>(_ name: String, _ body: (BenchIssue10.Server) throws -> T) throws -> T {
                        if let given { return try body(BenchIssue10.Server(url: given, process: nil)) }
                        let process = try BenchSequencerProcess(dataDirectory: dir + "/sequencer-" + name, retain: nil)
                        defer { process.stop() }
                        do {
                            return try body(BenchIssue10.Server(url: process.url, process: process))
                        } catch {
                            // The sequencer's side of a failure: its log goes with the bench's folder.
                            let log = (try? String(contentsOfFile: process.logPath, encoding: .utf8)) ?? ""
                            let tail = log.split(separator: "\n").suffix(30).joined(separator: "\n")
                            throw BenchWriters.BenchError("\(error)\n--- the last lines of the sequencer's log (\(name)):\n\(tail)")
                        }
                    }
                    var issue10 = BenchIssue10.Results(settings: settings, sequencerURL: given)
                    var older: [String] = []
                    if selected.contains("single") {
                        try withServer("single") { server in
                            let (text, capture) = try Self.measure(n: n, dir: dir, url: server.url)
                            older.append(text)
                            issue10.capture = capture
                        }
                        issue10.commit = try withServer("commit") { try BenchIssue10.commit(settings, dir: dir, server: $0) }
                    }
                    if selected.contains("dqlite") {
                        issue10.dqlite = try BenchDqlite.run(script: settings.dqliteScript, directory: dir + "/dqlite", seconds: settings.dqliteSeconds, valueBytes: settings.valueBytes)
                    }
                    if selected.contains("writers") {
                        try withServer("writers") { server in
                            let results = try BenchWriters.measure(dir: dir, url: server.url, handovers: handovers, processes: processes, seconds: seconds, thinkMs: thinkMs)
                            older.append(BenchWriters.report(results).joined(separator: "\n"))
                        }
                    }
                    if selected.contains("databases") {
                        for count in settings.databaseWriters {
                            issue10.databases.append(try withServer("databases-\(count)") { try BenchIssue10.databases(settings, processes: count, dir: dir, server: $0) })
                        }
                    }
                    if selected.contains("bulk") {
                        issue10.bulk = try withServer("bulk") { try BenchIssue10.bulk(settings, dir: dir, server: $0) }
                    }
                    if selected.contains("memory") {
                        issue10.memory = try withServer("memory") { try BenchIssue10.memory(settings, dir: dir, server: $0) }
                    }
                    var sections: [String] = []
                    if !selected.isSubset(of: ["writers", "transfer", "followers", "validation", "postgres"]) {
                        sections.append(BenchIssue10.report(issue10, command: command, date: started).joined(separator: "\n"))
                    }
                    if selected.contains("transfer") {
                        let transfer = try withServer("transfer") { server in
                            try BenchTransfer.run(megabytes: transferMb, rowBytes: bulkRowBytes, rounds: rounds, dir: dir, url: server.url)
                        }
                        sections.append(BenchTransfer.report(transfer, command: command, date: started).joined(separator: "\n"))
                    }
                    if selected.contains("followers") {
                        let followers = try withServer("followers") { server in
                            try BenchFollowers.run(commits: max(50, n / 2), reads: n, dir: dir, url: server.url)
                        }
                        sections.append(BenchFollowers.report(followers, command: command, date: started).joined(separator: "\n"))
                    }
                    if selected.contains("postgres"), let postgresURL {
                        let count = settings.databaseWriters.first ?? 16
                        let results = try BenchPostgres.run(admin: postgresURL, settings: settings, processes: count, dir: dir)
                        sections.append(BenchPostgres.report(results, settings: settings, command: command, date: started).joined(separator: "\n"))
                    }
                    if selected.contains("validation") {
                        let cases = try withServer("validation") { server in
                            try BenchValidation.run(sizes: validationSizes, commits: validationCommits, rounds: rounds, dir: dir, url: server.url)
                        }
                        sections.append(BenchValidation.report(cases, commits: validationCommits, command: command, date: started).joined(separator: "\n"))
                    }
                    return (sections + older).joined(separator: "\n\n")
                })
            }
        }
        let report = try result.get()
        print(report)
        if let output { try (report + "\n").write(toFile: output, atomically: true, encoding: .utf8) }
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

    #if DEBUG
    static let build = "debug build: the figures mean little"
    #else
    static let build = "release build"
    #endif

    /// "x86_64, 2 cores"
    static func machine() -> String {
        var uts = utsname()
        uname(&uts)
        let machine = withUnsafeBytes(of: uts.machine) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        return "\(machine), \(ProcessInfo.processInfo.activeProcessorCount) cores"
    }

    /// The single-connection workloads; the report and the capture ratios (p50 with / without) on 1-row and 100-row commits.
    static func measure(n: Int, dir: String, url: String) throws -> (String, capture: (one: Double, hundred: Double)) {
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
        let ratios = (one: capture["commit-1"]!.with.p50 / capture["commit-1"]!.without.p50,
                      hundred: capture["commit-100"]!.with.p50 / capture["commit-100"]!.without.p50)
        return (lines.joined(separator: "\n"), ratios)
    }
}
