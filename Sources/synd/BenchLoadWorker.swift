import Foundation
import SyndDB
import SyndSQLite

/// The worker side of the issue 10 workloads of `synd bench`: a hidden
/// `synd bench --worker ROLE` subprocess, driven over stdin and stdout like
/// the many-writer workers of `BenchWriters`, one line per command and answer.
///
/// - `solo`: 1-row commits to its own database for a fixed time (databases workload).
/// - `bulk`: a bulk load in transactions of many rows; reports time, size and its peak RSS.
/// - `scan`: opens the database (cold: a new process) and scans it once.
/// - `bigtx`: one large transaction; reports its peak RSS.
/// - `follow`: a follower (`follow=1`) that reports when each row became visible to it.
enum BenchLoadWorker {
    static let roles: Set<String> = ["solo", "bulk", "scan", "bigtx", "follow"]

    /// The table of the bulk, scan and large-transaction workloads.
    static let blobSchema = "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, payload BLOB NOT NULL)"

    static func run(role: String, id: Int, target: BenchWriters.Target) -> Never {
        do {
            switch role {
            case "solo":
                let connection = try open(target, readOnly: false)
                var kv = try KVWrite(connection, seed: UInt64(id) &* 7919 &+ UInt64(getpid()))
                BenchWriters.answer("ready")
                let fields = try command("go", count: 3)
                guard let start = Int64(fields[0]), let end = Int64(fields[1]), let valueBytes = Int(fields[2]) else {
                    throw BenchWriters.BenchError("bad 'go' command")
                }
                while chaosNow() < start { usleep(200) }
                var latencies: [Int64] = []
                var last = start
                while chaosNow() < end {
                    let t0 = chaosNow()
                    do {
                        try kv.commitOne(valueBytes: valueBytes)
                    } catch {
                        throw BenchWriters.BenchError("\(error) (after \(latencies.count) commits, \((chaosNow() - start) / 1_000_000) ms into the run)")
                    }
                    last = chaosNow()
                    latencies.append((last - t0) / 1000)
                }
                BenchWriters.answer("done \(latencies.count) \(last) " + latencies.map(String.init).joined(separator: " "))
            case "bulk":
                let connection = try open(target, readOnly: false)
                try connection.execute(blobSchema)
                BenchWriters.answer("ready")
                let fields = try command("bulk", count: 4)
                guard let total = Int64(fields[0]), let rowBytes = Int(fields[1]), let rowsPerTransaction = Int(fields[2]), let seed = UInt64(fields[3]) else {
                    throw BenchWriters.BenchError("bad 'bulk' command")
                }
                let insert = try connection.prepare("INSERT INTO t(payload) VALUES (?)")
                var rng = SplitMix64(seed: seed)
                var row = [UInt8](repeating: 0, count: rowBytes)
                let rows = Int((total + Int64(rowBytes) - 1) / Int64(rowBytes))
                let t0 = chaosNow()
                var done = 0
                while done < rows {
                    let batch = min(rowsPerTransaction, rows - done)
                    try connection.transaction("IMMEDIATE") {
                        for _ in 0..<batch {
                            fillRandom(&row, &rng)
                            try insert.run([row])
                        }
                    }
                    done += batch
                }
                let elapsed = chaosNow() - t0
                let pages = try connection.scalar("PRAGMA page_count")?.int64 ?? -1
                let pageSize = try connection.scalar("PRAGMA page_size")?.int64 ?? -1
                let free = try connection.scalar("PRAGMA freelist_count")?.int64 ?? -1
                let peak = BenchProc.status(pid: getpid(), "VmHWM") ?? -1
                BenchWriters.answer("done \(elapsed) \(rows) \(Int64(rows) * Int64(rowBytes)) \(pages) \(pageSize) \(free) \(peak)")
            case "scan":
                // Ready before the open: the open is part of what a cold scan costs.
                BenchWriters.answer("ready")
                _ = try command("scan", count: 0)
                let t0 = chaosNow()
                let connection = try open(target, readOnly: true)
                let t1 = chaosNow()
                let row = try connection.query("SELECT count(*), sum(length(payload)) FROM t").first ?? []
                let t2 = chaosNow()
                let values = row.map { $0.int64 ?? -1 }
                guard values.count == 2 else { throw BenchWriters.BenchError("the scan returned \(row)") }
                BenchWriters.answer("done \(t1 - t0) \(t2 - t1) \(values[0]) \(values[1])")
            case "bigtx":
                let connection = try open(target, readOnly: false)
                try connection.execute(blobSchema)
                let insert = try connection.prepare("INSERT INTO t(payload) VALUES (?)")
                BenchWriters.answer("ready")
                let fields = try command("bigtx", count: 3)
                guard let total = Int64(fields[0]), let rowBytes = Int(fields[1]), let seed = UInt64(fields[2]) else {
                    throw BenchWriters.BenchError("bad 'bigtx' command")
                }
                var rng = SplitMix64(seed: seed)
                var row = [UInt8](repeating: 0, count: rowBytes)
                let rows = Int((total + Int64(rowBytes) - 1) / Int64(rowBytes))
                let before = BenchProc.status(pid: getpid(), "VmRSS") ?? -1
                let t0 = chaosNow()
                try connection.transaction("IMMEDIATE") {
                    for _ in 0..<rows {
                        fillRandom(&row, &rng)
                        try insert.run([row])
                    }
                }
                let elapsed = chaosNow() - t0
                let count = try connection.scalar("SELECT count(*) FROM t")?.int64 ?? -1
                guard count == Int64(rows) else { throw BenchWriters.BenchError("\(count) rows after inserting \(rows)") }
                let peak = BenchProc.status(pid: getpid(), "VmHWM") ?? -1
                BenchWriters.answer("done \(elapsed) \(rows) \(before) \(peak)")
            case "follow":
                guard case .synd(let name, let url) = target else { throw BenchWriters.BenchError("a follower needs a sequencer") }
                var options = DatabaseOptions()
                options.follow = true
                let connection = try Database.open(name, sequencer: url, options: options).connection
                let newest = try connection.prepare("SELECT max(id) FROM t")
                var current = try newest.run().first?.first?.int64 ?? 0
                // Ready once the stream is up and current (its lag is known).
                while (try connection.scalar("PRAGMA synddb_lag")?.string.flatMap(Int.init) ?? -1) < 0 { usleep(1000) }
                BenchWriters.answer("ready")
                let fields = try command("watch", count: 1)
                guard let last = Int64(fields[0]) else { throw BenchWriters.BenchError("bad 'watch' command") }
                var seen: [String] = []
                let deadline = chaosNow() + 120_000_000_000
                while current < last {
                    guard chaosNow() < deadline else { throw BenchWriters.BenchError("row \(current + 1) never became visible") }
                    let id = try newest.run().first?.first?.int64 ?? 0
                    if id > current {
                        let t = chaosNow()
                        for i in (current + 1)...id { seen.append("\(i):\(t)") }
                        current = id
                    } else {
                        usleep(50)
                    }
                }
                BenchWriters.answer("done " + seen.joined(separator: " "))
            default:
                throw BenchWriters.BenchError("unknown worker role '\(role)'")
            }
            exit(0)
        } catch {
            BenchWriters.answer("error \(error)".replacingOccurrences(of: "\n", with: " "))
            exit(1)
        }
    }

    /// A connection to the target; a new local file is put in WAL mode with synchronous=FULL, the baseline's durability.
    static func open(_ target: BenchWriters.Target, readOnly: Bool) throws -> Connection {
        switch target {
        case .local(let path):
            let connection = try Connection(path: path, readOnly: readOnly)
            if !readOnly { try connection.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL") }
            return connection
        case .synd(let name, let url):
            var options = DatabaseOptions()
            options.readOnly = readOnly
            return try Database.open(name, sequencer: url, options: options).connection
        }
    }

    /// The next command line, which must be `word` and `count` fields.
    static func command(_ word: String, count: Int) throws -> [Substring] {
        guard let line = readLine() else { exit(0) }
        let fields = line.split(separator: " ")
        guard fields.first.map(String.init) == word, fields.count == count + 1 else {
            throw BenchWriters.BenchError("expected '\(word)' and \(count) fields, got '\(line)'")
        }
        return Array(fields.dropFirst())
    }

    /// Incompressible bytes, so that no layer gains from compressing them.
    static func fillRandom(_ bytes: inout [UInt8], _ rng: inout SplitMix64) {
        bytes.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                var word = rng.next()
                let n = min(8, buffer.count - offset)
                withUnsafeBytes(of: &word) { buffer.baseAddress!.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: n) }
                offset += n
            }
        }
    }
}
