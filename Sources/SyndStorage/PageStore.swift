import CSQLite
import Dispatch
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
///
/// Databases do not wait for each other except where the store file makes
/// them: it has one SQLite writer. Three kinds of lock:
///
/// - `state`, the store lock: the writing connection and the in-memory heads.
///   Held across store I/O (a commit's SQLite transaction and fsync) by
///   everything that writes: commit, acquire, create, prune; and by
///   commit-status lookups.
/// - one `LeaseCell` per database: its lease (holder, epoch, expiry), a copy
///   of its head, the pages recent versions wrote, and the queue of writers
///   waiting for the lease. Never held across store I/O. Renewals, releases
///   and HoldLease checks take only this lock (after a short look-up in `leaseCells`), so they
///   never wait for a commit, of their own database or another.
/// - `reader`: a read-only connection to the store file (WAL: it reads while a
///   commit writes). ReadPages, OpenDatabase of an existing database, head
///   versions and batches are served from it, each from one read transaction.
///
/// Lock order: `state`, then `leaseCells`, then a `LeaseCell`; never the
/// reverse. `leaseCells` and a `LeaseCell` are never held together (the cell
/// is looked up, then locked). `reader` is never held with any other lock.
///
/// Fencing: a lease is granted (a new holder or epoch) only under the store
/// lock. A commit checks its lease with the store lock held and keeps holding
/// it until the batch is applied, so a takeover that comes while a commit
/// waits or applies is ordered entirely before or after it: a commit that
/// waited behind a takeover is refused. A release (lease lock only) can only
/// end a lease; the next grant still waits for the store lock. Renewals during a commit
/// only move the expiry forward.
public final class PageStore: Sendable {
    public let configuration: StoreConfiguration
    private let state: Mutex<StoreState>
    /// Each database's lease cell by name, filled under the store lock.
    private let leaseCells: Mutex<[String: LeaseCell]>
    private let reader: Mutex<StoreReader>
    private let commitQueue = DispatchQueue(label: "synd.store.commits")
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
        self.leaseCells = Mutex(state.databases.mapValues(\.leases))
        self.state = Mutex(state)
        self.reader = Mutex(try StoreReader(path: configuration.directory + "/store.sqlite"))
    }

    public var capabilities: Capabilities {
        var c = Capabilities()
        c.protocolVersion = 1
        c.pageSizes = (9...16).map { UInt32(1) << UInt32($0) }
        c.maxBatchBytes = configuration.maxBatchBytes
        c.maxPagesPerRead = configuration.maxPagesPerRead
        c.features = ["lease-epoch", "idempotent-commit", "commit-status", "point-in-time-read", "crc32c",
                      "changeset", "sealed-batches", "batch-stream", "lease-hold", "drop"]
        c.defaultLeaseTTLMs = configuration.defaultLeaseTTLMs
        c.retainedVersions = configuration.retainedVersions
        return c
    }

    /// Opens `request.name`, creating it if asked and missing.
    public func open(_ request: OpenDatabaseRequest) throws(SequencerError) -> DatabaseInfo {
        if let info = try openExisting(request) { return info }
        return try create(request)
    }

    /// The head of `request.name` if it exists (nil if not, or if it was
    /// dropped and `request.create` is false), without the store lock.
    public func openExisting(_ request: OpenDatabaseRequest) throws(SequencerError) -> DatabaseInfo? {
        try validateName(request.name)
        if request.sinceVersion > 0, let cell = leaseCells.withLock({ $0[request.name] }) {
            // The head as of its last commit (published once durable), with
            // the pages written since the caller's version.
            let info = cell.withLock { l -> DatabaseInfo in
                var info = l.head
                if let pages = l.recent.pages(since: request.sinceVersion, head: info.version) {
                    info.changesKnown = true
                    info.changedPages = pages
                }
                return info
            }
            let dropped = info.version > 0 && info.pageCount == 0
            return dropped && !request.create ? nil : info
        }
        guard let head = try reader.withLock({ r throws(SequencerError) in try r.head(request.name) }) else { return nil }
        return head.isDropped && !request.create ? nil : head.info
    }

    /// Creates `request.name` under the store lock if `request.create` (NOT_FOUND
    /// if not); a database that exists meanwhile is just opened.
    public func create(_ request: OpenDatabaseRequest) throws(SequencerError) -> DatabaseInfo {
        try validateName(request.name)
        return try state.withLock { s throws(SequencerError) in
            // A dropped database is created again as it is: empty, its versions going on.
            if let db = s.databases[request.name], !db.isDropped || request.create { return db.info }
            guard request.create else {
                throw SequencerError(.notFound, "database '\(request.name)' does not exist; open it with create=true to create it")
            }
            let db = try s.create(request.name)
            leaseCells.withLock { $0[db.name] = db.leases }
            return db.info
        }
    }

    /// A database's lease cell, found without the store lock.
    func leaseCell(_ database: String) throws(SequencerError) -> LeaseCell {
        guard let cell = leaseCells.withLock({ $0[database] }) else {
            throw SequencerError(.notFound, "database '\(database)' does not exist on this sequencer; open it with create=true first")
        }
        return cell
    }

    /// Grants a new epoch. The epoch is stored durably (epochs are never reused,
    /// even across restarts) before the answer, so this waits for the store lock.
    ///
    /// Refused (FAILED_PRECONDITION) while another holder's lease is live, and
    /// while writers that queued earlier (`joinLeaseQueue`) wait: `ticket` is
    /// the caller's place in that queue (0: not queued). A refusal tells the
    /// holder that its lease is wanted.
    public func acquireLease(_ request: AcquireLeaseRequest, ticket: UInt64 = 0) throws(SequencerError) -> Lease {
        let ttl = try leaseTTL(request.ttlMs)
        guard !request.holder.isEmpty else { throw SequencerError(.invalidArgument, "lease request has no holder id") }
        return try state.withLock { s throws(SequencerError) in
            let db = try s.database(request.database)
            // Only acquires (here, under the store lock) install a lease, and a
            // lapsed lease cannot be renewed, so what is checked here still holds
            // after the store write below.
            let epoch = try db.leases.withLock { l throws(SequencerError) -> UInt64 in
                let now = ContinuousClock.now
                if let lease = l.lease, lease.holder != request.holder, lease.expires > now {
                    l.signalWanted()
                    let left = (lease.expires - now).milliseconds
                    throw SequencerError(
                        .failedPrecondition,
                        "database '\(request.database)' is locked: another connection holds its writer lease (holder '\(lease.holder)', epoch \(lease.epoch), \(left) ms left) and was asked to hand it over; set a busy timeout (sqlite3_busy_timeout, PRAGMA busy_timeout, Python's timeout=) to wait for it")
                }
                if let first = l.queue.first(where: { $0.holder != request.holder }), ticket == 0 || first.id < ticket {
                    l.signalWanted()
                    throw SequencerError(
                        .failedPrecondition,
                        "database '\(request.database)' is locked: writers that asked earlier are waiting for its lease (first: '\(first.holder)'); set a busy timeout to wait your turn")
                }
                return l.leaseEpoch + 1
            }
            // Epochs are made durable in blocks: the store keeps a ceiling no
            // epoch granted so far exceeds, and a restart continues above it.
            // Only a grant past the ceiling writes (and fsyncs), so handing
            // the lease between writers costs no store write at all.
            if epoch > db.durableEpochCeiling {
                let ceiling = epoch + StoreState.epochBlock - 1
                try s.run("UPDATE databases SET lease_epoch=?, lease_holder=?, lease_ttl_ms=? WHERE id=?",
                          [Int64(ceiling), request.holder, Int64(ttl), db.id])
                db.durableEpochCeiling = ceiling
            }
            return db.leases.withLock { l in
                l.leaseEpoch = epoch
                l.lease = LeaseState(holder: request.holder, epoch: epoch, ttlMs: ttl, expires: .now + .milliseconds(ttl))
                return l.message
            }
        }
    }

    /// Extends the live lease of `request`'s holder and epoch. Takes only the
    /// database's lease lock: never waits for the store.
    public func renewLease(_ request: RenewLeaseRequest) throws(SequencerError) -> Lease {
        let ttl = try leaseTTL(request.ttlMs)
        let cell = try leaseCell(request.database)
        return try cell.withLock { l throws(SequencerError) in
            let now = ContinuousClock.now
            try l.check(holder: request.holder, epoch: request.epoch, now: now)
            l.lease?.ttlMs = ttl
            l.lease?.expires = now + .milliseconds(ttl)
            if request.inTransaction {
                l.lease?.inTransaction = true
                l.signalWaiters()  // they stop waiting
            }
            return l.message
        }
    }

    /// Gives the lease up if `request`'s holder and epoch still hold it (a
    /// release of an older epoch is a no-op). Returns whether it was released.
    ///
    /// Takes only the database's lease lock and writes nothing: a hand-over
    /// between writers costs no fsync, and no lease survives a restart anyway
    /// (see `StoreState.init`). Fencing does not depend on it: epochs are
    /// durable at acquisition and every commit checks holder and epoch.
    /// Racing an acquisition is safe: an acquisition by another holder is
    /// refused until this runs, and one by the same holder installs a new
    /// epoch, which this leaves alone.
    @discardableResult
    public func releaseLease(_ request: ReleaseLeaseRequest) throws(SequencerError) -> Bool {
        let cell = try leaseCell(request.database)
        return cell.withLock { l in
            guard let lease = l.lease, lease.holder == request.holder, lease.epoch == request.epoch else { return false }
            l.lease = nil
            l.signalWaiters()
            return true
        }
    }

    /// The lease a HoldLease call may hold: `request`'s holder and epoch must
    /// be the live lease (FAILED_PRECONDITION otherwise, with the reason).
    /// Renews nothing; never waits for the store.
    public func heldLease(_ request: HoldLeaseRequest) throws(SequencerError) -> Lease {
        let cell = try leaseCell(request.database)
        return try cell.withLock { l throws(SequencerError) in
            try l.check(holder: request.holder, epoch: request.epoch, now: .now)
            return l.message
        }
    }

    /// Pages of one committed version, from the read-only connection: the
    /// database's row and its pages come from one read transaction, so the
    /// answer is consistent without the store lock.
    public func readPages(_ request: ReadPagesRequest) throws(SequencerError) -> ReadPagesResponse {
        guard request.pageNumbers.count <= Int(configuration.maxPagesPerRead) else {
            throw SequencerError(.invalidArgument, "read asks for \(request.pageNumbers.count) pages; the most per call is \(configuration.maxPagesPerRead)")
        }
        return try reader.withLock { r throws(SequencerError) in
            try r.snapshot { r throws(SequencerError) in
                let db = try r.database(request.database)
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
                    guard let sizes = try r.sizes(db: db.id, version: version) else {
                        throw SequencerError(.dataLoss, "commit record of version \(version) is missing")
                    }
                    response.pageSize = sizes.pageSize
                    response.pageCount = sizes.pageCount
                }
                for pgno in request.pageNumbers where pgno >= 1 && pgno <= response.pageCount {
                    response.pages.append(try r.readPage(db: db.id, pgno: pgno, version: version, pageSize: response.pageSize))
                }
                return response
            }
        }
    }

    /// Applies `request` and calls `completion` once the batch is durable (or
    /// refused), from a store thread. Never blocks the caller on store I/O, so
    /// it may be called from an event loop. Concurrent commits, of one database
    /// or many, share an fsync.
    public func commit(_ request: CommitRequest, completion: @escaping @Sendable (Result<CommitResponse, SequencerError>) -> Void) {
        commitQueue.async {
            completion(Result { () throws(SequencerError) -> CommitResponse in try self.commit(request) })
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
            // With the store lock held until the batch is applied: see the type's comment.
            try db.leases.withLock { l throws(SequencerError) in
                try l.check(holder: request.holder, epoch: request.leaseEpoch, now: .now)
            }
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

    /// Drops `request.database` (see `StoreState.drop`). FAILED_PRECONDITION
    /// while a live lease is held by anyone but `request`'s holder and epoch;
    /// a database that does not exist, or is already dropped, is left as it is
    /// (version 0 in the answer).
    public func drop(_ request: DropDatabaseRequest) throws(SequencerError) -> DropDatabaseResponse {
        try validateName(request.database)
        return try state.withLock { s throws(SequencerError) in
            var response = DropDatabaseResponse()
            guard let db = s.databases[request.database], !db.isDropped else { return response }
            try db.leases.withLock { l throws(SequencerError) in
                let now = ContinuousClock.now
                guard let lease = l.lease, lease.expires > now,
                    lease.holder != request.holder || lease.epoch != request.epoch
                else { return }
                throw SequencerError(
                    .failedPrecondition,
                    "database '\(request.database)' has a live writer (holder '\(lease.holder)', epoch \(lease.epoch), \((lease.expires - now).milliseconds) ms left); it can be dropped once that writer closes")
            }
            response.version = try s.drop(db)
            return response
        }
    }

    /// The oldest batch kept of `database` (at least 1), from the read-only connection.
    public func oldestVersion(of database: String) throws(SequencerError) -> UInt64 {
        try reader.withLock { r throws(SequencerError) in max(1, try r.database(database).oldestVersion) }
    }

    /// The public half of the signing key.
    public var sequencerKey: SequencerKey {
        var k = SequencerKey()
        k.algorithm = "ed25519"
        k.publicKey = signingKey.publicKey
        return k
    }

    /// Batch `version` of `database` with its pages and seal, or nil past the
    /// head. From the read-only connection, in one read transaction.
    public func batch(database: String, version: UInt64) throws(SequencerError) -> Batch? {
        try reader.withLock { r throws(SequencerError) -> Batch? in
            try r.snapshot { r throws(SequencerError) -> Batch? in
                let db = try r.database(database)
                guard version >= 1, version <= db.version else { return nil }
                guard version >= db.oldestVersion else {
                    throw SequencerError(.outOfRange, "batch \(version) of '\(database)' is older than the retention window (oldest kept: \(db.oldestVersion)); start a validator within it or raise --retain")
                }
                return try r.batch(db: db.id, name: database, version: version)
            }
        }
    }

    /// The head version of `database` (its latest durable commit), from the read-only connection.
    public func headVersion(of database: String) throws(SequencerError) -> UInt64 {
        try reader.withLock { r throws(SequencerError) in try r.database(database).version }
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
