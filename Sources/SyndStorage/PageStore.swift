import Dispatch
import Synchronization
import SyndLedger
import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// The sequencer's logic over a storage backend: it names databases, fences
/// writers with leases, checks base versions, deduplicates retried commits,
/// validates, numbers and seals batches, and decides retention. What it
/// decided is kept by a `StorageBackend` (the embedded `LogStore`), which
/// acknowledges each record once it is durable.
///
/// Databases never wait for each other: each has its own locks.
///
/// - `catalog`: names to databases. Held only to look one up or add one.
/// - a database's `head` (see `DatabaseHead`): its durable and sealed heads
///   and the commits on their way to the disk. Held to check and seal a
///   commit and to hand it to the backend (which only queues it), never across
///   store I/O.
/// - a database's `LeaseCell`: its lease, a copy of its durable head and the
///   pages recent versions wrote, and the writers waiting for the lease.
///   Renewals, releases and HoldLease checks take only this lock.
///
/// Lock order: `catalog`, then a head, then a lease cell; never the reverse.
/// Backend completions take a head lock, so nothing waits for a completion
/// while holding one.
///
/// Fencing: a lease is granted (a new holder or epoch) under the head lock,
/// and a commit checks its lease and is sealed and queued under the same lock,
/// so a takeover is ordered entirely before or after a commit: one checked
/// before the takeover is also on the disk before anything the new holder
/// writes, and its base version is what the new holder's commit must match.
/// A release (lease lock only) can only end a lease; renewals during a commit
/// only move the expiry forward.
public final class PageStore: Sendable {
    public let configuration: StoreConfiguration
    /// Where batches are kept.
    public let backend: any StorageBackend
    /// Signs every batch (Ed25519); the key lives in the store's folder.
    public let signingKey: SigningKey
    /// What opening the store found or did that an operator should know.
    public let recoveryNotes: [String]
    private let catalog: Mutex<Catalog>
    private let duplicates = Atomic<Int>(0)
    /// Sealed snapshots, in the `snapshots` folder.
    public let snapshots: SnapshotStore
    let snapshotState = Mutex(SnapshotState())
    /// Makes periodic snapshots one at a time, off the commit path.
    let snapshotQueue = DispatchQueue(label: "synd.store.snapshots", qos: .utility)
    /// Lease epochs are made durable this many at a time (see `acquireLease`).
    static let epochBlock: UInt64 = 1024

    private struct Catalog: ~Copyable {
        var databases: [String: DatabaseState] = [:]
        var nextID: Int64 = 1
    }

    /// Opens (or creates) the store in `configuration.directory`: its log is
    /// the `log` folder. A store written by an earlier version (`store.sqlite`)
    /// is imported into the log the first time.
    public init(_ configuration: StoreConfiguration) throws {
        self.configuration = configuration
        mkdir(configuration.directory, 0o755)
        snapshots = SnapshotStore(folder: configuration.directory + "/snapshots", kept: configuration.snapshotsKept)
        let logDirectory = configuration.directory + "/log"
        let legacy = configuration.directory + "/store.sqlite"
        var imported: [String] = []
        if access(legacy, F_OK) == 0, access(logDirectory, F_OK) != 0 {
            imported = try LegacyStoreImport.run(from: legacy, into: logDirectory)
        }
        var logOptions = LogStoreOptions()
        logOptions.segmentLimit = configuration.segmentBytes
        logOptions.events = configuration.events
        logOptions.syncTimes = configuration.syncTimes
        let backend = try LogStore(directory: logDirectory, options: logOptions)
        self.backend = backend
        let hasHistory = backend.recovered.contains { $0.version > 0 }
        signingKey = try SigningKey(path: configuration.directory + "/sequencer.ed25519", create: !hasHistory)
        var catalog = Catalog()
        for r in backend.recovered {
            var lastHash = BatchSeal.genesis
            if r.version > 0 {
                lastHash = try Self.verifiedHeadHash(of: r, backend: backend, signingKey: signingKey)
            }
            let lastTime = backend.committedAt(database: r.id, version: r.version) ?? 0
            catalog.databases[r.name] = DatabaseState(r, lastHash: lastHash, lastCommittedAtMs: lastTime)
            catalog.nextID = max(catalog.nextID, r.id + 1)
        }
        self.catalog = Mutex(catalog)
        recoveryNotes = imported + backend.recoveryNotes
    }

    /// The hash of `db`'s head batch, after checking that it matches the batch
    /// and that `signingKey` signed it: a sequencer started with another key
    /// would extend every chain with batches no validator accepts.
    private static func verifiedHeadHash(of db: RecoveredDatabase, backend: any StorageBackend, signingKey: SigningKey) throws -> [UInt8] {
        guard let head = try backend.batch(database: db.id, version: db.version) else {
            throw SealError(message: "the store is damaged: database '\(db.name)' is at version \(db.version) but that batch is missing")
        }
        guard BatchSeal.hash(of: head) == head.hash else {
            throw SealError(message: "the store is damaged: the hash of batch \(db.version) of '\(db.name)' does not match its contents")
        }
        guard signingKey.isValidSignature(head.signature, for: head.hash) else {
            throw SealError(message: """
                the sequencer key \(signingKey.path) does not match the stored history: batch \(db.version) of \
                '\(db.name)' was signed by another key. Put back the key this store was created with; the sequencer \
                never replaces its key, and signing with another one would break every database's chain
                """)
        }
        return head.hash
    }

    public var capabilities: Capabilities { Self.capabilities(configuration) }

    /// What a sequencer with `configuration` offers its clients.
    public static func capabilities(_ configuration: StoreConfiguration) -> Capabilities {
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

    // MARK: - Databases

    /// Every database the catalog holds (dropped ones included).
    func catalogSnapshot() -> [DatabaseState] {
        catalog.withLock { Array($0.databases.values) }
    }

    private func database(_ name: String) throws(SequencerError) -> DatabaseState {
        guard let db = catalog.withLock({ $0.databases[name] }) else {
            throw SequencerError(.notFound, "database '\(name)' does not exist on this sequencer; open it with create=true first")
        }
        return db
    }

    /// A database's lease cell.
    func leaseCell(_ database: String) throws(SequencerError) -> LeaseCell {
        try self.database(database).leases
    }

    /// The head of `request.name` if it exists (nil if not, or if it was
    /// dropped and `request.create` is false). From memory.
    public func openExisting(_ request: OpenDatabaseRequest) throws(SequencerError) -> DatabaseInfo? {
        try validateName(request.name)
        if request.isPinned { return try openPast(request) }
        guard let db = catalog.withLock({ $0.databases[request.name] }) else { return nil }
        // The head as of its last durable commit, with the pages written since the caller's version.
        let info = db.leases.withLock { l -> DatabaseInfo in
            var info = l.head
            if request.sinceVersion > 0, let pages = l.recent.pages(since: request.sinceVersion, head: info.version) {
                info.changesKnown = true
                info.changedPages = pages
            }
            return info
        }
        let dropped = info.version > 0 && info.pageCount == 0
        return dropped && !request.create ? nil : info
    }

    /// `request.name` as of `at_version`, or of the last version committed at
    /// or before `at_time_ms`: that version's sizes and commit time. Never
    /// silently the head: a request outside what is kept fails, naming the
    /// oldest version kept.
    private func openPast(_ request: OpenDatabaseRequest) throws(SequencerError) -> DatabaseInfo {
        guard request.atVersion == 0 || request.atTimeMs == 0 else {
            throw SequencerError(.invalidArgument, "open '\(request.name)' at a version or at a time, not both")
        }
        let db = try database(request.name)
        let (head, generation) = try readStart(db)
        let oldest = max(1, head.oldestVersion)
        func kept() -> String {
            let time = backend.committedAt(database: db.id, version: oldest).map { ", committed at \(UnixTime.format($0))" } ?? ""
            return "the oldest version kept is \(oldest)\(time) (the sequencer keeps the last \(configuration.retainedVersions) versions: --retain)"
        }
        guard head.version > 0 else {
            throw SequencerError(.outOfRange, "'\(db.name)' has no committed version yet; there is no past to open")
        }
        let version: UInt64
        if request.atVersion != 0 {
            version = request.atVersion
            guard version <= head.version else {
                throw SequencerError(.outOfRange, "version \(version) of '\(db.name)' does not exist yet: the latest is \(head.version)")
            }
            guard version >= oldest else {
                throw SequencerError(.outOfRange, "version \(version) of '\(db.name)' is no longer kept: \(kept())")
            }
        } else {
            let asked = UnixTime.format(request.atTimeMs)
            // Commit times never go back within a database: the last version at or before the time is a binary search.
            guard let first = backend.committedAt(database: db.id, version: oldest) else {
                try readEnd(db, version: oldest, generation: generation)
                throw SequencerError(.dataLoss, "the batch of version \(oldest) of '\(db.name)' is missing from the store")
            }
            guard first <= request.atTimeMs else {
                throw SequencerError(.outOfRange, "no version of '\(db.name)' committed at or before \(asked) is kept: \(kept())")
            }
            var low = oldest, high = head.version
            while low < high {
                let mid = low + (high - low + 1) / 2
                guard let t = backend.committedAt(database: db.id, version: mid) else {
                    try readEnd(db, version: mid, generation: generation)
                    throw SequencerError(.dataLoss, "the batch of version \(mid) of '\(db.name)' is missing from the store")
                }
                if t <= request.atTimeMs { low = mid } else { high = mid - 1 }
            }
            version = low
        }
        guard let sizes = backend.sizes(database: db.id, version: version),
            let time = backend.committedAt(database: db.id, version: version)
        else {
            try readEnd(db, version: version, generation: generation)
            throw SequencerError(.dataLoss, "the batch of version \(version) of '\(db.name)' is missing from the store")
        }
        try readEnd(db, version: version, generation: generation)
        var info = DatabaseState.info(db.name, version, sizes.pageSize, sizes.pageCount, oldest)
        info.committedAtMs = time
        return info
    }

    /// Creates `request.name` if `request.create` (NOT_FOUND if not); a
    /// database that exists meanwhile is just opened. Returns once the
    /// creation is durable.
    public func create(_ request: OpenDatabaseRequest) throws(SequencerError) -> DatabaseInfo {
        try validateName(request.name)
        let waiter = DurableWait<Void>()
        let created = try catalog.withLock { c throws(SequencerError) -> DatabaseState? in
            // A dropped database is created again as it is: empty, its versions going on.
            if let db = c.databases[request.name], request.create || !db.head.withLock({ $0.isDropped }) { return nil }
            guard request.create else {
                throw SequencerError(.notFound, "database '\(request.name)' does not exist; open it with create=true to create it")
            }
            let db = DatabaseState(RecoveredDatabase(id: c.nextID, name: request.name), lastHash: BatchSeal.genesis)
            c.nextID += 1
            c.databases[request.name] = db
            // Queued before anyone can see the database, so it precedes all of its records.
            backend.append(.create(database: db.id, name: db.name)) { waiter.finish($0) }
            return db
        }
        guard let db = created else { return try database(request.name).leases.withLock { $0.head } }
        try waiter.wait().get()
        return db.leases.withLock { $0.head }
    }

    // MARK: - Leases

    /// Grants a new epoch. Epochs are never reused, even across restarts: the
    /// store keeps a durable ceiling no epoch granted so far exceeds, raised a
    /// block at a time, so only one grant in `Self.epochBlock` waits for
    /// a store write.
    ///
    /// Refused (FAILED_PRECONDITION) while another holder's lease is live, and
    /// while writers that queued earlier (`joinLeaseQueue`) wait: `ticket` is
    /// the caller's place in that queue (0: not queued). A refusal tells the
    /// holder that its lease is wanted.
    public func acquireLease(_ request: AcquireLeaseRequest, ticket: UInt64) throws(SequencerError) -> Lease {
        let ttl = try leaseTTL(request.ttlMs)
        guard !request.holder.isEmpty else { throw SequencerError(.invalidArgument, "lease request has no holder id") }
        let db = try database(request.database)
        while true {
            var ceilingWrite: DispatchGroup?
            let granted = try db.head.withLock { h throws(SequencerError) -> Lease? in
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
                if epoch <= h.durableEpochCeiling {
                    return db.leases.withLock { l in
                        l.leaseEpoch = epoch
                        l.lease = LeaseState(holder: request.holder, epoch: epoch, ttlMs: ttl, expires: .now + .milliseconds(ttl))
                        return l.message
                    }
                }
                if let failure = h.ceilingFailure { throw failure }
                if h.ceilingWrite == nil {
                    let group = DispatchGroup()
                    group.enter()
                    h.ceilingWrite = group
                    let ceiling = epoch + Self.epochBlock - 1
                    backend.append(.epochCeiling(database: db.id, ceiling: ceiling)) { result in
                        db.head.withLock { h in
                            switch result {
                            case .success: h.durableEpochCeiling = max(h.durableEpochCeiling, ceiling)
                            case .failure(let error): h.ceilingFailure = error
                            }
                            h.ceilingWrite = nil
                        }
                        group.leave()
                    }
                }
                ceilingWrite = h.ceilingWrite
                return nil
            }
            if let granted { return granted }
            ceilingWrite?.wait()
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
    /// (only the epoch ceiling is durable). Fencing does not depend on it:
    /// every commit checks holder and epoch.
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

    // MARK: - Reads

    /// The durable head a read starts from, checked again when it ends.
    private func readStart(_ db: DatabaseState) throws(SequencerError) -> (head: DatabaseHead, generation: UInt64) {
        try db.head.withLock { h throws(SequencerError) in
            guard !h.dropPending else {
                throw SequencerError(.unavailable, "database '\(db.name)' is being dropped; open it again to read what follows")
            }
            var copy = h
            copy.pending = [:]
            return (copy, h.generation)
        }
    }

    /// Fails a read that overlapped a drop, or whose version fell out of the
    /// retention window while it read (its pages may have been forgotten).
    private func readEnd(_ db: DatabaseState, version: UInt64, generation: UInt64) throws(SequencerError) {
        try db.head.withLock { h throws(SequencerError) in
            guard h.generation == generation, !h.dropPending else {
                throw SequencerError(.unavailable, "database '\(db.name)' was dropped while this read ran; open it again")
            }
            guard version >= h.oldestVersion else {
                throw SequencerError(.outOfRange, "version \(version) of '\(db.name)' is older than the retention window (oldest kept: \(h.oldestVersion))")
            }
        }
    }

    /// Pages of one durable version.
    public func readPages(_ request: ReadPagesRequest) throws(SequencerError) -> ReadPagesResponse {
        guard request.pageNumbers.count <= Int(configuration.maxPagesPerRead) else {
            throw SequencerError(.invalidArgument, "read asks for \(request.pageNumbers.count) pages; the most per call is \(configuration.maxPagesPerRead)")
        }
        let db = try database(request.database)
        let (head, generation) = try readStart(db)
        let version = request.version == 0 ? head.version : request.version
        guard version <= head.version else {
            throw SequencerError(.outOfRange, "version \(version) of '\(db.name)' is not committed yet (latest is \(head.version))")
        }
        guard version >= head.oldestVersion else {
            throw SequencerError(.outOfRange, "version \(version) of '\(db.name)' is older than the retention window (oldest kept: \(head.oldestVersion))")
        }
        var response = ReadPagesResponse()
        response.version = version
        if version == head.version {
            response.pageSize = head.pageSize
            response.pageCount = head.pageCount
        } else if version > 0 {
            guard let sizes = backend.sizes(database: db.id, version: version) else {
                try readEnd(db, version: version, generation: generation)
                throw SequencerError(.dataLoss, "the batch of version \(version) of '\(db.name)' is missing from the store")
            }
            response.pageSize = sizes.pageSize
            response.pageCount = sizes.pageCount
        }
        let numbers = request.pageNumbers.filter { $0 >= 1 && $0 <= response.pageCount }
        let found = try backend.pages(database: db.id, numbers: numbers, version: version)
        response.pages.reserveCapacity(numbers.count)
        for (number, page) in zip(numbers, found) {
            if let page, page.data.count == Int(response.pageSize) {
                response.pages.append(page)
            } else {
                // Never written, cut off, or written at another page size: zeros, as a file would read.
                response.pages.append(Page(number: number, data: [UInt8](repeating: 0, count: Int(response.pageSize))))
            }
        }
        try readEnd(db, version: version, generation: generation)
        return response
    }

    /// Fires `signal` each time the durable head of `database` moves, until
    /// `stopWatching`; returns the watch's id. A follow stream waits on it
    /// instead of polling, so a commit reaches followers as it completes.
    public func watchVersions(of database: String, signal: LeaseSignal) throws(SequencerError) -> UInt64 {
        try self.database(database).leases.withLock { l in
            let id = l.nextWaiterID
            l.nextWaiterID += 1
            l.watchers[id] = signal
            return id
        }
    }

    public func stopWatching(_ database: String, id: UInt64) {
        _ = try? self.database(database).leases.withLock { $0.watchers.removeValue(forKey: id) }
    }

    /// The oldest batch kept of `database` (at least 1).
    public func oldestVersion(of database: String) throws(SequencerError) -> UInt64 {
        max(1, try self.database(database).head.withLock { $0.oldestVersion })
    }

    /// The head version of `database` (its latest durable commit).
    public func headVersion(of database: String) throws(SequencerError) -> UInt64 {
        try self.database(database).head.withLock { $0.version }
    }

    /// Batch `version` of `database` with its pages and seal, or nil past the head.
    public func batch(database: String, version: UInt64) throws(SequencerError) -> Batch? {
        let db = try self.database(database)
        let (head, generation) = try readStart(db)
        guard version >= 1, version <= head.version else { return nil }
        guard version >= head.oldestVersion else {
            throw SequencerError(.outOfRange, "batch \(version) of '\(database)' is older than the retention window (oldest kept: \(head.oldestVersion)); start a validator within it or raise --retain")
        }
        let batch = try backend.batch(database: db.id, version: version)
        try readEnd(db, version: version, generation: generation)
        guard let batch else { throw SequencerError(.dataLoss, "batch \(version) of '\(database)' is missing from the store") }
        return batch
    }

    /// The public half of the signing key.
    public var sequencerKey: SequencerKey {
        var k = SequencerKey()
        k.algorithm = "ed25519"
        k.publicKey = signingKey.publicKey
        return k
    }

    // MARK: - Commits

    /// Applies `request` and calls `completion` once the batch is durable (or
    /// refused), from a store thread (a refusal may come on the caller's).
    /// Never blocks on store I/O, so an event loop may call it. Concurrent
    /// commits, of one database or many, share an fsync (group commit).
    public func commit(_ request: CommitRequest, completion: @escaping @Sendable (Result<CommitResponse, SequencerError>) -> Void) {
        if request.pages.count * Int(request.pageSize) > 1 << 20 {
            // Checking and hashing megabytes takes milliseconds: not on the
            // caller's thread, which may be an event loop serving other databases.
            return DispatchQueue.global().async { self.sealAndQueue(request, completion: completion) }
        }
        sealAndQueue(request, completion: completion)
    }

    private func sealAndQueue(_ request: CommitRequest, completion: @escaping @Sendable (Result<CommitResponse, SequencerError>) -> Void) {
        let db: DatabaseState
        var sealed = Batch()
        do throws(SequencerError) {
            guard !request.txnID.isEmpty, request.txnID.count <= 64 else {
                throw SequencerError(.invalidArgument, "txn_id must be 1 to 64 bytes (got \(request.txnID.count))")
            }
            db = try database(request.database)
            try validatePages(request)
            // The content hashes, outside the lock: they need no version.
            sealed.database = db.name
            sealed.pageSize = request.pageSize
            sealed.pageCount = request.pageCount
            sealed.pages = request.pages
            sealed.changeset = request.changeset
            sealed.schemaChanged = request.schemaChanged
            sealed.schema = request.schema
            sealed.unauditedTables = request.unauditedTables
            sealed.pagesHash = BatchSeal.pagesHash(request.pages)
            sealed.changesetHash = BatchSeal.changesetHash(request.changeset)
            sealed.schemaHash = BatchSeal.schemaHash(changed: request.schemaChanged, schema: request.schema, unaudited: request.unauditedTables)
        } catch {
            return completion(.failure(error))
        }
        let immediate = db.head.withLock { h -> Result<CommitResponse, SequencerError>? in
            // A retry of an applied commit gets the first outcome, whatever happened since.
            if let version = backend.committedVersion(database: db.id, txnID: request.txnID) {
                duplicates.add(1, ordering: .relaxed)
                var r = CommitResponse()
                r.version = version
                r.duplicate = true
                return .success(r)
            }
            if h.pending[request.txnID] != nil {
                // A retry of a commit still on its way: it gets the same outcome.
                h.pending[request.txnID]!.append { result in
                    completion(result.map { var r = $0; r.duplicate = true; return r })
                }
                duplicates.add(1, ordering: .relaxed)
                return nil
            }
            do throws(SequencerError) {
                try db.leases.withLock { l throws(SequencerError) in
                    try l.check(holder: request.holder, epoch: request.leaseEpoch, now: .now)
                }
                guard request.baseVersion == h.sealedVersion else {
                    throw SequencerError(.aborted, "stale base version \(request.baseVersion): '\(db.name)' is at version \(h.sealedVersion); re-read and retry the transaction")
                }
                try validateAgainstHead(request, h)
                if let fault = configuration.commitFault?(request) { throw fault }
                sealed.version = h.sealedVersion + 1
                sealed.committedAtMs = max(Self.wallClockMs(), h.lastCommittedAtMs)
                sealed.previousHash = h.lastHash
                sealed.hash = BatchSeal.hash(of: sealed)
                do {
                    sealed.signature = try signingKey.sign(sealed.hash)
                } catch {
                    throw SequencerError(.internal, "signing the batch failed: \(error)")
                }
            } catch {
                return .failure(error)
            }
            h.sealedVersion = sealed.version
            h.sealedPageSize = sealed.pageSize
            h.sealedPageCount = sealed.pageCount
            h.lastHash = sealed.hash
            h.lastCommittedAtMs = sealed.committedAtMs
            h.pending[request.txnID] = [completion]
            let version = sealed.version
            let changed = request.pages.map(\.number)
            backend.append(.batch(database: db.id, txnID: request.txnID, batch: sealed)) { [self] result in
                finishCommit(db, request: request, version: version, changed: changed, result: result)
            }
            return nil
        }
        if let immediate { completion(immediate) }
    }

    /// A commit's batch is durable (or will never be): publish it, answer
    /// everyone waiting for it, and prune now and then.
    private func finishCommit(_ db: DatabaseState, request: CommitRequest, version: UInt64, changed: [UInt32],
                              result: Result<Void, SequencerError>) {
        let waiters = db.head.withLock { h -> [@Sendable (Result<CommitResponse, SequencerError>) -> Void] in
            let waiters = h.pending.removeValue(forKey: request.txnID) ?? []
            guard case .success = result else { return waiters }
            // A smaller page count cuts pages off: once the database grows
            // again they read as zeros, so a reader's cached copies of them
            // are stale although no page list names them. Say "unknown".
            let shrank = request.pageCount < h.pageCount
            h.version = version
            h.pageSize = request.pageSize
            h.pageCount = request.pageCount
            db.publish(h, changed: shrank ? nil : changed)
            // Every 64 versions, or more often for a short window, so that what it lets go goes soon
            // (a prune costs no fsync of its own: the log writes it with the next group).
            let pruneEvery = max(1, min(64, configuration.retainedVersions / 8))
            if version % pruneEvery == 0, configuration.retainedVersions < version {
                let keepFrom = version - configuration.retainedVersions
                if keepFrom > h.oldestVersion {
                    // Raised before the backend forgets anything, so reads below it fail rather than see holes.
                    h.oldestVersion = keepFrom
                    db.publish(h)
                    backend.append(.prune(database: db.id, keepFrom: keepFrom)) { _ in }
                }
            }
            return waiters
        }
        let answer: Result<CommitResponse, SequencerError> = result.map {
            var r = CommitResponse()
            r.version = version
            return r
        }
        for (i, w) in waiters.enumerated() {
            // The test hook fails only the first answer (the one to the commit itself); retries and status queries see the truth.
            if i == 0, case .success = answer, let fault = configuration.commitAnswerFault?(request) {
                w(.failure(fault))
            } else {
                w(answer)
            }
        }
    }

    /// Whether the commit `request.txnID` was applied; one still on its way is
    /// waited for, so NOT_FOUND means it never will be.
    public func commitStatus(_ request: GetCommitStatusRequest, completion: @escaping @Sendable (Result<GetCommitStatusResponse, SequencerError>) -> Void) {
        let db: DatabaseState
        do throws(SequencerError) { db = try database(request.database) } catch { return completion(.failure(error)) }
        @Sendable func answer(_ version: UInt64?) -> GetCommitStatusResponse {
            var r = GetCommitStatusResponse()
            if let version {
                r.state = .committed
                r.version = version
            } else {
                r.state = .notFound
            }
            return r
        }
        let now = db.head.withLock { h -> GetCommitStatusResponse? in
            if h.pending[request.txnID] != nil {
                h.pending[request.txnID]!.append { result in
                    switch result {
                    case .success(let r): completion(.success(answer(r.version)))
                    case .failure(let e) where e.code == .unavailable: completion(.failure(e))
                    case .failure: completion(.success(answer(nil)))
                    }
                }
                return nil
            }
            return answer(backend.committedVersion(database: db.id, txnID: request.txnID))
        }
        if let now { completion(.success(now)) }
    }

    /// Drops `request.database`: a sealed drop batch at the next version
    /// deletes its pages and history; versions, lease epochs and the hash chain
    /// go on, so a reader's cache of the old database or a writer fenced before
    /// the drop can never pass for the new one. FAILED_PRECONDITION while a
    /// live lease is held by anyone but `request`'s holder and epoch; a
    /// database that does not exist, or is already dropped, is left as it is
    /// (version 0 in the answer). Returns once the drop is durable.
    public func drop(_ request: DropDatabaseRequest) throws(SequencerError) -> DropDatabaseResponse {
        try validateName(request.database)
        var response = DropDatabaseResponse()
        guard let db = catalog.withLock({ $0.databases[request.database] }) else { return response }
        let waiter = DurableWait<Void>()
        let version = try db.head.withLock { h throws(SequencerError) -> UInt64? in
            guard !h.isDropped, !h.dropPending else { return nil }
            try db.leases.withLock { l throws(SequencerError) in
                let now = ContinuousClock.now
                guard !request.force, let lease = l.lease, lease.expires > now,
                    lease.holder != request.holder || lease.epoch != request.epoch
                else { return }
                throw SequencerError(
                    .failedPrecondition,
                    "database '\(request.database)' has a live writer (holder '\(lease.holder)', epoch \(lease.epoch), \((lease.expires - now).milliseconds) ms left); it can be dropped once that writer closes, or now with force (synd drop --force)")
            }
            var batch = Batch()
            batch.database = db.name
            batch.version = h.sealedVersion + 1
            batch.committedAtMs = max(Self.wallClockMs(), h.lastCommittedAtMs)
            batch.schemaChanged = true
            do {
                try BatchSeal.seal(&batch, previousHash: h.lastHash, key: signingKey)
            } catch {
                throw SequencerError(.internal, "sealing the drop batch failed: \(error)")
            }
            h.sealedVersion = batch.version
            h.sealedPageSize = 0
            h.sealedPageCount = 0
            h.lastHash = batch.hash
            h.lastCommittedAtMs = batch.committedAtMs
            h.dropPending = true
            let version = batch.version
            // Unique per database and version; no client sends it (theirs are random).
            let txnID = Array("synddb-drop-\(version)".utf8)
            backend.append(.drop(database: db.id, txnID: txnID, batch: batch)) { result in
                db.head.withLock { h in
                    h.dropPending = false
                    h.generation += 1
                    guard case .success = result else { return }
                    h.version = version
                    h.pageSize = 0
                    h.pageCount = 0
                    h.oldestVersion = version
                    db.publish(h, changed: nil)
                    db.leases.withLock { l in
                        l.lease = nil
                        l.signalWaiters()
                    }
                }
                waiter.finish(result)
            }
            return version
        }
        guard let version else { return response }
        try waiter.wait().get()
        // What was dropped is gone, snapshots included (after any being written now).
        snapshotQueue.sync { snapshots.removeAll(of: request.database) }
        snapshotState.withLock { $0.last[request.database] = version }
        response.version = version
        return response
    }

    /// Commits answered from the idempotency record instead of being applied again.
    public var duplicateCommitCount: Int { duplicates.load(ordering: .relaxed) }

    /// Milliseconds since the Unix epoch: a batch's (informational) commit time.
    public static func wallClockMs() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec / 1_000_000)
    }

    // MARK: - Validation

    func validateName(_ name: String) throws(SequencerError) { try Self.validateName(name) }

    /// Database names: 1-255 characters of A-Z a-z 0-9 . _ - /.
    public static func validateName(_ name: String) throws(SequencerError) {
        let ok = !name.isEmpty && name.utf8.count <= 255
            && name.utf8.allSatisfy { c in
                (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 46 || c == 45 || c == 95 || c == 47
            }
        guard ok else {
            throw SequencerError(.invalidArgument, "database name '\(name)' is invalid: use 1-255 characters of A-Z a-z 0-9 . _ - /")
        }
    }

    private func leaseTTL(_ requested: UInt32) throws(SequencerError) -> UInt32 {
        try Self.leaseTTL(requested, configuration)
    }

    /// The lease time-to-live a request asks for, within the configured bounds.
    public static func leaseTTL(_ requested: UInt32, _ configuration: StoreConfiguration) throws(SequencerError) -> UInt32 {
        let ttl = requested == 0 ? configuration.defaultLeaseTTLMs : requested
        guard ttl >= 50, ttl <= configuration.maxLeaseTTLMs else {
            throw SequencerError(.invalidArgument, "lease ttl \(ttl) ms is outside 50...\(configuration.maxLeaseTTLMs) ms")
        }
        return ttl
    }

    private func validatePages(_ request: CommitRequest) throws(SequencerError) {
        try Self.validatePages(request, maxBatchBytes: configuration.maxBatchBytes)
    }

    /// What a batch must be whatever the database holds.
    public static func validatePages(_ request: CommitRequest, maxBatchBytes: UInt64) throws(SequencerError) {
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
        guard bytes <= maxBatchBytes else {
            throw SequencerError(.resourceExhausted, "batch of \(bytes) bytes exceeds the sequencer's limit of \(maxBatchBytes) bytes")
        }
        var seen = Set<UInt32>(minimumCapacity: request.pages.count)
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
    }

    private func validateAgainstHead(_ request: CommitRequest, _ h: DatabaseHead) throws(SequencerError) {
        try Self.validateAgainstHead(request, pageSize: h.sealedPageSize, pageCount: h.sealedPageCount)
    }

    /// What a batch must be given the database's newest sealed head.
    public static func validateAgainstHead(_ request: CommitRequest, pageSize: UInt32, pageCount: UInt32) throws(SequencerError) {
        if pageCount > 0, request.pageSize != pageSize, request.pages.count != Int(request.pageCount) {
            // A page size change (VACUUM) must rewrite the whole database.
            throw SequencerError(.invalidArgument, "page size \(request.pageSize) differs from the database's \(pageSize); a page size change must rewrite every page")
        }
        if pageCount == 0, !request.pages.contains(where: { $0.number == 1 }) {
            throw SequencerError(.invalidArgument, "the first commit of a database must include page 1")
        }
    }
}

/// Waits on a thread for a store completion.
public final class DurableWait<T: Sendable>: Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let result = Mutex<Result<T, SequencerError>?>(nil)

    public init() {}

    public func finish(_ r: Result<T, SequencerError>) {
        result.withLock { $0 = r }
        done.signal()
    }

    public func wait() -> Result<T, SequencerError> {
        done.wait()
        return result.withLock { $0! }
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + atto / 1_000_000_000_000_000
    }
}
