import Foundation
import SyndDB
import SyndSQLite

/// Followers (issue 11): how soon a commit is visible on a follower in
/// another process, and what a read transaction costs on a follower next to
/// the same read on a local SQLite file.
enum BenchFollowers {
    struct Results {
        var commits = 0
        /// Commit acknowledged (writer) to visible (follower), microseconds; one per commit.
        var lags: [Double] = []
        var followerReads = BenchCommand.Figures(samples: [])
        var localReads = BenchCommand.Figures(samples: [])
        var requestsDuringReads = 0
    }

    static func run(commits: Int, reads: Int, dir: String, url: String) throws -> Results {
        var r = Results()
        r.commits = commits
        let name = "bench-follow-\(getpid())"
        let writer = try Database.open(name, sequencer: url)
        try writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); INSERT INTO t VALUES (0, zeroblob(100))")
        let worker = try BenchWriters.Worker(role: "follow", id: 0, target: .synd(name: name, url: url))
        _ = try worker.expect("ready")
        try worker.send("watch \(commits)")
        let insert = try writer.prepare("INSERT INTO t VALUES (?, randomblob(100))")
        var acknowledged = [Int64](repeating: 0, count: commits + 1)
        var rng = SplitMix64(seed: 11)
        for i in 1...commits {
            _ = try insert.run([i])
            acknowledged[i] = chaosNow()
            // Spaced, so that each commit is its own batch on the stream.
            usleep(UInt32(1000 + rng.next() % 2000))
        }
        let fields = try worker.expect("done")
        try worker.finish()
        var visible = [Int64](repeating: 0, count: commits + 1)
        for f in fields {
            let parts = f.split(separator: ":")
            guard parts.count == 2, let id = Int(parts[0]), let t = Int64(parts[1]), id >= 1, id <= commits else { continue }
            visible[id] = t
        }
        guard !visible.dropFirst().contains(0) else { throw BenchWriters.BenchError("the follower did not report every row") }
        r.lags = (1...commits).map { Double(visible[$0] - acknowledged[$0]) / 1000 }

        // Point reads, each its own read transaction: a follower in this process next to a local file.
        let local = try Connection(path: dir + "/follow-local.sqlite")
        try local.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL")
        try local.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
        try local.transaction("IMMEDIATE") { for i in 0...commits { try local.query("INSERT OR REPLACE INTO t VALUES (?, randomblob(100))", [i]) } }
        var options = DatabaseOptions()
        options.follow = true
        let follower = try Database.open(name, sequencer: url, options: options)
        let points = [try local.prepare("SELECT v FROM t WHERE id = ?"), try follower.prepare("SELECT v FROM t WHERE id = ?")]
        for p in points { for i in 0...commits { _ = try p.run([i]) } }  // warm
        let before = follower.statistics.requests
        var samples: [[Double]] = [[], []]
        for i in 0..<reads {
            for (side, p) in points.enumerated() {
                samples[side] += BenchCommand.time(1) { _ in _ = try? p.run([(i * 7919) % (commits + 1)]) }.samples
            }
        }
        r.requestsDuringReads = follower.statistics.requests - before
        r.localReads = BenchCommand.Figures(samples: samples[0])
        r.followerReads = BenchCommand.Figures(samples: samples[1])
        return r
    }

    static func report(_ r: Results, command: String, date: Date) -> [String] {
        let lags = BenchCommand.Figures(samples: r.lags)
        func us(_ x: Double) -> String { String(format: "%.1f", x) }
        func ms(_ x: Double) -> String { String(format: "%.2f", x / 1000) }
        let ratio = r.followerReads.p50 / r.localReads.p50
        return [
            "## Followers (issue 11)",
            "",
            "Command: `\(command)` (\(BenchCommand.build)). Machine: \(BenchCommand.machine()); \(ISO8601DateFormatter().string(from: date)).",
            "A writer in this process commits \(r.commits) one-row transactions, 1 to 3 ms apart; a follower (`follow=1`) in another process reads `max(id)` in a loop and notes when each row appears. Lag: the writer's commit acknowledged to the row visible there (CLOCK_MONOTONIC, one machine). Then point reads (`SELECT v FROM t WHERE id = ?`, each its own read transaction) alternate on a warm follower in this process and on a local SQLite file (WAL).",
            "",
            "| figure | SyndDB | baseline | ratio | target | |",
            "|---|---:|---:|---:|---|---|",
            "| replica visibility lag p50 / p99, ms | \(ms(lags.p50)) / \(ms(lags.p99)) | | | p99 ≤ 5 ms | \(lags.p99 <= 5000 ? "met" : "missed") |",
            "| read transaction on a follower p50 / p99, µs (vs local SQLite) | \(us(r.followerReads.p50)) / \(us(r.followerReads.p99)) | \(us(r.localReads.p50)) / \(us(r.localReads.p99)) | \(String(format: "%.2fx", ratio)) | ≤ 1.2x | \(ratio <= 1.2 ? "met" : "missed") |",
            "",
            "Requests the follower made during its \(r.followerReads.samples.count) timed reads: \(r.requestsDuringReads).",
        ]
    }
}
