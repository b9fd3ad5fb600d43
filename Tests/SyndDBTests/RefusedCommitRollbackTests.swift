import Foundation
import SyndDB
import SyndSQLite
import Testing

/// A refused COMMIT is rolled back by SQLite, which writes the transaction's
/// original pages back and syncs. That playback must never become a version,
/// in either locking mode: the chaos checker saw row-less versions where it did
/// (in exclusive mode SQLite's own change counter lags the version, so page 1
/// of the playback did not look like the committed page 1).
@Suite struct RefusedCommitRollbackTests {
    @Test(arguments: ["NORMAL", "EXCLUSIVE"], ["MEMORY", "DELETE", "PERSIST"])
    func aRefusedCommitsRollbackCommitsNothing(lockingMode: String, journalMode: String) async throws {
        try await offPool {
            let dir = TemporaryDirectory()
            // A 1 MiB batch limit refuses the big transaction below for sure.
            let sequencer = try SequencerProcess(directory: dir.path + "/seq", extraArguments: ["--max-batch-mb", "1"])
            let name = uniqueName("refusedrollback")
            let db = try Database.open(name, sequencer: sequencer.url)
            try db.execute("PRAGMA locking_mode=\(lockingMode)")
            try db.execute("PRAGMA journal_mode=\(journalMode)")
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
            // Several commits first: in exclusive mode only the first moves SQLite's change counter.
            for i in 0..<5 { try db.execute("INSERT INTO t(v) VALUES ('row \(i)')") }
            for attempt in 0..<2 {
                let before = db.statistics.version
                // Grows the file (page 1's header changes) past the batch limit.
                #expect(throws: SQLiteError.self, "attempt \(attempt)") {
                    try db.execute("BEGIN")
                    try db.execute("UPDATE t SET v = 'changed' WHERE id = 1")
                    try db.execute("INSERT INTO t(v) VALUES (zeroblob(1500000))")
                    try db.execute("COMMIT")
                }
                if !db.connection.isAutocommit { try db.execute("ROLLBACK") }
                #expect(db.statistics.version == before, "the rollback of attempt \(attempt) committed \(db.statistics.version - before) version(s)")
                try db.execute("INSERT INTO t(v) VALUES ('after \(attempt)')")
                #expect(db.statistics.version == before + 1)
            }
            let other = try Database.open(name, sequencer: sequencer.url)
            #expect(try other.scalar("PRAGMA synddb_version")?.string == String(db.statistics.version))
            #expect(try other.query("SELECT v FROM t WHERE id = 1") == [[.text("row 0")]])
            #expect(try other.query("SELECT count(*) FROM t") == [[.integer(7)]])
            let validated = try runSynd(["validate", "--sequencer", sequencer.url, "--db", name])
            #expect(validated.status == 0, "\(validated.output)\(validated.error)")
        }
    }
}
