import PostgresNIO
import SyndProtocol
import SyndStorage

/// Leases: single statements on the database's row, timed by PostgreSQL's
/// clock (`clock_timestamp()`), so sequencers' clocks never matter.
extension PostgresStore {
    /// The lease columns as a refusal needs them.
    struct LeaseView {
        var holder: String?
        var epoch: Int64
        var live: Bool
        /// Milliseconds left (live) or since it lapsed (not live).
        var ms: Int64
        var inTransaction: Bool
    }

    static let leaseColumns = """
        lease_holder, lease_epoch, COALESCE(lease_expires > clock_timestamp(), false),
        COALESCE(abs(floor(EXTRACT(EPOCH FROM lease_expires - clock_timestamp()) * 1000))::bigint, 0), lease_in_txn
        """

    static let headColumns = "version, page_size, page_count, oldest_version"

    static func info(_ name: String, _ version: Int64, _ pageSize: Int32, _ pageCount: Int64, _ oldest: Int64) -> DatabaseInfo {
        var i = DatabaseInfo()
        i.name = name
        i.version = UInt64(version)
        i.pageSize = UInt32(pageSize)
        i.pageCount = UInt32(pageCount)
        i.oldestVersion = UInt64(oldest)
        return i
    }

    static func lease(_ name: String, holder: String, epoch: Int64, ttl: UInt32, info: DatabaseInfo) -> Lease {
        var l = Lease()
        l.database = name
        l.holder = holder
        l.epoch = UInt64(epoch)
        l.ttlMs = ttl
        l.info = info
        return l
    }

    /// The lease of `name` as it is now (nil: no such database).
    func leaseView(_ name: String, on connection: PostgresConnection) async throws -> LeaseView? {
        let rows = try await connection.query(
            "SELECT \(unescaped: Self.leaseColumns) FROM synddb_databases WHERE name = \(name)", logger: logger)
        var view: LeaseView?
        for try await (holder, epoch, live, ms, inTxn) in rows.decode((String?, Int64, Bool, Int64, Bool).self) {
            view = LeaseView(holder: holder, epoch: epoch, live: live, ms: ms, inTransaction: inTxn)
        }
        return view
    }

    /// Why `holder` at `epoch` does not hold the live lease (as `PageStore` says it).
    static func fenced(_ name: String, holder: String, epoch: UInt64, _ view: LeaseView) -> SequencerError {
        guard let current = view.holder else {
            return SequencerError(.failedPrecondition, "writer lease of '\(name)' (epoch \(epoch)) was released or lost; reopen the database to take a new lease")
        }
        guard UInt64(view.epoch) == epoch, current == holder else {
            return SequencerError(.failedPrecondition, "stale lease epoch \(epoch) for '\(name)': writer '\(current)' took the lease at epoch \(view.epoch); this writer was fenced off")
        }
        return SequencerError(.failedPrecondition, "writer lease of '\(name)' (epoch \(epoch)) lapsed \(view.ms) ms ago without renewal; the transaction was not applied")
    }

    static func missing(_ name: String) -> SequencerError {
        SequencerError(.notFound, "database '\(name)' does not exist on this sequencer; open it with create=true first")
    }

    public func acquireLease(_ request: AcquireLeaseRequest, ticket: UInt64) throws(SequencerError) -> Lease {
        let ttl = try PageStore.leaseTTL(request.ttlMs, configuration)
        guard !request.holder.isEmpty else { throw SequencerError(.invalidArgument, "lease request has no holder id") }
        let name = request.database
        // Writers queued here earlier go first (across sequencers, whoever asks PostgreSQL first).
        let ahead = board.withDatabase(name) { d, _ -> String? in
            guard let first = d.queue.first(where: { $0.holder != request.holder }), ticket == 0 || first.id < ticket else { return nil }
            for h in d.holds.values { h.fire() }
            return first.holder
        }
        if let ahead {
            throw SequencerError(.failedPrecondition, "database '\(name)' is locked: writers that asked earlier are waiting for its lease (first: '\(ahead)'); set a busy timeout to wait your turn")
        }
        let holder = request.holder
        let ttlMs = Int32(ttl)
        let outcome = try blocking("taking the lease of '\(name)'") { [self] () async throws -> Result<Lease, SequencerError> in
            try await client.withConnection { connection in
                let rows = try await connection.query("""
                    UPDATE synddb_databases SET lease_holder = \(holder), lease_epoch = lease_epoch + 1, lease_ttl_ms = \(ttlMs),
                        lease_expires = clock_timestamp() + \(ttlMs) * interval '1 millisecond', lease_in_txn = false
                    WHERE name = \(name) AND (lease_holder IS NULL OR lease_holder = \(holder) OR lease_expires <= clock_timestamp())
                    RETURNING lease_epoch, \(unescaped: Self.headColumns)
                    """, logger: logger)
                for try await (epoch, version, pageSize, pageCount, oldest) in rows.decode((Int64, Int64, Int32, Int64, Int64).self) {
                    return .success(Self.lease(name, holder: holder, epoch: epoch, ttl: ttl, info: Self.info(name, version, pageSize, pageCount, oldest)))
                }
                guard let view = try await leaseView(name, on: connection) else { return .failure(Self.missing(name)) }
                // Tell the holder, wherever it is served, that its lease is wanted.
                try await connection.query("SELECT pg_notify('synddb', \("want " + name))", logger: logger)
                board.withDatabase(name) { d, _ in
                    d.leaseExpires = view.live ? .now + .milliseconds(view.ms) : nil
                    d.leaseInTransaction = view.inTransaction
                    for h in d.holds.values { h.fire() }
                }
                let who = view.holder ?? "?"
                return .failure(SequencerError(
                    .failedPrecondition,
                    "database '\(name)' is locked: another connection holds its writer lease (holder '\(who)', epoch \(view.epoch), \(view.ms) ms left) and was asked to hand it over; set a busy timeout (sqlite3_busy_timeout, PRAGMA busy_timeout, Python's timeout=) to wait for it"))
            }
        }
        return try outcome.get()
    }

    public func renewLease(_ request: RenewLeaseRequest) throws(SequencerError) -> Lease {
        let ttl = try PageStore.leaseTTL(request.ttlMs, configuration)
        let name = request.database, holder = request.holder, epoch = Int64(request.epoch), inTxn = request.inTransaction
        let ttlMs = Int32(ttl)
        return try blocking("renewing the lease of '\(name)'") { [self] () async throws -> Lease in
            try await client.withConnection { connection in
                let rows = try await connection.query("""
                    UPDATE synddb_databases SET lease_ttl_ms = \(ttlMs),
                        lease_expires = clock_timestamp() + \(ttlMs) * interval '1 millisecond', lease_in_txn = lease_in_txn OR \(inTxn)
                    WHERE name = \(name) AND lease_holder = \(holder) AND lease_epoch = \(epoch) AND lease_expires > clock_timestamp()
                    RETURNING \(unescaped: Self.headColumns)
                    """, logger: logger)
                for try await (version, pageSize, pageCount, oldest) in rows.decode((Int64, Int32, Int64, Int64).self) {
                    return Self.lease(name, holder: holder, epoch: epoch, ttl: ttl, info: Self.info(name, version, pageSize, pageCount, oldest))
                }
                guard let view = try await leaseView(name, on: connection) else { throw Self.missing(name) }
                throw Self.fenced(name, holder: holder, epoch: UInt64(epoch), view)
            }
        }
    }

    @discardableResult
    public func releaseLease(_ request: ReleaseLeaseRequest) throws(SequencerError) -> Bool {
        let name = request.database, holder = request.holder, epoch = Int64(request.epoch)
        let released = try blocking("releasing the lease of '\(name)'") { [self] () async throws -> Bool in
            let rows = try await client.query("""
                WITH r AS (
                    UPDATE synddb_databases SET lease_holder = NULL, lease_expires = NULL, lease_in_txn = false
                    WHERE name = \(name) AND lease_holder = \(holder) AND lease_epoch = \(epoch) RETURNING name)
                SELECT pg_notify('synddb', 'free ' || name) FROM r
                """, logger: logger)
            var n = 0
            for try await _ in rows { n += 1 }
            return n > 0
        }
        if released { board.fire("free", name) }
        return released
    }

    public func heldLease(_ request: HoldLeaseRequest) throws(SequencerError) -> Lease {
        let name = request.database, holder = request.holder, epoch = request.epoch
        return try blocking("checking the lease of '\(name)'") { [self] () async throws -> Lease in
            let rows = try await client.query("""
                SELECT \(unescaped: Self.leaseColumns), lease_ttl_ms, \(unescaped: Self.headColumns) FROM synddb_databases WHERE name = \(name)
                """, logger: logger)
            for try await (h, e, live, ms, inTxn, ttl, version, pageSize, pageCount, oldest) in rows.decode(
                (String?, Int64, Bool, Int64, Bool, Int32, Int64, Int32, Int64, Int64).self)
            {
                let view = LeaseView(holder: h, epoch: e, live: live, ms: ms, inTransaction: inTxn)
                guard h == holder, UInt64(e) == epoch, live else { throw Self.fenced(name, holder: holder, epoch: epoch, view) }
                return Self.lease(name, holder: holder, epoch: e, ttl: UInt32(ttl), info: Self.info(name, version, pageSize, pageCount, oldest))
            }
            throw Self.missing(name)
        }
    }

    // MARK: - Waiting for a lease (this sequencer's queue; NOTIFY reaches the others)

    public func joinLeaseQueue(database: String, holder: String) throws(SequencerError) -> LeaseTicket {
        let signal = LeaseSignal()
        let id = board.withDatabase(database) { d, id in
            d.queue.append((id, holder, signal))
            for h in d.holds.values { h.fire() }
            return id
        }
        _ = try blocking("asking for the lease of '\(database)'") { [self] in
            try await client.query("SELECT pg_notify('synddb', \("want " + database))", logger: logger)
        }
        return LeaseTicket(database: database, id: id, signal: signal)
    }

    public func leaveLeaseQueue(_ ticket: LeaseTicket) {
        board.withDatabase(ticket.database) { d, _ in
            guard let i = d.queue.firstIndex(where: { $0.id == ticket.id }) else { return }
            d.queue.remove(at: i)
            if i == 0 { for w in d.queue { w.signal.fire() } }
        }
    }

    public func leaseHolderIsWriting(_ database: String) -> Bool {
        board.withDatabase(database) { d, _ in d.leaseInTransaction && (d.leaseExpires.map { $0 > .now } ?? false) }
    }

    public func leaseTimeLeft(_ database: String) -> Duration? {
        board.withDatabase(database) { d, _ -> Duration? in
            guard let expires = d.leaseExpires else { return nil }
            let now = ContinuousClock.now
            return expires > now ? expires - now : nil
        }
    }

    public func watchLease(_ database: String) throws(SequencerError) -> (id: UInt64, signal: LeaseSignal) {
        let signal = LeaseSignal()
        let id = board.withDatabase(database) { d, id in
            d.holds[id] = signal
            if !d.queue.isEmpty { signal.fire() }
            return id
        }
        return (id, signal)
    }

    public func unwatchLease(_ database: String, id: UInt64) {
        board.withDatabase(database) { d, _ in _ = d.holds.removeValue(forKey: id) }
    }
}
