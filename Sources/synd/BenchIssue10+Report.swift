import Foundation

extension BenchIssue10 {
    /// What one `synd bench` run measured of issue 10; nil: that workload did not run.
    struct Results {
        var settings: Settings
        /// --sequencer, when given (then the sequencer's CPU, memory and folder are not read).
        var sequencerURL: String?
        var commit: Commit?
        var dqlite: BenchDqlite.Outcome?
        var databases: [Databases] = []
        var bulk: Bulk?
        var memory: Memory?
        /// Changeset capture, p50 with / without, on 1-row and 100-row commits (the single workload).
        var capture: (one: Double, hundred: Double)?
    }

    static func report(_ r: Results, command: String, date: Date) -> [String] {
        func f(_ x: Double) -> String { x.isFinite ? String(format: "%.0f", x) : "-" }
        func f1(_ x: Double) -> String { x.isFinite ? String(format: "%.1f", x) : "-" }
        func ratio(_ x: Double) -> String { x.isFinite ? String(format: "%.2fx", x) : "-" }
        func mb(_ bytes: Int64) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }
        func verdict(_ met: Bool?) -> String { met.map { $0 ? "met" : "missed" } ?? "-" }
        let s = r.settings
        let memory = BenchProc.memoryGiB().map { ", \($0) GiB" } ?? ""
        let dateText = ISO8601DateFormatter.string(from: date, timeZone: TimeZone(identifier: "UTC")!, formatOptions: [.withFullDate, .withTime, .withColonSeparatorInTime, .withSpaceBetweenDateAndTime])
        var lines = [
            "## Sequencer performance (issue 10)",
            "",
            "Command: `\(command)` (\(BenchCommand.build)\(BenchProc.gitDescription().map { ", source " + $0 } ?? "")).",
            "Machine: \(BenchProc.cpuModel()), \(ProcessInfo.processInfo.activeProcessorCount) cores\(memory); \(BenchProc.system()); \(dateText) UTC.",
            r.sequencerURL.map { "Sequencer: \($0) (given; its CPU, memory and disk are not read)." }
                ?? "Sequencer: a separate `synd sequencer --port 0` process per workload, with a fresh data folder; loopback HTTP/2.",
            "Baseline: local SQLite files, journal_mode=WAL, synchronous=FULL (one fsync per commit), on the same disk. Latencies in microseconds, p50 = median.",
            "",
            "| # | figure | SyndDB | baseline | ratio | target | |",
            "|---|---|---:|---:|---:|---|---|",
        ]
        var notes: [String] = []
        if let c = r.commit {
            let x = c.synd.p50 / c.local.p50
            lines.append("| 1 | 1-row commit p50 (\(c.valueBytes) B value) vs local SQLite | \(f(c.synd.p50)) µs | \(f(c.local.p50)) µs | \(ratio(x)) | ≤ 1.5x | \(verdict(x <= 1.5)) |")
        }
        switch r.dqlite {
        case .measured(let d)?:
            if let c = r.commit {
                let x = c.synd.p50 / d.latency.p50
                lines.append("| 1 | 1-row commit p50 vs dqlite (1 node) | \(f(c.synd.p50)) µs | \(f(d.latency.p50)) µs | \(ratio(x)) | ≤ 0.8x | \(verdict(x <= 0.8)) |")
            } else {
                lines.append("| 1 | dqlite (1 node) 1-row commit p50 | | \(f(d.latency.p50)) µs | | | |")
            }
        case .skipped(let why)?:
            lines.append("| 1 | 1-row commit vs dqlite | | not run | | ≤ 0.8x | - |")
            notes.append("dqlite: not measured: \(why).")
        case nil: break
        }
        if let c = r.commit {
            if let cpu = c.sequencerCPU {
                let us = cpu / Double(s.transactions) * 1e6
                lines.append("| 2 | sequencer CPU per 1-row commit | \(f(us)) µs | | | ≤ 100 µs | \(verdict(us <= 100)) |")
            } else {
                lines.append("| 2 | sequencer CPU per 1-row commit | not read (--sequencer) | | | ≤ 100 µs | - |")
            }
        }
        for d in r.databases {
            let x = d.syndPerSecond / d.localPerSecond
            lines.append("| 3 | \(d.processes) writers on \(d.processes) databases, commits/s | \(f(d.syndPerSecond)) | \(f(d.localPerSecond)) | \(ratio(x)) | ≥ 0.5x | \(verdict(x >= 0.5)) |")
        }
        if let b = r.bulk {
            let x = b.synd.megabytesPerSecond / b.local.megabytesPerSecond
            lines.append("| 4 | bulk load \(mb(b.local.bytes)), MB/s | \(f1(b.synd.megabytesPerSecond)) | \(f1(b.local.megabytesPerSecond)) | \(ratio(x)) | ≥ 0.5x | \(verdict(x >= 0.5)) |")
            let (ls, ds) = (b.local.medianScan, b.synd.medianScan)
            let y = ds.total / ls.total
            lines.append("| 5 | cold full scan (open + query), ms | \(f(ds.total * 1000)) | \(f(ls.total * 1000)) | \(ratio(y)) | ≤ 1.5x | \(verdict(y <= 1.5)) |")
            if let disk = b.syndDisk {
                let z = Double(disk.allocated) / Double(b.synd.databaseBytes)
                lines.append("| 6 | sequencer data folder after the load, its history kept (default --retain) / database size | \(mb(disk.allocated)) | \(mb(b.synd.databaseBytes)) | \(ratio(z)) | (history kept) | - |")
                if let aside = b.historyAside {
                    let h = Double(aside.disk.allocated) / Double(aside.databaseBytes)
                    lines.append("| 6 | the same, history aside (--retain 1, compacted) / database size | \(mb(aside.disk.allocated)) | \(mb(aside.databaseBytes)) | \(ratio(h)) | ≤ 1.2x | \(verdict(h <= 1.2)) |")
                }
            } else {
                lines.append("| 6 | sequencer data folder / database size | not read (--sequencer) | \(mb(b.synd.databaseBytes)) | | ≤ 1.2x | - |")
            }
        }
        if let m = r.memory {
            let limit: Int64 = 250_000_000
            lines.append("| 7 | \(mb(m.bytes)) transaction: client peak RSS | \(mb(m.synd.peak)) | \(mb(m.local.peak)) | | ≤ 250 MB | \(verdict(m.synd.peak <= limit)) |")
            if let before = m.sequencerBefore, let peak = m.sequencerPeak {
                lines.append("| 7 | \(mb(m.bytes)) transaction: sequencer peak RSS increase | \(mb(peak - before)) | | | ≤ 250 MB | \(verdict(peak - before <= limit)) |")
            } else {
                lines.append("| 7 | \(mb(m.bytes)) transaction: sequencer peak RSS increase | not read (--sequencer) | | | ≤ 250 MB | - |")
            }
        }
        if let c = r.capture {
            lines.append("| 8 | changeset capture, 1-row commits (p50 with / without) | | | \(ratio(c.one)) | ≤ 1.15x | \(verdict(c.one <= 1.15)) |")
            lines.append("| 8 | changeset capture, 100-row commits | | | \(ratio(c.hundred)) | ≤ 1.15x | \(verdict(c.hundred <= 1.15)) |")
        }
        if !notes.isEmpty { lines += [""] + notes }

        if r.commit != nil || r.dqlite != nil {
            lines += [
                "",
                "### 1-2. One writer, 1-row commits",
                "",
                "dqlite's `kvwrite`: `INSERT OR REPLACE INTO model(key, value)` of a random 32-letter key and a \(s.valueBytes)-byte value (half one letter, half random letters), each its own transaction"
                    + (r.commit.map { _ in ", \(s.transactions) commits on each after 20 of warm-up, one connection each in this process, local SQLite and SyndDB in turn" } ?? "")
                    + ". dqlite-benchmark runs after them, in its own process (its raft log is written with O_DSYNC). CPU per commit: the process named, over the timed commits (client: getrusage of this process around each commit; others: /proc/PID/stat utime+stime, \(f(BenchProc.ticksPerSecond)) ticks/s, so ±\(f(1e6 / BenchProc.ticksPerSecond / Double(s.transactions))) µs per commit).",
                "",
                "| system | p50 | p99 | commits/s | CPU per commit |",
                "|---|---:|---:|---:|---|",
            ]
            if let c = r.commit {
                let n = Double(s.transactions)
                lines.append("| local SQLite | \(f(c.local.p50)) | \(f(c.local.p99)) | \(f(c.local.perSecond)) | client \(f(c.localClientCPU / n * 1e6)) µs |")
                let sequencer = c.sequencerCPU.map { "sequencer \(f($0 / n * 1e6)) µs, " } ?? ""
                lines.append("| SyndDB | \(f(c.synd.p50)) | \(f(c.synd.p99)) | \(f(c.synd.perSecond)) | \(sequencer)client \(f(c.syndClientCPU / n * 1e6)) µs |")
            }
            if case .measured(let d)? = r.dqlite {
                let count = Double(d.latency.samples.count)
                lines.append("| dqlite 1 node (dqlite-benchmark, \(s.dqliteSeconds) s, \(d.latency.samples.count) writes, \(d.errors) errors) | \(f(d.latency.p50)) | \(f(d.latency.p99)) | \(f(d.perSecond)) | node and driver \(f(d.cpuSeconds / count * 1e6)) µs |")
            }
        }

        if !r.databases.isEmpty {
            lines += [
                "",
                "### 3. Writer processes, each on its own database",
                "",
                "Each process (`synd bench --worker solo`) commits the 1-row kvwrite transaction above to its own database for \(f1(s.seconds)) s, all from the same instant; the rows are counted afterwards. Commits per second in total"
                    + (s.rounds > 1 ? ", the median of \(s.rounds) rounds (local SQLite and SyndDB alternate; each round's figure in parentheses)" : "") + "; latency of each commit.",
                "",
                "| processes | local commits/s | local p50 | local p99 | SyndDB commits/s | SyndDB p50 | SyndDB p99 | SyndDB/local | sequencer CPU per commit |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for d in r.databases {
                let cpu = d.sequencerCPU.map { "\(f($0 / Double(d.syndCommits) * 1e6)) µs" } ?? "-"
                func rates(_ r: [Double]) -> String { r.count > 1 ? " (" + r.map(f).joined(separator: ", ") + ")" : "" }
                lines.append("| \(d.processes) | \(f(d.localPerSecond))\(rates(d.localRates)) | \(f(d.localLatency.p50)) | \(f(d.localLatency.p99)) | \(f(d.syndPerSecond))\(rates(d.syndRates)) | \(f(d.syndLatency.p50)) | \(f(d.syndLatency.p99)) | \(ratio(d.syndPerSecond / d.localPerSecond)) | \(cpu) |")
            }
        }

        if let b = r.bulk {
            let (l, d) = (b.local, b.synd)
            let (ls, ds) = (l.medianScan, d.medianScan)
            lines += [
                "",
                "### 4-6. Bulk load, cold full scan, disk use",
                "",
                "A worker process inserts \(mb(l.bytes)) into `t(id INTEGER PRIMARY KEY, payload BLOB)`: \(l.rows) rows of \(s.bulkRowBytes) random bytes, \(s.bulkRowsPerTransaction) rows per transaction, \(l.loads.count) time\(l.loads.count == 1 ? "" : "s") each into a new database (local SQLite and SyndDB alternate; median shown, each load in parentheses). "
                    + "Then \(s.scans) times each, alternating: \(b.cachesDropped ? "the OS page cache is dropped (`echo 1 > /proc/sys/vm/drop_caches`), then " : "")a new worker process opens the database and runs `SELECT count(*), sum(length(payload)) FROM t` (median shown). "
                    + (b.cachesDropped ? "SyndDB's client is cold (a new process) and so are the sequencer's disk reads; only the sequencer's own in-process caches stay warm."
                        : "The OS page cache was not dropped (--keep-os-cache, or the kernel refused): the local baseline reads its file from a warm OS cache, and so do the sequencer's reads; SyndDB's client is cold (a new process)."),
                "",
                "| | local SQLite | SyndDB | SyndDB/local |",
                "|---|---:|---:|---:|",
                "| load time, s (each load) | \(String(format: "%.2f", l.seconds)) (\(l.loads.map { String(format: "%.2f", $0) }.joined(separator: ", "))) | \(String(format: "%.2f", d.seconds)) (\(d.loads.map { String(format: "%.2f", $0) }.joined(separator: ", "))) | \(ratio(d.seconds / l.seconds)) |",
                "| load throughput, MB/s | \(f1(l.megabytesPerSecond)) | \(f1(d.megabytesPerSecond)) | \(ratio(d.megabytesPerSecond / l.megabytesPerSecond)) |",
                "| loading process peak RSS | \(mb(l.clientPeak)) | \(mb(d.clientPeak)) | |",
                "| database size (page_count × page_size; free pages) | \(mb(l.databaseBytes)) (\(l.freelist)) | \(mb(d.databaseBytes)) (\(d.freelist)) | |",
                "| cold scan: open, ms | \(f1(ls.open * 1000)) | \(f1(ds.open * 1000)) | |",
                "| cold scan: query, ms | \(f(ls.query * 1000)) | \(f(ds.query * 1000)) | \(ratio(ds.query / ls.query)) |",
                "| cold scan: open + query, ms (each run) | \(f(ls.total * 1000)) (\(l.scans.map { f($0.total * 1000) }.joined(separator: ", "))) | \(f(ds.total * 1000)) (\(d.scans.map { f($0.total * 1000) }.joined(separator: ", "))) | \(ratio(ds.total / ls.total)) |",
                "| on disk after the load | \(mb(b.localDisk.allocated)) (database and WAL) | \(b.syndDisk.map { mb($0.allocated) + " (sequencer folder)" } ?? "not read") | |",
            ]
            if let disk = b.syndDisk, let after = b.syndDiskAfterScans {
                lines.append("| sequencer folder after the scans | | \(mb(after.allocated)) | |")
                // Grouped by kind: "log/*.log", "log/*.pages", ...
                var kinds: [String: (files: Int, bytes: Int64)] = [:]
                for file in disk.files {
                    let folder = file.path.contains("/") ? String(file.path[..<file.path.lastIndex(of: "/")!]) + "/" : ""
                    let name = file.path.split(separator: "/").last.map(String.init) ?? file.path
                    let kind = folder + (name.contains(".") ? "*." + name.split(separator: ".").last! : name)
                    kinds[kind, default: (0, 0)].files += 1
                    kinds[kind, default: (0, 0)].bytes += file.allocated
                }
                let parts = kinds.sorted { $0.value.bytes > $1.value.bytes }.map { "`\($0.key)` \($0.value.files) file\($0.value.files == 1 ? "" : "s"), \(mb($0.value.bytes))" }
                lines += ["", "Sequencer folder after the load (allocated blocks; apparent size \(mb(disk.apparent))): " + parts.joined(separator: "; ") + "."]
                lines.append("The sequencer keeps --retain versions (default 10 000) for point-in-time reads and validators; the load made about \(l.rows / max(1, s.bulkRowsPerTransaction) + 1) versions, so none was pruned: the folder holds each version's changeset (the rows again) besides the pages.")
                if let aside = b.historyAside {
                    var kinds: [String: (files: Int, bytes: Int64)] = [:]
                    for file in aside.disk.files {
                        let name = file.path.split(separator: "/").last.map(String.init) ?? file.path
                        let kind = name.contains(".") ? "*." + name.split(separator: ".").last! : name
                        kinds[kind, default: (0, 0)].files += 1
                        kinds[kind, default: (0, 0)].bytes += file.allocated
                    }
                    let parts = kinds.sorted { $0.value.bytes > $1.value.bytes }.map { "`\($0.key)` \($0.value.files) file\($0.value.files == 1 ? "" : "s"), \(mb($0.value.bytes))" }
                    lines.append("History aside: the same load into another sequencer started with `--retain 1` (it keeps one version behind the head; older changesets and superseded images are let go and compaction gives their space back in the background), measured once the folder stopped shrinking, \(String(format: "%.1f", aside.settleSeconds)) s after the load: " + parts.joined(separator: "; ") + ". The newest log segment is allocated ahead of its writes, up to 8 MiB.")
                }
            }
            if let cpu = b.sequencerCPU {
                lines.append("Sequencer CPU during a load (median): \(String(format: "%.2f", cpu)) s (\(f(cpu / (Double(d.bytes) / 1e6) * 1e6)) µs per MB).")
            }
        }

        if let m = r.memory {
            lines += [
                "",
                "### 7. One \(mb(m.bytes)) transaction",
                "",
                "A worker process inserts \(mb(m.bytes)) (rows of \(s.bulkRowBytes) random bytes) in one transaction. RSS from /proc/PID/status: VmRSS before the transaction, VmHWM (peak) after it"
                    + (m.sequencerBefore != nil ? (m.peakReset ? "; the sequencer's peak was reset to its RSS first (`echo 5 > /proc/PID/clear_refs`)." : "; the sequencer's peak could not be reset, so it may be an earlier one.") : "."),
                "",
                "| | local SQLite | SyndDB |",
                "|---|---:|---:|",
                "| time, s | \(String(format: "%.2f", m.local.seconds)) | \(String(format: "%.2f", m.synd.seconds)) |",
                "| client RSS before | \(mb(m.local.before)) | \(mb(m.synd.before)) |",
                "| client peak RSS | \(mb(m.local.peak)) | \(mb(m.synd.peak)) |",
            ]
            if let before = m.sequencerBefore, let peak = m.sequencerPeak {
                lines.append("| sequencer RSS before, peak (increase) | | \(mb(before)), \(mb(peak)) (\(mb(peak - before))) |")
            }
        }
        return lines
    }
}
