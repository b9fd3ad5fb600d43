import SyndProtocol

/// What the sequencer's service calls: the whole of a sequencer's state and
/// logic, behind one seam, so that the same service (transport, framing,
/// waits, streams) runs over any store.
///
/// - `PageStore` keeps the logic in this process over a `StorageBackend` (the
///   embedded log): one sequencer per data folder.
/// - `PostgresStore` (module SyndPostgres) keeps it in PostgreSQL: every
///   decision (fencing, base version, dedupe) is one PostgreSQL transaction on
///   the database's row, so any number of sequencers may serve one database.
///
/// `StoreConformance` in the tests is the contract both must pass.
///
/// Threads: calls may block (for the disk, or for PostgreSQL) unless
/// `callsMayBlock` is false, in which case the calls the service makes on an
/// event loop (capabilities, key, renew, release, held, commit status, and
/// the lease-queue bookkeeping) touch only memory.
public protocol SequencerStore: AnyObject, Sendable {
    /// Whether the calls that `PageStore` serves from memory may wait for I/O
    /// here; the service then runs them off the event loops.
    var callsMayBlock: Bool { get }
    var capabilities: Capabilities { get }
    /// The public half of the key that signs every batch.
    var sequencerKey: SequencerKey { get }
    /// What opening the store found or did that an operator should know.
    var recoveryNotes: [String] { get }
    /// Where the store keeps its data, for the start-up line (a folder, or a redacted URL).
    var location: String { get }

    // MARK: Databases

    /// The head of `request.name` if it exists (nil if not, or if it was
    /// dropped and `request.create` is false); a pinned request (`at_version`,
    /// `at_time_ms`) answers that past version.
    func openExisting(_ request: OpenDatabaseRequest) throws(SequencerError) -> DatabaseInfo?
    /// Creates `request.name` if `request.create` (NOT_FOUND if not); returns once durable.
    func create(_ request: OpenDatabaseRequest) throws(SequencerError) -> DatabaseInfo
    /// Drops a database with a sealed drop batch (see `PageStore.drop`).
    func drop(_ request: DropDatabaseRequest) throws(SequencerError) -> DropDatabaseResponse

    // MARK: Leases

    /// Grants a new epoch, or FAILED_PRECONDITION while another holder's lease
    /// is live or writers queued earlier (`ticket` is the caller's place) wait.
    func acquireLease(_ request: AcquireLeaseRequest, ticket: UInt64) throws(SequencerError) -> Lease
    func renewLease(_ request: RenewLeaseRequest) throws(SequencerError) -> Lease
    /// Whether `request`'s holder and epoch held the lease and gave it up.
    @discardableResult
    func releaseLease(_ request: ReleaseLeaseRequest) throws(SequencerError) -> Bool
    /// The live lease of `request`'s holder and epoch (FAILED_PRECONDITION otherwise).
    func heldLease(_ request: HoldLeaseRequest) throws(SequencerError) -> Lease
    func joinLeaseQueue(database: String, holder: String) throws(SequencerError) -> LeaseTicket
    func leaveLeaseQueue(_ ticket: LeaseTicket)
    func leaseHolderIsWriting(_ database: String) -> Bool
    func leaseTimeLeft(_ database: String) -> Duration?
    func watchLease(_ database: String) throws(SequencerError) -> (id: UInt64, signal: LeaseSignal)
    func unwatchLease(_ database: String, id: UInt64)

    // MARK: Reads

    func readPages(_ request: ReadPagesRequest) throws(SequencerError) -> ReadPagesResponse
    /// Fires `signal` each time the durable head of `database` moves.
    func watchVersions(of database: String, signal: LeaseSignal) throws(SequencerError) -> UInt64
    func stopWatching(_ database: String, id: UInt64)
    func oldestVersion(of database: String) throws(SequencerError) -> UInt64
    func headVersion(of database: String) throws(SequencerError) -> UInt64
    /// Batch `version` with its pages and seal, or nil past the head.
    func batch(database: String, version: UInt64) throws(SequencerError) -> Batch?

    // MARK: Commits

    /// Applies `request`; `completion` runs once the batch is durable or refused.
    /// Must not block the caller (an event loop) on I/O.
    func commit(_ request: CommitRequest, completion: @escaping @Sendable (Result<CommitResponse, SequencerError>) -> Void)
    /// Whether `request.txnID` was applied; NOT_FOUND means it never will be.
    func commitStatus(_ request: GetCommitStatusRequest, completion: @escaping @Sendable (Result<GetCommitStatusResponse, SequencerError>) -> Void)

    // MARK: Snapshots

    func createSnapshot(_ database: String) throws(SequencerError) -> SnapshotInfo
    func usableSnapshot(of database: String) throws(SequencerError) -> SnapshotStore.Reader?
    func snapshotIfDue(_ database: String, version: UInt64)

    // MARK: Status

    /// Every database that exists (dropped ones aside), by name.
    func databaseStatuses() throws(SequencerError) -> [DatabaseStatus]
    /// Bytes the store takes where it keeps its data (files, or PostgreSQL tables), history included.
    func storedBytes() throws(SequencerError) -> Int64

    /// Ends background work and closes connections (the service is stopping).
    func shutdown()
}

extension SequencerStore {
    /// The blocking form of `commit(_:completion:)`.
    public func commit(_ request: CommitRequest) throws(SequencerError) -> CommitResponse {
        let waiter = DurableWait<CommitResponse>()
        commit(request) { waiter.finish($0) }
        return try waiter.wait().get()
    }

    /// The blocking form of `commitStatus(_:completion:)`.
    public func commitStatus(_ request: GetCommitStatusRequest) throws(SequencerError) -> GetCommitStatusResponse {
        let waiter = DurableWait<GetCommitStatusResponse>()
        commitStatus(request) { waiter.finish($0) }
        return try waiter.wait().get()
    }

    /// `acquireLease(_:ticket:)` for a writer that is not queued.
    public func acquireLease(_ request: AcquireLeaseRequest) throws(SequencerError) -> Lease {
        try acquireLease(request, ticket: 0)
    }

    /// Opens `request.name`, creating it if asked and missing.
    public func open(_ request: OpenDatabaseRequest) throws(SequencerError) -> DatabaseInfo {
        if let info = try openExisting(request) { return info }
        return try create(request)
    }
}

extension PageStore: SequencerStore {
    public var callsMayBlock: Bool { false }
    public var location: String { configuration.directory }
    public func shutdown() {}
}
