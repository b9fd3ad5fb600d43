import Foundation
import SyndDB
import SyndSQLite

/// Moving a database in and out (issue 11): `synd import` and `synd export`
/// of one SQLite file next to `sqlite3 .backup` of the same file, the local
/// copy a user would otherwise make. Rounds alternate; medians are shown.
enum BenchTransfer {
    struct Results {
        var bytes = 0
        var rows = 0
        var backup: [Double] = []
        var imports: [Double] = []
        var exports: [Double] = []
        var commitsPerImport = 0
        var baseline = ""
    }

    static func run(megabytes: Double, rowBytes: Int, rounds: Int, dir: String, url: String) throws -> Results {
        var r = Results()
        let source = dir + "/transfer-source.db"
        do {
            let local = try Connection(path: source)
            try local.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB)")
            let insert = try local.prepare("INSERT INTO t(payload) VALUES (randomblob(?))")
            r.rows = max(1, Int(megabytes * 1e6) / rowBytes)
            try local.transaction("IMMEDIATE") { for _ in 0..<r.rows { _ = try insert.run([rowBytes]) } }
        }
        r.bytes = Int((try? FileManager.default.attributesOfItem(atPath: source)[.size] as? Int) ?? 0)
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/sqlite3") else {
            throw BenchWriters.BenchError("the transfer workload compares with /usr/bin/sqlite3 .backup: apt-get install sqlite3")
        }
        r.baseline = "`sqlite3 SOURCE \".backup COPY\"` (Debian's sqlite3, its own process)"
        let clock = ContinuousClock()
        for round in 0..<rounds {
            let copy = dir + "/transfer-backup-\(round).db"
            r.backup.append(try clock.measure {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
                p.arguments = [source, ".backup '\(copy)'"]
                try p.run()
                p.waitUntilExit()
                guard p.terminationStatus == 0 else { throw BenchWriters.BenchError("sqlite3 .backup failed (\(p.terminationStatus))") }
            }.seconds)
            try? FileManager.default.removeItem(atPath: copy)

            let name = "bench-transfer-\(getpid())-\(round)"
            var summary: DatabaseTransfer.ImportSummary?
            r.imports.append(try clock.measure {
                summary = try DatabaseTransfer.importFile(source, as: name, sequencer: url)
            }.seconds)
            r.commitsPerImport = summary?.commits ?? 0
            let exported = dir + "/transfer-export-\(round).db"
            r.exports.append(try clock.measure {
                _ = try DatabaseTransfer.export(name, sequencer: url, to: exported)
            }.seconds)
            try? FileManager.default.removeItem(atPath: exported)
        }
        return r
    }

    static func report(_ r: Results, command: String, date: Date) -> [String] {
        let mb = Double(r.bytes) / 1e6
        let backup = BenchIssue10.median(r.backup), imports = BenchIssue10.median(r.imports), exports = BenchIssue10.median(r.exports)
        func each(_ v: [Double]) -> String { v.map { String(format: "%.2f", $0) }.joined(separator: ", ") }
        func line(_ label: String, _ s: Double, _ all: [Double], ratio: Bool) -> String {
            "| \(label) | \(String(format: "%.2f", s)) (\(each(all))) | \(String(format: "%.1f", mb / s)) | \(ratio ? String(format: "%.2fx", backup / s) : "1.00x") |"
        }
        return [
            "## Moving databases in and out (issue 11)",
            "",
            "Command: `\(command)` (\(BenchCommand.build)). Machine: \(BenchCommand.machine()); \(ISO8601DateFormatter().string(from: date)).",
            "A local SQLite file of \(String(format: "%.1f", mb)) MB (\(r.rows) rows of random blobs) is uploaded with `synd import` (\(r.commitsPerImport) commits of about 8 MB) to a sequencer on loopback, then written back with `synd export`; next to \(r.baseline) of the same file. \(r.backup.count) rounds, medians (each round in parentheses).",
            "",
            "| | seconds | MB/s | throughput vs the local backup |",
            "|---|---:|---:|---:|",
            line("local backup (baseline)", backup, r.backup, ratio: false),
            line("synd import (SQL, sealed commits, changesets)", imports, r.imports, ratio: true),
            line("synd export (pages of one version, integrity_check)", exports, r.exports, ratio: true),
        ]
    }
}
