import SyndProtocol

/// A writer's place in a database's lease queue (see `PageStore.joinLeaseQueue`).
public struct LeaseTicket: Sendable {
    public let database: String
    public let id: UInt64
    public let signal: LeaseSignal

    public init(database: String, id: UInt64, signal: LeaseSignal) {
        self.database = database
        self.id = id
        self.signal = signal
    }
}

extension PageStore {
    /// Queues `holder` for `database`'s lease: from now on the lease goes to
    /// writers in arrival order, and `signal` fires whenever it may be free
    /// (released, or the queue moved). The holder is told its lease is wanted.
    /// Leave with `leaveLeaseQueue`, granted or not.
    public func joinLeaseQueue(database: String, holder: String) throws(SequencerError) -> LeaseTicket {
        let cell = try leaseCell(database)
        let signal = LeaseSignal()
        let id = cell.withLock { l -> UInt64 in
            let id = l.nextWaiterID
            l.nextWaiterID += 1
            l.queue.append((id, holder, signal))
            l.signalWanted()
            return id
        }
        return LeaseTicket(database: database, id: id, signal: signal)
    }

    public func leaveLeaseQueue(_ ticket: LeaseTicket) {
        guard let cell = try? leaseCell(ticket.database) else { return }
        cell.withLock { l in
            guard let i = l.queue.firstIndex(where: { $0.id == ticket.id }) else { return }
            l.queue.remove(at: i)
            // The next in line may take a free lease now.
            if i == 0 { l.signalWaiters() }
        }
    }

    /// Whether the live lease of `database` is held by a writer that said it
    /// is inside a write transaction (a waiter then waits only briefly).
    public func leaseHolderIsWriting(_ database: String) -> Bool {
        guard let cell = try? leaseCell(database) else { return false }
        return cell.withLock { l in
            guard let lease = l.lease else { return false }
            return lease.inTransaction && lease.expires > .now
        }
    }

    /// How long the live lease of `database` has left (nil: none is live).
    public func leaseTimeLeft(_ database: String) -> Duration? {
        guard let cell = try? leaseCell(database) else { return nil }
        return cell.withLock { l -> Duration? in
            guard let lease = l.lease else { return nil }
            let now = ContinuousClock.now
            return lease.expires > now ? lease.expires - now : nil
        }
    }

    /// A signal that fires whenever a writer asks for `database`'s lease, for
    /// an open HoldLease call. End with `unwatchLease`.
    public func watchLease(_ database: String) throws(SequencerError) -> (id: UInt64, signal: LeaseSignal) {
        let cell = try leaseCell(database)
        let signal = LeaseSignal()
        let id = cell.withLock { l -> UInt64 in
            let id = l.nextWaiterID
            l.nextWaiterID += 1
            l.holds[id] = signal
            // Somebody may already be waiting.
            if !l.queue.isEmpty { signal.fire() }
            return id
        }
        return (id, signal)
    }

    public func unwatchLease(_ database: String, id: UInt64) {
        guard let cell = try? leaseCell(database) else { return }
        cell.withLock { l in _ = l.holds.removeValue(forKey: id) }
    }
}
