import CSQLite
import Synchronization
import SyndLedger
import SyndProtocol
import SyndSQLite

#if canImport(Glibc)
import Glibc
#endif

/// The sequencer's durable embedded store: one SQLite file in WAL mode with
/// synchronous=FULL, so every acknowledged commit has been fsynced.
///
/// Every page version is a row; a read at version V takes, for each page, the newest
/// row at or below V. A commit is one SQLite transaction, so a crash at any instant
/// leaves either the whole batch or none of it (SQLite's own recovery).
public final class PageStore: Sendable {
    public let configuration: StoreConfiguration
    private let state: Mutex<StoreState>
    /// Signs every batch (Ed25519); the key lives in the store's folder.
    public let signingKey: SigningKey

    /// Opens (or creates) the store in `configuration.directory`.
    public init(_ configuration: StoreConfiguration) throws {
        self.configuration = configuration
        mkdir(configuration.directory, 0o755)
        let connection = try Connection(path: configuration.directory + "/store.sqlite")
        try connection.execute(
            """
            PRAGMA journal_mode=WAL;
            PRAGMA synchronous=FULL;
            CREATE TABLE IF NOT EXISTS databases(
              id INTEGER PRIMARY KEY,
              name TEXT NOT NULL UNIQUE,
              version INTEGER NOT NULL DEFAULT 0,
              page_size INTEGER NOT NULL DEFAULT 0,
              page_count INTEGER NOT NULL DEFAULT 0,
              oldest_version INTEGER NOT NULL DEFAULT 0,
              lease_epoch INTEGER NOT NULL DEFAULT 0,
              lease_holder TEXT,
              lease_ttl_ms INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE IF NOT EXISTS pages(
              id INTEGER PRIMARY KEY,
              db INTEGER NOT NULL,
              pgno INTEGER NOT NULL,
              version INTEGER NOT NULL,
              data BLOB NOT NULL,
              checksum INTEGER NOT NULL);
            CREATE UNIQUE INDEX IF NOT EXISTS pages_by_version ON pages(db, pgno, version);
            CREATE TABLE IF NOT EXISTS commits(
              db INTEGER NOT NULL,
              version INTEGER NOT NULL,
              txn_id BLOB NOT NULL,
              page_size INTEGER NOT NULL,
              page_count INTEGER NOT NULL,
              pages INTEGER NOT NULL,
              bytes INTEGER NOT NULL,
              committed_at_ms INTEGER NOT NULL,
              changeset BLOB,
              schema_changed INTEGER NOT NULL DEFAULT 0,
              schema BLOB,
              unaudited TEXT,
              previous_hash BLOB NOT NULL,
              pages_hash BLOB NOT NULL,
              changeset_hash BLOB NOT NULL,
              schema_hash BLOB NOT NULL,
              hash BLOB NOT NULL,
              signature BLOB NOT NULL,
              PRIMARY KEY(db, version));
            CREATE UNIQUE INDEX IF NOT EXISTS commits_by_txn ON commits(db, txn_id);
            """)
        // The key is made once, with the store; a store that holds signed
        // batches never gets a new one (StoreState also checks it signed the heads).
        let hasHistory = try connection.scalar("SELECT EXISTS(SELECT 1 FROM commits)") == .integer(1)
        signingKey = try SigningKey(path: configuration.directory + "/sequencer.ed25519", create: !hasHistory)
        let state = try StoreState(connection: connection, signingKey: signingKey)
        self.state = Mutex(state)
    }

    public var capabilities: Capabilities {
        var c = Capabilities()
        c.protocolVersion = 1
        c.pageSizes = (9...16).map { UInt32(1) << UInt32($0) }
        c.maxBatchBytes = configuration.maxBatchBytes
        c.maxPagesPerRead = configuration.maxPagesPerRead
        c.features = ["lease-epoch", "idempotent-commit", "commit-status", "point-in-time-read", "crc32c",
                      "changeset", "sealed-batches", "batch-stream", "lease-hold"]
        c.defaultLeaseTTLMs = configuration.defaultLeaseTTLMs
        c.retainedVersions = configuration.retainedVersions
        return c
    }

    public func open(_ request: OpenDatabaseRequest) throws(SequencerError) -> DatabaseInfo {
        try validateName(request.name)
        return try state.withLock { s throws(SequencerError) in
            if let db = s.databases[request.name] { return db.info }
            guard request.create else {
                throw SequencerError(.notFound, "database '\(request.name)' does not exist; open it with create=true to create it")
            }
            return try s.create(request.name).info
        }
    }

    public func acquireLease(_ request: AcquireLeaseRequest) throws(SequencerError) -> Lease {
        let ttl = try leaseTTL(request.ttlMs)
        guard !request.holder.isEmpty else { throw SequencerError(.invalidArgument, "lease request has no holder id") }
        return try state.withLock { s throws(SequencerError) in
            let db = try s.database(request.database)
            let now = ContinuousClock.now
            if let lease = db.lease, lease.holder != request.holder, lease.expires > now {
                let left = (lease.expires - now).milliseconds
                throw SequencerError(
                    .failedPrecondition,
                    "database '\(request.database)' has a live writer (holder '\(lease.holder)', epoch \(lease.epoch), \(left) ms left); open it read-only, or retry when that writer closes")
            }
            let epoch = db.leaseEpoch + 1
            try s.run("UPDATE databases SET lease_epoch=?, lease_holder=?, lease_ttl_ms=? WHERE id=?",
                      [Int64(epoch), request.holder, Int64(ttl), db.id])
            db.leaseEpoch = epoch
            db.lease = LeaseState(holder: request.holder, epoch: epoch, ttlMs: ttl, expires: now + .milliseconds(ttl))
            return db.leaseMessage
        }
    }

    public func renewLease(_ request: RenewLeaseRequest) throws(SequencerError) -> Lease {
        let ttl = try leaseTTL(request.ttlMs)
        return try state.withLock { s throws(SequencerError) in
            let db = try s.database(request.database)
            let now = ContinuousClock.now
            try db.checkLease(holder: request.holder, epoch: request.epoch, now: now)
            db.lease?.ttlMs = ttl
            db.lease?.expires = now + .milliseconds(ttl)
            return db.leaseMessage
        }
    }

    /// Gives the lease up if `request`'s holder and epoch still hold it (a
    /// release of an older epoch is a no-op). Returns whether it was released.
    @discardableResult
    public func releaseLease(_ request: ReleaseLeaseRequest) throws(SequencerError) -> Bool {
        try state.withLock { s throws(SequencerError) in
            let db = try s.database(request.database)
            guard let lease = db.lease, lease.holder == request.holder, lease.epoch == request.epoch else { return false }
            try s.run("UPDATE databases SET lease_holder=NULL WHERE id=?", [db.id])
            db.lease = nil
            return true
        }
    }

    /// The lease a HoldLease call may hold: `request`'s holder and epoch must
    /// be the live lease (FAILED_PRECONDITION otherwise, with the reason).
    /// Renews nothing.
    public func heldLease(_ request: HoldLeaseRequest) throws(SequencerError) -> Lease {
        try state.withLock { s throws(SequencerError) in
            let db = try s.database(request.database)
            try db.checkLease(holder: request.holder, epoch: request.epoch, now: .now)
            return db.leaseMessage
        }
    }

    public func readPages(_ request: ReadPagesRequest) throws(SequencerError) -> ReadPagesResponse {
        guard request.pageNumbers.count <= Int(configuration.maxPagesPerRead) else {
            throw SequencerError(.invalidArgument, "read asks for \(request.pageNumbers.count) pages; the most per call is \(configuration.maxPagesPerRead)")
        }
        return try state.withLock { s throws(SequencerError) in
            let db = try s.database(request.database)
            let version = request.version == 0 ? db.version : request.version
            guard version <= db.version else {
                throw SequencerError(.outOfRange, "version \(version) of '\(db.name)' is not committed yet (latest is \(db.version))")
            }
            guard version >= db.oldestVersion else {
                throw SequencerError(.outOfRange, "version \(version) of '\(db.name)' is older than the retention window (oldest kept: \(db.oldestVersion))")
            }
            var response = ReadPagesResponse()
            response.version = version
            if version == db.version {
                response.pageSize = db.pageSize
                response.pageCount = db.pageCount
            } else if version > 0 {
                let row = try s.query("SELECT page_size, page_count FROM commits WHERE db=? AND version=?", [db.id, Int64(version)])
                guard let first = row.first else { throw SequencerError(.dataLoss, "commit record of version \(version) is missing") }
                response.pageSize = UInt32(first[0].int64 ?? 0)
                response.pageCount = UInt32(first[1].int64 ?? 0)
            }
            for pgno in request.pageNumbers where pgno >= 1 && pgno <= response.pageCount {
                response.pages.append(try s.readPage(db: db, pgno: pgno, version: version, pageSize: response.pageSize))
            }
            return response
        }
    }

    public func commit(_ request: CommitRequest) throws(SequencerError) -> CommitResponse {
        guard !request.txnID.isEmpty, request.txnID.count <= 64 else {
            throw SequencerError(.invalidArgument, "txn_id must be 1 to 64 bytes (got \(request.txnID.count))")
        }
        return try state.withLock { s throws(SequencerError) in
            let db = try s.database(request.database)
            // A retry of an applied commit gets the first outcome, whatever happened since.
            if let version = try s.committedVersion(db: db, txnID: request.txnID) {
                s.duplicateCommits += 1
                var r = CommitResponse()
                r.version = version
                r.duplicate = true
                return r
            }
            try db.checkLease(holder: request.holder, epoch: request.leaseEpoch, now: .now)
            guard request.baseVersion == db.version else {
                throw SequencerError(.aborted, "stale base version \(request.baseVersion): '\(db.name)' is at version \(db.version); re-read and retry the transaction")
            }
            try validate(request, db: db)
            if let fault = configuration.commitFault?(request) { throw fault }
            let version = try s.apply(request, db: db)
            if version % 64 == 0, configuration.retainedVersions < version {
                try? s.prune(db: db, keepFrom: version - configuration.retainedVersions)
            }
            if let fault = configuration.commitAnswerFault?(request) { throw fault }
            var r = CommitResponse()
            r.version = version
            return r
        }
    }

    public func commitStatus(_ request: GetCommitStatusRequest) throws(SequencerError) -> GetCommitStatusResponse {
        try state.withLock { s throws(SequencerError) in
            let db = try s.database(request.database)
            var r = GetCommitStatusResponse()
            if let version = try s.committedVersion(db: db, txnID: request.txnID) {
                r.state = .committed
                r.version = version
            } else {
                r.state = .notFound
            }
            return r
        }
    }

    /// The public half of the signing key.
    public var sequencerKey: SequencerKey {
        var k = SequencerKey()
        k.algorithm = "ed25519"
        k.publicKey = signingKey.publicKey
        return k
    }

    /// Batch `version` of `database` with its pages and seal, or nil past the head.
    public func batch(database: String, version: UInt64) throws(SequencerError) -> Batch? {
        try state.withLock { s throws(SequencerError) in
            let db = try s.database(database)
            guard version >= 1, version <= db.version else { return nil }
            guard version >= db.oldestVersion else {
                throw SequencerError(.outOfRange, "batch \(version) of '\(database)' is older than the retention window (oldest kept: \(db.oldestVersion)); start a validator within it or raise --retain")
            }
            return try s.batch(db: db, version: version)
        }
    }

    /// The head version of `database`.
    public func headVersion(of database: String) throws(SequencerError) -> UInt64 {
        try state.withLock { s throws(SequencerError) in try s.database(database).version }
    }

    /// Commits answered from the idempotency record instead of being applied again.
    public var duplicateCommitCount: Int { state.withLock { $0.duplicateCommits } }

    // MARK: - Validation

    private func validateName(_ name: String) throws(SequencerError) {
        let ok = !name.isEmpty && name.utf8.count <= 255
            && name.utf8.allSatisfy { c in
                (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 46 || c == 45 || c == 95 || c == 47
            }
        guard ok else {
            throw SequencerError(.invalidArgument, "database name '\(name)' is invalid: use 1-255 characters of A-Z a-z 0-9 . _ - /")
        }
    }

    private func leaseTTL(_ requested: UInt32) throws(SequencerError) -> UInt32 {
        let ttl = requested == 0 ? configuration.defaultLeaseTTLMs : requested
        guard ttl >= 50, ttl <= configuration.maxLeaseTTLMs else {
            throw SequencerError(.invalidArgument, "lease ttl \(ttl) ms is outside 50...\(configuration.maxLeaseTTLMs) ms")
        }
        return ttl
    }

    private func validate(_ request: CommitRequest, db: DatabaseState) throws(SequencerError) {
        let size = request.pageSize
        guard size >= 512, size <= 65536, size & (size - 1) == 0 else {
            throw SequencerError(.invalidArgument, "page size \(size) is not a power of two between 512 and 65536")
        }
        guard request.pageCount >= 1 else {
            throw SequencerError(.invalidArgument, "page_count must be at least 1")
        }
        guard UInt64(request.pageCount) * UInt64(size) <= 1 << 44 else {
            throw SequencerError(.invalidArgument, "page_count \(request.pageCount) is too large")
        }
        let bytes = UInt64(request.pages.count) * UInt64(size)
        guard bytes <= configuration.maxBatchBytes else {
            throw SequencerError(.resourceExhausted, "batch of \(bytes) bytes exceeds the sequencer's limit of \(configuration.maxBatchBytes) bytes")
        }
        var seen = Set<UInt32>()
        for page in request.pages {
            guard page.number >= 1, page.number <= request.pageCount else {
                throw SequencerError(.invalidArgument, "page number \(page.number) is out of range 1...\(request.pageCount)")
            }
            guard page.data.count == Int(size) else {
                throw SequencerError(.invalidArgument, "page \(page.number) has \(page.data.count) bytes; page size is \(size)")
            }
            guard page.isIntact else {
                throw SequencerError(.invalidArgument, "page \(page.number) fails its CRC-32C checksum; it was corrupted in transit")
            }
            guard seen.insert(page.number).inserted else {
                throw SequencerError(.invalidArgument, "page \(page.number) appears twice in the batch")
            }
        }
        if db.pageCount > 0, size != db.pageSize {
            // A page size change (VACUUM) must rewrite the whole database.
            guard seen.count == Int(request.pageCount) else {
                throw SequencerError(.invalidArgument, "page size \(size) differs from the database's \(db.pageSize); a page size change must rewrite every page")
            }
        }
        if db.pageCount == 0, !seen.contains(1) {
            throw SequencerError(.invalidArgument, "the first commit of a database must include page 1")
        }
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + atto / 1_000_000_000_000_000
    }
}
