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
            struct Outcome { var acked: [Int64] = []; var uncertain: [Int64] = []; var errors: [String] = []; var opened = false }
            let stop = Mutex(false)
            let outcomes = Mutex([Outcome](repeating: Outcome(), count: names.count))
            let writers = names.enumerated().map { index, name in
                Thread {
                    var options = DatabaseOptions()
                    options.timeoutMs = 1000
                    guard let db = try? Database.open(name, sequencer: url, options: options) else {
                        outcomes.withLock { $0[index].errors.append("cannot open"); $0[index].opened = true }
                        return
                    }
                    outcomes.withLock { $0[index].opened = true }
                    var i: Int64 = 0
                    while !stop.withLock({ $0 }) {
                        i += 1
                        do {
                            // Both tables in one transaction: a partial batch would show as a mismatch.
                            try db.execute("BEGIN; INSERT INTO a VALUES (\(i), randomblob(2000)); INSERT INTO b VALUES (\(i), randomblob(2000)); COMMIT")
                            outcomes.withLock { $0[index].acked.append(i) }
                        } catch {
                            if !db.connection.isAutocommit { try? db.execute("ROLLBACK") }
                            outcomes.withLock { $0[index].uncertain.append(i); $0[index].errors.append("\(error)") }
                            usleep(20_000)
                        }
                    }
                }
            }
            for w in writers { w.start() }
            for _ in 0..<1000 where !outcomes.withLock({ $0.allSatisfy(\.opened) }) { usleep(10_000) }
            for kill in 0..<6 {
                usleep(UInt32.random(in: 150_000...400_000))
                sequencer.kill9()
                usleep(kill % 2 == 0 ? 50_000 : 1_200_000)
                try sequencer.restart()
            }
            // Each writer must commit again after the last restart (bounded wait: loaded machines are slow).
            let atLastRestart = outcomes.withLock { $0.map(\.acked.count) }
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline,
                outcomes.withLock({ o in o.indices.contains { o[$0].acked.count <= atLastRestart[$0] + 2 } }) {
                usleep(50_000)
            }
            stop.withLock { $0 = true }
            while writers.contains(where: { !$0.isFinished }) { usleep(10_000) }

            var ro = DatabaseOptions()
            ro.readOnly = true
            for (index, name) in names.enumerated() {
                let o = outcomes.withLock { $0[index] }
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
