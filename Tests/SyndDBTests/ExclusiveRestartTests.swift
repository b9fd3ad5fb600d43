import Foundation
import SyndDB
import SyndSQLite
import Testing

/// Exclusive locking mode across a sequencer restart: a COMMIT refused
/// because the lease went with the old process must leave no trace, not even
/// a version that changes nothing (the chaos checker saw one).
@Suite struct ExclusiveRestartTests {
    @Test func aCommitRefusedAcrossASequencerRestartLeavesNoEmptyVersion() async throws {
        try await offPool {
            let dir = TemporaryDirectory()
            let sequencer = try SequencerProcess(directory: dir.path + "/seq")
            let name = uniqueName("exrestart")
            var options = DatabaseOptions()
            options.timeoutMs = 500
            let db = try Database.open(name, sequencer: sequencer.url, options: options)
            try db.execute("PRAGMA locking_mode=EXCLUSIVE")
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            try db.execute("INSERT INTO t(v) VALUES ('a')")
            let before = db.statistics.version
            try db.execute("BEGIN IMMEDIATE")
            try db.execute("INSERT INTO t(v) VALUES ('lost')")
            sequencer.kill9()
            usleep(200_000)
            #expect(throws: SQLiteError.self) { try db.execute("COMMIT") }
            if !db.connection.isAutocommit { try? db.execute("ROLLBACK") }
            try sequencer.restart()
            var wrote = false
            for _ in 0..<100 where !wrote {
                wrote = (try? db.execute("INSERT INTO t(v) VALUES ('b')")) != nil
                if !wrote { usleep(100_000) }
            }
            #expect(wrote)
            #expect(try db.query("SELECT v FROM t ORDER BY id") == [[.text("a")], [.text("b")]])
            #expect(db.statistics.version == before + 1, "versions \(before) -> \(db.statistics.version) for one transaction")
        }
    }
}
