import PostgresNIO
import SyndLedger
import SyndProtocol
import SyndStorage

/// Databases, reads and the batch stream.
extension PostgresStore {
    /// A database's row: id and head.
    struct Head {
        var id: Int64
        var version: Int64
        var pageSize: Int32
        var pageCount: Int64
        var oldest: Int64
    }

    func head(_ name: String, on connection: PostgresConnection) async throws -> Head? {
        let rows = try await connection.query(
            "SELECT id, \(unescaped: Self.headColumns) FROM synddb_databases WHERE name = \(name)", logger: logger)
        var head: Head?
        for try await (id, version, pageSize, pageCount, oldest) in rows.decode((Int64, Int64, Int32, Int64, Int64).self) {
            head = Head(id: id, version: version, pageSize: pageSize, pageCount: pageCount, oldest: oldest)
        }
        return head
    }

    /// Runs `body` in a read-only transaction that sees one snapshot, so a
    /// prune or drop committed meanwhile cannot take pages from under it.
    func snapshotRead<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) throws(SequencerError) -> T {
        try blocking(what) { [self] in
            try await client.withConnection { connection in
                try await connection.query("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", logger: logger)
                do {
                    let value = try await body(connection)
                    try await connection.query("COMMIT", logger: logger)
                    return value
                } catch {
                    _ = try? await connection.query("ROLLBACK", logger: logger)
                    throw error
                }
            }
        }
    }

    // MARK: - Databases

    public func openExisting(_ request: OpenDatabaseRequest) throws(SequencerError) -> DatabaseInfo? {
        try PageStore.validateName(request.name)
        if request.isPinned { return try openPast(request) }
        let name = request.name, since = Int64(request.sinceVersion)
        return try snapshotRead("opening '\(name)'") { [self] connection -> DatabaseInfo? in
            guard let h = try await head(name, on: connection) else { return nil }
            var info = Self.info(name, h.version, h.pageSize, h.pageCount, h.oldest)
            // The pages written since the caller's version, when few versions passed (else it drops its cache).
            if since > 0, since <= h.version, since >= h.oldest, h.version - since <= 1000 {
                let rows = try await connection.query(
                    "SELECT DISTINCT number FROM synddb_pages WHERE db = \(h.id) AND version > \(since) AND version <= \(h.version)", logger: logger)
                var pages: [UInt32] = []
                for try await n in rows.decode(Int64.self) { pages.append(UInt32(n)) }
                info.changesKnown = true
                info.changedPages = pages.sorted()
            }
            let dropped = h.version > 0 && h.pageCount == 0
            return dropped && !request.create ? nil : info
        }
    }

    /// A database as of `at_version` or `at_time_ms`; never silently the head.
    private func openPast(_ request: OpenDatabaseRequest) throws(SequencerError) -> DatabaseInfo {
        guard request.atVersion == 0 || request.atTimeMs == 0 else {
            throw SequencerError(.invalidArgument, "open '\(request.name)' at a version or at a time, not both")
        }
        let name = request.name, retained = configuration.retainedVersions
        let atVersion = Int64(request.atVersion), atTime = Int64(request.atTimeMs)
        return try snapshotRead("opening '\(name)' in the past") { [self] connection -> DatabaseInfo in
            guard let h = try await head(name, on: connection) else { throw Self.missing(name) }
            let oldest = max(1, h.oldest)
            let kept = "the oldest version kept is \(oldest) (the sequencer keeps the last \(retained) versions: --retain)"
            guard h.version > 0 else {
                throw SequencerError(.outOfRange, "'\(name)' has no committed version yet; there is no past to open")
            }
            let rows: PostgresRowSequence
            if atVersion != 0 {
                guard atVersion <= h.version else {
                    throw SequencerError(.outOfRange, "version \(atVersion) of '\(name)' does not exist yet: the latest is \(h.version)")
                }
                guard atVersion >= oldest else { throw SequencerError(.outOfRange, "version \(atVersion) of '\(name)' is no longer kept: \(kept)") }
                rows = try await connection.query("""
                    SELECT version, page_size, page_count, committed_at_ms FROM synddb_batches WHERE db = \(h.id) AND version = \(atVersion)
                    """, logger: logger)
            } else {
                rows = try await connection.query("""
                    SELECT version, page_size, page_count, committed_at_ms FROM synddb_batches
                    WHERE db = \(h.id) AND version >= \(oldest) AND committed_at_ms <= \(atTime) ORDER BY version DESC LIMIT 1
                    """, logger: logger)
            }
            for try await (version, pageSize, pageCount, at) in rows.decode((Int64, Int32, Int64, Int64).self) {
                var info = Self.info(name, version, pageSize, pageCount, oldest)
                info.committedAtMs = UInt64(at)
                return info
            }
            if atVersion != 0 { throw SequencerError(.dataLoss, "the batch of version \(atVersion) of '\(name)' is missing from the store") }
            throw SequencerError(.outOfRange, "no version of '\(name)' committed at or before \(UnixTime.format(UInt64(atTime))) is kept: \(kept)")
        }
    }

    public func create(_ request: OpenDatabaseRequest) throws(SequencerError) -> DatabaseInfo {
        try PageStore.validateName(request.name)
        let name = request.name
        guard request.create else {
            throw SequencerError(.notFound, "database '\(name)' does not exist; open it with create=true to create it")
        }
        let genesis = Self.bytes(BatchSeal.genesis)
        return try blocking("creating '\(name)'") { [self] in
            try await client.withConnection { connection in
                try await connection.query(
                    "INSERT INTO synddb_databases (name, last_hash) VALUES (\(name), \(genesis)) ON CONFLICT (name) DO NOTHING", logger: logger)
                guard let h = try await head(name, on: connection) else { throw Self.missing(name) }
                return Self.info(name, h.version, h.pageSize, h.pageCount, h.oldest)
            }
        }
    }

    public func drop(_ request: DropDatabaseRequest) throws(SequencerError) -> DropDatabaseResponse {
        try PageStore.validateName(request.database)
        let name = request.database, holder = request.holder, epoch = request.epoch, force = request.force
        return try blocking("dropping '\(name)'") { [self] () async throws -> DropDatabaseResponse in
            try await client.withTransaction(logger: logger) { connection -> DropDatabaseResponse in
                var response = DropDatabaseResponse()
                let rows = try await connection.query("""
                    SELECT id, version, page_count, last_hash, last_committed_at_ms, \(unescaped: Self.leaseColumns)
                    FROM synddb_databases WHERE name = \(name) FOR UPDATE
                    """, logger: logger)
                var found: (id: Int64, version: Int64, pageCount: Int64, hash: [UInt8], at: Int64, lease: LeaseView)?
                for try await (id, version, pageCount, hash, at, h, e, live, ms, inTxn) in rows.decode(
                    (Int64, Int64, Int64, ByteBuffer, Int64, String?, Int64, Bool, Int64, Bool).self)
                {
                    found = (id, version, pageCount, Self.array(hash), at, LeaseView(holder: h, epoch: e, live: live, ms: ms, inTransaction: inTxn))
                }
                guard let d = found, !(d.version > 0 && d.pageCount == 0) else { return response }
                if !force, d.lease.live, let current = d.lease.holder, current != holder || UInt64(d.lease.epoch) != epoch {
                    throw SequencerError(
                        .failedPrecondition,
                        "database '\(name)' has a live writer (holder '\(current)', epoch \(d.lease.epoch), \(d.lease.ms) ms left); it can be dropped once that writer closes, or now with force (synd drop --force)")
                }
                var batch = Batch()
                batch.database = name
                batch.version = UInt64(d.version) + 1
                batch.committedAtMs = max(PageStore.wallClockMs(), UInt64(d.at))
                batch.schemaChanged = true
                do {
                    try BatchSeal.seal(&batch, previousHash: d.hash, key: signingKey)
                } catch {
                    throw SequencerError(.internal, "sealing the drop batch failed: \(error)")
                }
                let version = Int64(batch.version)
                let txn = Self.bytes(Array("synddb-drop-\(version)".utf8))
                let seal = Self.bytes(batch.serializedBytes())
                let at = Int64(batch.committedAtMs)
                let hash = Self.bytes(batch.hash)
                try await connection.query("DELETE FROM synddb_pages WHERE db = \(d.id)", logger: logger)
                try await connection.query("DELETE FROM synddb_batches WHERE db = \(d.id)", logger: logger)
                try await connection.query("DELETE FROM synddb_refusals WHERE db = \(d.id)", logger: logger)
                try await connection.query("""
                    INSERT INTO synddb_batches (db, version, txn_id, committed_at_ms, page_size, page_count, seal)
                    VALUES (\(d.id), \(version), \(txn), \(at), 0, 0, \(seal))
                    """, logger: logger)
                try await connection.query("""
                    UPDATE synddb_databases SET version = \(version), page_size = 0, page_count = 0, oldest_version = \(version),
                        last_hash = \(hash), last_committed_at_ms = \(at), lease_holder = NULL, lease_expires = NULL, lease_in_txn = false
                    WHERE id = \(d.id)
                    """, logger: logger)
                try await connection.query("SELECT pg_notify('synddb', \("head " + name)), pg_notify('synddb', \("free " + name))", logger: logger)
                response.version = batch.version
                return response
            }
        }
    }

    // MARK: - Reads

    public func readPages(_ request: ReadPagesRequest) throws(SequencerError) -> ReadPagesResponse {
        guard request.pageNumbers.count <= Int(configuration.maxPagesPerRead) else {
            throw SequencerError(.invalidArgument, "read asks for \(request.pageNumbers.count) pages; the most per call is \(configuration.maxPagesPerRead)")
        }
        let name = request.database, asked = request.version, numbers = request.pageNumbers
        return try snapshotRead("reading pages of '\(name)'") { [self] connection -> ReadPagesResponse in
            guard let h = try await head(name, on: connection) else { throw Self.missing(name) }
            let version = asked == 0 ? UInt64(h.version) : asked
            guard version <= UInt64(h.version) else {
                throw SequencerError(.outOfRange, "version \(version) of '\(name)' is not committed yet (latest is \(h.version))")
            }
            guard version >= UInt64(h.oldest) else {
                throw SequencerError(.outOfRange, "version \(version) of '\(name)' is older than the retention window (oldest kept: \(h.oldest))")
            }
            var response = ReadPagesResponse()
            response.version = version
            if version == UInt64(h.version) {
                response.pageSize = UInt32(h.pageSize)
                response.pageCount = UInt32(h.pageCount)
            } else if version > 0 {
                let rows = try await connection.query(
                    "SELECT page_size, page_count FROM synddb_batches WHERE db = \(h.id) AND version = \(Int64(version))", logger: logger)
                var sizes: (Int32, Int64)?
                for try await row in rows.decode((Int32, Int64).self) { sizes = row }
                guard let sizes else { throw SequencerError(.dataLoss, "the batch of version \(version) of '\(name)' is missing from the store") }
                response.pageSize = UInt32(sizes.0)
                response.pageCount = UInt32(sizes.1)
            }
            let wanted = numbers.filter { $0 >= 1 && $0 <= response.pageCount }
            var found: [UInt32: Page] = [:]
            if !wanted.isEmpty {
                let list = wanted.map { Int64($0) }
                let rows = try await connection.query("""
                    SELECT DISTINCT ON (number) number, checksum, data FROM synddb_pages
                    WHERE db = \(h.id) AND number = ANY(\(list)::int8[]) AND version <= \(Int64(version))
                    ORDER BY number, version DESC
                    """, logger: logger)
                for try await (number, checksum, data) in rows.decode((Int64, Int64, ByteBuffer).self) {
                    guard data.readableBytes > 0 else { continue }  // cut off by a smaller page count
                    var page = Page()
                    page.number = UInt32(number)
                    page.data = Self.array(data)
                    page.checksum = UInt32(truncatingIfNeeded: checksum)
                    guard page.isIntact else {
                        throw SequencerError(.dataLoss, "page \(number) of '\(name)' as of version \(version) fails its checksum in the PostgreSQL store")
                    }
                    found[page.number] = page
                }
            }
            response.pages.reserveCapacity(wanted.count)
            for number in wanted {
                if let page = found[number], page.data.count == Int(response.pageSize) {
                    response.pages.append(page)
                } else {
                    // Never written, cut off, or written at another page size: zeros, as a file would read.
                    response.pages.append(Page(number: number, data: [UInt8](repeating: 0, count: Int(response.pageSize))))
                }
            }
            return response
        }
    }

    public func watchVersions(of database: String, signal: LeaseSignal) throws(SequencerError) -> UInt64 {
        board.withDatabase(database) { d, id in
            d.watchers[id] = signal
            return id
        }
    }

    public func stopWatching(_ database: String, id: UInt64) {
        board.withDatabase(database) { d, _ in _ = d.watchers.removeValue(forKey: id) }
    }

    public func oldestVersion(of database: String) throws(SequencerError) -> UInt64 {
        let h = try blocking("reading the head of '\(database)'") { [self] in
            try await client.withConnection { try await head(database, on: $0) }
        }
        guard let h else { throw Self.missing(database) }
        return UInt64(max(1, h.oldest))
    }

    public func headVersion(of database: String) throws(SequencerError) -> UInt64 {
        let h = try blocking("reading the head of '\(database)'") { [self] in
            try await client.withConnection { try await head(database, on: $0) }
        }
        guard let h else { throw Self.missing(database) }
        return UInt64(h.version)
    }

    public func batch(database: String, version: UInt64) throws(SequencerError) -> Batch? {
        let v = Int64(version)
        return try snapshotRead("reading batch \(version) of '\(database)'") { [self] connection -> Batch? in
            guard let h = try await head(database, on: connection) else { throw Self.missing(database) }
            guard version >= 1, v <= h.version else { return nil }
            guard v >= h.oldest else {
                throw SequencerError(.outOfRange, "batch \(version) of '\(database)' is older than the retention window (oldest kept: \(h.oldest)); start a validator within it or raise --retain")
            }
            var seal: ByteBuffer?
            for try await s in try await connection.query(
                "SELECT seal FROM synddb_batches WHERE db = \(h.id) AND version = \(v)", logger: logger
            ).decode(ByteBuffer.self) {
                seal = s
            }
            guard let seal else { throw SequencerError(.dataLoss, "batch \(version) of '\(database)' is missing from the store") }
            var batch: Batch
            do {
                batch = try Batch(serializedBytes: Self.array(seal))
            } catch {
                throw SequencerError(.dataLoss, "batch \(version) of '\(database)' cannot be decoded from the store: \(error)")
            }
            let rows = try await connection.query("""
                SELECT number, checksum, data FROM synddb_pages WHERE db = \(h.id) AND version = \(v) AND length(data) > 0 ORDER BY number
                """, logger: logger)
            for try await (number, checksum, data) in rows.decode((Int64, Int64, ByteBuffer).self) {
                var page = Page()
                page.number = UInt32(number)
                page.data = Self.array(data)
                page.checksum = UInt32(truncatingIfNeeded: checksum)
                guard page.isIntact else {
                    throw SequencerError(.dataLoss, "page \(number) of batch \(version) of '\(database)' fails its checksum in the PostgreSQL store")
                }
                batch.pages.append(page)
            }
            return batch
        }
    }

    // MARK: - Snapshots (kept by the embedded store only)

    public func createSnapshot(_ database: String) throws(SequencerError) -> SnapshotInfo {
        throw SequencerError(.unimplemented, "snapshots are kept only by the embedded store; with a PostgreSQL store, validators start from the oldest version kept (raise --retain to keep more)")
    }

    public func usableSnapshot(of database: String) throws(SequencerError) -> SnapshotStore.Reader? { nil }

    public func snapshotIfDue(_ database: String, version: UInt64) {}

    // MARK: - Notifications

    /// Listens for the other sequencers' news (`head`, `free`, `want` and a
    /// database name) and wakes what waits here; reconnects after a failure,
    /// and then wakes everything, since news may have been missed.
    func listen() async {
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: "synddb") { notifications in
                        board.fireAll()
                        for try await n in notifications {
                            let parts = n.payload.split(separator: " ", maxSplits: 1)
                            guard parts.count == 2 else { continue }
                            board.fire(String(parts[0]), String(parts[1]))
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("listening for PostgreSQL notifications failed, retrying: \(Self.describe(error))")
            }
            try? await Task.sleep(for: .milliseconds(200))
        }
    }
}
