import Foundation
import SyndDB
import SyndSQLite

/// The PostgreSQL store (issue 12) next to the embedded store and local
/// SQLite, in the same run: 1-row commits through one sequencer, and writer
/// processes on as many databases through one and through two sequencers
/// sharing one PostgreSQL.
enum BenchPostgres {
    struct Results {
        var postgresVersion = ""
        /// 1-row commits, microseconds: local SQLite, embedded store, PostgreSQL store.
        var local = BenchCommand.Figures(samples: [])
        var embedded = BenchCommand.Figures(samples: [])
        var postgres = BenchCommand.Figures(samples: [])
        /// CPU seconds of the PostgreSQL-backed sequencer over its 1-row commits.
        var sequencerCPU: Double?
        var processes = 16
        /// Commits per second, one entry per round, and every commit's latency.
        var rates: [String: [Double]] = [:]
        var latency: [String: [Double]] = [:]
    }

    static let sides = ["local SQLite", "embedded store", "PostgreSQL, 1 sequencer", "PostgreSQL, 2 sequencers"]

    /// `admin`: a PostgreSQL URL whose user may create databases; the bench makes one of its own and drops it after.
    static func run(admin: String, settings s: BenchIssue10.Settings, processes: Int, dir: String) throws -> Results {
        var r = Results()
        r.processes = processes
        let name = "synd_bench_\(getpid())"
        guard let slash = admin.range(of: "/", options: .backwards, range: admin.range(of: "://")!.upperBound..<admin.endIndex) else {
            throw BenchWriters.BenchError("--postgres must be a URL with a database: postgresql://USER@HOST:PORT/DATABASE")
        }
        let query = admin[slash.upperBound...].firstIndex(of: "?").map { String(admin[$0...]) } ?? ""
        let url = String(admin[..<slash.upperBound]) + name + query
        r.postgresVersion = try psql(admin, "SHOW server_version")
        try psql(admin, "CREATE DATABASE \(name)")
        defer { _ = try? psql(admin, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)") }

        let embedded = try BenchSequencerProcess(dataDirectory: dir + "/pg-embedded", retain: nil)
        defer { embedded.stop() }
        let one = try BenchSequencerProcess(dataDirectory: dir + "/pg-key", retain: nil, extraArguments: ["--store", url], log: dir + "/pg-one.log")
        defer { one.stop() }
        let two = try BenchSequencerProcess(dataDirectory: dir + "/pg-key", retain: nil, extraArguments: ["--store", url], log: dir + "/pg-two.log")
        defer { two.stop() }

        // 1-row commits, one on each in turn.
        let local = try Connection(path: dir + "/pg-kvwrite.sqlite")
        try local.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL")
        let onEmbedded = try Database.open("bench-pg-kv-\(getpid())", sequencer: embedded.url)
        let onPostgres = try Database.open("bench-pg-kv-\(getpid())", sequencer: one.url)
        var writers = [try KVWrite(local, seed: 42), try KVWrite(onEmbedded.connection, seed: 42), try KVWrite(onPostgres.connection, seed: 42)]
        for _ in 0..<20 { for i in writers.indices { try writers[i].commitOne(valueBytes: s.valueBytes) } }
        var samples: [[Double]] = [[], [], []]
        let clock = ContinuousClock()
        var cpu = 0.0
        for _ in 0..<s.transactions {
            for i in writers.indices {
                let c0 = i == 2 ? one.cpuSeconds : 0
                let d = try clock.measure { try writers[i].commitOne(valueBytes: s.valueBytes) }
                if i == 2 { cpu += one.cpuSeconds - c0 }
                samples[i].append(Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12)
            }
        }
        (r.local, r.embedded, r.postgres) = (BenchCommand.Figures(samples: samples[0]), BenchCommand.Figures(samples: samples[1]), BenchCommand.Figures(samples: samples[2]))
        r.sequencerCPU = cpu
        let rows = try onPostgres.scalar("SELECT count(*) FROM model")?.int64 ?? -1
        guard rows == Int64(s.transactions + 20) else { throw BenchWriters.BenchError("PostgreSQL store: \(rows) rows after \(s.transactions + 20) commits") }

        // Writer processes on as many databases, each side in turn, `rounds` times (the order rotates).
        let tag = getpid()
        for round in 0..<s.rounds {
            let folder = dir + "/pg-databases-\(round)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for k in 0..<sides.count {
                let side = (k + round) % sides.count
                let targets: [BenchWriters.Target] = (0..<processes).map { i in
                    switch side {
                    case 0: .local(path: folder + "/\(i).sqlite")
                    case 1: .synd(name: "bench-pg-db-\(round)-\(i)-\(tag)", url: embedded.url)
                    case 2: .synd(name: "bench-pg-one-\(round)-\(i)-\(tag)", url: one.url)
                    default: .synd(name: "bench-pg-two-\(round)-\(i)-\(tag)", url: i % 2 == 0 ? one.url : two.url)
                    }
                }
                let (run, _) = try BenchIssue10.solo(targets, s, server: nil)
                r.rates[sides[side], default: []].append(run.perSecond)
                r.latency[sides[side], default: []] += run.latency.samples
            }
        }
        return r
    }

    @discardableResult
    static func psql(_ url: String, _ sql: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/psql")
        p.arguments = [url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let error = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw BenchWriters.BenchError("psql '\(sql)' failed: \(error)") }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func report(_ r: Results, settings s: BenchIssue10.Settings, command: String, date: Date) -> [String] {
        func us(_ x: Double) -> String { String(format: "%.0f", x) }
        func x(_ a: Double, _ b: Double) -> String { String(format: "%.2fx", a / b) }
        var lines = [
            "## PostgreSQL store (issue 12)",
            "",
            "Command: `\(command)` (\(BenchCommand.build)). Machine: \(BenchCommand.machine()); \(ISO8601DateFormatter().string(from: date)).",
            "PostgreSQL \(r.postgresVersion) on the same machine (loopback, its defaults: fsync on, synchronous_commit on). Sequencers in their own processes: one on the embedded store, two on one PostgreSQL database (`--store`), sharing their key. Local SQLite: WAL, synchronous=FULL.",
            "",
            "### 1-row commits (dqlite's kvwrite, \(s.valueBytes)-byte value), \(s.transactions) on each, one on each in turn",
            "",
            "| | p50 µs | p99 µs | p50 vs local SQLite |",
            "|---|---:|---:|---:|",
            "| local SQLite | \(us(r.local.p50)) | \(us(r.local.p99)) | 1.00x |",
            "| embedded store | \(us(r.embedded.p50)) | \(us(r.embedded.p99)) | \(x(r.embedded.p50, r.local.p50)) |",
            "| PostgreSQL store, 1 sequencer | \(us(r.postgres.p50)) | \(us(r.postgres.p99)) | \(x(r.postgres.p50, r.local.p50)) |",
            "",
            "Sequencer CPU per commit on the PostgreSQL store: \(r.sequencerCPU.map { us($0 / Double(s.transactions) * 1e6) + " µs" } ?? "?") (PostgreSQL's own CPU not counted).",
            "",
            "### \(r.processes) writer processes, each on its own database, \(s.seconds) s, \(s.rounds) rounds (median commits/s; each round in parentheses)",
            "",
            "| | commits/s | vs local SQLite | p50 µs | p99 µs |",
            "|---|---:|---:|---:|---:|",
        ]
        let localRate = BenchCommand.Figures(samples: r.rates[sides[0]] ?? [1]).p50
        for side in sides {
            let rates = r.rates[side] ?? []
            guard !rates.isEmpty else { continue }
            let rate = BenchCommand.Figures(samples: rates).p50
            let latency = BenchCommand.Figures(samples: r.latency[side] ?? [0])
            let each = rates.map { String(format: "%.0f", $0) }.joined(separator: ", ")
            lines.append("| \(side) | \(String(format: "%.0f", rate)) (\(each)) | \(x(rate, localRate)) | \(us(latency.p50)) | \(us(latency.p99)) |")
        }
        return lines
    }
}
