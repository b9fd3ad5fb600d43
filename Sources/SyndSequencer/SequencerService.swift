import Logging
import NIOCore
import Synchronization
import SyndProtocol
import SyndStorage

/// The sequencer's calls: decodes a request from its protobuf bytes, calls the
/// store, encodes the answer, and maps every refusal to a gRPC status with its
/// message. Nothing a client sends can crash it. Transport-free: the HTTP/2
/// server (`GRPCStreamHandler`) and the fuzz target both call it with bytes.
///
/// Where each call runs, so that no call waits for a thread another one blocks:
/// - inline, on the caller's thread (an event loop), the calls that touch only
///   memory: GetCapabilities, GetSequencerKey, RenewLease and ReleaseLease (a
///   database's lease lock), GetCommitStatus;
/// - Commit through the store's non-blocking `commit(_:completion:)`;
/// - calls that may wait for the disk or the store lock on a lane of their own:
///   `writes` (AcquireLease's grant, creation, drop) and `reads` (the store's
///   read-only connection: ReadPages, OpenDatabase of an existing database,
///   the batch stream);
/// - waits (AcquireLease behind another holder, HoldLease, StreamBatches with
///   `follow`) as Swift tasks.
public struct SequencerService: Sendable {
    public let store: any SequencerStore
    public let counters: RequestCounters
    /// What `/metrics` shows (`synd sequencer --metrics-port`).
    public let metrics: SequencerMetrics
    let logger: Logger
    /// How often an open HoldLease call checks that its lease is still live.
    let holdCheckInterval: Duration
    /// Calls that take the store lock.
    let writes: BlockingLane
    /// Calls served by the store's read-only connection.
    let reads: BlockingLane
    /// CreateSnapshot, which reads a whole database (seconds for a large one).
    let snapshots = BlockingLane(label: "synd.sequencer.snapshots")
    /// For a store whose every call may wait for the network (`callsMayBlock`):
    /// the calls served inline for the embedded store, so that they never hold an event loop.
    let remote: BlockingLane?

    public init(
        store: any SequencerStore, counters: RequestCounters = RequestCounters(), metrics: SequencerMetrics = SequencerMetrics(),
        logger: Logger = Logger(label: "synd.sequencer"), holdCheckInterval: Duration = .milliseconds(500)
    ) {
        self.store = store
        self.counters = counters
        self.metrics = metrics
        self.logger = logger
        self.holdCheckInterval = holdCheckInterval
        // A remote store answers each call after a network round trip and
        // serializes what must be serialized itself: its lanes run calls side by side.
        let concurrent = store.callsMayBlock
        writes = BlockingLane(label: "synd.sequencer.writes", concurrent: concurrent)
        reads = BlockingLane(label: "synd.sequencer.reads", concurrent: concurrent)
        remote = concurrent ? BlockingLane(label: "synd.sequencer.remote", concurrent: true) : nil
    }

    /// Serves one unary call: `request` is the request message's bytes, and
    /// `reply` runs exactly once, with the answer's bytes or a status. Calls
    /// that touch only memory reply before this returns, on the caller's thread;
    /// the others reply later from another thread.
    public func unary(
        _ method: SequencerMethod, request: consuming [UInt8], reply: @escaping @Sendable (Result<[UInt8], SequencerError>) -> Void
    ) {
        unary(method, request: consume request, departure: nil, reply: reply)
    }

    /// `unary`, for a call whose client can leave: `departure` closes when it
    /// does, and a waiting AcquireLease then stops waiting.
    func unary(
        _ method: SequencerMethod, request: consuming [UInt8], departure: Latch?,
        reply: @escaping @Sendable (Result<[UInt8], SequencerError>) -> Void
    ) {
        count(method)
        // Commit logs its refusals itself (`serveCommit`), with what it was asked.
        let outer = reply
        let reply: @Sendable (Result<[UInt8], SequencerError>) -> Void = { [self] result in
            if case .failure(let error) = result { failed(error, of: method) }
            reply(result)
        }
        let store = self.store
        switch method {
        case .getCapabilities:
            reply(Self.serve(request) { (_: GetCapabilitiesRequest) in store.capabilities })
        case .getSequencerKey:
            reply(Self.serve(request) { (_: GetSequencerKeyRequest) in store.sequencerKey })
        case .renewLease:
            inline(request, reply) { (r: RenewLeaseRequest) throws(SequencerError) in try store.renewLease(r) }
        case .releaseLease:
            inline(request, reply) { [logger] (r: ReleaseLeaseRequest) throws(SequencerError) in
                if try store.releaseLease(r) {
                    logger.info("lease released", metadata: ["database": "\(r.database)", "holder": "\(r.holder)", "epoch": "\(r.epoch)"])
                }
                return ReleaseLeaseResponse()
            }
        case .getCommitStatus:
            // A commit still on its way to the disk is waited for without blocking the event loop.
            do throws(SequencerError) {
                let r: GetCommitStatusRequest = try Self.decode(request)
                if let remote {
                    remote.run({ () throws(SequencerError) in try store.commitStatus(r) }) { reply(Self.encoded($0)) }
                } else {
                    store.commitStatus(r) { reply(Self.encoded($0)) }
                }
            } catch {
                reply(.failure(error))
            }
        case .commit:
            let r: CommitRequest
            do throws(SequencerError) {
                r = try Self.decode(request)
            } catch {
                reply(.failure(error))
                return
            }
            // The request's bytes go before the store makes its copies of a
            // large batch: the decoded request holds all it needs.
            _ = consume request
            serveCommit(r, reply: outer)
        case .readPages:
            lane(reads, request, reply) { [metrics] (r: ReadPagesRequest) throws(SequencerError) in
                let answer = try store.readPages(r)
                metrics.pagesServed(answer.pages.count)
                return answer
            }
        case .openDatabase:
            do throws(SequencerError) {
                let r: OpenDatabaseRequest = try Self.decode(request)
                reads.run({ () throws(SequencerError) in try store.openExisting(r) }) { [writes] existing in
                    switch existing {
                    case .success(let info?): reply(.success(info.serializedBytes()))
                    case .success(nil): writes.run({ () throws(SequencerError) in try store.create(r) }) { reply(Self.encoded($0)) }
                    case .failure(let error): reply(.failure(error))
                    }
                }
            } catch {
                reply(.failure(error))
            }
        case .dropDatabase:
            lane(writes, request, reply) { (r: DropDatabaseRequest) throws(SequencerError) in
                let response = try store.drop(r)
                if response.version > 0 {
                    logger.notice("dropped '\(r.database)' at version \(response.version)\(r.force ? " (forced)" : "")",
                                  metadata: ["database": "\(r.database)", "version": "\(response.version)", "force": "\(r.force)"])
                }
                return response
            }
        case .acquireLease:
            do throws(SequencerError) {
                acquireLease(try Self.decode(request), departure: departure) { reply(Self.encoded($0)) }
            } catch {
                reply(.failure(error))
            }
        case .createSnapshot:
            lane(snapshots, request, reply) { (r: CreateSnapshotRequest) throws(SequencerError) in
                let info = try store.createSnapshot(r.database)
                logger.notice("snapshot of '\(r.database)' at version \(info.version) (\(info.pageCount) pages)",
                              metadata: ["database": "\(r.database)", "version": "\(info.version)"])
                return info
            }
        case .getStatus:
            lane(reads, request, reply) { [self] (r: GetStatusRequest) throws(SequencerError) in try status(r) }
        case .holdLease, .streamBatches:
            reply(.failure(SequencerError(.unimplemented, "\(method.rawValue) is a server-streaming method, not a unary one")))
        }
    }

    /// Serves a Commit call whose request the transport decoded as it arrived
    /// (see `GRPCRequestReader`): what `unary(.commit, ...)` does after decoding.
    func commit(_ request: CommitRequest, reply: @escaping @Sendable (Result<[UInt8], SequencerError>) -> Void) {
        count(.commit)
        serveCommit(request, reply: reply)
    }

    /// Applies a decoded commit, then counts it (or its refusal), logs it and
    /// starts a snapshot if one is due.
    private func serveCommit(_ request: CommitRequest, reply: @escaping @Sendable (Result<[UInt8], SequencerError>) -> Void) {
        let store = self.store
        let started = ContinuousClock.now
        store.commit(request) { [self] result in
            switch result {
            case .success(let response):
                metrics.committed(request, duplicate: response.duplicate, took: .now - started)
                logCommitted(request, response, took: .now - started)
                store.snapshotIfDue(request.database, version: response.version)
                reply(.success(response.serializedBytes()))
            case .failure(let error):
                failed(error, of: .commit, Self.fields(request))
                reply(.failure(error))
            }
        }
    }

    /// Serves a ReadPages call with its answer framed for gRPC in a buffer from
    /// `allocator` (see `ReadPagesResponse.framed`): what `unary(.readPages, ...)`
    /// does, without copying megabytes of read-ahead three more times.
    func readPages(request: [UInt8], allocator: ByteBufferAllocator, reply: @escaping @Sendable (Result<ByteBuffer, SequencerError>) -> Void) {
        count(.readPages)
        let store = self.store
        do throws(SequencerError) {
            let r: ReadPagesRequest = try Self.decode(request)
            reads.run({ [metrics] () throws(SequencerError) in
                let answer = try store.readPages(r)
                metrics.pagesServed(answer.pages.count)
                return answer.framed(allocator: allocator)
            }) { [self] result in
                if case .failure(let error) = result { failed(error, of: .readPages) }
                reply(result)
            }
        } catch {
            failed(error, of: .readPages)
            reply(.failure(error))
        }
    }

    /// Serves a call that touches only memory in the embedded store: on the
    /// caller's thread, or on the `remote` lane for a store that may block.
    private func inline<Req: WireMessage, Res: WireMessage>(
        _ request: [UInt8], _ reply: @escaping @Sendable (Result<[UInt8], SequencerError>) -> Void,
        _ body: @escaping @Sendable (Req) throws(SequencerError) -> Res
    ) {
        if let remote {
            lane(remote, request, reply, body)
        } else {
            reply(Self.serve(request, body))
        }
    }

    /// Runs a store call from a task: inline for the embedded store, on the
    /// `remote` lane (off Swift's cooperative pool) for a store that may block.
    func call<T: Sendable>(_ body: @escaping @Sendable () throws(SequencerError) -> T) async throws(SequencerError) -> T {
        if let remote { return try await remote.run(body) }
        return try body()
    }

    /// Decodes the request, runs `body` on `lane`, replies with its encoded answer.
    private func lane<Req: WireMessage, Res: WireMessage>(
        _ lane: BlockingLane, _ request: [UInt8], _ reply: @escaping @Sendable (Result<[UInt8], SequencerError>) -> Void,
        _ body: @escaping @Sendable (Req) throws(SequencerError) -> Res
    ) {
        do throws(SequencerError) {
            let r: Req = try Self.decode(request)
            lane.run({ () throws(SequencerError) in try body(r) }) { reply(Self.encoded($0)) }
        } catch {
            reply(.failure(error))
        }
    }

    /// Decodes, serves and encodes inline.
    private static func serve<Req: WireMessage, Res: WireMessage>(
        _ request: [UInt8], _ body: (Req) throws(SequencerError) -> Res
    ) -> Result<[UInt8], SequencerError> {
        Result { () throws(SequencerError) -> [UInt8] in try body(try decode(request)).serializedBytes() }
    }

    static func decode<M: WireMessage>(_ bytes: [UInt8], as type: M.Type = M.self) throws(SequencerError) -> M {
        do {
            return try M(serializedBytes: bytes)
        } catch {
            throw SequencerError(.invalidArgument, "malformed \(M.self): \(error)")
        }
    }

    static func encoded<M: WireMessage>(_ result: Result<M, SequencerError>) -> Result<[UInt8], SequencerError> {
        result.map { $0.serializedBytes() }
    }

    /// A call served, for the tests' counters and the metrics.
    func count(_ method: SequencerMethod) {
        counters.count(method)
        metrics.request(method)
    }

    /// A call answered with an error: counted by reason, and logged, one
    /// line each. Failures on the sequencer's side are errors; refusals are
    /// the clients' business, logged at info.
    func failed(_ error: SequencerError, of method: SequencerMethod, _ metadata: Logger.Metadata = [:]) {
        metrics.refused(method, error)
        var fields = metadata
        fields["method"] = "\(method.name)"
        fields["code"] = "\(error.code)"
        fields["reason"] = "\(SequencerMetrics.reason(error))"
        if error.code == .internal || error.code == .unavailable || error.code == .dataLoss {
            logger.error("\(method.name) failed: \(error.message)", metadata: fields)
        } else {
            logger.info("refused \(method.name): \(error.message)", metadata: fields)
        }
    }

    /// A connection closed as soon as accepted: `open` connections are the most.
    func connectionRefused(open: Int) {
        if metrics.connectionRefused() {
            logger.warning("refusing connections: \(open) are open, the most this sequencer accepts (--max-connections)",
                           metadata: ["max_connections": "\(open)"])
        }
    }

    /// What a log line says of a commit.
    static func fields(_ r: CommitRequest) -> Logger.Metadata {
        [
            "database": "\(r.database)", "txn": "\(hex(r.txnID))", "holder": "\(r.holder)", "epoch": "\(r.leaseEpoch)",
            "base": "\(r.baseVersion)",
        ]
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// One line per commit at debug level.
    func logCommitted(_ r: CommitRequest, _ response: CommitResponse, took: Duration) {
        guard logger.logLevel <= .debug else { return }
        var fields = Self.fields(r)
        fields["version"] = "\(response.version)"
        fields["pages"] = "\(r.pages.count)"
        fields["duplicate"] = "\(response.duplicate)"
        fields["micros"] = "\(took.components.seconds * 1_000_000 + took.components.attoseconds / 1_000_000_000_000)"
        logger.debug("committed", metadata: fields)
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

extension SequencerMethod {
    /// "Commit", "ReadPages", ... (the last part of the path).
    public var name: Substring { rawValue.split(separator: "/").last ?? Substring(rawValue) }

    /// HoldLease and StreamBatches answer with a stream of messages; the others with one.
    public var isServerStreaming: Bool { self == .holdLease || self == .streamBatches }
}
