import Foundation
import SyndClient
import Testing

/// synd-sqlite3 and file paths: only the main database (the command line,
/// `.open NAME`) and a `file:` URI with `vfs=synddb` are remote. Every other file
/// the shell is given (`.backup`, `.save`, `.restore`, `.clone`, `ATTACH 'path'`,
/// `VACUUM INTO`) is a local file, as in stock sqlite3: a local path must never
/// silently become a database on the sequencer (a `.restore` from one used to
/// create an empty remote database and copy it over main).
///
/// Drives the real static shell (scripts/build-sqlite-tools.sh) against a real
/// sequencer process, and checks local files with Debian's /usr/bin/sqlite3.
@Suite struct ShellLocalPathTests {
    static let shell = SQLiteToolsTests.shell

    let dir = TemporaryDirectory()
    let sequencer: SequencerProcess

    init() async throws {
        let path = dir.path + "/seq"
        sequencer = try await offPool { try SequencerProcess(directory: path) }
        guard FileManager.default.isExecutableFile(atPath: Self.shell) else {
            throw TestFailure("\(Self.shell) is missing: run scripts/build-sqlite-tools.sh (scripts/test.sh does)")
        }
    }

    @Test func backupSaveCloneAndVacuumIntoWriteLocalFiles() async throws {
        let name = uniqueName("backup")
        let absolute = dir.path + "/absolute.db"
        try await offPool {
            try makeRemote(name)
            let r = try shell([name], """
                .backup local.db
                .backup main \(absolute)
                .save saved.db
                .clone cloned.db
                VACUUM INTO 'vacuumed.db';
                SELECT 'main still has ' || count(*) FROM t;
                """)
            #expect(r.status == 0, "\(r.error)")
            #expect(r.output.hasSuffix("main still has 2\n"), "\(r.output) \(r.error)")
            for file in ["local.db", absolute, "saved.db", "cloned.db", "vacuumed.db"] {
                let path = file.hasPrefix("/") ? file : dir.path + "/" + file
                #expect(FileManager.default.fileExists(atPath: path), "\(file) is not a local file: \(r.error)")
                #expect(try localSQL(path, "SELECT group_concat(v) FROM t") == "a,b\n", "\(file)")
                #expect(try !remoteExists(file), "'\(file)' became a database on the sequencer")
            }
            #expect(try remoteSQL(name, "SELECT group_concat(v) FROM t") == "a,b\n")
        }
    }

    @Test func restoreCopiesALocalFileIntoTheRemoteMain() async throws {
        let name = uniqueName("restore")
        try await offPool {
            try makeRemote(name)
            let local = dir.path + "/local.db"
            _ = try localSQL(local, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('x'), ('y'), ('z');")
            let r = try shell([name], ".restore local.db\nSELECT group_concat(v) FROM t;\n")
            #expect(r.status == 0, "\(r.error)")
            #expect(r.output == "x,y,z\n", "\(r.output) \(r.error)")
            // The remote main holds the local file's content; the file is unchanged
            // and no database named like it appeared on the sequencer.
            #expect(try remoteSQL(name, "SELECT group_concat(v) FROM t") == "x,y,z\n")
            #expect(try localSQL(local, "SELECT group_concat(v) FROM t") == "x,y,z\n")
            #expect(try !remoteExists("local.db"))
        }
    }

    @Test func restoreFromAMissingOrBrokenFileLeavesTheRemoteMainAlone() async throws {
        let name = uniqueName("norestore")
        try await offPool {
            try makeRemote(name)
            let missing = try shell([name], ".restore missing.db\n")
            #expect(missing.status != 0)
            #expect(missing.error.contains("missing.db"), "\(missing.error)")
            #expect(try remoteSQL(name, "SELECT group_concat(v) FROM t") == "a,b\n", "the remote database was overwritten")
            #expect(!FileManager.default.fileExists(atPath: dir.path + "/missing.db"), "an empty local file was created")
            #expect(try !remoteExists("missing.db"))

            try "not a database, not even close\n".write(toFile: dir.path + "/broken.db", atomically: true, encoding: .utf8)
            let broken = try shell([name], ".restore broken.db\n")
            #expect(broken.status != 0)
            #expect(try remoteSQL(name, "SELECT group_concat(v) FROM t") == "a,b\n", "the remote database was overwritten")
            #expect(try !remoteExists("broken.db"))
        }
    }

    @Test func attachedPathsAreLocalFiles() async throws {
        let name = uniqueName("attach")
        try await offPool {
            try makeRemote(name)
            _ = try localSQL(dir.path + "/ext.db", "CREATE TABLE e(k TEXT); INSERT INTO e VALUES ('local-row');")
            let r = try shell([name], """
                ATTACH 'ext.db' AS ext;
                SELECT k FROM ext.e;
                INSERT INTO ext.e VALUES ('from-shell');
                ATTACH 'new.db' AS fresh;
                CREATE TABLE fresh.n(x);
                INSERT INTO fresh.n VALUES (42);
                ATTACH 'file:uri.db' AS u;
                CREATE TABLE u.w(x);
                INSERT INTO u.w VALUES (7);
                INSERT INTO t(v) SELECT k FROM ext.e WHERE k = 'local-row';
                """)
            #expect(r.status == 0, "\(r.error)")
            #expect(r.output == "local-row\n", "\(r.output) \(r.error)")
            #expect(try localSQL(dir.path + "/ext.db", "SELECT group_concat(k) FROM e") == "local-row,from-shell\n")
            #expect(try localSQL(dir.path + "/new.db", "SELECT x FROM n") == "42\n")
            #expect(try localSQL(dir.path + "/uri.db", "SELECT x FROM w") == "7\n")
            for file in ["ext.db", "new.db", "uri.db"] {
                #expect(try !remoteExists(file), "'\(file)' became a database on the sequencer")
            }
            // The main database is still the remote one, and took the row.
            #expect(try remoteSQL(name, "SELECT group_concat(v) FROM t") == "a,b,local-row\n")
        }
    }

    @Test func namesAskedForAsDatabasesStayRemote() async throws {
        let name = uniqueName("remote")
        let other = uniqueName("open")
        let third = uniqueName("uri")
        try await offPool {
            try makeRemote(name)
            let r = try shell([":memory:"], """
                .open \(other)
                CREATE TABLE o(id INTEGER PRIMARY KEY, v TEXT);
                INSERT INTO o(v) VALUES ('remote');
                ATTACH 'file:\(name)?vfs=synddb' AS r;
                SELECT group_concat(v) FROM r.t;
                .open file:\(third)?vfs=synddb
                CREATE TABLE w(id INTEGER PRIMARY KEY, v TEXT);
                INSERT INTO w(v) VALUES ('third');
                ATTACH 'side.db' AS side;
                CREATE TABLE side.s(x);
                INSERT INTO side.s VALUES ('local');
                .open --readonly \(name)
                SELECT count(*) FROM t;
                """)
            #expect(r.status == 0, "\(r.error)")
            #expect(r.output == "a,b\n2\n", "\(r.output) \(r.error)")
            #expect(try remoteSQL(other, "SELECT v FROM o") == "remote\n")
            #expect(try remoteSQL(third, "SELECT v FROM w") == "third\n")
            #expect(try localSQL(dir.path + "/side.db", "SELECT x FROM s") == "local\n")
            #expect(try !remoteExists("side.db"))
            for file in [other, name, third, "file:\(third)?vfs=synddb"] {
                #expect(!FileManager.default.fileExists(atPath: dir.path + "/" + file), "a local file '\(file)' was created")
            }
            // Writes to an ATTACHed synddb database are refused (no changeset
            // capture on that connection); the remote rows stay as they were.
            let write = try shell([":memory:"], "ATTACH 'file:\(name)?vfs=synddb' AS r;\nINSERT INTO r.t(v) VALUES ('no');\n")
            #expect(write.status != 0)
            #expect(try remoteSQL(name, "SELECT group_concat(v) FROM t") == "a,b\n")
        }
    }

    @Test func localFilesNeedNoSequencer() async throws {
        try await offPool {
            // No sequencer anywhere: anything that reached the synddb VFS would fail to open.
            let r = try shell([":memory:"], """
                CREATE TABLE t(v);
                INSERT INTO t VALUES ('m');
                .backup mem.db
                ATTACH 'att.db' AS a;
                CREATE TABLE a.t(v);
                INSERT INTO a.t SELECT v FROM main.t;
                """, withSequencer: false)
            #expect(r.status == 0, "\(r.error)")
            #expect(try localSQL(dir.path + "/mem.db", "SELECT v FROM t") == "m\n")
            #expect(try localSQL(dir.path + "/att.db", "SELECT v FROM t") == "m\n")
        }
    }

    // MARK: - Helpers

    /// A remote database with table t: rows (1, 'a'), (2, 'b').
    func makeRemote(_ name: String) throws {
        let r = try shell([name], "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);\nINSERT INTO t(v) VALUES ('a'), ('b');\n")
        guard r.status == 0, try remoteExists(name) else { throw TestFailure("could not create \(name): \(r.error)") }
    }

    /// Whether the sequencer has a database of that name (asked without creating it).
    func remoteExists(_ name: String) throws -> Bool {
        let client = try SequencerClient(url: sequencer.url)
        do {
            _ = try client.open(name, create: false)
            return true
        } catch {
            return false
        }
    }

    /// Rows of a remote database, read by another client (`synd sql --read-only`).
    func remoteSQL(_ name: String, _ sql: String) throws -> String {
        let r = try runSynd(["sql", "--sequencer", sequencer.url, "--read-only", name, sql])
        guard r.status == 0 else { throw TestFailure("synd sql \(name): \(r.error)") }
        return r.output
    }

    /// Runs SQL on a local file with Debian's sqlite3 (no SyndDB involved).
    func localSQL(_ path: String, _ sql: String) throws -> String {
        let r = try run("/usr/bin/sqlite3", [path, sql])
        guard r.status == 0 else { throw TestFailure("sqlite3 \(path): \(r.error)") }
        return r.output
    }

    /// synd-sqlite3 with `arguments`, the script on standard input, in the test's folder.
    func shell(_ arguments: [String], _ script: String, withSequencer: Bool = true) throws -> (status: Int32, output: String, error: String) {
        let options = withSequencer ? ["--sequencer", sequencer.url] : []
        return try run(Self.shell, options + arguments, input: script + "\n", removing: ["SYNDDB_SEQUENCER"])
    }

    func run(_ path: String, _ arguments: [String], input: String = "", removing: [String] = []) throws -> (status: Int32, output: String, error: String) {
        try runProgram(path, arguments, input: input, directory: dir.path, removing: removing)
    }
}
