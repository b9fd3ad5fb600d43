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

/// One database's head state, mirrored in memory from the `databases` table.
/// Behind `PageStore`'s store lock, except `leases`, which has a lock of its own.
final class DatabaseState {
    let id: Int64
    let name: String
    var version: UInt64
    var pageSize: UInt32
    var pageCount: UInt32
    var oldestVersion: UInt64
    /// The writer lease (and the highest epoch granted), readable and
    /// renewable without the store lock.
    let leases: LeaseCell
    /// Hash of the latest batch: the next batch's previous_hash.
    var lastHash = [UInt8](repeating: 0, count: 32)
    /// The store's `lease_epoch`: no epoch granted so far is above it.
    var durableEpochCeiling: UInt64

    init(id: Int64, name: String, version: UInt64, pageSize: UInt32, pageCount: UInt32,
         oldestVersion: UInt64, leaseEpoch: UInt64, lease: LeaseState?) {
        self.id = id
        self.name = name
        self.version = version
        self.pageSize = pageSize
        self.pageCount = pageCount
        self.oldestVersion = oldestVersion
        self.durableEpochCeiling = leaseEpoch
        var head = DatabaseInfo()
        head.name = name
        head.version = version
        head.pageSize = pageSize
        head.pageCount = pageCount
        head.oldestVersion = oldestVersion
        self.leases = LeaseCell(LeaseRecord(name: name, leaseEpoch: leaseEpoch, lease: lease, head: head))
    }

    /// Dropped (its head is a drop batch): it exists again only once opened with create.
    var isDropped: Bool { version > 0 && pageCount == 0 }

    var info: DatabaseInfo {
        DatabaseInfo(name: name, version: version, pageSize: pageSize, pageCount: pageCount, oldestVersion: oldestVersion)
    }

    /// Copies the head into the lease record, for the `info` of lease answers
    /// given without the store lock. Called with the store lock held, after
    /// every change of the head, with the pages the new version wrote (nil:
    /// unknown, e.g. a drop; clients then drop their whole cache).
    func publishHead(changed: [UInt32]? = []) {
        let head = info
        leases.withLock { l in
            if head.version != l.head.version {
                if let changed { l.recent.record(version: head.version, pages: changed) } else { l.recent.forget(at: head.version) }
            }
            l.head = head
        }
    }
}

/// A database's lease record behind a small lock of its own. Never held across
/// store I/O, and taken after the store lock, never before it (see `PageStore`).
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
