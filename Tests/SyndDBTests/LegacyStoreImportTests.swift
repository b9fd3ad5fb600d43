import SyndLedger
import SyndProtocol
import SyndSQLite
import SyndStorage
import Testing

/// A data folder written by the earlier sequencer (one SQLite file,
/// `store.sqlite`) is imported into the log the first time it is opened:
/// every database, page version, batch and seal comes across, the chains go
/// on, and the next open reads the log alone.
@Suite struct LegacyStoreImportTests {
    let dir = TemporaryDirectory()

    /// The earlier store's schema, as that version created it.
    static let schema = """
        PRAGMA journal_mode=WAL;
        CREATE TABLE databases(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, version INTEGER NOT NULL DEFAULT 0,
          page_size INTEGER NOT NULL DEFAULT 0, page_count INTEGER NOT NULL DEFAULT 0, oldest_version INTEGER NOT NULL DEFAULT 0,
          lease_epoch INTEGER NOT NULL DEFAULT 0, lease_holder TEXT, lease_ttl_ms INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE pages(id INTEGER PRIMARY KEY, db INTEGER NOT NULL, pgno INTEGER NOT NULL, version INTEGER NOT NULL,
          data BLOB NOT NULL, checksum INTEGER NOT NULL);
        CREATE UNIQUE INDEX pages_by_version ON pages(db, pgno, version);
        CREATE TABLE commits(db INTEGER NOT NULL, version INTEGER NOT NULL, txn_id BLOB NOT NULL, page_size INTEGER NOT NULL,
          page_count INTEGER NOT NULL, pages INTEGER NOT NULL, bytes INTEGER NOT NULL, committed_at_ms INTEGER NOT NULL,
          changeset BLOB, schema_changed INTEGER NOT NULL DEFAULT 0, schema BLOB, unaudited TEXT, previous_hash BLOB NOT NULL,
          pages_hash BLOB NOT NULL, changeset_hash BLOB NOT NULL, schema_hash BLOB NOT NULL, hash BLOB NOT NULL,
          signature BLOB NOT NULL, PRIMARY KEY(db, version));
        """

    @Test func anEarlierStoreIsImportedWithItsHistoryAndSeals() async throws {
        try await offPool {
            let key = try SigningKey(path: dir.path + "/sequencer.ed25519", create: true)
            let legacy = try Connection(path: dir.path + "/store.sqlite")
            try legacy.execute(Self.schema)
            try legacy.query("INSERT INTO databases(id, name, version, page_size, page_count, lease_epoch) VALUES (3, 'old', 3, 1024, 2, 1023)")
            var previous = BatchSeal.genesis
            var sealed: [Batch] = []
            let writes: [(count: UInt32, pages: [(UInt32, UInt8)])] = [(2, [(1, 1), (2, 1)]), (2, [(2, 2)]), (2, [(1, 3)])]
            for (i, w) in writes.enumerated() {
                var b = Batch()
                b.database = "old"
                b.version = UInt64(i + 1)
                b.pageSize = 1024
                b.pageCount = w.count
                b.pages = w.pages.map { Page(number: $0.0, data: [UInt8](repeating: $0.1, count: 1024)) }
                b.changeset = [UInt8(i)]
                try BatchSeal.seal(&b, previousHash: previous, key: key)
                previous = b.hash
                sealed.append(b)
                for p in b.pages {
                    try legacy.query("INSERT INTO pages(db, pgno, version, data, checksum) VALUES (3, ?, ?, ?, ?)",
                                     [Int64(p.number), Int64(b.version), p.data, Int64(p.checksum)])
                }
                try legacy.query("""
                    INSERT INTO commits VALUES (3, ?, ?, 1024, ?, ?, 0, ?, ?, 0, x'', x'', ?, ?, ?, ?, ?, ?)
                    """, [Int64(b.version), Array("txn-\(i + 1)".utf8), Int64(b.pageCount), b.pages.count, Int64(b.committedAtMs),
                          Value.blob(b.changeset), b.previousHash, b.pagesHash, b.changesetHash, b.schemaHash, b.hash, b.signature])
            }

            do {
                let store = try PageStore(StoreConfiguration(directory: dir.path))
                #expect(store.recoveryNotes.first?.contains("imported 1 database(s) and 3 batch(es)") == true, "\(store.recoveryNotes)")
                #expect(try store.headVersion(of: "old") == 3)
                for (v, b) in sealed.enumerated() {
                    #expect(try store.batch(database: "old", version: UInt64(v + 1)) == b, "batch \(v + 1) with its seal")
                }
                var read = ReadPagesRequest()
                read.database = "old"
                read.pageNumbers = [1, 2]
                #expect(try store.readPages(read).pages.map { $0.data[0] } == [3, 2])
                read.version = 1
                #expect(try store.readPages(read).pages.map { $0.data[0] } == [1, 1])
                // The chain goes on: a new commit is sealed onto the imported head.
                var lease = AcquireLeaseRequest()
                lease.database = "old"
                lease.holder = "w"
                let granted = try store.acquireLease(lease)
                #expect(granted.epoch == 1024, "epochs continue above the imported ceiling")
                var c = CommitRequest()
                c.database = "old"
                c.holder = "w"
                c.leaseEpoch = granted.epoch
                c.baseVersion = 3
                c.txnID = Array("txn-4".utf8)
                c.pageSize = 1024
                c.pageCount = 2
                c.pages = [Page(number: 2, data: [UInt8](repeating: 4, count: 1024))]
                #expect(try store.commit(c).version == 4)
                #expect(try store.batch(database: "old", version: 4)?.previousHash == sealed[2].hash)
            }
            let reopened = try PageStore(StoreConfiguration(directory: dir.path))
            #expect(reopened.recoveryNotes.isEmpty, "imported once: \(reopened.recoveryNotes)")
            #expect(try reopened.headVersion(of: "old") == 4)
        }
    }
}
