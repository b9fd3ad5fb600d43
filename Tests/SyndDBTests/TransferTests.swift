import CSQLite
import Foundation
import SyndDB
import SyndSQLite
import Testing

/// Databases move in and out as plain SQLite files: `synd export` writes one
/// version to a file stock sqlite3 opens (integrity_check ok), `synd import`
/// uploads a file as a new database through sealed, validated commits, and
/// `synd fork` copies a version of one database into a new one. Table
/// contents round-trip byte for byte: types, text bytes, blobs, reals, rowids.
///
/// Real parts: a `synd sequencer` process, the `synd` CLI, stock /usr/bin/sqlite3.
@Suite struct TransferTests {
    let dir = TemporaryDirectory()
    let sequencer: SequencerProcess

    init() async throws {
        let path = dir.path + "/seq"
        sequencer = try await offPool { try SequencerProcess(directory: path) }
    }

    /// Every table's rows, each value with its type and exact bytes (reals to
    /// 17 digits), rowids included, in rowid (or key) order; and the schema.
    static func contents(_ c: Connection) throws -> [String] {
        var out = try c.query("SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_autoindex%' ORDER BY type, name").map { "\($0)" }
        out += try c.query("PRAGMA user_version").map { "user_version \($0)" }
        out += try c.query("PRAGMA encoding").map { "encoding \($0)" }
        let tables = try c.query("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").compactMap { $0.first?.string }
        func quoted(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
        for table in tables {
            let columns = try c.query("SELECT name FROM pragma_table_xinfo(?)", [table]).compactMap { $0.first?.string }
            // The rowid under a name no column takes (none: WITHOUT ROWID).
            let rowid = ["rowid", "_rowid_", "oid"].first { name in !columns.contains { $0.lowercased() == name } }
                .flatMap { name in (try? c.prepare("SELECT \(name) FROM \(quoted(table)) LIMIT 0")).map { _ in name } }
            let exprs = (rowid.map { [$0] } ?? []) + columns.map(quoted)
            let shown = exprs.map { "typeof(\($0)) || ':' || CASE typeof(\($0)) WHEN 'real' THEN printf('%!.17g', \($0)) ELSE hex(\($0)) END" }
            let order = rowid.map { "ORDER BY \($0)" } ?? ""
            for row in try c.query("SELECT \(shown.joined(separator: " || ',' || ")) FROM \(quoted(table)) \(order)") {
                out.append("\(table): \(row[0])")
            }
        }
        return out
    }

    static let fixture = #"""
        CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, r REAL, b BLOB);
        CREATE TABLE nopk(a, b);
        CREATE TABLE keyed(k TEXT PRIMARY KEY, n INT) WITHOUT ROWID;
        CREATE TABLE gen(a INT PRIMARY KEY, twice INT GENERATED ALWAYS AS (a * 2) STORED, half REAL GENERATED ALWAYS AS (a / 2.0) VIRTUAL);
        CREATE TABLE counter(id INTEGER PRIMARY KEY AUTOINCREMENT, x);
        CREATE TABLE "odd ""name"""(rowid_ TEXT, "rowid" INT, oid INT);
        INSERT INTO t VALUES (1, 'héllo wörld', 0.1, x'00ff'), (5, NULL, 1e300, NULL), (9, 'a' || char(0) || 'b', -0.0, zeroblob(3)),
                             (12, '12', 12.0, x''), (13, 12, '12.5', 7);
        INSERT INTO nopk VALUES (1, 2), (1, 2), ('x', NULL), (3.25, x'01');
        DELETE FROM nopk WHERE rowid = 1;
        INSERT INTO keyed VALUES ('z', 1), ('a', 2), ('m', NULL);
        INSERT INTO gen(a) VALUES (3), (4);
        INSERT INTO counter(x) VALUES (1), (2), (3);
        DELETE FROM counter WHERE id = 3;
        INSERT INTO "odd ""name"""(rowid_, "rowid", oid) VALUES ('r', 5, 6), ('s', 7, 8);
        CREATE INDEX t_v ON t(v);
        CREATE VIEW t_view AS SELECT id, v FROM t;
        CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO nopk VALUES ('trigger', new.id); END;
        PRAGMA user_version = 7;
        """#

    @Test func exportStockSQLiteImportRoundTripsTableContentsExactly() async throws {
        let url = sequencer.url
        let name = uniqueName("source")
        let copy = uniqueName("copy")
        let file = dir.path + "/exported.db"
        try await offPool {
            let db = try Database.open(name, sequencer: url)
            try db.execute(Self.fixture)
            let original = try Self.contents(db.connection)

            let exported = try runSynd(["export", "--sequencer", url, name, file])
            #expect(exported.status == 0, "\(exported.error)")
            #expect(exported.output.contains("version \(db.statistics.version)"), "\(exported.output)")
            #expect(exported.error.isEmpty, "no progress bar without a terminal: \(exported.error)")
            // Stock sqlite3, another process and another SQLite build, opens it and finds it sound.
            let check = try runProgram("/usr/bin/sqlite3", [file, "PRAGMA integrity_check; SELECT count(*) FROM t; SELECT * FROM t_view WHERE id = 1;"])
            #expect(check.output == "ok\n5\n1|héllo wörld\n", "\(check.output) \(check.error)")
            #expect(try Self.contents(Connection(path: file, readOnly: true)) == original, "the file holds exactly the database")

            // Changed by stock sqlite3 (its triggers run there), then uploaded as a new database.
            let edit = try runProgram("/usr/bin/sqlite3", [file, "INSERT INTO t(id, v) VALUES (20, 'from stock sqlite3'); UPDATE keyed SET n = 99 WHERE k = 'a';"])
            #expect(edit.status == 0, "\(edit.error)")
            let edited = try Self.contents(Connection(path: file, readOnly: true))
            let imported = try runSynd(["import", "--sequencer", url, file, copy])
            #expect(imported.status == 0, "\(imported.error)")
            #expect(imported.output.contains("6 tables, 19 rows"), "\(imported.output)")
            let back = try Database.open(copy, sequencer: url, options: { var o = DatabaseOptions(); o.readOnly = true; return o }())
            #expect(try Self.contents(back.connection) == edited, "the imported database holds exactly the file")
            #expect(try back.scalar("PRAGMA integrity_check") == .text("ok"))
            // The counter goes on where the file's left off, not at its highest row.
            let writer = try Database.open(copy, sequencer: url)
            try writer.execute("INSERT INTO counter(x) VALUES (4)")
            #expect(try writer.scalar("SELECT max(id) FROM counter") == .integer(4))
            // Its history is sealed commits a validator checks, rows in the changesets.
            let validate = try runSynd(["validate", "--sequencer", url, "--db", copy])
            #expect(validate.status == 0 && validate.output.hasPrefix("ok:"), "\(validate.output) \(validate.error)")
            let log = try runSynd(["log", "--sequencer", url, copy])
            #expect(log.output.contains("'from stock sqlite3'"), "the rows are in the changesets")
        }
    }

    @Test func aPastVersionExportsAndForksAsItWas() async throws {
        let url = sequencer.url
        let name = uniqueName("history")
        let fork = uniqueName("fork")
        try await offPool {
            let db = try Database.open(name, sequencer: url)
            try db.execute(Self.fixture)
            let then = db.statistics.version
            let before = try Self.contents(db.connection)
            for i in 0..<50 { try db.query("INSERT INTO t(v, b) VALUES (?, randomblob(900))", ["later \(i)"]) }
            try db.execute("DROP TABLE keyed; DELETE FROM nopk")
            #expect(try Self.contents(db.connection) != before)

            let file = dir.path + "/then.db"
            let exported = try runSynd(["export", "--sequencer", url, "--version", String(then), name, file])
            #expect(exported.status == 0, "\(exported.error)")
            #expect(try Self.contents(Connection(path: file, readOnly: true)) == before)

            let forked = try runSynd(["fork", "--sequencer", url, "--version", String(then), name, fork, "--batch-mb", "1"])
            #expect(forked.status == 0, "\(forked.error)")
            #expect(forked.output.contains("version \(then)"), "\(forked.output)")
            let copy = try Database.open(fork, sequencer: url)
            #expect(try Self.contents(copy.connection) == before)
            // The fork is a database of its own: writes there leave the source alone.
            try copy.execute("DELETE FROM t")
            #expect(try db.scalar("SELECT count(*) FROM t") == .integer(55 + 0))
        }
    }

    @Test func bigImportsGoInBoundedCommitsAndUTF16Survives() async throws {
        let url = sequencer.url
        let name = uniqueName("big")
        let file = dir.path + "/big.db"
        try await offPool {
            do {
                let local = try Connection(path: file)
                try local.execute("PRAGMA encoding = 'UTF-16le'; PRAGMA page_size = 8192")
                try local.execute("CREATE TABLE doc(id INTEGER PRIMARY KEY, title TEXT, body BLOB)")
                try local.transaction("IMMEDIATE") {
                    for i in 0..<3000 { try local.query("INSERT INTO doc VALUES (?, ?, randomblob(1000))", [i, "Dokument Nr. \(i) – ünïcödé"]) }
                }
            }
            let expected = try Self.contents(Connection(path: file, readOnly: true))
            let imported = try runSynd(["import", "--sequencer", url, "--batch-mb", "1", file, name])
            #expect(imported.status == 0, "\(imported.error)")
            // About 3 MB of rows in commits of about 1 MB: the schema, 3 or 4 row commits.
            let commits = Int(imported.output.components(separatedBy: " rows in ").last?.prefix(while: \.isNumber) ?? "") ?? 0
            #expect((4...6).contains(commits), "\(imported.output)")
            let db = try Database.open(name, sequencer: url)
            #expect(try db.scalar("PRAGMA encoding") == .text("UTF-16le"))
            #expect(try db.scalar("PRAGMA page_size") == .integer(8192))
            #expect(try Self.contents(db.connection) == expected)
        }
    }

    @Test func refusalsSayWhatToDo() async throws {
        let url = sequencer.url
        let name = uniqueName("refuse")
        try await offPool {
            let db = try Database.open(name, sequencer: url)
            try db.execute("CREATE TABLE t(x)")
            let file = dir.path + "/exists.db"
            try Data("x".utf8).write(to: URL(fileURLWithPath: file))
            let overwrite = try runSynd(["export", "--sequencer", url, name, file])
            #expect(overwrite.status != 0 && overwrite.error.contains("exists"), "\(overwrite.error)")
            #expect(try String(contentsOfFile: file, encoding: .utf8) == "x", "an existing file is left alone")

            let good = dir.path + "/good.db"
            #expect(try runSynd(["export", "--sequencer", url, name, good]).status == 0)
            let onto = try runSynd(["import", "--sequencer", url, good, name])
            #expect(onto.status != 0 && onto.error.contains("already has tables"), "\(onto.error)")
            #expect(try db.scalar("SELECT count(*) FROM sqlite_schema") == .integer(1))

            let notSQLite = try runSynd(["import", "--sequencer", url, file, uniqueName("x")])
            #expect(notSQLite.status != 0 && notSQLite.error.contains("not a SQLite database"), "\(notSQLite.error)")

            let virtual = dir.path + "/fts.db"
            #expect(try runProgram("/usr/bin/sqlite3", [virtual, "CREATE VIRTUAL TABLE f USING fts5(x); INSERT INTO f VALUES ('hi');"]).status == 0)
            let fts = try runSynd(["import", "--sequencer", url, virtual, uniqueName("fts")])
            #expect(fts.status != 0 && fts.error.contains("virtual tables (f)"), "\(fts.error)")

            let missing = try runSynd(["export", "--sequencer", url, "--version", "999", name, dir.path + "/none.db"])
            #expect(missing.status != 0 && missing.error.contains("does not exist yet"), "\(missing.error)")
            #expect(!FileManager.default.fileExists(atPath: dir.path + "/none.db"))
            #expect(!FileManager.default.fileExists(atPath: dir.path + "/none.db.synd-export"))
        }
    }
}
