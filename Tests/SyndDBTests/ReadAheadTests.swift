import CSQLite
import Foundation
import SyndDB
import SyndProtocol
import SyndSQLite
import Testing

/// Read-ahead and the page cache, against a sequencer in this process (for
/// its request counters) over real loopback HTTP/2, with real SQLite.
@Suite struct ReadAheadTests {
    /// A connection with URI parameters of its own (Database.open sets a fixed few).
    static func connect(_ name: String, _ url: String, _ parameters: String, readOnly: Bool = true) throws -> Connection {
        var options = DatabaseOptions()
        options.readOnly = true
        _ = try Database.open(name, sequencer: url, options: options)  // registers the VFS
        return try Connection(path: "file:\(name)?sequencer=\(url)&\(parameters)\(readOnly ? "&mode=ro" : "")", readOnly: readOnly, vfs: "synddb")
    }

    /// `rows` rows of about 1 KB in table `table`, in one transaction.
    static func fill(_ db: Database, _ table: String, rows: Int) throws {
        try db.execute("CREATE TABLE \(table)(id INTEGER PRIMARY KEY, v TEXT)")
        try db.execute("""
            WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < \(rows))
            INSERT INTO \(table)(v) SELECT hex(randomblob(500)) FROM c
            """)
    }

    static let digest = "SELECT count(*), sum(length(v)), sum(unicode(substr(v, 321, 1)) * id) FROM"

    @Test func aSequentialScanReadsAheadInFewLargeRequests() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("scan")
            let writer = try Database.open(name, sequencer: server.url)
            try Self.fill(writer, "t", rows: 6000)
            let expected = try writer.query("\(Self.digest) t")
            let pages = try writer.scalar("PRAGMA page_count")
            guard case .integer(let pageCount) = pages else { throw TestFailure("page_count: \(String(describing: pages))") }
            #expect(pageCount > 1500)

            let reader = try Self.connect(name, server.url, "cache_mb=64")
            let before = server.service.counters[.readPages]
            #expect(try reader.query("\(Self.digest) t") == expected)
            let reads = server.service.counters[.readPages] - before
            // 16, 32, 64, ... pages per request: a handful, not one per 16 pages (~100).
            #expect(reads >= 1 && reads * 40 < Int(pageCount), "\(reads) ReadPages requests for \(pageCount) pages")
            #expect(try reader.scalar("PRAGMA integrity_check") == .text("ok"))
        }
    }

    /// A scan's next window is asked for before SQLite reaches it (the
    /// sequencer reads it while SQLite uses the pages it has): once the
    /// misses run in sequence every later read is sent ahead and used, and
    /// none more than the table needs.
    @Test func aScanSendsItsNextReadBeforeSQLiteNeedsIt() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("ahead")
            let writer = try Database.open(name, sequencer: server.url)
            try Self.fill(writer, "t", rows: 6000)
            let expected = try writer.query("\(Self.digest) t")

            var options = DatabaseOptions()
            options.readOnly = true
            let reader = try Database.open(name, sequencer: server.url, options: options)
            let before = server.service.counters[.readPages]
            #expect(try reader.query("\(Self.digest) t") == expected)
            let reads = server.service.counters[.readPages] - before
            let stats = reader.statistics
            #expect(stats.readsSentAhead >= 4, "\(stats.readsSentAhead) reads sent ahead in a scan of \(reads) reads")
            // The scan runs to the end: every read sent ahead is used.
            #expect(stats.readsSentAheadUsed == stats.readsSentAhead)
            #expect(try reader.scalar("PRAGMA integrity_check") == .text("ok"))
            // A second scan is served from the cache: no page is read again.
            let reads2 = server.service.counters[.readPages]
            #expect(try reader.query("\(Self.digest) t") == expected)
            #expect(server.service.counters[.readPages] == reads2)
        }
    }

    /// A scan that stops early leaves a read in flight. It is given up, and
    /// the connection it was sent on goes on serving reads and commits; a
    /// read sent ahead at one version is never used at a later one.
    @Test func aReadSentAheadIsDroppedWhenTheScanStopsOrTheSnapshotMoves() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("ahead-stop")
            let writer = try Database.open(name, sequencer: server.url)
            try Self.fill(writer, "t", rows: 6000)
            try writer.execute("CREATE TABLE other(x)")
            try writer.execute("INSERT INTO other VALUES (1)")

            let reader = try Self.connect(name, server.url, "cache_mb=64", readOnly: false)
            try reader.execute("PRAGMA cache_size=10")
            // Its write below takes the lease from `writer`: wait for the handover as
            // any second writer should (a loaded machine can take longer than the
            // sequencer's 500 ms grace for an idle holder).
            try reader.execute("PRAGMA busy_timeout=10000")
            func stats() -> [Int64] {
                var values = [Int64](repeating: 0, count: 8)
                _ = values.withUnsafeMutableBufferPointer { sqlite3_file_control(reader.handle, "main", 0x5359_4E01, $0.baseAddress) }
                return values
            }
            // Part of a scan: a read is in flight when it stops.
            try reader.execute("BEGIN")
            do {
                let scan = try reader.prepare("SELECT id, v FROM t ORDER BY id")
                var seen = 0
                while seen < 2500, try scan.step() { seen += 1 }
                #expect(seen == 2500)
            }
            try reader.execute("COMMIT")
            #expect(stats()[6] > stats()[7], "no read was left in flight by the stopped scan: \(stats())")

            // Every row changes; the reader's next transaction sees only the new rows,
            // though reads of the old version were sent ahead.
            try writer.execute("UPDATE t SET v = lower(v) || 'x'")
            let expected = try writer.query("\(Self.digest) t")
            #expect(try reader.query("\(Self.digest) t") == expected)
            #expect(try reader.scalar("SELECT count(*) FROM t WHERE v NOT LIKE '%x'") == .integer(0))
            // The connection still reads and commits.
            try reader.execute("INSERT INTO other VALUES (2)")
            #expect(try writer.scalar("SELECT sum(x) FROM other") == .integer(3))
            #expect(try reader.scalar("PRAGMA integrity_check") == .text("ok"))
        }
    }

    /// Pages read ahead belong to the reader's snapshot: a scan that runs
    /// while another connection rewrites every row sees the rows as they were
    /// when it started, all of them, even though most of its pages are read
    /// after those commits.
    @Test func aScanDuringCommitsSeesOneSnapshot() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("snapshot")
            let writer = try Database.open(name, sequencer: server.url)
            try Self.fill(writer, "t", rows: 4000)
            try writer.execute("ALTER TABLE t ADD COLUMN n INTEGER NOT NULL DEFAULT 0")

            let reader = try Self.connect(name, server.url, "cache_mb=64")
            try reader.execute("PRAGMA cache_size=10")
            try reader.execute("BEGIN")
            let scan = try reader.prepare("SELECT id, n, length(v) FROM t ORDER BY id")
            var seen = 0
            var wrong = 0
            while try scan.step() {
                seen += 1
                if scan.column(1) != .integer(0) || scan.column(2) != .integer(1000) { wrong += 1 }
                if seen == 50 || seen == 1500 {
                    // Every row changes, in several commits, while the scan is under way.
                    for round in 0..<3 {
                        try writer.execute("UPDATE t SET n = n + 1, v = hex(randomblob(500)) WHERE id % 3 = \(round)")
                    }
                }
            }
            try reader.execute("COMMIT")
            #expect(seen == 4000)
            #expect(wrong == 0)
            // And a new read transaction sees the writer's last version.
            #expect(try reader.scalar("SELECT min(n) FROM t") == .integer(2))
            #expect(try reader.scalar("SELECT max(n) FROM t") == .integer(2))
        }
    }

    /// Under a small cache (1 MB, a quarter of it per read), a large scan
    /// evicts its own old pages, not a small table read again and again
    /// meanwhile: the scan makes exactly the requests it makes alone, and the
    /// small table needs none afterwards.
    @Test func theCacheKeepsHotPagesWhileALargeTableIsScanned() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("lru")
            let writer = try Database.open(name, sequencer: server.url)
            try Self.fill(writer, "hot", rows: 100)
            try Self.fill(writer, "big", rows: 8000)
            let hotDigest = try writer.query("\(Self.digest) hot")
            let parameters = "cache_mb=1"
            // Requests as each connection's VFS counts them when it sends them
            // (the sequencer counts a read sent ahead only when it arrives).
            func requests(_ c: Connection) -> Int64 {
                var values = [Int64](repeating: 0, count: 8)
                _ = values.withUnsafeMutableBufferPointer { sqlite3_file_control(c.handle, "main", 0x5359_4E01, $0.baseAddress) }
                return values[0]
            }

            // The same reads without the hot table read meanwhile, in a connection of its own.
            let alone = try Self.connect(name, server.url, parameters)
            try alone.execute("PRAGMA cache_size=10")
            try alone.execute("BEGIN")
            #expect(try alone.query("\(Self.digest) hot") == hotDigest)
            var before = requests(alone)
            _ = try alone.query("SELECT length(v) FROM big")
            let scanAlone = requests(alone) - before
            try alone.execute("COMMIT")

            let reader = try Self.connect(name, server.url, parameters)
            try reader.execute("PRAGMA cache_size=10")
            try reader.execute("BEGIN")
            #expect(try reader.query("\(Self.digest) hot") == hotDigest)
            before = requests(reader)
            let scan = try reader.prepare("SELECT length(v) FROM big")
            var rows = 0
            while try scan.step() {
                rows += 1
                if rows % 200 == 0 { #expect(try reader.query("\(Self.digest) hot") == hotDigest) }
            }
            let scanned = requests(reader) - before
            before = requests(reader)
            for _ in 0..<3 { #expect(try reader.query("\(Self.digest) hot") == hotDigest) }
            try reader.execute("COMMIT")
            #expect(rows == 8000)
            #expect(scanned == scanAlone, "the scan made \(scanned) requests with the hot table read meanwhile, \(scanAlone) alone")
            #expect(requests(reader) == before, "the hot table was read again after the scan")
        }
    }
}
