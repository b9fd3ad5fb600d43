import Logging
import SyndProtocol
import SyndStorage

extension SequencerService {
    /// The longest an AcquireLease call waits for another holder's lease.
    static let maxLeaseWait = Duration.seconds(30)

    /// How long an AcquireLease waits for a holder that is inside a write transaction.
    static let busyHolderWait = Duration.milliseconds(25)

    /// Tries to take the lease on the `writes` lane; while another holder has
    /// it, queues the caller (first come, first served) and waits up to
    /// `wait_ms` for it to be released, handed over or to lapse. The first try
    /// costs no task: most acquisitions find the lease free.
    func acquireLease(
        _ r: AcquireLeaseRequest, departure: Latch?, reply: @escaping @Sendable (Result<Lease, SequencerError>) -> Void
    ) {
        let start = ContinuousClock.now
        let store = self.store
        writes.run({ () throws(SequencerError) in try store.acquireLease(r, ticket: 0) }) { [self] first in
            guard case .failure(let refusal) = first, refusal.code == .failedPrecondition, r.waitMs > 0 else {
                if case .success(let lease) = first { granted(r, lease, waited: false, start) }
                reply(first)
                return
            }
            let waiting = Task {
                do throws(SequencerError) {
                    let lease = try await acquireWaiting(r, start: start, refused: refusal)
                    granted(r, lease, waited: true, start)
                    reply(.success(lease))
                } catch {
                    reply(.failure(error))
                }
            }
            departure?.whenClosed { waiting.cancel() }
        }
    }

    private func granted(_ r: AcquireLeaseRequest, _ lease: Lease, waited: Bool, _ start: ContinuousClock.Instant) {
        metrics.leaseGranted(afterWaiting: waited)
        logger.info("lease granted", metadata: [
            "database": "\(r.database)", "holder": "\(r.holder)", "epoch": "\(lease.epoch)", "ttl_ms": "\(lease.ttlMs)",
            "waited_ms": "\((ContinuousClock.now - start).components.seconds * 1000 + (ContinuousClock.now - start).components.attoseconds / 1_000_000_000_000_000)",
        ])
    }

    /// The waiting part of `acquireLease`, after a first refusal. Waits off
    /// the store's lanes; a cancelled task (the client left) stops waiting.
    private func acquireWaiting(_ r: AcquireLeaseRequest, start: ContinuousClock.Instant, refused: SequencerError) async throws(SequencerError) -> Lease {
        let deadline = start + min(.milliseconds(r.waitMs), Self.maxLeaseWait)
        // A holder inside a write transaction (it said so) hands over only when
        // it ends: wait for that only briefly, about one step of SQLite's busy
        // handler, so a short transaction hands over at once while a caller
        // without a busy handler still gets SQLITE_BUSY almost at once.
        let busyDeadline = min(deadline, start + Self.busyHolderWait)
        var ticket: LeaseTicket?
        let store = self.store
        defer { if let ticket { store.leaveLeaseQueue(ticket) } }
        var refusal = refused
        while true {
            let now = ContinuousClock.now
            let until = store.leaseHolderIsWriting(r.database) ? busyDeadline : deadline
            guard refusal.code == .failedPrecondition, now < until, !Task.isCancelled else { throw refusal }
            if let ticket {
                // Woken by a release, a move of the queue or the holder saying it
                // is busy; a lease that lapses sends nothing, so also wake just
                // after it would.
                var nap = until - now
                if let left = store.leaseTimeLeft(r.database) { nap = min(nap, left + .milliseconds(1)) }
                await ticket.signal.wait(upTo: max(nap, .milliseconds(1)))
            } else {
                // Queued now; the lease may have been released meanwhile, so try at once.
                ticket = try await call { () throws(SequencerError) in try store.joinLeaseQueue(database: r.database, holder: r.holder) }
            }
            let id = ticket?.id ?? 0
            do throws(SequencerError) {
                return try await writes.run { [store] () throws(SequencerError) in try store.acquireLease(r, ticket: id) }
            } catch {
                refusal = error
            }
        }
    }

    /// Ties a lease to the caller's stream: when the client leaves (it reset
    /// the stream, or its connection closed: a killed writer), the lease is
    /// released if that holder and epoch still have it. Sends the lease, then
    /// a `wanted` event each time another writer asks for it; ends the call
    /// once the lease lapsed or moved. Renews nothing. A cancelled task means
    /// the server is stopping: the lease is left as it is.
    public func holdLease(request: [UInt8], stream: some SequencerResponseStream) async throws(SequencerError) {
        count(.holdLease)
        var fields: Logger.Metadata = [:]
        do throws(SequencerError) {
            let hold: HoldLeaseRequest = try Self.decode(request)
            fields = ["database": "\(hold.database)", "holder": "\(hold.holder)", "epoch": "\(hold.epoch)"]
            try await self.hold(hold, stream)
        } catch {
            // One line, with the lease: also when the lease lapsed or moved on under an open hold.
            failed(error, of: .holdLease, fields)
            throw error
        }
    }

    private func hold(_ hold: HoldLeaseRequest, _ stream: some SequencerResponseStream) async throws(SequencerError) {
        let store = self.store
        var event = HoldLeaseEvent()
        event.lease = try await call { () throws(SequencerError) in try store.heldLease(hold) }
        let watch = try store.watchLease(hold.database)
        defer { store.unwatchLease(hold.database, id: watch.id) }
        var releasing = ReleaseLeaseRequest()
        releasing.database = hold.database
        releasing.holder = hold.holder
        releasing.epoch = hold.epoch
        let release = releasing
        do {
            try await stream.send(event.serializedBytes())
        } catch {
            // The client is already gone (it exited right after taking the
            // lease): release it now, not after its TTL.
            if (try? await call({ () throws(SequencerError) in try store.releaseLease(release) })) == true {
                logger.info("released the writer lease of '\(hold.database)' (holder '\(hold.holder)', epoch \(hold.epoch)): its holder left before its hold began")
            }
            throw SequencerError(.cancelled, "the holder of '\(hold.database)' left before its hold began: \(error)")
        }

        let interval = holdCheckInterval
        var wantedEvent = HoldLeaseEvent()
        wantedEvent.wanted = true
        let wanted = wantedEvent.serializedBytes()
        let end = await withTaskGroup(of: HoldEnd.self) { group in
            group.addTask {
                // Tell the holder each time another writer asks for its lease.
                while true {
                    await watch.signal.wait()
                    if Task.isCancelled { return .serverStopping }
                    do { try await stream.send(wanted) } catch { return .clientLeft }
                }
            }
            group.addTask {
                await stream.clientLeft()
                return Task.isCancelled ? .serverStopping : .clientLeft
            }
            group.addTask {
                while true {
                    do { try await Task.sleep(for: interval) } catch { return .serverStopping }
                    do throws(SequencerError) {
                        _ = try await call { () throws(SequencerError) in try store.heldLease(hold) }
                    } catch {
                        return .leaseGone(error)
                    }
                }
            }
            let first: HoldEnd = await group.next() ?? .serverStopping
            group.cancelAll()
            return first
        }
        switch end {
        case .clientLeft:
            do throws(SequencerError) {
                if try await call({ () throws(SequencerError) in try store.releaseLease(release) }) {
                    metrics.leaseReclaimed()
                    logger.info("released the writer lease of '\(hold.database)' (holder '\(hold.holder)', epoch \(hold.epoch)): its holder's connection closed",
                                metadata: ["database": "\(hold.database)", "holder": "\(hold.holder)", "epoch": "\(hold.epoch)"])
                }
            } catch {
                logger.error("releasing the lease of '\(hold.database)' after its holder left failed: \(error.message)")
            }
        case .leaseGone(let error):
            metrics.leaseLost()
            throw error
        case .serverStopping:
            return
        }
    }
}

/// Why an open HoldLease call ended.
private enum HoldEnd: Sendable {
    case clientLeft
    case leaseGone(SequencerError)
    case serverStopping
}
