import Synchronization
import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Holds a writer lease, renews it on a background thread, and hands it over
/// when another writer wants it.
///
/// A writer takes the lease for its first write (`acquire`), keeps it across
/// transactions while nobody else asks (so a lone writer pays nothing per
/// transaction), and marks each transaction with `beginWrite` / `endWrite`.
/// When the sequencer says on the HoldLease call that another writer waits,
/// the keeper's thread releases the lease as soon as no transaction is in
/// progress; a writer that wants it back queues behind the others.
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
    private let state = Locked<LeaseStatus>(LeaseStatus())
    /// Never locked across a call to `client` (the hold's end is reported
    /// while the client's connection is locked).
    private let holding = Locked<HoldState>(HoldState())
    /// Wakes the keeper's thread (a pipe: read end, write end): a stop, or a hand-over to do.
    private let wake: (read: Int32, write: Int32)
    private let stopped = Atomic<Bool>(false)
    private let thread = Locked<pthread_t?>(nil)

    /// The HoldLease call of the current epoch.
    private struct HoldState {
        enum Phase { case none, opening, open(SequencerClient.OpenStream), ended }
        /// Identifies the latest hold; the end of an older one is not reported.
        var token: UInt64 = 0
        var epoch: UInt64 = 0
        var phase = Phase.none
        /// The sequencer confirmed the hold of `token` (its first event).
        var confirmed = false
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
        /// Another writer waits for this lease.
        public var wanted = false
        /// A write transaction runs on it (`beginWrite` to `endWrite`): not handed over.
        public var inUse = false
        /// Kept for this writer until then, even if wanted: its time slice after
        /// a grant, or its retry after a stale snapshot (see `reserve`).
        public var reservedUntil: ContinuousClock.Instant?
        /// The end of the time slice of the current grant.
        var sliceEnd: ContinuousClock.Instant?
        /// The sequencer was told that a transaction runs on it (see `wanted`).
        var busyReported = false
        public var held: Bool { epoch != 0 && lost == nil }
    }

    /// - Parameter client: the sequencer; the keeper talks to it over a
    ///   connection of its own, so renewals never queue behind commits.
    /// How long a writer that took the lease for a write keeps it even if
    /// others want it (see `acquire`).
    static let slice = Duration.milliseconds(5)

    public init(client: SequencerClient, database: String, holder: String, ttlMs: UInt32, renews: Bool = true) {
        self.client = client.dedicated()
        self.database = database
        self.holder = holder
        self.ttlMs = ttlMs
        self.renews = renews
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) == 0 {
            for fd in fds {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            }
        }
        self.wake = (fds[0], fds[1])
    }

    deinit {
        if wake.read >= 0 { close(wake.read) }
        if wake.write >= 0 { close(wake.write) }
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

    /// Takes the lease (a new epoch) and returns the database state it was
    /// granted at. While another writer holds it, the sequencer queues this one
    /// and waits up to `waitMs` for it (FAILED_PRECONDITION after that).
    /// `forWrite`: a write transaction starts on it at once (as `beginWrite`),
    /// so it is not handed over before `endWrite`.
    @discardableResult
    public func acquire(waitMs: UInt32 = 0, forWrite: Bool = false) throws(SequencerError) -> Lease {
        var request = AcquireLeaseRequest()
        request.database = database
        request.holder = holder
        request.ttlMs = ttlMs
        // At most a quarter of the lease's time: it is granted somewhere within
        // the wait, and counted from the send, the safe side.
        request.waitMs = min(waitMs, ttlMs / 4)
        let sent = ContinuousClock.now
        let lease = try client.acquireLease(request)
        state.withLock {
            $0.epoch = lease.epoch
            $0.expires = sent + .milliseconds(lease.ttlMs)
            $0.lost = nil
            $0.wanted = false
            $0.busyReported = false
            // A time slice: a writer that waited for the lease writes for a
            // moment before handing it on, so contended writers commit a few
            // transactions per hand-over instead of one.
            $0.sliceEnd = forWrite ? .now + Self.slice : nil
            $0.reservedUntil = $0.sliceEnd
            if forWrite { $0.inUse = true }
        }
        hold(epoch: lease.epoch)
        startThreadIfNeeded()
        return lease
    }

    /// The start of a write transaction: true if this writer holds the lease,
    /// live, and nobody waits for it; it is then kept until `endWrite`. False:
    /// `acquire` it (after `handOverIfWanted`).
    public func beginWrite() -> Bool {
        state.withLock { s in
            let now = ContinuousClock.now
            let reserved = s.reservedUntil.map { $0 > now } ?? false
            guard s.held, s.expires > now, !s.wanted || reserved else { return false }
            s.inUse = true
            s.reservedUntil = s.sliceEnd  // a retry's reservation is used up
            return true
        }
    }

    /// The lease was just granted but the transaction must restart (its
    /// snapshot was stale): keep it for this writer's retry for up to `time`
    /// even if others want it, so a waiter that finally got the lease does
    /// not hand it on before using it.
    public func reserve(for time: Duration) {
        state.withLock { s in
            s.inUse = false
            s.reservedUntil = max(s.reservedUntil ?? .now, .now + time)
        }
        wakeThread()  // to hand over when the reservation ends unused
    }

    /// The end of a write transaction (committed or not): if another writer
    /// waits, the keeper's thread hands the lease over now.
    public func endWrite() {
        let wanted = state.withLock { s -> Bool in
            s.inUse = false
            return s.wanted && s.held
        }
        if wanted { wakeThread() }
    }

    /// Releases the lease now if another writer waits for it and no write
    /// transaction runs on it; returns whether it did.
    @discardableResult
    public func handOverIfWanted() -> Bool {
        let epoch = state.withLock { s -> UInt64? in
            guard s.wanted, s.held, !s.inUse, (s.reservedUntil.map { $0 <= .now } ?? true) else { return nil }
            s.wanted = false
            s.lost = "handed over to another writer that was waiting for it"
            return s.epoch
        }
        guard let epoch else { return false }
        giveUp(epoch: epoch)
        return true
    }

    /// The sequencer said another writer waits for the lease of `epoch`.
    /// Runs inside the client's calls: the keeper's thread does the rest
    /// (hands the lease over, or tells the sequencer a transaction runs).
    private func wanted(epoch: UInt64) {
        let wake = state.withLock { s -> Bool in
            guard s.epoch == epoch, s.lost == nil else { return false }
            s.wanted = true
            return true
        }
        if wake { wakeThread() }
    }

    /// Another writer waits while a transaction runs on the lease: tell the
    /// sequencer once per epoch, so that waiters get SQLITE_BUSY after a short
    /// wait (SQLite's busy handler then polls) instead of waiting in vain.
    private func reportBusyIfWanted() {
        let epoch = state.withLock { s -> UInt64? in
            guard s.wanted, s.held, s.inUse, !s.busyReported else { return nil }
            s.busyReported = true
            return s.epoch
        }
        guard let epoch else { return }
        try? renew(attempts: 1, inTransaction: true, epoch: epoch)
    }

    /// Ends the hold of `epoch` and releases it on the sequencer; the keeper
    /// goes on (a later `acquire` takes a new epoch).
    private func giveUp(epoch: UInt64) {
        let open = holding.withLock { h -> SequencerClient.OpenStream? in
            guard h.epoch == epoch else { return nil }
            h.token += 1  // its end is not a loss
            guard case .open(let stream) = h.phase else {
                h.phase = .none
                return nil
            }
            h.phase = .none
            return stream
        }
        var request = ReleaseLeaseRequest()
        request.database = database
        request.holder = holder
        request.epoch = epoch
        try? client.releaseLease(request)
        // Ending the hold releases it too, should the request have failed.
        if let open { client.cancel(open) }
    }

    private func wakeThread() {
        var one: UInt8 = 1
        _ = Glibc.write(wake.write, &one, 1)
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
            h.confirmed = false
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
            let stream = try client.holdLease(request, onEvent: { [weak self] event in
                guard let self else { return }
                if event.wanted {
                    self.wanted(epoch: epoch)
                } else {
                    self.holding.withLock { h in if h.token == token { h.confirmed = true } }
                }
            }, onEnd: { [weak self] end in
                self?.holdEnded(token: token, epoch: epoch, end)
            })
            // Superseded meanwhile by a later epoch's hold (or by release):
            // this epoch is no longer the lease, so ending its call is safe.
            let stale = holding.withLock { h -> Bool in
                guard h.token == token else { return true }
                if case .opening = h.phase { h.phase = .open(stream) }
                return false
            }
            if stale {
                client.cancel(stream)
                return
            }
            awaitConfirmation(token: token)
        } catch {
            holding.withLock { h in
                if h.token == token, case .opening = h.phase { h.phase = .none }
            }
        }
    }

    /// Waits (up to one request deadline) until the sequencer confirms the hold
    /// of `token`, or it ends: once confirmed, the lease is released as soon as
    /// this process's connection closes, so a process that exits right after
    /// its first write leaves nothing behind for the TTL. Costs one round trip
    /// per acquisition, none per transaction.
    private func awaitConfirmation(token: UInt64) {
        let deadline = ContinuousClock.now + client.options.requestTimeout
        while ContinuousClock.now < deadline {
            let waiting = holding.withLock { h -> Bool in
                guard h.token == token, !h.confirmed else { return false }
                if case .open = h.phase { return true }
                return false
            }
            guard waiting else { return }
            // No wake pipe here: the keeper's thread owns it. It may read the
            // event first; the check above then sees it within a poll.
            client.waitForInput(wake: -1, timeoutMs: 5)
            client.processPendingInput(wait: true)
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
        try renew(attempts: attempts, inTransaction: false, epoch: state.withLock { $0.epoch })
    }

    private func renew(attempts: Int?, inTransaction: Bool, epoch: UInt64) throws(SequencerError) {
        guard epoch != 0 else { return }
        var request = RenewLeaseRequest()
        request.database = database
        request.holder = holder
        request.epoch = epoch
        request.ttlMs = ttlMs
        request.inTransaction = inTransaction
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
        stopped.store(true, ordering: .sequentiallyConsistent)
        wakeThread()
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
        thread.withLock { t in
            guard t == nil, !stopped.load(ordering: .sequentiallyConsistent) else { return }
            let context = Unmanaged.passRetained(self).toOpaque()
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { arg in
                let keeper = Unmanaged<LeaseKeeper>.fromOpaque(arg!).takeRetainedValue()
                keeper.run()
                return nil
            }, context)
            if rc == 0 {
                t = tid
            } else {
                Unmanaged<LeaseKeeper>.fromOpaque(context).release()
            }
        }
    }

    /// The keeper's thread: watches the lease's connection (events of the
    /// HoldLease call: wanted, ended), hands the lease over when another
    /// writer waits and no transaction runs, and renews it (if `renews`).
    private func run() {
        let interval = ContinuousClock.Duration.milliseconds(max(Int(ttlMs) / 3, 10))
        var nextRenewal = ContinuousClock.now + interval
        while !stopped.load(ordering: .sequentiallyConsistent) {
            let s = status
            var until = ContinuousClock.now + .seconds(1)
            if s.held && renews { until = min(until, nextRenewal) }
            if let reserved = s.reservedUntil, reserved > .now, s.wanted {
                until = min(until, reserved + .milliseconds(1))  // to hand over when it ends
            }
            client.waitForInput(wake: wake.read, timeoutMs: Int32(clamping: max(0, (until - .now).milliseconds)))
            if stopped.load(ordering: .sequentiallyConsistent) { break }
            client.processPendingInput(wait: true)
            handOverIfWanted()
            reportBusyIfWanted()
            guard renews, ContinuousClock.now >= nextRenewal else { continue }
            nextRenewal = ContinuousClock.now + interval
            guard status.held else { continue }
            // One attempt per tick; after a failure the next comes sooner.
            do throws(SequencerError) { try renew(attempts: 1) } catch {
                nextRenewal = ContinuousClock.now + interval / 4
                continue
            }
            // The renewal proved the lease live: hold it if its hold could not be sent.
            let after = status
            if after.held, holding.withLock({ $0.needsHold(after.epoch) }) { hold(epoch: after.epoch) }
        }
    }
}
