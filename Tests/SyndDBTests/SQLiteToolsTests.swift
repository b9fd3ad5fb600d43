import Foundation
import Testing

/// synd-sqlite3, libsyndvfs.so and the examples, driven as subprocesses the way
/// SQLite users run them. Built by scripts/build-sqlite-tools.sh (scripts/test.sh runs it).
@Suite struct SQLiteToolsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let shell = root.appendingPathComponent(".build-static/release/synd-sqlite3").path
    static let extensionPath = root.appendingPathComponent(".build-static/release/libsyndvfs").path

    let dir = TemporaryDirectory()
    let sequencer: SequencerProcess

    init() async throws {
        let path = dir.path + "/seq"
        sequencer = try await offPool { try SequencerProcess(directory: path) }
        for artifact in [Self.shell, Self.extensionPath + ".so"] {
            guard FileManager.default.isExecutableFile(atPath: artifact) || FileManager.default.fileExists(atPath: artifact) else {
                throw TestFailure("\(artifact) is missing: run scripts/build-sqlite-tools.sh (scripts/test.sh does)")
            }
        }
    }

    @Test func staticShellKeepsDataAcrossShells() async throws {
        let url = sequencer.url
        let name = uniqueName("shell")
        try await offPool {
            let first = try run(Self.shell, ["--sequencer", url, name],
                                input: "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);\nINSERT INTO t(v) VALUES ('a'),('b');\n.quit\n")
            #expect(first.status == 0, "\(first.error)")
            let second = try run(Self.shell, [name], input: ".mode csv\nSELECT id, v FROM t;\n.dump t\n",
                                 environment: ["SYNDDB_SEQUENCER": url])
            #expect(second.status == 0, "\(second.error)")
            #expect(second.output.hasPrefix("1,a\r\n2,b\r\n"))  // CSV rows end in CRLF
            #expect(second.output.contains("INSERT INTO t VALUES(2,'b');"))
            let imported = dir.path + "/import.csv"
            try "3,c\n4,d\n".write(toFile: imported, atomically: true, encoding: .utf8)
            let third = try run(Self.shell, ["--sequencer", url, name], input: ".import --csv \(imported) t\nSELECT count(*) FROM t;\n")
            #expect(third.output == "4\n", "\(third.error)")
        }
    }

    @Test func stockSQLiteShellLoadsTheExtension() async throws {
        let url = sequencer.url
        let name = uniqueName("stock")
        try await offPool {
            let script = """
                .load \(Self.extensionPath)
                .open file:\(name)?vfs=synddb&sequencer=\(url)
                CREATE TABLE t(x);
                INSERT INTO t VALUES (41), (1);
                SELECT sum(x) FROM t;
                """
            let r = try run("/usr/bin/sqlite3", [], input: script + "\n")
            #expect(r.status == 0, "\(r.error)")
            #expect(r.output == "42\n", "\(r.error)")
            // As the default VFS, a plain name goes to the sequencer.
            let d = try run("/usr/bin/sqlite3", [], input: ".load \(Self.extensionPath) sqlite3_syndvfs_default_init\n.open \(name)\nSELECT count(*) FROM t;\n",
                            environment: ["SYNDDB_SEQUENCER": url])
            #expect(d.output == "2\n", "\(d.error)")
            #expect(!FileManager.default.fileExists(atPath: name), "a local file was created instead")
        }
    }

    @Test func pythonRunsAThousandTransactions() async throws {
        let url = sequencer.url
        try await offPool {
            let script = Self.root.appendingPathComponent("examples/python/quickstart.py").path
            let r = try run("/usr/bin/python3", [script, url, Self.extensionPath, "1000"])
            #expect(r.status == 0, "\(r.error)")
            #expect(r.output == "events: 1000, total: \(999 * 1000 / 2 + 1000)\nintegrity: ok\n", "\(r.error)")
            // Another process, another client: every transaction is in the sequencer.
            let check = try runSynd(["sql", "--sequencer", url, "--read-only", "examples/python", "SELECT count(*) FROM events"])
            #expect(check.output == "1000\n", "\(check.error)")
            // Captured inside Python too: every batch's changeset agrees with its pages.
            let validate = try runSynd(["validate", "--sequencer", url, "--db", "examples/python"])
            #expect(validate.status == 0 && validate.output.hasPrefix("ok: 1001 batches"), "\(validate.output)")
        }
    }

    /// examples/python/replicas.py: a follower with min_version, and a past version, from Python.
    @Test func pythonReplicasExampleRuns() async throws {
        let url = sequencer.url
        try await offPool {
            let script = Self.root.appendingPathComponent("examples/python/replicas.py").path
            let r = try run("/usr/bin/python3", [script, url, Self.extensionPath, uniqueName("replicas")])
            #expect(r.status == 0, "\(r.error)")
            #expect(r.output.hasPrefix("follower sees tea at 275\nat version "), "\(r.output) \(r.error)")
            #expect(r.output.contains(" tea was 250\nthe past is read-only: attempt to write a readonly database\n"), "\(r.output)")
        }
    }

    @Test func shellSessionAndSwiftExamplesRun() async throws {
        let url = sequencer.url
        try await offPool {
            let session = try String(contentsOf: Self.root.appendingPathComponent("examples/shell/session.sql"), encoding: .utf8)
            let first = try run(Self.shell, ["--sequencer", url, "examples/notes"], input: session)
            #expect(first.output == "notes: 2\nok\n", "\(first.error)")
            let second = try run(Self.shell, ["--sequencer", url, "examples/notes"], input: session)
            #expect(second.output == "notes: 4\nok\n", "\(second.error)")
            let validate = try runSynd(["validate", "--sequencer", url, "--db", "examples/notes"])
            #expect(validate.status == 0, "the static shell's changesets: \(validate.output)")
            let log = try runSynd(["log", "--sequencer", url, "examples/notes"])
            #expect(log.output.contains("INSERT INTO \"notes\"(id, body) VALUES (4, 'one transaction, one atomic commit')"), "\(log.output)")
        }
    }

    @Test func clearErrorsNotCrashes() async throws {
        let url = sequencer.url
        let name = uniqueName("errors")
        try await offPool {
            let unreachable = try run("/usr/bin/python3", ["-c", """
                import sqlite3
                c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension("\(Self.extensionPath)")
                try:
                    sqlite3.connect("file:x?vfs=synddb&sequencer=http://127.0.0.1:1&timeout_ms=200", uri=True).execute("SELECT 1")
                except sqlite3.OperationalError as e:
                    print("error:", e)
                try:
                    sqlite3.connect("file:x?vfs=synddb&sequencer=ftp://nope", uri=True)
                except sqlite3.OperationalError as e:
                    print("error:", e)
                w = sqlite3.connect("file:\(name)?vfs=synddb&sequencer=\(url)", uri=True, isolation_level=None)
                w.execute("CREATE TABLE t(x)")
                w.execute("BEGIN IMMEDIATE")
                try:
                    sqlite3.connect("file:\(name)?vfs=synddb&sequencer=\(url)", uri=True, timeout=0).execute("INSERT INTO t VALUES (1)")
                except sqlite3.OperationalError as e:
                    print("error:", e)
                """])
            #expect(unreachable.status == 0, "the host crashed: \(unreachable.error)")
            #expect(unreachable.output == "error: unable to open database file\nerror: unable to open database file\nerror: database is locked\n")
            #expect(unreachable.error.contains("cannot connect to sequencer at http://127.0.0.1:1"))
            #expect(unreachable.error.contains("must start with http:// or https://"))
        }
    }

    @Test func artifactsNeedNeitherLibsqlite3NorTheSwiftRuntime() async throws {
        try await offPool {
            for artifact in [Self.shell, Self.extensionPath + ".so"] {
                let ldd = try run("/usr/bin/ldd", [artifact])
                #expect(!ldd.output.contains("libsqlite3"), "\(artifact): \(ldd.output)")
                #expect(!ldd.output.contains("swift"), "\(artifact): \(ldd.output)")
                #expect(!ldd.output.contains("not found"), "\(artifact): \(ldd.output)")
            }
            let readelf = try run("/usr/bin/readelf", ["-d", Self.extensionPath + ".so"])
            #expect(!readelf.output.contains("/opt/swift") && !readelf.output.contains("swift/linux"))
            // With the toolchain's folder hidden (a private mount namespace), Python still loads it.
            let hidden = try run("/usr/bin/unshare", ["-m", "/bin/sh", "-c", """
                mount --bind "$(mktemp -d)" "$(dirname "$(dirname "$(dirname "$(readlink -f "$(command -v swift || echo /opt/swift/usr/bin/swift)")")")")" && \
                /usr/bin/python3 -c 'import sqlite3; c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension("\(Self.extensionPath)"); print("loaded")'
                """])
            #expect(hidden.output == "loaded\n", "\(hidden.error)")
        }
    }

    @Test func extensionRegistersIntoItsHostsOwnSQLiteCopy() async throws {
        try await offPool {
            // synd-sqlite3 has its own, static SQLite with the VFS built in. The
            // extension must register a second "synddb" into that copy, not into
            // libsqlite3.so.
            let before = try run(Self.shell, [":memory:"], input: ".vfslist\n")
            let after = try run(Self.shell, [":memory:"], input: ".load \(Self.extensionPath)\n.vfslist\n")
            func count(_ s: String) -> Int { s.components(separatedBy: "vfs.zName      = \"synddb\"").count - 1 }
            #expect(count(before.output) == 1, "\(before.output)")
            #expect(count(after.output) == 2, "\(after.output) \(after.error)")
        }
    }

    /// Runs a program with standard input and returns its status and output.
    func run(_ path: String, _ arguments: [String], input: String = "", environment: [String: String] = [:]) throws -> (status: Int32, output: String, error: String) {
        try runProgram(path, arguments, input: input, directory: dir.path, environment: environment)
    }
}
