import CSQLite
import Foundation
import SyndDB
import SyndProtocol
import SyndSQLite
import SyndValidator
import Testing

/// COMMIT tells the truth, and a writer never keeps stale state: answers that
/// prove nothing, late arrivals, lease lapses in exclusive locking mode, and
/// commits that cannot be captured or made atomic.
@Suite struct CommitOutcomeTests {
    /// An answer that is an error although the batch was applied (a proxy's
    /// HTTP 503 is UNKNOWN; INTERNAL; a deadline; UNAVAILABLE) is no proof of a
    /// rollback: the client fences the attempt, looks it up, and reports the
    /// commit as applied.
    @Test(arguments: [GRPCStatusCode.unknown, .internal, .unavailable, .deadlineExceeded])
    func anErrorAnswerToAnAppliedCommitIsReportedAsApplied(code: GRPCStatusCode) async throws {
        let failures = FailureSwitch()
        try await withEmbeddedSequencer(configure: { config in
            config.commitAnswerFault = { _ in failures.take() }
        }) { server in
            let name = uniqueName("answer")
            let db = try Database.open(name, sequencer: server.url)
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            failures.arm(SequencerError(code, "injected: answer lost after the batch was applied"))
            try db.execute("INSERT INTO t(v) VALUES ('applied')")
            #expect(try db.query("SELECT v FROM t") == [[.text("applied")]])
            try db.execute("INSERT INTO t(v) VALUES ('next')")
            var ro = DatabaseOptions()
            ro.readOnly = true
            let reader = try Database.open(name, sequencer: server.url, options: ro)
            #expect(try reader.query("SELECT v FROM t ORDER BY id") == [[.text("applied")], [.text("next")]])
            let failure = try LedgerTests.validate(server.service.store, name)
            #expect(failure == nil, "\(failure?.description ?? "")")
        }
    }

    /// A refusal before anything was applied is still reported as a rollback,
    /// even with a status that proves nothing by itself (after the lookup).
    @Test func anInternalErrorBeforeApplyingIsConfirmedRolledBack() async throws {
        let failures = FailureSwitch()
        try await withEmbeddedSequencer(configure: { config in
            config.commitFault = { _ in failures.take() }
        }) { server in
            let name = uniqueName("refused")
            let db = try Database.open(name, sequencer: server.url)
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            failures.arm(SequencerError(.unknown, "injected: HTTP 503 before the sequencer"))
            do {
                try db.execute("INSERT INTO t(v) VALUES ('lost')")
                Issue.record("COMMIT should have failed")
            } catch let error as SQLiteError {
                #expect(error.code & 0xFF == 10, "\(error)")
                #expect(error.message.contains("rolled back") && error.message.contains("not applied"), "\(error)")
            }
            #expect(try db.query("SELECT v FROM t") == [])
            try db.execute("INSERT INTO t(v) VALUES ('after')")
            #expect(try db.query("SELECT v FROM t") == [[.text("after")]])
        }
    }

    /// A commit ends "outcome unknown" while the sequencer does not answer, and
    /// its request arrives later and is applied. The writer's next transaction
    /// fences the old attempt (new epoch) and then shows the sequencer's truth,
    /// and its writes work. (A sequencer process of its own: the proxy's timing
    /// must not depend on this test process's load.)
    @Test func aLateArrivalAfterAnUnknownOutcomeIsSeenAndWritesGoOn() async throws {
        let dir = TemporaryDirectory()
        let sequencer = try await offPool { try SequencerProcess(directory: dir.path + "/seq") }
        try await offPool {
            let proxy = try HoldingProxy(upstreamPort: sequencer.port)
            let name = uniqueName("late")
            var options = DatabaseOptions()
            options.timeoutMs = 1000
            options.leaseTTLMs = 60_000  // outlives the outage: the late request carries a live epoch
            let writer = try Database.open(name, sequencer: proxy.url, options: options)
            try writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            try writer.execute("INSERT INTO t(v) VALUES ('first')")
            let epoch = writer.statistics.leaseEpoch

            proxy.hold()
            do {
                try writer.execute("INSERT INTO t(v) VALUES ('late')")
                Issue.record("COMMIT should have ended with an unknown outcome")
            } catch let error as SQLiteError {
                #expect(error.extendedCode == 10 | (4 << 8), "\(error)")  // SQLITE_IOERR_FSYNC
                #expect(error.message.contains("unknown outcome"), "\(error)")
            }
            proxy.deliverFirstHeld()
            var ro = DatabaseOptions()
            ro.readOnly = true
            let reader = try Database.open(name, sequencer: sequencer.url, options: ro)
            var arrived = false
            for _ in 0..<200 where !arrived {
                arrived = try reader.scalar("SELECT count(*) FROM t WHERE v = 'late'") == .integer(1)
                if !arrived { usleep(50_000) }
            }
            #expect(arrived, "the held commit never reached the sequencer")
            proxy.dropHeld()

            #expect(try writer.query("SELECT v FROM t ORDER BY id") == [[.text("first")], [.text("late")]])
            // The next write fences the old attempt with a new epoch before it builds on anything.
            try writer.execute("INSERT INTO t(v) VALUES ('next')")
            #expect(writer.statistics.leaseEpoch > epoch, "the old attempt was not fenced with a new epoch")
            #expect(try reader.query("SELECT v FROM t ORDER BY id") == [[.text("first")], [.text("late")], [.text("next")]])
            let validate = try runSynd(["validate", "--sequencer", sequencer.url, "--db", name])
            #expect(validate.status == 0, "\(validate.output) \(validate.error)")
        }
    }

    /// The same, but the writer reads again before the old request arrives:
    /// that read fences the old attempt first, so when the request lands the
    /// sequencer refuses it, and the writer's view stays the sequencer's truth.
    @Test func aLateArrivalAfterTheWriterReadAgainIsFencedOff() async throws {
        let dir = TemporaryDirectory()
        let sequencer = try await offPool { try SequencerProcess(directory: dir.path + "/seq") }
        try await offPool {
            let proxy = try HoldingProxy(upstreamPort: sequencer.port)
            let name = uniqueName("fenced")
            var options = DatabaseOptions()
            options.timeoutMs = 1000
            let writer = try Database.open(name, sequencer: proxy.url, options: options)
            try writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            try writer.execute("INSERT INTO t(v) VALUES ('first')")
            proxy.hold()
            #expect(throws: SQLiteError.self) { try writer.execute("INSERT INTO t(v) VALUES ('late')") }
            proxy.dropHeld(keepingFirst: true)
            #expect(try writer.query("SELECT v FROM t ORDER BY id") == [[.text("first")]])
            proxy.deliverFirstHeld()
            for _ in 0..<200 where !proxy.deliveredWasAnswered { usleep(20_000) }
            #expect(proxy.deliveredWasAnswered, "the held commit never reached the sequencer")
            var ro = DatabaseOptions()
            ro.readOnly = true
            let reader = try Database.open(name, sequencer: sequencer.url, options: ro)
            let truth = try reader.query("SELECT v FROM t ORDER BY id")
            #expect(truth == [[.text("first")]], "the fenced attempt was applied")
            #expect(try writer.query("SELECT v FROM t ORDER BY id") == truth)
            try writer.execute("INSERT INTO t(v) VALUES ('next')")
            #expect(try reader.query("SELECT v FROM t ORDER BY id") == [[.text("first")], [.text("next")]])
            let validate = try runSynd(["validate", "--sequencer", sequencer.url, "--db", name])
            #expect(validate.status == 0, "\(validate.output) \(validate.error)")
        }
    }

    /// Exclusive locking mode: SQLite never gives its lock back, so the lease is
    /// checked at COMMIT. A lapse alone is recovered; after a takeover the
    /// commit fails, the writer reads the other writer's rows (no stale cache)
    /// and its next write takes the lease back from the idle other writer.
    @Test func anExclusiveModeWriterRecoversFromLapsesAndTakeovers() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("exclusive")
            // No renewals: the lease lapses between the writes. The TTL leaves
            // a loaded CI machine room for each write (a commit that takes longer
            // than the TTL after its lease was taken again is refused, rightly).
            let ttlMs = 2000
            var options = DatabaseOptions()
            options.leaseTTLMs = ttlMs
            options.renewLease = false
            let lapse = useconds_t(ttlMs + 300) * 1000
            let a = try Database.open(name, sequencer: server.url, options: options)
            try a.execute("PRAGMA locking_mode=EXCLUSIVE")
            try a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            try a.execute("INSERT INTO t(v) VALUES ('a1')")
            usleep(lapse)
            try a.execute("INSERT INTO t(v) VALUES ('a2')")
            usleep(lapse)
            try a.execute("INSERT INTO t(v) VALUES ('a3')")

            usleep(lapse)
            do {
                let b = try Database.open(name, sequencer: server.url)
                try b.execute("INSERT INTO t(v) VALUES ('b1')")
                #expect(throws: SQLiteError.self) { try a.execute("INSERT INTO t(v) VALUES ('lost')") }
                // Reads show the other writer's commit, not the exclusive writer's old cache.
                #expect(try a.query("SELECT v FROM t ORDER BY id") == [[.text("a1")], [.text("a2")], [.text("a3")], [.text("b1")]])
                // Its next write takes the lease back: b is idle and hands it
                // over on demand (no busy timeout needed), and the write builds
                // on b's row.
                try a.execute("INSERT INTO t(v) VALUES ('a4')")
            }
            #expect(try a.query("SELECT v FROM t ORDER BY id") == [[.text("a1")], [.text("a2")], [.text("a3")], [.text("b1")], [.text("a4")]])
            #expect(try a.scalar("PRAGMA integrity_check") == .text("ok"))
            let failure = try LedgerTests.validate(server.service.store, name)
            #expect(failure == nil, "\(failure?.description ?? "")")
        }
    }

    /// Closing a writer whose sequencer stopped answering returns within about
    /// one request deadline.
    @Test func closeIsBoundedWhenTheSequencerHangs() async throws {
        let dir = TemporaryDirectory()
        let sequencer = try await offPool { try SequencerProcess(directory: dir.path + "/seq") }
        try await offPool {
            var options = DatabaseOptions()
            options.timeoutMs = 500
            options.leaseTTLMs = 600  // renewals every 200 ms: one is in flight when it hangs
            var db: Database? = try Database.open(uniqueName("close"), sequencer: sequencer.url, options: options)
            try db!.execute("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
            kill(sequencer.process.processIdentifier, SIGSTOP)
            defer { kill(sequencer.process.processIdentifier, SIGCONT) }
            usleep(300_000)
            let start = ContinuousClock.now
            db = nil
            let took = ContinuousClock.now - start
            #expect(took < .milliseconds(1500), "close took \(took)")
        }
    }

    /// Tables with generated columns (VIRTUAL and STORED, before and after the
    /// key) commit, and their changesets validate.
    @Test func generatedColumnsCommitAndValidate() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("generated")
            let db = try Database.open(name, sequencer: server.url)
            try db.execute("""
                CREATE TABLE g(id INTEGER PRIMARY KEY, a INT, b INT GENERATED ALWAYS AS (a * 2) VIRTUAL,
                               c TEXT GENERATED ALWAYS AS (a || 'x') STORED, d TEXT);
                CREATE TABLE h(v2 INT GENERATED ALWAYS AS (length(k)) VIRTUAL, k TEXT PRIMARY KEY, v) WITHOUT ROWID;
                """)
            try db.execute("INSERT INTO g(id, a, d) VALUES (1, 10, 'one'), (2, 20, 'two')")
            try db.execute("INSERT INTO h(k, v) VALUES ('alpha', 1), ('be', 2)")
            try db.execute("UPDATE g SET a = a + 1 WHERE id = 1; UPDATE h SET v = 3 WHERE k = 'be'")
            try db.execute("DELETE FROM g WHERE id = 2; DELETE FROM h WHERE k = 'alpha'")
            try db.execute("ALTER TABLE g ADD COLUMN e INT DEFAULT 5")
            try db.execute("UPDATE g SET e = 6, a = 12")
            #expect(try db.query("SELECT id, a, b, c, d, e FROM g") == [[.integer(1), .integer(12), .integer(24), .text("12x"), .text("one"), .integer(6)]])
            #expect(try db.query("SELECT v2, k, v FROM h") == [[.integer(2), .text("be"), .integer(3)]])
            let failure = try LedgerTests.validate(server.service.store, name)
            #expect(failure == nil, "\(failure?.description ?? "")")
        }
    }

    /// An application's own preupdate hook replaces capture's: the commit is
    /// refused with the reason, never sent without its changes.
    @Test func anApplicationPreupdateHookIsDetectedAndTheCommitRefused() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("hook")
            let db = try Database.open(name, sequencer: server.url)
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            _ = sqlite3_preupdate_hook(db.connection.handle, { _, _, _, _, _, _, _ in }, nil)
            do {
                try db.execute("INSERT INTO t(v) VALUES ('unseen')")
                Issue.record("COMMIT should have been refused")
            } catch let error as SQLiteError {
                #expect(error.message.contains("preupdate hook"), "\(error)")
            }
            var ro = DatabaseOptions()
            ro.readOnly = true
            let reader = try Database.open(name, sequencer: server.url, options: ro)
            #expect(try reader.query("SELECT v FROM t") == [])
            let failure = try LedgerTests.validate(server.service.store, name)
            #expect(failure == nil, "\(failure?.description ?? "")")
        }
    }

    /// One transaction over a synddb database and an ATTACHed local file cannot
    /// commit atomically: it is refused and neither changes.
    @Test func aTransactionOverASynddbDatabaseAndALocalFileIsRefused() async throws {
        let dir = TemporaryDirectory()
        try await withEmbeddedSequencer { server in
            let name = uniqueName("attach")
            let db = try Database.open(name, sequencer: server.url)
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            try db.execute("ATTACH 'file:\(dir.path)/local.db?vfs=unix' AS loc")
            try db.execute("CREATE TABLE loc.l(id INTEGER PRIMARY KEY, v TEXT)")
            do {
                try db.execute("BEGIN; INSERT INTO t(v) VALUES ('remote'); INSERT INTO loc.l(v) VALUES ('local'); COMMIT")
                Issue.record("COMMIT should have been refused")
            } catch let error as SQLiteError {
                #expect(error.message.contains("atomic"), "\(error)")
            }
            if !db.connection.isAutocommit { try db.execute("ROLLBACK") }
            #expect(try db.query("SELECT count(*) FROM t") == [[.integer(0)]])
            #expect(try db.query("SELECT count(*) FROM loc.l") == [[.integer(0)]])
            // Each in its own transaction works.
            try db.execute("INSERT INTO t(v) VALUES ('remote')")
            try db.execute("INSERT INTO loc.l(v) VALUES ('local')")
            #expect(try db.query("SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM loc.l)") == [[.integer(1), .integer(1)]])
        }
    }
}

/// What SQLite lets an application do must commit through SyndDB too, with
/// changesets that validate: page size changes, UTF-16, shared-cache mode,
/// collations the application registered.
@Suite struct SQLiteFeatureTests {
    @Test(arguments: [(1024, 2048), (4096, 1024), (1024, 65536), (65536, 512)])
    func vacuumChangesThePageSize(from: Int, to: Int) async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("pagesize")
            var options = DatabaseOptions()
            options.pageSize = from
            let db = try Database.open(name, sequencer: server.url, options: options)
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t(v)")
            try db.transaction {
                for i in 1...300 { try db.query("INSERT INTO t(v) VALUES (?)", ["row \(i) " + String(repeating: "x", count: i % 90)]) }
            }
            try db.execute("PRAGMA page_size=\(to); VACUUM")
            #expect(try db.scalar("PRAGMA page_size") == .integer(Int64(to)))
            #expect(try db.scalar("PRAGMA integrity_check") == .text("ok"))
            try db.execute("INSERT INTO t(v) VALUES ('after')")
            var ro = DatabaseOptions()
            ro.readOnly = true
            let reader = try Database.open(name, sequencer: server.url, options: ro)
            #expect(try reader.scalar("PRAGMA page_size") == .integer(Int64(to)))
            #expect(try reader.scalar("SELECT count(*) FROM t") == .integer(301))
            #expect(try reader.scalar("PRAGMA integrity_check") == .text("ok"))
            let failure = try LedgerTests.validate(server.service.store, name)
            #expect(failure == nil, "\(failure?.description ?? "")")
        }
    }

    /// With `PRAGMA auto_vacuum` the first commit is a page 1 that records no
    /// encoding yet (SQLite reads it as UTF-8); the next commit's tables are UTF-16.
    @Test(arguments: ["UTF-16le", "UTF-16be"], [false, true])
    func utf16DatabasesCommitAndValidate(encoding: String, autoVacuumFirst: Bool) async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("utf16")
            let db = try Database.open(name, sequencer: server.url)
            try db.execute("PRAGMA encoding='\(encoding)'")
            if autoVacuumFirst { try db.execute("PRAGMA auto_vacuum=FULL") }
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT UNIQUE)")
            try db.execute("INSERT INTO t(v) VALUES ('plain'), ('ünïcødé ✓'), ('日本語')")
            try db.execute("UPDATE t SET v = v || '!' WHERE id = 2; DELETE FROM t WHERE id = 1")
            #expect(try db.scalar("PRAGMA encoding") == .text(encoding))
            #expect(try db.query("SELECT v FROM t ORDER BY id") == [[.text("ünïcødé ✓!")], [.text("日本語")]])
            let failure = try LedgerTests.validate(server.service.store, name)
            #expect(failure == nil, "\(failure?.description ?? "")")
        }
    }

    /// Shared-cache mode, switched on process-wide (`sqlite3_enable_shared_cache`,
    /// as SQLite's own tests do): in a python3 process of its own, since the
    /// switch would change every other test's connections in this one.
    @Test func sharedCacheModeCommits() async throws {
        let dir = TemporaryDirectory()
        let sequencer = try await offPool { try SequencerProcess(directory: dir.path + "/seq") }
        let url = sequencer.url
        try await offPool {
            let name = uniqueName("shared")
            let script = """
                import sqlite3, sys, warnings
                warnings.simplefilter("ignore")
                sqlite3.enable_shared_cache(True)
                loader = sqlite3.connect(":memory:")
                loader.enable_load_extension(True)
                loader.load_extension(sys.argv[1])
                uri = f"file:{sys.argv[3]}?vfs=synddb&sequencer={sys.argv[2]}"
                a = sqlite3.connect(uri, uri=True, isolation_level=None)
                a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
                a.execute("INSERT INTO t(v) VALUES ('shared')")
                a.execute("BEGIN"); a.execute("INSERT INTO t(v) VALUES ('two')"); a.execute("UPDATE t SET v = 'one' WHERE id = 1"); a.execute("COMMIT")
                b = sqlite3.connect(uri + "&mode=ro", uri=True, isolation_level=None)
                print(",".join(v for (v,) in b.execute("SELECT v FROM t ORDER BY id")))
                """
            let path = dir.path + "/shared.py"
            try script.write(toFile: path, atomically: true, encoding: .utf8)
            let (status, output, error) = try runProgram("/usr/bin/python3", [path, SQLiteToolsTests.extensionPath, url, name])
            #expect(status == 0 && output == "one,two\n", "\(output) \(error)")
            let validate = try runSynd(["validate", "--sequencer", url, "--db", name])
            #expect(validate.status == 0, "\(validate.output) \(validate.error)")
        }
    }

    /// A collation only the application's connection has: commits work (capture
    /// reads rows by rowid, which needs no collation).
    @Test func tablesWithAnApplicationCollationCommit() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("collation")
            let db = try Database.open(name, sequencer: server.url)
            let reverse: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafeRawPointer?, Int32, UnsafeRawPointer?) -> Int32 = { _, n1, p1, n2, p2 in
                let a = Array(UnsafeRawBufferPointer(start: p1, count: Int(n1))), b = Array(UnsafeRawBufferPointer(start: p2, count: Int(n2)))
                return a == b ? 0 : (a.lexicographicallyPrecedes(b) ? 1 : -1)
            }
            #expect(sqlite3_create_collation(db.connection.handle, "reverse", SQLITE_UTF8, nil, reverse) == SQLITE_OK)
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT COLLATE reverse UNIQUE, w TEXT); CREATE INDEX t_w ON t(w COLLATE reverse)")
            try db.execute("INSERT INTO t(v, w) VALUES ('a', 'x'), ('b', 'y'), ('c', 'z')")
            try db.execute("UPDATE t SET w = 'q' WHERE v = 'b'; DELETE FROM t WHERE v = 'a'")
            #expect(try db.query("SELECT v FROM t ORDER BY v") == [[.text("c")], [.text("b")]])
            var ro = DatabaseOptions()
            ro.readOnly = true
            let reader = try Database.open(name, sequencer: server.url, options: ro)
            // As with a local file, every connection that reads it registers the collation.
            #expect(sqlite3_create_collation(reader.connection.handle, "reverse", SQLITE_UTF8, nil, reverse) == SQLITE_OK)
            #expect(try reader.scalar("SELECT count(*) FROM t") == .integer(2))
            // A WITHOUT ROWID table keyed under the application's collation.
            try db.execute("CREATE TABLE k(name TEXT COLLATE reverse PRIMARY KEY, n INT) WITHOUT ROWID")
            try db.execute("INSERT INTO k VALUES ('a', 1), ('b', 2), ('c', 3)")
            try db.execute("BEGIN; UPDATE k SET n = n * 10 WHERE name = 'b'; DELETE FROM k WHERE name = 'c'; COMMIT")
            #expect(try reader.query("SELECT name, n FROM k ORDER BY n") == [[.text("a"), .integer(1)], [.text("b"), .integer(20)]])
            // Each changeset holds exactly the rows that changed.
            let store = server.service.store
            let head = try store.headVersion(of: name)
            let last = try #require(try store.batch(database: name, version: head))
            let text = try ChangesetText().statements(last.changeset).joined(separator: "; ")
            #expect(text.contains("UPDATE") && text.contains("DELETE") && !text.contains("INSERT"), "\(text)")
            let failure = try LedgerTests.validate(server.service.store, name)
            #expect(failure == nil, "\(failure?.description ?? "")")
        }
    }
}

extension SQLiteFeatureTests {
    /// A restore through SQLite's backup API writes pages, not rows: the
    /// changeset must still carry every row change, so the history validates.
    @Test func restoringThroughTheBackupAPIValidates() async throws {
        let dir = TemporaryDirectory()
        try await withEmbeddedSequencer { server in
            let name = uniqueName("restore")
            let db = try Database.open(name, sequencer: server.url)
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('remote 1'), ('remote 2')")
            try db.execute("CREATE TABLE gone(id INTEGER PRIMARY KEY); INSERT INTO gone VALUES (7)")
            let local = try Connection(path: dir.path + "/local.db")
            try local.execute("""
                CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('local 1'), ('local 2'), ('local 3');
                CREATE TABLE extra(k TEXT PRIMARY KEY, n INT) WITHOUT ROWID; INSERT INTO extra VALUES ('a', 1);
                """)
            let backup = sqlite3_backup_init(db.connection.handle, "main", local.handle, "main")
            #expect(backup != nil)
            let rc = sqlite3_backup_step(backup, -1)
            #expect(sqlite3_backup_finish(backup) == SQLITE_OK, "step \(rc): \(String(cString: sqlite3_errmsg(db.connection.handle)))")
            #expect(try db.query("SELECT v FROM t ORDER BY id") == [[.text("local 1")], [.text("local 2")], [.text("local 3")]])
            try db.execute("INSERT INTO extra VALUES ('b', 2)")
            let failure = try LedgerTests.validate(server.service.store, name)
            #expect(failure == nil, "\(failure?.description ?? "")")
        }
    }
}

/// A virtual table module only the application's connection has: no rows, two columns.
enum EmptyModule {
    // Safe: built once, never written again; SQLite only reads it.
    nonisolated(unsafe) static let module: UnsafeMutablePointer<sqlite3_module> = {
        var m = sqlite3_module()
        m.iVersion = 1
        let connect: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int32, UnsafePointer<UnsafePointer<CChar>?>?,
                                     UnsafeMutablePointer<UnsafeMutablePointer<sqlite3_vtab>?>?, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 = { db, _, _, _, out, _ in
            let rc = sqlite3_declare_vtab(db, "CREATE TABLE x(a, b)")
            guard rc == SQLITE_OK else { return rc }
            let vtab = UnsafeMutablePointer<sqlite3_vtab>.allocate(capacity: 1)
            vtab.initialize(to: sqlite3_vtab())
            out?.pointee = vtab
            return SQLITE_OK
        }
        m.xCreate = connect
        m.xConnect = connect
        m.xBestIndex = { _, _ in SQLITE_OK }
        m.xDisconnect = { vtab in vtab?.deallocate(); return SQLITE_OK }
        m.xDestroy = { vtab in vtab?.deallocate(); return SQLITE_OK }
        m.xOpen = { _, out in
            let cursor = UnsafeMutablePointer<sqlite3_vtab_cursor>.allocate(capacity: 1)
            cursor.initialize(to: sqlite3_vtab_cursor())
            out?.pointee = cursor
            return SQLITE_OK
        }
        m.xClose = { cursor in cursor?.deallocate(); return SQLITE_OK }
        m.xFilter = { _, _, _, _, _ in SQLITE_OK }
        m.xNext = { _ in SQLITE_OK }
        m.xEof = { _ in 1 }
        m.xColumn = { _, _, _ in SQLITE_OK }
        m.xRowid = { _, rowid in rowid?.pointee = 0; return SQLITE_OK }
        let p = UnsafeMutablePointer<sqlite3_module>.allocate(capacity: 1)
        p.initialize(to: m)
        return p
    }()
}

extension SQLiteFeatureTests {
    /// A virtual table of a module only the application registered, in the
    /// same schema as ordinary tables: schema changes and row changes commit
    /// and validate (a virtual table's rows are not in changesets, as with
    /// SQLite's session extension).
    @Test func aVirtualTableOfAnApplicationModuleInTheSchema() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("vtab")
            let db = try Database.open(name, sequencer: server.url)
            #expect(sqlite3_create_module(db.connection.handle, "empty", EmptyModule.module, nil) == SQLITE_OK)
            try db.execute("BEGIN; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE VIRTUAL TABLE e USING empty; INSERT INTO t(v) VALUES ('one'); COMMIT")
            try db.execute("INSERT INTO t(v) VALUES ('two')")
            try db.execute("CREATE TABLE u(id INTEGER PRIMARY KEY); INSERT INTO u VALUES (5)")
            try db.execute("BEGIN; DROP TABLE e; UPDATE t SET v = 'uno' WHERE id = 1; COMMIT")
            #expect(try db.query("SELECT v FROM t ORDER BY id") == [[.text("uno")], [.text("two")]])
            let failure = try LedgerTests.validate(server.service.store, name)
            #expect(failure == nil, "\(failure?.description ?? "")")
        }
    }
}

extension SQLiteFeatureTests {
    /// Row changes and schema changes of the same tables in one transaction:
    /// the changeset is relative to the migrated schema, and validates.
    @Test func rowChangesAroundSchemaChangesInOneTransaction() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("ddl-dml")
            let db = try Database.open(name, sequencer: server.url)
            try db.execute("CREATE TABLE t(note TEXT, id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES ('n1', 1, 'a'), ('n2', 2, 'b'), ('n3', 3, 'c')")
            try db.execute("CREATE TABLE a(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO a VALUES (1, 'x')")
            try db.execute("BEGIN; DELETE FROM t WHERE id = 2; ALTER TABLE t DROP COLUMN note; UPDATE t SET v = 'cc' WHERE id = 3; COMMIT")
            try db.execute("BEGIN; INSERT INTO a VALUES (2, 'y'); ALTER TABLE a RENAME TO b; UPDATE b SET v = 'xx' WHERE id = 1; COMMIT")
            try db.execute("BEGIN; ALTER TABLE b ADD COLUMN w INT DEFAULT 7; INSERT INTO b(id, v) VALUES (3, 'z'); UPDATE b SET w = 8 WHERE id = 2; COMMIT")
            #expect(try db.query("SELECT * FROM t ORDER BY id") == [[.integer(1), .text("a")], [.integer(3), .text("cc")]])
            #expect(try db.query("SELECT * FROM b ORDER BY id") == [[.integer(1), .text("xx"), .integer(7)], [.integer(2), .text("y"), .integer(8)], [.integer(3), .text("z"), .integer(7)]])
            let failure = try LedgerTests.validate(server.service.store, name)
            #expect(failure == nil, "\(failure?.description ?? "")")
        }
    }
}
