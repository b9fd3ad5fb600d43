import Dispatch
import Synchronization
import SyndProtocol

/// A writer lease as the sequencer holds it, in memory only: expiry is on the
/// monotonic clock, and no lease survives a restart (only the highest epoch
/// granted is durable).
struct LeaseState {
    var holder: String
    var epoch: UInt64
    var ttlMs: UInt32
    var expires: ContinuousClock.Instant
    /// The holder said it is inside a write transaction (RenewLease
    /// in_transaction): waiting for a hand-over is pointless until it ends.
    var inTransaction = false
}

/// One database's head as the sequencer's logic keeps it in memory, behind
/// the database's own lock (`DatabaseState.head`). Two heads in one:
///
/// - the durable head (`version`, `pageSize`, `pageCount`, `oldestVersion`):
///   the newest batch the backend made durable, which reads serve;
/// - the sealed head (`sealedVersion`, `sealedPageSize`, `sealedPageCount`,
///   `lastHash`): the newest batch sealed and handed to the backend, which the
///   next commit's base version must match and its seal chains to. The two
///   differ only while a batch is on its way to the disk.
struct DatabaseHead {
    var version: UInt64
    var pageSize: UInt32
    var pageCount: UInt32
    var oldestVersion: UInt64
    var sealedVersion: UInt64
    var sealedPageSize: UInt32
    var sealedPageCount: UInt32
    /// Hash of the newest sealed batch: the next batch's previous_hash.
    var lastHash = [UInt8](repeating: 0, count: 32)
    /// Commit time of the newest sealed batch. Commit times never go back
    /// within a database (a wall clock stepped back repeats the last one), so
    /// "the last version committed at or before T" is a binary search.
    var lastCommittedAtMs: UInt64 = 0
    /// Commits on their way to the disk, by commit id, with whoever waits for each
    /// (the commit itself, a retry of it, a status query).
    var pending: [[UInt8]: [@Sendable (Result<CommitResponse, SequencerError>) -> Void]] = [:]
    /// No epoch granted so far is above it; it is durable.
    var durableEpochCeiling: UInt64
    /// A higher ceiling on its way to the disk, and how the last such write failed.
    var ceilingWrite: DispatchGroup?
    var ceilingFailure: SequencerError?
    /// A drop is on its way to the disk: reads fail until it is done.
    var dropPending = false
    /// Moves when a drop completes, so that a read that overlapped it fails instead of mixing two databases.
    var generation: UInt64 = 0

    /// Dropped (its newest sealed batch is a drop): it exists again only once opened with create.
    var isDropped: Bool { sealedVersion > 0 && sealedPageCount == 0 }
}

/// One database: its name and id, its head and its lease.
final class DatabaseState: Sendable {
    let id: Int64
    let name: String
    let head: Mutex<DatabaseHead>
    /// The writer lease (and the highest epoch granted), readable and
    /// renewable without the head lock.
    let leases: LeaseCell

    init(_ r: RecoveredDatabase, lastHash: [UInt8], lastCommittedAtMs: UInt64 = 0) {
        id = r.id
        name = r.name
        head = Mutex(DatabaseHead(
            version: r.version, pageSize: r.pageSize, pageCount: r.pageCount, oldestVersion: r.oldestVersion,
            sealedVersion: r.version, sealedPageSize: r.pageSize, sealedPageCount: r.pageCount, lastHash: lastHash,
            lastCommittedAtMs: lastCommittedAtMs, durableEpochCeiling: r.epochCeiling))
        leases = LeaseCell(LeaseRecord(name: r.name, leaseEpoch: r.epochCeiling, lease: nil, head: Self.info(r.name, r.version, r.pageSize, r.pageCount, r.oldestVersion)))
    }

    static func info(_ name: String, _ version: UInt64, _ pageSize: UInt32, _ pageCount: UInt32, _ oldest: UInt64) -> DatabaseInfo {
        DatabaseInfo(name: name, version: version, pageSize: pageSize, pageCount: pageCount, oldestVersion: oldest)
    }

    /// Copies the durable head into the lease record, for the `info` of lease
    /// answers and of reopens, with the pages the new version wrote (nil:
    /// unknown, e.g. a drop; clients then drop their whole cache). Called with
    /// the head lock held, after every change of the durable head.
    func publish(_ h: DatabaseHead, changed: [UInt32]? = []) {
        let info = Self.info(name, h.version, h.pageSize, h.pageCount, h.oldestVersion)
        leases.withLock { l in
            let moved = info.version != l.head.version
            if moved {
                if let changed { l.recent.record(version: info.version, pages: changed) } else { l.recent.forget(at: info.version) }
            }
            l.head = info
            if moved { for w in l.watchers.values { w.fire() } }
        }
    }
}

/// A database's lease record behind a small lock of its own. Never held across
/// store I/O, and taken after the head lock, never before it (see `PageStore`).
final class LeaseCell: Sendable {
    private let record: Mutex<LeaseRecord>

    init(_ record: LeaseRecord) {
        self.record = Mutex(record)
    }

    func withLock<T, E: Error>(_ body: (inout LeaseRecord) throws(E) -> T) throws(E) -> T {
        try record.withLock { (r: inout LeaseRecord) throws(E) -> T in try body(&r) }
    }
}

/// What `LeaseCell` guards.
struct LeaseRecord: Sendable {
    let name: String
    /// Highest epoch ever granted; never reused.
    var leaseEpoch: UInt64
    var lease: LeaseState?
    /// The database's head as of its last commit (see `DatabaseState.publishHead`).
    var head: DatabaseInfo
    /// The pages recent versions wrote.
    var recent: RecentChanges
    /// Writers waiting in AcquireLease (wait_ms), in arrival order: the lease
    /// goes to the first of them. Each is woken when the lease may be free.
    var queue: [(id: UInt64, holder: String, signal: LeaseSignal)] = []
    /// The open HoldLease calls of this database, told when a writer wants the lease.
    var holds: [UInt64: LeaseSignal] = [:]
    /// Follow streams of this database, told when its durable head moves.
    var watchers: [UInt64: LeaseSignal] = [:]
    var nextWaiterID: UInt64 = 1

    init(name: String, leaseEpoch: UInt64, lease: LeaseState?, head: DatabaseInfo) {
        self.name = name
        self.leaseEpoch = leaseEpoch
        self.lease = lease
        self.head = head
        self.recent = RecentChanges(head: head.version)
    }

    /// Another writer asked for the lease: tell the holder (through its HoldLease call).
    func signalWanted() {
        for signal in holds.values { signal.fire() }
    }

    /// The lease may be free: the waiters re-try, first come first served.
    func signalWaiters() {
        for waiter in queue { waiter.signal.fire() }
    }

    var message: Lease {
        var l = Lease()
        l.database = name
        l.holder = lease?.holder ?? ""
        l.epoch = lease?.epoch ?? 0
        l.ttlMs = lease?.ttlMs ?? 0
        l.info = head
        return l
    }

    /// Fencing: the caller must hold the live lease of this epoch.
    func check(holder: String, epoch: UInt64, now: ContinuousClock.Instant) throws(SequencerError) {
        guard let lease else {
            throw SequencerError(.failedPrecondition, "writer lease of '\(name)' (epoch \(epoch)) was released or lost; reopen the database to take a new lease")
        }
        guard lease.epoch == epoch, lease.holder == holder else {
            throw SequencerError(.failedPrecondition, "stale lease epoch \(epoch) for '\(name)': writer '\(lease.holder)' took the lease at epoch \(lease.epoch); this writer was fenced off")
        }
        guard lease.expires > now else {
            let ago = (now - lease.expires).milliseconds
            throw SequencerError(.failedPrecondition, "writer lease of '\(name)' (epoch \(epoch)) lapsed \(ago) ms ago without renewal; the transaction was not applied")
        }
    }
}
