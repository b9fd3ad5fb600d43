import Synchronization
import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Holds a writer lease and renews it on a background thread.
///
/// The lease's epoch fences every commit on the sequencer. Locally the keeper
/// tracks a conservative expiry (send time of the last good renewal + TTL) so a
/// writer can tell when its cache may no longer be trusted.
public final class LeaseKeeper: Sendable {
    public let client: SequencerClient
    public let database: String
    public let holder: String
    public let ttlMs: UInt32
    private let renews: Bool
    private let state = Mutex<LeaseStatus>(LeaseStatus())
    private let sleeper = Sleeper()
    private let thread = Mutex<pthread_t?>(nil)

    /// The lease as this writer knows it.
    public struct LeaseStatus: Sendable {
        public var epoch: UInt64 = 0
        public var expires: ContinuousClock.Instant = .now
        /// Why the lease is gone, once the sequencer said so.
        public var lost: String?
        public var held: Bool { epoch != 0 && lost == nil }
    }

    /// - Parameter client: the sequencer; the keeper talks to it over a
    ///   connection of its own, so renewals never queue behind commits.
    public init(client: SequencerClient, database: String, holder: String, ttlMs: UInt32, renews: Bool = true) {
        self.client = client.dedicated()
        self.database = database
        self.holder = holder
        self.ttlMs = ttlMs
        self.renews = renews
    }

    public var status: LeaseStatus { state.withLock { $0 } }

    /// Takes the lease (a new epoch) and returns the database state it was granted at.
    @discardableResult
    public func acquire() throws(SequencerError) -> Lease {
        var request = AcquireLeaseRequest()
        request.database = database
        request.holder = holder
        request.ttlMs = ttlMs
        let sent = ContinuousClock.now
        let lease = try client.acquireLease(request)
        state.withLock {
            $0.epoch = lease.epoch
            $0.expires = sent + .milliseconds(lease.ttlMs)
            $0.lost = nil
        }
        startThreadIfNeeded()
        return lease
    }

    /// Records that the sequencer refused this lease (e.g. a fenced commit).
    public func markLost(_ reason: String) {
        state.withLock { $0.lost = reason }
    }

    /// Records a refusal of `epoch` only: a late answer about an older epoch must
    /// not mark a lease taken since then as lost.
    private func markLost(_ reason: String, epoch: UInt64) {
        state.withLock { if $0.epoch == epoch { $0.lost = reason } }
    }

    /// Renews now; on refusal the lease is marked lost.
    public func renew(attempts: Int? = nil) throws(SequencerError) {
        let epoch = state.withLock { $0.epoch }
        guard epoch != 0 else { return }
        var request = RenewLeaseRequest()
        request.database = database
        request.holder = holder
        request.epoch = epoch
        request.ttlMs = ttlMs
        let sent = ContinuousClock.now
        do throws(SequencerError) {
            let lease = try client.renewLease(request, attempts: attempts)
            state.withLock {
                if $0.epoch == epoch && $0.lost == nil { $0.expires = sent + .milliseconds(lease.ttlMs) }
            }
        } catch {
            if error.code == .failedPrecondition || error.code == .notFound { markLost(error.message, epoch: epoch) }
            throw error
        }
    }

    /// Stops renewing and gives the lease back so another writer need not wait.
    /// Returns within about one request deadline even when the sequencer does
    /// not answer (then the lease lapses on its own).
    public func release() {
        let deadline = ContinuousClock.now + client.options.requestTimeout
        sleeper.stop()
        // Not joined: a renewal in flight ends by its own deadline, and the
        // thread holds its own reference to the keeper.
        if let t = thread.withLock({ t -> pthread_t? in let x = t; t = nil; return x }) {
            pthread_detach(t)
        }
        let s = status
        state.withLock { $0.lost = "released" }
        guard s.held else { return }
        var request = ReleaseLeaseRequest()
        request.database = database
        request.holder = holder
        request.epoch = s.epoch
        try? client.releaseLease(request, deadline: deadline)
    }

    private func startThreadIfNeeded() {
        guard renews else { return }
        thread.withLock { t in
            guard t == nil else { return }
            let context = Unmanaged.passRetained(self).toOpaque()
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { arg in
                let keeper = Unmanaged<LeaseKeeper>.fromOpaque(arg!).takeRetainedValue()
                keeper.renewLoop()
                return nil
            }, context)
            if rc == 0 {
                t = tid
            } else {
                Unmanaged<LeaseKeeper>.fromOpaque(context).release()
            }
        }
    }

    private func renewLoop() {
        let interval = max(Int(ttlMs) / 3, 10)
        var wait = interval
        while sleeper.sleep(milliseconds: wait) {
            wait = interval
            if status.lost != nil { continue }
            // One attempt per tick; after a failure the next comes sooner.
            do throws(SequencerError) { try renew(attempts: 1) } catch { wait = max(interval / 4, 10) }
        }
    }
}

/// A sleep that `stop()` cuts short, on a pthread condition variable.
final class Sleeper: @unchecked Sendable {
    // Safe: the mutex and condition live at fixed heap addresses for the object's
    // lifetime, and `stopped` is only touched with the mutex held.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var stopped = false

    init() {
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// False once stopped.
    func sleep(milliseconds: Int) -> Bool {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let ns = ts.tv_nsec + (milliseconds % 1000) * 1_000_000
        ts.tv_sec += milliseconds / 1000 + ns / 1_000_000_000
        ts.tv_nsec = ns % 1_000_000_000
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !stopped {
            if pthread_cond_timedwait(condition, mutex, &ts) == ETIMEDOUT { break }
        }
        return !stopped
    }

    func stop() {
        pthread_mutex_lock(mutex)
        stopped = true
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }
}
