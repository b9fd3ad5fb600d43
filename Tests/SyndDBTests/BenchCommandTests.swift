import Foundation
import Testing

/// `synd bench` runs its issue 10 workloads at small sizes and prints every
/// figure's row. Functional only: the figures themselves are not checked.
@Suite struct BenchCommandTests {
    @Test func issue10WorkloadsRunAndPrintTheirRows() async throws {
        try await offPool {
            let output = FileManager.default.temporaryDirectory.appendingPathComponent(uniqueName("bench-report") + ".md").path
            defer { try? FileManager.default.removeItem(atPath: output) }
            let run = try runSynd([
                "bench", "--workloads", "databases,bulk,memory", "--database-writers", "2", "--writer-seconds", "0.5",
                "--bulk-mb", "1", "--memory-mb", "1", "--scans", "1", "--keep-os-cache", "--output", output,
            ])
            #expect(run.status == 0, "synd bench failed: \(run.error.suffix(3000))")
            for row in [
                "## Sequencer performance (issue 10)",
                "| 3 | 2 writers on 2 databases, commits/s |",
                "| 4 | bulk load 1.0 MB, MB/s |",
                "| 5 | cold full scan (open + query), ms |",
                "| load time, s (each load) |",
                "| 6 | sequencer data folder after the load, its history kept (default --retain) / database size |",
                "| 6 | the same, history aside (--retain 1, compacted) / database size |",
                "| 7 | 1.0 MB transaction: client peak RSS |",
                "| 7 | 1.0 MB transaction: sequencer peak RSS increase |",
                "### 3. Writer processes, each on its own database",
                "### 4-6. Bulk load, cold full scan, disk use",
                "### 7. One 1.0 MB transaction",
            ] {
                #expect(run.output.contains(row), "missing '\(row)' in:\n\(run.output)")
            }
            // The sequencer was a process of the bench's own, so its CPU time was read.
            let databasesRow = run.output.split(separator: "\n").first { $0.hasPrefix("| 2 | ") }
            #expect(databasesRow?.hasSuffix(" µs |") == true, "no sequencer CPU per commit in \(databasesRow ?? "nil")")
            #expect(try String(contentsOfFile: output, encoding: .utf8) == run.output)
        }
    }

    @Test func aGivenSequencerIsUsedAndItsProcessFiguresAreNotRead() async throws {
        try await offPool {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(uniqueName("bench-sequencer")).path
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let sequencer = try SequencerProcess(directory: directory)
            defer { sequencer.process.terminate() }
            let run = try runSynd([
                "bench", "--workloads", "memory", "--memory-mb", "1", "--sequencer", sequencer.url,
            ])
            #expect(run.status == 0, "synd bench failed: \(run.error.suffix(3000))")
            #expect(run.output.contains("Sequencer: \(sequencer.url) (given"))
            #expect(run.output.contains("| 7 | 1.0 MB transaction: sequencer peak RSS increase | not read (--sequencer) |"))
        }
    }

    /// The transfer workload imports and exports a small file and reports both next to sqlite3 .backup.
    @Test func transferWorkloadReportsImportAndExportNextToBackup() async throws {
        try await offPool {
            let run = try runSynd(["bench", "--workloads", "transfer", "--transfer-mb", "2"])
            #expect(run.status == 0, "synd bench failed: \(run.error.suffix(3000))")
            #expect(run.output.contains("## Moving databases in and out (issue 11)"), "\(run.output)")
            for row in ["| local backup (baseline) |", "| synd import (SQL, sealed commits, changesets) |", "| synd export (pages of one version, integrity_check) |"] {
                #expect(run.output.contains(row), "\(row) missing: \(run.output)")
            }
            #expect(!run.output.contains("## Sequencer performance"), "only the workload asked for runs")
        }
    }

    /// The followers workload measures lag on a follower in another process and its reads next to local SQLite.
    @Test func followersWorkloadReportsLagAndReads() async throws {
        try await offPool {
            let run = try runSynd(["bench", "--workloads", "followers", "--transactions", "60"])
            #expect(run.status == 0, "synd bench failed: \(run.error.suffix(3000))")
            #expect(run.output.contains("## Followers (issue 11)"), "\(run.output)")
            #expect(run.output.contains("| replica visibility lag p50 / p99, ms |"), "\(run.output)")
            #expect(run.output.contains("| read transaction on a follower p50 / p99, µs (vs local SQLite) |"), "\(run.output)")
            #expect(run.output.contains("Requests the follower made during its 60 timed reads: 0."), "an up-to-date follower reads without requests: \(run.output)")
        }
    }

    @Test func anUnknownWorkloadIsRefused() async throws {
        try await offPool {
            let run = try runSynd(["bench", "--workloads", "single,nonsense"])
            #expect(run.status != 0)
            #expect(run.error.contains("--workloads"))
        }
    }
}
