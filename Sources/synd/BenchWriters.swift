import Foundation
import SyndDB
import SyndSQLite

/// The many-writer workloads of `synd bench` (issue 9): writer processes, each
/// a `synd bench --worker ...` subprocess of the bench, on one database, next
/// to the same processes on a local SQLite file (WAL, synchronous=FULL).
///
/// The bench process drives its workers over their stdin and stdout, one line
/// per command and per answer. Times are CLOCK_MONOTONIC nanoseconds, one clock
/// for every process of the machine, so the bench can subtract a time one
/// worker took from a time another took.
///
/// - `handover`: two workers take turns. The waiter runs BEGIN IMMEDIATE while
///   the holder is inside its write transaction, so SQLite's busy handler
///   retries; the holder commits after a random hold; the latency is from the
///   holder's COMMIT returning to the waiter's BEGIN IMMEDIATE returning.
/// - `contend`: N workers loop BEGIN IMMEDIATE; UPDATE; INSERT; COMMIT for a
///   fixed time; commits per second in total and commit latency (BEGIN to
///   COMMIT returning, waiting for the lock included).
///
/// Every transaction must commit (busy timeout 10 s): a worker that meets any
/// error reports it and exits, and the bench fails. At the end the bench checks
/// that the rows in the database add up to the commits the workers counted.
enum BenchWriters {
    static let busyTimeoutMs = 10_000
    /// How long the bench waits for one answer of a worker before calling it stuck.
    static let answerTimeoutMs: Int32 = 60_000

    /// Where the workers' database lives.
    enum Target {
        case local(path: String)
        case synd(name: String, url: String)

        var label: String {
            switch self {
            case .local(let path): "local SQLite \(path)"
            case .synd(let name, _): "SyndDB \(name)"
            }
        }

        var workerArguments: [String] {
            switch self {
            case .local(let path): ["--worker-local", path]
            case .synd(let name, let url): ["--worker-db", name, "--sequencer", url]
            }
        }

        /// A connection with the workers' settings.
        func open(readOnly: Bool = false) throws -> Connection {
            switch self {
            case .local(let path):
                let connection = try Connection(path: path, readOnly: readOnly)
                try connection.execute("PRAGMA busy_timeout=\(BenchWriters.busyTimeoutMs); PRAGMA synchronous=FULL")
                return connection
            case .synd(let name, let url):
                var options = DatabaseOptions()
                options.busyTimeoutMs = BenchWriters.busyTimeoutMs
                options.readOnly = readOnly
                return try Database.open(name, sequencer: url, options: options).connection
            }
        }

        /// Creates the database with the workers' schema and one counter per worker.
        func create(workers: Int) throws {
            let connection: Connection
            switch self {
            case .local(let path):
                connection = try Connection(path: path)
                try connection.execute("PRAGMA journal_mode=WAL")
            case .synd:
                connection = try open()
            }
            try connection.execute("""
                CREATE TABLE counters(p INTEGER PRIMARY KEY, n INTEGER NOT NULL);
                CREATE TABLE log(id INTEGER PRIMARY KEY, p INTEGER NOT NULL, seq INTEGER NOT NULL, v TEXT)
                """)
            try connection.transaction("IMMEDIATE") {
                for p in 0..<workers { _ = try connection.query("INSERT INTO counters(p, n) VALUES (?, 0)", [p]) }
            }
        }

        /// Checks that the database holds exactly the commits each worker counted.
        func verify(commits: [Int]) throws {
            let connection = try open(readOnly: true)
            let total = try connection.scalar("SELECT count(*) FROM log")?.int64 ?? -1
            var problems: [String] = []
            if total != Int64(commits.reduce(0, +)) {
                problems.append("\(total) rows in log for \(commits.reduce(0, +)) commits counted by the workers")
            }
            for (p, count) in commits.enumerated() {
                let n = try connection.scalar("SELECT n FROM counters WHERE p = ?", [p])?.int64 ?? -1
                let row = try connection.query("SELECT count(*), count(DISTINCT seq), coalesce(max(seq), 0) FROM log WHERE p = ?", [p]).first ?? []
                let rows = row.map { $0.int64 ?? -1 }
                if n != Int64(count) || rows != [Int64(count), Int64(count), Int64(count)] {
                    problems.append("worker \(p) counted \(count) commits; counter \(n), log rows/distinct/max seq \(rows)")
                }
            }
            if !problems.isEmpty {
                throw BenchError("the database does not add up (\(self)): " + problems.joined(separator: "; "))
            }
        }
    }

    struct BenchError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    // MARK: - Worker side (a subprocess: `synd bench --worker ROLE ...`)

    static func runWorker(role: String, id: Int, target: Target) -> Never {
        do {
            let connection = try target.open()
            let insert = try connection.prepare("INSERT INTO log(p, seq, v) VALUES (?, ?, ?)")
            let update = try connection.prepare("UPDATE counters SET n = n + 1 WHERE p = ?")
            let payload = String(repeating: "x", count: 100)
            var count = 0
            answer("ready")
            switch role {
            case "handover":
                while let line = readLine() {
                    switch line {
                    case "acquire":
                        answer("waiting")
                        try connection.execute("BEGIN IMMEDIATE")
                        let granted = chaosNow()
                        _ = try update.run([id])
                        _ = try insert.run([id, count + 1, payload])
                        answer("held \(granted)")
                    case "commit":
                        let start = chaosNow()
                        try connection.execute("COMMIT")
                        let end = chaosNow()
                        count += 1
                        answer("committed \(start) \(end)")
                    case "quit":
                        answer("done \(count)")
                        exit(0)
                    default:
                        throw BenchError("unknown command '\(line)'")
                    }
                }
            case "contend":
                guard let line = readLine() else { exit(0) }
                let fields = line.split(separator: " ")
                guard fields.count == 4, fields[0] == "go", let start = Int64(fields[1]), let end = Int64(fields[2]), let thinkUs = UInt32(fields[3]) else {
                    throw BenchError("expected 'go START END THINK_US', got '\(line)'")
                }
                while chaosNow() < start { usleep(200) }
                var latencies: [Int64] = []
                var last = start
                while chaosNow() < end {
                    let t0 = chaosNow()
                    do {
                        try connection.execute("BEGIN IMMEDIATE")
                        _ = try update.run([id])
                        _ = try insert.run([id, count + 1, payload])
                        try connection.execute("COMMIT")
                    } catch {
                        let waited = (chaosNow() - t0) / 1_000_000, since = (chaosNow() - start) / 1_000_000
                        throw BenchError("\(error) (after \(count) commits, \(since) ms into the run; this transaction tried for \(waited) ms)")
                    }
                    last = chaosNow()
                    count += 1
                    latencies.append((last - t0) / 1000)
                    if thinkUs > 0 { usleep(thinkUs) }
                }
                answer("done \(count) \(last) " + latencies.map(String.init).joined(separator: " "))
            default:
                throw BenchError("unknown worker role '\(role)'")
            }
            exit(0)
        } catch {
            answer("error \(error)".replacingOccurrences(of: "\n", with: " "))
            exit(1)
        }
    }

    /// One line on stdout, written at once (stdout may be a pipe).
    static func answer(_ line: String) {
        var bytes = Array((line + "\n").utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(1, $0.baseAddress! + offset, $0.count - offset) }
            if n <= 0 { exit(2) }
            offset += n
        }
    }

    // MARK: - Bench side

    /// A worker subprocess and its line protocol.
    final class Worker {
        let id: Int
        let label: String
        let process = Process()
        let input = Pipe()
        let output = Pipe()
        var buffer: [UInt8] = []

        init(role: String, id: Int, target: Target) throws {
            self.id = id
            self.label = "worker \(id) on \(target.label)"
            process.executableURL = URL(fileURLWithPath: BenchWriters.executablePath())
            process.arguments = ["bench", "--worker", role, "--worker-id", String(id)] + target.workerArguments
            process.standardInput = input
            process.standardOutput = output
            try process.run()
        }

        deinit {
            if process.isRunning {
                process.terminate()
                process.waitUntilExit()
            }
        }

        func send(_ line: String) throws {
            var bytes = Array((line + "\n").utf8)
            var offset = 0
            let fd = input.fileHandleForWriting.fileDescriptor
            while offset < bytes.count {
                let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
                if n <= 0 { throw BenchError("\(label): cannot send '\(line)' (it exited?)") }
                offset += n
            }
        }

        /// The next answer; an `error` answer, an exit or a long silence throws.
        func receive() throws -> String {
            let fd = output.fileHandleForReading.fileDescriptor
            while true {
                if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: buffer[..<newline], as: UTF8.self)
                    buffer.removeSubrange(...newline)
                    if line.hasPrefix("error ") { throw BenchError("\(label) failed: \(line.dropFirst(6))") }
                    return line
                }
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&pfd, 1, BenchWriters.answerTimeoutMs)
                if ready == 0 {
                    throw BenchError("\(label) gave no answer in \(BenchWriters.answerTimeoutMs / 1000) s (stuck waiting for the write lock?)")
                }
                var chunk = [UInt8](repeating: 0, count: 65536)
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { throw BenchError("\(label) exited without an answer") }
                buffer += chunk[..<n]
            }
        }

        /// The next answer, which must start with `word`; its other fields.
        func expect(_ word: String) throws -> [Substring] {
            let line = try receive()
            let fields = line.split(separator: " ")
            guard fields.first.map(String.init) == word else {
                throw BenchError("\(label): expected '\(word)', got '\(line.prefix(200))'")
            }
            return Array(fields.dropFirst())
        }

        func finish() throws {
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw BenchError("\(label) exited with status \(process.terminationStatus)")
            }
        }
    }

    static func executablePath() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }

    static func int64(_ field: Substring?, _ what: String) throws -> Int64 {
        guard let field, let value = Int64(field) else { throw BenchError("bad \(what) in a worker's answer") }
        return value
    }

    struct Handover {
        /// From the holder's COMMIT returning to the waiter's BEGIN IMMEDIATE returning, microseconds.
        var latency: BenchCommand.Figures
        /// From the holder's COMMIT starting to the waiter's BEGIN IMMEDIATE returning, microseconds.
        var fromCommitStart: BenchCommand.Figures
    }

    /// Two workers pass the write lock back and forth `handovers` times. The
    /// holds (how long the holder keeps its transaction open while the waiter
    /// already waits) come from `seed`, so both targets get the same ones.
    static func handover(_ target: Target, handovers: Int, seed: UInt64, holdMs: ClosedRange<Int>) throws -> Handover {
        try target.create(workers: 2)
        let workers = try (0..<2).map { try Worker(role: "handover", id: $0, target: target) }
        for worker in workers { _ = try worker.expect("ready") }
        var rng = SplitMix64(seed: seed)
        var latency: [Double] = [], fromStart: [Double] = []
        try workers[0].send("acquire")
        _ = try workers[0].expect("waiting")
        _ = try workers[0].expect("held")
        var (holder, waiter) = (workers[0], workers[1])
        for _ in 0..<handovers {
            try waiter.send("acquire")
            _ = try waiter.expect("waiting")
            usleep(UInt32(Int.random(in: holdMs, using: &rng) * 1000))
            try holder.send("commit")
            let committed = try holder.expect("committed")
            let (start, end) = (try int64(committed.first, "time"), try int64(committed.dropFirst().first, "time"))
            let granted = try int64(try waiter.expect("held").first, "time")
            if granted < start {
                throw BenchError("\(waiter.label) was granted the write lock before worker \(holder.id) began its COMMIT (\((start - granted) / 1000) µs before)")
            }
            latency.append(Double(granted - end) / 1000)
            fromStart.append(Double(granted - start) / 1000)
            (holder, waiter) = (waiter, holder)
        }
        try holder.send("commit")
        _ = try holder.expect("committed")
        var commits = [0, 0]
        for worker in workers {
            try worker.send("quit")
            commits[worker.id] = Int(try int64(try worker.expect("done").first, "count"))
            try worker.finish()
        }
        try target.verify(commits: commits)
        if commits.reduce(0, +) != handovers + 1 {
            throw BenchError("\(commits.reduce(0, +)) commits for \(handovers + 1) write transactions")
        }
        return Handover(latency: BenchCommand.Figures(samples: latency), fromCommitStart: BenchCommand.Figures(samples: fromStart))
    }

    struct Contention {
        var processes: Int
        var seconds: Double
        var commits: [Int]
        /// BEGIN IMMEDIATE to COMMIT returning, waiting included, microseconds.
        var latency: BenchCommand.Figures
        var perSecond: Double { Double(commits.reduce(0, +)) / seconds }
    }

    /// `processes` workers write for `seconds`, each in its own transactions,
    /// pausing `thinkMs` after each commit (outside any transaction).
    static func contention(_ target: Target, processes: Int, seconds: Double, thinkMs: Double) throws -> Contention {
        try target.create(workers: processes)
        let workers = try (0..<processes).map { try Worker(role: "contend", id: $0, target: target) }
        for worker in workers { _ = try worker.expect("ready") }
        let start = chaosNow() + 100_000_000
        let end = start + Int64(seconds * 1e9)
        for worker in workers { try worker.send("go \(start) \(end) \(Int(thinkMs * 1000))") }
        var commits = [Int](repeating: 0, count: processes)
        var samples: [Double] = []
        var last = end
        for worker in workers {
            let fields = try worker.expect("done")
            commits[worker.id] = Int(try int64(fields.first, "count"))
            last = max(last, try int64(fields.dropFirst().first, "time"))
            samples += fields.dropFirst(2).compactMap { Double($0) }
            try worker.finish()
        }
        guard samples.count == commits.reduce(0, +), !samples.isEmpty else {
            throw BenchError("\(samples.count) latencies for \(commits.reduce(0, +)) commits")
        }
        try target.verify(commits: commits)
        return Contention(processes: processes, seconds: Double(last - start) / 1e9, commits: commits, latency: BenchCommand.Figures(samples: samples))
    }

    struct Results {
        var handovers: Int
        var holdMs: ClosedRange<Int>
        var seconds: Double
        var thinkMs: Double
        var url: String
        var local: (handover: Handover, contention: [Contention])
        var synd: (handover: Handover, contention: [Contention])
    }

    /// Both workloads on both targets; local SQLite and SyndDB alternate per workload.
    static func measure(dir: String, url: String, handovers: Int, processes: [Int], seconds: Double, thinkMs: Double) throws -> Results {
        signal(SIGPIPE, SIG_IGN)
        let holdMs = 2...20
        let seed = UInt64(getpid())
        let tag = getpid()
        let localHandover = try handover(.local(path: dir + "/handover.sqlite"), handovers: handovers, seed: seed, holdMs: holdMs)
        let syndHandover = try handover(.synd(name: "bench-handover-\(tag)", url: url), handovers: handovers, seed: seed, holdMs: holdMs)
        var local: [Contention] = [], synd: [Contention] = []
        for n in processes {
            local.append(try contention(.local(path: dir + "/writers-\(n).sqlite"), processes: n, seconds: seconds, thinkMs: thinkMs))
            synd.append(try contention(.synd(name: "bench-writers-\(n)-\(tag)", url: url), processes: n, seconds: seconds, thinkMs: thinkMs))
        }
        return Results(handovers: handovers, holdMs: holdMs, seconds: seconds, thinkMs: thinkMs, url: url, local: (localHandover, local), synd: (syndHandover, synd))
    }

    static func report(_ results: Results) -> [String] {
        func f(_ x: Double) -> String { String(format: "%.0f", x) }
        func r(_ x: Double) -> String { String(format: "%.2fx", x) }
        let (lh, sh) = (results.local.handover, results.synd.handover)
        var lines = [
            "## Many writers, one database (issue 9)",
            "",
            "Machine: \(BenchCommand.machine()); sequencer \(results.url) (loopback).",
            "",
            "Separate writer processes (`synd bench --worker`) on one database, busy_timeout \(busyTimeoutMs / 1000) s; every transaction commits and the rows are checked against the commits counted.",
            "",
            "Lease handover, 2 processes, \(results.handovers) handovers: the waiter runs BEGIN IMMEDIATE while the holder is in its write transaction (held \(results.holdMs.lowerBound)-\(results.holdMs.upperBound) ms at random, the same holds on both sides), then the holder commits. Microseconds from the holder's COMMIT returning to the waiter's BEGIN IMMEDIATE returning (in parentheses: from the holder's COMMIT starting).",
            "",
            "| workload | local p50 | local p99 | SyndDB p50 | SyndDB p99 | p50 ratio | p99 ratio |",
            "|---|---:|---:|---:|---:|---:|---:|",
            "| lease handover | \(f(lh.latency.p50)) (\(f(lh.fromCommitStart.p50))) | \(f(lh.latency.p99)) (\(f(lh.fromCommitStart.p99))) | \(f(sh.latency.p50)) (\(f(sh.fromCommitStart.p50))) | \(f(sh.latency.p99)) (\(f(sh.fromCommitStart.p99))) | \(r(sh.latency.p50 / lh.latency.p50)) | \(r(sh.latency.p99 / lh.latency.p99)) |",
            "",
            "Processes alternating writes for \(f(results.seconds)) s each (BEGIN IMMEDIATE; UPDATE one row; INSERT one row; COMMIT"
                + (results.thinkMs > 0 ? "; then \(String(format: "%g", results.thinkMs)) ms outside any transaction" : ", again at once") + "). Commits per second in total; commit latency in microseconds from BEGIN to COMMIT returning, waiting for the lock included (max: the longest wait of any transaction); fewest and most commits of one process (how fairly the lock went round).",
            "",
            "| processes | local commits/s | local p50 | local p99 | local max | local min-max | SyndDB commits/s | SyndDB p50 | SyndDB p99 | SyndDB max | SyndDB min-max | SyndDB/local commits/s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for (l, s) in zip(results.local.contention, results.synd.contention) {
            var row = "| \(l.processes) | \(f(l.perSecond)) | \(f(l.latency.p50)) | \(f(l.latency.p99)) | \(f(l.latency.percentile(1))) | \(l.commits.min()!)-\(l.commits.max()!)"
            row += " | \(f(s.perSecond)) | \(f(s.latency.p50)) | \(f(s.latency.p99)) | \(f(s.latency.percentile(1))) | \(s.commits.min()!)-\(s.commits.max()!) | \(r(s.perSecond / l.perSecond)) |"
            lines.append(row)
        }
        return lines
    }
}
