import CSQLite
import Foundation
import SyndDB
import SyndSQLite
import Testing

/// Deleting a database is a real operation: `synd drop`, `Database.drop` and
/// the VFS's xDelete (what `file delete` in SQLite's TCL tests reaches) drop it
/// on the sequencer, under the lease. The name then starts empty, with versions
/// and the hash chain going on, so no cache or fenced writer of the old
/// database can pass for the new one, and validators start at the drop.
///
/// Real parts: a `synd sequencer` process, the `synd` CLI, SQLite through the
/// VFS in this process, python3 with libsyndvfs.so for a writer in another process.
@Suite struct DropDatabaseTests {
    let dir = TemporaryDirectory()
    let sequencer: SequencerProcess

    init() async throws {
        let path = dir.path + "/seq"
        sequencer = try await offPool { try SequencerProcess(directory: path) }
    }

    /// xDelete of the synddb VFS, as SQLite's own callers make it.
    static func vfsDelete(_ name: String) -> (code: Int32, message: String) {
        sqlite3_initialize()
        guard let vfs = sqlite3_vfs_find("synddb"), let delete = vfs.pointee.xDelete else { return (-1, "no synddb VFS") }
        let rc = delete(vfs, name, 0)
        var buffer = [CChar](repeating: 0, count: 512)
        _ = vfs.pointee.xGetLastError?(vfs, Int32(buffer.count), &buffer)
        return (rc, String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    @Test func aDroppedDatabaseIsGoneAndItsNameStartsEmptyWithItsHistoryGoingOn() async throws {
        let url = sequencer.url
        let name = uniqueName("drop")
        try await offPool {
            var db: Database? = try Database.open(name, sequencer: url)
            try db!.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('old'), ('older')")
            // A reader in this process with the old database in its cache.
            var readOptions = DatabaseOptions()
            readOptions.readOnly = true
            let reader = try Database.open(name, sequencer: url, options: readOptions)
            #expect(try reader.query("SELECT count(*) FROM t") == [[.integer(2)]])
            db = nil

            let drop = try runSynd(["drop", name, "--sequencer", url])
            #expect(drop.status == 0, "\(drop.error)")
            #expect(drop.output.contains("dropped '\(name)'"), "\(drop.output)")
            let again = try runSynd(["drop", name, "--sequencer", url])
            #expect(again.status == 0 && again.output.contains("does not exist"), "\(again.output) \(again.error)")

            // Gone: opening it read-only fails as for a missing file.
            do {
                _ = try Database.open(name, sequencer: url, options: readOptions)
                Issue.record("a dropped database opened read-only")
            } catch let error as SQLiteError {
                #expect(error.code == SQLITE_CANTOPEN && error.message.contains("does not exist"), "\(error)")
            }
            // The reader that had it open sees an empty database, not its cache.
            #expect(try reader.query("SELECT count(*) FROM sqlite_master") == [[.integer(0)]])

            // Created again: empty, and writable.
            let fresh = try Database.open(name, sequencer: url)
            #expect(try fresh.query("SELECT count(*) FROM sqlite_master") == [[.integer(0)]])
            try fresh.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('new')")
            #expect(try reader.query("SELECT v FROM t") == [[.text("new")]])
        }
        // Validators start at the drop batch, and the log shows it.
        let validate = try runSynd(["validate", "--db", name, "--sequencer", url])
        #expect(validate.status == 0 && validate.output.hasPrefix("ok:"), "\(validate.output) \(validate.error)")
        let log = try runSynd(["log", name, "--sequencer", url])
        #expect(log.status == 0 && log.output.contains("dropped: the database was emptied"), "\(log.output) \(log.error)")
        #expect(!log.output.contains("'old'"), "history before the drop is deleted: \(log.output)")
        // Restarted on the same store, the sequencer accepts the chain with its drop batch.
        try await offPool {
            self.sequencer.kill9()
            try self.sequencer.restart()
            let db = try Database.open(name, sequencer: self.sequencer.url)
            #expect(try db.query("SELECT v FROM t") == [[.text("new")]])
        }
    }

    @Test func deletingThroughTheVFSDropsUnderTheLease() async throws {
        let url = sequencer.url
        let name = uniqueName("xdelete")
        let extensionPath = SQLiteToolsTests.extensionPath
        try await offPool {
            // Another process writes and holds the lease.
            let other = try PythonWriter(extensionPath: extensionPath, uri: "file:\(name)?vfs=synddb&sequencer=\(url)")
            try other.expectOK("CREATE TABLE t(x)")
            try other.expectOK("INSERT INTO t VALUES (1)")
            var readOptions = DatabaseOptions()
            readOptions.readOnly = true
            let reader = try Database.open(name, sequencer: url, options: readOptions)
            #expect(try reader.query("SELECT count(*) FROM t") == [[.integer(1)]])

            // Journals and super-journals are memory files: deleting them drops nothing.
            for companion in ["\(name)-journal", "\(name)-wal", "\(name)-mj1A2B3C9D4"] {
                #expect(Self.vfsDelete(companion).code == SQLITE_OK)
            }
            #expect(try reader.query("SELECT count(*) FROM t") == [[.integer(1)]])

            // Refused while the other process's writer holds the lease.
            let refused = Self.vfsDelete(name)
            #expect(refused.code == SQLITE_BUSY && refused.message.contains("live writer"), "\(refused)")
            #expect(try reader.query("SELECT count(*) FROM t") == [[.integer(1)]])
            other.close()

            // Dropped once it is gone; the reader sees an empty database.
            var dropped = (code: Int32(-1), message: "")
            for _ in 0..<100 {
                dropped = Self.vfsDelete(name)
                if dropped.code != SQLITE_BUSY { break }
                usleep(50_000)
            }
            #expect(dropped.code == SQLITE_OK, "\(dropped)")
            #expect(try reader.query("SELECT count(*) FROM sqlite_master") == [[.integer(0)]])

            // A writer of this process lends its own lease: the drop goes through,
            // and its connection then sees the empty database.
            let writer = try Database.open(name, sequencer: url)
            try writer.execute("CREATE TABLE u(y); INSERT INTO u VALUES (2)")
            let own = Self.vfsDelete(name)
            #expect(own.code == SQLITE_OK, "\(own)")
            #expect(try writer.query("SELECT count(*) FROM sqlite_master") == [[.integer(0)]])
            try writer.execute("CREATE TABLE v(z); INSERT INTO v VALUES (3)")
            #expect(try reader.query("SELECT z FROM v") == [[.integer(3)]])
        }
    }

    /// A writer fenced by the drop cannot commit into the new database, even
    /// when the new one reached the same version number it last saw.
    @Test func aWriterFromBeforeTheDropCannotCommitIntoTheNewDatabase() async throws {
        let url = sequencer.url
        let name = uniqueName("fenced")
        let extensionPath = SQLiteToolsTests.extensionPath
        try await offPool {
            var options = DatabaseOptions()
            options.leaseTTLMs = 1000
            options.renewLease = false
            var old: Database? = try Database.open(name, sequencer: url, options: options)
            try old!.execute("CREATE TABLE t(x); INSERT INTO t VALUES ('old')")
            try old!.execute("BEGIN; INSERT INTO t VALUES ('late')")
            usleep(1_300_000)  // its lease lapses
            let drop = try runSynd(["drop", name, "--sequencer", url])
            #expect(drop.status == 0, "\(drop.error)")
            // A new database under the same name, written by another process.
            let other = try PythonWriter(extensionPath: extensionPath, uri: "file:\(name)?vfs=synddb&sequencer=\(url)")
            try other.expectOK("CREATE TABLE t(x)")
            try other.expectOK("INSERT INTO t VALUES ('new')")
            other.close()
            #expect(throws: SQLiteError.self) { try old!.execute("COMMIT") }
            try? old!.execute("ROLLBACK")
            old = nil
            let check = try Database.open(name, sequencer: url)
            #expect(try check.query("SELECT x FROM t") == [[.text("new")]])
        }
    }

    /// Without an open file the sequencer comes from SYNDDB_SEQUENCER, as a
    /// host like SQLite's testfixture reaches it (python3 calls xDelete here).
    @Test func xDeleteWithoutAnOpenFileUsesSYNDDB_SEQUENCER() async throws {
        let url = sequencer.url
        let name = uniqueName("env")
        try await offPool {
            let db = try Database.open(name, sequencer: url)
            try db.execute("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        }
        let script = """
            import ctypes, sqlite3, sys
            loader = sqlite3.connect(":memory:")
            loader.enable_load_extension(True)
            loader.load_extension(sys.argv[1])
            lib = ctypes.CDLL("libsqlite3.so.0")
            lib.sqlite3_vfs_find.restype = ctypes.c_void_p
            vfs = lib.sqlite3_vfs_find(b"synddb")
            # struct sqlite3_vfs: 3 ints, pNext, zName, pAppData, xOpen, xDelete, ...
            fields = (ctypes.c_void_p * 8).from_address(vfs + 16)
            delete = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int)(fields[4])
            print(delete(vfs, sys.argv[2].encode(), 0))
            """
        let missing = try runProgram("/usr/bin/python3", ["-c", script, SQLiteToolsTests.extensionPath, name], removing: ["SYNDDB_SEQUENCER"])
        #expect(missing.output.trimmingCharacters(in: .whitespacesAndNewlines) == String(SQLITE_IOERR | (10 << 8)), "\(missing)")
        let run = try runProgram("/usr/bin/python3", ["-c", script, SQLiteToolsTests.extensionPath, name], environment: ["SYNDDB_SEQUENCER": url])
        #expect(run.output.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "\(run)")
        try await offPool {
            var readOptions = DatabaseOptions()
            readOptions.readOnly = true
            #expect(throws: SQLiteError.self) { _ = try Database.open(name, sequencer: url, options: readOptions) }
        }
    }
}
