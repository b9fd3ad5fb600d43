import Foundation
import SyndDB
import SyndSQLite
import Testing

/// Real SQLite through the VFS against a real `synd sequencer` process.
@Suite struct SQLiteThroughVFSTests {
    let dir = TemporaryDirectory()
    let sequencer: SequencerProcess

    init() async throws {
        let path = dir.path + "/seq"
        sequencer = try await offPool { try SequencerProcess(directory: path) }
    }

    @Test func createInsertUpdateDeleteSurviveReopen() async throws {
        try await offPool {
            let name = uniqueName("crud")
            do {
                let db = try Database.open(name, sequencer: sequencer.url)
                try db.execute("CREATE TABLE people(id INTEGER PRIMARY KEY, name TEXT, age INTEGER)")
                try db.execute("CREATE INDEX people_age ON people(age)")
                let insert = try db.prepare("INSERT INTO people(name, age) VALUES (?, ?)")
                for i in 0..<200 { try insert.run(["p\(i)", i % 90]) }
                try db.query("UPDATE people SET age = age + 1 WHERE id % 2 = 0")
                try db.query("DELETE FROM people WHERE id > ?", [150])
            }
            let again = try Database.open(name, sequencer: sequencer.url)
            #expect(try again.scalar("SELECT count(*) FROM people") == .integer(150))
            #expect(try again.scalar("SELECT age FROM people WHERE id = 2") == .integer(2))
            #expect(try again.scalar("SELECT age FROM people WHERE id = 3") == .integer(2))
            #expect(try again.scalar("SELECT count(*) FROM people WHERE age = 2") == .integer(4))  // ids 2, 3, 92, 93
            #expect(try again.scalar("PRAGMA integrity_check") == .text("ok"))
        }
    }

    @Test func rollbackSendsNothingAndLeavesNoTrace() async throws {
        try await offPool {
            let name = uniqueName("rollback")
            let db = try Database.open(name, sequencer: sequencer.url)
            try db.execute("CREATE TABLE t(x)")
            try db.execute("INSERT INTO t VALUES (1)")
            let before = db.statistics
            try db.execute("BEGIN; INSERT INTO t VALUES (2); INSERT INTO t VALUES (3); ROLLBACK")
            #expect(db.statistics.requests == before.requests)
            #expect(db.statistics.version == before.version)
            #expect(try db.query("SELECT x FROM t") == [[.integer(1)]])
            let reader = try Database.open(name, sequencer: sequencer.url, options: readOnly())
            #expect(try reader.query("SELECT x FROM t") == [[.integer(1)]])
        }
    }

    @Test func savepointsCommitOnlyWhatSurvives() async throws {
        try await offPool {
            let name = uniqueName("savepoint")
            let db = try Database.open(name, sequencer: sequencer.url)
            try db.execute("CREATE TABLE t(x)")
            let before = db.statistics
            try db.execute("""
                BEGIN;
                INSERT INTO t VALUES (1);
                SAVEPOINT a; INSERT INTO t VALUES (2);
                  SAVEPOINT b; INSERT INTO t VALUES (3); ROLLBACK TO b; RELEASE b;
                RELEASE a;
                SAVEPOINT c; INSERT INTO t VALUES (4); ROLLBACK TO c; RELEASE c;
                COMMIT;
                """)
            #expect(db.statistics.commits == before.commits + 1)
            let reader = try Database.open(name, sequencer: sequencer.url, options: readOnly())
            #expect(try reader.query("SELECT x FROM t ORDER BY x") == [[.integer(1)], [.integer(2)]])
        }
    }

    @Test func transactionLargerThanThePageCacheIsOneAtomicCommit() async throws {
        try await offPool {
            let name = uniqueName("spill")
            let db = try Database.open(name, sequencer: sequencer.url)
            try db.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, payload BLOB)")
            try db.execute("PRAGMA cache_size=10")  // pages; forces spills mid-transaction
            let before = db.statistics
            try db.transaction {
                let insert = try db.prepare("INSERT INTO big(payload) VALUES (randomblob(1000))")
                for _ in 0..<3000 { try insert.run() }
            }
            let after = db.statistics
            #expect(after.commits == before.commits + 1)
            #expect(after.requests == before.requests + 1)
            // A spilled transaction that rolls back leaves the remote untouched.
            try db.execute("BEGIN")
            try db.execute("DELETE FROM big WHERE id % 2 = 0")
            try db.execute("INSERT INTO big(payload) SELECT randomblob(1000) FROM big")
            try db.execute("ROLLBACK")
            #expect(db.statistics.requests == after.requests)
            #expect(try db.scalar("SELECT count(*) FROM big") == .integer(3000))
            let reader = try Database.open(name, sequencer: sequencer.url, options: readOnly())
            #expect(try reader.scalar("SELECT count(*) FROM big") == .integer(3000))
            #expect(try reader.scalar("PRAGMA integrity_check") == .text("ok"))
        }
    }

    @Test func vacuumTruncatesInTheSameCommit() async throws {
        try await offPool {
            let name = uniqueName("vacuum")
            let db = try Database.open(name, sequencer: sequencer.url)
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB)")
            try db.execute("WITH RECURSIVE series(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM series WHERE value < 500) INSERT INTO t(payload) SELECT randomblob(2000) FROM series")
            let full = try db.scalar("PRAGMA page_count")!.int64!
            try db.execute("DELETE FROM t WHERE id > 10")
            let before = db.statistics
            try db.execute("VACUUM")
            #expect(db.statistics.commits == before.commits + 1)
            let shrunk = try db.scalar("PRAGMA page_count")!.int64!
            #expect(shrunk < full / 10)
            let reader = try Database.open(name, sequencer: sequencer.url, options: readOnly())
            #expect(try reader.scalar("PRAGMA page_count") == .integer(shrunk))
            #expect(try reader.scalar("SELECT count(*) FROM t") == .integer(10))
            #expect(try reader.scalar("PRAGMA integrity_check") == .text("ok"))
            // Growing again after truncation reads fresh pages, not the old ones.
            try db.execute("WITH RECURSIVE series(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM series WHERE value < 100) INSERT INTO t(payload) SELECT zeroblob(2000) FROM series")
            #expect(try reader.scalar("PRAGMA integrity_check") == .text("ok"))
            #expect(try reader.scalar("SELECT count(*) FROM t") == .integer(110))
        }
    }

    @Test(arguments: [1024, 4096, 65536])
    func pageSizes(pageSize: Int) async throws {
        try await offPool {
            let name = uniqueName("pagesize\(pageSize)")
            var options = DatabaseOptions()
            options.pageSize = pageSize
            do {
                let db = try Database.open(name, sequencer: sequencer.url, options: options)
                try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
                try db.execute("WITH RECURSIVE series(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM series WHERE value < 400) INSERT INTO t(v) SELECT printf('%0500d', value) FROM series")
                #expect(try db.scalar("PRAGMA page_size") == .integer(Int64(pageSize)))
            }
            let again = try Database.open(name, sequencer: sequencer.url)
            #expect(try again.scalar("PRAGMA page_size") == .integer(Int64(pageSize)))
            #expect(try again.scalar("SELECT count(*) FROM t") == .integer(400))
            #expect(try again.scalar("PRAGMA integrity_check") == .text("ok"))
        }
    }

    @Test func reopenInANewProcessSeesIdenticalData() async throws {
        try await offPool {
            let name = uniqueName("newprocess")
            let expected: [[Value]]
            do {
                let db = try Database.open(name, sequencer: sequencer.url)
                try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, r REAL, b BLOB)")
                try db.execute("WITH RECURSIVE series(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM series WHERE value < 300) INSERT INTO t(v, r, b) SELECT 'row' || value, value / 3.0, randomblob(8) FROM series")
                expected = try db.query("SELECT id, v, r, hex(b) FROM t ORDER BY id")
            }
            let run = try runSynd(["sql", "--sequencer", sequencer.url, "--read-only", name,
                                   "SELECT id, v, r, hex(b) FROM t ORDER BY id", "PRAGMA integrity_check"])
            #expect(run.status == 0, "\(run.error)")
            let lines = run.output.split(separator: "\n").map(String.init)
            #expect(lines.count == expected.count + 1)
            #expect(Array(lines.dropLast()) == expected.map { $0.map(\.description).joined(separator: "\t") })
            #expect(lines.last == "ok")
        }
    }

    @Test func twoDatabasesAndAReaderInOneProcess() async throws {
        try await offPool {
            let a = try Database.open(uniqueName("two-a"), sequencer: sequencer.url)
            let bName = uniqueName("two-b")
            let b = try Database.open(bName, sequencer: sequencer.url)
            try a.execute("CREATE TABLE t(x); INSERT INTO t VALUES ('a')")
            try b.execute("CREATE TABLE t(x); INSERT INTO t VALUES ('b')")
            let reader = try Database.open(bName, sequencer: sequencer.url, options: readOnly())
            #expect(try a.scalar("SELECT x FROM t") == .text("a"))
            #expect(try reader.scalar("SELECT x FROM t") == .text("b"))
            try b.execute("INSERT INTO t VALUES ('b2')")
            #expect(try reader.scalar("SELECT count(*) FROM t") == .integer(2))
            #expect(try a.scalar("SELECT count(*) FROM t") == .integer(1))
        }
    }

    @Test func aSmallPageCacheStillServesEveryRead() async throws {
        try await offPool {
            let name = uniqueName("smallcache")
            do {
                let db = try Database.open(name, sequencer: sequencer.url)
                try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
                try db.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1500) INSERT INTO t SELECT i, zeroblob(3000) FROM s")
            }
            var options = DatabaseOptions()
            options.readOnly = true
            options.cacheMB = 1  // far smaller than the database: the cache turns over
            let reader = try Database.open(name, sequencer: sequencer.url, options: options)
            for i in stride(from: 1, through: 1500, by: 37) {
                #expect(try reader.scalar("SELECT length(v) FROM t WHERE id = ?", [i]) == .integer(3000))
            }
            #expect(try reader.scalar("PRAGMA integrity_check") == .text("ok"))
        }
    }

    @Test func walModeIsRefusedWithAReason() async throws {
        try await offPool {
            let db = try Database.open(uniqueName("wal"), sequencer: sequencer.url)
            #expect {
                try db.execute("PRAGMA journal_mode=WAL")
            } throws: { error in
                "\(error)".contains("journal_mode=WAL is not supported")
            }
            try db.execute("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
            #expect(try db.scalar("SELECT x FROM t") == .integer(1))
        }
    }

    @Test func synchronousOffStillCommitsAtomically() async throws {
        try await offPool {
            let name = uniqueName("syncoff")
            let db = try Database.open(name, sequencer: sequencer.url)
            try db.execute("PRAGMA synchronous=OFF; CREATE TABLE t(x)")
            let before = db.statistics
            try db.execute("BEGIN; INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); COMMIT")
            #expect(db.statistics.commits == before.commits + 1)
            let reader = try Database.open(name, sequencer: sequencer.url, options: readOnly())
            #expect(try reader.scalar("SELECT count(*) FROM t") == .integer(2))
        }
    }

    func readOnly() -> DatabaseOptions {
        var o = DatabaseOptions()
        o.readOnly = true
        return o
    }
}
