import CSQLite
import SyndSQLite
import SyndVFS

/// A SQLite connection whose database lives in a SyndDB sequencer.
///
///     let db = try Database.open("app", sequencer: "http://127.0.0.1:8433")
///     try db.execute("CREATE TABLE IF NOT EXISTS t(x)")
///     try db.query("INSERT INTO t VALUES (?)", [42])
///
/// Every write transaction reaches the sequencer as one atomic batch, and
/// COMMIT returns once the sequencer has made it durable. Errors are
/// `SQLiteError`s with SQLite's codes and SyndDB's detail.
public final class Database {
    /// The underlying SQLite connection, for anything this type does not wrap.
    public let connection: Connection
    public let name: String

    /// Opens (creating if needed, unless read-only) database `name` on the sequencer at `sequencer`.
    ///
    /// A read-write connection takes the database's writer lease at its first
    /// write (SQLite's RESERVED lock), not at open. While another connection
    /// is inside a write transaction, writes get `SQLITE_BUSY` with the reason
    /// (set `DatabaseOptions.busyTimeoutMs` to wait, as with a local file).
    public static func open(_ name: String, sequencer: String, options: DatabaseOptions = DatabaseOptions()) throws -> Database {
        registerVFS()
        let uri = uri(name, sequencer: sequencer, options: options)
        let readOnly = isReadOnly(options)
        let connection = try Connection(path: uri, readOnly: readOnly, vfs: SyndVFS.name)
        if options.busyTimeoutMs > 0 { sqlite3_busy_timeout(connection.handle, Int32(options.busyTimeoutMs)) }
        if !readOnly {
            try connection.execute("PRAGMA journal_mode=\(options.journalMode)")
            if let size = options.pageSize { try connection.execute("PRAGMA page_size=\(size)") }
        }
        return Database(connection: connection, name: name)
    }

    /// Registers the `synddb` VFS with this process's SQLite, for code that
    /// opens connections itself (GRDB, SQLite.swift, plain `sqlite3_open_v2`):
    /// it then opens `uri(...)`. Safe to call more than once.
    public static func registerVFS() {
        sqlite3_initialize()
        SyndVFS.register(api: synd_linked_sqlite_api())
    }

    /// The `file:` URI that opens database `name` on `sequencer` through the
    /// `synddb` VFS with `options` (busy timeout, journal mode and page size
    /// aside: those are the opener's to set). Open it with SQLITE_OPEN_URI, or
    /// with an SQLite built with URI filenames on (Debian's is).
    public static func uri(_ name: String, sequencer: String, options: DatabaseOptions = DatabaseOptions()) -> String {
        var uri = "file:\(name)?vfs=\(SyndVFS.name)&sequencer=\(sequencer)&lease_ttl_ms=\(options.leaseTTLMs)"
        uri += "&lease_renew=\(options.renewLease ? 1 : 0)&timeout_ms=\(options.timeoutMs)&cache_mb=\(options.cacheMB)"
        uri += "&lock_wait_ms=\(options.lockWaitMs)&spill_mb=\(options.spillMB)"
        let readOnly = isReadOnly(options)
        if options.follow { uri += "&follow=1" }
        if let lag = options.maxLagMs { uri += "&max_lag_ms=\(lag)" }
        if let v = options.minVersion { uri += "&min_version=\(v)" }
        if let key = options.sequencerKey { uri += "&sequencer_key=\(key)" }
        if readOnly { uri += "&mode=ro" }
        switch options.asOf {
        case .version(let v)?: uri += "&version=\(v)"
        case .time(let ms)?: uri += "&at=\(ms)"
        case nil: break
        }
        if !options.captureChangesets { uri += "&capture=0" }
        if let ca = options.tlsCAFile { uri += "&tls_ca=\(ca)" }
        return uri
    }

    /// A past state or a follower is read-only, whatever `readOnly` says.
    private static func isReadOnly(_ options: DatabaseOptions) -> Bool {
        options.readOnly || options.asOf != nil || options.follow || options.maxLagMs != nil || options.minVersion != nil
    }

    init(connection: Connection, name: String) {
        self.connection = connection
        self.name = name
    }

    /// Runs statements that return no rows.
    public func execute(_ sql: String) throws { try connection.execute(sql) }

    /// Runs one statement with bindings and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ values: [any SQLiteBindable] = []) throws -> [[Value]] {
        try connection.query(sql, values)
    }

    /// The first column of the first row.
    public func scalar(_ sql: String, _ values: [any SQLiteBindable] = []) throws -> Value? {
        try connection.scalar(sql, values)
    }

    /// A prepared statement to run many times with different bindings.
    public func prepare(_ sql: String) throws -> Statement { try connection.prepare(sql) }

    /// Runs `body` in one transaction: one atomic, durable commit to the sequencer.
    @discardableResult
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try connection.transaction("IMMEDIATE", body)
    }

    /// What this connection has done on the network.
    public var statistics: Statistics {
        var values = [Int64](repeating: 0, count: SyndVFS.statisticsCount)
        _ = values.withUnsafeMutableBufferPointer { sqlite3_file_control(connection.handle, "main", SyndVFS.statisticsFileControl, $0.baseAddress) }
        return Statistics(requests: Int(values[0]), commits: Int(values[1]), version: UInt64(values[2]), leaseEpoch: UInt64(values[3]),
                          leaseAcquisitions: Int(values[4]), pagesKeptOnRefresh: Int(values[5]),
                          readsSentAhead: Int(values[6]), readsSentAheadUsed: Int(values[7]))
    }

    public struct Statistics: Sendable, Equatable {
        /// Requests this connection's VFS made to the sequencer (lease renewals excluded).
        public var requests: Int
        /// Batches committed.
        public var commits: Int
        /// The database version this connection last read or committed.
        public var version: UInt64
        /// The writer lease epoch (0 when read-only or before the first write).
        public var leaseEpoch: UInt64
        /// Times this connection took the writer lease: its first write, and
        /// each write after it handed the lease to another writer.
        public var leaseAcquisitions = 0
        /// Cached pages kept, not re-read, when a read transaction found that
        /// others had committed (only the pages they wrote are dropped).
        public var pagesKeptOnRefresh = 0
        /// Reads a sequential scan sent before SQLite asked for their pages, so
        /// that the sequencer reads and sends them while SQLite uses the pages it has.
        public var readsSentAhead = 0
        /// Reads sent ahead whose answer was used (the others were given up:
        /// the scan stopped, jumped, or the snapshot moved on).
        public var readsSentAheadUsed = 0
    }
}
