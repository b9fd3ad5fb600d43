import SyndProtocol
import SyndSQLite

/// Everything behind `PageStore`'s mutex: the SQLite connection and the
/// in-memory mirror of each database's head.
final class StoreState {
    let connection: Connection
    var databases: [String: DatabaseState] = [:]
    var duplicateCommits = 0
    private var statements: [String: Statement] = [:]

    init(connection: Connection) throws {
        self.connection = connection
        let rows = try connection.query(
            "SELECT id, name, version, page_size, page_count, oldest_version, lease_epoch, lease_holder, lease_ttl_ms FROM databases")
        let now = ContinuousClock.now
        for r in rows {
            var lease: LeaseState?
            if let holder = r[7].string {
                let ttl = UInt32(r[8].int64 ?? 0)
                lease = LeaseState(holder: holder, epoch: UInt64(r[6].int64 ?? 0), ttlMs: ttl, expires: now + .milliseconds(ttl))
            }
            let db = DatabaseState(
                id: r[0].int64!, name: r[1].string!, version: UInt64(r[2].int64!), pageSize: UInt32(r[3].int64!),
                pageCount: UInt32(r[4].int64!), oldestVersion: UInt64(r[5].int64!), leaseEpoch: UInt64(r[6].int64!), lease: lease)
            databases[db.name] = db
        }
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

    func committedVersion(db: DatabaseState, txnID: [UInt8]) throws(SequencerError) -> UInt64? {
        try query("SELECT version FROM commits WHERE db=? AND txn_id=?", [db.id, txnID]).first?.first?.int64.map(UInt64.init)
    }

    func readPage(db: DatabaseState, pgno: UInt32, version: UInt64, pageSize: UInt32) throws(SequencerError) -> Page {
        let rows = try query(
            "SELECT data, checksum FROM pages WHERE db=? AND pgno=? AND version<=? ORDER BY version DESC LIMIT 1",
            [db.id, Int64(pgno), Int64(version)])
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

    /// Applies a validated batch as one durable SQLite transaction.
    func apply(_ request: CommitRequest, db: DatabaseState) throws(SequencerError) -> UInt64 {
        let version = db.version + 1
        try run("BEGIN IMMEDIATE", [])
        do throws(SequencerError) {
            var bytes = 0
            for page in request.pages {
                try run("INSERT INTO pages(db, pgno, version, data, checksum) VALUES (?,?,?,?,?)",
                        [db.id, Int64(page.number), Int64(version), page.data, Int64(page.checksum)])
                bytes += page.data.count
            }
            if db.pageCount > request.pageCount {
                // Truncation: tombstones, so that later growth reads zeros, not old pages.
                for pgno in (request.pageCount + 1)...db.pageCount {
                    try run("INSERT INTO pages(db, pgno, version, data, checksum) VALUES (?,?,?,x'',0)",
                            [db.id, Int64(pgno), Int64(version)])
                }
            }
            try run("""
                INSERT INTO commits(db, version, txn_id, page_size, page_count, pages, bytes, committed_at_ms, changeset)
                VALUES (?,?,?,?,?,?,?,CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),?)
                """,
                [db.id, Int64(version), request.txnID, Int64(request.pageSize), Int64(request.pageCount),
                 request.pages.count, bytes, request.changeset.isEmpty ? Value.null : Value.blob(request.changeset)])
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
        return version
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
    }
}
