import SyndLedger
import SyndProtocol
import SyndSQLite

#if canImport(Glibc)
import Glibc
#endif

/// Everything behind `PageStore`'s store lock: the SQLite connection that
/// writes, and the in-memory mirror of each database's head.
final class StoreState {
    let connection: Connection
    let statements: StoreStatements
    let signingKey: SigningKey
    var databases: [String: DatabaseState] = [:]
    var duplicateCommits = 0
    /// Lease epochs are made durable this many at a time (see `acquireLease`).
    static let epochBlock: UInt64 = 1024

    init(connection: Connection, signingKey: SigningKey) throws {
        self.connection = connection
        self.statements = StoreStatements(connection)
        self.signingKey = signingKey
        let rows = try connection.query(
            "SELECT id, name, version, page_size, page_count, oldest_version, lease_epoch, lease_holder, lease_ttl_ms FROM databases")
        for r in rows {
            // No lease survives a restart: every holder's HoldLease connection
            // closed with the old process, so its client already counts the
            // lease as lost and takes a new epoch at its next write (a commit
            // already on its way is refused, provably unapplied, and retried
            // under a new epoch if nobody wrote meanwhile). Only the highest
            // epoch is kept, so none is ever granted twice. Releases are
            // therefore not written to the store at all (see releaseLease).
            let db = DatabaseState(
                id: r[0].int64!, name: r[1].string!, version: UInt64(r[2].int64!), pageSize: UInt32(r[3].int64!),
                pageCount: UInt32(r[4].int64!), oldestVersion: UInt64(r[5].int64!), leaseEpoch: UInt64(r[6].int64!), lease: nil)
            if db.version > 0 {
                db.lastHash = try Self.verifiedHeadHash(of: db, connection: connection, signingKey: signingKey)
            }
            databases[db.name] = db
        }
    }

    /// The hash of `db`'s head batch, after checking that it matches the batch
    /// and that `signingKey` signed it: a sequencer started with another key
    /// would extend every chain with batches no validator accepts.
    private static func verifiedHeadHash(of db: DatabaseState, connection: Connection, signingKey: SigningKey) throws -> [UInt8] {
        let rows = try connection.query("""
            SELECT committed_at_ms, page_size, page_count, previous_hash, pages_hash, changeset_hash, schema_hash, hash, signature
            FROM commits WHERE db=? AND version=?
            """, [db.id, Int64(db.version)])
        guard let r = rows.first else {
            throw SealError(message: "the store is damaged: database '\(db.name)' is at version \(db.version) but that batch's commit record is missing")
        }
        func blob(_ v: Value) -> [UInt8] { if case .blob(let b) = v { b } else { [] } }
        var head = Batch()
        head.database = db.name
        head.version = db.version
        head.committedAtMs = UInt64(r[0].int64 ?? 0)
        head.pageSize = UInt32(r[1].int64 ?? 0)
        head.pageCount = UInt32(r[2].int64 ?? 0)
        head.previousHash = blob(r[3])
        head.pagesHash = blob(r[4])
        head.changesetHash = blob(r[5])
        head.schemaHash = blob(r[6])
        let hash = blob(r[7])
        guard BatchSeal.hash(of: head) == hash else {
            throw SealError(message: "the store is damaged: the hash of batch \(db.version) of '\(db.name)' does not match its contents")
        }
        guard signingKey.isValidSignature(blob(r[8]), for: hash) else {
            throw SealError(message: """
                the sequencer key \(signingKey.path) does not match the stored history: batch \(db.version) of \
                '\(db.name)' was signed by another key. Put back the key this store was created with; the sequencer \
                never replaces its key, and signing with another one would break every database's chain
                """)
        }
        return hash
    }

    func database(_ name: String) throws(SequencerError) -> DatabaseState {
        guard let db = databases[name] else {
            throw SequencerError(.notFound, "database '\(name)' does not exist on this sequencer; open it with create=true first")
        }
        return db
    }

    func create(_ name: String) throws(SequencerError) -> DatabaseState {
        try run("INSERT INTO databases(name) VALUES (?)", [name])
        let db = DatabaseState(id: connection.lastInsertRowID, name: name, version: 0, pageSize: 0, pageCount: 0,
                               oldestVersion: 0, leaseEpoch: 0, lease: nil)
        databases[name] = db
        return db
    }

    @discardableResult
    func query(_ sql: String, _ values: [any SQLiteBindable]) throws(SequencerError) -> [[Value]] {
        try statements.query(sql, values)
    }

    func run(_ sql: String, _ values: [any SQLiteBindable]) throws(SequencerError) {
        try statements.run(sql, values)
    }

    func committedVersion(db: DatabaseState, txnID: [UInt8]) throws(SequencerError) -> UInt64? {
        try query("SELECT version FROM commits WHERE db=? AND txn_id=?", [db.id, txnID]).first?.first?.int64.map(UInt64.init)
    }

    /// Applies a validated batch as one durable SQLite transaction, sealed
    /// (hash-chained and signed) in the same transaction.
    func apply(_ request: CommitRequest, db: DatabaseState) throws(SequencerError) -> UInt64 {
        let version = db.version + 1
        var batch = Batch()
        batch.database = db.name
        batch.version = version
        batch.committedAtMs = Self.wallClockMs()
        batch.pageSize = request.pageSize
        batch.pageCount = request.pageCount
        batch.pages = request.pages
        batch.changeset = request.changeset
        batch.schemaChanged = request.schemaChanged
        batch.schema = request.schema
        batch.unauditedTables = request.unauditedTables
        do {
            try BatchSeal.seal(&batch, previousHash: db.lastHash, key: signingKey)
        } catch {
            throw SequencerError(.internal, "sealing the batch failed: \(error)")
        }
        try run("BEGIN IMMEDIATE", [])
        do throws(SequencerError) {
            var bytes = 0
            for page in request.pages {
                try run("INSERT INTO pages(db, pgno, version, data, checksum) VALUES (?,?,?,?,?)",
                        [db.id, Int64(page.number), Int64(version), page.data, Int64(page.checksum)])
                bytes += page.data.count
            }
            if db.pageCount > request.pageCount {
                // Truncation: tombstones for the pages that have rows, so that later
                // growth reads zeros, not old pages. (Never one row per page number:
                // a page count is client input.)
                try run("""
                    INSERT INTO pages(db, pgno, version, data, checksum)
                    SELECT DISTINCT db, pgno, ?3, x'', 0 FROM pages WHERE db = ?1 AND pgno > ?2
                    """, [db.id, Int64(request.pageCount), Int64(version)])
            }
            try run("""
                INSERT INTO commits(db, version, txn_id, page_size, page_count, pages, bytes, committed_at_ms, changeset,
                  schema_changed, schema, unaudited, previous_hash, pages_hash, changeset_hash, schema_hash, hash, signature)
                VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                """,
                [db.id, Int64(version), request.txnID, Int64(request.pageSize), Int64(request.pageCount),
                 request.pages.count, bytes, Int64(batch.committedAtMs), Value.blob(request.changeset),
                 batch.schemaChanged, Value.blob(Self.encodeSchema(batch.schema)),
                 Value.blob(Self.encodeNames(batch.unauditedTables)), batch.previousHash, batch.pagesHash,
                 batch.changesetHash, batch.schemaHash, batch.hash, batch.signature])
            try run("UPDATE databases SET version=?, page_size=?, page_count=? WHERE id=?",
                    [Int64(version), Int64(request.pageSize), Int64(request.pageCount), db.id])
            try run("COMMIT", [])
        } catch {
            try? run("ROLLBACK", [])
            throw error
        }
        db.version = version
        db.pageSize = request.pageSize
        db.pageCount = request.pageCount
        db.lastHash = batch.hash
        db.publishHead(changed: request.pages.map(\.number))
        return version
    }

    /// Drops `db`: one durable transaction deletes its pages and batches and
    /// appends a sealed drop batch (no pages, page count 0, an empty schema) at
    /// the next version, which becomes the oldest kept. Versions, the hash
    /// chain and lease epochs go on from there, so a reader's cache of the old
    /// database or a writer fenced before the drop can never pass for the new one.
    /// Releases the lease.
    func drop(_ db: DatabaseState) throws(SequencerError) -> UInt64 {
        let version = db.version + 1
        var batch = Batch()
        batch.database = db.name
        batch.version = version
        batch.committedAtMs = Self.wallClockMs()
        batch.schemaChanged = true
        do {
            try BatchSeal.seal(&batch, previousHash: db.lastHash, key: signingKey)
        } catch {
            throw SequencerError(.internal, "sealing the drop batch failed: \(error)")
        }
        // Unique per database and version; no client sends it (theirs are random).
        let txnID = Array("synddb-drop-\(version)".utf8)
        try run("BEGIN IMMEDIATE", [])
        do throws(SequencerError) {
            try run("DELETE FROM pages WHERE db=?", [db.id])
            try run("DELETE FROM commits WHERE db=?", [db.id])
            try run("""
                INSERT INTO commits(db, version, txn_id, page_size, page_count, pages, bytes, committed_at_ms, changeset,
                  schema_changed, schema, unaudited, previous_hash, pages_hash, changeset_hash, schema_hash, hash, signature)
                VALUES (?,?,?,0,0,0,0,?,?,1,?,?,?,?,?,?,?,?)
                """,
                [db.id, Int64(version), txnID, Int64(batch.committedAtMs), Value.blob([]), Value.blob(Self.encodeSchema([])),
                 Value.blob(Self.encodeNames([])), batch.previousHash, batch.pagesHash, batch.changesetHash,
                 batch.schemaHash, batch.hash, batch.signature])
            try run("UPDATE databases SET version=?, page_size=0, page_count=0, oldest_version=?, lease_holder=NULL WHERE id=?",
                    [Int64(version), Int64(version), db.id])
            try run("COMMIT", [])
        } catch {
            try? run("ROLLBACK", [])
            throw error
        }
        db.version = version
        db.pageSize = 0
        db.pageCount = 0
        db.oldestVersion = version
        db.lastHash = batch.hash
        db.publishHead(changed: nil)
        db.leases.withLock { l in
            l.lease = nil
            l.signalWaiters()
        }
        return version
    }

    /// Milliseconds since the Unix epoch: a batch's (informational) commit time.
    static func wallClockMs() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec / 1_000_000)
    }

    static func encodeSchema(_ schema: [SchemaObject]) -> [UInt8] {
        var w = ProtoWriter()
        for o in schema { w.message(1, o) }
        return w.bytes
    }

    static func decodeSchema(_ bytes: [UInt8]) -> [SchemaObject] {
        var r = ProtoReader(bytes)
        var out: [SchemaObject] = []
        while let (_, _) = try? r.nextField(), let o = try? r.message(SchemaObject.self) { out.append(o) }
        return out
    }

    /// Table names as protobuf repeated strings (field 1), so that any
    /// character may appear in a name.
    static func encodeNames(_ names: [String]) -> [UInt8] {
        var w = ProtoWriter()
        for name in names { w.string(1, name) }
        return w.bytes
    }

    /// Reads `encodeNames`' BLOB, or the TEXT that stores wrote before it:
    /// names joined by U+001F (a name containing U+001F cannot be recovered
    /// from such a row).
    static func decodeNames(_ value: Value) -> [String] {
        switch value {
        case .blob(let bytes):
            var r = ProtoReader(bytes)
            var names: [String] = []
            while let (field, wire) = try? r.nextField() {
                if field == 1, wire == .lengthDelimited, let name = try? r.string() {
                    names.append(name)
                } else if (try? r.skip(wire)) == nil {
                    break
                }
            }
            return names
        case .text(let joined):
            return joined.split(separator: "\u{1F}").map(String.init)
        default:
            return []
        }
    }

    /// Drops page versions that no read at or after `keepFrom` can see.
    func prune(db: DatabaseState, keepFrom: UInt64) throws(SequencerError) {
        guard keepFrom > db.oldestVersion else { return }
        try run("BEGIN IMMEDIATE", [])
        do throws(SequencerError) {
            try run("""
                DELETE FROM pages WHERE db=?1 AND version < ?2 AND version < (
                  SELECT max(p2.version) FROM pages p2 WHERE p2.db=?1 AND p2.pgno=pages.pgno AND p2.version <= ?2)
                """, [db.id, Int64(keepFrom)])
            try run("UPDATE databases SET oldest_version=? WHERE id=?", [Int64(keepFrom), db.id])
            try run("COMMIT", [])
        } catch {
            try? run("ROLLBACK", [])
            throw error
        }
        db.oldestVersion = keepFrom
        db.publishHead()
    }
}

/// A store connection with its prepared statements cached; SQL errors become
/// sequencer errors. Used from one thread at a time (its owner's lock).
final class StoreStatements {
    let connection: Connection
    private var statements: [String: Statement] = [:]

    init(_ connection: Connection) {
        self.connection = connection
    }

    /// A cached prepared statement; SQL errors become UNAVAILABLE (the store failed).
    private func statement(_ sql: String) throws(SequencerError) -> Statement {
        if let s = statements[sql] { return s }
        do {
            let s = try connection.prepare(sql)
            statements[sql] = s
            return s
        } catch {
            throw SequencerError(.internal, "store: \(error)")
        }
    }

    @discardableResult
    func query(_ sql: String, _ values: [any SQLiteBindable]) throws(SequencerError) -> [[Value]] {
        let s = try statement(sql)
        do {
            return try s.run(values)
        } catch {
            throw SequencerError(.unavailable, "store failed: \(error)")
        }
    }

    func run(_ sql: String, _ values: [any SQLiteBindable]) throws(SequencerError) {
        try query(sql, values)
    }

    func readPage(db: Int64, pgno: UInt32, version: UInt64, pageSize: UInt32) throws(SequencerError) -> Page {
        let rows = try query(
            "SELECT data, checksum FROM pages WHERE db=? AND pgno=? AND version<=? ORDER BY version DESC LIMIT 1",
            [db, Int64(pgno), Int64(version)])
        if let r = rows.first, case .blob(let data) = r[0], data.count == Int(pageSize) {
            var page = Page()
            page.number = pgno
            page.data = data
            page.checksum = UInt32(truncatingIfNeeded: r[1].int64 ?? 0)
            return page
        }
        // Never written, truncated away, or written at another page size: zeros, as a file would read.
        return Page(number: pgno, data: [UInt8](repeating: 0, count: Int(pageSize)))
    }

    /// A stored batch, rebuilt from its commit record and its page rows.
    func batch(db: Int64, name: String, version: UInt64) throws(SequencerError) -> Batch? {
        let rows = try query("""
            SELECT committed_at_ms, page_size, page_count, changeset, schema_changed, schema, unaudited,
                   previous_hash, pages_hash, changeset_hash, schema_hash, hash, signature
            FROM commits WHERE db=? AND version=?
            """, [db, Int64(version)])
        guard let r = rows.first else { return nil }
        func blob(_ v: Value) -> [UInt8] { if case .blob(let b) = v { b } else { [] } }
        var b = Batch()
        b.database = name
        b.version = version
        b.committedAtMs = UInt64(r[0].int64 ?? 0)
        b.pageSize = UInt32(r[1].int64 ?? 0)
        b.pageCount = UInt32(r[2].int64 ?? 0)
        b.changeset = blob(r[3])
        b.schemaChanged = (r[4].int64 ?? 0) != 0
        b.schema = StoreState.decodeSchema(blob(r[5]))
        b.unauditedTables = StoreState.decodeNames(r[6])
        b.previousHash = blob(r[7])
        b.pagesHash = blob(r[8])
        b.changesetHash = blob(r[9])
        b.schemaHash = blob(r[10])
        b.hash = blob(r[11])
        b.signature = blob(r[12])
        let pages = try query(
            "SELECT pgno, data, checksum FROM pages WHERE db=? AND version=? AND length(data) > 0 ORDER BY pgno",
            [db, Int64(version)])
        b.pages = pages.map { p in
            var page = Page()
            page.number = UInt32(p[0].int64 ?? 0)
            page.data = blob(p[1])
            page.checksum = UInt32(truncatingIfNeeded: p[2].int64 ?? 0)
            return page
        }
        return b
    }
}
