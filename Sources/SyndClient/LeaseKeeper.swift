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
///
/// Each epoch is also held by a HoldLease call left open on the keeper's own
/// connection, so that when this process dies (kill -9, a crash) the sequencer
/// sees the connection close and releases the lease at once, instead of the
/// next writer waiting out the TTL. The hold renews nothing: a stopped process
/// keeps its connection, and its lease still lapses. Because the sequencer may
/// give the lease away as soon as that connection is gone, the keeper marks the
/// lease lost as soon as it learns the hold ended, and before a connection it
/// closes itself (after a transport error) goes: the writer then takes a new
/// epoch, checking that nobody wrote meanwhile, before it trusts its cache again.
public final class LeaseKeeper: Sendable {
    public let client: SequencerClient
    public let database: String
    public let holder: String
    public let ttlMs: UInt32
    private let renews: Bool
    private let state = Mutex<LeaseStatus>(LeaseStatus())
    /// Never locked across a call to `client` (the hold's end is reported
    /// while the client's connection is locked).
    private let holding = Mutex<HoldState>(HoldState())
    private let sleeper = Sleeper()
    private let thread = Mutex<pthread_t?>(nil)

    /// The HoldLease call of the current epoch.
    private struct HoldState {
        enum Phase { case none, opening, open(SequencerClient.OpenStream), ended }
        /// Identifies the latest hold; the end of an older one is not reported.
        var token: UInt64 = 0
        var epoch: UInt64 = 0
        var phase = Phase.none
        /// The sequencer does not implement HoldLease: rely on the TTL alone.
        var unsupported = false
        /// Released: no more holds.
        var stopped = false

        /// Whether `epoch` still needs a hold (none was opened, or opening failed).
        func needsHold(_ epoch: UInt64) -> Bool {
            guard !unsupported, !stopped, epoch != 0 else { return false }
            if self.epoch != epoch { return true }
            if case .none = phase { return true }
            return false
        }
    }

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

    /// The lease as this writer knows it, after learning what its connection
    /// already says, without a request: if the connection holding the lease
    /// closed (the sequencer then releases the lease and another writer may
    /// take it at once), the lease is lost from now on. A writer checks this
    /// before it trusts its cache for a read transaction. Costs a poll(2).
    public var checkedStatus: LeaseStatus {
        if state.withLock({ $0.held }) { client.processPendingInput() }
        return status
    }

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
        hold(epoch: lease.epoch)
        startThreadIfNeeded()
        return lease
    }

    /// Opens the HoldLease call for `epoch` and ends the previous epoch's (whose
    /// lease is no longer this holder's, so ending it releases nothing). If it
    /// cannot be sent, the renewal thread tries again after its next renewal.
    ///
    /// Never for an older epoch than the last hold's, and never a second call
    /// for the same epoch while one is opening or open: ending a call of the
    /// current epoch would release the lease.
    private func hold(epoch: UInt64) {
        let begun = holding.withLock { h -> (token: UInt64, previous: SequencerClient.OpenStream?)? in
            guard !h.unsupported, !h.stopped, epoch >= h.epoch else { return nil }
            if epoch == h.epoch {
                guard case .none = h.phase else { return nil }
            }
            h.token += 1
            h.epoch = epoch
            var previous: SequencerClient.OpenStream?
            if case .open(let stream) = h.phase { previous = stream }
            h.phase = .opening
            return (h.token, previous)
        }
        guard let (token, previous) = begun else { return }
        if let previous { client.cancel(previous) }
        var request = HoldLeaseRequest()
        request.database = database
        request.holder = holder
        request.epoch = epoch
        do throws(SequencerError) {
            let stream = try client.holdLease(request) { [weak self] end in
                self?.holdEnded(token: token, epoch: epoch, end)
            }
            // Superseded meanwhile by a later epoch's hold (or by release):
            // this epoch is no longer the lease, so ending its call is safe.
            let stale = holding.withLock { h -> Bool in
                guard h.token == token else { return true }
                if case .opening = h.phase { h.phase = .open(stream) }
                return false
            }
            if stale { client.cancel(stream) }
        } catch {
            holding.withLock { h in
                if h.token == token, case .opening = h.phase { h.phase = .none }
            }
        }
    }

    /// The hold of `epoch` ended: the sequencer ended it (the lease lapsed or
    /// moved), or its connection closed, which lets the sequencer release the
    /// lease. Either way the lease can no longer be trusted.
    private func holdEnded(token: UInt64, epoch: UInt64, _ end: SequencerError) {
        let current = holding.withLock { h -> Bool in
            guard h.token == token else { return false }
            if end.code == .unimplemented {
                // An older sequencer: the lease lapses by its TTL as before.
                h.unsupported = true
                h.phase = .none
                return false
            }
            h.phase = .ended
            return true
        }
        guard current else { return }
        let why = end.isTransport
            ? "the connection holding it closed (\(end.message)), which lets the sequencer release it"
            : "the sequencer ended its hold: \(end.message)"
        markLost(why, epoch: epoch)
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
        let open = holding.withLock { h -> SequencerClient.OpenStream? in
            h.token += 1  // its end is not a loss
            h.stopped = true
            guard case .open(let stream) = h.phase else { return nil }
            h.phase = .none
            return stream
        }
        if s.held {
            var request = ReleaseLeaseRequest()
            request.database = database
            request.holder = holder
            request.epoch = s.epoch
            try? client.releaseLease(request, deadline: deadline)
        }
        // Ending the hold releases the lease too, if the request above failed
        // while the connection stayed up.
        if let open, ContinuousClock.now < deadline { client.cancel(open) }
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
            do throws(SequencerError) { try renew(attempts: 1) } catch {
                wait = max(interval / 4, 10)
                continue
            }
            // The renewal proved the lease live: hold it if its hold could not be sent.
            let s = status
            if s.held, holding.withLock({ $0.needsHold(s.epoch) }) { hold(epoch: s.epoch) }
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
