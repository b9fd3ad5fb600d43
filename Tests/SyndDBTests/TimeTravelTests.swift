import CSQLite
import Foundation
import SyndDB
import SyndProtocol
import SyndSQLite
import Testing

/// Time travel: `version=N` and `at=TIME` open a past state read-only, exactly
/// as it was committed, and stay there; a state the sequencer no longer keeps
/// (or never had) fails loudly, naming the oldest version kept, never the
/// latest state in its place.
///
/// Real parts: `synd sequencer` processes on loopback, SQLite through the VFS
/// in this process, the `synd` CLI, and stock sqlite3 and python3 with
/// libsyndvfs.so in processes of their own.
@Suite struct TimeTravelTests {
    let dir = TemporaryDirectory()
    let sequencer: SequencerProcess

    init() async throws {
        let path = dir.path + "/seq"
        sequencer = try await offPool { try SequencerProcess(directory: path) }
    }

    static func pinned(_ name: String, _ url: String, _ state: DatabaseOptions.PastState) throws -> Database {
        var options = DatabaseOptions()
        options.asOf = state
        return try Database.open(name, sequencer: url, options: options)
    }

    static func rows(_ db: Database) throws -> [[Value]] {
        try db.query("SELECT id, v FROM t ORDER BY id")
    }

    /// Commits one row per version; returns each version with the rows it has
    /// and a time (this process's clock, the sequencer's too) between its
    /// commit and the next one's.
    static func history(_ db: Database, rows count: Int) throws -> [(version: UInt64, rows: [[Value]], after: UInt64)] {
        var out: [(UInt64, [[Value]], UInt64)] = []
        for i in 1...count {
            try db.query("INSERT INTO t(id, v) VALUES (?, ?)", [i, "row \(i)"])
            if i % 3 == 0 { try db.query("UPDATE t SET v = v || ' (edited)' WHERE id = ?", [i - 1]) }
            let version = db.statistics.version
            // The commit's seal time is at or before now; the next one's is after it.
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            out.append((version, try rows(db), now))
            usleep(3_000)
        }
        return out
    }

    @Test func aPastVersionOrTimeOpensExactlyThatStateAndStaysThere() async throws {
        let url = sequencer.url
        let name = uniqueName("travel")
        try await offPool {
            let writer = try Database.open(name, sequencer: url)
            try writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            let history = try Self.history(writer, rows: 12)
            #expect(zip(history, history.dropFirst()).allSatisfy { $0.version < $1.version })

            for point in history {
                let byVersion = try Self.pinned(name, url, .version(point.version))
                #expect(try Self.rows(byVersion) == point.rows, "version=\(point.version)")
                #expect(try byVersion.scalar("PRAGMA synddb_version") == .text(String(point.version)))
                let byTime = try Self.pinned(name, url, .time(unixMilliseconds: point.after))
                #expect(try Self.rows(byTime) == point.rows, "at=\(UnixTime.format(point.after)) should be version \(point.version)")
                #expect(byTime.statistics.version == point.version)
            }

            // Pinned while the writer goes on: the same rows, and once its
            // pages are cached, no request at all.
            let reader = try Self.pinned(name, url, .version(history[4].version))
            #expect(try Self.rows(reader) == history[4].rows)
            let requests = reader.statistics.requests
            for i in 100..<110 {
                try writer.query("INSERT INTO t(id, v) VALUES (?, 'later')", [i])
                try writer.query("DELETE FROM t WHERE id = ?", [i - 99])
                #expect(try Self.rows(reader) == history[4].rows)
                #expect(try reader.scalar("SELECT count(*) FROM t") == .integer(Int64(history[4].rows.count)))
            }
            #expect(reader.statistics.requests == requests, "a pinned connection never asks for the latest version")
            #expect(reader.statistics.version == history[4].version)

            // Read-only: SQLite refuses writes and the data is unchanged.
            do {
                try reader.execute("INSERT INTO t(id, v) VALUES (1000, 'no')")
                Issue.record("a past version accepted a write")
            } catch let error as SQLiteError {
                #expect(error.code & 0xff == SQLITE_READONLY, "\(error)")
            }
            #expect(try Self.rows(reader) == history[4].rows)
            #expect(try writer.scalar("SELECT count(*) FROM t WHERE id = 1000") == .integer(0))

            // An RFC 3339 time with an offset names the same instant.
            let point = history[7]
            let utc = UnixTime.format(point.after)
            let plusOne = try Self.rfc3339(point.after, offsetMinutes: 60)
            for text in [utc, plusOne, String(point.after)] {
                let r = try runSynd(["sql", "--sequencer", url, "--at", text, name, "SELECT count(*), max(id) FROM t"])
                #expect(r.status == 0, "\(r.error)")
                #expect(r.output == "\(point.rows.count)\t\(point.rows.count)\n", "--at \(text): \(r.output) \(r.error)")
            }
            let v = try runSynd(["sql", "--sequencer", url, "--version", String(point.version), name, "PRAGMA synddb_version"])
            #expect(v.output == "\(point.version)\n", "\(v.error)")
        }
    }

    /// `t` as RFC 3339 in another zone, `+HH:MM` east of UTC.
    static func rfc3339(_ ms: UInt64, offsetMinutes: Int) throws -> String {
        let shifted = UnixTime.format(ms + UInt64(offsetMinutes) * 60_000)
        let sign = offsetMinutes >= 0 ? "+" : "-"
        let h = abs(offsetMinutes) / 60, m = abs(offsetMinutes) % 60
        return shifted.dropLast() + sign + String(format: "%02d:%02d", h, m)
    }

    @Test func aStateThatIsNotKeptFailsNamingTheOldestVersionKept() async throws {
        // A short window: versions older than the last 4 go.
        let path = dir.path + "/short"
        let short = try await offPool { try SequencerProcess(directory: path, extraArguments: ["--retain", "4"]) }
        let url = short.url
        let name = uniqueName("gone")
        try await offPool {
            let before = UInt64(Date().timeIntervalSince1970 * 1000)
            usleep(3_000)
            let writer = try Database.open(name, sequencer: url)
            try writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            let history = try Self.history(writer, rows: 20)
            let head = history.last!.version

            func refusal(_ state: DatabaseOptions.PastState) -> SQLiteError? {
                do {
                    _ = try Self.rows(try Self.pinned(name, url, state))
                    return nil
                } catch let error as SQLiteError {
                    return error
                } catch {
                    return nil
                }
            }
            // Too old, by version and by time: the oldest kept is named.
            for state in [DatabaseOptions.PastState.version(2), .time(unixMilliseconds: history[2].after)] {
                let error = try #require(refusal(state), "\(state) opened although it is out of the window")
                #expect(error.code == SQLITE_CANTOPEN, "\(error)")
                #expect(error.message.contains("oldest version kept is"), "\(error.message)")
                let oldest = try #require(Self.number(after: "oldest version kept is ", in: error.message))
                #expect(oldest > 2 && oldest <= head - 3, "\(error.message)")
                // And that version opens, with its rows.
                let kept = try Self.pinned(name, url, .version(oldest))
                let expected = try #require(history.first { $0.version == oldest }).rows
                #expect(try Self.rows(kept) == expected)
            }
            // Before the first commit: nothing then, so nothing to show.
            let early = try #require(refusal(.time(unixMilliseconds: before)))
            #expect(early.message.contains("committed at or before"), "\(early.message)")
            // Not yet committed.
            let future = try #require(refusal(.version(head + 5)))
            #expect(future.message.contains("does not exist yet: the latest is \(head)"), "\(future.message)")
            // A time after the head is the head, as a file copied then would be.
            let latest = try Self.pinned(name, url, .time(unixMilliseconds: UInt64(Date().timeIntervalSince1970 * 1000) + 60_000))
            #expect(latest.statistics.version == head)
            #expect(try Self.rows(latest) == history.last!.rows)
            // An unknown database is not created by a read of its past.
            let missing = uniqueName("never")
            do {
                _ = try Self.pinned(missing, url, .version(1))
                Issue.record("a past version of a missing database opened")
            } catch let error as SQLiteError {
                #expect(error.message.contains("does not exist"), "\(error)")
            }
            let list = try runSynd(["sql", "--sequencer", url, "--read-only", missing, "SELECT 1"])
            #expect(list.status != 0, "opening its past created '\(missing)'")
        }
    }

    static func number(after prefix: String, in text: String) -> UInt64? {
        guard let range = text.range(of: prefix) else { return nil }
        return UInt64(text[range.upperBound...].prefix(while: \.isNumber))
    }

    @Test func badTimeTravelParametersAreRefusedWithWhatToDo() async throws {
        let url = sequencer.url
        let name = uniqueName("params")
        try await offPool {
            let writer = try Database.open(name, sequencer: url)
            try writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            let cases: [(String, String)] = [
                ("version=0", "version=0 is invalid"),
                ("version=abc", "version=abc is invalid"),
                ("at=yesterday", "at=yesterday is not a time"),
                ("at=2026-11-23T10:15:30", "is not a time"),  // no offset: ambiguous
                ("at=2026-02-30T10:15:30Z", "is not a time"),
                ("version=1&at=1700000000000", "not both"),
            ]
            for (query, message) in cases {
                var handle: OpaquePointer?
                let uri = "file:\(name)?sequencer=\(url)&\(query)"
                let rc = sqlite3_open_v2(uri, &handle, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, "synddb")
                sqlite3_close(handle)
                // Why, as the VFS keeps it (SQLiteError and the shells show it).
                var buffer = [CChar](repeating: 0, count: 512)
                let vfs = sqlite3_vfs_find("synddb")
                _ = vfs?.pointee.xGetLastError?(vfs, Int32(buffer.count), &buffer)
                let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                #expect(rc == SQLITE_CANTOPEN, "\(query): \(rc) \(text)")
                #expect(text.contains(message), "\(query): \(text)")
            }
        }
    }

    /// Other clients, other processes: stock sqlite3 and python3 load the
    /// extension and open `file:NAME?version=N`; a read-write open of a past
    /// version is read-only all the same.
    @Test func stockSQLiteAndPythonOpenAPastVersion() async throws {
        let url = sequencer.url
        let name = uniqueName("stock-travel")
        try await offPool {
            let writer = try Database.open(name, sequencer: url)
            try writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            let history = try Self.history(writer, rows: 4)
            let point = history[1]
            let ext = SQLiteToolsTests.extensionPath
            let script = """
                .load \(ext)
                .open file:\(name)?vfs=synddb&sequencer=\(url)&version=\(point.version)
                SELECT count(*) FROM t;
                PRAGMA synddb_version;
                INSERT INTO t(v) VALUES ('no');
                """
            let r = try runProgram("/usr/bin/sqlite3", [], input: script + "\n", directory: dir.path)
            #expect(r.output == "\(point.rows.count)\n\(point.version)\n", "\(r.output) \(r.error)")
            #expect(r.error.contains("readonly"), "\(r.error)")

            let python = """
                import sqlite3, sys
                boot = sqlite3.connect(":memory:")
                boot.enable_load_extension(True)
                boot.load_extension(sys.argv[1])
                uri = "file:%s?vfs=synddb&sequencer=%s&at=%s" % (sys.argv[2], sys.argv[3], sys.argv[4])
                db = sqlite3.connect(uri, uri=True)
                print(db.execute("SELECT count(*) FROM t").fetchone()[0])
                try:
                    db.execute("INSERT INTO t(v) VALUES ('no')")
                    db.commit()
                    print("wrote")
                except sqlite3.OperationalError as e:
                    print("refused:", e)
                """
            let scriptPath = dir.path + "/travel.py"
            try python.write(toFile: scriptPath, atomically: true, encoding: .utf8)
            let p = try runProgram("/usr/bin/python3", [scriptPath, ext, name, url, UnixTime.format(point.after)])
            #expect(p.output == "\(point.rows.count)\nrefused: attempt to write a readonly database\n", "\(p.output) \(p.error)")
            #expect(try writer.scalar("SELECT count(*) FROM t") == .integer(Int64(history.last!.rows.count)))
        }
    }
}
