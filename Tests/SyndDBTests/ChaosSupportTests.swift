import SyndDB
import SyndSQLite
import Testing

/// What scripts/chaos.sh relies on to tie every observation to a version.
@Suite struct ChaosSupportTests {
    static func version(_ db: Database) throws -> Int64 {
        guard let text = try db.scalar("PRAGMA synddb_version")?.string, let v = Int64(text) else {
            throw TestFailure("PRAGMA synddb_version gave no number")
        }
        return v
    }

    /// `PRAGMA synddb_version` is the sequencer version the connection reads:
    /// a writer's last commit, and a read-only connection's snapshot, which
    /// stays put inside a read transaction while others commit.
    @Test func pragmaVersionIsTheConnectionsSnapshot() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("version")
            let writer = try Database.open(name, sequencer: server.url)
            try writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
            #expect(try Self.version(writer) == 1)
            for i in 1...3 {
                try writer.query("INSERT INTO t(v) VALUES (?)", [i])
                #expect(try Self.version(writer) == Int64(1 + i))
                #expect(UInt64(try Self.version(writer)) == writer.statistics.version)
            }

            var readOnly = DatabaseOptions()
            readOnly.readOnly = true
            let reader = try Database.open(name, sequencer: server.url, options: readOnly)
            try reader.execute("BEGIN")
            #expect(try reader.scalar("SELECT count(*) FROM t") == .integer(3))
            #expect(try Self.version(reader) == 4)
            try writer.query("INSERT INTO t(v) VALUES (4)")
            #expect(try Self.version(writer) == 5)
            // Its snapshot, not the newest version, until the read transaction ends.
            #expect(try reader.scalar("SELECT count(*) FROM t") == .integer(3))
            #expect(try Self.version(reader) == 4)
            try reader.execute("COMMIT")
            #expect(try reader.scalar("SELECT count(*) FROM t") == .integer(4))
            #expect(try Self.version(reader) == 5)
        }
    }
}
