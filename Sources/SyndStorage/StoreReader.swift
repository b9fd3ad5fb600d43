import SyndProtocol
import SyndSQLite

/// A read-only connection to the store file, for reads that must not wait for
/// the store lock (a commit holds it across its SQLite transaction and fsync).
/// The store is in WAL mode, so this connection reads the last committed state
/// while a commit writes, and sees a commit once it is durable. Each call of
/// `snapshot` is one read transaction: a database's row (head version, sizes,
/// retention) and its pages come from the same snapshot.
final class StoreReader {
    private let statements: StoreStatements

    /// A database's row in the `databases` table.
    struct Head {
        var id: Int64
        var name: String
        var version: UInt64
        var pageSize: UInt32
        var pageCount: UInt32
        var oldestVersion: UInt64

        /// Dropped (its head is a drop batch); see `DatabaseState.isDropped`.
        var isDropped: Bool { version > 0 && pageCount == 0 }

        var info: DatabaseInfo {
            DatabaseInfo(name: name, version: version, pageSize: pageSize, pageCount: pageCount, oldestVersion: oldestVersion)
        }
    }

    /// Opens `path` read-only; the store's writing connection must have created it (in WAL mode).
    init(path: String) throws {
        let connection = try Connection(path: path, readOnly: true)
        // A read transaction may briefly get SQLITE_BUSY (WAL recovery, a WAL reset).
        try connection.execute("PRAGMA busy_timeout=5000")
        statements = StoreStatements(connection)
    }

    /// Runs `body` in one read transaction.
    func snapshot<T>(_ body: (StoreReader) throws(SequencerError) -> T) throws(SequencerError) -> T {
        try statements.run("BEGIN", [])
        do throws(SequencerError) {
            let result = try body(self)
            try statements.run("COMMIT", [])
            return result
        } catch {
            try? statements.run("ROLLBACK", [])
            throw error
        }
    }

    /// `name`'s row, or nil if there is no such database.
    func head(_ name: String) throws(SequencerError) -> Head? {
        let rows = try statements.query(
            "SELECT id, version, page_size, page_count, oldest_version FROM databases WHERE name=?", [name])
        guard let r = rows.first else { return nil }
        return Head(id: r[0].int64 ?? 0, name: name, version: UInt64(r[1].int64 ?? 0), pageSize: UInt32(r[2].int64 ?? 0),
                    pageCount: UInt32(r[3].int64 ?? 0), oldestVersion: UInt64(r[4].int64 ?? 0))
    }

    /// `name`'s row; NOT_FOUND (with the store lock's message) if there is none.
    func database(_ name: String) throws(SequencerError) -> Head {
        guard let head = try head(name) else {
            throw SequencerError(.notFound, "database '\(name)' does not exist on this sequencer; open it with create=true first")
        }
        return head
    }

    /// Page size and page count of `version`, from its commit record.
    func sizes(db: Int64, version: UInt64) throws(SequencerError) -> (pageSize: UInt32, pageCount: UInt32)? {
        let rows = try statements.query("SELECT page_size, page_count FROM commits WHERE db=? AND version=?", [db, Int64(version)])
        guard let first = rows.first else { return nil }
        return (UInt32(first[0].int64 ?? 0), UInt32(first[1].int64 ?? 0))
    }

    func readPage(db: Int64, pgno: UInt32, version: UInt64, pageSize: UInt32) throws(SequencerError) -> Page {
        try statements.readPage(db: db, pgno: pgno, version: version, pageSize: pageSize)
    }

    func batch(db: Int64, name: String, version: UInt64) throws(SequencerError) -> Batch? {
        try statements.batch(db: db, name: name, version: version)
    }
}
