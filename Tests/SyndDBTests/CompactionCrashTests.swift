import Foundation
import Synchronization
import SyndDB
import Testing

/// A real sequencer with a short retention window and small segments, so that
/// it compacts all the time, killed with -9 again and again while databases
/// rewrite the same rows: every acknowledged commit survives, nothing never
/// written shows, and the store stays near the size of what reads can see.
@Suite struct CompactionCrashTests {
    @Test func aCompactingStoreKeepsEveryAcknowledgedCommitThroughKillNineAndStaysSmall() async throws {
        try await offPool {
            let dir = TemporaryDirectory()
            let sequencer = try SequencerProcess(directory: dir.path + "/seq", extraArguments: ["--retain", "8", "--segment-mb", "1"])
            let url = sequencer.url
            let names = (0..<2).map { uniqueName("compact\($0)") }
            for name in names {
                let setup = try Database.open(name, sequencer: url)
                try setup.execute("""
                    CREATE TABLE hot(id INTEGER PRIMARY KEY, pad BLOB); CREATE TABLE ledger(id INTEGER PRIMARY KEY);
                    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) INSERT INTO hot SELECT i, randomblob(2000) FROM n;
                    """)
            }
            // Rewrites five of the rows (superseding their pages) and records the commit.
            let loops = CommitLoops(names: names, url: url) { i in
                "BEGIN; UPDATE hot SET pad = randomblob(2000) WHERE id % 8 = \(i % 8); INSERT INTO ledger VALUES (\(i)); COMMIT"
            }
            // Kills paced by progress, not time (a loaded machine commits slowly): one after every
            // 100-250 more acknowledged commits, so each lands amid segments closing and being rewritten.
            func acked() -> Int { loops.acked.reduce(0, +) }
            let deadline = ContinuousClock.now + .seconds(180)
            for kill in 0..<5 {
                let target = acked() + Int.random(in: 100...250)
                while acked() < target, ContinuousClock.now < deadline { usleep(5_000) }
                sequencer.kill9()
                usleep(kill % 2 == 0 ? 50_000 : 500_000)
                try sequencer.restart()
            }
            // Then each writer commits 300 more: many more segments, and compaction after the last restart.
            let atLastRestart = loops.outcomes.withLock { $0.map(\.acked.count) }
            while ContinuousClock.now < deadline,
                loops.outcomes.withLock({ o in o.indices.contains { o[$0].acked.count < atLastRestart[$0] + 300 } }) {
                usleep(20_000)
            }
            loops.stop()

            var ro = DatabaseOptions()
            ro.readOnly = true
            var commits = 0
            for (index, name) in names.enumerated() {
                let o = loops.outcomes.withLock { $0[index] }
                commits += o.acked.count
                print("compaction kill -9 test, \(name): \(o.acked.count) acknowledged, \(o.uncertain.count) failed or unknown")
                #expect(o.acked.count >= atLastRestart[index] + 300, "\(name): 300 commits after the last restart within 3 minutes: \(o.errors.suffix(3))")
                let reader = try Database.open(name, sequencer: url, options: ro)
                let ledger = Set(try reader.query("SELECT id FROM ledger").map { $0[0].int64! })
                #expect(Set(o.acked).isSubset(of: ledger), "\(name): acknowledged commits lost: \(Set(o.acked).subtracting(ledger).sorted().prefix(10))")
                #expect(ledger.isSubset(of: Set(o.acked).union(o.uncertain)), "\(name): rows that were never written")
                #expect(try reader.scalar("SELECT count(*) FROM hot WHERE length(pad) = 2000") == .integer(40))
                #expect(try reader.scalar("PRAGMA integrity_check") == .text("ok"))
            }
            // Each commit wrote about 10 KB of pages and as much changeset: megabytes in all. What reads can
            // see is two databases of ~100 KB and 8 versions each. Closed files (the newest segment, allocated
            // ahead, aside) settle well under a few segments.
            let log = dir.path + "/seq/log"
            func closedBytes() throws -> Int {
                let all = try FileManager.default.contentsOfDirectory(atPath: log)
                let newest = all.filter { $0.hasSuffix(".log") }.max()
                return try all.filter { $0 != newest }.reduce(0) { $0 + ((try FileManager.default.attributesOfItem(atPath: log + "/" + $1)[.size] as? Int) ?? 0) }
            }
            var bytes = try closedBytes()
            for _ in 0..<50 {
                usleep(100_000)
                let now = try closedBytes()
                if now == bytes { break }
                bytes = now
            }
            print("compaction kill -9 test: \(commits) commits, \(bytes) bytes in closed files")
            #expect(bytes < 3 << 20, "\(bytes) bytes kept after \(commits) commits")
        }
    }
}
