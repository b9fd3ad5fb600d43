import Foundation
import Synchronization
import SyndDB
import Testing

/// kill -9 of the sequencer while several databases commit at once, so that
/// crashes land inside shared (group-committed) fsyncs: every acknowledged
/// commit of every database survives, no partial batch shows, and every
/// database's hash chain validates.
@Suite struct GroupCommitCrashTests {
    @Test func acknowledgedCommitsOfManyDatabasesSurviveKillNine() async throws {
        try await offPool {
            let dir = TemporaryDirectory()
            let sequencer = try SequencerProcess(directory: dir.path + "/seq")
            let url = sequencer.url
            let names = (0..<4).map { uniqueName("group\($0)") }
            for name in names {
                let setup = try Database.open(name, sequencer: url)
                try setup.execute("CREATE TABLE a(id INTEGER PRIMARY KEY, pad BLOB); CREATE TABLE b(id INTEGER PRIMARY KEY, pad BLOB)")
            }
            // Both tables in one transaction: a partial batch would show as a mismatch.
            let loops = CommitLoops(names: names, url: url) { i in
                "BEGIN; INSERT INTO a VALUES (\(i), randomblob(2000)); INSERT INTO b VALUES (\(i), randomblob(2000)); COMMIT"
            }
            for kill in 0..<6 {
                usleep(UInt32.random(in: 150_000...400_000))
                sequencer.kill9()
                usleep(kill % 2 == 0 ? 50_000 : 1_200_000)
                try sequencer.restart()
            }
            // Each writer must commit again after the last restart (bounded wait: loaded machines are slow).
            let atLastRestart = loops.outcomes.withLock { $0.map(\.acked.count) }
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline,
                loops.outcomes.withLock({ o in o.indices.contains { o[$0].acked.count <= atLastRestart[$0] + 2 } }) {
                usleep(50_000)
            }
            loops.stop()

            var ro = DatabaseOptions()
            ro.readOnly = true
            for (index, name) in names.enumerated() {
                let o = loops.outcomes.withLock { $0[index] }
                print("group commit kill -9 test, \(name): \(o.acked.count) acknowledged, \(o.uncertain.count) failed or unknown")
                #expect(o.acked.count > atLastRestart[index], "\(name): no commit after the last restart: \(o.errors.suffix(3))")
                let reader = try Database.open(name, sequencer: url, options: ro)
                let a = Set(try reader.query("SELECT id FROM a").map { $0[0].int64! })
                let b = Set(try reader.query("SELECT id FROM b").map { $0[0].int64! })
                #expect(a == b, "\(name): a partial batch is visible")
                #expect(Set(o.acked).isSubset(of: a), "\(name): acknowledged commits lost: \(Set(o.acked).subtracting(a).sorted().prefix(10))")
                #expect(a.isSubset(of: Set(o.acked).union(o.uncertain)), "\(name): rows that were never written")
                #expect(try reader.scalar("PRAGMA integrity_check") == .text("ok"))
                let validate = try runSynd(["validate", "--sequencer", url, "--db", name])
                #expect(validate.status == 0, "\(name): \(validate.output) \(validate.error)")
            }
        }
    }
}
