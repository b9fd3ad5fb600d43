import Foundation
import SyndDB
import SyndSQLite

/// The workloads of issue 10 (sequencer performance) in `synd bench`, each
/// next to its baseline in the same run: local SQLite (WAL, synchronous=FULL)
/// and, for 1-row commits, a one-node dqlite.
///
/// Unless `--sequencer` names one, each workload gets a sequencer of its own
/// in a separate process (`BenchSequencerProcess`), so its CPU time, memory
/// and data folder can be read apart from the clients'.
enum BenchIssue10 {
    struct Settings {
        var transactions: Int
        var valueBytes: Int
        var databaseWriters: [Int]
        var seconds: Double
        /// Rounds of the databases workload (medians over them).
        var rounds: Int
        var bulkBytes: Int64
        var bulkRowBytes: Int
        var bulkRowsPerTransaction: Int
        var scans: Int
        var memoryBytes: Int64
        var dqliteSeconds: Int
        var dqliteScript: String?
        /// Drop the OS page cache before each cold scan.
        var dropCaches: Bool
    }

    /// The sequencer a workload runs against: the one at --sequencer, or a process of the bench's own.
    struct Server {
        var url: String
        var process: BenchSequencerProcess?
        var cpuSeconds: Double? { process?.cpuSeconds }
    }

    // MARK: - 1 and 2: one writer, 1-row commits

    struct Commit {
        var valueBytes: Int
        var local: BenchCommand.Figures
        var synd: BenchCommand.Figures
        /// CPU seconds over SyndDB's commits: the sequencer process (nil: not ours to read) and this process (the client).
        var sequencerCPU: Double?
        var localClientCPU: Double
        var syndClientCPU: Double
    }

    /// dqlite's kvwrite (one row, 32-byte key, `valueBytes` value, autocommit) on local SQLite and SyndDB,
    /// one commit on each in turn, so that the machine's noise falls on both alike.
    static func commit(_ s: Settings, dir: String, server: Server) throws -> Commit {
        let local = try Connection(path: dir + "/kvwrite.sqlite")
        try local.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL")
        let db = try Database.open("bench-kvwrite-\(getpid())", sequencer: server.url)
        var sides = [try KVWrite(local, seed: 42), try KVWrite(db.connection, seed: 42)]
        for _ in 0..<20 {
            for i in sides.indices { try sides[i].commitOne(valueBytes: s.valueBytes) }
        }
        var samples: [[Double]] = [[], []]
        var cpu = [0.0, 0.0]
        let clock = ContinuousClock()
        let before = server.cpuSeconds
        for _ in 0..<s.transactions {
            for i in sides.indices {
                let c0 = BenchProc.ownCPUSeconds()
                let elapsed = try clock.measure { try sides[i].commitOne(valueBytes: s.valueBytes) }
                cpu[i] += BenchProc.ownCPUSeconds() - c0
                samples[i].append(Double(elapsed.components.seconds) * 1e6 + Double(elapsed.components.attoseconds) / 1e12)
            }
        }
        // Local commits do not reach the sequencer: its CPU over the loop is SyndDB's commits'.
        let sequencerCPU = before.flatMap { b in server.cpuSeconds.map { $0 - b } }
        let count = try db.scalar("SELECT count(*) FROM model")?.int64 ?? -1
        guard count == Int64(s.transactions + 20) else {
            throw BenchWriters.BenchError("SyndDB: \(count) rows after \(s.transactions + 20) commits")
        }
        return Commit(valueBytes: s.valueBytes, local: BenchCommand.Figures(samples: samples[0]), synd: BenchCommand.Figures(samples: samples[1]),
                      sequencerCPU: sequencerCPU, localClientCPU: cpu[0], syndClientCPU: cpu[1])
    }

    // MARK: - 3: writer processes, each on its own database

    struct Databases {
        var processes: Int
        /// Each round's commits per second, local SQLite and SyndDB.
        var localRates: [Double]
        var syndRates: [Double]
        /// Every commit's latency over all rounds, microseconds.
        var localLatency: BenchCommand.Figures
        var syndLatency: BenchCommand.Figures
        /// The sequencer's CPU seconds over SyndDB's rounds, and the commits they made.
        var sequencerCPU: Double?
        var syndCommits: Int
        var localPerSecond: Double { BenchCommand.Figures(samples: localRates).p50 }
        var syndPerSecond: Double { BenchCommand.Figures(samples: syndRates).p50 }
    }

    /// `processes` workers on as many databases, local SQLite then SyndDB, in
    /// `s.rounds` rounds (the order flips each round); medians over the rounds.
    static func databases(_ s: Settings, processes: Int, dir: String, server: Server) throws -> Databases {
        let tag = getpid()
        var local: [BenchWriters.Contention] = [], synd: [BenchWriters.Contention] = []
        var cpu: Double? = server.process == nil ? nil : 0
        for round in 0..<s.rounds {
            let folder = dir + "/databases-\(processes)-\(round)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for side in (round % 2 == 0 ? [0, 1] : [1, 0]) {
                if side == 0 {
                    local.append(try solo((0..<processes).map { .local(path: folder + "/\($0).sqlite") }, s, server: nil).0)
                } else {
                    let run = try solo((0..<processes).map { .synd(name: "bench-db-\(processes)-\(round)-\($0)-\(tag)", url: server.url) }, s, server: server)
                    synd.append(run.0)
                    cpu = cpu.flatMap { c in run.cpu.map { c + $0 } }
                }
            }
        }
        return Databases(
            processes: processes, localRates: local.map(\.perSecond), syndRates: synd.map(\.perSecond),
            localLatency: BenchCommand.Figures(samples: local.flatMap(\.latency.samples)),
            syndLatency: BenchCommand.Figures(samples: synd.flatMap(\.latency.samples)),
            sequencerCPU: cpu, syndCommits: synd.map { $0.commits.reduce(0, +) }.reduce(0, +))
    }

    /// One `solo` worker per target, all committing for `s.seconds` from the same instant.
    static func solo(_ targets: [BenchWriters.Target], _ s: Settings, server: Server?) throws -> (BenchWriters.Contention, cpu: Double?) {
        let workers = try targets.enumerated().map { try BenchWriters.Worker(role: "solo", id: $0.offset, target: $0.element) }
        for worker in workers { _ = try worker.expect("ready") }
        let before = server?.cpuSeconds
        let start = chaosNow() + 200_000_000
        let end = start + Int64(s.seconds * 1e9)
        for worker in workers { try worker.send("go \(start) \(end) \(s.valueBytes)") }
        var commits = [Int](repeating: 0, count: targets.count)
        var samples: [Double] = []
        var last = end
        for worker in workers {
            let fields = try worker.expect("done")
            commits[worker.id] = Int(try BenchWriters.int64(fields.first, "count"))
            last = max(last, try BenchWriters.int64(fields.dropFirst().first, "time"))
            samples += fields.dropFirst(2).compactMap { Double($0) }
            try worker.finish()
        }
        let cpu = before.flatMap { b in server?.cpuSeconds.map { $0 - b } }
        guard samples.count == commits.reduce(0, +), !samples.isEmpty else {
            throw BenchWriters.BenchError("\(samples.count) latencies for \(commits.reduce(0, +)) commits")
        }
        for (target, count) in zip(targets, commits) {
            let rows = try target.open(readOnly: true).scalar("SELECT count(*) FROM model")?.int64 ?? -1
            if rows != Int64(count) { throw BenchWriters.BenchError("\(target.label): \(rows) rows for \(count) commits counted by its worker") }
        }
        let contention = BenchWriters.Contention(processes: targets.count, seconds: Double(last - start) / 1e9, commits: commits,
                                                 latency: BenchCommand.Figures(samples: samples))
        return (contention, cpu)
    }

    // MARK: - 4, 5 and 6: bulk load, cold full scan, disk use

    struct Scan {
        /// Opening the connection and the query, seconds.
        var open: Double
        var query: Double
        var total: Double { open + query }
    }

    struct BulkSide {
        /// The median of `loads`.
        var seconds: Double
        /// Each load's time, seconds, in the order run (the first made the database the scans read).
        var loads: [Double] = []
        var rows: Int
        var bytes: Int64
        var pageCount: Int64
        var pageSize: Int64
        var freelist: Int64
        /// Peak RSS (VmHWM) of the loading process.
        var clientPeak: Int64
        var scans: [Scan] = []
        var databaseBytes: Int64 { pageCount * pageSize }
        var megabytesPerSecond: Double { Double(bytes) / 1e6 / seconds }
        var medianScan: Scan {
            let sorted = scans.sorted { $0.total < $1.total }
            return sorted[(sorted.count - 1) / 2]
        }
    }

    struct Bulk {
        var local: BulkSide
        var synd: BulkSide
        var sequencerCPU: Double?
        /// Whether the OS page cache was dropped before each scan.
        var cachesDropped: Bool
        /// The local database's files (database and WAL) after the load.
        var localDisk: BenchProc.DiskUse
        /// The sequencer's data folder after the load and after the scans (nil: not ours to read).
        var syndDisk: BenchProc.DiskUse?
        var syndDiskAfterScans: BenchProc.DiskUse?
        /// History aside: the same load into a sequencer that keeps one version
        /// behind the head (`--retain 1`), once its compaction settled, and the seconds that took.
        var historyAside: (disk: BenchProc.DiskUse, settleSeconds: Double, databaseBytes: Int64)?
    }

    static func bulk(_ s: Settings, dir: String, server: Server) throws -> Bulk {
        let folder = dir + "/bulk"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let local = BenchWriters.Target.local(path: folder + "/bulk.sqlite")
        let synd = BenchWriters.Target.synd(name: "bench-bulk-\(getpid())", url: server.url)
        // The first round loads the databases the scans read and the disk
        // figures come from; after the scans, later rounds load fresh ones
        // (the order flips each round) so the load time is a median, like
        // every other figure.
        var l = try load(local, s)
        let localDisk = BenchProc.diskUse(folder)
        var before = server.cpuSeconds
        var d = try load(synd, s)
        var cpus: [Double] = []
        if let b = before, let a = server.cpuSeconds { cpus.append(a - b) }
        let syndDisk = server.process.map { BenchProc.diskUse($0.dataDirectory) }
        var dropped = s.dropCaches
        for _ in 0..<s.scans {
            dropped = s.dropCaches && BenchProc.dropCaches() && dropped
            l.scans.append(try scan(local, expect: l))
            dropped = s.dropCaches && BenchProc.dropCaches() && dropped
            d.scans.append(try scan(synd, expect: d))
        }
        let after = server.process.map { BenchProc.diskUse($0.dataDirectory) }
        for round in 1..<max(1, s.rounds) {
            let path = folder + "/bulk-\(round).sqlite"
            let fresh = BenchWriters.Target.synd(name: "bench-bulk-\(getpid())-\(round)", url: server.url)
            func loadSynd() throws {
                before = server.cpuSeconds
                d.loads.append(try load(fresh, s).seconds)
                if let b = before, let a = server.cpuSeconds { cpus.append(a - b) }
            }
            if round % 2 == 1 { try loadSynd() }
            l.loads.append(try load(.local(path: path), s).seconds)
            for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
            if round % 2 == 0 { try loadSynd() }
        }
        l.seconds = median(l.loads)
        d.seconds = median(d.loads)
        let cpu = cpus.isEmpty ? nil : median(cpus)
        var bulk = Bulk(local: l, synd: d, sequencerCPU: cpu, cachesDropped: dropped, localDisk: localDisk, syndDisk: syndDisk, syndDiskAfterScans: after)
        if server.process != nil { bulk.historyAside = try historyAside(s, dir: dir) }
        return bulk
    }

    /// Loads the bulk database into a sequencer of its own that keeps one
    /// version behind the head, then waits for the folder to stop shrinking
    /// (compaction runs in the background): what the store costs without history.
    static func historyAside(_ s: Settings, dir: String) throws -> (disk: BenchProc.DiskUse, settleSeconds: Double, databaseBytes: Int64) {
        let process = try BenchSequencerProcess(dataDirectory: dir + "/sequencer-history-aside", retain: 1)
        defer { process.stop() }
        let side = try load(.synd(name: "bench-bulk-aside-\(getpid())", url: process.url), s)
        let start = chaosNow()
        var use = BenchProc.diskUse(process.dataDirectory)
        var still = 0
        // Settled: the same size for two seconds in a row (at most a minute).
        while still < 10, chaosNow() - start < 60_000_000_000 {
            usleep(200_000)
            let now = BenchProc.diskUse(process.dataDirectory)
            still = now.allocated == use.allocated ? still + 1 : 0
            use = now
        }
        return (use, Double(chaosNow() - start) / 1e9 - 2, side.databaseBytes)
    }

    /// The middle value (the lower of the two middle ones for an even count).
    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted[(sorted.count - 1) / 2]
    }

    static func load(_ target: BenchWriters.Target, _ s: Settings) throws -> BulkSide {
        let worker = try BenchWriters.Worker(role: "bulk", id: 0, target: target)
        _ = try worker.expect("ready")
        try worker.send("bulk \(s.bulkBytes) \(s.bulkRowBytes) \(s.bulkRowsPerTransaction) 7")
        let f = try worker.expect("done")
        try worker.finish()
        let v = try (0..<7).map { try BenchWriters.int64(f.count > $0 ? f[$0] : nil, "bulk figure") }
        return BulkSide(seconds: Double(v[0]) / 1e9, loads: [Double(v[0]) / 1e9], rows: Int(v[1]), bytes: v[2], pageCount: v[3], pageSize: v[4], freelist: v[5], clientPeak: v[6])
    }

    static func scan(_ target: BenchWriters.Target, expect side: BulkSide) throws -> Scan {
        let worker = try BenchWriters.Worker(role: "scan", id: 0, target: target)
        _ = try worker.expect("ready")
        try worker.send("scan")
        let f = try worker.expect("done")
        try worker.finish()
        let v = try (0..<4).map { try BenchWriters.int64(f.count > $0 ? f[$0] : nil, "scan figure") }
        guard v[2] == Int64(side.rows), v[3] == side.bytes else {
            throw BenchWriters.BenchError("\(target.label): the scan counted \(v[2]) rows and \(v[3]) bytes for \(side.rows) rows and \(side.bytes) bytes loaded")
        }
        return Scan(open: Double(v[0]) / 1e9, query: Double(v[1]) / 1e9)
    }

    // MARK: - 7: peak memory of one large transaction

    struct MemorySide {
        var seconds: Double
        /// The worker's RSS after opening, before the transaction, and its peak (VmHWM) after it.
        var before: Int64
        var peak: Int64
    }

    struct Memory {
        var bytes: Int64
        var local: MemorySide
        var synd: MemorySide
        /// The sequencer's RSS before the transaction and its peak during it (nil: not ours to read).
        var sequencerBefore: Int64?
        var sequencerPeak: Int64?
        /// Whether the sequencer's peak was reset to its RSS first (clear_refs), so the peak is this transaction's.
        var peakReset: Bool
    }

    static func memory(_ s: Settings, dir: String, server: Server) throws -> Memory {
        let local = try bigTransaction(.local(path: dir + "/bigtx.sqlite"), s, server: nil)
        let synd = try bigTransaction(.synd(name: "bench-bigtx-\(getpid())", url: server.url), s, server: server)
        return Memory(bytes: s.memoryBytes, local: local.side, synd: synd.side, sequencerBefore: synd.sequencer?.before,
                      sequencerPeak: synd.sequencer?.peak, peakReset: synd.sequencer?.reset ?? false)
    }

    static func bigTransaction(_ target: BenchWriters.Target, _ s: Settings, server: Server?) throws
        -> (side: MemorySide, sequencer: (before: Int64, peak: Int64, reset: Bool)?) {
        let worker = try BenchWriters.Worker(role: "bigtx", id: 0, target: target)
        _ = try worker.expect("ready")
        let pid = server?.process?.pid
        let reset = pid.map { BenchProc.resetPeak(pid: $0) } ?? false
        let before = pid.flatMap { BenchProc.status(pid: $0, "VmRSS") }
        try worker.send("bigtx \(s.memoryBytes) \(s.bulkRowBytes) 11")
        let f = try worker.expect("done")
        try worker.finish()
        let peak = pid.flatMap { BenchProc.status(pid: $0, "VmHWM") }
        let v = try (0..<4).map { try BenchWriters.int64(f.count > $0 ? f[$0] : nil, "transaction figure") }
        let side = MemorySide(seconds: Double(v[0]) / 1e9, before: v[2], peak: v[3])
        if let before, let peak { return (side, (before, peak, reset)) }
        return (side, nil)
    }
}
