import Foundation
import SyndDB
import SyndSQLite

/// Validation that keeps up (issue 11): a database of a given size is loaded
/// and snapshotted, one writer then makes small commits, and `synd validate
/// --from-snapshot` (its own process, as a user runs it) checks them. The
/// figure is validated batches per second next to the writer's commits per
/// second on the same history, on a small and a large database.
enum BenchValidation {
    struct Round {
        var commitsPerSecond: Double
        var validatedPerSecond: Double
        var seedingSeconds: Double
        var wholeTableChecks: Int
    }

    struct Case {
        var megabytes: Double
        var rows = 0
        var loadSeconds = 0.0
        var rounds: [Round] = []
        /// The old way, comparing every table after every batch (small database only).
        var everyBatch: Round?
        /// From the first batch: the load's batches and the small commits.
        var wholeHistory: Round?
    }

    static let rowBytes = 1000

    static func run(sizes: [Double], commits: Int, rounds: Int, dir: String, url: String) throws -> [Case] {
        var cases: [Case] = []
        for (n, megabytes) in sizes.enumerated() {
            var c = Case(megabytes: megabytes)
            let name = "bench-validate-\(getpid())-\(n)"
            let source = dir + "/validate-source-\(n).db"
            do {
                let local = try Connection(path: source)
                try local.execute("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF")
                try local.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT UNIQUE, v BLOB)")
                let insert = try local.prepare("INSERT INTO t VALUES (?, printf('key-%012d', ?), randomblob(?))")
                c.rows = max(1000, Int(megabytes * 1e6) / rowBytes)
                try local.transaction("IMMEDIATE") { for i in 1...c.rows { _ = try insert.run([i, i, rowBytes - 40]) } }
            }
            let started = ContinuousClock.now
            _ = try DatabaseTransfer.importFile(source, as: name, sequencer: url)
            c.loadSeconds = (ContinuousClock.now - started).seconds
            try? FileManager.default.removeItem(atPath: source)
            let writer = try Database.open(name, sequencer: url)
            let update = try writer.prepare("UPDATE t SET v = randomblob(?) WHERE id = ?")
            let insert = try writer.prepare("INSERT INTO t(k, v) VALUES (?, randomblob(?))")
            var rng = SplitMix64(seed: UInt64(17 + n))
            var inserted = 0
            func history() throws -> Double {
                let clock = ContinuousClock()
                return try clock.measure {
                    for _ in 0..<commits {
                        let r = rng.next()
                        if r % 10 == 0 {
                            inserted += 1
                            _ = try insert.run(["new-\(inserted)", 100 + Int(r % 900)])
                        } else {
                            _ = try update.run([100 + Int(r % 900), 1 + Int((r >> 16) % UInt64(c.rows))])
                        }
                    }
                }.seconds
            }
            if n == 0 {
                // First, while all of it is within the retention window: the same kind of
                // history checked the old way (every table after every batch), and the whole
                // history from batch 1.
                _ = try synd(["snapshot", "--sequencer", url, name])
                let seconds = try history()
                var old = try validate(name, url, extra: ["--full-every-batch"])
                old.commitsPerSecond = Double(commits) / seconds
                c.everyBatch = old
                var whole = try validate(name, url, extra: [], fromSnapshot: false)
                whole.commitsPerSecond = .nan
                c.wholeHistory = whole
            }
            for _ in 0..<rounds {
                _ = try synd(["snapshot", "--sequencer", url, name])
                let seconds = try history()
                var round = try validate(name, url, extra: [])
                round.commitsPerSecond = Double(commits) / seconds
                c.rounds.append(round)
            }
            cases.append(c)
        }
        return cases
    }

    /// Runs `synd validate --stats` in its own process and reads its figures.
    static func validate(_ name: String, _ url: String, extra: [String], fromSnapshot: Bool = true) throws -> Round {
        let output = try synd(["validate", "--sequencer", url, "--db", name, "--stats"] + (fromSnapshot ? ["--from-snapshot"] : []) + extra)
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("stats: ") }) else {
            throw BenchWriters.BenchError("synd validate printed no stats: \(output)")
        }
        // "stats: T s in all, S s seeding from the snapshot, R batches/s after it; F whole-table checks, I changed-row checks"
        let numbers = line.split(whereSeparator: { $0 == " " || $0 == "," || $0 == ";" }).compactMap { Double($0) }
        guard numbers.count >= 5 else { throw BenchWriters.BenchError("cannot read \(line)") }
        return Round(commitsPerSecond: 0, validatedPerSecond: numbers[2], seedingSeconds: numbers[1], wholeTableChecks: Int(numbers[3]))
    }

    @discardableResult
    static func synd(_ arguments: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        p.arguments = arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard p.terminationStatus == 0 else { throw BenchWriters.BenchError("synd \(arguments.joined(separator: " ")) failed: \(text)") }
        return text
    }

    static func report(_ cases: [Case], commits: Int, command: String, date: Date) -> [String] {
        func f(_ v: Double, _ digits: Int = 0) -> String { String(format: "%.\(digits)f", v) }
        var lines = [
            "## Validation that keeps up (issue 11)",
            "",
            "Command: `\(command)` (\(BenchCommand.build)). Machine: \(BenchCommand.machine()); \(ISO8601DateFormatter().string(from: date)).",
            "A database of rows of about \(rowBytes) bytes is imported (`synd import`) and snapshotted (`synd snapshot`); one writer then makes \(commits) commits of one row each (90% updates of a random row's 100-1000 byte value, 10% inserts) through the VFS, and `synd validate --from-snapshot --stats` checks them in its own process (signatures, chain, page images = changesets row by row). Validated batches per second are counted after the validator seeded its replicas from the snapshot (seeding shown apart). Each round is a new snapshot and new commits; medians (each round in parentheses).",
            "",
            "| database | writer commits/s | validated batches/s | validation vs commit rate | seeding from the snapshot | whole-table checks |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for c in cases {
            let commitRates = c.rounds.map(\.commitsPerSecond), rates = c.rounds.map(\.validatedPerSecond)
            let ratios = c.rounds.map { $0.validatedPerSecond / $0.commitsPerSecond }
            let each = { (v: [Double], d: Int) in v.map { f($0, d) }.joined(separator: ", ") }
            lines.append("| \(f(c.megabytes)) MB (\(c.rows) rows; import \(f(c.loadSeconds, 1)) s) | \(f(BenchIssue10.median(commitRates))) (\(each(commitRates, 0))) | \(f(BenchIssue10.median(rates))) (\(each(rates, 0))) | **\(f(BenchIssue10.median(ratios), 1))x** (\(each(ratios, 1))) | \(f(BenchIssue10.median(c.rounds.map(\.seedingSeconds)), 2)) s | \(c.rounds.map { String($0.wholeTableChecks) }.joined(separator: ", ")) |")
        }
        if let small = cases.first, let old = small.everyBatch {
            lines.append("| \(f(small.megabytes)) MB, every table after every batch (`--full-every-batch`, the old way) | \(f(old.commitsPerSecond)) | \(f(old.validatedPerSecond)) | \(f(old.validatedPerSecond / old.commitsPerSecond, 1))x | \(f(old.seedingSeconds, 2)) s | \(old.wholeTableChecks) |")
        }
        if let small = cases.first, let whole = small.wholeHistory {
            lines.append("| \(f(small.megabytes)) MB, the whole history from batch 1 (the import's batches too, no snapshot) | | \(f(whole.validatedPerSecond)) | | | \(whole.wholeTableChecks) |")
        }
        lines.append("")
        lines.append("Target: validation at least 5x the commit rate, on the small and the large database alike.")
        return lines
    }
}
