import GRPCCore
import SwiftProtobuf
import Logging
import Synchronization
import SyndGRPC
import SyndProtocol
import SyndStorage

/// The gRPC face of the sequencer: decodes requests, calls the store, maps every
/// refusal to a gRPC status with its message. Nothing a client sends can crash it.
///
/// One database's calls never wait for another's commit, except for what the
/// one store file serializes (commits, lease grants, creation;
/// see `PageStore`). Calls that take the store lock run on the `writes` lane,
/// reads on the `reads` lane (the store's read-only connection), each a thread
/// of its own; renewals and HoldLease checks take only a database's lease lock
/// and run inline. So a commit blocks no thread that another call needs.
public struct SequencerService: Synddb_V1_Sequencer.SimpleServiceProtocol {
    public let store: PageStore
    public let counters: RequestCounters
    let logger: Logger
    /// How often an open HoldLease call checks that its lease is still live.
    let holdCheckInterval: Duration
    /// Calls that take the store lock.
    private let writes = BlockingLane(label: "synd.sequencer.writes")
    /// Calls served by the store's read-only connection.
    private let reads = BlockingLane(label: "synd.sequencer.reads")

    public init(
        store: PageStore, counters: RequestCounters = RequestCounters(), logger: Logger = Logger(label: "synd.sequencer"),
        holdCheckInterval: Duration = .milliseconds(500)
    ) {
        self.store = store
        self.counters = counters
        self.logger = logger
        self.holdCheckInterval = holdCheckInterval
    }

    /// Runs one RPC: converts the request, calls `body`, converts the answer.
    private func handle<In: SwiftProtobuf.Message, Req: WireMessage, Res: WireMessage, Out: SwiftProtobuf.Message>(
        _ method: SequencerMethod, _ request: In, _ body: (Req) async throws(SequencerError) -> Res
    ) async throws -> Out {
        counters.count(method)
        let decoded: Req
        do {
            decoded = try request.converted()
        } catch {
            throw RPCError(code: .invalidArgument, message: "malformed \(Req.self): \(error)")
        }
        do {
            return try await body(decoded).converted()
        } catch let error as SequencerError {
            if error.code == .internal || error.code == .unavailable || error.code == .dataLoss {
                logger.error("\(method.rawValue) failed: \(error.message)")
            }
            throw error.rpcError
        } catch {
            throw RPCError(code: .internalError, message: "encoding the answer failed: \(error)")
        }
    }

    public func getCapabilities(request: Synddb_V1_GetCapabilitiesRequest, context: ServerContext) async throws -> Synddb_V1_Capabilities {
        try await handle(.getCapabilities, request) { (_: GetCapabilitiesRequest) in store.capabilities }
    }

    public func openDatabase(request: Synddb_V1_OpenDatabaseRequest, context: ServerContext) async throws -> Synddb_V1_DatabaseInfo {
        try await handle(.openDatabase, request) { (r: OpenDatabaseRequest) async throws(SequencerError) in
            if let info = try await reads.run({ [store] () throws(SequencerError) in try store.openExisting(r) }) { return info }
            return try await writes.run { [store] () throws(SequencerError) in try store.create(r) }
        }
    }

    /// The longest an AcquireLease call waits for another holder's lease.
    static let maxLeaseWait = Duration.seconds(30)

    public func acquireLease(request: Synddb_V1_AcquireLeaseRequest, context: ServerContext) async throws -> Synddb_V1_Lease {
        try await handle(.acquireLease, request) { (r: AcquireLeaseRequest) async throws(SequencerError) in
            try await acquireWaiting(r)
        }
    }

    /// Tries to take the lease; while another holder has it, queues the caller
    /// (first come, first served) and waits up to `wait_ms` for it to be
    /// released, handed over or to lapse. Waits off the store's lanes.
    private func acquireWaiting(_ r: AcquireLeaseRequest) async throws(SequencerError) -> Lease {
        let start = ContinuousClock.now
        let deadline = start + min(.milliseconds(r.waitMs), Self.maxLeaseWait)
        // A holder inside a write transaction (it said so) hands over only when
        // it ends: wait for that only briefly, about one step of SQLite's busy
        // handler, so a short transaction hands over at once while a caller
        // without a busy handler still gets SQLITE_BUSY almost at once.
        let busyDeadline = min(deadline, start + Self.busyHolderWait)
        var ticket: LeaseTicket?
        defer { if let ticket { store.leaveLeaseQueue(ticket) } }
        while true {
            let id = ticket?.id ?? 0
            do throws(SequencerError) {
                return try await writes.run { [store] () throws(SequencerError) in try store.acquireLease(r, ticket: id) }
            } catch {
                let now = ContinuousClock.now
                let until = store.leaseHolderIsWriting(r.database) ? busyDeadline : deadline
                guard error.code == .failedPrecondition, now < until, !Task.isCancelled else { throw error }
                guard let ticket else {
                    ticket = try store.joinLeaseQueue(database: r.database, holder: r.holder)
                    continue  // the lease may have been released meanwhile
                }
                // Woken by a release, a move of the queue or the holder saying it
                // is busy; a lease that lapses sends nothing, so also wake just
                // after it would.
                var nap = until - now
                if let left = store.leaseTimeLeft(r.database) { nap = min(nap, left + .milliseconds(1)) }
                await ticket.signal.wait(upTo: max(nap, .milliseconds(1)))
            }
        }
    }

    /// How long an AcquireLease waits for a holder that is inside a write transaction.
    static let busyHolderWait = Duration.milliseconds(25)

    public func renewLease(request: Synddb_V1_RenewLeaseRequest, context: ServerContext) async throws -> Synddb_V1_Lease {
        // Inline: takes only the database's lease lock.
        try await handle(.renewLease, request) { (r: RenewLeaseRequest) throws(SequencerError) in try store.renewLease(r) }
    }

    public func releaseLease(request: Synddb_V1_ReleaseLeaseRequest, context: ServerContext) async throws -> Synddb_V1_ReleaseLeaseResponse {
        // Inline: takes only the database's lease lock.
        try await handle(.releaseLease, request) { (r: ReleaseLeaseRequest) throws(SequencerError) in
            _ = try store.releaseLease(r)
            return ReleaseLeaseResponse()
        }
    }

    /// Ties a lease to the caller's connection: when the call ends from the
    /// client's side (it cancelled, or its connection closed: a killed writer),
    /// the lease is released if that holder and epoch still have it. Ends the
    /// call itself once the lease lapsed or moved. Renews nothing.
    public func holdLease(
        request: Synddb_V1_HoldLeaseRequest, response: RPCWriter<Synddb_V1_HoldLeaseEvent>, context: ServerContext
    ) async throws {
        counters.count(.holdLease)
        let hold: HoldLeaseRequest
        do {
            hold = try request.converted()
        } catch {
            throw RPCError(code: .invalidArgument, message: "malformed HoldLeaseRequest: \(error)")
        }
        var event = HoldLeaseEvent()
        let watch: (id: UInt64, signal: LeaseSignal)
        do throws(SequencerError) {
            event.lease = try store.heldLease(hold)
            watch = try store.watchLease(hold.database)
        } catch {
            throw error.rpcError
        }
        defer { store.unwatchLease(hold.database, id: watch.id) }
        var release = ReleaseLeaseRequest()
        release.database = hold.database
        release.holder = hold.holder
        release.epoch = hold.epoch
        do {
            try await response.write(try event.converted())
        } catch {
            // The client is already gone (it exited right after taking the
            // lease): release it now, not after its TTL.
            if (try? store.releaseLease(release)) == true {
                logger.info("released the writer lease of '\(hold.database)' (holder '\(hold.holder)', epoch \(hold.epoch)): its holder left before its hold began")
            }
            throw error
        }

        // grpc-swift signals the end of the call from the client's side through
        // the cancellation handle (a closed connection included), not by
        // cancelling this task.
        enum End: Sendable { case clientLeft, leaseGone(SequencerError), serverStopping }
        let store = self.store
        let interval = holdCheckInterval
        var wantedEvent = HoldLeaseEvent()
        wantedEvent.wanted = true
        let wanted: Synddb_V1_HoldLeaseEvent = try wantedEvent.converted()
        let end = await withTaskGroup(of: End.self) { group in
            group.addTask {
                // Tell the holder each time another writer asks for its lease.
                while true {
                    await watch.signal.wait()
                    if Task.isCancelled { return .serverStopping }
                    do { try await response.write(wanted) } catch { return .clientLeft }
                }
            }
            group.addTask {
                do {
                    try await context.cancellation.cancelled
                    return .clientLeft
                } catch {
                    return .serverStopping
                }
            }
            group.addTask {
                while true {
                    do { try await Task.sleep(for: interval) } catch { return .serverStopping }
                    do throws(SequencerError) { _ = try store.heldLease(hold) } catch { return .leaseGone(error) }
                }
            }
            let first = await group.next() ?? .serverStopping
            group.cancelAll()
            return first
        }
        switch end {
        case .clientLeft:
            do {
                if try store.releaseLease(release) {
                    logger.info("released the writer lease of '\(hold.database)' (holder '\(hold.holder)', epoch \(hold.epoch)): its holder's connection closed")
                }
            } catch {
                logger.error("releasing the lease of '\(hold.database)' after its holder left failed: \(error.message)")
            }
        case .leaseGone(let error):
            throw error.rpcError
        case .serverStopping:
            return
        }
    }

    public func readPages(request: Synddb_V1_ReadPagesRequest, context: ServerContext) async throws -> Synddb_V1_ReadPagesResponse {
        try await handle(.readPages, request) { (r: ReadPagesRequest) async throws(SequencerError) in
            try await reads.run { [store] () throws(SequencerError) in try store.readPages(r) }
        }
    }

    public func commit(request: Synddb_V1_CommitRequest, context: ServerContext) async throws -> Synddb_V1_CommitResponse {
        try await handle(.commit, request) { (r: CommitRequest) async throws(SequencerError) in
            try await writes.run { [store] () throws(SequencerError) in try store.commit(r) }
        }
    }

    public func dropDatabase(request: Synddb_V1_DropDatabaseRequest, context: ServerContext) async throws -> Synddb_V1_DropDatabaseResponse {
        try await handle(.dropDatabase, request) { (r: DropDatabaseRequest) async throws(SequencerError) in
            let response = try await writes.run { [store] () throws(SequencerError) in try store.drop(r) }
            if response.version > 0 { logger.info("dropped '\(r.database)' at version \(response.version)") }
            return response
        }
    }

    public func getSequencerKey(request: Synddb_V1_GetSequencerKeyRequest, context: ServerContext) async throws -> Synddb_V1_SequencerKey {
        try await handle(.getSequencerKey, request) { (_: GetSequencerKeyRequest) in store.sequencerKey }
    }

    public func streamBatches(
        request: Synddb_V1_StreamBatchesRequest, response: RPCWriter<Synddb_V1_Batch>, context: ServerContext
    ) async throws {
        counters.count(.streamBatches)
        let database = request.database
        var next = request.fromVersion
        if next == 0 {
            // From the oldest batch kept: 1, or the last drop (or the retention window).
            do {
                next = try await reads.run { [store] () throws(SequencerError) in try store.oldestVersion(of: database) }
            } catch let error as SequencerError {
                throw error.rpcError
            }
        }
        while true {
            do {
                let head = try await reads.run { [store] () throws(SequencerError) in try store.headVersion(of: database) }
                while next <= head {
                    // A missing record is skipped; the validator then sees the gap.
                    let version = next
                    guard let batch = try await reads.run({ [store] () throws(SequencerError) in
                        try store.batch(database: database, version: version)
                    }) else {
                        next += 1
                        continue
                    }
                    let message: Synddb_V1_Batch
                    do {
                        message = try batch.converted()
                    } catch {
                        throw RPCError(code: .internalError, message: "encoding batch \(next) failed: \(error)")
                    }
                    try await response.write(message)
                    next += 1
                }
            } catch let error as SequencerError {
                throw error.rpcError
            }
            guard request.follow else { return }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    public func getCommitStatus(request: Synddb_V1_GetCommitStatusRequest, context: ServerContext) async throws -> Synddb_V1_GetCommitStatusResponse {
        try await handle(.getCommitStatus, request) { (r: GetCommitStatusRequest) async throws(SequencerError) in
            try await writes.run { [store] () throws(SequencerError) in try store.commitStatus(r) }
        }
    }
}

/// Requests served, per method: how tests and operators count round trips.
public final class RequestCounters: Sendable {
    private let counts = Mutex<[SequencerMethod: Int]>([:])
    public init() {}
    func count(_ method: SequencerMethod) { counts.withLock { $0[method, default: 0] += 1 } }
    public subscript(method: SequencerMethod) -> Int { counts.withLock { $0[method, default: 0] } }
    public var total: Int { counts.withLock { $0.values.reduce(0, +) } }
}

extension SequencerError {
    /// The same status and message as a grpc-swift error (both use gRPC's codes).
    var rpcError: RPCError {
        let code = Status.Code(rawValue: self.code.rawValue).flatMap { RPCError.Code($0) } ?? .unknown
        return RPCError(code: code, message: message)
    }
}
